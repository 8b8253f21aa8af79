"""Number formats in primitives: rounding, storage codes and the random stream.

Everything a backend would otherwise need to know about e2m1, e4m3, bf16, stochastic rounding,
Philox or a correctly rounded float64 fused multiply-add is expanded here into the primitive
scalar operations of ``kernel/ir.py``, once, following ``numgrade/ir/formats.py`` (the
definition) step by step. The backends then reproduce the
reference's bits by printing primitives faithfully, and a single test of this module against
``round_array`` covers all of them.

The builders take a :class:`Block` and bind intermediate results with ``Let`` so that the
emitted code stays a sequence of small statements (no expression is ever duplicated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..ir.formats import Format
from .ir import KExpr, Let, Stmt, const, float_bits, select, unary, var

F64_EXP_MASK = 0x7FF0000000000000
F64_SIGN = 0x8000000000000000
F64_ABS = 0x7FFFFFFFFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF


@dataclass
class Block:
    """A statement list under construction, with fresh-name generation shared by a kernel."""

    stmts: list[Stmt] = field(default_factory=list)
    counter: list[int] = field(default_factory=lambda: [0])
    prefix: str = "t"

    def let(self, e: KExpr, hint: str = "") -> KExpr:
        """Bind `e` to a fresh name (constants and variables are returned as they are)."""
        if e.op in ("const", "var"):
            return e
        self.counter[0] += 1
        name = f"{self.prefix}{self.counter[0]}" + (f"_{hint}" if hint else "")
        self.stmts.append(Let(name, e))
        return var(name, e.dtype)

    def fresh(self, hint: str) -> str:
        self.counter[0] += 1
        return f"{hint}{self.counter[0]}"

    def child(self) -> "Block":
        return Block([], self.counter, self.prefix)


def f64(v: float) -> KExpr:
    return const(v, "f64")


def u64(v: int) -> KExpr:
    return const(v, "u64")


def pow2_f64(k: KExpr) -> KExpr:
    """2**k for an i64 k in [-1022, 1023], built from the exponent field (exact)."""
    return ((k + 1023).cast("u64") << u64(52)).bitcast("f64")


def isnan(x: KExpr) -> KExpr:
    return x.ne(x)


def copysign_bits(mag: KExpr, sign_src_bits: KExpr) -> KExpr:
    """|mag| with the sign bit of the u64 bit pattern `sign_src_bits`."""
    m = mag.bitcast("u64") & u64(F64_ABS)
    return (m | (sign_src_bits & u64(F64_SIGN))).bitcast("f64")


def canon_nan(x: KExpr) -> KExpr:
    """``x`` with any NaN made the positive quiet NaN, the only NaN ``round_array`` gives for
    f32 (float32 hardware makes others: x86's default NaN of ``inf - inf`` is negative)."""
    return select(isnan(x), const(float("nan"), x.dtype), x)


def np_minimum(a: KExpr, b: KExpr) -> KExpr:
    """numpy's minimum: ``a`` if ``a < b`` or ``a`` is NaN, else ``b`` (NaN propagates; of two
    equal values, such as -0.0 and 0.0, numpy gives the second)."""
    return select(a.lt(b) | isnan(a), a, b)


def np_maximum(a: KExpr, b: KExpr) -> KExpr:
    return select(a.gt(b) | isnan(a), a, b)


# ---------------------------------------------------------------------------------------------
# Philox4x32-10, word 0 at counter (idx lo, idx hi, 0, 0)
def philox_first_word(blk: Block, idx: KExpr, k0: KExpr, k1: KExpr) -> KExpr:
    """The uint32 (as u64) of ``formats.philox_uint32(key, idx)``; k0/k1 are u64 key halves."""
    m32 = u64(MASK32)
    idx = blk.let(idx.cast("u64"), "ctr")
    c0 = idx & m32
    c1 = idx >> u64(32)
    c2 = u64(0)
    c3 = u64(0)
    ka, kb = k0, k1
    for r in range(10):
        p0 = blk.let(c0 * u64(PHILOX_M0), "p0")
        p1 = blk.let(c2 * u64(PHILOX_M1), "p1")
        n0 = blk.let((p1 >> u64(32)) ^ c1 ^ ka, "c0")
        if r == 9:
            return n0
        n1 = blk.let(p1 & m32, "c1")
        n2 = blk.let((p0 >> u64(32)) ^ c3 ^ kb, "c2")
        n3 = blk.let(p0 & m32, "c3")
        c0, c1, c2, c3 = n0, n1, n2, n3
        ka = blk.let((ka + u64(PHILOX_W0)) & m32, "k0")
        kb = blk.let((kb + u64(PHILOX_W1)) & m32, "k1")
    raise AssertionError  # pragma: no cover


def philox_uniform(blk: Block, idx: KExpr, k0: KExpr, k1: KExpr) -> KExpr:
    """``formats.philox_uniform``: 24 random bits as an f64 in [0, 1) (exactly an f32)."""
    w = philox_first_word(blk, idx, k0, k1)
    return blk.let((w >> u64(8)).cast("f64") * f64(2.0 ** -24), "u")


# ---------------------------------------------------------------------------------------------
# rounding (formats.round_array)
def round_to(blk: Block, x: KExpr, fmt: Format, mode: str = "rne", sat: bool = False,
             rand_word: Callable[[], KExpr] | None = None) -> KExpr:
    """The exact f64 value `x` rounded once to `fmt` (an f64 holding the format's value).

    ``rand_word`` supplies the element's uint32 Philox word (as u64) for ``mode="sr"``.
    """
    assert x.dtype == "f64"
    if fmt.kind == "bool":
        return blk.let(select(x.ne(f64(0.0)), f64(1.0), f64(0.0)), "b")
    if fmt.name == "f64":
        return x
    if fmt.name == "f32" and mode == "rne" and not sat:
        return blk.let(select(isnan(x), f64(float("nan")), x.cast("f32").cast("f64")), "r32")
    if fmt.kind == "int":
        r = _round_grid(blk, x, mode, rand_word)
        lo, hi = -(fmt.max_finite + 1.0), fmt.max_finite
        r = blk.let(select(r.lt(f64(lo)), f64(lo), select(r.gt(f64(hi)), f64(hi), r)), "ri")
        r = blk.let(select(isnan(r), f64(0.0), r) + f64(0.0), "ri")
        return r
    bits = blk.let(x.bitcast("u64"), "bits")
    ulp0 = blk.let((bits & u64(F64_EXP_MASK)).bitcast("f64"), "e")
    lo, hi = f64(2.0 ** fmt.emin), f64(2.0 ** fmt.emax)
    ulp = blk.let(select(ulp0.lt(lo), lo, select(ulp0.gt(hi), hi, ulp0))
                  * f64(2.0 ** (1 - fmt.precision)), "ulp")
    s = blk.let(x / ulp, "s")
    r = _round_grid(blk, s, mode, rand_word)
    r = blk.let(copysign_bits(r * ulp, bits), "r")

    mx = fmt.max_finite
    big = float("inf") if fmt.has_inf else (float("nan") if fmt.has_nan else mx)
    neg = bits.ge(u64(F64_SIGN))
    absx = unary("abs", x)
    nan_in = isnan(x)
    inf_in = absx.eq(f64(float("inf")))
    if sat:
        special = select(neg, f64(-mx), f64(mx))
    else:
        pos_v = {"rne": big, "sr": big, "rz": mx, "ru": big, "rd": mx}[mode]
        neg_v = {"rne": -big, "sr": -big, "rz": -mx, "ru": -mx, "rd": -big}[mode]
        special = select(inf_in, select(neg, f64(-big), f64(big)),
                         select(neg, f64(neg_v), f64(pos_v)))
    if fmt.has_nan:
        nan_v = f64(float("nan"))
    else:  # e2m1: NaN -> zero of the opposite sign (ml_dtypes)
        nan_v = select(neg, f64(0.0), f64(-0.0))
    special = select(nan_in, nan_v, special)
    in_range = unary("abs", r).le(f64(mx))
    r = blk.let(select(in_range, r, special), "r")
    if not fmt.has_zero:  # e8m0
        mn = fmt.min_normal
        r = blk.let(select(r.eq(f64(0.0)) & x.gt(f64(0.0)), f64(mn), r), "r")
        r = blk.let(select(x.eq(f64(0.0)), f64(float("nan")), r), "r")
        if mode == "rne":
            r = blk.let(select(x.gt(f64(mn)) & x.lt(f64(2 * mn)), f64(2 * mn), r), "r")
    if not fmt.signed:
        r = blk.let(select(x.lt(f64(0.0)), f64(float("nan")), r), "r")
    return r


def _round_grid(blk: Block, s: KExpr, mode: str, rand_word: Callable[[], KExpr] | None) -> KExpr:
    if mode == "rne":
        return blk.let(unary("rint", s), "g")
    if mode == "rz":
        return blk.let(unary("trunc", s), "g")
    if mode == "ru":
        return blk.let(unary("ceil", s), "g")
    if mode == "rd":
        return blk.let(unary("floor", s), "g")
    assert mode == "sr" and rand_word is not None
    u = blk.let(rand_word().cast("f64"), "w")
    lo = blk.let(unary("floor", s), "lo")
    frac = (s - lo) * f64(4294967296.0)
    return blk.let(lo + select(frac.gt(u), f64(1.0), f64(0.0)), "g")


# ---------------------------------------------------------------------------------------------
# storage codes
def storage_dtype(fmt: Format) -> str:
    """The primitive dtype one stored element of `fmt` uses."""
    if fmt.name in ("f64", "f32"):
        return fmt.name
    if fmt.kind == "int":
        return "i32"
    if fmt.kind == "bool":
        return "u8"
    return "u16" if fmt.bits == 16 else "u8"


def _fields(fmt: Format) -> tuple[int, int, int]:
    """(exponent bits, mantissa bits, bias) of a float format."""
    m = fmt.precision - 1
    e = fmt.bits - m - (1 if fmt.signed else 0)
    return e, m, 1 - fmt.emin


def carrier(fmt: Format) -> str:
    """The primitive dtype that holds a value of `fmt` in registers (always exact)."""
    if fmt.kind == "bool":
        return "bool"
    if fmt.name == "f64" or fmt.kind == "int":
        return "f64"
    return "f32"


# The narrow float formats whose codes are read and written with 32-bit operations only
# (:func:`_decode_u32`, :func:`_encode_u32`); the others keep the float64 expansions.
U32_CODEC_FORMATS = ("bf16", "f16", "e4m3", "e5m2", "e2m1", "e8m0")
F32_SIGN, F32_ABS, F32_INF, F32_QNAN = 0x80000000, 0x7FFFFFFF, 0x7F800000, 0x7FC00000


def _u32(v: int) -> KExpr:
    return const(v, "u32")


def decode(blk: Block, raw: KExpr, fmt: Format) -> KExpr:
    """A loaded storage element -> its value in the format's carrier dtype.

    The narrow floats (carrier f32) decode with u32/f32 operations (:func:`_decode_u32`), the
    same bits as the float64 definition (:func:`_decode_f64`), which any other case keeps.
    """
    if fmt.kind == "bool":
        return blk.let(raw.ne(const(0, raw.dtype)), "b")
    if fmt.name in ("f32", "f64"):
        return raw
    if fmt.kind == "int":
        return blk.let(raw.cast("f64"), "i")
    if fmt.name in U32_CODEC_FORMATS and raw.dtype in ("u8", "u16", "u32"):
        return _decode_u32(blk, raw, fmt)
    return _decode_f64(blk, raw, fmt)


def encode(blk: Block, value: KExpr, fmt: Format) -> KExpr:
    """A value of `fmt` (any float carrier) -> its storage element.

    An f32 value of a narrow float (or an f64 that is a cast of one, as ``cuda_convert``'s
    probes write it) encodes with u32/f32 operations (:func:`_encode_u32`), the same codes as
    the float64 definition (:func:`_encode_f64`), which any other case keeps.
    """
    if fmt.name in U32_CODEC_FORMATS:
        x = value
        if x.dtype == "f64" and x.op == "cast" and x.args[0].dtype == "f32":
            x = x.args[0]  # exact: the f64 holds the f32's value
        if x.dtype == "f32":
            return _encode_u32(blk, x, fmt)
    return _encode_f64(blk, value, fmt)


# 32-bit codecs. A code of a narrow float with E exponent bits, M mantissa bits and bias B is
# an f32 bit pattern with fewer bits: for a normal value, the f32 bits of |x| are the code's
# magnitude bits shifted left by 23 - M plus (127 - B) << 23 (the bias difference), so either
# direction is a shift and an integer add or subtract. Subnormals of the format (exponent field
# 0, f16/fp8/e2m1; they are normal f32 values there) go through the f32 "magic" number
# 2**(emin - M + 23), whose ulp is the format's subnormal spacing 2**(emin - M): for a
# subnormal (or zero) v, ``magic + v`` is exact and its bits are magic's plus v's code, so an
# exact f32 add and an integer subtract give the code, and an integer or and an exact f32
# subtract give the value back (no denormal f32 is ever made, so flush-to-zero cannot matter).
# bf16 shares f32's exponent range (its codes are f32's top 16 bits, subnormals included) and
# e8m0's code is the f32 exponent field (2**-127, code 0, is f32's subnormal 0x00400000).
# Infinities and NaN are selected: decoding gives the quiet NaN 0x7FC00000 with the code's
# sign (as the float64 path, which builds a NaN and negates it), encoding the format's
# canonical NaN code with the value's sign bit (e8m0: 255).
#
# The domain of encode is the format's values (both zeros, subnormals) and NaN / +-inf where
# the format has them, which is all a carrier of the format ever holds (``round_to`` maps
# everything else); there the codes equal the float64 path's. Off the domain (finite values
# off the grid, inf in e4m3/e2m1/e8m0, NaN in e2m1, zero in e8m0) the code is unspecified.
def _decode_u32(blk: Block, raw: KExpr, fmt: Format) -> KExpr:
    c = blk.let(raw.cast("u32"), "code")
    if fmt.name == "e8m0":
        b = select(c.eq(_u32(0)), _u32(0x00400000),
                   select(c.eq(_u32(255)), _u32(F32_QNAN), c << _u32(23)))
        return blk.let(b.bitcast("f32"), "v")
    if fmt.name == "bf16":
        b = blk.let(c << _u32(16), "vb")
        b = select((b & _u32(F32_ABS)).gt(_u32(F32_INF)), (b & _u32(F32_SIGN)) | _u32(F32_QNAN), b)
        return blk.let(b.bitcast("f32"), "v")
    E, M, B = _fields(fmt)
    sb = E + M  # the sign bit's position in the code
    m = blk.let(c & _u32((1 << sb) - 1), "mag")
    nrm = (m << _u32(23 - M)) + _u32((127 - B) << 23)
    magic = 2.0 ** (fmt.emin - M + 23)
    sub = ((m | _u32(float_bits(magic, "f32"))).bitcast("f32") - const(magic, "f32")).bitcast("u32")
    mag = select(m.lt(_u32(1 << M)), sub, nrm)
    top = ((1 << E) - 1) << M  # the top exponent field with a zero mantissa
    if fmt.has_inf:
        mag = select(m.ge(_u32(top)), select(m.eq(_u32(top)), _u32(F32_INF), _u32(F32_QNAN)),
                     mag)
    elif fmt.has_nan:  # e4m3fn: only S.1111.111 is NaN
        mag = select(m.eq(_u32((1 << sb) - 1)), _u32(F32_QNAN), mag)
    mag = blk.let(mag, "mb")
    sign = (c << _u32(31 - sb)) & _u32(F32_SIGN)
    return blk.let((mag | sign).bitcast("f32"), "v")


def _encode_u32(blk: Block, x: KExpr, fmt: Format) -> KExpr:
    st = storage_dtype(fmt)
    xb = blk.let(x.bitcast("u32"), "xb")
    a = blk.let(xb & _u32(F32_ABS), "a")
    if fmt.name == "e8m0":  # no sign (the float64 path takes |x|); NaN has exponent field 255
        return blk.let((a >> _u32(23)).cast(st), "st")
    if fmt.name == "bf16":
        b = select(a.gt(_u32(F32_INF)), (xb & _u32(F32_SIGN)) | _u32(F32_QNAN), xb)
        return blk.let((b >> _u32(16)).cast(st), "st")
    E, M, B = _fields(fmt)
    sb = E + M
    nrm = (a >> _u32(23 - M)) - _u32((127 - B) << M)
    magic = 2.0 ** (fmt.emin - M + 23)
    sub = (a.bitcast("f32") + const(magic, "f32")).bitcast("u32") - _u32(float_bits(magic, "f32"))
    body = select(a.lt(_u32((fmt.emin + 127) << 23)), sub, nrm)
    top = ((1 << E) - 1) << M
    if fmt.has_inf:
        body = select(a.ge(_u32(F32_INF)),
                      select(a.eq(_u32(F32_INF)), _u32(top), _u32(top | (1 << (M - 1)))), body)
    elif fmt.has_nan:
        body = select(a.gt(_u32(F32_INF)), _u32(top | ((1 << M) - 1)), body)
    body = blk.let(body, "cd")
    sign = (xb >> _u32(31 - sb)) & _u32(1 << sb)
    return blk.let((body | sign).cast(st), "st")


def _decode_f64(blk: Block, raw: KExpr, fmt: Format) -> KExpr:
    """decode through float64 arithmetic (the definition, step by step)."""
    if fmt.kind == "bool":
        return blk.let(raw.ne(const(0, raw.dtype)), "b")
    if fmt.name in ("f32", "f64"):
        return raw
    if fmt.kind == "int":
        return blk.let(raw.cast("f64"), "i")
    c = blk.let(raw.cast("i64"), "code")
    if fmt.name == "e8m0":
        v = pow2_f64(c - 127)
        v = select(c.eq(const(255, "i64")), f64(float("nan")), v)
        return blk.let(v.cast("f32"), "v")
    E, M, B = _fields(fmt)
    e = blk.let((c >> const(M, "i64")) & const((1 << E) - 1, "i64"), "ex")
    f = blk.let(c & const((1 << M) - 1, "i64"), "man")
    sub = f.cast("f64") * f64(2.0 ** (1 - B - M))
    nrm = (f + (1 << M)).cast("f64") * pow2_f64(e - (B + M))
    mag = blk.let(select(e.eq(const(0, "i64")), sub, nrm), "mag")
    top = (1 << E) - 1
    if fmt.has_inf:
        mag = blk.let(select(e.eq(const(top, "i64")),
                             select(f.eq(const(0, "i64")), f64(float("inf")), f64(float("nan"))),
                             mag), "mag")
    elif fmt.has_nan:  # e4m3fn: only S.1111.111 is NaN
        mag = blk.let(select(e.eq(const(top, "i64")) & f.eq(const((1 << M) - 1, "i64")),
                             f64(float("nan")), mag), "mag")
    neg = ((c >> const(E + M, "i64")) & const(1, "i64")).eq(const(1, "i64"))
    return blk.let(select(neg, -mag, mag).cast("f32"), "v")


def _encode_f64(blk: Block, value: KExpr, fmt: Format) -> KExpr:
    """encode through float64 arithmetic (the definition, step by step)."""
    st = storage_dtype(fmt)
    if fmt.kind == "bool":
        b = value if value.dtype == "bool" else value.ne(const(0, value.dtype))
        return blk.let(select(b, const(1, "u8"), const(0, "u8")), "st")
    if fmt.name in ("f32", "f64"):
        return value.cast(fmt.name)
    if fmt.kind == "int":
        return blk.let(value.cast("f64").cast("i32"), "st")
    v = blk.let(value.cast("f64"), "x")
    bits = blk.let(v.bitcast("u64"), "bits")
    a = blk.let(unary("abs", v), "a")
    # the finite magnitude (0 for inf/NaN), so that no arm ever converts a non-finite to int
    af = blk.let(select(a.le(f64(fmt.max_finite)), a, f64(0.0)), "af")
    eb = blk.let(((af.bitcast("u64") >> u64(52)) & u64(0x7FF)).cast("i64") - const(1023, "i64"),
                 "eb")
    if fmt.name == "e8m0":
        code = select(isnan(v), const(255, "i64"), eb + 127)
        return blk.let(code.cast(st), "st")
    ebn = blk.let(select(eb.lt(const(fmt.emin, "i64")), const(fmt.emin, "i64"), eb), "ebn")
    E, M, B = _fields(fmt)
    sign = blk.let(select(bits.ge(u64(F64_SIGN)), const(1 << (E + M), "i64"), const(0, "i64")),
                   "sg")
    subf = (af * f64(2.0 ** (M - fmt.emin))).cast("i64")
    nrmf = (af * pow2_f64(const(M, "i64") - ebn)).cast("i64") - (1 << M)
    normal = ((ebn + B) << const(M, "i64")) | nrmf
    body = blk.let(select(eb.lt(const(fmt.emin, "i64")), subf, normal), "cd")
    top = (1 << E) - 1
    if fmt.has_inf:
        nan_code, inf_code = (top << M) | (1 << (M - 1)), top << M
    elif fmt.has_nan:
        nan_code, inf_code = (top << M) | ((1 << M) - 1), 0
    else:
        nan_code, inf_code = 0, 0
    body = select(a.eq(f64(0.0)), const(0, "i64"), body)
    if fmt.has_inf:
        body = select(a.eq(f64(float("inf"))), const(inf_code, "i64"), body)
    if fmt.has_nan:
        body = select(isnan(v), const(nan_code, "i64"), body)
    return blk.let((sign | body).cast(st), "st")


# ---------------------------------------------------------------------------------------------
# statements as one expression
def inline_lets(stmts: list[Stmt], e: KExpr) -> KExpr:
    """``e`` with the ``Let`` names of ``stmts`` replaced by their values (a DAG, shared nodes
    stay shared): for places that hold one expression, such as a ``Reduce`` combine."""
    env: dict[str, KExpr] = {}
    memo: dict[int, KExpr] = {}

    def sub(x: KExpr) -> KExpr:
        hit = memo.get(id(x))
        if hit is not None:
            return hit
        if x.op == "var":
            out = env.get(x.attrs[0], x)
        elif not x.args:
            out = x
        else:
            args = tuple(sub(a) for a in x.args)
            out = x if args == x.args else KExpr(x.op, args, x.attrs, x.dtype)
        memo[id(x)] = out
        return out

    for s in stmts:
        assert isinstance(s, Let), s
        memo.clear()  # a name may be rebound only once, but keep lookups simple and correct
        env[s.name] = sub(s.value)
    memo.clear()
    return sub(e)


def round_expr(x: KExpr, fmt: Format) -> KExpr:
    """:func:`round_to` (mode rne) as a single expression."""
    blk = Block(prefix="_re")
    r = round_to(blk, x, fmt)
    return inline_lets(blk.stmts, r)
