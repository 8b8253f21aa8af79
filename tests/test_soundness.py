"""Soundness: no measured rounding error exceeds a bound the analysis reports (SPEC section 3).

For every stdlib function and every supported FPBench benchmark of the suites below, the
harness (numgrade.harness) samples inputs in the declared ranges (uniform, corners and edges, a
short search toward large errors), measures |computed - ideal| exactly against the 160-bit ideal
program, and compares with the reported abs_error, rel_error and range: a measured value above a
bound, with no slack, fails the test and prints a reproducer. Outputs whose bound is None are
skipped (and counted in the summary). `pytest -s tests/test_soundness.py` prints the table.

The budget keeps the whole file near a minute: scalar straight-line programs are evaluated in
batches (cheap, so they get a few hundred samples), tensor programs one sample at a time on small
sizes (a few dozen samples each). `benchmarks/soundness.py` runs the same checks at scale.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import numgrade as ng
from numgrade.harness import OutputCheck, batchable, check, default_dims, markdown_table
from numgrade.report import OutputReport, Report

FPBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "fpbench"
FPBENCH_FILES = ("rosa.fpcore", "fptaylor-real2float.fpcore", "fptaylor-extra.fpcore",
                 "fptaylor-tests.fpcore", "daisy.fpcore")

SCALAR_SAMPLES = 200      # batch-evaluated scalar programs (plus corners and search)
TENSOR_SAMPLES = 16       # one call per sample, sizes near 8
TIME_LIMIT = 2.5          # seconds of sampling per function, at most

_RESULTS: list[OutputCheck] = []

# Violations found and reported, not yet fixed in the analysis: each is a strict xfail, so the
# test turns red again (XPASS) once the analysis is fixed and the entry must be removed.
# Delete an entry to make its violation a plain failure.
KNOWN_UNSOUND: dict[str, str] = {
    # case id -> why its bound is known to be violated (strict xfail: fixing it turns CI red
    # until the entry is removed). Empty: every known violation has been fixed.
}


def _known(case_id: str, *args):
    reason = KNOWN_UNSOUND.get(case_id)
    marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
    return pytest.param(*args, id=case_id, marks=marks)


# ---------------------------------------------------------------------------------------------
# cases
def _stdlib_cases():
    out = []
    for name in ng.stdlib_names():
        for f in ng.load_stdlib(name).functions:
            out.append(_known(f"{name}.{f}", name, f))
    return out


@lru_cache(maxsize=None)
def _fpbench(file: str):
    from numgrade.frontend.fpcore import load_benchmarks

    return load_benchmarks(FPBENCH / file)


def _fpbench_cases():
    out = []
    for file in FPBENCH_FILES:
        if not (FPBENCH / file).exists():
            continue
        for b, m, _ in _fpbench(file):
            if m is not None:
                out.append(_known(f"{file[:-7]}.{b.ident}", file, b.ident))
    return out


@lru_cache(maxsize=None)
def _stdlib(name: str):
    return ng.load_stdlib(name)


def _budget(fn) -> dict:
    if batchable(fn):
        return dict(n_samples=SCALAR_SAMPLES, max_corners=150, search_samples=SCALAR_SAMPLES)
    return dict(n_samples=TENSOR_SAMPLES, max_corners=16, search_samples=TENSOR_SAMPLES)


def _function(kind: str, source: str, name: str):
    if kind == "stdlib":
        return _stdlib(source)[name]
    if kind == "probe":
        return _probes()[name]
    mod = next(m for b, m, _ in _fpbench(source) if b.ident == name)
    return mod[name]


def _analyze(key):
    """Worker: the report of one case (the analyses dominate this file's run time, so the
    selected cases are analysed up front on every core, at most 4)."""
    import warnings

    warnings.simplefilter("ignore")
    try:
        fn = _function(*key)
        return key, fn.analyze(**default_dims(fn))
    except Exception:  # noqa: BLE001 - the test itself analyses again and shows the error
        return key, None


_REPORTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _precomputed_reports(request):
    keys = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is not sys.modules[__name__] or not params:
            continue
        if "module" in params:
            keys.append(("stdlib", params["module"], params["function"]))
        elif "file" in params:
            keys.append(("fpcore", params["file"], params["ident"]))
        elif "function" in params:
            keys.append(("probe", "", params["function"]))
    procs = min(4, os.cpu_count() or 1)
    # a forked child inherits the locks of native thread pools held at fork time: once TVM's
    # runtime has started (other test files run it first) forking can deadlock, so the reports
    # are then left to each test (same results, one process)
    if len(keys) > 8 and procs > 1 and "fork" in mp.get_all_start_methods() and \
            "tvm" not in sys.modules:
        with mp.get_context("fork").Pool(procs) as pool:
            for key, rep in pool.imap_unordered(_analyze, keys, chunksize=2):
                if rep is not None:
                    _REPORTS[key] = rep
    yield


def _run(fn, program: str, key=None) -> list[OutputCheck]:
    dims = default_dims(fn)
    checks = check(fn, dims, seed=20240611, time_limit=TIME_LIMIT, program=program,
                   report=_REPORTS.get(key), **_budget(fn))
    _RESULTS.extend(checks)
    return checks


def _assert_sound(checks: list[OutputCheck]) -> None:
    bad = [v for c in checks for v in c.violations]
    if bad:
        msg = "\n\n".join(v.describe() + "\n" + v.reproducer() for v in bad[:5])
        pytest.fail(f"{len(bad)} violation(s) of reported bounds:\n{msg}", pytrace=False)
    for c in checks:
        assert c.ok, c.violation_counts


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    if not _RESULTS:
        return
    checked = [c for c in _RESULTS if not c.skipped]
    skipped = len(_RESULTS) - len(checked)
    ratios = [c.ratio for c in checked if c.ratio is not None]
    print("\n\nSoundness summary: worst measured error / reported bound per output")
    print(markdown_table(checked))
    print(f"\n{len(checked)} outputs checked, {skipped} skipped (no bound), "
          f"{sum(c.samples for c in checked)} samples in all; "
          f"worst ratio {max(ratios) if ratios else float('nan'):.4g}; "
          f"violations: {sum(c.n_violations for c in _RESULTS)}")


# ---------------------------------------------------------------------------------------------
# the suite
@pytest.mark.parametrize("module,function", _stdlib_cases())
def test_stdlib_bounds_are_sound(module, function):
    key = ("stdlib", module, function)
    _assert_sound(_run(_function(*key), f"stdlib/{module}", key))


@pytest.mark.parametrize("file,ident", _fpbench_cases())
def test_fpbench_bounds_are_sound(file, ident):
    key = ("fpcore", file, ident)
    _assert_sound(_run(_function(*key), file[:-7], key))


# ---------------------------------------------------------------------------------------------
# probes: small programs at the edges of the number formats (saturation, underflow, overflow,
# integer arithmetic, explicit rounding modes, e8m0), where an analysis is most easily unsound
PROBES = """
fn mul_underflow(x: f32 in [1e-30, 1e-20], y: f32 in [-1e-20, 1e-20]) -> f32 { return x * y }
fn div_underflow(x: f32 in [1e-38, 1e-30], y: f32 in [1e5, 1e10]) -> f32 { return x / y }
fn fma_subnormal(a: f32 in [1e-30, 1e-20], b: f32 in [1e-30, 1e-20], c: f32 in [-1e-44, 1e-44]) -> f32 { return fma(a, b, c) }
fn exp_subnormal(x: f32 in [-104, -87]) -> f32 { return exp(x) }
fn f16_subnormal(x: f16 in [1e-4, 1e-2], y: f16 in [1e-4, 1e-2]) -> f16 { return x * y }
fn to_f32_subnormal(x: f64 in [1e-47, 1e-37]) -> f32 { return x as f32 }
fn absorb(x: f32 in [1e7, 1e8]) -> f32 { return (x + 1.0) - x }
fn const_tenth(x: f32 in [1, 1000]) -> f32 { return x * 0.1 }
fn sin_huge(x: f32 in [1e30, 3e38]) -> f32 { return sin(x) }
fn floor_third(x: f32 in [-10, 10]) -> f32 { return ceil(x / 3.0) }
fn branch_eq(x: f32 in [0, 1], y: f32 in [0, 1]) -> f32 { return where(x + y == 1.0, 5.0, 0.0) }
fn ru_e2m1(x: f32 in [-7, 7]) -> e2m1 { return round(x, e2m1, mode=ru, sat=false) }
fn e8m0_rd(x: f32 in [1e-42, 1e38]) -> e8m0 { return round(x, e8m0, mode=rd) }
fn e8m0_sqrt(x: e8m0 in [1e-30, 1e30]) -> e8m0 { return sqrt(x) }
fn i32_round(x: f32 in [-1e10, 1e10]) -> i32 { return x as i32 }
fn e2_add(x: e2m1 in [-6, 6], y: e2m1 in [-6, 6]) -> e2m1 { return x + y }
fn e2_mul(x: e2m1 in [-6, 6], y: e2m1 in [-6, 6]) -> e2m1 { return x * y }
fn e2_div(x: e2m1 in [0.5, 6], y: e2m1 in [0.5, 6]) -> e2m1 { return x / y }
fn sat_e4m3(x: f32 in [-1000, 1000]) -> f32 { return (x as e4m3) as f32 }
fn rd_e4m3(x: f32 in [-500, 500]) -> e4m3 { return round(x, e4m3, mode=rd) }
fn as_e2m1(x: f32 in [-10, 10]) -> e2m1 { return x as e2m1 }
fn rz_f16_nosat(x: f32 in [-70000, 70000]) -> f16 { return round(x, f16, mode=rz, sat=false) }
fn i32_mul(x: i32 in [-100000, 100000], y: i32 in [-100000, 100000]) -> i32 { return x * y }
fn i32_add(x: i32 in [-2000000000, 2000000000], y: i32 in [-2000000000, 2000000000]) -> i32 { return x + y }
fn e4m3_add_nan(x: e4m3 in [-448, 448], y: e4m3 in [-448, 448]) -> e4m3 { return x + y }
fn sum_bf16(x: bf16[N] in [-100, 100]) -> bf16 { return sum(x) }
fn mean_rows(x: f32[M, N] in [-1000, 1000]) -> f32[M] { return mean(x, axis=-1) }
fn matmul_bf16(a: bf16[M, K] in [-4, 4], b: bf16[K, N] in [-4, 4]) -> bf16[M, N] { return matmul(a, b, acc=f32) }
fn variance(x: f32[N] in [-100, 100]) -> f32 { let m = mean(x); return mean((x - m) * (x - m)) }
fn sat_e4m3_t(x: f32[N] in [-1000, 1000]) -> f32[N] { return (x as e4m3) as f32 }
fn sr_sat_t(x: f32[N] in [-1000, 1000]) -> e4m3[N] ! {rand} { return round(x, e4m3, mode=sr) }
fn e8m0_of_zero_t(x: f32[M, N] in [-1000, 1000]) -> e8m0[M] { return round(max(abs(x), axis=-1) / 6.0, e8m0, mode=ru) }
"""


@lru_cache(maxsize=None)
def _probes():
    return ng.compile_source(PROBES, "probes.grd")


@pytest.mark.parametrize("function", [_known(f"probe.{f}", f) for f in
                                      ng.compile_source(PROBES).functions])
def test_probe_bounds_are_sound(function):
    key = ("probe", "", function)
    _assert_sound(_run(_function(*key), "probe", key))


# ---------------------------------------------------------------------------------------------
# the harness itself: it must catch a planted unsound claim, compare exactly, and agree with
# itself between its batched and per-sample evaluation
_SRC = """
fn add3(x: f32 in [1, 2], y: f32 in [1, 2], z: f32 in [-2, -1]) -> f32 { return x + y + z }
fn sumv(x: f32[N] in [-1, 1]) -> f32 { return sum(x) }
fn sr(x: f32[N] in [-6, 6]) -> e2m1[N] ! {rand} { return round(x, e2m1, mode=sr) }
"""


def _claims(fn, abs_error=None, rel_error=None, rng=None, dims=None) -> Report:
    """The real report of fn with one output's claims replaced."""
    rep = fn.analyze(**(dims or {}))
    o = rep.outputs[0]
    rep.outputs[0] = OutputReport(o.index, o.format, o.shape, rng if rng is not None else o.range,
                                  abs_error, rel_error, None)
    return rep


def test_harness_catches_planted_unsound_abs_rel_and_range():
    fn = ng.compile_source(_SRC).add3
    for kw, kind in ((dict(abs_error=1e-12), "abs"), (dict(rel_error=1e-12), "rel"),
                     (dict(rng=(0.5, 0.75)), "range")):
        chk = check(fn, {}, n_samples=50, seed=1, report=_claims(fn, **kw))[0]
        assert chk.violation_counts.get(kind, 0) > 0, (kind, chk)
        v = next(v for v in chk.violations if v.kind == kind)
        assert "fn(" in v.reproducer() and v.describe().startswith("VIOLATION")
        ns: dict = {"ng": ng, "np": np}
        code = v.reproducer().replace(f"fn = {v.loader}", "fn = ng.compile_source(_SRC).add3")
        exec(code, {**ns, "_SRC": _SRC})  # the reproducer runs
    # a claim that is not a bound at all
    chk = check(fn, {}, n_samples=5, seed=1, report=_claims(fn, abs_error=float("nan")))[0]
    assert chk.violation_counts.get("invalid") == 1


def test_harness_comparison_is_exact():
    fn = ng.compile_source(_SRC).add3
    base = check(fn, {}, n_samples=40, seed=3, search=False)[0]
    worst = base.max_abs
    assert worst > 0 and base.ok
    # the measured maximum is a float here (a few ulps of f32): a bound equal to it holds, the
    # next float below fails
    same = check(fn, {}, n_samples=40, seed=3, search=False, report=_claims(fn, abs_error=worst))[0]
    assert same.ok and same.abs_ratio == 1.0
    below = math.nextafter(worst, 0.0)
    tight = check(fn, {}, n_samples=40, seed=3, search=False, report=_claims(fn, abs_error=below))[0]
    assert tight.violation_counts.get("abs", 0) >= 1


def test_harness_batch_and_loop_agree():
    fn = ng.compile_source(_SRC).add3
    a = check(fn, {}, n_samples=30, seed=5, search=False, batch=True)[0]
    b = check(fn, {}, n_samples=30, seed=5, search=False, batch=False)[0]
    assert a.mode == "batch" and b.mode == "loop"
    assert (a.samples, a.max_abs, a.max_rel) == (b.samples, b.max_abs, b.max_rel)


def test_harness_tensor_and_random_programs():
    mod = ng.compile_source(_SRC)
    chk = check(mod.sumv, {"N": 16}, n_samples=10, seed=0, max_corners=12, search_samples=8)[0]
    assert chk.samples >= 20 and chk.ok and chk.max_abs > 0 and chk.dims == {"N": 16}
    # stochastic rounding: the ideal sees the same random numbers, so the error is below one
    # e2m1 spacing (2 near 6), and it is not always 0
    chk = check(mod.sr, {"N": 16}, n_samples=10, seed=0, max_corners=12, search_samples=8)[0]
    assert chk.ok and 0 < chk.max_abs <= 2.0


def test_default_dims_meet_requirements():
    nv = ng.load_stdlib("nvfp4")
    assert default_dims(nv.quantize_2d) == {"M": 16, "N": 16}
    d = default_dims(ng.load_stdlib("attention").causal_attention)
    assert d["S"] >= d["T"]
    assert default_dims(ng.load_stdlib("fp8").quantize_block_1x128)["N"] == 128
