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
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import numgrade as ng
from numgrade.api import Module
from numgrade.harness import (OutputCheck, check, default_dims, markdown_table, Violation)
from numgrade.report import OutputReport, Report

FPBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "fpbench"
FPBENCH_FILES = ("rosa.fpcore", "fptaylor-real2float.fpcore", "fptaylor-extra.fpcore",
                 "fptaylor-tests.fpcore", "daisy.fpcore")

SCALAR_SAMPLES = 300      # batch-evaluated scalar programs (plus corners and search)
TENSOR_SAMPLES = 16       # one call per sample, sizes near 8
TIME_LIMIT = 4.0          # seconds of sampling per function, at most

_RESULTS: list[OutputCheck] = []


# ---------------------------------------------------------------------------------------------
# cases
def _stdlib_cases():
    out = []
    for name in ng.stdlib_names():
        for f in ng.load_stdlib(name).functions:
            out.append(pytest.param(name, f, id=f"{name}.{f}"))
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
                out.append(pytest.param(file, b.ident, id=f"{file[:-7]}.{b.ident}"))
    return out


@lru_cache(maxsize=None)
def _stdlib(name: str):
    return ng.load_stdlib(name)


def _budget(fn) -> dict:
    scalar = all(not p.value.shape for p in fn.ir.params) and \
        all(not r.shape for r in fn.ir.results)
    if scalar and "rand" not in fn.ir.effects:
        return dict(n_samples=SCALAR_SAMPLES, max_corners=150, search_samples=SCALAR_SAMPLES)
    return dict(n_samples=TENSOR_SAMPLES, max_corners=16, search_samples=TENSOR_SAMPLES)


def _run(fn, program: str) -> list[OutputCheck]:
    dims = default_dims(fn)
    checks = check(fn, dims, seed=20240611, time_limit=TIME_LIMIT, program=program, **_budget(fn))
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
    fn = _stdlib(module)[function]
    _assert_sound(_run(fn, f"stdlib/{module}"))


@pytest.mark.parametrize("file,ident", _fpbench_cases())
def test_fpbench_bounds_are_sound(file, ident):
    mod = next(m for b, m, _ in _fpbench(file) if b.ident == ident)
    _assert_sound(_run(mod[ident], file[:-7]))


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
