"""Fuzzing the front end, the IR printer and the call API: only GradeError ever escapes.

The invariant for every generated input: ``ng.compile_source(text)`` returns a Module or raises
GradeError whose diagnostics point inside the text and render; a Module prints as IR text that
parses back to the same text; calling a function returns a result in the input's family or
raises GradeError. Anything else fails with the offending input printed.

Sizes are small and the runs derandomized so the file is quick and stable in CI. For a real
campaign, scale the example counts up and draw fresh randomness::

    NUMGRADE_FUZZ_SCALE=100 NUMGRADE_FUZZ_RANDOM=1 python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import os
import re
import time
import traceback
import warnings
from importlib import resources

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import numgrade as ng
from numgrade.ir.parse_text import parse_module
from numgrade.ir.printer import print_module

SCALE = float(os.environ.get("NUMGRADE_FUZZ_SCALE", "1"))
RANDOM = os.environ.get("NUMGRADE_FUZZ_RANDOM") == "1"
NAME = "fuzz.grd"


def fuzz(n: int):
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, derandomize=not RANDOM,
                    database=None, suppress_health_check=list(HealthCheck))


from spec_programs import SPEC_EXAMPLE  # noqa: E402 - shared with the diagnostics tests

# A few small programs that exercise the operations the stdlib may not (for mutation and calls).
EXTRA = """\
const TABLE: f32[2, 2] = [[1, 0.5], [-0.25, 2]]
const K: i32 = 4

fn axpy(a: f32, x: f32[N], y: f32[N]) -> f32[N] { return a * x + y }

fn mix(x: f32[M, N] in [-4, 4], m: bool[M, N], i: i32[N]) -> (f32[M], bf16[M, N], i32) {
    let t = where(m, x, -x) * 0.5
    let s = sum(t, axis=1, acc=f64, order=kahan) as f32
    let c = concat([t[:, 0:1], t[:, 1:]], axis=1) as bf16
    return (s + mean(x, axis=-1), c, sum(i) + K)
}

fn mm(a: f16[M, K2], b: f16[K2, N]) -> f32[M, N] { return matmul(a, b, acc=f32) as f32 }

fn pick(x: f32[M, N] in [-10, 10]) -> (bool[M, N], f32[N, M], f32) ! {rand} {
    let r = rand([M, N])
    let q = round(x * r, e4m3, mode=sr, sat=true)
    return (topk_mask(x, 1, axis=-1), transpose(q as f32, [1, 0]), max(x) - min(x) + x[0, 0])
}

fn chain(x: f32[N]) -> e5m2[N] { let (a, b) = halves(x)
    return round(a * b + exp(-abs(a)) - log(1 + b * b) + sqrt(abs(x)) ** 2, e5m2, mode=rz) }

fn halves(x: f32[N]) -> (f32[N], f32[N]) { return (x * 0.5, x - x * 0.5) }
"""


def corpus() -> list[tuple[str, str]]:
    """(name, text) of every stdlib program present now, the SPEC example and EXTRA."""
    out = [("spec", SPEC_EXAMPLE), ("extra", EXTRA)]
    for name in ng.stdlib_names():
        out.append((name, resources.files("numgrade.stdlib").joinpath(f"{name}.grd")
                    .read_text(encoding="utf-8")))
    return out


CORPUS = corpus()


# --- the invariant ------------------------------------------------------------------------------
def _fail(what: str, text: str) -> None:
    shown = text if len(text) <= 4000 else text[:2000] + "\n...\n" + text[-2000:]
    pytest.fail(f"{what}\n--- offending input ({len(text)} chars) ---\n{shown!r}\n"
                f"--- traceback ---\n{traceback.format_exc()}", pytrace=False)


def check_error(e: ng.GradeError, text: str, name: str = NAME) -> None:
    assert e.diagnostics, "a GradeError without diagnostics"
    lines = text.split("\n")
    for d in e.diagnostics:
        assert d.span is not None and d.span.file == name, d
        assert 1 <= d.span.line <= len(lines), (d, len(lines))
        assert 1 <= d.span.col <= len(lines[d.span.line - 1]) + 1, d
    rendered = e.render()
    assert re.match(rf"{re.escape(name)}:\d+:\d+: error: \S", rendered), rendered[:300]
    assert "Traceback" not in rendered


def compile_checked(text: str, name: str = NAME):
    """The Module, or None after checking the GradeError; fails on any other exception."""
    try:
        mod = ng.compile_source(text, name)
    except ng.GradeError as e:
        try:
            check_error(e, text, name)
        except AssertionError:
            _fail("a badly located diagnostic", text)
        return None
    except Exception as ex:  # noqa: BLE001 - the point of the test
        _fail(f"{type(ex).__name__} escaped compile_source: {ex}", text)
    try:
        ir = print_module(mod.ir)
        for w in mod.warnings:
            w.render()
    except Exception as ex:  # noqa: BLE001
        _fail(f"printing the IR of a valid program failed: {type(ex).__name__}: {ex}", text)
    try:
        again = print_module(parse_module(ir, "fuzz.ir"))
    except Exception as ex:  # noqa: BLE001
        _fail(f"the printed IR does not parse back: {type(ex).__name__}: {ex}\n{ir}", text)
    if again != ir:
        _fail(f"the printed IR does not round-trip:\n{ir}\n--- reprinted ---\n{again}", text)
    return mod


# --- (a) random bytes and text ------------------------------------------------------------------
@fuzz(300)
@given(st.binary(max_size=400))
def test_random_bytes(data):
    compile_checked(data.decode("utf-8", errors="replace"))


@fuzz(300)
@given(st.text(max_size=300))
@example("\x00")
@example("fn")
@example("fn f(x: f32) -> f32 { return x }\x0c\u2028\r\n#")
def test_random_text(text):
    compile_checked(text)


@fuzz(200)
@given(st.text(alphabet="fnletreturnconstrequiresas{}()[]<>=!,:;.+-*/%@#\n 0123456789xyNM_e",
               max_size=200))
def test_random_text_from_the_languages_characters(text):
    compile_checked(text)


# --- (b) grammar-aware: token soups and structured programs -------------------------------------
KEYWORDS = ["fn", "const", "let", "return", "requires", "in", "as", "and", "or", "not", "true",
            "false", "None", "feature"]
FORMATS = ["f64", "f32", "f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0", "i32", "bool"]
BUILTINS = ["abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "floor", "ceil", "sin", "cos",
            "exp2", "log2", "min", "max", "sum", "mean", "where", "round", "reshape",
            "transpose", "broadcast_to", "concat", "matmul", "topk_mask", "rand", "arange", "fma"]
KWARGS = ["axis", "keepdims", "acc", "order", "mode", "sat"]
MODES = ["rne", "rz", "ru", "rd", "sr", "any", "seq", "pairwise", "kahan"]
OPERATORS = ["+", "-", "*", "/", "%", "@", "**", "==", "!=", "<", "<=", ">", ">=", "(", ")",
             "[", "]", "{", "}", ",", ":", ";", "=", "->", "!", "...", ":"]
NUMBERS = ["0", "1", "2", "3", "16", "0.5", "1e-3", "448", "6.0", "65504", "1e400", "1e-400",
           "99999999999999999999", "0.0", "1e38", "2.5e-8", "7"]
NAMES = ["x", "y", "z", "a", "b", "M", "N", "K", "C", "T", "f", "g", "s", "q", "i", "_"]
TOKENS = KEYWORDS + FORMATS + BUILTINS + KWARGS + MODES + OPERATORS + NUMBERS + NAMES


@fuzz(300)
@given(st.lists(st.sampled_from(TOKENS), max_size=80), st.sampled_from([" ", "", "\n"]))
def test_token_soup(tokens, sep):
    compile_checked(sep.join(tokens))


@fuzz(200)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_inside_a_function_body(tokens):
    compile_checked("fn f(x: f32[N], y: f32[N], b: bool[N]) -> f32[N] {\n    return "
                    + " ".join(tokens) + "\n}\n")


_LEAVES = st.one_of(
    st.sampled_from(["x", "y", "x", "y", "s", "b", "N", "M", "C", "T", "1", "2", "0.5", "16",
                     "-1", "true", "false", "1e400", "0", "None", "3.0", "K"]),
)


def _extend(inner):
    fmt = st.sampled_from(FORMATS)
    kw = st.one_of(
        st.tuples(st.just("axis"), st.sampled_from(["0", "1", "-1", "[0, 1]", "2", "-3"])),
        st.tuples(st.just("keepdims"), st.sampled_from(["true", "false", "1"])),
        st.tuples(st.just("mode"), st.sampled_from(MODES)),
        st.tuples(st.sampled_from(["acc", "sat", "order"]), st.sampled_from(FORMATS + MODES)),
    ).map(lambda kv: f"{kv[0]}={kv[1]}")
    return st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "%", "@", "**", "<", "==", "and",
                                          "or", ">="]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(st.sampled_from(["-", "not ", "+"]), inner).map(lambda t: f"{t[0]}{t[1]}"),
        st.tuples(inner, fmt).map(lambda t: f"{t[0]} as {t[1]}"),
        st.tuples(st.sampled_from(BUILTINS + ["g", "h", "f"]), st.lists(inner, max_size=3),
                  st.lists(kw, max_size=2)).map(
            lambda t: f"{t[0]}({', '.join(t[1] + t[2])})"),
        st.tuples(st.sampled_from(["round", "reshape", "broadcast_to", "transpose"]), inner,
                  st.sampled_from(["e2m1", "f16", "[N]", "[M, N]", "[N/16, 16]", "[1, 0]", "[2]"]),
                  st.lists(kw, max_size=2)).map(
            lambda t: f"{t[0]}({', '.join([t[1], t[2]] + t[3])})"),
        st.tuples(inner, st.lists(st.sampled_from(["0", ":", "None", "...", "1:", ":2", "0:N:2",
                                                  "-1", "N - 1", "i"]), min_size=1, max_size=3))
        .map(lambda t: f"{t[0]}[{', '.join(t[1])}]"),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: f"({', '.join(xs)})"),
        st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
        st.tuples(inner, inner, inner).map(lambda t: f"where({t[0]}, {t[1]}, {t[2]})"),
    )


EXPRS = st.recursive(_LEAVES, _extend, max_leaves=10)
TYPES = st.tuples(st.sampled_from(["f32", "f32", "f16", "bf16", "e4m3", "i32", "bool", "f64"]),
                  st.sampled_from(["", "[N]", "[M, N]", "[N, N]", "[16]", "[M, N/16]", "[N]", "",
                                   "[N]", "[[]]", "[-1]", "[1.5]", "[x]", "[N/0]", "[N, (M)]",
                                   "[" + "9" * 30 + "]", "[None]", "[...]", "[N*N - N]"])
                  ).map("".join)


@st.composite
def programs(draw):
    parts = []
    if draw(st.booleans()):
        parts.append(f"const C: {draw(st.sampled_from(['f32', 'i32', 'e4m3']))} = {draw(EXPRS)}")
    if draw(st.integers(0, 3)) == 0:
        parts.append("const T: f32[2] = [1, 2]")
    names = ["g", "h", "f"][: draw(st.integers(1, 3))]
    for fname in names:
        params = [f"x: {draw(TYPES)}", f"y: {draw(TYPES)}"][: draw(st.integers(0, 2))]
        if draw(st.booleans()):
            params.append(f"s: f32 in [{draw(st.sampled_from(['-1', '0', '1e400', '2', '[]', 'x', 'true', 'N']))}, 1]")
        ret = draw(st.one_of(TYPES, st.lists(TYPES, min_size=2, max_size=3)
                             .map(lambda ts: "(" + ", ".join(ts) + ")")))
        eff = draw(st.sampled_from(["", "", " ! {rand}", " ! {}", " ! {rand, io}"]))
        req = draw(st.sampled_from(["", "", " requires N % 16 == 0", " requires M <= N",
                                    " requires N % 0 == 0", " requires feature(x)",
                                    " requires [] == 1", " requires feature([])",
                                    " requires N % 16 == 0, M % N == 0", " requires x > 1"]))
        body = [f"    let {draw(st.sampled_from(['a', 'b', 'x', 'N', 'f16']))} = {draw(EXPRS)}"
                for _ in range(draw(st.integers(0, 3)))]
        if draw(st.integers(0, 9)):
            body.append(f"    return {draw(EXPRS)}")
        parts.append(f"fn {fname}({', '.join(params)}) -> {ret}{eff}{req} {{\n"
                     + "\n".join(body) + "\n}")
    return "\n".join(parts) + "\n"


@fuzz(400)
@given(programs())
def test_structured_programs(text):
    compile_checked(text)


@fuzz(300)
@given(st.data())
def test_wellformed_elementwise_programs(data):
    """Mostly valid programs: f32[N] operands and shape-preserving operations."""
    unary = ["abs", "exp", "tanh", "sigmoid", "sin", "cos", "floor", "ceil", "sqrt", "-"]
    binary = ["+", "-", "*", "/", "max", "min", "%"]

    def gen(depth):
        if depth == 0 or data.draw(st.integers(0, 3)) == 0:
            return data.draw(st.sampled_from(["x", "y", "x", "y", "1.5", "2", "0", "1e-3", "-4",
                                              "(x as bf16 as f32)", "N", "z"]))
        k = data.draw(st.integers(0, 4))
        if k == 0:
            f = data.draw(st.sampled_from(unary))
            return f"-({gen(depth - 1)})" if f == "-" else f"{f}({gen(depth - 1)})"
        if k == 1:
            op = data.draw(st.sampled_from(binary))
            a, b = gen(depth - 1), gen(depth - 1)
            return f"{op}({a}, {b})" if op in ("max", "min") else f"({a} {op} {b})"
        if k == 2:
            fmt = data.draw(st.sampled_from(["f16", "bf16", "e4m3", "e5m2", "e2m1", "f32", "f64"]))
            mode = data.draw(st.sampled_from(["rne", "rz", "ru", "rd"]))
            return f"round({gen(depth - 1)}, {fmt}, mode={mode}) as f32"
        if k == 3:
            return f"where({gen(depth - 1)} > {gen(depth - 1)}, {gen(depth - 1)}, {gen(depth - 1)})"
        return f"fma({gen(depth - 1)}, {gen(depth - 1)}, {gen(depth - 1)})"

    body = [f"    let z = {gen(2)}"] + [f"    let z = {gen(3)}" for _ in range(data.draw(st.integers(0, 2)))]
    text = ("fn f(x: f32[N] in [-8, 8], y: f32[N] in [0.5, 2]) -> f32[N] {\n"
            + "\n".join(body) + f"\n    return {gen(3)}\n}}\n")
    mod = compile_checked(text)
    if mod is not None:
        x = np.linspace(-8, 8, 7, dtype=np.float32)
        call_checked(mod.f, (x, np.full(7, 1.25, np.float32)), text)


# --- (c) mutations of real programs ---------------------------------------------------------------
TOKEN_RE = re.compile(r"#[^\n]*|\s+|[A-Za-z_][A-Za-z_0-9]*|\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+"
                      r"(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?|\.\.\.|\*\*|->|[=!<>]=|.", re.S)
DIMS = ["M", "N", "K", "T", "D", "E", "16", "N/16", "1", "0", "M * N"]


def _is_number(t: str) -> bool:
    return bool(re.fullmatch(r"\d[\d.eE+-]*|\.\d[\d.eE+-]*", t))


@st.composite
def mutated(draw):
    name, text = CORPUS[draw(st.integers(0, len(CORPUS) - 1))]  # an index: a short repr
    toks = TOKEN_RE.findall(text)
    idents = sorted({t for t in toks if re.fullmatch(r"[A-Za-z_]\w*", t)})
    for _ in range(draw(st.integers(1, 4))):
        if not toks:
            break
        i = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "number", "format", "dim",
                                   "name", "truncate", "insert", "delete_span"]))
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        elif op == "number":
            nums = [k for k, t in enumerate(toks) if _is_number(t)] or [i]
            toks[draw(st.sampled_from(nums))] = draw(st.sampled_from(NUMBERS + ["-1", "1e99999"]))
        elif op == "format":
            fmts = [k for k, t in enumerate(toks) if t in FORMATS] or [i]
            toks[draw(st.sampled_from(fmts))] = draw(st.sampled_from(FORMATS + ["f8", "F32"]))
        elif op == "dim":
            dims = [k for k, t in enumerate(toks) if t in DIMS] or [i]
            toks[draw(st.sampled_from(dims))] = draw(st.sampled_from(DIMS))
        elif op == "name":
            named = [k for k, t in enumerate(toks) if t in idents] or [i]
            toks[draw(st.sampled_from(named))] = draw(st.sampled_from(idents + NAMES))
        elif op == "truncate":
            toks = toks[:i]
        elif op == "insert":
            toks.insert(i, " " + draw(st.sampled_from(TOKENS)) + " ")
        else:
            del toks[i:i + draw(st.integers(1, 12))]
    return "".join(toks)


@fuzz(400)
@given(mutated())
def test_mutated_programs(text):
    compile_checked(text)


@pytest.mark.parametrize("name,text", CORPUS, ids=[n for n, _ in CORPUS])
def test_corpus_compiles_and_every_prefix_is_handled(name, text):
    """Each program compiles; every truncation at a token boundary (sampled) is handled."""
    assert compile_checked(text) is not None
    toks = TOKEN_RE.findall(text)
    step = max(1, len(toks) // 40)
    for k in range(0, len(toks), step):
        compile_checked("".join(toks[:k]))


# --- (d) deep nesting and long chains -----------------------------------------------------------
FN = "fn f(x: f32) -> f32 "
LONG = 100_000
DEEP_CASES = {
    "parens": FN + "{ return " + "(" * LONG + "x" + ")" * LONG + " }",
    "unclosed_parens": FN + "{ return " + "(" * LONG + "x }",
    "sum_chain": FN + "{ return x" + " + 1" * LONG + " }",
    "const_chain": "const A: f32 = 1" + "+1" * LONG + "\n" + FN + "{ return x * A }",
    "product_chain": FN + "{ return x" + " * x" * LONG + " }",
    "unary_minus": FN + "{ return " + "-" * LONG + "x }",
    "not_chain": "fn f(x: bool) -> bool { return " + "not " * LONG + "x }",
    "brackets": FN + "{ return " + "[" * LONG + "x" + "]" * LONG + " }",
    "calls": FN + "{ return " + "exp(" * (LONG // 4) + "x" + ")" * (LONG // 4) + " }",
    "index": "fn f(x: f32[1]) -> f32 { return x" + "[0]" * LONG + " }",
    "casts": FN + "{ return x" + " as f32" * LONG + " }",
    "power": FN + "{ return x" + " ** 1" * LONG + " }",
    "tuple": FN + "{ let t = (" + ", ".join(["x"] * (LONG // 5)) + ")\n return x }",
    "args": FN + "{ return exp(" + ", ".join(["x"] * (LONG // 5)) + ") }",
    "long_line": FN + "{ return x }" + " " * 3_000_000,
}


@pytest.mark.parametrize("case", sorted(DEEP_CASES))
def test_deep_and_long_inputs_are_quick_diagnostics(case):
    text = DEEP_CASES[case]
    t0 = time.time()
    mod = compile_checked(text)
    assert time.time() - t0 < 20, f"{case} took {time.time() - t0:.1f} s"
    if case in ("parens", "long_line", "tuple"):
        assert mod is not None  # parentheses, spaces and wide tuples do not nest anything
    else:
        assert mod is None


def test_long_left_chain_fails_at_the_nesting_limit():
    from numgrade.frontend.parser import MAX_DEPTH

    ok = FN + "{ return x" + " + x" * (MAX_DEPTH - 1) + " }"
    assert compile_checked(ok) is not None
    with pytest.raises(ng.GradeError, match="nested too deeply"):
        ng.compile_source(FN + "{ return x" + " + x" * (MAX_DEPTH + 1) + " }", NAME)


def test_many_statements_and_functions():
    lets = FN + "{\n" + "    let x = x * 1.5 + 1\n" * 3000 + "    return x\n}\n"
    mod = compile_checked(lets)
    assert mod is not None and np.isfinite(mod.f(np.float32(0.001))) in (True, False)
    fns = "".join(f"fn fn_{i}(x: f32) -> f32 {{ return x + {i} }}\n" for i in range(2000))
    assert len(compile_checked(fns).functions) == 2000
    bad = "".join(f"fn f{i}(x: f32) -> f32 {{ return y{i} }}\n" for i in range(500))
    with pytest.raises(ng.GradeError) as info:
        ng.compile_source(bad, NAME)
    assert len(info.value.diagnostics) == 500


@pytest.mark.parametrize("depth", [50, 3000])
def test_deep_call_chains(depth):
    text = "".join(f"fn f{i}(x: f32) -> f32 {{ return f{i + 1}(x) * 1 }}\n" for i in range(depth))
    text += f"fn f{depth}(x: f32) -> f32 {{ return x + 1 }}\n"
    mod = compile_checked(text)
    if mod is not None:
        assert mod.f0(np.float32(1)) == 2


# --- (e) the call API -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def callables():
    mods = [ng.compile_source(SPEC_EXAMPLE, "spec.grd"), ng.compile_source(EXTRA, "extra.grd")]
    for name in ng.stdlib_names():
        try:
            mods.append(ng.load_stdlib(name))
        except ng.GradeError:  # a stdlib program being written right now; its tests say so
            pass
    return [m[f] for m in mods for f in m.functions]


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a test dependency
        return None
    return torch


def call_checked(fn, args, what="", seed=None, ideal=False):
    family = "torch" if any(type(a).__module__.startswith("torch") for a in args) else "numpy"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn.ideal(*args, seed=seed) if ideal else fn(*args, seed=seed)
    except ng.GradeError as e:
        e.render()
        return None
    except Exception as ex:  # noqa: BLE001
        desc = [(type(a).__name__, getattr(a, "dtype", None), getattr(a, "shape", None))
                for a in args]
        _fail(f"{type(ex).__name__} escaped {fn.name}(){' ideal' if ideal else ''}: {ex}\n"
              f"arguments: {desc}", what or fn.signature())
    outs = out if fn.ir.result_is_tuple else (out,)
    assert len(outs) == len(fn.ir.results)
    for o in outs:
        if ideal or family == "numpy":
            assert isinstance(o, (np.ndarray, np.generic)), type(o)
        else:
            assert type(o).__module__.startswith("torch"), type(o)
    return out


ODD_OBJECTS = [None, "x", b"", 1j, object(), {}, [], [[1.0], [1.0, 2.0]], 10 ** 400, float("nan"),
               -0.0, True, np.float32(3), np.array(2.5), np.complex64(1), (1, 2), range(3)]
DTYPES = [np.float64, np.float32, np.float16, np.int32, np.int8, np.uint8, bool, np.int64,
          ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2,
          ml_dtypes.float4_e2m1fn, ml_dtypes.float8_e8m0fnu]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e-300, 448.0, 65504.0, 3e38, 1e-45]


@st.composite
def arguments(draw, fn):
    sizes = {s: draw(st.sampled_from([1, 2, 3, 4, 16, 32])) for s in fn.ir.dims}
    args = []
    for p in fn.ir.params:
        try:
            shape = tuple(int(d.evaluate(sizes)) for d in p.value.shape)
        except (KeyError, ValueError, TypeError):
            shape = ()
        kind = draw(st.sampled_from(["match", "match", "match", "shape", "odd", "torch", "list"]))
        if kind == "odd":
            args.append(draw(st.sampled_from(ODD_OBJECTS)))
            continue
        if kind == "shape" or min(shape, default=1) < 0:
            shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 5, 16]), max_size=4)))
        seed = draw(st.integers(0, 2 ** 32 - 1))
        x = np.random.default_rng(seed).uniform(-4, 4, size=shape)
        if draw(st.integers(0, 4)) == 0:
            x = np.where(np.random.default_rng(seed + 1).random(shape) < 0.5,
                         draw(st.sampled_from(SPECIALS)), x)
        if kind == "list":
            args.append(x.tolist())
        elif kind == "torch" and _torch() is not None:
            torch = _torch()
            dt = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16,
                                       torch.float16, torch.int32, torch.bool,
                                       torch.float8_e4m3fn]))
            args.append(torch.tensor(x, dtype=torch.float64).to(dt))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                args.append(x.astype(draw(st.sampled_from(DTYPES))))
    if draw(st.integers(0, 19)) == 0:
        args = args[:-1] if args else [1.0]
    elif draw(st.integers(0, 19)) == 0:
        args.append(np.zeros(2))
    return args


@fuzz(250)
@given(st.data())
def test_calls_with_random_arguments(callables, data):
    fn = data.draw(st.sampled_from(callables))
    args = data.draw(arguments(fn))
    seed = data.draw(st.sampled_from([None, 0, 7, -1, 2 ** 70]))
    call_checked(fn, tuple(args), seed=seed, ideal=data.draw(st.integers(0, 9)) == 0)


@fuzz(100)
@given(st.data())
def test_calls_with_matching_arguments_succeed(callables, data):
    """Well-formed arguments that meet the requirements: a result, never an exception."""
    fn = data.draw(st.sampled_from(callables))
    mod = fn.ir.moduli() if hasattr(fn.ir, "moduli") else {}
    sizes = {s: mod.get(s, 1) * data.draw(st.sampled_from([1, 2])) for s in fn.ir.dims}
    sizes = {s: max(n, 16) if n < 16 and 16 % mod.get(s, 1) == 0 else n for s, n in sizes.items()}
    args = []
    for p in fn.ir.params:
        shape = tuple(int(d.evaluate(sizes)) for d in p.value.shape)
        lo, hi = p.range or (-1.0, 1.0)
        x = np.random.default_rng(data.draw(st.integers(0, 999))).uniform(lo, hi, size=shape)
        args.append(x < 0 if p.value.fmt.kind == "bool" else x)
    if any(c.holds(sizes) is False for c in fn.ir.requires):
        return
    out = call_checked(fn, tuple(args), seed=3)
    assert out is not None, f"{fn.signature()} refused valid arguments with sizes {sizes}"


def test_odd_objects_against_every_function(callables):
    for fn in callables:
        for bad in ODD_OBJECTS:
            call_checked(fn, tuple(bad for _ in fn.ir.params) or (bad,))
