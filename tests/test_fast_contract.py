"""The fast execution contract (SPEC section 3): a fast kernel's results lie within the bound
``analyze()`` reports, measured against the ideal values on sampled and corner inputs by the
soundness harness (numgrade/harness.py, the same sampler as for the reference backend).

Every stdlib function runs through the kernel-IR interpreter's fast program, TVM (llvm) and the
CUDA host build; representative recipes through Triton's interpreter, and every stdlib function
on it in the slow lane. Exact-contract bit-exactness is tested by the backends'
own test files.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import shutil
import warnings

import numpy as np
import pytest

import numgrade as ng
import numgrade.stdlib as stdlib_pkg
from numgrade import harness as H
from numgrade.backends.registry import get_backend

PROGRAMS = sorted(os.path.basename(p)[:-4]
                  for p in glob.glob(os.path.join(os.path.dirname(stdlib_pkg.__file__), "*.grd")))
ALL = [(p, f) for p in PROGRAMS for f in ng.load(f"stdlib:{p}").functions]
REPRESENTATIVE = [("softmax", "softmax"), ("softmax", "log_softmax"), ("rmsnorm", "rmsnorm"),
                  ("layernorm", "layernorm"), ("nvfp4", "quantize"), ("fp8", "quantize_per_tensor"),
                  ("mxfp4", "quantize"), ("attention", "attention"), ("sums", "naive_f32"),
                  ("moe", "router_softmax")]


def _available(backend: str) -> bool:
    ok, _ = get_backend(backend).available()
    return ok


@functools.lru_cache(maxsize=None)
def _analysed(program: str, fname: str):
    """The function, its default sizes and its report, once per function for all backends."""
    f = ng.load(f"stdlib:{program}")[fname]
    dims = H.default_dims(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return f, dims, f.analyze(**dims)


def _check_fast(program: str, fname: str, backend: str) -> None:
    f, dims, rep = _analysed(program, fname)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kernel = f.compile(backend)     # the fast contract is the default
        checks = H.check(f, dims, n_samples=6, search=False, max_corners=6, report=rep,
                         computed=kernel)
    bad = [v for c in checks for v in c.violations]
    assert not bad, f"{program}.{fname} on {backend} (fast): {bad[0]}"


@pytest.mark.parametrize("program,fname", ALL, ids=[f"{p}.{f}" for p, f in ALL])
def test_fast_kernel_interp_within_bound(program, fname):
    _check_fast(program, fname, "kernel-interp")


@pytest.mark.parametrize("program,fname", REPRESENTATIVE,
                         ids=[f"{p}.{f}" for p, f in REPRESENTATIVE])
def test_fast_triton_within_bound(program, fname):
    if not _available("triton"):
        pytest.skip("triton unavailable")
    _check_fast(program, fname, "triton")


@pytest.mark.parametrize("program,fname", ALL, ids=[f"{p}.{f}" for p, f in ALL])
def test_fast_tvm_within_bound_every_stdlib_function(program, fname):
    """Every stdlib function's fast TVM kernel (llvm) within its bound (about 2 minutes)."""
    if not _available("tvm"):
        pytest.skip("tvm unavailable")
    _check_fast(program, fname, "tvm")


@pytest.mark.slow
@pytest.mark.parametrize("program,fname", ALL, ids=[f"{p}.{f}" for p, f in ALL])
def test_fast_triton_within_bound_every_stdlib_function(program, fname):
    """Every stdlib function on Triton's interpreter: the interpreter spends about 150 us per
    block operation, so the block quantisers take 20-40 s each; the slow lane runs them all,
    the fast lane the representatives above."""
    if not _available("triton"):
        pytest.skip("triton unavailable")
    _check_fast(program, fname, "triton")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc not installed")
@pytest.mark.parametrize("program,fname", ALL, ids=[f"{p}.{f}" for p, f in ALL])
def test_fast_cuda_host_build_within_bound(program, fname):
    """The CUDA backend's fast print (f32 libm math, sums in any order), built for the CPU."""
    from numgrade.api import _to_arrays
    from numgrade.backends.cuda_backend import CudaHostBackend
    from numgrade.kernels.runtime import run_program

    f, dims, rep = _analysed(program, fname)
    prog = f.kernels(exact=False)
    launcher = CudaHostBackend().build(prog)

    class HostKernel:
        def __call__(self, *args, seed=None):
            arrays, _ = _to_arrays(list(args), f.ir)
            outs = run_program(prog, launcher, f.ir, arrays, seed)
            outs = [np.asarray(o) for o in outs]
            return tuple(outs) if f.ir.result_is_tuple else outs[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        checks = H.check(f, dims, n_samples=4, search=False, max_corners=4, report=rep,
                         computed=HostKernel())
    bad = [v for c in checks for v in c.violations]
    assert not bad, f"{program}.{fname} on cuda-host (fast): {bad[0]}"


def test_fast_lowering_has_no_f64_in_f32_softmax_and_sums_in_any_order():
    """The fast program of an f32 softmax: f32 arithmetic and math only, and its sums are
    order-free Reduces (the exact program emulates the reference's pairwise tree in f32 with
    NaN canonicalisation)."""
    from numgrade.kernels.ir import Reduce, walk_exprs

    f = ng.load("stdlib:softmax").softmax
    fast, exact = f.kernels(exact=False), f.kernels(exact=True)
    assert fast.contract == "fast" and exact.contract == "exact"

    def reduces(p):
        out = []

        def visit(stmts):
            for s in stmts:
                if isinstance(s, Reduce):
                    out.append(s)
                    visit(s.body)
                elif hasattr(s, "body"):
                    visit(s.body)
        for k in p.kernels:
            visit(k.body)
        return out

    assert {r.order for r in reduces(fast) if r.kind == "sum"} == {"any"}
    assert {r.order for r in reduces(exact) if r.kind == "sum"} == {"pairwise"}
    def sub(e):
        yield e
        for a in e.args:
            yield from sub(a)
    dtypes = {x.dtype for k in fast.kernels for e in walk_exprs(k.body) for x in sub(e)}
    assert "f64" not in dtypes, dtypes


def test_emit_contracts_and_analysis_target():
    f = ng.load("stdlib:softmax").softmax
    fast, exact = f.emit("triton"), f.emit("triton", exact=True)
    assert "_exp_f32(" in fast and "combine_fn=_add" in fast and "if ROW:" in fast
    assert "_exp_f32(" not in exact
    rep = f.analyze(target="sm_90", M=4, N=64)
    model = rep.coeffects["execution_model"]
    assert model["target"] == "sm_90" and "fast" in model["contracts"]
    assert "libdevice" in model["math"]
    assert rep.coeffects["execution_model"]["math_ulp_factors"]["exp"] == 4.0
    with pytest.raises(ng.GradeError, match="unknown target"):
        f.analyze(target="sm_42")


@pytest.mark.parametrize("program,fname,n", [("nvfp4", "quantize", 64), ("mxfp4", "quantize", 64),
                                             ("fp8", "quantize_block_1x128", 128)])
def test_triton_schedule_batches_short_grid_points_bit_exactly(program, fname, n):
    """Block quantisers run many blocks per Triton program (kernels/schedule.py); the values
    are unchanged (the roundings are exact and max is order-free), including a last program
    whose lanes run past the grid (3 rows of blocks, not a multiple of the lanes)."""
    from numgrade.backends.triton_backend import schedule_for_triton

    if not _available("triton"):
        pytest.skip("triton unavailable")
    f = ng.load(f"stdlib:{program}")[fname]
    fast = f.kernels(exact=False)
    sched = schedule_for_triton(fast)
    assert any(k.note.endswith("grid points per program") for k in sched.kernels)
    assert [k.grid for k in schedule_for_triton(sched).kernels] == \
        [k.grid for k in sched.kernels]                      # idempotent
    exact = f.kernels(exact=True)
    assert schedule_for_triton(exact) is exact              # the exact contract as lowered
    x = np.random.default_rng(3).standard_normal((3, n)).astype(np.float32) * 7
    ref = f(x)
    got = f.compile("triton")(x)
    for a, b in zip(ref, got):
        assert np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


@pytest.mark.parametrize("fname", ["softmax", "softmax_bf16", "log_softmax"])
def test_tvm_stashes_a_reduced_value_the_epilogue_needs_again(fname):
    """On the CPU a row is one thread: softmax's exp(x - m), summed and then divided by the
    sum, is evaluated once (the sum stores it into the output, the epilogue loads it back),
    and the result is bit for bit that of the kernel that evaluates it twice. Where the
    epilogue's output cannot hold the value (bf16 output, log_softmax's exp not reused) the
    kernel is unchanged."""
    from numgrade.backends import tvm_backend
    from numgrade.kernels.ir import Loop, expr_nodes, walk_exprs
    from numgrade.kernels.schedule import stash_reduced_values

    f = ng.load("stdlib:softmax")[fname]
    prog = f.kernels(exact=False)
    k = prog.kernels[0]
    stashed = stash_reduced_values(prog, k)
    loops = [s for s in stashed.body if isinstance(s, Loop)]
    exps_in_epilogue = sum(n.op == "exp" for n in expr_nodes(list(walk_exprs(loops))))
    if fname == "softmax":
        assert stashed is not k and exps_in_epilogue == 0
        exact = f.kernels(exact=True)
        assert stash_reduced_values(exact, exact.kernels[0]) is exact.kernels[0]
    else:
        assert stashed is k
    if not _available("tvm"):
        pytest.skip("tvm unavailable")
    x = np.random.default_rng(5).standard_normal((5, 300)).astype(np.float32) * 9
    got = np.asarray(f.compile("tvm")(x), np.float64)
    saved = tvm_backend.stash_reduced_values
    try:
        tvm_backend.stash_reduced_values = lambda program, kernel: kernel
        plain = np.asarray(f.compile("tvm")(x), np.float64)
    finally:
        tvm_backend.stash_reduced_values = saved
    assert np.array_equal(got, plain)


def test_fast_triton_ptx_uses_fp8_conversions_and_no_f64():
    """Compiled for sm_90a (no GPU needed): the fast FP8 quantiser rounds with the hardware
    conversion, and the fast softmax and RMSNorm have no float64 arithmetic."""
    import re

    if not _available("triton"):
        pytest.skip("triton unavailable")
    from numgrade.backends.triton_backend import compile_ptx

    fp8 = compile_ptx(ng.load("stdlib:fp8").quantize_block_1x128.kernels(exact=False), "sm_90a")
    assert any("cvt.rn.satfinite.e4m3x2.f32" in p for p in fp8.values())
    for prog, fn in (("softmax", "softmax"), ("rmsnorm", "rmsnorm")):
        ptx = compile_ptx(ng.load(f"stdlib:{prog}")[fn].kernels(exact=False), "sm_90a")
        f64 = [ln for p in ptx.values() for ln in p.splitlines()
               if re.search(r"\b(add|sub|mul|fma|div)\.[a-z.]*f64\b", ln)]
        assert not f64, f64[:3]


def _e2m1_inputs() -> np.ndarray:
    """Every rounding boundary of e2m1 and its f32 neighbours, specials, random bit patterns."""
    edges = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0,
             1e30, np.inf, 1e-45, 1e-39]
    xs = []
    for e in edges:
        v = np.float32(e)
        xs += [v, np.nextafter(v, np.float32(0)), np.nextafter(v, np.float32(np.inf))]
    xs = np.array(xs, np.float32)
    rng = np.random.default_rng(7)
    rand = rng.integers(0, 2 ** 32, 4000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    out = np.concatenate([xs, -xs, rand, (rng.standard_normal(4000) * 4).astype(np.float32)])
    return out[~np.isnan(out)]


def test_fast_triton_e2m1_rounding_is_the_reference_rounding():
    """The fast Triton kernels round into e2m1 by integer rounding (_e2m1_code /
    _e2m1_value): the same value and code as the reference on every boundary (ties to even),
    saturation, zeros of both signs, subnormal and random f32 inputs."""
    if not _available("triton"):
        pytest.skip("triton unavailable")
    f = ng.compile_source("fn f(x: f32[N]) -> (e2m1[N], f32[N]) {\n"
                          "    let q = round(x, e2m1)\n    return (q, q as f32 * 3.0)\n}\n").f
    assert "_e2m1_code(" in f.emit("triton")
    x = _e2m1_inputs()
    for a, b in zip(f(x), f.compile("triton")(x)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.array_equal(a, b) and np.array_equal(np.signbit(a), np.signbit(b))


@pytest.mark.parametrize("backend", ["kernel-interp", "triton", "tvm"])
def test_exact_contract_takes_f32_nans_as_the_reference_does(backend):
    """An f32 input is rounded into f32 on entry (round_array: every NaN the positive one), so
    a negative NaN rounds into e2m1 as the reference's (a zero of the opposite sign)."""
    if not _available(backend):
        pytest.skip(f"{backend} unavailable")
    f = ng.compile_source("fn f(x: f32[N]) -> e2m1[N] {\n    return round(x, e2m1)\n}\n").f
    x = np.array([0x7FC00000, 0xFFC00000, 0xFF800001, 0x3F800000], np.uint32).view(np.float32)
    want = np.asarray(f(x), np.float64)
    got = np.asarray(f.compile(backend, exact=True)(x), np.float64)
    assert np.array_equal(np.signbit(want), np.signbit(got)) and np.array_equal(want, got)


def test_tvm_exp_f32_is_within_the_model_on_a_sample_of_every_f32():
    """numgrade's vectorisable f32 exp (kernels/math_f32.py), as the TVM backend compiles it:
    every 4099th f32 bit pattern (all exponents, both signs, NaN, inf) within the rounding
    model's 2 ulp of float64 exp, overflow and NaN where exp gives them
    (benchmarks/exp_f32_exhaustive.py checks every f32)."""
    import importlib.util
    from pathlib import Path

    if not _available("tvm"):
        pytest.skip("tvm unavailable")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "exp_f32_exhaustive.py"
    spec = importlib.util.spec_from_file_location("exp_f32_exhaustive_t", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.check(stride=4099, chunk=1 << 16)
    assert r["inputs"] > 1_000_000
    assert r["beyond_model"] == 0 and r["wrong_overflow"] == 0 and r["wrong_nan"] == 0, r
    assert r["worst"] < 1.0, r          # measured 0.863 over every f32


def test_exp_f32_expansion_matches_its_own_float32_twin():
    """The expansion is plain f32 arithmetic: the kernel-IR interpreter evaluates it to the same
    bits as the TVM kernel (no contraction, no reassociation)."""
    from numgrade.kernels.interp import run_program
    from numgrade.kernels.math_f32 import expand_exp_f32

    if not _available("tvm"):
        pytest.skip("tvm unavailable")
    f = ng.compile_source("fn f(x: f32[N]) -> f32[N] {\n    return exp(x)\n}\n").f
    prog = f.kernels(exact=False)
    prog = dataclasses.replace(prog, kernels=[expand_exp_f32(k) for k in prog.kernels])
    x = np.concatenate([np.linspace(-110, 95, 20001, dtype=np.float32),
                        np.array([np.inf, -np.inf, 0.0, -0.0, 1e-40], np.float32)])
    want = np.asarray(f.compile("tvm")(x), np.float32)
    out = np.zeros_like(x)
    run_program(prog, {"in0_x": x, "out0": out}, {"n_N": x.size})
    assert np.array_equal(want.view(np.uint32), out.view(np.uint32))
