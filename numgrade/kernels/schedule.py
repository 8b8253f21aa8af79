"""The schedule stage: kernel-IR to kernel-IR rewrites that map work onto a target's programs.

Fusion decides what one kernel computes per grid point; lowering writes it for one grid point.
How many grid points one program instance runs is a question of the target: a Triton program
is a block of lanes, so a grid point whose whole work is a 16-element quantisation block
leaves most lanes idle when it gets a program of its own. Passes here are small named
functions over a :class:`KernelProgram`; each keeps the results bit for bit (they change
which program computes a value, never how), so they serve both execution contracts.

* :func:`batch_grid_points`: L consecutive grid points of a kernel with a small per-point body
  become the L lanes of one program (a parallel loop over them; the last program's extra lanes
  recompute the last grid point and store the same values again).
* :func:`split_grid_reductions`: a whole-tensor reduction (per-tensor amax) runs over the grid
  in two stages instead of in one program.
* :func:`simplify_indices`: ``(x / n) * n + x % n`` is x (no 64-bit division per element).
* :func:`stash_reduced_values`: a value a row reduction folded and the row's epilogue needs
  again (softmax's ``exp(x - m)``) is stored by the reduction and loaded by the epilogue
  (targets that run a row on one thread: TVM's CPU schedule).

Buffers with role ``scratch`` are the schedule's own (partial results); a backend's launcher
allocates them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

from ..ir.dims import Dim
from .ir import (Assign, BufferDecl, Decl, KExpr, KernelProgram, Let, Loop, Reduce,
                 ScalarParam, Stmt, Store, acc_vars, const, expr_nodes, load, select, var,
                 var_names, walk_exprs)

I64 = "i64"


@dataclass(frozen=True)
class CeilDiv:
    """The size ceil(d / k) of a scheduled grid (a Dim holds polynomials only); evaluated by
    the host runtime like a Dim."""

    d: Dim
    k: int
    of: str = ""    # the scalar parameter holding d, from which a launcher computes it

    def evaluate(self, env: Mapping[str, int]) -> Fraction:
        v = self.d.evaluate(env)
        if v.denominator != 1:
            return v
        return Fraction(-(-v.numerator // self.k))

    def int_value(self) -> int | None:
        n = self.d.int_value()
        return None if n is None else -(-n // self.k)

    def plain_symbol(self) -> str | None:
        return None

    def symbols(self) -> set[str]:
        return self.d.symbols()

    def __str__(self) -> str:
        return f"ceil(({self.d}) / {self.k})"


def is_plain_sum(r: Reduce) -> bool:
    """A float sum in any order whose combine is the plain IEEE addition (fast contract)."""
    if r.kind != "sum" or r.order != "any" or r.dtype not in ("f32", "f64") or r.leaf is not None:
        return False
    a, b = acc_vars(r.dtype)
    # init +0.0 (an empty range; lanes start from +0.0, which adds exactly)
    return r.combine is (a + b) and r.init.op == "const" and r.init.attrs[0] == 0 and \
        str(r.init.attrs[0])[0] != "-"


def is_extremum(r: Reduce) -> bool:
    """A float max / min in any order (fast contract: a backend's own max-reduction)."""
    return r.kind in ("max", "min") and r.order == "any" and r.dtype in ("f32", "f64") and \
        r.leaf is None


def row_resident_extent(body: tuple[Stmt, ...]) -> KExpr | None:
    """The common extent of a grid point's top-level reductions and parallel loops, when they
    can all share one lane block holding the whole row: at least two of them, sums and extrema
    in any order, bodies without loops or serial state. None otherwise."""
    ext, count = None, 0
    for s in body:
        if isinstance(s, (Decl, Assign)):
            return None
        if not isinstance(s, (Reduce, Loop)):
            continue
        if isinstance(s, Loop) and s.kind != "parallel":
            return None
        if isinstance(s, Reduce) and not (is_plain_sum(s) or is_extremum(s)):
            return None
        if any(isinstance(t, (Loop, Reduce, Decl, Assign)) for t in s.body):
            return None
        if ext is not None and s.extent is not ext:
            return None
        ext, count = s.extent, count + 1
    return ext if count >= 2 else None


ROW_TILE = 2048   # elements per program when short rows are stacked (2-D lane blocks)


def lanes_for(k) -> int | None:
    """Grid points per program for :func:`batch_grid_points` (the Triton schedule): short
    rows that stay resident are stacked to ROW_TILE elements (a 2-D block), other short
    per-point bodies (at most 64 elements) run 128 to a program as lanes."""
    ext = row_resident_extent(k.body)
    if ext is not None and ext.op == "const" and int(ext.attrs[0]) <= ROW_TILE // 4:
        return ROW_TILE // max(1, 1 << (int(ext.attrs[0]) - 1).bit_length())
    if _small_body(k.body, 64):
        return 128
    return None


def _small_body(stmts: tuple[Stmt, ...], limit: int) -> bool:
    """Every loop and reduction has a constant extent of at most ``limit`` and no serial
    state (Decl / Assign) is used: a grid point's work fits one lane."""
    for s in stmts:
        if isinstance(s, (Decl, Assign)):
            return False
        if isinstance(s, (Loop, Reduce)):
            if s.extent.op != "const" or int(s.extent.attrs[0]) > limit:
                return False
            if isinstance(s, Loop) and s.kind != "parallel":
                return False
            if not _small_body(s.body, limit):
                return False
        elif not isinstance(s, (Let, Store)):
            return False
    return True


def batch_grid_points(program: KernelProgram,
                      lanes_of: Callable[[object], int | None] = lanes_for) -> KernelProgram:
    """Run ``lanes_of(kernel)`` consecutive points of the last grid axis in one program, for
    kernels whose per-point work is short (block quantisers: 16 to 128 elements per point)."""
    dims: dict = dict(program.dims)
    kernels = []
    changed = False
    for k in program.kernels:
        lanes = lanes_of(k) if k.grid else None
        if not lanes or lanes <= 1 or \
                (k.grid[-1].op == "const" and int(k.grid[-1].attrs[0]) <= 1):
            kernels.append(k)
            continue
        gk = k.grid[-1]
        gname = k.grid_vars[-1]
        new_var = f"{gname}_blk"
        lane = f"{gname}_lane"
        scalars = list(k.scalars)
        if gk.op == "const":
            n = int(gk.attrs[0])
            new_extent = const(-(-n // lanes), I64)
        else:
            base = dims.get(gk.attrs[0])
            if not isinstance(base, Dim):
                kernels.append(k)
                continue
            pname = f"{gk.attrs[0]}_by{lanes}"
            dims[pname] = CeilDiv(base, lanes, gk.attrs[0])
            if all(p.name != pname for p in scalars):
                scalars.append(ScalarParam(pname, I64))
            new_extent = var(pname, I64)
        point = var(new_var, I64) * const(lanes, I64) + var(lane, I64)
        last = gk - const(1, I64)
        clamped = select(point.lt(gk), point, last)
        body = (Let(gname, clamped),) + tuple(k.body)
        loop = Loop(lane, const(lanes, I64), body, "parallel")
        kernels.append(dataclasses.replace(
            k, grid=k.grid[:-1] + (new_extent,), grid_vars=k.grid_vars[:-1] + (new_var,),
            body=(loop,), scalars=tuple(scalars),
            note=(k.note + f"; {lanes} grid points per program").lstrip("; ")))
        changed = True
    if not changed:
        return program
    return dataclasses.replace(program, kernels=kernels, dims=dims)


# ---------------------------------------------------------------------------------------------
# expression and statement rewriting shared by the passes

def rewrite_expr(e: KExpr, fn: Callable[[KExpr], KExpr | None],
                 memo: dict[int, KExpr] | None = None) -> KExpr:
    """``e`` bottom-up with ``fn`` applied to every node (None keeps the node)."""
    memo = {} if memo is None else memo
    hit = memo.get(id(e))
    if hit is not None:
        return hit
    args = tuple(rewrite_expr(a, fn, memo) for a in e.args)
    out = e if args == e.args else KExpr(e.op, args, e.attrs, e.dtype)
    new = fn(out)
    out = out if new is None else new
    memo[id(e)] = out
    return out


def rewrite_stmts(stmts: tuple[Stmt, ...], fn: Callable[[KExpr], KExpr | None]) -> tuple:
    """Every expression of the statements (recursively) rewritten by :func:`rewrite_expr`."""
    memo: dict[int, KExpr] = {}

    def ex(e: KExpr | None) -> KExpr | None:
        return None if e is None else rewrite_expr(e, fn, memo)

    out = []
    for s in stmts:
        if isinstance(s, (Let, Assign)):
            out.append(dataclasses.replace(s, value=ex(s.value)))
        elif isinstance(s, Decl):
            out.append(dataclasses.replace(s, init=ex(s.init)))
        elif isinstance(s, Store):
            out.append(dataclasses.replace(s, index=ex(s.index), value=ex(s.value)))
        elif isinstance(s, Loop):
            out.append(dataclasses.replace(s, extent=ex(s.extent),
                                           body=rewrite_stmts(s.body, fn)))
        elif isinstance(s, Reduce):
            out.append(dataclasses.replace(s, extent=ex(s.extent), body=rewrite_stmts(s.body, fn),
                                           value=ex(s.value), combine=ex(s.combine),
                                           init=ex(s.init), leaf=ex(s.leaf)))
        else:  # pragma: no cover - every statement kind is listed above
            raise TypeError(s)
    return tuple(out)


def substitute(stmts: tuple[Stmt, ...], name: str, value: KExpr) -> tuple:
    """The statements with the variable ``name`` replaced by ``value``."""
    return rewrite_stmts(stmts, lambda e: value if e.op == "var" and e.attrs[0] == name
                         else None)


def _lets(stmts: tuple[Stmt, ...], out: dict[str, KExpr]) -> dict[str, KExpr]:
    """Every Let of the statements (recursively): names are single-assignment in a kernel."""
    for s in stmts:
        if isinstance(s, Let):
            out[s.name] = s.value
        elif isinstance(s, (Loop, Reduce)):
            _lets(s.body, out)
    return out


def let_closer(lets: Mapping[str, KExpr]) -> Callable[[KExpr], KExpr | None]:
    """A :func:`rewrite_expr` rule that replaces every read of a Let name (of ``lets``) by the
    Let's value, recursively (memoised): equal computations become one hash-consed
    expression."""
    closed: dict[str, KExpr] = {}

    def close(name: str) -> KExpr:
        if name not in closed:
            closed[name] = rewrite_expr(lets[name], fold)
        return closed[name]

    def fold(e: KExpr) -> KExpr | None:
        if e.op == "var" and e.attrs[0] in lets:
            return close(e.attrs[0])
        return None

    return fold


def close_lets(stmts: tuple[Stmt, ...], lets: Mapping[str, KExpr]) -> tuple:
    """The statements with every read of a Let name (of ``lets``) replaced by the Let's value,
    recursively: equal computations become one hash-consed expression (for CSE)."""
    return rewrite_stmts(stmts, let_closer(lets))


def _mutable(stmts: tuple[Stmt, ...], out: set[str]) -> set[str]:
    """The names Decl'd anywhere in the statements (their values change between uses)."""
    for s in stmts:
        if isinstance(s, Decl):
            out.add(s.name)
        elif isinstance(s, (Loop, Reduce)):
            _mutable(s.body, out)
    return out


def _index_folder(lets: Mapping[str, KExpr], dims: Mapping,
                  mutable: frozenset[str] = frozenset()) -> Callable[[KExpr], KExpr | None]:
    """Index recomposition folded back (index arithmetic of non-negative values, as the IR
    defines div and mod), seeing through Let names: lowering re-linearises flattened indices
    so. (x / n) * n + x % n -> x; (q / D) * S + (q % D) * k -> q * k where S = D k (constants,
    or size parameters whose Dims say so); and sums re-associated to meet these."""
    def look(e: KExpr) -> KExpr:
        while e.op == "var" and e.attrs[0] in lets and e.dtype == "i64":
            e = lets[e.attrs[0]]
        return e

    def equal_scaled(s_: KExpr, d_: KExpr, k_: KExpr) -> bool:
        vals = []
        for e in (s_, d_, k_):
            e = look(e)
            if e.op == "const":
                vals.append(Dim.const(int(e.attrs[0])))
            elif e.op == "var" and isinstance(dims.get(e.attrs[0]), Dim):
                vals.append(dims[e.attrs[0]])
            else:
                return False
        return vals[0] == vals[1] * vals[2]

    def pair(a: KExpr, b: KExpr) -> KExpr | None:
        """a + b folded, or None."""
        a_, b_ = look(a), look(b)
        for x_, y_ in ((a_, b_), (b_, a_)):
            if x_.op != "mul" or len(x_.args) != 2:
                continue
            for q, m in (x_.args, x_.args[::-1]):
                q = look(q)
                if q.op != "div":
                    continue
                base, den = q.args
                if var_names([base]) & mutable or base.dtype != a_.dtype:
                    continue      # x must read the same value where it is substituted
                if y_.op == "mod" and look(y_.args[0]) is look(base) and \
                        look(y_.args[1]) is look(den) and look(m) is look(den):
                    return base                      # (x / n) * n + x % n
                if y_.op == "mul" and len(y_.args) == 2:
                    for r, k in (y_.args, y_.args[::-1]):
                        r = look(r)
                        if r.op == "mod" and look(r.args[0]) is look(base) and \
                                look(r.args[1]) is look(den) and equal_scaled(m, den, k):
                            return base * k          # (q / D) * (D k) + (q % D) * k
        return None

    def fold(e: KExpr) -> KExpr | None:
        if e.op != "add" or len(e.args) != 2:
            return None
        a, b = e.args
        r = pair(a, b)
        if r is not None:
            return r
        for x, y in ((a, b), (b, a)):     # x + (y1 + y2): fold x with one of y's terms
            y_ = look(y)
            if y_.op == "add" and len(y_.args) == 2:
                for y1, y2 in (y_.args, y_.args[::-1]):
                    r = pair(x, y1)
                    if r is not None:
                        return fold(r + y2) or (r + y2)
        return None
    return fold


def fold_indices(k, dims: Mapping):
    """One kernel's index arithmetic with ``(x / n) * n + x % n`` (and its mixed-radix forms)
    folded to x; the kernel itself when nothing changed."""
    body = rewrite_stmts(k.body, _index_folder(_lets(k.body, {}), dims,
                                               frozenset(_mutable(k.body, set()))))
    return k if body == k.body else dataclasses.replace(k, body=body)


def simplify_indices(program: KernelProgram) -> KernelProgram:
    """Every kernel's index arithmetic folded (:func:`fold_indices`)."""
    kernels = [fold_indices(k, program.dims) for k in program.kernels]
    return dataclasses.replace(program, kernels=kernels)


# ---------------------------------------------------------------------------------------------
# whole-tensor reductions over the grid

_IDENTITY = {"sum": 0.0, "max": float("-inf"), "min": float("inf")}


def upto(n: KExpr, bound: int) -> KExpr:
    """min(n, bound) as an extent (n >= 0): :func:`extent_bound` reads the bound back."""
    b = const(bound, I64)
    return select(n.lt(b), n, b)


def extent_bound(e: KExpr) -> int | None:
    """A constant upper bound of an extent: a constant, or :func:`upto`'s bound."""
    if e.op == "const":
        return int(e.attrs[0])
    if e.op == "select" and e.args[2].op == "const" and e.args[0].op == "lt" and \
            e.args[0].args[0] is e.args[1] and e.args[0].args[1] is e.args[2]:
        return int(e.args[2].attrs[0])
    return None


def _size(e: KExpr, dims: Mapping, chunk: int, suffix: str, dims_out: dict,
          scalars: list[ScalarParam]) -> KExpr | None:
    """ceil(e / chunk) as a grid extent: a constant or a new derived size parameter."""
    if e.op == "const":
        return const(max(1, -(-int(e.attrs[0]) // chunk)), I64)
    if e.op != "var" or not isinstance(dims.get(e.attrs[0]), Dim):
        return None
    name = f"{e.attrs[0]}_{suffix}{chunk}"
    dims_out[name] = CeilDiv(dims[e.attrs[0]], chunk, e.attrs[0])
    if all(p.name != name for p in scalars):
        scalars.append(ScalarParam(name, I64))
    return var(name, I64)


def split_grid_reductions(program: KernelProgram, chunk: int = 16384,
                          tail_chunk: int = 8192) -> KernelProgram:
    """A kernel without a grid that starts with a whole-tensor reduction in any order
    (per-tensor amax: max over every element, then a scale, then a pass over every element)
    becomes two grid-wide kernels: partial reductions over ``chunk`` elements into a scratch
    buffer, then (per ``tail_chunk`` elements of the final parallel loop) the reduction of the
    partials, the scalar steps and that chunk of the loop (the last chunks are shorter). Any
    order is the Reduce's own contract (max is exact; a sum in any order is the fast
    contract's), so the results stay within it; the second kernel's programs compute the same
    scalars and store the same values.
    """
    dims: dict = dict(program.dims)
    buffers = dict(program.buffers)
    kernels = []
    changed = False
    for k in program.kernels:
        body = k.body
        r = body[0] if body else None
        if k.grid or not isinstance(r, Reduce) or r.order != "any" or r.leaf is not None or \
                r.kind not in _IDENTITY or r.dtype not in ("f32", "f64") or \
                (r.extent.op == "const" and int(r.extent.attrs[0]) <= chunk):
            kernels.append(k)
            continue
        scalars = list(k.scalars)
        new_dims: dict = {}
        parts = _size(r.extent, dims, chunk, "part", new_dims, scalars)
        if parts is None:
            kernels.append(k)
            continue
        dims.update(new_dims)
        # stage 1: one partial per chunk; the last chunk is shorter (min(chunk, E - p chunk))
        p = var(f"{r.name}_part", I64)
        idx = p * const(chunk, I64) + var(r.var, I64)
        pbody = substitute(r.body, r.var, idx)
        pvalue = rewrite_expr(r.value, lambda e: idx if e.op == "var" and
                              e.attrs[0] == r.var else None)
        part = dataclasses.replace(r, extent=upto(r.extent - p * const(chunk, I64), chunk),
                                   body=pbody, value=pvalue)
        scratch = f"scratch_{r.name}"
        size = new_dims.get(parts.attrs[0]) if parts.op == "var" else \
            Dim.const(int(parts.attrs[0]))
        buffers[scratch] = BufferDecl(scratch, r.dtype, (size,), r.dtype, "scratch")
        k1 = dataclasses.replace(
            k, name=f"{k.name}_partials", grid=(parts,), grid_vars=(p.attrs[0],),
            body=(part, Store(scratch, p, var(r.name, r.dtype))),
            buffers=tuple(k.buffers) + (scratch,), scalars=tuple(scalars),
            note=f"{k.note}; partial {r.kind} of {chunk} elements per program".lstrip("; "))
        # stage 2: reduce the partials, then the rest; a final parallel loop is chunked too
        a, b = acc_vars(r.dtype)
        j = f"{r.name}_j"
        gather = Reduce(r.name, j, parts, (), load(scratch, var(j, I64), r.dtype),
                        r.combine if r.kind != "sum" else a + b, r.init, "any", r.kind)
        rest = tuple(body[1:])
        grid, gvars = (), ()
        last = rest[-1] if rest else None
        if isinstance(last, Loop) and last.kind == "parallel":
            tiles = _size(last.extent, dims, tail_chunk, "tile", new_dims, scalars)
            if tiles is not None:
                dims.update(new_dims)
                q = var(f"{last.var}_tile", I64)
                t = q * const(tail_chunk, I64) + var(f"{last.var}_in", I64)
                loop = Loop(f"{last.var}_in",
                            upto(last.extent - q * const(tail_chunk, I64), tail_chunk),
                            (Let(last.var, t),) + tuple(last.body), "parallel")
                rest = rest[:-1] + (loop,)
                grid, gvars = (tiles,), (q.attrs[0],)
        k2 = dataclasses.replace(
            k, grid=grid, grid_vars=gvars, body=(gather,) + rest,
            buffers=tuple(k.buffers) + (scratch,), scalars=tuple(scalars),
            note=f"{k.note}; {r.kind} of the partials".lstrip("; "))
        kernels += [k1, k2]
        changed = True
    if not changed:
        return program
    return dataclasses.replace(program, kernels=kernels, dims=dims, buffers=buffers)


# ---------------------------------------------------------------------------------------------
# a value folded by a row reduction and recomputed by the row's epilogue: evaluate it once

def _reads(program: KernelProgram, buffer: str) -> bool:
    return any(n.op == "load" and n.attrs[0] == buffer
               for k in program.kernels for n in expr_nodes(list(walk_exprs(k.body))))


def _stores(stmts: tuple[Stmt, ...]) -> list[Store]:
    out: list[Store] = []
    for s in stmts:
        if isinstance(s, Store):
            out.append(s)
        elif isinstance(s, (Loop, Reduce)):
            out += _stores(s.body)
    return out


def _rename(e: KExpr, old: str, new: str) -> KExpr:
    return rewrite_expr(e, lambda x: var(new, x.dtype) if x.op == "var" and x.attrs[0] == old
                        else None)


def _live_lets(body: tuple[Stmt, ...]) -> tuple[Stmt, ...]:
    """A flat loop body without the Lets that nothing after them reads."""
    out = list(body)
    while True:
        read = var_names(list(walk_exprs(tuple(out))))
        kept = [s for s in out if not (isinstance(s, Let) and s.name not in read)]
        if len(kept) == len(out):
            return tuple(out)
        out = kept


def stash_reduced_values(program: KernelProgram, k) -> object:
    """A row kernel whose epilogue loop recomputes, element by element, the value that an
    earlier reduction over the same row folded (softmax's ``exp(x - m)``, summed and then
    divided by the sum) stores that value into the epilogue's output buffer during the
    reduction and reads it back there: one evaluation per element instead of two.

    Bit-identical: the same expression, stored exactly (the buffer's storage is the value's
    dtype) and overwritten by the epilogue. Only for targets where one thread runs a whole row
    in program order (TVM's CPU schedule): elsewhere the store and the load of an element may
    run on different threads. The output buffer must be written by that one store only and
    read by no kernel."""
    if _mutable(k.body, set()):
        return k
    fold = let_closer(_lets(k.body, {}))

    def close(e: KExpr) -> KExpr:
        return rewrite_expr(e, fold)

    body = list(k.body)
    used: set[int] = set()
    for a, red in enumerate(body):
        if not isinstance(red, Reduce) or red.leaf is not None or red.order != "any":
            continue   # (the fast contract's reductions; the exact ones keep their code)
        value = close(red.value)
        if value.dtype not in ("f32", "f64") or not any(
                n.op not in ("load", "var", "const") and n.dtype == value.dtype
                for n in expr_nodes([value])):
            continue   # worth a store and a load only when computed by float arithmetic
        for b in range(a + 1, len(body)):
            loop = body[b]
            if b in used or not isinstance(loop, Loop) or loop.extent is not red.extent or \
                    any(isinstance(s, (Loop, Reduce, Decl, Assign)) for s in loop.body):
                continue
            stores = [s for s in loop.body if isinstance(s, Store)]
            if len(stores) != 1:
                continue
            st = stores[0]
            buf = program.buffers.get(st.buffer)
            if buf is None or buf.role != "out" or buf.storage != value.dtype or \
                    len([s for kk in program.kernels for s in _stores(kk.body)
                         if s.buffer == st.buffer]) != 1 or _reads(program, st.buffer):
                continue
            own = close(st.index)   # unit stride in the loop variable: one element per i
            i_var = var(loop.var, own.dtype)
            if not (own is i_var or own.op == "add" and i_var in own.args and
                    loop.var not in var_names([a for a in own.args if a is not i_var])):
                continue
            here = _rename(value, red.var, loop.var)
            hit = next((s for s in loop.body if isinstance(s, Let) and s.value.dtype ==
                        value.dtype and close(s.value) is here), None)
            if hit is None:
                continue
            index = _rename(own, loop.var, red.var)
            later = {s.name for s in body[a:] if isinstance(s, (Reduce, Let))}
            if var_names([index]) & later:
                continue
            stash = Store(st.buffer, index, red.value)
            body[a] = dataclasses.replace(red, body=red.body + (stash,))
            new_loop = tuple(Let(s.name, load(st.buffer, own, value.dtype))
                             if s is hit else s for s in loop.body)
            body[b] = dataclasses.replace(loop, body=_live_lets(new_loop))
            used.add(b)
            break
    return dataclasses.replace(k, body=tuple(body)) if used else k
