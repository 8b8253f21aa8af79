"""Number formats and rounding: the one definition every numgrade component follows.

Values of every format are carried as float64 numpy arrays whose elements are
exactly representable in that format (all formats here embed exactly in f64).
``round_array`` is the *definition* of rounding for the whole toolchain; kernel
backends must reproduce it bit for bit.  The rules are:

Floating-point targets (f32, f16, bf16, e4m3, e5m2, e2m1, e8m0)
    The exact f64 input ``x`` is rounded **once** (no intermediate rounding to
    f32, unlike the ml_dtypes / torch casts *from float64*, which go through
    float32 and can double-round).  With ``p = precision``::

        E      = clamp(floor(log2|x|), emin, emax)   # read from the f64 exponent field
        ulp    = 2**(E - p + 1)
        scaled = x / ulp                              # exact
        r      = round_mode(scaled) * ulp             # an integer multiple of ulp

    ``round_mode`` is: ``rne`` nearest, ties to even integer (np.rint); ``rz``
    toward zero (trunc); ``ru`` toward +inf (ceil); ``rd`` toward -inf (floor);
    ``sr`` stochastic (below).  Clamping E below at ``emin`` gives gradual
    underflow onto the subnormal grid.  The result carries the sign of ``x``, so
    signed zeros are preserved (``rne(-1e-30) -> -0.0`` in f32; ``ru(-tiny) ->
    -0.0``; ``rd(+tiny) -> +0.0``).  Exactly representable inputs are unchanged in
    every mode.

    Overflow means ``|r| > max_finite``.  (e4m3's largest finite value 448 is
    below the top of its binade, so e.g. rne(464) = 448 but rne(465) overflows.)

    * ``sat=True``: every overflowing result, and every +-inf input, becomes
      ``+-max_finite``.
    * ``sat=False``: let ``BIG`` be +-inf if the format has inf, else NaN if it
      has NaN, else +-max_finite (e2m1).  Then ``rne`` and ``sr`` give ``BIG``;
      ``rz`` gives ``+-max_finite``; ``ru`` gives ``+BIG`` for positive and
      ``-max_finite`` for negative overflow; ``rd`` gives ``+max_finite`` for
      positive and ``-BIG`` for negative overflow.  An infinite input maps to
      ``BIG`` (with its sign) in every mode.  (ml_dtypes casts behave like
      ``sat=False``; torch's float8_e4m3fn cast behaves like ``sat=True``.)
    * NaN input gives NaN where the format has NaN.  e2m1 has no NaN: a NaN maps
      to a zero whose sign is the *opposite* of the NaN's sign bit (+NaN ->
      -0.0, -NaN -> +0.0), which is exactly what ml_dtypes 0.6 does for
      float4_e2m1fn casts (from both float32 and float64).

e8m0 (unsigned powers of two 2**-127 .. 2**127, NaN, no zero, no inf)
    Positive finite inputs are rounded by the rules above with p = 1 (so for
    rne every tie 1.5 * 2**e rounds up to 2**(e+1); rd(x) is the largest power of
    two <= x, ru(x) the smallest >= x).  Additionally:

    * ``0 < x < 2**-127`` (underflow) gives ``2**-127``: the format has no zero,
      and this is what ml_dtypes' RNE cast does (it holds in every mode, rd too).
    * rne only: ``2**-127 < x < 2**-126`` gives ``2**-126`` (not the nearer
      2**-127 for x < 1.5 * 2**-127).  ml_dtypes rounds these inputs (float32
      subnormals) up, and rne is defined to equal ml_dtypes' cast for every
      float32 input.  rz/rd/ru/sr are unaffected.
    * ``x <= 0`` (including -0.0 and -inf), and NaN, give NaN.
    * overflow follows the general rules (``BIG`` is NaN); +inf gives NaN, or
      2**127 with ``sat=True``.

    So rne matches ml_dtypes.float8_e8m0fnu casts from float32 exactly, for every
    float32 input.
    (ml_dtypes' cast from float64 goes through float32, so positive f64 values
    <= 2**-150 become NaN there; here they give 2**-127.  torch's e8m0 cast
    differs from both: it ignores the sign and maps 0 to 2**-127.)

i32 target
    Round to an integer per mode (rne ties to even; sr with ulp = 1), then
    saturate to [-2**31, 2**31 - 1] (``sat`` is irrelevant: always saturating);
    NaN gives 0; the result is never -0.0.

bool target
    ``x != 0`` (so NaN -> True), as 0.0 / 1.0.

f64 target
    Identity (a copy), in every mode.

Stochastic rounding (``mode="sr"``)
    Requires a 64-bit ``key``.  Element ``i`` (flat row-major index) draws
    ``u = philox_uint32(key, offset + i)`` (index taken mod 2**64).  With
    ``scaled`` as above (signed), ``lo = floor(scaled)``, ``f = scaled - lo``
    (exact, in [0, 1)), the result is ``(lo + 1) * ulp`` iff ``f * 2**32 > u``
    (equivalently ``ceil(f * 2**32) > u``), else ``lo * ulp``; then sign and
    overflow handling as above.  Hence P(round up) = ceil(f * 2**32) / 2**32,
    which equals ``f`` whenever ``f`` is a multiple of 2**-32 (always the case
    when f has at most 32 fractional bits, e.g. f32 inputs to fp8/f16/bf16
    normals), and exactly representable inputs never move.

Random numbers
    Philox4x32-10 (Salmon et al. 2011, as in Random123).  The stream for
    ``key`` is indexed by a 64-bit counter: counter words
    ``(index & 0xffffffff, index >> 32, 0, 0)``, key words
    ``(key & 0xffffffff, key >> 32)``, first output word.  ``stream_key`` derives
    the key of the n-th random consumer of a run from its seed with splitmix64.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Format",
    "FORMATS",
    "ROUNDING_MODES",
    "get_format",
    "represents",
    "promote",
    "round_array",
    "to_storage",
    "from_storage",
    "format_of_dtype",
    "philox4x32",
    "philox_uint32",
    "philox_uniform",
    "stream_key",
]

ROUNDING_MODES = ("rne", "rz", "ru", "rd", "sr")

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF


@dataclass(frozen=True)
class Format:
    """Static description of one number format (see module docstring for rounding)."""

    name: str
    kind: str  # 'float' | 'int' | 'bool'
    bits: int  # logical storage bits (e2m1: 4, bool: 1)
    precision: int  # significand bits incl. the implicit bit
    emin: int  # exponent of the smallest normal number
    emax: int  # exponent of the largest finite number
    max_finite: float
    has_inf: bool
    has_nan: bool
    has_subnormals: bool
    signed: bool
    has_zero: bool

    @property
    def unit_roundoff(self) -> float:
        """RNE relative error bound for normal numbers; 0 for exact (int/bool) formats."""
        return 2.0 ** -self.precision if self.kind == "float" else 0.0

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value (1 for int/bool)."""
        return 2.0 ** self.emin if self.kind == "float" else 1.0

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value; equals min_normal when there are no subnormals."""
        if self.kind == "float" and self.has_subnormals:
            return 2.0 ** (self.emin - self.precision + 1)
        return self.min_normal

    @property
    def np_dtype(self) -> np.dtype:
        """numpy dtype used when values of this format are materialised."""
        return np.dtype(_NP_DTYPES[self.name])

    def is_float(self) -> bool:
        """True for floating-point formats (the ones with a rounding grid)."""
        return self.kind == "float"


def _float(name: str, bits: int, p: int, emin: int, emax: int, max_finite: float, *,
           inf: bool = True, nan: bool = True, sub: bool = True, signed: bool = True,
           zero: bool = True) -> Format:
    return Format(name, "float", bits, p, emin, emax, float(max_finite), inf, nan, sub, signed, zero)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        _float("f64", 64, 53, -1022, 1023, np.finfo(np.float64).max),
        _float("f32", 32, 24, -126, 127, (2 - 2.0**-23) * 2.0**127),
        _float("f16", 16, 11, -14, 15, 65504.0),
        _float("bf16", 16, 8, -126, 127, (2 - 2.0**-7) * 2.0**127),
        _float("e4m3", 8, 4, -6, 8, 448.0, inf=False),
        _float("e5m2", 8, 3, -14, 15, 57344.0),
        _float("e2m1", 4, 2, 0, 2, 6.0, inf=False, nan=False),
        _float("e8m0", 8, 1, -127, 127, 2.0**127, inf=False, sub=False, signed=False, zero=False),
        Format("i32", "int", 32, 31, 0, 30, float(2**31 - 1), False, False, False, True, True),
        Format("bool", "bool", 1, 1, 0, 0, 1.0, False, False, False, False, True),
    )
}

_NP_DTYPES: dict[str, type] = {
    "f64": np.float64,
    "f32": np.float32,
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "e4m3": ml_dtypes.float8_e4m3fn,
    "e5m2": ml_dtypes.float8_e5m2,
    "e2m1": ml_dtypes.float4_e2m1fn,
    "e8m0": ml_dtypes.float8_e8m0fnu,
    "i32": np.int32,
    "bool": np.bool_,
}

# Order in which promote() searches for a common float format.
_PROMOTION_ORDER = ("e2m1", "e8m0", "e4m3", "e5m2", "f16", "bf16", "f32", "f64")


def get_format(name: str) -> Format:
    """Look a format up by name; KeyError names the known formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown number format {name!r}; known: {sorted(FORMATS)}") from None


def represents(outer: Format, inner: Format) -> bool:
    """True iff every value of `inner` (incl. inf/NaN/-0 it has) is exactly a value of `outer`."""
    if outer == inner:
        return True
    if inner.kind == "bool":  # values {0, 1}
        return outer.has_zero
    if outer.kind == "bool":
        return False
    if outer.kind == "int":
        return inner.kind == "int" and inner.max_finite <= outer.max_finite
    # outer is a float format
    if inner.kind == "int":  # all integers in [-2^31, 2^31-1]
        return outer.precision >= 31 and outer.max_finite >= 2.0**31 and outer.signed
    return (
        (outer.signed or not inner.signed)
        and (outer.has_zero or not inner.has_zero)
        and (outer.has_inf or not inner.has_inf)
        and (outer.has_nan or not inner.has_nan)
        and outer.precision >= inner.precision
        and outer.min_subnormal <= inner.min_subnormal
        and outer.max_finite >= inner.max_finite
        # without subnormals/zero (e8m0) the outer grid must also contain inner's tiny values
        and (outer.has_subnormals or outer.min_normal <= inner.min_subnormal)
    )


def promote(a: Format, b: Format) -> Format:
    """Working format of a binary op on `a` and `b` (numpy-like for int/bool operands)."""
    if a == b:
        return a
    if a.kind == "bool":
        return b
    if b.kind == "bool":
        return a
    if a.kind == "int":
        return b  # int with float F -> F (rounding, like numpy scalars)
    if b.kind == "int":
        return a
    if represents(a, b):
        return a
    if represents(b, a):
        return b
    for name in _PROMOTION_ORDER:
        f = FORMATS[name]
        if represents(f, a) and represents(f, b):
            return f
    raise AssertionError("unreachable: f64 represents every float format")


# ---------------------------------------------------------------------------
# Rounding


# Elements per block: numpy temporaries of this size stay in cache, which makes the
# multi-pass elementwise code (and especially Philox) several times faster than whole-array ops.
_CHUNK = 16384
_EXP_MASK = np.uint64(0x7FF0000000000000)


def _as_f64(x: object) -> np.ndarray:
    """Fresh C-contiguous float64 copy of x (python scalars give 0-d arrays)."""
    return np.array(x, dtype=np.float64, copy=True, order="C")


def _round_grid(s: np.ndarray, mode: str, key: int | None, offset: int) -> np.ndarray:
    """Round signed scaled values to integers per mode (s may be overwritten)."""
    if mode == "rne":
        return np.rint(s, out=s)
    if mode == "rz":
        return np.trunc(s, out=s)
    if mode == "ru":
        return np.ceil(s, out=s)
    if mode == "rd":
        return np.floor(s, out=s)
    # sr: element i draws u = philox_uint32(key, offset + i); up iff frac(s) * 2^32 > u
    assert key is not None
    idx = np.arange(s.size, dtype=np.uint64)
    idx += np.uint64(offset)  # wraps mod 2^64
    u = _philox_first_word(idx, key & _MASK32, key >> 32).astype(np.float64)
    lo = np.floor(s)
    s -= lo  # fractional part, exact
    s *= 4294967296.0
    lo += s > u
    return lo


def round_array(x: ArrayLike, fmt: Format, mode: str = "rne", sat: bool = False,
                key: int | None = None, offset: int = 0) -> np.ndarray:
    """Round the exact values of `x` once into `fmt`; returns a new float64 array (see module doc)."""
    if mode not in ROUNDING_MODES:
        raise ValueError(f"unknown rounding mode {mode!r}; expected one of {ROUNDING_MODES}")
    if mode == "sr" and key is None:
        raise ValueError("mode='sr' requires an integer key")
    x = _as_f64(x)
    if fmt.kind == "bool":
        return (x != 0).astype(np.float64)
    if fmt.name == "f64":
        return x
    key64 = None if key is None else int(key) & _MASK64
    off = int(offset) & _MASK64
    block = _round_int_block if fmt.kind == "int" else _round_float_block
    flat = x.reshape(-1)  # a view of our private copy: results are written back in place
    with np.errstate(all="ignore"):  # inf/NaN intermediates are intended; specials fixed up
        for start in range(0, flat.size, _CHUNK):
            xb = flat[start:start + _CHUNK]
            xb[...] = block(xb, fmt, mode, sat, key64, (off + start) & _MASK64)
    return x


def _round_int_block(xb: np.ndarray, fmt: Format, mode: str, sat: bool, key: int | None,
                     offset: int) -> np.ndarray:
    """i32: integer rounding, saturation (always), NaN -> 0, no negative zero."""
    r = _round_grid(xb.copy(), mode, key, offset)
    np.clip(r, -(fmt.max_finite + 1.0), fmt.max_finite, out=r)
    r[np.isnan(r)] = 0.0
    r += 0.0  # -0.0 -> +0.0
    return r


def _round_float_block(xb: np.ndarray, fmt: Format, mode: str, sat: bool, key: int | None,
                       offset: int) -> np.ndarray:
    """Float targets: grid rounding in the clamped binade, then specials."""
    # 2^floor(log2|x|) straight from the exponent field (0 for zero/f64-subnormals, inf for
    # inf/NaN); clamping to [2^emin, 2^emax] gives the subnormal grid and bounds the scale.
    ulp = (xb.view(np.uint64) & _EXP_MASK).view(np.float64)
    np.clip(ulp, 2.0**fmt.emin, 2.0**fmt.emax, out=ulp)
    ulp *= 2.0 ** (1 - fmt.precision)  # exact powers of two throughout
    r = _round_grid(xb / ulp, mode, key, offset)
    r *= ulp
    np.copysign(r, xb, out=r)  # rounding never crosses zero; keeps signed zeros

    mx = fmt.max_finite
    if r.size and not (-mx <= r.min() and r.max() <= mx):  # overflow, inf or NaN present
        special = np.flatnonzero(~(np.abs(r) <= mx))
        r[special] = _specials(xb[special], fmt, mode, sat)
    if not fmt.has_zero:  # e8m0: no zero, so underflow clamps up and zero is invalid
        r[(r == 0) & (xb > 0)] = fmt.min_normal
        r[xb == 0] = np.nan
        if mode == "rne":  # ml_dtypes compatibility: the lowest binade rounds up (module doc)
            lowest = 2.0 * fmt.min_normal
            r[(xb > fmt.min_normal) & (xb < lowest)] = lowest
    if not fmt.signed:  # e8m0: negative inputs (incl. -inf) are invalid
        r[xb < 0] = np.nan
    return r


def _specials(x: np.ndarray, fmt: Format, mode: str, sat: bool) -> np.ndarray:
    """Results for elements that overflowed, were infinite or NaN."""
    mx = fmt.max_finite
    big = np.inf if fmt.has_inf else (np.nan if fmt.has_nan else mx)
    neg = np.signbit(x)
    out = np.empty_like(x)
    nan_in = np.isnan(x)
    inf_in = np.isinf(x)
    ovf = ~nan_in & ~inf_in
    if sat:
        out[:] = np.where(neg, -mx, mx)
    else:
        pos_v = {"rne": big, "sr": big, "rz": mx, "ru": big, "rd": mx}[mode]
        neg_v = {"rne": -big, "sr": -big, "rz": -mx, "ru": -mx, "rd": -big}[mode]
        out[ovf] = np.where(neg[ovf], neg_v, pos_v)
        out[inf_in] = np.where(neg[inf_in], -big, big)
    if fmt.has_nan:
        out[nan_in] = np.nan
    else:  # e2m1: NaN -> zero with the opposite sign (ml_dtypes float4_e2m1fn behaviour)
        out[nan_in] = np.where(neg[nan_in], 0.0, -0.0)
    return out


# ---------------------------------------------------------------------------
# Storage conversion


def to_storage(x: ArrayLike, fmt: Format) -> np.ndarray:
    """Cast representable float64 values to fmt.np_dtype (exact; call round_array first)."""
    with np.errstate(all="ignore"):
        return np.asarray(x, dtype=np.float64).astype(fmt.np_dtype)


def from_storage(a: object) -> np.ndarray:
    """float64 copy of an array of any supported storage dtype (also duck-typed torch tensors)."""
    if not isinstance(a, np.ndarray) and hasattr(a, "detach") and hasattr(a, "double"):
        a = a.detach().cpu().double().numpy()  # every supported format embeds in f64 exactly
    with np.errstate(all="ignore"):  # signalling-NaN payloads may raise 'invalid' flags
        return np.array(a, copy=True).astype(np.float64)


_DTYPE_TO_FORMAT: dict[np.dtype, str] = {np.dtype(t): n for n, t in _NP_DTYPES.items()}
_NAME_TO_FORMAT: dict[str, str] = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
    "float8_e4m3fn": "e4m3", "float8_e5m2": "e5m2", "float4_e2m1fn": "e2m1",
    "float8_e8m0fnu": "e8m0", "int32": "i32", "bool": "bool",
}


def format_of_dtype(dtype: object) -> Format | None:
    """Format stored in a numpy (or, by name, torch) dtype; None if not one of ours."""
    try:
        name = _DTYPE_TO_FORMAT.get(np.dtype(dtype))  # type: ignore[call-overload]
        if name is not None:
            return FORMATS[name]
    except TypeError:
        pass
    text = str(dtype).removeprefix("torch.")
    name = _NAME_TO_FORMAT.get(text)
    return FORMATS[name] if name is not None else None


# ---------------------------------------------------------------------------
# Counter-based random numbers

_PHILOX_M0 = np.uint64(0xD2511F53)
_PHILOX_M1 = np.uint64(0xCD9E8D57)
_PHILOX_W0 = 0x9E3779B9
_PHILOX_W1 = 0xBB67AE85
_U32 = np.uint64(_MASK32)
_SH32 = np.uint64(32)


def philox4x32(c0: ArrayLike, c1: ArrayLike, c2: ArrayLike, c3: ArrayLike, k0: ArrayLike,
               k1: ArrayLike, rounds: int = 10) -> tuple[np.ndarray, ...]:
    """Philox4x32-R block function, vectorised over (broadcast) counters; 4 uint32 arrays."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _U32 for c in (c0, c1, c2, c3))
    k0 = np.asarray(k0, dtype=np.uint64) & _U32
    k1 = np.asarray(k1, dtype=np.uint64) & _U32
    c0, c1, c2, c3 = np.broadcast_arrays(c0, c1, c2, c3)
    for r in range(rounds):
        p0 = _PHILOX_M0 * c0  # 32x32 -> 64 bit products, exact in uint64
        p1 = _PHILOX_M1 * c2
        c0, c1, c2, c3 = (
            (p1 >> _SH32) ^ c1 ^ k0,
            p1 & _U32,
            (p0 >> _SH32) ^ c3 ^ k1,
            p0 & _U32,
        )
        if r != rounds - 1:
            k0 = (k0 + np.uint64(_PHILOX_W0)) & _U32
            k1 = (k1 + np.uint64(_PHILOX_W1)) & _U32
    return tuple(np.asarray(c, dtype=np.uint32) for c in (c0, c1, c2, c3))


def philox_uint32(key: int, index: ArrayLike) -> np.ndarray:
    """Word `index` (64-bit, vectorised) of the uint32 stream for 64-bit `key`."""
    key = int(key) & _MASK64
    idx = _as_index(index)
    k0, k1 = key & _MASK32, key >> 32
    if idx.size <= _CHUNK:
        return _philox_first_word(idx, k0, k1)
    flat = np.ascontiguousarray(idx).reshape(-1)
    out = np.empty(flat.size, dtype=np.uint32)
    for start in range(0, flat.size, _CHUNK):
        out[start:start + _CHUNK] = _philox_first_word(flat[start:start + _CHUNK], k0, k1)
    return out.reshape(idx.shape)


def _as_index(index: ArrayLike) -> np.ndarray:
    """Counter indices as uint64, reduced mod 2^64 (negative ints wrap)."""
    if isinstance(index, (int, np.integer)):
        return np.asarray(int(index) & _MASK64, dtype=np.uint64)
    idx = np.asarray(index)
    if idx.dtype == np.uint64:
        return idx
    if idx.dtype.kind in "iub":
        return idx.astype(np.int64).astype(np.uint64)
    if idx.dtype == object:
        flat = [int(v) & _MASK64 for v in idx.ravel()]
        return np.array(flat, dtype=np.uint64).reshape(idx.shape)
    raise TypeError(f"philox index must be integer, got dtype {idx.dtype}")


def _philox_first_word(idx: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """Word 0 of Philox4x32-10 at counters (idx lo, idx hi, 0, 0): philox4x32 minus dead work."""
    # round 0 with c2 = c3 = 0: c0' = c1 ^ k0, c1' = 0, c2' = hi(M0 c0) ^ k1, c3' = lo(M0 c0)
    p0 = (idx & _U32) * _PHILOX_M0
    c0 = idx >> _SH32
    c0 ^= np.uint64(k0)
    c2 = p0 >> _SH32
    c2 ^= np.uint64(k1)
    p0 &= _U32
    c1: np.ndarray | None = None  # all zero
    c3 = p0
    for r in range(1, 10):
        k0 = (k0 + _PHILOX_W0) & _MASK32
        k1 = (k1 + _PHILOX_W1) & _MASK32
        p1 = c2 * _PHILOX_M1
        n0 = p1 >> _SH32
        if c1 is not None:
            n0 ^= c1
        n0 ^= np.uint64(k0)
        if r == 9:  # only word 0 = hi(M1 c2) ^ c1 ^ k0 is needed
            return n0.astype(np.uint32)
        p0 = c0 * _PHILOX_M0
        n2 = p0 >> _SH32
        n2 ^= c3
        n2 ^= np.uint64(k1)
        p1 &= _U32
        p0 &= _U32
        c0, c1, c2, c3 = n0, p1, n2, p0
    raise AssertionError("unreachable")


def philox_uniform(key: int, index: ArrayLike) -> np.ndarray:
    """Uniform float64 in [0, 1) with 24 random bits, hence exactly an f32 value."""
    u = philox_uint32(key, index)
    return (u >> np.uint32(8)).astype(np.float64) * 2.0**-24


def stream_key(seed: int, ordinal: int) -> int:
    """Key of the `ordinal`-th random consumer in a run with `seed` (splitmix64 output)."""
    z = (int(seed) + 0x9E3779B97F4A7C15 * (int(ordinal) + 1)) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)
