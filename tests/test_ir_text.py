"""The textual IR round-trips: print -> parse rebuilds the same hash-consed graph and text.

Golden files: for each ``tests/golden/NAME.grd``, ``tests/golden/NAME.ir`` holds its printed IR.
Run with ``NUMGRADE_UPDATE_GOLDEN=1`` to rewrite them after an intended change of the syntax.
"""

from __future__ import annotations

import gc
import os
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

import numgrade
from numgrade.backends.reference import Interpreter
from numgrade.errors import GradeError, SourceError
from numgrade.ir import nodes as N
from numgrade.ir.dims import Dim
from numgrade.ir.formats import FORMATS
from numgrade.ir.nodes import Grade, Op, TensorType, Value
from numgrade.ir.parse_text import parse_dim, parse_function, parse_module, read_ir
from numgrade.ir.printer import print_function, print_module

GOLDEN = Path(__file__).parent / "golden"
GOLDEN_NAMES = sorted(p.stem for p in GOLDEN.glob("*.grd"))
UPDATE = os.environ.get("NUMGRADE_UPDATE_GOLDEN") == "1"
F32 = FORMATS["f32"]


# ---------------------------------------------------------------------------------------------
# helpers
def _constraint_fields(c: N.Constraint) -> tuple:
    return (c.text, c.kind, c.lhs, c.mod, c.op, c.rhs, c.feature)


def assert_same_function(orig: N.Function, got: N.Function) -> None:
    """Everything but spans agrees, and the value graph is the very same objects."""
    assert got.name == orig.name
    assert len(got.results) == len(orig.results)
    assert all(a is b for a, b in zip(got.results, orig.results))
    assert [(p.name, p.range) for p in got.params] == [(p.name, p.range) for p in orig.params]
    assert all(p.value is q.value for p, q in zip(got.params, orig.params))
    assert got.result_is_tuple == orig.result_is_tuple
    assert got.effects == orig.effects
    assert [_constraint_fields(c) for c in got.requires] == \
        [_constraint_fields(c) for c in orig.requires]
    assert list(got.dims) == list(orig.dims)
    assert got.rand_consumers == orig.rand_consumers
    reachable = set(map(id, N.toposort(orig.results))) | {id(p.value) for p in orig.params}
    want_names = {id(v): n for v, n in orig.names.items() if id(v) in reachable}
    got_names = {id(v): n for v, n in got.names.items()}
    # the parser recovers every let name that the printer shows
    for k, n in got_names.items():
        assert want_names.get(k) == n
    assert all(v in got.spans for v in N.toposort(got.results))


def assert_roundtrip_module(mod: N.Module) -> str:
    text = print_module(mod)
    parsed = parse_module(text, mod.name)
    assert list(parsed.functions) == list(mod.functions)
    for name, fn in mod.functions.items():
        assert_same_function(fn, parsed.functions[name])
    assert list(parsed.consts) == [k for k, v in mod.consts.items() if v.op == Op.CONST]
    assert all(parsed.consts[k] is mod.consts[k] for k in parsed.consts)
    assert print_module(parsed) == text
    # each function on its own (constants then print in full)
    for fn in mod.functions.values():
        t = print_function(fn)
        one = parse_function(t, mod.name, module=mod)
        assert_same_function(fn, one)
        assert print_function(one) == t
    return text


def assert_fresh_parse_reprints(text: str) -> None:
    """With no original alive, parsing builds an equal graph that prints the same text."""
    gc.collect()
    assert print_module(parse_module(text, "<fresh>")) == text


def _sizes(fn: N.Function, rng: random.Random) -> dict[str, int]:
    cands = [16, 8, 4, 32, 6, 12, 2, 3, 48, 5, 64]
    syms = sorted({s for p in fn.params for d in p.value.shape for s in d.symbols()})
    for attempt in range(500):
        env = {s: (cands[(attempt + i) % len(cands)] if attempt < len(cands) else rng.choice(cands))
               for i, s in enumerate(syms)}
        ok = all(c.holds(env) is not False for c in fn.requires)
        for p in fn.params:
            for d in p.value.shape:
                v = d.evaluate(env)
                ok = ok and v.denominator == 1 and v >= 0
        if ok:
            return env
    raise AssertionError(f"no sizes satisfy the requirements of {fn.name}")


def _inputs(fn: N.Function, seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    env = _sizes(fn, rng)
    nrng = np.random.default_rng(seed)
    out = []
    for p in fn.params:
        shape = tuple(int(d.evaluate(env)) for d in p.value.shape)
        fmt = p.value.fmt
        lo, hi = p.range or (-4.0, 4.0)
        if fmt.kind == "bool":
            out.append((nrng.random(shape) < 0.5).astype(np.float64))
        elif fmt.kind == "int":
            out.append(nrng.integers(int(np.ceil(lo)), int(np.floor(hi)) + 1, shape).astype(float))
        else:
            out.append(nrng.uniform(lo, hi, shape))
    return out


def _run_all(mod: N.Module) -> dict[str, object]:
    results: dict[str, object] = {}
    for name, fn in mod.functions.items():
        args = _inputs(fn, 1234)
        try:
            outs = Interpreter(mod).run(name, args, seed=99)
            results[name] = [np.array(o, dtype=np.float64) for o in outs]
        except GradeError as ex:
            results[name] = ("error", ex.message)
    return results


def _same_outputs(a, b) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a == b
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y, equal_nan=True)
        and np.array_equal(np.signbit(x), np.signbit(y)) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------
# the stdlib
@pytest.mark.parametrize("name", numgrade.stdlib_names())
def test_stdlib_roundtrips(name):
    mod = numgrade.load_stdlib(name).ir
    text = assert_roundtrip_module(mod)
    del mod
    assert_fresh_parse_reprints(text)


# ---------------------------------------------------------------------------------------------
# golden files
def test_golden_files_exist():
    assert GOLDEN_NAMES, "no golden programs"
    missing = [n for n in GOLDEN_NAMES if not (GOLDEN / f"{n}.ir").exists() and not UPDATE]
    assert not missing, f"missing golden IR (run with NUMGRADE_UPDATE_GOLDEN=1): {missing}"


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_ir_text(name):
    mod = numgrade.load(GOLDEN / f"{name}.grd").ir
    text = print_module(mod)
    path = GOLDEN / f"{name}.ir"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing (run with NUMGRADE_UPDATE_GOLDEN=1)"
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_roundtrips(name):
    mod = numgrade.load(GOLDEN / f"{name}.grd").ir
    assert_roundtrip_module(mod)


@pytest.mark.parametrize("name", GOLDEN_NAMES)
def test_golden_ir_runs_like_source(name):
    path = GOLDEN / f"{name}.ir"
    if not path.exists():
        pytest.skip("no golden IR yet")
    gc.collect()
    parsed = read_ir(path)
    assert print_module(parsed) == path.read_text(encoding="utf-8")
    got = _run_all(parsed)
    del parsed
    gc.collect()  # the source module below builds its graph from scratch
    want = _run_all(numgrade.load(GOLDEN / f"{name}.grd").ir)
    assert list(got) == list(want)
    for fn in want:
        assert _same_outputs(got[fn], want[fn]), fn


def test_golden_programs_cover_every_op():
    seen_ops: set[str] = set()
    attrs: set[tuple] = set()
    for name in GOLDEN_NAMES:
        mod = numgrade.load(GOLDEN / f"{name}.grd").ir
        for fn in mod.functions.values():
            for v in N.toposort(fn.results):
                seen_ops.add(v.op)
                if v.op == Op.ROUND:
                    attrs.add(("mode", v.attrs[0]))
                    attrs.add(("sat", v.attrs[1]))
                if v.op in (Op.SUM, Op.MEAN):
                    attrs.add(("order", v.attrs[2]))
                    attrs.add(("keepdims", v.attrs[1]))
                if v.op == Op.SLICE:
                    attrs.update(("slice", it[0]) for it in v.attrs[0])
                    attrs.update(("step", it[3]) for it in v.attrs[0] if it[0] == "s")
                if v.op == Op.CALL:
                    attrs.add(("call_stream", v.attrs[1] >= 0))
                    attrs.add(("call_tuple", len(v.type.items) > 1))
            for c in fn.requires:
                attrs.add(("requires", c.kind, c.mod is not None))
            attrs.add(("attributes", fn.dims != sorted(fn.dims) and fn.rand_consumers > 1))
        if mod.consts:
            attrs.add(("module_consts", True))
    all_ops = {v for k, v in vars(Op).items() if not k.startswith("_") and isinstance(v, str)}
    assert all_ops - {Op.PARAM} <= seen_ops, sorted(all_ops - seen_ops - {Op.PARAM})
    for want in [("mode", m) for m in ("rne", "rz", "ru", "rd", "sr")] + \
                [("order", o) for o in ("any", "seq", "pairwise", "kahan")] + \
                [("sat", True), ("sat", False), ("keepdims", True), ("slice", "new"),
                 ("slice", "i"), ("slice", "s"), ("step", 2), ("call_stream", True),
                 ("call_tuple", True), ("requires", "feature", False), ("requires", "cmp", True),
                 ("requires", "cmp", False), ("attributes", True), ("module_consts", True)]:
        assert want in attrs, want


# ---------------------------------------------------------------------------------------------
# pieces of the syntax
def _rand_dim(r: random.Random, depth: int = 0) -> Dim:
    k = r.randrange(6 if depth < 3 else 2)
    if k == 0:
        return Dim.const(r.randrange(-20, 40))
    if k == 1:
        return Dim.sym(r.choice(["M", "N", "K", "batch_size", "T2"]))
    a, b = _rand_dim(r, depth + 1), _rand_dim(r, depth + 1)
    if k == 2:
        return a + b
    if k == 3:
        return a - b
    if k == 4:
        return a * b
    return a.divide(r.choice([2, 3, 16, 7]))


def test_dim_expressions_roundtrip():
    r = random.Random(5)
    for _ in range(2000):
        d = _rand_dim(r)
        assert parse_dim(str(d)) == d, str(d)
    N_, K = Dim.sym("N"), Dim.sym("K")
    cases = {"N/16": N_.divide(16), "2*K + 1": 2 * K + 1, "K^2 - 3*N/4": K * K - (3 * N_).divide(4),
             "(N + 1) * (N - 1)": N_ * N_ - 1, "-N": -N_, "3/4": Dim.const(Fraction(3, 4)),
             "0": Dim.const(0), "2 * (K / 2)": K, "N*K*K": N_ * K * K}
    for text, want in cases.items():
        assert parse_dim(text) == want, text


@pytest.mark.parametrize("text, msg", [
    ("N / M", "divided by a positive integer"),
    ("N / 0", "divided by a positive integer"),
    ("N +", "expected a dimension expression"),
    ("1.5", "must be an integer"),
    ("N N", "unexpected"),
    ("f32", "cannot be a dimension name"),
])
def test_dim_expression_errors(text, msg):
    with pytest.raises(SourceError) as ei:
        parse_dim(text)
    assert msg in ei.value.message


def test_const_values_are_exact():
    vals = (0.1, -0.0, 1e-310, 5e-324, float("inf"), -float("inf"), 1.7976931348623157e308,
            1 / 3, 2.0 ** 70, -123456789.125)
    fmt = FORMATS["f64"]
    c = Value(Op.CONST, (), (vals, None), TensorType(fmt, (Dim.const(len(vals)),)))
    x = Value(Op.PARAM, (), ("x", 0), TensorType(fmt, (Dim.const(len(vals)),)))
    s = Value(Op.CONST, (), ((-0.0,), None), TensorType(FORMATS["f16"], ()))
    add = Value(Op.ADD, (x, c), (), x.type)
    fn = N.Function("f", [N.Parameter("x", x, None)], (add, s), True, frozenset(), [], [])
    text = print_function(fn)
    got = parse_function(text)
    assert got.results[0] is add and got.results[1] is s
    parsed_vals = got.results[0].srcs[1].attrs[0]
    assert [v.hex() for v in parsed_vals] == [v.hex() for v in vals]
    assert "-0.0" in text and "5e-324" in text


def test_long_constant_prints_in_full():
    vals = tuple(float(i) / 7 for i in range(1000))
    c = Value(Op.CONST, (), (vals, None), TensorType(F32, (Dim.const(10), Dim.const(100))))
    fn = N.Function("f", [], (c,), False, frozenset(), [], [])
    text = print_function(fn)
    assert "..." not in text and text.count("\n") > 100
    assert parse_function(text).results[0] is c


def test_generic_attributes_roundtrip():
    x = Value(Op.PARAM, (), ("x", 0), TensorType(F32, (Dim.sym("N"),)))
    odd = (1, -2, "a \"q\" \\ b", True, False, None, 2.5, float("-inf"), Dim.sym("N").divide(4),
           Fraction(-1, 3), (), (7,), ((1, 2), "x"))
    v = Value(Op.ADD, (x, x), odd, x.type)
    w = Value(Op.SLICE, (v,), ("not", "the", "usual", "layout"), x.type)
    fn = N.Function("g", [N.Parameter("x", x, (-1.0, 1.0))], (w,), False, frozenset(), [], ["N"])
    text = print_function(fn)
    assert "attrs=(" in text
    got = parse_function(text)
    assert got.results[0] is w
    assert print_function(got) == text


def test_grades_roundtrip_as_printed():
    mod = numgrade.load(GOLDEN / "elementwise.grd").ir
    fn = mod.functions["arith"]
    for i, v in enumerate(N.toposort(fn.results)):
        if i % 3 == 0:
            fn.grades[v] = Grade(range=(-i - 0.5, 1e30), abs_error=1.5e-7 * i, rel_error=2.0 ** -i)
        elif i % 3 == 1:
            fn.grades[v] = Grade(range=(0.0, float("inf")))
    text = print_function(fn)
    assert "// range=" in text
    got = parse_function(text)
    assert print_function(got) == text
    assert len(got.grades) == sum(1 for v in N.toposort(fn.results)
                                  if v in fn.grades and v.op != Op.PARAM)


def test_handwritten_ir_parses_and_runs():
    text = """
    // comments and free layout are fine
    func @f(%x: f32[N] in [-2, 2], %y: f32[N]) -> (f32[N], f32) requires N % 4 == 0
    {
        %s = add %x %y
             : f32[N]                       // the type may go on its own line
        %t = reduce_sum %s {order=seq, axes=[0]} : f32
        %h = const {0.5} : f32
        %r = round %t {mode=sr stream=0} : bf16
        %u = round %r {} : f32
        %m = mul %u %h : f32
        return %s, %m
    }
    """
    mod = parse_module(text, "hand.ir")
    fn = mod.functions["f"]
    assert fn.params[0].range == (-2.0, 2.0) and fn.params[1].range is None
    assert fn.requires[0].text == "N % 4 == 0" and fn.requires[0].mod == 4
    assert fn.rand_consumers == 1 and fn.dims == ["N"]
    x = np.arange(8.0) / 4
    s, m = Interpreter(mod).run("f", [x, x], seed=3)
    assert np.array_equal(s, 2 * x)
    # `requires` failures point into the IR text
    with pytest.raises(GradeError) as ei:
        Interpreter(mod).run("f", [x[:6], x[:6]])
    assert ei.value.span.file == "hand.ir" and ei.value.span.line == 3


def test_requirement_text_is_kept():
    src = """
    const CAP: i32 = 64
    fn f(x: f32[N, K]) -> f32[N] requires N % 2 == 0, N / 2 * 2 == N, K <= CAP, (N+1) % 3 != 0, feature(a_b) {
        return sum(x, axis=1)
    }
    """
    mod = numgrade.compile_source(src).ir
    text = assert_roundtrip_module(mod)
    assert 'K <= 64 "K <= CAP"' in text and "feature(a_b)" in text
    assert "(N + 1) % 3 != 0" in text


@pytest.mark.parametrize("text, msg, line, col", [
    ("func @f(%x: f32) -> f32 {\n  return %y\n}", "unknown value %y", 2, 10),
    ("func @f(%x: f32) -> f32 {\n  %a = frobnicate %x : f32\n  return %a\n}",
     "unknown operation 'frobnicate'", 2, 8),
    ("func @f(%x: f33) -> f32 {\n  return %x\n}", "unknown format 'f33'", 1, 13),
    ("func @f(%x: f32) -> f32 {\n  %a = neg %x : f32\n  %a = neg %a : f32\n  return %a\n}",
     "value %a is defined twice", 3, 3),
    ("func @f(%x: f32) -> f32 {\n  %a = add %x : f32\n  return %a\n}",
     "'add' takes 2 operand(s), found 1", 2, 8),
    ("func @f(%x: f32) -> f32 {\n  %a = round %x {mode=up sat=true} : f16\n  return %x\n}",
     "mode must be one of", 2, 18),
    ("func @f(%x: f32) -> f32 {\n  %a = round %x {mode=sr sat=true} : f16\n  return %x\n}",
     "mode=sr needs a stream", 2, 17),
    ("func @f(%x: f32[N]) -> f32 {\n  %a = reduce_sum %x {axes=[1]} : f32\n  return %a\n}",
     "axes must be increasing", 2, 23),
    ("func @f(%x: f32[N]) -> f32 {\n  %a = reduce_sum %x {axes=[0] colour=red} : f32\n"
     "  return %a\n}", "unexpected attribute 'colour'", 2, 32),
    ("func @f(%x: f32) -> f32 {\n  %c = const {[1.0, 2.0]} : f32[3]\n  return %x\n}",
     "needs 3 value(s), found 2", 2, 15),
    ("func @f(%x: f32) -> f32 {\n  %c = const {1.0} : f32[N]\n  return %x\n}",
     "needs a constant shape", 2, 22),
    ("func @f(%x: f32) -> f16 {\n  return %x\n}", "has type f32 but @f declares f16", 2, 10),
    ("func @f(%x: f32) -> (f32, f32) {\n  return %x\n}", "declares 2 result(s) but returns 1",
     2, 3),
    ("func @f(%x: f32) -> f32 {\n  %c = call %x {@g} : (f32)\n  %r = proj %c {#0} : f32\n"
     "  return %r\n}", "call to unknown function @g", 2, 8),
    ("func @f(%x: f32) -> f32 {\n  %c = call %x {@g} : (f32)\n  %r = proj %c {#1} : f32\n"
     "  return %r\n}", "proj index 1 is out of range", 3, 8),
    ("func @f(%x: f32, %x: f32) -> f32 {\n  return %x\n}", "parameter %x is declared twice", 1, 18),
    ("func @f(%x: f32 in [2.0, 1.0]) -> f32 {\n  return %x\n}", "empty range", 1, 21),
    ("func @f(%x: f32) -> f32 requires N % 0 == 0 {\n  return %x\n}", "positive integer", 1, 38),
    ("func @f(%x: f32) -> f32 requires N = 3 {\n  return %x\n}", "expected a comparison", 1, 36),
    ("func @f(%x: f32) -> f32 {\n  %c = const {@T} : f32[2]\n  return %x\n}",
     "unknown constant @T", 2, 15),
    ("func @f(%x: f32) -> f32 {\n  %a = neg %x : f32 $\n  return %a\n}",
     "unexpected character '$'", 2, 21),
    ("func @f(%x: f32) -> f32 {\n  %a = neg %x\n  return %a\n}", "expected ':' and the type", 3, 3),
    ("func @f(%x: f32) -> f32 {\n  %a = neg %x {attrs=(1, 2} : f32\n  return %a\n}",
     "expected ')'", 2, 27),
    ("func @f(%x: f32) -> f32 {\n  return %x\n}\nfunc @f(%x: f32) -> f32 {\n  return %x\n}",
     "function @f is defined twice", 4, 6),
    ("func @f(%x: f32) -> f32 attributes {colour=1} {\n  return %x\n}",
     "unknown function attribute 'colour'", 1, 37),
    ("const @T: f32[2] = [1.0]\n", "needs 2 value(s), found 1", 1, 20),
    ("func @f(%x: f32) -> f32 {\n  %c = call %x {@f} : (f32)\n  %r = proj %c {#0} : f32\n"
     "  return %r\n}", "recursive call (@f -> @f)", 2, 8),
    ("func @g(%x: f16) -> f16 {\n  return %x\n}\nfunc @f(%x: f32) -> f32 {\n"
     "  %c = call %x {@g} : (f32)\n  %r = proj %c {#0} : f32\n  return %r\n}",
     "argument 0 of @g is f32", 5, 8),
    ("func @f(%x: f32) -> f32 {\n  return %x\n", "expected '}' closing the function", 3, 1),
])
def test_errors_point_at_the_ir_text(text, msg, line, col):
    with pytest.raises(SourceError) as ei:
        parse_module(text, "bad.ir")
    err = ei.value
    assert msg in err.message, err.message
    assert (err.span.file, err.span.line, err.span.col) == ("bad.ir", line, col), str(err)
    assert f"bad.ir:{line}:{col}: error:" in str(err)


def test_parse_function_rejects_extra_text_and_needs_module_for_constants():
    mod = numgrade.load(GOLDEN / "calls.grd").ir
    text = print_module(mod)
    with pytest.raises(SourceError, match="expected 'func'"):
        parse_function(text)
    fn_text = print_function(mod.functions["table"], {id(mod.consts["TABLE"]): "TABLE"})
    assert "const {@TABLE}" in fn_text
    with pytest.raises(SourceError, match="unknown constant @TABLE"):
        parse_function(fn_text)
    assert parse_function(fn_text, module=mod).results == mod.functions["table"].results


def test_embedded_kernels_roundtrip():
    @numgrade.kernel
    def scaled(x: numgrade.f32["T", "D"].within(-10, 10), g: numgrade.bf16["D"]) \
            -> (numgrade.e4m3["T", "D"], numgrade.f32):
        ms = numgrade.mean(x * x, axis=-1, keepdims=True)
        y = x * numgrade.rsqrt(ms + 1e-6) * g
        amax = numgrade.max(numgrade.abs(y))
        return (y * (448.0 / amax)).as_(numgrade.e4m3), amax

    fn = scaled.ir
    text = print_function(fn)
    got = parse_function(text)
    assert_same_function(fn, got)
    assert print_function(got) == text


def test_mangled_ir_gives_source_errors_only():
    """Random damage to golden IR: every failure is a SourceError with a position."""
    import re

    texts = [p.read_text(encoding="utf-8") for p in sorted(GOLDEN.glob("*.ir"))]
    pieces = ["%", "@", "#0", "{", "}", "(", ")", "[", "]", ",", ":", "=", "-", "1", "1.5", "N",
              "f32", "call", "proj", "const", "func", "return", '"', "!", "requires",
              "attributes", "None", "attrs=(", "//", "^", "/", "%0", "@f", "inf", "\n"]
    r = random.Random(11)
    for _ in range(600):
        toks = re.findall(r"\s+|\S+", r.choice(texts))
        for _ in range(r.randint(1, 3)):
            k = r.randrange(len(toks))
            toks[k] = r.choice(pieces + [""])
        try:
            parse_module("".join(toks), "m.ir")
        except SourceError as ex:
            assert ex.span is not None and ex.span.file == "m.ir"
    with pytest.raises(SourceError, match="nested too deeply"):
        parse_dim("(" * 3000 + "N" + ")" * 3000)
