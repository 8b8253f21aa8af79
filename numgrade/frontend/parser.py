"""Parse Grade source text into the AST.

The lark LALR parser runs with an inline transformer, so the syntax tree is built during parsing
without recursion; nesting depth is tracked as nodes are built and a program nested deeper than
``MAX_DEPTH`` is rejected with a diagnostic instead of exhausting Python's stack later.
"""

from __future__ import annotations

import threading
from pathlib import Path

import lark
from lark import Lark, Token, Transformer

from ..errors import Diagnostic, SourceError, Span, register_source
from . import ast as A

MAX_DEPTH = 1000   # nesting (a left-deep a + b + ... chain counts one level per term)
MAX_SOURCE_CHARS = 4_000_000

_GRAMMAR = (Path(__file__).with_name("grammar.lark")).read_text()


class _TooDeep(Exception):
    def __init__(self, span: Span):
        self.span = span


class _Builder(Transformer):
    """Turns lark rule reductions into AST nodes (called inline by the LALR parser)."""

    def __init__(self) -> None:
        super().__init__()
        self.file = "<source>"
        self.depth: dict[int, int] = {}

    # helpers -------------------------------------------------------------------------
    def _span(self, tok: Token) -> Span:
        end = tok.column + len(str(tok)) if tok.line == getattr(tok, "end_line", tok.line) else None
        return Span(self.file, tok.line, tok.column, end)

    def _mk(self, node, *kids):
        d = 1 + max((self.depth.get(id(k), 0) for k in kids if k is not None), default=0)
        if d > MAX_DEPTH:
            raise _TooDeep(node.span)
        self.depth[id(node)] = d
        return node

    # expressions ----------------------------------------------------------------------
    def number(self, c):
        return self._mk(A.Number(self._span(c[0]), str(c[0])))

    def true(self, c):
        return self._mk(A.Bool(self._span(c[0]), True))

    def false(self, c):
        return self._mk(A.Bool(self._span(c[0]), False))

    def name(self, c):
        return self._mk(A.Name(self._span(c[0]), str(c[0])))

    def ellipsis(self, c):
        return self._mk(A.EllipsisLit(self._span(c[0])))

    def binop(self, c):
        left, op, right = c
        return self._mk(A.BinOp(self._span(op), str(op), left, right), left, right)

    def unop(self, c):
        op, operand = c
        return self._mk(A.UnOp(self._span(op), str(op), operand), operand)

    def cast(self, c):
        operand, as_tok, fmt = c
        return self._mk(A.Cast(self._span(as_tok), operand, str(fmt), self._span(fmt)), operand)

    def index(self, c):
        base, *items = c
        return self._mk(A.Index(base.span, base, tuple(items)), base, *items)

    def sub_index(self, c):
        return c[0]

    def sub_slice(self, c):
        start, stop, step = (list(c) + [None, None, None])[:3]
        anchor = next((x for x in (start, stop, step) if x is not None), None)
        span = anchor.span if anchor is not None else Span(self.file, 0, 0)
        return self._mk(A.Slice(span, start, stop, step), start, stop, step)

    def call(self, c):
        fname, *args = c
        args = [a for a in args if a is not None]
        pos = tuple(a for a in args if not isinstance(a, A.KwArg))
        kws = tuple(a for a in args if isinstance(a, A.KwArg))
        return self._mk(A.Call(self._span(fname), str(fname), pos, kws), *args)

    def pos_arg(self, c):
        return c[0]

    def kw_arg(self, c):
        name, value = c
        return self._mk(A.KwArg(self._span(name), str(name), value), value)

    def tuple(self, c):
        items = tuple(x for x in c if x is not None)
        return self._mk(A.TupleLit(items[0].span, items), *items)

    def list(self, c):
        items = tuple(x for x in c if x is not None)
        span = items[0].span if items else Span(self.file, 0, 0)
        return self._mk(A.ListLit(span, items), *items)

    # declarations ------------------------------------------------------------------
    def type(self, c):
        fmt, *dims = c
        if not dims:
            return A.TypeExpr(self._span(fmt), str(fmt), None)
        dims = tuple(d for d in dims if d is not None)
        return A.TypeExpr(self._span(fmt), str(fmt), dims)

    def ret_single(self, c):
        return (c[0],), False

    def ret_tuple(self, c):
        return tuple(c), True

    def effects(self, c):
        return tuple((str(t), self._span(t)) for t in c if t is not None)

    def requires(self, c):
        return tuple(c[1:])

    def param(self, c):
        name, typ = c[0], c[1]
        rng = None
        if len(c) > 2 and c[2] is not None:
            rng = (c[3], c[4])
        return A.Param(self._span(name), str(name), typ, rng)

    def target_name(self, c):
        return (str(c[0]),), False, self._span(c[0])

    def target_tuple(self, c):
        names = tuple(str(t) for t in c if t is not None)
        return names, True, self._span(c[0])

    def let_stmt(self, c):
        let_tok, target, typ, value = c
        names, is_tuple, span = target
        return A.Let(span, names, is_tuple, typ, value)

    def return_stmt(self, c):
        return A.Return(self._span(c[0]), c[1])

    def block(self, c):
        return tuple(c)

    def fn_decl(self, c):
        fn_tok, name, *rest = c
        body = rest[-1]
        requires = rest[-2]
        effects = rest[-3]
        ret, ret_is_tuple = rest[-4]
        params = tuple(p for p in rest[:-4] if p is not None)
        return A.FnDecl(self._span(fn_tok), str(name), params, ret, ret_is_tuple, effects,
                        requires or (), body, self._span(name))

    def const_decl(self, c):
        tok, name, typ, value = c
        return A.ConstDecl(self._span(name), str(name), typ, value)

    def start(self, c):
        return tuple(c)


_LOCK = threading.Lock()
_BUILDER = _Builder()
_PARSER: Lark | None = None


def _parser() -> Lark:
    global _PARSER
    if _PARSER is None:
        _PARSER = Lark(_GRAMMAR, parser="lalr", transformer=_BUILDER, maybe_placeholders=True,
                       cache=False)
    return _PARSER


_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "CMPOP": "a comparison", "ADDOP": "'+' or '-'",
    "MULOP": "an operator", "$END": "end of input",
}


def _describe_terminal(p: Lark, name: str) -> str:
    if name in _TOKEN_WORDS:
        return _TOKEN_WORDS[name]
    try:
        term = p.get_terminal(name)
        if term.pattern.type == "str":
            return repr(term.pattern.value)
    except Exception:  # pragma: no cover - unknown terminal names are described by name
        pass
    return name.lower()


def parse(text: str, file: str = "<source>") -> A.Program:
    """Parse a whole `.grd` text; raise SourceError with a located diagnostic on bad syntax."""
    if not isinstance(text, str):
        raise SourceError("source must be text", None)
    register_source(file, text)
    if len(text) > MAX_SOURCE_CHARS:
        raise SourceError(f"source is too large ({len(text)} characters; limit {MAX_SOURCE_CHARS})",
                          Span(file, 1, 1))
    if "\x00" in text:
        pos = text.index("\x00")
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        raise SourceError("source contains a NUL character", Span(file, line, col))
    with _LOCK:
        p = _parser()
        _BUILDER.file = file
        _BUILDER.depth = {}
        try:
            items = p.parse(text)
        except _TooDeep as e:
            raise SourceError(f"expression nested too deeply (limit {MAX_DEPTH})", e.span) from None
        except lark.exceptions.UnexpectedCharacters as e:
            ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else "?"
            raise SourceError(f"unexpected character {ch!r}", Span(file, e.line, e.column)) from None
        except lark.exceptions.UnexpectedToken as e:
            tok = e.token
            expected = sorted({_describe_terminal(p, t) for t in (e.expected or ())})
            if tok.type == "$END":
                lines = text.rstrip().split("\n")  # just after the last token
                span = Span(file, len(lines), len(lines[-1]) + 1)
                what = "unexpected end of input"
            else:
                span = Span(file, tok.line, tok.column, tok.column + len(str(tok)))
                what = f"unexpected {str(tok)!r}"
            hint = f", expected {', '.join(expected[:8])}" if expected else ""
            raise SourceError(what + hint, span) from None
        except lark.exceptions.UnexpectedEOF:  # pragma: no cover - LALR reports $END tokens
            raise SourceError("unexpected end of input", Span(file, 1, 1)) from None
        except lark.exceptions.VisitError as e:  # a builder bug surfaced through lark
            orig = e.orig_exc
            if isinstance(orig, _TooDeep):
                raise SourceError(f"expression nested too deeply (limit {MAX_DEPTH})",
                                  orig.span) from None
            raise
        except RecursionError:
            raise SourceError("program nested too deeply", Span(file, 1, 1)) from None
        finally:
            _BUILDER.depth = {}
    return A.Program(Span(file, 1, 1), tuple(items), file)


def parse_diagnostic(text: str, file: str) -> list[Diagnostic]:
    """Parse and return diagnostics instead of raising (for tools that collect)."""
    try:
        parse(text, file)
    except SourceError as e:
        return e.diagnostics
    return []
