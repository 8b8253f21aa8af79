"""Every stdlib function gets a report at small sizes, and no output's bound is lost to a crash
inside the analysis (a crash is caught and reported as a null bound, so only this test sees it)."""

from __future__ import annotations

import glob
import os

import pytest

import numgrade as ng
import numgrade.stdlib as stdlib_pkg
from numgrade.harness import default_dims

PROGRAMS = sorted(os.path.basename(p)[:-4]
                  for p in glob.glob(os.path.join(os.path.dirname(stdlib_pkg.__file__), "*.grd")))
SLOW = {"four_over_six"}     # about 5 s per quantiser; covered by test_blockquant_bounds


@pytest.mark.parametrize("program", [p for p in PROGRAMS if p not in SLOW])
def test_no_internal_error_in_stdlib_reports(program):
    mod = ng.load(f"stdlib:{program}")
    for name in mod.functions:
        f = mod[name]
        rep = f.analyze(**default_dims(f))
        assert rep.outputs, name
        for out in rep.outputs:
            assert "internal error" not in (out.reason or ""), (name, out.index, out.reason)


def test_softmax_main_job_has_a_bound():
    """The README's main job analyses softmax at M=4, N=128: the bound must be finite."""
    rep = ng.load("stdlib:softmax").softmax.analyze(M=4, N=128)
    assert rep.outputs[0].abs_error is not None and 0 < rep.outputs[0].abs_error < 1e-3
