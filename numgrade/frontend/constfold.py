"""Exact folding of constant expressions (SPEC section 2: folded exactly, then rounded once).

Rational operations stay exact as Fractions; the rest (sqrt, exp, ...) are evaluated with mpmath
at 256 bits, far beyond any format here, and converted to an exact Fraction of that binary value.
Rounding a folded constant to a format is a single correct rounding of the exact value: the
value is first brought to float64 with round-to-odd, which makes the following rounding to any
narrower format exact (double rounding through round-to-odd is innocuous).
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import mpmath
import numpy as np

from ..ir.formats import Format, round_array

_MP = mpmath.MPContext()
_MP.prec = 256


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
    sign, man, exp, _ = _MP.mpf(v)._mpf_  # man_exp drops the sign, _mpf_ keeps it
    if abs(int(exp)) > MAX_FOLD_BITS:
        raise FoldError(_TOO_BIG)
    r = Fraction(int(man)) * (Fraction(2) ** int(exp))
    return check_size(-r if sign else r)


def fold_binary(op: str, a: Fraction, b: Fraction) -> Fraction | bool:
    return check_size(_fold_binary(op, a, b))


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
    if op == "neg":
        return -a
    if op == "abs":
        return abs(a)
    if op == "floor":
        return Fraction(math.floor(a))
    if op == "ceil":
        return Fraction(math.ceil(a))
    v = _to_mpf(a)
    if op in ("sqrt", "rsqrt"):
        if a < 0:
            raise FoldError(f"{op} of a negative constant")
        if a == 0 and op == "rsqrt":
            raise FoldError("rsqrt of zero")
        r = _MP.sqrt(v)
        return _from_mpf(1 / r if op == "rsqrt" else r)
    if op in ("log", "log2"):
        if a <= 0:
            raise FoldError(f"{op} of a non-positive constant")
        return _from_mpf(_MP.log(v) if op == "log" else _MP.log(v, 2))
    fns = {"exp": _MP.exp, "tanh": _MP.tanh, "sin": _MP.sin, "cos": _MP.cos,
           "sigmoid": lambda t: 1 / (1 + _MP.exp(-t)), "exp2": lambda t: _MP.power(2, t)}
    if op in fns:
        if op in ("exp", "exp2", "sigmoid") and abs(a) > 100000:
            raise FoldError(f"{op} of this constant is out of range")
        return _from_mpf(fns[op](v))
    raise FoldError(f"{op} cannot be folded")


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
