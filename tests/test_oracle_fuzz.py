"""Differential fuzzing of the error analysis against the independent oracle (tests/oracle).

* the oracle itself is checked on programs whose ideal values are computed by hand,
* the check is shown not to pass vacuously: a deliberately wrong bound (0 for an inexact
  operation) is flagged, and an exact operation with bound 0 is not,
* a seeded sample of random programs must show no violation of abs_error / rel_error / range
  (the CI lane, bounded: 150 programs, about 20 s); a longer sample (2000 programs) is marked
  slow and runs with NUMGRADE_ORACLE_LONG=1.

For a campaign: ``python benchmarks/fuzz_analysis.py --programs 100000 --jobs 2``.
"""

from __future__ import annotations

import os
from fractions import Fraction as Q

import numpy as np
import pytest

from oracle import ideal as I
from oracle.build import (abs_, const, exp, floor, matmul, max_, param, program, reduce,
                          sigmoid, sum_, where)
from oracle.check import check, explain, point, run_seed
from oracle.fmts import F, grid_ceil, grid_floor, next_down, next_up, on_grid, promote
from oracle.gen import generate

import numgrade as ng


def f32(v: float) -> float:
    return float(np.float32(v))


def ideal_of(prog, pt):
    outs, _ = I.evaluate(prog, pt, prog.dims)
    return [o[()] if o.shape == () else list(o.flat) for o in outs]


# --- the oracle against hand-computed ideal values -----------------------------------------

def test_ideal_removes_every_rounding():
    x = param("x", "f32", 0, 20)
    c = const("C", "bf16", "0.1")
    p = program([x], [], [x * c, floor(x * 0.7), x.as_("i32"), (x - 0.1).as_("bool"),
                          where(x * 0.1 > 0.3, 1.0, 0.0), x ** 3],
                consts=[c])
    got = ideal_of(p, point(p, x=3.0))
    assert got == [Q(3, 10), Q(2), Q(3), Q(1), Q(0), Q(27)]
    got = ideal_of(p, point(p, x=10.0))
    assert got[1] == 7 and got[4] == 1                 # 10 * 7/10 = 7 exactly; 1 > 3/10
    got = ideal_of(p, point(p, x=f32(0.1)))
    assert got[3] == 1                                  # f32(0.1) - 1/10 != 0
    assert got[2] == Q(f32(0.1))                        # `as i32` is the identity


def test_ideal_mod_floor_sign_and_zero_divisor():
    a, b = param("a", "f32", -8, 8), param("b", "f32", -4, 4)
    p = program([a, b], [], [a % b])
    assert ideal_of(p, point(p, a=-1.0, b=3.0)) == [Q(2)]      # sign of the divisor
    assert ideal_of(p, point(p, a=1.0, b=-3.0)) == [Q(-2)]
    assert ideal_of(p, point(p, a=7.5, b=2.0)) == [Q(3, 2)]
    assert I.is_nan(ideal_of(p, point(p, a=1.0, b=0.0))[0])
    # the convention agrees with the product's computed values where they are exact
    out = ng.compile_source(p.source()).f(np.float32(-1.0), np.float32(3.0))
    assert float(out) == 2.0


def test_ideal_sums_means_matmul_slices_exact():
    x = param("x", "f32", -4, 4, shape=("N",))
    p = program([x], [], [sum_(x, acc="bf16"), reduce("mean", x, acc="e4m3"),
                          matmul(x, x, acc="e2m1"), max_(abs_(x["0:2"])),
                          reduce("max", x)], dims={"N": 4}, requires=["N >= 2"])
    v = [1.0, 2.0**-20, -3.0, 0.5]
    got = ideal_of(p, point(p, x=v))
    s = sum(Q(t) for t in v)
    assert got[0] == s and got[1] == s / 4
    assert got[2] == sum(Q(t) ** 2 for t in v)
    assert got[3] == 1 and got[4] == 1


def test_ideal_transcendentals_high_precision():
    x = param("x", "f64", -1000, 1000)
    p = program([x], [], [exp(x), sigmoid(x)])
    e, s = ideal_of(p, point(p, x=1.0))
    assert abs(e - I.CTX.e) < I.CTX.mpf(2) ** -280
    assert ideal_of(p, point(p, x=0.0)) == [Q(1), Q(1, 2)]
    e, s = ideal_of(p, point(p, x=-1000.0))
    assert 0 < s < I.CTX.mpf(10) ** -434 and s > I.CTX.mpf(10) ** -435   # no underflow


def test_formats_grid_independent_tables():
    import ml_dtypes

    # every finite value of the 8-bit and 4-bit formats, walked with our next_up
    for name, dt, n in [("e4m3", ml_dtypes.float8_e4m3fn, 256), ("e5m2", ml_dtypes.float8_e5m2,
                                                                    256),
                        ("e2m1", ml_dtypes.float4_e2m1fn, 16), ("e8m0",
                                                                 ml_dtypes.float8_e8m0fnu, 256)]:
        raw = np.arange(n, dtype=np.uint8).view(dt).astype(np.float64)
        want = sorted({float(v) for v in raw if np.isfinite(v)})
        f, got, x = F[name], [], None
        x = grid_ceil(f, -f.maxv) if f.signed else f.quantum
        while x is not None:
            got.append(float(x))
            x = next_up(f, x)
        assert got == want, name
    assert next_down(F["f32"], Q(1)) == 1 - Q(1, 2**24)
    assert not on_grid(F["bf16"], Q(1, 10)) and on_grid(F["f16"], Q(65504))
    assert grid_floor(F["e4m3"], Q(460)) == 448
    assert promote("e4m3", "e5m2") == "f16" and promote("f16", "bf16") == "f32"


# --- the check cannot pass vacuously -------------------------------------------------------

def test_wrong_bound_is_flagged():
    x = param("x", "f32", 1, 2)
    p = program([x], [], [x * 0.1])
    res = check(p, point(p, x=1.5), bound_override={"abs": 0.0, "rel": None})
    assert res.violations and res.violations[0].kind == "abs", explain(res)
    res = check(p, point(p, x=1.5), bound_override={"abs": 1e-12, "rel": 0.0})
    assert res.violations, explain(res)


def test_exact_operation_with_zero_bound_is_not_flagged():
    x, y = param("x", "f32", 1, 2), param("y", "f32", 1, 2)
    p = program([x, y], [], [x * 2.0, x - y])          # exact: power of two; Sterbenz in f32
    res = check(p, point(p, x=1.5, y=1.25), bound_override={"abs": 0.0, "rel": None})
    assert res.status == "ok" and not res.violations, explain(res)


def test_nan_with_finite_bound_is_flagged():
    x = param("x", "f32", -1, 1)
    p = program([x], [], [x % x])
    res = check(p, point(p, x=0.0), bound_override={"abs": 1.0, "rel": None})
    assert any(v.kind in ("ideal-nonfinite", "computed-nonfinite") for v in res.violations)


def test_generator_programs_compile():
    rejected = 0
    for s in range(40):
        try:
            ng.compile_source(generate(s).source())
        except ng.GradeError:
            rejected += 1
    assert rejected <= 4


# --- the fuzz lanes ------------------------------------------------------------------------

def _campaign(seeds, n_base, n_disc):
    bad, statuses, null = [], {}, 0
    for s in seeds:
        r = run_seed(s, n_base=n_base, n_disc=n_disc)
        statuses[r.status] = statuses.get(r.status, 0) + 1
        null += r.null_bounds
        if r.status not in ("ok", "rejected", "analysis-error"):
            bad.append(r)
    assert statuses.get("rejected", 0) <= len(seeds) // 10, statuses
    msg = "\n\n".join(explain(r, 2) for r in bad[:5])
    if bad:
        pytest.fail(f"{len(bad)} of {len(seeds)} programs unsound ({statuses}):\n{msg}",
                    pytrace=False)


CI_PROGRAMS = int(os.environ.get("NUMGRADE_ORACLE_PROGRAMS", "150"))


def test_fuzz_sample_sound():
    _campaign(range(1_000_000, 1_000_000 + CI_PROGRAMS), n_base=5, n_disc=2)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NUMGRADE_ORACLE_LONG") != "1",
                    reason="long oracle campaign (about 5 min): set NUMGRADE_ORACLE_LONG=1")
def test_fuzz_long_sound():
    _campaign(range(2_000_000, 2_002_000), n_base=8, n_disc=3)
