"""Per-input sensitivities (SPEC section 3, coeffects) and the shared graph and range tools.

Sensitivity of a function to an input ``x`` is a bound ``s`` with

    d(f(x), f(x')) <= s * d(x, x')        for all x, x' in the declared input box

(the other inputs held fixed), for every output, taking the maximum over the outputs. It is a
property of the *ideal* program (every rounding removed). Tensors are compared in the sup norm
over their elements. Two metrics are computed for every input:

* **absolute**: ``d(a, b) = |a - b|``. Always defined; ``inf`` (reported ``None``) where the
  function may jump (a ``where`` whose branch can switch, ``floor``, ``mod``, ...).
* **relative precision** (RP, NumFuzz's metric): ``d(a, b) = |ln(a / b)|``, defined where the
  input and every output are sign-definite and bounded away from 0. ``s`` is then a bound on
  the elasticity ``|d ln f / d ln x|`` (``x*y``: 1 per input; ``sqrt``: 1/2; ``x/(x+y)``: 2).

``input_sensitivities(..., metric="auto")`` reports, per input, the RP sensitivity where it is
defined and finite (the SPEC: "relative-precision metric where values are sign-definite") and
the absolute one otherwise; :func:`sensitivity_analysis` returns both and which one was chosen.

How the bounds are inferred
---------------------------
Compositionally, one pass over the dataflow graph in dependency order. Every value ``v`` gets
two vectors over the inputs: ``A[v][i]`` bounds ``|dv/dt_i|`` and ``E[v][i]`` bounds
``|d ln|v| / dt_i|`` (``inf`` when ``v`` can be 0), where ``t_i = x_i`` (absolute run) or
``t_i = ln x_i`` (relative run). Each rule is the chain rule with derivative magnitudes bounded
over sound interval ranges of the ideal values (:mod:`numgrade.passes.interval`); since the
input box is convex (and log-convex for sign-definite inputs), the mean value theorem along the
straight (or geometric) path from x to x' turns the derivative bounds into Lipschitz bounds.
Rules: ``a + b``: ``A = A_a + A_b``, ``E = max(E_a, E_b)`` for operands of one sign;
``a * b``: ``A = |b| A_a + |a| A_b``, ``E = E_a + E_b``; ``a / b``: ``A = A_a/|b| + |a|/b^2 A_b``,
``E = E_a + E_b``; math functions: ``max |f'|``, ``max |f'/f|``, ``max |x f'/f|`` and
``max |x f'|`` over the argument range; ``sum`` of n: ``A = n A`` (sup norm), ``E = E`` for
one-signed terms; ``mean``, ``max``, ``min``: unchanged; ``a @ b`` over K: ``K (|b| A_a + |a| A_b)``;
movement: unchanged; ``round``: unchanged (rounding is not part of the ideal program);
``where``: the larger of the branches when the condition cannot change (it does not depend on
the input, or the ranges decide it, or it is ``where(p > q, p, q)``-shaped, a max/min),
otherwise unbounded. ``A`` and ``E`` are tightened against each other at every value
(``A <= E |v|``, ``E <= A / min|v|``). Calls are inlined.

The graph tools here (:func:`flatten`, :func:`ideal_ranges`, :func:`elasticity`) are shared by
:mod:`numgrade.passes.backward` and :mod:`numgrade.passes.numfuzz`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import Span
from ..ir import nodes as N
from ..ir.dims import Dim
from ..ir.formats import Format
from ..ir.nodes import Op, TensorType, Value
from . import interval as I
from .inline import inline_calls
from .interval import Interval
from .outward import inflate

INF = math.inf
MARGIN = 1 + 2.0 ** -40   # covers the float rounding of the bound arithmetic itself
# outward.inflate's margin for the derivative bounds (several libm calls and roundings each)
DERIV_REL = MARGIN - 1


# =============================================================================================
# the flattened dataflow graph (calls inlined, concrete shapes where the sizes are known)
@dataclass
class Node:
    op: str
    srcs: tuple[int, ...]
    attrs: tuple[Any, ...]
    fmt: Format | None
    shape: tuple[int, ...] | None       # None when a size is not bound
    value: Value
    span: Span | None = None
    sym_shape: tuple[Dim, ...] = ()
    dimval: int | None = None           # the value of a DIM node, where the sizes are bound
    index: tuple | None = None          # a SLICE's numpy index, where the sizes are bound

    @property
    def size(self) -> int | None:
        if self.shape is None:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)
    params: list[tuple[str, int, N.Parameter]] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    unbound: set[str] = field(default_factory=set)   # size names that were needed but not given

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def users(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for s in n.srcs:
                out[s].append(i)
        return out


def _concrete(shape: tuple[Dim, ...], dims: dict[str, int], missing: set[str]) -> tuple[int, ...] | None:
    if not shape:
        return ()
    out = []
    for d in shape:
        c = d.int_value()
        if c is not None:
            out.append(c)
            continue
        try:
            out.append(int(d.evaluate(dims)))
        except KeyError as ex:
            missing.add(str(ex.args[0]))
            return None
    return tuple(out)


def _dim_int(d: Dim, dims: dict[str, int]) -> int:
    c = d.int_value()
    return c if c is not None else int(d.evaluate(dims))


def flatten(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None) -> Graph:
    """The function's values in dependency order, with every call inlined (by
    :func:`numgrade.passes.inline.inline_calls`, the one inliner: callee sizes are bound from
    the argument shapes)."""
    g = Graph()
    dims = dict(dims or {})
    flat = inline_calls(module, fn)
    memo: dict[int, int] = {}
    for p in flat.params:
        t = p.value.tensor_type
        idx = g.add(Node(Op.PARAM, (), p.value.attrs, t.fmt, _concrete(t.shape, dims, g.unbound),
                         p.value, p.span, t.shape))
        g.params.append((p.name, idx, p))
        memo[id(p.value)] = idx
    for v in N.toposort(flat.results):
        if id(v) in memo:
            continue
        if v.op in (Op.CALL, Op.PROJ):
            raise ValueError(f"{fn.name}(): calls nested too deeply to inline")
        t = v.type
        assert isinstance(t, TensorType)
        dimval = None
        if v.op == Op.DIM:
            try:
                dimval = int(v.attrs[0].evaluate(dims))
            except KeyError as ex:
                g.unbound.add(str(ex.args[0]))
        index = None
        if v.op == Op.SLICE:
            try:
                index = tuple(None if it[0] == "new" else _dim_int(it[1], dims) if it[0] == "i"
                              else slice(_dim_int(it[1], dims), _dim_int(it[2], dims), it[3])
                              for it in v.attrs[0])
            except KeyError as ex:
                g.unbound.add(str(ex.args[0]))
        memo[id(v)] = g.add(Node(v.op, tuple(memo[id(s)] for s in v.srcs), v.attrs, t.fmt,
                                 _concrete(t.shape, dims, g.unbound), v, flat.spans.get(v),
                                 t.shape, dimval, index))
    g.outputs = [memo[id(r)] for r in flat.results]
    return g


def reduce_count(g: Graph, n: Node) -> int | None:
    """Number of elements each output element of a reduction sums (None if a size is unknown)."""
    src = g.nodes[n.srcs[0]]
    if src.shape is None:
        return None
    k = 1
    for a in n.attrs[0]:
        k *= src.shape[a]
    return k


def matmul_k(g: Graph, n: Node) -> int | None:
    a = g.nodes[n.srcs[0]]
    return None if a.shape is None else a.shape[-1]


# =============================================================================================
# ideal ranges: one sound interval (hull over the elements) per node
def _iv(lo: Any, hi: Any) -> Interval:
    return Interval.of(lo, hi)


def param_interval(p: N.Parameter) -> Interval:
    fmt = p.value.fmt
    if fmt.kind == "bool":
        return _iv(0.0, 1.0)
    if p.range is not None:
        return _iv(float(p.range[0]), float(p.range[1]))
    m = fmt.max_finite
    return _iv(-m if fmt.signed else 0.0, m)


def const_interval(v: Value) -> Interval:
    vals = v.attrs[0]
    enc = N.const_enclosures(v)
    if enc is not None:
        return _iv(min(lo for lo, _ in enc), max(hi for _, hi in enc))
    arr = np.asarray(vals, dtype=np.float64)
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        return Interval.entire()
    return _iv(float(arr.min()), float(arr.max()))


def _decided(iv: Interval) -> bool | None:
    lo, hi = float(iv.lo), float(iv.hi)
    if lo >= 1 and hi >= 1:
        return True
    if lo <= 0 and hi <= 0:
        return False
    return None


def _bool_iv(b: bool | None) -> Interval:
    return _iv(1.0, 1.0) if b is True else _iv(0.0, 0.0) if b is False else _iv(0.0, 1.0)


def compare_decision(op: str, a: Interval, b: Interval) -> bool | None:
    """True/False when the comparison has one outcome over the whole box, else None."""
    alo, ahi, blo, bhi = float(a.lo), float(a.hi), float(b.lo), float(b.hi)
    if op == Op.LT:
        return True if ahi < blo else False if alo >= bhi else None
    if op == Op.LE:
        return True if ahi <= blo else False if alo > bhi else None
    if op == Op.GT:
        return True if alo > bhi else False if ahi <= blo else None
    if op == Op.GE:
        return True if alo >= bhi else False if ahi < blo else None
    if op == Op.EQ:
        if alo == ahi == blo == bhi:
            return True
        return False if (ahi < blo or bhi < alo) else None
    if op == Op.NE:
        if alo == ahi == blo == bhi:
            return False
        return True if (ahi < blo or bhi < alo) else None
    return None


_UNARY_IV = {
    Op.NEG: I.neg, Op.ABS: I.abs, Op.EXP: I.exp, Op.LOG: I.log, Op.SQRT: I.sqrt,
    Op.RSQRT: I.rsqrt, Op.TANH: I.tanh, Op.SIGMOID: I.sigmoid, Op.SIN: I.sin, Op.COS: I.cos,
    Op.EXP2: I.exp2, Op.LOG2: I.log2, Op.FLOOR: I.floor, Op.CEIL: I.ceil,
}


def _scale(iv: Interval, n: int | None) -> Interval:
    if n is None:
        return Interval.entire()
    return I.mul(iv, Fraction(n))


def _fast_scalar(op: str, a: Interval, b: Interval, same: bool) -> Interval | None:
    """Scalar + - * with Python floats, each bound pushed one ulp outward (sound, cheap)."""
    al, ah, bl, bh = float(a.lo), float(a.hi), float(b.lo), float(b.hi)
    if not all(map(math.isfinite, (al, ah, bl, bh))):
        return None
    if op == Op.ADD:
        l, h = al + bl, ah + bh
    elif op == Op.SUB:
        l, h = al - bh, ah - bl
    else:
        if same:
            return None
        ps = (al * bl, al * bh, ah * bl, ah * bh)
        l, h = min(ps), max(ps)
    if not (math.isfinite(l) and math.isfinite(h)):
        return None
    l, h = math.nextafter(l, -INF), math.nextafter(h, INF)
    if op == Op.MUL and ((al >= 0 and bl >= 0) or (ah <= 0 and bh <= 0)):
        l = max(l, 0.0)
    return Interval._new(np.float64(l), np.float64(h))


def node_interval(g: Graph, n: Node, x: list[Interval]) -> Interval:
    """The ideal range of one node from its sources' ideal ranges."""
    op = n.op
    if op == Op.CONST:
        return const_interval(n.value)
    if op == Op.DIM:
        if n.dimval is not None:
            return _iv(float(n.dimval), float(n.dimval))
        return _iv(0.0, 2.0 ** 31)
    if op == Op.ARANGE:
        return _iv(0.0, float(max(n.shape[0] - 1, 0))) if n.shape else _iv(0.0, 2.0 ** 31)
    if op == Op.RAND:
        return _iv(0.0, 1.0 - 2.0 ** -24)
    if op in N.MOVEMENT:
        return I.hull(*x) if op == Op.CONCAT else x[0]
    if op == Op.ROUND:
        if n.fmt.kind == "bool":
            return _bool_iv(None) if _decided(x[0]) is None else _bool_iv(_decided(x[0]))
        return x[0]
    if op in N.COMPARE:
        return _bool_iv(compare_decision(op, x[0], x[1]))
    if op in N.LOGIC:
        da, db = _decided(x[0]), _decided(x[1])
        if op == Op.AND:
            r = False if (da is False or db is False) else True if (da and db) else None
        else:
            r = True if (da is True or db is True) else False if (da is False and db is False) else None
        return _bool_iv(r)
    if op == Op.NOT:
        d = _decided(x[0])
        return _bool_iv(None if d is None else not d)
    if op == Op.TOPK_MASK:
        return _iv(0.0, 1.0)
    if op == Op.WHERE:
        d = _decided(x[0])
        return x[1] if d is True else x[2] if d is False else I.hull(x[1], x[2])
    if op == Op.FMA:
        p = I.sqr(x[0]) if n.srcs[0] == n.srcs[1] else I.mul(x[0], x[1])
        return I.add(p, x[2])
    if op in (Op.ADD, Op.SUB, Op.MUL) and not x[0].shape and not x[1].shape:
        fast = _fast_scalar(op, x[0], x[1], n.srcs[0] == n.srcs[1])
        if fast is not None and op != Op.SUB:
            return fast
    if op == Op.ADD:
        return I.add(x[0], x[1])
    if op == Op.SUB:
        r = _fast_scalar(op, x[0], x[1], False) if not x[0].shape and not x[1].shape else None
        r = I.sub(x[0], x[1]) if r is None else r
        ext = _extreme_of(g, n.srcs[1])
        if ext is not None and ext[1] == n.srcs[0] and _covers(g, n.srcs[1], n):
            # x - max(x) <= 0 and x - min(x) >= 0 (the stable softmax / logsumexp shape)
            w = hi(I.sub(x[0], x[0]))
            r = _iv(max(lo(r), -w), 0.0) if ext[0] == Op.RMAX else _iv(0.0, min(hi(r), w))
        return r
    if op == Op.MUL:
        return I.sqr(x[0]) if n.srcs[0] == n.srcs[1] else I.mul(x[0], x[1])
    if op == Op.DIV:
        return I.div(x[0], x[1])
    if op == Op.MOD:
        m = float(x[1].mag())
        return _iv(-m, m)
    if op == Op.MIN:
        return I.min(x[0], x[1])
    if op == Op.MAX:
        return I.max(x[0], x[1])
    if op in _UNARY_IV:
        return _UNARY_IV[op](x[0])
    if op in (Op.RMAX, Op.RMIN, Op.MEAN):
        return x[0]
    if op == Op.SUM:
        r = _scale(x[0], reduce_count(g, n))
        if _is_softmax_terms(g, n):
            # sum over the axes of m = max(x) of exp(x - m): the term at the maximum is 1
            r = _iv(max(lo(r), 1.0), max(hi(r), 1.0))
        return r
    if op == Op.MATMUL:
        return _scale(I.mul(x[0], x[1]), matmul_k(g, n))
    return Interval.entire()


def _is_softmax_terms(g: Graph, n: Node) -> bool:
    e = g.nodes[n.srcs[0]]
    if e.op != Op.EXP:
        return False
    sub = g.nodes[e.srcs[0]]
    if sub.op != Op.SUB:
        return False
    m = g.nodes[sub.srcs[1]]
    while m.op in (Op.BROADCAST, Op.RESHAPE):
        m = g.nodes[m.srcs[0]]
    if m.op != Op.RMAX or m.srcs[0] != sub.srcs[0]:
        return False
    src = g.nodes[sub.srcs[0]]
    rank = len(src.sym_shape)
    ax_max = {a % rank for a in m.attrs[0]} if rank else set()
    ax_sum = {a % rank for a in n.attrs[0]} if rank else set()
    return ax_max == ax_sum and sub.sym_shape == src.sym_shape and _covers(g, sub.srcs[1], sub)


def _extreme_of(g: Graph, idx: int) -> tuple[str, int] | None:
    """(RMAX|RMIN, source) when node idx is a max/min reduction of source (through movement).
    Which elements of source the value at each position covers is :func:`_covers`' question."""
    n = g.nodes[idx]
    while n.op in (Op.BROADCAST, Op.RESHAPE):
        n = g.nodes[n.srcs[0]]
    if n.op in (Op.RMAX, Op.RMIN):
        return n.op, n.srcs[0]
    return None


def _is_one(d: Dim) -> bool:
    return d.int_value() == 1


def _covers(g: Graph, idx: int, use: Node) -> bool:
    """Node idx is a max/min reduction of x = use.srcs[0] (see _extreme_of) carried by
    reshapes and broadcasts, then broadcast (trailing axes aligned) by the elementwise `use`:
    whether at every position p of `use` the value it takes is the extreme of a set of x's
    elements that holds x[p] (so x[p] <= max there). A reduction over some axes broadcast back
    misaligned (x[i, j] - max(x, axis=1)[j]: the maximum of row j, not of row i) bounds
    nothing. Tracks, per axis, which axis of x it indexes."""
    xs = g.nodes[use.srcs[0]].sym_shape
    r = len(xs)
    if tuple(use.sym_shape) != tuple(xs):
        return False                       # x itself broadcast by the use
    chain = []
    n = g.nodes[idx]
    while n.op in (Op.BROADCAST, Op.RESHAPE):
        chain.append(n)
        n = g.nodes[n.srcs[0]]
    red = n
    axes = {a % r for a in red.attrs[0]} if r else set()
    if axes == set(range(r)):
        return True                        # the extreme of every element: holds anywhere
    keep = bool(red.attrs[1]) if len(red.attrs) > 1 else False
    # labels: ('x', a) indexes x's axis a; ('red', a) the reduced axis a (size 1); ('unit',)
    # a size-1 axis; ('bad',) anything else
    labels = [("red", a) if a in axes else ("x", a) for a in range(r)] if keep else \
        [("x", a) for a in range(r) if a not in axes]
    shape = list(red.sym_shape)

    def broadcast(labels, shape, out):
        k = len(out) - len(shape)
        if k < 0:
            return None
        new = [("unit",)] * k
        for lab, d, o in zip(labels, shape, out[k:]):
            new.append(("bad",) if lab[0] == "x" and d != o else lab)
        return new

    for m in reversed(chain):
        out = list(m.sym_shape)
        if m.op == Op.BROADCAST:
            labels = broadcast(labels, shape, out)
        else:   # RESHAPE: only insertions and removals of size-1 axes keep the labels
            if [d for d in shape if not _is_one(d)] != [d for d in out if not _is_one(d)]:
                return False
            kept = iter([lab for lab, d in zip(labels, shape) if not _is_one(d)])
            labels = [("unit",) if _is_one(d) else next(kept) for d in out]
        if labels is None:
            return False
        shape = out
    labels = broadcast(labels, shape, list(xs))     # the use's own (trailing) broadcast
    if labels is None or len(labels) != r:
        return False
    for j, lab in enumerate(labels):
        if lab == ("x", j):
            continue
        if lab[0] in ("red", "unit") and (lab[0] == "unit" or lab[1] == j) and \
                (j in axes or _is_one(xs[j])):
            continue
        return False
    return True


def ideal_ranges(g: Graph, param_ranges: list[Interval] | None = None) -> list[Interval]:
    """One interval per node holding every element's ideal value over the input box."""
    out: list[Interval] = []
    pr = param_ranges or [param_interval(p) for _, _, p in g.params]
    by_idx = {idx: r for (_, idx, _), r in zip(g.params, pr)}
    for i, n in enumerate(g.nodes):
        if n.op == Op.PARAM:
            out.append(by_idx[i])
            continue
        try:
            iv = node_interval(g, n, [out[s] for s in n.srcs])
        except (ValueError, OverflowError, ZeroDivisionError):
            iv = Interval.entire()
        out.append(iv)
    return out


def lo(iv: Interval) -> float:
    return float(iv.lo)


def hi(iv: Interval) -> float:
    return float(iv.hi)


def mag(iv: Interval) -> float:
    a, b = float(iv.lo), float(iv.hi)
    return max(-a, b) if a < 0 else b if b >= -a else -a


def mig(iv: Interval) -> float:
    a, b = float(iv.lo), float(iv.hi)
    return a if a > 0 else -b if b < 0 else 0.0


def sign_definite(iv: Interval) -> int:
    """+1 / -1 when every value is > 0 / < 0, else 0."""
    if lo(iv) > 0:
        return 1
    if hi(iv) < 0:
        return -1
    return 0


# =============================================================================================
# derivative magnitudes of the elementwise math functions over an argument range
@dataclass(frozen=True)
class Deriv:
    fp: float     # max |f'(x)|
    lg: float     # max |f'(x) / f(x)|
    el: float     # max |x f'(x) / f(x)|   (the elasticity, RP -> RP)
    xfp: float    # max |x f'(x)|          (RP in -> absolute out)


def derivative_bounds(op: str, x: Interval) -> Deriv:
    """Bounds on the derivative magnitudes of a unary function over x (inf where unbounded)."""
    a, b = lo(x), hi(x)
    M, m = mag(x), mig(x)
    with np.errstate(all="ignore"):
        if op in (Op.NEG, Op.ABS):
            return Deriv(1.0, _safe_div(1.0, m), 1.0, M)
        if op == Op.EXP:
            eb = hi(I.exp(_iv(b, b)))
            return Deriv(inflate(eb, DERIV_REL), 1.0, inflate(M, DERIV_REL),
                         inflate(M * eb, DERIV_REL))
        if op == Op.EXP2:
            eb = hi(I.exp2(_iv(b, b)))
            ln2 = math.log(2) * MARGIN
            return Deriv(inflate(ln2 * eb, DERIV_REL), ln2, inflate(ln2 * M, DERIV_REL),
                         inflate(ln2 * M * eb, DERIV_REL))
        if op in (Op.LOG, Op.LOG2):
            if a <= 0:
                return Deriv(INF, INF, INF, INF)
            k = 1.0 if op == Op.LOG else 1 / math.log(2) * MARGIN
            fp = inflate(k / a, DERIV_REL)
            logmig = mig(I.log(x))              # min |ln x| (0 when the range contains 1)
            lg = inflate(k / (a * logmig), DERIV_REL) if logmig > 0 else INF
            # |x f'/f| = 1/|ln x| for both log and log2
            el = inflate(1 / logmig, DERIV_REL) if logmig > 0 else INF
            return Deriv(fp, lg, el, k)
        if op == Op.SQRT:
            if a < 0:
                return Deriv(INF, INF, INF, INF)
            fp = inflate(0.5 / math.sqrt(a), DERIV_REL) if a > 0 else INF
            lg = inflate(0.5 / a, DERIV_REL) if a > 0 else INF
            return Deriv(fp, lg, 0.5, inflate(0.5 * math.sqrt(b), DERIV_REL))
        if op == Op.RSQRT:
            if a <= 0:
                return Deriv(INF, INF, INF, INF)
            return Deriv(inflate(0.5 * a ** -1.5, DERIV_REL), inflate(0.5 / a, DERIV_REL), 0.5,
                         inflate(0.5 / math.sqrt(a), DERIV_REL))
        if op == Op.TANH:
            t = math.tanh(m)
            fp = min(1.0, inflate(1 - t * t + 2.0 ** -50, DERIV_REL))
            lg = inflate(2 / math.sinh(2 * m), DERIV_REL) if m > 0 else INF
            return Deriv(fp, lg, 1.0, min(0.4478, inflate(M * fp, DERIV_REL)))
        if op == Op.SIGMOID:
            s = 1 / (1 + math.exp(-m)) if m < 700 else 1.0
            fp = min(0.25, inflate(s * (1 - s) + 2.0 ** -50, DERIV_REL))
            one_minus_lo = 1 - (1 / (1 + math.exp(-a)) if a > -700 else 0.0)
            lg = min(1.0, inflate(one_minus_lo + 2.0 ** -50, DERIV_REL))
            return Deriv(fp, lg, inflate(M * lg, DERIV_REL), inflate(M * fp, DERIV_REL))
        if op in (Op.SIN, Op.COS):
            d = I.cos(x) if op == Op.SIN else I.sin(x)
            fp = min(1.0, inflate(mag(d), DERIV_REL))
            fm = mig(_UNARY_IV[op](x))
            lg = inflate(fp / fm, DERIV_REL) if fm > 0 else INF
            return Deriv(fp, lg, inflate(M * lg, DERIV_REL), inflate(M * fp, DERIV_REL))
        if op in (Op.FLOOR, Op.CEIL):
            f = math.floor if op == Op.FLOOR else math.ceil
            const = math.isfinite(a) and math.isfinite(b) and f(a) == f(b)
            z = 0.0 if const else INF
            return Deriv(z, z, z, z)
    return Deriv(INF, INF, INF, INF)


def _safe_div(a: float, b: float) -> float:
    if a == 0:
        return 0.0
    if b <= 0:
        return INF
    return inflate(a / b, DERIV_REL)


def elasticity(op: str, x: Interval) -> float:
    """max |x f'(x) / f(x)| of a unary function over x (inf where unbounded)."""
    return derivative_bounds(op, x).el


# =============================================================================================
# the sensitivity propagation
def _smul(c: float | np.ndarray, v: np.ndarray) -> np.ndarray:
    """c * v with 0 * inf = 0 (no dependence stays no dependence)."""
    with np.errstate(invalid="ignore", over="ignore"):
        r = np.asarray(c, dtype=np.float64) * v
    return np.where(v == 0, 0.0, np.where(np.isnan(r), INF, r))


def _sadd(*vs: np.ndarray) -> np.ndarray:
    out = vs[0]
    for v in vs[1:]:
        out = out + v
    return out


@dataclass
class _Run:
    A: list[np.ndarray]
    E: list[np.ndarray]
    dep: list[np.ndarray]
    why: dict[int, str]


class _Propagator:
    def __init__(self, g: Graph, R: list[Interval], relative: bool):
        self.g = g
        self.R = R
        self.relative = relative
        self.P = len(g.params)

    def run(self) -> _Run:
        g, R, P = self.g, self.R, self.P
        A: list[np.ndarray] = []
        E: list[np.ndarray] = []
        dep: list[np.ndarray] = []
        why: dict[int, str] = {}
        pidx = {idx: k for k, (_, idx, _) in enumerate(g.params)}
        zero = np.zeros(P)
        for i, n in enumerate(g.nodes):
            if n.op == Op.PARAM:
                k = pidx[i]
                a, e, d = zero.copy(), zero.copy(), np.zeros(P, dtype=bool)
                d[k] = True
                r = R[i]
                if n.fmt.kind == "bool":
                    a[k] = e[k] = INF
                elif self.relative:
                    ok = sign_definite(r) != 0
                    a[k] = inflate(mag(r), DERIV_REL) if ok else INF
                    e[k] = 1.0 if ok else INF
                else:
                    a[k] = 1.0
                    e[k] = _safe_div(1.0, mig(r))
                A.append(a), E.append(e), dep.append(d)
                continue
            srcA = [A[s] for s in n.srcs]
            srcE = [E[s] for s in n.srcs]
            d = np.zeros(P, dtype=bool)
            for s in n.srcs:
                d |= dep[s]
            a, e, msg = self.rule(i, n, srcA, srcE, [dep[s] for s in n.srcs])
            a = np.where(d, a, 0.0)
            e = np.where(d, e, 0.0)
            # tighten A and E against each other
            Mv, mv = mag(R[i]), mig(R[i])
            with np.errstate(all="ignore"):
                a, e = self.tighten(n, R[i], a, e, Mv, mv)
            a = np.where(np.isnan(a), INF, a)
            e = np.where(np.isnan(e), INF, e)
            if msg is not None:
                why[i] = msg
            A.append(a), E.append(e), dep.append(d)
        return _Run(A, E, dep, why)

    @staticmethod
    def tighten(n: Node, Rv: Interval, a, e, Mv: float, mv: float):
        if True:
            if n.fmt is not None and n.fmt.kind != "bool":
                a = np.minimum(a, _smul(Mv, e)) if math.isfinite(Mv) else a
                e = np.minimum(e, np.where(a == 0, 0.0, a / mv if mv > 0 else INF)) \
                    if sign_definite(Rv) else np.where(a == 0, 0.0, INF)
        return a, e

    def rule(self, i: int, n: Node, sA, sE, sdep):
        g, R = self.g, self.R
        op = n.op
        P = self.P
        zero = np.zeros(P)
        inf = np.full(P, INF)
        x = [R[s] for s in n.srcs]
        if op in (Op.CONST, Op.DIM, Op.ARANGE, Op.RAND):
            return zero, zero, None
        if n.fmt is not None and n.fmt.kind == "bool":
            # truth values: constant where decided or independent, otherwise they can flip
            if _decided(R[i]) is not None:
                return zero, zero, None
            if op == Op.WHERE:
                return self.where(i, n, sA, sE, sdep)
            return inf, inf, None   # masked by dep
        if op in N.MOVEMENT or op == Op.ROUND and n.fmt.kind != "bool":
            if op == Op.CONCAT:
                return np.maximum.reduce(sA), np.maximum.reduce(sE), None
            if op == Op.ROUND and g.nodes[n.srcs[0]].fmt.kind == "bool":
                return (zero, zero, None) if _decided(x[0]) is not None else (inf, inf, "a truth value converted to a number can jump")
            return sA[0], sE[0], None
        if op in (Op.ADD, Op.SUB):
            xb = x[1] if op == Op.ADD else I.neg(x[1])
            a = sA[0] + sA[1]
            sa, sb = sign_definite(x[0]), sign_definite(xb)
            e = np.maximum(sE[0], sE[1]) if sa != 0 and sa == sb else inf
            return a, e, None
        if op == Op.MUL:
            if n.srcs[0] == n.srcs[1]:
                return _smul(2 * mag(x[0]), sA[0]), 2 * sE[0], None
            a = _smul(mag(x[1]), sA[0]) + _smul(mag(x[0]), sA[1])
            return a, sE[0] + sE[1], None
        if op == Op.DIV:
            if n.srcs[0] == n.srcs[1]:
                return zero, zero, None
            mb = mig(x[1])
            if mb <= 0:
                return inf, inf, "division by a value that can be 0"
            a = _smul(_safe_div(1.0, mb), sA[0]) + _smul(_safe_div(_safe_div(mag(x[0]), mb), mb), sA[1])
            return a, sE[0] + sE[1], None
        if op == Op.FMA:
            if n.srcs[0] == n.srcs[1]:
                pa, pe = _smul(2 * mag(x[0]), sA[0]), 2 * sE[0]
                prod = I.sqr(x[0])
            else:
                pa = _smul(mag(x[1]), sA[0]) + _smul(mag(x[0]), sA[1])
                pe = sE[0] + sE[1]
                prod = I.mul(x[0], x[1])
            a = pa + sA[2]
            sp, sc = sign_definite(prod), sign_definite(x[2])
            e = np.maximum(pe, sE[2]) if sp != 0 and sp == sc else inf
            return a, e, None
        if op in (Op.MIN, Op.MAX):
            a = np.maximum(sA[0], sA[1])
            sa, sb = sign_definite(x[0]), sign_definite(x[1])
            e = np.maximum(sE[0], sE[1]) if sa != 0 and sa == sb else inf
            return a, e, None
        if op == Op.MOD:
            return inf, inf, "mod is discontinuous"
        if op in _UNARY_IV:
            db = derivative_bounds(op, x[0])
            a = np.minimum(_smul(db.fp, sA[0]), _smul(db.xfp, sE[0]))
            e = np.minimum(_smul(db.lg, sA[0]), _smul(db.el, sE[0]))
            msg = None
            if not np.all(np.isfinite(a)):
                msg = f"{op} has no bounded derivative over its argument range " \
                      f"[{lo(x[0]):.4g}, {hi(x[0]):.4g}]"
            return a, e, msg
        if op == Op.WHERE:
            return self.where(i, n, sA, sE, sdep)
        if op == Op.SUM:
            k = reduce_count(g, n)
            if k is None:
                return inf, inf, f"the bound depends on the sizes {', '.join(sorted(g.unbound)) or '?'}"
            e = sE[0] if sign_definite(x[0]) else inf
            return _smul(float(k), sA[0]), e, None
        if op in (Op.MEAN, Op.RMAX, Op.RMIN):
            e = sE[0] if sign_definite(x[0]) else inf
            return sA[0], e, None
        if op == Op.MATMUL:
            k = matmul_k(g, n)
            if k is None:
                return inf, inf, f"the bound depends on the sizes {', '.join(sorted(g.unbound)) or '?'}"
            a = _smul(float(k), _smul(mag(x[1]), sA[0]) + _smul(mag(x[0]), sA[1]))
            prod = I.mul(x[0], x[1])
            e = sE[0] + sE[1] if sign_definite(prod) else inf
            return a, e, None
        if op == Op.TOPK_MASK:
            return inf, inf, None
        return inf, inf, f"no sensitivity rule for '{op}'"

    def where(self, i, n: Node, sA, sE, sdep):
        g, R = self.g, self.R
        c = _decided(R[n.srcs[0]])
        if c is True:
            return sA[1], sE[1], None
        if c is False:
            return sA[2], sE[2], None
        a = np.maximum(sA[1], sA[2])
        e = np.maximum(sE[1], sE[2])
        cdep = sdep[0]
        # the condition cannot change with an input it does not depend on
        a = np.where(cdep, INF, a)
        e = np.where(cdep, INF, e)
        cn = g.nodes[n.srcs[0]]
        if cn.op in (Op.LT, Op.LE, Op.GT, Op.GE) and \
                {cn.srcs[0], cn.srcs[1]} == {n.srcs[1], n.srcs[2]}:
            # where(p > q, p, q) is max(p, q) (and the other arrangements min/max): continuous
            a = np.maximum(sA[1], sA[2])
            e = np.maximum(sE[1], sE[2])
            return a, e, None
        msg = None
        if np.any(cdep):
            msg = "the branch taken by where() can switch as the input varies"
        return a, e, msg


@dataclass
class SensitivityResult:
    """Per-input sensitivities of a function (max over its outputs)."""

    values: dict[str, float | None]       # what the report shows: `metric` says which one
    metric: dict[str, str]                 # 'relative-precision' | 'absolute'
    absolute: dict[str, float | None]
    relative: dict[str, float | None]      # RP -> RP; None where undefined or unbounded
    reasons: dict[str, str]                # why a value is None
    per_output_absolute: list[dict[str, float | None]]


def _fin(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def sensitivity_analysis(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None,
                         param_ranges: list[Interval] | None = None) -> SensitivityResult:
    """Both metrics for every input; see the module docstring."""
    g = flatten(module, fn, dims)
    R = ideal_ranges(g, param_ranges)
    abs_run = _Propagator(g, R, relative=False).run()
    rel_run = _Propagator(g, R, relative=True).run()
    names = [name for name, _, _ in g.params]
    out_defined = all(sign_definite(R[o]) != 0 for o in g.outputs
                      if g.nodes[o].fmt.kind != "bool")
    absolute: dict[str, float | None] = {}
    relative: dict[str, float | None] = {}
    values: dict[str, float | None] = {}
    metric: dict[str, str] = {}
    reasons: dict[str, str] = {}
    per_out: list[dict[str, float | None]] = []
    for o in g.outputs:
        per_out.append({nm: _fin(abs_run.A[o][k]) for k, nm in enumerate(names)})
    for k, (nm, idx, p) in enumerate(g.params):
        a = max((abs_run.A[o][k] for o in g.outputs), default=0.0)
        e = max((rel_run.E[o][k] for o in g.outputs), default=0.0)
        in_def = sign_definite(R[idx]) != 0 and p.value.fmt.kind != "bool"
        absolute[nm] = _fin(a)
        relative[nm] = _fin(e) if (in_def and out_defined) else None
        if relative[nm] is not None:
            values[nm], metric[nm] = relative[nm], "relative-precision"
        else:
            values[nm], metric[nm] = absolute[nm], "absolute"
        if absolute[nm] is None:
            reasons[nm] = _explain(g, abs_run, k) or "the sensitivity is unbounded"
    return SensitivityResult(values, metric, absolute, relative, reasons, per_out)


def _explain(g: Graph, run: _Run, k: int) -> str | None:
    for i, n in enumerate(g.nodes):
        if n.op == Op.PARAM or not run.dep[i][k] or math.isfinite(run.A[i][k]):
            continue
        if all(math.isfinite(run.A[s][k]) or not run.dep[s][k] or
               (g.nodes[s].fmt is not None and g.nodes[s].fmt.kind == "bool") for s in n.srcs):
            msg = run.why.get(i)
            if msg is None:
                if n.fmt is not None and n.fmt.kind == "bool":
                    continue  # a truth value: the consumer says why it matters
                msg = f"'{n.op}' has no bounded derivative over the input ranges"
            where = f" ({n.span})" if n.span is not None else ""
            return msg + where
    if g.unbound:
        return f"the bound depends on the sizes {', '.join(sorted(g.unbound))}: give them"
    return None


def input_sensitivities(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None,
                        metric: str = "auto") -> dict[str, float | None]:
    """Per-input sensitivity bounds, max over the outputs; None where none can be established.

    metric: 'auto' (relative precision where the input and the outputs are sign-definite and
    the bound is finite, absolute otherwise: SPEC section 3), 'absolute' or 'relative'.
    """
    res = sensitivity_analysis(module, fn, dims)
    if metric == "absolute":
        return dict(res.absolute)
    if metric == "relative":
        return dict(res.relative)
    if metric != "auto":
        raise ValueError(f"unknown sensitivity metric {metric!r} (auto, absolute, relative)")
    return dict(res.values)
