"""Diagnostics: every mistake is a GradeError that points at the offending token.

Each case writes the program with a marker « right before the token the diagnostic must point
at (the marker is removed before compiling). The checks: a GradeError (a SourceError for
program mistakes) is raised, its first diagnostic's span has that line and column, and the
rendered text is ``FILE:LINE:COL: error: message``, then the source line, then a caret under the
column. Several markers mean several diagnostics, in order.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

import numgrade as ng
from numgrade.errors import Diagnostic, Span
from numgrade.frontend.parser import MAX_DEPTH

FILE = "prog.grd"
MARK = "«"

from spec_programs import SPEC_EXAMPLE  # noqa: E402 - shared with the fuzz tests


# --- helpers -----------------------------------------------------------------------------------
def unmark(marked: str) -> tuple[str, list[tuple[int, int]]]:
    """The source without markers, and the (line, col) of each marker (1-based)."""
    spots = []
    src = ""
    rest = marked
    while MARK in rest:
        before, rest = rest.split(MARK, 1)
        src += before
        line = src.count("\n") + 1
        col = len(src) - (src.rfind("\n") + 1) + 1
        spots.append((line, col))
    return src + rest, spots


def check_rendering(e: ng.GradeError, src: str, file: str = FILE) -> None:
    """The rendered text: one block per diagnostic, head, quoted source line and caret."""
    text = e.render()
    assert str(e) == text
    assert "Traceback" not in text
    lines = text.split("\n")
    src_lines = src.split("\n")
    i = 0
    for d in e.diagnostics:
        assert d.span is not None, d
        assert lines[i] == f"{file}:{d.span.line}:{d.span.col}: {d.severity}: {d.message}"
        if 1 <= d.span.line <= len(src_lines):
            line = src_lines[d.span.line - 1].rstrip("\r").expandtabs(1)
            line = "".join(c if c.isprintable() else "?" for c in line)
            quoted, caret = lines[i + 1], lines[i + 2]
            assert quoted.startswith("    ") and caret.startswith("    ")
            assert caret.strip()[0] == "^" and set(caret.strip()) <= {"^", "~"}
            at = caret.index("^") - 4
            if len(line) <= 200:
                assert quoted == "    " + line
                assert at == d.span.col - 1
            else:  # a window of the line around the caret
                assert quoted[4:] in line and len(quoted) <= 204
            if d.span.col <= len(line):  # the caret is under the character the span starts at
                assert quoted[4 + at] == line[d.span.col - 1]
            i += 3
        else:
            i += 1
    assert i == len(lines)


def expect(marked: str, *messages: str, file: str = FILE) -> ng.GradeError:
    """Compile; expect one diagnostic per marker, in order, containing the given messages."""
    src, spots = unmark(marked)
    assert spots, "a case needs at least one marker"
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(src, file)
    e = info.value
    assert isinstance(e, ng.SourceError)
    got = [(d.span.line, d.span.col) for d in e.diagnostics]
    assert got == spots, f"{[d.message for d in e.diagnostics]}"
    assert len(messages) in (1, len(spots))
    for d, m in zip(e.diagnostics, messages * len(spots) if len(messages) == 1 else messages):
        assert d.severity == "error"
        assert m in d.message, (m, d.message)
        assert d.span.file == file
    check_rendering(e, src, file)
    return e


FN = "fn f(x: f32) -> f32 "


# --- parse errors --------------------------------------------------------------------------------
def test_unexpected_token():
    e = expect(FN + "{ return x + «}", "unexpected '}'")
    assert "expected" in e.message  # says what would have been accepted


def test_unexpected_token_on_a_later_line():
    expect("fn f(x: f32) -> f32 {\n    let y = x\n    return\n«}", "unexpected '}'")
    expect("fn f(x: f32) -> f32 {\n    let y = x\n    return x\n    «)\n}", "unexpected ')'")


def test_unexpected_character():
    expect(FN + "{ return x « $ 1 }".replace("« ", "«"), "unexpected character '$'")


def test_unexpected_non_ascii_character():
    expect(FN + "{ return «é }", "unexpected character 'é'")


def test_unexpected_end_of_input():
    e = expect(FN + "{ return x«", "unexpected end of input")
    assert "'}'" in e.message


def test_unexpected_end_of_input_points_just_after_the_last_token():
    expect("fn f(x: f32) -> f32 {\n  return x«\n\n  \n", "unexpected end of input")
    expect("fn f(x: f32) -> f32 {\n  return x # a comment«\n", "unexpected end of input")
    expect("fn f(«", "unexpected end of input")


def test_missing_arrow():
    expect("fn f(x: f32) «f32 { return x }", "unexpected 'f32'")


def test_misplaced_keyword():
    expect(FN + "{ let «= x\n return x }", "unexpected '='")
    expect(FN + "{ «fn g() }", "unexpected 'fn'")


def test_chained_comparison_is_a_syntax_error():
    expect(FN[:-4] + "bool { return x < 1 «< 2 }", "unexpected '<'")


# --- names, formats, functions, dimensions (with suggestions) ---------------------------------
def test_unknown_name_suggests_a_close_one():
    e = expect("fn f(xval: f32) -> f32 { return «xvl }", "unknown name 'xvl'")
    assert "did you mean 'xval'?" in e.message


def test_unknown_name_suggests_a_let_binding():
    e = expect(FN + "{ let total = x * 2\n return «totl + 1 }", "unknown name 'totl'")
    assert "did you mean 'total'?" in e.message


def test_unknown_format_suggests_a_close_one():
    e = expect("fn f(x: «f33) -> f32 { return x }", "unknown format 'f33'")
    assert "did you mean 'f32'?" in e.message
    assert len(e.diagnostics) == 1  # the parameter's later uses do not cascade


def test_unknown_format_in_a_result_type_and_a_cast():
    expect("fn f(x: f32) -> «bfloat16 { return x }", "unknown format 'bfloat16'")
    e = expect(FN + "{ return x as «e4m4 }", "unknown format 'e4m4'")
    assert "did you mean" in e.message


def test_unknown_function_suggests_a_builtin():
    e = expect(FN + "{ return «sqr(x) }", "unknown function 'sqr'")
    assert "did you mean 'sqrt'?" in e.message


def test_unknown_function_suggests_a_user_function():
    e = expect("fn helper(x: f32) -> f32 { return x }\n" + FN + "{ return «helpr(x) }",
               "unknown function 'helpr'")
    assert "did you mean 'helper'?" in e.message


def test_unknown_dimension_suggests_a_close_one():
    e = expect("fn f(x: f32[Rows]) -> f32[«Rowz] { return x }", "unknown dimension 'Rowz'")
    assert "did you mean 'Rows'?" in e.message


def test_format_used_as_a_value():
    expect(FN + "{ return x * «f16 }", "format 'f16' is not a value")


def test_function_used_as_a_value():
    expect(FN + "{ return x * «exp }", "function 'exp' is not a value")


# --- arity and keywords --------------------------------------------------------------------------
def test_wrong_arity_of_a_builtin():
    expect(FN + "{ return «exp(x, x) }", "exp() takes 1 positional argument(s), got 2")


def test_wrong_arity_of_where():
    expect("fn f(x: f32) -> f32 { return «where(x > 0, x) }", "where() takes 3")


def test_wrong_arity_of_a_user_function():
    expect("fn g(a: f32, b: f32) -> f32 { return a + b }\n" + FN + "{ return «g(x) }",
           "g() takes 2 argument(s), got 1")


def test_unknown_keyword():
    e = expect("fn f(x: f32[N]) -> f32 { return sum(x, «axs=0) }",
               "sum() got an unexpected keyword 'axs'")
    assert "axis" in e.message  # lists the allowed keywords


def test_keyword_given_twice():
    expect("fn f(x: f32[N]) -> f32 { return sum(x, axis=0, «axis=0) }",
           "keyword 'axis' given twice")


def test_keyword_to_a_user_function():
    expect("fn g(a: f32) -> f32 { return a }\n" + FN + "{ return g(«a=x) }",
           "g() got an unexpected keyword 'a'")


def test_bad_keyword_values():
    expect("fn f(x: f32[N]) -> f32[1] { return sum(x, keepdims=«2) }",
           "keepdims must be true or false")
    expect(FN + "{ return round(x, f16, sat=«yes) as f32 }", "unknown name 'yes'")
    expect("fn f(x: f32[N]) -> f32 { return sum(x, order=«random) }", "order must be one of")
    expect("fn f(x: f32[N]) -> f32 { return max(x, acc=«f64) }", "acc= applies to sum and mean")
    expect("fn f(x: f32[N]) -> f32 { return sum(x, acc=«bool) }", "acc must be a number format")
    expect("fn f(a: f32[N, N]) -> f32[N, N] { return matmul(a, a, acc=«bool) }",
           "acc must be a number format")


def test_bad_round_mode():
    e = expect("fn f(x: f32) -> e2m1 { return round(x, e2m1, mode=«rnx) }",
               "mode must be one of rne, rz, ru, rd, sr, not 'rnx'")
    assert "sr" in e.message


def test_round_needs_a_format():
    expect(FN + "{ return round(x, «3) }", "round() needs a format")


# --- formats -----------------------------------------------------------------------------------
def test_result_format_mismatch():
    e = expect("fn f(x: f32) -> f16 { return «x }",
               "result 0 has format f32 but the signature declares f16")
    assert "as f16" in e.message  # says how to fix it


def test_tuple_result_format_mismatch_points_at_the_item():
    expect("fn f(x: f32) -> (f32, bf16) { return (x, x «* 2) }",
           "result 1 has format f32 but the signature declares bf16")


def test_call_argument_format_mismatch():
    e = expect("fn g(a: f16) -> f16 { return a }\nfn f(x: f32) -> f16 { return g(«x) }",
               "argument 'a' of g() must be f16, found f32")
    assert "as f16" in e.message


def test_let_annotation_shape_mismatch():
    expect("fn f(x: f32[N]) -> f32 { let y: f32 = «x\n return y }",
           "value has shape [N] but the annotation says []")


# --- shapes --------------------------------------------------------------------------------------
def test_broadcast_mismatch():
    e = expect("fn f(x: f32[3], y: f32[4]) -> f32[3] { return x «+ y }",
               "shapes [3] and [4] do not broadcast")
    assert "3 vs 4" in e.message


def test_symbolic_broadcast_mismatch():
    expect("fn f(x: f32[M], y: f32[N]) -> f32[M] { return x «* y }",
           "shapes [M] and [N] do not broadcast")


def test_matmul_inner_dimension_mismatch():
    expect("fn f(a: f32[M, K], b: f32[N, K]) -> f32[M, K] { return a «@ b }",
           "matmul inner dimensions differ: [M, K] @ [N, K]")


def test_matmul_of_scalars():
    expect("fn f(x: f32) -> f32 { return «x @ x }", "matmul needs tensors of rank >= 1")


def test_reshape_element_count_mismatch():
    expect("fn f(x: f32[3, 4]) -> f32[5] { return «reshape(x, [5]) }",
           "cannot reshape [3, 4] into [5]: 12 elements vs 5")


def test_concat_mismatch():
    expect("fn f(x: f32[3, 4], y: f32[2, 5]) -> f32[5, 4] { return concat([x, «y], axis=0) }",
           "concat() shapes [3, 4] and [2, 5] differ outside axis 0")


def test_concat_of_an_empty_list_points_at_its_statement():
    expect(FN + "{\n    let «a = concat([], axis=0)\n    return x\n}", "concat() takes a non-empty list")


def test_empty_lists_in_a_signature_point_at_the_function():
    expect("fn «f(x: f32[[]]) -> f32 { return 1 }", "not a dimension expression")
    expect("fn «f(x: f32) -> f32 requires [] == 1 { return x }", "not a dimension expression")
    expect("fn «f(x: f32 in [[], 1]) -> f32 { return x }", "a list is only allowed")
    expect("const «T: f32 = []\n" + FN + "{ return x }", "a list is only allowed")


def test_return_shape_mismatch():
    expect("fn f(x: f32[N]) -> f32[N, 1] { return «x }",
           "result 0 has shape [N] but the signature declares [N, 1]")


def test_call_argument_shape_mismatch():
    expect("fn g(a: f32[N], b: f32[N]) -> f32[N] { return a + b }\n"
           "fn f(x: f32[3], y: f32[4]) -> f32[3] { return g(x, «y) }",
           "g() is both 3 and 4")


def test_transpose_permutation():
    expect("fn f(x: f32[3, 4]) -> f32[4, 3] { return «transpose(x, [0, 0]) }",
           "[0, 0] is not a permutation of the 2 axes")


def test_division_of_a_size_needs_a_divisibility_requirement():
    e = expect("fn f(x: f32[N]) -> f32[N«/16, 16] { return reshape(x, [N«/16, 16]) }",
               "cannot show that N is divisible by 16")
    assert "requires N % 16 == 0" in e.message  # the fix is suggested
    assert len(e.diagnostics) == 2


def test_division_by_a_requirement_works():
    mod = ng.compile_source("fn f(x: f32[N]) -> f32[N/16, 16] requires N % 16 == 0 "
                            "{ return reshape(x, [N/16, 16]) }", FILE)
    assert mod.f(np.zeros(32, np.float32)).shape == (2, 16)


def test_callee_divisibility_must_be_provable_at_the_call():
    expect("fn g(x: f32[N]) -> f32[N] requires N % 16 == 0 { return x }\n"
           "fn f(x: f32[N]) -> f32[N] { return «g(x) }", "g() requires N % 16 == 0")


def test_negative_dimension():
    expect("fn f(x: f32[«-3]) -> f32 { return sum(x) }", "a dimension cannot be negative")
    expect("fn f(x: f32[4]) -> f32[2, 2] { return reshape(x, [«-2, -2]) }",
           "a dimension cannot be negative")


def test_non_integer_dimension():
    expect("fn f(x: f32[«1.5]) -> f32 { return sum(x) }", "a dimension must be an integer")


def test_false_constant_requirement():
    expect("fn f(x: f32) -> f32 requires 3 «> 4 { return x }", "requirement '3 > 4' is false")


# --- indices and axes ---------------------------------------------------------------------------
def test_constant_index_out_of_range():
    expect("fn f(x: f32[3]) -> f32 { return x[«5] }", "index 5 is out of range for an axis of size 3")
    expect("fn f(x: f32[3]) -> f32 { return x[«-4] }", "out of range")


def test_too_many_indices():
    expect("fn f(x: f32[3]) -> f32 { return «x[0, 0] }", "too many indices (2) for a value of rank 1")


def test_axis_out_of_range():
    expect("fn f(x: f32[3]) -> f32 { return sum(x, axis=«2) }",
           "axis 2 is out of range for a value of rank 1")
    expect("fn f(x: f32[3, 4]) -> f32[3] { return max(x, axis=«-3) }", "axis -3 is out of range")


def test_repeated_axis():
    expect("fn f(x: f32[3, 4]) -> f32 { return sum(x, axis=[1, «-1]) }", "axis 1 repeated")


def test_dynamic_index():
    expect("fn f(x: f32[3], i: f32) -> f32 { return x[«i] }", "dynamic indexing is not supported")


def test_empty_slice():
    expect("fn f(x: f32[3]) -> f32[0] { return «x[2:1] }", "slice is empty or reversed")


# --- effects -------------------------------------------------------------------------------------
def test_undeclared_rand_at_the_stochastic_rounding():
    e = expect("fn f(x: f32) -> e2m1 {\n    let y = x * 2\n    return «round(y, e2m1, mode=sr)\n}",
               "stochastic rounding has the effect 'rand', which f() does not declare")
    assert "! {rand}" in e.message


def test_undeclared_rand_at_a_rand_call():
    expect("fn f(x: f32[N]) -> f32[N] { return x + «rand([N]) }", "rand() has the effect 'rand'")


def test_undeclared_rand_via_a_callee_points_at_the_call():
    src = ("fn noisy(x: f32) -> e2m1 ! {rand} { return round(x, e2m1, mode=sr) }\n"
           "fn f(x: f32) -> e2m1 {\n    return «noisy(x)\n}")
    expect(src, "the call to noisy() has the effect 'rand', which f() does not declare")


def test_undeclared_rand_via_two_levels_of_calls():
    src = ("fn a(x: f32) -> f32 ! {rand} { return x + rand() }\n"
           "fn b(x: f32) -> f32 ! {rand} { return a(x) }\n"
           "fn c(x: f32) -> f32 { return 2 * «b(x) }")
    expect(src, "the call to b() has the effect 'rand'")


def test_user_effect_labels_propagate_too():
    src = ("fn a(x: f32) -> f32 ! {io} { return x }\n"
           "fn b(x: f32) -> f32 ! {rand} { return «a(x) }")
    e = expect(src, "the call to a() has the effect 'io'")
    assert "! {io, rand}" in e.message


def test_declared_rand_is_fine():
    ng.compile_source("fn f(x: f32) -> e2m1 ! {rand} { return round(x, e2m1, mode=sr) }", FILE)


# --- calls -------------------------------------------------------------------------------------
def test_direct_recursion():
    e = expect("fn f(x: f32) -> f32 { return «f(x) }", "recursive call to 'f'")
    assert "recursion is not supported" in e.message


def test_mutual_recursion():
    e = expect("fn f(x: f32) -> f32 { return g(x) }\nfn g(x: f32) -> f32 { return «f(x) }",
               "recursive call to 'f' (f -> g -> f)")
    assert len(e.diagnostics) == 1


# --- declarations ------------------------------------------------------------------------------
def test_duplicate_function():
    expect("fn f(x: f32) -> f32 { return x }\nfn «f(y: f32) -> f32 { return y }",
           "function 'f' is defined twice")


def test_duplicate_parameter():
    expect("fn f(x: f32, «x: f32) -> f32 { return x }", "parameter 'x' is declared twice")


def test_duplicate_constant():
    expect("const A: f32 = 1\nconst «A: f32 = 2\n" + FN + "{ return x * A }",
           "constant 'A' is defined twice")


def test_builtin_and_format_names_cannot_be_redefined():
    expect("fn «exp(x: f32) -> f32 { return x }", "'exp' is a built-in name")
    expect("fn f(«f32: f32) -> f32 { return 1 }", "'f32' is a format name")
    expect(FN + "{ let «f16 = x\n return x }", "'f16' is a format name and cannot be a variable")


def test_parameter_named_like_a_dimension():
    expect("fn f(«N: f32, x: f32[N]) -> f32 { return sum(x) }",
           "parameter 'N' has the name of a dimension")


def test_missing_return():
    expect("fn «f(x: f32) -> f32 { let y = x }", "function 'f' has no return statement")


def test_statement_after_return():
    expect(FN + "{ return x\n    let «y = x }", "statement after return is unreachable")


def test_empty_range():
    expect("fn f(x: f32 in [«1, 0]) -> f32 { return x }", "empty range")


def test_range_beyond_f64():
    expect("fn f(x: f32 in [«-1e400, 1]) -> f32 { return x }", "within the f64 range")


# --- constants and literals --------------------------------------------------------------------
def test_constant_division_by_zero():
    expect("const A: f32 = 1 «/ 0\n" + FN + "{ return x }", "division by zero")


def test_constant_of_a_negative_sqrt():
    expect(FN + "{ return x * «sqrt(-1) }", "sqrt of a negative constant")


def test_huge_number_literals_are_diagnosed_fast():
    for lit in ("1e99999999", "1e-99999999", "9" * 5000):
        t0 = time.time()
        expect(f"const A: f32 = «{lit}\n" + FN + "{ return x }", "is out of range")
        assert time.time() - t0 < 2.0


def test_huge_dimension_literal():
    expect("fn f(x: f32[«" + "9" * 5000 + "]) -> f32 { return sum(x) }", "too large")
    expect(f"fn f(x: f32[N]) -> f32[N] requires N % «{'7' * 40} == 0 {{ return x }}",
           "too large")


def test_constants_beyond_exact_folding():
    expect("const A: f32 = «exp(99999)\n" + FN + "{ return x * A }",
           "beyond the range of exact folding")
    expect(FN + "{ return x * (1e300 «** 64) }", "beyond the range of exact folding")


def test_overflowing_constant_is_a_warning_not_an_error():
    mod = ng.compile_source("fn f(x: f64) -> f64 { return x + 1e400 }", FILE)
    assert any("overflows f64" in w.message for w in mod.warnings)
    assert mod.f(1.0) == np.inf
    mod = ng.compile_source("const BIG: f16 = 1e10\nfn f(x: f16) -> f16 { return x * BIG }", FILE)
    assert any("overflows f16" in w.message for w in mod.warnings)


def test_directed_rounding_of_constants_beyond_f64():
    mod = ng.compile_source("fn f(x: f32) -> (f32, f32, f32) { return ("
                            "round(1e400, f32, mode=rz, sat=false), "
                            "round(1e400, f32, mode=ru, sat=false), "
                            "round(-1e400, f32, mode=rd, sat=false)) }", FILE)
    a, b, c = mod.f(np.float32(0))
    assert a == np.finfo(np.float32).max and b == np.inf and c == -np.inf


def test_constant_array_shape_mismatch():
    expect("const T: f32[2, 2] = [[1, 2], [«3]]\n" + FN + "{ return x }", "expected 2 items, found 1")


# --- tuples and bools ----------------------------------------------------------------------------
def test_tuple_used_as_a_value():
    expect(FN + "{ return («x, x) + 1 }", "a tuple cannot be used as a value here")


def test_tuple_result_of_a_call_used_as_a_value():
    expect("fn g(x: f32) -> (f32, f32) { return (x, x) }\n" + FN + "{ return «exp(g(x)) }",
           "a tuple cannot be used as a value")


def test_unpacking_a_non_tuple():
    expect(FN + "{ let (a, b) = «x\n return a }", "expected a tuple of 2 values")


def test_unpacking_the_wrong_count():
    expect("fn g(x: f32) -> (f32, f32) { return (x, x) }\n"
           + FN + "{ let «(a, b, c) = g(x)\n return a }".replace("«(a", "(«a"),
           "cannot unpack 2 values into 3 names")


def test_tuple_index_out_of_range():
    expect("fn g(x: f32) -> (f32, f32) { return (x, x) }\n" + FN + "{ return g(x)[«2] }",
           "tuple index 2 out of range")


def test_nested_tuples():
    expect(FN + "{ let t = (x, («x, x))\n return x }", "tuples cannot be nested")


def test_returning_too_few_results():
    expect("fn f(x: f32) -> (f32, f32) { return «x }", "declares 2 result(s) but returns 1")


def test_bool_arithmetic():
    expect("fn f(x: f32, y: f32) -> f32 { return (x «< y) * x }",
           "'*' is not defined on bool values")
    expect("fn f(b: bool[N]) -> f32 { return «sum(b) }", "sum is not defined on bool values")
    expect(FN + "{ return (x < 1) + «1 }", "cannot combine a number with a bool value")
    expect("fn f(b: bool) -> bool { return «-b }", "neg is not defined on bool values")


def test_logic_on_numbers():
    expect("fn f(x: f32) -> bool { return «not x }", "'not' needs a bool operand")
    expect("fn f(x: f32) -> bool { return (x > 0) and «x }", "'and' needs bool operands")


def test_where_needs_a_bool_condition():
    expect("fn f(x: f32) -> f32 { return where(«x, x, 0) }", "where() needs a bool condition")


# --- limits ---------------------------------------------------------------------------------------
def test_too_deep_nesting_is_a_diagnostic():
    depth = MAX_DEPTH + 100
    src = FN + "{ return " + "-" * depth + "x }"
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(src, FILE)
    d = info.value.diagnostics[0]
    assert "nested too deeply" in d.message
    assert d.span.line == 1 and src[d.span.col - 1] == "-"
    check_rendering(info.value, src)


def test_huge_input_is_refused_up_front():
    src = FN + "{ return x }\n" + "#" * 4_100_000
    t0 = time.time()
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(src, FILE)
    assert time.time() - t0 < 2.0
    d = info.value.diagnostics[0]
    assert "too large" in d.message and (d.span.line, d.span.col) == (1, 1)


def test_nul_character():
    src = "fn f(x: f32) -> f32 {\n    return x \x00+ 1\n}"
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(src, FILE)
    d = info.value.diagnostics[0]
    assert "NUL" in d.message and (d.span.line, d.span.col) == (2, 14)
    assert "\x00" not in info.value.render()


def test_control_characters_are_not_echoed_to_the_terminal():
    src = FN + "{ return x \x1b[31m }"
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(src, FILE)
    text = info.value.render()
    assert "\x1b" not in text
    assert info.value.diagnostics[0].span.col == src.index("\x1b") + 1


def test_line_numbers_count_newlines_only():
    # form feeds and U+2028 are not line breaks for the parser, so not for the quoted line either
    src = "# a \x0c form feed \u2028 and a line separator\n" + FN + "{ return «y }"
    expect(src, "unknown name 'y'")


def test_crlf_and_tabs_keep_columns():
    expect("fn f(x: f32) -> f32 {\r\n\treturn «y\r\n}\r\n", "unknown name 'y'")


def test_long_lines_are_quoted_around_the_caret():
    src = FN + "{ return x" + " + x" * 60 + " + y" + " + x" * 60 + " }"
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(src, FILE)
    head, quoted, caret = info.value.render().split("\n")
    d = info.value.diagnostics[0]
    assert head.startswith(f"{FILE}:1:{d.span.col}: error: unknown name 'y'")
    assert len(quoted) <= 4 + 200
    assert quoted[caret.index("^")] == "y"


# --- several errors at once ---------------------------------------------------------------------
def test_two_bad_functions_give_two_diagnostics():
    src = ("fn f(x: f32) -> f32 {\n    return «y\n}\n"
           "fn g(x: f32[N]) -> f16 {\n    return «sum(x, axis=0)\n}\n")
    expect(src, "unknown name 'y'", "result 0 has format f32 but the signature declares f16")


def test_independent_errors_in_one_function_and_a_constant():
    src = ("const A: f32 = 1 «/ 0\n"
           "fn f(x: f32[3], y: f32[4]) -> f32[3] {\n"
           "    let a = x «+ y\n"
           "    let b = «exp(x, x)\n"
           "    return x\n}\n")
    expect(src, "division by zero", "do not broadcast", "exp() takes 1")


def test_errors_do_not_cascade_from_a_poisoned_let():
    src = FN + "{ let a = «zz\n let b = a * 2\n let c = b + a\n return c }"
    e = expect(src, "unknown name 'zz'")
    assert len(e.diagnostics) == 1


def test_a_bad_callee_does_not_cascade_into_its_callers():
    src = "fn g(x: f32) -> f32 { return «zz }\n" + FN + "{ return g(x) * 2 }"
    expect(src, "unknown name 'zz'")


def test_diagnostics_render_without_a_source():
    d = Diagnostic("something is wrong", Span("elsewhere.grd", 3, 7))
    assert d.render({}) == "elsewhere.grd:3:7: error: something is wrong"
    assert Diagnostic("no place").render() == "error: no place"
    e = ng.GradeError("plain message")
    assert e.message == "plain message" and e.span is None and str(e) == "error: plain message"


def test_file_name_is_used_in_the_rendering(tmp_path):
    p = tmp_path / "bad prog.grd"
    p.write_text("fn f(x: f32) -> f32 {\n    return x +\n}\n")
    with pytest.raises(ng.GradeError) as info:
        ng.load(p)
    assert info.value.render().startswith(f"{p}:3:1: error: unexpected '}}'")


# --- runtime API errors -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spec_mod():
    return ng.compile_source(SPEC_EXAMPLE, "spec.grd")


def runtime_error(call) -> ng.GradeError:
    try:
        call()
    except ng.GradeError as e:
        e.render()
        return e
    except BaseException as e:  # pragma: no cover - the failure being tested for
        pytest.fail(f"{type(e).__name__} escaped instead of GradeError: {e}")
    pytest.fail("no error raised")


def test_wrong_argument_count(spec_mod):
    assert "takes 1 argument(s), got 0" in runtime_error(lambda: spec_mod.quantize()).message
    e = runtime_error(lambda: spec_mod.quantize(np.zeros((2, 16)), np.zeros(3)))
    assert "takes 1 argument(s), got 2" in e.message


def test_wrong_rank(spec_mod):
    e = runtime_error(lambda: spec_mod.quantize(np.zeros(32)))
    assert "must have rank 2" in e.message and "(32,)" in e.message


def test_inconsistent_sizes():
    mod = ng.compile_source("fn f(a: f32[N], b: f32[N]) -> f32[N] { return a + b }", FILE)
    e = runtime_error(lambda: mod.f(np.zeros(3), np.zeros(4)))
    assert "dimension N" in e.message


def test_requirement_violated_at_the_call(spec_mod):
    e = runtime_error(lambda: spec_mod.quantize(np.ones((2, 20), np.float32)))
    assert "requires N % 16 == 0, which fails for N = 20" in e.message
    d = e.diagnostics[0]
    assert d.span is not None and d.span.file == "spec.grd" and d.span.line == 5
    assert e.render().startswith("spec.grd:5:")


def test_requirement_is_reported_before_derived_sizes():
    mod = ng.compile_source("fn f(x: f32[N], s: f32[N/16]) -> f32[N] requires N % 16 == 0 "
                            "{ return x }", FILE)
    e = runtime_error(lambda: mod.f(np.zeros(20), np.zeros(1)))
    assert "requires N % 16 == 0" in e.message


def test_bad_argument_objects(spec_mod):
    for bad in (None, "text", {"x": 1}, object(), b"bytes", [[1.0], [1.0, 2.0]], 1j,
                np.zeros((2, 16), dtype=complex), np.array([["a"] * 16] * 2), 10 ** 400):
        e = runtime_error(lambda: spec_mod.quantize(bad))
        assert "argument 'x'" in e.message


def test_unknown_function_and_attribute(spec_mod):
    e = runtime_error(lambda: spec_mod["quantise"])
    assert "no function 'quantise'" in e.message
    e = runtime_error(lambda: spec_mod.quantise)
    assert isinstance(e, AttributeError)  # so hasattr() and getattr(..., default) work
    assert not hasattr(spec_mod, "quantise") and hasattr(spec_mod, "quantize")


def test_keyword_arguments(spec_mod):
    x = np.linspace(-5, 5, 32, dtype=np.float32).reshape(2, 16)
    by_kw = spec_mod.quantize(x=x)
    by_pos = spec_mod.quantize(x)
    assert all(np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
               for a, b in zip(by_kw, by_pos))
    assert "no parameter 'y'" in runtime_error(lambda: spec_mod.quantize(y=x)).message
    assert "twice" in runtime_error(lambda: spec_mod.quantize(x, x=x)).message
    mod = ng.compile_source("fn f(a: f32, b: f32) -> f32 { return a - b }", FILE)
    assert mod.f(b=1.0, a=3.0) == 2.0
    assert "missing argument(s) b" in runtime_error(lambda: mod.f(a=1.0)).message


def test_unknown_backend(spec_mod):
    e = runtime_error(lambda: spec_mod.quantize(np.zeros((1, 16)), backend="nope"))
    assert "backend 'nope'" in e.message


def test_empty_reduction_at_runtime(spec_mod):
    e = runtime_error(lambda: spec_mod.quantize(np.zeros((0, 16), np.float32)))
    assert "empty" in e.message


def test_ideal_reports_the_same_errors(spec_mod):
    assert "must have rank 2" in runtime_error(lambda: spec_mod.quantize.ideal(np.zeros(3))).message
    assert "requires" in runtime_error(
        lambda: spec_mod.quantize.ideal(np.ones((1, 20)))).message


def test_loading_errors(tmp_path):
    assert "no such file" in runtime_error(lambda: ng.load(tmp_path / "missing.grd")).message
    assert "cannot read" in runtime_error(lambda: ng.load(tmp_path)).message
    bad = tmp_path / "latin1.grd"
    bad.write_bytes(b"fn f(x: f32) -> f32 { return x } # caf\xe9\n")
    assert "cannot read" in runtime_error(lambda: ng.load(bad)).message
    assert "no stdlib program" in runtime_error(lambda: ng.load("stdlib:../../etc/passwd")).message
    assert "source must be text" in runtime_error(lambda: ng.compile_source(b"fn")).message


def test_source_errors_are_located_in_the_message_text():
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source("fn f(x: f32) -> f32 { return y }", "where.grd")
    assert re.match(r"where\.grd:1:30: error: unknown name 'y'\n", str(info.value))


# --- the Python embedding ------------------------------------------------------------------------
def test_embedding_mistakes_are_grade_errors():
    with pytest.raises(ng.GradeError, match="a range is two numbers"):
        ng.f32["N"].within("low", 1)

    def unbounded(x: ng.f32["N"].within(-1e400, 1)) -> ng.f32["N"]:  # -1e400 is -inf in Python
        return x

    with pytest.raises(ng.GradeError, match="infinite or NaN"):
        ng.kernel(unbounded)

    def loops(x: ng.f32["N"]) -> ng.f32["N"]:
        for _ in range(3):
            x = x + 1
        return x

    with pytest.raises(ng.SourceError) as info:
        ng.kernel(loops)
    d = info.value.diagnostics[0]
    assert d.span.file.endswith("test_diagnostics.py") and "not supported" in d.message
    with pytest.raises(ng.GradeError, match="cannot read the source"):
        ng.kernel(print)


# --- folded functions known to within a radius (constfold.py) ----------------------------------
@pytest.mark.parametrize("marked, message", [
    # tanh(100.3) folds to 1 at 256 bits; the real value is 1 - 2^-288
    (FN + "{ return x * «floor(tanh(100.3)) }", "floor is not decided"),
    (FN + "{ return where(tanh(100.3) «< 1.0, x, -x) }", "comparison '<' is not decided"),
    (FN + "{ return x + 1.0 «/ (tanh(100.3) - 1.0) }", "division by a constant that may be zero"),
    (FN + "{ return x + «sqrt(tanh(100.3) - 1.0) }", "sign of the operand of sqrt is not decided"),
    (FN + "{ return x + (2.5 «% (tanh(100.3) - 1.0)) }", "modulo by a constant that may be zero"),
])
def test_undecided_folds_are_diagnosed(marked, message):
    expect(marked, message)


def test_dividing_by_a_folded_constant_that_may_be_zero_has_no_bound():
    # x / (tanh(100.3) - 1): the constant is 0 at 256 bits, -2^-288 in the reals; the kernel
    # divides by 0, so the analysis must not give a finite bound
    f = ng.compile_source(FN + "{ return x / (tanh(100.3) - 1.0) }").f
    (out,) = f.analyze().outputs
    assert out.abs_error is None and out.reason


def test_decided_folds_of_functions_still_fold():
    # 256 bits decide these: no diagnostic, and the results are what the reals give
    f = ng.compile_source(FN + "{ return where(tanh(100.3) > 0.5, x, -x) * floor(exp(1.0)) }").f
    assert float(f(np.float32(1.5))) == 3.0
