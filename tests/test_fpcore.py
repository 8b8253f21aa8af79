"""The FPCore frontend on the FPBench suite, and the FPCore exporter.

The checks of computed results use an FPCore evaluator written here, independently of the
translation: it walks the s-expressions with mpmath, in two modes:

* ``real``: every operation at 300 bits, no rounding at all (the ideal program), compared with
  numgrade's ideal mode. Whether literals count with their exact value or their value rounded to
  the context is asked of numgrade once (``IDEAL_EXACT_LITERALS``): FPCore's real semantics and
  numgrade's documented ideal program keep them exact;
* ``float``: every operation rounded to its context precision (p = 53 / 24 / 11 bits, nearest
  even), compared with the reference backend: bit-exact where only correctly rounded operations
  (+ - * / sqrt, exact ones) occur, within a few ulps where libm functions (exp, log, sin, cos) do.
  ``pow`` with an integer exponent is evaluated as left-to-right multiplications, which is the
  documented Grade translation.

Run with ``-s`` to see the table of supported benchmarks per file.
"""

from __future__ import annotations

import glob
from pathlib import Path
import math
import os
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import numgrade as ng
from numgrade.errors import GradeError, SourceError
from numgrade.frontend.fpcore import (Atom, SList, grade_source, load_benchmarks,
                                      load_fpcore_source, parse_fpcore_file, read_sexps, to_grade)
from numgrade.frontend.fpcore_export import to_fpcore

SUITE = os.environ.get("NUMGRADE_FPBENCH",
                       str(Path(__file__).resolve().parents[2] / "shared" / "fpbench"))
FILES = sorted(glob.glob(os.path.join(SUITE, "*.fpcore")))
pytestmark = pytest.mark.skipif(not FILES, reason=f"no FPBench suite at {SUITE}")

ANCHORS = ["doppler1", "doppler2", "doppler3", "rigidBody1", "rigidBody2", "turbine1", "turbine2",
           "turbine3", "verhulst", "predatorPrey", "carbonGas", "sine", "sqroot", "jetEngine",
           "kepler2", "himmilbeau"]


@pytest.fixture(scope="module")
def suite():
    """{file basename: [(bench, module, reason)]} for every suite file."""
    return {os.path.basename(f): load_benchmarks(f) for f in FILES}


# =============================================================================================
# an independent FPCore evaluator (mpmath)
_BITS = {"binary64": 53, "binary32": 24, "binary16": 11}
_CONST = {"PI": lambda m: m.pi, "E": lambda m: m.e, "LN2": lambda m: m.ln2,
          "LN10": lambda m: m.ln10, "PI_2": lambda m: m.pi / 2, "PI_4": lambda m: m.pi / 4,
          "SQRT2": lambda m: m.sqrt(2), "SQRT1_2": lambda m: 1 / m.sqrt(2),
          "M_1_PI": lambda m: 1 / m.pi, "M_2_PI": lambda m: 2 / m.pi,
          "LOG2E": lambda m: 1 / m.ln2, "LOG10E": lambda m: 1 / m.ln10,
          "M_2_SQRTPI": lambda m: 2 / m.sqrt(m.pi)}
LIBM = {"exp", "log", "sin", "cos", "tanh", "exp2", "log2"}


def _ideal_exact_literals() -> bool:
    f = ng.compile_source("fn f(x: f64) -> f64 { return x + 0.1 }").f
    ctx = mpmath.MPContext()
    ctx.prec = 300
    v = ctx.mpf(f.ideal(0.0, as_float=False))
    return abs(v - ctx.mpf(1) / 10) < ctx.mpf(10) ** -30


IDEAL_EXACT_LITERALS = _ideal_exact_literals()


class Evaluator:
    def __init__(self, mode: str):
        self.mode = mode
        self.hi = mpmath.MPContext()
        self.hi.prec = 300
        self.max_abs = 0.0  # largest intermediate magnitude (scale for error tolerances)

    def rnd(self, x, prec: str):
        """Round to the context precision (float mode: every result; real mode: literals)."""
        if isinstance(x, bool):
            return x
        ctx = mpmath.MPContext()
        ctx.prec = _BITS[prec]
        r = self.hi.mpf(ctx.mpf(x))
        if self.hi.isfinite(r):
            self.max_abs = max(self.max_abs, abs(float(r)))
        return r

    def op(self, x, prec: str):
        return self.rnd(x, prec) if self.mode == "float" else self.track(x)

    def track(self, x):
        if not isinstance(x, bool) and self.hi.isfinite(x):
            self.max_abs = max(self.max_abs, abs(float(x)))
        return x

    def literal(self, v, prec: str):
        if not isinstance(v, Fraction):  # a constant such as PI (an mpf at 300 bits)
            x = v
        else:
            x = self.hi.mpf(v.numerator) / v.denominator
        if self.mode == "real" and IDEAL_EXACT_LITERALS:
            return self.track(x)
        return self.rnd(x, prec)

    def ev(self, e, env: dict, prec: str):
        m = self.hi
        if isinstance(e, Atom):
            if e.kind == "number":
                return self.literal(e.value, prec)
            if e.text in env:
                return env[e.text]
            if e.text in ("TRUE", "FALSE"):
                return e.text == "TRUE"
            return self.literal(_CONST[e.text](m), prec)
        h = e.items[0].text
        a = e.items[1:]
        if h in ("let", "let*"):
            inner = dict(env)
            for b in a[0].items:
                inner[b.items[0].text] = self.ev(b.items[1], inner if h == "let*" else env, prec)
            return self.ev(a[1], inner, prec)
        if h == "if":
            return self.ev(a[1] if self.ev(a[0], env, prec) else a[2], env, prec)
        if h == "!":
            props = {a[i].text: a[i + 1] for i in range(0, len(a) - 1, 2)}
            p = props.get(":precision")
            return self.ev(a[-1], env, p.text if p is not None else prec)
        if h == "cast":  # the ideal program removes explicit roundings too
            return self.op(self.ev(a[0], env, prec), prec)
        if h == "pow":
            x = self.ev(a[0], env, prec)
            n = int(a[1].value)
            if n == 0:
                return m.mpf(1)
            r = x
            for _ in range(n - 1):
                r = self.op(r * x, prec)
            return r
        if h == "and":
            return all(self.ev(x, env, prec) for x in a)
        if h == "or":
            return any(self.ev(x, env, prec) for x in a)
        if h == "not":
            return not self.ev(a[0], env, prec)
        vals = [self.ev(x, env, prec) for x in a]
        cmp = {"<": lambda x, y: x < y, "<=": lambda x, y: x <= y, ">": lambda x, y: x > y,
               ">=": lambda x, y: x >= y, "==": lambda x, y: x == y}
        if h in cmp:
            return all(cmp[h](x, y) for x, y in zip(vals, vals[1:]))
        if h == "!=":
            return all(vals[i] != vals[j] for i in range(len(vals))
                       for j in range(i + 1, len(vals)))
        if h == "-" and len(vals) == 1:
            return -vals[0]
        if h == "fma":
            return self.op(vals[0] * vals[1] + vals[2], prec)
        if h in ("+", "-", "*", "/"):
            r = vals[0]
            for v in vals[1:]:
                r = {"+": r + v, "-": r - v, "*": r * v, "/": r / v if v != 0 else m.nan}[h]
                r = self.op(r, prec)
            return r
        fns = {"sqrt": m.sqrt, "exp": m.exp, "log": m.log, "sin": m.sin, "cos": m.cos,
               "tanh": m.tanh, "fabs": abs, "exp2": lambda t: m.power(2, t),
               "log2": lambda t: m.log(t, 2), "floor": m.floor, "ceil": m.ceil,
               "fmin": min, "fmax": max}
        if vals and any(isinstance(v, bool) for v in vals):
            raise AssertionError(f"boolean operand of {h}")
        if h in ("sqrt", "log", "log2") and vals[0] < 0:
            return m.nan
        return self.op(fns[h](*vals), prec)


def _ops_of(e) -> set[str]:
    out, stack = set(), [e]
    while stack:
        x = stack.pop()
        if isinstance(x, SList) and x.items:
            if isinstance(x.items[0], Atom):
                out.add(x.items[0].text)
            stack.extend(x.items)
    return out


def _sample_points(bench, n: int, seed: int):
    """Points inside the ranges, in the parameters' formats, satisfying the extra conditions."""
    rng = np.random.default_rng(seed)
    dtypes = {"binary64": np.float64, "binary32": np.float32, "binary16": np.float16}
    top = bench.precision_name
    pts = []
    tries = 0
    while len(pts) < n and tries < 2000:
        tries += 1
        xs = []
        for a in bench.args:
            lo, hi = bench.range_of(a.name)
            prec = a.precision.text if a.precision is not None else top
            x = float(dtypes[prec](rng.uniform(lo, hi)))
            b = bench.ranges[a.name]
            if x < b.lo or x > b.hi or (b.lo_strict and x == b.lo) or (b.hi_strict and x == b.hi):
                break
            xs.append(x)
        else:
            ev = Evaluator("real")
            env0 = {a.name: ev.hi.mpf(x) for a, x in zip(bench.args, xs)}
            ok = True
            for c in bench.extra:
                env = dict(env0)
                env.update({k: ev.hi.mpf(v.numerator) / v.denominator if not isinstance(v, bool)
                            else v for k, v in c.env.items()})
                if not ev.ev(c.expr, env, top):
                    ok = False
                    break
            if ok:
                pts.append(xs)
    return pts


# =============================================================================================
# the suite
@pytest.mark.parametrize("path", FILES, ids=[os.path.basename(f) for f in FILES])
def test_every_file_parses(path):
    text = open(path, encoding="utf-8").read()
    benches = parse_fpcore_file(text, path)
    assert len(benches) == text.count("(FPCore")
    assert len({b.ident for b in benches}) == len(benches)
    for b in benches:
        assert b.name and b.ident.isidentifier()
        assert b.span.file == path and b.span.line >= 1


def test_supported_table(suite):
    rows = []
    total = supported = 0
    for f, res in suite.items():
        ok = sum(1 for r in res if r.module is not None)
        rows.append((f, ok, len(res)))
        total += len(res)
        supported += ok
        for b, m, reason in res:
            assert (m is None) == (reason is not None), b.name
    print("\nFPBench suite: supported / total per file")
    for f, ok, n in rows:
        print(f"  {f:28s} {ok:3d} / {n:3d}")
    print(f"  {'total':28s} {supported:3d} / {total:3d}")
    reasons: dict[str, int] = {}
    for res in suite.values():
        for b, m, reason in res:
            if m is None:
                key = reason.split(" (")[0].split(";")[0]
                key = "no range in :pre" if key.startswith("no range") else key
                reasons[key] = reasons.get(key, 0) + 1
    print("  unsupported, by first reason:")
    for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"    {v:3d}  {k}")
    assert supported >= 75
    by_file = {f: ok for f, ok, _ in rows}
    assert by_file.get("rosa.fpcore", 0) >= 34
    assert by_file.get("fptaylor-extra.fpcore", 0) == 18
    assert by_file.get("fptaylor-tests.fpcore", 0) == 10


def test_unsupported_reasons_are_precise(suite):
    reasons = {b.name: r for res in suite.values() for b, m, r in res if m is None}
    assert reasons["azimuth"] == "unsupported operation 'atan' (Grade has no atan)"
    assert reasons["N Body Simulation"] == "loops (while) are not supported"
    assert reasons["NMSE example 3.1"] == "no range for variable 'x' in :pre (only a lower bound)"
    assert "no range for variables 'a', 'b' in :pre (no bounds)" in \
        reasons["Rump's example, from C program"]
    assert "pow with" in reasons["NMSE problem 3.3.4"]


def test_anchor_benchmarks_supported(suite):
    found = {}
    for f, res in suite.items():
        for b, m, reason in res:
            if b.name in ANCHORS:
                found.setdefault(b.name, []).append((f, m, reason))
    missing = [a for a in ANCHORS if a not in found]
    assert not missing, f"anchors not found in the suite: {missing}"
    for a in ANCHORS:
        for f, m, reason in found[a]:
            assert m is not None, f"anchor {a} ({f}) unsupported: {reason}"
    # the anchor functions have the documented shapes
    assert {f for a in ANCHORS for f, _, _ in found[a]} == {
        "rosa.fpcore", "fptaylor-real2float.fpcore", "fptaylor-extra.fpcore"}


def test_supported_benchmarks_run_and_agree(suite):
    checked = 0
    no_points = []
    for f, res in suite.items():
        for k, (b, mod, _) in enumerate(res):
            if mod is None:
                continue
            fn = mod[b.ident]
            assert fn.ir.params and all(p.range is not None for p in fn.ir.params)
            pts = _sample_points(b, 3, seed=k)
            if not pts:
                no_points.append(b.name)
                continue
            top = b.precision_name
            ops = _ops_of(b.body)
            exact = not (ops & LIBM)
            tol = {"binary64": 1e-6, "binary32": 1e-3, "binary16": 3e-2}[top]
            for xs in pts:
                got = float(fn(*xs))
                ideal = float(fn.ideal(*xs))
                env_r, env_f = Evaluator("real"), Evaluator("float")
                env = {a.name: env_r.hi.mpf(x) for a, x in zip(b.args, xs)}
                want_real = env_r.ev(b.body, env, top)
                want_float = env_f.ev(b.body, env, top)
                scale = max(env_r.max_abs, 1e-300)
                assert math.isfinite(got) and math.isfinite(ideal), (b.name, xs, got, ideal)
                # ideal mode == the real-number evaluation (up to the float64 conversion)
                assert abs(ideal - float(want_real)) <= 2.0 ** -52 * abs(ideal) + 1e-25 * scale, \
                    (b.name, xs, ideal, want_real)
                # computed == the rounded evaluation
                if exact:
                    assert got == float(want_float), (b.name, xs, got, want_float)
                else:
                    assert abs(got - float(want_float)) <= 1e-12 * scale + 1e-12 * abs(got), \
                        (b.name, xs, got, want_float)
                # computed close to ideal, relative to the magnitudes involved
                assert abs(got - ideal) <= tol * scale, (b.name, xs, got, ideal, scale)
            checked += 1
    assert checked >= 75, (checked, no_points)
    assert len(no_points) <= 2, no_points


def test_suite_round_trips_through_grade_text_and_fpcore(suite):
    """FPCore -> Grade AST -> Grade text -> IR, and -> FPCore -> Grade: same results."""
    for res in suite.values():
        for k, (b, mod, _) in enumerate(res):
            if mod is None:
                continue
            fn = mod[b.ident]
            prog, _ = to_grade(b)
            again = ng.compile_source(grade_source(prog), f"{b.ident}.grd")[b.ident]
            (b2, mod2, reason2), = load_fpcore_source(to_fpcore(fn), f"{b.ident}.fpcore")
            assert mod2 is not None, (b.name, reason2)
            back = mod2[b2.ident]
            for xs in _sample_points(b, 2, seed=100 + k):
                r0 = fn(*xs)
                assert np.array_equal(r0, again(*xs), equal_nan=True), b.name
                assert np.array_equal(r0, back(*xs), equal_nan=True), b.name


# =============================================================================================
# translation details
def _one(text: str):
    (b, mod, reason), = load_fpcore_source(text, "t.fpcore")
    return b, mod, reason


def _run(text: str, *xs):
    b, mod, reason = _one(text)
    assert mod is not None, reason
    return mod[b.ident](*xs)


def test_constant_operations_round_like_fpcore():
    # (+ 0.1 0.2) rounds in binary64: 0.30000000000000004, not 0.3 folded exactly
    r = _run("(FPCore (x) :pre (<= 0 x 1) (+ x (- (+ 0.1 0.2) 0.3)))", 0.0)
    assert r == (0.1 + 0.2) - 0.3 != 0.0
    assert _run("(FPCore (x) :pre (<= 0 x 1) (* x 1/3))", 1.0) == 1 / 3
    assert _run("(FPCore (x) :pre (<= 0 x 2) (* x PI))", 1.0) == math.pi
    assert _run("(FPCore (x) :pre (<= 0 x 2) (* x (/ 180 PI)))", 1.0) == 180 / math.pi
    r32 = _run("(FPCore (x) :precision binary32 :pre (<= 0 x 1) (+ x 0.1))", 0.0)
    assert r32 == np.float32(0.1) and r32.dtype == np.float32
    assert _run("(FPCore (x) :pre (<= 0 x 1) (+ x 0x1.8p1))", 0.0) == 3.0
    assert _run("(FPCore (x) :pre (<= 0 x 1) (+ x (digits 3 -1 2)))", 0.0) == 1.5
    assert _run("(FPCore (x) :pre (<= 0 x 1) (+ x -.5))", 0.0) == -0.5


def test_let_scoping_and_mixed_precision():
    assert _run("(FPCore (x) :pre (<= 0 x 1) (let ([x (+ x 1)] [y x]) (- x y)))", 0.25) == 1.0
    assert _run("(FPCore (x) :pre (<= 0 x 1) (let* ([x (+ x 1)] [y x]) (- x y)))", 0.25) == 0.0
    text = """(FPCore (t) :precision binary32 :pre (<= 1 t 999)
               (cast (! :precision binary64 (/ t (! :precision binary32 (+ t 1))))))"""
    t = np.float32(3.7)
    want = np.float32(np.float64(t) / np.float64(np.float32(t + np.float32(1))))
    got = _run(text, t)
    assert got == want and got.dtype == np.float32
    # an argument annotated with its own precision
    b, mod, _ = _one("(FPCore ((! :precision binary32 x) y) :pre (and (<= 0 x 1) (<= 0 y 1)) "
                     "(+ x y))")
    assert [str(p.value.type) for p in mod[b.ident].ir.params] == ["f32", "f64"]


def test_if_pow_fmin_and_notes():
    text = "(FPCore (x) :pre (<= -2 x 2) (if (< x 0) (pow x 3) (fmax x (sqrt x))))"
    b, mod, reason = _one(text)
    f = mod[b.ident]
    assert f(-1.5) == (-1.5 * -1.5) * -1.5 and f(0.25) == 0.5
    assert any("both branches" in n for n in b.notes)
    assert any("pow(x, 3)" in n for n in b.notes)
    assert any("propagate NaN" in n for n in b.notes)
    # comparisons are variadic chains; != is pairwise
    f = _run("(FPCore (x y) :pre (and (<= 0 x 4) (<= 0 y 4)) (if (< 0 x y 3) 1 2))", 1.0, 2.0)
    assert f == 1.0
    assert _run("(FPCore (x y) :pre (and (<= 0 x 4) (<= 0 y 4)) (if (!= x y 2) 1 2))", 1, 2) == 2
    # fma rounds once: x*x - 1/3 with x = 1/3 + tiny keeps the product's low bits
    x = 0.1
    got = _run("(FPCore (x) :pre (<= 0 x 1) (fma x x (- (* x x))))", x)
    want = float(Fraction(x) * Fraction(x) - Fraction(x * x))
    assert got == want != 0.0


def test_unsupported_constructs_have_reasons():
    cases = {
        "(FPCore (x) :pre (<= 0 x 1) (atan x))": "unsupported operation 'atan'",
        "(FPCore (x) :pre (<= 0 x 1) (hypot x x))": "unsupported operation 'hypot'",
        "(FPCore (x) :pre (<= 0 x 1) (while (< x 1) ([y 0 (+ y 1)]) y))": "loops (while)",
        "(FPCore (x) :precision real :pre (<= 0 x 1) x)": "unsupported precision real",
        "(FPCore (x) :pre (>= x 0) x)": "no range for variable 'x' in :pre (only a lower bound)",
        "(FPCore (x) :pre (<= 0 x 1) (pow x 0.5))": "pow with exponent 0.5",
        "(FPCore (x) :pre (<= 0 x 1) (+ x INFINITY))": "constant INFINITY",
        "(FPCore ((x 3)) x)": "array argument 'x'",
        "(FPCore (x) :pre (<= 2 x 1) x)": "empty range for 'x'",
        "(FPCore (x) :round toZero :pre (<= 0 x 1) x)": "rounding mode",
        "(FPCore (x) :pre (<= 0 x 1) (+ x y))": "unknown variable 'y'",
    }
    for text, want in cases.items():
        b, mod, reason = _one(text)
        assert mod is None and want in reason, (text, reason)


def test_precondition_analysis():
    (b,) = parse_fpcore_file("""
      (FPCore (x y z w)
        :pre (let ([a 3]) (and (<= 1 x) (< x (* 2 a)) (>= 3 y) (> y -1) (== z 2)
                               (<= 0 w 1) (<= (+ x y) 4) (!= w 1/2)))
        (+ x y z w))""", "p.fpcore")
    r = b.ranges
    assert (r["x"].lo, r["x"].hi, r["x"].hi_strict) == (1, 6, True)
    assert (r["y"].lo, r["y"].hi, r["y"].lo_strict) == (-1, 3, True)
    assert (r["z"].lo, r["z"].hi) == (2, 2)
    assert [c.text for c in b.extra] == ["(<= (+ x y) 4)", "(!= w 1/2)"]
    assert b.extra[0].env == {"a": 3}
    prog, reason = to_grade(b)
    assert reason is None
    assert any("extra constraints" in n for n in prog.extra["notes"])


def test_deep_nesting():
    deep = "(FPCore (x) :pre (<= 0 x 1) " + "(+ x " * 120 + "x" + ")" * 120 + ")"
    f = _run(deep, 0.5)
    assert f == 0.5 * 121
    very = "(FPCore (x) :pre (<= 0 x 1) " + "(+ x " * 5000 + "x" + ")" * 5000 + ")"
    b, mod, reason = _one(very)
    assert mod is None and "nested deeper" in reason
    assert len(read_sexps("(" * 100000 + ")" * 100000)) == 1


def test_names_and_properties():
    text = """
    ; comment with (parens
    (FPCore foo (x) :description "a \\"quoted\\" (string)" #| block ( |# :pre (<= 0 x 1) x)
    (FPCore (x) :name "same name" :pre (<= 0 x 1) x)
    (FPCore (x) :name "same name" :pre (<= 0 x 1) [let ([y x]) y])
    (FPCore (sum*) :pre (<= 0 sum* 1) sum*)
    """
    bs = parse_fpcore_file(text, "n.fpcore")
    assert [b.name for b in bs] == ["foo", "same name", "same name", "n.fpcore:3"]
    assert [b.ident for b in bs] == ["foo", "same_name", "same_name_2", "n_fpcore_3"]
    assert bs[0].properties["description"].value == 'a "quoted" (string)'
    res = load_fpcore_source(text, "n.fpcore")
    assert all(m is not None for _, m, _ in res)
    assert res[3].module[res[3].bench.ident](0.5) == 0.5


@pytest.mark.parametrize("text, where, msg", [
    ("(FPCore (x)\n  (+ x 1)", (1, 1), "unclosed '('"),
    ("(FPCore (x) x))", (1, 15), "unexpected ')'"),
    ("(FPCore (x) [+ x 1))", (1, 19), "does not match"),
    ('(FPCore (x) :name "abc\n x)', (1, 19), "unterminated string"),
    ("(FPCore (x) :pre (<= 0 x 1))", (1, 1), "no body"),
    ("(FPCore (x) x :name)", (1, 15), "has no value"),
    ("(FPCore (x) x y)", (1, 15), "after the FPCore body"),
    ("\n\n  (Core (x) x)", (3, 3), "expected an (FPCore"),
    ("(FPCore x)", (1, 9), "argument list"),
    ("(FPCore (x 1.5 (! :precision binary32)) x)", (1, 12), "must be a name"),
    ("(FPCore (x x) x)", (1, 12), "declared twice"),
    ("(FPCore (x) x) #| open", (1, 16), "unterminated block comment"),
])
def test_malformed_fpcore_is_a_located_error(text, where, msg):
    with pytest.raises(SourceError) as ei:
        parse_fpcore_file(text, "bad.fpcore")
    err = ei.value
    assert isinstance(err, GradeError)
    assert err.span is not None and (err.span.line, err.span.col) == where, str(err)
    assert msg in err.message
    assert str(err).startswith(f"bad.fpcore:{where[0]}:{where[1]}: error:")


def test_load_missing_file_is_grade_error(tmp_path):
    with pytest.raises(GradeError):
        load_benchmarks(tmp_path / "nope.fpcore")


# =============================================================================================
# exporter
ROUND_TRIP = [
    """fn f(x: f64 in [-2, 3], y: f64 in [0.5, 4]) -> f64 {
           let a = x * 0.1 + 3.0
           let b = a * a - y / (x + 5)
           return sqrt(abs(b)) + exp(-y) * log(y) - min(a, y) + max(b, 1.5)
       }""",
    """fn g(x: f32 in [-2, 3], y: f32 in [0.5, 4], z: f64 in [-1, 1]) -> f32 {
           let a: f64 = x * y + z
           let b = round(a, f32, mode=rz) + (z as f32) + rsqrt(y) + sigmoid(x)
           let c = where(x > y and not (z < 0.25), sin(x) * cos(y), tanh(y) - 0.3)
           return b * c + floor(x) - ceil(y) + exp2(x) / log2(y + 1)
       }""",
    """fn h(x: f16 in [-2, 2], y: f32 in [-8, 8]) -> f32 {
           let p = x * x + 0.1
           return p / (y * y + 1) - (p as f32) * 3.0
       }""",
    """fn k(x: bf16 in [1, 2], y: f64 in [0, 1]) -> bf16 {
           let s = (y * 1e10) as bf16
           return where(y >= 0.5, x * s, x - s)
       }""",
]


@pytest.mark.parametrize("src", ROUND_TRIP, ids=["f64", "mixed32", "f16", "bf16"])
def test_export_round_trip(src):
    mod = ng.compile_source(src, "rt.grd")
    fn = mod[mod.functions[0]]
    text = to_fpcore(fn)
    assert text.startswith("(FPCore (") and ":pre (and" in text
    (b, mod2, reason), = load_fpcore_source(text, "rt.fpcore")
    assert mod2 is not None, (reason, text)
    back = mod2[b.ident]
    assert [str(p.value.type) for p in back.ir.params] == [str(p.value.type)
                                                          for p in fn.ir.params]
    assert [p.range for p in back.ir.params] == [p.range for p in fn.ir.params]
    rng = np.random.default_rng(7)
    for _ in range(40):
        xs = [rng.uniform(*p.range) for p in fn.ir.params]
        want, got = fn(*xs), back(*xs)
        assert np.array_equal(np.float64(want), np.float64(got), equal_nan=True), (xs, want, got)
        assert want.dtype == got.dtype
        wi, gi = fn.ideal(*xs), back.ideal(*xs)
        assert abs(wi - gi) <= 1e-12 * max(1.0, abs(wi)), (xs, wi, gi)


def test_export_shape_and_errors():
    text = to_fpcore(ng.compile_source(
        "fn f(x: f64 in [0, 1]) -> f64 { let y = x * x\n return y + y * 0.5 }").f)
    assert "(let* ([y (* x x)])" in text and ':name "f"' in text
    assert ":precision binary64" in text
    bad = {
        "fn f(x: f32 in [0, 1]) -> e4m3 { return x as e4m3 }": "e4m3 has no FPCore precision",
        "fn f(x: f32[N] in [0, 1]) -> f32 { return sum(x) }": "scalar",
        "fn f(x: f32 in [0, 1]) -> f32 ! {rand} { return round(x, f16, mode=sr) as f32 }":
            "effects",
        "fn f(x: f64 in [0, 4]) -> f64 { return x % 3 }": "floored modulo",
        "fn g(x: f64) -> f64 { return x }\nfn f(x: f64) -> f64 { return g(x) }": "calls",
        "fn f(x: i32) -> f32 { return x / 2 }": "parameter 'x' has format i32",
    }
    for src, msg in bad.items():
        with pytest.raises(GradeError) as ei:
            to_fpcore(ng.compile_source(src).f)
        assert msg in str(ei.value), (src, str(ei.value))
