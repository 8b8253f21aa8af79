"""Bean-style backward error (numgrade.passes.backward): Bean's published grades, the
admissible shape, and soundness by measurement (perturbed inputs that reproduce the computed
result exactly, within the bound)."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import numgrade as ng
from numgrade.backends.reference import IdealDomain, Interpreter
from numgrade.passes.backward import (backward_analysis, backward_error, backward_witness,
                                     report_fields)

U = 2.0 ** -53

POS = "in [0.1, 1000]"
BEAN_SRC = f"""
fn Sum(x: f64[N] {POS}) -> f64 {{ return sum(x, order=seq) }}
fn SumAny(x: f64[N] in [-1000, 1000]) -> f64 {{ return sum(x) }}
fn DotProd(v: f64[N] {POS}, w: f64[N] {POS}) -> f64 {{ return sum(v * w, order=seq) }}
fn MatVecMul(M: f64[R, N] {POS}, v: f64[N] {POS}) -> f64[R] {{ return M @ v }}
"""


@pytest.fixture(scope="module")
def bean():
    return ng.compile_source(BEAN_SRC, "bean.grd")


def _units(m, name, dims=None, **kw):
    return backward_analysis(m.ir, m.ir.functions[name], dims, **kw).units


# ---------------------------------------------------------------------------------------------
# Bean's published grades (ANCHORS.md section 3), in units of 2^-53
@pytest.mark.parametrize("n", [2, 3, 20, 500])
def test_sum(bean, n):
    assert _units(bean, "Sum", {"N": n}, style="bean") == {"x": n - 1}
    assert _units(bean, "SumAny", {"N": n}) == {"x": n - 1}       # any order: depth <= n - 1


@pytest.mark.parametrize("n", [2, 5, 100])
def test_dot_product(bean, n):
    # Bean's DotProd: w is discrete (dnum), v absorbs everything
    assert _units(bean, "DotProd", {"N": n}, discrete=["w"], style="bean") == {"v": n, "w": None}
    # both perturbed: Bean's rule gives n - 1/2 each; splitting the factor gives n/2 each
    assert _units(bean, "DotProd", {"N": n}, style="bean") == {"v": n - 0.5, "w": n - 0.5}
    assert _units(bean, "DotProd", {"N": n}) == {"v": n / 2, "w": n / 2}


@pytest.mark.parametrize("n", [2, 3, 50])
def test_matvec(bean, n):
    res = backward_analysis(bean.ir, bean.ir.functions["MatVecMul"], {"R": n, "N": n})
    assert res.units == {"M": n, "v": None}            # v feeds every row: held exact
    assert "used" in res.reasons["v"]


def test_horner_and_polyval():
    m = ng.load_stdlib("horner")
    for name, n in (("horner2", 2), ("horner5", 5), ("horner10", 10)):
        assert _units(m, name, style="bean") == {"a": 2 * n, "x": None}     # Horner n: 2n
    assert _units(m, "polyval_direct", style="bean") == {"a": 11, "x": None}  # PolyVal n: n+1


def test_linear_solves_and_determinant():
    m = ng.load_stdlib("linsolve")
    assert _units(m, "solve2_lower", style="bean") == {"A": 2.5, "b": 1.5}
    assert _units(m, "solve3_bidiagonal", style="bean") == {"A": 4.5, "b": 4.5}
    assert _units(m, "det2", style="bean") == {"A": 1.5}
    # the default splits the factor of a product of two perturbed values: never worse
    assert _units(m, "solve2_lower") == {"A": 2.5, "b": 1.5}
    assert _units(m, "solve3_bidiagonal") == {"A": 1.5625, "b": 2.125}
    assert _units(m, "det2") == {"A": 1.0}


def test_unrolled_sums_match_the_tensor_form():
    m = ng.load_stdlib("sums")
    assert _units(m, "sum8") == {"x0": 7, "x1": 7, "x2": 6, "x3": 5, "x4": 4, "x5": 3,
                                 "x6": 2, "x7": 1}
    assert _units(m, "sums4_sum2") == {f"x{i}": 2 for i in range(4)}
    assert _units(m, "pairwise", {"N": 1000}) == {"x": 10}
    assert _units(m, "naive", {"N": 10_000}) == {"x": 9999}


# ---------------------------------------------------------------------------------------------
# what the numbers mean, and the admissible shape
def test_absolute_and_relative_forms(bean):
    res = backward_analysis(bean.ir, bean.ir.functions["Sum"], {"N": 11})
    assert res.unit == U and res.unit_format == "f64"
    assert res.absolute["x"] == pytest.approx(10 * U, rel=1e-12) and res.absolute["x"] >= 10 * U
    assert res.relative["x"] >= math.expm1(10 * U)
    assert backward_error(bean.ir, bean.ir.functions["Sum"], {"N": 11}) == res.relative
    f32 = ng.compile_source("fn s(x: f32[N] in [-1, 1]) -> f32 { return sum(x, order=seq) }")
    r32 = backward_analysis(f32.ir, f32.ir.functions["s"], {"N": 5})
    assert r32.unit == 2.0 ** -24 and r32.units == {"x": 4}


def test_mixed_precision_costs_in_units_of_the_output_format():
    m = ng.load_stdlib("sums")
    res = backward_analysis(m.ir, m.ir.functions["naive_f32_acc64"], {"N": 100})
    assert res.unit == 2.0 ** -24
    assert res.units["x"] == pytest.approx(1 + 99 * 2.0 ** -29)   # f64 adds, one f32 rounding


def test_underflow_voids_the_bound_but_the_conditional_grade_is_kept():
    m = ng.load_stdlib("dot")
    res = backward_analysis(m.ir, m.ir.functions["dot"], {"N": 10})
    assert res.units == {"x": None, "y": None} and "underflow" in res.reason
    assert res.conditional == {"x": 5, "y": 5}
    assert backward_error(m.ir, m.ir.functions["dot"], {"N": 10}) is None
    res = backward_analysis(m.ir, m.ir.functions["dot"], {"N": 10}, underflow="ignore")
    assert res.units == {"x": 5, "y": 5}
    # sums are exact in the subnormal range: no such problem
    s = ng.load_stdlib("sums")
    assert _units(s, "naive", {"N": 10}) == {"x": 9}


def test_granularity_rules_out_false_underflow():
    # b2 - a21 * x1 can be 0 but never tiny: its quotient by a22 cannot underflow
    m = ng.load_stdlib("linsolve")
    assert backward_analysis(m.ir, m.ir.functions["solve3_bidiagonal"]).reason is None


@pytest.mark.parametrize("src,needle", [
    ("fn f(x: f64 in [1, 2]) -> f64 { return x + 1.5 }", "cannot absorb"),
    ("fn f(x: f64[N] in [1, 2]) -> f64 { return sum(x, order=kahan) }", "Kahan"),
    ("fn f(x: f64 in [1, 2]) -> f64 { return exp(x) }", "no backward-error rule"),
    ("fn f(x: f64 in [1, 2]) -> f64 { return x * x }", "held exact"),
    ("fn f(x: f64 in [1, 2], y: f64 in [1, 2], z: f64 in [1, 2]) -> f64 "
     "{ return where(x > 1.5, y, z) }", "where"),
    ("fn f(x: f64[N] in [1, 2]) -> f64 { return sum(x) }", "sizes"),
])
def test_outside_the_admissible_shape(src, needle):
    m = ng.compile_source(src)
    res = backward_analysis(m.ir, m.ir.functions["f"], {"N": 4} if "N" in src and "sizes" not in needle else None)
    assert res.reason is not None and needle in res.reason
    assert all(v is None for v in res.units.values())
    assert res.as_report() is None


def test_inputs_used_more_than_once_are_held_exact():
    m = ng.compile_source("""
    fn f(x: f64 in [1, 2], y: f64 in [1, 2], z: f64 in [1, 2]) -> f64 { return (x * y) * x + z }
    """)
    res = backward_analysis(m.ir, m.ir.functions["f"])
    assert res.units == {"x": None, "y": 3, "z": 1}
    assert "used 2 times" in res.reasons["x"] and res.discrete == ["x"]
    with pytest.raises(ValueError):
        backward_analysis(m.ir, m.ir.functions["f"], discrete=["nope"])
    with pytest.raises(ValueError):
        backward_analysis(m.ir, m.ir.functions["f"], style="other")


def test_partially_reused_tensor_inputs():
    # a[0] feeds two operations; a[1] and a[2] are used once: only a[0] is held exact
    m = ng.compile_source("""
    fn f(a: f64[3] in [1, 2]) -> f64 { return (a[0] * a[1]) * a[0] + a[2] }
    """)
    res = backward_analysis(m.ir, m.ir.functions["f"])
    assert res.units == {"a": 3} and "held exact" in res.reasons["a"]


# ---------------------------------------------------------------------------------------------
# soundness by measurement
def _exact_perturbation_ok(factors: list[Fraction], units: float) -> bool:
    with mpmath.workprec(256):
        bound = mpmath.mpf(units) * mpmath.mpf(U)
        return all(abs(mpmath.log(mpmath.mpf(f.numerator) / f.denominator)) <= bound
                   for f in factors)


@pytest.mark.parametrize("order", ["seq", "pairwise"])
def test_sum_perturbation_constructed_exactly(order):
    """fl(sum) == sum(x_i (1 + d_i)) exactly, with the product of the (1 + delta) of the
    additions each term went through; each |ln(1 + d_i)| is within the grade."""
    n = 37
    m = ng.compile_source(f"fn s(x: f64[N] in [-1000, 1000]) -> f64 {{ return sum(x, order={order}) }}")
    fn = m.ir.functions["s"]
    units = backward_analysis(m.ir, fn, {"N": n}).units["x"]
    rng = np.random.default_rng(5)
    for _ in range(30):
        x = rng.uniform(-1000, 1000, n) * 10.0 ** rng.integers(-3, 3, n)
        x = np.clip(x, -1000, 1000)
        computed = Fraction(float(m.s(x)))
        # replay the reference order exactly, recording each rounding's factor per term
        terms = [(Fraction(float(v)), Fraction(1)) for v in x]
        if order == "seq":
            acc = terms[0]
            parts = [acc]
            for t in terms[1:]:
                exact = acc[0] + t[0]
                c = Fraction(float(exact))
                r = c / exact if exact != 0 else Fraction(1)
                parts = [(v, f * r) for v, f in parts] + [(t[0], t[1] * r)]
                acc = (c, Fraction(1))
            pert = parts
            total = acc[0]
        else:
            level = [[t] for t in terms]
            vals = [t[0] for t in terms]
            while len(level) > 1:
                if len(level) % 2:
                    level.append([(Fraction(0), Fraction(1))])
                    vals.append(Fraction(0))
                nl, nv = [], []
                for i in range(0, len(level), 2):
                    exact = vals[i] + vals[i + 1]
                    c = Fraction(float(exact))
                    r = c / exact if exact != 0 else Fraction(1)
                    nl.append([(v, f * r) for v, f in level[i] + level[i + 1]])
                    nv.append(c)
                level, vals = nl, nv
            pert = level[0][:n]
            total = vals[0]
        assert total == computed
        assert sum(v * f for v, f in pert) == computed        # exactly reproduced
        assert _exact_perturbation_ok([f for _, f in pert], units)


def test_dot_perturbation_constructed_exactly():
    """Bean's DotProd: w exact, v_i (1 + d_i) reproduces fl(v . w) exactly, within n units."""
    n = 25
    m = ng.compile_source(BEAN_SRC, "bean.grd")
    fn = m.ir.functions["DotProd"]
    units = backward_analysis(m.ir, fn, {"N": n}, discrete=["w"]).units["v"]
    assert units == n
    rng = np.random.default_rng(6)
    for _ in range(30):
        v = np.exp(rng.uniform(math.log(0.1), math.log(1000), n))
        w = np.exp(rng.uniform(math.log(0.1), math.log(1000), n))
        computed = Fraction(float(m.DotProd(v, w)))
        acc = None
        factors: list[Fraction] = []
        for vi, wi in zip(v, w):
            p = Fraction(float(vi)) * Fraction(float(wi))
            cp = Fraction(float(p))
            rp = cp / p
            if acc is None:
                acc, factors = cp, [rp]
                continue
            exact = acc + cp
            c = Fraction(float(exact))
            r = c / exact
            factors = [f * r for f in factors] + [rp * r]
            acc = c
        assert acc == computed
        assert sum(Fraction(float(vi)) * f * Fraction(float(wi))
                   for vi, wi, f in zip(v, w, factors)) == computed
        assert _exact_perturbation_ok(factors, units)


WITNESS_CASES = [("linsolve", "solve2_lower"), ("linsolve", "solve3_bidiagonal"),
                 ("linsolve", "det2"), ("horner", "horner2"), ("horner", "horner10"),
                 ("horner", "polyval_direct"), ("sums", "sum8"), ("sums", "sums4_sum1"),
                 ("sums", "sums4_sum2"), ("numfuzz", "Horner5"), ("numfuzz", "test02_sum8")]


@pytest.mark.parametrize("lib,name", WITNESS_CASES, ids=[c[1] for c in WITNESS_CASES])
def test_witness_reproduces_the_computed_result(lib, name):
    """The ideal program at the constructed perturbed inputs returns the computed result (to
    400 bits), and every perturbation is within its input's grade (both styles' bounds)."""
    m = ng.load_stdlib(lib)
    fn = m.ir.functions[name]
    tight = backward_analysis(m.ir, fn)
    bean = backward_analysis(m.ir, fn, style="bean")
    rng = np.random.default_rng(7)
    dom = IdealDomain(prec=400)
    ctx = dom.ctx
    for _ in range(10):
        args = [np.exp(rng.uniform(math.log(p.range[0]), math.log(p.range[1]),
                                   tuple(int(d.evaluate({})) for d in p.value.shape)))
                for p in fn.params]
        per, fac, outs = backward_witness(m.ir, fn, args)
        xs = [np.vectorize(ctx.mpf, otypes=[object])(per[p.name]) for p in fn.params]
        xs = [x if x.ndim else np.asarray(x[()], dtype=object) for x in xs]
        ys = Interpreter(m.ir, dom).run(name, xs)
        for y, c in zip(ys, outs):
            y = y[()] if np.ndim(y) == 0 else y
            c = ctx.mpf(c.numerator) / c.denominator
            assert abs(y - c) <= abs(c) * ctx.mpf(2) ** -350
        for p in fn.params:
            k = max(abs(ctx.log(f)) for f in np.ravel(fac[p.name])) / ctx.mpf(U)
            if tight.units[p.name] is None:
                assert k == 0                               # held exact
            else:
                assert k <= tight.units[p.name] <= bean.units[p.name]


def test_report_fields():
    m = ng.load_stdlib("horner")
    r = report_fields(m.ir, m.ir.functions["horner5"])
    assert r["sensitivity"] == {"a": 1.0, "x": 5.0}
    assert r["sensitivity_metric"] == {"a": "relative-precision", "x": "relative-precision"}
    assert r["backward_units"] == {"a": 10, "x": None}
    assert r["backward_error"]["a"] == pytest.approx(10 * U) and r["backward_error"]["x"] is None
    assert any("used 5 times" in n for n in r["notes"])
    d = ng.load_stdlib("dot")
    r = report_fields(d.ir, d.ir.functions["dot"], {"N": 8})
    assert r["backward_error"] is None and any("underflow" in n for n in r["notes"])
    for lib in ng.api.stdlib_names():        # never raises
        mod = ng.load_stdlib(lib)
        for fn in mod.ir.functions.values():
            r = report_fields(mod.ir, fn, {k: 32 for k in fn.dims})
            assert set(r["sensitivity"]) == {p.name for p in fn.params}


def test_large_sliced_tensors_stay_cheap():
    m = ng.compile_source("fn f(x: f64[N, N] in [1, 2]) -> f64 { return sum(x[0]) + sum(x[1]) }")
    assert backward_analysis(m.ir, m.ir.functions["f"], {"N": 8}).units == {"x": 8}
    res = backward_analysis(m.ir, m.ir.functions["f"], {"N": 4096})
    # beyond 2^20 elements the slices count as uses of the whole tensor: held exact
    assert res.reason is not None and res.units == {"x": None}
