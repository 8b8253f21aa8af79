"""The analysis through the API: reports for every stdlib function, bad sizes as GradeError,
and random well-formed programs analysed without any exception but GradeError."""

from __future__ import annotations

import math
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numgrade as ng
from numgrade.harness import check


def test_bad_sizes_are_grade_errors():
    f = ng.load_stdlib("nvfp4").quantize
    with pytest.raises(ng.GradeError, match="no size"):
        f.analyze(K=3)
    with pytest.raises(ng.GradeError, match="N % 16 == 0"):
        f.analyze(M=2, N=20)
    with pytest.raises(ng.GradeError, match="tier"):
        f.analyze(tier="magic")


def test_scalar_program_gets_the_precise_tier_and_a_sound_looking_bound():
    f = ng.compile_source("fn f(x: f64 in [1, 2], y: f64 in [1, 2]) -> f64 { return x / (x + y) }").f
    r = f.analyze()
    o = r.outputs[0]
    assert o.method.startswith("scalar-bnb")
    assert 0 < o.abs_error < 1e-15 and 0 < o.rel_error < 1e-15
    assert o.range[0] <= 1 / 3 and o.range[1] >= 2 / 3
    d = r.to_dict()
    assert d["function"] == "f" and d["outputs"][0]["abs_error"] == o.abs_error


def test_unbound_sizes_give_null_with_a_reason():
    r = ng.load_stdlib("sums").naive.analyze()
    o = r.outputs[0]
    assert o.abs_error is None and "N" in o.reason


def test_every_bound_is_finite_or_null_with_reason():
    for name in ("softmax", "rmsnorm", "sums", "sdf"):
        mod = ng.load_stdlib(name)
        for fn_name in mod.functions:
            fn = mod[fn_name]
            dims = {d: 32 for d in fn.ir.dims}
            for o in fn.analyze(**dims).outputs:
                assert (o.abs_error is not None and math.isfinite(o.abs_error)) or o.reason


_EXPR = st.recursive(
    st.sampled_from(["x", "y", "1.5", "0.25", "x * x"]),
    lambda e: st.one_of(
        st.tuples(e, st.sampled_from(["+", "-", "*", "/"]), e).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        e.map(lambda s: f"sqrt(abs({s}))"), e.map(lambda s: f"exp({s} * 0.01)"),
        st.tuples(e, e).map(lambda t: f"max({t[0]}, {t[1]})"),
        st.tuples(e, e).map(lambda t: f"where({t[0]} > {t[1]}, {t[0]}, {t[1]})"),
        e.map(lambda s: f"round({s}, bf16)")),
    max_leaves=8)


# a longer, random campaign: NUMGRADE_FUZZ_EXAMPLES=400 NUMGRADE_FUZZ_RANDOM=1
EXAMPLES = int(os.environ.get("NUMGRADE_FUZZ_EXAMPLES", "40"))
FIXED_SEED = not os.environ.get("NUMGRADE_FUZZ_RANDOM")


@settings(max_examples=EXAMPLES, deadline=None, derandomize=FIXED_SEED,
          suppress_health_check=[HealthCheck.too_slow])
@given(_EXPR, st.sampled_from(["f32", "f64"]), st.booleans())
def test_random_programs_analyse_without_crashing(expr, fmt, tensor):
    shape = "[N]" if tensor else ""
    src = (f"fn f(x: {fmt}{shape} in [-4, 4], y: {fmt}{shape} in [0.5, 3]) -> {fmt}{shape} "
           f"{{ return ({expr}) as {fmt} }}")
    try:
        fn = ng.compile_source(src).f
    except ng.GradeError:
        return
    dims = {"N": 4} if tensor else {}
    r = fn.analyze(work=250_000, **dims)
    for o in r.outputs:
        assert o.abs_error is None or o.abs_error >= 0
        assert o.abs_error is not None or o.reason
    # and the bound holds on sampled inputs (exact comparison against the ideal program)
    for c in check(fn, dims, n_samples=12, seed=1, search=False, report=r, time_limit=2.0):
        assert c.ok, f"{src}: {c.violations[:1]}"


def test_reports_cross_processes():
    """Reports are pickled by worker pools (the soundness suite analyses on every core): a
    report that cannot be unpickled hangs the pool's result thread."""
    import pickle

    f = ng.load("stdlib:attention").attention
    rep = f.analyze(T=4, D=4, S=4)
    back = pickle.loads(pickle.dumps(rep))
    assert back.outputs[0].abs_error == rep.outputs[0].abs_error
    assert len(back.value_terms) == len(rep.value_terms)
