"""Block-scaled quantisers (NVFP4, MXFP4, Four Over Six, FP8) get finite, sound error bounds.

The block scale is computed from the block amax and the global amax; interval arithmetic alone
loses |x| <= amax_b <= G. The hybrid tier's sliced scalar programs write x = t * amax_b
(ratio substitution) and bound ideal and computed values with factored forms
(monomial * interval) that cancel amax_b and the clamped global scale, split exact leaves at 0
(all-zero blocks and tensors) and round narrow-format endpoints exactly. These tests check the
bounds are finite and that the soundness harness, fed adversarial blocks (one max among tiny
values, zero blocks, tiny tensors at the FLT_MAX clamps, e2m1 rounding midpoints, powers of
two), finds no violation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest

import numgrade as ng
from numgrade import harness as Hn

CASES = [
    ("nvfp4", "quantize", {"M": 4, "N": 64}, (0, 1)),
    ("nvfp4", "quantize_2d", {"M": 16, "N": 32}, (0, 1)),
    ("nvfp4", "quantize_sr", {"M": 4, "N": 64}, (0, 1)),
    ("mxfp4", "quantize", {"M": 4, "N": 64}, (0, 1)),
    ("mxfp4", "quantize_ceil", {"M": 4, "N": 64}, (0, 1)),
    ("four_over_six", "quantize", {"M": 4, "N": 64}, (0, 1)),
    ("fp8", "quantize_per_tensor", {"M": 4, "N": 64}, (0,)),
    ("fp8", "quantize_block_1x128", {"M": 4, "N": 128}, (0,)),
]

# the largest error each output can have (the true suprema are about 6, 16, 4, 122, 16):
# bounds must be finite and not far above these
LIMITS = {"e2m1": 12.5, "e4m3": 460.0, "e8m0": 260.0}


@lru_cache(maxsize=None)
def _report(prog: str, fname: str, dims: tuple):
    fn = ng.load_stdlib(prog)[fname]
    return fn, fn.analyze(**dict(dims))


@pytest.mark.parametrize("prog,fname,dims,outs", CASES,
                         ids=[f"{p}.{f}" for p, f, _, _ in CASES])
def test_bounds_finite(prog, fname, dims, outs):
    _, rep = _report(prog, fname, tuple(sorted(dims.items())))
    for i in outs:
        o = rep.outputs[i]
        assert o.abs_error is not None and math.isfinite(o.abs_error), (i, o.reason)
        assert o.abs_error <= LIMITS[o.format], (i, o.abs_error)
        assert o.range is not None


def test_tight_where_the_analysis_converges():
    _, rep = _report("fp8", "quantize_per_tensor", (("M", 4), ("N", 64)))
    assert rep.outputs[0].abs_error < 17          # e4m3 half-ulp at 448 is 16
    _, rep = _report("nvfp4", "quantize", (("M", 4), ("N", 64)))
    assert rep.outputs[0].abs_error < 12.5        # |q - 6 x / amax_b| <= 6 (+ margin)
    # the e4m3 block scales: the overflow of 2688 / amax for tiny tensors is absorbed by
    # min(., FLT_MAX) (scalar_error.absorbing_clips); 28.6 without that rule
    assert rep.outputs[1].abs_error < 17


def _adversarial(shape, blk, rng, n):
    mids = np.array([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]) / 6
    out = []
    for k in range(n):
        kind = k % 7
        if kind == 0:    # one max per block, the others tiny
            x = rng.uniform(-1, 1, shape) * 2.0 ** -float(rng.integers(5, 60))
            x[:, ::blk] = 1000.0
        elif kind == 1:  # zero blocks, or an all-zero tensor
            x = rng.uniform(-1, 1, shape)
            x[:, :blk] = 0
            if k % 2:
                x[:] = 0
        elif kind == 2:  # block amax far below the global amax (e4m3 scale subnormal or 0)
            x = rng.uniform(-1, 1, shape) * 2.0 ** -float(rng.integers(5, 25))
            x[0, 0] = 1.0
        elif kind == 3:  # e2m1 rounding midpoints relative to the block max
            x = rng.choice(mids, shape) * rng.choice([-1, 1], shape)
            x[:, ::blk] = 1.0
        elif kind == 4:  # tiny tensors: the global scale clamps to FLT_MAX
            x = rng.uniform(-1, 1, shape) * 2.0 ** -float(rng.integers(120, 149))
        elif kind == 5:  # powers of two (MXFP4 scale boundaries)
            x = rng.choice([-1, 1], shape) * 2.0 ** rng.integers(-20, 10, shape).astype(float)
        else:            # near the block max everywhere (saturation)
            x = rng.choice([-1, 1], shape) * (1 - rng.uniform(0, 0.2, shape))
        out.append([np.asarray(np.clip(x, -1000, 1000), np.float32).astype(np.float64)])
    return out


@pytest.mark.parametrize("prog,fname,dims,blk", [
    ("nvfp4", "quantize", {"M": 4, "N": 64}, 16),
    ("mxfp4", "quantize", {"M": 4, "N": 64}, 32),
    ("fp8", "quantize_block_1x128", {"M": 4, "N": 128}, 128),
])
def test_harness_no_violation(prog, fname, dims, blk):
    fn, rep = _report(prog, fname, tuple(sorted(dims.items())))
    checks = Hn.check(fn, dims=dims, n_samples=24, seed=1, report=rep, time_limit=4.0)
    sess = Hn._Session(fn, dims, 1, prog, Hn.loader_code(fn), True, keep=3)
    sess.accs = [Hn._Acc(c) for c in checks]
    sess.evaluate(_adversarial((dims["M"], dims["N"]), blk, np.random.default_rng(3), 42))
    for c in checks:
        assert c.ok, [v.describe() for v in c.violations]
