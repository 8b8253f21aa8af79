"""Per-input sensitivities (numgrade.passes.sensitivity): the rules, and soundness by
measurement on the ideal program (random pairs of inputs in range, |f(x) - f(x')| / |x - x'|
must never exceed the bound, in either metric)."""

from __future__ import annotations

import math
import zlib

import mpmath
import numpy as np
import pytest

import numgrade as ng
from numgrade.ir.formats import round_array
from numgrade.passes.sensitivity import (flatten, ideal_ranges, input_sensitivities,
                                         sensitivity_analysis)


def _mod(src: str):
    return ng.compile_source(src, "t.grd")


def _sens(src: str, name: str, dims=None, metric="absolute"):
    m = _mod(src)
    return input_sensitivities(m.ir, m.ir.functions[name], dims, metric=metric)


# ---------------------------------------------------------------------------------------------
# rules
def test_arithmetic_rules():
    src = """
    fn f(x: f64 in [1, 3], y: f64 in [-2, 5]) -> f64 { return x * y + x }
    fn g(x: f64 in [1, 3], y: f64 in [2, 4]) -> f64 { return x / y }
    fn h(x: f64 in [-3, 3]) -> f64 { return x * x }
    """
    assert _sens(src, "f") == {"x": 6.0, "y": 3.0}          # |y| + 1, |x|
    s = _sens(src, "g")
    assert s["x"] == pytest.approx(0.5) and s["y"] == pytest.approx(3 / 4)
    assert _sens(src, "h") == {"x": 6.0}                     # 2 |x|


def test_reductions_and_products_use_the_sizes():
    src = """
    fn s(x: f64[N] in [-1, 1]) -> f64 { return sum(x) }
    fn m(x: f64[N] in [-1, 1]) -> f64 { return mean(x) }
    fn mx(x: f64[N] in [-1, 1]) -> f64 { return max(x) }
    fn mv(A: f64[M, N] in [-2, 2], v: f64[N] in [-3, 3]) -> f64[M] { return A @ v }
    """
    assert _sens(src, "s", {"N": 10}) == {"x": 10.0}
    assert _sens(src, "m", {"N": 10})["x"] == pytest.approx(1.0)
    assert _sens(src, "mx", {"N": 10}) == {"x": 1.0}
    assert _sens(src, "mv", {"M": 3, "N": 7}) == {"A": 21.0, "v": 14.0}   # K |v|, K |A|
    m = _mod(src)
    res = sensitivity_analysis(m.ir, m.ir.functions["s"])     # N not given
    assert res.absolute["x"] is None and "N" in res.reasons["x"]


def test_math_functions_take_the_largest_derivative_over_the_range():
    src = """
    fn e(x: f64 in [-1, 2]) -> f64 { return exp(x) }
    fn q(x: f64 in [4, 9]) -> f64 { return sqrt(x) }
    fn l(x: f64 in [0.5, 8]) -> f64 { return log(x) }
    fn t(x: f64 in [-1, 1]) -> f64 { return tanh(x) }
    """
    assert _sens(src, "e")["x"] == pytest.approx(math.exp(2), rel=1e-9)
    assert _sens(src, "q")["x"] == pytest.approx(0.25, rel=1e-9)
    assert _sens(src, "l")["x"] == pytest.approx(2.0, rel=1e-9)
    assert _sens(src, "t")["x"] == pytest.approx(1.0, rel=1e-9)


def test_rounding_and_movement_do_not_change_the_ideal_program():
    src = """
    fn r(x: f32[N] in [-4, 4]) -> e4m3[N] { return round(reshape(x, [N]) * 2.0, e4m3) }
    """
    assert _sens(src, "r", {"N": 8}) == {"x": 2.0}


def test_branches():
    src = """
    fn relu(x: f64 in [-1, 1]) -> f64 { return where(x > 0.0, x, 0.0) }
    fn step(x: f64 in [-1, 1]) -> f64 { return where(x > 0.0, x * 0.0 + 1.0, x * 0.0) }
    fn fixed(x: f64 in [1, 2], c: bool) -> f64 { return where(c, 3.0 * x, x) }
    fn decided(x: f64 in [1, 2]) -> f64 { return where(x > 0.5, x, 10.0 * x) }
    fn fl(x: f64 in [0.2, 5]) -> f64 { return floor(x) }
    """
    assert _sens(src, "relu") == {"x": 1.0}          # where(p > q, p, q) is max(p, q)
    m = _mod(src)
    step = sensitivity_analysis(m.ir, m.ir.functions["step"])
    assert step.absolute["x"] is None and "switch" in step.reasons["x"]
    assert _sens(src, "fixed")["x"] == 3.0
    assert _sens(src, "decided") == {"x": 1.0}       # the range decides the condition
    fl = sensitivity_analysis(m.ir, m.ir.functions["fl"])
    assert fl.absolute["x"] is None and fl.reasons["x"]


def test_division_by_a_value_that_can_be_zero_is_unbounded():
    m = _mod("fn f(x: f64 in [1, 2], y: f64 in [-1, 1]) -> f64 { return x / y }")
    res = sensitivity_analysis(m.ir, m.ir.functions["f"])
    assert res.absolute == {"x": None, "y": None}
    assert "can be 0" in res.reasons["x"]


def test_calls_are_inlined():
    src = """
    fn sq(a: f64[N]) -> f64[N] { return a * a }
    fn f(x: f64[N] in [-2, 2]) -> f64 { return sum(sq(x)) }
    """
    assert _sens(src, "f", {"N": 5}) == {"x": 20.0}           # N * 2 |x|


def test_relative_precision_metric():
    src = """
    fn hyp(x: f64 in [0.1, 1000], y: f64 in [0.1, 1000]) -> f64 { return sqrt(x * x + y * y) }
    fn prod(x: f64 in [0.1, 10], y: f64 in [0.1, 10]) -> f64 { return x * y / 3.0 }
    fn mixed(x: f64 in [-1, 1]) -> f64 { return x + 2.0 }
    """
    m = _mod(src)
    res = sensitivity_analysis(m.ir, m.ir.functions["hyp"])
    assert res.relative == {"x": 1.0, "y": 1.0}
    assert res.metric == {"x": "relative-precision", "y": "relative-precision"}
    assert res.values == res.relative
    assert input_sensitivities(m.ir, m.ir.functions["prod"]) == {"x": 1.0, "y": 1.0}
    mixed = sensitivity_analysis(m.ir, m.ir.functions["mixed"])
    assert mixed.metric == {"x": "absolute"} and mixed.values == {"x": 1.0}
    assert mixed.relative == {"x": None}
    with pytest.raises(ValueError):
        input_sensitivities(m.ir, m.ir.functions["mixed"], metric="other")


def test_softmax_shape_keeps_exp_arguments_nonpositive():
    m = ng.load_stdlib("softmax")
    fn = m.ir.functions["softmax"]
    g = flatten(m.ir, fn, {"M": 2, "N": 4})
    R = ideal_ranges(g)
    subs = [R[i] for i, n in enumerate(g.nodes) if n.op == "sub"]
    assert subs and all(float(r.hi) <= 0 for r in subs)
    s = input_sensitivities(m.ir, fn, {"M": 2, "N": 4}, metric="absolute")
    assert s["x"] is not None and math.isfinite(s["x"])


# ---------------------------------------------------------------------------------------------
# soundness by measurement
def _range(p):
    return p.range if p.range is not None else (-10.0, 10.0)   # a box inside the full range


def _fit(p, x):
    lo, hi = _range(p)
    x = np.clip(np.asarray(x, dtype=np.float64), lo, hi)
    x = np.asarray(round_array(x, p.value.fmt), dtype=np.float64)   # inputs are data in fmt
    return np.clip(x, lo, hi) if p.value.fmt.name == "f64" else x


def _maxabs(a, b, f) -> float:
    a, b = np.asarray(a, dtype=object).ravel(), np.asarray(b, dtype=object).ravel()
    return max((float(f(u, v)) for u, v in zip(a, b)), default=0.0)


def _dims_for(fn):
    for n in (4, 16, 32):
        d = {k: n for k in fn.dims}
        if all(c.holds(d) is not False for c in fn.requires):
            return d
    return None


CASES = [("sums", ["naive", "pairwise", "sum8", "sums4_sum2"]), ("dot", ["dot", "matvec"]),
         ("horner", ["horner2", "horner5", "polyval_direct"]),
         ("softmax", ["softmax", "log_softmax"]), ("layernorm", ["layernorm"]),
         ("rmsnorm", ["rmsnorm"]), ("rope", ["rope"]), ("sdf", ["trilinear", "cubic_eval"]),
         ("flow_matching", ["euler_cfg"]), ("hadamard", ["rht"]), ("attention", ["attention"]),
         ("numfuzz", ["hypot", "x_by_xy", "sqrt_add", "verhulst", "predatorPrey", "i4",
                      "Horner5"]),
         ("linsolve", ["solve2_lower", "det2"])]


@pytest.mark.parametrize("lib,names", CASES, ids=[c[0] for c in CASES])
def test_bounds_hold_on_random_pairs(lib, names):
    rng = np.random.default_rng(zlib.crc32(lib.encode()))
    m = ng.load_stdlib(lib)
    for name in names:
        fn = m.ir.functions[name]
        f = m[name]
        dims = _dims_for(fn)
        res = sensitivity_analysis(m.ir, fn, dims)
        shapes = [tuple(int(d.evaluate(dims)) for d in p.value.shape) for p in fn.params]
        finite = [p for p in fn.params if res.absolute[p.name] is not None]
        assert finite or lib in ("softmax",), (name, res.reasons)
        for _ in range(4):
            xs = []
            for p, shp in zip(fn.params, shapes):
                lo, hi = _range(p)
                if lo > 0:   # log-uniform over positive ranges
                    xs.append(_fit(p, np.exp(rng.uniform(math.log(lo), math.log(hi), shp))))
                else:
                    xs.append(_fit(p, rng.uniform(lo, hi, shp)))
            y0 = f.ideal(*xs, as_float=False)     # 160-bit values: no output rounding
            y0 = y0 if isinstance(y0, tuple) else (y0,)
            for k, p in enumerate(fn.params):
                lo, hi = _range(p)
                scale = 10.0 ** rng.uniform(-7, 0) * (hi - lo)
                x2 = _fit(p, xs[k] + rng.uniform(-1, 1, shapes[k]) * scale)
                dx = float(np.max(np.abs(x2 - xs[k])))
                if dx == 0:
                    continue
                xs2 = list(xs)
                xs2[k] = x2
                y1 = f.ideal(*xs2, as_float=False)
                y1 = y1 if isinstance(y1, tuple) else (y1,)
                dy = max(_maxabs(a, b, lambda u, v: abs(u - v)) for a, b in zip(y0, y1))
                s = res.absolute[p.name]
                if s is not None:
                    assert dy <= s * dx * (1 + 1e-9) + 1e-300, (name, p.name, dy / dx, s)
                e = res.relative[p.name]
                if e is not None:
                    dl = float(np.max(np.abs(np.log(x2 / xs[k]))))
                    with mpmath.workprec(256):
                        dyl = max(_maxabs(a, b, lambda u, v: abs(mpmath.log(u / v)))
                                  for a, b in zip(y0, y1))
                    assert dyl <= e * dl * (1 + 1e-9) + 1e-300, (name, p.name, dyl / dl, e)


def test_every_stdlib_function_gets_an_answer():
    """No crash, a number or None with a reason, for every input of every stdlib function."""
    for lib in ng.api.stdlib_names():
        m = ng.load_stdlib(lib)
        for name, fn in m.ir.functions.items():
            res = sensitivity_analysis(m.ir, fn, _dims_for(fn) or {})
            for p in fn.params:
                v = res.values[p.name]
                assert v is None or (math.isfinite(v) and v >= 0)
                if res.absolute[p.name] is None:
                    assert res.reasons[p.name]
