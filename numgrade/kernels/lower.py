"""Lowering: a fused function (``passes/fusion.py``) becomes a :class:`KernelProgram`.

Every value is generated *at an index*: ``emit(v, idx)`` returns a scalar expression for element
``idx`` of ``v``. Data movement is index arithmetic (reshape re-linearises, transpose permutes,
broadcast pins an axis to 0, slices offset and stride, concat selects); a value owned by another
kernel, a parameter or an array constant is a load; a reduction owned by this kernel is a
:class:`Reduce` placed where it is first needed (the kernel's reductions are generated first, at
the grid point, so each is computed once per program instance). Each operation follows the
reference's rounding rule with the primitives of ``legalize.py``; ``f32`` add/sub/mul of ``f32``
operands use the ``f32`` instruction (which is that rule; its NaN is made the positive NaN that
``round_array`` gives), everything else is computed in ``f64`` and rounded once (innocuous double
rounding for ``+ - * / sqrt``, since 53 >= 2p + 2), whatever mix of formats the operands have.
``fma`` of wider operands is ``kernels/fma.py``, ``%`` is ``kernels/fmod.py``; sums, means and
matmuls accumulate in any format (:meth:`_KernelLowerer.sum_at`); calls to functions with the
``rand`` effect get their callee's seed through ``kernels/streams.py``.
"""

from __future__ import annotations

import keyword
import math
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import GradeError
from ..ir import nodes as N
from ..ir.dims import Dim
from ..ir.formats import Format, get_format
from ..ir.nodes import Op, Value
from ..passes.fusion import FusionPlan, Group, Layout, plan_fusion
from ..passes.inline import inline_calls
from . import legalize as L
from .fma import fma_f64, round_odd, two_sum
from .fmod import np_mod
from .round_f32 import round_f32_to
from .streams import bind_streams, stream_path
from .ir import (IDENT_RE, BufferDecl, Decl, KExpr, Kernel, KernelProgram, Loop, Reduce,
                 ScalarParam, Store, Assign, acc_vars, const, load, select, unary, var,
                 walk_exprs)


# The fast contract (SPEC section 3), as lowered here: sums and matrix products with the
# default order=any accumulate in any order (the backend's fastest; each partial sum still
# rounds to the accumulator format); f32 operations on f32 operands stay in f32 (IEEE division
# and sqrt, correctly rounded like the reference; math functions through the target's
# single-precision library, within the ulp bounds of passes/rounding_model.MATH_ULP_FACTOR);
# no NaN canonicalisation. Explicit order=seq|pairwise|kahan is honoured exactly.
FAST_F32_UNARY = {Op.NEG, Op.ABS, Op.FLOOR, Op.CEIL, Op.SQRT, Op.EXP, Op.LOG, Op.TANH, Op.SIN,
                  Op.COS, Op.EXP2, Op.LOG2}


def _powers_of_two(v: Value) -> bool:
    """Every value of v is a power of two or NaN (e8m0, and e8m0 moved or converted to f32)."""
    while v.op in N.MOVEMENT or (v.op == Op.ROUND and v.srcs and v.fmt.name == "f32"):
        v = v.srcs[0]
    return v.fmt.name == "e8m0"


class NotLowerable(GradeError):
    """The function uses something the kernel backends do not implement (yet)."""


C_KEYWORDS = {"auto", "break", "case", "char", "const", "continue", "default", "do", "double",
              "else", "enum", "extern", "float", "for", "goto", "if", "int", "long", "register",
              "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef",
              "union", "unsigned", "void", "volatile", "while", "inline", "restrict", "bool",
              "true", "false", "class", "template", "namespace", "new", "delete", "this",
              "operator", "private", "public", "protected", "virtual", "T", "tl", "triton",
              "np", "torch", "tvm", "te"}


def safe_ident(text: str, prefix: str, limit: int = 40) -> str:
    """A name from user text that is safe in Python, C and TVMScript: ``prefix_`` + [A-Za-z0-9_]."""
    body = re.sub(r"[^A-Za-z0-9_]", "_", text)[:limit]
    name = f"{prefix}_{body}" if body else prefix
    assert IDENT_RE.match(name) and not keyword.iskeyword(name) and name not in C_KEYWORDS
    return name


def is_safe_ident(name: str) -> bool:
    return bool(IDENT_RE.match(name)) and not keyword.iskeyword(name) and name not in C_KEYWORDS


I64 = "i64"


def i64(n: int) -> KExpr:
    return const(int(n), I64)


f64c = L.f64

@dataclass
class _Scope:
    blk: L.Block
    memo: dict = field(default_factory=dict)
    parent: "_Scope | None" = None

    def get(self, key):
        s = self
        while s is not None:
            if key in s.memo:
                return s.memo[key]
            s = s.parent
        return None

    def child(self) -> "_Scope":
        return _Scope(self.blk.child(), {}, self)


class _ProgramBuilder:
    def __init__(self, fn: N.Function, plan: FusionPlan):
        self.fn = fn
        self.plan = plan
        self.buffers: dict[str, BufferDecl] = {}
        self.buffer_of: dict[Value, str] = {}
        self.const_data: dict[str, np.ndarray] = {}
        self.dims: dict[str, Dim] = {}
        self.dim_names: dict[Dim, str] = {}
        self.streams: dict[str, tuple[int, ...]] = {}
        self.paths: dict[int, tuple[int, ...]] = {}  # fresh stream ordinal -> call path
        self.kernels: list[Kernel] = []
        self.fast = False    # the fast execution contract (FAST_CONTRACT)

    # --- names --------------------------------------------------------------------------
    def dim(self, d: Dim) -> KExpr:
        n = d.int_value()
        if n is not None:
            return i64(n)
        name = self.dim_names.get(d)
        if name is None:
            sym = d.plain_symbol()
            name = safe_ident(sym, "n") if sym else f"dim{len(self.dim_names)}"
            while name in self.dims:
                name += "_"
            self.dim_names[d] = name
            self.dims[name] = d
        return var(name, I64)

    def add_buffer(self, v: Value, name: str, role: str, shape=None) -> str:
        fmt = v.fmt
        st = L.storage_dtype(fmt)
        self.buffers[name] = BufferDecl(name, fmt.name, tuple(shape if shape is not None
                                                               else v.shape), st, role)
        return name


def lower_function(module: N.Module, fn: N.Function, exact: bool = True) -> KernelProgram:
    """Fuse and lower one function of a module, under the exact contract (bit-identical to
    the reference) or the fast one (see FAST_CONTRACT)."""
    bound, caller, paths = bind_streams(module, fn)  # calls with the rand effect
    flat = inline_calls(bound, caller)
    plan = plan_fusion(flat)
    return _lower(plan, fn, paths, exact)


def _lower(plan: FusionPlan, orig: N.Function,
           paths: dict[int, tuple[int, ...]] | None = None, exact: bool = True) -> KernelProgram:
    fn = plan.fn
    pb = _ProgramBuilder(fn, plan)
    pb.paths = paths or {}
    pb.fast = not exact
    inputs = []
    for i, p in enumerate(fn.params):
        name = safe_ident(p.name, f"in{i}")
        pb.buffer_of[p.value] = pb.add_buffer(p.value, name, "in")
        inputs.append(name)
    outputs = []
    for i, r in enumerate(fn.results):
        o = plan.outputs[i]
        if o in pb.buffer_of and pb.buffers[pb.buffer_of[o]].role == "out":
            outputs.append(pb.buffer_of[o])
            continue
        name = f"out{i}"
        pb.add_buffer(o, name, "out", shape=r.shape)
        if o.op != Op.PARAM:
            pb.buffer_of[o] = name
        outputs.append(name)
    for k, h in enumerate(plan.materialized):
        if h not in pb.buffer_of:
            pb.buffer_of[h] = pb.add_buffer(h, f"tmp{k}", "temp")
    for g in plan.groups:
        pb.kernels.append(_KernelLowerer(pb, g, outputs).lower())
    prog = KernelProgram(fn.name, pb.buffers, pb.kernels, inputs, outputs, fn.result_is_tuple,
                         sorted({d.plain_symbol() for d in pb.dims.values() if d.plain_symbol()}),
                         pb.dims, pb.streams, plan)
    prog.constants = pb.const_data  # type: ignore[attr-defined]
    prog.contract = "exact" if exact else "fast"
    return prog


def _embeds(a: Format, b: Format) -> bool:
    """Every value of format a (incl. inf/NaN/-0) is a value of b: conversion is exact."""
    if a.kind != "float" or b.kind != "float":
        return a.name == b.name
    return (a.precision <= b.precision and a.emin >= b.emin and a.emax <= b.emax
            and (b.signed or not a.signed) and (b.has_nan or not a.has_nan)
            and (b.has_inf or not a.has_inf) and (b.has_subnormals or not a.has_subnormals
                                                   or a.emin - a.precision >= b.emin - 1))


class _KernelLowerer:
    def __init__(self, pb: _ProgramBuilder, g: Group, outputs: list[str]):
        self.pb = pb
        self.g = g
        self.outputs = outputs
        self.root = _Scope(L.Block(prefix="t"))
        self.loop_counter = 0

    # --- entry -------------------------------------------------------------------------
    def lower(self) -> Kernel:
        g, pb = self.g, self.pb
        grid = tuple(pb.dim(d) for d in g.grid)
        gvars = tuple(f"g{i}" for i in range(len(g.grid)))
        self.gcoords = tuple(var(n, I64) for n in gvars)
        sc = self.root
        for h in g.heavies:
            if h.op in N.REDUCE:
                self.reduce_at(sc, h, self.gcoords)
        by_layout: dict[Layout, list[Value]] = {}
        for v, lay in g.stores:
            if lay is None:
                idx = self.grid_index(v)
                self.store(sc, v, idx)
            else:
                by_layout.setdefault(lay, []).append(v)
        for lay, vals in by_layout.items():
            inner_dims = lay.inner
            ext = self.extent(inner_dims)
            lv = self.fresh_loop("i")
            body = sc.child()
            inner_coords = self.decompose(body, var(lv, I64), inner_dims)
            idx = self.merge(lay, self.gcoords, inner_coords)
            for v in vals:
                self.store(body, v, idx)
            sc.blk.stmts.append(Loop(lv, ext, tuple(body.blk.stmts), "parallel"))
        names = sorted(self.used_scalars(sc.blk.stmts, grid))
        scalars = tuple(ScalarParam(n, "u64" if n.startswith("key") else I64) for n in names)
        used_bufs = self.used_buffers(sc.blk.stmts)
        note = g.describe(self.pb.fn.names)
        return Kernel(f"{safe_ident(self.pb.fn.name, 'k')}_{g.index}", grid, gvars,
                      tuple(sc.blk.stmts), tuple(used_bufs), scalars, note)

    def fresh_loop(self, p: str) -> str:
        self.loop_counter += 1
        return f"{p}{self.loop_counter}"

    def used_scalars(self, stmts, grid) -> set[str]:
        names: set[str] = set()
        seen: set[int] = set()
        stack = list(walk_exprs(stmts)) + list(grid)
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            if e.op == "var" and (e.attrs[0] in self.pb.dims or e.attrs[0].startswith("key")):
                names.add(e.attrs[0])
            stack.extend(e.args)
        return names

    def used_buffers(self, stmts) -> list[str]:
        out: list[str] = []
        seen: set[int] = set()

        def visit(ss):
            for s in ss:
                if isinstance(s, Store) and s.buffer not in out:
                    out.append(s.buffer)
                if isinstance(s, (Loop, Reduce)):
                    visit(s.body)
        stack = list(walk_exprs(stmts))
        while stack:
            e = stack.pop()
            if id(e) in seen:
                continue
            seen.add(id(e))
            if e.op == "load" and e.attrs[0] not in out:
                out.append(e.attrs[0])
            stack.extend(e.args)
        visit(stmts)
        return sorted(out, key=lambda b: list(self.pb.buffers).index(b))

    # --- indices -----------------------------------------------------------------------
    def extent(self, dims) -> KExpr:
        n = Dim.const(1)
        for d in dims:
            n = n * d
        return self.pb.dim(n)

    def flat(self, sc: _Scope, idx, shape) -> KExpr:
        if not shape:
            return i64(0)
        acc = None
        stride = Dim.const(1)
        for c, d in reversed(list(zip(idx, shape))):
            term = c if stride == Dim.const(1) else c * self.pb.dim(stride)
            acc = term if acc is None else term + acc
            stride = stride * d
        return sc.blk.let(acc, "ix")

    def decompose(self, sc: _Scope, f: KExpr, dims) -> tuple[KExpr, ...]:
        out = []
        rest = f
        for j, d in enumerate(reversed(dims)):
            if d == Dim.const(1):
                out.append(i64(0))
                continue
            last = all(e == Dim.const(1) for e in list(reversed(dims))[j + 1:])
            if last:
                out.append(rest)
                continue
            de = self.pb.dim(d)
            out.append(sc.blk.let(rest % de, "c"))
            rest = sc.blk.let(rest // de, "q")
        return tuple(reversed(out))

    def merge(self, lay: Layout, gc, ic) -> tuple[KExpr, ...]:
        gi, ii = iter(gc), iter(ic)
        return tuple(next(ii) if a in lay.inner_axes else next(gi) for a in range(len(lay.shape)))

    def grid_index(self, v: Value) -> tuple[KExpr, ...]:
        one = Dim.const(1)
        g = iter(self.gcoords)
        if v.op in N.REDUCE:
            axes, keep, _ = v.attrs
            src_rank = len(v.srcs[0].shape)
            if keep:
                return tuple(i64(0) if a in axes else next(g) for a in range(src_rank))
            return tuple(next(g) for _ in v.shape)
        if len([d for d in v.shape if d != one]) != len([d for d in self.g.grid if d != one]):
            raise NotLowerable(f"cannot store {v.op} of shape {v.shape} at grid level")
        out = []
        gl = [(c, d) for c, d in zip(self.gcoords, self.g.grid) if d != one]
        it = iter(gl)
        for d in v.shape:
            out.append(i64(0) if d == one else next(it)[0])
        return tuple(out)

    # --- stores ------------------------------------------------------------------------
    def store(self, sc: _Scope, v: Value, idx) -> None:
        for name in self.buffers_for(v):
            buf = self.pb.buffers[name]
            fmt = get_format(buf.fmt)
            x = self.emit(sc, v, idx)
            raw = L.encode(sc.blk, self.to_carrier(sc, x, v.fmt, fmt), fmt)
            sc.blk.stmts.append(Store(name, self.flat(sc, idx, v.shape), raw))

    def buffers_for(self, v: Value) -> list[str]:
        names = []
        if v in self.pb.buffer_of and self.pb.buffers[self.pb.buffer_of[v]].role != "in":
            names.append(self.pb.buffer_of[v])
        for i, o in enumerate(self.pb.plan.outputs):
            if o is v and self.outputs[i] not in names:
                names.append(self.outputs[i])
        return names

    # --- values ------------------------------------------------------------------------
    def to_carrier(self, sc: _Scope, x: KExpr, src_fmt: Format, fmt: Format) -> KExpr:
        want = L.carrier(fmt)
        if x.dtype == want:
            return x
        if x.dtype == "bool":
            return select(x, const(1, want), const(0, want)) if want != "bool" else x
        if want == "bool":
            return x.ne(const(0, x.dtype))
        return x.cast(want)

    def as_f64(self, x: KExpr) -> KExpr:
        if x.dtype == "bool":
            return select(x, f64c(1.0), f64c(0.0))
        return x.cast("f64")

    def truthy(self, x: KExpr) -> KExpr:
        return x if x.dtype == "bool" else x.ne(const(0, x.dtype))

    def finish(self, sc: _Scope, x64: KExpr, fmt: Format) -> KExpr:
        """Round an exact-or-f64 result once to fmt and return it in fmt's carrier."""
        r = L.round_to(sc.blk, x64, fmt)
        want = L.carrier(fmt)
        if want == "bool":
            return r.ne(f64c(0.0))
        return sc.blk.let(r.cast(want), "v") if want != "f64" else r

    def emit(self, sc: _Scope, v: Value, idx) -> KExpr:
        key = (v, tuple(idx))
        hit = sc.get(key)
        if hit is not None:
            return hit
        e = self._emit(sc, v, tuple(idx))
        sc.memo[key] = e
        return e

    def is_loaded(self, v: Value) -> bool:
        if v.op == Op.PARAM:
            return True
        if v.op == Op.CONST and v.shape:
            return True
        if v.op in (N.REDUCE | {Op.MATMUL, Op.TOPK_MASK}):
            return self.pb.plan.owner.get(v) != self.g.index
        return False

    def load_value(self, sc: _Scope, v: Value, idx) -> KExpr:
        if v.op == Op.CONST:
            name = self.pb.buffer_of.get(v)
            if name is None:
                name = f"cst{len(self.pb.const_data)}"
                self.pb.add_buffer(v, name, "const")
                self.pb.buffer_of[v] = name
                vals = np.array(v.attrs[0], dtype=np.float64)
                self.pb.const_data[name] = vals
        else:
            name = self.pb.buffer_of[v]
        buf = self.pb.buffers[name]
        raw = sc.blk.let(load(name, self.flat(sc, idx, v.shape), buf.storage), "ld")
        return L.decode(sc.blk, raw, v.fmt)

    def _emit(self, sc: _Scope, v: Value, idx) -> KExpr:
        if self.is_loaded(v):
            return self.load_value(sc, v, idx)
        op = v.op
        fmt = v.fmt
        if op == Op.CONST:
            x = float(v.attrs[0][0])
            c = L.carrier(fmt)
            return const(x != 0, "bool") if c == "bool" else const(x, c)
        if op == Op.DIM:
            return self.finish(sc, self.pb.dim(v.attrs[0]).cast("f64"), fmt)
        if op in N.REDUCE:
            axes, keep, _ = v.attrs
            if keep:
                kept = tuple(c for a, c in enumerate(idx) if a not in axes)
            else:
                kept = idx
            return self.reduce_at(sc, v, kept)
        if op == Op.MATMUL:
            return self.matmul_at(sc, v, idx)
        if op == Op.TOPK_MASK:
            return self.topk_at(sc, v, idx)
        if op in N.MOVEMENT:
            return self.movement(sc, v, idx)
        if op == Op.ARANGE:
            return self.finish(sc, idx[0].cast("f64"), fmt)
        if op == Op.RAND:
            k0, k1 = self.key(v.attrs[0])
            u = L.philox_uniform(sc.blk, self.flat(sc, idx, v.shape), k0, k1)
            return self.finish(sc, u, fmt)
        srcs = [self.emit(sc, s, self.bcast(idx, v.shape, s.shape)) for s in v.srcs]
        if op == Op.ROUND:
            mode, sat, stream = v.attrs
            rw = None
            if mode == "sr":
                k0, k1 = self.key(stream)
                f = self.flat(sc, idx, v.shape)
                rw = lambda: L.philox_first_word(sc.blk, f, k0, k1)  # noqa: E731
            src_fmt = v.srcs[0].fmt
            # an exact conversion is a move, unless it saturates an infinity or must make an
            # e4m3 NaN (negative after an overflow) round_array's positive NaN
            if _embeds(src_fmt, fmt) and srcs[0].dtype != "bool" and src_fmt.name != "e4m3" \
                    and not (sat and src_fmt.has_inf):
                return self.to_carrier(sc, srcs[0], fmt, fmt)
            if srcs[0].dtype == "f32" and fmt.name == "f32" and not (sat and src_fmt.has_inf):
                # an f32 carrier already holds an f32 value (e4m3, e8m0 -> f32): exact in every
                # mode; only a NaN is made the positive one
                return srcs[0] if self.pb.fast else sc.blk.let(L.canon_nan(srcs[0]), "v")
            if srcs[0].dtype == "f32" and L.carrier(fmt) == "f32" and fmt.name != "f32" \
                    and mode != "sr":
                # an f32 value rounds by bit manipulation in f32/u32 (kernels/round_f32.py):
                # the same bits as the float64 path, without float64 instructions
                r32 = round_f32_to(sc.blk, srcs[0], fmt, mode, sat)
                if r32 is not None:
                    return r32
            r = L.round_to(sc.blk, self.as_f64(srcs[0]), fmt, mode, sat, rw)
            return self.to_carrier(sc, r, fmt, fmt) if L.carrier(fmt) != "f64" else r
        if op in (Op.ADD, Op.SUB, Op.MUL) and fmt.name == "f32" and all(
                s.dtype == "f32" for s in srcs):
            name = {Op.ADD: "add", Op.SUB: "sub", Op.MUL: "mul"}[op]
            r = KExpr(name, tuple(srcs), (), "f32")
            return sc.blk.let(r if self.pb.fast else L.canon_nan(r), "v")
        if self.pb.fast and srcs and all(s.dtype == "f32" for s in srcs):
            self.cur = v
            r = self.fast_f32(sc, op, fmt, srcs)
            if r is not None:
                return r
        if op in N.COMPARE:
            a, b = (self.as_f64(s) for s in srcs)
            r = getattr(a, {Op.LT: "lt", Op.LE: "le", Op.GT: "gt", Op.GE: "ge", Op.EQ: "eq",
                            Op.NE: "ne"}[op])(b)
            return self.to_carrier(sc, sc.blk.let(r, "cmp"), fmt, fmt)
        if op in (Op.AND, Op.OR):
            a, b = (self.truthy(s) for s in srcs)
            r = a & b if op == Op.AND else a | b
            return self.to_carrier(sc, sc.blk.let(r, "lg"), fmt, fmt)
        if op == Op.NOT:
            return self.to_carrier(sc, sc.blk.let(unary("not", self.truthy(srcs[0])), "lg"),
                                   fmt, fmt)
        if op == Op.WHERE:
            c = self.truthy(srcs[0])
            want = L.carrier(fmt)
            a = self.to_carrier(sc, srcs[1], fmt, fmt) if srcs[1].dtype != want else srcs[1]
            b = self.to_carrier(sc, srcs[2], fmt, fmt) if srcs[2].dtype != want else srcs[2]
            return sc.blk.let(select(c, a, b), "w")
        if op == Op.MUL and all(s.dtype == "f32" for s in srcs):
            r = self.pow2_scaling(sc, v, srcs)
            if r is not None:
                return r
        xs = [self.as_f64(s) for s in srcs]
        if op in N.UNARY:
            x = xs[0]
            if op in (Op.NEG, Op.ABS, Op.FLOOR, Op.CEIL, Op.SQRT, Op.EXP, Op.LOG, Op.TANH,
                      Op.SIN, Op.COS, Op.EXP2, Op.LOG2):
                r = unary(op, x)
            elif op == Op.RSQRT:
                r = f64c(1.0) / unary("sqrt", x)
            elif op == Op.SIGMOID:
                r = f64c(1.0) / (f64c(1.0) + unary("exp", -x))
            else:  # pragma: no cover
                raise NotLowerable(f"operation {op} is not supported by kernel backends")
            return self.finish(sc, sc.blk.let(r, op), fmt)
        if op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV):
            a, b = xs
            r = {Op.ADD: a + b, Op.SUB: a - b, Op.MUL: a * b, Op.DIV: a / b}[op]
            return self.finish(sc, sc.blk.let(r, op), fmt)
        if op in (Op.MIN, Op.MAX):
            a, b = xs
            r = L.np_minimum(a, b) if op == Op.MIN else L.np_maximum(a, b)
            return self.finish(sc, sc.blk.let(r, op), fmt)
        if op == Op.MOD:  # numpy's remainder of the float64 values, then rounded
            narrow = all(s.dtype in ("f32", "bool") for s in srcs)
            return self.finish(sc, np_mod(sc.blk, xs[0], xs[1], 24 if narrow else 53), fmt)
        if op == Op.FMA:
            return self.fma(sc, v, srcs, xs)
        raise NotLowerable(f"operation '{op}' is not supported by the kernel backends yet")

    def fast_f32(self, sc: _Scope, op: str, fmt: Format, srcs: list[KExpr]) -> KExpr | None:
        """The fast contract's f32 operations on f32 operands (FAST_CONTRACT): IEEE f32
        division and sqrt (correctly rounded, as the reference), the target's single-precision
        math library, comparisons and min/max without a float64 detour. None: not one of them
        (the exact rule applies)."""
        blk = sc.blk
        if op in N.COMPARE:
            a, b = srcs
            r = getattr(a, {Op.LT: "lt", Op.LE: "le", Op.GT: "gt", Op.GE: "ge", Op.EQ: "eq",
                            Op.NE: "ne"}[op])(b)
            return self.to_carrier(sc, blk.let(r, "cmp"), fmt, fmt)
        if fmt.name != "f32":
            return None
        one = const(1.0, "f32")
        if op == Op.DIV and _powers_of_two(self.cur.srcs[1]):
            # x / 2^k == x * 2^-k bit for bit (2^-k is exact for every e8m0 value, and both
            # are one rounding of the same real number): one reciprocal per block, not a
            # division per element (MXFP4)
            return blk.let(srcs[0] * blk.let(one / srcs[1], "rcp"), "div")
        if op == Op.DIV:
            return blk.let(srcs[0] / srcs[1], "div")
        if op in (Op.MIN, Op.MAX):
            a, b = srcs
            return blk.let(L.np_minimum(a, b) if op == Op.MIN else L.np_maximum(a, b), op)
        if op in FAST_F32_UNARY:
            return blk.let(unary(op, srcs[0]), op)
        if op == Op.RSQRT:
            return blk.let(one / blk.let(unary("sqrt", srcs[0]), "sq"), "rsqrt")
        if op == Op.SIGMOID:
            e = blk.let(unary("exp", -srcs[0]), "e")
            return blk.let(one / blk.let(one + e, "d"), "sigmoid")
        return None

    def pow2_scaling(self, sc: _Scope, v: Value, srcs: list[KExpr]) -> KExpr | None:
        """x * 2^k of f32-carried operands (MXFP4's ``round(a, e8m0) * 0.25``), when the f32
        product is exact for every value of x's format (no bits lost below f32's subnormals,
        no overflow): that product, rounded once into the result format by f32 bit
        manipulation. The same bits as the float64 path, in both contracts."""
        fmt = v.fmt
        for k in (0, 1):
            c, x = v.srcs[k], v.srcs[1 - k]
            if c.op != Op.CONST or len(c.attrs[0]) != 1 or x.fmt.kind != "float":
                continue
            cv = float(c.attrs[0][0])
            m, _ = math.frexp(abs(cv)) if cv and math.isfinite(cv) else (0.0, 0)
            if m != 0.5:
                continue
            lo = x.fmt.min_subnormal * abs(cv)
            hi = x.fmt.max_finite * abs(cv)
            f32 = get_format("f32")
            if lo < 2.0 ** (f32.emin - f32.precision + x.fmt.precision) or hi >= f32.max_finite:
                continue
            p = sc.blk.let(srcs[0] * srcs[1], "v")
            if fmt.name == "f32":
                return p
            if L.carrier(fmt) == "f32":
                return round_f32_to(sc.blk, p, fmt, "rne", False)
        return None

    def fma(self, sc, v, srcs, xs) -> KExpr:
        """a*b + c rounded once to the result format (the reference's rule).

        Operands of at most 24 significand bits (f32 carriers) have an exact float64 product:
        one TwoSum then gives the sum rounded to odd, and the rounding to the format (at most 51
        bits) is then a single rounding of the exact value; a float64 result is the sum itself.
        Wider operands take the emulated float64 fma of ``kernels/fma.py``.
        """
        a, b, c = xs
        blk = sc.blk
        if any(s.dtype == "f64" for s in srcs):
            return self.finish(sc, fma_f64(blk, a, b, c, odd=v.fmt.name != "f64"), v.fmt)
        p = blk.let(a * b, "p")  # exact: operands have at most 24 significand bits
        if v.fmt.name == "f64":
            return blk.let(p + c, "fma")
        s, err = two_sum(blk, p, c)
        return self.finish(sc, round_odd(blk, s, err), v.fmt)

    def key(self, stream: int) -> tuple[KExpr, KExpr]:
        path = stream_path(self.pb.paths, stream)
        name = "key" + "_".join(str(k) for k in path)
        self.pb.streams[name] = path
        return var(f"{name}_lo", "u64"), var(f"{name}_hi", "u64")

    def bcast(self, idx, shape, src_shape) -> tuple[KExpr, ...]:
        r = len(src_shape)
        tail = idx[len(idx) - r:] if r else ()
        one = Dim.const(1)
        return tuple(i64(0) if (ds == one and dv != one) else c
                     for c, ds, dv in zip(tail, src_shape, shape[len(shape) - r:]))

    def movement(self, sc: _Scope, v: Value, idx) -> KExpr:
        op = v.op
        src = v.srcs[0]
        if op == Op.RESHAPE:
            return self.emit(sc, src, self.reshape_index(sc, idx, tuple(v.shape),
                                                         tuple(src.shape)))
        if op == Op.TRANSPOSE:
            perm = v.attrs[0]
            sidx = [None] * len(perm)
            for out_axis, in_axis in enumerate(perm):
                sidx[in_axis] = idx[out_axis]
            return self.emit(sc, src, tuple(sidx))
        if op == Op.BROADCAST:
            return self.emit(sc, src, self.bcast(idx, v.shape, src.shape))
        if op == Op.SLICE:
            it = iter(idx)
            sidx = []
            for item in v.attrs[0]:
                if item[0] == "new":
                    next(it)
                elif item[0] == "i":
                    sidx.append(self.pb.dim(item[1]))
                else:
                    start, step = item[1], item[3]
                    c = next(it)
                    e = c * i64(step) if step != 1 else c
                    if start != Dim.const(0):
                        e = e + self.pb.dim(start)
                    sidx.append(sc.blk.let(e, "sl") if e is not c else c)
            sidx.extend(it)
            return self.emit(sc, src, tuple(sidx))
        if op == Op.CONCAT:
            axis = v.attrs[0] % len(v.shape)
            result = None
            offset = Dim.const(0)
            parts = []
            for s in v.srcs:
                parts.append((s, offset))
                offset = offset + s.shape[axis]
            c = idx[axis]
            for s, off in reversed(parts):
                n = s.shape[axis]
                local = c - self.pb.dim(off) if off != Dim.const(0) else c
                # clamp so that the untaken arms still load in range
                local = sc.blk.let(select(local.lt(i64(0)), i64(0),
                                          select(local.ge(self.pb.dim(n)),
                                                 self.pb.dim(n) - i64(1), local)), "cc")
                sidx = tuple(local if a == axis else x for a, x in enumerate(idx))
                val = self.emit(sc, s, sidx)
                want = L.carrier(v.fmt)
                val = self.to_carrier(sc, val, v.fmt, v.fmt) if val.dtype != want else val
                if result is None:
                    result = val
                else:
                    hi = self.pb.dim(off + n)
                    result = sc.blk.let(select(c.lt(hi), val, result), "cat")
            return result
        raise NotLowerable(f"movement {op}")  # pragma: no cover

    def reshape_index(self, sc: _Scope, idx, shape, src_shape) -> tuple[KExpr, ...]:
        # matching leading and trailing dimensions map straight through
        i = 0
        while i < min(len(shape), len(src_shape)) and shape[i] == src_shape[i]:
            i += 1
        j = 0
        while (j < min(len(shape), len(src_shape)) - i
               and shape[len(shape) - 1 - j] == src_shape[len(src_shape) - 1 - j]):
            j += 1
        mid = idx[i:len(idx) - j]
        mid_shape = shape[i:len(shape) - j]
        src_mid = src_shape[i:len(src_shape) - j]
        f = self.flat(sc, mid, mid_shape) if mid_shape else i64(0)
        smid = self.decompose(sc, f, src_mid) if src_mid else ()
        return tuple(idx[:i]) + tuple(smid) + tuple(idx[len(idx) - j:])

    # --- heavy operations --------------------------------------------------------------
    def reduce_at(self, sc: _Scope, v: Value, kept) -> KExpr:
        key = ("reduce", v, tuple(kept))
        hit = sc.get(key)
        if hit is not None:
            return hit
        axes, keep, order = v.attrs
        src = v.srcs[0]
        rdims = [src.shape[a] for a in sorted(axes)]
        ext = self.extent(rdims)
        rv = self.fresh_loop("r")
        body = sc.child()
        rcoords = self.decompose(body, var(rv, I64), rdims)
        it_k, it_r = iter(kept), iter(rcoords)
        sidx = tuple(next(it_r) if a in axes else next(it_k) for a in range(len(src.shape)))
        x = self.emit(body, src, sidx)
        fmt = v.fmt
        name = sc.blk.fresh("red")
        if v.op in (Op.RMAX, Op.RMIN):
            dt = L.carrier(fmt)
            x = x if x.dtype == dt else x.cast(dt)
            a, b = acc_vars(dt)
            comb = L.np_maximum(a, b) if v.op == Op.RMAX else L.np_minimum(a, b)
            red = Reduce(name, rv, ext, tuple(body.blk.stmts), x, comb,
                         const(float("nan"), dt), "any", "max" if v.op == Op.RMAX else "min")
            sc.blk.stmts.append(red)
            out = var(name, dt)
        else:
            out = self.sum_at(sc, body, rv, ext, x, fmt, src.fmt, order, name)
            if v.op == Op.MEAN and self.pb.fast and out.dtype == "f32" and fmt.name == "f32":
                # f32 division by the count in f32 (rounded above 2^24: the analysis' mean
                # rule counts that rounding, passes/forward.py)
                out = sc.blk.let(out / ext.cast("f32"), "mean")
            elif v.op == Op.MEAN:
                out = self.finish(sc, sc.blk.let(self.as_f64(out) / ext.cast("f64"), "mean"), fmt)
        sc.memo[key] = out
        return out

    def sum_at(self, sc: _Scope, body: _Scope, rv: str, ext: KExpr, x: KExpr, fmt: Format,
               src_fmt: Format, order: str, name: str) -> KExpr:
        """The reference's sum of the elements ``x`` accumulated in ``fmt``, in ``order``.

        Every partial sum is the float64 sum rounded to ``fmt``. With a float64 accumulator, or
        float32 over elements that float32 holds, that is the IEEE addition of the accumulator's
        dtype. Otherwise the reduction runs on float64 with a rounding combine, and the elements
        that the reference rounds on their own are rounded in the body: the first (``seq``,
        ``kahan``) or, in the pairwise tree, the last of an odd count above one (the reference
        carries it by adding -0.0, i.e. rounds it; every other element only enters pair sums);
        the pairwise root is rounded once more, as the reference does (not idempotent for a
        negative e4m3 overflow, -NaN, which becomes NaN).
        """
        native = fmt.name == "f64" or (fmt.name == "f32" and x.dtype in ("f32", "bool"))
        dt = fmt.name if native else "f64"
        xe = select(x, const(1.0, dt), const(0.0, dt)) if x.dtype == "bool" else x.cast(dt)
        if self.pb.fast and order == "any":
            # the fast contract: any summation order (the analysis bounds every order), every
            # partial sum rounded to fmt, and the root once more (a single element rounds)
            a, b = acc_vars(dt)
            combine = a + b if native else L.round_expr(a + b, fmt)
            sc.blk.stmts.append(Reduce(name, rv, ext, tuple(body.blk.stmts), xe, combine,
                                       const(0.0, dt), "any", "sum"))
            out = var(name, dt)
            if native:
                return out
            return self.to_carrier(sc, L.round_to(sc.blk, out, fmt), fmt, fmt)
        if dt == "f32" and src_fmt.name != "f32":
            xe = L.canon_nan(xe)  # an e4m3 NaN may be negative; its f32 sum is not
        i = var(rv, I64)
        canon = L.canon_nan if dt == "f32" else (lambda e: e)
        if native:
            def add(blk: L.Block, a: KExpr, b: KExpr) -> KExpr:
                return blk.let(canon(a + b), "ks")

            def sub(blk: L.Block, a: KExpr, b: KExpr) -> KExpr:
                return blk.let(canon(a - b), "kd")
        else:
            def add(blk: L.Block, a: KExpr, b: KExpr) -> KExpr:
                return L.round_to(blk, blk.let(a + b, "ks"), fmt)

            def sub(blk: L.Block, a: KExpr, b: KExpr) -> KExpr:
                return L.round_to(blk, blk.let(a - b, "kd"), fmt)
        if order == "kahan":
            return self.to_carrier(sc, self.kahan(sc, body, rv, ext, xe, dt, name, add, sub,
                                                  fmt), fmt, fmt)
        if native:
            value = xe
            a, b = acc_vars(dt)
            combine = canon(a + b)
        else:
            alone = i.eq(i64(0)) if order == "seq" else \
                i.eq(ext - i64(1)) & (ext % i64(2)).eq(i64(1)) & ext.gt(i64(1))
            rounded = L.round_to(body.blk, xe, fmt)
            value = body.blk.let(select(alone, rounded, xe), "el")
            a, b = acc_vars(dt)
            combine = L.round_expr(a + b, fmt)
        red = Reduce(name, rv, ext, tuple(body.blk.stmts), value, combine, const(0.0, dt),
                     "seq" if order == "seq" else "pairwise", "sum")
        sc.blk.stmts.append(red)
        out = var(name, dt)
        if native:
            return out
        if order != "seq":  # the reference rounds the root once more (e4m3: -NaN -> NaN)
            out = L.round_to(sc.blk, out, fmt)  # and a single element only there
        return self.to_carrier(sc, sc.blk.let(out, "sum"), fmt, fmt)

    def kahan(self, sc, body, rv, ext, xe, dt, name, add, sub, fmt) -> KExpr:
        """Kahan's compensated sum, left to right, as the reference does it (serial loop)."""
        s, c = f"{name}_s", f"{name}_c"
        sv, cv = var(s, dt), var(c, dt)
        first = var(rv, I64).eq(i64(0))
        blk = body.blk
        x0 = L.round_to(blk, xe, fmt) if dt != fmt.name else xe
        y = sub(blk, xe, cv)
        t = add(blk, sv, y)
        c_next = sub(blk, sub(blk, t, sv), y)
        stmts = list(blk.stmts)
        stmts += [Assign(c, select(first, const(0.0, dt), c_next)),
                  Assign(s, select(first, x0, t))]
        sc.blk.stmts += [Decl(s, const(0.0, dt)), Decl(c, const(0.0, dt)),
                         Loop(rv, ext, tuple(stmts), "serial")]
        return sv

    def matmul_at(self, sc: _Scope, v: Value, idx) -> KExpr:
        a, b = v.srcs
        acc = get_format(v.attrs[0])
        # products and partial sums rounded to acc; f32/f64 accumulate in their own dtype,
        # other formats on float64 with a rounding combine
        dt = acc.name if acc.name in ("f32", "f64") else "f64"
        va, vb = len(a.shape) == 1, len(b.shape) == 1
        K = a.shape[-1]
        out = list(idx)
        j = None if vb else out.pop()
        i = None if va else out.pop()
        batch = out
        rv = self.fresh_loop("r")
        body = sc.child()
        k = var(rv, I64)

        def operand_index(x: Value, rows, cols):
            lead = len(x.shape) - 2
            bidx = self.bcast(tuple(batch), tuple(v.shape[:len(batch)]), tuple(x.shape[:lead])) \
                if lead > 0 else ()
            return tuple(bidx) + (rows, cols)

        ia = (k,) if va else operand_index(a, i, k)
        ib = (k,) if vb else operand_index(b, k, j)
        xa = self.emit(body, a, ia)
        xb = self.emit(body, b, ib)
        fast = self.pb.fast
        if dt == "f32" and xa.dtype == "f32" and xb.dtype == "f32":
            prod_ = body.blk.let(xa * xb if fast else L.canon_nan(xa * xb), "pr")
        elif dt == acc.name:
            prod_ = self.finish(body, body.blk.let(self.as_f64(xa) * self.as_f64(xb), "pr"), acc)
            prod_ = prod_.cast(dt) if prod_.dtype != dt else prod_
        else:
            prod_ = L.round_to(body.blk, body.blk.let(self.as_f64(xa) * self.as_f64(xb), "pr"),
                               acc)
        av, bv = acc_vars(dt)
        combine = L.round_expr(av + bv, acc) if dt != acc.name else \
            L.canon_nan(av + bv) if dt == "f32" and not fast else av + bv
        name = sc.blk.fresh("mm")
        # the fast contract accumulates in any order (the analysis' dot-product rule holds
        # for every order)
        sc.blk.stmts.append(Reduce(name, rv, self.pb.dim(K), tuple(body.blk.stmts), prod_,
                                   combine, const(0.0, dt), "any" if fast else "seq", "sum"))
        return self.finish(sc, var(name, dt).cast("f64"), v.fmt)

    def topk_at(self, sc: _Scope, v: Value, idx) -> KExpr:
        kk, axis = v.attrs
        src = v.srcs[0]
        axis %= len(src.shape)
        n = src.shape[axis]
        xj = self.as_f64(self.emit(sc, src, idx))
        rv = self.fresh_loop("r")
        body = sc.child()
        lv = var(rv, I64)
        lidx = tuple(lv if a == axis else c for a, c in enumerate(idx))
        xl = self.as_f64(self.emit(body, src, lidx))
        before = xl.gt(xj) | (xl.eq(xj) & lv.lt(idx[axis]))
        cnt = body.blk.let(select(before, i64(1), i64(0)), "cnt")
        av, bv = acc_vars(I64)
        name = sc.blk.fresh("rank")
        sc.blk.stmts.append(Reduce(name, rv, self.pb.dim(n), tuple(body.blk.stmts), cnt,
                                   av + bv, i64(0), "any", "sum"))
        m = sc.blk.let(var(name, I64).lt(i64(kk)), "top")
        return self.to_carrier(sc, m, v.fmt, v.fmt)
