"""A correctly rounded float64 fused multiply-add, in the primitives of ``kernel/ir.py``.

Why an emulation: the reference rounds the exact ``a*b + c`` once, and two of the executors have
no single-rounding fma (Triton's interpreter computes ``tl.fma`` as two numpy roundings; the
numpy kernel interpreter has none), so a native primitive would not be bit-exact everywhere.
Printed as plain IEEE ``+ - *`` (which every backend already reproduces), this is.

The method (every step an error-free transformation, so it is exact by construction):

1. Scale. ``a = ma 2^ka``, ``b = mb 2^kb``, ``c = mc 2^kc`` with ``|m|`` in [1, 2) (subnormals
   normalised). The product works at scale ``2^K``, ``K = ka + kb``; ``D = kc - K``. For
   ``D <= 60`` the computation runs at scale ``2^K`` with ``C = mc 2^D``; a ``c`` below
   ``2^-110`` of the product is replaced by ``sign(c) 2^-110``, which lies in the same open
   interval between multiples of ``2^-104`` (the product's grid), so no rounding at 53 bits or
   coarser can tell them apart. For ``D > 60`` it runs at scale ``2^kc`` and the product, below
   ``2^-59`` there, is replaced by ``sign(ab) 2^-70`` for the same reason. In the scaled domain
   every quantity lies in [2^-170, 2^63] or is zero: no overflow, no underflow.
2. Dekker's TwoProduct (Veltkamp splitting by ``2^27 + 1``): ``ma mb = uh + ul`` exactly.
3. Boldo and Melquiond's emulated fma ("Emulation of FMA and correctly rounded sums: proved
   algorithms using rounding to odd", IEEE TC 2008): ``(th, tl) = TwoSum(C, uh)``,
   ``v = RO(tl + ul)`` (round to odd, from a TwoSum and a one-ulp step), ``s = RN(th + v)`` is
   the correctly rounded scaled result. The exact residual ``x - s = e2 + (s1 - v) + e1`` (the
   TwoSum errors) is summed as a nonoverlapping expansion (Shewchuk's Grow-Expansion), whose
   largest nonzero component carries the residual's sign.
4. Scale back. A normal result is exact (a multiplication by a power of two). A result in the
   subnormal range is rounded once more, onto the multiples of ``2^-1074``, from the scaled value
   and the residual's sign (ties broken by it), so it is still a single rounding of the exact
   value. Overflow gives inf.

``odd=True`` returns the exact value rounded to odd on the float64 grid instead (the residual's
sign decides), so that one more rounding to any format of at most 51 significand bits equals a
single rounding of the exact value (round-to-odd makes double rounding innocuous).

Zero products, infinities and NaN follow IEEE 754 ``fusedMultiplyAdd``: a finite ``a*b`` plus an
infinite or NaN ``c`` is ``c``; an infinite or NaN ``a`` or ``b`` gives ``a*b + c``; an exact zero
is ``+0`` unless both ``a*b`` and ``c`` are ``-0``.
"""

from __future__ import annotations

from .ir import KExpr, const, select, unary
from .legalize import F64_SIGN, Block, f64, pow2_f64, u64

SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's splitter for 53-bit significands
F64_MANT = 0x000FFFFFFFFFFFFF
F64_ONE_EXP = 0x3FF0000000000000
F64_MAX = 1.7976931348623157e308
SMALL_C = -110  # below the product's 2**-104 grid: c only matters through its sign
BIG_C = 60  # above: the product only matters through its sign
PRODUCT_PROXY = 2.0 ** -70


def i64(n: int) -> KExpr:
    return const(int(n), "i64")


def two_sum(blk: Block, a: KExpr, b: KExpr) -> tuple[KExpr, KExpr]:
    """Knuth's TwoSum: ``s = RN(a + b)`` and the exact error ``a + b - s``."""
    s = blk.let(a + b, "ts")
    bb = blk.let(s - a, "tb")
    e = blk.let((a - (s - bb)) + (b - bb), "te")
    return s, e


def split(blk: Block, x: KExpr) -> tuple[KExpr, KExpr]:
    """Veltkamp's split: ``x = hi + lo`` with 26 and 27 significant bits (|x| < 2**995)."""
    t = blk.let(x * f64(SPLIT), "sp")
    hi = blk.let(t - (t - x), "hi")
    return hi, blk.let(x - hi, "lo")


def two_prod(blk: Block, a: KExpr, b: KExpr) -> tuple[KExpr, KExpr]:
    """Dekker's TwoProduct: ``p = RN(a b)`` and the exact error ``a b - p`` (no under/overflow)."""
    p = blk.let(a * b, "tp")
    ah, al = split(blk, a)
    bh, bl = split(blk, b)
    hh = blk.let(ah * bh, "hh")
    hl = blk.let(ah * bl, "hl")
    lh = blk.let(al * bh, "lh")
    ll = blk.let(al * bl, "ll")
    return p, blk.let(((hh - p) + hl + lh) + ll, "tpe")


def frexp(blk: Block, x: KExpr) -> tuple[KExpr, KExpr]:
    """``(m, k)`` with ``x = m 2**k``, ``|m|`` in [1, 2), sign on ``m``: for finite nonzero x."""
    bits = blk.let(x.bitcast("u64"), "xb")
    sub = ((bits >> u64(52)) & u64(0x7FF)).eq(u64(0))
    x2 = blk.let(select(sub, x * f64(2.0 ** 64), x).bitcast("u64"), "xn")
    e = ((x2 >> u64(52)) & u64(0x7FF)).cast("i64")
    k = blk.let(e - select(sub, i64(1023 + 64), i64(1023)), "k")
    m = blk.let(((x2 & u64(F64_SIGN | F64_MANT)) | u64(F64_ONE_EXP)).bitcast("f64"), "m")
    return m, k


def _clamp(k: KExpr, lo: int, hi: int) -> KExpr:
    return select(k.lt(i64(lo)), i64(lo), select(k.gt(i64(hi)), i64(hi), k))


def _sign_of(x: KExpr, positive: KExpr, negative: KExpr, zero: KExpr) -> KExpr:
    return select(x.gt(f64(0.0)), positive, select(x.lt(f64(0.0)), negative, zero))


def step_toward(s: KExpr, r: KExpr) -> KExpr:
    """The float64 next to the nonzero finite ``s`` in the direction of the sign of ``r``."""
    bits = s.bitcast("u64")
    zero = f64(0.0)  # moving away from zero adds one to the bits
    away = (s.gt(zero) & r.gt(zero)) | (s.lt(zero) & r.lt(zero))
    return select(away, bits + u64(1), bits - u64(1)).bitcast("f64")


def is_even(s: KExpr) -> KExpr:
    return (s.bitcast("u64") & u64(1)).eq(u64(0))


def round_odd(blk: Block, s: KExpr, r: KExpr) -> KExpr:
    """Round to odd of ``s + tiny`` where ``tiny`` is below half an ulp of ``s`` and has the sign
    of ``r`` (0: exact): ``s`` if exact, odd, zero or infinite, else its neighbour toward ``r``."""
    finite = unary("abs", s).le(f64(F64_MAX))  # inf stays (its error is NaN)
    move = r.ne(f64(0.0)) & is_even(s) & s.ne(f64(0.0)) & finite
    return blk.let(select(move, step_toward(s, r), s), "ro")


def sum_sign(blk: Block, terms: list[KExpr]) -> KExpr:
    """An f64 with the sign of the exact sum of ``terms`` (0 if it is 0): Shewchuk's
    Grow-Expansion keeps a nonoverlapping expansion, whose largest nonzero part has that sign."""
    expansion = [terms[0]]
    for t in terms[1:]:
        q = t
        out = []
        for h in expansion:
            q, e = two_sum(blk, q, h)
            out.append(e)
        expansion = out + [q]
    sign = expansion[0]
    for h in expansion[1:]:
        sign = select(h.ne(f64(0.0)), h, sign)
    return blk.let(sign, "sg")


def _scale_back(blk: Block, w: KExpr, r: KExpr, z: KExpr, odd: bool) -> KExpr:
    """``(w + tiny) 2**z`` rounded onto the float64 grid (nearest or odd), ``tiny`` as in
    :func:`round_odd`; ``w`` is a nonzero 53-bit value of the scaled domain."""
    m, k = frexp(blk, w)
    e = blk.let(k + z, "E")
    normal = blk.let(m * pow2_f64(_clamp(e, -1022, 1023)), "rn")
    # subnormal range: y = w scaled to units of 2**-1074 (|y| < 2**52), rounded to an integer
    y = blk.let(m * pow2_f64(_clamp(e + 1074, -60, 60)), "y")
    t = blk.let(unary("trunc", y), "yt")
    sy = select(y.lt(f64(0.0)), f64(-1.0), f64(1.0))
    sr = _sign_of(r, f64(1.0), f64(-1.0), f64(0.0))
    if odd:
        exact = y.eq(t) & r.eq(f64(0.0))
        half = t * f64(0.5)
        even = unary("trunc", half).eq(half)
        step = select(y.eq(t), sr, sy)
        q = select(exact | unary("not", even), t, t + step)
    else:
        tie = unary("abs", y - t).eq(f64(0.5)) & r.ne(f64(0.0))
        q = select(tie, y + f64(0.5) * sr, unary("rint", y))
    q = blk.let(_copysign(q, y), "q")
    sub = blk.let((q * f64(2.0 ** -52)) * f64(2.0 ** -1022), "rs")
    top = F64_MAX if odd else float("inf")  # to odd never reaches the even 2**1024
    ovf = select(m.lt(f64(0.0)), f64(-top), f64(top))
    return blk.let(select(e.gt(i64(1023)), ovf, select(e.lt(i64(-1022)), sub, normal)), "sb")


def _copysign(mag: KExpr, sign_src: KExpr) -> KExpr:
    m = mag.bitcast("u64") & u64(0x7FFFFFFFFFFFFFFF)
    return (m | (sign_src.bitcast("u64") & u64(F64_SIGN))).bitcast("f64")


def fma_f64(blk: Block, a: KExpr, b: KExpr, c: KExpr, odd: bool = False) -> KExpr:
    """``a*b + c`` (f64 operands) rounded once to float64 (``odd``: rounded to odd)."""
    assert a.dtype == b.dtype == c.dtype == "f64"
    big = f64(F64_MAX)
    fin_a = unary("abs", a).le(big)
    fin_b = unary("abs", b).le(big)
    fin_c = unary("abs", c).le(big)
    plain = blk.let(blk.let(a * b, "ab") + c, "abc")  # exact when a*b is a zero
    special = select(fin_a & fin_b, c, plain)  # IEEE: finite a*b plus inf/NaN c is c
    easy = blk.let(unary("not", fin_a & fin_b & fin_c) | a.eq(f64(0.0)) | b.eq(f64(0.0)), "easy")

    ma, ka = frexp(blk, a)
    mb, kb = frexp(blk, b)
    mc, kc = frexp(blk, c)
    kk = blk.let(ka + kb, "K")
    d = blk.let(kc - kk, "D")
    c_big = blk.let(d.gt(i64(BIG_C)) & c.ne(f64(0.0)), "cbig")
    uh0, ul0 = two_prod(blk, ma, mb)
    proxy = select(uh0.lt(f64(0.0)), f64(-PRODUCT_PROXY), f64(PRODUCT_PROXY))
    uh = blk.let(select(c_big, proxy, uh0), "uh")
    ul = blk.let(select(c_big, f64(0.0), ul0), "ul")
    tiny_c = select(c.lt(f64(0.0)), f64(-2.0 ** SMALL_C), f64(2.0 ** SMALL_C))
    c_near = select(d.lt(i64(SMALL_C)), tiny_c, mc * pow2_f64(_clamp(d, SMALL_C, BIG_C)))
    cs = blk.let(select(c.eq(f64(0.0)), c, select(c_big, mc, c_near)), "cs")
    z = blk.let(select(c_big, kc, kk), "Z")

    th, tl = two_sum(blk, cs, uh)
    s1, e1 = two_sum(blk, tl, ul)
    v = round_odd(blk, s1, e1)
    s, e2 = two_sum(blk, th, v)
    resid = sum_sign(blk, [e1, blk.let(s1 - v, "dv"), e2])  # sign of x - s
    if odd:
        w = round_odd(blk, s, resid)
        resid = blk.let(select(w.eq(s), resid, -resid), "rw")  # x lies between s and w
    else:
        w = s
    # w == 0 only for an exact cancellation of nonzero terms: +0, as TwoSum gives it
    scaled = _scale_back(blk, w, resid, z, odd)
    exact = blk.let(select(w.eq(f64(0.0)), w, scaled), "fx")
    return blk.let(select(easy, select(fin_a & fin_b & fin_c, plain, special), exact), "fma")


__all__ = ["fma_f64", "two_sum", "two_prod", "split", "frexp", "sum_sign", "round_odd"]
