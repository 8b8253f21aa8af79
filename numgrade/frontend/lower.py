"""Lower the AST to the graded IR, checking names, formats, shapes and requirements.

Errors are collected (one per offending expression) and reported together; an erroneous
expression lowers to a poison marker so that checking can continue without cascades.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Union

import numpy as np

from ..errors import DiagnosticSink, Span
from ..ir import nodes as N
from ..ir.dims import Dim, broadcast, divisible, shape_str
from ..ir.formats import FORMATS, Format, promote, represents
from ..ir.nodes import Op, TensorType, Value
from . import ast as A
from .constfold import (MAX_FOLD_BITS, ZERO, FoldError, check_size, fold_binary_enclosed,
                        fold_unary_enclosed, parse_number, radius_up, round_exact)

F32, F64, I32, BOOL = FORMATS["f32"], FORMATS["f64"], FORMATS["i32"], FORMATS["bool"]
ROUND_MODES = ("rne", "rz", "ru", "rd", "sr")
REDUCE_ORDERS = ("any", "seq", "pairwise", "kahan")
MAX_ELEMENTS_CONST = 1 << 16


class _Poison(Exception):
    """Raised after an error has been recorded, to abandon the current expression."""


@dataclass(frozen=True)
class Weak:
    """A folded scalar constant: its value, its format (None: a weak literal) and its radius, a
    bound on the distance from the value to the real one (0 unless a function was folded)."""

    value: Fraction | bool
    fmt: Format | None = None
    radius: Fraction = ZERO


@dataclass(frozen=True)
class Tup:
    items: tuple[Value, ...]


LV = Union[Value, Weak, Tup]

UNARY_FUNCS = {"abs": Op.ABS, "exp": Op.EXP, "log": Op.LOG, "sqrt": Op.SQRT, "rsqrt": Op.RSQRT,
               "tanh": Op.TANH, "sigmoid": Op.SIGMOID, "floor": Op.FLOOR, "ceil": Op.CEIL,
               "sin": Op.SIN, "cos": Op.COS, "exp2": Op.EXP2, "log2": Op.LOG2}
BIN_OPS = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "%": Op.MOD,
           "==": Op.EQ, "!=": Op.NE, "<": Op.LT, "<=": Op.LE, ">": Op.GT, ">=": Op.GE,
           "and": Op.AND, "or": Op.OR}
REDUCE_FUNCS = {"sum": Op.SUM, "mean": Op.MEAN, "max": Op.RMAX, "min": Op.RMIN}
BUILTINS = set(UNARY_FUNCS) | set(REDUCE_FUNCS) | {
    "where", "fma", "round", "reshape", "transpose", "broadcast_to", "concat", "matmul", "topk_mask",
    "rand", "arange"}


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _const_value(values: np.ndarray, fmt: Format, exact: list | None = None,
                 radius: Fraction = ZERO) -> Value:
    """A CONST value: its rounded values, and the exact values where any rounding happened
    (the ideal program uses those: it removes the rounding of constants too), and the radius
    of folded functions (the real values are within it of the exact ones)."""
    shape = tuple(Dim.const(int(s)) for s in values.shape)
    flat = N.canonical_floats(float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1))
    ex = None
    if exact is not None:
        ex_t = tuple(Fraction(x) for x in exact)
        if radius > 0 or any(not np.isfinite(r) or Fraction(r) != x for r, x in zip(flat, ex_t)):
            ex = ex_t
    if radius > 0:
        return Value(Op.CONST, (), (flat, ex, radius), TensorType(fmt, shape))
    return Value(Op.CONST, (), (flat, ex), TensorType(fmt, shape))


class ModuleLowering:
    """Lowers a whole program; functions are lowered on demand so callees come first."""

    def __init__(self, program: A.Program, sink: DiagnosticSink):
        self.program = program
        self.sink = sink
        self.consts: dict[str, Weak | Value] = {}
        self.const_spans: dict[str, Span] = {}
        self.fn_decls: dict[str, A.FnDecl] = {}
        self.functions: dict[str, N.Function | None] = {}
        self.in_progress: list[str] = []

    def run(self) -> N.Module:
        for item in self.program.items:
            if isinstance(item, A.ConstDecl):
                self._lower_const(item)
            else:
                if item.name in self.fn_decls:
                    self.sink.error(f"function '{item.name}' is defined twice", item.name_span)
                    continue
                if item.name in FORMATS or item.name in BUILTINS:
                    self.sink.error(f"'{item.name}' is a built-in name and cannot name a function",
                                    item.name_span)
                    continue
                self.fn_decls[item.name] = item
        for name in self.fn_decls:
            self.function(name)
        fns = {k: v for k, v in self.functions.items() if v is not None}
        return N.Module(self.program.source_name, fns,
                        {k: v for k, v in self.consts.items() if isinstance(v, Value)})

    def function(self, name: str, call_span: Span | None = None) -> N.Function | None:
        if name in self.functions:
            return self.functions[name]
        if name in self.in_progress:
            self.sink.error(f"recursive call to '{name}' ({' -> '.join(self.in_progress + [name])}); "
                            "recursion is not supported", call_span)
            return None
        self.in_progress.append(name)
        try:
            fn = FunctionLowering(self, self.fn_decls[name]).run()
        finally:
            self.in_progress.pop()
        self.functions[name] = fn
        return fn

    # constants ---------------------------------------------------------------------
    def _lower_const(self, d: A.ConstDecl) -> None:
        if d.name in self.consts:
            self.sink.error(f"constant '{d.name}' is defined twice", d.span)
            return
        if d.name in FORMATS or d.name in BUILTINS:
            self.sink.error(f"'{d.name}' is a built-in name and cannot name a constant", d.span)
            return
        fmt = FORMATS.get(d.type.fmt)
        if fmt is None:
            self.sink.error(f"unknown format '{d.type.fmt}'{_suggest(d.type.fmt, FORMATS)}",
                            d.type.span)
            self.consts[d.name] = _POISON  # reported once: its uses do not cascade
            return
        fl = FunctionLowering(self, None)
        fl._stmt_span = d.span  # where errors without a place of their own point
        try:
            if d.type.dims is None:
                v = fl.fold_const(d.value)
                if isinstance(v.value, bool):
                    self.consts[d.name] = Weak(v.value, BOOL)
                else:
                    fl.materialize(v, fmt, d.value.span)  # warns when it overflows
                    self.consts[d.name] = Weak(v.value, fmt, v.radius)
            else:
                shape = []
                for de in d.type.dims:
                    dd = fl.to_dim(de)
                    if dd.int_value() is None or dd.int_value() < 0:
                        self.sink.error("a constant array needs constant, non-negative dimensions",
                                        de.span)
                        self.consts[d.name] = _POISON
                        return
                    shape.append(dd.int_value())
                arr, exact, radius = fl.fold_array(d.value, tuple(shape), fmt)
                self.consts[d.name] = _const_value(arr, fmt, exact, radius)
            self.const_spans[d.name] = d.span
        except _Poison:
            self.consts[d.name] = _POISON


class FunctionLowering:
    """Lowers one function declaration (or a constant expression when decl is None)."""

    def __init__(self, mod: ModuleLowering, decl: A.FnDecl | None):
        self.mod = mod
        self.decl = decl
        self.sink = mod.sink
        self.env: dict[str, LV] = {}
        self.dims: dict[str, Dim] = {}
        self.moduli: dict[str, int] = {}
        self.spans: dict[Value, Span] = {}
        self.names: dict[Value, str] = {}
        self.pinned: set[Value] = set()
        self.stream = 0
        self.effects_seen: list[tuple[str, Span]] = []

    # errors ------------------------------------------------------------------------------
    def err(self, msg: str, span: Span | None):
        if span is not None and span.line == 0:  # e.g. `[]`: point at the statement instead
            span = getattr(self, "_stmt_span", None) or (self.decl.name_span if self.decl
                                                         else None)
        self.sink.error(msg, span)
        raise _Poison()

    def mk(self, op: str, srcs, attrs, type_, span: Span) -> Value:
        v = Value(op, tuple(srcs), tuple(attrs), type_)
        self.spans.setdefault(v, span)
        return v

    # function ------------------------------------------------------------------------
    def run(self) -> N.Function | None:
        d = self.decl
        errors_before = len(self.sink.errors)
        params = self._params(d)
        requires = self._requires(d)
        ret_types = self._ret_types(d)
        results: tuple[Value, ...] | None = None
        for i, stmt in enumerate(d.body):
            self._stmt_span = stmt.span
            if results is not None:
                self.sink.error("statement after return is unreachable", stmt.span)
                break
            try:
                if isinstance(stmt, A.Let):
                    self._let(stmt)
                else:
                    results = self._return(stmt, ret_types)
            except _Poison:
                if isinstance(stmt, A.Return):
                    results = ()
                else:
                    for t in stmt.targets:  # poison the names so later uses don't cascade
                        self.env[t] = _POISON
        if results is None:
            self.sink.error(f"function '{d.name}' has no return statement", d.name_span)
        effects = frozenset(e for e, _ in (d.effects or ()))
        for e, sp in (d.effects or ()):
            if not e.isidentifier():
                self.sink.error(f"bad effect name '{e}'", sp)
        if len(self.sink.errors) > errors_before or params is None or not results:
            return None
        return N.Function(d.name, params, results, d.ret_is_tuple, effects, requires,
                          list(self.dims), d.span, self.spans, self.names, {}, self.stream,
                          frozenset(self.pinned))

    def _params(self, d: A.FnDecl) -> list[N.Parameter] | None:
        ok = True
        for p in d.params:  # pass 1: plain-name dims introduce size symbols
            for de in p.type.dims or ():
                if isinstance(de, A.Name) and de.id not in self.dims:
                    if de.id in FORMATS or de.id in self.mod.consts:
                        self.sink.error(f"'{de.id}' cannot be used as a dimension name", de.span)
                        ok = False
                        continue
                    self.dims[de.id] = Dim.sym(de.id)
        for r in d.requires:  # facts like N % 16 == 0 are needed before N/16 is checked
            if (isinstance(r, A.BinOp) and r.op == "==" and isinstance(r.left, A.BinOp)
                    and r.left.op == "%" and isinstance(r.left.left, A.Name)
                    and isinstance(r.left.right, A.Number) and r.left.right.is_int
                    and len(r.left.right.text) <= 18 and isinstance(r.right, A.Number)
                    and r.right.text.lower().partition("e")[0].strip("0.") == ""):
                k = int(r.left.right.text)
                if k > 0 and r.left.left.id in self.dims:
                    s = r.left.left.id
                    self.moduli[s] = self.moduli.get(s, 1) * k // _gcd(self.moduli.get(s, 1), k)
        params: list[N.Parameter] = []
        seen: set[str] = set()
        for i, p in enumerate(d.params):
            try:
                if p.name in seen:
                    self.err(f"parameter '{p.name}' is declared twice", p.span)
                if p.name in self.dims:
                    self.err(f"parameter '{p.name}' has the name of a dimension", p.span)
                if p.name in FORMATS:
                    self.err(f"'{p.name}' is a format name and cannot name a parameter", p.span)
                seen.add(p.name)
                t = self.type_of(p.type)
                rng = None
                if p.range is not None:
                    lo, hi = (self.fold_const(e) for e in p.range)
                    if isinstance(lo.value, bool) or isinstance(hi.value, bool):
                        self.err("a range needs numeric bounds", p.range[0].span)
                    if max(abs(lo.value), abs(hi.value)) > _F64_MAX:
                        self.err("a range bound must be within the f64 range", p.range[0].span)
                    if lo.value > hi.value:
                        self.err(f"empty range [{float(lo.value)}, {float(hi.value)}]",
                                 p.range[0].span)
                    # outward: a bound folded from a function is only known to within its radius
                    rng = (float(lo.value), float(hi.value)) if lo.radius == hi.radius == 0 else \
                        (round_exact(lo.value - lo.radius, F64, "rd"),
                         round_exact(hi.value + hi.radius, F64, "ru"))
                    if t.fmt.kind == "bool":
                        self.err("a bool parameter cannot have a range", p.range[0].span)
                v = self.mk(Op.PARAM, (), (p.name, i), t, p.span)
                self.env[p.name] = v
                self.names[v] = p.name
                params.append(N.Parameter(p.name, v, rng, p.span))
            except _Poison:
                ok = False
                self.env.setdefault(p.name, _POISON)
        return params if ok else None

    def _requires(self, d: A.FnDecl) -> list[N.Constraint]:
        out = []
        for r in d.requires:
            try:
                out.append(self._constraint(r))
            except _Poison:
                pass
        return out

    def _constraint(self, r: A.Expr) -> N.Constraint:
        text = _unparse(r)
        if isinstance(r, A.Call) and r.func == "feature":
            if len(r.args) != 1 or not isinstance(r.args[0], A.Name) or r.kwargs:
                self.err("feature(...) takes one name, e.g. feature(native_e2m1)", r.span)
            return N.Constraint(text, "feature", feature=r.args[0].id, span=r.span)
        if not (isinstance(r, A.BinOp) and r.op in ("==", "!=", "<", "<=", ">", ">=")):
            self.err("a requirement is a size comparison (e.g. N % 16 == 0) or feature(NAME)",
                     r.span)
        lhs, mod = r.left, None
        if isinstance(lhs, A.BinOp) and lhs.op == "%":
            k = self.to_dim(lhs.right).int_value()
            if k is None or k <= 0:
                self.err("the modulus of a requirement must be a positive integer", lhs.right.span)
            mod = k
            lhs = lhs.left
        c = N.Constraint(text, "cmp", self.to_dim(lhs), mod, r.op, self.to_dim(r.right), span=r.span)
        if c.lhs.is_const() and c.rhs.is_const() and c.holds({}) is False:
            self.err(f"requirement '{text}' is false", r.span)
        return c

    def _ret_types(self, d: A.FnDecl) -> list[TensorType | None]:
        out: list[TensorType | None] = []
        for t in d.ret:
            try:
                out.append(self.type_of(t))
            except _Poison:
                out.append(None)
        return out

    # types -------------------------------------------------------------------------------
    def fmt_of(self, name: str, span: Span) -> Format:
        f = FORMATS.get(name)
        if f is None:
            self.err(f"unknown format '{name}'{_suggest(name, FORMATS)}", span)
        return f

    def type_of(self, t: A.TypeExpr) -> TensorType:
        fmt = self.fmt_of(t.fmt, t.span)
        if t.dims is None:
            return TensorType(fmt, ())
        return TensorType(fmt, tuple(self._size(e) for e in t.dims))

    def _size(self, e: A.Expr) -> Dim:
        """A dimension of a type or shape: a size expression that is not a negative constant."""
        d = self.to_dim(e)
        if d.int_value() is not None and d.int_value() < 0:
            self.err(f"a dimension cannot be negative ({d})", e.span)
        return d

    def to_dim(self, e: A.Expr) -> Dim:
        """A size expression: integers, dimension names, + - * and exact division."""
        if isinstance(e, A.Number):
            if not e.is_int:
                self.err(f"a dimension must be an integer, not {e.text}", e.span)
            if len(e.text) > 18:
                self.err(f"dimension {e.text[:20]}... is too large", e.span)
            return Dim.const(int(e.text))
        if isinstance(e, A.Name):
            if e.id in self.dims:
                return self.dims[e.id]
            c = self.mod.consts.get(e.id)
            if c is _POISON:
                raise _Poison()
            if isinstance(c, Weak) and not isinstance(c.value, bool) and \
                    c.value.denominator == 1 and not c.radius:
                return Dim.const(int(c.value))
            hint = _suggest(e.id, self.dims) if self.dims else ""
            self.err(f"unknown dimension '{e.id}'{hint}", e.span)
        if isinstance(e, A.UnOp) and e.op == "-":
            return -self.to_dim(e.operand)
        if isinstance(e, A.BinOp) and e.op in ("+", "-", "*"):
            a, b = self.to_dim(e.left), self.to_dim(e.right)
            return a + b if e.op == "+" else a - b if e.op == "-" else a * b
        if isinstance(e, A.BinOp) and e.op == "/":
            a, b = self.to_dim(e.left), self.to_dim(e.right)
            k = b.int_value()
            if k is None or k <= 0:
                self.err("a dimension can only be divided by a positive integer constant",
                         e.right.span)
            if not divisible(a, k, self.moduli):
                syms = sorted(a.symbols())
                need = f"; add `requires {syms[0]} % {k} == 0`" if len(syms) == 1 else ""
                self.err(f"cannot show that {a} is divisible by {k}{need}", e.span)
            return a.divide(k)
        self.err("not a dimension expression (integers, dimension names, + - * /)", e.span)

    # statements ------------------------------------------------------------------------
    def _let(self, s: A.Let) -> None:
        for t in s.targets:
            if t in FORMATS:
                self.err(f"'{t}' is a format name and cannot be a variable", s.span)
            if t in self.dims:
                self.err(f"'{t}' is a dimension name and cannot be a variable", s.span)
        if s.is_tuple:
            if s.type is not None:
                self.err("a tuple binding cannot have a type annotation", s.type.span)
            v = self.expr(s.value)
            if not isinstance(v, Tup):
                self.err(f"expected a tuple of {len(s.targets)} values on the right", s.value.span)
            if len(v.items) != len(s.targets):
                self.err(f"cannot unpack {len(v.items)} values into {len(s.targets)} names",
                         s.span)
            for name, item in zip(s.targets, v.items):
                self.env[name] = item
                self.names.setdefault(item, name)
            return
        if s.type is not None:
            t = self.type_of(s.type)
            v = self.expr(s.value, hint=t.fmt)
            v = self.coerce(v, t.fmt, s.value.span, convert=True)
            if isinstance(v, Value):
                self.pinned.add(v)
            if v.shape != t.shape:
                self.err(f"value has shape {shape_str(v.shape)} but the annotation says "
                         f"{shape_str(t.shape)}", s.value.span)
        else:
            v = self.expr(s.value)
        self.env[s.targets[0]] = v
        if isinstance(v, Value):
            self.names.setdefault(v, s.targets[0])

    def _return(self, s: A.Return, ret_types: list[TensorType | None]) -> tuple[Value, ...]:
        d = self.decl
        if isinstance(s.value, A.TupleLit) and d.ret_is_tuple:
            items = [self.expr(e) for e in s.value.items]
            spans = [e.span for e in s.value.items]
        else:
            v = self.expr(s.value)
            if isinstance(v, Tup):
                items, spans = list(v.items), [s.value.span] * len(v.items)
            else:
                items, spans = [v], [s.value.span]
        if len(items) != len(ret_types):
            self.err(f"function '{d.name}' declares {len(ret_types)} result(s) but returns "
                     f"{len(items)}", s.value.span)
        out = []
        for i, (v, rt, sp) in enumerate(zip(items, ret_types, spans)):
            if rt is None:
                raise _Poison()
            if isinstance(v, Weak):
                v = self.materialize(v, rt.fmt, sp)
                if rt.shape:
                    v = self.mk(Op.BROADCAST, (v,), (), rt, sp)
            if isinstance(v, Tup):
                self.err("a result cannot be a tuple", sp)
            if v.fmt != rt.fmt:
                self.err(f"result {i} has format {v.fmt.name} but the signature declares "
                         f"{rt.fmt.name}; convert with `as {rt.fmt.name}`", sp)
            if v.shape != rt.shape:
                self.err(f"result {i} has shape {shape_str(v.shape)} but the signature declares "
                         f"{shape_str(rt.shape)}", sp)
            out.append(v)
        return tuple(out)

    # constants ---------------------------------------------------------------------------
    def fold_const(self, e: A.Expr) -> Weak:
        v = self.expr(e)
        if not isinstance(v, Weak):
            self.err("expected a constant expression", e.span)
        return v

    def fold_array(self, e: A.Expr, shape: tuple[int, ...],
                   fmt: Format) -> tuple[np.ndarray, list[Fraction], Fraction]:
        """Rounded values, exact values and the largest radius of a constant array."""
        total = int(np.prod(shape)) if shape else 1
        if total > MAX_ELEMENTS_CONST:
            self.err(f"constant array too large ({total} elements)", e.span)
        out = np.zeros(shape, dtype=np.float64)
        exact = np.zeros(shape, dtype=object)
        radius = [ZERO]

        def fill(node: A.Expr, idx: tuple[int, ...]) -> None:
            depth = len(idx)
            if depth == len(shape):
                w = self.fold_const(node)
                if isinstance(w.value, bool):
                    out[idx] = float(w.value)
                    exact[idx] = Fraction(int(w.value))
                else:
                    out[idx] = round_exact(w.value, fmt, "rne", False)
                    exact[idx] = w.value
                    radius[0] = max(radius[0], w.radius)
                return
            if not isinstance(node, A.ListLit):
                self.err(f"expected a list of {shape[depth]} items", node.span)
            if len(node.items) != shape[depth]:
                self.err(f"expected {shape[depth]} items, found {len(node.items)}", node.span)
            for i, item in enumerate(node.items):
                fill(item, idx + (i,))

        fill(e, ())
        return out, list(exact.reshape(-1)), radius[0]

    def materialize(self, w: Weak, fmt: Format, span: Span) -> Value:
        """A constant as a typed scalar value of fmt (one exact rounding)."""
        if isinstance(w.value, bool):
            return _const_value(np.array(float(w.value)), fmt if fmt.kind == "bool" else BOOL)
        r = round_exact(w.value, fmt, "rne", False)
        if not np.isfinite(r) or (fmt.kind == "float" and abs(Fraction(r)) < abs(w.value)
                                  and abs(r) == fmt.max_finite and abs(w.value) > fmt.max_finite):
            what = "is not representable in" if np.isnan(r) else "overflows"
            self.sink.warn(f"constant {_short(w.value)} {what} {fmt.name}", span)
        v = _const_value(np.array(r), fmt, [w.value], w.radius)
        self.spans.setdefault(v, span)
        return v

    # expressions -------------------------------------------------------------------------
    def expr(self, e: A.Expr, hint: Format | None = None) -> LV:
        if isinstance(e, A.Number):
            try:
                return Weak(parse_number(e.text), None, e.radius)
            except FoldError as ex:
                self.err(str(ex), e.span)
        if isinstance(e, A.Bool):
            return Weak(e.value, BOOL)
        if isinstance(e, A.Name):
            return self.name(e)
        if isinstance(e, A.BinOp):
            if e.op == "@":
                return self.matmul(e.left, e.right, None, e.span, hint)
            if e.op == "**":
                return self.power(e, hint)
            return self.binary(BIN_OPS[e.op], e.op, self.expr(e.left), self.expr(e.right),
                               e.span, hint, (e.left.span, e.right.span))
        if isinstance(e, A.UnOp):
            x = self.expr(e.operand)
            if e.op == "+":
                return x
            if e.op == "not":
                return self.logical_not(x, e.span)
            return self.unary(Op.NEG, "neg", x, e.span, hint)
        if isinstance(e, A.Cast):
            fmt = self.fmt_of(e.fmt, e.fmt_span)
            return self.round(self.expr(e.operand), fmt, "rne", True, e.span)
        if isinstance(e, A.Call):
            return self.call(e, hint)
        if isinstance(e, A.Index):
            return self.index(e)
        if isinstance(e, A.TupleLit):
            items = []
            for it in e.items:
                v = self.expr(it)
                if isinstance(v, Tup):
                    self.err("tuples cannot be nested", it.span)
                items.append(v)
            if any(isinstance(v, Weak) for v in items):
                items = [self.materialize(v, F32, it.span) if isinstance(v, Weak) else v
                         for v, it in zip(items, e.items)]
            return Tup(tuple(items))
        if isinstance(e, A.ListLit):
            self.err("a list is only allowed as a shape, a permutation, the argument of concat, "
                     "or the value of a const array", e.span)
        if isinstance(e, A.EllipsisLit):
            self.err("'...' is only allowed inside an index", e.span)
        self.err("unsupported expression", e.span)

    def name(self, e: A.Name) -> LV:
        if e.id in self.env:
            v = self.env[e.id]
            if v is _POISON:
                raise _Poison()
            return v
        if e.id in self.mod.consts:
            if self.mod.consts[e.id] is _POISON:
                raise _Poison()
            return self.mod.consts[e.id]
        if e.id in self.dims:
            return self.mk(Op.DIM, (), (self.dims[e.id],), TensorType(I32, ()), e.span)
        if e.id in FORMATS:
            self.err(f"format '{e.id}' is not a value (did you mean `x as {e.id}`?)", e.span)
        if e.id in BUILTINS or e.id in self.mod.fn_decls:
            self.err(f"function '{e.id}' is not a value; call it", e.span)
        options = list(self.env) + list(self.mod.consts) + list(self.dims)
        self.err(f"unknown name '{e.id}'{_suggest(e.id, options)}", e.span)

    def value_of(self, x: LV, span: Span) -> Value | Weak:
        if isinstance(x, Tup):
            self.err("a tuple cannot be used as a value here; unpack it with `let (a, b) = ...`",
                     span)
        return x

    def coerce(self, x: LV, fmt: Format, span: Span, convert: bool = False) -> Value:
        """Give x the format fmt: constants round once; values convert when allowed."""
        x = self.value_of(x, span)
        if isinstance(x, Weak):
            return self.materialize(x, fmt, span)
        if x.fmt == fmt:
            return x
        if convert:
            return self.mk(Op.ROUND, (x,), ("rne", False, -1), x.tensor_type.with_fmt(fmt), span)
        self.err(f"expected {fmt.name}, found {x.fmt.name}", span)

    def broadcast_shapes(self, a: tuple[Dim, ...], b: tuple[Dim, ...], span: Span) -> tuple[Dim, ...]:
        out = broadcast(a, b)
        if out is None:
            pairs = [(x, y) for x, y in zip(reversed(a), reversed(b))
                     if x != y and x != Dim.const(1) and y != Dim.const(1)]
            da, db = pairs[0]
            self.err(f"shapes {shape_str(a)} and {shape_str(b)} do not broadcast "
                     f"({da} vs {db})", span)
        return out

    def _check_float(self, v: Value, what: str, span: Span) -> None:
        if v.fmt.kind == "bool":
            self.err(f"{what} is not defined on bool values; convert with `as f32` or use where",
                     span)

    def binary(self, op: str, sym: str, a: LV, b: LV, span: Span, hint: Format | None = None,
               spans: tuple[Span, Span] | None = None) -> LV:
        sa, sb = spans or (span, span)
        a, b = self.value_of(a, sa), self.value_of(b, sb)
        logic = op in N.LOGIC
        compare = op in N.COMPARE
        if isinstance(a, Weak) and isinstance(b, Weak):
            return self._fold_binary(op, sym, a, b, span, hint)
        if logic:
            for v, sp in ((a, sa), (b, sb)):
                if (isinstance(v, Weak) and not isinstance(v.value, bool)) or \
                        (isinstance(v, Value) and v.fmt.kind != "bool"):
                    self.err(f"'{sym}' needs bool operands", sp)
            a = self.coerce(a, BOOL, sa)
            b = self.coerce(b, BOOL, sb)
            return self.mk(op, (a, b), (), TensorType(BOOL, self.broadcast_shapes(a.shape, b.shape, span)),
                           span)
        # weak operands adopt the other operand's format
        if isinstance(a, Weak):
            a = self._adopt(a, b, sa)
        if isinstance(b, Weak):
            b = self._adopt(b, a, sb)
        if not compare:
            self._check_float(a, f"'{sym}'", sa)
            self._check_float(b, f"'{sym}'", sb)
        shape = self.broadcast_shapes(a.shape, b.shape, span)
        if compare:
            if (a.fmt.kind == "bool") != (b.fmt.kind == "bool"):
                self.err("cannot compare bool with a number", span)
            return self.mk(op, (a, b), (), TensorType(BOOL, shape), span)
        fmt = promote(a.fmt, b.fmt)
        if op == Op.DIV and fmt.kind == "int":
            fmt = F32
        if hint is not None and hint.kind != "bool":
            fmt = hint
        return self.mk(op, (a, b), (), TensorType(fmt, shape), span)

    def _adopt(self, w: Weak, other: Value, span: Span) -> Value:
        if w.fmt is not None:
            return self.materialize(w, w.fmt, span)
        if isinstance(w.value, bool):
            return self.materialize(w, BOOL, span)
        fmt = other.fmt
        if fmt.kind == "bool":
            self.err("cannot combine a number with a bool value", span)
        if fmt.kind == "int" and w.value.denominator != 1:
            fmt = F32
        return self.materialize(w, fmt, span)

    def _fold_binary(self, op, sym, a: Weak, b: Weak, span, hint) -> Weak:
        if op in N.LOGIC:
            if not (isinstance(a.value, bool) and isinstance(b.value, bool)):
                self.err(f"'{sym}' needs bool operands", span)
            return Weak(a.value and b.value if op == Op.AND else a.value or b.value, BOOL)
        if isinstance(a.value, bool) or isinstance(b.value, bool):
            self.err(f"'{sym}' is not defined on bool constants", span)
        try:
            r, radius = fold_binary_enclosed(sym, a.value, a.radius, b.value, b.radius)
        except FoldError as ex:
            self.err(str(ex), span)
        if isinstance(r, bool):
            return Weak(r, BOOL)
        fmt = a.fmt if b.fmt is None else b.fmt if a.fmt is None else promote(a.fmt, b.fmt)
        return Weak(r, fmt, radius)

    def unary(self, op: str, sym: str, x: LV, span: Span, hint: Format | None = None) -> LV:
        x = self.value_of(x, span)
        if isinstance(x, Weak):
            if isinstance(x.value, bool):
                self.err(f"{sym} is not defined on bool", span)
            try:
                value, radius = fold_unary_enclosed(sym, x.value, x.radius)
                return Weak(value, x.fmt, radius)
            except FoldError as ex:
                self.err(str(ex), span)
        self._check_float(x, sym, span)
        fmt = x.fmt
        if op in N.UNARY_MATH and fmt.kind == "int":
            fmt = F32
        if hint is not None and hint.kind != "bool":
            fmt = hint
        return self.mk(op, (x,), (), x.tensor_type.with_fmt(fmt), span)

    def logical_not(self, x: LV, span: Span) -> LV:
        x = self.value_of(x, span)
        if isinstance(x, Weak):
            if not isinstance(x.value, bool):
                self.err("'not' needs a bool operand", span)
            return Weak(not x.value, BOOL)
        if x.fmt.kind != "bool":
            self.err("'not' needs a bool operand", span)
        return self.mk(Op.NOT, (x,), (), x.tensor_type, span)

    def round(self, x: LV, fmt: Format, mode: str, sat: bool, span: Span) -> Value:
        x = self.value_of(x, span)
        if isinstance(x, Weak):
            if isinstance(x.value, bool):
                return self.materialize(x, fmt, span)
            if mode != "sr":
                r = round_exact(x.value, fmt, mode, sat)
                v = _const_value(np.array(r), fmt, [x.value], x.radius)
                self.spans.setdefault(v, span)
                return v
            x = self.materialize(x, F64, span)
        stream = -1
        if mode == "sr":
            stream = self.stream
            self.stream += 1
        return self.mk(Op.ROUND, (x,), (mode, sat, stream), x.tensor_type.with_fmt(fmt), span)

    # calls --------------------------------------------------------------------------------
    def _kwargs(self, e: A.Call, allowed: set[str]) -> dict[str, A.Expr]:
        out: dict[str, A.Expr] = {}
        for k in e.kwargs:
            if k.name not in allowed:
                opts = ", ".join(sorted(allowed)) or "none"
                self.err(f"{e.func}() got an unexpected keyword '{k.name}' (allowed: {opts})",
                         k.span)
            if k.name in out:
                self.err(f"keyword '{k.name}' given twice", k.span)
            out[k.name] = k.value
        return out

    def _nargs(self, e: A.Call, lo: int, hi: int | None = None) -> None:
        hi = lo if hi is None else hi
        n = len(e.args)
        if not lo <= n <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            self.err(f"{e.func}() takes {want} positional argument(s), got {n}", e.span)

    def _const_int(self, e: A.Expr, what: str) -> int:
        w = self.expr(e)
        if isinstance(w, Value) and w.op == Op.DIM:
            v = w.attrs[0].int_value()
            if v is not None:
                return v
        if not isinstance(w, Weak) or isinstance(w.value, bool) or w.value.denominator != 1 \
                or w.radius:
            self.err(f"{what} must be an integer constant", e.span)
        return int(w.value)

    def _const_name(self, e: A.Expr, options, what: str) -> str:
        if not isinstance(e, A.Name) or e.id not in options:
            got = e.id if isinstance(e, A.Name) else _unparse(e)
            self.err(f"{what} must be one of {', '.join(options)}, not '{got}'", e.span)
        return e.id

    def _const_bool(self, e: A.Expr, what: str) -> bool:
        w = self.expr(e)
        if not isinstance(w, Weak) or not isinstance(w.value, bool):
            self.err(f"{what} must be true or false", e.span)
        return bool(w.value)

    def _axes(self, e: A.Expr | None, rank: int) -> tuple[int, ...]:
        if e is None:
            return tuple(range(rank))
        items = e.items if isinstance(e, (A.ListLit, A.TupleLit)) else (e,)
        out = []
        for it in items:
            a = self._const_int(it, "axis")
            if not -rank <= a < rank:
                self.err(f"axis {a} is out of range for a value of rank {rank}", it.span)
            a %= rank
            if a in out:
                self.err(f"axis {a} repeated", it.span)
            out.append(a)
        return tuple(sorted(out))

    def _shape_list(self, e: A.Expr) -> tuple[Dim, ...]:
        if not isinstance(e, (A.ListLit, A.TupleLit)):
            self.err("expected a shape like [M, N/16, 16]", e.span)
        return tuple(self._size(it) for it in e.items)

    def _tensor(self, e: A.Expr, hint_from: Value | None = None) -> Value:
        x = self.value_of(self.expr(e), e.span)
        if isinstance(x, Weak):
            fmt = hint_from.fmt if hint_from is not None else (x.fmt or F32)
            if isinstance(x.value, bool):
                fmt = BOOL
            return self.materialize(x, fmt, e.span)
        return x

    def call(self, e: A.Call, hint: Format | None) -> LV:
        f = e.func
        if f in UNARY_FUNCS:
            self._nargs(e, 1)
            self._kwargs(e, set())
            return self.unary(UNARY_FUNCS[f], f, self.expr(e.args[0]), e.span, hint)
        if f in ("max", "min") and len(e.args) == 2:
            self._kwargs(e, set())
            return self.binary(Op.MAX if f == "max" else Op.MIN, f, self.expr(e.args[0]),
                               self.expr(e.args[1]), e.span, hint)
        if f in REDUCE_FUNCS:
            return self.reduce(e, hint)
        if f == "where":
            return self.where(e, hint)
        if f == "fma":
            return self.fma(e, hint)
        if f == "round":
            self._nargs(e, 2)
            kw = self._kwargs(e, {"mode", "sat"})
            if not isinstance(e.args[1], A.Name):
                self.err("round() needs a format as its second argument", e.args[1].span)
            fmt = self.fmt_of(e.args[1].id, e.args[1].span)
            mode = self._const_name(kw["mode"], ROUND_MODES, "mode") if "mode" in kw else "rne"
            sat = self._const_bool(kw["sat"], "sat") if "sat" in kw else True
            return self.round(self.expr(e.args[0]), fmt, mode, sat, e.span)
        if f == "matmul":
            self._nargs(e, 2)
            kw = self._kwargs(e, {"acc"})
            acc = None
            if "acc" in kw:
                if not isinstance(kw["acc"], A.Name):
                    self.err("acc must be a format", kw["acc"].span)
                acc = self.fmt_of(kw["acc"].id, kw["acc"].span)
                if acc.kind == "bool":
                    self.err("acc must be a number format, not bool", kw["acc"].span)
            return self.matmul(e.args[0], e.args[1], acc, e.span, hint)
        if f == "reshape":
            self._nargs(e, 2)
            self._kwargs(e, set())
            x = self._tensor(e.args[0])
            shape = self._shape_list(e.args[1])
            if _product(shape) != _product(x.shape):
                self.err(f"cannot reshape {shape_str(x.shape)} into {shape_str(shape)}: "
                         f"{_product(x.shape)} elements vs {_product(shape)}", e.span)
            return self.mk(Op.RESHAPE, (x,), (), x.tensor_type.with_shape(shape), e.span)
        if f == "transpose":
            self._nargs(e, 1, 2)
            self._kwargs(e, set())
            x = self._tensor(e.args[0])
            if len(e.args) == 2:
                pe = e.args[1]
                if not isinstance(pe, (A.ListLit, A.TupleLit)):
                    self.err("transpose() takes a permutation like [1, 0]", pe.span)
                perm = tuple(self._const_int(it, "a permutation entry") for it in pe.items)
            else:
                perm = tuple(reversed(range(x.tensor_type.rank)))
            if sorted(perm) != list(range(x.tensor_type.rank)):
                self.err(f"{list(perm)} is not a permutation of the {x.tensor_type.rank} axes",
                         e.span)
            shape = tuple(x.shape[p] for p in perm)
            return self.mk(Op.TRANSPOSE, (x,), (perm,), x.tensor_type.with_shape(shape), e.span)
        if f == "broadcast_to":
            self._nargs(e, 2)
            self._kwargs(e, set())
            x = self._tensor(e.args[0])
            shape = self._shape_list(e.args[1])
            got = self.broadcast_shapes(x.shape, shape, e.span)
            if got != shape:
                self.err(f"cannot broadcast {shape_str(x.shape)} to {shape_str(shape)}", e.span)
            return self.mk(Op.BROADCAST, (x,), (), x.tensor_type.with_shape(shape), e.span)
        if f == "concat":
            return self.concat(e)
        if f == "topk_mask":
            self._nargs(e, 2)
            kw = self._kwargs(e, {"axis"})
            x = self._tensor(e.args[0])
            self._check_float(x, "topk_mask", e.span)
            if x.tensor_type.rank == 0:
                self.err("topk_mask() needs a tensor", e.span)
            k = self._const_int(e.args[1], "k")
            rank = x.tensor_type.rank
            (axis,) = self._axes(kw["axis"], rank) if "axis" in kw else (rank - 1,)
            n = x.shape[axis].int_value()
            if k < 1 or (n is not None and k > n):
                self.err(f"k = {k} is out of range for an axis of size {x.shape[axis]}", e.span)
            return self.mk(Op.TOPK_MASK, (x,), (k, axis), x.tensor_type.with_fmt(BOOL), e.span)
        if f == "rand":
            self._nargs(e, 0, 1)
            self._kwargs(e, set())
            shape = self._shape_list(e.args[0]) if e.args else ()
            stream = self.stream
            self.stream += 1
            return self.mk(Op.RAND, (), (stream,), TensorType(F32, shape), e.span)
        if f == "arange":
            self._nargs(e, 1)
            self._kwargs(e, set())
            n = self._size(e.args[0])
            return self.mk(Op.ARANGE, (), (), TensorType(I32, (n,)), e.span)
        if f in self.mod.fn_decls:
            return self.user_call(e)
        if f == "feature":
            self.err("feature(...) is only allowed in `requires`", e.span)
        options = sorted(BUILTINS | set(self.mod.fn_decls))
        self.err(f"unknown function '{f}'{_suggest(f, options)}", e.span)

    def reduce(self, e: A.Call, hint: Format | None) -> LV:
        self._nargs(e, 1)
        kw = self._kwargs(e, {"axis", "keepdims", "acc", "order"})
        x = self._tensor(e.args[0])
        self._check_float(x, e.func, e.span)
        rank = x.tensor_type.rank
        axes = self._axes(kw.get("axis"), rank)
        keep = self._const_bool(kw["keepdims"], "keepdims") if "keepdims" in kw else False
        op = REDUCE_FUNCS[e.func]
        order = "any"
        if "order" in kw:
            if op not in (Op.SUM, Op.MEAN):
                self.err("order= applies to sum and mean only", kw["order"].span)
            order = self._const_name(kw["order"], REDUCE_ORDERS, "order")
        fmt = x.fmt
        if "acc" in kw:
            if op not in (Op.SUM, Op.MEAN):
                self.err("acc= applies to sum and mean only (max and min are exact)", kw["acc"].span)
            if not isinstance(kw["acc"], A.Name):
                self.err("acc must be a format", kw["acc"].span)
            fmt = self.fmt_of(kw["acc"].id, kw["acc"].span)
            if fmt.kind == "bool":
                self.err("acc must be a number format, not bool", kw["acc"].span)
        elif hint is not None and op in (Op.SUM, Op.MEAN) and hint.kind != "bool":
            fmt = hint
        if op == Op.MEAN and fmt.kind == "int":
            fmt = F32
        if keep:
            shape = tuple(Dim.const(1) if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return self.mk(op, (x,), (axes, keep, order), TensorType(fmt, shape), e.span)

    def _round_branch(self, x: Value, fmt: Format, span) -> Value:
        if x.fmt == fmt or represents(fmt, x.fmt):
            return x
        return self.mk(Op.ROUND, (x,), ("rne", False, -1), TensorType(fmt, x.shape), span)

    def where(self, e: A.Call, hint: Format | None) -> LV:
        self._nargs(e, 3)
        self._kwargs(e, set())
        c = self.value_of(self.expr(e.args[0]), e.args[0].span)
        a = self.value_of(self.expr(e.args[1]), e.args[1].span)
        b = self.value_of(self.expr(e.args[2]), e.args[2].span)
        folded = None
        if isinstance(c, Weak):
            if not isinstance(c.value, bool):
                self.err("where() needs a bool condition", e.args[0].span)
            if isinstance(a, Weak) and isinstance(b, Weak):
                return a if c.value else b
            folded = c.value   # a constant condition picks a branch, which still takes the
            #                    promoted format and the broadcast shape of both branches
        elif c.fmt.kind != "bool":
            self.err(f"where() needs a bool condition, found {c.fmt.name}", e.args[0].span)
        if isinstance(a, Weak) and isinstance(b, Weak):
            fmt = hint or (a.fmt if a.fmt else b.fmt) or F32
            if isinstance(a.value, bool) and isinstance(b.value, bool):
                fmt = BOOL
            a, b = self.materialize(a, fmt, e.args[1].span), self.materialize(b, fmt, e.args[2].span)
        elif isinstance(a, Weak):
            a = self._adopt(a, b, e.args[1].span)
        elif isinstance(b, Weak):
            b = self._adopt(b, a, e.args[2].span)
        if (a.fmt.kind == "bool") != (b.fmt.kind == "bool"):
            self.err("where() branches must both be bool or both numbers", e.span)
        fmt = promote(a.fmt, b.fmt)
        # a branch whose values the result format may not hold (an i32 branch beside a float
        # one) is rounded into it, as every operation rounds into its working format: the
        # select itself then is exact, in the analysis and in every backend alike
        a = self._round_branch(a, fmt, e.args[1].span)
        b = self._round_branch(b, fmt, e.args[2].span)
        if folded is not None:
            shape = self.broadcast_shapes(a.shape, b.shape, e.span)
            out = a if folded else b
            if out.fmt != fmt:
                out = self.mk(Op.ROUND, (out,), ("rne", False, -1),
                              TensorType(fmt, out.shape), e.span)
            if out.shape != shape:
                out = self.mk(Op.BROADCAST, (out,), (), TensorType(fmt, shape), e.span)
            if hint is not None and hint != fmt and hint.kind != "bool":
                out = self.mk(Op.ROUND, (out,), ("rne", False, -1), TensorType(hint, shape),
                              e.span)
            return out
        shape = self.broadcast_shapes(self.broadcast_shapes(c.shape, a.shape, e.span), b.shape,
                                      e.span)
        out = self.mk(Op.WHERE, (c, a, b), (), TensorType(fmt, shape), e.span)
        if hint is not None and hint != fmt and hint.kind != "bool":
            out = self.mk(Op.ROUND, (out,), ("rne", False, -1), TensorType(hint, shape), e.span)
        return out

    def power(self, e: A.BinOp, hint: Format | None) -> LV:
        """x ** n for a constant integer n >= 0: left-to-right repeated multiplication."""
        n = self._const_int(e.right, "an exponent")
        if n < 0 or n > 64:
            self.err("the exponent must be an integer constant from 0 to 64 "
                     "(use exp/log or division for others)", e.right.span)
        x = self.value_of(self.expr(e.left), e.left.span)
        if isinstance(x, Weak):
            if isinstance(x.value, bool):
                self.err("'**' is not defined on bool", e.span)
            if n * max(x.value.numerator.bit_length(), x.value.denominator.bit_length()) \
                    > MAX_FOLD_BITS:
                self.err("constant expression is beyond the range of exact folding", e.span)
            # |(a + d)^n - a^n| <= n (|a| + r)^(n-1) r for |d| <= r
            r = x.radius
            return Weak(x.value ** n, x.fmt,
                        radius_up(n * (abs(x.value) + r) ** (n - 1) * r) if n > 0 else ZERO)
        self._check_float(x, "'**'", e.span)
        if n == 0:
            one = self.materialize(Weak(Fraction(1)), hint or x.fmt, e.span)
            return self.mk(Op.BROADCAST, (one,), (), x.tensor_type.with_fmt(one.fmt), e.span) \
                if x.shape else one
        out = x
        for i in range(1, n):
            out = self.binary(Op.MUL, "*", out, x, e.span, hint if i == n - 1 else None)
        return out

    def fma(self, e: A.Call, hint: Format | None) -> LV:
        """fma(a, b, c) = a * b + c with a single rounding."""
        self._nargs(e, 3)
        self._kwargs(e, set())
        vals = [self.value_of(self.expr(a), a.span) for a in e.args]
        if all(isinstance(v, Weak) for v in vals):
            if any(isinstance(v.value, bool) for v in vals):
                self.err("fma is not defined on bool", e.span)
            fmts = [v.fmt for v in vals if v.fmt is not None]
            fmt = fmts[0] if fmts else None
            for f2 in fmts[1:]:
                fmt = promote(fmt, f2)
            try:
                r = check_size(vals[0].value * vals[1].value + vals[2].value)
            except FoldError as ex:
                self.err(str(ex), e.span)
            (a, ra), (b, rb) = ((v.value, v.radius) for v in vals[:2])
            rc = vals[2].radius
            return Weak(r, fmt, radius_up(abs(a) * rb + abs(b) * ra + ra * rb + rc))
        typed = [v for v in vals if isinstance(v, Value)]
        fmt = typed[0].fmt
        for v in typed[1:]:
            fmt = promote(fmt, v.fmt)
        vals = [self.materialize(v, v.fmt or fmt, a.span) if isinstance(v, Weak) else v
                for v, a in zip(vals, e.args)]
        for v, a in zip(vals, e.args):
            self._check_float(v, "fma", a.span)
        if fmt.kind == "int":
            fmt = F32
        if hint is not None and hint.kind != "bool":
            fmt = hint
        shape = self.broadcast_shapes(self.broadcast_shapes(vals[0].shape, vals[1].shape, e.span),
                                      vals[2].shape, e.span)
        return self.mk(Op.FMA, tuple(vals), (), TensorType(fmt, shape), e.span)

    def matmul(self, ea: A.Expr, eb: A.Expr, acc: Format | None, span: Span,
               hint: Format | None) -> Value:
        a, b = self._tensor(ea), self._tensor(eb)
        for v, e in ((a, ea), (b, eb)):
            self._check_float(v, "matmul", e.span)
            if v.tensor_type.rank == 0:
                self.err("matmul needs tensors of rank >= 1 (use * for scalars)", e.span)
        sa, sb = a.shape, b.shape
        ka = sa[-1]
        kb = sb[0] if len(sb) == 1 else sb[-2]
        if ka != kb:
            self.err(f"matmul inner dimensions differ: {shape_str(sa)} @ {shape_str(sb)}", span)
        batch_a = sa[:-2] if len(sa) >= 2 else ()
        batch_b = sb[:-2] if len(sb) >= 2 else ()
        batch = self.broadcast_shapes(batch_a, batch_b, span)
        rows = (sa[-2],) if len(sa) >= 2 else ()
        cols = (sb[-1],) if len(sb) >= 2 else ()
        fmt = promote(a.fmt, b.fmt)
        if fmt.kind == "int":
            fmt = F32
        if hint is not None and hint.kind != "bool":
            fmt = hint
        accf = acc or fmt
        return self.mk(Op.MATMUL, (a, b), (accf.name,), TensorType(fmt, batch + rows + cols), span)

    def concat(self, e: A.Call) -> Value:
        self._nargs(e, 1)
        kw = self._kwargs(e, {"axis"})
        if not isinstance(e.args[0], (A.ListLit, A.TupleLit)) or not e.args[0].items:
            self.err("concat() takes a non-empty list of tensors, e.g. concat([a, b], axis=0)",
                     e.args[0].span)
        vals = [self._tensor(it) for it in e.args[0].items]
        rank = vals[0].tensor_type.rank
        if rank == 0:
            self.err("concat() needs tensors of rank >= 1", e.span)
        (axis,) = self._axes(kw.get("axis", A.Number(e.span, "0")), rank)
        fmt = vals[0].fmt
        total = Dim.const(0)
        for v, it in zip(vals, e.args[0].items):
            if v.tensor_type.rank != rank:
                self.err("concat() operands must have the same rank", it.span)
            for i in range(rank):
                if i != axis and v.shape[i] != vals[0].shape[i]:
                    self.err(f"concat() shapes {shape_str(vals[0].shape)} and {shape_str(v.shape)} "
                             f"differ outside axis {axis}", it.span)
            if (v.fmt.kind == "bool") != (fmt.kind == "bool"):
                self.err("concat() cannot mix bool and numbers", it.span)
            fmt = promote(fmt, v.fmt)
            total = total + v.shape[axis]
        shape = tuple(total if i == axis else d for i, d in enumerate(vals[0].shape))
        return self.mk(Op.CONCAT, tuple(vals), (axis,), TensorType(fmt, shape), e.span)

    def user_call(self, e: A.Call) -> LV:
        callee = self.mod.function(e.func, e.span)
        if callee is None:
            raise _Poison()
        self._kwargs(e, set())
        if len(e.args) != len(callee.params):
            self.err(f"{e.func}() takes {len(callee.params)} argument(s), got {len(e.args)}",
                     e.span)
        bind: dict[str, Dim] = {}
        args = []
        for p, a in zip(callee.params, e.args):
            v = self.value_of(self.expr(a), a.span)
            pt = p.value.tensor_type
            if isinstance(v, Weak):
                v = self.materialize(v, pt.fmt, a.span)
                if pt.shape:
                    self.err(f"argument '{p.name}' must be a tensor of shape {shape_str(pt.shape)}",
                             a.span)
            if v.fmt != pt.fmt:
                self.err(f"argument '{p.name}' of {e.func}() must be {pt.fmt.name}, found "
                         f"{v.fmt.name}; convert with `as {pt.fmt.name}`", a.span)
            if len(v.shape) != len(pt.shape):
                self.err(f"argument '{p.name}' of {e.func}() must have rank {len(pt.shape)}, "
                         f"found shape {shape_str(v.shape)}", a.span)
            for dp, da in zip(pt.shape, v.shape):  # bind plain symbols first
                syms = dp.symbols()
                if len(syms) == 1 and dp == Dim.sym(next(iter(syms))):
                    s = next(iter(syms))
                    if s in bind and bind[s] != da:
                        self.err(f"dimension {s} of {e.func}() is both {bind[s]} and {da}", a.span)
                    bind[s] = da
            args.append((v, a, pt))
        for v, a, pt in args:
            for dp, da in zip(pt.shape, v.shape):
                if dp.substitute(bind) != da:
                    self.err(f"argument shape {shape_str(v.shape)} does not match "
                             f"{shape_str(pt.shape)} of {e.func}()", a.span)
        for c in callee.requires:
            if c.kind == "cmp" and c.mod and c.op == "==" and c.rhs == Dim.const(0):
                lhs = c.lhs.substitute(bind)
                if lhs.is_const():
                    if c.holds({s: 0 for s in []}) is None and lhs.int_value() is not None \
                            and lhs.int_value() % c.mod != 0:
                        self.err(f"{e.func}() requires {c.text}, which fails here", e.span)
                elif not divisible(lhs, c.mod, self.moduli):
                    self.err(f"{e.func}() requires {c.text}; cannot show {lhs} % {c.mod} == 0 "
                             "here (add it to this function's requires)", e.span)
        stream = -1
        if "rand" in callee.effects:
            stream = self.stream
            self.stream += 1
        results = tuple(TensorType(t.fmt, tuple(d.substitute(bind) for d in t.shape))
                        for t in callee.result_types)
        call = self.mk(Op.CALL, tuple(v for v, _, _ in args), (e.func, stream),
                       N.TupleType(results), e.span)
        outs = tuple(self.mk(Op.PROJ, (call,), (i,), t, e.span) for i, t in enumerate(results))
        if callee.result_is_tuple:
            return Tup(outs)
        return outs[0]

    # indexing -----------------------------------------------------------------------------
    def index(self, e: A.Index) -> LV:
        base = self.expr(e.base)
        if isinstance(base, Tup):
            if len(e.items) != 1 or isinstance(e.items[0], A.Slice):
                self.err("a tuple takes one constant index", e.span)
            i = self._const_int(e.items[0], "a tuple index")
            if not -len(base.items) <= i < len(base.items):
                self.err(f"tuple index {i} out of range", e.items[0].span)
            return base.items[i]
        x = self._tensor(e.base) if isinstance(base, Weak) else base
        rank = x.tensor_type.rank
        n_real = sum(1 for it in e.items if not (isinstance(it, A.Name) and it.id == "None")
                     and not isinstance(it, A.EllipsisLit))
        n_ell = sum(1 for it in e.items if isinstance(it, A.EllipsisLit))
        if n_ell > 1:
            self.err("only one '...' is allowed in an index", e.span)
        if n_real > rank:
            self.err(f"too many indices ({n_real}) for a value of rank {rank}", e.span)
        items: list[tuple] = []
        shape: list[Dim] = []
        axis = 0
        for it in e.items:
            if isinstance(it, A.EllipsisLit):
                for _ in range(rank - n_real):
                    items.append(("s", Dim.const(0), x.shape[axis], 1))
                    shape.append(x.shape[axis])
                    axis += 1
                continue
            if isinstance(it, A.Name) and it.id == "None":
                items.append(("new",))
                shape.append(Dim.const(1))
                continue
            n = x.shape[axis]
            if isinstance(it, A.Slice):
                step = 1 if it.step is None else self._const_int(it.step, "a slice step")
                if step <= 0:
                    self.err("slice steps must be positive", it.step.span)
                start = Dim.const(0) if it.start is None else self._index_dim(it.start, n)
                stop = n if it.stop is None else self._index_dim(it.stop, n)
                length = stop - start
                if step != 1:
                    if length.int_value() is None:
                        self.err("a strided slice needs constant bounds", e.span)
                    length = Dim.const(max(0, -(-length.int_value() // step)))
                lv = length.int_value()
                if lv is not None and lv < 0:
                    self.err(f"slice is empty or reversed ({start}:{stop})", e.span)
                if n.int_value() is not None and stop.int_value() is not None and \
                        stop.int_value() > n.int_value():
                    self.err(f"slice end {stop} is beyond the axis size {n}", e.span)
                items.append(("s", start, stop, step))
                shape.append(length)
            else:
                i = self._index_dim(it, n)
                iv, nv = i.int_value(), n.int_value()
                if iv is not None and (iv < 0 or (nv is not None and iv >= nv)):
                    self.err(f"index {iv} is out of range for an axis of size {n}", it.span)
                items.append(("i", i))
            axis += 1
        for a in range(axis, rank):
            items.append(("s", Dim.const(0), x.shape[a], 1))
            shape.append(x.shape[a])
        return self.mk(Op.SLICE, (x,), (tuple(items),), x.tensor_type.with_shape(tuple(shape)),
                       e.span)

    def _index_dim(self, e: A.Expr, n: Dim) -> Dim:
        w = None
        try:
            d = self.to_dim(e)
        except _Poison:
            self.sink.errors.pop()
            w = self.expr(e)
            if isinstance(w, Value) and w.op == Op.DIM:
                d = w.attrs[0]
            elif isinstance(w, Weak) and not isinstance(w.value, bool) and w.value.denominator == 1:
                d = Dim.const(int(w.value))
            else:
                self.err("an index must be a constant or a size expression (dynamic indexing "
                         "is not supported)", e.span)
        v = d.int_value()
        if v is not None and v < 0:
            d = n + d
        return d


_POISON = Weak(Fraction(0), None)
_F64_MAX = Fraction(float(np.finfo(np.float64).max))


def _short(x: Fraction) -> str:
    """A constant for a message (%g, or an order of magnitude beyond the float64 range)."""
    try:
        return f"{float(x):g}"
    except OverflowError:
        mag = math.log10(abs(x.numerator)) - math.log10(x.denominator)
        return f"{'-' if x < 0 else ''}1e+{int(mag)}"


def _gcd(a: int, b: int) -> int:
    from math import gcd

    return gcd(a, b)


def _product(shape: tuple[Dim, ...]) -> Dim:
    p = Dim.const(1)
    for d in shape:
        p = p * d
    return p


_BIN_PREC = {"or": 1, "and": 2, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4, "+": 5,
             "-": 5, "*": 6, "/": 6, "%": 6, "@": 6, "**": 9}


def _prec(e: A.Expr) -> int:
    """Binding strength of an expression's outermost form (higher binds tighter)."""
    if isinstance(e, A.BinOp):
        return _BIN_PREC.get(e.op, 10)
    if isinstance(e, A.UnOp):
        return 3 if e.op == "not" else 8
    if isinstance(e, A.Cast):
        return 7
    return 10


def _unparse(e: A.Expr) -> str:
    """Compact source-like text of an expression (for messages and requirement text)."""
    if isinstance(e, A.Number):
        return e.text
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.Bool):
        return "true" if e.value else "false"
    if isinstance(e, A.BinOp):
        p = _prec(e)
        left, right = _unparse(e.left), _unparse(e.right)
        if _prec(e.left) < p or (e.op == "**" and _prec(e.left) == p):
            left = f"({left})"
        if _prec(e.right) < p or (e.op != "**" and _prec(e.right) == p):
            right = f"({right})"
        return f"{left} {e.op} {right}"
    if isinstance(e, A.UnOp):
        inner = _unparse(e.operand)
        if _prec(e.operand) < _prec(e):
            inner = f"({inner})"
        return f"{e.op}{inner}" if e.op != "not" else f"not {inner}"
    if isinstance(e, A.Call):
        args = [_unparse(a) for a in e.args] + [f"{k.name}={_unparse(k.value)}" for k in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    if isinstance(e, A.Cast):
        return f"{_unparse(e.operand)} as {e.fmt}"
    return "..."


def lower_program(program: A.Program, sink: DiagnosticSink) -> N.Module:
    return ModuleLowering(program, sink).run()
