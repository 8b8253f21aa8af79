"""The Triton backend: one ``@triton.jit`` function per kernel of a :class:`KernelProgram`.

Why the shapes below: Triton programs are blocks of lanes, so the emitter vectorises what the
kernel IR marks as independent and keeps everything else scalar, which keeps the result bit for
bit equal to the reference semantics.

* Grid: the kernel grid is launched as a 1-D grid; ``tl.program_id(0)`` (as i64) is decomposed
  row-major into the grid variables (the last varies fastest). An empty grid is one instance.
* ``Loop(kind="parallel")`` outside any vectorised loop becomes ``for base in range(0, n, B):
  offs = base + tl.arange(0, B)`` with masked loads and stores; a parallel loop whose body is
  exactly one parallel loop (with an extent independent of the outer variable) is flattened into
  one vectorised loop. Parallel loops inside a vectorised loop, serial loops and their
  ``Decl``/``Assign`` accumulators are scalar ``for`` loops (accumulators are broadcast to the
  lane block inside a vectorised loop). ``B`` is a ``constexpr`` chosen by the host launcher
  from the extent (next power of two, at most 1024).
* ``Reduce`` outside a vectorised loop: ``any`` order is vectorised (each lane folds with the
  combine, a lane-occupancy flag makes the fold identity-free, and the cross-lane step is
  ``tl.reduce`` with a generated ``@triton.jit`` combine function); ``pairwise`` is vectorised
  *exactly*: each chunk of ``C`` (a power of two) elements is reduced level by level
  (``tl.split`` of adjacent pairs), and the perfect subtrees are merged by the binary-counter
  stack of the reference, kept as bit patterns in a 64-slot tensor indexed by subtree height;
  ``seq`` is a scalar loop. Inside a vectorised loop a ``Reduce`` runs per lane in its exact
  order (``pairwise`` with a per-lane 64-slot stack). So every order is bit-exact:
  ``exact_sum_order = True``.
* Floats: no FMA contraction (``enable_fp_fusion=False`` on every launch and compile), no FTZ
  in libdevice (``enable_reflect_ftz=False``), f32 ``/`` and ``sqrt`` are ``tl.math.div_rn`` /
  ``sqrt_rn`` (f64 ``/`` and ``tl.sqrt`` are IEEE already). ``neg``/``abs`` flip/clear the sign
  bit; ``rint`` is ``(|x| + 2**52) - 2**52`` with the sign copied back (exact for RNE);
  ``trunc`` is floor/ceil by sign. Float literals are ``repr`` (round-trips) or, for -0.0,
  inf and NaN, a bitcast of the integer bit pattern. Every literal is a typed ``tl.full``.
* Math ops: f64 ``tl.exp log sin cos exp2 log2`` and libdevice ``tanh`` on a GPU (so a
  GPU may differ from the host libm in the last place); f32 (fast contract) libdevice's
  single-precision functions; under the interpreter they are numpy's (f32: the f64 function
  rounded once).
* No GPU: the backend sets ``TRITON_INTERPRET=1`` (if unset and ``torch.cuda`` sees no device)
  before it imports Triton, so the same source runs on numpy. :func:`compile_ptx` compiles the
  kernels to PTX for an NVIDIA target without a GPU (Triton's own ptxas/LLVM).

Generated sources are written to ``~/.cache/numgrade/triton/<sha256>.py`` and imported from
there, because ``@triton.jit`` reads its function's source file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import math
import os
import re
import sys
import warnings
from typing import Any, Callable

import numpy as np

from ..kernels.ir import (FLOAT_DTYPES, Assign, Decl, KExpr, Kernel, KernelProgram, Let, Loop,
                         Reduce, Stmt, Store, var)
from ..kernels.ir import IDENT_RE as _IDENT
from ..kernels.ir import float_bits
from ..kernels.schedule import (CeilDiv, _lets, batch_grid_points, close_lets, extent_bound,
                                is_extremum, is_plain_sum, rewrite_expr, row_resident_extent,
                                simplify_indices, split_grid_reductions, substitute)
from . import compile_cache
from .base import Launcher
from .cuda_convert import Spec, find_conversions

TL_DTYPES = {"f64": "tl.float64", "f32": "tl.float32", "i64": "tl.int64", "i32": "tl.int32",
             "u64": "tl.uint64", "u32": "tl.uint32", "u16": "tl.uint16", "u8": "tl.uint8",
             "bool": "tl.int1"}
SIG_DTYPES = {"f64": "fp64", "f32": "fp32", "i64": "i64", "i32": "i32", "u64": "u64",
              "u32": "u32", "u16": "u16", "u8": "u8"}
# the signed integer type holding a reduce accumulator's bits in the slot stack
_BITS = {"f64": ("tl.int64", "bitcast"), "i64": ("tl.int64", "same"),
         "u64": ("tl.int64", "bitcast"), "f32": ("tl.int32", "bitcast"),
         "i32": ("tl.int32", "same"), "u32": ("tl.int32", "bitcast"),
         "u16": ("tl.int32", "value"), "u8": ("tl.int32", "value"), "bool": ("tl.int32", "value")}
_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
_BIN = {"add": "+", "sub": "-", "mul": "*", "band": "&", "bor": "|", "bxor": "^", "and": "&",
        "or": "|", "shl": "<<", "shr": ">>", "mod": "%"}
_MATH = {"exp": "tl.exp", "log": "tl.log", "sin": "tl.sin", "cos": "tl.cos", "exp2": "tl.exp2",
         "log2": "tl.log2", "tanh": "_tanh_f64"}
MAX_BLOCK = 1024
SYMBOLIC_CHUNK = 512  # pairwise chunk when the extent is not a constant (must be fixed in source)


_is_plain_sum, _is_extremum = is_plain_sum, is_extremum


# the roundings the fast contract leaves to the GPU's fp8 conversion instructions
# (cvt.rn.satfinite.{e4m3,e5m2}x2.f32, sm_89 and later; PTX ISA "cvt"): RNE on the format's grid
# with its subnormals, saturating to the largest finite value. A non-saturating rounding
# differs only where it overflows to NaN, where the analysis gives no bound.
HW_FP8_SPECS = tuple(Spec(f, "rne", sat) for f in ("e4m3", "e5m2") for sat in (False, True))
# e2m1 RNE (it saturates either way): the header's integer-rounding helpers
E2M1_SPECS = tuple(Spec("e2m1", "rne", sat) for sat in (False, True))


def ident(name: str) -> str:
    """``name`` if it is a plain identifier; refusing instead of splicing anything else."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    return name


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


MAX_BLOCK_FAST = 4096   # fast contract: a row of up to 4096 lanes in one loop iteration


def max_block(program: KernelProgram) -> int:
    """The largest lane block of a program's vectorised loops (by its contract)."""
    return MAX_BLOCK_FAST if getattr(program, "contract", "exact") == "fast" else MAX_BLOCK


def block_for(extent: int, cap: int = MAX_BLOCK) -> int:
    """The lane-block size for a vectorised loop of ``extent`` iterations."""
    return max(2, min(cap, _next_pow2(extent)))


def literal(value: Any, dtype: str) -> str:
    """A typed Triton scalar for a constant, printed exactly from the number."""
    t = TL_DTYPES[dtype]
    if dtype in FLOAT_DTYPES:
        v = float(value)
        if math.isfinite(v) and not (v == 0.0 and math.copysign(1.0, v) < 0):
            return f"tl.full((), {v!r}, {t})"
        it = "tl.int64" if dtype == "f64" else "tl.int32"
        return f"tl.full((), {float_bits(v, dtype, signed=True)}, {it}).to({t}, bitcast=True)"
    if dtype == "bool":
        return f"tl.full((), {bool(value)!r}, tl.int1)"
    return f"tl.full((), {int(value)}, {t})"


def host_expr(e: KExpr, scalars: set[str]) -> str | None:
    """``e`` as a Python expression over ``scalars[...]`` (for the launcher), or None."""
    if e.op == "const":
        return repr(int(e.attrs[0])) if e.dtype not in FLOAT_DTYPES else None
    if e.op == "var":
        return f"int(scalars[{ident(e.attrs[0])!r}])" if e.attrs[0] in scalars else None
    ops = {"add": "+", "sub": "-", "mul": "*", "div": "//", "mod": "%"}
    if e.op in ops and len(e.args) == 2:
        a, b = (host_expr(x, scalars) for x in e.args)
        if a is not None and b is not None:
            return f"({a} {ops[e.op]} {b})"
    return None


class _Scope:
    """Names visible at one nesting level: value names, lane-ness and common subexpressions."""

    def __init__(self, parent: "_Scope | None" = None, mask: str | None = None,
                 block: str | None = None):
        self.parent = parent
        self.mask = mask if mask is not None or parent is None else parent.mask
        self.block = block if block is not None or parent is None else parent.block
        self.names: dict[str, str] = {}  # IR name -> Python name
        self.vector: set[str] = set()  # IR names whose value is a lane block here
        self.memo: dict[KExpr, tuple[str, bool, frozenset[str]]] = {}
        self.mutable: set[str] = set()  # Decl'd names: never memoised

    def chain(self):
        s: _Scope | None = self
        while s is not None:
            yield s
            s = s.parent

    def lookup(self, name: str) -> tuple[str, bool]:
        for s in self.chain():
            if name in s.names:
                return s.names[name], name in s.vector
        raise ValueError(f"unbound name {name!r} in kernel IR")

    def is_mutable(self, name: str) -> bool:
        return any(name in s.mutable for s in self.chain())

    def bind(self, name: str, py: str, vector: bool, mutable: bool = False) -> None:
        if any(name in s.names for s in self.chain()):
            for s in self.chain():  # a rebinding invalidates what was computed from the old value
                s.memo = {k: v for k, v in s.memo.items() if name not in v[2]}
        self.names[name] = py
        (self.vector.add if vector else self.vector.discard)(name)
        if mutable:
            self.mutable.add(name)

    def find(self, e: KExpr):
        for s in self.chain():
            if e in s.memo:
                return s.memo[e]
        return None

    @property
    def in_vector(self) -> bool:
        return self.mask is not None


class _KernelEmitter:
    """Emits one kernel (plus its helper combine functions) as Triton source lines."""

    def __init__(self, program: KernelProgram, kernel: Kernel):
        self.p = program
        self.k = kernel
        self.lines: list[str] = []
        self.helpers: list[str] = []
        self.counter = 0
        self.blocks: list[tuple[str, str | None]] = []  # (constexpr name, host expr or None)
        self.scalar_names = {s.name for s in kernel.scalars}
        self.free_cache: dict[KExpr, frozenset[str]] = {}
        self.flags: list[tuple[str, str]] = []  # (constexpr name, launcher expression)
        # fast contract: Lets that hold an e4m3/e5m2 rounding (value or code) of an f32, to
        # print as the GPU's conversion (cuda_convert finds them by their closed forms)
        self.hw = {n: c for n, c in find_conversions(kernel, HW_FP8_SPECS + E2M1_SPECS).items()
                   if c.x.dtype == "f32"} \
            if getattr(program, "contract", "exact") == "fast" else {}

    # ---- plumbing -----------------------------------------------------------------------
    def fresh(self, stem: str = "t") -> str:
        self.counter += 1
        return f"_{stem}{self.counter}"

    def out(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)

    # ---- expressions --------------------------------------------------------------------
    def is_vec(self, e: KExpr, sc: _Scope) -> bool:
        if e.op == "var":
            return sc.lookup(e.attrs[0])[1]
        hit = sc.find(e)  # emitted subexpressions know (and a DAG is not walked as a tree)
        if hit is not None:
            return hit[1]
        return any(self.is_vec(a, sc) for a in e.args)

    def expr(self, e: KExpr, sc: _Scope, d: int) -> str:
        """The Python name (or literal) holding ``e``, emitting temporaries as needed."""
        if e.op == "var":
            return sc.lookup(ident(e.attrs[0]))[0]
        hit = sc.find(e)
        if hit is not None:
            return hit[0]
        code = self.code(e, sc, d)
        name = self.fresh()
        free = self.free_vars(e)
        self.out(d, f"{name} = {code}")
        if e.op == "const":  # constants live in the kernel prologue scope for reuse
            pass
        if not any(sc.is_mutable(v) for v in free):
            sc.memo[e] = (name, self.is_vec(e, sc), free)
        return name

    def free_vars(self, e: KExpr) -> frozenset[str]:
        """The variables ``e`` reads, cached per node (expressions are DAGs)."""
        hit = self.free_cache.get(e)
        if hit is None:
            if e.op == "var":
                hit = frozenset((e.attrs[0],))
            else:
                hit = frozenset().union(*(self.free_vars(a) for a in e.args))
            self.free_cache[e] = hit
        return hit

    def code(self, e: KExpr, sc: _Scope, d: int) -> str:
        op, dt = e.op, e.dtype
        if op == "const":
            return literal(e.attrs[0], dt)
        a = [self.expr(x, sc, d) for x in e.args] if op != "load" else []
        if op == "load":
            buf = ident(e.attrs[0])
            idx = self.expr(e.args[0], sc, d)
            masked = self.is_vec(e.args[0], sc) and sc.mask is not None
            return f"tl.load(p_{buf} + {idx}" + (f", mask={sc.mask})" if masked else ")")
        if op in ("shl", "shr") and e.args[1].dtype != e.args[0].dtype:
            a[1] = f"{a[1]}.to({TL_DTYPES[e.args[0].dtype]})"
        if op in _BIN:
            return f"{a[0]} {_BIN[op]} {a[1]}"
        if op in _CMP:
            return f"{a[0]} {_CMP[op]} {a[1]}"
        if op == "div":
            if dt == "f32":
                return f"tl.math.div_rn({a[0]}, {a[1]})"
            return f"{a[0]} / {a[1]}" if dt == "f64" else f"{a[0]} // {a[1]}"
        if op == "select":
            return f"tl.where({a[0]}, {a[1]}, {a[2]})"
        if op == "not":
            return f"{a[0]} == 0"
        if op in ("neg", "abs"):
            if dt in FLOAT_DTYPES:
                it, sign = ("tl.uint64", 1 << 63) if dt == "f64" else ("tl.uint32", 1 << 31)
                bits = f"{a[0]}.to({it}, bitcast=True)"
                mask = literal(sign if op == "neg" else sign - 1, it[3:].replace("uint", "u"))
                how = "^" if op == "neg" else "&"
                return f"({bits} {how} {mask}).to({TL_DTYPES[dt]}, bitcast=True)"
            return f"-{a[0]}" if op == "neg" else f"tl.abs({a[0]})"
        if op in ("floor", "ceil"):
            return f"tl.{op}({a[0]})"
        if op == "trunc":
            return f"tl.where({a[0]} < 0, tl.ceil({a[0]}), tl.floor({a[0]}))"
        if op == "rint":
            return self.rint(a[0], dt, d)
        if op == "sqrt":
            return f"tl.math.sqrt_rn({a[0]})" if dt == "f32" else f"tl.sqrt({a[0]})"
        if op in _MATH:
            if dt == "f32":   # the fast contract: the target's single-precision library
                return f"_{op}_f32({a[0]})"
            if dt != "f64":
                raise ValueError(f"{op} is only defined on f64 and f32, got {dt}")
            return f"{_MATH[op]}({a[0]})"
        if op == "bitcast":
            return f"{a[0]}.to({TL_DTYPES[dt]}, bitcast=True)"
        if op == "cast":
            return self.cast(a[0], e.args[0].dtype, dt)
        raise ValueError(f"unsupported kernel op {op!r}")

    def rint(self, x: str, dt: str, d: int) -> str:
        it, big = ("tl.uint64", 2.0 ** 52) if dt == "f64" else ("tl.uint32", 2.0 ** 23)
        sign = (1 << 63) if dt == "f64" else (1 << 31)
        ut = it[3:].replace("uint", "u")
        t = self.fresh("r")
        self.out(d, f"{t} = tl.abs({x})")
        self.out(d, f"{t} = tl.where({t} < {literal(big, dt)}, ({t} + {literal(big, dt)}) - "
                    f"{literal(big, dt)}, {t})")
        return (f"({t}.to({it}, bitcast=True) | ({x}.to({it}, bitcast=True) & "
                f"{literal(sign, ut)})).to({TL_DTYPES[dt]}, bitcast=True)")

    @staticmethod
    def cast(x: str, src: str, dst: str) -> str:
        if src == dst:
            return x
        if src == "bool":
            return f"tl.where({x}, {literal(1, dst)}, {literal(0, dst)})"
        if dst == "bool":
            return f"{x} != {literal(0, src)}"
        return f"{x}.to({TL_DTYPES[dst]})"

    def broadcast(self, value: str, sc: _Scope) -> str:
        """A lane block holding ``value`` in every lane (exact, unlike adding zeros)."""
        return f"tl.where({sc.mask}, {value}, {value})"

    # ---- statements ---------------------------------------------------------------------
    def stmts(self, body: tuple[Stmt, ...], sc: _Scope, d: int) -> None:
        for s in body:
            self.stmt(s, sc, d)

    def stmt(self, s: Stmt, sc: _Scope, d: int) -> None:
        if isinstance(s, Let):
            v = self.expr(s.value, sc, d)
            name = "v_" + ident(s.name)
            conv = self.hw.get(s.name)
            if conv is not None and conv.spec.fmt == "e2m1":
                # e2m1 by integer rounding (the header's _e2m1_code/_e2m1_value),
                # bit for bit the rounding's expansion, in a handful of instructions
                x = self.expr(conv.x, sc, d)
                hw = f"_e2m1_value({x})" if conv.kind == "value" else \
                    f"_e2m1_code({x}).to({TL_DTYPES[s.value.dtype]})"
                self.out(d, f"{name} = {hw}")
            elif conv is not None:
                # the GPU's conversion (the software expansion above is dead code there)
                x = self.expr(conv.x, sc, d)
                t = "tl.float8e4nv" if conv.spec.fmt == "e4m3" else "tl.float8e5"
                hw = f"{x}.to({t}).to(tl.float32)" if conv.kind == "value" else \
                    f"{x}.to({t}).to({TL_DTYPES[s.value.dtype]}, bitcast=True)"
                self.out(d, f"{name} = {hw} if _HW_FP8 else {v}")
            else:
                self.out(d, f"{name} = {v}")
            sc.bind(s.name, name, self.is_vec(s.value, sc))
        elif isinstance(s, Decl):
            v = self.expr(s.init, sc, d)
            name = "v_" + ident(s.name)
            self.out(d, f"{name} = {self.broadcast(v, sc) if sc.in_vector else v}")
            sc.bind(s.name, name, sc.in_vector, mutable=True)
        elif isinstance(s, Assign):
            py, vec = sc.lookup(ident(s.name))
            v = self.expr(s.value, sc, d)
            if vec and not self.is_vec(s.value, sc):
                v = self.broadcast(v, sc)
            self.out(d, f"{py} = {v}")
            for x in sc.chain():
                x.memo = {k: m for k, m in x.memo.items() if s.name not in m[2]}
        elif isinstance(s, Store):
            idx = self.expr(s.index, sc, d)
            val = self.expr(s.value, sc, d)
            buf = ident(s.buffer)
            if sc.in_vector and (self.is_vec(s.index, sc) or self.is_vec(s.value, sc)):
                if not self.is_vec(s.index, sc):
                    idx = self.broadcast(idx, sc)
                self.out(d, f"tl.store(p_{buf} + {idx}, {val}, mask={sc.mask})")
            else:
                self.out(d, f"tl.store(p_{buf} + {idx}, {val})")
        elif isinstance(s, Loop):
            if s.kind == "parallel" and not sc.in_vector:
                self.vector_loop(s, sc, d)
            else:
                self.scalar_loop(s, sc, d)
        elif isinstance(s, Reduce):
            self.reduce(s, sc, d)
        else:
            raise TypeError(f"unknown statement {s!r}")

    def scalar_loop(self, s: Loop, sc: _Scope, d: int) -> None:
        ext = self.expr(s.extent, sc, d)
        name = "v_" + ident(s.var)
        it = self.fresh("it")
        self.out(d, f"for {it} in range(0, {ext}):  # {s.kind} loop, one iteration at a time")
        self.out(d + 1, f"{name} = tl.cast({it}, tl.int64)")
        inner = _Scope(sc)
        inner.bind(s.var, name, False)
        self.stmts(s.body, inner, d + 1)
        self.out(d + 1, "pass")

    def new_block(self, extent: KExpr) -> str:
        name = f"B{len(self.blocks)}"
        bound = extent_bound(extent)    # constants, and the schedule's min(n, chunk)
        if bound is not None:
            self.blocks.append((name, repr(block_for(bound, max_block(self.p)))))
        else:
            self.blocks.append((name, host_expr(extent, self.scalar_names)))
        return name

    def vector_loop(self, s: Loop, sc: _Scope, d: int) -> None:
        outer, body = s, s.body
        flat = (len(body) == 1 and isinstance(body[0], Loop) and body[0].kind == "parallel"
                and s.var not in self.free_vars(body[0].extent))
        if flat:
            inner_loop = body[0]
            e1 = self.expr(outer.extent, sc, d)
            e2 = self.expr(inner_loop.extent, sc, d)
            ext = self.fresh("n")
            self.out(d, f"{ext} = {e1} * {e2}  # flattened nested parallel loops")
            blk = self.new_block(KExpr("mul", (outer.extent, inner_loop.extent), (), "i64"))
        else:
            ext = self.expr(s.extent, sc, d)
            blk = self.new_block(s.extent)
        base, offs, mask = self.fresh("base"), self.fresh("offs"), self.fresh("mask")
        self.out(d, f"for {base} in range(0, {ext}, {blk}):  # parallel loop over lanes")
        self.out(d + 1, f"{offs} = {base} + tl.arange(0, {blk}).to(tl.int64)")
        self.out(d + 1, f"{mask} = {offs} < {ext}")
        inner = _Scope(sc, mask=mask, block=blk)
        if flat:
            vi, vj = "v_" + ident(outer.var), "v_" + ident(inner_loop.var)
            self.out(d + 1, f"{vi} = {offs} // {e2}")
            self.out(d + 1, f"{vj} = {offs} % {e2}")
            inner.bind(outer.var, vi, True)
            inner.bind(inner_loop.var, vj, True)
            body = inner_loop.body
        else:
            vname = "v_" + ident(s.var)
            self.out(d + 1, f"{vname} = {offs}")
            inner.bind(s.var, vname, True)
        self.stmts(body, inner, d + 1)

    # ---- reductions ---------------------------------------------------------------------
    def combine(self, r: Reduce, a: str, b: str, sc: _Scope, d: int) -> str:
        """Emit ``combine(acc_a=a, acc_b=b)`` inline; returns the result name."""
        c = _Scope(sc)
        c.bind("acc_a", a, self.name_is_vec(a, sc))
        c.bind("acc_b", b, self.name_is_vec(b, sc))
        return self.expr(r.combine, c, d)

    def leaf(self, r: Reduce, v: str, sc: _Scope, d: int) -> str:
        if r.leaf is None:
            return v
        c = _Scope(sc)
        c.bind("acc_b", v, sc.in_vector)
        return self.expr(r.leaf, c, d)

    def name_is_vec(self, py: str, sc: _Scope) -> bool:
        return sc.in_vector  # accumulators inside a lane context are lane blocks

    def to_bits(self, x: str, dt: str) -> str:
        t, how = _BITS[dt]
        if how == "same":
            return x
        return f"{x}.to({t}, bitcast=True)" if how == "bitcast" else f"{x}.to({t})"

    def from_bits(self, x: str, dt: str) -> str:
        t, how = _BITS[dt]
        if how == "same":
            return x
        if how == "bitcast":
            return f"{x}.to({TL_DTYPES[dt]}, bitcast=True)"
        return f"{x} != 0" if dt == "bool" else f"{x}.to({TL_DTYPES[dt]})"

    def reduce(self, r: Reduce, sc: _Scope, d: int) -> None:
        name = "v_" + ident(r.name)
        ident(r.var)
        self.out(d, f"# reduce {r.kind} ({r.order}) over {r.var} -> {r.name}")
        exact_combine = r.order == "any"
        fast = getattr(self.p, "contract", "exact") == "fast"
        if not sc.in_vector and _is_plain_sum(r):
            self.reduce_sum_lanes(r, sc, d)
        elif not sc.in_vector and fast and r.kind in ("max", "min") and r.order == "any" and \
                r.dtype in FLOAT_DTYPES:
            self.reduce_extremum_lanes(r, sc, d)
        elif not sc.in_vector and exact_combine and \
                not (self.free_vars(r.combine) - {"acc_a", "acc_b"}):
            self.reduce_lanes(r, sc, d)
        elif not sc.in_vector and r.order == "pairwise":
            self.reduce_pairwise_chunks(r, sc, d)
        elif r.order == "pairwise":
            self.reduce_pairwise_scalar(r, sc, d)
        else:
            self.reduce_seq(r, sc, d)
        sc.bind(r.name, name, sc.in_vector)

    def reduce_seq(self, r: Reduce, sc: _Scope, d: int) -> None:
        name = "v_" + r.name
        init = self.expr(r.init, sc, d)
        ext = self.expr(r.extent, sc, d)
        self.out(d, f"{name} = {self.broadcast(init, sc) if sc.in_vector else init}")
        kv = "v_" + r.var
        it = self.fresh("it")
        self.out(d, f"for {it} in range(0, {ext}):  # left to right (exact order)")
        self.out(d + 1, f"{kv} = tl.cast({it}, tl.int64)")
        inner = _Scope(sc)
        inner.bind(r.var, kv, False)
        inner.bind(r.name, name, sc.in_vector, mutable=True)
        self.stmts(r.body, inner, d + 1)
        v = self.leaf(r, self.value_in(r, inner, d + 1), inner, d + 1)
        c = self.combine(r, name, v, inner, d + 1)
        self.out(d + 1, f"{name} = tl.where({kv} == 0, {v}, {c})")

    def value_in(self, r: Reduce, sc: _Scope, d: int) -> str:
        v = self.expr(r.value, sc, d)
        if sc.in_vector and not self.is_vec(r.value, sc):
            v = self.broadcast(v, sc)
        return v

    def reduce_lanes(self, r: Reduce, sc: _Scope, d: int) -> None:
        """Order-free reduction: lanes fold, then ``tl.reduce`` with an occupancy flag."""
        name = "v_" + r.name
        fn = self.combine_fn(r)
        init = self.expr(r.init, sc, d)
        ext = self.expr(r.extent, sc, d)
        blk = self.new_block(r.extent)
        acc, has = self.fresh("acc"), self.fresh("has")
        self.out(d, f"{acc} = tl.zeros([{blk}], {TL_DTYPES[r.dtype]})")
        self.out(d, f"{has} = tl.zeros([{blk}], tl.int1)")
        inner, mask, v = self.lane_loop(r, sc, d, ext, blk)
        c = self.combine(r, acc, v, inner, d + 1)
        self.out(d + 1, f"{acc} = tl.where({mask}, tl.where({has}, {c}, {v}), {acc})")
        self.out(d + 1, f"{has} = {has} | {mask}")
        val, flag = self.fresh("red"), self.fresh("any")
        self.out(d, f"{val}, {flag} = tl.reduce(({acc}, {has}), 0, {fn})")
        self.out(d, f"{name} = tl.where({flag}, {val}, {init})")

    def lane_loop(self, r: Reduce, sc: _Scope, d: int, ext: str, blk: str):
        """Opens ``for base in range(0, ext, blk)`` over a Reduce's elements as lanes and
        emits its body: (the lanes' scope, their mask, the element value)."""
        base, offs, mask = self.fresh("base"), self.fresh("offs"), self.fresh("mask")
        self.out(d, f"for {base} in range(0, {ext}, {blk}):")
        self.out(d + 1, f"{offs} = {base} + tl.arange(0, {blk}).to(tl.int64)")
        self.out(d + 1, f"{mask} = {offs} < {ext}")
        inner = _Scope(sc, mask=mask, block=blk)
        inner.bind(r.var, "v_" + r.var, True)
        self.out(d + 1, f"v_{r.var} = {offs}")
        self.stmts(r.body, inner, d + 1)
        return inner, mask, self.leaf(r, self.value_in(r, inner, d + 1), inner, d + 1)

    def reduce_sum_lanes(self, r: Reduce, sc: _Scope, d: int) -> None:
        """A sum in any order (fast contract): each lane adds its elements (masked lanes add
        an exact 0), then one reduction adds the lanes (``tl.reduce`` with ``_add``, which is
        ``tl.sum``; the standard library's own jit functions fail under the interpreter when
        triton was imported before TRITON_INTERPRET was set), as a hand-written kernel does."""
        self.fold_lanes(r, sc, d, "0", "{acc} + tl.where({mask}, {v}, 0)", "_add")

    def reduce_extremum_lanes(self, r: Reduce, sc: _Scope, d: int) -> None:
        """max / min under the fast contract: ``tl.maximum`` per lane, then across lanes. A NaN
        need not propagate (an input that makes a NaN has no finite bound anyway)."""
        big = "float('-inf')" if r.kind == "max" else "float('inf')"
        op, red = ("tl.maximum", "_fmax") if r.kind == "max" else ("tl.minimum", "_fmin")
        self.fold_lanes(r, sc, d, big, f"{op}({{acc}}, tl.where({{mask}}, {{v}}, {big}))", red)

    def fold_lanes(self, r: Reduce, sc: _Scope, d: int, identity: str, fold: str,
                   combine: str) -> None:
        """The fast contract's reduction: lanes start at ``identity``, fold their elements
        with ``fold`` (a format of acc, mask, v), then ``tl.reduce`` with ``combine``."""
        name = "v_" + r.name
        ext = self.expr(r.extent, sc, d)
        blk = self.new_block(r.extent)
        acc = self.fresh("acc")
        self.out(d, f"{acc} = tl.full([{blk}], {identity}, {TL_DTYPES[r.dtype]})")
        inner, mask, v = self.lane_loop(r, sc, d, ext, blk)
        self.out(d + 1, f"{acc} = " + fold.format(acc=acc, mask=mask, v=v))
        self.out(d, f"{name} = tl.reduce({acc}, 0, {combine})")

    # ---- row-resident kernels (fast contract) ----------------------------------------------
    def row_extent(self, k: Kernel) -> KExpr | None:
        """The row a fast kernel keeps resident in one lane block (schedule's
        row_resident_extent), when the launcher can compute its length; None otherwise."""
        if getattr(self.p, "contract", "exact") != "fast":
            return None
        ext = row_resident_extent(k.body)
        if ext is None or host_expr(ext, self.scalar_names) is None:
            return None
        return ext

    def stacked_rows(self, k: Kernel) -> tuple[Loop, KExpr] | None:
        """A fast kernel that batch_grid_points made a lane loop over grid points whose body
        (after binding the grid point) keeps a short constant row resident: (loop, row)."""
        if getattr(self.p, "contract", "exact") != "fast" or len(k.body) != 1:
            return None
        loop = k.body[0]
        if not isinstance(loop, Loop) or loop.kind != "parallel" or loop.extent.op != "const" \
                or not loop.body or not isinstance(loop.body[0], Let):
            return None
        ext = row_resident_extent(tuple(loop.body[1:]))
        if ext is None or ext.op != "const":
            return None
        return loop, ext

    def row_kernel(self, k: Kernel, ext: KExpr, sc: _Scope, d: int,
                   stack: Loop | None = None) -> None:
        """``if ROW:`` (the row fits one block of at most MAX_BLOCK_FAST lanes) every reduction
        and loop over the row shares one lane block, so the row is loaded once and stays in
        registers (identical loads are one expression); ``else:`` the loops as usual.

        ``stack``: batch_grid_points' loop over G grid points (short constant rows): the block
        is 2-D, G grid points by the row, and per-point values are [G, 1] columns."""
        he = host_expr(ext, self.scalar_names)
        self.flags.append(("ROW", f"({he}) <= {MAX_BLOCK_FAST}"))
        blk = self.new_block(ext)
        body = k.body if stack is None else tuple(stack.body)
        self.out(d, "if ROW:  # the whole row in one lane block, loaded once")
        if stack is None:
            rs = _Scope(sc)
            n = self.expr(ext, rs, d + 1)
            self.out(d + 1, f"_roffs = tl.arange(0, {blk}).to(tl.int64)")
        else:
            g = self.new_block(stack.extent)
            # the launcher's warp count: 16 of the tile's G x row lanes per thread (a quarter
            # of them as the block it sizes warps by), which amortises the per-row scale
            self.blocks.append((f"B{len(self.blocks)}", repr(
                int(stack.extent.attrs[0]) * (extent_bound(ext) or 1) // 4)))
            self.out(d + 1, f"_glane = tl.arange(0, {g}).to(tl.int64)[:, None]")
            self.out(d + 1, "_gtrue = _glane >= 0")
            rs = _Scope(sc, mask="_gtrue", block=g)
            rs.bind(stack.var, "_glane", True)
            n = self.expr(ext, rs, d + 1)
            self.out(d + 1, f"_roffs = tl.arange(0, {blk}).to(tl.int64)[None, :]")
        self.out(d + 1, f"_rmask = _roffs < {n}")
        vs = _Scope(rs, mask="_rmask", block=blk)
        vs.bind("row_i", "_roffs", True)
        row = var("row_i", "i64")
        axis = "0" if stack is None else "1, keep_dims=True"
        # the Lets inside the row statements, closed over: one expression per computation
        inner = {}
        for s in body:
            if isinstance(s, (Reduce, Loop)):
                # a Let printed as a hardware conversion stays a name: its readers must see
                # the converted value, not the software expansion's
                inner.update({n_: e for n_, e in _lets(s.body, {}).items() if n_ not in self.hw})
        for s in body:
            if isinstance(s, Loop):
                s = dataclasses.replace(s, body=close_lets(s.body, inner))
            elif isinstance(s, Reduce):
                s = dataclasses.replace(s, body=close_lets(s.body, inner),
                                        value=close_lets((Let("_", s.value),), inner)[0].value)
            if isinstance(s, Reduce):
                rbody = substitute(s.body, s.var, row)
                value = rewrite_expr(s.value, lambda e, v=s.var: row if e.op == "var" and
                                     e.attrs[0] == v else None)
                self.stmts(rbody, vs, d + 1)
                v = self.expr(value, vs, d + 1)
                if not self.is_vec(value, vs):
                    v = self.broadcast(v, vs)
                name = "v_" + ident(s.name)
                if s.kind == "sum":
                    self.out(d + 1, f"{name} = tl.reduce(tl.where(_rmask, {v}, 0), {axis}, "
                                    "combine_fn=_add)")
                else:
                    big = "float('-inf')" if s.kind == "max" else "float('inf')"
                    red = "_fmax" if s.kind == "max" else "_fmin"
                    self.out(d + 1, f"{name} = tl.reduce(tl.where(_rmask, {v}, {big}), {axis}, "
                                    f"combine_fn={red})")
                rs.bind(s.name, name, stack is not None)
            elif isinstance(s, Loop):
                self.stmts(substitute(s.body, s.var, row), vs, d + 1)
            else:
                self.stmt(s, rs, d + 1)
        self.out(d + 1, "pass")
        self.out(d, "else:")
        self.stmts(k.body, _Scope(sc), d + 1)

    def combine_fn(self, r: Reduce) -> str:
        """A ``@triton.jit`` (value, flag) combine for ``tl.reduce``."""
        fn = f"_combine_{self.k.name}_{r.name}"
        sub = _KernelEmitter(self.p, self.k)
        sc = _Scope()
        sc.bind("acc_a", "a", False)
        sc.bind("acc_b", "b", False)
        res = sub.expr(r.combine, sc, 1)
        self.helpers += ["@triton.jit", f"def {fn}(a, fa, b, fb):",
                         f"    # the combine of {r.name} ({r.kind}), skipping empty lanes"]
        self.helpers += sub.lines
        self.helpers += [f"    return tl.where(fa & fb, {res}, tl.where(fa, a, b)), fa | fb", "", ""]
        return fn

    def slot_read(self, slots: str, hs: str, h: str, dt: str, lanes: bool) -> str:
        if lanes:
            got = f"tl.reduce(tl.where({hs}[None, :] == {h}, {slots}, 0), 1, _add)"
        else:
            got = f"tl.reduce(tl.where({hs} == {h}, {slots}, 0), 0, _add)"
        return self.from_bits(f"{got}.to({_BITS[dt][0]})", dt)

    def slot_write(self, slots: str, hs: str, h: str, val: str, dt: str, lanes: bool,
                   when: str | None = None) -> str:
        cond = f"({hs}[None, :] == {h})" if lanes else f"({hs} == {h})"
        if when is not None:
            cond = f"({when}) & {cond}"
        bits = self.to_bits(val, dt)
        if lanes:
            bits = f"{bits}[:, None]"
        return f"{slots} = tl.where({cond}, {bits}, {slots})"

    def finish_stack(self, r: Reduce, slots: str, hs: str, ext: str, sc: _Scope, d: int,
                     lanes: bool) -> None:
        """Merge the stacked subtrees from the top (lowest height) down: the final phase."""
        name = "v_" + r.name
        init = self.expr(r.init, sc, d)
        has = self.fresh("has")
        self.out(d, f"{name} = {self.broadcast(init, sc) if lanes else init}")
        self.out(d, f"{has} = {ext} < 0")
        h = self.fresh("h")
        bounded = not self.is_vec(r.extent, sc)
        if bounded:  # only the heights below the extent's bit length can hold a subtree
            self.out(d, f"{h} = tl.full((), 0, tl.int32)")
            self.out(d, f"while ({ext} >> {h}) != 0:  # merge what the stack holds, top first")
        else:
            self.out(d, f"for {h} in range(0, 64):  # merge what the stack holds, top first")
        v = self.fresh("s")
        self.out(d + 1, f"{v} = {self.slot_read(slots, hs, h, r.dtype, lanes)}")
        c = self.combine(r, v, name, _Scope(sc), d + 1)
        take = self.fresh("take")
        self.out(d + 1, f"{take} = (({ext} >> {h}) & 1) != 0")
        self.out(d + 1, f"{name} = tl.where({take}, tl.where({has}, {c}, {v}), {name})")
        self.out(d + 1, f"{has} = {has} | {take}")
        if bounded:
            self.out(d + 1, f"{h} = {h} + 1")

    def push(self, r: Reduce, slots: str, hs: str, carry: str, count: str, h0: int,
             sc: _Scope, d: int, lanes: bool, when: str | None = None) -> None:
        """Binary-counter push of a subtree of height ``h0``; ``count`` elements precede it."""
        h = self.fresh("h")
        self.out(d, f"{h} = tl.full((), {h0}, tl.int32)")
        cond = f"(({count} >> {h}) & 1) != 0"
        if when is not None:
            cond = f"({when}) & ({cond})"
        self.out(d, f"while {cond}:")
        v = self.fresh("s")
        self.out(d + 1, f"{v} = {self.slot_read(slots, hs, h, r.dtype, lanes)}")
        c = self.combine(r, v, carry, _Scope(sc), d + 1)
        self.out(d + 1, f"{carry} = {c}")
        self.out(d + 1, f"{h} = {h} + 1")
        self.out(d, self.slot_write(slots, hs, h, carry, r.dtype, lanes, when))

    def reduce_pairwise_scalar(self, r: Reduce, sc: _Scope, d: int) -> None:
        """Exact pairwise order per lane: the reference's stack, one element at a time."""
        lanes = sc.in_vector
        ext = self.expr(r.extent, sc, d)
        bt = _BITS[r.dtype][0]
        slots, hs = self.fresh("slots"), self.fresh("hs")
        shape = f"[{sc.block}, 64]" if lanes else "[64]"
        self.out(d, f"{slots} = tl.zeros({shape}, {bt})  # the pairwise stack, by height")
        self.out(d, f"{hs} = tl.arange(0, 64)")
        kv = "v_" + r.var
        it = self.fresh("it")
        self.out(d, f"for {it} in range(0, {ext}):  # pairwise (exact order)")
        self.out(d + 1, f"{kv} = tl.cast({it}, tl.int64)")
        inner = _Scope(sc)
        inner.bind(r.var, kv, False)
        self.stmts(r.body, inner, d + 1)
        v = self.leaf(r, self.value_in(r, inner, d + 1), inner, d + 1)
        carry = self.fresh("carry")
        self.out(d + 1, f"{carry} = {v}")
        self.push(r, slots, hs, carry, kv, 0, inner, d + 1, lanes)
        self.finish_stack(r, slots, hs, ext, sc, d, lanes)

    def reduce_pairwise_chunks(self, r: Reduce, sc: _Scope, d: int) -> None:
        """Exact pairwise order, vectorised: perfect subtrees of chunks, then the stack."""
        if r.extent.op == "const":
            chunk = block_for(int(r.extent.attrs[0]))
        else:
            chunk = SYMBOLIC_CHUNK
        levels = chunk.bit_length() - 1
        ext = self.expr(r.extent, sc, d)
        bt = _BITS[r.dtype][0]
        slots, hs = self.fresh("slots"), self.fresh("hs")
        self.out(d, f"{slots} = tl.zeros([64], {bt})  # the pairwise stack, by height")
        self.out(d, f"{hs} = tl.arange(0, 64)")
        base, offs, mask = self.fresh("base"), self.fresh("offs"), self.fresh("mask")
        self.out(d, f"for {base} in range(0, {ext}, {chunk}):  # chunks of {chunk}")
        d1 = d + 1
        self.out(d1, f"{offs} = {base} + tl.arange(0, {chunk}).to(tl.int64)")
        self.out(d1, f"{mask} = {offs} < {ext}")
        inner = _Scope(sc, mask=mask, block=str(chunk))
        inner.bind(r.var, "v_" + r.var, True)
        self.out(d1, f"v_{r.var} = {offs}")
        self.stmts(r.body, inner, d1)
        lv = [self.fresh("lv")]
        self.out(d1, f"{lv[0]} = {self.leaf(r, self.value_in(r, inner, d1), inner, d1)}")
        for i in range(levels):  # level i+1: adjacent pairs of level i
            a, b, nxt = self.fresh("a"), self.fresh("b"), self.fresh("lv")
            self.out(d1, f"{a}, {b} = tl.split(tl.reshape({lv[-1]}, [{chunk >> (i + 1)}, 2]))")
            lane_sc = _Scope(sc)
            lane_sc.mask = mask  # lane blocks (shapes differ, but all are blocks)
            c = self.combine(r, a, b, lane_sc, d1)
            self.out(d1, f"{nxt} = {c}")
            lv.append(nxt)
        full, rem = self.fresh("full"), self.fresh("rem")
        self.out(d1, f"{full} = {base} + {chunk} <= {ext}")
        carry = self.fresh("carry")
        top = self.fresh("i")
        self.out(d1, f"{top} = tl.arange(0, 1)")
        self.out(d1, f"{carry} = {self.slot_read(self.to_bits(lv[-1], r.dtype), top, '0', r.dtype, False)}")
        self.push(r, slots, hs, carry, base, levels, sc, d1, False, when=full)
        self.out(d1, f"{rem} = {ext} - {base}  # a last, partial chunk: its perfect subtrees")
        for b in range(levels - 1, -1, -1):
            node, pos = self.fresh("node"), self.fresh("i")
            self.out(d1, f"{pos} = tl.arange(0, {chunk >> b})")
            rd = self.slot_read(self.to_bits(lv[b], r.dtype), pos, f"(({rem} >> {b + 1}) << 1)",
                                r.dtype, False)
            self.out(d1, f"{node} = {rd}")
            when = f"(~{full}) & ((({rem} >> {b}) & 1) != 0)"
            self.out(d1, self.slot_write(slots, hs, str(b), node, r.dtype, False, when))
        self.finish_stack(r, slots, hs, ext, sc, d, False)

    # ---- the kernel ---------------------------------------------------------------------
    def params(self) -> tuple[list[str], list[tuple[str, str]]]:
        bufs = [ident(b) for b in self.k.buffers]
        scal = [(ident(s.name), s.dtype) for s in self.k.scalars]
        known = {n for n, _ in scal}
        for g in self.k.grid:
            if g.op == "var" and g.attrs[0] not in known:
                scal.append((ident(g.attrs[0]), "i64"))
                known.add(g.attrs[0])
        return bufs, scal

    def emit(self) -> list[str]:
        k = self.k
        ident(k.name)
        bufs, scal = self.params()
        self.scalar_names = {n for n, _ in scal}
        sc = _Scope()
        d = 1
        for n, dt in scal:
            self.out(d, f"v_{n} = tl.cast(v_{n}, {TL_DTYPES[dt]})")
            sc.bind(n, f"v_{n}", False)
        vars_ = [ident(v) for v in k.grid_vars]
        if vars_:
            self.out(d, "pid = tl.cast(tl.program_id(0), tl.int64)  # row-major over the grid")
            for v, g in reversed(list(zip(vars_, k.grid))):
                ext = self.expr(g, sc, d)
                if v == vars_[0]:
                    self.out(d, f"v_{v} = pid")
                else:
                    self.out(d, f"v_{v} = pid % {ext}")
                    self.out(d, f"pid = pid // {ext}")
            for v in vars_:
                sc.bind(v, f"v_{v}", False)
        row = self.row_extent(k)
        stacked = self.stacked_rows(k)
        if stacked is not None:
            self.row_kernel(k, stacked[1], sc, d, stacked[0])
        elif row is not None:
            self.row_kernel(k, row, sc, d)
        else:
            self.stmts(k.body, sc, d)
        self.out(d, "return")
        body = self.lines
        consts = [b for b, _ in self.blocks] + [f for f, _ in self.flags]
        args = [f"p_{b}" for b in bufs] + [f"v_{n}" for n, _ in scal] + [f"{c}: tl.constexpr"
                                                                         for c in consts]
        dns = [f"v_{n}" for n, _ in scal]
        head = []
        if k.note:
            head.append(f"# kernel {k.name}: {k.note}")
        if getattr(self.p, "contract", "exact") == "fast":
            dns = []   # sizes specialised (divisibility by 16: vectorised 128-bit accesses)
        head.append(f"@triton.jit(do_not_specialize={dns!r})" if dns else "@triton.jit")
        head.append(f"def k_{k.name}(" + ", ".join(args) + "):")
        return self.helpers + head + body + ["", ""]


def _signature(program: KernelProgram, em: _KernelEmitter) -> dict[str, str]:
    bufs, scal = em.params()
    sig = {f"p_{b}": "*" + SIG_DTYPES[program.buffers[b].storage] for b in bufs}
    sig.update({f"v_{n}": SIG_DTYPES[dt] if dt != "bool" else "i1" for n, dt in scal})
    sig.update({b: "constexpr" for b, _ in em.blocks})
    sig.update({f: "constexpr" for f, _ in em.flags})
    return sig


HEADER = '''"""Generated by numgrade's Triton backend for program {name}: do not edit."""
import triton
import triton.language as tl

if triton.knobs.runtime.interpret:  # numpy under the interpreter, libdevice on a GPU
    import numpy as _np

    def _tanh_f64(x):
        from triton.runtime.interpreter import TensorHandle
        return tl.tensor(TensorHandle(_np.tanh(x.handle.data), tl.float64), x.type)

    def _f32_math(f):
        """A float32 math function as float64 rounded once (within the libdevice bounds)."""
        def g(x):
            from triton.runtime.interpreter import TensorHandle
            r = f(x.handle.data.astype(_np.float64)).astype(_np.float32)
            return tl.tensor(TensorHandle(r, tl.float32), x.type)
        return g

    _exp_f32, _log_f32, _tanh_f32 = _f32_math(_np.exp), _f32_math(_np.log), _f32_math(_np.tanh)
    _sin_f32, _cos_f32 = _f32_math(_np.sin), _f32_math(_np.cos)
    _exp2_f32, _log2_f32 = _f32_math(_np.exp2), _f32_math(_np.log2)
    _HW_FP8 = tl.constexpr(False)   # the interpreter's float8 casts are not the GPU's: software
else:
    from triton.language.extra.cuda.libdevice import tanh as _tanh_f64
    # the fast contract's f32 math: libdevice's __nv_expf ... (CUDA C Programming Guide,
    # single-precision functions: expf, exp2f, tanhf, sinf, cosf 2 ulp; logf, log2f 1 ulp)
    from triton.language.extra.cuda.libdevice import (cos as _cos_f32, exp as _exp_f32,
                                                      exp2 as _exp2_f32, log as _log_f32,
                                                      log2 as _log2_f32, sin as _sin_f32,
                                                      tanh as _tanh_f32)
    # fast contract: e4m3/e5m2 roundings of f32 by cvt.rn.satfinite (sm_89 and later)
    try:
        import torch as _torch
        _HW_FP8 = tl.constexpr(not _torch.cuda.is_available() or
                               _torch.cuda.get_device_capability() >= (8, 9))
    except Exception:  # noqa: BLE001 - compiling without a GPU (compile_ptx): sm_90a and later
        _HW_FP8 = tl.constexpr(True)


@triton.jit
def _e2m1_code(x):
    """round(x, e2m1) (RNE, saturating; a NaN gives a zero of the other sign) as its 4-bit
    code, by integer rounding: at or above 1 the f32 significand rounded to one bit (ties to
    even) gives ((exponent - 126) << 1 | bit); below 1 the code is RNE(2 |x|) (0, 1 or 2),
    which adding 2^23 rounds in f32 (2 |x| is exact)."""
    b = x.to(tl.uint32, bitcast=True)
    s = (b >> 28) & 8
    a = (b & 0x7FFFFFFF).to(tl.float32, bitcast=True)
    m = tl.minimum(a, 6.0)                        # saturation (inf too)
    mb = m.to(tl.uint32, bitcast=True)
    normal = (mb + 0x1FFFFF + ((mb >> 22) & 1)) >> 22             # code + 252
    small = (m * 2.0 + 8388608.0).to(tl.uint32, bitcast=True) - 0x4AFFFF04   # code + 252
    c = tl.where(m < 1.0, small, normal) - 252
    return tl.where(a != a, s ^ 8, c | s)


@triton.jit
def _e2m1_value(x):
    """round(x, e2m1) as an f32 value (the code's value: 0, .5, 1, 1.5, 2, 3, 4, 6)."""
    k = _e2m1_code(x)
    c = k & 7
    mag = tl.where(c >= 2, (((c >> 1) + 126) << 23) | ((c & 1) << 22),
                   tl.where(c == 1, 0x3F000000, 0))
    return (mag | ((k & 8) << 28)).to(tl.float32, bitcast=True)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _fmax(a, b):
    return tl.maximum(a, b)


@triton.jit
def _fmin(a, b):
    return tl.minimum(a, b)


def _warps(*blocks):
    """Warps for a fast-contract launch (numgrade.backends.triton_backend.warps_for)."""
    return max(1, min(8, max(blocks) // {lanes_per_warp}))


def _blk(n):
    """Lanes for a vectorised loop of n iterations: a power of two in [2, {maxb}]."""
    n = int(n)
    return max(2, min({maxb}, 1 << max(0, (n - 1).bit_length())))


'''

LAUNCH_OPTIONS = "num_warps=4, enable_fp_fusion=False, enable_reflect_ftz=False"
TORCH_DTYPES = {"f32": "float32", "f64": "float64"}
ELEMENTS_PER_THREAD = 4   # fast contract: 4 f32 lanes per thread (one 128-bit access)


def warps_for(*blocks: int) -> int:
    """Warps of a fast-contract program: its largest lane block at ELEMENTS_PER_THREAD lanes
    per thread, 1 to 8 warps (the generated launcher's ``_warps``)."""
    return max(1, min(8, max(blocks) // (32 * ELEMENTS_PER_THREAD)))


def schedule_for_triton(program: KernelProgram) -> KernelProgram:
    """The schedule stage for Triton (idempotent), under the fast contract: whole-tensor
    reductions over the grid in two stages, short per-point kernels (block quantisers) stacked
    many grid points to a program (schedule.lanes_for), flat indices without div/mod."""
    if getattr(program, "contract", "exact") != "fast":
        return program
    program = split_grid_reductions(program)
    program = batch_grid_points(program)
    return simplify_indices(program)


def _emit_program(program: KernelProgram) -> tuple[str, list[_KernelEmitter]]:
    program = schedule_for_triton(program)
    ident(program.name)
    parts = [HEADER.format(name=program.name, maxb=max_block(program),
                           lanes_per_warp=32 * ELEMENTS_PER_THREAD)]
    ems = []
    for k in program.kernels:
        em = _KernelEmitter(program, k)
        parts.append("\n".join(em.emit()))
        ems.append(em)
    launch = [f"def launch_{program.name}(buffers, scalars):",
              '    """Run every kernel in order; buffers are torch tensors by buffer name."""']
    derived = {}
    for name, d in program.dims.items():   # sizes the schedule derived (grid blocks)
        if isinstance(d, CeilDiv) and d.of:
            derived[d] = name
            launch.append(f"    scalars[{ident(name)!r}] = -(-int(scalars[{ident(d.of)!r}]) "
                          f"// {int(d.k)})")
    for name, b in program.buffers.items():  # the schedule's scratch buffers
        if b.role == "scratch":
            (size,) = b.shape
            n = f"int(scalars[{ident(derived[size])!r}])" if size in derived else \
                repr(int(size.int_value()))
            launch.append(f"    buffers[{ident(name)!r}] = __import__('torch').empty({n}, "
                          f"dtype=__import__('torch').{TORCH_DTYPES[b.storage]}, "
                          f"device=next(iter(buffers.values())).device)")
    for k, em in zip(program.kernels, ems):
        bufs, scal = em.params()
        launch.append(f"    # {k.name}" + (f": {k.note}" if k.note else ""))
        ext = []
        for g in k.grid:
            he = host_expr(g, {n for n, _ in scal})
            if he is None:
                raise ValueError(f"grid extent {g!r} of kernel {k.name} is not host-computable")
            ext.append(he)
        total = " * ".join(ext) if ext else "1"
        launch.append(f"    _n = {total}")
        args = [f"buffers[{b!r}]" for b in bufs] + [f"scalars[{n!r}]" for n, _ in scal]
        for b, he in em.blocks:
            args.append(f"{b}=" + (f"_blk({he})" if he is not None else "256"))
        for f, fe in em.flags:
            args.append(f"{f}={fe}")
        launch.append("    if _n > 0:")
        opts = LAUNCH_OPTIONS
        if getattr(program, "contract", "exact") == "fast" and em.blocks:
            # warps sized to the lane blocks: four elements per thread for 128-bit accesses
            bl = ", ".join(a.split("=", 1)[1] for a in args if a.startswith("B"))
            opts = opts.replace("num_warps=4", f"num_warps=_warps({bl})")
        launch.append(f"        k_{k.name}[(_n,)](" + ", ".join(args) + f", {opts})")
    launch.append("")
    return "".join(parts) + "\n".join(launch) + "\n", ems


def _cuda_present() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch is a dependency
        return False


def prepare_environment() -> None:
    """Select Triton's interpreter when no CUDA device exists (before triton is imported)."""
    if "TRITON_INTERPRET" not in os.environ and not _cuda_present():
        os.environ["TRITON_INTERPRET"] = "1"
        if "triton" in sys.modules:  # imported before us: its knob may not re-read the env
            sys.modules["triton"].knobs.runtime.interpret = True


_MODULES: dict[tuple[str, bool], Any] = {}


def _load_module(source: str, interpret: bool) -> Any:
    """Import the generated source from its cache file, as interpreted or compiled kernels."""
    import triton
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    key = (digest, interpret)
    if key in _MODULES:
        return _MODULES[key]
    path = compile_cache.cached_text([source], f"k{digest}.py", source, "triton")
    modname = f"numgrade_triton_{digest}_{'i' if interpret else 'c'}"
    spec = importlib.util.spec_from_file_location(modname, path)
    mod = importlib.util.module_from_spec(spec)
    old = triton.knobs.runtime.interpret
    triton.knobs.runtime.interpret = interpret
    try:
        sys.modules[modname] = mod
        spec.loader.exec_module(mod)
    finally:
        triton.knobs.runtime.interpret = old
    _MODULES[key] = mod
    return mod


class TritonBackend:
    """Kernels as Triton; runs on CUDA, or on Triton's numpy interpreter without a GPU."""

    name = "triton"
    exact_sum_order = True

    def available(self) -> tuple[bool, str]:
        prepare_environment()
        try:
            import torch  # noqa: F401
            import triton  # noqa: F401
        except Exception as exc:  # pragma: no cover - both are dependencies
            return False, f"triton/torch not importable: {exc}"
        return True, "cuda" if _cuda_present() else "interpreter (TRITON_INTERPRET=1)"

    def emit(self, program: KernelProgram) -> str:
        return _emit_program(program)[0]

    def build(self, program: KernelProgram) -> Launcher:
        prepare_environment()
        import triton
        source = self.emit(program)
        interpret = bool(triton.knobs.runtime.interpret)
        mod = _load_module(source, interpret)
        launch = getattr(mod, f"launch_{program.name}")
        cuda = _cuda_present() and not interpret
        outputs = [b for b, d in program.buffers.items() if d.role != "in"]
        return _make_launcher(launch, cuda, outputs)


def _make_launcher(launch: Callable, cuda: bool, outputs: list[str]) -> Launcher:
    import torch

    def run(buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # read-only inputs: the kernels never write them
            tens = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in buffers.items()}
        if cuda:
            tens = {n: t.cuda() for n, t in tens.items()}
        launch(tens, {n: int(v) for n, v in scalars.items()})
        for n in outputs:
            if cuda:
                buffers[n][...] = tens[n].cpu().numpy()
            elif tens[n].data_ptr() != buffers[n].__array_interface__["data"][0]:
                buffers[n][...] = tens[n].numpy()

    return run


_PTX_WORKER = """
import json, sys, importlib.util
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
job = json.load(sys.stdin)
spec = importlib.util.spec_from_file_location("numgrade_triton_ptx", job["path"])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
out = {}
for name, sig, consts in job["kernels"]:
    src = ASTSource(getattr(mod, "k_" + name), signature=sig, constexprs=consts)
    opts = {"enable_fp_fusion": False, "enable_reflect_ftz": False, "num_warps": 4}
    out[name] = triton.compile(src, target=GPUTarget("cuda", job["arch"], 32), options=opts).asm["ptx"]
json.dump(out, sys.stdout)
"""


def compile_ptx(program: KernelProgram, arch: str = "sm_90a") -> dict[str, str]:
    """Every kernel compiled to PTX for ``arch`` (e.g. sm_90a, sm_100a); needs no GPU.

    Compiles in a fresh Python process without ``TRITON_INTERPRET``: a process that has run the
    interpreter may keep ``triton.language`` patched for numpy (Triton 3.9 does not undo the
    patch of interpreted device-function calls), which breaks the real code generator.
    """
    import json
    import subprocess
    m = re.fullmatch(r"sm_(\d+)a?", arch)
    if m is None:
        raise ValueError(f"not an NVIDIA arch: {arch!r}")
    source, ems = _emit_program(program)
    digest = hashlib.sha256(source.encode()).hexdigest()[:32]
    path = compile_cache.cached_text([source], f"k{digest}.py", source, "triton")
    kernels = []
    for k, em in zip(program.kernels, ems):
        consts = {b: block_for(int(he)) if he is not None and he.isdigit() else 256
                  for b, he in em.blocks}
        kernels.append((k.name, _signature(program, em), consts))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    job = json.dumps({"path": str(path), "arch": int(m.group(1)), "kernels": kernels})
    res = subprocess.run([sys.executable, "-c", _PTX_WORKER], input=job, capture_output=True,
                         text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"Triton PTX compilation failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout)
