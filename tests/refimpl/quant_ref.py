"""Reference block quantisers (NVFP4, Four Over Six, MXFP4, FP8, RHT) in plain numpy.

Why this module exists: numgrade's standard library implements these quantisers in its own
language; tests compare those programs bit for bit against this second, independent
implementation of the recipes in ../shared/ANCHORS.md section 4.  It deliberately imports
nothing from numgrade.

Conventions shared by every function here:

* Inputs are cast to float32 first.  Every arithmetic step of a recipe is a single numpy
  operation on float32 operands, i.e. one IEEE binary32 operation rounded to nearest-even.
  The order of operations in each docstring is the order actually executed, so a port
  that wants to match bit for bit must use that same order.
* Rounding to the narrow formats is done by ml_dtypes casts (float8_e4m3fn, float4_e2m1fn),
  which round to nearest, ties to even, straight from float32 (no double rounding; checked
  in tests).  The recipes saturate, so values are clamped explicitly *before* the cast
  (ml_dtypes turns an out-of-range e4m3 into NaN).  E8M0 scales are built from exact
  integer exponents, never from a rounded cast.
* Quantised data is returned as float32 arrays holding exactly the values of the narrow
  format ("codes"), scales likewise as float32 values of their format.
* Blocks run along the last axis (1 x B); leading axes are arbitrary unless a function says
  it needs 2-D input.  The last axis must be a multiple of the block size.
* NaN / Inf inputs are not part of the contract; the functions do whatever the literal
  recipe does with them.
"""

from __future__ import annotations

from typing import Literal

import ml_dtypes
import numpy as np
import numpy.typing as npt

F32 = np.float32
FLT_MAX: np.float32 = np.float32(np.finfo(np.float32).max)
E4M3_MAX: np.float32 = np.float32(448.0)
E2M1_MAX: np.float32 = np.float32(6.0)
ONE_SIXTH: np.float32 = np.float32(1.0 / 6.0)  # f32(1/6) as the recipe writes it
E8M0_MIN_EXP = -127
E8M0_MAX_EXP = 127

#: Sign vector of the NVFP4 recipe's random Hadamard transform (diagonal D).
RHT_SIGNS: npt.NDArray[np.float64] = np.array(
    [1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1], dtype=np.float64
)

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
FosRule = Literal["mse", "mae", "maxabs"]


# --------------------------------------------------------------------------- helpers


def _as_f32(x: npt.ArrayLike) -> F32Array:
    """Cast input once, so every later op is a float32 op."""
    return np.asarray(x, dtype=np.float32)


def round_e2m1(v: npt.ArrayLike) -> F32Array:
    """Saturating RNE rounding to E2M1: clamp to [-6, 6], then cast (values back as f32)."""
    c = np.clip(_as_f32(v), -E2M1_MAX, E2M1_MAX)
    return c.astype(ml_dtypes.float4_e2m1fn).astype(np.float32)


def round_e4m3(v: npt.ArrayLike) -> F32Array:
    """Saturating RNE rounding to E4M3 (FN): clamp to [-448, 448], then cast."""
    c = np.clip(_as_f32(v), -E4M3_MAX, E4M3_MAX)
    return c.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


def _blocks(x: F32Array, b: int) -> F32Array:
    """View [..., N] as [..., N/b, b]; the block axis is the last one."""
    n = x.shape[-1]
    if n % b:
        raise ValueError(f"last axis {n} is not a multiple of the block size {b}")
    return x.reshape(*x.shape[:-1], n // b, b)


def _block_amax(x: F32Array, b: int) -> F32Array:
    """max|x| over each 1 x b block (exact: max of f32 magnitudes)."""
    return np.max(np.abs(_blocks(x, b)), axis=-1)


def _tile_view(x: F32Array, t: int) -> F32Array:
    """View [M, N] as [M/t, t, N/t, t] tiles (2-D only)."""
    if x.ndim != 2:
        raise ValueError("2-D block quantisation needs a 2-D input")
    m, n = x.shape
    if m % t or n % t:
        raise ValueError(f"shape {x.shape} is not a multiple of {t}x{t}")
    return x.reshape(m // t, t, n // t, t)


def _global_encode_scale(amax: np.float32, numerator: np.float32) -> np.float32:
    """S_enc = min(numerator / amax, FLT_MAX); 0 -> 1.  amax == 0 gives inf -> FLT_MAX."""
    with np.errstate(divide="ignore"):
        s = F32(numerator / amax)  # f32 division
    s = F32(np.minimum(s, FLT_MAX))
    if s == 0:
        s = F32(1.0)
    return s


def _tensor_amax(x: F32Array) -> np.float32:
    return F32(np.max(np.abs(x))) if x.size else F32(0.0)


# --------------------------------------------------------------------------- NVFP4


def _nvfp4_block_scale(amax_b: F32Array, mult: np.float32) -> F32Array:
    """s_b = e4m3(clamp(amax_b * mult, -448, 448)); one f32 multiply, then RNE."""
    return round_e4m3(amax_b * mult)


def _nvfp4_encode(s_b: F32Array, s_dec: np.float32) -> F32Array:
    """enc_b = min(1 / (s_b * S_dec), FLT_MAX).  s_b == 0 gives inf -> FLT_MAX."""
    with np.errstate(divide="ignore"):
        return np.minimum(F32(1.0) / (s_b * s_dec), FLT_MAX)


def _nvfp4_elements(x: F32Array, enc: F32Array) -> F32Array:
    """q = e2m1(clamp(x * enc, -6, 6)); enc already broadcast to x's shape.

    Note the literal recipe: in a block whose scale rounded to 0, enc = FLT_MAX and any
    nonzero x saturates to code +-6 (which still dequantises to 0 because s_b = 0).
    """
    with np.errstate(over="ignore"):
        return round_e2m1(x * enc)


def nvfp4_quantize(x: npt.ArrayLike) -> tuple[F32Array, F32Array, np.float32]:
    """NVFP4 (1x16 blocks) exactly as Transformer Engine's fp32 reference computes it.

    Order of float32 operations:
        amax  = max|x| over the whole tensor
        S_enc = min(f32(2688) / amax, FLT_MAX); if S_enc == 0: S_enc = 1
        S_dec = f32(1) / S_enc
        mult  = S_enc * f32(1/6)
        s_b   = e4m3(clamp(amax_b * mult, -448, 448))
        enc_b = min(f32(1) / (s_b * S_dec), FLT_MAX)
        q     = e2m1(clamp(x * enc_b, -6, 6))
    Returns (q [.., N], s_b [.., N/16], S_dec).
    """
    x = _as_f32(x)
    s_enc = _global_encode_scale(_tensor_amax(x), F32(2688.0))
    s_dec = F32(F32(1.0) / s_enc)
    mult = F32(s_enc * ONE_SIXTH)
    s_b = _nvfp4_block_scale(_block_amax(x, 16), mult)
    enc = _nvfp4_encode(s_b, s_dec)
    q = _nvfp4_elements(_blocks(x, 16), enc[..., None]).reshape(x.shape)
    return q, s_b, s_dec


def nvfp4_dequantize(q: npt.ArrayLike, s: npt.ArrayLike, s_dec: np.float32) -> F32Array:
    """x' = (q * s_b) * S_dec in f32 (q * s_b is exact: 2 x 4 significant bits)."""
    q = _as_f32(q)
    s = _as_f32(s)
    b = q.shape[-1] // s.shape[-1]
    out = (_blocks(q, b) * s[..., None]) * F32(s_dec)
    return out.reshape(q.shape)


def nvfp4_quantize_2d(x: npt.ArrayLike) -> tuple[F32Array, F32Array, np.float32]:
    """NVFP4 with 16x16 blocks (TE's 2-D weight quantisation); x must be [M, N].

    Same f32 operation order as `nvfp4_quantize`, with amax_b the max|x| over each
    16x16 tile.  Returns (q [M, N], s_b [M/16, N/16], S_dec).
    """
    x = _as_f32(x)
    t = _tile_view(x, 16)
    s_enc = _global_encode_scale(_tensor_amax(x), F32(2688.0))
    s_dec = F32(F32(1.0) / s_enc)
    mult = F32(s_enc * ONE_SIXTH)
    amax_b = np.max(np.abs(t), axis=(1, 3))
    s_b = _nvfp4_block_scale(amax_b, mult)
    enc = _nvfp4_encode(s_b, s_dec)
    q = _nvfp4_elements(t, enc[:, None, :, None]).reshape(x.shape)
    return q, s_b, s_dec


def nvfp4_dequantize_2d(q: npt.ArrayLike, s: npt.ArrayLike, s_dec: np.float32) -> F32Array:
    """x' = (q * s_tile) * S_dec in f32, 16x16 tiles."""
    q = _as_f32(q)
    s = _as_f32(s)
    out = (_tile_view(q, 16) * s[:, None, :, None]) * F32(s_dec)
    return out.reshape(q.shape)


# --------------------------------------------------------------------------- Four Over Six


def _block_error(deq: F32Array, xb: F32Array, rule: FosRule, err_dtype: type) -> npt.NDArray:
    """Per-block error of a dequantised candidate, blocks on the last axis.

    float64 (default): d = f64(deq) - f64(x), then sum d*d / sum |d| / max |d| (numpy's
    pairwise sum; with 16 terms of f32-derived values this is exact or nearly so, so ties
    are real ties).  float32: d = deq - x in f32, and the 16 terms are accumulated
    strictly left to right in f32 (acc = acc + t_i, starting from t_0) for "mse"/"mae".
    """
    if err_dtype is np.float64:
        d = deq.astype(np.float64) - xb.astype(np.float64)
        if rule == "mse":
            return np.sum(d * d, axis=-1)
        if rule == "mae":
            return np.sum(np.abs(d), axis=-1)
        if rule == "maxabs":
            return np.max(np.abs(d), axis=-1)
    elif err_dtype is np.float32:
        d = deq - xb
        if rule == "maxabs":
            return np.max(np.abs(d), axis=-1)
        terms = d * d if rule == "mse" else np.abs(d)
        if rule not in ("mse", "mae"):
            raise ValueError(rule)
        acc = terms[..., 0].copy()
        for i in range(1, terms.shape[-1]):
            acc = acc + terms[..., i]
        return acc
    raise ValueError(f"rule={rule!r} err_dtype={err_dtype!r}")


def fos_quantize(
    x: npt.ArrayLike,
    rule: FosRule = "mse",
    four_scale: Literal["prescale", "postscale"] = "prescale",
    err_dtype: type = np.float64,
) -> tuple[F32Array, F32Array, np.float32, npt.NDArray[np.bool_]]:
    """Four Over Six: per 1x16 block, pick the better of max-maps-to-6 and max-maps-to-4.

    Why 256 not 448: the "4" candidate multiplies the block scale by 1.5; with the global
    scale built from 6*256 the largest "6" scale is 256 and the largest "4" scale 384,
    both inside E4M3's range, so neither candidate saturates the scale.

    Order of float32 operations:
        amax  = max|x| over the tensor
        S_enc = min(f32(1536) / amax, FLT_MAX); if S_enc == 0: S_enc = 1
        S_dec = f32(1) / S_enc
        mult  = S_enc * f32(1/6)
        t     = amax_b * mult                      (unrounded "6" scale, f32)
        s6    = e4m3(clamp(t, -448, 448))
        s4    = e4m3(clamp(t * f32(1.5), -448, 448))   four_scale="prescale" (default)
              = e4m3(clamp(s6 * f32(1.5), -448, 448))  four_scale="postscale"
        for s in (s6, s4):
            enc = min(f32(1) / (s * S_dec), FLT_MAX)
            q   = e2m1(clamp(x * enc, -6, 6))
            x'  = (q * s) * S_dec
        err   = per-block error of x' vs x (see `_block_error`; rule mse/mae/maxabs)
        use4  = err4 < err6   (strict: ties keep "6")
    "prescale" is the chosen reading: the block's scale is the one that maps amax_b to 4
    (amax_b * S_enc / 4, computed as (amax_b * mult) * 1.5), rounded to E4M3 once.
    Returns (q, s (chosen e4m3 scales), S_dec, use4 [.., N/16] bool).
    """
    x = _as_f32(x)
    xb = _blocks(x, 16)
    s_enc = _global_encode_scale(_tensor_amax(x), F32(1536.0))
    s_dec = F32(F32(1.0) / s_enc)
    mult = F32(s_enc * ONE_SIXTH)
    t = _block_amax(x, 16) * mult
    s6 = round_e4m3(t)
    if four_scale == "prescale":
        s4 = round_e4m3(t * F32(1.5))
    elif four_scale == "postscale":
        s4 = round_e4m3(s6 * F32(1.5))
    else:
        raise ValueError(four_scale)

    def cand(s: F32Array) -> tuple[F32Array, F32Array]:
        q = _nvfp4_elements(xb, _nvfp4_encode(s, s_dec)[..., None])
        return q, (q * s[..., None]) * s_dec

    q6, d6 = cand(s6)
    q4, d4 = cand(s4)
    use4 = _block_error(d4, xb, rule, err_dtype) < _block_error(d6, xb, rule, err_dtype)
    q = np.where(use4[..., None], q4, q6).reshape(x.shape)
    s = np.where(use4, s4, s6)
    return q, s, s_dec, use4


def fos_dequantize(q: npt.ArrayLike, s: npt.ArrayLike, s_dec: np.float32) -> F32Array:
    """Same as NVFP4: x' = (q * s_b) * S_dec in f32 (the choice lives in s_b)."""
    return nvfp4_dequantize(q, s, s_dec)


# --------------------------------------------------------------------------- MXFP4


def _floor_log2(a: F32Array) -> npt.NDArray[np.int64]:
    """Exact floor(log2 a) for a > 0 from frexp (a = m * 2^e, m in [0.5, 1))."""
    _, e = np.frexp(a)
    return e.astype(np.int64) - 1


def _ceil_log2_over6(a: F32Array) -> npt.NDArray[np.int64]:
    """Exact ceil(log2(a / 6)) for a > 0: the least k with 6 * 2^k >= a.

    a/6 is formed in float64 only to get a first guess; the guess is then checked and
    corrected with exact comparisons (6 * 2^k is exact in float64).
    """
    a64 = a.astype(np.float64)
    m, e = np.frexp(a64 / 6.0)
    k = e.astype(np.int64) - (m == 0.5)
    k = k + (6.0 * np.ldexp(1.0, k) < a64)  # too small -> bump up
    k = k - (6.0 * np.ldexp(1.0, k - 1) >= a64)  # one less still works -> drop
    return k


def mxfp4_quantize(
    x: npt.ArrayLike, variant: Literal["floor", "ceil"] = "floor"
) -> tuple[F32Array, F32Array]:
    """MXFP4 (OCP MX v1.0): 1x32 blocks, E8M0 power-of-two scale, E2M1 elements.

    Scale exponent k (exact integers, never a rounded log2):
        floor: k = floor(log2 amax_b) - 2        (OCP: emax of E2M1 is 2)
        ceil:  k = ceil(log2(amax_b / 6))        (no element saturates)
    k is clamped to E8M0's range [-127, 127]; amax_b == 0 gives k = -127 (the smallest
    E8M0 scale; every element is 0 anyway).  scale = f32(2^k) (2^-127 is an f32 subnormal).
    Elements: q = e2m1(clamp(x / scale, -6, 6)), one f32 division (exact: power of two).
    Returns (q [.., N], scale [.., N/32] as f32 values).
    """
    x = _as_f32(x)
    amax_b = _block_amax(x, 32)
    pos = amax_b > 0
    safe = np.where(pos, amax_b, F32(1.0))
    if variant == "floor":
        k = _floor_log2(safe) - 2
    elif variant == "ceil":
        k = _ceil_log2_over6(safe)
    else:
        raise ValueError(variant)
    k = np.where(pos, k, E8M0_MIN_EXP)
    k = np.clip(k, E8M0_MIN_EXP, E8M0_MAX_EXP)
    scale = np.ldexp(F32(1.0), k.astype(np.int32)).astype(np.float32)
    q = round_e2m1(_blocks(x, 32) / scale[..., None]).reshape(x.shape)
    return q, scale


def mxfp4_scale_bits(scale: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """E8M0 byte (biased exponent, bias 127) of each power-of-two scale."""
    _, e = np.frexp(_as_f32(scale))
    return (e.astype(np.int64) - 1 + 127).astype(np.uint8)


def mxfp4_dequantize(q: npt.ArrayLike, scale: npt.ArrayLike) -> F32Array:
    """x' = q * scale in f32 (exact: scale is a power of two and q has 2 bits)."""
    q = _as_f32(q)
    scale = _as_f32(scale)
    return (_blocks(q, 32) * scale[..., None]).reshape(q.shape)


# --------------------------------------------------------------------------- FP8 (E4M3)


def _fp8_scale(amax: F32Array) -> F32Array:
    """TE's compute_scale_from_amax for E4M3 (epsilon 0, no pow-2 forcing).

    scale = f32(448) / amax; inf -> FLT_MAX; amax == 0, amax == inf or NaN -> 1.
    """
    amax = _as_f32(amax)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = E4M3_MAX / amax
    s = np.where(np.isinf(s), FLT_MAX, s)
    s = np.where((amax == 0) | np.isinf(amax) | np.isnan(s), F32(1.0), s)
    return s.astype(np.float32)


def fp8_per_tensor(x: npt.ArrayLike) -> tuple[F32Array, np.float32]:
    """Per-tensor current-scaling E4M3.

    scale = 448 / amax (rules of `_fp8_scale`); q = e4m3(clamp(x * scale, -448, 448));
    inv = f32(1) / scale.  Dequantise as q * inv.  Returns (q, inv).
    """
    x = _as_f32(x)
    scale = F32(_fp8_scale(_tensor_amax(x)))
    with np.errstate(over="ignore"):
        q = round_e4m3(x * scale)
    return q, F32(F32(1.0) / scale)


def fp8_block_1x128(x: npt.ArrayLike) -> tuple[F32Array, F32Array]:
    """E4M3 with one scale per 1x128 block along the last axis.

    Per block: scale_b = 448 / amax_b (rules of `_fp8_scale`);
    q = e4m3(clamp(x * scale_b, -448, 448)); inv_b = f32(1) / scale_b.
    Returns (q [.., N], inv [.., N/128]); dequantise as q * inv_b.
    """
    x = _as_f32(x)
    scale = _fp8_scale(_block_amax(x, 128))
    with np.errstate(over="ignore"):
        q = round_e4m3(_blocks(x, 128) * scale[..., None]).reshape(x.shape)
    return q, (F32(1.0) / scale).astype(np.float32)


def fp8_dequantize(q: npt.ArrayLike, inv: npt.ArrayLike) -> F32Array:
    """x' = q * inv in f32; inv is a scalar or one value per block on the last axis."""
    q = _as_f32(q)
    inv = _as_f32(inv)
    if inv.ndim == 0:
        return q * inv
    b = q.shape[-1] // inv.shape[-1]
    return (_blocks(q, b) * inv[..., None]).reshape(q.shape)


# --------------------------------------------------------------------------- RHT


def hadamard16() -> F64Array:
    """16x16 Sylvester Hadamard, H[i, j] = (-1)^popcount(i & j) (symmetric, H H = 16 I)."""
    i = np.arange(16)
    pc = np.vectorize(lambda v: bin(int(v)).count("1"))(i[:, None] & i[None, :])
    return np.where(pc % 2 == 0, 1.0, -1.0)


def rht_matrix() -> F64Array:
    """M = diag(sign) @ H * 0.25; orthonormal (M M^T = I), so its inverse is M^T."""
    return (RHT_SIGNS[:, None] * hadamard16()) * 0.25


def _fixed_order_matmul16(a: F64Array, h: F64Array) -> F64Array:
    """out[..., j] = sum_i a[..., i] * h[i, j], accumulated i = 0..15 left to right.

    A fixed order (instead of BLAS) so the float64 result is reproducible everywhere.
    h has entries +-1, so each product is exact; only the additions round.
    """
    acc = a[..., 0, None] * h[0]
    for i in range(1, 16):
        acc = acc + a[..., i, None] * h[i]
    return acc


def rht16(x: npt.ArrayLike) -> F64Array:
    """Random Hadamard transform of each 1x16 block along the last axis, in float64.

    Order: a = f64(x_block) * sign (exact); y = a @ H with the sum over i taken in order
    i = 0..15 in float64; y = y * 0.25 (exact).  I.e. y_block = x_block @ (D H / 4).
    For f32 inputs the float64 sums are exact unless exponents within a block span more
    than ~29 binades.  Callers that need f32 cast the result themselves.
    """
    a = _blocks(np.asarray(x, dtype=np.float64), 16) * RHT_SIGNS
    y = _fixed_order_matmul16(a, hadamard16()) * 0.25
    return y.reshape(np.shape(x))


def rht16_inverse(y: npt.ArrayLike) -> F64Array:
    """Inverse of `rht16`: x_block = y_block @ (D H / 4)^T = ((y_block @ H^T) * 0.25) * sign."""
    yb = _blocks(np.asarray(y, dtype=np.float64), 16)
    x = (_fixed_order_matmul16(yb, hadamard16().T) * 0.25) * RHT_SIGNS
    return x.reshape(np.shape(y))


# --------------------------------------------------------------------------- metrics


def relative_mse(xq: npt.ArrayLike, x: npt.ArrayLike) -> float:
    """mean((xq - x)^2) / mean(x^2), in float64 (the anchors' error metric)."""
    xq64 = np.asarray(xq, dtype=np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    return float(np.mean((xq64 - x64) ** 2) / np.mean(x64 * x64))
