"""Hand-written adversarial programs, one group per known class of unsound bound, each checked
against the independent oracle (tests/oracle: own program trees, own exact/mpmath ideal
evaluator, numgrade's reference backend for the computed value, f.analyze() for the bound).

Every test asserts that no input violates the reported bound (abs, rel, range; a NaN/inf with a
finite bound is a violation). Each program also gets a few generated adversarial inputs (range
ends, one ulp inside, zero, discontinuity bisection) besides the hand-picked ones below.
"""

from __future__ import annotations

import numpy as np
import pytest

from oracle.build import (abs_, blocks, const, exp, floor, let, matmul, max_, param, program,
                          reduce, rnd, sigmoid, sum_, var, where)
from oracle.check import check, explain, point


def f32(v: float) -> float:
    return float(np.float32(v))


def sound(prog, *points):
    res = check(prog, *points)
    assert res.status in ("ok", "violation"), explain(res)   # rejected programs are test bugs
    assert res.n_inputs >= len(points)
    if res.violations:
        pytest.fail(explain(res), pytrace=False)


# 1. exactness rules with a narrower working format -------------------------------------------

def test_sterbenz_into_bf16():
    a, b = param("a", "f32", 1, 2), param("b", "f32", 1, 2)
    d = let("d", a - b, "bf16")
    p = program([a, b], [d], [var(d)])
    sound(p, point(p, a=1.5 + 2**-23, b=1.0), point(p, a=1.0 + 2**-23, b=1.75))


def test_add_zero_into_f16():
    x = param("x", "f32", -1, 1)
    y = let("y", x + 0.0, "f16")
    p = program([x], [y], [var(y)])
    sound(p, point(p, x=f32(0.1)), point(p, x=-0.25 - 2**-24))


def test_power_of_two_scaling_into_narrower_let():
    x = param("x", "f32", 1, 2)
    y = let("y", x * 2.0, "bf16")
    z = param("z", "f32", 0, 0.0001)
    w = let("w", z * 0.5, "f16")          # also underflows into f16 subnormals
    p = program([x, z], [y, w], [var(y), var(w)])
    sound(p, point(p, x=1 + 2**-23, z=f32(1e-4)))


# 2. discontinuities ------------------------------------------------------------------------------

def test_where_on_rounded_comparison():
    x = param("x", "f32", 0, 1)
    p = program([x], [], [where(x * 3.0 > 1.0, 100.0, 0.0)])
    sound(p, point(p, x=0.3333333432674408), point(p, x=0.3333333134651184))


def test_floor_of_product_with_rounded_constant():
    x = param("x", "f32", 0, 20)
    c = const("C", "bf16", "0.7")
    p = program([x], [], [floor(x * c)], consts=[c])
    sound(p, point(p, x=10.0), point(p, x=20.0))


def test_mod_near_multiple():
    x = param("x", "f32", 0, 1)
    p = program([x], [], [x % 0.1])
    sound(p, point(p, x=0.30000001192092896), point(p, x=0.7000000476837158))


def test_bool_and_i32_conversions_of_values_with_error():
    x = param("x", "f32", 0, 1)
    p = program([x], [], [(x - 0.1).as_("bool"), (x * 3.0).as_("i32")])
    sound(p, point(p, x=0.10000000149011612), point(p, x=0.5), point(p, x=0.1666666716337204))


def test_saturating_conversion():
    x = param("x", "f32", 0, 1000)
    p = program([x], [], [rnd(x, "e4m3", sat=True), rnd(x * 0.5, "e2m1", mode="rz")])
    sound(p, point(p, x=1000.0), point(p, x=500.0))


# 3. overflow / underflow inside f64 math functions, then scaled up -----------------------------

def test_sigmoid_exp_overflow_scaled():
    x = param("x", "f64", -1000, -700)
    p = program([x], [], [sigmoid(x) * 1e300])
    sound(p, point(p, x=-745.0), point(p, x=-720.0), point(p, x=-1000.0))


def test_exp_underflow_scaled():
    x = param("x", "f64", -760, -700)
    p = program([x], [], [exp(x) * 1e300])
    sound(p, point(p, x=-745.0), point(p, x=-740.0), point(p, x=-709.0))


# 4. integers ------------------------------------------------------------------------------------

def test_as_i32_rounds():
    x = param("x", "f32", 0, 10)
    p = program([x], [], [x.as_("i32")])
    sound(p, point(p, x=0.5), point(p, x=2.5), point(p, x=9.75))


def test_i32_saturation_neg_and_add():
    i = param("i", "i32", -2147483648, 0)
    j = param("j", "i32", 1073741824, 2147483647)
    p = program([i, j], [], [-i, j + j])
    sound(p, point(p, i=-2147483648, j=2147483647))


def test_i32_sum_and_matmul_accumulators():
    x = param("x", "i32", 1073741824, 2147483647, shape=("N",))
    y = param("y", "i32", 0, 1048576, shape=("N",))
    p = program([x, y], [], [sum_(x, acc="i32"), matmul(y, y, acc="i32")], dims={"N": 4})
    sound(p, point(p, x=[2147483647] * 4, y=[1048576] * 4))


# 5. saturating accumulators ---------------------------------------------------------------------

def test_e2m1_and_e4m3_sums():
    x = param("x", "f32", 0, 6, shape=("N",))
    y = param("y", "e4m3", 0, 448, shape=("N",))
    p = program([x, y], [], [sum_(x, acc="e2m1"), sum_(y, acc="e4m3")], dims={"N": 4})
    sound(p, point(p, x=[6.0] * 4, y=[448.0] * 4))


def test_e2m1_and_e4m3_matmul_accumulation():
    a = param("a", "f32", 0, 2, shape=("N",))
    b = param("b", "f32", 0, 30, shape=("N",))
    p = program([a, b], [], [matmul(a, a, acc="e2m1"), matmul(b, b, acc="e4m3")],
                dims={"N": 4})
    sound(p, point(p, a=[2.0] * 4, b=[30.0] * 4))


# 6. first element rounded into a narrower accumulator --------------------------------------------

def test_first_element_into_bf16_accumulator():
    x = param("x", "f32", 1, 2, shape=("N",))
    p = program([x], [], [sum_(x, acc="bf16"), sum_(x, acc="bf16", order="seq")], dims={"N": 1})
    sound(p, point(p, x=[1 + 2**-20]))


def test_first_element_into_e8m0_accumulator():
    x = param("x", "f32", 1, 4, shape=("N",))
    p = program([x], [], [sum_(x, acc="e8m0"), reduce("mean", x, acc="e8m0")], dims={"N": 1})
    sound(p, point(p, x=[3.0]), point(p, x=[1.25]))


# 7. maximum of a slice / sub-block is not the maximum of the tensor -------------------------------

def test_slice_max_is_not_tensor_max():
    x = param("x", "f32", -10, 10, shape=("N",))
    a = let("a", max_(abs_(x["0:2"])) + 1.0)
    p = program([x], [a], [(x / var(a) * 448.0).as_("e4m3")], requires=["N >= 2"],
                dims={"N": 4})
    sound(p, point(p, x=[0.0, 0.0, 10.0, -10.0]))


def test_sub_block_max_is_not_tensor_max():
    x = param("x", "f32", -10, 10, shape=("N",))
    m = let("m", max_(abs_(blocks(x)["0"])) + 1.0)
    p = program([x], [m], [x / var(m) * 6.0, max_(abs_(x)) / var(m)], requires=["N % 4 == 0"],
                dims={"N": 8})
    sound(p, point(p, x=[0.0] * 4 + [10.0] * 4))


# 8. x % y with a divisor range containing 0 -------------------------------------------------------

def test_mod_by_range_containing_zero():
    x = param("x", "f32", -4, 4)
    y = param("y", "f32", -1, 1)
    p = program([x, y], [], [x % y, x % (y - 0.5)])
    sound(p, point(p, x=3.0, y=0.0), point(p, x=3.0, y=0.5))


@pytest.mark.parametrize("n", [1, 4])
def test_blocked_amax_quantiser_shape(n):
    """Control: a sound-looking block quantiser (block max over the same block)."""
    x = param("x", "f32", -10, 10, shape=("N",))
    xb = blocks(x)
    m = reduce("max", abs_(xb), axis=-1, keepdims=True)
    p = program([x], [], [reduce("sum", xb / (m + 1.0), axis=-1)], requires=["N % 4 == 0"],
                dims={"N": 4 * n})
    sound(p, point(p, x=[9.5, -10.0, f32(0.1), 3.0] * n))


# Classes found by the differential fuzzer (benchmarks/fuzz_analysis.py), shrunk by hand --------

# 9. unsigned e8m0: negation, bool -> e8m0 and negative -> e8m0 conversions give NaN

def test_e8m0_negation_and_conversions_are_nan():
    p = param("p", "e8m0", 1, 4)
    x = param("x", "f32", -100, 100)
    q = program([p, x], [], [-p, x.as_("e8m0"), (x >= 2.2).as_("e8m0")])
    sound(q, point(q, p=1.0, x=-100.0), point(q, p=2.0, x=0.0))


# 10. a NaN/inf dividend of %: overflow in a narrow format, exp2 overflow, log(0)

def test_mod_of_an_overflowed_or_undefined_value():
    p = param("p", "e4m3", -448, 448)
    i = param("i", "i32", 1073741824, 2147483647)
    x = param("x", "f32", 0, 1)
    q = program([p, i, x], [], [(p * p) % (abs_(p) + 0.5), _exp2(i) % 8.0,
                                reduce("mean", p) % 3.0, _log(x) % 2.2])
    sound(q, point(q, p=-448.0, i=1073741824, x=0.0))


# 11. weak literals that round badly in a narrow operand's format (0.25 -> 0 and 448 -> 6
#     in e2m1) and a constant that rounds through where/min

def test_literals_rounded_in_narrow_formats():
    x = param("x", "f16", 10, 20)
    p = param("p", "e2m1", 2, 3)
    q = program([x, p], [], [x.as_("e2m1") * 0.25, (p * 448) ** 2])
    sound(q, point(q, x=10.0, p=2.0))


def test_constant_rounding_through_where_and_min():
    p = param("p", "e5m2", -6, 6)
    c = const("C0", "e5m2", "0.001")
    q = program([p], [], [_min2(where(p.eq(p), c, c), 0.001)], consts=[c])
    sound(q, point(q, p=-6.0))


# 12. ranges: x @ x and x * x[0] are not squares (different elements are multiplied)

def test_range_of_products_of_different_elements():
    a = param("a", "bf16", -4, 4, shape=("N", "N"))
    q = program([a], [], [matmul(a, a)], dims={"N": 2})
    sound(q, point(q, a=[-4.0, 4.0, 4.0, -4.0]))
    x = param("x", "bf16", -100, 100, shape=("N",))
    q = program([x], [], [x * x["0"]], dims={"N": 4})
    sound(q, point(q, x=[-99.5, 1.0, 100.0, 0.5]))


# 13. integer conversion of a transposed fma loses the conversion's rounding error

def test_i32_conversion_after_transposed_fma():
    a = param("a", "bf16", -1, 1, shape=("N", "N"))
    b = param("b", "f32", 0.1, 0.3, shape=("N", "N"))
    q = program([a, b], [], [_transpose(_fma(a, a, b)).as_("i32")], dims={"N": 2})
    sound(q, point(q, a=[-1.0] * 4, b=[f32(0.1)] * 4))


# 14. where() promotes an i32 branch into e4m3: overflow to NaN

def test_where_promotes_i32_into_e4m3():
    i = param("i", "i32", 0, 100, shape=("N",))
    c = param("c", "f32", 0, 1, shape=("N",))
    s = param("s", "e4m3", 0.001, 1)
    q = program([i, c, s], [], [where(c.as_("bool"), i ** 2, s)], dims={"N": 2})
    sound(q, point(q, i=[100, 100], c=[1.0, 1.0], s=1.0))


# 15. an i32 operand promoted into a narrow float format overflows (where / min)

def test_i32_promoted_into_narrow_float_overflows():
    i = param("i", "i32", -2147483648, 2147483647)
    e = param("e", "e5m2", 10, 20)
    h = param("h", "f16", -3, 3)
    q = program([i, e, h], [], [where(i <= 3.14159, i, e), _min2(h, i) % (abs_(i) + 1)])
    sound(q, point(q, i=-2147483648, e=10.0, h=-3.0))


# 16. e8m0 has no zero (floor(0.25) is NaN there) and explicit sat=false rounding overflows

def test_e8m0_floor_and_unsaturated_rounding():
    p = param("p", "e8m0", 0.25, 16)
    x = param("x", "bf16", 10, 20)
    q = program([p, x], [], [floor(p).as_("bool"), rnd(exp(x), "e5m2", mode="ru", sat=False)])
    sound(q, point(q, p=0.25, x=20.0))


# 17. found by the fuzzer (benchmarks/fuzz_analysis.py, 12,000 programs): a math function in
# e2m1 saturates (exp(6) is 6); an f16 sum that overflows to inf is no small perturbation

def test_math_function_saturates_in_e2m1():
    p = param("p", "e2m1", 0, 6, shape=("N",))
    q = program([p], [], [exp(p)], dims={"N": 4})
    sound(q, point(q, p=[6.0, 6.0, 4.0, 0.5]))


def test_sum_overflowing_to_inf_then_divided():
    x = param("x", "f16", -65504, 65504)
    q = program([x], [], [x / (abs_(x) + 448.0)])
    sound(q, point(q, x=-65504.0), point(q, x=65504.0), point(q, x=65024.0))


# 18. found by the fuzzer: a tensor read by an elementwise region carries an error that may
# exceed its value (a mean in e2m1, a product whose ideal value is 0): its computed values keep
# neither the sign nor the format's grid of its ideal ones

def test_region_leaf_error_larger_than_its_value():
    p = param("p", "e2m1", 0.5, 4, shape=("N",))
    b = param("b", "bf16", 0.1, 0.3)
    q = program([p, b], [], [reduce("mean", p, order="seq") + b], dims={"N": 8})
    sound(q, point(q, p=[0.5] * 8, b=f32(0.10009765625)))


# 19. found by the final fuzzing run: a leaf that saturated (an e2m1 accumulator, an e2m1
# rounding read through reshapes) is squared; the adjoints must cover the whole segment from
# the saturated value back to the ideal one, not only the leaf's computed range

def test_saturated_leaf_squared():
    p = param("p", "i32", -1000, 1000, shape=("N",))
    q = program([p], [], [matmul(p, p, acc="e2m1") ** 2], dims={"N": 8})
    sound(q, point(q, p=[-1000] * 8))
    x = param("x", "f16", 0, 448, shape=("N",))
    q = program([x], [], [rnd(x, "e2m1", mode="rd", sat=False) ** 2], dims={"N": 8})
    sound(q, point(q, x=[448.0] * 5 + [0.0, 448.0, 0.0]))


# 20. round toward zero saturates a finite overflow but keeps an infinite argument infinite

def test_rz_of_an_overflowed_value_stays_infinite():
    p = param("p", "f32", -1e30, 1e30)
    q = program([p], [], [rnd(p ** 2, "f16", mode="rz", sat=False)])
    sound(q, point(q, p=f32(-9.999999394896025e+29)), point(q, p=1000.0))



# 21. an overflow to inf absorbed by min(., FLT_MAX) (the FP8/NVFP4 scale rule): sound at the
# overflow threshold and at 1/0, and no looser than the error of rounding at FLT_MAX

def test_overflow_absorbed_by_min_is_bounded_tightly():
    # |x| as the recipes' amax = max(abs(x)): its sign bit is clear (a parameter may be -0.0,
    # and 2688 / -0 is -inf, which min does not absorb: see the signed-zero tests below)
    amax = param("amax", "f32", 0, 1000)
    c = const("FLT_MAX", "f32", "3.4028234663852886e38")
    q = program([amax], [], [_min2(2688.0 / abs_(amax), c) * 2.0 ** -100], consts=[c])
    edge = np.float32(2688.0 / 3.4028234663852886e38)
    res = check(q, point(q, amax=float(edge)), point(q, amax=float(np.nextafter(edge, 1))),
                point(q, amax=0.0), point(q, amax=f32(1e-38)))
    assert res.status == "ok", explain(res)
    # the worst measured error is 0.95 of the bound (3x looser before the clip rule)
    assert res.worst_ratio > 0.5, res.bounds


# 22. signed zeros: the computed divisor may be -0 (-(x * 0), x * -0.0, a negative product
# that underflows), and x / -0 is -inf where the ideal x / 0 is +inf; |x| never is -0

@pytest.mark.parametrize("case", ["neg", "negconst", "negx", "underflow"])
def test_division_by_a_negative_zero(case):
    if case == "neg":
        x = param("x", "f32", 1, 2)
        d = -(x * 0.0)
    elif case == "negconst":
        x = param("x", "f32", 1, 2)
        d = x * -0.0
    elif case == "negx":
        x = param("x", "f32", -2, -1)
        d = x * 0.0
    else:
        x = param("x", "f16", -1, -0.5)
        d = x * 0.0001
    q = program([x], [], [_min2(1.0 / d, 5.0)])
    sound(q, point(q, x=-1.0 if case in ("negx", "underflow") else 1.0))


def test_division_by_an_absolute_zero_stays_bounded():
    x = param("x", "f32", -2, 2)
    q = program([x], [], [_min2(1.0 / abs_(x * 0.0), 5.0)])
    res = check(q, point(q, x=-1.0), point(q, x=1.0))
    assert res.status == "ok" and res.bounds[0]["abs"] is not None, explain(res)


# 23. found by the 10^5 campaign (seed 1010007810): a region leaf (here -transpose(..) of a
# quotient) carries an error relative to its value; half an ulp of the grid below |w| (the
# rounding model) is not a bound for it

def test_region_leaf_error_is_relative_to_its_value():
    p0 = param("p0", "f32", -1000, 1000, shape=("N", "N"))
    p2 = param("p2", "f16", 1, 2)
    q = program([p0, p2], [], [-(_transpose(p0 / (p2 + 0.1)))], dims={"N": 2})
    sound(q, point(q, p0=[-1000.0] * 4, p2=1.0))


# 24. found by the campaign on the final code (chunk 102): round toward zero of an infinite
# argument into e4m3 (no inf, only NaN) is NaN without saturation

def test_rz_of_an_infinite_value_into_e4m3_is_nan():
    p = param("p", "f32", -1e30, 1e30)
    q = program([p], [], [rnd(p ** 2, "e4m3", mode="rz", sat=False)])
    sound(q, point(q, p=f32(-9.999999394896025e+29)), point(q, p=1000.0))

def _exp2(x):
    from oracle.build import _un
    return _un("math", x, fn="exp2")


def _log(x):
    from oracle.build import _un
    return _un("math", x, fn="log")


def _min2(a, b):
    from oracle.build import E, _w
    from oracle.gen import Node, bin_fmt, bshape
    a, b = _w(a).n, _w(b).n
    return E(Node("min2", [a, b], bin_fmt("+", a, b), bshape(a.shape, b.shape)))


def _fma(a, b, c):
    from oracle.build import E
    from oracle.fmts import promote
    from oracle.gen import Node, bshape
    f = promote(promote(a.n.fmt, b.n.fmt), c.n.fmt)
    return E(Node("fma", [a.n, b.n, c.n], "f32" if f == "i32" else f,
                  bshape(a.n.shape, b.n.shape, c.n.shape)))


def _transpose(x):
    from oracle.build import E
    from oracle.gen import Node
    return E(Node("transpose", [x.n], x.n.fmt, tuple(reversed(x.n.shape))))


# 25. found by the campaign (chunk 102, seed 1020007382): the relative error of a quotient by a
# rounded constant, (1 + rx) / (1 - ry) - 1, lost the constant's ry (2e-17, below an ulp of 1)
# when evaluated in floating point; the bound was u, below the measured 1.18e-16

@pytest.mark.parametrize("dims", [{"N": 3}, None])
def test_quotient_by_a_rounded_constant_keeps_its_relative_error(dims):
    shape = ("N", "N") if dims else ()
    p0 = param("p0", "f64", 1, 2, shape=shape)
    q = program([p0], [], [p0 / 0.001], dims=dims)
    x = 1.0262105202365364
    sound(q, point(q, p0=[x] * 9 if dims else x), point(q, p0=[1.0] * 9 if dims else 1.0))


# 26. found by the campaign (chunk 102, seed 1020008243): a comparison whose computed difference
# reaches the tie (p + 448 saturates to p + 6 in e2m1, which is 0 at p = -6) is not stable for
# a non-strict test; ties belong to the side the op's own test puts them on

@pytest.mark.parametrize("op", ["<=", ">="])
def test_comparison_reaching_a_tie_is_not_stable(op):
    p1 = param("p1", "e2m1", -6, 6, shape=("N",))
    e = p1 + 448
    out = (e <= 0.0) if op == "<=" else (-e >= 0.0)
    q = program([p1], [], [out], dims={"N": 1})
    sound(q, point(q, p1=[-6.0]), point(q, p1=[6.0]))


# 27. found by the campaign (chunk 106, seed 1060000492): where(c, p as i32, e2m1 value) has the
# format e2m1, but the select kept the i32 value (448) in the reference and the kernels while
# the analysis rounded it into e2m1: the reported range missed the computed 455.125. A branch
# the result format may not hold is now rounded into it by the frontend (one ROUND node)

def test_where_rounds_an_integer_branch_into_the_result_format():
    p0, p1 = param("p0", "e4m3", 0, 448), param("p1", "f32", -6, 6)
    c = const("C0", "e4m3", "1.1")
    w = where(p0.ne(3.0), p0.as_("i32"), rnd(p0, "e2m1", mode="ru"))
    q = program([p0, p1], [], [w + (c + p1)], consts=[c])
    sound(q, point(q, p0=448.0, p1=6.0), point(q, p0=3.0, p1=-6.0))


# 28. found by the campaign (chunk 110, seed 1100002377): a divisor whose range is [a, 0] (here
# the maximum of -p0^2, which is 0 where p0 is) gives x / 0 = +inf in the ideal program (0 has
# no sign) besides the -inf of its negative points; the interval division kept only the latter

def test_division_by_a_range_ending_at_zero_from_below():
    p0 = param("p0", "f64", -3, 3, shape=("N",))
    p1 = param("p1", "bf16", 0.1, 0.3, shape=("N",))
    q = program([p0, p1], [], [_exp2(p1 / reduce("max", (-p0) * p0))], dims={"N": 4})
    sound(q, point(q, p0=[-1.0, -1.0, 0.0, 3.0], p1=[0.298828125, 0.10009765625,
                                                     0.1005859375, 0.1005859375]))


# 32. found by the campaign (chunks 108-109, seeds 1080009864, 1090003445, 1090003858): a
# function of a constant folds at 256 bits, and tanh(100.3) is 1 there while the real value is
# 1 - 2^-288; the fold was taken as exact, so the bound was 0. The error is below the oracle's
# slack (2^-285), so these tests compare the bound with the real error directly (mpmath at
# 2000 bits, from the source text alone).

def _real_error(f, x: float) -> float:
    import mpmath
    with mpmath.workprec(2000):
        return float(abs(f(mpmath.mpf(x)) - x))


@pytest.mark.parametrize("dims", [{"N": 2}, None])
def test_folded_function_constant_keeps_its_distance_from_the_real_value(dims):
    import numgrade as ng
    shape = "[N]" if dims else ""
    src = f"""const C0: bf16 = 100.3
fn f(x: f64{shape} in [1, 2]) -> f64{shape} {{ return x * tanh(C0) }}"""
    rep = ng.compile_source(src)["f"].analyze(**(dims or {}))
    (out,) = rep.outputs
    import mpmath
    real = _real_error(lambda x: x * mpmath.tanh(mpmath.mpf(1003) / 10), 2.0)
    assert 2.0 ** -300 < real <= out.abs_error < 2.0 ** -200   # sound, and still tiny


def test_exact_folds_stay_exact_and_undecided_comparisons_are_diagnosed():
    import numgrade as ng
    from numgrade.errors import GradeError
    src = """fn f(x: f64 in [1, 2]) -> f64 {
    return x * (sqrt(9.0 / 4.0) - exp(0.0) + 4 * exp2(-3.0) - log2(8.0) + 3 + log(1.0))
}"""
    (out,) = ng.compile_source(src)["f"].analyze().outputs
    assert out.abs_error == 0          # 1.5 - 1 + 0.5 - 3 + 3 + 0 = 1: every fold is exact
    bad = "fn g(x: f64) -> f64 { return where(tanh(100.3) == 1.0, x, -x) }"
    with pytest.raises(GradeError, match="not decided"):
        ng.compile_source(bad)
