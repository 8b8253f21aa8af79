"""Precise forward error bounds for scalar straight-line programs (the FPBench tier).

Every rounding site i computes ``v_i = w_i (1 + d_i) + e_i`` (rounding_model). The computed
output is ``F(x, d, e)``; the ideal one is ``F(x, 0, 0)``. By the mean value theorem (Lebourg's
form for the Lipschitz pieces: abs, min, max, clamps), for some point on the segment,

    F(x, d, e) - F(x, 0, 0) = sum_i dF/dd_i * d_i + dF/de_i * e_i,

with ``dF/dd_i = adj_i * w_i``, ``adj_i`` the derivative of the output with respect to ``v_i``
in the perturbed program. Enclosing ``adj_i`` and ``w_i`` with interval arithmetic over an input
box and over the whole perturbation box ``|d| <= u, |e| <= eta`` therefore gives a rigorous
bound; no separate second-order remainder is needed (the perturbation box already covers it).
A branch whose condition is not decided on a box has no such form: there the bound is the
interval difference of the computed and ideal outputs. An interval branch and bound over the
input box tightens the maximum, vectorised over thousands of boxes at once.

Rounded constants contribute ``adj_c * (fl(c) - c)`` with their exact rounding error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from ..ir import nodes as N
from ..ir.formats import Format, round_array
from ..ir.nodes import Op, Value
from . import interval as I
from .inline import inline_calls
from .interval import Interval
from .outward import down, up
from .rounding_model import DISCONTINUOUS, RoundSpec, judge, sign_bit_clear

INF = float("inf")

EXACT_UNARY = {Op.NEG, Op.ABS, Op.FLOOR, Op.CEIL}
SCALAR_UNARY = {Op.SQRT, Op.EXP, Op.LOG, Op.EXP2, Op.LOG2, Op.TANH, Op.SIGMOID, Op.SIN, Op.COS,
                Op.RSQRT}
EXACT_BINARY = {Op.MIN, Op.MAX}
ROUNDED_BINARY = {Op.ADD, Op.SUB, Op.MUL, Op.DIV}


SEGMENT = "segment"   # forward(): the enclosure of the mean-value segment (see _Eval)


class Unsupported(Exception):
    """The program is outside what this analysis handles (the caller falls back)."""


@dataclass
class SNode:
    op: str
    args: tuple[int, ...] = ()
    spec: RoundSpec | None = None       # rounding of this node's result (None: exact)
    var: int | None = None              # input variable index (params)
    const: float | None = None          # rounded constant value
    const_err: float = 0.0              # fl(c) - c, an upper bound on its magnitude
    const_exact: Fraction | None = None
    const_radius: Fraction = Fraction(0)   # the real constant is within this of const_exact
    fmt: Format | None = None
    value: Value | None = None
    fits: bool = False                  # operands are values of fmt (exactness rules apply)
    computed: tuple[float, float] | None = None   # perturb leaves: every computed value's hull


@dataclass
class ScalarProgram:
    """A scalar DAG in evaluation order; output node indices; input variable boxes."""

    nodes: list[SNode]
    outputs: list[int]
    var_names: list[str]
    box_lo: np.ndarray
    box_hi: np.ndarray
    has_branches: bool = False
    node_of: dict[int, int] = field(default_factory=dict)
    # relations between input variables: (i, j, 'absle') means |x_i| <= x_j, 'le' x_i <= x_j
    constraints: list[tuple[int, int, str]] = field(default_factory=list)
    # relational programs (the hybrid tier's slices) also bound the ideal values with a
    # factored form ``monomial(vars) * interval`` that sees cancellations (x * (c / x))
    factored: bool = False
    # variables whose values are those of a format in both programs (exact leaves): a box
    # that reaches 0 is split into {0} and the part beyond the smallest nonzero magnitude
    zero_split: dict[int, float] = field(default_factory=dict)
    # the function the nodes' values belong to (calls inlined by inline_calls)
    source: N.Function | None = None


def build(fn: N.Function, module: N.Module | None = None) -> ScalarProgram:
    """The scalar program of a function whose values are all scalars (callees are inlined)."""
    nodes: list[SNode] = []
    var_names: list[str] = []
    lo, hi = [], []
    for p in fn.params:
        if p.value.shape:
            raise Unsupported(f"parameter '{p.name}' is a tensor")
        if p.range is None:
            raise Unsupported(f"parameter '{p.name}' has no declared range")
        if p.value.fmt.kind == "bool":
            raise Unsupported(f"parameter '{p.name}' is bool")
        var_names.append(p.name)
        lo.append(p.range[0])
        hi.append(p.range[1])
    for i in range(len(fn.params)):
        nodes.append(SNode(Op.PARAM, var=i, fmt=fn.params[i].value.fmt, value=fn.params[i].value))
    prog = ScalarProgram(nodes, [], var_names, np.array(lo, float), np.array(hi, float))
    flat = inline_calls(module, fn) if module is not None else fn
    prog.source = flat
    local: dict[int, int] = {id(p.value): k for k, p in enumerate(flat.params)}
    for v in N.toposort(flat.results):
        if id(v) in local:
            continue
        if v.op == Op.CALL:
            raise Unsupported("call to an unknown function")
        if isinstance(v.type, N.TensorType) and v.shape:
            raise Unsupported("tensor values (use the tensor-level analysis)")
        local[id(v)] = _add_node(v, [local[id(s)] for s in v.srcs], prog, module, 0)
    prog.outputs = [local[id(r)] for r in flat.results]
    return prog


def _add_node(v: Value, args: list[int], prog: ScalarProgram, module, depth: int) -> int:
    nodes = prog.nodes
    op = v.op

    def push(n: SNode) -> int:
        n.value = v
        nodes.append(n)
        return len(nodes) - 1

    if op == Op.CONST:
        val = v.attrs[0][0]
        exact = v.attrs[1][0] if len(v.attrs) > 1 and v.attrs[1] is not None else None
        err = 0.0
        if exact is not None:
            if not math.isfinite(val):
                raise Unsupported("a constant overflows its format")
            err = up(N.const_error(v))
        return push(SNode(op, const=float(val), const_err=err, const_exact=exact,
                          const_radius=N.const_radius(v), fmt=v.fmt))
    fmt = v.fmt
    j = judge(v)   # the one rounding judgement: whether, into what, and may it be exact
    if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.AND, Op.OR, Op.NOT):
        prog.has_branches = True
        return push(SNode(op, tuple(args), fmt=fmt))
    if op == Op.WHERE:
        prog.has_branches = True
        return push(SNode(op, tuple(args), j.spec, fmt=fmt, fits=j.operands_fit))
    if fmt.kind != "float":
        raise Unsupported(f"{fmt.name} arithmetic")
    if op in ROUNDED_BINARY or op in SCALAR_UNARY or op in EXACT_UNARY or \
            op in EXACT_BINARY or op in (Op.FMA, Op.ROUND):
        if op in (Op.FLOOR, Op.CEIL):
            prog.has_branches = True
        return push(SNode(op, tuple(args), j.spec, fmt=fmt, fits=j.operands_fit))
    raise Unsupported(f"operation '{op}'")


# ---------------------------------------------------------------------------------------------
# evaluation over boxes
class _Eval:
    """Interval evaluation of a scalar program over a batch of boxes.

    ``forward(X, perturbed)``: False evaluates the ideal program; True the computed one (every
    rounding site w (1 + d) + e, saturation clamped, constants rounded); SEGMENT every point
    between the two (saturated sites hold w too, constants the hull of exact and rounded), where
    the mean-value form's adjoints must be enclosed."""

    def __init__(self, prog: ScalarProgram):
        self.prog = prog
        self.needs_segment = any(
            (n.spec is not None and n.spec.sat and n.args) or n.computed is not None or
            (n.op == Op.CONST and n.const_exact is not None) for n in prog.nodes)
        # relations between variables make some differences and ratios sign-known
        finals: dict[int, int] = {}
        for idx, n in enumerate(prog.nodes):
            if n.op == Op.PARAM:
                finals[n.var] = idx
            elif n.op == "perturb" and prog.nodes[n.args[0]].op == Op.PARAM:
                finals[prog.nodes[n.args[0]].var] = idx
        self.le_pairs: set[tuple[int, int]] = set()
        self.absle_pairs: set[tuple[int, int]] = set()
        for c in prog.constraints:
            if c[2] in ("le", "absle") and c[0] in finals and c[1] in finals:
                pair = (finals[c[0]], finals[c[1]])
                (self.le_pairs if c[2] == "le" else self.absle_pairs).add(pair)
        self.forms = _static_forms(prog) if prog.factored else None
        self.clips = absorbing_clips(prog)
        self.negzero = _negative_zero_divisors(prog)
        self.zvars = sorted(k for k in set().union(*[f[1] for f in self.forms]) if k >= 0) \
            if self.forms else []

    def forward(self, X: list[Interval], perturbed: bool):
        """Node intervals; for perturbed runs also the pre-rounding intervals w_i."""
        if self.forms is not None and X:
            return self._forward_factored(X, perturbed)
        return self._forward(X, perturbed)

    def _forward_factored(self, X: list[Interval], perturbed: bool):
        """Each value also enclosed by its factored form M(x) * W (in the computed program a
        rounding multiplies W by [1 - u, 1 + u] where it provably has no absolute error,
        saturation or overflow).

        The form of a value holds at the points of the box where none of its variables in Z
        (those divided by, or factored out of a min/max/where) is 0; the points where one
        is 0 are covered by a plain evaluation of that slice of the box."""
        shape = X[0].shape
        slices: dict[int, tuple[np.ndarray, list]] = {}
        for k in self.zvars:
            touch = (X[k].lo <= 0) & (X[k].hi >= 0)
            if touch.any():
                idx = np.flatnonzero(touch.ravel()) if touch.ndim else None
                if idx is None:
                    Xk = list(X)
                else:
                    Xk = [Interval._new(x.lo.ravel()[idx], x.hi.ravel()[idx]) for x in X]
                z = np.zeros(Xk[k].shape)
                Xk[k] = Interval._new(z, z)
                slices[k] = (touch, idx, self._forward(Xk, perturbed)[0])
        return self._forward(X, perturbed, (slices, shape, [None] * len(self.prog.nodes)))

    def _forward(self, X: list[Interval], perturbed: bool, factor=None):
        nodes = self.prog.nodes
        vals: list = [None] * len(nodes)
        pre: list = [None] * len(nodes)
        decided_ok = np.ones(X[0].shape, bool) if X else np.ones((), bool)
        dyn: list = [None] * len(nodes) if factor is not None else None
        for i, n in enumerate(nodes):
            a = [vals[j] for j in n.args]
            if n.op == Op.PARAM:
                w = X[n.var]
            elif n.op == Op.CONST:
                w = Interval.point(np.full(X[0].shape, n.const))
                if n.const_exact is not None:
                    # the ideal program reads the exact constant; the perturbed one the whole
                    # segment from it to the rounded one, so that adjoints cover the mean-value
                    # point between the two (the constant's error is a perturbation too)
                    ex = _exact_interval(n.const_exact, X[0].shape, n.const_radius)
                    if not perturbed:
                        w = ex
                    elif perturbed == SEGMENT:
                        w = Interval._new(np.minimum(w.lo, ex.lo), np.maximum(w.hi, ex.hi))
            elif n.op == "tuple":
                vals[i] = None
                continue
            else:
                w, ok = _apply(n.op, a)
                if ok is not None:
                    decided_ok &= ok
                if perturbed and i in self.negzero:
                    w = _through_negative_zero(n.op, a, w)
                if len(n.args) == 2 and (self.le_pairs or self.absle_pairs):
                    w = self._relate(n, w)
            if dyn is not None and w is not None:
                w = self._tighten(i, n, w, X, vals, dyn, factor)
            pre[i] = w
            if perturbed and n.spec is not None:
                vals[i] = _spread(w, n.spec, None if perturbed == SEGMENT else n.computed) \
                    if n.op == "perturb" else \
                    _perturb(w, n.spec, perturbed == SEGMENT)
                if dyn is not None and dyn[i] is not None:
                    dyn[i] = _round_form(n, w, dyn[i])
            else:
                vals[i] = w
        return vals, pre, decided_ok

    def _relate(self, n: SNode, w: Interval) -> Interval:
        """x <= m gives x - m <= 0; |x| <= m gives |x / m| <= 1 (in both programs)."""
        a, b = n.args
        if n.op == Op.SUB and (a, b) in self.le_pairs:
            return Interval.of(np.minimum(w.lo, 0.0), np.minimum(w.hi, 0.0))
        if n.op == Op.SUB and (b, a) in self.le_pairs:
            return Interval.of(np.maximum(w.lo, 0.0), np.maximum(w.hi, 0.0))
        if n.op == Op.DIV and (a, b) in self.absle_pairs:
            return Interval.of(np.clip(w.lo, -1.0, 1.0), np.clip(w.hi, -1.0, 1.0))
        return w

    def _tighten(self, i: int, n: SNode, w: Interval, X, vals, dyn, factor) -> Interval:
        """Intersect w with the factored enclosure of node i (ideal program)."""
        slices, shape, atoms = factor
        M, Z, info = self.forms[i]
        W, valid, atom = _dyn_form(n, info, self.forms, dyn, atoms, X, vals, w, shape)
        dyn[i] = (W, valid)
        if atom is not None:
            atoms[i] = atom
        if not M or info[0] in ("atom", "param") or not valid.any():
            return w
        with np.errstate(all="ignore"):
            for k in Z:
                if k < 0:  # an atom that is divided by or factored out must not be 0
                    A = atoms[-k - 1]
                    valid = valid & ((A.lo > 0) | (A.hi < 0))
            F = _mono_eval(M, X, atoms, shape) * W
            lo, hi = F.lo, F.hi
            for k in Z:
                if k >= 0 and k in slices:
                    touch, idx, sv = slices[k]
                    if sv[i] is None:
                        valid = valid & ~touch
                        continue
                    if idx is None:
                        lo = np.minimum(lo, sv[i].lo)
                        hi = np.maximum(hi, sv[i].hi)
                    else:
                        lo, hi = lo.copy(), hi.copy()
                        lo.ravel()[idx] = np.minimum(lo.ravel()[idx], sv[i].lo)
                        hi.ravel()[idx] = np.maximum(hi.ravel()[idx], sv[i].hi)
            nlo = np.where(valid, np.maximum(w.lo, lo), w.lo)
            nhi = np.where(valid, np.minimum(w.hi, hi), w.hi)
            ok = (nlo <= nhi) & ~np.isnan(nlo) & ~np.isnan(nhi)
        return Interval._new(np.where(ok, nlo, w.lo), np.where(ok, nhi, w.hi))

    def reverse(self, vals, pre, out: int):
        """Interval adjoints d out / d v_i over the perturbed program."""
        nodes = self.prog.nodes
        shape = vals[out].shape
        zero = Interval.point(np.zeros(shape))
        adj: list = [None] * len(nodes)
        adj[out] = Interval.point(np.ones(shape))
        valid = np.ones(shape, bool)
        for i in range(len(nodes) - 1, -1, -1):
            g = adj[i]
            n = nodes[i]
            if g is None or not n.args or n.op == "tuple":
                continue
            if n.spec is not None:
                # v = w + rho with rho the whole rounding error (clamp included): dv/dw = 1,
                # and the perturbed program's later factors (1 + d) enclose the rest
                g = g * Interval.of(np.full(shape, 1 - n.spec.u), np.full(shape, 1 + n.spec.u))
            a = [vals[j] for j in n.args]
            contribs, ok = _partials(n.op, a, pre[i], g)
            if ok is not None:
                valid &= ok
            for j, c in zip(n.args, contribs):
                if c is None:
                    continue
                adj[j] = c if adj[j] is None else adj[j] + c
        for i in range(len(adj)):
            if adj[i] is None:
                adj[i] = zero
        return adj, valid


# ---------------------------------------------------------------------------------------------
# factored forms of ideal values: v = M * W with M a monomial (integer exponents) in atoms and
# W a constant interval. The atoms are the input variables (key k >= 0) and the non-monomial
# parts of values (key -(i+1) for node i: its value divided by its monomial part), so that a
# quantity used twice cancels too: t * m * min(c / m, B) = t * min(c, B m), and
# (m * s / 6) * (1 / s) = m / 6 for a clamped scale s. Products and quotients multiply
# monomials; min, max and where factor one operand's monomial out (min(M a, M b) = M min(a, b)
# for M > 0); anything else is an atom of its own.
Mono = tuple  # ((key, exponent), ...), sorted, no zero exponents


def _mono_mul(a: Mono, b: Mono, sign: int = 1) -> Mono:
    d = dict(a)
    for v, e in b:
        d[v] = d.get(v, 0) + sign * e
    return tuple(sorted((v, e) for v, e in d.items() if e != 0))


def _mono_keys(m: Mono) -> frozenset:
    return frozenset(v for v, _ in m)


def _atom(key: int, X: list[Interval], atoms: list) -> Interval:
    return X[key] if key >= 0 else atoms[-key - 1]


def _mono_eval(m: Mono, X: list[Interval], atoms: list, shape) -> Interval:
    r = None
    for v, e in m:
        f = _atom(v, X, atoms)
        f = f if e == 1 else I.pow_int(f, e)
        r = f if r is None else r * f
    return Interval.point(np.ones(shape)) if r is None else r


def _mono_sign(m: Mono, X: list[Interval], atoms: list, shape) -> tuple[np.ndarray, np.ndarray]:
    """Boxes where the monomial is > 0 (resp. < 0) at every point where its atoms are
    nonzero (the points where an atom is 0 are excluded by the caller, see Z)."""
    pos = np.ones(shape, bool)
    neg = np.zeros(shape, bool)
    for v, e in m:
        if e % 2 == 0:
            continue
        a = _atom(v, X, atoms)
        p, q = a.lo >= 0, a.hi <= 0
        ok = p | q
        pos, neg = ok & np.where(q, neg, pos), ok & np.where(q, pos, neg)
    return pos, neg


def _static_forms(prog: "ScalarProgram") -> list:
    """Per node: (M, Z, info): the monomial, the atoms that must be nonzero for the form to
    hold, and how the node's W (or its atom) is formed (see _dyn_form)."""
    forms: list = []
    for i, n in enumerate(prog.nodes):
        f = [forms[j] for j in n.args] if n.args else []
        op = n.op
        me = ((-(i + 1), 1),)
        if op == Op.PARAM:
            forms.append((((n.var, 1),), frozenset(), ("param",)))
        elif op == Op.CONST or op == "tuple" or (n.fmt is not None and n.fmt.kind == "bool"):
            forms.append(((), frozenset(), ("plain",)))
        elif op in (Op.ROUND, "perturb"):
            forms.append((f[0][0], f[0][1], ("copy",)))
        elif op == Op.NEG:
            forms.append((f[0][0], f[0][1], ("neg",)))
        elif op == Op.MUL and len(f) == 2:
            forms.append((_mono_mul(f[0][0], f[1][0]), f[0][1] | f[1][1], ("mul",)))
        elif op == Op.DIV and len(f) == 2:
            forms.append((_mono_mul(f[0][0], f[1][0], -1),
                          f[0][1] | f[1][1] | _mono_keys(f[1][0]), ("div",)))
        elif op in (Op.ADD, Op.SUB) and len(f) == 2 and f[0][0] and f[0][0] == f[1][0]:
            # M a + M b = M (a + b): a new atom (a + b)
            forms.append((_mono_mul(f[0][0], me), f[0][1] | f[1][1], ("addsame",)))
        elif op in (Op.MIN, Op.MAX, Op.WHERE) and \
                any(g[0] for g in (f[0], f[1]) if op != Op.WHERE) | \
                (op == Op.WHERE and bool(f[1][0] or f[2][0])):
            fa, fb = (f[0], f[1]) if op != Op.WHERE else (f[1], f[2])
            k = 0 if fa[0] else 1
            m = (fa, fb)[k][0]
            forms.append((_mono_mul(m, me), fa[1] | fb[1] | _mono_keys(m), ("sel", k)))
        elif op == Op.ABS and f[0][0]:
            forms.append((f[0][0], f[0][1], ("abs",)))
        else:
            forms.append((me, frozenset(), ("atom",)))
    return forms


def _round_form(n: SNode, w: Interval, d):
    """The form of fl(w) from the form (W, valid) of w: W (1 + d), |d| <= u, on the boxes
    where the rounding has no absolute part (w normal, or eta = 0), no saturation and no
    overflow; elsewhere the form is not valid."""
    W, valid = d
    s = n.spec
    with np.errstate(all="ignore"):
        ok = w.mag() <= s.max_finite if s.fmt.kind == "float" else np.ones(w.shape, bool)
        if s.eta:
            tiny = 2 * s.fmt.min_normal if (n.op != "perturb" and s.fmt.kind == "float") \
                else INF
            ok = ok & (w.mig() >= tiny)
        valid = valid & ok
        u = Interval._new(np.full(w.shape, 1 - s.u_rel), np.full(w.shape, 1 + s.u_rel))
        return _sane(W * u, valid), valid


def _sane(W: Interval, valid: np.ndarray) -> Interval:
    lo = np.where(valid & ~np.isnan(W.lo), W.lo, 1.0)
    hi = np.where(valid & ~np.isnan(W.hi), W.hi, 1.0)
    return Interval._new(np.minimum(lo, hi), np.maximum(lo, hi))


def _dyn_form(n: SNode, info, forms, dyn, atoms, X, vals, w: Interval, shape):
    """(W, valid, atom): the node's constant factor W, the boxes where its form holds, and
    the value of its own atom (None if it has none)."""
    kind = info[0]
    allv = np.ones(shape, bool)
    one = Interval.point(np.ones(shape))
    if kind == "plain":
        return w, allv, None
    if kind == "param":
        return one, allv, None
    if kind == "atom":
        return one, allv, w
    d = [dyn[j] for j in n.args]
    with np.errstate(all="ignore"):
        if kind == "copy":
            return d[0][0], d[0][1], None
        if kind == "neg":
            return -d[0][0], d[0][1], None
        if kind == "abs":
            M = forms[n.args[0]][0]
            pos, neg = _mono_sign(M, X, atoms, shape)
            W = I.abs(d[0][0])
            W = Interval._new(np.where(neg, -W.hi, W.lo), np.where(neg, -W.lo, W.hi))
            ok = d[0][1] & (pos | neg)
            return _sane(W, ok), ok, None
        if kind == "mul":
            valid = d[0][1] & d[1][1]
            W = I.sqr(d[0][0]) if n.args[0] == n.args[1] else d[0][0] * d[1][0]
            return _sane(W, valid), valid, None
        if kind == "div":
            valid = d[0][1] & d[1][1]
            return _sane(I.div(d[0][0], d[1][0]), valid), valid, None
        if kind == "addsame":
            valid = d[0][1] & d[1][1]
            A = d[0][0] + d[1][0] if n.op == Op.ADD else d[0][0] - d[1][0]
            return one, valid, _sane(A, valid)
        # sel: min / max / where with the monomial of operand k factored out
        k = info[1]
        ia, ib = (n.args[0], n.args[1]) if n.op != Op.WHERE else (n.args[1], n.args[2])
        (Wa, va), (Wb, vb) = dyn[ia], dyn[ib]
        Ma, Mb = forms[ia][0], forms[ib][0]
        M = (Ma, Mb)[k]
        if k == 0:
            Wb = _mono_eval(_mono_mul(Mb, Ma, -1), X, atoms, shape) * Wb
        else:
            Wa = _mono_eval(_mono_mul(Ma, Mb, -1), X, atoms, shape) * Wa
        pos, neg = _mono_sign(M, X, atoms, shape)
        ok = va & vb & (pos | neg)
        if n.op == Op.WHERE:
            c = vals[n.args[0]]
            t, f = c.lo == 1, c.hi == 0
            lo = np.where(t, Wa.lo, np.where(f, Wb.lo, np.minimum(Wa.lo, Wb.lo)))
            hi = np.where(t, Wa.hi, np.where(f, Wb.hi, np.maximum(Wa.hi, Wb.hi)))
            return one, ok, _sane(Interval._new(lo, hi), ok)
        lo_ = I.min(Wa, Wb) if n.op == Op.MIN else I.max(Wa, Wb)
        hi_ = I.max(Wa, Wb) if n.op == Op.MIN else I.min(Wa, Wb)
        # M > 0: min(M a, M b) = M min(a, b); M < 0: = M max(a, b)
        A = Interval._new(np.where(neg, hi_.lo, lo_.lo), np.where(neg, hi_.hi, lo_.hi))
        return one, ok, _sane(A, ok)


def _exact_interval(x: Fraction, shape, radius: Fraction = Fraction(0)) -> Interval:
    """The real value of a constant: x, or anywhere within radius of it."""
    return Interval.of(np.full(shape, down(x - radius)), np.full(shape, up(x + radius)))


def _perturb(w: Interval, s: RoundSpec, segment: bool = False) -> Interval:
    """The computed values fl(w); with segment, every value on the segment from w to fl(w)
    (the points where the mean-value form evaluates adjoints)."""
    r = _rounded(w, s)
    if s.sat and segment:
        # a saturated value is far from w: the segment from it back to w is not covered by
        # w (1 + d) + e, so the enclosure holds w itself too
        beyond = w.mag() > s.max_finite
        if beyond.any():
            r = Interval._new(np.where(beyond, np.minimum(r.lo, w.lo), r.lo),
                              np.where(beyond, np.maximum(r.hi, w.hi), r.hi))
    return r


def _spread(w: Interval, s: RoundSpec, computed: tuple[float, float] | None) -> Interval:
    """A leaf's computed values from its ideal ones, |c - w| <= u |w| + eta, within the hull of
    the leaf's computed values when given (not on the mean-value segment, which runs from the
    computed value back to w): no rounding, so neither the sign nor the format's grid of w is
    kept (the error may exceed the value)."""
    u = Interval.of(np.full(w.shape, 1 - s.u_rel), np.full(w.shape, 1 + s.u_rel))
    r = w * u + Interval.of(np.full(w.shape, -s.eta), np.full(w.shape, s.eta))
    if computed is not None:
        lo, hi = np.maximum(r.lo, computed[0]), np.minimum(r.hi, computed[1])
        ok = lo <= hi
        r = Interval._new(np.where(ok, lo, r.lo), np.where(ok, hi, r.hi))
    return r


def _rounded(w: Interval, s: RoundSpec) -> Interval:
    if s.sat:
        m = s.max_finite
        w0 = w
        w = Interval.of(np.clip(w.lo, -m, m), np.clip(w.hi, -m, m))
        if s.keeps_inf:   # an infinite argument stays infinite (round toward zero of inf)
            r = _rounded(w, replace(s, keeps_inf=False))
            return Interval._new(np.where(w0.lo == -INF, -INF, r.lo),
                                 np.where(w0.hi == INF, INF, r.hi))
    u = Interval.of(np.full(w.shape, 1 - s.u_rel), np.full(w.shape, 1 + s.u_rel))
    e = Interval.of(np.full(w.shape, -s.eta), np.full(w.shape, s.eta))
    r = w * u + e
    if not s.sat and s.fmt.has_inf and math.isfinite(s.overflow_at):
        # IEEE overflow: the result may be +-inf (a later min/clamp may bring it back)
        r = Interval.of(np.where(w.lo <= -s.overflow_at, -np.inf, r.lo),
                        np.where(w.hi >= s.overflow_at, np.inf, r.hi))
    if s.u < 1 and s.fmt.kind == "float":
        # rounding is monotone and fl(0) = 0: the sign of w is kept (or the result is 0)
        r = Interval.of(np.where(w.lo >= 0, np.maximum(r.lo, 0.0), r.lo),
                        np.where(w.hi <= 0, np.minimum(r.hi, 0.0), r.hi))
    if s.fmt.kind == "float" and s.fmt.bits <= 8:
        # narrow formats: every mode rounds x in [lo, hi] into [rd(lo), ru(hi)], exactly
        # (e8m0: of a positive x; it has no zero, tiny values round up to 2^-127)
        m = s.max_finite
        ok = (w.lo >= -m) & (w.hi <= m)
        if not s.fmt.has_zero:
            ok &= w.lo > 0
        if ok.any():
            with np.errstate(all="ignore"):
                lo_r = round_array(np.where(ok, w.lo, 0.0), s.fmt, mode="rd", sat=True)
                hi_r = round_array(np.where(ok, w.hi, 0.0), s.fmt, mode="ru", sat=True)
            ok &= ~np.isnan(lo_r) & ~np.isnan(hi_r)
            nlo = np.where(ok, np.maximum(r.lo, lo_r), r.lo)
            nhi = np.where(ok, np.minimum(r.hi, hi_r), r.hi)
            good = nlo <= nhi
            r = Interval._new(np.where(good, nlo, r.lo), np.where(good, nhi, r.hi))
    return r


def _bool(lo_true: np.ndarray, hi_true: np.ndarray) -> Interval:
    """A condition as an interval over {0, 1}: [1,1] true, [0,0] false, [0,1] unknown."""
    return Interval.of(np.where(lo_true, 1.0, 0.0), np.where(hi_true, 1.0, 0.0))


def _apply(op: str, a: list) -> tuple[Interval, np.ndarray | None]:
    """Interval of an operation; the second value marks boxes where a branch is decided."""
    if op == Op.ADD:
        return a[0] + a[1], None
    if op == Op.SUB:
        if a[0] is a[1]:  # the same value: exactly 0 (interval subtraction would not see it)
            return Interval.point(np.zeros(a[0].shape)), None
        return a[0] - a[1], None
    if op == Op.MUL:
        if a[0] is a[1]:
            return I.sqr(a[0]), None
        return a[0] * a[1], None
    if op == Op.DIV:
        r = I.div(a[0], a[1])
        z = (a[1].lo == 0) & (a[1].hi == 0)
        if z.any():  # x / 0 is +-inf for x of one sign (0 / 0 is flagged as NaN)
            p, q = z & (a[0].lo > 0), z & (a[0].hi < 0)
            r = Interval._new(np.where(p, I.MAX, np.where(q, -INF, r.lo)),
                              np.where(p, INF, np.where(q, -I.MAX, r.hi)))
        return r, None
    if op == Op.FMA:
        return a[0] * a[1] + a[2], None
    if op == Op.SQRT:
        return I.sqrt(a[0]), None
    if op == Op.RSQRT:
        return I.rsqrt(a[0]), None
    if op == Op.NEG:
        return -a[0], None
    if op == Op.ABS:
        return I.abs(a[0]), None
    if op == Op.MIN:
        return I.min(a[0], a[1]), None
    if op == Op.MAX:
        return I.max(a[0], a[1]), None
    if op in (Op.FLOOR, Op.CEIL):
        f = I.floor if op == Op.FLOOR else I.ceil
        r = f(a[0])
        return r, r.lo == r.hi
    fn = {Op.EXP: I.exp, Op.LOG: I.log, Op.EXP2: I.exp2, Op.LOG2: I.log2, Op.TANH: I.tanh,
          Op.SIGMOID: I.sigmoid, Op.SIN: I.sin, Op.COS: I.cos}
    if op in fn:
        return fn[op](a[0]), None
    if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE) and a[0] is a[1]:
        # a value compared with itself: decided unless it is NaN, and every way a NaN can
        # arise in the program is flagged (the box then has no bound)
        t = np.full(a[0].shape, op in (Op.LE, Op.GE, Op.EQ))
        return _bool(t, t), np.ones(a[0].shape, bool)
    if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE):
        x, y = a
        if op == Op.LT:
            t, f = x.hi < y.lo, x.lo >= y.hi
        elif op == Op.LE:
            t, f = x.hi <= y.lo, x.lo > y.hi
        elif op == Op.GT:
            t, f = x.lo > y.hi, x.hi <= y.lo
        elif op == Op.GE:
            t, f = x.lo >= y.hi, x.hi < y.lo
        elif op == Op.EQ:
            t = (x.lo == x.hi) & (y.lo == y.hi) & (x.lo == y.lo)
            f = (x.hi < y.lo) | (x.lo > y.hi)
        else:
            f = (x.lo == x.hi) & (y.lo == y.hi) & (x.lo == y.lo)
            t = (x.hi < y.lo) | (x.lo > y.hi)
        r = _bool(t, ~f)
        return r, t | f
    if op in (Op.AND, Op.OR, Op.NOT):
        if op == Op.NOT:
            r = Interval.of(1 - a[0].hi, 1 - a[0].lo)
        elif op == Op.AND:
            r = Interval.of(np.minimum(a[0].lo, a[1].lo), np.minimum(a[0].hi, a[1].hi))
        else:
            r = Interval.of(np.maximum(a[0].lo, a[1].lo), np.maximum(a[0].hi, a[1].hi))
        return r, r.lo == r.hi
    if op == Op.WHERE:
        c, x, y = a
        t, f = c.lo == 1, c.hi == 0
        lo = np.where(t, x.lo, np.where(f, y.lo, np.minimum(x.lo, y.lo)))
        hi = np.where(t, x.hi, np.where(f, y.hi, np.maximum(x.hi, y.hi)))
        return Interval.of(lo, hi), t | f
    if op in (Op.ROUND, "perturb"):
        return a[0], None
    raise Unsupported(op)


def _sign(x: Interval) -> Interval:
    lo = np.where(x.lo > 0, 1.0, -1.0)
    hi = np.where(x.hi < 0, -1.0, 1.0)
    return Interval.of(lo, hi)


def _partials(op: str, a: list, w: Interval, g: Interval):
    """Adjoint contributions g * dw/da_j for each argument, and where they are valid."""
    shape = g.shape
    if op in (Op.ADD, Op.ROUND, "perturb"):
        return ([g, g] if op == Op.ADD else [g]), None
    if op == Op.SUB:
        return [g, -g], None
    if op == Op.MUL:
        if len(a) == 2 and a[0] is a[1]:
            return [g * a[1] * 2.0, None], None
        return [g * a[1], g * a[0]], None
    if op == Op.DIV:
        inv = I.div(1.0, a[1])
        return [g * inv, -(g * w * inv)], None
    if op == Op.FMA:
        return [g * a[1], g * a[0], g], None
    if op == Op.SQRT:
        return [I.div(g, w * 2.0)], None
    if op == Op.RSQRT:
        return [-(g * I.div(w, a[0] * 2.0))], None
    if op == Op.EXP:
        return [g * w], None
    if op == Op.EXP2:
        return [g * w * math.log(2)], None
    if op == Op.LOG:
        return [I.div(g, a[0])], None
    if op == Op.LOG2:
        return [I.div(g, a[0] * math.log(2))], None
    if op == Op.TANH:
        return [g * (1.0 - I.sqr(w))], None
    if op == Op.SIGMOID:
        return [g * (w * (1.0 - w))], None
    if op == Op.SIN:
        return [g * I.cos(a[0])], None
    if op == Op.COS:
        return [-(g * I.sin(a[0]))], None
    if op == Op.NEG:
        return [-g], None
    if op == Op.ABS:
        return [g * _sign(a[0])], None
    if op in (Op.MIN, Op.MAX):
        x, y = a
        if op == Op.MIN:
            first, second = x.hi <= y.lo, y.hi <= x.lo
        else:
            first, second = x.lo >= y.hi, y.lo >= x.hi
        # a tie (both hold: equal points) has the generalised gradient conv{(1,0), (0,1)}
        only_x, only_y = first & ~second, second & ~first
        fx = Interval.of(np.where(only_x, 1.0, 0.0), np.where(only_y, 0.0, 1.0))
        fy = Interval.of(np.where(only_y, 1.0, 0.0), np.where(only_x, 0.0, 1.0))
        return [g * fx, g * fy], None
    if op in (Op.FLOOR, Op.CEIL):
        f = I.floor if op == Op.FLOOR else I.ceil
        r = f(a[0])
        return [g * 0.0], r.lo == r.hi
    if op == Op.WHERE:
        c = a[0]
        t, f = c.lo == 1, c.hi == 0
        z = np.zeros(shape)
        gx = Interval.of(np.where(f, z, g.lo), np.where(f, z, g.hi))
        gy = Interval.of(np.where(t, z, g.lo), np.where(t, z, g.hi))
        return [None, gx, gy], t | f
    if op in (Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE, Op.AND, Op.OR, Op.NOT):
        return [None] * len(a), None
    raise Unsupported(op)


# ---------------------------------------------------------------------------------------------
@dataclass
class ScalarBound:
    abs_error: float
    rel_error: float | None
    ideal_range: tuple[float, float]
    computed_range: tuple[float, float]
    boxes: int
    iterations: int
    converged: bool
    lower_estimate: float
    reason: str | None = None
    site_share: dict[int, float] = field(default_factory=dict)   # node -> share of the bound


def _box_errors(ev: _Eval, X: list[Interval], out: int):
    """Per-box sound error bound, ideal and computed output intervals, per-site terms."""
    with np.errstate(all="ignore"):
        return _box_errors_inner(ev, X, out)


def _box_errors_inner(ev: _Eval, X: list[Interval], out: int):
    prog = ev.prog
    pv, ppre, pok = ev.forward(X, perturbed=True)
    iv, _, iok = ev.forward(X, perturbed=False)
    if ev.needs_segment:   # saturations and rounded constants: adjoints on the whole segment
        sv, spre, sok = ev.forward(X, perturbed=SEGMENT)
    else:
        sv, spre, sok = pv, ppre, pok
    adj, valid = ev.reverse(sv, spre, out)
    valid = valid & pok & iok & sok
    for i, n in enumerate(prog.nodes):
        # the mean-value form needs both programs on the same side of every jump: a branch
        # decided in each program but differently (x < C with C rounded) is a jump
        if n.op in DISCONTINUOUS and pv[i] is not None and iv[i] is not None:
            valid &= (pv[i].lo == pv[i].hi) & (iv[i].lo == iv[i].hi) & (pv[i].lo == iv[i].lo)
    total = np.zeros(X[0].shape)
    terms: dict[int, np.ndarray] = {}
    for i, n in enumerate(prog.nodes):
        if n.spec is not None and n.args:
            g = adj[i].mag()
            # an adjoint that is 0 on the whole segment (which reaches inf where the site may
            # overflow) means the output does not move, however far the site's value does
            with np.errstate(invalid="ignore"):
                t = np.where(g == 0, 0.0, g * site_radius(n, ppre[i], [pv[j] for j in n.args],
                                                          ev.clips.get(i)))
        elif n.op == Op.CONST and n.const_err:
            t = adj[i].mag() * n.const_err
        else:
            continue
        t = np.where(np.isnan(t), INF, t)
        terms[i] = t
        total = total + t
    total = total * (1 + 2.0 ** -40)  # cover the rounding of this float sum itself
    direct = (pv[out] - iv[out]).mag()
    bound = np.where(valid, np.minimum(total, direct), direct)
    # IEEE infinities are values (x/0, overflow) that a later min or clamp can absorb; what
    # has no bound is a NaN (0/0, inf - inf, 0 * inf, sqrt/log of a negative, an overflow
    # in a format without inf) or an infinite output
    bad = np.zeros(X[0].shape, bool)
    for vals in (pv, iv):
        for i, n in enumerate(prog.nodes):
            if not n.args or vals[i] is None:
                continue
            a = [vals[j] for j in n.args]
            if any(x is None for x in a):
                continue
            if n.op == Op.DIV:
                bad |= _has_zero(a[0]) & _has_zero(a[1])
                bad |= _unbounded(a[0]) & _unbounded(a[1])
            elif n.op in (Op.MUL, Op.FMA):
                bad |= (_has_zero(a[0]) & _unbounded(a[1])) | (_has_zero(a[1]) & _unbounded(a[0]))
            elif n.op in (Op.ADD, Op.SUB):
                x, y = a
                if n.op == Op.SUB:
                    bad |= ((x.hi == np.inf) & (y.hi == np.inf)) | ((x.lo == -np.inf) & (y.lo == -np.inf))
                else:
                    bad |= ((x.hi == np.inf) & (y.lo == -np.inf)) | ((x.lo == -np.inf) & (y.hi == np.inf))
            elif n.op in (Op.SQRT, Op.LOG, Op.LOG2, Op.RSQRT):
                bad |= I.may_be_undefined(n.op, a[0])
            elif n.op in (Op.SIN, Op.COS):
                bad |= _unbounded(a[0])
            if n.op == Op.FMA:
                p = a[0] * a[1]
                bad |= _unbounded(p) & _unbounded(a[2])
    for i, n in enumerate(prog.nodes):
        s = n.spec
        if s is not None and not s.sat and n.args and ppre[i] is not None and \
                not s.fmt.has_inf and math.isfinite(s.overflow_at):
            bad |= ppre[i].mag() >= s.overflow_at
        if s is not None and n.args and ppre[i] is not None and s.fmt.name == "e8m0":
            bad |= ppre[i].lo <= 0  # e8m0 has no zero and no sign: NaN
    bad |= ~np.isfinite(pv[out].lo) | ~np.isfinite(pv[out].hi) | \
        ~np.isfinite(iv[out].lo) | ~np.isfinite(iv[out].hi)
    bound = np.where(bad, INF, bound)
    return bound, iv[out], pv[out], terms


def _negative_zero_divisors(prog: ScalarProgram) -> set[int]:
    """Divisions and rsqrt whose divisor may be -0 in the computed program (see
    rounding_model.sign_bit_clear): there x / 0 can be an infinity of either sign."""
    out = set()
    memo: dict[int, bool] = {}
    for i, n in enumerate(prog.nodes):
        if n.op in (Op.DIV, Op.RSQRT):
            d = prog.nodes[n.args[-1]]
            if d.value is None or not sign_bit_clear(d.value, memo):
                out.add(i)
    return out


def _through_negative_zero(op: str, a: list[Interval], w: Interval) -> Interval:
    """The computed result of x / y (rsqrt(y)) where y's range holds 0 and y may be -0:
    x / -0 is -inf for x > 0 and +inf for x < 0 (rsqrt(-0) is -inf)."""
    y = a[-1]
    z = (y.lo <= 0) & (y.hi >= 0)
    if op == Op.RSQRT:
        return Interval._new(np.where(z, -INF, w.lo), w.hi)
    x = a[0]
    return Interval._new(np.where(z & (x.hi > 0), -INF, w.lo),
                         np.where(z & (x.lo < 0), INF, w.hi))


def _has_zero(x: Interval) -> np.ndarray:
    return (x.lo <= 0) & (x.hi >= 0)


def _unbounded(x: Interval) -> np.ndarray:
    return ~np.isfinite(x.lo) | ~np.isfinite(x.hi)


def pow2_floor(m: np.ndarray) -> np.ndarray:
    """2^floor(log2 m) (0 for 0, inf for inf): half an ulp of m is u * pow2_floor(m)."""
    with np.errstate(all="ignore"):
        f, e = np.frexp(np.where(np.isfinite(m), m, 0.0))
        p = np.ldexp(np.ones_like(m), e - 1)
    return np.where(np.isfinite(m), np.where(m > 0, p, 0.0), np.inf)


def _is_pow2(x: float | None) -> bool:
    if x is None or x == 0 or not math.isfinite(x):
        return False
    m, _ = math.frexp(abs(x))
    return m == 0.5


COMPARISONS = {Op.LT, Op.LE, Op.GT, Op.GE, Op.EQ, Op.NE}
CORRECTLY_ROUNDED = ROUNDED_BINARY | {Op.FMA, Op.ROUND}


def absorbing_clips(prog: ScalarProgram) -> dict[int, tuple[float, float]]:
    """Rounding sites whose result only feeds ``min(., c)`` (or only ``max(., c)``) with c a
    constant, and comparisons: node -> (lo, hi), the part of the site's value range whose
    rounding error can reach the output.

    Why: for a correct rounding fl (monotone) and v >= c, fl(v) >= fl(c), so
    ``|min(fl(v), c) - min(v, c)| <= max(0, c - fl(c)) <= |fl(c) - c|``, the error of a rounding
    at c, even where fl(v) overflows to inf; for v < c it is at most |fl(v) - v|. So the pair's
    error is that of a rounding of v clipped to (-inf, c]: the scale rules
    ``min(448 / amax, FLT_MAX)`` of the FP8/NVFP4 recipes have no overflow error. Comparisons
    carry no adjoint; the branch-agreement check of the mean-value form covers them."""
    users: dict[int, list[int]] = {}
    for j, n in enumerate(prog.nodes):
        for a in set(n.args):
            users.setdefault(a, []).append(j)
    out = set(prog.outputs)
    clips: dict[int, tuple[float, float]] = {}
    for i, n in enumerate(prog.nodes):
        s = n.spec
        # a correct rounding (monotone, keeps every value of the format); not a math
        # function's few-ulp model nor a region leaf's spread
        if s is None or not n.args or s.sat or s.fmt.kind != "float" or i in out or \
                n.op not in CORRECTLY_ROUNDED or s.u > 2.0 ** (1 - s.fmt.precision):
            continue
        caps: dict[str, list[float]] = {Op.MIN: [], Op.MAX: []}
        ok = bool(users.get(i))
        for j in users.get(i, ()):
            m = prog.nodes[j]
            if m.op in COMPARISONS:
                continue
            if m.op not in caps or len(m.args) != 2 or m.args[0] == m.args[1]:
                ok = False
                break
            c = prog.nodes[m.args[1] if m.args[0] == i else m.args[0]]
            if c.op != Op.CONST or c.const is None or not math.isfinite(c.const):
                ok = False
                break
            # the min sees the rounded constant in the computed program, the exact one in
            # the ideal: clip at the farther of the two
            exact, r = c.const_exact, c.const_radius
            if m.op == Op.MIN:
                caps[m.op].append(c.const if exact is None else max(c.const, up(exact + r)))
            else:
                caps[m.op].append(c.const if exact is None else min(c.const, down(exact - r)))
        if not ok or (caps[Op.MIN] and caps[Op.MAX]) or not (caps[Op.MIN] or caps[Op.MAX]):
            continue
        clips[i] = (-INF, max(caps[Op.MIN])) if caps[Op.MIN] else (min(caps[Op.MAX]), INF)
    return clips


def site_radius(n: SNode, w: Interval, args: list[Interval],
                clip: tuple[float, float] | None = None) -> np.ndarray:
    """Per box, the largest absolute rounding error of this site: u * 2^floor(log2 |w|) + eta
    (half an ulp of the largest |w|, FPTaylor's improved model), and 0 where the operation is
    provably exact on the whole box (Sterbenz subtraction, scaling by a power of two in the
    normal range, adding an exact zero). ``clip`` (see absorbing_clips): only values of w in
    [lo, hi] have an error that reaches the output."""
    s = n.spec
    empty = np.zeros(w.shape, bool)
    if clip is not None:
        lo_c, hi_c = clip
        empty = (w.lo >= hi_c) | (w.hi <= lo_c)
        w = Interval._new(np.where(empty, 0.0, np.maximum(w.lo, lo_c)),
                          np.where(empty, 0.0, np.minimum(w.hi, hi_c)))
    mag = w.mag()
    if n.op == "perturb":
        # a region leaf's error is relative to its value (the tensor tier's bound), not half
        # an ulp on a grid: u |w| + eta, never u 2^floor(log2 |w|)
        r = s.u_rel * mag + s.eta
        return np.where(empty, 0.0, r)
    if s.sat:
        m = s.max_finite
        r = s.u * pow2_floor(np.minimum(mag, m)) + s.eta + np.maximum(mag - m, 0.0)
    else:
        r = s.u * pow2_floor(mag) + s.eta
        if math.isfinite(s.overflow_at):
            # an overflow to inf is no small perturbation: only the enclosures bound it
            r = np.where(mag >= s.overflow_at, INF, r)
    r = np.where(empty, 0.0, r)
    if not n.fits:
        # an operand is not a value of the working format: even Sterbenz, + 0 and scaling by
        # a power of two round (let d: bf16 = a - b over f32 a and b)
        return r
    if n.op in (Op.ADD, Op.SUB) and len(args) == 2:
        x, y = args
        if n.op == Op.ADD:  # x + y = x - (-y)
            y = -y
        pos = (x.lo > 0) & (y.lo > 0) & (x.lo * 2 >= y.hi) & (y.lo * 2 >= x.hi)
        neg = (x.hi < 0) & (y.hi < 0) & (x.hi * 2 <= y.lo) & (y.hi * 2 <= x.lo)
        zero = ((x.lo == 0) & (x.hi == 0)) | ((y.lo == 0) & (y.hi == 0))
        r = np.where(pos | neg | zero, 0.0, r)
    elif n.op in (Op.MUL, Op.DIV) and len(args) == 2:
        cand = [k for k, a in enumerate(args) if (a.lo == a.hi).all() and _is_pow2(float(a.lo.flat[0]))]
        if n.op == Op.DIV:
            cand = [k for k in cand if k == 1]
        if cand:
            normal = (w.mig() >= n.fmt.min_normal) & (w.mag() <= n.fmt.max_finite)
            r = np.where(normal, 0.0, r if s.sat else np.minimum(r, s.eta))
    return r


def _point_estimate(ev: _Eval, mids: np.ndarray, out: int) -> np.ndarray:
    """First-order error estimate at points (a lower-bound heuristic that guides the search)."""
    with np.errstate(all="ignore"):
        return _point_estimate_inner(ev, mids, out)


def _point_estimate_inner(ev: _Eval, mids: np.ndarray, out: int) -> np.ndarray:
    X = [Interval.point(mids[:, k]) for k in range(mids.shape[1])]
    vals, pre, _ = ev._forward(X, perturbed=False)
    adj, _ = ev.reverse(vals, pre, out)
    est = np.zeros(mids.shape[0])
    feasible = np.ones(mids.shape[0], bool)
    for c in ev.prog.constraints:  # estimates only count at points that satisfy the relations
        if c[2] == "absle":
            feasible &= np.abs(mids[:, c[0]]) <= mids[:, c[1]]
        elif c[2] == "le":
            feasible &= mids[:, c[0]] <= mids[:, c[1]]
        elif c[2] == "node_le":
            feasible &= vals[c[0]].midpoint() <= c[3] * mids[:, c[1]]
    for i, n in enumerate(ev.prog.nodes):
        if n.spec is not None and n.args:
            est = est + np.abs(adj[i].midpoint()) * site_radius(
                n, pre[i], [vals[j] for j in n.args], ev.clips.get(i))
        elif n.op == Op.CONST and n.const_err:
            est = est + np.abs(adj[i].midpoint()) * n.const_err
    return np.where(np.isfinite(est) & feasible, est, 0.0)


# Search budgets count work, never wall-clock time (SPEC section 3: the same program gets the
# same bound on any machine under any load). One work unit is one program node evaluated on one
# box; each iteration also pays ITERATION_WORK units per node, the fixed cost of a vectorised
# pass over the nodes (on a 2-core x86 sandbox one unit is about 0.2 us). DEFAULT_WORK is at
# most about 0.6-0.7 s of CPU there (FPBench kepler2, turbine3); QUICK_WORK goes with the quick probes
# (tol 0.25, 6 iterations).
ITERATION_WORK = 2048
DEFAULT_WORK = 3_000_000
QUICK_WORK = 2_000_000


def analyse(prog: ScalarProgram, out_index: int = 0, *, tol: float = 0.02,
            max_boxes: int = 4096, max_iters: int = 60, work: int = DEFAULT_WORK,
            objective: str = "abs") -> ScalarBound:
    """Branch and bound for max over the input box of the sound per-box error bound.

    The search stops when the bound is within ``tol`` of the best lower estimate, after
    ``max_iters`` iterations, or once it has spent ``work`` units (see ITERATION_WORK): the
    result depends on the program and these settings only, never on the machine's speed or load.
    """
    spent = 0
    out = prog.outputs[out_index]
    ev = _Eval(prog)
    nv = len(prog.var_names)
    lo = prog.box_lo[None, :].copy()
    hi = prog.box_hi[None, :].copy()
    if nv == 0:
        lo = np.zeros((1, 1))
        hi = np.zeros((1, 1))
    widths0 = np.maximum(hi - lo, 1e-300)
    if prog.zero_split and nv:
        lo, hi = zero_split(lo, hi, prog.zero_split)
    best_lower = 0.0
    best_rel_lower = 0.0
    it = 0
    converged = False
    done_bound = 0.0      # max bound over boxes retired because they cannot matter
    ideal_hull = [INF, -INF]
    comp_hull = [INF, -INF]
    site_tot: dict[int, float] = {}
    rel_max = 0.0
    var_cons = [c for c in prog.constraints if c[2] in ("absle", "le")]
    node_cons = [c for c in prog.constraints if c[2] == "node_le"]
    while True:
        it += 1
        if var_cons and nv:
            lo, hi = contract(lo, hi, var_cons)
            if lo.shape[0] == 0:
                upper = done_bound
                converged = True
                break
        if node_cons and nv:
            lo, hi = contract_nodes(ev, lo, hi, node_cons)
            if lo.shape[0] == 0:
                upper = done_bound
                converged = True
                break
        X = [Interval.of(lo[:, k], hi[:, k]) for k in range(lo.shape[1])] if nv else \
            [Interval.point(np.zeros(lo.shape[0]))]
        bound, ival, pval, terms = _box_errors(ev, X, out)
        with np.errstate(all="ignore"):
            rel_box = np.where(ival.mig() > 0, bound / ival.mig(), INF)
        mids = (lo + hi) / 2 if nv else lo
        est = _point_estimate(ev, mids, out) if nv else bound
        if prog.factored:  # an estimate at a point of a box never exceeds the box's bound
            est = np.minimum(est, bound)
        best_lower = max(best_lower, float(np.max(est)) if est.size else 0.0)
        if objective == "rel":
            # search for the largest relative bound, and keep the absolute one (which callers
            # also use) within the same tolerance: a box's score is its worse excess over the
            # best estimates
            with np.errstate(all="ignore"):
                est_rel = np.where(np.abs(ival.midpoint()) > 0, est / np.abs(ival.midpoint()),
                                   0.0)
                best_rel_lower = max(best_rel_lower, float(np.max(est_rel)) if est.size else 0.0)
                score = np.maximum(_excess(rel_box, best_rel_lower), _excess(bound, best_lower))
            done_score = max(_excess(rel_max, best_rel_lower), _excess(done_bound, best_lower))
            goal = 1 + tol
        else:
            score, done_score, goal = bound, done_bound, best_lower * (1 + tol)
        upper_score = max(float(np.max(score)), float(done_score))
        upper = max(float(np.max(bound)), done_bound)
        spent += len(prog.nodes) * (lo.shape[0] + ITERATION_WORK)
        if upper_score <= goal or it >= max_iters or nv == 0 or \
                spent >= work or not math.isfinite(upper_score) and it > 40:
            converged = upper_score <= goal
            break
        # boxes whose bound is already within tolerance of the best lower estimate retire
        keep = score > goal
        if (~keep).any():
            done_bound = max(done_bound, float(np.max(bound[~keep])))
            rel_max = max(rel_max, float(np.max(rel_box[~keep])))
            _hull(ideal_hull, ival, ~keep)
            _hull(comp_hull, pval, ~keep)
            for k, t in terms.items():
                site_tot[k] = max(site_tot.get(k, 0.0), float(np.max(t[~keep])))
        lo, hi, bound, score = lo[keep], hi[keep], bound[keep], score[keep]
        if lo.shape[0] == 0:
            upper = done_bound
            converged = True
            break
        # split the worst boxes along their widest (relative) dimension
        order = np.argsort(-score)
        n_split = min(len(order), max(1, max_boxes // 2 - 0))
        if lo.shape[0] + n_split > max_boxes:
            n_split = max(1, max_boxes - lo.shape[0])
        pick = order[:n_split]
        rest = order[n_split:]
        rel_w = (hi[pick] - lo[pick]) / widths0
        if prog.factored:
            # scale-invariant programs: a one-signed range counts by its binades too
            with np.errstate(all="ignore"):
                a, b = np.abs(lo[pick]), np.abs(hi[pick])
                one = (lo[pick] > 0) | (hi[pick] < 0)
                binades = np.log2(np.maximum(a, b) / np.minimum(a, b))
                rel_w = np.where(one, np.maximum(rel_w, binades / 32), rel_w)
        dim = np.argmax(rel_w, axis=1)
        mid = split_points(lo[pick, dim], hi[pick, dim])
        lo_a, hi_a = lo[pick].copy(), hi[pick].copy()
        lo_b, hi_b = lo[pick].copy(), hi[pick].copy()
        hi_a[np.arange(len(pick)), dim] = mid
        lo_b[np.arange(len(pick)), dim] = mid
        lo = np.concatenate([lo[rest], lo_a, lo_b])
        hi = np.concatenate([hi[rest], hi_a, hi_b])
    if lo.shape[0]:
        _hull(ideal_hull, ival, np.ones(ival.shape, bool))
        _hull(comp_hull, pval, np.ones(pval.shape, bool))
        rel_max = max(rel_max, float(np.max(rel_box)))
        for k, t in terms.items():
            site_tot[k] = max(site_tot.get(k, 0.0), float(np.max(t)) if t.size else 0.0)
    abs_err = upper
    rel = None
    if (ideal_hull[0] > 0 or ideal_hull[1] < 0) and math.isfinite(rel_max) and \
            math.isfinite(abs_err):
        rel = rel_max * (1 + 2.0 ** -40)
    total = sum(site_tot.values()) or 1.0
    share = {k: v / total for k, v in site_tot.items()}
    return ScalarBound(abs_err, rel, (ideal_hull[0], ideal_hull[1]), (comp_hull[0], comp_hull[1]),
                       int(lo.shape[0]), it, converged, best_lower, site_share=share)


def _excess(bound, lower: float):
    """How far a bound is above the best lower estimate (1: equal; inf: no estimate yet)."""
    with np.errstate(all="ignore"):
        return np.where(bound <= 0, 0.0, bound / lower) if lower > 0 else \
            np.where(bound <= 0, 0.0, INF)


def zero_split(lo: np.ndarray, hi: np.ndarray, zs: dict[int, float]):
    """Split boxes of variables whose values are 0 or at least m in magnitude: [lo, hi]
    becomes [lo, -m], [0, 0] and [m, hi] (the parts that exist)."""
    for k, m in zs.items():
        parts_lo, parts_hi = [], []
        for a, b in ((-INF, -m), (0.0, 0.0), (m, INF)):
            l2 = np.maximum(lo[:, k], a)
            h2 = np.minimum(hi[:, k], b)
            ok = l2 <= h2
            if ok.any():
                pl, ph = lo[ok].copy(), hi[ok].copy()
                pl[:, k], ph[:, k] = l2[ok], h2[ok]
                parts_lo.append(pl)
                parts_hi.append(ph)
        if parts_lo:
            lo, hi = np.concatenate(parts_lo), np.concatenate(parts_hi)
    return lo, hi


def split_points(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Where to bisect: at 0 for a range that straddles it, geometrically for a range that
    spans many binades on one side of 0 (errors scale with magnitude), else in the middle."""
    mid = (lo + hi) / 2
    with np.errstate(all="ignore"):
        pos = (lo >= 0) & (hi > 16 * np.maximum(lo, 0))
        a = np.maximum(lo, hi * 2.0 ** -60)
        gpos = np.sqrt(a) * np.sqrt(hi)
        neg = (hi <= 0) & (-lo > 16 * np.maximum(-hi, 0))
        b = np.maximum(-hi, -lo * 2.0 ** -60)
        gneg = -(np.sqrt(b) * np.sqrt(-lo))
    mid = np.where(pos, gpos, np.where(neg, gneg, mid))
    straddle = (lo < 0) & (hi > 0)
    mid = np.where(straddle, 0.0, mid)
    ok = (mid > lo) & (mid < hi) & np.isfinite(mid)
    return np.where(ok, mid, (lo + hi) / 2)


def contract(lo: np.ndarray, hi: np.ndarray, constraints) -> tuple[np.ndarray, np.ndarray]:
    """Shrink boxes with the relations between variables and drop the empty ones."""
    lo, hi = lo.copy(), hi.copy()
    for _ in range(2):
        for i, j, kind in constraints:
            if kind == "absle":      # |x_i| <= x_j
                hi[:, i] = np.minimum(hi[:, i], hi[:, j])
                lo[:, i] = np.maximum(lo[:, i], -hi[:, j])
                mig = np.where(lo[:, i] > 0, lo[:, i], np.where(hi[:, i] < 0, -hi[:, i], 0.0))
                lo[:, j] = np.maximum(lo[:, j], mig)
            elif kind == "le":       # x_i <= x_j
                hi[:, i] = np.minimum(hi[:, i], hi[:, j])
                lo[:, j] = np.maximum(lo[:, j], lo[:, i])
    ok = np.all(lo <= hi, axis=1)
    return lo[ok], hi[ok]


def contract_nodes(ev: "_Eval", lo: np.ndarray, hi: np.ndarray, cons) -> tuple[np.ndarray, np.ndarray]:
    """Relations between an expression and a variable (node <= scale * var, in the ideal
    program): raise the variable's lower bound to the expression's, drop empty boxes."""
    X = [Interval.of(lo[:, k], hi[:, k]) for k in range(lo.shape[1])]
    vals, _, _ = ev.forward(X, perturbed=False)
    lo = lo.copy()
    for node, var, _, scale in cons:
        lo[:, var] = np.maximum(lo[:, var], vals[node].lo / scale)
    ok = np.all(lo <= hi, axis=1)
    return lo[ok], hi[ok]


def _hull(acc: list[float], iv: Interval, mask: np.ndarray) -> None:
    if mask.any():
        acc[0] = min(acc[0], float(np.min(iv.lo[mask])))
        acc[1] = max(acc[1], float(np.max(iv.hi[mask])))
