"""Exact folding of constant expressions (SPEC section 2: folded exactly, then rounded once).

Rational operations stay exact as Fractions; the rest (sqrt, exp, ...) are evaluated with mpmath
at 256 bits, far beyond any format here, and converted to an exact Fraction of that binary value.
Rounding a folded constant to a format is a single correct rounding of the exact value: the
value is first brought to float64 with round-to-odd, which makes the following rounding to any
narrower format exact (double rounding through round-to-odd is innocuous).

A 256-bit value of tanh(100.3) is not the real one (it is 1, the real one 1 - 2^-288), so every
folded value carries a *radius*: a bound on its distance from the real value of the expression,
from mpmath's interval arithmetic (its elementary functions return rigorous enclosures). It is 0
for rationals and for exact cases (exp(0), sqrt(9/4), exp2(3), log2(8)); the analyses count it
as part of the constant's error. A comparison, floor, ceil or % whose outcome the enclosure does
not decide is a diagnostic rather than a guess.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import mpmath
from mpmath.ctx_iv import MPIntervalContext
import numpy as np

from ..ir.formats import Format, round_array

_MP = mpmath.MPContext()
_MP.prec = 256
_IV = MPIntervalContext()
_IV.prec = 256
ZERO = Fraction(0)


class FoldError(Exception):
    """A constant expression has no real value (division by zero, sqrt of a negative...)."""


# Exact folding keeps every constant as a Fraction; these bounds keep that cheap and printable
# (far beyond any format: f64 spans 2^-1074 .. 2^1024). Larger values are a diagnostic.
MAX_FOLD_BITS = 10000
MAX_LITERAL_CHARS = 1000
_TOO_BIG = f"constant expression is beyond the range of exact folding ({MAX_FOLD_BITS} bits)"


def check_size(r):
    """r itself, or FoldError when an exact constant outgrows MAX_FOLD_BITS."""
    if isinstance(r, Fraction) and not isinstance(r, bool) and (
            r.numerator.bit_length() > MAX_FOLD_BITS
            or r.denominator.bit_length() > MAX_FOLD_BITS):
        raise FoldError(_TOO_BIG)
    return r


def parse_number(text: str) -> Fraction:
    mant, _, exp = text.lower().partition("e")
    if len(text) > MAX_LITERAL_CHARS or len(exp.lstrip("+-")) > 5 or \
            (exp and abs(int(exp)) > 3 * MAX_FOLD_BITS // 10):
        raise FoldError(f"number literal {text[:20]}{'...' if len(text) > 20 else ''} "
                        "is out of range")
    try:
        return check_size(Fraction(text))
    except ValueError:  # e.g. 'inf' from the Python embedding
        raise FoldError(f"{text[:20]!r} is not a number literal") from None


def exact_decimal(a: Fraction, max_digits: int = 40) -> str | None:
    """The decimal text that denotes a non-negative rational exactly (e.g. ``0.375``), or None
    when its expansion does not terminate within max_digits digits after the point."""
    if a.denominator == 1:
        return str(a.numerator)
    d, twos, fives = a.denominator, 0, 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    k = max(twos, fives)
    if d != 1 or k > max_digits:
        return None
    digits = str(a.numerator * 10 ** k // a.denominator).rjust(k + 1, "0")
    return f"{digits[:-k]}.{digits[-k:]}"


def _to_mpf(x: Fraction):
    return _MP.mpf(x.numerator) / x.denominator


def _from_mpf(v) -> Fraction:
    if not _MP.isfinite(v):
        raise FoldError("constant expression is not finite")
    return _from_mpf_tuple(_MP.mpf(v)._mpf_)


def _from_mpf_tuple(t) -> Fraction:
    """The exact value of an mpmath ``_mpf_`` tuple (the sign kept, unlike man_exp)."""
    sign, man, exp, _ = t
    if not man and exp:  # inf or nan: an enclosure that says nothing
        raise FoldError("constant expression is not finite")
    if abs(int(exp)) > MAX_FOLD_BITS:
        raise FoldError(_TOO_BIG)
    r = Fraction(int(man)) * (Fraction(2) ** int(exp))
    return check_size(-r if sign else r)


def radius_up(r: Fraction) -> Fraction:
    """r rounded up to a power of two (0 stays 0): radii stay short Fractions."""
    if r <= 0:
        return ZERO
    k = r.numerator.bit_length() - r.denominator.bit_length()
    p = Fraction(2) ** k
    while p < r:
        p *= 2
    return check_size(p)


def _undecided(what: str, r: Fraction) -> FoldError:
    return FoldError(f"{what} is not decided: the constants are known to within "
                     f"{float(r):.3g} only (a function was folded at 256 bits)")


def fold_binary(op: str, a: Fraction, b: Fraction) -> Fraction | bool:
    """The exact value of a binary operation on exact constants."""
    return fold_binary_enclosed(op, a, ZERO, b, ZERO)[0]


def fold_binary_enclosed(op: str, a: Fraction, ra: Fraction, b: Fraction,
                         rb: Fraction) -> tuple[Fraction | bool, Fraction]:
    """The value of ``a op b`` and its radius, for operands known to within ra and rb."""
    if ra == 0 and rb == 0:
        return check_size(_fold_binary(op, a, b)), ZERO
    r_both = ra + rb
    if op in ("+", "-"):
        return check_size(_fold_binary(op, a, b)), radius_up(r_both)
    if op == "*":
        return check_size(a * b), radius_up(abs(a) * rb + abs(b) * ra + ra * rb)
    if op in ("min", "max"):  # 1-Lipschitz in each operand
        return _fold_binary(op, a, b), radius_up(max(ra, rb))
    if op in ("/", "%"):
        if abs(b) <= rb:
            raise FoldError(f"{'division' if op == '/' else 'modulo'} by a constant that may be "
                            f"zero (it is known to within {float(rb):.3g} only)")
        # a / b is monotone in each operand on the box, so its extremes are at the corners
        corners = [(a + sa) / (b + sb) for sa in (-ra, ra) for sb in (-rb, rb)]
        if op == "/":
            q = a / b
            return check_size(q), radius_up(max(abs(c - q) for c in corners))
        n = math.floor(a / b)
        if any(math.floor(c) != n for c in corners):
            raise _undecided("the quotient's integer part in '%'", r_both)
        return check_size(a - b * n), radius_up(ra + abs(n) * rb)
    d = a - b  # comparisons: decided when the difference's enclosure keeps one side
    tests = {"<": (d + r_both < 0, d - r_both >= 0), "<=": (d + r_both <= 0, d - r_both > 0),
             ">": (d - r_both > 0, d + r_both <= 0), ">=": (d - r_both >= 0, d + r_both < 0),
             "==": (False, abs(d) > r_both), "!=": (abs(d) > r_both, False)}
    if op in tests:
        true, false = tests[op]
        if true or false:
            return bool(true), ZERO
        raise _undecided(f"the comparison '{op}'", r_both)
    raise FoldError(f"operator {op} cannot be folded")


def _fold_binary(op: str, a: Fraction, b: Fraction) -> Fraction | bool:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise FoldError("division by zero in a constant expression")
        return a / b
    if op == "%":
        if b == 0:
            raise FoldError("modulo by zero in a constant expression")
        return a - b * math.floor(a / b)
    if op == "min":
        return min(a, b)
    if op == "max":
        return max(a, b)
    cmp = {"==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}
    if op in cmp:
        return cmp[op]
    raise FoldError(f"operator {op} cannot be folded")


def fold_unary(op: str, a: Fraction) -> Fraction:
    """The folded value of a function of an exact constant (see fold_unary_enclosed)."""
    return fold_unary_enclosed(op, a, ZERO)[0]


def _iv_of(x: Fraction):
    return _IV.mpf(x.numerator) / x.denominator


def _tanh_iv(y):
    """tanh on an interval of non-negative numbers, without cancellation near 0 or at large y."""
    e = _IV.expm1(2 * y)
    return e / (e + 2)


# increasing (+1) or decreasing (-1) functions: the enclosure comes from the two ends
_MONOTONE = {
    "exp": (1, lambda y: _IV.exp(y)),
    "exp2": (1, lambda y: _IV.exp(y * _IV.log(2))),
    "log": (1, lambda y: _IV.log(y)),
    "log2": (1, lambda y: _IV.log(y) / _IV.log(2)),
    "sqrt": (1, lambda y: _IV.sqrt(y)),
    "rsqrt": (-1, lambda y: 1 / _IV.sqrt(y)),
    "sigmoid": (1, lambda y: 1 / (1 + _IV.exp(-y))),
    "tanh": (1, lambda y: _tanh_iv(y) if y >= 0 else -_tanh_iv(-y)),
}


def _enclosure(op: str, lo: Fraction, hi: Fraction) -> tuple[Fraction, Fraction]:
    """Rigorous bounds on op over [lo, hi] (mpmath interval arithmetic at 256 bits)."""
    if op in ("sin", "cos"):
        y = _IV.mpf([_iv_of(lo).a, _iv_of(hi).b])
        r = _IV.sin(y) if op == "sin" else _IV.cos(y)
        return _from_mpf_tuple(r._mpi_[0]), _from_mpf_tuple(r._mpi_[1])
    sense, f = _MONOTONE[op]
    at_lo, at_hi = f(_iv_of(lo)), f(_iv_of(hi))
    if sense < 0:
        at_lo, at_hi = at_hi, at_lo
    return _from_mpf_tuple(at_lo._mpi_[0]), _from_mpf_tuple(at_hi._mpi_[1])


def _exact_case(op: str, a: Fraction) -> Fraction | None:
    """The exact value where a function of a rational is rational and easy to see."""
    if op == "exp2" and a.denominator == 1:
        return Fraction(2) ** int(a)
    if op == "log2" and a > 0 and 1 in (a.numerator, a.denominator):
        m = max(a.numerator, a.denominator)   # a = 2^k or 2^-k when m is a power of two
        if m & (m - 1) == 0:
            k = m.bit_length() - 1
            return Fraction(k if a.denominator == 1 else -k)
    return None


def fold_unary_enclosed(op: str, a: Fraction, ra: Fraction) -> tuple[Fraction, Fraction]:
    """The value of op(a) and its radius (a bound on its distance from the real value), for an
    operand known to within ra."""
    if op == "neg":
        return -a, ra
    if op == "abs":
        return abs(a), ra
    if op in ("floor", "ceil"):
        rnd = math.floor if op == "floor" else math.ceil
        if rnd(a - ra) != rnd(a + ra):
            raise _undecided(op, ra)
        return Fraction(rnd(a)), ZERO
    lo, hi = a - ra, a + ra
    if op in ("sqrt", "rsqrt"):
        if a < 0:
            raise FoldError(f"{op} of a negative constant")
        if a == 0 and op == "rsqrt":
            raise FoldError("rsqrt of zero")
        if lo < 0 or (lo == 0 and op == "rsqrt"):
            raise _undecided(f"the sign of the operand of {op}", ra)
    elif op in ("log", "log2"):
        if a <= 0:
            raise FoldError(f"{op} of a non-positive constant")
        if lo <= 0:
            raise _undecided(f"the sign of the operand of {op}", ra)
    elif op in ("exp", "exp2", "sigmoid"):
        if abs(a) > 100000:
            raise FoldError(f"{op} of this constant is out of range")
    elif op not in ("tanh", "sin", "cos"):
        raise FoldError(f"{op} cannot be folded")
    if ra == 0:
        exact = _exact_case(op, a)
        if exact is not None:
            return check_size(exact), ZERO
    value = _point_value(op, a)
    e_lo, e_hi = _enclosure(op, lo, hi)
    return value, radius_up(max(abs(value - e_lo), abs(e_hi - value)))


def _point_value(op: str, a: Fraction) -> Fraction:
    """op(a) at 256 bits (the value a constant is rounded from)."""
    v = _to_mpf(a)
    if op in ("sqrt", "rsqrt"):
        r = _MP.sqrt(v)
        return _from_mpf(1 / r if op == "rsqrt" else r)
    if op in ("log", "log2"):
        return _from_mpf(_MP.log(v) if op == "log" else _MP.log(v, 2))
    fns = {"exp": _MP.exp, "tanh": _MP.tanh, "sin": _MP.sin, "cos": _MP.cos,
           "sigmoid": lambda t: 1 / (1 + _MP.exp(-t)), "exp2": lambda t: _MP.power(2, t)}
    return _from_mpf(fns[op](v))


def _f64_round_to_odd(x: Fraction) -> float:
    """The float64 nearest x when exact, else the neighbour with an odd last significand bit."""
    try:
        f = float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf
    if math.isinf(f) or Fraction(f) == x:
        return f
    other = math.nextafter(f, math.inf if Fraction(f) < x else -math.inf)
    bits = struct.unpack("<q", struct.pack("<d", f))[0]
    return f if bits & 1 else other


def _f64_nearest(x: Fraction) -> float:
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


_F64_MAX_FLOAT = float(np.finfo(np.float64).max)
_F64_MAX = Fraction(_F64_MAX_FLOAT)


def _f64_directed(x: Fraction, mode: str) -> float:
    """float64 rounding of x in a directed mode (exact composition with narrower directed rounding)."""
    if abs(x) > _F64_MAX:  # beyond float64: directed rounding goes to inf or stays at max
        to_inf = (mode == "ru" and x > 0) or (mode == "rd" and x < 0)
        big = math.inf if to_inf else _F64_MAX_FLOAT
        return big if x > 0 else -big
    f = float(x)
    if math.isinf(f) or Fraction(f) == x:
        return f
    below = Fraction(f) < x
    if mode == "rz":
        toward = -math.inf if x > 0 else math.inf
        return f if (below == (x > 0)) else math.nextafter(f, toward)
    if mode == "rd":
        return f if below else math.nextafter(f, -math.inf)
    if mode == "ru":
        return f if not below else math.nextafter(f, math.inf)
    raise ValueError(mode)


def round_exact(x: Fraction, fmt: Format, mode: str = "rne", sat: bool = False) -> float:
    """Round an exact constant once to fmt; the result as a float64 holding the fmt value."""
    if fmt.kind == "bool":
        return float(x != 0)
    if mode == "rne":
        f = _f64_round_to_odd(x) if fmt.name != "f64" else _f64_nearest(x)
    elif mode in ("rz", "rd", "ru"):
        f = _f64_directed(x, mode)
    else:
        raise ValueError(mode)
    if fmt.name == "f64" and mode == "rne":
        return f
    return float(round_array(np.array([f], dtype=np.float64), fmt, mode=mode, sat=sat)[0])
