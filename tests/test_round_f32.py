"""The f32-only rounding of ``kernels/round_f32.py`` against the definition, ``round_array``.

Each (format, mode, sat) is one kernel run by the kernel-IR interpreter over one array of f32
inputs: every special value, every value of the target's grid at the binades where things
change (subnormals, the first normals, the top, the overflow threshold) with the midpoints
between neighbours (the ties) and the f32 values next to all of these, plus random bit patterns
(everywhere, within the target's range and among f32 subnormals). Results must be the same
float64 bits (so the sign of zero counts), NaN matching NaN.
"""

from __future__ import annotations

import numpy as np
import pytest

from numgrade.ir.dims import Dim
from numgrade.ir.formats import get_format, round_array
from numgrade.kernels.interp import run_program
from numgrade.kernels.ir import (BufferDecl, Kernel, KernelProgram, Loop, ScalarParam, Store,
                                 expr_nodes, load, var, walk_exprs)
from numgrade.kernels.legalize import Block
from numgrade.kernels.round_f32 import round_f32_to

# NaN payloads and values past f32's range (which become inf) are meant
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered in cast:RuntimeWarning")

FORMATS = ["bf16", "f16", "e4m3", "e5m2", "e2m1", "e8m0"]
MODES = ["rne", "rz", "ru", "rd"]
F32_SPECIALS = [0, 0x7F800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0x7F7FFFFF, 0x00800000,
                0x007FFFFF, 0x00000001, 0x00400000, 0x3F800000]


def _program(fmt_name: str, mode: str, sat: bool) -> tuple[KernelProgram, Block, object]:
    i = var("i", "i64")
    blk = Block()
    r = round_f32_to(blk, load("x", i, "f32"), get_format(fmt_name), mode, sat)
    assert r is not None and r.dtype == "f32"
    body = (Loop("i", var("n", "i64"), tuple(blk.stmts) + (Store("y", i, r),)),)
    bufs = {n: BufferDecl(n, "f32", (Dim.sym("n"),), "f32", role)
            for n, role in (("x", "in"), ("y", "out"))}
    k = Kernel("round", (), (), body, ("x", "y"), (ScalarParam("n", "i64"),))
    return KernelProgram("round_f32", bufs, [k], ["x"], ["y"], False, []), blk, r


def _grid_points(fmt_name: str) -> np.ndarray:
    """Positive target values in the interesting binades and the midpoints between them."""
    fmt = get_format(fmt_name)
    if fmt.bits <= 8:
        codes = np.arange(1 << fmt.bits, dtype=np.uint16)
    else:  # 16 bits: the binades at the bottom, one in the middle and at the top
        m = fmt.precision - 1
        top = (1 << (15 - m)) - 1
        exps = np.array([0, 1, 2, 3, top // 2, top - 2, top - 1, top], dtype=np.uint16)
        codes = (exps[:, None] << m | np.arange(1 << m, dtype=np.uint16)[None, :]).ravel()
    raw = codes.astype(np.uint8 if fmt.bits <= 8 else np.uint16)
    if fmt.bits == 4:
        raw = raw[:16]
    vals = raw.view(fmt.np_dtype).astype(np.float64)
    vals = np.unique(vals[np.isfinite(vals) & (vals > 0)])
    mids = (vals[:-1] + vals[1:]) / 2
    # beyond the top: the overflow threshold, the next grid point; below the bottom: half of it
    ulp_top = vals[-1] - vals[-2]
    extra = [vals[-1] + ulp_top / 2, vals[-1] + ulp_top, vals[-1] + 1.5 * ulp_top,
             2.0 ** (fmt.emax + 1), vals[0] / 2, vals[0] / 4, vals[0] * 0.75]
    return np.concatenate([vals, mids, extra]).astype(np.float32)  # exact in f32, or inf


def _inputs(fmt_name: str) -> np.ndarray:
    fmt = get_format(fmt_name)
    rng = np.random.default_rng(sum(map(ord, fmt_name)))
    pts = _grid_points(fmt_name).view(np.uint32).astype(np.int64)
    near = (pts[:, None] + np.arange(-2, 3)[None, :]).ravel()  # each point and its f32 neighbours
    near = near[(near >= 0) & (near <= 0x7F800000)].astype(np.uint32)
    lo_e = max(fmt.emin - fmt.precision - 3 + 127, 0)
    hi_e = min(fmt.emax + 3 + 127, 255)
    ranged = (rng.integers(lo_e, hi_e + 1, 30000, dtype=np.uint32) << 23
              | rng.integers(0, 1 << 23, 30000, dtype=np.uint32))
    anywhere = rng.integers(0, 1 << 32, 100000, dtype=np.uint64).astype(np.uint32)
    f32_sub = rng.integers(0, 1 << 23, 3000, dtype=np.uint32)
    mags = np.concatenate([np.array(F32_SPECIALS, dtype=np.uint32), near, ranged, f32_sub])
    bits = np.concatenate([mags, mags | np.uint32(0x80000000), anywhere])
    return bits.view(np.float32)


def _check(got: np.ndarray, want: np.ndarray, x: np.ndarray, what: tuple) -> None:
    g = got.astype(np.float64)
    same = (g.view(np.uint64) == want.view(np.uint64)) | (np.isnan(g) & np.isnan(want))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, (what, bad.size, [(float(x[j]).hex(), g[j], want[j]) for j in bad[:5]])


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_bit_exact_against_round_array(fmt_name):
    x = _inputs(fmt_name)
    x64 = x.astype(np.float64)
    fmt = get_format(fmt_name)
    for mode in MODES:
        for sat in (False, True):
            prog, _, _ = _program(fmt_name, mode, sat)
            bufs = {"x": x, "y": np.zeros_like(x)}
            run_program(prog, bufs, {"n": x.size})
            _check(bufs["y"], round_array(x64, fmt, mode, sat), x, (fmt_name, mode, sat))


def test_wide_targets_and_unsupported():
    x = _inputs("e5m2")[:20000]
    for name in ("f32", "f64"):
        for mode in MODES:
            for sat in (False, True):
                prog, _, _ = _program(name, mode, sat)
                bufs = {"x": x, "y": np.zeros_like(x)}
                run_program(prog, bufs, {"n": x.size})
                want = round_array(x.astype(np.float64), get_format(name), mode, sat)
                _check(bufs["y"], want, x, (name, mode, sat))
    xv = var("x", "f32")
    assert round_f32_to(Block(), xv, get_format("e4m3"), "sr") is None
    assert round_f32_to(Block(), xv, get_format("i32")) is None
    assert round_f32_to(Block(), xv, get_format("bool")) is None


@pytest.mark.parametrize("fmt_name", FORMATS + ["f32"])
def test_no_float64_and_no_division(fmt_name):
    for mode in MODES:
        for sat in (False, True):
            _, blk, r = _program(fmt_name, mode, sat)
            nodes = list(expr_nodes(list(walk_exprs(blk.stmts)) + [r]))
            assert {n.dtype for n in nodes} <= {"f32", "u32", "i32", "bool", "i64"}
            assert all(n.op == "var" for n in nodes if n.dtype == "i64")  # the load index
            assert not [n for n in nodes if n.op in ("div", "mod", "rint", "floor", "ceil",
                                                      "trunc")]
