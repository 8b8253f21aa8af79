"""The Python embedding: ``@numgrade.kernel`` turns a Python function into the same IR.

The function's source is read with ``inspect`` and its Python syntax tree is translated into the
Grade AST (never executed), then lowered exactly like a `.grd` program. Parameter and result
annotations use the format objects of this module: ``ng.f32``, ``ng.f32["N"]``,
``ng.f32["M", "N"].within(-1, 1)``; inside the body, ``ng.exp(x)``/``exp(x)``, ``x.as_(ng.e4m3)``
or ``ng.round(x, ng.e4m3, mode="sr")`` and Python operators work as in the language.
"""

from __future__ import annotations

import ast as py
import re
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

from .errors import DiagnosticSink, GradeError, SourceError, Span, register_source
from .frontend import ast as A


@dataclass(frozen=True)
class TypeSpec:
    """A format with an optional shape and range, as written in Python annotations."""

    fmt: str
    dims: tuple[str | int, ...] | None = None
    range: tuple[float, float] | None = None

    def __getitem__(self, dims) -> "TypeSpec":
        if not isinstance(dims, tuple):
            dims = (dims,)
        for d in dims:
            if not isinstance(d, (str, int)) or isinstance(d, bool):
                raise GradeError(f"a dimension is a name or an integer, not {d!r}")
        return TypeSpec(self.fmt, tuple(dims), self.range)

    def within(self, lo: float, hi: float) -> "TypeSpec":
        try:
            return TypeSpec(self.fmt, self.dims, (float(lo), float(hi)))
        except (TypeError, ValueError, OverflowError):
            raise GradeError(f"a range is two numbers, not {lo!r:.30} and {hi!r:.30}") from None

    def __repr__(self) -> str:
        return self.fmt + (f"[{', '.join(map(str, self.dims))}]" if self.dims else "")


f64, f32, f16, bf16 = TypeSpec("f64"), TypeSpec("f32"), TypeSpec("f16"), TypeSpec("bf16")
e4m3, e5m2, e2m1, e8m0 = TypeSpec("e4m3"), TypeSpec("e5m2"), TypeSpec("e2m1"), TypeSpec("e8m0")
i32, bool_ = TypeSpec("i32"), TypeSpec("bool")

_BINOPS = {py.Add: "+", py.Sub: "-", py.Mult: "*", py.Div: "/", py.Mod: "%", py.MatMult: "@"}
_CMPOPS = {py.Eq: "==", py.NotEq: "!=", py.Lt: "<", py.LtE: "<=", py.Gt: ">", py.GtE: ">="}
_FORMATS = {"f64", "f32", "f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0", "i32", "bool"}


class _Translator:
    """Python AST -> Grade AST. Only a small, explicit subset of Python is accepted."""

    def __init__(self, file: str, line0: int, col0: int):
        self.file, self.line0, self.col0 = file, line0, col0
        self.annotations: dict[str, Any] = {}

    def span(self, n: py.AST) -> Span:
        line = getattr(n, "lineno", 1) + self.line0 - 1
        col = getattr(n, "col_offset", 0) + 1 + self.col0
        return Span(self.file, line, col)

    def fail(self, msg: str, n: py.AST):
        raise SourceError(msg, self.span(n))

    # annotations ------------------------------------------------------------------------
    def type_of(self, ann: py.AST | None, what: str, evaluated: Any = None) -> TypeSpec:
        """Read an annotation structurally (nothing is evaluated); Python's own evaluated
        annotation object is used when the text is an alias such as `T` or `mytypes.T`."""
        if ann is None:
            raise SourceError(f"{what} needs a type annotation such as ng.f32['N']", None)
        spec = self._read_type(ann)
        if spec is None and isinstance(evaluated, TypeSpec):
            spec = evaluated
        if spec is None:
            self.fail(f"the annotation of {what} must be a numgrade format such as ng.f32['N'] "
                      "or ng.f32['N'].within(-1, 1)", ann)
        return spec

    def _read_type(self, n: py.AST) -> TypeSpec | None:
        if isinstance(n, (py.Name, py.Attribute)):
            name = n.id if isinstance(n, py.Name) else n.attr
            name = "bool" if name == "bool_" else name
            return TypeSpec(name) if name in _FORMATS else None
        if isinstance(n, py.Subscript):
            base = self._read_type(n.value)
            if base is None:
                return None
            items = n.slice.elts if isinstance(n.slice, py.Tuple) else [n.slice]
            dims: list[str | int] = []
            for it in items:
                if isinstance(it, py.Constant) and isinstance(it.value, (str, int)) \
                        and not isinstance(it.value, bool):
                    dims.append(it.value)
                else:
                    self.fail("a dimension is a string such as 'N' or 'N/16', or an integer", it)
            return TypeSpec(base.fmt, tuple(dims), base.range)
        if isinstance(n, py.Call) and isinstance(n.func, py.Attribute) and n.func.attr == "within":
            base = self._read_type(n.func.value)
            if base is None or len(n.args) != 2 or n.keywords:
                return None
            vals = [self._const_number(a) for a in n.args]
            return TypeSpec(base.fmt, base.dims, (vals[0], vals[1]))
        return None

    def _const_number(self, a: py.AST) -> float:
        if isinstance(a, py.UnaryOp) and isinstance(a.op, py.USub):
            return -self._const_number(a.operand)
        if isinstance(a, py.Constant) and isinstance(a.value, (int, float)) \
                and not isinstance(a.value, bool):
            return float(a.value)
        self.fail("a range bound must be a number", a)

    def type_expr(self, spec: TypeSpec, n: py.AST) -> A.TypeExpr:
        sp = self.span(n)
        dims = None
        if spec.dims is not None:
            dims = tuple(self.dim_expr(d, sp) for d in spec.dims)
        return A.TypeExpr(sp, spec.fmt, dims)

    def dim_expr(self, d: str | int, sp: Span) -> A.Expr:
        if isinstance(d, int):
            return A.Number(sp, str(d))
        from .frontend.parser import parse

        if not re.fullmatch(r"[A-Za-z0-9_ +\-*/()]+", d):
            raise SourceError(f"bad dimension {d!r}: use names, integers and + - * /", sp)
        prog = parse(f"fn _d(x: f32) -> f32 {{ return x[{d}] }}", "<dim>")
        return prog.items[0].body[0].value.items[0]

    # body -------------------------------------------------------------------------------
    def function(self, node: py.FunctionDef) -> A.FnDecl:
        params = []
        a = node.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
            self.fail("kernel parameters must be plain positional parameters", node)
        evaluated = getattr(self, "annotations", {})
        for arg in a.args:
            if arg.annotation is None:
                self.fail(f"parameter '{arg.arg}' needs a type annotation such as ng.f32['N']", arg)
            spec = self.type_of(arg.annotation, f"parameter '{arg.arg}'", evaluated.get(arg.arg))
            rng = None
            if spec.range is not None:
                sp = self.span(arg)
                rng = (self.number(spec.range[0], sp), self.number(spec.range[1], sp))
            params.append(A.Param(self.span(arg), arg.arg, self.type_expr(spec, arg), rng))
        if node.returns is None:
            self.fail("the kernel needs a result annotation such as -> ng.f32['N']", node)
        if isinstance(node.returns, py.Tuple):
            rets = tuple(self.type_expr(self.type_of(r, "the result"), r) for r in node.returns.elts)
            is_tuple = True
        else:
            rets = (self.type_expr(self.type_of(node.returns, "the result",
                                               evaluated.get("return")), node.returns),)
            is_tuple = False
        body = []
        stmts = list(node.body)
        if stmts and isinstance(stmts[0], py.Expr) and isinstance(stmts[0].value, py.Constant) \
                and isinstance(stmts[0].value.value, str):
            stmts = stmts[1:]  # docstring
        for s in stmts:
            body.append(self.stmt(s))
        return A.FnDecl(self.span(node), node.name, tuple(params), rets, is_tuple, None, (),
                        tuple(body), self.span(node))

    def number(self, x: float, sp: Span) -> A.Expr:
        if x != x or x in (float("inf"), float("-inf")):
            raise SourceError("infinite or NaN constants are not supported", sp)
        if x < 0:
            return A.UnOp(sp, "-", A.Number(sp, repr(float(-x))))
        return A.Number(sp, repr(float(x)))

    def stmt(self, s: py.stmt):
        if isinstance(s, py.Return):
            if s.value is None:
                self.fail("a kernel must return a value", s)
            return A.Return(self.span(s), self.expr(s.value))
        if isinstance(s, py.Assign):
            if len(s.targets) != 1:
                self.fail("one assignment target at a time", s)
            t = s.targets[0]
            if isinstance(t, py.Name):
                return A.Let(self.span(t), (t.id,), False, None, self.expr(s.value))
            if isinstance(t, py.Tuple) and all(isinstance(e, py.Name) for e in t.elts):
                return A.Let(self.span(t), tuple(e.id for e in t.elts), True, None,
                             self.expr(s.value))
            self.fail("assign to a name or a tuple of names", t)
        if isinstance(s, py.AnnAssign) and isinstance(s.target, py.Name) and s.value is not None:
            spec = self.type_of(s.annotation, f"'{s.target.id}'")
            return A.Let(self.span(s.target), (s.target.id,), False,
                         self.type_expr(spec, s.annotation), self.expr(s.value))
        self.fail(f"{type(s).__name__} statements are not supported in a kernel "
                  "(use assignments and return)", s)

    def expr(self, e: py.expr) -> A.Expr:
        sp = self.span(e)
        if isinstance(e, py.Constant):
            if isinstance(e.value, bool):
                return A.Bool(sp, e.value)
            if isinstance(e.value, (int, float)):
                if e.value < 0:
                    return A.UnOp(sp, "-", A.Number(sp, repr(-e.value)))
                text = repr(e.value)
                if text in ("inf", "nan"):
                    self.fail("infinite or NaN constants are not supported", e)
                return A.Number(sp, text)
            if e.value is None:
                return A.Name(sp, "None")
            if e.value is Ellipsis:
                return A.EllipsisLit(sp)
            self.fail(f"unsupported constant {e.value!r}", e)
        if isinstance(e, py.Name):
            return A.Name(sp, e.id)
        if isinstance(e, py.Attribute):  # ng.exp, ng.f32 ...
            return A.Name(sp, e.attr)
        if isinstance(e, py.BinOp) and type(e.op) in _BINOPS:
            return A.BinOp(sp, _BINOPS[type(e.op)], self.expr(e.left), self.expr(e.right))
        if isinstance(e, py.UnaryOp):
            if isinstance(e.op, py.USub):
                return A.UnOp(sp, "-", self.expr(e.operand))
            if isinstance(e.op, py.UAdd):
                return A.UnOp(sp, "+", self.expr(e.operand))
            if isinstance(e.op, py.Not):
                return A.UnOp(sp, "not", self.expr(e.operand))
        if isinstance(e, py.BoolOp):
            op = "and" if isinstance(e.op, py.And) else "or"
            out = self.expr(e.values[0])
            for v in e.values[1:]:
                out = A.BinOp(sp, op, out, self.expr(v))
            return out
        if isinstance(e, py.Compare):
            if len(e.ops) != 1 or type(e.ops[0]) not in _CMPOPS:
                self.fail("use one comparison at a time (==, !=, <, <=, >, >=)", e)
            return A.BinOp(sp, _CMPOPS[type(e.ops[0])], self.expr(e.left),
                           self.expr(e.comparators[0]))
        if isinstance(e, py.Tuple):
            return A.TupleLit(sp, tuple(self.expr(x) for x in e.elts))
        if isinstance(e, py.List):
            return A.ListLit(sp, tuple(self.expr(x) for x in e.elts))
        if isinstance(e, py.Subscript):
            sl = e.slice
            items = sl.elts if isinstance(sl, py.Tuple) else [sl]
            return A.Index(sp, self.expr(e.value), tuple(self.subscript(i) for i in items))
        if isinstance(e, py.Call):
            return self.call(e)
        self.fail(f"{type(e).__name__} expressions are not supported in a kernel", e)

    def subscript(self, i: py.expr):
        if isinstance(i, py.Slice):
            f = lambda x: None if x is None else self.expr(x)  # noqa: E731
            return A.Slice(self.span(i), f(i.lower), f(i.upper), f(i.step))
        return self.expr(i)

    def call(self, e: py.Call) -> A.Expr:
        sp = self.span(e)
        func = e.func
        if isinstance(func, py.Attribute) and func.attr == "as_" and len(e.args) == 1:
            fmt = self.expr(e.args[0])
            if not isinstance(fmt, A.Name):
                self.fail("x.as_(fmt) needs a format such as ng.e4m3", e)
            return A.Cast(sp, self.expr(func.value), fmt.id, fmt.span)
        if isinstance(func, py.Attribute):
            name = func.attr
        elif isinstance(func, py.Name):
            name = func.id
        else:
            self.fail("call a function by name", e)
        kws = []
        for k in e.keywords:
            if k.arg is None:
                self.fail("**kwargs are not supported", e)
            v = k.value
            if isinstance(v, py.Constant) and isinstance(v.value, str):
                val: A.Expr = A.Name(self.span(v), v.value)  # mode="sr" -> mode=sr
            else:
                val = self.expr(v)
            kws.append(A.KwArg(self.span(v), k.arg, val))
        args = []
        for a in e.args:
            if isinstance(a, py.Constant) and isinstance(a.value, str) and a.value in _FORMATS:
                args.append(A.Name(self.span(a), a.value))
            else:
                args.append(self.expr(a))
        return A.Call(sp, name, tuple(args), tuple(kws))


def translate(fn: Callable) -> A.Program:
    """The Grade AST of a Python function (its source must be available to inspect)."""
    try:
        src = inspect.getsource(fn)
        file = inspect.getsourcefile(fn) or "<python>"
        _, line0 = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        raise GradeError(f"cannot read the source of {getattr(fn, '__name__', fn)!r}") from None
    dedented = textwrap.dedent(src)
    col0 = len(src.splitlines()[0]) - len(dedented.splitlines()[0])
    try:
        full = open(file, encoding="utf-8").read() if file != "<python>" else src
        register_source(file, full)
    except OSError:
        register_source(file, src)
    tree = py.parse(dedented)
    fdef = next((n for n in tree.body if isinstance(n, (py.FunctionDef, py.AsyncFunctionDef))),
                None)
    if fdef is None or isinstance(fdef, py.AsyncFunctionDef):
        raise GradeError("@numgrade.kernel needs a plain function definition")
    t = _Translator(file, line0, col0)
    t.annotations = dict(getattr(fn, "__annotations__", {}) or {})
    decl = t.function(fdef)
    return A.Program(decl.span, (decl,), file)


def kernel(fn: Callable):
    """Compile a Python function into a numgrade Function (callable, analysable, emittable)."""
    from .api import Module
    from .frontend.lower import lower_program
    from .passes.effects import check_effects

    program = translate(fn)
    sink = DiagnosticSink()
    mod = lower_program(program, sink)
    check_effects(mod, sink)
    sink.raise_if_errors()
    mod.warnings = list(sink.warnings)
    return Module(mod)[program.items[0].name]
