"""The graded IR: one immutable, hash-consed value class.

A :class:`Value` is an SSA value: an operation applied to source values with static attributes,
producing a typed (format + symbolic shape) result. Structurally equal values are the same
Python object, so common subexpressions are shared for free and identity is equality. Source
spans and grades do not take part in identity: they live in per-function side tables
(``Function.spans``, ``Function.grades``), which the analyses fill.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator

from ..errors import Span
from .dims import Dim, shape_str
from .formats import Format


# ---------------------------------------------------------------------------------------------
# types
@dataclass(frozen=True)
class TensorType:
    fmt: Format
    shape: tuple[Dim, ...] = ()

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_fmt(self, fmt: Format) -> "TensorType":
        return TensorType(fmt, self.shape)

    def with_shape(self, shape: tuple[Dim, ...]) -> "TensorType":
        return TensorType(self.fmt, tuple(shape))

    def __str__(self) -> str:
        return self.fmt.name + (shape_str(self.shape) if self.shape else "")


@dataclass(frozen=True)
class TupleType:
    items: tuple[TensorType, ...]

    def __str__(self) -> str:
        return "(" + ", ".join(str(t) for t in self.items) + ")"


Type = TensorType | TupleType


# ---------------------------------------------------------------------------------------------
# operations
class Op:
    """Operation names (strings keep the printer and pattern rules readable)."""

    PARAM = "param"          # attrs: (name, index)
    CONST = "const"          # attrs: (values, exact[, radius]) rounded floats in fmt (flat,
                             # row-major), the exact Fractions when rounding changed any of them
                             # (else None), and, for folded functions, a bound on the distance of
                             # every exact value from the real one (see const_enclosures)
    DIM = "dim"              # attrs: (Dim,) the runtime value of a size expression, i32 scalar
    # elementwise, result rounded to the result format
    NEG, ABS, EXP, LOG, SQRT, RSQRT, TANH, SIGMOID = "neg", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid"
    FLOOR, CEIL, SIN, COS, EXP2, LOG2, NOT = "floor", "ceil", "sin", "cos", "exp2", "log2", "not"
    ADD, SUB, MUL, DIV, MOD, MIN, MAX = "add", "sub", "mul", "div", "mod", "min", "max"
    LT, LE, GT, GE, EQ, NE, AND, OR = "lt", "le", "gt", "ge", "eq", "ne", "and", "or"
    WHERE = "where"
    FMA = "fma"              # a * b + c rounded once
    ROUND = "round"          # attrs: (mode, sat, stream) ; stream is the rand ordinal or -1
    # reductions: attrs (axes, keepdims, order); result format is the accumulation format
    SUM, RMAX, RMIN, MEAN = "reduce_sum", "reduce_max", "reduce_min", "reduce_mean"
    MATMUL = "matmul"        # attrs: (acc format name,)
    # data movement (exact)
    RESHAPE = "reshape"      # shape in the type
    TRANSPOSE = "transpose"  # attrs: (perm,)
    BROADCAST = "broadcast"  # shape in the type
    CONCAT = "concat"        # attrs: (axis,)
    SLICE = "slice"          # attrs: (items,) each ('i', Dim) | ('s', start, stop, step) | ('new',)
    TOPK_MASK = "topk_mask"  # attrs: (k, axis)
    ARANGE = "arange"        # i32[n]
    RAND = "rand"            # attrs: (stream,) uniform f32 in [0, 1)
    CALL = "call"            # attrs: (function name, stream)
    PROJ = "proj"            # attrs: (index,) one result of a call


UNARY_MATH = {Op.EXP, Op.LOG, Op.SQRT, Op.RSQRT, Op.TANH, Op.SIGMOID, Op.SIN, Op.COS, Op.EXP2, Op.LOG2}
UNARY_EXACT = {Op.NEG, Op.ABS, Op.FLOOR, Op.CEIL}
UNARY = UNARY_MATH | UNARY_EXACT | {Op.NOT}
ARITH = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MOD, Op.MIN, Op.MAX}
COMPARE = {Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE}
LOGIC = {Op.AND, Op.OR}
BINARY = ARITH | COMPARE | LOGIC
ELEMENTWISE = UNARY | BINARY | {Op.WHERE, Op.ROUND, Op.FMA}
REDUCE = {Op.SUM, Op.RMAX, Op.RMIN, Op.MEAN}
MOVEMENT = {Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST, Op.CONCAT, Op.SLICE}
RANDOM = {Op.RAND}


_NAN = float("nan")


def canonical_floats(values) -> tuple[float, ...]:
    """Floats for attributes: every NaN is one object, so equal constants hash-cons together."""
    return tuple(_NAN if v != v else float(v) for v in values)


def const_radius(v: "Value") -> Fraction:
    """How far a constant's real values may be from its exact ones (0 but for folded functions,
    whose 256-bit values are only enclosures of the real ones: tanh(100.3) is not 1)."""
    return v.attrs[2] if len(v.attrs) > 2 else Fraction(0)


def const_enclosures(v: "Value") -> list[tuple[Fraction, Fraction]] | None:
    """Per element, bounds on the real value the ideal program reads; None when the rounded
    values are the real ones. Every analysis takes a constant's ideal value from here."""
    exact = v.attrs[1] if len(v.attrs) > 1 else None
    if exact is None:
        return None
    r = const_radius(v)
    return [(e - r, e + r) for e in exact]


def const_error(v: "Value") -> Fraction:
    """The largest distance from a rounded value of a constant to its real value."""
    enc = const_enclosures(v)
    if enc is None:
        return Fraction(0)
    return max((max(abs(Fraction(c) - lo), abs(hi - Fraction(c)))
                for c, (lo, hi) in zip(v.attrs[0], enc)), default=Fraction(0))


class Value:
    """An immutable, hash-consed SSA value."""

    __slots__ = ("op", "srcs", "attrs", "type", "__weakref__")
    _cache: "weakref.WeakValueDictionary[tuple, Value]" = weakref.WeakValueDictionary()

    op: str
    srcs: tuple["Value", ...]
    attrs: tuple[Any, ...]
    type: Type

    def __new__(cls, op: str, srcs: tuple["Value", ...] = (), attrs: tuple[Any, ...] = (),
                type: Type | None = None) -> "Value":
        key = (op, tuple(srcs), tuple(attrs), type)
        hit = cls._cache.get(key)
        if hit is not None:
            return hit
        v = object.__new__(cls)
        object.__setattr__(v, "op", op)
        object.__setattr__(v, "srcs", tuple(srcs))
        object.__setattr__(v, "attrs", tuple(attrs))
        object.__setattr__(v, "type", type)
        cls._cache[key] = v
        return v

    def __setattr__(self, *_):
        raise AttributeError("Value is immutable")

    def __reduce__(self):  # pickling rebuilds through the cache
        return (Value, (self.op, self.srcs, self.attrs, self.type))

    @property
    def tensor_type(self) -> TensorType:
        assert isinstance(self.type, TensorType)
        return self.type

    @property
    def fmt(self) -> Format:
        return self.tensor_type.fmt

    @property
    def shape(self) -> tuple[Dim, ...]:
        return self.tensor_type.shape

    def __repr__(self) -> str:
        return f"<Value {self.op} {self.type}>"


# ---------------------------------------------------------------------------------------------
# grades: the slot that the analyses fill
@dataclass
class Grade:
    """What the analyses know about one value (SPEC section 3); None means not yet known."""

    range: tuple[float, float] | None = None
    abs_error: float | None = None
    rel_error: float | None = None
    sensitivity: dict[str, float] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Constraint:
    """One `requires` item: a size relation, or a target feature the function needs."""

    text: str
    kind: str                    # 'cmp' | 'feature'
    lhs: Dim | None = None
    mod: int | None = None       # lhs % mod when set
    op: str = "=="
    rhs: Dim | None = None
    feature: str | None = None
    span: Span | None = None

    def holds(self, env: dict[str, int]) -> bool | None:
        """True/False when all sizes are bound, None when not decidable here."""
        if self.kind != "cmp":
            return None
        try:
            lhs = self.lhs.evaluate(env)
            rhs = self.rhs.evaluate(env)
        except KeyError:
            return None
        if self.mod is not None:
            if lhs.denominator != 1:
                return False
            lhs = Fraction(int(lhs) % self.mod)
        return {"==": lhs == rhs, "!=": lhs != rhs, "<": lhs < rhs, "<=": lhs <= rhs,
                ">": lhs > rhs, ">=": lhs >= rhs}[self.op]


@dataclass
class Parameter:
    name: str
    value: Value
    range: tuple[float, float] | None
    span: Span | None = None


@dataclass
class Function:
    """A typed SSA function: parameters, results, effects, requirements, and side tables."""

    name: str
    params: list[Parameter]
    results: tuple[Value, ...]
    result_is_tuple: bool
    effects: frozenset[str]
    requires: list[Constraint]
    dims: list[str]
    span: Span | None = None
    spans: dict[Value, Span] = field(default_factory=dict)
    names: dict[Value, str] = field(default_factory=dict)      # let names, for printing
    grades: dict[Value, Grade] = field(default_factory=dict)
    rand_consumers: int = 0
    pinned: frozenset = frozenset()   # values whose format a `let name: type` annotation fixed

    @property
    def result_types(self) -> tuple[TensorType, ...]:
        return tuple(v.tensor_type for v in self.results)

    def signature(self) -> str:
        ps = ", ".join(f"{p.name}: {p.value.type}" for p in self.params)
        rs = [str(t) for t in self.result_types]
        ret = f"({', '.join(rs)})" if self.result_is_tuple else rs[0]
        eff = " ! {" + ", ".join(sorted(self.effects)) + "}" if self.effects else ""
        return f"{self.name}({ps}) -> {ret}{eff}"

    def moduli(self) -> dict[str, int]:
        """Known divisibility facts `N % k == 0` from the requirements."""
        out: dict[str, int] = {}
        for c in self.requires:
            if c.kind == "cmp" and c.mod and c.op == "==" and c.rhs == Dim.const(0) and c.lhs is not None:
                syms = c.lhs.symbols()
                if len(syms) == 1 and c.lhs == Dim.sym(next(iter(syms))):
                    s = next(iter(syms))
                    out[s] = _lcm(out.get(s, 1), c.mod)
        return out


def _lcm(a: int, b: int) -> int:
    from math import gcd

    return a * b // gcd(a, b)


@dataclass
class Module:
    """A compiled `.grd` file (or Python embedding): its functions and named constants."""

    name: str
    functions: dict[str, Function]
    consts: dict[str, Value] = field(default_factory=dict)
    source: str | None = None
    warnings: list = field(default_factory=list)


def toposort(roots: tuple[Value, ...] | list[Value]) -> list[Value]:
    """Values reachable from roots, operands before users (iterative: no recursion limit)."""
    order: list[Value] = []
    seen: set[int] = set()
    stack: list[tuple[Value, bool]] = [(r, False) for r in reversed(list(roots))]
    while stack:
        v, expanded = stack.pop()
        if expanded:
            order.append(v)
            continue
        if id(v) in seen:
            continue
        seen.add(id(v))
        stack.append((v, True))
        for s in reversed(v.srcs):
            if id(s) not in seen:
                stack.append((s, False))
    return order


def walk(fn: Function) -> Iterator[Value]:
    yield from toposort(fn.results)
