"""Symbolic tensor dimensions.

A dimension is a polynomial with rational coefficients over named size symbols (``M``, ``N/16``,
``M*N``, ``2*K + 1``). The canonical form makes equal shapes compare equal structurally, which
is all shape inference needs; it is small and fast (checking the whole stdlib stays well under a
second) and converts to sympy for the analyses that want symbolic grades.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping, Union

Monomial = tuple[tuple[str, int], ...]  # sorted (symbol, power) pairs; () is the constant term


class Dim:
    """An immutable polynomial dimension expression."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Monomial, Fraction]):
        clean = tuple(sorted((m, Fraction(c)) for m, c in terms.items() if c != 0))
        object.__setattr__(self, "terms", clean)
        object.__setattr__(self, "_hash", hash(clean))

    def __setattr__(self, *_):  # immutable
        raise AttributeError("Dim is immutable")

    def __reduce__(self):  # pickling rebuilds through __init__ (reports cross processes)
        return (Dim, (dict(self.terms),))

    # constructors -----------------------------------------------------------------------
    @staticmethod
    def const(n: int | Fraction) -> "Dim":
        return Dim({(): Fraction(n)})

    @staticmethod
    def sym(name: str) -> "Dim":
        return Dim({((name, 1),): Fraction(1)})

    # queries ------------------------------------------------------------------------------
    def is_const(self) -> bool:
        return all(m == () for m, _ in self.terms)

    def const_value(self) -> Fraction | None:
        if not self.is_const():
            return None
        return self.terms[0][1] if self.terms else Fraction(0)

    def int_value(self) -> int | None:
        v = self.const_value()
        if v is None or v.denominator != 1:
            return None
        return int(v)

    def symbols(self) -> set[str]:
        return {s for m, _ in self.terms for s, _ in m}

    def plain_symbol(self) -> str | None:
        """The size name when this dimension is just a symbol (``N``), else None."""
        if len(self.terms) == 1:
            m, c = self.terms[0]
            if c == 1 and len(m) == 1 and m[0][1] == 1:
                return m[0][0]
        return None

    def is_integral_polynomial(self) -> bool:
        return all(c.denominator == 1 for _, c in self.terms)

    # arithmetic ---------------------------------------------------------------------------
    def __add__(self, other: "DimLike") -> "Dim":
        o = as_dim(other)
        acc: dict[Monomial, Fraction] = dict(self.terms)
        for m, c in o.terms:
            acc[m] = acc.get(m, Fraction(0)) + c
        return Dim(acc)

    __radd__ = __add__

    def __neg__(self) -> "Dim":
        return Dim({m: -c for m, c in self.terms})

    def __sub__(self, other: "DimLike") -> "Dim":
        return self + (-as_dim(other))

    def __rsub__(self, other: "DimLike") -> "Dim":
        return as_dim(other) - self

    def __mul__(self, other: "DimLike") -> "Dim":
        o = as_dim(other)
        acc: dict[Monomial, Fraction] = {}
        for m1, c1 in self.terms:
            for m2, c2 in o.terms:
                powers: dict[str, int] = dict(m1)
                for s, p in m2:
                    powers[s] = powers.get(s, 0) + p
                m = tuple(sorted(powers.items()))
                acc[m] = acc.get(m, Fraction(0)) + c1 * c2
        return Dim(acc)

    __rmul__ = __mul__

    def divide(self, k: int) -> "Dim":
        """Exact division by a positive integer constant (divisibility is checked elsewhere)."""
        return Dim({m: c / k for m, c in self.terms})

    # evaluation ---------------------------------------------------------------------------
    def evaluate(self, env: Mapping[str, int]) -> Fraction:
        total = Fraction(0)
        for m, c in self.terms:
            v = Fraction(c)
            for s, p in m:
                if s not in env:
                    raise KeyError(s)
                v *= Fraction(env[s]) ** p
            total += v
        return total

    def substitute(self, env: Mapping[str, "Dim"]) -> "Dim":
        out = Dim.const(0)
        for m, c in self.terms:
            term = Dim.const(c)
            for s, p in m:
                base = env.get(s, Dim.sym(s))
                for _ in range(p):
                    term = term * base
            out = out + term
        return out

    def to_sympy(self):  # pragma: no cover - exercised by the analyses
        import sympy

        expr = sympy.Integer(0)
        for m, c in self.terms:
            t = sympy.Rational(c.numerator, c.denominator)
            for s, p in m:
                t = t * sympy.Symbol(s, positive=True, integer=True) ** p
            expr = expr + t
        return expr

    # identity -----------------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            other = Dim.const(other)
        return isinstance(other, Dim) and self.terms == other.terms

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Dim({self})"

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts: list[str] = []
        # symbolic terms first (in sorted order), constant last: "N/16", "2*K + 1"
        ordered = [t for t in self.terms if t[0] != ()] + [t for t in self.terms if t[0] == ()]
        for i, (m, c) in enumerate(ordered):
            sign = "-" if c < 0 else "+"
            a = abs(c)
            mono = "*".join(s if p == 1 else f"{s}^{p}" for s, p in m)
            if not mono:
                body = str(a.numerator) if a.denominator == 1 else f"{a.numerator}/{a.denominator}"
            else:
                num, den = a.numerator, a.denominator
                body = mono if num == 1 else f"{num}*{mono}"
                if den != 1:
                    body = f"{body}/{den}"
            if i == 0:
                parts.append(("-" if sign == "-" else "") + body)
            else:
                parts.append(f" {sign} {body}")
        return "".join(parts)


DimLike = Union[Dim, int, Fraction]


def as_dim(x: DimLike) -> Dim:
    if isinstance(x, Dim):
        return x
    return Dim.const(x)


def divisible(d: Dim, k: int, moduli: Mapping[str, int]) -> bool:
    """Whether ``d`` is certainly divisible by ``k`` given facts ``sym % moduli[sym] == 0``.

    Every monomial ``c * s1^p1 * ...`` is a multiple of ``c * prod(m_i^p_i)``; the sum is divisible
    by ``k`` when each such term is an integer multiple of ``k``.
    """
    for m, c in d.terms:
        factor = Fraction(c)
        for s, p in m:
            factor *= Fraction(moduli.get(s, 1)) ** p
        if (factor / k).denominator != 1:
            return False
    return True


def broadcast(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """numpy's broadcast of two symbolic shapes (right-aligned), None when they do not."""
    one = Dim.const(1)
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else one
        db = b[len(b) - 1 - i] if i < len(b) else one
        if da == db or db == one:
            out.append(da)
        elif da == one:
            out.append(db)
        else:
            return None
    return tuple(reversed(out))


def bind_sizes(declared_and_actual) -> dict:
    """Sizes bound by matching declared shapes with actual ones: ``{N: actual}`` for each
    declared dimension that is a plain symbol (the first binding of a symbol wins; checking
    consistency is the caller's business where it reports errors)."""
    out: dict = {}
    for declared, actual in declared_and_actual:
        for d, a in zip(declared, actual):
            s = d.plain_symbol()
            if s is not None:
                out.setdefault(s, a)
    return out


def shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"
