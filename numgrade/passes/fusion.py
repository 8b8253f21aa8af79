"""Fusion: partition a function's dataflow graph into kernels, and count the bytes they move.

The rules (issue 4):

* Elementwise operations and data movement are *cheap*: they are recomputed inside whichever
  kernel needs them, so elementwise chains fuse with their producers and consumers for free.
* Reductions, matrix products and top-k masks are *heavy*. A reduction's *domain* is the shape it
  reads, split into the kept (grid) axes and the reduced (inner) axes. Reductions with the same
  domain share one row-wise kernel (softmax's max and sum, LayerNorm's two moments), and the
  outputs indexed by that domain or by its grid are stored by the same kernel, so softmax,
  RMSNorm and LayerNorm are one kernel each, and block quantisation (block amax -> scale ->
  scale rounding -> element rounding) is one kernel.
* A heavy value used by another kernel is materialised in a buffer; a whole-tensor reduction
  feeding a later stage therefore makes two kernels. Nested max/min reductions are flattened
  first (``max(max(x, axis=-1))`` is ``max(x)``, exactly).
* A value joins an existing kernel only when everything it needs from other kernels comes from
  kernels launched before it, so the kernel graph stays acyclic (checked with networkx).

The cost model counts bytes read and written per kernel, before fusion (every non-movement
operation its own kernel, reading its operands and writing its result) and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import networkx as nx

from ..ir import nodes as N
from ..ir.dims import Dim, shape_str
from ..ir.nodes import Op, Value

HEAVY = N.REDUCE | {Op.MATMUL, Op.TOPK_MASK}
LEAVES = {Op.PARAM, Op.CONST, Op.DIM}


@dataclass(frozen=True)
class Layout:
    """How a kernel's iteration space maps onto a shape: which axes are grid, which inner."""

    shape: tuple[Dim, ...]
    inner_axes: tuple[int, ...]

    @property
    def grid(self) -> tuple[Dim, ...]:
        return tuple(d for i, d in enumerate(self.shape) if i not in self.inner_axes)

    @property
    def inner(self) -> tuple[Dim, ...]:
        return tuple(self.shape[i] for i in self.inner_axes)


@dataclass
class Group:
    """One kernel-to-be."""

    index: int
    kind: str  # 'rowwise' | 'elementwise' | 'matmul' | 'topk'
    grid: tuple[Dim, ...]
    inner: tuple[Dim, ...]
    heavies: list[Value] = field(default_factory=list)  # computed here, in topological order
    stores: list[tuple[Value, Layout | None]] = field(default_factory=list)  # None: grid level
    layouts: list[Layout] = field(default_factory=list)

    def describe(self, names: dict[Value, str]) -> str:
        ops = [names.get(h, h.op) for h in self.heavies]
        what = {"rowwise": "row-wise", "elementwise": "elementwise", "matmul": "matmul",
                "topk": "top-k"}[self.kind]
        s = f"{what} kernel, grid {shape_str(self.grid) or '[]'}"
        if self.inner:
            s += f" x inner {shape_str(self.inner)}"
        if ops:
            s += "; computes " + ", ".join(ops)
        return s


@dataclass
class FusionPlan:
    fn: N.Function  # the inlined, flattened function the plan refers to
    groups: list[Group]
    owner: dict[Value, int]  # heavy value -> group index
    materialized: list[Value]  # heavy values read by a later kernel (need a temp buffer)
    outputs: list[Value]  # peeled results, in result order
    bytes_unfused: Dim
    bytes_fused: Dim
    kernels_unfused: int

    def summary(self) -> str:
        return (f"{len(self.groups)} kernel(s) after fusion ({self.kernels_unfused} before); "
                f"bytes moved {self.bytes_fused} after, {self.bytes_unfused} before")


# ---------------------------------------------------------------------------------------------
def flatten_minmax(fn: N.Function) -> N.Function:
    """Rewrite max(max(x, a1), a2) into one max over the union of axes (exact for max/min)."""
    new: dict[Value, Value] = {}
    changed = False
    for v in N.toposort(fn.results):
        srcs = tuple(new.get(s, s) for s in v.srcs)
        nv = v if srcs == v.srcs else Value(v.op, srcs, v.attrs, v.type)
        if nv.op in (Op.RMAX, Op.RMIN) and nv.srcs[0].op == nv.op:
            inner = nv.srcs[0]
            a_in, keep_in, _ = inner.attrs
            a_out, keep_out, order = nv.attrs
            src = inner.srcs[0]
            if not keep_in and not keep_out:
                kept = [i for i in range(len(src.shape)) if i not in a_in]
                union = tuple(sorted(set(a_in) | {kept[a] for a in a_out}))
                nv = Value(nv.op, (src,), (union, False, order), nv.type)
                changed = True
        new[v] = nv
    if not changed:
        return fn
    from dataclasses import replace
    return replace(fn, results=tuple(new.get(r, r) for r in fn.results),
                   spans={new.get(k, k): s for k, s in fn.spans.items()},
                   names={new.get(k, k): s for k, s in fn.names.items()}, grades={})


def peel(v: Value) -> Value:
    """The value whose row-major storage a chain of reshapes views."""
    while v.op == Op.RESHAPE:
        v = v.srcs[0]
    return v


def reduction_layout(r: Value) -> Layout:
    axes = tuple(sorted(r.attrs[0]))
    return Layout(tuple(r.srcs[0].shape), axes)


def _squeeze(shape: tuple[Dim, ...]) -> tuple[Dim, ...]:
    one = Dim.const(1)
    return tuple(d for d in shape if d != one)


def heavy_frontier(values: list[Value]) -> dict[Value, frozenset[Value]]:
    """For each value: the heavy values and parameters it reads through cheap operations."""
    out: dict[Value, frozenset[Value]] = {}
    for v in values:
        if v.op == Op.PARAM:
            out[v] = frozenset({v})
            continue
        deps: set[Value] = set()
        for s in v.srcs:
            deps |= ({s} if s.op in HEAVY else out[s])
        out[v] = frozenset(deps)
    return out


def plan_fusion(fn: N.Function) -> FusionPlan:
    """Partition the (already inlined) function into kernels."""
    fn = flatten_minmax(fn)
    order = N.toposort(fn.results)
    front = heavy_frontier(order)
    groups: list[Group] = []
    owner: dict[Value, int] = {}
    deps_graph = nx.DiGraph()  # group -> group that reads one of its heavy values

    def can_join(g: Group, deps: frozenset[Value]) -> bool:
        """Joining g must not close a cycle among kernels."""
        new_edges = {(owner[d], g.index) for d in deps if d in owner and owner[d] != g.index}
        for a, b in new_edges:
            if a == b:
                continue
            if nx.has_path(deps_graph, b, a):
                return False
        return True

    def join(g: Group, deps: frozenset[Value]) -> None:
        for d in deps:
            if d in owner and owner[d] != g.index:
                deps_graph.add_edge(owner[d], g.index)

    def new_group(kind: str, grid, inner) -> Group:
        g = Group(len(groups), kind, tuple(grid), tuple(inner))
        groups.append(g)
        deps_graph.add_node(g.index)
        return g

    for v in order:
        if v.op not in HEAVY:
            continue
        if v.op in N.REDUCE:
            lay = reduction_layout(v)
            target = None
            for g in reversed(groups):
                if (g.kind == "rowwise" and g.grid == lay.grid and g.inner == lay.inner
                        and can_join(g, front[v])):
                    target = g
                    break
            if target is None:
                target = new_group("rowwise", lay.grid, lay.inner)
            target.heavies.append(v)
            owner[v] = target.index
            join(target, front[v])
            if lay not in target.layouts:
                target.layouts.append(lay)
        else:
            shape = tuple(v.shape)
            g = new_group("matmul" if v.op == Op.MATMUL else "topk", shape[:-1], shape[-1:])
            g.heavies.append(v)
            owner[v] = g.index
            join(g, front[v])
            g.layouts.append(Layout(shape, (len(shape) - 1,) if shape else ()))

    outputs = [peel(r) for r in fn.results]
    stored: set[Value] = set()
    for o in outputs:
        if o in stored or o.op in HEAVY:
            stored.add(o)
            continue
        stored.add(o)
        deps = front[o] if o in front else frozenset()
        target, layout = None, None
        # prefer the row-wise kernel with the most parallel grid, then the latest
        candidates = sorted({owner[d] for d in deps if d in owner},
                            key=lambda gi: (len(groups[gi].grid), gi), reverse=True)
        for gi in candidates:
            g = groups[gi]
            if g.kind != "rowwise" or not can_join(g, deps):
                continue
            lay = next((L for L in g.layouts if L.shape == tuple(o.shape)), None)
            if lay is not None:
                target, layout = g, lay
                break
            if _squeeze(tuple(o.shape)) == _squeeze(g.grid):
                target, layout = g, None
                break
        if target is None:
            shape = tuple(o.shape)
            for g in reversed(groups):
                if (g.kind == "elementwise" and g.layouts and g.layouts[0].shape == shape
                        and can_join(g, deps)):
                    target, layout = g, g.layouts[0]
                    break
            if target is None:
                target = new_group("elementwise", shape[:-1], shape[-1:])
                layout = Layout(shape, (len(shape) - 1,) if shape else ())
                target.layouts.append(layout)
        join(target, deps)
        if layout is not None and not layout.inner_axes:
            layout = None  # a scalar-shaped domain: store at grid level
        target.stores.append((o, layout))

    # launch order: a topological order of the kernel graph (creation order among equals)
    perm = list(nx.lexicographical_topological_sort(deps_graph))
    remap = {old: new for new, old in enumerate(perm)}
    groups = [groups[i] for i in perm]
    for g in groups:
        g.index = remap[g.index]
    owner = {v: remap[i] for v, i in owner.items()}

    # heavy values read outside their own kernel, or returned, are materialised
    reads: dict[int, set[Value]] = {g.index: set() for g in groups}
    for g in groups:
        for h in g.heavies:
            reads[g.index] |= {d for d in front[h] if d.op in HEAVY and owner[d] != g.index}
            reads[g.index] |= {d for d in front[h] if d.op == Op.PARAM}
        for o, _ in g.stores:
            reads[g.index] |= {d for d in front.get(o, ()) if d.op in HEAVY and owner[d] != g.index}
            reads[g.index] |= {d for d in front.get(o, ()) if d.op == Op.PARAM}
    materialized = sorted({d for s in reads.values() for d in s if d.op in HEAVY},
                          key=order.index)
    # in program order: a set of values iterates by identity, which differs run to run, and
    # the store order is part of the emitted kernels (and of every cache key made from them)
    for h in sorted(set(materialized) | {o for o in outputs if o.op in HEAVY}, key=order.index):
        g = groups[owner[h]]
        if all(h is not s for s, _ in g.stores):
            lay = None if g.kind == "rowwise" else g.layouts[0]
            if lay is not None and not lay.inner_axes:
                lay = None
            g.stores.append((h, lay))

    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(groups)))
    for g in groups:
        for d in reads[g.index]:
            if d.op in HEAVY:
                graph.add_edge(owner[d], g.index)
    assert nx.is_directed_acyclic_graph(graph), "fusion produced a cycle"
    assert all(a < b for a, b in graph.edges), "kernels are not in launch order"

    # bytes moved
    def nbytes(v: Value) -> Dim:
        n = Dim.const(Fraction(v.fmt.bits if v.fmt.kind != "bool" else 8, 8))
        for d in v.shape:
            n = n * d
        return n

    fused = Dim.const(0)
    for g in groups:
        for d in reads[g.index]:
            fused = fused + nbytes(d)
        for c in {c for h in g.heavies for c in _consts_under(h)} | {
                c for o, _ in g.stores for c in _consts_under(o)}:
            fused = fused + nbytes(c)
        for o, _ in g.stores:
            fused = fused + nbytes(o)
    unfused = Dim.const(0)
    count = 0
    for v in order:
        if v.op in LEAVES or v.op in N.MOVEMENT:
            continue
        count += 1
        unfused = unfused + nbytes(v)
        for s in {peel_movement(s) for s in v.srcs}:
            if s.op != Op.DIM and not (s.op == Op.CONST and not s.shape):
                unfused = unfused + nbytes(s)
    return FusionPlan(fn, groups, owner, materialized, outputs, unfused, fused, count)


def peel_movement(v: Value) -> Value:
    while v.op in N.MOVEMENT and v.op != Op.CONCAT:
        v = v.srcs[0]
    return v


def _consts_under(v: Value) -> set[Value]:
    """Array constants read (through cheap operations) when computing v."""
    out: set[Value] = set()
    stack, seen = [v], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x.op == Op.CONST and x.shape:
            out.add(x)
        if x is v or x.op not in HEAVY:
            stack.extend(x.srcs)
    return out
