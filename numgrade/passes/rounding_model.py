"""The rounding model every error analysis shares (SPEC section 3).

A rounding to format F in mode m satisfies ``fl(x) = x (1 + d) + e`` with ``|d| <= u`` and
``|e| <= eta``, where for round-to-nearest ``u = 2^-p`` and ``eta`` is half the subnormal spacing,
and for directed and stochastic rounding ``u = 2^(1-p)`` and ``eta`` is the subnormal spacing
(the sum form covers the normal and the subnormal range at once). Saturation is modelled as a
clamp to ``[-max, max]`` before the rounding; a non-saturating rounding whose argument may reach
the overflow threshold gives no bound (inf or NaN are possible).

Math functions are modelled as the exact function times ``(1 + d)``, ``|d| <= k u``, plus ``eta``,
with ``k`` the largest error, in units of ``u``, of the libraries numgrade's backends call:
numpy for the reference backend (float64 results within 4 ulp, the bound numpy documents for
its SVML kernels; glibc is within 1 ulp; the reference rounds a float64 value once, so
narrower results are within about 0.5 ulp) and the CUDA math library
(libdevice) for the GPU backends, whose documented single-precision bounds are: expf, exp2f,
tanhf, sinf, cosf, rsqrtf 2 ulp; logf, log2f 1 ulp; sqrtf 0.5 ulp (IEEE). One ulp of a result
is at most ``2u`` relative, so 2 ulp is ``k = 4``. Composite functions (sigmoid = 1/(1+exp(-x)))
add their steps' errors. Backends must use libraries within these bounds (no fast-math
approximations) for the bounds to hold. TVM's fast CPU kernels compute f32 ``exp`` with
numgrade's own vectorisable expansion (kernels/math_f32.py), checked on every f32 input to be
within the same 2 ulp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..ir import nodes as N
from ..ir.formats import Format, get_format, represents
from ..ir.nodes import Op, Value

# k (in units of u) per math function: max over the libraries the backends use.
MATH_ULP_FACTOR: dict[str, float] = {
    "exp": 4.0, "exp2": 4.0, "tanh": 4.0, "sin": 4.0, "cos": 4.0, "rsqrt": 4.0,
    "log": 2.0, "log2": 2.0, "sqrt": 1.0,
    # sigmoid(x) = 1/(1 + exp(-x)): exp (4u) damped by the division, the add (u), the divide (u)
    "sigmoid": 7.0,
}


@dataclass(frozen=True)
class RoundSpec:
    """How one operation rounds: relative bound u, absolute bound eta, saturation, overflow."""

    fmt: Format
    u: float
    eta: float
    sat: bool
    overflow_at: float   # |x| at or beyond this (before saturation) overflows; inf if never
    rel: float | None = None   # |fl(x) - x| <= rel |x| (normal range) where tighter than u
    keeps_inf: bool = False    # saturates finite overflow only: an inf argument stays inf (rz)

    @property
    def u_rel(self) -> float:
        return self.u if self.rel is None else self.rel

    @property
    def max_finite(self) -> float:
        return self.fmt.max_finite


def unit_roundoff(fmt: Format, mode: str = "rne") -> float:
    if fmt.kind != "float":
        return 0.0
    p = fmt.precision
    return 2.0 ** -p if mode == "rne" else 2.0 ** (1 - p)


def relative_roundoff(fmt: Format, mode: str = "rne") -> float:
    """A bound on |fl(x) - x| / |x| in the normal range. Toward zero (rz, and rd of an
    unsigned format) |x| - |fl(x)| < ulp = 2^(e+1-p) while |x| > |fl(x)| >= 2^e, so the ratio
    is below 2^(1-p) / (1 + 2^(1-p)) (1/2 for e8m0, where u = 2^(1-p) is 1). The half-ulp form
    u 2^floor(log2 |x|) still needs u itself."""
    u = unit_roundoff(fmt, mode)
    if fmt.kind == "float" and (mode == "rz" or (mode == "rd" and not fmt.signed)):
        return u / (1 + u) * (1 + 2.0 ** -50)
    return u


def underflow_eta(fmt: Format, mode: str = "rne") -> float:
    if fmt.kind != "float":
        return 0.5 if mode == "rne" else 1.0  # rounding to an integer
    if fmt.name == "e8m0":
        return fmt.min_normal  # no zero: tiny values become 2^-127
    return fmt.min_subnormal / 2 if mode == "rne" else fmt.min_subnormal


def overflow_threshold(fmt: Format, mode: str = "rne") -> float:
    """Smallest |x| whose rounding overflows (becomes inf/NaN) without saturation."""
    if fmt.kind != "float" or not (fmt.has_inf or fmt.has_nan):
        return float("inf")  # e2m1 saturates; integers saturate
    ulp_top = 2.0 ** (fmt.emax - fmt.precision + 1)
    if mode == "rne":
        return fmt.max_finite + ulp_top / 2
    return fmt.max_finite * (1 + 2.0 ** -60)  # directed/sr: anything beyond max may overflow


def round_spec(fmt: Format, mode: str = "rne", sat: bool = False) -> RoundSpec:
    """The rounding model of one rounding. Saturation means a clamp to +-max before rounding;
    it also describes formats without inf/NaN (e2m1, i32: their overflow saturates) and
    round-toward-zero (whose overflow gives +-max). Directed rounding away from zero may give
    inf on one side and max on the other: any |x| beyond max is treated as an overflow."""
    if fmt.kind == "int":
        return int_spec(fmt, mode)  # to an integer, saturating
    if fmt.kind == "bool":
        return RoundSpec(fmt, 0.0, 0.0, False, float("inf"))
    keeps_inf = False
    if not (fmt.has_inf or fmt.has_nan) or mode == "rz":
        # rz of a finite value saturates; of an infinite one it does not: inf where the format
        # has it, NaN where it has only NaN (e4m3, fuzz seed 1020000000+)
        keeps_inf = not sat and (fmt.has_inf or fmt.has_nan)
        sat = True
    u = unit_roundoff(fmt, mode)
    rel = relative_roundoff(fmt, mode)
    return RoundSpec(fmt, u, underflow_eta(fmt, mode), sat,
                     float("inf") if sat else overflow_threshold(fmt, mode),
                     rel if rel < u else None, keeps_inf)


def math_spec(fn: str, fmt: Format) -> RoundSpec:
    """The error model of a math function computed in fmt (see the module docstring)."""
    k = MATH_ULP_FACTOR.get(fn, 4.0)
    base = round_spec(fmt)
    eta = base.eta * max(1.0, k)
    if fmt.name == "f64":
        # numpy may run SVML kernels (documented within 4 ulp) where glibc is within 1 ulp
        k = 1.0 if fn == "sqrt" else 8.0 + (k - 4.0 if fn == "sigmoid" else 0.0)
        eta = base.eta * max(1.0, k)
        if fn == "sigmoid":
            # 1/(1 + exp(-x)) in float64: exp(-x) overflows for x < -709.78, and the result is
            # 0 while the ideal value is below exp(-709.78) < 2^-1023; the bottom of the
            # range is no longer relative
            eta = max(eta, 2.0 ** -1022)
    # formats without inf and NaN (e2m1) saturate: exp(6) in e2m1 is 6
    return RoundSpec(fmt, k * base.u, eta, base.sat, base.overflow_at)


# ---------------------------------------------------------------------------------------------
# The rounding judgement: one answer, for every IR operation, to "does this op round, into what,
# with which saturation, and may it be exact". Every analysis asks :func:`judge`; no analysis
# decides this on its own.

INT_MIN = -(2.0 ** 31)

# the result jumps when an operand moves across a threshold (the computed and the ideal program
# can then take different sides): comparisons, logic on them, floor, ceil, %, conversions to bool
DISCONTINUOUS = N.COMPARE | N.LOGIC | {Op.NOT, Op.FLOOR, Op.CEIL, Op.MOD, Op.TOPK_MASK}

# operations whose real result is one of the operands (or its negation / magnitude): exact in
# any format that holds the operands
_SELECTING = N.UNARY_EXACT | {Op.MIN, Op.MAX, Op.WHERE, Op.RMAX, Op.RMIN}


@dataclass(frozen=True)
class Judgement:
    """How one operation rounds.

    ``spec`` is the rounding of the result (None: the result is exactly the operation's real
    value). ``operands_fit``: every operand is a value of the working format, the premise of
    the exactness rules (Sterbenz, adding 0, scaling by a power of two) that analyses apply
    per box; when it fails those rules do not hold even where the operands satisfy them.
    ``acc`` is the rounding of each partial result of a reduction or matrix product, and
    ``first_rounded`` says whether its first element is itself rounded into the accumulator.
    ``discontinuous``: the result jumps with its operands (see DISCONTINUOUS)."""

    fmt: Format | None
    spec: RoundSpec | None
    operands_fit: bool = True
    discontinuous: bool = False
    acc: RoundSpec | None = None
    first_rounded: bool = False

    @property
    def rounds(self) -> bool:
        return self.spec is not None


def int_spec(fmt: Format, mode: str = "rne", integral: bool = False) -> RoundSpec:
    """Rounding into i32: to an integer (half a unit for rne, one unit for directed and
    stochastic modes; nothing when the argument is already an integer) and saturation to
    [-2^31, 2^31 - 1] (always: numgrade's i32 never wraps)."""
    eta = 0.0 if integral else (0.5 if mode == "rne" else 1.0)
    return RoundSpec(fmt, 0.0, eta, True, float("inf"))


def lowest_finite(fmt: Format) -> float:
    """The most negative finite value (i32: -2^31; unsigned formats: 0)."""
    if fmt.kind == "int":
        return INT_MIN
    if fmt.kind == "bool" or not fmt.signed:
        return 0.0
    return -fmt.max_finite


def rounding_into(fmt: Format, srcs: list[Format], mode: str = "rne", sat: bool = False,
                  math_fn: str | None = None) -> RoundSpec | None:
    """The rounding of a real result into fmt computed from operands of formats srcs."""
    if fmt.kind == "bool":
        return None
    if fmt.kind == "int":
        return int_spec(fmt, mode, integral=all(s.kind in ("int", "bool") for s in srcs))
    if math_fn is not None:
        return math_spec(math_fn, fmt)
    return round_spec(fmt, mode, sat)


def judge(v: Value) -> Judgement:
    """The rounding judgement of one IR value (see :class:`Judgement`)."""
    op = v.op
    t = v.type
    fmt = t.fmt if isinstance(t, N.TensorType) else None
    srcs = [s.fmt for s in v.srcs if isinstance(s.type, N.TensorType)]
    if fmt is None or op in (Op.PARAM, Op.CONST, Op.DIM, Op.ARANGE, Op.RAND, Op.CALL, Op.PROJ) \
            or op in N.MOVEMENT:
        return Judgement(fmt, None)
    fit = all(represents(fmt, s) for s in srcs)
    disc = op in DISCONTINUOUS
    if fmt.kind == "bool":
        # comparisons, logic, conversions to bool: no rounding, but a jump where they flip
        return Judgement(fmt, None, fit, True)
    if op == Op.ROUND:
        mode, sat, _ = v.attrs
        src = srcs[0]
        flips = src.kind == "bool"   # a truth value as 0/1 jumps where the condition flips
        if represents(fmt, src):   # a conversion into a wider format is exact
            return Judgement(fmt, None, True, flips)
        return Judgement(fmt, rounding_into(fmt, srcs, mode, sat), fit, flips)
    if op in (Op.SUM, Op.MEAN):
        acc = rounding_into(fmt, srcs)
        first = not fit
        spec = acc if op == Op.MEAN else None
        return Judgement(fmt, spec, fit, False, acc, first)
    if op == Op.MATMUL:
        accf = get_format(v.attrs[0])
        acc = rounding_into(accf, srcs)
        spec = None if represents(fmt, accf) else rounding_into(fmt, [accf])
        return Judgement(fmt, spec, fit, False, acc, True)
    if op in _SELECTING:
        if fmt.kind == "int" and op in (Op.NEG, Op.ABS):   # -INT_MIN saturates
            return Judgement(fmt, int_spec(fmt, integral=True), fit, disc)
        if op in (Op.NEG, Op.FLOOR) and not (fmt.signed and fmt.has_zero):
            # e8m0 has no sign and no zero: -x and floor(x) < 1 leave the format (NaN, 2^-127)
            return Judgement(fmt, rounding_into(fmt, srcs), fit, disc)
        spec = None if fit else rounding_into(fmt, srcs)
        return Judgement(fmt, spec, fit, disc)
    if op in N.UNARY_MATH and op != Op.SQRT:
        return Judgement(fmt, rounding_into(fmt, srcs, math_fn=op), fit, disc)
    return Judgement(fmt, rounding_into(fmt, srcs), fit, disc)


# ---------------------------------------------------------------------------------------------
# Signed zeros. The ideal program computes over the reals, where 0 has no sign (x / 0 is taken
# as +-inf by the sign of x); the computed program may hold -0 (-(x * 0), a negative product
# that underflows, a -0.0 input), and x / -0 or rsqrt(-0) is an infinity of the other sign.

_SIGN_CLEAR_OPS = {Op.ABS, Op.EXP, Op.EXP2, Op.SIGMOID, Op.RAND, Op.ARANGE, Op.DIM}
# results that are +0 (never -0) and non-negative when every operand is
_SIGN_CLEAR_IF_OPERANDS = {Op.ADD, Op.MUL, Op.DIV, Op.FMA, Op.SQRT, Op.MIN, Op.MAX, Op.WHERE,
                           Op.ROUND, Op.SUM, Op.MEAN, Op.RMAX, Op.RMIN, Op.MATMUL} | N.MOVEMENT


def sign_bit_clear(v: Value, _memo: dict[int, bool] | None = None) -> bool:
    """True when every computed value of v is +0 or positive (never -0, never negative), from
    the operations alone: |x|, exp, a max of such values, sums and products of them. A divisor
    for which this fails may be -0 where its range touches 0."""
    memo = {} if _memo is None else _memo
    key = id(v)
    if key in memo:
        return memo[key]
    t = v.type
    fmt = t.fmt if isinstance(t, N.TensorType) else None
    if fmt is not None and (fmt.kind in ("int", "bool") or not fmt.signed):
        res = True    # integers and truth values have no -0; unsigned formats no sign
    elif v.op == Op.CONST:
        res = all(not (math.copysign(1.0, x) < 0) for x in v.attrs[0])
    elif v.op in _SIGN_CLEAR_OPS:
        res = True
    elif v.op in _SIGN_CLEAR_IF_OPERANDS:
        srcs = v.srcs[1:] if v.op == Op.WHERE else v.srcs
        res = all(sign_bit_clear(s, memo) for s in srcs)
    else:
        res = False   # parameters (an input may be -0.0), negation, subtraction, ...
    memo[key] = res
    return res


# ---------------------------------------------------------------------------------------------
# Execution models (SPEC section 3): what the bound covers on each target. One model covers
# the reference, the exact contract and the fast contract on every target, because every rule
# above is the maximum over them: sums with order=any are bounded for every summation order
# (the fast kernels' order), explicit orders are honoured by every backend, f32 + - * / and sqrt
# are correctly rounded everywhere (div_rn, sqrt_rn; IEEE division and sqrt in C and LLVM), no
# multiply-add is contracted (nvcc --fmad=false, Triton enable_fp_fusion=False, LLVM without
# fast-math), conversions into narrow formats are exact roundings in hardware or software, and
# the math functions' ulp factors (MATH_ULP_FACTOR) are the largest of the libraries in use.

TARGETS = ("any", "reference", "cpu", "sm_90", "sm_100")

_MATH_LIBRARY = {
    "any": "the largest of the libraries below",
    "reference": "numpy float64, rounded once into narrower formats",
    "cpu": "LLVM / the C library's libm (TVM llvm, the CUDA host build): glibc's documented "
           "maxima (manual, 'Known Maximum Errors in Math Functions') are within the table; "
           "f32 exp in TVM's fast kernels: numgrade's vectorisable expf (kernels/math_f32.py, "
           "error at most 0.863 ulp (the model's 2) over every f32 input)",
    "sm_90": "CUDA libdevice (CUDA C Programming Guide, maximum ulp error tables: expf, exp2f, "
             "tanhf, sinf, cosf, rsqrtf 2 ulp; logf, log2f 1 ulp; sqrtf, x/y 0 ulp)",
    "sm_100": "CUDA libdevice (as sm_90)",
}


def execution_model(target: str | None = None) -> dict[str, object]:
    """The model a bound assumes on ``target`` (None: every target), for the report."""
    t = target or "any"
    if t not in TARGETS:
        raise ValueError(f"unknown target '{target}' (one of: {', '.join(TARGETS[1:])})")
    return {
        "target": t,
        "contracts": ["exact", "fast"] if t != "reference" else ["reference"],
        "sums": "order=any: every summation order (the fast kernels' order); "
                "order=seq|pairwise|kahan: that order, which every backend honours",
        "math": _MATH_LIBRARY[t],
        "math_ulp_factors": dict(MATH_ULP_FACTOR),
        "arithmetic": "f32 and f64 + - * / sqrt correctly rounded; no contracted multiply-add",
        "conversions": "exact roundings (hardware cvt where the target has it, software "
                       "elsewhere)",
    }
