"""Rounding an f32 value into a narrower number format with f32/u32 operations only.

Why: :func:`legalize.round_to` follows ``formats.round_array`` literally in float64 (divide by
the ulp, rint, multiply back), which costs dozens of slow f64 instructions per element on a GPU.
For an f32 input the same bits come out of a few integer operations on the f32 bit pattern;
nothing here is f64, nothing divides, and the only float operation (a multiplication by a power
of two) is exact.

The mechanism, for a target of precision ``p`` and smallest normal exponent ``emin``: let ``a``
be the bits of ``|x|`` as an integer. Inside one f32 binade ``a`` counts f32 ulps, and the
target's ulp there is ``2**(24-p)`` of them, so rounding the *integer* ``a`` to a multiple of
``2**(24-p)`` (in any direction) rounds the value onto the target's grid; a carry out of the
mantissa lands on the next binade's first value, which is the right answer, and comparisons with
``max_finite`` and inf become integer comparisons. Below ``2**emin`` the target's ulp stops
shrinking (its subnormals) while f32's keeps going:

* ``emin`` at or below f32's (bf16, e8m0): that region is f32's own subnormal range, where ``a``
  counts a fixed ulp as well, so it is the same integer rounding with another shift;
* ``emin`` above f32's (f16, fp8, e2m1): the significand with its implicit bit is shifted by
  the exponent's distance to the fixed grid (the shift capped where the value is already below a
  quarter ulp), and the rounded count of target ulps becomes an f32 by an exact multiplication.

Overflow, infinities, NaN and the formats' own rules (e8m0 has no zero and no sign, e2m1 no NaN)
are then selected exactly as ``round_array`` specifies them (see ``ir/formats.py``).
"""

from __future__ import annotations


from ..ir.formats import Format
from .ir import KExpr, const, float_bits, select, unary
from .legalize import Block

SIGN = 0x80000000
ABS = 0x7FFFFFFF
MANT = 0x007FFFFF
INF = 0x7F800000
QNAN = 0x7FC00000
MODES = ("rne", "rz", "ru", "rd")


def u32(v: int) -> KExpr:
    return const(v, "u32")


def round_f32_to(blk: Block, x: KExpr, fmt: Format, mode: str = "rne",
                 sat: bool = False) -> KExpr | None:
    """The f32 value `x` rounded once to `fmt` as ``round_array`` does, as an f32 KExpr.

    Returns None where this path does not apply (stochastic rounding, int/bool targets), so
    the caller keeps the float64 expansion of :func:`legalize.round_to` there.
    """
    assert x.dtype == "f32", x.dtype
    if fmt.kind != "float" or mode not in MODES:
        return None
    if fmt.name == "f64":
        return x  # every f32 value is an f64 value, and the f64 target is the identity
    if fmt.precision >= 24:
        if fmt.name != "f32":
            return None
        if not sat:
            return x  # f32 values are unchanged in every mode (NaN stays NaN)
        xb = blk.let(x.bitcast("u32"), "xb")
        mx = xb & u32(SIGN) | u32(float_bits(fmt.max_finite, "f32"))
        return blk.let(select((xb & u32(ABS)).eq(u32(INF)), mx, xb).bitcast("f32"), "r")
    p, emin = fmt.precision, fmt.emin
    if emin < -127:
        return None  # the grid below f32 normals would not be uniform in f32's bits

    xb = blk.let(x.bitcast("u32"), "xb")
    sign = blk.let(xb & u32(SIGN), "sg")
    neg = sign.ne(u32(0))  # not bound: rne without sat never reads it
    a = blk.let(xb & u32(ABS), "a")
    dn = 24 - p  # the target ulp in units of a, wherever |x| >= 2**emin
    if emin <= -126:
        # below 2**-126 a counts 2**-149 and the target ulp is 2**(max(emin, -127) - p + 1)
        dl = 150 + emin - p
        d: int | KExpr = dn if dl == dn else blk.let(
            select(a.lt(u32(1 << 23)), u32(dl), u32(dn)), "d")
        dk = u32(d) if isinstance(d, int) else d
        # (e8m0's ties below 2**-126, at 2**-128 and 1.5 * 2**-127, come out as its underflow
        # rules below say whichever way they go, so `odd` may hold there too)
        mag = blk.let(_round_shifted(blk, a, d, mode, neg, p == 1) << dk, "mag")
    else:
        normal = _round_shifted(blk, a, dn, mode, neg, p == 1) << u32(dn)
        # |x| < 2**emin: count target ulps 2**kmin; |x| = sig * 2**(max(e, 1) - 150)
        kmin = emin - p + 1
        e = blk.let(a >> u32(23), "e")
        sig = blk.let(select(e.eq(u32(0)), a, (a & u32(MANT)) | u32(1 << 23)), "sig")
        # the shift is top - max(e, 1), capped at 25: any sig (< 2**24) is then under half a
        # step, so q is 0, or 1 rounding up, just as for the true larger shift
        top = kmin + 150
        lo, hi = max(1, top - 25), emin + 126
        ec = select(e.lt(u32(lo)), u32(lo), select(e.gt(u32(hi)), u32(hi), e))
        ds = blk.let(u32(top) - ec, "ds")
        q = _round_shifted(blk, sig, ds, mode, neg, False)
        tiny = (q.cast("f32") * const(2.0 ** kmin, "f32")).bitcast("u32")
        mag = blk.let(select(a.lt(u32((emin + 127) << 23)), tiny, normal), "mag")

    mx = float_bits(fmt.max_finite, "f32")
    big = INF if fmt.has_inf else (QNAN if fmt.has_nan else mx)
    if sat:
        special: KExpr = u32(mx)
    else:
        # (magnitude for positive, for negative) overflow; an infinite input always gives big
        pos, ngt = {"rne": (big, big), "rz": (mx, mx), "ru": (big, mx), "rd": (mx, big)}[mode]
        over = u32(pos) if pos == ngt else select(neg, u32(ngt), u32(pos))
        special = over if pos == ngt == big else select(a.eq(u32(INF)), u32(big), over)
    r = blk.let(select(mag.le(u32(mx)), mag, special) | sign, "rb")
    nan_in = a.gt(u32(INF))
    # e2m1 has no NaN: a NaN becomes the zero of the opposite sign (as ml_dtypes does)
    nan_v = u32(QNAN) if fmt.has_nan else sign ^ u32(SIGN)
    r = blk.let(select(nan_in, nan_v, r), "rb")
    if not fmt.has_zero:  # e8m0: underflow gives the smallest value, zero is invalid
        mn = float_bits(fmt.min_normal, "f32")
        r = select(r.eq(u32(0)), u32(mn), r)
        if mode == "rne":  # round_array's ml_dtypes rule: (mn, 2 mn) rounds up to 2 mn
            r = select(a.gt(u32(mn)) & a.lt(u32(2 * mn)) & unary("not", neg),
                       u32(2 * mn), r)
        r = blk.let(select(a.eq(u32(0)), u32(QNAN), r), "rb")
    if not fmt.signed:  # negative inputs (-inf included) are invalid
        r = blk.let(select(neg & a.ne(u32(0)), u32(QNAN), r), "rb")
    return blk.let(r.bitcast("f32"), "r")


def _round_shifted(blk: Block, v: KExpr, d: int | KExpr, mode: str, neg: KExpr,
                   odd: bool) -> KExpr:
    """``v / 2**d`` rounded to an integer by `mode` (u32 `v` a magnitude, 1 <= d <= 25).

    Rounding is an addition before the truncating shift: ``2**(d-1) - 1`` plus the quotient's
    low bit for ties to even, ``2**d - 1`` to round the magnitude up (ru for positive, rd for
    negative x), nothing to truncate. `odd` says the quotient's low bit is not its parity and
    it is to be taken as odd: with one significand bit (e8m0), ``v >> 23`` is the exponent
    field while the target's count of ulps in the binade is 1 (its one tie, 1.5 * 2**e, goes up).
    """
    if isinstance(d, int):
        dk, mask, half = u32(d), u32((1 << d) - 1), u32((1 << (d - 1)) - 1)
    else:
        dk = d
        mask = blk.let((u32(1) << d) - u32(1), "mask")
        half = mask >> u32(1)
    if mode == "rne":
        bias = half + (u32(1) if odd else (v >> dk) & u32(1))
    elif mode == "rz":
        return blk.let(v >> dk, "q")
    elif mode == "ru":
        bias = select(neg, u32(0), mask)
    else:
        bias = select(neg, mask, u32(0))
    return blk.let((v + bias) >> dk, "q")
