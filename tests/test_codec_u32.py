"""The 32-bit storage codecs of ``kernels/legalize.py`` against the float64 ones they replace.

``legalize.decode`` / ``legalize.encode`` turn storage codes of the narrow float formats into
their f32 carrier values and back with u32/f32 operations only. The float64 expansions they
replaced are kept below, verbatim, as the reference. Every code of every format is decoded by
both through the kernel-IR interpreter (and compared with ml_dtypes' values); every value of
every format (both zeros, the subnormals, inf and NaN of any payload and sign where the format
has them) is encoded by both, and the codes must be identical, NaN codes included.
"""

from __future__ import annotations

import numpy as np
import pytest

from numgrade.ir.dims import Dim
from numgrade.ir.formats import Format, get_format
from numgrade.kernels import legalize as L
from numgrade.kernels.interp import run_program
from numgrade.kernels.ir import (BufferDecl, Kernel, KernelProgram, KExpr, Loop, ScalarParam,
                                 Store, const, expr_nodes, load, select, unary, var, walk_exprs)

# garbage lanes of the selects (e.g. inf + magic) are computed and dropped
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

FORMATS = ["bf16", "f16", "e4m3", "e5m2", "e2m1", "e8m0"]
NP = {"u8": np.uint8, "u16": np.uint16, "f32": np.float32}
WIDE = ("f64", "i64", "u64")


# ---------------------------------------------------------------------------------------------
# the float64 codecs as they were (the reference)
def _f64(v: float) -> KExpr:
    return const(v, "f64")


def _u64(v: int) -> KExpr:
    return const(v, "u64")


def _pow2_f64(k: KExpr) -> KExpr:
    return ((k + 1023).cast("u64") << _u64(52)).bitcast("f64")


def _isnan(x: KExpr) -> KExpr:
    return x.ne(x)


def _fields(fmt: Format) -> tuple[int, int, int]:
    m = fmt.precision - 1
    e = fmt.bits - m - (1 if fmt.signed else 0)
    return e, m, 1 - fmt.emin


def old_decode(blk: L.Block, raw: KExpr, fmt: Format) -> KExpr:
    c = blk.let(raw.cast("i64"), "code")
    if fmt.name == "e8m0":
        v = _pow2_f64(c - 127)
        v = select(c.eq(const(255, "i64")), _f64(float("nan")), v)
        return blk.let(v.cast("f32"), "v")
    E, M, B = _fields(fmt)
    e = blk.let((c >> const(M, "i64")) & const((1 << E) - 1, "i64"), "ex")
    f = blk.let(c & const((1 << M) - 1, "i64"), "man")
    sub = f.cast("f64") * _f64(2.0 ** (1 - B - M))
    nrm = (f + (1 << M)).cast("f64") * _pow2_f64(e - (B + M))
    mag = blk.let(select(e.eq(const(0, "i64")), sub, nrm), "mag")
    top = (1 << E) - 1
    if fmt.has_inf:
        mag = blk.let(select(e.eq(const(top, "i64")),
                             select(f.eq(const(0, "i64")), _f64(float("inf")),
                                    _f64(float("nan"))), mag), "mag")
    elif fmt.has_nan:
        mag = blk.let(select(e.eq(const(top, "i64")) & f.eq(const((1 << M) - 1, "i64")),
                             _f64(float("nan")), mag), "mag")
    neg = ((c >> const(E + M, "i64")) & const(1, "i64")).eq(const(1, "i64"))
    return blk.let(select(neg, -mag, mag).cast("f32"), "v")


def old_encode(blk: L.Block, value: KExpr, fmt: Format) -> KExpr:
    st = L.storage_dtype(fmt)
    v = blk.let(value.cast("f64"), "x")
    bits = blk.let(v.bitcast("u64"), "bits")
    a = blk.let(unary("abs", v), "a")
    af = blk.let(select(a.le(_f64(fmt.max_finite)), a, _f64(0.0)), "af")
    eb = blk.let(((af.bitcast("u64") >> _u64(52)) & _u64(0x7FF)).cast("i64")
                 - const(1023, "i64"), "eb")
    if fmt.name == "e8m0":
        code = select(_isnan(v), const(255, "i64"), eb + 127)
        return blk.let(code.cast(st), "st")
    ebn = blk.let(select(eb.lt(const(fmt.emin, "i64")), const(fmt.emin, "i64"), eb), "ebn")
    E, M, B = _fields(fmt)
    sign = blk.let(select(bits.ge(_u64(0x8000000000000000)), const(1 << (E + M), "i64"),
                          const(0, "i64")), "sg")
    subf = (af * _f64(2.0 ** (M - fmt.emin))).cast("i64")
    nrmf = (af * _pow2_f64(const(M, "i64") - ebn)).cast("i64") - (1 << M)
    normal = ((ebn + B) << const(M, "i64")) | nrmf
    body = blk.let(select(eb.lt(const(fmt.emin, "i64")), subf, normal), "cd")
    top = (1 << E) - 1
    if fmt.has_inf:
        nan_code, inf_code = (top << M) | (1 << (M - 1)), top << M
    elif fmt.has_nan:
        nan_code, inf_code = (top << M) | ((1 << M) - 1), 0
    else:
        nan_code, inf_code = 0, 0
    body = select(a.eq(_f64(0.0)), const(0, "i64"), body)
    if fmt.has_inf:
        body = select(a.eq(_f64(float("inf"))), const(inf_code, "i64"), body)
    if fmt.has_nan:
        body = select(_isnan(v), const(nan_code, "i64"), body)
    return blk.let((sign | body).cast(st), "st")


# ---------------------------------------------------------------------------------------------
def _run(build, x: np.ndarray, in_dt: str, out_dt: str) -> np.ndarray:
    """``build(blk, loaded element)`` mapped over `x` by one kernel in the interpreter."""
    i = var("i", "i64")
    blk = L.Block()
    r = build(blk, load("x", i, in_dt))
    assert r.dtype == out_dt, r.dtype
    body = (Loop("i", var("n", "i64"), tuple(blk.stmts) + (Store("y", i, r),)),)
    bufs = {"x": BufferDecl("x", "f32", (Dim.sym("n"),), in_dt, "in"),
            "y": BufferDecl("y", "f32", (Dim.sym("n"),), out_dt, "out")}
    k = Kernel("codec", (), (), body, ("x", "y"), (ScalarParam("n", "i64"),))
    prog = KernelProgram("codec", bufs, [k], ["x"], ["y"], False, [])
    data = {"x": x, "y": np.zeros(x.size, NP[out_dt])}
    run_program(prog, data, {"n": x.size})
    return data["y"]


def _codes(fmt: Format) -> np.ndarray:
    st = L.storage_dtype(fmt)
    n = 16 if fmt.bits == 4 else 1 << fmt.bits
    return np.arange(n).astype(NP[st])


def _special_f32(fmt: Format) -> np.ndarray:
    """Both zeros, and inf and NaNs of several payloads and both signs, where the format has
    them (e8m0 has no zero: nothing rounds to one, so encode never sees it)."""
    bits = [0x80000000, 0] if fmt.has_zero else []
    if fmt.has_inf:
        bits += [0x7F800000, 0xFF800000]
    if fmt.has_nan:
        bits += [0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF,
                 0x7FBFFFFF, 0x7FC00001, 0xFFD23456]
    return np.array(bits, dtype=np.uint32).view(np.float32)


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_decode_every_code(fmt_name):
    fmt = get_format(fmt_name)
    st = L.storage_dtype(fmt)
    codes = _codes(fmt)
    got = _run(lambda b, r: L.decode(b, r, fmt), codes, st, "f32")
    want = _run(lambda b, r: old_decode(b, r, fmt), codes, st, "f32")
    # the same f32 bits, NaN bits (the quiet NaN with the code's sign) included
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, [(hex(int(codes[j])), hex(int(got.view(np.uint32)[j])),
                            hex(int(want.view(np.uint32)[j]))) for j in bad[:5]]
    # and the values ml_dtypes gives (NaN for NaN)
    ml = codes.astype(np.uint8 if st == "u8" else np.uint16).view(fmt.np_dtype).astype(np.float32)
    same = (got.view(np.uint32) == ml.view(np.uint32)) | (np.isnan(got) & np.isnan(ml))
    assert same.all()


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_encode_every_value(fmt_name):
    fmt = get_format(fmt_name)
    st = L.storage_dtype(fmt)
    codes = _codes(fmt)
    vals = _run(lambda b, r: old_decode(b, r, fmt), codes, st, "f32")
    xs = np.concatenate([vals, _special_f32(fmt)])
    got = _run(lambda b, r: L.encode(b, r, fmt), xs, "f32", st)
    want = _run(lambda b, r: old_encode(b, r, fmt), xs, "f32", st)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, [(hex(int(xs.view(np.uint32)[j])), int(got[j]), int(want[j]))
                           for j in bad[:5]]
    # every code that is not NaN comes back (e2m1 in its 4 bits)
    back = got[:codes.size]
    assert ((back == codes) | np.isnan(vals)).all()
    # f64 carriers that are casts of f32 values take the same path with the same codes
    got64 = _run(lambda b, r: L.encode(b, r.cast("f64"), fmt), xs, "f32", st)
    assert np.array_equal(got64, got)


def _wide(stmts, out: KExpr) -> set[str]:
    """The 64-bit nodes among the statements' and `out`'s expressions."""
    return {f"{e.op}:{e.dtype}" for e in expr_nodes(list(walk_exprs(stmts)) + [out])
            if e.dtype in WIDE}


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_no_64_bit_operations(fmt_name):
    fmt = get_format(fmt_name)
    st = L.storage_dtype(fmt)
    blk = L.Block()
    v = L.decode(blk, var("c", st), fmt)
    assert v.dtype == "f32"
    assert not _wide(blk.stmts, v), _wide(blk.stmts, v)
    x = var("x", "f32")
    for value in (x, x.cast("f64")):  # the f64 one: cuda_convert's probe of a carrier
        blk = L.Block()
        c = L.encode(blk, value, fmt)
        assert c.dtype == st
        assert not _wide(blk.stmts, c), _wide(blk.stmts, c)
        assert L.inline_lets(blk.stmts, c) == _closed(lambda b: L.encode(b, x, fmt))


def _closed(build) -> KExpr:
    blk = L.Block(prefix="_c")
    return L.inline_lets(blk.stmts, build(blk))


@pytest.mark.parametrize("fmt_name", FORMATS)
def test_other_carriers_keep_the_float64_path(fmt_name):
    """An f64 value that is not a cast of an f32 encodes as before, node for node."""
    fmt = get_format(fmt_name)
    y = var("y", "f64")
    assert _closed(lambda b: L.encode(b, y, fmt)) == _closed(lambda b: old_encode(b, y, fmt))
    raw = var("c", "i32")
    assert _closed(lambda b: L.decode(b, raw, fmt)) == _closed(lambda b: old_decode(b, raw, fmt))
