"""Packed low-precision storage as an option of the emitted kernels (kernels/packing.py).

The NVFP4, MXFP4 and Four Over Six quantisers run on every kernel backend with
``packed_e2m1=True, scale_layout="swizzled_128x4"``; the bytes they write must equal the
reference backend's codes packed, and its scales placed, by the independent numpy code here
(nibble arithmetic and a reshape/transpose of the padded scale matrix, not the library's offset
formula). Also: the inverse helpers, the zero padding written by the kernels themselves, the
pairing analysis (checked by brute force), the grid-level and load paths, the error paths, the
CLI, and an nvcc build of the packed CUDA for sm_90a.
"""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

import numgrade as ng
from numgrade.backends.registry import get_backend
from numgrade.cli import main
from numgrade.ir.formats import to_storage
from numgrade.kernels.ir import (Assign, Decl, Kernel, Loop, Store, const, format_program, load,
                                 var)
from numgrade.kernels.packing import (StorageOptions, apply_storage, unpack_e2m1,
                                      unswizzle_scales)
from numgrade.kernels.pairing import STEP, Pairing
from numgrade.kernels.runtime import run_program

SWZ = dict(packed_e2m1=True, scale_layout="swizzled_128x4")
QUANTISERS = [("nvfp4", 16), ("mxfp4", 32), ("four_over_six", 16)]


# --- independent expectations --------------------------------------------------------------
def pack_expected(codes: np.ndarray) -> np.ndarray:
    """Byte j of a row = code[2j] + 16 * code[2j + 1] (element 2j in the low nibble)."""
    c = codes.astype(np.int64)
    even, odd = c[..., ::2], c[..., 1::2]
    assert even.max(initial=0) < 16 and odd.max(initial=0) < 16
    return (even + 16 * odd).astype(np.uint8)


def swizzle_expected(scales: np.ndarray) -> np.ndarray:
    """Pad to [128 a, 4 b] with zeros, split rows as (tile, 4 groups of 32) and columns as
    (tile, 4), and order (row tile, column tile, row % 32, row group, column % 4)."""
    m, c = scales.shape
    mp, cp = -(-m // 128) * 128, -(-c // 4) * 4
    padded = np.zeros((mp, cp), dtype=np.uint8)
    padded[:m, :c] = scales
    t = padded.reshape(mp // 128, 4, 32, cp // 4, 4)  # (row tile, group, r32, col tile, c4)
    return t.transpose(0, 3, 2, 1, 4).reshape(-1).copy()


def codes(a) -> np.ndarray:
    return np.asarray(a).view(np.uint8)


def make_input(m: int, n: int, block: int, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-12.0, 12.0, size=(m, n)).astype(np.float32)
    x[0, :block] = 0.0  # an all-zero block
    x[1, 3] = -0.0
    x[-1, -1] = 900.0  # a large element: saturations in its block
    return x


# --- backends --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda-cache")


def _runner(backend: str, cache):
    """(run(f, x, **options) -> outputs, (M, N) for the quantisers on this backend)."""
    if backend == "cuda-host":
        from numgrade.backends.cuda_backend import CudaHostBackend

        be = CudaHostBackend(cache)
        ok, why = be.available()
        if not ok:
            pytest.skip(why)

        def run(f, x, **opts):  # as the API does: stored bytes as they are, the rest as codes
            program = f.kernels(**opts)
            outs = run_program(program, be.build(program), f.ir, [x], 0)
            stored = getattr(program, "layouts", {})
            return tuple(o if name in stored else to_storage(o, r.fmt)
                         for o, name, r in zip(outs, program.outputs, f.ir.results))
        return run, (130, 96)
    try:
        ok, why = get_backend(backend).available()
    except ng.GradeError as ex:
        pytest.skip(str(ex))
    if not ok:
        pytest.skip(why)
    # the Triton interpreter runs program instances one by one: fewer rows there
    shape = (3, 96) if backend == "triton" else (130, 96)
    return (lambda f, x, **opts: f.compile(backend, exact=True, **opts)(x)), shape


@pytest.mark.parametrize("backend", ["kernel-interp", "triton", "tvm", "cuda-host"])
def test_quantisers_store_packed_codes_and_tiled_scales(backend, cache):
    _check_quantisers(backend, cache)


@pytest.mark.gpu
def test_quantisers_on_the_gpu(cache):
    """The CUDA backend on a device (skipped without one)."""
    _check_quantisers("cuda", cache)


def _check_quantisers(backend: str, cache) -> None:
    run, (m, n) = _runner(backend, cache)
    for prog, block in QUANTISERS:
        f = ng.load_stdlib(prog).quantize
        x = make_input(m, n, block)
        ref = f(x)
        got = run(f, x, **SWZ)
        q, s = got[0], got[1]
        assert q.dtype == np.uint8 and q.shape == (m, n // 2), (prog, q.shape)
        assert np.array_equal(q, pack_expected(codes(ref[0]))), (backend, prog)
        assert s.dtype == np.uint8 and s.ndim == 1
        assert np.array_equal(s, swizzle_expected(codes(ref[1]))), (backend, prog)
        assert np.array_equal(unpack_e2m1(q), codes(ref[0]))
        assert np.array_equal(unswizzle_scales(s, m, n // block), codes(ref[1]))
        for a, b in zip(got[2:], ref[2:]):  # the other results are unchanged
            assert np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


@pytest.mark.parametrize("backend", ["kernel-interp", "cuda-host"])
def test_each_option_alone(backend, cache):
    run, (m, n) = _runner(backend, cache)
    f = ng.load_stdlib("nvfp4").quantize
    x = make_input(m, n, 16)
    ref = f(x)
    packed_only = run(f, x, packed_e2m1=True)
    assert np.array_equal(packed_only[0], pack_expected(codes(ref[0])))
    assert np.array_equal(codes(packed_only[1]), codes(ref[1]))  # row-major scales, decoded
    tiled_only = run(f, x, scale_layout="swizzled_128x4")
    assert np.array_equal(codes(tiled_only[0]), codes(ref[0]))
    assert np.array_equal(tiled_only[1], swizzle_expected(codes(ref[1])))


def test_mxfp4_ceil_and_torch_results():
    torch = pytest.importorskip("torch")
    f = ng.load_stdlib("mxfp4").quantize_ceil
    x = make_input(5, 64, 32)
    ref = f(x)
    got = f.compile("kernel-interp", exact=True, **SWZ)(torch.from_numpy(x))
    assert got[0].dtype == torch.uint8 and tuple(got[0].shape) == (5, 32)
    assert got[1].dtype == torch.uint8 and tuple(got[1].shape) == (512,)
    assert np.array_equal(got[0].numpy(), pack_expected(codes(ref[0])))
    assert np.array_equal(got[1].numpy(), swizzle_expected(codes(ref[1])))
    back = unpack_e2m1(got[0])
    assert isinstance(back, torch.Tensor) and np.array_equal(back.numpy(), codes(ref[0]))
    assert np.array_equal(unswizzle_scales(got[1], 5, 2).numpy(), codes(ref[1]))


BLOCK_SCALED = {("nvfp4", "quantize"), ("nvfp4", "quantize_sr"), ("nvfp4", "quantize_rht_sr"),
                ("mxfp4", "quantize"), ("mxfp4", "quantize_ceil"), ("four_over_six", "quantize"),
                ("four_over_six", "quantize_mae"), ("four_over_six", "quantize_maxabs"),
                ("four_over_six", "select")}  # select: e2m1[M, B*16] with e4m3[M, B]


def test_every_stdlib_e2m1_result_packs_on_the_kernel_interpreter():
    """Every stdlib function with an e2m1 result (random streams included), and the tiled
    scales of exactly the 1-D block quantisers."""
    from kernel_diff import random_args, stdlib_cases

    seen = set()
    for prog, name in stdlib_cases():
        f = ng.load_stdlib(prog)[name]
        if not any(r.fmt.name == "e2m1" for r in f.ir.results):
            continue
        seen.add((prog, name))
        args = random_args(f.ir)
        ref = f(*args, seed=3)
        ref = ref if isinstance(ref, tuple) else (ref,)
        tiled = (prog, name) in BLOCK_SCALED
        if not tiled:
            with pytest.raises(ng.GradeError, match="no block-scale result"):
                f.compile("kernel-interp", scale_layout="swizzled_128x4")
        opts = SWZ if tiled else dict(packed_e2m1=True)
        got = f.compile("kernel-interp", exact=True, **opts)(*args, seed=3)
        got = got if isinstance(got, tuple) else (got,)
        for r, g, v in zip(ref, got, f.ir.results):
            if v.fmt.name == "e2m1":
                assert np.array_equal(g, pack_expected(codes(r))), (prog, name)
            elif tiled and v.fmt.name in ("e4m3", "e8m0") and np.ndim(r) == 2:
                assert np.array_equal(g, swizzle_expected(codes(r))), (prog, name)
            else:
                assert np.array_equal(np.asarray(r, np.float64), np.asarray(g, np.float64),
                                      equal_nan=True), (prog, name)
    assert BLOCK_SCALED <= seen and ("nvfp4", "quantize_2d") in seen


# --- the helpers ---------------------------------------------------------------------------
def test_helpers_invert_the_layouts():
    rng = np.random.default_rng(0)
    c = rng.integers(0, 16, size=(3, 7, 10), dtype=np.uint8)
    assert np.array_equal(unpack_e2m1(pack_expected(c)), c)
    assert unpack_e2m1(np.array([0x2B], dtype=np.uint8)).tolist() == [0xB, 0x2]
    for m, k in [(1, 1), (130, 6), (256, 8), (7, 3)]:
        s = rng.integers(0, 256, size=(m, k), dtype=np.uint8)
        assert np.array_equal(unswizzle_scales(swizzle_expected(s), m, k), s)
    # one scale by hand: row 161 (tile 1, group 1, r32 1), column 5 (tile 1, c4 1) of [200, 6]
    s = np.zeros((200, 6), dtype=np.uint8)
    s[161, 5] = 77
    tiled = swizzle_expected(s)
    assert tiled.size == 256 * 8 and np.flatnonzero(tiled).tolist() == [
        (1 * 2 + 1) * 512 + 1 * 16 + 1 * 4 + 1]


def test_helper_errors():
    with pytest.raises(ng.GradeError, match="uint8"):
        unpack_e2m1(np.zeros(4, dtype=np.float32))
    with pytest.raises(ng.GradeError, match="at least one dimension"):
        unpack_e2m1(np.uint8(3))
    with pytest.raises(ng.GradeError, match="take 512 bytes"):
        unswizzle_scales(np.zeros(100, dtype=np.uint8), 3, 2)


# --- the kernels write the padding themselves ----------------------------------------------
@pytest.mark.parametrize("backend", ["kernel-interp", "cuda-host"])
def test_padding_is_zeroed_by_the_kernels(backend, cache):
    """Output buffers start as garbage (not the runtime's zeros): the padding still reads 0."""
    f = ng.load_stdlib("mxfp4").quantize
    program = f.kernels(**SWZ)
    assert program.kernels[0].name == "k_zero_out1"
    if backend == "cuda-host":
        from numgrade.backends.cuda_backend import CudaHostBackend

        launcher = CudaHostBackend(cache).build(program)
    else:
        launcher = get_backend(backend).build(program)
    m, n = 130, 96
    x = make_input(m, n, 32)
    env = {"M": m, "N": n}
    buffers = {"in0_x": x.reshape(-1).copy(),
               "out0": np.full(m * n // 2, 0xEE, dtype=np.uint8),
               "out1": np.full(256 * 4, 0xEE, dtype=np.uint8)}
    scalars = {name: int(d.evaluate(env)) for name, d in program.dims.items()}
    launcher(buffers, scalars)
    ref = f(x)
    assert np.array_equal(buffers["out1"], swizzle_expected(codes(ref[1])))
    assert np.array_equal(buffers["out0"].reshape(m, n // 2), pack_expected(codes(ref[0])))


# --- the pairing analysis, checked by brute force ------------------------------------------
I = var("i", "i64")
n_even, n_any, g = var("n", "i64"), var("k", "i64"), var("g", "i64")


def _even(name: str) -> bool:
    return name == "n"


PAIRING_CASES = [  # (expression, the analysis must say 'step')
    (I, True),
    (g * n_even + I, True),
    (I + g * 16, True),
    ((g * n_even + I) % n_even, True),
    (I - 4, True),
    (I * 1 + 2, True),
    (I + 1, False),  # odd start
    (I * 2, False),  # stride two
    (g * n_any + I, False),  # n_any may be odd
    (I % n_any, False),
    ((I + 3) // 2, False),
    (g + I * n_even, False),  # column-major: consecutive i are a row apart
    (I + load("b", g, "i64") * 2, False),  # memory is never assumed loop-invariant
    (I + var("acc", "i64") * 2, False),  # an accumulator assigned inside the loop
]


@pytest.mark.parametrize("k", range(len(PAIRING_CASES)))
def test_pairing_analysis_is_sound(k):
    e, want = PAIRING_CASES[k]
    got = Pairing("i", {}, {"acc"}, _even).of(e) == STEP
    assert got == want, e
    if not got:
        return
    for nv in (2, 4, 6, 16):  # whatever the even size and the other variables are
        for gv in range(4):
            for kv in (1, 3, 4):
                vals = [_eval(e, {"i": i, "n": nv, "g": gv, "k": kv}) for i in range(2 * nv)]
                for h in range(nv):
                    assert vals[2 * h] % 2 == 0 and vals[2 * h + 1] == vals[2 * h] + 1, e


def _eval(e, env):
    if e.op == "const":
        return e.attrs[0]
    if e.op == "var":
        return env[e.attrs[0]]
    a, b = (_eval(x, env) for x in e.args)
    ops = {"add": int.__add__, "sub": int.__sub__, "mul": int.__mul__, "div": int.__floordiv__,
           "mod": int.__mod__}
    return ops[e.op](a, b)


# --- other layouts of the stored output ------------------------------------------------------
SRC = """
fn rowmax(x: f32[M, N]) -> e2m1[M] { return round(max(x, axis=-1), e2m1) }
fn tr(x: f32[M, N]) -> e2m1[N, M] { return transpose(round(x, e2m1), [1, 0]) }
fn q(x: f32[M, N]) -> e2m1[M, N] { return round(x * 0.5, e2m1) }
fn two(x: f32[M, N]) -> (e2m1[M, N], e2m1[M, N]) { return (round(x, e2m1), round(x * 2.0, e2m1)) }
fn odd(x: f32[4, 5]) -> e2m1[4, 5] { return round(x, e2m1) }
fn sc(x: f32[M]) -> e2m1 { return round(max(x), e2m1) }
"""


@pytest.fixture(scope="module")
def mod():
    return ng.compile_source(SRC)


def test_grid_level_and_transposed_outputs(mod):
    """rowmax stores at grid level (the grid axis is halved), tr along the rows of x."""
    x = make_input(6, 10, 2)
    for name in ("rowmax", "tr"):
        f = mod[name]
        got = f.compile("kernel-interp", packed_e2m1=True, exact=True)(x)
        assert np.array_equal(got, pack_expected(codes(f(x)))), name
    assert "g0h" in format_program(mod.rowmax.kernels(packed_e2m1=True))


def test_loads_of_a_packed_buffer_read_the_nibble(mod):
    """A later kernel that copies one packed output into another reads codes back from bytes."""
    f = mod.two
    base = f.kernels()
    k0 = base.kernels[0]
    assert len(base.kernels) == 1 and set(k0.buffers) == {"in0_x", "out0", "out1"}
    first = dataclasses.replace(k0, body=_drop_stores(k0.body, "out1"),
                                buffers=("in0_x", "out0"))
    gv, nn = var(k0.grid_vars[0], "i64"), var("n_N", "i64")
    idx = gv * nn + var("j", "i64")
    copy = Kernel("copy", k0.grid, k0.grid_vars,
                  (Loop("j", nn, (Store("out1", idx, load("out0", idx, "u8")),)),),
                  ("out0", "out1"), k0.scalars)
    hand = dataclasses.replace(base, kernels=[first, copy])
    hand.constants = {}
    program = apply_storage(hand, f.ir, StorageOptions.make(True))
    text = format_program(program)
    assert "out0[div(" in text and "shr(" in text  # the load reads a byte and shifts
    x = make_input(4, 6, 2)
    out = run_program(program, get_backend("kernel-interp").build(program), f.ir, [x])
    want = pack_expected(codes(f(x)[0]))
    assert np.array_equal(out[0], want) and np.array_equal(out[1], want)


def _drop_stores(stmts, buf: str) -> tuple:
    out = []
    for s in stmts:
        if isinstance(s, Store) and s.buffer == buf:
            continue
        if isinstance(s, Loop):
            s = dataclasses.replace(s, body=_drop_stores(s.body, buf))
        out.append(s)
    return tuple(out)


def test_unpairable_store_order_is_a_grade_error(mod):
    """A hand-made column-major store: consecutive loop iterations are a row apart."""
    f = mod.q
    base = f.kernels()
    k = base.kernels[0]
    gv, i = var(k.grid_vars[0], "i64"), var("c", "i64")
    bad = Kernel(k.name, k.grid, k.grid_vars,
                 (Loop("c", var("n_N", "i64"),
                       (Store("out0", gv + i * var("n_M", "i64"), const(3, "u8")),)),),
                 ("out0",), k.scalars)
    hand = dataclasses.replace(base, kernels=[bad])
    with pytest.raises(ng.GradeError, match="cannot pair.*does not step by one"):
        apply_storage(hand, f.ir, StorageOptions.make(True))
    # a serial loop whose store index moves with an accumulator it assigns
    acc = var("acc", "i64")
    counted = Kernel(k.name, k.grid, k.grid_vars, (
        Decl("acc", const(0, "i64")),
        Loop("c", var("n_N", "i64"), (Assign("acc", acc + 1),
                                       Store("out0", gv * var("n_N", "i64") + i + acc * 2,
                                             const(3, "u8"))), "serial")),
        ("out0",), k.scalars)
    with pytest.raises(ng.GradeError, match="cannot pair.*does not step by one"):
        apply_storage(dataclasses.replace(base, kernels=[counted]), f.ir,
                      StorageOptions.make(True))


# --- errors --------------------------------------------------------------------------------
def test_odd_and_scalar_e2m1_results_are_grade_errors(mod):
    with pytest.raises(ng.GradeError, match="last dimension 5 is odd"):
        mod.odd.compile("kernel-interp", packed_e2m1=True)
    with pytest.raises(ng.GradeError, match="scalar e2m1"):
        mod.sc.kernels(packed_e2m1=True)
    run = mod.q.compile("kernel-interp", packed_e2m1=True, exact=True)
    with pytest.raises(ng.GradeError, match=r"N = 5, which is odd"):
        run(np.ones((2, 5), dtype=np.float32))
    with pytest.raises(ng.GradeError, match=r"which is odd"):
        mod.rowmax.compile("kernel-interp", packed_e2m1=True)(np.ones((3, 4), np.float32))


def test_bad_options_are_grade_errors():
    f = ng.load_stdlib("nvfp4").quantize
    with pytest.raises(ng.GradeError, match="unknown scale_layout 'colmajor'"):
        f.compile("kernel-interp", scale_layout="colmajor")
    with pytest.raises(ng.GradeError, match="packed_e2m1 must be True or False"):
        f.compile("kernel-interp", packed_e2m1="yes")
    with pytest.raises(ng.GradeError, match="unknown scale_layout"):
        f.emit("cuda", scale_layout=None)
    with pytest.raises(ng.GradeError, match="not of the reference"):
        f.compile("reference", packed_e2m1=True)
    with pytest.raises(ng.GradeError, match="no e2m1 result"):
        ng.load_stdlib("softmax").softmax.compile("kernel-interp", packed_e2m1=True)
    with pytest.raises(ng.GradeError, match="no block-scale result"):  # 16x16 tile scales
        ng.load_stdlib("nvfp4").quantize_2d.compile("kernel-interp",
                                                    scale_layout="swizzled_128x4")


# --- emitted source: API, CLI, nvcc --------------------------------------------------------
def test_cli_emit_with_storage_options(capsys):
    args = ["emit", "stdlib:nvfp4", "quantize", "--backend", "cuda"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--packed-e2m1", "--scale-layout", "swizzled_128x4"]) == 0
    packed = capsys.readouterr().out
    assert "k_zero_out1" in packed and "k_zero_out1" not in plain
    assert "<< 4u" in packed and "<< 4u" not in plain
    with pytest.raises(SystemExit) as ex:
        main(args + ["--scale-layout", "colmajor"])
    assert ex.value.code == 2
    assert main(["emit", "stdlib:softmax", "softmax", "--backend", "cuda",
                 "--packed-e2m1"]) == 1
    assert "no e2m1 result" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_packed_cuda_compiles_for_sm90a(cache):
    from numgrade.backends.cuda_backend import emit_bundle, nvcc_compile

    programs = [ng.load_stdlib(p).quantize.kernels(**SWZ) for p, _ in QUANTISERS]
    source, symbols = emit_bundle(programs, "cuda", "sm_90a")
    ptx, cubin = nvcc_compile(source, "sm_90a", cache)
    assert cubin[:4] == b"\x7fELF" and ".target sm_90a" in ptx
    for ks in symbols:
        for sym, _ in ks:
            assert f".entry {sym}(" in ptx, sym
    assert any("zero" in sym for ks in symbols for sym, _ in ks)
