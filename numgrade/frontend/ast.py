"""The Grade language's abstract syntax tree.

Produced by the `.grd` parser and by the Python embedding, consumed by lowering. Every node
carries the span it came from so that every later error can point at the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ..errors import Span


@dataclass(frozen=True)
class Node:
    span: Span


# expressions -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Number(Node):
    text: str  # kept as text so that constants fold exactly
    # how far the real constant may be from the text (FPCore's PI has no exact literal)
    radius: Fraction = Fraction(0)

    @property
    def is_int(self) -> bool:
        return all(c.isdigit() for c in self.text)


@dataclass(frozen=True)
class Bool(Node):
    value: bool


@dataclass(frozen=True)
class Name(Node):
    id: str


@dataclass(frozen=True)
class EllipsisLit(Node):
    pass


@dataclass(frozen=True)
class BinOp(Node):
    op: str  # + - * / % @ == != < <= > >= and or
    left: "Expr"
    right: "Expr"


@dataclass(frozen=True)
class UnOp(Node):
    op: str  # - + not
    operand: "Expr"


@dataclass(frozen=True)
class Cast(Node):
    operand: "Expr"
    fmt: str
    fmt_span: Span


@dataclass(frozen=True)
class Slice(Node):
    start: "Expr | None"
    stop: "Expr | None"
    step: "Expr | None"


@dataclass(frozen=True)
class Index(Node):
    base: "Expr"
    items: tuple["Expr | Slice", ...]


@dataclass(frozen=True)
class KwArg(Node):
    name: str
    value: "Expr"


@dataclass(frozen=True)
class Call(Node):
    func: str
    args: tuple["Expr", ...]
    kwargs: tuple[KwArg, ...]


@dataclass(frozen=True)
class TupleLit(Node):
    items: tuple["Expr", ...]


@dataclass(frozen=True)
class ListLit(Node):
    items: tuple["Expr", ...]


Expr = Number | Bool | Name | EllipsisLit | BinOp | UnOp | Cast | Index | Call | TupleLit | ListLit


# declarations ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TypeExpr(Node):
    fmt: str
    dims: tuple[Expr, ...] | None  # None: a scalar


@dataclass(frozen=True)
class Param(Node):
    name: str
    type: TypeExpr
    range: tuple[Expr, Expr] | None


@dataclass(frozen=True)
class Let(Node):
    targets: tuple[str, ...]
    is_tuple: bool
    type: TypeExpr | None
    value: Expr


@dataclass(frozen=True)
class Return(Node):
    value: Expr


@dataclass(frozen=True)
class FnDecl(Node):
    name: str
    params: tuple[Param, ...]
    ret: tuple[TypeExpr, ...]
    ret_is_tuple: bool
    effects: tuple[tuple[str, Span], ...] | None
    requires: tuple[Expr, ...]
    body: tuple[Let | Return, ...]
    name_span: Span | None = None


@dataclass(frozen=True)
class ConstDecl(Node):
    name: str
    type: TypeExpr
    value: Expr


@dataclass(frozen=True)
class Program(Node):
    items: tuple[FnDecl | ConstDecl, ...]
    source_name: str = "<source>"
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def children(e: Expr) -> tuple[Expr, ...]:
    """Direct sub-expressions, for generic walks."""
    if isinstance(e, BinOp):
        return (e.left, e.right)
    if isinstance(e, (UnOp, Cast)):
        return (e.operand,)
    if isinstance(e, Index):
        out: list = [e.base]
        for it in e.items:
            if isinstance(it, Slice):
                out.extend(x for x in (it.start, it.stop, it.step) if x is not None)
            else:
                out.append(it)
        return tuple(out)
    if isinstance(e, Call):
        return tuple(e.args) + tuple(k.value for k in e.kwargs)
    if isinstance(e, (TupleLit, ListLit)):
        return tuple(e.items)
    return ()
