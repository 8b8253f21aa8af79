"""Formats that follow from operands: the one rule lowering applies and every retyping pass must
keep (data movement and max/min reductions carry their operand's format, `where` the promoted
branches, comparisons bool), so a retyped program is still one the frontend could produce."""

from __future__ import annotations

from . import nodes as N
from .formats import FORMATS, Format, promote
from .nodes import Op, Value

F32, I32, BOOL = FORMATS["f32"], FORMATS["i32"], FORMATS["bool"]
_FOLLOWS_SRC = {Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST, Op.SLICE, Op.RMAX, Op.RMIN}


def derived_format(v: Value) -> Format | None:
    """The format lowering gives v from its operands (comparisons: bool, `where`: the promoted
    branches, data movement and max/min reductions: the operand's), or None where the `let`
    annotation or the round target chooses it. A pass that retypes operations must keep the
    derived formats of their users consistent, or the result is no Grade program."""
    op = v.op
    if op in N.COMPARE or op in N.LOGIC or op in (Op.NOT, Op.TOPK_MASK):
        return BOOL
    if op == Op.WHERE:
        return promote(v.srcs[1].fmt, v.srcs[2].fmt)
    if op == Op.CONCAT:
        want = v.srcs[0].fmt
        for s in v.srcs[1:]:
            want = promote(want, s.fmt)
        return want
    if op in _FOLLOWS_SRC:
        return v.srcs[0].fmt
    if op == Op.RAND:
        return F32
    if op in (Op.ARANGE, Op.DIM):
        return I32
    return None
