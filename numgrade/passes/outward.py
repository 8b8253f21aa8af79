"""Outward rounding of bounds: the one set of helpers every analysis uses.

An analysis computes its bounds with float64 arithmetic; a bound is sound only when it is
pushed outward past the real quantity it stands for. Three situations, three helpers:

* ``up(x)``, ``down(x)``: ``x`` is an *exact* value (``Fraction``, ``int`` or ``float``): the
  least float64 ``>= x`` / the greatest float64 ``<= x`` (a float is returned unchanged: it is
  exact). ``NaN`` gives ``+inf`` / ``-inf`` (an unknown bound); values beyond the float64 range
  give ``inf`` or the largest finite float on the side that still encloses them.
* ``inflate(x)``: ``x >= 0`` is an upper bound *computed* in float arithmetic with at most a few
  ulps of error (a libm call such as ``log1p``/``expm1``/``sinh`` and a few roundings): the
  result is above the real bound. It moves ``x`` up by ``rel`` relatively (default ``2^-50``,
  4 ulps of ``2^-52``, which also covers the rounding of the product) plus the smallest
  subnormal (for a subnormal ``x`` the relative move underflows). ``NaN`` gives ``inf``;
  ``x <= 0`` is returned unchanged (no cancellation is assumed: use ``up`` on exact values).
* array forms for vectorised interval arithmetic: ``step_down(y)`` / ``step_up(y)`` move
  every element past its neighbouring double (1 or at most 2 doubles; Rump, Zimmermann, Boldo
  and Melquiond's branch-free predecessor/successor ``y -/+ (PHI |y| + ETA)``, about 5x
  cheaper than ``np.nextafter``), and ``step_down_unless(y, exact)`` /
  ``step_up_unless(y, exact)`` skip the elements known to be exact. NaN stays NaN (callers
  replace it); an overflowed lower bound ``+inf`` becomes ``MAX`` (and ``-inf`` as an upper
  bound ``-MAX``): the reals an overflowed float can stand for.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

INF = math.inf
MAX = float(np.finfo(np.float64).max)
ETA = 5e-324                       # the smallest subnormal
PHI = 2.0 ** -53 + 2.0 ** -105     # u (1 + 2u), u = 2^-53: just over half an ulp per unit |y|
INFLATE_REL = 2.0 ** -50           # inflate(): 4 ulps (of 2^-52) relative


def _nearest(x) -> float:
    """float(x) rounded to nearest, with the out-of-range values as +-inf."""
    try:
        return float(x)
    except OverflowError:
        return INF if x > 0 else -INF


def up(x) -> float:
    """The least float64 >= x (x exact: Fraction, int or float); NaN gives +inf."""
    if isinstance(x, float):
        return INF if x != x else x
    f = _nearest(x)
    if f != f:
        return INF
    if f == -INF:
        return -MAX          # x is finite and below -MAX
    if math.isinf(f) or Fraction(f) >= x:
        return f
    return math.nextafter(f, INF)


def down(x) -> float:
    """The greatest float64 <= x (x exact: Fraction, int or float); NaN gives -inf."""
    if isinstance(x, float):
        return -INF if x != x else x
    f = _nearest(x)
    if f != f:
        return -INF
    if f == INF:
        return MAX           # x is finite and above MAX
    if math.isinf(f) or Fraction(f) <= x:
        return f
    return math.nextafter(f, -INF)


def inflate(x: float, rel: float = INFLATE_REL) -> float:
    """An upper bound on a nonnegative quantity that float arithmetic computed as x with at
    most a few ulps of error (see the module docstring); NaN gives inf."""
    if x != x:
        return INF
    if x <= 0:
        return x
    return x * (1 + rel) + ETA


# ---------------------------------------------------------------------------------------------
# array forms (numpy float64; NaN in, NaN out)
def step_down(y: np.ndarray) -> np.ndarray:
    """A double 1 or 2 steps below y (y - (PHI |y| + ETA) lands strictly past the midpoint to
    the next double down). -inf stays -inf, +inf (an overflowed lower bound) becomes MAX."""
    return np.minimum(np.fmin(y - (np.abs(y) * PHI + ETA), y), MAX)


def step_up(y: np.ndarray) -> np.ndarray:
    """A double 1 or 2 steps above y (mirror of step_down)."""
    return np.maximum(np.fmax(y + (np.abs(y) * PHI + ETA), y), -MAX)


def step_down_unless(y: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """step_down(y) except where `exact` (y is then known finite and exact)."""
    return np.minimum(np.fmin(y - (np.abs(y) * PHI + ETA) * ~exact, y), MAX)


def step_up_unless(y: np.ndarray, exact: np.ndarray) -> np.ndarray:
    """step_up(y) except where `exact`."""
    return np.maximum(np.fmax(y + (np.abs(y) * PHI + ETA) * ~exact, y), -MAX)
