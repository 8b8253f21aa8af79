"""A small builder for hand-written oracle programs (operator overloading over gen.Node).

    x = param("x", "f32", -4, 4); y = param("y", "f32", 1, 2)
    prog = program([x, y], [let("d", x - y, "bf16")], [var("d") * 2])
"""

from __future__ import annotations

from fractions import Fraction

from .gen import Node, Param, Program, bin_fmt, bshape, _exact_text
from .fmts import promote


def _w(x) -> "E":
    if isinstance(x, E):
        return x
    if isinstance(x, bool):
        raise TypeError("bool literal")
    if isinstance(x, (int, float, str, Fraction)):
        t = x if isinstance(x, str) else (str(x) if isinstance(x, int) else
                                          _exact_text(Fraction(x)) if isinstance(x, Fraction)
                                          else repr(x))
        return E(Node("lit", [], None, (), {"text": t, "value": Fraction(t)}))
    raise TypeError(type(x))


class E:
    def __init__(self, node: Node):
        self.n = node

    def _bin(self, sym, other, rev=False):
        a, b = (self.n, _w(other).n) if not rev else (_w(other).n, self.n)
        return E(Node("bin", [a, b], bin_fmt(sym, a, b), bshape(a.shape, b.shape), {"sym": sym}))

    def __add__(self, o): return self._bin("+", o)
    def __radd__(self, o): return self._bin("+", o, True)
    def __sub__(self, o): return self._bin("-", o)
    def __rsub__(self, o): return self._bin("-", o, True)
    def __mul__(self, o): return self._bin("*", o)
    def __rmul__(self, o): return self._bin("*", o, True)
    def __truediv__(self, o): return self._bin("/", o)
    def __rtruediv__(self, o): return self._bin("/", o, True)
    def __mod__(self, o): return self._bin("%", o)
    def __rmod__(self, o): return self._bin("%", o, True)
    def __neg__(self): return E(Node("neg", [self.n], self.n.fmt, self.n.shape))
    def __pow__(self, n): return E(Node("pow", [self.n], self.n.fmt, self.n.shape, {"n": n}))

    def _cmp(self, sym, o):
        b = _w(o).n
        return E(Node("cmp", [self.n, b], "bool", bshape(self.n.shape, b.shape), {"sym": sym}))

    def __lt__(self, o): return self._cmp("<", o)
    def __le__(self, o): return self._cmp("<=", o)
    def __gt__(self, o): return self._cmp(">", o)
    def __ge__(self, o): return self._cmp(">=", o)
    def eq(self, o): return self._cmp("==", o)
    def ne(self, o): return self._cmp("!=", o)

    def as_(self, fmt):
        return E(Node("round", [self.n], fmt, self.n.shape, {"fmt": fmt, "style": "as"}))

    def __getitem__(self, text: str):
        shp = _index_shape(self.n.shape, text)
        return E(Node("index", [self.n], self.n.fmt, shp, {"text": text}))


def _index_shape(shape, text):
    out = []
    parts = [p.strip() for p in text.split(",")]
    for d, p in zip(shape, parts):
        if ":" in p:
            lo, hi = p.split(":")
            out.append(int(hi or d) - int(lo or 0) if isinstance(d, int) or hi else d)
    out += list(shape[len(parts):])
    return tuple(out)


_PARAMS: dict[str, Param] = {}


def param(name, fmt, lo=None, hi=None, shape=()) -> E:
    p = Param(name, fmt, tuple(shape), None if lo is None else Fraction(str(lo)),
              None if hi is None else Fraction(str(hi)), str(lo), str(hi))
    return E(Node("param", [], fmt, p.shape, {"name": name, "param": p}))


def const(name, fmt, text) -> E:
    return E(Node("const", [], fmt, (), {"name": name, "value": Fraction(text), "text": text,
                                          "cfmt": fmt}))


def let(name, e: E, ann: str | None = None) -> tuple:
    return (name, ann, _w(e).n)


def var(letdef: tuple) -> E:
    name, ann, n = letdef
    return E(Node("var", [n], ann or n.fmt, n.shape, {"name": name}))


def _un(op, x, **attrs):
    x = _w(x).n
    fmt = x.fmt
    if op == "math" and fmt == "i32":
        fmt = "f32"
    return E(Node(op, [x], fmt, x.shape, attrs))


def abs_(x): return _un("abs", x)
def floor(x): return _un("floor", x)
def ceil(x): return _un("ceil", x)
def exp(x): return _un("math", x, fn="exp")
def log(x): return _un("math", x, fn="log")
def sqrt(x): return _un("math", x, fn="sqrt")
def sigmoid(x): return _un("math", x, fn="sigmoid")
def tanh(x): return _un("math", x, fn="tanh")


def where(c, a, b):
    c, a, b = _w(c).n, _w(a).n, _w(b).n
    fmt = "f32" if a.fmt is None and b.fmt is None else bin_fmt("+", a, b)
    return E(Node("where", [c, a, b], fmt, bshape(c.shape, a.shape, b.shape)))


def maximum(a, b):
    a, b = _w(a).n, _w(b).n
    return E(Node("max2", [a, b], bin_fmt("+", a, b), bshape(a.shape, b.shape)))


def rnd(x, fmt, mode=None, sat=None):
    x = _w(x).n
    return E(Node("round", [x], fmt, x.shape, {"fmt": fmt, "style": "round", "mode": mode,
                                               "sat": sat}))


def reduce(fn, x, axis=None, keepdims=False, acc=None, order=None):
    x = _w(x).n
    fmt = acc or x.fmt
    if fn == "mean" and fmt == "i32":
        fmt = "f32"
    if axis is None:
        shape = ()
    elif keepdims:
        shape = tuple(1 if i == axis % len(x.shape) else s for i, s in enumerate(x.shape))
    else:
        shape = tuple(s for i, s in enumerate(x.shape) if i != axis % len(x.shape))
    return E(Node("reduce", [x], fmt, shape, {"fn": fn, "axis": axis, "keepdims": keepdims,
                                              "acc": acc, "order": order}))


def sum_(x, **kw): return reduce("sum", x, **kw)
def max_(x, **kw): return reduce("max", x, **kw)


def matmul(a, b, acc=None):
    a, b = _w(a).n, _w(b).n
    f = promote(a.fmt, b.fmt)
    if f == "i32":
        f = "f32"
    shape = tuple(a.shape[:-1]) + tuple(b.shape[1:]) if len(b.shape) > 1 else tuple(a.shape[:-1])
    return E(Node("matmul", [a, b], f, shape, {"acc": acc}))


def blocks(x, b=4):
    x = _w(x).n
    return E(Node("blocks", [x], x.fmt, (f"N/{b}", b), {"b": b}))


def flatten(x):
    x = _w(x).n
    return E(Node("flatten", [x], x.fmt, ("N",)))


def program(params, lets, outputs, requires=(), dims=None, consts=()) -> Program:
    ps = [p.n.attrs["param"] for p in params]
    cs = [(c.n.attrs["name"], c.n.attrs["cfmt"], c.n.attrs["text"]) for c in consts]
    return Program(ps, cs, list(lets), [_w(o).n for o in outputs], list(requires),
                   dict(dims or {}))
