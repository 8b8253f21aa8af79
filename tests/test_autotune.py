"""Schedule autotuning (backends/autotune.py) on the TVM CPU backend: variants that differ only
in their knobs collapse when their source is the same, the first call with a set of sizes times
them and writes its choice to the on-disk cache, a later compile reads it and times nothing, and
every variant stays within the fast contract (only the order of sums changes)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import numgrade as ng
from numgrade.backends import tvm_backend as TB
from numgrade.backends.autotune import TunedLauncher, Variant, distinct
from numgrade.errors import GradeError

SRC = """
fn scale(x: f32[M, N]) -> f32[M, N] { return x * 2.0 }
fn norm(x: f32[M, N]) -> f32[M, N] {
    let s = sum(x * x, axis=-1, keepdims=true)
    return x / sqrt(s + 1.0)
}
fn total(x: f32[N]) -> f32 { return sum(x) }
"""


def variants(fn: str) -> list[Variant]:
    f = ng.compile_source(SRC)[fn]
    launcher = TB.TVMBackend().build(f.kernels(exact=False), tune=True)
    return launcher.variants


def test_knobs_a_program_does_not_use_are_one_variant():
    assert len(variants("scale")) == 1                         # no reduction: one schedule
    assert len(variants("norm")) == len(TB.TUNE_SPACE["lanes"])  # lanes only (rows have a grid)
    total = variants("total")                                  # grid-less: lanes x chunks
    assert len(total) == len(TB.TUNE_SPACE["lanes"]) * len(TB.TUNE_SPACE["chunks"])
    assert total[0].knobs == TB.DEFAULT_KNOBS                  # the default comes first
    assert distinct(total + total) == total


def test_first_call_times_and_caches_the_choice(tmp_path, monkeypatch):
    monkeypatch.setenv("NUMGRADE_CACHE", str(tmp_path))
    f = ng.compile_source(SRC).norm
    x = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
    plain = np.asarray(f.compile("tvm")(x))
    tuned = f.compile("tvm", tune=True)
    y = np.asarray(tuned(x))
    launcher = tuned._launcher
    assert isinstance(launcher, TunedLauncher) and launcher.measured == 1
    (rec,) = tuned.schedule.values()
    assert rec["choice"] in [v.label for v in launcher.variants]
    assert set(rec["seconds"]) == {v.label for v in launcher.variants}
    files = list((tmp_path / "autotune").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["choice"] == rec["choice"]
    # another order of the row sums: the same function to rounding (fast contract)
    np.testing.assert_allclose(y, plain, rtol=1e-5, atol=1e-6)
    # a new compile (or process) with the same key reads the file and times nothing
    again = f.compile("tvm", tune=True)
    again(x)
    assert again._launcher.measured == 0 and again.schedule == tuned.schedule
    # other sizes are another key
    again(x[:32])
    assert again._launcher.measured == 1 and len(again.schedule) == 2
    # a damaged entry is timed again, not trusted
    files[0].write_text("{not json")
    third = f.compile("tvm", tune=True)
    third(x)
    assert third._launcher.measured == 1


def test_tune_is_an_option_of_the_tvm_fast_contract():
    f = ng.compile_source(SRC).norm
    with pytest.raises(GradeError, match="tune=True"):
        f.compile("tvm", exact=True, tune=True)
    with pytest.raises(GradeError, match="tune=True"):
        f.compile("kernel-interp", tune=True)


def test_a_variant_that_fails_is_left_out(tmp_path):
    """A schedule that cannot build or run is recorded and skipped; the default must work."""
    calls = []

    def good(tag):
        return lambda: (lambda buffers, scalars: calls.append(tag))

    def broken():
        raise RuntimeError("no such schedule")

    tuner = TunedLauncher([Variant({"lanes": 32}, "a", good("a")),
                           Variant({"lanes": 64}, "b", broken)],
                          target="test", reps=1, cache_dir=tmp_path)
    tuner({}, {"n": 4})
    (rec,) = tuner.records.values()
    assert rec["choice"] == "lanes=32" and "lanes=64" in rec["failed"]
    assert calls and set(calls) == {"a"}
    bad_default = TunedLauncher([Variant({"lanes": 32}, "a", broken),
                                 Variant({"lanes": 64}, "b", good("b"))],
                                target="test", reps=1, cache_dir=tmp_path)
    with pytest.raises(RuntimeError):
        bad_default({}, {"n": 4})
