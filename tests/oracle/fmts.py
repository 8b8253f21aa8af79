"""Number formats, written independently from the IEEE 754 / OCP MX / OCP FP8 tables.

Only used to generate representable inputs and to type generated programs; the oracle never
rounds anything (the ideal program has no rounding; the computed value comes from numgrade).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Fmt:
    name: str
    kind: str            # float | int | bool
    p: int = 0           # significand bits including the implicit one
    emin: int = 0        # exponent of the smallest normal
    emax: int = 0        # exponent of the largest binade
    maxv: Fraction = Fraction(0)
    sub: bool = True     # subnormals
    signed: bool = True
    zero: bool = True
    inf: bool = True

    @property
    def quantum(self) -> Fraction:
        """Smallest positive value (spacing of the subnormal grid)."""
        if self.kind != "float":
            return Fraction(1)
        if self.sub:
            return Fraction(2) ** (self.emin - self.p + 1)
        return Fraction(2) ** self.emin


def _fl(name, p, emin, emax, maxv, **kw):
    return Fmt(name, "float", p, emin, emax, Fraction(maxv), **kw)


F = {
    # IEEE 754 binary64 / binary32 / binary16; bfloat16 = binary32 with 8-bit significand
    "f64": _fl("f64", 53, -1022, 1023, (2 - Fraction(1, 2**52)) * Fraction(2) ** 1023),
    "f32": _fl("f32", 24, -126, 127, (2 - Fraction(1, 2**23)) * Fraction(2) ** 127),
    "f16": _fl("f16", 11, -14, 15, 65504),
    "bf16": _fl("bf16", 8, -126, 127, (2 - Fraction(1, 2**7)) * Fraction(2) ** 127),
    # OCP 8-bit FP: E4M3 (fn: no inf, max 448), E5M2 (IEEE-like, max 57344)
    "e4m3": _fl("e4m3", 4, -6, 8, 448, inf=False),
    "e5m2": _fl("e5m2", 3, -14, 15, 57344),
    # OCP MX: E2M1 (values 0, .5, 1, 1.5, 2, 3, 4, 6), E8M0 (2^-127 .. 2^127, no sign, no 0)
    "e2m1": _fl("e2m1", 2, 0, 2, 6, inf=False),
    "e8m0": _fl("e8m0", 1, -127, 127, Fraction(2) ** 127, sub=False, signed=False, zero=False,
                inf=False),
    "i32": Fmt("i32", "int", maxv=Fraction(2**31 - 1)),
    "bool": Fmt("bool", "bool", maxv=Fraction(1), signed=False),
}

FLOATS = ["f64", "f32", "f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0"]
PROMOTION_ORDER = ["e2m1", "e8m0", "e4m3", "e5m2", "f16", "bf16", "f32", "f64"]
ML_DTYPES = {"f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
             "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2", "e2m1": "float4_e2m1fn",
             "e8m0": "float8_e8m0fnu", "i32": "int32", "bool": "bool"}


def minv(f: Fmt) -> Fraction:
    if f.kind == "int":
        return Fraction(-(2**31))
    if f.kind == "bool":
        return Fraction(0)
    if not f.signed:
        return f.quantum
    return -f.maxv


def represents(a: str, b: str) -> bool:
    """Every value of format b is a value of format a."""
    A, B = F[a], F[b]
    if a == b:
        return True
    if A.kind != "float" or B.kind != "float":
        return False
    if B.zero and not A.zero or B.signed and not A.signed:
        return False
    if B.p > A.p or B.maxv > A.maxv:
        return False
    if A.sub:
        return B.quantum >= A.quantum
    return B.emin >= A.emin and B.p <= 1 and not B.zero  # only e8m0-like B fits a no-subnormal A


def promote(a: str, b: str) -> str:
    if a == b:
        return a
    if a == "i32":
        return b
    if b == "i32":
        return a
    if represents(a, b):
        return a
    if represents(b, a):
        return b
    for c in PROMOTION_ORDER:
        if represents(c, a) and represents(c, b):
            return c
    return "f64"


# --- the grid of a format -----------------------------------------------------------------

def _exp(x: Fraction) -> int:
    """floor(log2 |x|) for x != 0, exactly."""
    n, d = abs(x.numerator), x.denominator
    e = n.bit_length() - d.bit_length()
    if Fraction(n, d) < Fraction(2) ** e:
        e -= 1
    return e


def ulp(f: Fmt, x: Fraction) -> Fraction:
    """Grid spacing in the binade of |x| (x != 0 on the grid or not)."""
    if x == 0:
        return f.quantum
    e = max(_exp(x), f.emin)
    return Fraction(2) ** (e - f.p + 1)


def on_grid(f: Fmt, x: Fraction) -> bool:
    if f.kind == "bool":
        return x in (0, 1)
    if f.kind == "int":
        return x.denominator == 1 and -(2**31) <= x <= 2**31 - 1
    if x == 0:
        return f.zero
    if x < 0 and not f.signed or abs(x) > f.maxv:
        return False
    if not f.sub and _exp(x) < f.emin:
        return False
    q = x / ulp(f, x)
    return q.denominator == 1


def grid_floor(f: Fmt, x: Fraction) -> Fraction | None:
    """Largest grid value <= x (None if there is none)."""
    lo = minv(f)
    if x < lo:
        return None
    if x >= f.maxv:
        return f.maxv
    if f.kind == "int":
        return Fraction(math.floor(x))
    if f.kind == "bool":
        return Fraction(1) if x >= 1 else Fraction(0)
    if not f.zero and x < f.quantum:
        return None
    if x == 0:
        return x
    if x > 0:
        u = ulp(f, x)
        r = Fraction(math.floor(x / u)) * u
        if not f.sub and r < f.quantum:
            return None if not f.zero else Fraction(0)
        return r
    c = grid_ceil(f, -x)
    return -c if c is not None else None


def grid_ceil(f: Fmt, x: Fraction) -> Fraction | None:
    """Smallest grid value >= x (None if there is none)."""
    if x > f.maxv:
        return None
    if x <= minv(f):
        return minv(f)
    if f.kind == "int":
        return Fraction(math.ceil(x))
    if f.kind == "bool":
        return Fraction(0) if x <= 0 else Fraction(1)
    if x == 0:
        return x if f.zero else f.quantum
    if x > 0:
        if not f.zero and x < f.quantum:
            return f.quantum
        u = ulp(f, x)
        r = Fraction(math.ceil(x / u)) * u
        return r
    fl = grid_floor(f, -x)
    return -fl if fl is not None else None


def next_up(f: Fmt, x: Fraction) -> Fraction | None:
    """Smallest grid value > x."""
    if f.kind in ("int", "bool"):
        return grid_ceil(f, Fraction(math.floor(x)) + 1)
    if x >= f.maxv:
        return None
    if x < 0:
        d = next_down(f, -x)
        if d is None:
            return Fraction(0) if f.zero else None
        return -d
    if x == 0 or (not f.zero and x < f.quantum):
        return f.quantum
    return grid_ceil(f, x + ulp(f, x) / 2)


def next_down(f: Fmt, x: Fraction) -> Fraction | None:
    """Largest grid value < x."""
    if f.kind in ("int", "bool"):
        return grid_floor(f, Fraction(math.ceil(x)) - 1)
    if x <= 0:
        u = next_up(f, -x) if f.signed else None
        return -u if u is not None else None
    if x <= f.quantum:
        return Fraction(0) if f.zero else None
    e = _exp(x)
    if Fraction(2) ** e == x and e > f.emin:
        step = Fraction(2) ** (e - 1 - f.p + 1)
    else:
        step = ulp(f, x)
    return grid_floor(f, x - step / 2)
