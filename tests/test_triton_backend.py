"""The Triton backend on hand-built kernel programs: bit-exact against numpy and the kernel-IR
oracle (under TRITON_INTERPRET=1 here, on CUDA where one exists), PTX for sm_90a/sm_100a without
a GPU, no FMA contraction, and exact literals and identifiers."""

from __future__ import annotations

import re

import numpy as np
import pytest
from kernel_diff import fold_stack, stdlib_cases

from numgrade.backends.base import NUMPY_DTYPES
from numgrade.backends.triton_backend import TritonBackend, compile_ptx, literal
from numgrade.ir.dims import Dim
from numgrade.kernels.interp import KernelInterpreter
from numgrade.kernels.ir import (Assign, BufferDecl, Decl, Kernel, KernelProgram, KExpr, Let, Loop,
                                Reduce, ScalarParam, Store, acc_vars, const, load, select, unary,
                                var)

BACKEND = TritonBackend()


# ---- building programs ------------------------------------------------------------------------
def buf(name: str, n, storage: str, role: str) -> BufferDecl:
    fmt = storage if storage in ("f32", "f64") else "i32"
    return BufferDecl(name, fmt, (n if isinstance(n, Dim) else Dim.const(n),), storage, role)


def program(name: str, kernels: list[Kernel], buffers: list[BufferDecl]) -> KernelProgram:
    return KernelProgram(name, {b.name: b for b in buffers}, kernels,
                         [b.name for b in buffers if b.role == "in"],
                         [b.name for b in buffers if b.role == "out"], False, [])


def i64(n: int) -> KExpr:
    return const(n, "i64")


I = var("i", "i64")
J = var("j", "i64")
N = var("n", "i64")
M = var("m", "i64")


def sum_reduce(name, var_, extent, body, value, order, dtype="f64", init=0.0):
    a, b = acc_vars(dtype)
    return Reduce(name, var_, extent, body, value, a + b, const(init, dtype), order, "sum")


def max_reduce(name, var_, extent, value, dtype="f64"):
    """max with NaN propagation, as the lowering expresses it: a select."""
    a, b = acc_vars(dtype)
    comb = select(a.ne(a), a, select(b.ne(b), b, select(a.ge(b), a, b)))
    return Reduce(name, var_, extent, (), value, comb, const(-np.inf, dtype), "any", "max")


def run(p: KernelProgram, inputs: dict[str, np.ndarray], scalars=None, sizes=None):
    """Run ``p`` with the Triton backend and with the kernel-IR oracle; both results."""
    scalars = dict(scalars or {})
    sizes = sizes or {}
    bufs = {}
    for name, b in p.buffers.items():
        if name in inputs:
            bufs[name] = np.ascontiguousarray(inputs[name], dtype=NUMPY_DTYPES[b.storage])
        else:
            n = sizes.get(name, int(b.shape[0].evaluate({})) if b.shape[0].is_const() else 0)
            bufs[name] = np.zeros(n, NUMPY_DTYPES[b.storage])
    mine = {k: v.copy() for k, v in bufs.items()}
    BACKEND.build(p)(mine, scalars)
    oracle = {k: v.copy() for k, v in bufs.items()}
    KernelInterpreter().build(p)(oracle, scalars)
    return mine, oracle


def same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x.view(np.uint8),
                                                                       y.view(np.uint8))


def assert_outputs_equal(p, mine, oracle):
    for o in p.outputs:
        assert same_bits(mine[o], oracle[o]), (o, mine[o][:8], oracle[o][:8])


# ---- elementwise: f32 arithmetic without FMA, bit tricks, casts -------------------------------
def elementwise(n: int) -> KernelProgram:
    a, b, c = (load(x, I, "f32") for x in "abc")
    s = a * b + c
    bits = s.bitcast("u32")
    h = (bits >> const(3, "u32")) ^ (bits * const(0x9E3779B9, "u32"))  # u32 multiply wraps
    mulhi = ((h.cast("u64") * const(0xD2511F53, "u64")) >> const(32, "u64")).cast("u32")
    q = select(a.lt(b), a / b, unary("sqrt", unary("abs", c)))
    d = s.cast("f64") * const(0.1, "f64") + const(-0.0, "f64")
    t = (unary("trunc", d).cast("i64")
         + unary("rint", a.cast("f64") * const(2.5, "f64")).cast("i64")
         + a.gt(c).cast("i64") * const(1000, "i64"))
    sar = (load("w", I, "i32") >> const(5, "i32")).cast("i64") + (t << const(2, "i64"))
    body = (Loop("i", i64(n), (
        Let("s", s), Store("y", I, var("s", "f32")), Store("h", I, h), Store("mh", I, mulhi),
        Store("ng", I, -a), Store("q", I, q), Store("r8", I, (h & const(0xFF, "u32")).cast("u8")),
        Store("r16", I, (h >> const(16, "u32")).cast("u16")), Store("d", I, d), Store("t", I, t),
        Store("sar", I, sar), Store("fl", I, unary("floor", d) + unary("ceil", d)),
        Store("u2f", I, h.cast("f32") + load("w", I, "i32").cast("f32")),
    )),)
    names = ("a", "b", "c", "w", "y", "h", "mh", "ng", "q", "r8", "r16", "d", "t", "sar", "fl",
             "u2f")
    st = dict(a="f32", b="f32", c="f32", w="i32", y="f32", h="u32", mh="u32", ng="f32", q="f32",
              r8="u8", r16="u16", d="f64", t="i64", sar="i64", fl="f64", u2f="f32")
    bufs = [buf(x, n, st[x], "in" if x in "abcw" else "out") for x in names]
    return program("ew", [Kernel("ew", (), (), body, names, (), note="elementwise test")], bufs)


@pytest.mark.parametrize("n", [1, 3, 17, 1000])
def test_elementwise_bit_exact(n):
    rng = np.random.default_rng(n)
    a, b, c = (rng.standard_normal(n).astype(np.float32) * 3 for _ in range(3))
    a[0] = np.float32(-0.0)
    if n > 2:
        c[1], b[2] = np.float32(1e-40), np.float32(np.inf)  # a subnormal and an infinity
    w = rng.integers(-2**31, 2**31, n, dtype=np.int32)
    p = elementwise(n)
    mine, oracle = run(p, dict(a=a, b=b, c=c, w=w))
    assert_outputs_equal(p, mine, oracle)
    # independent numpy for a few of them
    with np.errstate(all="ignore"):
        s = a * b + c  # float32 products and sums, each rounded
        assert same_bits(mine["y"], s)
        assert same_bits(mine["ng"], -a)
        bits = s.view(np.uint32)
        h = (bits >> np.uint32(3)) ^ (bits * np.uint32(0x9E3779B9))
        assert same_bits(mine["h"], h)
        assert same_bits(mine["mh"], ((h.astype(np.uint64) * np.uint64(0xD2511F53))
                                      >> np.uint64(32)).astype(np.uint32))
        assert same_bits(mine["r8"], (h & 0xFF).astype(np.uint8))
        assert same_bits(mine["q"], np.where(a < b, a / b, np.sqrt(np.abs(c))).astype(np.float32))
        assert same_bits(mine["sar"], (w >> 5).astype(np.int64) + (mine["t"] << 2))


# ---- loops: serial accumulators, nested parallel loops, grids -----------------------------------
def rows_program() -> KernelProgram:
    """Grid over rows; a serial Horner loop per row; a parallel loop with a nested serial loop."""
    r = var("r", "i64")
    x = load("x", r * M + J, "f64")
    acc = var("acc", "f64")
    horner = (Decl("acc", const(0.0, "f64")),
              Loop("j", M, (Assign("acc", acc * const(0.5, "f64") + x),), kind="serial"),
              Store("h", r, acc))
    # per column j (vectorised), a serial loop over k <= 3 accumulating a product (lanes)
    k = var("k", "i64")
    prod = var("p", "f64")
    lanes = (Loop("j", M, (
        Decl("p", const(1.0, "f64")),
        Loop("k", i64(3), (Assign("p", prod * (x + k.cast("f64"))),), kind="serial"),
        Store("pr", r * M + J, prod),
    )),)
    k1 = Kernel("rows", (N,), ("r",), horner + lanes, ("x", "h", "pr"),
                (ScalarParam("n", "i64"), ScalarParam("m", "i64")), note="horner + products")
    nm = Dim.sym("n") * Dim.sym("m")
    return program("rows", [k1], [buf("x", nm, "f64", "in"), buf("h", Dim.sym("n"), "f64", "out"),
                                  buf("pr", nm, "f64", "out")])


@pytest.mark.parametrize("n,m", [(1, 1), (3, 17), (5, 40)])
def test_serial_loops_and_grid(n, m):
    rng = np.random.default_rng(n * m)
    x = rng.standard_normal(n * m)
    p = rows_program()
    mine, oracle = run(p, dict(x=x), dict(n=n, m=m), sizes=dict(h=n, pr=n * m))
    assert_outputs_equal(p, mine, oracle)
    xs = x.reshape(n, m)
    want = np.zeros(n)
    for j in range(m):  # Horner, left to right, each step rounded
        want = want * 0.5 + xs[:, j]
    assert same_bits(mine["h"], want)
    assert same_bits(mine["pr"], (((1.0 * xs) * (xs + 1.0)) * (xs + 2.0)).reshape(-1))


def nested_program(flat: bool) -> KernelProgram:
    """out[i, j] = a[i, j] * 2 + b[j] with nested parallel loops (flattenable or not)."""
    inner = Loop("j", M, (Store("o", I * M + J, load("a", I * M + J, "f32") * const(2.0, "f32")
                                + load("b", J, "f32")),))
    body = (inner,) if flat else (Let("base", I * M), inner,
                                  Store("rowfirst", I, load("a", var("base", "i64"), "f32")))
    k = Kernel("nest", (), (), (Loop("i", N, body),), ("a", "b", "o", "rowfirst"),
               (ScalarParam("n", "i64"), ScalarParam("m", "i64")))
    nm = Dim.sym("n") * Dim.sym("m")
    return program("nest", [k], [buf("a", nm, "f32", "in"), buf("b", Dim.sym("m"), "f32", "in"),
                                 buf("o", nm, "f32", "out"),
                                 buf("rowfirst", Dim.sym("n"), "f32", "out")])


@pytest.mark.parametrize("flat", [True, False])
@pytest.mark.parametrize("n,m", [(1, 3), (7, 33)])
def test_nested_parallel_loops(flat, n, m):
    rng = np.random.default_rng(7)
    a = rng.standard_normal(n * m).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    p = nested_program(flat)
    src = BACKEND.emit(p)
    assert ("flattened" in src) == flat
    mine, _ = run(p, dict(a=a, b=b), dict(n=n, m=m), sizes=dict(o=n * m, rowfirst=n))
    assert same_bits(mine["o"], (a.reshape(n, m) * np.float32(2) + b).reshape(-1))
    if not flat:
        assert same_bits(mine["rowfirst"], a.reshape(n, m)[:, 0])


def matmul_program(order: str, dtype: str = "f32") -> KernelProgram:
    """c[i, j] = sum_k a[i, k] * b[k, j]: grid over i, lanes over j, an exact per-lane Reduce."""
    kk = var("k", "i64")
    prod = load("a", I * M + kk, dtype) * load("b", kk * var("p", "i64") + J, dtype)
    red = sum_reduce("s", "k", M, (), prod, order, dtype)
    body = (Loop("j", var("p", "i64"), (red, Store("c", I * var("p", "i64") + J,
                                                    var("s", dtype)))),)
    k = Kernel("mm", (N,), ("i",), body, ("a", "b", "c"),
               tuple(ScalarParam(s, "i64") for s in "nmp"), note="matmul")
    n, m, pp = Dim.sym("n"), Dim.sym("m"), Dim.sym("p")
    return program("mm", [k], [buf("a", n * m, dtype, "in"), buf("b", m * pp, dtype, "in"),
                               buf("c", n * pp, dtype, "out")])


def seq_py(xs):
    acc = xs[0]
    for x in xs[1:]:
        acc = acc + x
    return acc


def pairwise_py(xs):
    """The binary-counter stack algorithm (kernel_diff.fold_stack) with plain addition."""
    return fold_stack(xs, lambda a, b: a + b, None)


@pytest.mark.parametrize("order", ["seq", "pairwise", "any"])
def test_matmul_exact_per_lane(order):
    n, m, pp = 3, 13, 5
    rng = np.random.default_rng(3)
    a = rng.standard_normal(n * m).astype(np.float32)
    b = rng.standard_normal(m * pp).astype(np.float32)
    p = matmul_program(order)
    mine, oracle = run(p, dict(a=a, b=b), dict(n=n, m=m, p=pp), sizes=dict(c=n * pp))
    A, B = a.reshape(n, m), b.reshape(m, pp)
    fold = pairwise_py if order == "pairwise" else seq_py
    want = np.array([[fold([A[i, k] * B[k, j] for k in range(m)]) for j in range(pp)]
                     for i in range(n)], dtype=np.float32)
    assert same_bits(mine["c"], want.reshape(-1))
    if order != "any":
        assert_outputs_equal(p, mine, oracle)


# ---- top-level reductions in every order ------------------------------------------------------
def reduce_program(order: str, extent: KExpr, dtype: str = "f64") -> KernelProgram:
    kk = var("k", "i64")
    x = load("x", kk, dtype)
    red = sum_reduce("s", "k", extent, (Let("sq", x * x),), var("sq", dtype) + x, order, dtype,
                     init=-0.0)
    mx = max_reduce("mx", "k", extent, x, dtype)
    body = (red, mx, Store("o", i64(0), var("s", dtype)), Store("o", i64(1), var("mx", dtype)))
    n = Dim.const(int(extent.attrs[0])) if extent.op == "const" else Dim.sym("n")
    scal = () if extent.op == "const" else (ScalarParam("n", "i64"),)
    k = Kernel("red", (), (), body, ("x", "o"), scal, note="sum and max")
    return program("red", [k], [buf("x", n, dtype, "in"), buf("o", 2, dtype, "out")])


@pytest.mark.parametrize("order", ["seq", "pairwise", "any"])
@pytest.mark.parametrize("n,symbolic", [(0, True), (1, False), (3, False), (17, True),
                                        (1000, False), (1500, True)])
def test_reductions_all_orders(order, n, symbolic):
    rng = np.random.default_rng(n)
    x = rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))
    extent = N if symbolic else i64(n)
    p = reduce_program(order, extent)
    mine, oracle = run(p, dict(x=x), dict(n=n) if symbolic else {})
    vals = list(x * x + x)
    if n == 0:
        assert same_bits(mine["o"], np.array([-0.0, -np.inf]))
        return
    if order != "any":
        fold = seq_py if order == "seq" else pairwise_py
        assert same_bits(mine["o"][:1], np.array([fold(vals)]))
        assert_outputs_equal(p, mine, oracle)
    else:
        assert abs(mine["o"][0] - oracle["o"][0]) <= 1e-12 * np.sum(np.abs(vals))
    assert mine["o"][1] == x.max()


def test_max_propagates_nan_and_f32_pairwise():
    x = np.arange(40, dtype=np.float32) - 20
    x[17] = np.nan
    p = reduce_program("pairwise", N, "f32")
    mine, oracle = run(p, dict(x=x), dict(n=40))
    assert np.isnan(mine["o"][1])
    assert same_bits(mine["o"][:1], oracle["o"][:1])


def column_sums_program() -> KernelProgram:
    """Sums over rows per column: lanes over columns, pairwise per lane (a [B, 64] stack)."""
    kk = var("k", "i64")
    red = sum_reduce("s", "k", N, (), load("x", kk * M + J, "f64"), "pairwise")
    k = Kernel("cols", (), (), (Loop("j", M, (red, Store("o", J, var("s", "f64")))),),
               ("x", "o"), (ScalarParam("n", "i64"), ScalarParam("m", "i64")))
    return program("cols", [k], [buf("x", Dim.sym("n") * Dim.sym("m"), "f64", "in"),
                                 buf("o", Dim.sym("m"), "f64", "out")])


def test_pairwise_per_lane_column_sums():
    n, m = 37, 5
    x = np.random.default_rng(9).standard_normal(n * m) * 1e3
    p = column_sums_program()
    mine, oracle = run(p, dict(x=x), dict(n=n, m=m), sizes=dict(o=m))
    xs = x.reshape(n, m)
    assert same_bits(mine["o"], np.array([pairwise_py(list(xs[:, j])) for j in range(m)]))
    assert_outputs_equal(p, mine, oracle)


# ---- several kernels through a temp buffer, empty grids, literals, math ------------------------
def two_kernel_program() -> KernelProgram:
    """k1 (grid n): t[i] = x[i] * 3 as f32; k2 (empty grid): o = max over t, and literals."""
    g = var("g", "i64")
    k1 = Kernel("scale", (N,), ("g",), (Store("t", g, (load("x", g, "f64") * const(3.0, "f64"))
                                              .cast("f32")),), ("x", "t"),
                (ScalarParam("n", "i64"),), note="scale and round to f32")
    lits = [const(np.inf, "f64"), const(-np.inf, "f64"), const(-0.0, "f64"),
            const(5e-324, "f64"), const(1.7976931348623157e308, "f64")]
    ints = [const(2**64 - 1, "u64"), const(-2**63, "i64"), const(0xFFFFFFFF, "u32"),
            const(255, "u8"), const(65535, "u16")]
    body = [max_reduce("mx", "k", N, load("t", var("k", "i64"), "f32"), "f32"),
            Store("o", i64(0), var("mx", "f32").cast("f64"))]
    body += [Store("o", i64(1 + i), v) for i, v in enumerate(lits)]
    body += [Store("o", i64(6 + i), v.bitcast("f64") if v.dtype in ("u64", "i64")
                   else v.cast("f64")) for i, v in enumerate(ints)]
    body += [Store("o", i64(11), unary("exp", load("x", i64(0), "f64")) + unary("tanh", load(
        "x", i64(0), "f64")) * unary("log2", unary("abs", load("x", i64(0), "f64"))))]
    nan_bits = const(0x7FF8000000000123, "i64").bitcast("f64")
    body += [Store("o", i64(12), select(nan_bits.ne(nan_bits), nan_bits, const(0.0, "f64")))]
    k2 = Kernel("fin", (), (), tuple(body), ("t", "x", "o"), (ScalarParam("n", "i64"),))
    return program("two", [k1, k2], [buf("x", Dim.sym("n"), "f64", "in"),
                                     buf("t", Dim.sym("n"), "f32", "temp"),
                                     buf("o", 13, "f64", "out")])


@pytest.mark.parametrize("n", [1, 19])
def test_two_kernels_temp_buffer_and_literals(n):
    x = np.random.default_rng(1).standard_normal(n) + 0.25
    p = two_kernel_program()
    mine, oracle = run(p, dict(x=x), dict(n=n), sizes=dict(t=n))
    assert_outputs_equal(p, mine, oracle)
    o = mine["o"]
    assert o[0] == np.float64(np.max((x * 3.0).astype(np.float32)))
    assert same_bits(o[1:6], np.array([np.inf, -np.inf, -0.0, 5e-324, 1.7976931348623157e308]))
    assert same_bits(o[6:8], np.array([2**64 - 1, 2**63], dtype=np.uint64).view(np.float64))
    assert list(o[8:11]) == [0xFFFFFFFF, 255, 65535]
    x0 = x[0]
    assert o[11] == np.exp(x0) + np.tanh(x0) * np.log2(abs(x0))
    assert o[12].view(np.int64) == 0x7FF8000000000123


def test_zero_sized_grid_launches_nothing():
    full = two_kernel_program()  # keep the max only: the math reads x[0]
    k1, k2 = full.kernels
    k2 = Kernel("fin", (), (), k2.body[:2], k2.buffers, k2.scalars)
    p = program("two", [k1, k2], list(full.buffers.values()))
    mine, oracle = run(p, dict(x=np.zeros(0)), dict(n=0), sizes=dict(t=0))
    assert mine["o"][0] == -np.inf and same_bits(mine["o"], oracle["o"])


# ---- the text, identifiers, literals ----------------------------------------------------------
def test_emit_is_readable_python_with_notes_and_launcher():
    src = BACKEND.emit(two_kernel_program())
    compile(src, "<triton>", "exec")
    # two kernels, one max combine for tl.reduce, and the header's helpers (_e2m1_code,
    # _e2m1_value, _add, _fmax, _fmin)
    assert src.count("@triton.jit") == 8
    assert "# kernel scale: scale and round to f32" in src
    assert "def launch_two(buffers, scalars):" in src
    assert "tl.reduce(" in src and "enable_fp_fusion=False" in src


def test_bad_identifiers_are_refused():
    bad = Kernel("k", (), (), (Store("o;import os", i64(0), const(1.0, "f64")),), ("o",), ())
    with pytest.raises(ValueError):
        BACKEND.emit(program("bad", [bad], [buf("o", 1, "f64", "out")]))
    with pytest.raises(ValueError):
        BACKEND.emit(program("bad name", [], []))


def test_literals_are_exact():
    assert literal(0.1, "f64") == "tl.full((), 0.1, tl.float64)"
    assert literal(-0.0, "f32") == "tl.full((), -2147483648, tl.int32).to(tl.float32, bitcast=True)"
    assert "9218868437227405312" in literal(float("inf"), "f64")
    assert literal(2**64 - 1, "u64") == "tl.full((), 18446744073709551615, tl.uint64)"


# ---- PTX without a GPU ------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["sm_90a", "sm_100a"])
def test_every_kernel_compiles_to_ptx_without_fma(arch):
    for p in (elementwise(17), matmul_program("seq"), reduce_program("pairwise", N, "f32"),
              two_kernel_program()):
        ptx = compile_ptx(p, arch)
        assert set(ptx) == {k.name for k in p.kernels}
        for name, text in ptx.items():
            assert ".entry" in text and f".target {arch}" in text
            if name != "fin":  # fin calls libdevice exp/tanh/log2, which use fma inside
                assert not re.search(r"\bfma\.", text), name
    ew = compile_ptx(elementwise(17), arch)["ew"]  # a*b + c stays a mul and an add
    assert "mul.rn.f32" in ew and "add.rn.f32" in ew and "div.rn.f32" in ew
    assert "sqrt.rn.f32" in ew


# ---- on a GPU ---------------------------------------------------------------------------------
def _cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
def test_gpu_matches_oracle():
    n = 1000
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    w = rng.integers(-2**31, 2**31, n, dtype=np.int32)
    p = elementwise(n)
    mine, oracle = run(p, dict(a=a, b=b, c=c, w=w))
    assert_outputs_equal(p, mine, oracle)
    for order in ("seq", "pairwise"):
        x = rng.standard_normal(1500)
        p = reduce_program(order, N)
        mine, oracle = run(p, dict(x=x), dict(n=1500))
        assert_outputs_equal(p, mine, oracle)


# ---- end to end: stdlib functions through fusion, lowering and this backend ---------------------
E2E_CPU = [("sums", "naive"), ("sums", "pairwise"), ("sums", "kahan_f32"), ("sums", "pairwise_f32"),
           ("dot", "matvec"), ("horner", "horner5"), ("stochastic_round", "sr_2d"),
           ("nvfp4", "dequantize"), ("rmsnorm", "rmsnorm"), ("rope", "rope_positions"),
           ("fp8", "quantize_block_1x128"), ("logsumexp", "logsumexp_all"),
           ("attention", "attention_weights"), ("linsolve", "solve2")]


def _e2e(prog: str, name: str, small: bool = False) -> None:
    import kernel_diff as KD
    got = KD.run_both(prog, name, BACKEND.build, small=small)
    if got is None:
        pytest.skip(f"{prog}.{name} is not lowerable")
    ref, mine = got
    assert all(KD.bit_equal(a, b) for a, b in zip(ref, mine)), (prog, name)


@pytest.mark.parametrize("prog,name", E2E_CPU)
def test_stdlib_bit_equal_to_reference(prog, name):
    """A selection at the common test sizes (several blocks and chunks per reduction)."""
    _e2e(prog, name)


@pytest.mark.parametrize("prog,name", stdlib_cases())
def test_every_stdlib_function_bit_equal_to_reference(prog, name):
    """Every stdlib function, at the least sizes it allows: the interpreter runs each program
    instance in Python, so the grid size is the time (the full sizes took 95 s here)."""
    _e2e(prog, name, small=True)


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA device")
def test_every_stdlib_function_on_gpu():
    import kernel_diff as KD
    for prog, name in KD.stdlib_cases():
        _e2e(prog, name)
