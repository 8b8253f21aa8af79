"""The quantiser stdlib programs against independent implementations, bit for bit.

Programs: stdlib nvfp4, four_over_six, mxfp4, fp8, hadamard, stochastic_round.

Why: these programs are the project's statement of the NVFP4 / Four Over Six / MXFP4 / FP8 /
RHT recipes (../shared/ANCHORS.md section 4).  The reference backend running them must give
exactly the values of tests/refimpl/quant_ref.py, a separately written numpy implementation that
does every step as one IEEE float32 operation in the recipe's order.  Equality is checked on the
float64 bit patterns, so signed zeros count.  Where the two implementations could legitimately
round differently the test states the exactness argument that makes them equal:

* Four Over Six: the programs accumulate the block errors in f32, strictly left to right; they
  are compared with ``fos_quantize(..., err_dtype=np.float32)``, which does the same.
* MXFP4 ceil: the program forms amax / 6 in f64 (see mxfp4.grd); a test shows why f32 is wrong.
* RHT: the program accumulates in f64 with the +-1/4 entries folded into the matrix; every
  partial sum is exactly 1/4 of the reference's, so the f64 results are identical and the f32
  result is the reference's f64 result rounded once.
* Stochastic rounding: the expected results are recomputed here from the neighbours of each
  value (enumerated from ml_dtypes) and Philox4x32-10 words from a pure-Python Philox written in
  this file and checked against the Random123 known-answer vectors; only ``stream_key`` (the
  documented splitmix64 seed derivation) is taken from numgrade.

The anchor numbers are computed through the .grd programs on the anchors' 4096 x 4096 matrix,
once per module.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import numpy.typing as npt
import pytest
import torch

import numgrade as ng
from numgrade.ir.formats import philox_uint32, stream_key
from refimpl import quant_ref as qr

F32 = np.float32
FLT_MAX = F32(np.finfo(np.float32).max)
MASK32 = 0xFFFFFFFF


# --------------------------------------------------------------------------- helpers


def bits(a: object) -> npt.NDArray[np.int64]:
    """float64 bit patterns of any numpy / ml_dtypes / torch value (exact embedding)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().to(torch.float64).numpy()
    return np.ascontiguousarray(np.asarray(a).astype(np.float64)).view(np.int64)


def assert_same(got: object, want: object) -> None:
    g, w = bits(got), bits(want)
    assert g.shape == w.shape, (g.shape, w.shape)
    bad = np.flatnonzero(g.reshape(-1) != w.reshape(-1))
    if bad.size:
        gv = g.reshape(-1)[bad[:5]].view(np.float64)
        wv = w.reshape(-1)[bad[:5]].view(np.float64)
        pytest.fail(f"{bad.size} of {g.size} values differ, first at flat {bad[:5]}: "
                    f"got {gv}, want {wv}")


@pytest.fixture(scope="module")
def nvfp4() -> ng.Module:
    return ng.load_stdlib("nvfp4")


@pytest.fixture(scope="module")
def fos() -> ng.Module:
    return ng.load_stdlib("four_over_six")


@pytest.fixture(scope="module")
def mxfp4() -> ng.Module:
    return ng.load_stdlib("mxfp4")


@pytest.fixture(scope="module")
def fp8() -> ng.Module:
    return ng.load_stdlib("fp8")


@pytest.fixture(scope="module")
def had() -> ng.Module:
    return ng.load_stdlib("hadamard")


@pytest.fixture(scope="module")
def srm() -> ng.Module:
    return ng.load_stdlib("stochastic_round")


# --------------------------------------------------------------------------- test data

KINDS = ["normal", "heavy", "zero_blocks", "tiny", "huge", "mixed_scales", "all_zero"]
SHAPES = [(16, 256), (48, 384), (1, 128)]


def make(kind: str, shape: tuple[int, int], seed: int = 0) -> npt.NDArray[np.float32]:
    """Inputs that exercise every branch of the recipes (all blocks aligned to 128 columns)."""
    rng = np.random.default_rng([seed, KINDS.index(kind), *shape])
    m, n = shape
    g = rng.standard_normal(shape)
    if kind == "normal":
        x = g
    elif kind == "heavy":  # Student t with 1.5 degrees of freedom: outliers dominate blocks
        x = rng.standard_t(1.5, size=shape)
    elif kind == "zero_blocks":
        x = g.copy()
        for r in range(m):
            c = 16 * int(rng.integers(0, n // 16))
            x[r, c:c + 16] = 0.0                         # a zero 1x16 block
            c = 32 * int(rng.integers(0, n // 32))
            x[r, c:c + 32] = -0.0                        # a negative-zero 1x32 block
            c = 16 * int(rng.integers(0, n // 16))
            x[r, c:c + 16] *= 1e-9                       # a block whose e4m3 scale underflows
        if m >= 16:
            x[:16, :16] = 0.0                            # a zero 16x16 tile
        x[0, -128:] = 0.0                                # a zero 1x128 block
    elif kind == "tiny":  # f32 subnormals and the smallest normals
        x = g * 1e-39
        x[:, ::7] = rng.choice([1e-45, -1e-45, 2.0**-126, -(2.0**-149) * 3], size=(m, len(x[0, ::7])))
    elif kind == "huge":
        x = g * 1e37
        x[0, 0] = float(FLT_MAX)
        x[-1, -1] = -float(FLT_MAX)
    elif kind == "mixed_scales":  # rows and blocks at wildly different magnitudes
        x = g * 10.0 ** rng.integers(-30, 30, size=(m, n // 16)).repeat(16, axis=1)
    elif kind == "all_zero":
        x = np.zeros(shape)
        x[:, ::3] = -0.0
    else:
        raise ValueError(kind)
    return x.astype(np.float32)


CASES = [(k, s) for k in KINDS for s in SHAPES]
CASES_2D = [(k, s) for k, s in CASES if s[0] % 16 == 0]
IDS = [f"{k}-{s[0]}x{s[1]}" for k, s in CASES]
IDS_2D = [f"{k}-{s[0]}x{s[1]}" for k, s in CASES_2D]


# --------------------------------------------------------------------------- NVFP4


@pytest.mark.parametrize("kind,shape", CASES, ids=IDS)
def test_nvfp4_bit_exact(nvfp4, kind, shape):
    x = make(kind, shape)
    q, s, s_dec = nvfp4.quantize(x)
    with np.errstate(all="ignore"):
        rq, rs, rsd = qr.nvfp4_quantize(x)
    assert q.dtype == ml_dtypes.float4_e2m1fn and s.dtype == ml_dtypes.float8_e4m3fn
    assert isinstance(s_dec, np.float32) and q.shape == shape and s.shape == (shape[0], shape[1] // 16)
    assert_same(q, rq)
    assert_same(s, rs)
    assert_same(s_dec, rsd)
    with np.errstate(all="ignore"):
        want = qr.nvfp4_dequantize(rq, rs, rsd)
    d = nvfp4.dequantize(q, s, s_dec)
    assert d.dtype == np.float32
    assert_same(d, want)


@pytest.mark.parametrize("kind,shape", CASES_2D, ids=IDS_2D)
def test_nvfp4_2d_bit_exact(nvfp4, kind, shape):
    x = make(kind, shape)
    q, s, s_dec = nvfp4.quantize_2d(x)
    with np.errstate(all="ignore"):
        rq, rs, rsd = qr.nvfp4_quantize_2d(x)
        want = qr.nvfp4_dequantize_2d(rq, rs, rsd)
    assert s.shape == (shape[0] // 16, shape[1] // 16)
    assert_same(q, rq)
    assert_same(s, rs)
    assert_same(s_dec, rsd)
    assert_same(nvfp4.dequantize_2d(q, s, s_dec), want)


def test_nvfp4_zero_block_rules(nvfp4):
    """Zero blocks keep signed-zero codes; a block whose scale underflows saturates to +-6."""
    x = make("normal", (2, 64))
    x[0, :16] = -0.0
    x[1, 16:32] = np.float32(1e-12) * np.sign(x[1, 16:32])
    q, s, s_dec = nvfp4.quantize(x)
    qf = q.astype(np.float64)
    assert s[0, 0] == 0 and np.all(np.signbit(qf[0, :16])) and np.all(qf[0, :16] == 0)
    assert s[1, 1] == 0 and np.all(np.abs(qf[1, 16:32]) == 6.0)
    assert np.all(nvfp4.dequantize(q, s, s_dec)[1, 16:32] == 0)
    # an all-zero tensor: S_enc = FLT_MAX, so S_dec = 1 / FLT_MAX (an f32 subnormal)
    q, s, s_dec = nvfp4.quantize(np.zeros((1, 16), np.float32))
    assert s_dec == F32(1) / FLT_MAX and not np.any(q.astype(np.float64))


# --------------------------------------------------------------------------- Four Over Six

FOS_RULES = {"mse": "quantize", "mae": "quantize_mae", "maxabs": "quantize_maxabs"}


@pytest.mark.parametrize("rule", list(FOS_RULES))
@pytest.mark.parametrize("kind,shape", CASES, ids=IDS)
def test_four_over_six_bit_exact(fos, rule, kind, shape):
    x = make(kind, shape)
    q, s, s_dec, use4 = fos[FOS_RULES[rule]](x)
    with np.errstate(all="ignore"):
        rq, rs, rsd, ru = qr.fos_quantize(x, rule=rule, err_dtype=np.float32)
        want = qr.fos_dequantize(rq, rs, rsd)
    assert use4.dtype == np.bool_ and use4.shape == (shape[0], shape[1] // 16)
    assert np.array_equal(use4, ru)
    assert_same(q, rq)
    assert_same(s, rs)
    assert_same(s_dec, rsd)
    assert_same(fos.dequantize(q, s, s_dec), want)


def test_four_over_six_scales_stay_in_range(fos):
    """With 6 * 256 the largest scales are 256 ("6") and 384 ("4"): no e4m3 saturation."""
    x = make("heavy", (16, 256))
    _, s, _, use4 = fos.quantize(x)
    sf = s.astype(np.float64)
    assert sf.max() <= 384 and sf[~use4].max() <= 256


# --------------------------------------------------------------------------- MXFP4


@pytest.mark.parametrize("variant", ["floor", "ceil"])
@pytest.mark.parametrize("kind,shape", CASES, ids=IDS)
def test_mxfp4_bit_exact(mxfp4, variant, kind, shape):
    x = make(kind, shape)
    fn = mxfp4.quantize if variant == "floor" else mxfp4.quantize_ceil
    q, scale = fn(x)
    with np.errstate(all="ignore"):
        rq, rs = qr.mxfp4_quantize(x, variant=variant)
        want = qr.mxfp4_dequantize(rq, rs)
    assert scale.dtype == ml_dtypes.float8_e8m0fnu and scale.shape == (shape[0], shape[1] // 32)
    assert_same(q, rq)
    assert_same(scale, rs)
    assert np.array_equal(scale.view(np.uint8), qr.mxfp4_scale_bits(rs))  # the E8M0 bytes
    with np.errstate(all="ignore"):
        d = mxfp4.dequantize(q, scale)
    assert_same(d, want)


def _edge_amaxes() -> npt.NDArray[np.float32]:
    """Block maxima next to every boundary of the two scale rules, normal and subnormal."""
    out = []
    for k in (-149, -140, -130, -128, -127, -126, -125, -124, -100, -3, 0, 1, 2, 3, 50, 125, 126):
        for base in (2.0**k, 1.5 * 2.0**k, 0.75 * 2.0**k, 3 * 2.0**k):  # 3 * 2^k = 6 * 2^(k-1)
            v = np.float32(base)
            if not np.isfinite(v) or v == 0:
                continue
            out += [v, np.nextafter(v, F32(0)), np.nextafter(v, F32(np.inf))]
    out += [FLT_MAX, np.nextafter(FLT_MAX, F32(0)), F32(2.0**-149)]
    a = np.array(out, dtype=np.float32)
    return np.unique(a[np.isfinite(a) & (a > 0)])


@pytest.mark.parametrize("variant", ["floor", "ceil"])
def test_mxfp4_scale_rule_edges(mxfp4, variant):
    """Each edge value is the maximum of its own 32-block (with smaller companions)."""
    a = _edge_amaxes()
    x = np.zeros((a.size, 64), np.float32)
    x[:, 0] = a
    x[:, 5] = -a * F32(0.3)
    x[:, 32] = -a                                       # negative maximum in the second block
    fn = mxfp4.quantize if variant == "floor" else mxfp4.quantize_ceil
    q, scale = fn(x)
    with np.errstate(all="ignore"):
        rq, rs = qr.mxfp4_quantize(x, variant=variant)
    assert_same(scale, rs)
    assert_same(q, rq)


def test_mxfp4_ceil_needs_the_f64_quotient():
    """Why mxfp4.grd divides by 6 in f64: the f32 quotient is a subnormal that rounds down."""
    m = ng.compile_source("""
        fn f32_quotient(a: f32[N]) -> e8m0[N] { return round(a / 6.0, e8m0, mode=ru) }
        fn f64_quotient(a: f32[N]) -> e8m0[N] { return round(a as f64 / 6.0, e8m0, mode=ru) }
    """)
    a = np.array([np.nextafter(np.float32(6 * 2.0**-127), F32(1))], np.float32)
    exact = 2.0 ** qr._ceil_log2_over6(a)                # least 2^k with 6 * 2^k >= a: 2^-126
    assert exact[0] == 2.0**-126
    assert m.f64_quotient(a).astype(np.float64)[0] == exact[0]
    assert m.f32_quotient(a).astype(np.float64)[0] == 2.0**-127


def test_mxfp4_zero_block_scale(mxfp4):
    """All-zero blocks (e8m0 has no zero): scale 2^-127 (byte 0) and +-0 codes, as the refimpl."""
    x = np.zeros((1, 64), np.float32)
    x[0, 32:] = -0.0
    for fn in (mxfp4.quantize, mxfp4.quantize_ceil):
        q, scale = fn(x)
        assert np.array_equal(scale.view(np.uint8), [[0, 0]])
        assert_same(q, x)


# --------------------------------------------------------------------------- FP8


@pytest.mark.parametrize("kind,shape", CASES, ids=IDS)
def test_fp8_per_tensor_bit_exact(fp8, kind, shape):
    x = make(kind, shape)
    q, inv = fp8.quantize_per_tensor(x)
    with np.errstate(all="ignore"):
        rq, rinv = qr.fp8_per_tensor(x)
        want = qr.fp8_dequantize(rq, rinv)
    assert q.dtype == ml_dtypes.float8_e4m3fn and isinstance(inv, np.float32)
    assert_same(q, rq)
    assert_same(inv, rinv)
    assert_same(fp8.dequantize_per_tensor(q, inv), want)


@pytest.mark.parametrize("kind,shape", CASES, ids=IDS)
def test_fp8_block_1x128_bit_exact(fp8, kind, shape):
    x = make(kind, shape)
    q, inv = fp8.quantize_block_1x128(x)
    with np.errstate(all="ignore"):
        rq, rinv = qr.fp8_block_1x128(x)
        want = qr.fp8_dequantize(rq, rinv)
    assert inv.shape == (shape[0], shape[1] // 128)
    assert_same(q, rq)
    assert_same(inv, rinv)
    assert_same(fp8.dequantize_block_1x128(q, inv), want)


def test_fp8_block_requires_multiple_of_128(fp8):
    with pytest.raises(ng.GradeError, match="N % 128 == 0"):
        fp8.quantize_block_1x128(np.ones((2, 64), np.float32))


# --------------------------------------------------------------------------- RHT


@pytest.mark.parametrize("kind,shape", CASES, ids=IDS)
def test_rht_bit_exact(had, nvfp4, kind, shape):
    x = make(kind, shape)
    with np.errstate(all="ignore"):
        ref = qr.rht16(x)
        y = had.rht(x)
        assert y.dtype == np.float32
        assert_same(y, ref.astype(np.float32))           # f64 sum rounded once
        assert_same(had.rht64(x), ref)                   # identical f64 values
        assert_same(nvfp4.rht(x), y)                     # nvfp4.grd's copy of the transform
        assert_same(had.inverse_rht(y), qr.rht16_inverse(y).astype(np.float32))
        assert_same(had.inverse_rht64(ref), qr.rht16_inverse(ref))


def test_rht_matrix_and_round_trip(had):
    """rht of the identity is the matrix D H / 4; it is orthonormal and inverts exactly."""
    eye = np.eye(16, dtype=np.float32)
    r = had.rht(eye).astype(np.float64)
    assert np.array_equal(r, qr.rht_matrix())
    assert np.array_equal(r @ r.T, np.eye(16))
    x = make("normal", (48, 384))
    assert_same(had.inverse_rht64(had.rht64(x)), x.astype(np.float64))  # f64 sums exact here
    back = had.inverse_rht(had.rht(x))
    assert np.max(np.abs(back - x)) <= 4 * np.finfo(np.float32).eps * np.max(np.abs(x))


# --------------------------------------------------------------------------- Philox, SR oracle


def philox4x32_10(ctr: tuple[int, int, int, int], key: tuple[int, int]) -> list[int]:
    """Philox4x32-10 (Salmon et al. 2011), plain Python integers."""
    c, k = list(ctr), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & MASK32, (k[1] + 0xBB67AE85) & MASK32]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & MASK32, (p0 >> 32) ^ c[3] ^ k[1], p0 & MASK32]
    return c


def words(key: int, n: int) -> npt.NDArray[np.float64]:
    """Word 0 at counters (i, 0, 0, 0), i < n (i < 2^32 here), for 64-bit key (lo, hi)."""
    kk = (key & MASK32, key >> 32)
    return np.array([philox4x32_10((i, 0, 0, 0), kk)[0] for i in range(n)], dtype=np.float64)


def test_philox_known_answers_and_numgrade_stream():
    """Random123's known-answer vectors; then numgrade's stream equals this implementation."""
    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert philox4x32_10((MASK32,) * 4, (MASK32,) * 2) == [
        0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert philox4x32_10((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
                         (0xA4093822, 0x299F31D0)) == [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]
    for seed in (0, 1, 12345):
        key = stream_key(seed, 0)
        assert np.array_equal(philox_uint32(key, np.arange(300)).astype(np.float64), words(key, 300))


def grid(fmt: str) -> npt.NDArray[np.float64]:
    """Every finite value of a format, sorted, from its bit patterns (ml_dtypes)."""
    if fmt == "bf16":
        v = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    else:
        dt = {"e2m1": ml_dtypes.float4_e2m1fn, "e4m3": ml_dtypes.float8_e4m3fn}[fmt]
        v = np.arange(16 if fmt == "e2m1" else 256, dtype=np.uint8).view(dt)
    with np.errstate(invalid="ignore"):  # NaN bit patterns
        v = v.astype(np.float64)
    return np.unique(v[np.isfinite(v)])


def neighbours(x: npt.ArrayLike, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    """(largest value <= x, smallest value >= x) of fmt, x clamped into its finite range."""
    g = grid(fmt)
    x = np.clip(np.asarray(x, dtype=np.float64), g[0], g[-1])
    hi = g[np.searchsorted(g, x, side="left")]
    lo = g[np.searchsorted(g, x, side="right") - 1]
    return lo, hi


def expected_sr(x: npt.ArrayLike, fmt: str, key: int) -> npt.NDArray[np.float64]:
    """SR by the documented rule: up iff frac * 2^32 > u_i, u_i the Philox word of flat index i."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = neighbours(x, fmt)
    u = words(key, x.size).reshape(x.shape)
    gap = np.where(hi > lo, hi - lo, 1.0)
    frac = (np.clip(x, lo, hi) - lo) / gap               # exact: power-of-two gap
    r = np.where(frac * 2.0**32 > u, hi, lo)
    return np.copysign(r, x)                             # a zero result keeps x's sign


# --------------------------------------------------------------------------- stochastic rounding

SR_CASES = [("sr", "e2m1", 6.0), ("sr_e4m3", "e4m3", 448.0), ("sr_bf16", "bf16", 1e30)]


@pytest.mark.parametrize("fn,fmt,bound", SR_CASES)
def test_sr_matches_philox_stream(srm, fn, fmt, bound):
    rng = np.random.default_rng(7)
    x = (rng.uniform(-1, 1, 500) * bound * rng.choice([1, 1e-2, 1e-5], 500)).astype(np.float32)
    x[:4] = [0.0, -0.0, -1e-30, 1e-30]
    x[4:8] = [bound * 1.5, -bound * 1.5, bound, -bound]  # saturation and the max itself
    for seed in (0, 3, 2**40 + 5):
        got = srm[fn](x, seed=seed)
        assert_same(got, expected_sr(x, fmt, stream_key(seed, 0)))
    assert_same(srm[fn](x), srm[fn](x, seed=0))          # the default seed is 0


@pytest.mark.parametrize("fn,fmt,bound", SR_CASES)
def test_sr_2d_uses_flat_row_major_index(srm, fn, fmt, bound):
    x = (np.random.default_rng(8).uniform(-1, 1, (12, 40)) * bound * 0.9).astype(np.float32)
    got = srm[fn + "_2d"](x, seed=11)
    assert_same(got, expected_sr(x, fmt, stream_key(11, 0)))
    assert_same(got.reshape(-1), srm[fn](x.reshape(-1), seed=11))


@pytest.mark.parametrize("fn,fmt,bound", SR_CASES)
def test_sr_properties(srm, fn, fmt, bound):
    """Deterministic per seed, seeds differ, results are neighbours, grid values never move."""
    x = (np.random.default_rng(9).uniform(-1, 1, 400) * bound).astype(np.float32)
    a, b, c = srm[fn](x, seed=1), srm[fn](x, seed=1), srm[fn](x, seed=2)
    assert_same(a, b)
    assert not np.array_equal(bits(a), bits(c))
    lo, hi = neighbours(x, fmt)
    av = a.astype(np.float64)
    assert np.all((av == lo) | (av == hi))
    g = grid(fmt)
    g = g[np.abs(g) <= float(np.finfo(np.float32).max)].astype(np.float32)
    for seed in (0, 1, 2):
        assert_same(srm[fn](g, seed=seed), g)


@pytest.mark.parametrize("fn,fmt,bound", SR_CASES)
def test_sr_unbiased(srm, fn, fmt, bound):
    """Mean over 8192 independent draws (rows use distinct counters) is x within 5 sigma."""
    x = (np.random.default_rng(10).uniform(-1, 1, 64) * bound * 0.99).astype(np.float32)
    rows = 8192
    got = srm[fn + "_2d"](np.broadcast_to(x, (rows, 64)).copy(), seed=4).astype(np.float64)
    lo, hi = neighbours(x, fmt)
    p = np.where(hi > lo, (x - lo) / np.where(hi > lo, hi - lo, 1), 0.0)
    sigma = (hi - lo) * np.sqrt(p * (1 - p) / rows)
    err = np.abs(got.mean(axis=0) - x.astype(np.float64))
    assert np.all(err <= 5 * sigma + 1e-12 * np.abs(x)), err / np.maximum(sigma, 1e-300)
    assert np.any(sigma > 0)


def test_sr_scaled(srm):
    x = make("normal", (4, 32))
    scale = F32(2.75)
    got = srm.sr_scaled(x, scale, seed=5)
    assert_same(got, expected_sr(x * scale, "e2m1", stream_key(5, 0)))


# --------------------------------------------------------------------------- NVFP4 + RHT + SR


def _expected_nvfp4_sr(y: npt.NDArray[np.float32], key: int):
    """NVFP4 with SR elements: refimpl scales, f32 x * enc_b, then the SR oracle."""
    with np.errstate(all="ignore"):
        _, s, s_dec = qr.nvfp4_quantize(y)
        enc = np.minimum(F32(1) / (s * s_dec), FLT_MAX)
        v = (y.reshape(y.shape[0], -1, 16) * enc[..., None]).reshape(y.shape)
    return expected_sr(v, "e2m1", key), s, s_dec


@pytest.mark.parametrize("kind", ["normal", "heavy", "zero_blocks"])
def test_nvfp4_quantize_sr(nvfp4, kind):
    x = make(kind, (8, 64))
    q, s, s_dec = nvfp4.quantize_sr(x, seed=21)
    want_q, want_s, want_sd = _expected_nvfp4_sr(x, stream_key(21, 0))
    assert_same(q, want_q)
    assert_same(s, want_s)
    assert_same(s_dec, want_sd)


@pytest.mark.parametrize("kind", ["normal", "heavy", "zero_blocks"])
def test_nvfp4_quantize_rht_sr(nvfp4, kind):
    """RHT (f64 sums, one f32 rounding) then NVFP4 with SR; the call is the only random
    consumer, so the rounding uses stream_key(stream_key(seed, 0), 0)."""
    x = make(kind, (8, 64))
    q, s, s_dec = nvfp4.quantize_rht_sr(x, seed=22)
    y = qr.rht16(x).astype(np.float32)
    want_q, want_s, want_sd = _expected_nvfp4_sr(y, stream_key(stream_key(22, 0), 0))
    assert_same(q, want_q)
    assert_same(s, want_s)
    assert_same(s_dec, want_sd)


def test_nvfp4_rht_sr_is_unbiased(nvfp4, had):
    """Averaged over independent rows, dequantised RHT+SR codes estimate rht(x) wherever the
    scaled value is within e2m1's range (the recipe saturates above 6, which is biased), and
    the inverse RHT of the mean estimates x.  Rows are identical, so the scales are shared."""
    x = make("normal", (1, 64))
    rows = 4096
    q, s, s_dec = nvfp4.quantize_rht_sr(np.broadcast_to(x, (rows, 64)).copy(), seed=3)
    d = nvfp4.dequantize(q, s, s_dec).astype(np.float64)
    y = had.rht(x)
    _, ws, wsd = _expected_nvfp4_sr(y, 0)
    assert_same(s[:1], ws)
    with np.errstate(all="ignore"):
        enc = np.minimum(F32(1) / (ws * wsd), FLT_MAX)
    v = (y.reshape(-1, 16) * enc.reshape(-1, 1)).reshape(-1)  # the scaled values, f32
    inside = np.abs(v) <= 6
    assert inside.mean() > 0.8
    step = np.repeat(ws.astype(np.float64)[0], 16) * float(wsd)  # value of one code unit
    sigma = 2.0 * step * np.sqrt(0.25 / rows)            # e2m1 gaps are at most 2 code units
    err = np.abs(d.mean(axis=0) - y[0].astype(np.float64))
    assert np.all(err[inside] <= 5 * sigma[inside])
    six = (F32(6) * np.repeat(ws[0], 16)) * wsd           # saturated: every draw is +-6 codes
    assert np.array_equal(d.mean(axis=0)[~inside], (np.sign(v) * six)[~inside])


# --------------------------------------------------------------------------- dtypes, torch


def test_numpy_low_precision_inputs(nvfp4, mxfp4):
    """bf16 / f16 numpy inputs are exact in f32, so the result equals the f32 call's."""
    x = make("normal", (16, 64))
    for dt in (ml_dtypes.bfloat16, np.float16):
        xl = x.astype(dt)
        for fn in (nvfp4.quantize, mxfp4.quantize):
            for a, b in zip(fn(xl), fn(xl.astype(np.float32))):
                assert a.dtype == b.dtype
                assert_same(a, b)


def test_torch_in_torch_out(nvfp4, fos, mxfp4, fp8, srm):
    x = make("heavy", (16, 128))
    xt = torch.from_numpy(x.copy())
    q, s, s_dec = nvfp4.quantize(xt)
    assert q.dtype == torch.float32 and s.dtype == torch.float8_e4m3fn
    assert isinstance(s_dec, torch.Tensor) and s_dec.dtype == torch.float32 and s_dec.ndim == 0
    nq, ns, nsd = nvfp4.quantize(x)
    assert_same(q, nq)
    assert_same(s, ns)
    assert_same(s_dec, nsd)
    d = nvfp4.dequantize(q, s, s_dec)
    assert isinstance(d, torch.Tensor) and d.dtype == torch.float32
    assert_same(d, nvfp4.dequantize(nq, ns, nsd))

    q, s, s_dec, use4 = fos.quantize(xt)
    assert use4.dtype == torch.bool
    rq, rs, rsd, ru = qr.fos_quantize(x, err_dtype=np.float32)
    assert_same(q, rq)
    assert_same(s, rs)
    assert np.array_equal(use4.numpy(), ru)

    q, scale = mxfp4.quantize(xt)
    assert scale.dtype == torch.float32                  # e8m0: f32 holding the exact values
    rq, rs = qr.mxfp4_quantize(x)
    assert_same(q, rq)
    assert_same(scale, rs)
    assert_same(mxfp4.dequantize(q, scale), qr.mxfp4_dequantize(rq, rs))

    q, inv = fp8.quantize_block_1x128(xt)
    assert q.dtype == torch.float8_e4m3fn and inv.dtype == torch.float32
    rq, rinv = qr.fp8_block_1x128(x)
    assert_same(q, rq)
    assert_same(inv, rinv)

    b = srm.sr_bf16(torch.from_numpy(x[0].copy()), seed=2)
    assert b.dtype == torch.bfloat16
    assert_same(b, expected_sr(x[0], "bf16", stream_key(2, 0)))


# --------------------------------------------------------------------------- anchors

ANCHOR_NVFP4 = 9.044e-3
ANCHOR_FOS_MSE = 7.560e-3
ANCHOR_FOS_FRAC4 = 0.452
ANCHOR_MXFP4 = 1.322e-2


@pytest.fixture(scope="module")
def anchor_runs(nvfp4, fos, mxfp4):
    """The anchors' matrix through the three .grd quantisers, once (about 20 s in total)."""
    x = np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32)
    out = {"x": x}
    q, s, s_dec = nvfp4.quantize(x)
    out["nvfp4"] = (q, s, s_dec, nvfp4.dequantize(q, s, s_dec))
    q, s, s_dec, use4 = fos.quantize(x)
    out["fos"] = (q, s, s_dec, use4, fos.dequantize(q, s, s_dec))
    q, scale = mxfp4.quantize(x)
    out["mxfp4"] = (q, scale, mxfp4.dequantize(q, scale))
    return out


def test_anchor_nvfp4(anchor_runs):
    x = anchor_runs["x"]
    q, s, s_dec, d = anchor_runs["nvfp4"]
    assert qr.relative_mse(d, x) == pytest.approx(ANCHOR_NVFP4, rel=0.01)
    rq, rs, rsd = qr.nvfp4_quantize(x)
    assert_same(q, rq)
    assert_same(s, rs)
    assert_same(s_dec, rsd)


def test_anchor_four_over_six(anchor_runs):
    x = anchor_runs["x"]
    q, s, s_dec, use4, d = anchor_runs["fos"]
    assert qr.relative_mse(d, x) == pytest.approx(ANCHOR_FOS_MSE, rel=0.01)
    assert float(use4.mean()) == pytest.approx(ANCHOR_FOS_FRAC4, abs=0.001)
    rq, rs, _, ru = qr.fos_quantize(x, err_dtype=np.float32)
    assert np.array_equal(use4, ru)
    assert_same(q, rq)
    assert_same(s, rs)


def test_anchor_mxfp4(anchor_runs):
    x = anchor_runs["x"]
    q, scale, d = anchor_runs["mxfp4"]
    assert qr.relative_mse(d, x) == pytest.approx(ANCHOR_MXFP4, rel=0.01)
    rq, rs = qr.mxfp4_quantize(x)
    assert_same(q, rq)
    assert_same(scale, rs)
