"""Random well-typed Grade programs, built as our own expression trees and rendered to text.

The tree (``Node``) is what the ideal evaluator (ideal.py) walks; the text is what numgrade
compiles. Formats and shapes are inferred here with our own reading of docs/LANGUAGE.md (a
program the frontend still rejects is discarded and counted by the driver).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

from .fmts import F, FLOATS, minv, promote, grid_ceil, grid_floor

MATH = ["exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "sin", "cos", "exp2", "log2"]
POSITIVE_DOMAIN = {"log", "log2", "sqrt", "rsqrt"}
EXACT_LITS = ["0.5", "1", "2", "3", "0.25", "4", "6", "0.0", "448", "1.5", "8"]
INEXACT_LITS = ["0.1", "0.3", "1.1", "0.001", "3.14159", "0.7", "1e-5", "2.2", "100.3", "0.2"]
CMP = ["<", "<=", ">", ">=", "==", "!="]
MODES = ["rne", "rz", "ru", "rd"]


@dataclass(eq=False)
class Node:
    op: str
    args: list = field(default_factory=list)
    fmt: str | None = None          # None for a weak literal
    shape: tuple = ()
    attrs: dict = field(default_factory=dict)


@dataclass
class Param:
    name: str
    fmt: str
    shape: tuple
    lo: Fraction | None
    hi: Fraction | None
    lo_text: str = ""
    hi_text: str = ""


@dataclass
class Program:
    params: list[Param]
    consts: list[tuple[str, str, str]]        # (name, fmt, value text)
    lets: list[tuple[str, str | None, Node]]  # (name, annotation, expr)
    outputs: list[Node]
    requires: list[str]
    dims: dict[str, int]                       # concrete sizes used for runs and analysis
    name: str = "f"

    def source(self) -> str:
        lines = [f"const {n}: {f} = {v}" for n, f, v in self.consts]
        ps = []
        for p in self.params:
            t = p.fmt + shape_text(p.shape)
            if p.lo is not None:
                t += f" in [{p.lo_text}, {p.hi_text}]"
            ps.append(f"{p.name}: {t}")
        outs = [o.fmt + shape_text(o.shape) for o in self.outputs]
        rt = outs[0] if len(outs) == 1 else "(" + ", ".join(outs) + ")"
        req = (" requires " + ", ".join(self.requires)) if self.requires else ""
        lines.append(f"fn {self.name}({', '.join(ps)}) -> {rt}{req} {{")
        for n, ann, e in self.lets:
            ann = (ann + shape_text(e.shape)) if ann else None
            lines.append(f"    let {n}{': ' + ann if ann else ''} = {render(e)}")
        r = [render(o) for o in self.outputs]
        lines.append("    return " + (r[0] if len(r) == 1 else "(" + ", ".join(r) + ")"))
        lines.append("}")
        return "\n".join(lines) + "\n"


def shape_text(shape: tuple) -> str:
    if not shape:
        return ""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render(e: Node) -> str:
    op, a = e.op, e.attrs
    R = [render(x) for x in e.args]
    if op in ("param", "var", "const", "size"):
        return a["name"]
    if op == "lit":
        return a["text"]
    if op == "bin":
        return f"({R[0]} {a['sym']} {R[1]})"
    if op == "cmp":
        return f"({R[0]} {a['sym']} {R[1]})"
    if op == "neg":
        return f"(-{R[0]})"
    if op in ("abs", "floor", "ceil") or op == "math":
        return f"{a.get('fn', op)}({R[0]})"
    if op == "pow":
        return f"(({R[0]}) ** {a['n']})"
    if op in ("fma", "where"):
        return f"{op}({', '.join(R)})"
    if op in ("min2", "max2"):
        return f"{op[:3]}({R[0]}, {R[1]})"
    if op == "not":
        return f"(not {R[0]})"
    if op == "round":
        if a["style"] == "as":
            return f"(({R[0]}) as {a['fmt']})"
        extra = f", mode={a['mode']}" if a.get("mode") else ""
        if a.get("sat") is not None:
            extra += f", sat={'true' if a['sat'] else 'false'}"
        return f"round({R[0]}, {a['fmt']}{extra})"
    if op == "reduce":
        kw = ""
        if a.get("axis") is not None:
            kw += f", axis={a['axis']}"
        if a.get("keepdims"):
            kw += ", keepdims=true"
        if a.get("acc"):
            kw += f", acc={a['acc']}"
        if a.get("order"):
            kw += f", order={a['order']}"
        return f"{a['fn']}({R[0]}{kw})"
    if op == "matmul":
        if a.get("acc"):
            return f"matmul({R[0]}, {R[1]}, acc={a['acc']})"
        return f"({R[0]} @ {R[1]})"
    if op == "transpose":
        return f"transpose({R[0]}, [1, 0])"
    if op == "index":
        return f"({R[0]})[{a['text']}]"
    if op == "blocks":       # reshape(x, [N/B, B])
        return f"reshape({R[0]}, [N/{a['b']}, {a['b']}])"
    if op == "flatten":      # reshape(x, [N])
        return f"reshape({R[0]}, [N])"
    raise ValueError(op)


# --- typing -------------------------------------------------------------------------------

def bin_fmt(sym: str, a: Node, b: Node) -> str:
    fa, fb = a.fmt, b.fmt
    if fa is None:
        fa = _lit_fmt(a, fb)
    if fb is None:
        fb = _lit_fmt(b, fa)
    f = promote(fa, fb)
    if sym == "/" and f == "i32":
        f = "f32"
    return f


def _lit_fmt(lit: Node, other: str) -> str:
    if other == "i32" and Fraction(lit.attrs["text"]).denominator != 1:
        return "f32"
    return other


def bshape(*shapes) -> tuple:
    out: tuple = ()
    for s in shapes:
        if len(s) > len(out):
            longer, shorter = s, out
        else:
            longer, shorter = out, s
        res = list(longer)
        for i in range(1, len(shorter) + 1):
            x, y = longer[-i], shorter[-i]
            if x == y or y == 1:
                continue
            if x == 1:
                res[-i] = y
                continue
            raise ValueError(f"shapes {out} {s}")
        out = tuple(res)
    return out


# --- the generator ------------------------------------------------------------------------

PARAM_FMT_W = {"f32": 24, "f16": 9, "bf16": 11, "f64": 8, "e4m3": 10, "e5m2": 6, "e2m1": 7,
               "e8m0": 4, "i32": 8, "bool": 4}


class Gen:
    def __init__(self, rng: random.Random, max_depth: int = 3):
        self.r = rng
        self.max_depth = max_depth

    # ranges ---------------------------------------------------------------------------------
    def _range(self, fmt: str) -> tuple[Fraction, Fraction, str, str] | None:
        r = self.r
        f = F[fmt]
        if fmt == "bool":
            return None
        if fmt == "i32":
            lo, hi = r.choice([(-10, 10), (0, 100), (-3, 3), (1, 7), (-(2**31), 2**31 - 1),
                               (-(2**31), 0), (2**30, 2**31 - 1), (-1000, 1000)])
            return Fraction(lo), Fraction(hi), str(lo), str(hi)
        if fmt == "e8m0":
            lo, hi = r.choice([("0.25", "16"), ("1", "1"), ("0.0078125", "128"), ("1", "4"),
                               ("1e-30", "1e30")])
        else:
            lo, hi = r.choice([
                ("-1", "1"), ("-4", "4"), ("0", "1"), ("1", "2"), ("0.5", "4"), ("-3", "3"),
                ("0.001", "1"), ("-100", "100"), ("-1000", "1000"), ("2", "2.5"), ("-6", "6"),
                ("0", "448"), ("-1", "0"), ("10", "20"), ("-0.1", "0.1"), ("0.1", "0.3"),
                ("-1e4", "1e4"), ("-1e30", "1e30"), ("0", "0"), ("-50", "200"),
            ])
        qlo, qhi = Fraction(lo), Fraction(hi)
        # keep the declared range inside the format (values beyond the max cannot be inputs)
        if qhi > f.maxv:
            qhi = f.maxv
            hi = _exact_text(qhi)
        if qlo < minv(f):
            qlo = minv(f)
            lo = _exact_text(qlo)
        if qlo > qhi or grid_ceil(f, qlo) is None or grid_floor(f, qhi) is None or \
                grid_ceil(f, qlo) > grid_floor(f, qhi):
            return self._range(fmt)
        return qlo, qhi, lo, hi

    def program(self) -> Program:
        r = self.r
        mode = r.choices(["scalar", "vec", "mat"], [40, 45, 15])[0]
        self.mode = mode
        self.full = {"scalar": (), "vec": ("N",), "mat": ("N", "N")}[mode]
        self.requires: list[str] = []
        self.blocks = mode == "vec" and r.random() < 0.3
        self.slices = mode == "vec" and r.random() < 0.3
        if self.blocks:
            self.requires.append("N % 4 == 0")
        if self.slices:
            self.requires.append("N >= 2")
        nparams = r.choice([1, 2, 2, 3])
        self.params = []
        fmts = list(PARAM_FMT_W)
        for i in range(nparams):
            fmt = r.choices(fmts, [PARAM_FMT_W[f] for f in fmts])[0]
            shape = self.full if (i == 0 or r.random() < 0.6) else ()
            rg = self._range(fmt)
            if rg is None:
                self.params.append(Param(f"p{i}", fmt, shape, None, None))
            else:
                self.params.append(Param(f"p{i}", fmt, shape, *rg))
        self.consts = []
        if r.random() < 0.35:
            cf = r.choice(["bf16", "f16", "e4m3", "f32", "e2m1", "e5m2"])
            self.consts.append(("C0", cf, r.choice(INEXACT_LITS + ["0.5", "3", "1.5"])))
        self.lets = []
        self.leaves = [Node("param", [], p.fmt, p.shape, {"name": p.name, "param": p})
                       for p in self.params]
        for n, f, v in self.consts:
            self.leaves.append(Node("const", [], f, (), {"name": n, "value": Fraction(v)}))
        for i in range(r.choice([0, 1, 1, 2, 3])):
            shape = self.full if r.random() < 0.7 else ()
            ann = None
            if r.random() < 0.35:
                ann = r.choice(["bf16", "f16", "e4m3", "f32", "bf16", "e5m2", "f64"])
                e = self.binop(self.max_depth - 1, shape)
            else:
                e = self.num(self.max_depth, shape)
            fmt = ann or e.fmt
            name = f"v{i}"
            self.lets.append((name, ann, e))
            self.leaves.append(Node("var", [e], fmt, e.shape, {"name": name}))
        outs = []
        for _ in range(r.choice([1, 1, 2])):
            shape = self.full if r.random() < 0.7 else ()
            if r.random() < 0.1:
                outs.append(self.boolean(self.max_depth, shape))
            else:
                outs.append(self.num(self.max_depth, shape))
        dims = {}
        if mode != "scalar":
            choices = [1, 2, 4, 8] if mode == "vec" else [1, 2, 3]
            if self.blocks:
                choices = [4, 8]
            elif self.slices:
                choices = [2, 4, 8]
            dims["N"] = r.choice(choices)
        return Program(self.params, self.consts, self.lets, outs, self.requires, dims)

    # expressions ----------------------------------------------------------------------------
    def leaf(self, shape: tuple, want_num: bool = True) -> Node:
        r = self.r
        cands = [x for x in self.leaves if x.shape == shape or x.shape == ()]
        exact = [x for x in cands if x.shape == shape]
        if want_num:
            cands = [x for x in cands if x.fmt != "bool"] or cands
            exact = [x for x in exact if x.fmt != "bool"] or exact
        if not cands:
            full = [x for x in self.leaves if x.shape == self.full and x.fmt != "bool"] or \
                [x for x in self.leaves if x.shape == self.full]
            src = r.choice(full)
            idx = ", ".join(r.choice(["0", "-1"]) for _ in self.full)
            e = Node("index", [src], src.fmt, (), {"text": idx})
            if want_num and e.fmt == "bool":
                e = self.conv(e, "f32")
            return e
        if not exact:
            exact = [x for x in self.leaves if x.shape == shape]
        if shape == () and self.mode != "scalar" and r.random() < 0.08:
            return Node("size", [], "i32", (), {"name": "N"})
        pick = r.choice(exact)
        if want_num and pick.fmt == "bool":
            return Node("round", [pick], "f32", pick.shape, {"fmt": "f32", "style": "as"})
        if want_num and pick.fmt == "e8m0" and r.random() < 0.6:
            return Node("round", [pick], "f32", pick.shape, {"fmt": "f32", "style": "as"})
        if pick.op == "size":
            return pick
        return pick

    def lit(self) -> Node:
        r = self.r
        t = r.choice(EXACT_LITS if r.random() < 0.55 else INEXACT_LITS)
        return Node("lit", [], None, (), {"text": t, "value": Fraction(t)})

    def operand_shape(self, shape: tuple) -> tuple:
        if shape == () or self.r.random() < 0.75:
            return shape
        if self.mode == "mat" and shape == self.full and self.r.random() < 0.5:
            return self.r.choice([("N", 1), ("N",)])
        return ()

    def num(self, depth: int, shape: tuple) -> Node:
        r = self.r
        if depth <= 0 or r.random() < 0.15:
            if shape in ((), self.full):
                return self.leaf(shape)
        if shape not in ((), self.full):
            return self.partial(depth, shape)
        kinds = ["bin", "bin", "bin", "bin", "mod", "neg", "abs", "math", "math", "fl", "pow",
                 "fma", "mm2", "where", "where", "round", "round", "int"]
        if shape == ():
            kinds += ["reduce", "reduce", "reduce"] if self.mode != "scalar" else []
            kinds += ["dot"] if self.mode == "vec" else []
            kinds += ["slice", "slice"] if self.slices else []
            kinds += ["bmax", "bmax"] if self.blocks else []
        elif self.mode == "mat":
            kinds += ["matmul", "transpose"]
        if shape == self.full and self.blocks:
            kinds += ["bsub", "bsub"]
        k = r.choice(kinds)
        d = depth - 1
        if k == "bin":
            return self.binop(d, shape)
        if k == "mod":
            a = self.num(d, shape)
            if r.random() < 0.5:
                b = self.lit()
                if b.attrs["value"] == 0:
                    b = Node("lit", [], None, (), {"text": "3", "value": Fraction(3)})
            elif r.random() < 0.7:
                b = self.guard_pos(self.num(d, self.operand_shape(shape)))
            else:
                b = self.num(d, self.operand_shape(shape))   # divisor range may hold 0
            return self.mk_bin("%", a, b)
        if k == "neg":
            a = self.num(d, shape)
            return Node("neg", [a], a.fmt, a.shape)
        if k == "abs":
            a = self.num(d, shape)
            return Node("abs", [a], a.fmt, a.shape)
        if k == "math":
            fn = r.choice(MATH)
            a = self.num(d, shape)
            if fn in POSITIVE_DOMAIN and r.random() < 0.8:
                a = self.guard_pos(a)
            fmt = "f32" if a.fmt == "i32" else a.fmt
            return Node("math", [a], fmt, a.shape, {"fn": fn})
        if k == "fl":
            a = self.num(d, shape)
            if a.fmt == "i32":
                a = self.conv(a, "f32")
            if r.random() < 0.5:
                a = self.mk_bin(r.choice(["*", "/", "+"]), a, self.lit())
            return Node(r.choice(["floor", "ceil"]), [a], a.fmt, a.shape)
        if k == "pow":
            a = self.num(d, shape)
            return Node("pow", [a], a.fmt, a.shape, {"n": r.choice([2, 2, 3, 4])})
        if k == "fma":
            xs = [self.num(d, shape)] + [self.num(d, self.operand_shape(shape)) for _ in range(2)]
            f = xs[0].fmt
            for x in xs[1:]:
                f = promote(f, x.fmt)
            if f == "i32":
                f = "f32"
            return Node("fma", xs, f, bshape(*(x.shape for x in xs)))
        if k == "mm2":
            a = self.num(d, shape)
            b = self.num(d, self.operand_shape(shape)) if r.random() < 0.6 else self.lit()
            return Node(r.choice(["min2", "max2"]), [a, b], bin_fmt("+", a, b),
                        bshape(a.shape, b.shape))
        if k == "where":
            c = self.boolean(d, self.operand_shape(shape))
            a = self.num(d, shape)
            b = self.num(d, self.operand_shape(shape)) if r.random() < 0.7 else self.lit()
            return Node("where", [c, a, b], bin_fmt("+", a, b), bshape(c.shape, a.shape, b.shape))
        if k == "round":
            a = self.num(d, shape)
            fmt = r.choice(FLOATS + ["f32", "bf16", "e4m3", "e2m1"])
            if r.random() < 0.5:
                return self.conv(a, fmt)
            sat = r.choice([None, True, False])
            return Node("round", [a], fmt, a.shape,
                        {"fmt": fmt, "style": "round", "mode": r.choice(MODES + [None]),
                         "sat": sat})
        if k == "int":
            a = self.num(d, shape)
            return self.conv(a, "i32")
        if k == "reduce":
            src = self.num(d, self.full)
            return self.reduce(src, None)
        if k == "dot":
            a, b = self.num(d, self.full), self.num(d, self.full)
            return self.mk_matmul(a, b, ())
        if k == "slice":
            src = self.num(d, self.full)
            if r.random() < 0.3:
                return Node("index", [src], src.fmt, (), {"text": r.choice(["0", "1"])})
            sl = Node("index", [src], src.fmt, (2,), {"text": r.choice(["0:2", "1:2", "0:1"])})
            if sl.attrs["text"] != "0:2":
                sl.shape = (1,)
            inner = Node("abs", [sl], sl.fmt, sl.shape) if r.random() < 0.6 else sl
            fn = r.choice(["max", "max", "min", "sum"])
            return Node("reduce", [inner], inner.fmt, (), {"fn": fn})
        if k == "bmax":
            src = self.num(d, self.full)
            b = self.blocked(src)
            m = Node("reduce", [b], b.fmt, ("N/4",), {"fn": "max", "axis": -1})
            return Node("reduce", [m], m.fmt, (), {"fn": r.choice(["max", "min", "sum"])})
        if k == "bsub":
            src = self.num(d, self.full)
            b = self.blocked(src)
            m = Node("reduce", [b], b.fmt, ("N/4", 1), {"fn": "max", "axis": -1, "keepdims": True})
            sym = r.choice(["-", "/"])
            if sym == "/":
                m = self.guard_pos(m)
            x = self.mk_bin(sym, b, m)
            return Node("flatten", [x], x.fmt, ("N",))
        if k == "matmul":
            a, b = self.num(d, self.full), self.num(d, self.full)
            return self.mk_matmul(a, b, self.full)
        if k == "transpose":
            a = self.num(d, self.full)
            return Node("transpose", [a], a.fmt, a.shape)
        raise AssertionError(k)

    def blocked(self, src: Node) -> Node:
        b = Node("blocks", [src], src.fmt, ("N/4", 4), {"b": 4})
        return Node("abs", [b], b.fmt, b.shape) if self.r.random() < 0.6 else b

    def partial(self, depth: int, shape: tuple) -> Node:
        src = self.num(depth - 1, self.full)
        if shape == ("N", 1):
            return self.reduce(src, -1, keepdims=True)
        return self.reduce(src, 0)

    def reduce(self, src: Node, axis, keepdims=False) -> Node:
        r = self.r
        if src.fmt == "bool":
            src = self.conv(src, "f32")
        fn = r.choice(["sum", "sum", "mean", "max", "min"])
        attrs = {"fn": fn, "axis": axis, "keepdims": keepdims}
        fmt = src.fmt
        if fn in ("sum", "mean"):
            if r.random() < 0.5:
                attrs["acc"] = r.choice(["f32", "bf16", "f16", "e4m3", "e2m1", "i32", "f64",
                                         "e5m2", "e8m0"])
                fmt = attrs["acc"]
            if r.random() < 0.4:
                attrs["order"] = r.choice(["any", "seq", "pairwise", "kahan"])
            if fn == "mean" and fmt == "i32":
                fmt = "f32"
        if axis is None:
            shape = ()
        elif keepdims:
            shape = tuple(1 if i == (axis % len(src.shape)) else s for i, s in enumerate(src.shape))
        else:
            shape = tuple(s for i, s in enumerate(src.shape) if i != axis % len(src.shape))
        return Node("reduce", [src], fmt, shape, attrs)

    def mk_matmul(self, a: Node, b: Node, shape: tuple) -> Node:
        f = promote(a.fmt, b.fmt)
        if f == "i32":
            f = "f32"
        attrs = {}
        if self.r.random() < 0.6:
            attrs["acc"] = self.r.choice(["f32", "bf16", "f16", "e4m3", "e2m1", "i32", "f64"])
        return Node("matmul", [a, b], f, shape, attrs)

    def conv(self, a: Node, fmt: str) -> Node:
        return Node("round", [a], fmt, a.shape, {"fmt": fmt, "style": "as"})

    def guard_pos(self, a: Node) -> Node:
        """abs(a) + c: keeps log/sqrt/division/mod divisors away from 0 (mostly)."""
        ab = Node("abs", [a], a.fmt, a.shape)
        return self.mk_bin("+", ab, Node("lit", [], None, (), {
            "text": self.r.choice(["1", "0.5", "2", "0.1"]), "value": None}))

    def mk_bin(self, sym: str, a: Node, b: Node) -> Node:
        for x in (a, b):
            if x.op == "lit" and x.attrs.get("value") is None:
                x.attrs["value"] = Fraction(x.attrs["text"])
        return Node("bin", [a, b], bin_fmt(sym, a, b), bshape(a.shape, b.shape), {"sym": sym})

    def binop(self, depth: int, shape: tuple) -> Node:
        r = self.r
        sym = r.choice(["+", "-", "*", "/", "+", "-", "*"])
        a = self.num(depth, shape)
        if r.random() < 0.3:
            b = self.lit()
        else:
            b = self.num(depth, self.operand_shape(shape))
        if r.random() < 0.15:
            a, b = b, a
            if a.shape != shape and b.shape != shape:
                a, b = b, a
        if sym == "/" and b.op != "lit" and r.random() < 0.6:
            b = self.guard_pos(b)
        if sym == "/" and b.op == "lit" and b.attrs["value"] == 0:
            b = Node("lit", [], None, (), {"text": "3", "value": Fraction(3)})
        if a.op == "lit" and b.op == "lit":
            b = self.leaf(shape)
        return self.mk_bin(sym, a, b)

    def boolean(self, depth: int, shape: tuple) -> Node:
        r = self.r
        bools = [x for x in self.leaves if x.fmt == "bool" and x.shape in (shape, ())]
        k = r.random()
        if bools and k < 0.2:
            return r.choice(bools)
        if k < 0.3:
            a = self.num(depth - 1, shape)
            return Node("round", [a], "bool", a.shape, {"fmt": "bool", "style": "as"})
        a = self.num(depth - 1, shape)
        b = self.lit() if r.random() < 0.5 else self.num(depth - 1, self.operand_shape(shape))
        if a.op == "lit" and b.op == "lit":
            a = self.leaf(shape)
        return Node("cmp", [a, b], "bool", bshape(a.shape, b.shape), {"sym": r.choice(CMP)})


def _exact_text(q: Fraction) -> str:
    """A decimal literal for the exact value q (a dyadic rational: finite decimal)."""
    if q.denominator == 1:
        return str(q.numerator)
    # dyadic: multiply by 5^k to get a finite decimal
    k = q.denominator.bit_length() - 1
    n = q.numerator * 5**k
    s = str(abs(n)).rjust(k + 1, "0")
    t = s[:-k] + "." + s[-k:]
    return ("-" if n < 0 else "") + t


def generate(seed: int, max_depth: int = 3) -> Program:
    return Gen(random.Random(seed), max_depth).program()
