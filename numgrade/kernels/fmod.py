"""numpy's float remainder (``np.mod``, the reference's ``%``) in the primitives of ``kernel/ir.py``.

numpy computes ``mod = fmod(a, b)`` exactly, then moves it to the sign of ``b``: a nonzero
``mod`` of the other sign becomes ``mod + b`` (one float64 addition, which may round), a zero one
becomes ``copysign(0, b)``. Invalid cases (an infinite ``a``, a zero ``b``) give x86's default NaN
(negative); a NaN operand propagates (two NaNs give a negative NaN only when both are).

The exact ``fmod`` is integer arithmetic: with ``|a| = A 2**ea`` and ``|b| = B 2**eb`` (integer
significands of ``p`` bits, ``|a| >= |b|``, so ``d = ea - eb >= 0``), ``fmod = (A 2**d mod B)
2**eb``. The remainder of ``A 2**d`` is built ``c = 63 - p`` bits at a time: ``r = (r << s) mod B``
never leaves 63 bits. ``p = 24`` for operands carried in float32 (every format up to f32: 8
unrolled steps cover its exponent range), ``p = 53`` otherwise (a serial loop of 210 steps covers
float64's).
"""

from __future__ import annotations

from .fma import frexp
from .ir import Assign, Decl, KExpr, Loop, const, select, unary, var
from .legalize import F64_SIGN, Block, f64, isnan, pow2_f64, u64

NEG_NAN = -float("nan")  # x86's default NaN, what numpy's fmod gives for an invalid operation


def i64(n: int) -> KExpr:
    return const(int(n), "i64")


def _copysign(mag: KExpr, sign_src: KExpr) -> KExpr:
    m = mag.bitcast("u64") & u64(0x7FFFFFFFFFFFFFFF)
    return (m | (sign_src.bitcast("u64") & u64(F64_SIGN))).bitcast("f64")


def _xor(x: KExpr, y: KExpr) -> KExpr:
    return (x & unary("not", y)) | (unary("not", x) & y)


def _steps(blk: Block, r0: KExpr, d: KExpr, bb: KExpr, p: int) -> KExpr:
    """``(r0 2**d) mod bb`` for ``r0 < bb < 2**p`` and ``0 <= d`` (clamped per step)."""
    c = 63 - p
    dmax = 127 + 149 if p <= 24 else 1023 + 1074
    n = -(-dmax // c)

    def step(r: KExpr, i: KExpr) -> KExpr:
        left = d - i * i64(c)
        s = select(left.lt(i64(0)), i64(0), select(left.gt(i64(c)), i64(c), left))
        return (r << s.cast("u64")) % bb

    if n <= 8:
        r = r0
        for k in range(n):
            r = blk.let(step(r, i64(k)), "rm")
        return r
    name, it = blk.fresh("fmod_r"), blk.fresh("fmod_i")
    body = Assign(name, step(var(name, "u64"), var(it, "i64")))
    blk.stmts += [Decl(name, r0), Loop(it, i64(n), (body,), "serial")]
    return var(name, "u64")


def np_mod(blk: Block, a: KExpr, b: KExpr, p: int) -> KExpr:
    """``np.mod(a, b)`` on float64 values with at most ``p`` (24 or 53) significand bits."""
    assert a.dtype == b.dtype == "f64" and p in (24, 53)
    big = f64(1.7976931348623157e308)
    abs_a, abs_b = blk.let(unary("abs", a), "ma"), blk.let(unary("abs", b), "mb")
    fin_a, fin_b = abs_a.le(big), abs_b.le(big)
    valid = blk.let(fin_a & b.ne(f64(0.0)), "ok")  # (NaN operands are taken apart below)
    exact = blk.let(valid & fin_b, "ex")  # an infinite b leaves a finite a as it is
    ma, ka = frexp(blk, a)
    mb, kb = frexp(blk, b)
    scale = f64(2.0 ** (p - 1))
    sig_a = blk.let((unary("abs", ma) * scale).cast("u64"), "A")
    sig_b = blk.let(select(exact, (unary("abs", mb) * scale).cast("u64"), u64(1)), "B")
    d = blk.let(ka - kb, "d")
    r = _steps(blk, blk.let(sig_a % sig_b, "r0"), d, sig_b, p)
    eb = blk.let(kb - i64(p - 1), "eb")
    lo = select(eb.lt(i64(-1022)), eb, i64(-1022))
    first = select(eb.lt(i64(-1022)), i64(-1022), eb)  # r 2**eb is exact: scale in two steps
    mag = blk.let((r.cast("f64") * pow2_f64(first)) * pow2_f64(lo + i64(1022)), "fm")
    fm = blk.let(select(abs_a.lt(abs_b), a, _copysign(mag, a)), "fmod")
    # numpy: the remainder takes the sign of b
    other = _xor(b.lt(f64(0.0)), fm.lt(f64(0.0)))
    moved = select(fm.ne(f64(0.0)) & other, fm + b, fm)
    adj = blk.let(select(fm.eq(f64(0.0)), _copysign(f64(0.0), b), moved), "md")
    nan_a, nan_b = isnan(a), isnan(b)
    neg_a = a.bitcast("u64").ge(u64(F64_SIGN))
    neg_b = b.bitcast("u64").ge(u64(F64_SIGN))
    two = select(neg_a & neg_b, f64(NEG_NAN), f64(float("nan")))
    nans = select(nan_a & nan_b, two, select(nan_a, a, b))
    return blk.let(select(nan_a | nan_b, nans, select(valid, adj, f64(NEG_NAN))), "mod")
