"""The tensor tier with elementwise regions analysed precisely.

A tensor program is a chain of elementwise regions joined by reductions, products and data
movement. Reductions and products keep their closed-form rules (forward.py); each elementwise
region is sliced into a scalar program over the elements it reads - one variable per distinct
tensor it reads, whose ideal value ranges over that tensor's ideal range and whose computed
value carries that tensor's error - and bounded with the scalar tier's branch and bound.

Slicing keeps the relations that make block-scaled and normalised kernels analysable: an
element ``x`` and a reduction ``m = max(|x|)`` (or ``max(x)``, ``min(x)``) over a fiber that
contains it satisfy ``|x| <= m`` (``x <= m``, ``x >= m``); a maximum over a sub-block is at most
the maximum over the whole tensor. A relation is used only where the broadcast aligns the
element with its own fiber, which is checked from the shapes and the movement ops between.
The result for every value is intersected with the per-operation rules of the forward tier,
so the hybrid bound is never worse than the compositional one.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..ir import nodes as N
from ..ir.dims import Dim
from ..ir.nodes import Op, TensorType, Value
from . import scalar_error as SE
from .forward import AV, ForwardAnalysis, Result, SAFE, _f, _iv
from .interval import Interval
from .rounding_model import RoundSpec, judge

INF = math.inf
REGION_OPS = N.ELEMENTWISE | {Op.FMA}
MAX_REGION_VARS = 8
MAX_REGION_NODES = 400
# branch and bound budget per region (SE.analyse's work units, never seconds: bounds must not
# depend on the machine's load); at most about 0.6 s on a 2-core x86 sandbox, as the wall-clock
# budget it replaces; most regions stop at max_iters first
REGION_WORK = 2_000_000
QUICK_REGION_WORK = 400_000


class HybridAnalysis(ForwardAnalysis):
    """ForwardAnalysis whose elementwise values are re-bounded by sliced scalar analysis."""

    def __init__(self, module: N.Module, dims: dict[str, int], work: int = REGION_WORK,
                 max_iters: int = 40, tol: float = 0.02):
        super().__init__(module, dims)
        self.work = work                            # per region, in SE.analyse's work units
        self.max_iters, self.tol = max_iters, tol   # looser settings: quick probes (tuning)
        # per rounding site, its share of the bound of the region it lies in (first-order
        # terms |adjoint| * local error; the precision tuner reads them)
        self.value_terms: dict[Value, float] = {}
        self.region_sites: dict[int, list[tuple[Value | None, float, bool]]] = {}
        self.fn: N.Function | None = None
        self.env: dict[int, AV] = {}
        self.uses: dict[int, int] = {}

    def run(self, fn: N.Function, params: list[AV] | None = None) -> Result:
        self.fn = fn
        # which values need an abstract value of their own: operands of non-elementwise ops,
        # results, and values used by movement ops
        need: set[int] = {id(r) for r in fn.results}
        self.max_bases: set[int] = set()
        for v in N.toposort(fn.results):
            if v.op not in REGION_OPS:
                for s in v.srcs:
                    need.add(id(s))
            if v.op in (Op.RMAX, Op.RMIN):
                src = v.srcs[0]
                self.max_bases.add(id(src.srcs[0]) if src.op == Op.ABS else id(src))
            # arguments of functions that amplify range errors get their own tight bounds, so
            # the per-operation rules after them stay relative (exp of x - max(x), 1/sum)
            if v.op in (Op.EXP, Op.EXP2, Op.LOG, Op.LOG2, Op.SQRT, Op.RSQRT):
                need.add(id(v.srcs[0]))
            if v.op == Op.DIV:
                need.add(id(v.srcs[1]))
        for b in list(self.max_bases):
            need.add(b)
        self.need = need
        return super().run(fn, params)

    def rule(self, fn, v, x, span):
        av = super().rule(fn, v, x, span)
        if v.op in (Op.SUM, Op.MEAN) and math.isfinite(av.err):
            try:
                av = self.argmax_floor(fn, v, av)
            except (SE.Unsupported, ValueError, FloatingPointError):
                pass
        if v.op in REGION_OPS and id(v) in self.need and isinstance(v.type, TensorType) \
                and v.fmt.kind != "bool":
            better = self.region(fn, v, av)
            if better is not None:
                av = _meet(av, better)
        return av

    def argmax_floor(self, fn: N.Function, v: Value, av: AV) -> AV:
        """A sum over a fiber of h(x, max(x)) >= 0 includes the term at the argmax, h(m, m):
        softmax denominators are at least exp(0) = 1."""
        h = v.srcs[0]
        hav = self.env_get(h)
        if v.fmt.kind != "float":   # integer accumulators round each partial to an integer
            return av
        if h.op not in REGION_OPS or hav is None or _f(hav.R.lo) < 0:
            return av
        axes = v.attrs[0]
        b = _RegionBuilder(self, fn, h)
        prog = b.build()
        if prog is None:
            return av
        last = {}
        for idx, n in enumerate(prog.nodes):  # the final node of each variable
            if n.op == Op.PARAM:
                last[n.var] = idx
            elif n.op == "perturb" and prog.nodes[n.args[0]].op == Op.PARAM:
                last[prog.nodes[n.args[0]].var] = idx
        first = {n.var: idx for idx, n in enumerate(prog.nodes) if n.op == Op.PARAM}
        floor = None
        for i, j, kind in [c for c in prog.constraints if c[2] == "le"]:
            red = b.var_key[j][0]
            if red.op != Op.RMAX or tuple(red.attrs[0]) != tuple(axes) or \
                    red.srcs[0] is not b.var_key[i][0]:
                continue
            remap = {first[i]: first[j], last[i]: last[j]}
            sub = SE.ScalarProgram([replace(n, args=tuple(remap.get(a, a) for a in n.args))
                                    for n in prog.nodes],
                                   prog.outputs, prog.var_names, prog.box_lo, prog.box_hi,
                                   constraints=[c for c in prog.constraints if c[2] != "node_le"])
            lo_i, lo_c = _min_over_box(sub)
            n_terms = self.count(h, axes)
            steps = n_terms - 1 + (1 if judge(v).first_rounded else 0)
            g = steps * 2.0 ** -v.fmt.precision if v.fmt.kind == "float" else 0.0
            g = g / (1 - g) if g < 1 else 1.0
            if v.op == Op.MEAN:
                lo_i, lo_c = lo_i / n_terms, lo_c / n_terms
            cand = (lo_i, lo_c * (1 - g) * (1 - 2.0 ** -40))
            floor = cand if floor is None else (max(floor[0], cand[0]), max(floor[1], cand[1]))
        if floor is None or floor[0] <= 0:
            return av
        R = _iv(max(_f(av.R.lo), floor[0]), max(_f(av.R.hi), floor[0]))
        C = _iv(max(_f(av.C.lo), floor[1]), max(_f(av.C.hi), floor[1]))
        return replace(av, R=R, C=C)

    # -------------------------------------------------------------------------------------
    def region(self, fn: N.Function, root: Value, fav: AV | None = None) -> AV | None:
        """Slice the elementwise region ending at root into a scalar program and bound it."""
        try:
            builder = _RegionBuilder(self, fn, root)
            prog = builder.build()
        except SE.Unsupported:
            return None
        if prog is None:
            return None
        prog = ratio_substitute(prog)
        prog.factored = True
        objective = "rel" if fav is not None and _f(fav.R.mig()) > 0 else "abs"
        try:
            b = SE.analyse(prog, 0, work=self.work,
                           max_iters=self.max_iters, max_boxes=2048, tol=self.tol,
                           objective=objective)
        except (SE.Unsupported, ValueError, FloatingPointError):
            return None
        if not math.isfinite(b.abs_error):
            return None
        for node, share in b.site_share.items():
            sv = prog.nodes[node].value
            if sv is not None and 0 <= node < len(prog.nodes):
                self.value_terms[sv] = max(self.value_terms.get(sv, 0.0), share * b.abs_error)
        # the region's first-order terms as shares of its bound: rounding sites inside it,
        # and ("perturb") the errors of the tensors it reads (per-line contributions)
        self.region_sites[id(root)] = [(prog.nodes[k].value, s, prog.nodes[k].op == "perturb")
                                       for k, s in b.site_share.items()
                                       if 0 <= k < len(prog.nodes)]
        R = _iv(*b.ideal_range)
        C = _iv(*b.computed_range)
        if b.rel_error is not None and math.isfinite(b.rel_error):
            # both forms are sound; keep the one that is smaller at the largest ideal value
            m = _f(R.mag())
            if b.rel_error * m <= b.abs_error:
                return AV(R, C, b.rel_error * SAFE, 0.0)
        return AV(R, C, 0.0, b.abs_error * SAFE)


def ratio_substitute(prog: SE.ScalarProgram) -> SE.ScalarProgram:
    """Write each variable bounded by another (|x| <= m, or 0 <= x <= m) as x = t * m with a
    ratio t in [-1, 1] (or [0, 1]). Block-scaled and normalised kernels then become scale
    invariant for interval arithmetic: x * (c / m) keeps t and m apart, and subdividing m
    (geometrically) removes the overestimation, which no subdivision of (x, m) could."""
    parents: dict[int, list[tuple[int, str]]] = {}
    for c in prog.constraints:
        if c[2] == "absle":
            parents.setdefault(c[0], []).append((c[1], "abs"))
        elif c[2] == "le" and prog.box_lo[c[0]] >= 0:
            parents.setdefault(c[0], []).append((c[1], "pos"))
    if not parents:
        return prog
    # the tightest parent: one that is itself below another candidate, else the smallest
    choice: dict[int, tuple[int, str]] = {}
    for i, cands in parents.items():
        cands = [c for c in cands if c[0] != i]
        if not cands:
            continue
        ids = {j for j, _ in cands}
        inner = [c for c in cands if any(p in ids for p, _ in parents.get(c[0], []))]
        pick = inner or sorted(cands, key=lambda c: prog.box_hi[c[0]])
        choice[i] = pick[0]
    # no cycles: follow parents and drop a choice that leads back
    for i in list(choice):
        seen, cur = {i}, choice[i][0]
        while cur in choice:
            if cur in seen:
                del choice[i]
                break
            seen.add(cur)
            cur = choice[cur][0]
    if not choice:
        return prog
    param_node = {n.var: k for k, n in enumerate(prog.nodes) if n.op == Op.PARAM}
    order: list[int] = []           # substituted variables, parents first
    def visit(i: int) -> None:
        if i in order:
            return
        p = choice[i][0]
        if p in choice:
            visit(p)
        order.append(i)
    for i in choice:
        visit(i)
    # new node list: parameters, then x = t * parent (parents first), then the rest
    new_nodes: list[SE.SNode] = []
    remap: dict[int, int] = {}
    for k, n in enumerate(prog.nodes):
        if n.op == Op.PARAM:
            remap[k] = len(new_nodes)
            new_nodes.append(n)
    value_of: dict[int, int] = {}
    for i in order:
        p = choice[i][0]
        parent_value = value_of.get(p, remap[param_node[p]])
        t_node = remap[param_node[i]]          # the PARAM node of var i now holds the ratio
        new_nodes.append(SE.SNode(Op.MUL, (t_node, parent_value), None, fmt=prog.nodes[
            param_node[i]].fmt, value=prog.nodes[param_node[i]].value))
        value_of[i] = len(new_nodes) - 1
    for i in order:
        remap[param_node[i]] = value_of[i]
    ratio_nodes = {remap[param_node[i]] for i in order}
    for k, n in enumerate(prog.nodes):
        if n.op == Op.PARAM:
            continue
        remap[k] = len(new_nodes)
        new_nodes.append(replace(n, args=tuple(remap[a] for a in n.args)))
    # the MUL nodes read the ratio PARAM (by its position among the parameters)
    for node_index in ratio_nodes:
        n = new_nodes[node_index]
        i = next(v for v in order if value_of[v] == node_index)
        t_pos = next(k for k, m in enumerate(new_nodes) if m.op == Op.PARAM and m.var == i)
        new_nodes[node_index] = SE.SNode(Op.MUL, (t_pos, n.args[1]), None, fmt=n.fmt,
                                         value=n.value)
    lo, hi = prog.box_lo.copy(), prog.box_hi.copy()
    for i in order:
        kind = choice[i][1]
        lo[i], hi[i] = (-1.0, 1.0) if kind == "abs" else (0.0, 1.0)
        if kind == "abs" and prog.box_lo[i] >= 0:
            lo[i] = 0.0
        if kind == "abs" and prog.box_hi[i] <= 0:
            hi[i] = 0.0
    gone = set(order)
    cons = [c for c in prog.constraints
            if not (c[2] in ("absle", "le") and (c[0] in gone or c[1] in gone))
            and not (c[2] == "node_le" and c[1] in gone)]
    cons = [(remap[c[0]], c[1], c[2], c[3]) if c[2] == "node_le" else c for c in cons]
    out = SE.ScalarProgram(new_nodes, [remap[o] for o in prog.outputs], prog.var_names, lo, hi,
                           prog.has_branches, {}, cons, prog.factored,
                           {k: m for k, m in prog.zero_split.items() if k not in gone})
    return out


def _min_over_box(prog: SE.ScalarProgram, splits: int = 6) -> tuple[float, float]:
    """Lower bounds of the ideal and computed output over the (related) input box."""
    ev = SE._Eval(prog)
    lo = prog.box_lo[None, :].copy()
    hi = prog.box_hi[None, :].copy()
    for _ in range(splits):
        k = np.argmax(hi - lo, axis=1)
        mid = SE.split_points(lo[np.arange(len(k)), k], hi[np.arange(len(k)), k])
        lo2, hi2 = lo.copy(), hi.copy()
        hi[np.arange(len(k)), k] = mid
        lo2[np.arange(len(k)), k] = mid
        lo, hi = np.concatenate([lo, lo2]), np.concatenate([hi, hi2])
        if prog.constraints:
            lo, hi = SE.contract(lo, hi, prog.constraints)
    X = [Interval.of(lo[:, q], hi[:, q]) for q in range(lo.shape[1])]
    out = prog.outputs[0]
    iv = SE._Eval(prog).forward(X, perturbed=False)[0][out]
    pv = ev.forward(X, perturbed=True)[0][out]
    return float(np.min(iv.lo)), float(np.min(pv.lo))


def _meet(a: AV, b: AV) -> AV:
    """Both abstract values are sound: intersect the ranges, keep the smaller error."""
    R = _intersect(a.R, b.R)
    C = _intersect(a.C, b.C)
    mig, mag = _f(R.mig()), _f(R.mag())

    def at(r: float, e: float, c: float) -> float:
        return r * c + e if r else e

    a0, a1 = at(a.r, a.a, mig), at(a.r, a.a, mag)
    b0, b1 = at(b.r, b.a, mig), at(b.r, b.a, mag)
    # the primary form is what later rules propagate: the one better at both ends, else the
    # one better near zero (relative forms survive sums and quotients) unless far worse at
    # the top of the range
    if b0 <= a0 and b1 <= a1:
        take_b = True
    elif a0 <= b0 and a1 <= b1:
        take_b = False
    elif b0 < a0:
        take_b = b1 <= 4 * a1
    else:
        take_b = not (a1 <= 4 * b1)
    if take_b:
        return AV(R, C, b.r, b.a, a.stable and b.stable, None, None,
                  alt=(a.r, a.a) if math.isfinite(a.err) else None)
    return replace(a, R=R, C=C, alt=(b.r, b.a))


def _intersect(x: Interval, y: Interval) -> Interval:
    lo = max(_f(x.lo), _f(y.lo))
    hi = min(_f(x.hi), _f(y.hi))
    if lo > hi:  # cannot happen for sound enclosures; keep the first
        return x
    return _iv(lo, hi)


Map = tuple  # for each axis of a value: the root axis it follows, or None (broadcast)


class _RegionBuilder:
    """Builds the scalar program of one elementwise region.

    Every value reached from the root is keyed by its index map (which root axis each of its
    axes follows), so that a tensor read at two different alignments becomes two variables.
    """

    def __init__(self, ha: HybridAnalysis, fn: N.Function, root: Value):
        self.ha = ha
        self.fn = fn
        self.root = root
        self.nodes: list[SE.SNode] = []
        self.var_names: list[str] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.var_key: list[tuple[Value, Map]] = []
        self.node_of: dict[tuple[int, Map], int] = {}
        self.count = 0
        self.zero_split: dict[int, float] = {}

    def build(self) -> SE.ScalarProgram | None:
        prog = SE.ScalarProgram(self.nodes, [], self.var_names, np.zeros(0), np.zeros(0))
        self.prog = prog
        root_map = tuple(range(len(self.root.shape)))
        out = self._visit(self.root, root_map, prog)
        prog.outputs = [out]
        if not self.var_names:
            return None
        prog.constraints = self._relations()   # may add variables and nodes
        prog.box_lo = np.array(self.lo, float)
        prog.box_hi = np.array(self.hi, float)
        prog.zero_split = dict(self.zero_split)
        return prog

    def _visit(self, v: Value, m: Map, prog: SE.ScalarProgram) -> int:
        """Iterative post-order construction (programs can be deep)."""
        stack: list[tuple[Value, Map, bool]] = [(v, m, False)]
        while stack:
            cur, cm, expanded = stack.pop()
            key = (id(cur), cm)
            if key in self.node_of:
                continue
            kids = self._children(cur, cm)
            if kids is None:  # a leaf
                self.node_of[key] = self._leaf(cur, cm, prog)
                continue
            if not expanded:
                stack.append((cur, cm, True))
                for s, sm in kids:
                    if (id(s), sm) not in self.node_of:
                        stack.append((s, sm, False))
                continue
            self.count += 1
            if self.count > MAX_REGION_NODES:
                raise SE.Unsupported("region too large")
            args = [self.node_of[(id(s), sm)] for s, sm in kids]
            if cur.op in REGION_OPS:
                self.node_of[key] = SE._add_node(cur, args, prog, self.ha.module, 0)
            else:  # a transparent expansion: the same scalar
                self.node_of[key] = args[0]
        return self.node_of[(id(v), m)]

    def _children(self, v: Value, m: Map) -> list[tuple[Value, Map]] | None:
        if v is not self.root and id(v) in self.ha.max_bases and self.ha.env_get(v) is not None:
            return None  # cut: a tensor whose max is also read becomes a variable (relations)
        if v.op in REGION_OPS:
            out = []
            for s in v.srcs:
                out.append((s, _operand_map(v.shape, s.shape, m)))
            return out
        if v.op == Op.SLICE:
            items = v.attrs[0]
            src = v.srcs[0]
            real = [(k, it) for k, it in enumerate(items) if it[0] != "new"]
            full = len(real) == len(src.shape) and all(
                it[0] == "s" and it[1] == Dim.const(0) and it[2] == d and it[3] == 1
                for (_, it), d in zip(real, src.shape))
            if full:
                return [(src, tuple(m[k] for k, _ in real))]
            return None
        if v.op == Op.RESHAPE:
            src = v.srcs[0]
            a = [(k, d) for k, d in enumerate(v.shape) if d != Dim.const(1)]
            b = [(k, d) for k, d in enumerate(src.shape) if d != Dim.const(1)]
            if [d for _, d in a] == [d for _, d in b]:
                sm = [None] * len(src.shape)
                for (ka, _), (kb, _) in zip(a, b):
                    sm[kb] = m[ka]
                return [(src, tuple(sm))]
            return None
        return None

    def _leaf(self, v: Value, m: Map, prog: SE.ScalarProgram) -> int:
        """A tensor read by the region: an input variable carrying the tensor's error."""
        if v.op == Op.CONST and len(set(v.attrs[0])) == 1 and \
                (len(v.attrs) < 2 or v.attrs[1] is None or len(set(v.attrs[1])) == 1):
            ex = None if len(v.attrs) < 2 or v.attrs[1] is None else v.attrs[1][:1]
            scalar = Value(Op.CONST, (), (v.attrs[0][:1], ex) + v.attrs[2:],
                           TensorType(v.fmt, ()))
            return SE._add_node(scalar, [], prog, self.ha.module, 0)
        av = self.ha.env_get(v)
        if av is None:
            raise SE.Unsupported("no abstract value for a leaf")
        lo, hi = _f(av.R.lo), _f(av.R.hi)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise SE.Unsupported("unbounded leaf")
        if v.fmt.kind == "bool" and not av.stable:
            raise SE.Unsupported("unstable condition")
        if not math.isfinite(av.err):
            raise SE.Unsupported("leaf without a finite error bound")
        if len(self.var_names) >= MAX_REGION_VARS:
            raise SE.Unsupported("too many variables")
        k = len(self.var_names)
        if v.fmt.kind == "float" and not av.r and not av.a and v.fmt.name != "f64":
            # an exact leaf holds values of its format in both programs: 0 or at least the
            # smallest positive magnitude
            self.zero_split[k] = v.fmt.min_subnormal
        self.var_names.append(f"v{k}")
        self.lo.append(lo)
        self.hi.append(hi)
        self.var_key.append((v, m))
        self.nodes.append(SE.SNode(Op.PARAM, var=k, fmt=v.fmt, value=v))
        node = len(self.nodes) - 1
        if av.r or av.a:
            spec = RoundSpec(v.fmt, av.r, av.a, False, INF)
            clo, chi = _f(av.C.lo), _f(av.C.hi)
            self.nodes.append(SE.SNode("perturb", (node,), spec, fmt=v.fmt, value=v,
                                       computed=(clo, chi) if clo <= chi else None))
            node = len(self.nodes) - 1
        return node

    # relations ------------------------------------------------------------------------------
    def _relations(self) -> list[tuple]:
        out: list[tuple] = []
        for j, (rv, rm) in enumerate(self.var_key):
            if rv.op in (Op.SUM, Op.MEAN):
                out.extend(self._sum_dominates(j, rv, rm))
                continue
            if rv.op not in (Op.RMAX, Op.RMIN):
                continue
            red = rv
            src = red.srcs[0]
            is_abs = src.op == Op.ABS
            base = src.srcs[0] if is_abs else src
            axes, keep, _ = red.attrs
            full = len(axes) == len(base.shape)
            for i, (xv, xm) in enumerate(self.var_key):
                if i == j:
                    continue
                if full:
                    # the maximum of every element of base's source tensor: base must hold
                    # all of them (a slice's maximum bounds only the slice)
                    ok = _movement_base(xv) is _movement_base(base) and _holds_all(base)
                elif xv is base:
                    if keep:
                        want = tuple(None if a in axes else xm[a] for a in range(len(xm)))
                    else:
                        want = tuple(xm[a] for a in range(len(xm)) if a not in axes)
                    ok = want == rm
                else:
                    ok = False
                if not ok:
                    continue
                if is_abs and red.op == Op.RMAX:
                    out.append((i, j, "absle"))
                elif not is_abs and red.op == Op.RMAX:
                    out.append((i, j, "le"))
                elif not is_abs and red.op == Op.RMIN:
                    out.append((j, i, "le"))
            # a maximum over a sub-block is at most the maximum over the whole tensor
            if red.op == Op.RMAX:
                for k, (other, _) in enumerate(self.var_key):
                    if k == j or other.op != Op.RMAX or other is red:
                        continue
                    osrc = other.srcs[0]
                    if (osrc.op == Op.ABS) != is_abs:
                        continue
                    obase = osrc.srcs[0] if is_abs else osrc
                    if len(other.attrs[0]) == len(obase.shape) and _holds_all(obase) and \
                            _movement_base(obase) is _movement_base(base):
                        out.append((j, k, "le"))
        return out


    def _sum_dominates(self, j: int, s: Value, sm: Map) -> list[tuple]:
        """A sum of non-negative terms is at least each of its terms (aligned, same fiber)."""
        h = s.srcs[0]
        av = self.ha.env_get(h)
        if av is None or _f(av.R.lo) < 0:
            return []
        axes, keep, _ = s.attrs
        scale = 1.0
        if s.op == Op.MEAN:
            try:
                scale = float(self.ha.count(h, axes))
            except Exception:
                return []
        out = []
        cands = [(vid, hm) for (vid, hm) in self.node_of if vid == id(h)]
        if h.shape == self.root.shape:  # the term at this element's own position
            cands.append((id(h), tuple(range(len(h.shape)))))
        for vid, hm in cands:
            if keep:
                want = tuple(None if a in axes else hm[a] for a in range(len(hm)))
            else:
                want = tuple(hm[a] for a in range(len(hm)) if a not in axes)
            if want != sm:
                continue
            try:
                node = self._visit(h, hm, self.prog)
            except SE.Unsupported:
                continue
            out.append((node, j, "node_le", scale))
            break
        return out


def _operand_map(out_shape, in_shape, m: Map) -> Map:
    """Index map of an operand broadcast (numpy, right-aligned) into an op's result."""
    off = len(out_shape) - len(in_shape)
    res = []
    for d in range(len(in_shape)):
        od = d + off
        if in_shape[d] == Dim.const(1) and out_shape[od] != Dim.const(1):
            res.append(None)
        else:
            res.append(m[od])
    return tuple(res)


def _holds_all(v: Value) -> bool:
    """Every element of _movement_base(v) is an element of v (no slicing on the way)."""
    cur = v
    while cur.op in (Op.SLICE, Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST):
        if cur.op == Op.SLICE:
            src = cur.srcs[0]
            real = [it for it in cur.attrs[0] if it[0] != "new"]
            if not (len(real) == len(src.shape) and all(
                    it[0] == "s" and it[1] == Dim.const(0) and it[2] == d and it[3] == 1
                    for it, d in zip(real, src.shape))):
                return False
        cur = cur.srcs[0]
    return True


def _movement_base(v: Value) -> Value:
    """The tensor a value's elements come from (through any data movement)."""
    cur = v
    while cur.op in (Op.SLICE, Op.RESHAPE, Op.TRANSPOSE, Op.BROADCAST):
        cur = cur.srcs[0]
    return cur
