"""Grade text for IR constants that lowers back to the identical constant values.

A CONST carries its values rounded to its format and, when rounding changed any of them, the
exact rationals they came from (nodes.py). Lowering folds a literal exactly and rounds it once
(lower.materialize: to nearest, not saturating), or rounds it as ``round(lit, fmt, mode=..,
sat=..)`` / ``lit as fmt`` says; so the text is the exact value in the form whose rounding gives
the stored values. Each candidate is checked by building the constant the way lowering does
(lower._const_value) and comparing bit for bit (the hash-consing key compares -0.0 equal to 0.0,
so identity alone would not do).

A constant folded from a function (``log2(10000.0)``) is written as its 256-bit value: Grade has
no literal for the real one, so the text's constant is that rational, and the radius the IR kept
(how far the real value may be) is not written.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..errors import GradeError
from ..ir.formats import FORMATS, Format
from ..ir.nodes import Value, const_radius
from .constfold import round_exact
from .grade_literals import fraction_text, type_text
from .lower import _const_value

__all__ = ["Unwritable", "scalar_const_text", "array_const_decl", "adopted_literal",
           "exact_values"]

F32 = FORMATS["f32"]


class Unwritable(Exception):
    """IR that no Grade text lowers to; `why` says what."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def _same_floats(a: tuple, b: tuple) -> bool:
    """Bitwise equality of float tuples (NaN equals NaN; -0.0 differs from 0.0)."""
    return len(a) == len(b) and all(
        (x != x and y != y) or (x == y and math.copysign(1.0, x) == math.copysign(1.0, y))
        for x, y in zip(a, b))


def _matches(v: Value, cand: Value) -> bool:
    return cand is v and _same_floats(cand.attrs[0], v.attrs[0])


def exact_values(v: Value) -> list[Fraction]:
    """The exact values a constant was rounded from (its values themselves when exact)."""
    ex = v.attrs[1] if len(v.attrs) > 1 else None
    if ex is not None:
        return list(ex)
    out = []
    for r in v.attrs[0]:
        if not math.isfinite(r) or (r == 0 and math.copysign(1.0, r) < 0):
            raise Unwritable(f"the constant {r!r} carries no exact value, and Grade literals are "
                             "exact rationals (no inf, nan or -0.0)")
        out.append(Fraction(r))
    return out


def _literal(x: Fraction, fmt: Format) -> str:
    return fraction_text(x, fmt.kind == "float")


def scalar_const_text(v: Value) -> str:
    """An expression that lowers to the scalar constant v in a `let c: fmt = ...`."""
    fmt = v.fmt
    (x,) = exact_values(v)
    if fmt.kind == "bool" and v.attrs[1] is None:
        return "true" if v.attrs[0][0] else "false"
    lit = _literal(x, fmt)
    candidates = [("rne", False, lit), ("rne", True, f"{lit} as {fmt.name}")]
    candidates += [(m, s, f"round({lit}, {fmt.name}, mode={m}, sat={'true' if s else 'false'})")
                   for m in ("rz", "ru", "rd") for s in (False, True)]
    for mode, sat, text in candidates:
        if _matches(v, _const_value(np.array(round_exact(x, fmt, mode, sat)), fmt, [x],
                                    const_radius(v))):
            return text
    raise Unwritable(f"the constant {v.attrs[0][0]!r} is no rounding of its exact value "
                     f"{x} to {fmt.name}")


def array_const_decl(name: str, v: Value) -> str:
    """A module `const` declaration for a constant array."""
    shape = [d.int_value() for d in v.shape]
    try:
        if any(n is None for n in shape):
            raise Unwritable("a constant array needs constant dimensions")
        xs = exact_values(v)
        arr = np.array([round_exact(x, v.fmt, "rne", False) for x in xs],
                       dtype=np.float64).reshape(shape)
        if not _matches(v, _const_value(arr, v.fmt, xs, const_radius(v))):
            raise Unwritable("its values are not its exact values rounded to nearest")
    except Unwritable as ex:
        raise GradeError(f"constant array {v.type} cannot be written in Grade: {ex.why}") from None
    if v.fmt.kind == "bool" and v.attrs[1] is None:
        items = ["true" if x else "false" for x in xs]
    else:
        items = [_literal(x, v.fmt) for x in xs]
    return f"const {name}: {type_text(v.type)} = {_nested(items, shape)}"


def _nested(items: list[str], shape: list[int], indent: str = "",
            wrap: bool | None = None) -> str:
    """A nested list literal: rows on one line when every row is short, else eight values a
    line."""
    inner = indent + "    "
    if wrap is None:
        wrap = shape[-1] * (max(map(len, items), default=0) + 2) > 96
    if len(shape) == 1:
        if not wrap:
            return "[" + ", ".join(items) + "]"
        rows = [", ".join(items[i:i + 8]) for i in range(0, len(items), 8)]
    else:
        step = len(items) // shape[0] if shape[0] else 0
        rows = [_nested(items[i * step:(i + 1) * step], shape[1:], inner, wrap)
                for i in range(shape[0])]
        if not rows:
            return "[]"
    return "[\n" + ",\n".join(inner + r for r in rows) + "\n" + indent + "]"


def adopted_literal(c: Value, other: Format) -> str | None:
    """The literal for constant c next to an operand of format `other`, when lowering gives it
    exactly c there (a weak literal adopts the other operand's format, f32 next to i32 when it
    is not an integer), else None."""
    if c.fmt.kind not in ("float", "int") or other.kind == "bool":
        return None
    try:
        (x,) = exact_values(c)
    except Unwritable:
        return None
    fmt = F32 if other.kind == "int" and x.denominator != 1 else other
    if fmt != c.fmt or not _matches(c, _const_value(np.array(round_exact(x, fmt, "rne", False)),
                                                    fmt, [x], const_radius(c))):
        return None
    text = _literal(x, fmt)
    return f"({text})" if text.startswith("-") else text
