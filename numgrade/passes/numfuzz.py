"""NumFuzz-compatible relative-precision grades (Kellison and Hsu, PLDI 2024).

NumFuzz types programs over strictly positive reals with a graded monad ``M[q]`` over the
relative-precision (RP) metric ``RP(x, y) = |ln(x / y)|``: a computation of type ``M[q] R``
returns a value within RP distance ``q`` of the ideal one. Its setting: every operation rounds
toward +inf in binary64, ``u = 2^-52``, FMA rounds once; inputs are exact (or carry a given
grade, ``M[u] R``). This module computes such grades for numgrade programs.

The rounding cost (derived here, used for every rounding)
-------------------------------------------------------
For a format with p significand bits, x > 0 in the normal range and ``fl`` rounding upward,
``x <= fl(x) < x + ulp(x)`` and ``ulp(x) <= 2^(1-p) x``, so

    RP(fl(x), x) = ln(fl(x) / x) < ln(1 + 2^(1-p)) < 2^(1-p) = u          (RU, RD, RZ, SR alike)

(for rounding down, ``x - fl(x) < ulp(x) <= 2^(1-p) fl(x)`` gives the same bound). Round to
nearest has ``|fl(x) - x| <= 2^-p min(x, fl(x))``, so ``RP <= ln(1 + 2^-p)``. NumFuzz charges
``eps = u = 2^-52`` per rounding; ``ln(1 + u)`` is strictly smaller, so every grade here is at
most NumFuzz's for the same composition. A math function within k u (rounding_model) costs
``-ln(1 - k u)``; a constant that the program rounds (1.11) costs its exact RP distance.

Composition (q: the grade of each value, an RP bound between its computed and ideal values)
------------------------------------------------------------------------------------------
``a + b`` (one sign): ``max(q_a, q_b)`` (a sum of same-sign values is a weighted mean in log
space; NumFuzz adds the two grades, so this is tighter); ``a * b``, ``a / b``: ``q_a + q_b``
(``x * x``: ``2 q_x``, the sensitivity of a reused variable); ``sqrt``: ``q / 2``; ``fma(a, b, c)``:
``max(q_a + q_b, q_c)``; other unary functions: ``max |x f'(x) / f(x)| q`` over the argument
range; each operation then adds its own rounding cost. Whether an operation rounds, into
which format, is :func:`numgrade.passes.rounding_model.judge`'s answer (none for data movement,
and for ``min``, ``max``, ``neg`` of values of the result's format); a product by a power of
two is exact only where the judgement says the other operand is a value of the result's
format (``operands_fit``: ``let y: bf16 = 2.0 * x`` with an f32 ``x`` rounds). Integer results
must be exact (no rounding to an integer, no saturation). A subtraction of same-sign values
(possible cancellation), a value that can be 0 or change sign, an underflow or overflow, or a
branch that rounding can flip make the program unsupported (the grade is None with a reason).
The reported relative error bound is ``e^q - 1``: ``|computed - ideal| <= (e^q - 1) |ideal|``.

Settings
--------
* ``setting="numfuzz"`` (default): every rounding is charged as NumFuzz's round-toward-+inf
  binary64 rounding, ``ln(1 + 2^(1-p))``. The grade then holds for NumFuzz's semantics, *and*
  for numgrade's (round to nearest costs less, and the reference backend rounds each operation
  once), whichever the program's rounding modes are.
* ``setting="program"``: every rounding is charged by its own mode (about half the cost for
  round to nearest): the grade of the program as numgrade runs it.

The Grade language cannot express round-toward-+inf f64 *arithmetic*: ``round(x * y, f64,
mode=ru)`` rounds the already-rounded f64 product again (a no-op). :func:`numfuzz_reference`
evaluates a scalar program in NumFuzz's semantics instead (exact rational arithmetic, every
operation rounded upward), for measurement.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..ir import nodes as N
from ..ir.dims import bind_sizes
from ..ir.nodes import Op
from . import interval as I
from .interval import Interval
from .outward import inflate, up
from .rounding_model import RoundSpec, judge, lowest_finite, overflow_threshold
from .sensitivity import (Graph, Node, compare_decision, elasticity, flatten, hi, ideal_ranges,
                          lo, mag, matmul_k, mig, reduce_count, sign_definite)

INF = math.inf
U64 = 2.0 ** -52          # NumFuzz's u for binary64 rounded toward +inf
MARGIN = 2.0 ** -20       # relative margin on the under/overflow thresholds
MAX_GRADE = 2.0 ** -30    # grades are small; the range checks assume it


def _add(*xs: float) -> float:
    """The sum of the bounds, rounded upward (exact sums of powers of two stay exact)."""
    if any(math.isinf(x) for x in xs):
        return INF
    return up(sum(Fraction(x) for x in xs))


def _mul(a: float, b: float) -> float:
    if a == 0 or b == 0:
        return 0.0
    if math.isinf(a) or math.isinf(b):
        return INF
    return up(Fraction(a) * Fraction(b))


# The 17 NumFuzz benchmarks (ANCHORS.md section 2): the published bound (an RP grade, in
# absolute terms) and the grade each input already carries. Horner2_with_er: NumFuzz's
# artifact types it with inputs in M[eps64_up] and the result in M[1.555e-15].
NUMFUZZ_BENCHMARKS: dict[str, tuple[float, float]] = {
    "hypot": (5.55e-16, 0.0), "x_by_xy": (4.44e-16, 0.0), "one_by_sqrtxx": (5.55e-16, 0.0),
    "sqrt_add": (9.99e-16, 0.0), "test02_sum8": (1.55e-15, 0.0), "nonlin1": (4.44e-16, 0.0),
    "test05_nonlin1": (4.44e-16, 0.0), "verhulst": (8.88e-16, 0.0),
    "predatorPrey": (1.55e-15, 0.0), "sums4_sum1": (6.66e-16, 0.0),
    "sums4_sum2": (6.66e-16, 0.0), "i4": (4.44e-16, 0.0), "Horner2": (4.44e-16, 0.0),
    "Horner5": (1.11e-15, 0.0), "Horner10": (2.22e-15, 0.0), "Horner20": (4.44e-15, 0.0),
    "Horner2_with_er": (1.555e-15, U64),
}


def numfuzz_units(published: float) -> float:
    """NumFuzz's exact grade behind a published 3-digit number, in units of u = 2^-52
    (all of them are multiples of u/2: 5.55e-16 is 2.5 u)."""
    return round(published / U64 * 2) / 2


@dataclass
class NumFuzzResult:
    """The relative-precision grade of a function (max over its outputs)."""

    grade: float | None                 # q: RP(computed, ideal) <= q for every output
    rel_error: float | None             # e^q - 1
    per_output: list[float | None] = field(default_factory=list)
    setting: str = "numfuzz"
    reason: str | None = None
    seconds: float = 0.0

    @property
    def units(self) -> float | None:
        """The grade in units of NumFuzz's u = 2^-52."""
        return None if self.grade is None else self.grade / U64


class Unsupported(Exception):
    pass


class _Grades:
    def __init__(self, g: Graph, setting: str, input_grades: dict[str, float]):
        self.g = g
        self.setting = setting
        self.input_grades = input_grades
        self.R = ideal_ranges(g)

    def where(self, n: Node) -> str:
        return f" ({n.span})" if n.span is not None else ""

    def cost(self, spec: RoundSpec | None) -> float:
        """RP cost of one rounding (see the module docstring); 0 where none (spec None)."""
        if spec is None or spec.fmt.kind != "float":
            return 0.0
        # ln(1 + v) < v: the power of two itself is a (slightly larger) exact bound; spec.u
        # is 2^-p for round to nearest, 2^(1-p) for the directed and stochastic modes
        p = spec.fmt.precision
        return 2.0 ** (1 - p) if self.setting == "numfuzz" else spec.u

    def math_cost(self, op: str, spec: RoundSpec) -> float:
        """RP cost of a math function whose error model (rounding_model.judge) is spec."""
        fmt = spec.fmt
        d = spec.u
        if self.setting == "numfuzz":
            d = max(d, 2.0 ** (1 - fmt.precision))
        if d >= 0.5:
            return INF
        if op == Op.SQRT and d <= 2.0 ** (1 - fmt.precision):
            return d                     # correctly rounded: ln(1 + d) < d holds
        return inflate(-math.log1p(-d))

    def positive_range(self, i: int) -> None:
        R = self.R[i]
        n = self.g.nodes[i]
        if sign_definite(R) == 0:
            raise Unsupported(f"'{n.op}' may be 0 or change sign (range [{lo(R):.4g}, "
                              f"{hi(R):.4g}]): the relative-precision metric needs values of "
                              f"one sign, bounded away from 0{self.where(n)}")

    def check_rounding(self, i: int, spec: RoundSpec | None, R: Interval | None = None,
                       underflow: bool = True) -> None:
        """No overflow, saturation or underflow where node i rounds as spec says (the range R,
        node i's ideal range by default, is what is rounded)."""
        n = self.g.nodes[i]
        if spec is None or spec.fmt.kind != "float":
            return
        fmt = spec.fmt
        R = self.R[i] if R is None else R
        m, M = mig(R), mag(R)
        if spec.sat and M * (1 + MARGIN) > fmt.max_finite:
            raise Unsupported(f"this rounding may saturate {fmt.name}{self.where(n)}")
        over = overflow_threshold(fmt, "ru") if self.setting == "numfuzz" else spec.overflow_at
        if not spec.sat and M * (1 + MARGIN) >= over:
            raise Unsupported(f"'{n.op}' may overflow {fmt.name}{self.where(n)}")
        if underflow and m * (1 - MARGIN) < fmt.min_normal:
            raise Unsupported(f"'{n.op}' may underflow {fmt.name} (values down to {m:.3g}), where "
                              f"rounding is not relative{self.where(n)}")

    def run(self) -> list[float]:
        g = self.g
        q: list[float] = []
        pname = {idx: name for name, idx, _ in g.params}
        for i, n in enumerate(g.nodes):
            try:
                v = self.rule(i, n, q, pname)
            except (ValueError, ZeroDivisionError, OverflowError) as ex:  # pragma: no cover
                raise Unsupported(f"'{n.op}': {ex}{self.where(n)}") from None
            if v > MAX_GRADE:
                raise Unsupported(f"the grade grows beyond {MAX_GRADE:.3g}{self.where(n)}")
            q.append(v)
        return q

    def stable_bool(self, i: int, q: list[float]) -> bool:
        """Whether a truth value is the same in the computed and the ideal program."""
        n = self.g.nodes[i]
        if n.fmt.kind != "bool":
            return q[i] == 0
        if n.op in N.COMPARE:
            a, b = n.srcs
            if compare_decision(n.op, self.R[a], self.R[b]) is not None:
                return True
            return q[a] == 0 and q[b] == 0
        if n.op in N.LOGIC:
            return all(self.stable_bool(s, q) for s in n.srcs)
        if n.op == Op.NOT:
            return self.stable_bool(n.srcs[0], q)
        if n.op == Op.PARAM or n.op == Op.CONST:
            return True
        return False

    def rule(self, i: int, n: Node, q: list[float], pname: dict[int, str]) -> float:
        g, R = self.g, self.R
        op = n.op
        fmt = n.fmt
        s = n.srcs
        x = [q[k] for k in s]
        if op == Op.PARAM:
            return float(self.input_grades.get(pname[i], 0.0))
        if fmt is None or fmt.kind == "bool":
            return 0.0   # truth values are checked where they are used
        if op == Op.CONST:
            enc = N.const_enclosures(n.value)
            if enc is None:
                return 0.0
            worst = 0.0
            for f, e in ((f, e) for f, lohi in zip(n.value.attrs[0], enc) for e in lohi):
                if e == 0 or Fraction(f) / e <= 0:
                    raise Unsupported(f"a constant is rounded to 0 or across 0{self.where(n)}")
                r = float(abs(Fraction(f) / e - 1))
                worst = max(worst, -math.log1p(-r) if r < 0.5 else INF)
            return inflate(worst)
        if op in (Op.DIM, Op.ARANGE, Op.RAND):
            return 0.0
        jd = judge(n.value)          # the one rounding judgement (rounding_model)
        spec = jd.spec
        if fmt.kind == "int":
            if any(x):
                raise Unsupported(f"an integer value computed from rounded values{self.where(n)}")
            self.check_int(i, spec)
            return 0.0
        if op in N.MOVEMENT:
            return max(x)
        if op == Op.WHERE:
            if not self.stable_bool(s[0], q):
                raise Unsupported(f"rounding may change the branch taken by where(){self.where(n)}")
            if spec is None:
                return max(x[1], x[2])
            self.positive_range(i)
            self.check_rounding(i, spec)
            return _add(max(x[1], x[2]), self.cost(spec))
        if op == Op.ROUND:
            src = g.nodes[s[0]]
            if src.fmt.kind == "bool":
                if not self.stable_bool(s[0], q):
                    raise Unsupported(f"a truth value that rounding may flip{self.where(n)}")
                return 0.0
            if spec is None:
                return x[0]
            self.positive_range(i)
            self.check_rounding(i, spec)
            return _add(x[0], self.cost(spec))
        if op in (Op.NEG, Op.ABS):
            self.positive_range(s[0])
            if spec is None:
                return x[0]
            self.check_rounding(i, spec)
            return _add(x[0], self.cost(spec))
        if op in (Op.MIN, Op.MAX):
            self.positive_range(s[0]), self.positive_range(s[1])
            if sign_definite(R[s[0]]) != sign_definite(R[s[1]]):
                raise Unsupported(f"'{op}' of values of different signs{self.where(n)}")
            if spec is None:
                return max(x)
            self.check_rounding(i, spec)
            return _add(max(x), self.cost(spec))
        if op in (Op.ADD, Op.SUB):
            self.positive_range(s[0]), self.positive_range(s[1])
            sa = sign_definite(R[s[0]])
            sb = sign_definite(R[s[1]]) * (1 if op == Op.ADD else -1)
            if sa != sb:
                raise Unsupported(f"'{op}' of values that may cancel (NumFuzz has no subtraction "
                                  f"of same-sign values){self.where(n)}")
            self.positive_range(i)
            self.check_rounding(i, spec)
            return _add(max(x), self.cost(spec))
        if op in (Op.MUL, Op.DIV):
            self.positive_range(s[0]), self.positive_range(s[1])
            self.positive_range(i)
            if s[0] == s[1]:
                base = 2 * x[0] if op == Op.MUL else 0.0
            else:
                base = _add(x[0], x[1])
            if op == Op.DIV and s[0] == s[1]:
                return 0.0
            self.check_rounding(i, spec)
            # scaling by a power of two is exact in the normal range (check_rounding) only
            # when the other operand is a value of the result's format (jd.operands_fit)
            exact = jd.operands_fit and any(self.pow2(k) for k in (s if op == Op.MUL else s[1:]))
            return _add(base, 0.0 if exact else self.cost(spec))
        if op == Op.FMA:
            for k in s:
                self.positive_range(k)
            prod = I.sqr(R[s[0]]) if s[0] == s[1] else I.mul(R[s[0]], R[s[1]])
            pq = 2 * x[0] if s[0] == s[1] else _add(x[0], x[1])
            if sign_definite(prod) != sign_definite(R[s[2]]):
                raise Unsupported(f"fma whose product and addend may cancel{self.where(n)}")
            self.check_rounding(i, spec)
            return _add(max(pq, x[2]), self.cost(spec))
        if op in N.UNARY_MATH:
            self.positive_range(s[0])
            self.positive_range(i)
            qa = x[0]
            if qa == 0:
                el = 0.0
            else:
                # the argument's computed value lies within e^(+-qa) of its ideal range
                w = math.exp(qa) * (1 + 2.0 ** -50)
                Ra = R[s[0]]
                wide = Interval.of(min(lo(Ra) / w, lo(Ra) * w), max(hi(Ra) / w, hi(Ra) * w))
                el = elasticity(op, wide) if op not in (Op.SQRT, Op.RSQRT) else 0.5
            if not math.isfinite(el):
                raise Unsupported(f"'{op}' amplifies relative errors without bound over its "
                                  f"argument range{self.where(n)}")
            self.check_rounding(i, spec)
            return _add(_mul(el, qa), self.math_cost(op, spec))
        if op in (Op.SUM, Op.MEAN):
            self.positive_range(s[0])
            k = reduce_count(g, n)
            order = n.attrs[2]
            if k is None:
                raise Unsupported(f"the grade depends on the sizes {', '.join(sorted(g.unbound))}"
                                  f": give them{self.where(n)}")
            if order == "kahan":
                raise Unsupported(f"compensated summation{self.where(n)}")
            depth = max(k - 1, 0) if order != "pairwise" else (math.ceil(math.log2(k)) if k > 1 else 0)
            c = self.cost(jd.acc)
            # the elements are rounded into a narrower accumulator first (jd.first_rounded)
            conv = c if jd.first_rounded else 0.0
            if jd.first_rounded:
                self.check_rounding(i, jd.acc, R[s[0]])
            # partial sums of same-sign terms are at most the full sum (a mean's too)
            self.check_rounding(i, jd.acc, I.mul(R[s[0]], Fraction(k)), underflow=False)
            self.check_rounding(i, spec or jd.acc)
            return _add(x[0], conv, _mul(float(depth), c), self.cost(spec))
        if op in (Op.RMAX, Op.RMIN):
            if spec is None:
                return x[0]
            self.check_rounding(i, spec)
            return _add(x[0], self.cost(spec))
        if op == Op.MATMUL:
            self.positive_range(s[0]), self.positive_range(s[1])
            prod = I.mul(R[s[0]], R[s[1]])
            if sign_definite(prod) == 0:
                raise Unsupported(f"a matrix product of mixed signs{self.where(n)}")
            K = matmul_k(g, n)
            if K is None:
                raise Unsupported(f"the grade depends on the sizes {', '.join(sorted(g.unbound))}"
                                  f": give them{self.where(n)}")
            # each product is rounded into the accumulator, then K - 1 additions (jd.acc);
            # the result is rounded once more where the output format is narrower (jd.spec)
            ca = self.cost(jd.acc)
            self.check_rounding(i, jd.acc, prod)
            self.check_rounding(i, jd.acc)
            self.check_rounding(i, spec)
            return _add(x[0], x[1], _mul(float(K), ca), self.cost(spec))
        raise Unsupported(f"no relative-precision rule for '{op}'{self.where(n)}")

    def check_int(self, i: int, spec: RoundSpec | None) -> None:
        """An integer result: exact only where the judgement says it is integral (rounding to
        an integer is not relative) and the ideal range stays within the format (no
        saturation)."""
        if spec is None:
            return
        n = self.g.nodes[i]
        if spec.eta > 0:
            raise Unsupported(f"rounding to an integer is not a relative error{self.where(n)}")
        R = self.R[i]
        if lo(R) < lowest_finite(spec.fmt) or hi(R) > spec.fmt.max_finite:
            raise Unsupported(f"this {spec.fmt.name} value may saturate{self.where(n)}")

    def pow2(self, k: int) -> bool:
        n = self.g.nodes[k]
        if n.op != Op.CONST or (len(n.value.attrs) > 1 and n.value.attrs[1] is not None):
            return False
        vals = n.value.attrs[0]
        return bool(vals) and all(v != 0 and math.isfinite(v) and math.frexp(abs(v))[0] == 0.5
                                  for v in vals)


def numfuzz_grade(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None, *,
                  setting: str = "numfuzz",
                  input_grades: dict[str, float] | None = None) -> NumFuzzResult:
    """The relative-precision grade of fn's outputs (max over them); see the module docstring.

    input_grades: the RP grade each input already carries (NumFuzz's M[q] inputs), e.g.
    {"x": 2**-52}; inputs not named are exact.
    """
    if setting not in ("numfuzz", "program"):
        raise ValueError(f"unknown setting {setting!r} (numfuzz, program)")
    t0 = time.perf_counter()
    g = flatten(module, fn, dims)
    ig = dict(input_grades or {})
    unknown = set(ig) - {p.name for p in fn.params}
    if unknown:
        raise ValueError(f"{fn.name}() has no input(s) {', '.join(sorted(unknown))}")
    try:
        gr = _Grades(g, setting, ig)
        q = gr.run()
        outs = []
        for o in g.outputs:
            if g.nodes[o].fmt.kind == "bool":
                if not gr.stable_bool(o, q):
                    raise Unsupported("a truth-valued output that rounding may flip")
                outs.append(0.0)
                continue
            gr.positive_range(o)
            outs.append(q[o])
    except Unsupported as ex:
        return NumFuzzResult(None, None, [], setting, str(ex), time.perf_counter() - t0)
    grade = max(outs, default=0.0)
    return NumFuzzResult(grade, inflate(math.expm1(grade)) if grade else 0.0, outs, setting, None,
                         time.perf_counter() - t0)


# =============================================================================================
# NumFuzz's semantics, for measurement: exact arithmetic, every operation rounded upward
def _ru(x: Fraction) -> Fraction:
    """The least binary64 value >= x (no overflow handling: callers keep to finite ranges)."""
    f = float(x)
    if Fraction(f) < x:
        f = math.nextafter(f, INF)
    return Fraction(f)


def _sqrt_ru(x: Fraction) -> Fraction:
    if x < 0:
        raise ValueError("sqrt of a negative value")
    f = math.sqrt(float(x))
    while Fraction(f) ** 2 < x:
        f = math.nextafter(f, INF)
    while f > 0 and Fraction(math.nextafter(f, -INF)) ** 2 >= x:
        f = math.nextafter(f, -INF)
    return Fraction(f)


def numfuzz_reference(module: N.Module, fn: N.Function, args) -> tuple[float, ...]:
    """Run a scalar f64 program (tensor inputs through constant indices) the way NumFuzz
    assumes: every + - * / sqrt fma rounded once toward +inf in binary64, constants as the
    program rounds them. Returns the outputs as floats."""
    arrays = [np.asarray(a, dtype=np.float64) for a in args]
    dims = {k: int(v) for k, v in bind_sizes((p.value.shape, a.shape)
                                               for p, a in zip(fn.params, arrays)).items()}
    g = flatten(module, fn, dims)
    pidx = {idx: k for k, (_, idx, _) in enumerate(g.params)}
    val: list = []
    for i, n in enumerate(g.nodes):
        op = n.op
        x = [val[s] for s in n.srcs]
        if op == Op.PARAM:
            a = arrays[pidx[i]]
            val.append(np.vectorize(Fraction, otypes=[object])(a) if a.ndim else Fraction(float(a)))
            continue
        if n.shape != () or n.fmt.name != "f64":
            raise ValueError("numfuzz_reference runs scalar f64 programs only")
        if op == Op.CONST:
            val.append(Fraction(n.value.attrs[0][0]))
        elif op == Op.SLICE:
            val.append(x[0][tuple(v for v in n.index if v is not None)])
        elif op == Op.ADD:
            val.append(_ru(x[0] + x[1]))
        elif op == Op.SUB:
            val.append(_ru(x[0] - x[1]))
        elif op == Op.MUL:
            val.append(_ru(x[0] * x[1]))
        elif op == Op.DIV:
            val.append(_ru(x[0] / x[1]))
        elif op == Op.FMA:
            val.append(_ru(x[0] * x[1] + x[2]))
        elif op == Op.SQRT:
            val.append(_sqrt_ru(x[0]))
        elif op == Op.NEG:
            val.append(-x[0])
        elif op == Op.ROUND:
            val.append(x[0])
        else:
            raise ValueError(f"numfuzz_reference does not handle '{op}'")
    return tuple(float(val[o]) for o in g.outputs)
