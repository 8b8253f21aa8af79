"""The one rounding judgement (rounding_model.judge) and the analyses that ask it: backward
error, NumFuzz grades, sensitivities; the outward-rounding helpers (passes.outward)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

import numgrade as ng
from numgrade.ir import nodes as N
from numgrade.ir.nodes import Op
from numgrade.passes import outward as O
from numgrade.passes.backward import backward_analysis
from numgrade.passes.numfuzz import numfuzz_grade
from numgrade.passes.rounding_model import judge
from numgrade.passes.sensitivity import flatten, ideal_ranges, sensitivity_analysis


def _fn(src: str, name: str = "f"):
    m = ng.compile_source(src)
    return m.ir, m.ir.functions[name]


def _node(src: str, op: str):
    _, fn = _fn(src)
    hits = [v for v in N.toposort(fn.results) if v.op == op]
    assert hits, op
    return hits[-1]


# ---------------------------------------------------------------------------------------------
# judge() itself
@pytest.mark.parametrize("src,op", [
    ("fn f(a: f32 in [1, 2], b: f32 in [1, 2]) -> bf16 { let d: bf16 = a - b\n return d }", Op.SUB),
    ("fn f(x: f32 in [1, 2]) -> f16 { let y: f16 = x + 0.0\n return y }", Op.ADD),
    ("fn f(x: f32 in [1, 2]) -> bf16 { let y: bf16 = 2.0 * x\n return y }", Op.MUL),
])
def test_narrow_result_over_wide_operands_rounds(src, op):
    jd = judge(_node(src, op))
    # Sterbenz, adding 0 and scaling by 2 do not make these exact: the operands are not
    # values of the result's format
    assert jd.rounds and not jd.operands_fit
    assert jd.spec.fmt.name in ("bf16", "f16")


def test_same_format_operands_fit():
    jd = judge(_node("fn f(x: f32 in [1, 2]) -> f32 { return 2.0 * x }", Op.MUL))
    assert jd.rounds and jd.operands_fit


def test_conversion_to_an_integer():
    jd = judge(_node("fn f(x: f32 in [1, 2]) -> i32 { return x as i32 }", Op.ROUND))
    assert jd.rounds and jd.spec.fmt.name == "i32"
    assert jd.spec.eta == 0.5 and jd.spec.u == 0.0 and jd.spec.sat


def test_integer_negation_saturates():
    jd = judge(_node("fn f(x: i32 in [-10, 10]) -> i32 { return -x }", Op.NEG))
    assert jd.rounds and jd.spec.sat and jd.spec.eta == 0.0   # -INT_MIN saturates


def test_narrow_accumulator_rounds_the_first_element():
    jd = judge(_node("fn f(x: f32[N] in [1, 2]) -> bf16 { return sum(x, acc=bf16) }", Op.SUM))
    assert jd.spec is None and jd.acc.fmt.name == "bf16" and jd.first_rounded
    assert not jd.operands_fit
    jd = judge(_node("fn f(x: bf16[N] in [1, 2]) -> f32 { return sum(x, acc=f32) }", Op.SUM))
    assert jd.acc.fmt.name == "f32" and not jd.first_rounded


def test_matmul_accumulator():
    src = ("fn f(a: bf16[M, K] in [1, 2], b: bf16[K, N] in [1, 2]) -> bf16[M, N] "
           "{ let c: bf16[M, N] = matmul(a, b, acc=f32)\n return c }")
    jd = judge(_node(src, Op.MATMUL))
    assert jd.acc.fmt.name == "f32" and jd.first_rounded
    assert jd.rounds and jd.spec.fmt.name == "bf16"     # the f32 result rounded to bf16
    src = ("fn f(a: f32[M, K] in [1, 2], b: f32[K, N] in [1, 2]) -> f32[M, N] "
           "{ return matmul(a, b, acc=f32) }")
    jd = judge(_node(src, Op.MATMUL))
    assert not jd.rounds and jd.acc.fmt.name == "f32" and jd.first_rounded


def test_conversion_to_a_wider_format_is_exact():
    jd = judge(_node("fn f(x: bf16 in [1, 2]) -> f32 { return x as f32 }", Op.ROUND))
    assert not jd.rounds


# ---------------------------------------------------------------------------------------------
# the analyses ask it: a power-of-two scaling into a narrower format is not exact
NARROW_SCALE = "fn f(x: f32 in [1, 2]) -> bf16 { let y: bf16 = 2.0 * x\n return y }"
SAME_SCALE = "fn f(x: f32 in [1, 2]) -> f32 { return 2.0 * x }"


def test_numfuzz_charges_a_narrowing_power_of_two_scaling():
    ir, fn = _fn(NARROW_SCALE)
    for setting in ("numfuzz", "program"):
        res = numfuzz_grade(ir, fn, setting=setting)
        # one bf16 rounding (2^-8 or more) is beyond the grades NumFuzz's model handles; it
        # was graded 0 when the scaling counted as exact
        assert res.grade is None and "grows beyond" in res.reason
    ir, fn = _fn(SAME_SCALE)
    assert numfuzz_grade(ir, fn).grade == 0.0                # exact: x is an f32 value
    ir, fn = _fn("fn f(x: f64 in [1, 2]) -> f32 { let y: f32 = 2.0 * x\n return y }")
    assert numfuzz_grade(ir, fn).grade is None
    ir, fn = _fn("fn f(x: f64 in [1, 2]) -> f64 { return 2.0 * x }")
    assert numfuzz_grade(ir, fn).grade == 0.0


def test_backward_charges_a_narrowing_power_of_two_scaling():
    ir, fn = _fn(NARROW_SCALE)
    res = backward_analysis(ir, fn)
    assert res.reason is None and res.units["x"] == 1.0      # one bf16 rounding, in bf16 units
    ir, fn = _fn(SAME_SCALE)
    assert backward_analysis(ir, fn).units["x"] == 0.0


def test_sensitivity_of_the_scaling():
    # sensitivities are of the ideal program: the rounding does not enter, the factor does
    ir, fn = _fn(NARROW_SCALE)
    res = sensitivity_analysis(ir, fn)
    assert res.relative["x"] == pytest.approx(1.0) and res.relative["x"] >= 1.0
    assert res.absolute["x"] == pytest.approx(2.0) and res.absolute["x"] >= 2.0


def test_numfuzz_integer_rounding_is_not_free():
    ir, fn = _fn("fn f(x: f64 in [1, 2]) -> f64 { return (x as i32) as f64 }")
    res = numfuzz_grade(ir, fn)
    assert res.grade is None and "integer" in res.reason


def test_narrow_accumulator_costs_the_first_rounding():
    ir, fn = _fn("fn f(x: f64[N] in [1, 2]) -> f32 { return sum(x, acc=f32, order=seq) }")
    bw = backward_analysis(ir, fn, {"N": 4})
    assert bw.units["x"] == 4.0                              # conversion + 3 additions
    ir, fn = _fn("fn f(x: f32[N] in [1, 2]) -> f32 { return sum(x, acc=f32, order=seq) }")
    assert backward_analysis(ir, fn, {"N": 4}).units["x"] == 3.0


# ---------------------------------------------------------------------------------------------
# sensitivity's max relations: x - max(x) <= 0 only where the maximum covers x's element
@pytest.mark.parametrize("expr,holds", [
    ("x - max(x, axis=-1, keepdims=true)", True),
    ("x - max(x, axis=0)", True),            # [M] broadcast over the rows: column maxima
    ("x - max(x)", True),
    ("x - max(x, axis=1)", False),           # [N] broadcast as a row: row j's maximum at (i, j)
])
def test_max_relation_needs_the_maximum_to_cover_the_element(expr, holds):
    ir, fn = _fn(f"fn f(x: f64[N, N] in [0, 10]) -> f64[N, N] {{ return {expr} }}")
    g = flatten(ir, fn, {"N": 3})
    R = ideal_ranges(g)[g.outputs[0]]
    assert (float(R.hi) <= 0) == holds
    # measured: x[0, 1] = 10 with row 1 all 0 gives 10 - max(row 1) = 10 for axis=1
    x = np.zeros((3, 3))
    x[0, 1] = 10.0
    out = ng.compile_source(f"fn f(x: f64[N, N] in [0, 10]) -> f64[N, N] {{ return {expr} }}")
    assert np.all(out["f"](x) <= float(R.hi))


def test_softmax_normaliser_needs_aligned_maxima():
    ok = "fn f(x: f64[N, N] in [0, 10]) -> f64[N] " \
         "{ return sum(exp(x - max(x, axis=-1, keepdims=true)), axis=-1) }"
    bad = "fn f(x: f64[N, N] in [0, 10]) -> f64[N] { return sum(exp(x - max(x, axis=1)), axis=1) }"
    for src, lo_is_one in ((ok, True), (bad, False)):
        ir, fn = _fn(src)
        g = flatten(ir, fn, {"N": 3})
        R = ideal_ranges(g)[g.outputs[0]]
        assert (float(R.lo) >= 1.0) == lo_is_one


def test_sensitivity_inlines_calls_with_inline_calls():
    src = ("fn g(y: f64[M] in [1, 2]) -> f64 { return sum(y) }\n"
           "fn f(x: f64[N] in [1, 2]) -> f64 { return g(x * x) }")
    ir, fn = _fn(src)
    g = flatten(ir, fn, {"N": 5})
    assert not any(n.op in (Op.CALL, Op.PROJ) for n in g.nodes)
    res = sensitivity_analysis(ir, fn, {"N": 5})
    assert res.absolute["x"] == pytest.approx(5 * 4.0)       # 5 terms, |d(x^2)/dx| <= 4


# ---------------------------------------------------------------------------------------------
# outward rounding
def test_up_and_down_are_the_neighbouring_floats():
    third = Fraction(1, 3)
    lo, hi = O.down(third), O.up(third)
    assert Fraction(lo) < third < Fraction(hi) and math.nextafter(lo, 1) == hi
    assert O.up(0.1) == 0.1 and O.down(0.1) == 0.1            # floats are exact
    assert O.up(Fraction(1, 2)) == O.down(Fraction(1, 2)) == 0.5
    big = 2 ** 60 + 1
    assert Fraction(O.down(big)) < big < Fraction(O.up(big))
    assert O.up(math.nan) == math.inf and O.down(math.nan) == -math.inf
    huge = Fraction(10) ** 400
    assert O.up(huge) == math.inf and O.down(huge) == O.MAX
    assert O.up(-huge) == -O.MAX and O.down(-huge) == -math.inf


def test_inflate():
    assert O.inflate(math.nan) == math.inf
    assert O.inflate(0.0) == 0.0 and O.inflate(-1.0) == -1.0
    x = 1.0 / 3.0
    assert O.inflate(x) >= x * (1 + 3 * 2.0 ** -52)
    assert O.inflate(5e-324) > 5e-324


def test_array_steps():
    y = np.array([1.0, -1.0, 0.0, math.inf, -math.inf, 1e-310])
    with np.errstate(all="ignore"):
        d, u = O.step_down(y), O.step_up(y)
    finite = np.isfinite(y)
    assert np.all(d[finite] < y[finite]) and np.all(u[finite] > y[finite])
    assert d[3] == O.MAX and u[4] == -O.MAX
    exact = np.array([True, False, True, False, False, False])
    with np.errstate(all="ignore"):
        assert O.step_down_unless(y, exact)[0] == 1.0 and O.step_up_unless(y, exact)[2] == 0.0
