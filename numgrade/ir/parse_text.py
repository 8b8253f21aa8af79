"""Read the textual IR that :mod:`.printer` writes back into functions and modules.

``parse_module(print_module(m))`` rebuilds every function with the same hash-consed value graph
(structurally equal values are the same objects, so ``parsed.results == fn.results`` holds by
identity while the original is alive, and an equal graph is built when it is not), the same
parameters, ranges, effects, requirements, size symbols and side tables (let names, grades as
printed); printing the result gives the same text. The syntax is described in :mod:`.printer`.

The parser is a small regex tokenizer and a recursive-descent parser; whitespace and line breaks
are insignificant and ``//`` starts a comment (a comment on a value's line that reads
``range=[lo, hi] abs=e rel=r`` is the value's grade). Mistakes raise
:class:`numgrade.errors.SourceError` pointing at the line and column of the IR text.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from ..errors import SourceError, Span, register_source
from . import nodes as N
from .dims import Dim
from .formats import FORMATS
from .nodes import Constraint, Grade, Op, Parameter, TensorType, TupleType, Value
from .printer import REDUCE_OPS, constraint_canonical, derived_dims, derived_rand_consumers

ROUND_MODES = ("rne", "rz", "ru", "rd", "sr")
REDUCE_ORDERS = ("any", "seq", "pairwise", "kahan")
CMP_OPS = ("==", "!=", "<", "<=", ">", ">=")
KNOWN_OPS = frozenset(v for k, v in vars(Op).items() if not k.startswith("_") and isinstance(v, str))

_TOKEN = re.compile(r"""
  (?P<ws>[ \t\r\n\f]+)
| (?P<comment>//[^\n]*)
| (?P<value>%[A-Za-z0-9_]+)
| (?P<sym>@[A-Za-z_][A-Za-z0-9_]*)
| (?P<index>\#[0-9]+)
| (?P<num>(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)
| (?P<str>"(?:[^"\\\n]|\\.)*")
| (?P<id>[A-Za-z_][A-Za-z0-9_]*)
| (?P<punct>->|==|!=|<=|>=|[<>=:,()\[\]{}!+\-*/^%])
""", re.X)

_GRADE = re.compile(r"^(?:range=\[\s*(?P<lo>[^,\s\]]+)\s*,\s*(?P<hi>[^\]\s]+)\s*\])?\s*"
                    r"(?:abs=(?P<abs>\S+))?\s*(?:rel=(?P<rel>\S+))?\s*$")


@dataclass(frozen=True)
class Tok:
    kind: str    # value sym index num str id punct eof
    text: str
    line: int
    col: int

    def __str__(self) -> str:
        return "end of input" if self.kind == "eof" else repr(self.text)


def tokenize(text: str, file: str) -> tuple[list[Tok], dict[int, str]]:
    """Tokens, and the `//` comments by line (for grades)."""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    toks: list[Tok] = []
    comments: dict[int, str] = {}
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        line = bisect.bisect_right(starts, pos)
        col = pos - starts[line - 1] + 1
        if m is None:
            ch = text[pos]
            raise SourceError(f"unexpected character {ch!r} in IR text", Span(file, line, col))
        kind = m.lastgroup
        if kind == "comment":
            comments[line] = m.group()[2:].strip()
        elif kind != "ws":
            toks.append(Tok(kind, m.group(), line, col))
        pos = m.end()
    line = bisect.bisect_right(starts, n)
    toks.append(Tok("eof", "", line, n - starts[line - 1] + 1))
    return toks, comments


def _unquote(s: str) -> str:
    out = []
    i = 1
    while i < len(s) - 1:
        c = s[i]
        if c == "\\":
            i += 1
            c = {"n": "\n", "t": "\t"}.get(s[i], s[i])
        out.append(c)
        i += 1
    return "".join(out)


def _is_int_text(t: str) -> bool:
    return t.isdigit()


class _Function:
    """Parse-time state of one function."""

    def __init__(self, name: str, span: Span):
        self.name = name
        self.span = span
        self.values: dict[str, Value] = {}
        self.names: dict[Value, str] = {}
        self.spans: dict[Value, Span] = {}
        self.grades: dict[Value, Grade] = {}
        self.calls: list[tuple[Value, Tok]] = []


class IRParser:
    def __init__(self, text: str, file: str = "<ir>", module: N.Module | None = None):
        self.text = text
        self.file = file
        register_source(file, text)
        self.toks, self.comments = tokenize(text, file)
        self.pos = 0
        self.module = module
        self.functions: dict[str, N.Function] = dict(module.functions) if module else {}
        self.consts: dict[str, Value] = dict(module.consts) if module else {}
        self.new_functions: dict[str, N.Function] = {}
        self.new_consts: dict[str, Value] = {}
        self.fn_spans: dict[str, Span] = {}
        self.pending_calls: list[tuple[Value, Tok, str]] = []

    # tokens --------------------------------------------------------------------------------
    def peek(self, k: int = 0) -> Tok:
        return self.toks[min(self.pos + k, len(self.toks) - 1)]

    def next(self) -> Tok:
        t = self.toks[self.pos]
        if t.kind != "eof":
            self.pos += 1
        return t

    def span(self, t: Tok) -> Span:
        return Span(self.file, t.line, t.col, t.col + max(len(t.text), 1))

    def error(self, msg: str, t: Tok | None = None):
        raise SourceError(msg, self.span(t or self.peek()))

    def at(self, kind: str, text: str | None = None, k: int = 0) -> bool:
        t = self.peek(k)
        return t.kind == kind and (text is None or t.text == text)

    def at_punct(self, text: str) -> bool:
        return self.at("punct", text)

    def at_word(self, text: str) -> bool:
        return self.at("id", text)

    def accept(self, text: str) -> Tok | None:
        t = self.peek()
        if t.kind in ("punct", "id") and t.text == text:
            return self.next()
        return None

    def expect(self, text: str, what: str | None = None) -> Tok:
        t = self.peek()
        if t.kind in ("punct", "id") and t.text == text:
            return self.next()
        self.error(f"expected {what or repr(text)}, found {t}")

    def expect_kind(self, kind: str, what: str) -> Tok:
        t = self.peek()
        if t.kind != kind:
            self.error(f"expected {what}, found {t}")
        return self.next()

    def ident(self, what: str = "a name") -> Tok:
        return self.expect_kind("id", what)

    def sep_list(self, close: str, item: Callable[[], Any]) -> list:
        """Items separated by commas up to `close` (consumed); a trailing comma is allowed."""
        out = []
        while not self.at_punct(close):
            out.append(item())
            if not self.accept(","):
                break
        self.expect(close)
        return out

    # literals ------------------------------------------------------------------------------
    def integer(self, what: str = "an integer") -> int:
        neg = self.accept("-") is not None
        t = self.peek()
        if t.kind != "num" or not _is_int_text(t.text):
            self.error(f"expected {what}, found {t}")
        self.next()
        return -int(t.text) if neg else int(t.text)

    def number(self, what: str = "a number") -> float:
        sign = 1.0
        if self.accept("-"):
            sign = -1.0
        else:
            self.accept("+")
        t = self.peek()
        if t.kind == "num":
            self.next()
            return sign * float(t.text)
        if t.kind == "id" and t.text in ("inf", "nan"):
            self.next()
            return sign * float(t.text)
        self.error(f"expected {what}, found {t}")

    def boolean(self, what: str) -> bool:
        t = self.peek()
        if t.kind == "id" and t.text in ("true", "false"):
            self.next()
            return t.text == "true"
        self.error(f"expected true or false for {what}, found {t}")

    def int_list(self, what: str) -> tuple[int, ...]:
        self.expect("[", f"a list of {what}")
        return tuple(self.sep_list("]", lambda: self.integer(what)))

    # dimensions ----------------------------------------------------------------------------
    def dim(self) -> Dim:
        d = self._dim_term()
        while self.at_punct("+") or self.at_punct("-"):
            op = self.next().text
            r = self._dim_term()
            d = d + r if op == "+" else d - r
        return d

    def _dim_term(self) -> Dim:
        d = self._dim_unary()
        while self.at_punct("*") or self.at_punct("/"):
            op = self.next()
            if op.text == "*":
                d = d * self._dim_unary()
            else:
                t = self.peek()
                k = self._dim_unary().int_value()
                if k is None or k <= 0:
                    self.error("a dimension can only be divided by a positive integer", t)
                d = d.divide(k)
        return d

    def _dim_unary(self) -> Dim:
        if self.accept("-"):
            return -self._dim_unary()
        if self.accept("+"):
            return self._dim_unary()
        return self._dim_power()

    def _dim_power(self) -> Dim:
        d = self._dim_atom()
        if self.accept("^"):
            p = self.integer("an exponent")
            if p < 0:
                self.error("a dimension exponent must be non-negative")
            out = Dim.const(1)
            for _ in range(p):
                out = out * d
            d = out
        return d

    def _dim_atom(self) -> Dim:
        t = self.peek()
        if t.kind == "num":
            if not _is_int_text(t.text):
                self.error(f"a dimension must be an integer, not {t.text}")
            self.next()
            return Dim.const(int(t.text))
        if t.kind == "id":
            if t.text in FORMATS or t.text in ("None", "true", "false"):
                self.error(f"'{t.text}' cannot be a dimension name")
            self.next()
            return Dim.sym(t.text)
        if self.accept("("):
            d = self.dim()
            self.expect(")")
            return d
        self.error(f"expected a dimension expression, found {t}")

    # types ---------------------------------------------------------------------------------
    def tensor_type(self) -> TensorType:
        t = self.ident("a format name")
        fmt = FORMATS.get(t.text)
        if fmt is None:
            self.error(f"unknown format '{t.text}' (formats: {', '.join(FORMATS)})", t)
        shape: tuple[Dim, ...] = ()
        if self.accept("["):
            shape = tuple(self.sep_list("]", self.dim))
        return TensorType(fmt, shape)

    def any_type(self) -> TensorType | TupleType:
        if self.accept("("):
            return TupleType(tuple(self.sep_list(")", self.tensor_type)))
        return self.tensor_type()

    # module --------------------------------------------------------------------------------
    def parse_module(self, name: str) -> N.Module:
        while not self.at("eof"):
            if self.at_word("const"):
                self.const_decl()
            elif self.at_word("func"):
                self.function()
            else:
                self.error(f"expected 'func' or 'const', found {self.peek()}")
        self.check_calls()
        functions = dict(self.new_functions)
        return N.Module(name, functions, dict(self.new_consts))

    def const_decl(self) -> None:
        self.expect("const")
        t = self.expect_kind("sym", "a constant name like @TABLE")
        name = t.text[1:]
        if name in self.new_consts:
            self.error(f"constant @{name} is defined twice", t)
        self.expect(":")
        tt = self.peek()
        typ = self.tensor_type()
        self.expect("=")
        v = self.const_value(typ, tt)
        self.consts[name] = v
        self.new_consts[name] = v

    def const_value(self, typ: TensorType, type_tok: Tok) -> Value:
        start = self.peek()
        if self.accept("["):
            vals = tuple(self.sep_list("]", self.number))
        else:
            vals = (self.number("a constant value"),)
        n = 1
        for d in typ.shape:
            k = d.int_value()
            if k is None or k < 0:
                self.error(f"a constant needs a constant shape, not {typ}", type_tok)
            n *= k
        if len(vals) != n:
            self.error(f"constant of type {typ} needs {n} value(s), found {len(vals)}", start)
        exact = None
        if self.at_word("exact"):
            self.next()
            et = self.peek()
            if self.accept("["):
                exact = tuple(self.sep_list("]", self.fraction))
            else:
                exact = (self.fraction(),)
            if len(exact) != n:
                self.error(f"constant of type {typ} needs {n} exact value(s), found {len(exact)}",
                           et)
            if self.at_word("within"):
                self.next()
                rt = self.peek()
                radius = self.fraction()
                if radius <= 0:
                    self.error("a radius must be positive", rt)
                return Value(Op.CONST, (), (N.canonical_floats(vals), exact, radius), typ)
        return Value(Op.CONST, (), (N.canonical_floats(vals), exact), typ)

    def fraction(self) -> Fraction:
        """An exact rational ``p`` or ``p/q`` (the exact value of a rounded constant)."""
        neg = self.accept("-") is not None
        num = self.integer("an exact value like 1/10")
        den = 1
        if self.accept("/"):
            den = self.integer("a denominator")
            if den <= 0:
                self.error("a denominator must be positive")
        return Fraction(-num if neg else num, den)

    # functions -----------------------------------------------------------------------------
    def function(self) -> N.Function:
        ft = self.expect("func")
        nt = self.expect_kind("sym", "a function name like @f")
        name = nt.text[1:]
        if name in self.new_functions:
            self.error(f"function @{name} is defined twice", nt)
        st = _Function(name, self.span(ft))
        self.expect("(")
        params: list[Parameter] = []

        def param() -> None:
            pt = self.expect_kind("value", "a parameter like %x")
            pname = pt.text[1:]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pname):
                self.error(f"a parameter name must be an identifier, not {pt.text}", pt)
            if pname in st.values:
                self.error(f"parameter {pt.text} is declared twice", pt)
            self.expect(":")
            tt = self.peek()
            typ = self.any_type()
            if not isinstance(typ, TensorType):
                self.error("a parameter cannot have a tuple type", tt)
            rng = None
            if self.accept("in"):
                self.expect("[")
                lt = self.peek()
                lo = self.number("a range bound")
                self.expect(",")
                hi = self.number("a range bound")
                self.expect("]")
                if not lo <= hi:
                    self.error(f"empty range [{lo!r}, {hi!r}]", lt)
                rng = (lo, hi)
            v = Value(Op.PARAM, (), (pname, len(params)), typ)
            sp = self.span(pt)
            st.values[pname] = v
            st.names.setdefault(v, pname)
            st.spans.setdefault(v, sp)
            params.append(Parameter(pname, v, rng, sp))

        self.sep_list(")", param)
        self.expect("->", "'->' and the result type")
        rt = self.peek()
        if self.accept("("):
            ret_types = self.sep_list(")", self.tensor_type)
            if not ret_types:
                self.error("a function needs at least one result", rt)
            is_tuple = True
        else:
            ret_types = [self.tensor_type()]
            is_tuple = False
        effects: set[str] = set()
        if self.accept("!"):
            self.expect("{")
            effects = {t.text for t in self.sep_list("}", lambda: self.ident("an effect name"))}
        requires: list[Constraint] = []
        if self.accept("requires"):
            requires.append(self.constraint())
            while self.accept(","):
                requires.append(self.constraint())
        attrs: dict[str, tuple[Any, Tok]] = {}
        if self.accept("attributes"):
            self.expect("{")

            def fattr() -> None:
                kt = self.ident("an attribute name")
                if kt.text in attrs:
                    self.error(f"attribute '{kt.text}' given twice", kt)
                self.expect("=")
                if kt.text == "dims":
                    self.expect("[")
                    attrs["dims"] = ([t.text for t in self.sep_list("]", self.ident)], kt)
                elif kt.text == "rand_consumers":
                    attrs["rand_consumers"] = (self.integer(), kt)
                else:
                    self.error(f"unknown function attribute '{kt.text}' "
                               "(known: dims, rand_consumers)", kt)

            self.sep_list("}", fattr)
        self.expect("{", "'{' and the function body")
        results = self.body(st)
        rtok, rnames = results
        if len(rnames) != len(ret_types):
            self.error(f"@{name} declares {len(ret_types)} result(s) but returns {len(rnames)}",
                       rtok)
        res_values = []
        for (v, t), want in zip(rnames, ret_types):
            if v.type != want:
                self.error(f"result {t.text} has type {v.type} but @{name} declares {want}", t)
            res_values.append(v)
        self.expect("}", "'}' closing the function")
        results_t = tuple(res_values)
        dims = attrs["dims"][0] if "dims" in attrs else derived_dims(params)
        rc = attrs["rand_consumers"][0] if "rand_consumers" in attrs \
            else derived_rand_consumers(results_t)
        reachable = set(map(id, N.toposort(results_t))) | {id(p.value) for p in params}
        fn = N.Function(name, params, results_t, is_tuple, frozenset(effects), requires, dims,
                        st.span, {v: s for v, s in st.spans.items() if id(v) in reachable},
                        {v: s for v, s in st.names.items() if id(v) in reachable},
                        {v: g for v, g in st.grades.items() if id(v) in reachable}, rc)
        self.new_functions[name] = fn
        self.functions.setdefault(name, fn)
        return fn

    def constraint(self) -> Constraint:
        start = self.peek()
        sp = self.span(start)
        if self.at_word("feature") and self.at("punct", "(", 1):
            self.next()
            self.next()
            feat = self.ident("a feature name").text
            self.expect(")")
            c = Constraint("", "feature", feature=feat, span=sp)
        else:
            lhs = self.dim()
            mod = None
            t = self.peek()
            if t.kind == "punct" and t.text == "%":
                self.next()
                mt = self.peek()
                mod = self.integer("a modulus")
            elif t.kind == "value" and _is_int_text(t.text[1:]):  # `N %16` tokenizes as a value
                self.next()
                mt, mod = t, int(t.text[1:])
            if mod is not None and mod <= 0:
                self.error("the modulus of a requirement must be a positive integer", mt)
            ot = self.peek()
            if not (ot.kind == "punct" and ot.text in CMP_OPS):
                self.error(f"expected a comparison ({' '.join(CMP_OPS)}), found {ot}")
            self.next()
            rhs = self.dim()
            c = Constraint("", "cmp", lhs, mod, ot.text, rhs, span=sp)
        text = constraint_canonical(c)
        if self.at("str"):
            text = _unquote(self.next().text)
        return Constraint(text, c.kind, c.lhs, c.mod, c.op, c.rhs, c.feature, sp)

    # bodies --------------------------------------------------------------------------------
    def body(self, st: _Function) -> tuple[Tok, list[tuple[Value, Tok]]]:
        while True:
            t = self.peek()
            if t.kind == "id" and t.text == "return":
                self.next()
                outs = [(self.operand(st), self.toks[self.pos - 1])]
                while self.accept(","):
                    outs.append((self.operand(st), self.toks[self.pos - 1]))
                return t, outs
            if t.kind != "value":
                self.error(f"expected a value definition like %x = ... or 'return', found {t}")
            self.statement(st)

    def operand(self, st: _Function) -> Value:
        t = self.expect_kind("value", "a value like %x")
        v = st.values.get(t.text[1:])
        if v is None:
            self.error(f"unknown value {t.text}", t)
        return v

    def statement(self, st: _Function) -> None:
        nt = self.next()
        name = nt.text[1:]
        if name in st.values:
            self.error(f"value {nt.text} is defined twice", nt)
        self.expect("=")
        ot = self.ident("an operation name")
        op = ot.text
        if op not in KNOWN_OPS:
            self.error(f"unknown operation '{op}'", ot)
        if op == Op.PARAM:
            self.error("parameters are declared in the function header", ot)
        srcs: list[Value] = []
        while self.at("value"):
            srcs.append(self.operand(st))
        at = None
        if self.at_punct("{"):
            at = self.next()
        attr_start = self.pos
        if at is not None and self.at_punct("}"):  # `{}`: no attributes
            self.next()
            at = None
        if at is not None:
            # the type follows the attributes; find it first, since some attributes need it
            depth, j = 1, self.pos
            while depth:
                tk = self.toks[j]
                if tk.kind == "eof":
                    self.error("unclosed '{' of the attributes", at)
                depth += tk.text == "{" and tk.kind == "punct"
                depth -= tk.text == "}" and tk.kind == "punct"
                j += 1
            self.pos = j
        self.expect(":", "':' and the type")
        tt = self.peek()
        typ = self.any_type()
        end = self.pos
        type_line = self.toks[end - 1].line
        if at is not None:
            self.pos = attr_start
            attrs = self.attrs(op, srcs, typ, tt, at)
            self.expect("}", "'}' closing the attributes")
            self.pos = end
        else:
            attrs = self.no_attrs(op, ot)
        self.check(op, srcs, attrs, typ, ot, tt)
        v = Value(op, tuple(srcs), attrs, typ)
        st.values[name] = v
        sp = self.span(nt)
        st.spans.setdefault(v, sp)
        if not _is_int_text(name):
            st.names.setdefault(v, name)
        if op == Op.CALL:
            self.pending_calls.append((v, ot, st.name))
        c = self.comments.get(type_line)
        if c is not None:
            g = _parse_grade(c)
            if g is not None:
                st.grades[v] = g

    def no_attrs(self, op: str, ot: Tok) -> tuple:
        if op == Op.ROUND:
            return ("rne", True, -1)
        needs = {Op.CONST, Op.DIM, Op.MATMUL, Op.TRANSPOSE, Op.CONCAT, Op.SLICE,
                 Op.TOPK_MASK, Op.RAND, Op.CALL, Op.PROJ} | set(REDUCE_OPS)
        if op in needs:
            self.error(f"'{op}' needs attributes in braces", ot)
        return ()

    # attributes ----------------------------------------------------------------------------
    def attrs(self, op: str, srcs: list[Value], typ, type_tok: Tok, at: Tok) -> tuple:
        if self.at_word("attrs") and self.at("punct", "=", 1):
            self.next()
            self.next()
            lt = self.peek()
            lit = self.literal()
            if not isinstance(lit, tuple):
                self.error("attrs= takes a tuple like (1, \"name\")", lt)
            return lit
        if op == Op.CONST:
            if self.at("sym"):
                t = self.next()
                v = self.consts.get(t.text[1:])
                if v is None:
                    self.error(f"unknown constant {t.text}", t)
                if v.type != typ:
                    self.error(f"constant {t.text} has type {v.type}, not {typ}", type_tok)
                return v.attrs
            if not isinstance(typ, TensorType):
                self.error("a constant has a tensor type", type_tok)
            return self.const_value(typ, type_tok).attrs
        if op == Op.DIM:
            return (self.dim(),)
        if op == Op.SLICE:
            self.expect("[", "a list of slice items like [0:N, 3, None]")
            return (tuple(self.sep_list("]", self.slice_item)),)
        if op == Op.PROJ:
            t = self.expect_kind("index", "a result index like #0")
            return (int(t.text[1:]),)
        callee = None
        if op == Op.CALL:
            callee = self.expect_kind("sym", "the callee like @f").text[1:]
        kv = self.keywords()
        if op == Op.CALL:
            self.only(kv, {"stream"})
            return (callee, self.kv_int(kv, "stream", -1))
        if op == Op.ROUND:
            self.only(kv, {"mode", "sat", "stream"})
            mode = self.kv_name(kv, "mode", "rne", ROUND_MODES)
            sat = self.kv_bool(kv, "sat", True)
            stream = self.kv_int(kv, "stream", -1)
            if (mode == "sr") != (stream >= 0):
                self.error("mode=sr needs a stream=N (and only it has one)", at)
            return (mode, sat, stream)
        if op in REDUCE_OPS:
            self.only(kv, {"axes", "keepdims", "order"})
            if "axes" not in kv:
                self.error(f"'{op}' needs axes=[...]", at)
            axes = self.kv_list(kv, "axes")
            rank = self._rank(srcs)
            if list(axes) != sorted(set(axes)) or any(a < 0 or (rank is not None and a >= rank)
                                                      for a in axes):
                self.error(f"axes must be increasing, distinct and in range for rank {rank}",
                           kv["axes"][1])
            keep = self.kv_bool(kv, "keepdims", False)
            order = self.kv_name(kv, "order", "any", REDUCE_ORDERS)
            return (axes, keep, order)
        if op == Op.MATMUL:
            self.only(kv, {"acc"})
            return (self.kv_name(kv, "acc", None, tuple(FORMATS)),)
        if op == Op.TRANSPOSE:
            self.only(kv, {"perm"})
            perm = self.kv_list(kv, "perm")
            rank = self._rank(srcs)
            if sorted(perm) != list(range(len(perm))) or (rank is not None and len(perm) != rank):
                self.error(f"{list(perm)} is not a permutation of the {rank} axes",
                           kv["perm"][1])
            return (perm,)
        if op == Op.CONCAT:
            self.only(kv, {"axis"})
            return (self.kv_int(kv, "axis", None),)
        if op == Op.TOPK_MASK:
            self.only(kv, {"k", "axis"})
            return (self.kv_int(kv, "k", None), self.kv_int(kv, "axis", None))
        if op == Op.RAND:
            self.only(kv, {"stream"})
            return (self.kv_int(kv, "stream", None),)
        if kv:
            k, (_, t) = next(iter(kv.items()))
            self.error(f"'{op}' takes no attribute '{k}'", t)
        return ()

    @staticmethod
    def _rank(srcs: list[Value]) -> int | None:
        if srcs and isinstance(srcs[0].type, TensorType):
            return srcs[0].tensor_type.rank
        return None

    def keywords(self) -> dict[str, tuple[Any, Tok]]:
        """`key=value` items and bare flags up to the closing brace (not consumed)."""
        out: dict[str, tuple[Any, Tok]] = {}
        while not self.at_punct("}"):
            kt = self.ident("an attribute like key=value")
            if kt.text in out:
                self.error(f"attribute '{kt.text}' given twice", kt)
            if self.accept("="):
                t = self.peek()
                if t.kind == "punct" and t.text == "[":
                    val: Any = self.int_list("integers")
                elif t.kind == "id":
                    self.next()
                    val = True if t.text == "true" else False if t.text == "false" else t.text
                else:
                    val = self.integer("a value")
            else:
                val = True
            out[kt.text] = (val, kt)
            self.accept(",")
        return out

    def only(self, kv: dict, allowed: set[str]) -> None:
        for k, (_, t) in kv.items():
            if k not in allowed:
                self.error(f"unexpected attribute '{k}' (allowed: {', '.join(sorted(allowed))})",
                           t)

    def _need(self, kv, key, default):
        if key not in kv:
            if default is None:
                self.error(f"missing attribute {key}=...")
            return None
        return kv[key]

    def kv_int(self, kv, key: str, default: int | None) -> int:
        got = self._need(kv, key, default)
        if got is None:
            return default
        val, t = got
        if isinstance(val, bool) or not isinstance(val, int):
            self.error(f"{key} must be an integer", t)
        return val

    def kv_bool(self, kv, key: str, default: bool) -> bool:
        if key not in kv:
            return default
        val, t = kv[key]
        if not isinstance(val, bool):
            self.error(f"{key} must be true or false", t)
        return val

    def kv_name(self, kv, key: str, default: str | None, options: tuple[str, ...]) -> str:
        got = self._need(kv, key, default)
        if got is None:
            return default
        val, t = got
        if not isinstance(val, str) or val not in options:
            self.error(f"{key} must be one of {', '.join(options)}", t)
        return val

    def kv_list(self, kv, key: str) -> tuple[int, ...]:
        val, t = kv[key]
        if not isinstance(val, tuple):
            self.error(f"{key} must be a list like [0, 1]", t)
        return val

    def slice_item(self) -> tuple:
        if self.at_word("None"):
            self.next()
            return ("new",)
        first = self.dim()
        if not self.accept(":"):
            return ("i", first)
        stop = self.dim()
        step = 1
        if self.accept(":"):
            t = self.peek()
            step = self.integer("a slice step")
            if step <= 0:
                self.error("slice steps must be positive", t)
        return ("s", first, stop, step)

    def literal(self) -> Any:
        t = self.peek()
        if t.kind == "str":
            self.next()
            return _unquote(t.text)
        if t.kind == "id":
            if t.text in ("none", "true", "false"):
                self.next()
                return {"none": None, "true": True, "false": False}[t.text]
            if t.text in ("dim", "frac") and self.at("punct", "(", 1):
                self.next()
                self.next()
                if t.text == "dim":
                    out: Any = self.dim()
                else:
                    a = self.integer()
                    self.expect(",")
                    b = self.integer()
                    if b == 0:
                        self.error("zero denominator", t)
                    out = Fraction(a, b)
                self.expect(")")
                return out
            if t.text in ("inf", "nan"):
                return self.number()
        if t.kind == "punct" and t.text == "(":
            self.next()
            return tuple(self.sep_list(")", self.literal))
        if t.kind == "punct" and t.text == "-" or t.kind == "num":
            neg = self.accept("-") is not None
            n = self.peek()
            if n.kind == "num" and _is_int_text(n.text):
                self.next()
                return -int(n.text) if neg else int(n.text)
            if n.kind == "num" or (n.kind == "id" and n.text in ("inf", "nan")):
                self.next()
                return -float(n.text) if neg else float(n.text)
        self.error(f"expected an attribute literal, found {t}")

    # checks --------------------------------------------------------------------------------
    def check(self, op: str, srcs: list[Value], attrs: tuple, typ, ot: Tok, tt: Tok) -> None:
        arity = _ARITY.get(op)
        if arity is not None and len(srcs) != arity:
            self.error(f"'{op}' takes {arity} operand(s), found {len(srcs)}", ot)
        if op == Op.CONCAT and not srcs:
            self.error("'concat' needs at least one operand", ot)
        if op == Op.CALL:
            if not isinstance(typ, TupleType):
                self.error("a call's type is a tuple of its result types, like (f32[N])", tt)
        elif not isinstance(typ, TensorType):
            self.error(f"'{op}' has a tensor type, not a tuple", tt)
        if op not in (Op.CALL, Op.PROJ):
            for s in srcs:
                if not isinstance(s.type, TensorType):
                    self.error(f"'{op}' cannot take a call's tuple; use proj", ot)
        if op == Op.PROJ:
            src = srcs[0]
            if src.op != Op.CALL:
                self.error("proj takes the result of a call", ot)
            i = attrs[0] if attrs and isinstance(attrs[0], int) else -1
            items = src.type.items
            if not 0 <= i < len(items):
                self.error(f"proj index {i} is out of range for {len(items)} result(s)", ot)
            if items[i] != typ:
                self.error(f"result {i} of the call has type {items[i]}, not {typ}", tt)

    def check_calls(self) -> None:
        for v, t, _ in self.pending_calls:
            name = v.attrs[0] if v.attrs else None
            callee = self.functions.get(name)
            if callee is None:
                self.error(f"call to unknown function @{name}", t)
            if len(v.srcs) != len(callee.params):
                self.error(f"@{name} takes {len(callee.params)} argument(s), found {len(v.srcs)}",
                           t)
            if len(v.type.items) != len(callee.results):
                self.error(f"@{name} returns {len(callee.results)} result(s), the call's type "
                           f"has {len(v.type.items)}", t)
            for i, (a, p) in enumerate(zip(v.srcs, callee.params)):
                pt = p.value.tensor_type
                if a.fmt != pt.fmt or a.tensor_type.rank != pt.rank:
                    self.error(f"argument {i} of @{name} is {a.type}, which does not fit "
                               f"parameter %{p.name}: {pt}", t)
        self.check_recursion()

    def check_recursion(self) -> None:
        edges: dict[str, list[tuple[str, Tok]]] = {}
        for v, t, caller in self.pending_calls:
            edges.setdefault(caller, []).append((v.attrs[0], t))
        state: dict[str, int] = {}  # 1: on the stack, 2: done

        for root in list(edges):
            if state.get(root):
                continue
            stack = [(root, iter(edges.get(root, ())))]
            state[root] = 1
            while stack:
                fn, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[fn] = 2
                    stack.pop()
                    continue
                callee, t = nxt
                if state.get(callee) == 1:
                    path = [f for f, _ in stack] + [callee]
                    self.error(f"recursive call ({' -> '.join('@' + f for f in path)}); "
                               "recursion is not supported", t)
                if not state.get(callee):
                    state[callee] = 1
                    stack.append((callee, iter(edges.get(callee, ()))))


_ARITY: dict[str, int] = {}
for _op in N.UNARY:
    _ARITY[_op] = 1
for _op in N.BINARY:
    _ARITY[_op] = 2
_ARITY.update({Op.WHERE: 3, Op.ROUND: 1, Op.MATMUL: 2, Op.RESHAPE: 1, Op.TRANSPOSE: 1,
               Op.BROADCAST: 1, Op.SLICE: 1, Op.TOPK_MASK: 1, Op.ARANGE: 0, Op.RAND: 0,
               Op.CONST: 0, Op.DIM: 0, Op.PROJ: 1})
for _op in REDUCE_OPS:
    _ARITY[_op] = 1
if hasattr(Op, "FMA"):
    _ARITY[Op.FMA] = 3


def _parse_grade(text: str) -> Grade | None:
    m = _GRADE.match(text)
    if m is None or not (m.group("lo") or m.group("abs")):
        return None
    try:
        rng = (float(m.group("lo")), float(m.group("hi"))) if m.group("lo") else None
        ab = float(m.group("abs")) if m.group("abs") else None
        rel = float(m.group("rel")) if m.group("rel") else None
    except ValueError:
        return None
    return Grade(range=rng, abs_error=ab, rel_error=rel)


# ---------------------------------------------------------------------------------------------
# entry points
def _guarded(parse: Callable[[IRParser], Any], text: str, name: str, module=None) -> Any:
    p = IRParser(text, name, module)
    try:
        return parse(p)
    except RecursionError:
        raise SourceError("IR text nested too deeply", p.span(p.peek())) from None


def parse_module(text: str, name: str = "<ir>") -> N.Module:
    """A module from its printed form (``print_module``)."""
    return _guarded(lambda p: p.parse_module(name), text, name)


def parse_function(text: str, name: str = "<ir>", module: N.Module | None = None) -> N.Function:
    """One function from its printed form (``print_function``).

    Calls and ``const {@NAME}`` references resolve against ``module`` when it is given (calls
    are not checked without one).
    """
    def one(p: IRParser) -> N.Function:
        if not p.at_word("func"):
            p.error(f"expected 'func', found {p.peek()}")
        fn = p.function()
        if not p.at("eof"):
            p.error(f"expected the end of the text after one function, found {p.peek()}")
        if module is not None:
            p.check_calls()
        return fn

    return _guarded(one, text, name, module)


def parse_dim(text: str, name: str = "<dim>") -> Dim:
    """A dimension expression such as ``N/16`` or ``2*K + 1``."""
    def one(p: IRParser) -> Dim:
        d = p.dim()
        if not p.at("eof"):
            p.error(f"unexpected {p.peek()} after the dimension expression")
        return d

    return _guarded(one, text, name)


def read_ir(path: str | Path) -> N.Module:
    """A module from a `.ir` file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as ex:
        raise SourceError(f"{p}: cannot read: {ex}") from None
    return parse_module(text, str(p))
