"""Sound, vectorised interval arithmetic over float64 bounds.

Range analysis (one interval per tensor value) and the interval branch-and-bound optimiser
(thousands of boxes at once) both need enclosures that are *guaranteed* to contain every real
value of an operation over its input intervals, computed with plain numpy array operations.

Semantics
---------
* ``Interval(lo, hi)`` denotes the set of reals ``{x : lo <= x <= hi}`` elementwise; ``lo`` and
  ``hi`` are float64 arrays of one shape (0-d for a single interval). ``lo`` may be ``-inf`` and
  ``hi`` may be ``+inf``; bounds are never NaN and ``lo <= hi`` always (results are never
  empty). An overflowed value ``+inf`` is normalised to ``[MAX, inf]`` (``-inf`` to
  ``[-inf, -MAX]``), the real numbers it can stand for.
* Operations with a restricted domain (``div``, ``sqrt``, ``rsqrt``, ``log``, ``log2``) enclose
  the values at the points of the box where they are defined (so ``sqrt([-1, 4]) = [0, 2]``). A
  box with no such point has no values and gets ``[-inf, inf]``. ``may_be_undefined`` reports
  the boxes that reach outside the domain, for callers that must flag NaN/inf risks.
* Python/numpy scalars and arrays are operands too: floats are exact; integers and fractions
  that float64 cannot hold exactly are enclosed by the two neighbouring doubles.

Outward rounding policy (numpy rounds to nearest, so computed bounds are pushed outward)
-----------------------------------------------------------------------------------------
* One *step* is a branch-free predecessor/successor (``y -/+ (PHI |y| + ETA)``, after Rump,
  Zimmermann, Boldo and Melquiond): it always passes the neighbouring double and moves 1 or at
  most 2 doubles. It is ~5x cheaper than ``np.nextafter``, which numpy runs as a scalar loop.
  (The steps, and the exact scalar ``up``/``down``, live in :mod:`numgrade.passes.outward`,
  shared by every analysis.)
* ``+``/``-``: TwoSum recovers the exact rounding error, so a bound takes a step outward only
  when the rounded sum is actually on the wrong side (exact sums stay exact).
* ``*``, ``/``, ``sqrt`` (correctly rounded in IEEE 754): one step outward, except products
  and quotients by a point power of two (``0.5 * x``, ``-x * 1``, ``x / 4``) that stay in the
  normal range, which are exact. Bounds that are mathematically sign-definite are clamped at
  0 (``[0,1]*[0,1]`` has lower bound exactly 0, ``sqr`` is never negative).
* libm functions (``exp``, ``exp2``, ``log``, ``log2``, ``sin``, ``cos``, ``tanh``, ``atan``):
  numpy's kernels are not correctly rounded. The assumed error bound is ``LIBM_MAX_ULPS = 4``
  ulps (the maximum documented for numpy's AVX-512 SVML kernels; glibc is tighter, and the
  tests measure it on the running machine). Bounds are widened to cover twice that,
  ``LIBM_WIDEN_ULPS = 8`` ulps of the true value (a relative move of about 9 * 2**-52 plus a
  few subnormal quanta), then clamped to known ranges (``exp >= 0``, ``tanh``/``sin``/``cos``
  in ``[-1, 1]``, ``atan`` within ``pi/2``, ``sigmoid`` in ``[0, 1]``, sign and
  ``|f(x)| <= |x|`` facts). Exact special values are used where known (``exp(0) = 1``,
  ``log(1) = 0``, ``exp2(k) = 2**k``, ``log2(2**k) = k``).
* ``sin``/``cos`` of arguments beyond ``TRIG_MAX_ARG = 2**20`` give ``[-1, 1]`` rather than
  trusting a libm's argument reduction there; extremum detection uses a sound enclosure of
  ``x / (pi/2)``.
* Composites (``rsqrt``, ``sigmoid``, ``pow_int``) are built from outward-rounded steps on
  monotone pieces, so each intermediate is itself a sound bound.
* Exact (no widening): ``neg``, ``abs``, ``min``, ``max``, ``floor``, ``ceil``, hull, intersect.

Assumes IEEE-754 binary64 with round-to-nearest-even (numpy's default) and no flush-to-zero.
"""

from __future__ import annotations

import decimal
import functools
import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence, TypeVar, Union

import numpy as np

from . import outward as _O

__all__ = [
    "Interval", "Operand", "LIBM_MAX_ULPS", "LIBM_WIDEN_ULPS", "TRIG_MAX_ARG", "MAX",
    "add", "sub", "mul", "div", "neg", "sqr", "pow_int", "sqrt", "rsqrt", "exp", "exp2", "log",
    "log2", "abs", "min", "max", "floor", "ceil", "tanh", "sigmoid", "sin", "cos", "atan",
    "hull", "may_be_undefined",
]

F64 = np.float64
MAX = float(np.finfo(np.float64).max)
INF = math.inf
LIBM_MAX_ULPS = 4
LIBM_WIDEN_ULPS = 2 * LIBM_MAX_ULPS  # widening used: twice the assumed error, as a margin
TRIG_MAX_ARG = 2.0**20
_HPI_LO = math.pi / 2  # float(pi) < pi, and halving is exact
_HPI_HI = math.nextafter(_HPI_LO, INF)
_ETA = _O.ETA  # smallest subnormal
_MIN_NORMAL = 2.0**-1022
_MANTISSA = np.int64((1 << 52) - 1)

Operand = Union["Interval", float, int, np.ndarray, np.generic, Fraction, decimal.Decimal]
_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def _quiet(fn: _Fn) -> _Fn:
    """Silence numpy's inf/NaN warnings: infinities are expected inputs and are handled."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Directed rounding helpers (NaN in, NaN out: callers replace NaN before or after)
# ----------------------------------------------------------------------------------------------

# one step past the neighbouring double (numgrade.passes.outward: the one implementation)
_down = _O.step_down
_up = _O.step_up


def _widen_down(y: np.ndarray, k: int) -> np.ndarray:
    """A double below every real t with |t - y| <= k ulp(t): a libm result y with error at
    most k ulps is pushed below the true value. Since ulp(t) <= max(2**-52 |t|, ETA), moving
    by (k+1) 2**-52 |y| + (k+2) ETA covers it plus the rounding of the computation itself.
    An overflowed y = +inf is first taken as MAX (the true value is near or above it)."""
    y = np.minimum(y, MAX)
    return y - (np.abs(y) * ((k + 1) * 2.0**-52) + (k + 2) * _ETA)


def _widen_up(y: np.ndarray, k: int) -> np.ndarray:
    y = np.maximum(y, -MAX)
    return y + (np.abs(y) * ((k + 1) * 2.0**-52) + (k + 2) * _ETA)


def _sum_err(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TwoSum: s = fl(a+b) and e with a+b = s+e exactly (e non-finite if anything overflowed)."""
    s = a + b
    bp = s - a
    e = (a - (s - bp)) + (b - bp)
    return s, e


def _add_down(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A lower bound on a+b: fl(a+b) itself when TwoSum shows it is not above the exact sum,
    else one step down (a branch-free select: the step is multiplied by the 'inexact' mask)."""
    s, e = _sum_err(a, b)
    return _O.step_down_unless(s, (e >= 0) & (e <= MAX))


def _add_up(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    s, e = _sum_err(a, b)
    return _O.step_up_unless(s, (e <= 0) & (e >= -MAX))


_step_down_unless = _O.step_down_unless
_step_up_unless = _O.step_up_unless


def _normal(v: np.ndarray) -> np.ndarray:
    """Finite and normal: a product/quotient by a power of two landing here was exact."""
    a = np.abs(v)
    return (a >= _MIN_NORMAL) & (a <= MAX)


def _nan_to(x: np.ndarray, fill: float) -> np.ndarray:
    return np.where(np.isnan(x), fill, x)


# ----------------------------------------------------------------------------------------------
# Operands
# ----------------------------------------------------------------------------------------------

def _enclose(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """Tightest float64 bounds containing the real value(s) x (not normalised)."""
    if isinstance(x, Interval):
        return x.lo, x.hi
    if isinstance(x, (bool, np.bool_)):
        v = np.asarray(float(x), F64)
        return v, v
    if isinstance(x, (int, np.integer, Fraction, decimal.Decimal)) or (
            isinstance(x, numbers.Rational) and not isinstance(x, np.ndarray)):
        if isinstance(x, decimal.Decimal) and not x.is_finite():
            f = float(x)
        else:
            q = Fraction(int(x)) if isinstance(x, (int, np.integer)) else Fraction(x)
            f_lo, f = _O.down(q), _O.up(q)
            if f_lo != f:
                return np.asarray(f_lo, F64), np.asarray(f, F64)
        if math.isnan(f):
            raise ValueError("an interval operand must not be NaN")
        v = np.asarray(f, F64)
        return v, v
    a = np.asarray(x)
    kind = a.dtype.kind
    if kind == "f":
        f = a.astype(F64)
        if np.isnan(f).any():
            raise ValueError("an interval operand must not be NaN")
        if a.dtype.itemsize <= 8:
            return f, f
        back = f.astype(a.dtype)  # wider float: enclose where the cast to float64 rounded
        return np.where(back > a, _down(f), f), np.where(back < a, _up(f), f)
    if kind in "iu":
        f = a.astype(F64)
        big = np.abs(f) > 2.0**53
        return np.where(big, _down(f), f), np.where(big, _up(f), f)
    if kind == "b":
        f = a.astype(F64)
        return f, f
    raise TypeError(f"cannot use {type(x).__name__} (dtype {a.dtype}) as an interval operand")


def _normalised(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Infinite points stand for the unbounded reals beyond MAX."""
    return np.where(lo == INF, MAX, lo), np.where(hi == -INF, -MAX, hi)


def _coerce(x: Operand) -> "Interval":
    if isinstance(x, Interval):
        return x
    lo, hi = _normalised(*_enclose(x))
    return Interval._new(lo, hi)


# ----------------------------------------------------------------------------------------------
# The interval type
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Interval:
    """Elementwise real intervals [lo, hi] held as float64 arrays (see the module docstring).

    Construct with ``Interval.of`` / ``Interval.point`` (or ``Interval(lo, hi)``, which
    validates the same way). ``==`` is not overloaded: use ``same`` for bound equality.
    """

    lo: np.ndarray
    hi: np.ndarray

    __array_ufunc__ = None  # so numpy scalars/arrays defer to our reflected operators

    def __post_init__(self) -> None:
        lo = _enclose(self.lo)[0]
        hi = _enclose(self.hi)[1]
        if lo.shape != hi.shape:
            lo, hi = (np.array(v) for v in np.broadcast_arrays(lo, hi))
        if np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError("interval bounds must not be NaN")
        if (lo > hi).any():
            raise ValueError("interval lower bound exceeds upper bound")
        lo, hi = _normalised(lo, hi)
        object.__setattr__(self, "lo", np.asarray(lo, F64))
        object.__setattr__(self, "hi", np.asarray(hi, F64))

    @classmethod
    def _new(cls, lo: Any, hi: Any) -> "Interval":
        """Trusted constructor for results already known to be valid (no checks, no copies)."""
        obj = object.__new__(cls)
        object.__setattr__(obj, "lo", np.asarray(lo, F64))
        object.__setattr__(obj, "hi", np.asarray(hi, F64))
        return obj

    # -- constructors -------------------------------------------------------------------------
    @staticmethod
    def of(lo: Any, hi: Any) -> "Interval":
        """[lo, hi], validated (no NaN, lo <= hi); inexact operands are rounded outward."""
        return Interval(lo, hi)

    @staticmethod
    def point(x: Any) -> "Interval":
        """The tightest interval containing the real value(s) x."""
        lo, hi = _enclose(x)
        return Interval(lo, hi)

    @staticmethod
    def entire(shape: tuple[int, ...] | int = ()) -> "Interval":
        """[-inf, inf]: nothing known."""
        return Interval._new(np.full(shape, -INF), np.full(shape, INF))

    @staticmethod
    def concat(parts: Sequence["Interval"], axis: int = 0) -> "Interval":
        """Join batches of boxes (e.g. the halves of a bisection) along an axis."""
        return Interval._new(np.concatenate([p.lo for p in parts], axis),
                             np.concatenate([p.hi for p in parts], axis))

    # -- array protocol -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.lo.shape

    @property
    def ndim(self) -> int:
        return self.lo.ndim

    @property
    def size(self) -> int:
        return self.lo.size

    def __len__(self) -> int:
        return len(self.lo)

    def __getitem__(self, idx: Any) -> "Interval":
        return Interval._new(self.lo[idx], self.hi[idx])

    def same(self, other: Operand) -> np.ndarray:
        """Elementwise identical bounds."""
        o = _coerce(other)
        return (self.lo == o.lo) & (self.hi == o.hi)

    # -- set operations -----------------------------------------------------------------------
    def contains(self, x: Operand) -> np.ndarray:
        """Elementwise: the point(s) x, or the whole interval x, lie inside self."""
        lo, hi = _enclose(x)
        return (self.lo <= lo) & (hi <= self.hi)

    def overlaps(self, other: Operand) -> np.ndarray:
        o = _coerce(other)
        return (self.lo <= o.hi) & (o.lo <= self.hi)

    def union(self, other: Operand) -> "Interval":
        """Interval hull of the union."""
        o = _coerce(other)
        return Interval._new(np.minimum(self.lo, o.lo), np.maximum(self.hi, o.hi))

    hull = union

    def intersect(self, other: Operand) -> tuple["Interval", np.ndarray]:
        """(meet, nonempty). Empty boxes keep self's bounds so the result stays a valid
        interval; the caller decides (e.g. prune the box) from the ``nonempty`` mask."""
        o = _coerce(other)
        lo, hi = np.maximum(self.lo, o.lo), np.minimum(self.hi, o.hi)
        ok = lo <= hi
        return Interval._new(np.where(ok, lo, self.lo), np.where(ok, hi, self.hi)), ok

    # -- measures -----------------------------------------------------------------------------
    @_quiet
    def width(self) -> np.ndarray:
        """An upper bound on hi - lo (exact when representable)."""
        return _add_up(self.hi, -self.lo)

    def mag(self) -> np.ndarray:
        """max |x| over the interval."""
        return np.maximum(np.abs(self.lo), np.abs(self.hi))

    def mig(self) -> np.ndarray:
        """min |x| over the interval (0 if it contains 0)."""
        return np.where(self.lo > 0, self.lo, np.where(self.hi < 0, -self.hi, 0.0))

    @_quiet
    def midpoint(self) -> np.ndarray:
        """A finite double inside each interval, near the centre (IEEE 1788 conventions for
        unbounded ones: 0 for [-inf, inf], -MAX / MAX for half-bounded)."""
        lo, hi = self.lo, self.hi
        m = np.clip(0.5 * lo + 0.5 * hi, lo, hi)
        m = np.where(lo == -INF, np.where(hi == INF, 0.0, -MAX), m)
        return np.where((hi == INF) & (lo > -INF), MAX, m)

    def widest_dim(self) -> np.ndarray:
        """Index along the last axis of each box's widest coordinate (for bisection)."""
        return np.argmax(self.width(), axis=-1)

    def split(self, dim: int | np.ndarray | None = None,
              at: np.ndarray | None = None) -> tuple["Interval", "Interval"]:
        """Bisect into (left, right) halves sharing the split point.

        ``dim=None`` splits every element; otherwise self has shape (..., d) of boxes and
        ``dim`` (an int or an int array of shape (...)) picks the coordinate to split per
        box. ``at`` overrides the split point (it is clipped into the interval).
        """
        if at is None:
            at = self.midpoint()
        at = np.clip(np.asarray(at, F64), self.lo, self.hi)
        if dim is None:
            return Interval._new(self.lo, at), Interval._new(at, self.hi)
        d = self.shape[-1]
        mask = np.arange(d) == np.asarray(dim)[..., None]
        return (Interval._new(self.lo, np.where(mask, at, self.hi)),
                Interval._new(np.where(mask, at, self.lo), self.hi))

    # -- operators ----------------------------------------------------------------------------
    def __add__(self, o: Operand) -> "Interval":
        return add(self, o)

    def __radd__(self, o: Operand) -> "Interval":
        return add(o, self)

    def __sub__(self, o: Operand) -> "Interval":
        return sub(self, o)

    def __rsub__(self, o: Operand) -> "Interval":
        return sub(o, self)

    def __mul__(self, o: Operand) -> "Interval":
        return mul(self, o)

    def __rmul__(self, o: Operand) -> "Interval":
        return mul(o, self)

    def __truediv__(self, o: Operand) -> "Interval":
        return div(self, o)

    def __rtruediv__(self, o: Operand) -> "Interval":
        return div(o, self)

    def __bool__(self) -> bool:
        raise TypeError("the truth value of an Interval is ambiguous; use contains/same/...")

    def __neg__(self) -> "Interval":
        return neg(self)

    def __pos__(self) -> "Interval":
        return self

    def __abs__(self) -> "Interval":
        return abs(self)

    def __pow__(self, n: int) -> "Interval":
        if isinstance(n, (int, np.integer)) and not isinstance(n, bool):
            return pow_int(self, int(n))
        return NotImplemented


# ----------------------------------------------------------------------------------------------
# Arithmetic
# ----------------------------------------------------------------------------------------------

@_quiet
def add(x: Operand, y: Operand) -> Interval:
    """x + y; exact sums stay exact (TwoSum), inexact ones take one outward step."""
    x, y = _coerce(x), _coerce(y)
    return Interval._new(_add_down(x.lo, y.lo), _add_up(x.hi, y.hi))


@_quiet
def sub(x: Operand, y: Operand) -> Interval:
    """x - y, with the same rounding as add."""
    x, y = _coerce(x), _coerce(y)
    return Interval._new(_add_down(x.lo, -y.hi), _add_up(x.hi, -y.lo))


def neg(x: Operand) -> Interval:
    x = _coerce(x)
    return Interval._new(-x.hi, -x.lo)


def _pow2_point(x: Interval) -> np.ndarray:
    """Boxes where x is a single (normal) power of two, +-2**k: scaling by it is exact."""
    return (x.lo == x.hi) & ((x.lo.view(np.int64) & _MANTISSA) == 0)


def _signs(x: Interval) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos, negv = x.lo >= 0, x.hi <= 0
    return pos, negv, pos & negv


def _corners(op: Callable[[np.ndarray, np.ndarray], np.ndarray], x: Interval,
             y: Interval) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of op over the four corners; NaN corners (0*inf, inf/inf) are dropped,
    which is sound because their limits are covered by the other corners (or are 0)."""
    p1, p2 = op(x.lo, y.lo), op(x.lo, y.hi)
    p3, p4 = op(x.hi, y.lo), op(x.hi, y.hi)
    lo = np.fmin(np.fmin(p1, p2), np.fmin(p3, p4))
    hi = np.fmax(np.fmax(p1, p2), np.fmax(p3, p4))
    return _nan_to(lo, 0.0), _nan_to(hi, 0.0)


@_quiet
def mul(x: Operand, y: Operand) -> Interval:
    """x * y with independent operands (use sqr for x * x)."""
    x, y = _coerce(x), _coerce(y)
    lo, hi = _corners(np.multiply, x, y)
    scale = _pow2_point(x) | _pow2_point(y)
    lo = _step_down_unless(lo, scale & _normal(lo))
    hi = _step_up_unless(hi, scale & _normal(hi))
    xp, xn, xz = _signs(x)
    yp, yn, yz = _signs(y)
    z = xz | yz
    nonneg = (xp & yp) | (xn & yn) | z
    nonpos = (xp & yn) | (xn & yp) | z
    return Interval._new(np.where(nonneg, np.maximum(lo, 0.0), lo),
                         np.where(nonpos, np.minimum(hi, 0.0), hi))


@_quiet
def div(x: Operand, y: Operand) -> Interval:
    """x / y over the points with y != 0.

    A divisor [0, b] gives a half-unbounded result when x has one sign (``1/[0,2] =
    [0.5, inf]``: x / 0 is +-inf by the sign of x); a divisor [a, 0] with a < 0, or one
    straddling 0, gives [-inf, inf] (``1/[-2,0]`` holds -0.5 .. -inf and, at 0, +inf); ``0/y`` is 0; and
    ``x/[0,0]`` (no values) is [-inf, inf]. ``may_be_undefined('div', x, y)`` flags them.
    """
    x, y = _coerce(x), _coerce(y)
    yl, yh = y.lo, y.hi
    # divisor bounded away from 0
    lo, hi = _corners(np.divide, x, y)
    scale = _pow2_point(y)
    lo = _step_down_unless(lo, scale & _normal(lo))
    hi = _step_up_unless(hi, scale & _normal(hi))
    xp, xn, _ = _signs(x)
    ypos, yneg = yl > 0, yh < 0
    lo = np.where((xp & ypos) | (xn & yneg), np.maximum(lo, 0.0), lo)
    hi = np.where((xp & yneg) | (xn & ypos), np.minimum(hi, 0.0), hi)
    if ((yl <= 0) & (yh >= 0)).any():  # rare: only then pay for the zero-divisor cases
        lo, hi = _div_by_zero_containing(x, y, lo, hi)
    return Interval._new(lo, hi)


def _div_by_zero_containing(x: Interval, y: Interval, lo: np.ndarray,
                            hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace lo/hi where the divisor contains 0 (see div)."""
    yl, yh = y.lo, y.hi
    xp, xn, xz = _signs(x)
    # divisor [0, yh] with yh > 0: its nonzero points are (0, yh]
    zl = (yl == 0) & (yh > 0)
    zl_lo = np.where(xp, np.maximum(_down(x.lo / yh), 0.0), -INF)
    zl_hi = np.where(xn & ~xp, np.minimum(_up(x.hi / yh), 0.0), INF)
    # divisor [yl, 0] with yl < 0: its negative points give one infinity, and the end 0 the
    # other (x / 0 is +-inf by the sign of x: 0 has no sign in the ideal program, and is +0 in
    # the computed one unless proved -0), so the whole line, as for a divisor straddling 0
    straddle = ((yl < 0) & (yh >= 0)) | ((yl == 0) & (yh == 0))
    lo = np.where(zl, zl_lo, np.where(straddle, -INF, lo))
    hi = np.where(zl, zl_hi, np.where(straddle, INF, hi))
    # 0 / y = 0 wherever y has a nonzero point
    zero = xz & ~((yl == 0) & (yh == 0))
    return _nan_to(np.where(zero, 0.0, lo), -INF), _nan_to(np.where(zero, 0.0, hi), INF)


def _pow_nonneg(a: np.ndarray, n: int, up: bool) -> np.ndarray:
    """A bound on a**n (a >= 0, n >= 1) by square-and-multiply, rounding each product the
    same direction (sound because multiplication of non-negatives is monotone)."""
    rnd = _up if up else _down
    result: np.ndarray | None = None
    base = a
    while True:
        if n & 1:
            result = base if result is None else rnd(result * base)
        n >>= 1
        if not n:
            break
        base = rnd(base * base)
    assert result is not None
    r = np.where(a == 0, 0.0, result)
    return _nan_to(np.maximum(r, 0.0), INF if up else 0.0)


@_quiet
def sqr(x: Operand) -> Interval:
    """x * x for one variable: never negative, [0, 9] for [-2, 3]."""
    x = _coerce(x)
    m, g = x.mig(), x.mag()
    lo = np.where(m == 0, 0.0, np.maximum(_down(m * m), 0.0))
    return Interval._new(lo, np.where(g == 0, 0.0, _up(g * g)))


@_quiet
def pow_int(x: Operand, n: int) -> Interval:
    """x ** n for an integer n (same n for every element); x**0 = 1, negative n via 1/x**-n."""
    x = _coerce(x)
    n = int(n)
    if n == 0:
        return Interval._new(np.ones_like(x.lo), np.ones_like(x.hi))
    if n < 0:
        return div(1.0, pow_int(x, -n))
    if n == 1:
        return x
    if n % 2 == 0:
        return Interval._new(_pow_nonneg(x.mig(), n, False), _pow_nonneg(x.mag(), n, True))
    al, ah = np.abs(x.lo), np.abs(x.hi)
    lo = np.where(x.lo >= 0, _pow_nonneg(al, n, False), -_pow_nonneg(al, n, True))
    hi = np.where(x.hi >= 0, _pow_nonneg(ah, n, True), -_pow_nonneg(ah, n, False))
    return Interval._new(lo, hi)


@_quiet
def sqrt(x: Operand) -> Interval:
    """sqrt over x >= 0 (correctly rounded: one step); x entirely negative -> [-inf, inf]."""
    x = _coerce(x)
    lo = np.where(x.lo <= 0, 0.0, np.maximum(_down(np.sqrt(x.lo)), 0.0))
    hi = np.where(x.hi == 0, 0.0, _up(np.sqrt(x.hi)))
    none = x.hi < 0
    return Interval._new(np.where(none, -INF, lo), np.where(none, INF, hi))


@_quiet
def rsqrt(x: Operand) -> Interval:
    """1/sqrt(x) over x > 0, from outward-rounded sqrt and division; x <= 0 -> [-inf, inf]."""
    x = _coerce(x)
    s_lo = _down(np.sqrt(np.maximum(x.lo, 0.0)))
    s_hi = _up(np.sqrt(np.maximum(x.hi, 0.0)))
    lo = np.maximum(_down(1.0 / s_hi), 0.0)
    hi = np.where(x.lo <= 0, INF, _up(1.0 / s_lo))
    none = x.hi <= 0
    return Interval._new(np.where(none, -INF, lo), np.where(none, INF, hi))


# ----------------------------------------------------------------------------------------------
# Elementary functions (libm results widened by LIBM_WIDEN_ULPS)
# ----------------------------------------------------------------------------------------------

def _libm_down(v: np.ndarray) -> np.ndarray:
    return _widen_down(_nan_to(v, -INF), LIBM_WIDEN_ULPS)


def _libm_up(v: np.ndarray) -> np.ndarray:
    return _widen_up(_nan_to(v, INF), LIBM_WIDEN_ULPS)


@_quiet
def exp(x: Operand) -> Interval:
    """e**x; overflow gives hi = inf (and lo = a huge finite bound)."""
    x = _coerce(x)
    lo = np.maximum(_libm_down(np.exp(x.lo)), 0.0)
    hi = _libm_up(np.exp(x.hi))
    lo = np.where(x.lo >= 0, np.maximum(lo, 1.0), lo)
    hi = np.where(x.hi <= 0, np.minimum(hi, 1.0), hi)
    return Interval._new(lo, hi)


def _exact_exp2(v: np.ndarray, approx: np.ndarray) -> np.ndarray:
    """2**v exactly where v is an integer with a representable power of two."""
    k = (v == np.floor(v)) & (v >= -1074) & (v <= 1023)
    return np.where(k, np.ldexp(1.0, np.where(k, v, 0.0).astype(np.int64)), approx)


@_quiet
def exp2(x: Operand) -> Interval:
    """2**x; integer arguments give exact powers of two."""
    x = _coerce(x)
    lo = np.maximum(_libm_down(np.exp2(x.lo)), 0.0)
    hi = _libm_up(np.exp2(x.hi))
    lo = np.where(x.lo >= 0, np.maximum(lo, 1.0), lo)
    hi = np.where(x.hi <= 0, np.minimum(hi, 1.0), hi)
    return Interval._new(_exact_exp2(x.lo, lo), _exact_exp2(x.hi, hi))


def _log_like(x: Interval, f: Callable[[np.ndarray], np.ndarray],
              exact: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Interval:
    """Shared log/log2: domain x > 0, sign known from comparison with 1."""
    lo = np.where(x.lo <= 0, -INF, _libm_down(f(np.maximum(x.lo, 0.0))))
    hi = _libm_up(f(np.maximum(x.hi, 0.0)))
    lo = np.where(x.lo >= 1, np.maximum(lo, 0.0), lo)
    hi = np.where(x.hi <= 1, np.minimum(hi, 0.0), hi)
    lo, hi = exact(x.lo, lo), exact(x.hi, hi)
    none = x.hi <= 0
    return Interval._new(np.where(none, -INF, lo), np.where(none, INF, hi))


@_quiet
def log(x: Operand) -> Interval:
    """Natural log over x > 0; log([0, b]) has lo = -inf; x <= 0 entirely -> [-inf, inf]."""
    return _log_like(_coerce(x), np.log, lambda v, approx: np.where(v == 1, 0.0, approx))


def _exact_log2(v: np.ndarray, approx: np.ndarray) -> np.ndarray:
    m, e = np.frexp(v)
    return np.where((m == 0.5) & (v > 0), (e - 1).astype(F64), approx)


@_quiet
def log2(x: Operand) -> Interval:
    """log base 2 over x > 0; powers of two give exact integers."""
    return _log_like(_coerce(x), np.log2, _exact_log2)


def _odd_contracting(x: Interval, lo: np.ndarray, hi: np.ndarray,
                     bound: float) -> Interval:
    """Clamp an odd increasing f with |f(x)| <= |x| and |f| <= bound: sign and magnitude."""
    lo = np.clip(lo, -bound, bound)
    hi = np.clip(hi, -bound, bound)
    lo = np.where(x.lo >= 0, np.maximum(lo, 0.0), np.maximum(lo, x.lo))
    hi = np.where(x.hi <= 0, np.minimum(hi, 0.0), np.minimum(hi, x.hi))
    return Interval._new(lo, hi)


@_quiet
def tanh(x: Operand) -> Interval:
    x = _coerce(x)
    return _odd_contracting(x, _libm_down(np.tanh(x.lo)), _libm_up(np.tanh(x.hi)), 1.0)


@_quiet
def atan(x: Operand) -> Interval:
    x = _coerce(x)
    return _odd_contracting(x, _libm_down(np.arctan(x.lo)), _libm_up(np.arctan(x.hi)),
                            _HPI_HI)


@_quiet
def sigmoid(x: Operand) -> Interval:
    """1 / (1 + e**-x), each step rounded outward; in [0, 1], >= 1/2 exactly when x >= 0."""
    x = _coerce(x)
    e_hi = _libm_up(np.exp(-x.lo))             # upper bound of e**-lo -> lower bound of result
    e_lo = np.maximum(_libm_down(np.exp(-x.hi)), 0.0)
    lo = _down(1.0 / _add_up(e_hi, 1.0))
    hi = _up(1.0 / _add_down(e_lo, 1.0))
    lo = np.clip(lo, 0.0, 1.0)
    hi = np.clip(hi, 0.0, 1.0)
    lo = np.where(x.lo >= 0, np.maximum(lo, 0.5), lo)
    hi = np.where(x.hi <= 0, np.minimum(hi, 0.5), hi)
    return Interval._new(lo, hi)


def _mod4(k: np.ndarray) -> np.ndarray:
    """k mod 4 in {0, 1, 2, 3} for integer-valued doubles, exactly (np.mod is ~25x slower)."""
    return k - 4.0 * np.floor(k * 0.25)


def _trig(x: Interval, f: Callable[[np.ndarray], np.ndarray], max_res: int,
          min_res: int) -> Interval:
    """sin/cos: extremes sit at x = k*pi/2 with k mod 4 == max_res (value 1) / min_res (-1).

    k is located from a sound enclosure of [lo, hi] / (pi/2); rounding can only add
    candidate extrema (looser, never unsound). Otherwise f is monotone on the interval and
    the endpoint values bound it.
    """
    a, b = x.lo, x.hi
    sl = _down(np.minimum(a / _HPI_LO, a / _HPI_HI))
    sh = _up(np.maximum(b / _HPI_LO, b / _HPI_HI))
    nl = np.ceil(sl)
    count = np.floor(sh) - nl + 1  # how many integers k the enclosure holds (inf if unbounded)
    r0 = _mod4(nl)  # residue of the first one
    many = ~(count < 4)  # a full period, or an infinite / NaN span
    has_max = many | (_mod4(max_res - r0) < count)
    has_min = many | (_mod4(min_res - r0) < count)
    fa, fb = f(a), f(b)
    lo = _libm_down(np.minimum(fa, fb))
    hi = _libm_up(np.maximum(fa, fb))
    big = (np.abs(a) > TRIG_MAX_ARG) | (np.abs(b) > TRIG_MAX_ARG)
    lo = np.where(has_min | big, -1.0, np.clip(lo, -1.0, 1.0))
    hi = np.where(has_max | big, 1.0, np.clip(hi, -1.0, 1.0))
    return Interval._new(lo, hi)


@_quiet
def sin(x: Operand) -> Interval:
    return _trig(_coerce(x), np.sin, 1, 3)


@_quiet
def cos(x: Operand) -> Interval:
    return _trig(_coerce(x), np.cos, 0, 2)


# ----------------------------------------------------------------------------------------------
# Exact piecewise operations
# ----------------------------------------------------------------------------------------------

def floor(x: Operand) -> Interval:
    x = _coerce(x)
    return Interval._new(np.floor(x.lo), np.floor(x.hi))


def ceil(x: Operand) -> Interval:
    x = _coerce(x)
    return Interval._new(np.ceil(x.lo), np.ceil(x.hi))


def hull(*xs: Operand) -> Interval:
    """Interval hull of several operands."""
    out = _coerce(xs[0])
    for x in xs[1:]:
        out = out.union(x)
    return out


@_quiet
def may_be_undefined(op: str, x: Operand, y: Operand | None = None) -> np.ndarray:
    """Boxes where op can be evaluated outside its real domain (division by zero, sqrt/log of
    a negative or log of 0), i.e. where a float program may produce inf or NaN."""
    x = _coerce(x)
    if op == "div":
        if y is None:
            raise TypeError("may_be_undefined('div', x, y) needs the divisor y")
        yy = _coerce(y)
        return (yy.lo <= 0) & (yy.hi >= 0)
    if op == "sqrt":
        return x.lo < 0
    if op in ("rsqrt", "log", "log2"):
        return x.lo <= 0
    raise ValueError(f"unknown partial operation {op!r}")


# Defined last: these shadow the builtins inside this module, which therefore never calls
# the builtin abs/min/max.

def abs(x: Operand) -> Interval:  # noqa: A001 - the interval function of that name
    x = _coerce(x)
    return Interval._new(x.mig(), x.mag())


def min(x: Operand, y: Operand) -> Interval:  # noqa: A001
    x, y = _coerce(x), _coerce(y)
    return Interval._new(np.minimum(x.lo, y.lo), np.minimum(x.hi, y.hi))


def max(x: Operand, y: Operand) -> Interval:  # noqa: A001
    x, y = _coerce(x), _coerce(y)
    return Interval._new(np.maximum(x.lo, y.lo), np.maximum(x.hi, y.hi))
