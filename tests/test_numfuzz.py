"""NumFuzz-compatible relative-precision grades (numgrade.passes.numfuzz): at most NumFuzz's
published bound on each of its 17 benchmarks, and sound by measurement, both in NumFuzz's
semantics (every operation rounded toward +inf) and as numgrade runs the programs."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

import numgrade as ng
from numgrade.passes.numfuzz import (NUMFUZZ_BENCHMARKS, U64, numfuzz_grade, numfuzz_reference,
                                     numfuzz_units)


@pytest.fixture(scope="module")
def nf():
    return ng.load_stdlib("numfuzz")


def _grade(m, name, **kw):
    fn = m.ir.functions[name]
    pub, ig = NUMFUZZ_BENCHMARKS.get(name, (None, 0.0))
    igs = {p.name: ig for p in fn.params} if ig else None
    return numfuzz_grade(m.ir, fn, input_grades=igs, **kw)


def test_all_seventeen_benchmarks_are_there(nf):
    assert len(NUMFUZZ_BENCHMARKS) == 17
    assert set(NUMFUZZ_BENCHMARKS) <= set(nf.functions)


@pytest.mark.parametrize("name", list(NUMFUZZ_BENCHMARKS))
def test_at_most_numfuzz(nf, name):
    pub, _ = NUMFUZZ_BENCHMARKS[name]
    res = _grade(nf, name)
    assert res.reason is None
    # the published numbers are NumFuzz's grades k u (u = 2^-52) to 3 digits
    assert res.grade <= numfuzz_units(pub) * U64
    assert res.rel_error >= math.expm1(res.grade)


EXPECTED_UNITS = {   # ours, in units of u = 2^-52 (NumFuzz's in the comment)
    "hypot": 2.0,            # 2.5: a sum of one-signed values takes the larger grade
    "x_by_xy": 2.0, "one_by_sqrtxx": 2.5, "sqrt_add": 3.5,   # 4.5
    "test02_sum8": 7.0, "nonlin1": 2.0, "test05_nonlin1": 2.0,
    "sums4_sum1": 3.0, "sums4_sum2": 2.0,   # 3
    "i4": 2.0, "Horner2": 2.0, "Horner5": 5.0, "Horner10": 10.0, "Horner20": 20.0,
    "Horner2_with_er": 5.0,  # 7
}


@pytest.mark.parametrize("name", list(EXPECTED_UNITS))
def test_grades(nf, name):
    assert _grade(nf, name).units == EXPECTED_UNITS[name]
    # charged by the program's own rounding (to nearest) the grade halves, inputs' grades aside
    prog = _grade(nf, name, setting="program")
    if NUMFUZZ_BENCHMARKS[name][1] == 0:
        assert prog.units == EXPECTED_UNITS[name] / 2


def test_rounded_constants_and_exact_products(nf):
    # 4 * x is exact; 1.11 is not a double, and the ideal program uses 1.11 itself
    v = _grade(nf, "verhulst").units
    assert 3.0 < v < 3.5
    p = _grade(nf, "predatorPrey").units
    assert 6.0 < p < 7.0


def _positive(rng, p):
    shape = tuple(int(d.evaluate({})) for d in p.value.shape)
    lo, hi = p.range
    return np.exp(rng.uniform(math.log(lo), math.log(hi), shape))


@pytest.mark.parametrize("name", list(NUMFUZZ_BENCHMARKS))
def test_sound_by_measurement(nf, name):
    fn = nf.ir.functions[name]
    f = nf[name]
    res = _grade(nf, name)
    prog = _grade(nf, name, setting="program")
    carries = NUMFUZZ_BENCHMARKS[name][1] > 0
    rng = np.random.default_rng(11)
    for _ in range(60):
        args = [_positive(rng, p) for p in fn.params]
        cargs = args
        if carries:   # inputs off by one ulp (relative error < 2^-52) either way
            cargs = [np.nextafter(a, np.where(rng.random(np.shape(a)) < 0.5, np.inf, -np.inf))
                     for a in args]
        ru = numfuzz_reference(nf.ir, fn, cargs)[0]
        rne = float(f(*cargs))
        with mpmath.workprec(256):
            ideal = mpmath.mpf(f.ideal(*args, as_float=False))
            assert abs(mpmath.log(mpmath.mpf(ru) / ideal)) <= res.grade
            assert abs(mpmath.log(mpmath.mpf(rne) / ideal)) <= prog.grade <= res.grade
            assert abs(mpmath.mpf(ru) - ideal) <= res.rel_error * abs(ideal)


def test_round_upward_reference():
    m = ng.compile_source("""
    fn d(x: f64 in [0.1, 10], y: f64 in [0.1, 10]) -> f64 { return x / y }
    fn r(x: f64 in [0.1, 10]) -> f64 { return sqrt(x) }
    fn f(x: f64 in [0.1, 10], y: f64 in [0.1, 10]) -> f64 { return fma(x, y, x) }
    """)
    rng = np.random.default_rng(2)
    for _ in range(200):
        x, y = rng.uniform(0.1, 10, 2)
        q = numfuzz_reference(m.ir, m.ir.functions["d"], [x, y])[0]
        e = Fraction(x) / Fraction(y)
        assert Fraction(q) >= e and Fraction(math.nextafter(q, -math.inf)) < e
        s = numfuzz_reference(m.ir, m.ir.functions["r"], [x])[0]
        assert Fraction(s) ** 2 >= Fraction(x) > Fraction(math.nextafter(s, -math.inf)) ** 2
        t = numfuzz_reference(m.ir, m.ir.functions["f"], [x, y])[0]
        e = Fraction(x) * Fraction(y) + Fraction(x)
        assert Fraction(t) >= e and Fraction(math.nextafter(t, -math.inf)) < e


@pytest.mark.parametrize("src,needle", [
    ("fn f(x: f64 in [0.1, 10], y: f64 in [0.1, 10]) -> f64 { return x - y }", "cancel"),
    ("fn f(x: f64 in [-1, 10]) -> f64 { return x * 2.5 }", "change sign"),
    ("fn f(x: f64 in [1e-300, 1]) -> f64 { return x * 1e-20 }", "underflow"),
    ("fn f(x: f64 in [1, 1e300]) -> f64 { return x * 1e10 }", "overflow"),
    ("fn f(x: f64[N] in [1, 2]) -> f64 { return sum(x, order=kahan) }", "compensated"),
])
def test_unsupported(src, needle):
    m = ng.compile_source(src)
    res = numfuzz_grade(m.ir, m.ir.functions["f"], {"N": 4})
    assert res.grade is None and res.rel_error is None and needle in res.reason


def test_tensor_programs_use_closed_forms():
    m = ng.compile_source("""
    fn s(x: f64[N] in [0.1, 1000]) -> f64 { return sum(x, order=seq) }
    fn p(x: f64[N] in [0.1, 1000]) -> f64 { return sum(x, order=pairwise) }
    fn mm(a: f64[M, K] in [0.1, 1000], b: f64[K, M] in [0.1, 1000]) -> f64[M, M] { return a @ b }
    fn sq(x: f64[N] in [0.1, 1000]) -> f64[N] { return sqrt(x * x) }
    """)
    assert numfuzz_grade(m.ir, m.ir.functions["s"], {"N": 1024}).units == 1023  # NumFuzz 1023
    assert numfuzz_grade(m.ir, m.ir.functions["p"], {"N": 1024}).units == 10
    assert numfuzz_grade(m.ir, m.ir.functions["mm"], {"M": 64, "K": 64}).units == 64   # 127
    assert numfuzz_grade(m.ir, m.ir.functions["sq"], {"N": 8}).units == 1.5
    with pytest.raises(ValueError):
        numfuzz_grade(m.ir, m.ir.functions["s"], {"N": 4}, setting="other")
    with pytest.raises(ValueError):
        numfuzz_grade(m.ir, m.ir.functions["s"], {"N": 4}, input_grades={"nope": 1e-16})
