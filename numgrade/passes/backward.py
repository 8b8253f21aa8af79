"""Backward error, Bean-style (SPEC section 3; Kellison, Zielinski, Bindel, Hsu, PLDI 2025).

What the numbers mean
---------------------
For the inputs that can absorb rounding errors (*linear* inputs), the analysis proves that

    there are perturbed inputs x~ with |ln(x~_i / x_i)| <= k_x u   for every element i

(jointly: all linear inputs perturbed at once, the *discrete* inputs held exact) such that the
**ideal** program (every rounding removed) at the perturbed inputs returns **exactly** the
computed outputs. ``u`` is the unit roundoff of the function's working format (round to
nearest: 2^-53 for f64, 2^-24 for f32; the format of the first output); ``k_x`` is the grade
in units of u. Reported per input: ``units`` (k), ``absolute`` (k u, the bound in Bean's
relative-precision metric) and ``relative`` (``e^(k u) - 1``, a bound on ``|x~ - x| / |x|``;
this is what :func:`backward_error` returns and what the report shows). Perturbations are
multiplicative, so signs are kept and zeros stay zero; any sign is fine.

The rules (the "let" rule of Bean: a value that must absorb a factor ``e^psi`` pushes it, plus
its own rounding, onto its operands; each rounding of a round-to-nearest operation costs one
unit, ``|ln(fl(x)/x)| <= ln(1 + u) < u``; directed and stochastic roundings cost two):

* ``a + b``, ``a - b``: both operands absorb ``rho + 1`` (``rho``: what the result absorbs).
* ``a * b``, ``a / b`` with one operand discrete (Bean's ``dmul``): the linear one absorbs
  ``rho + 1 + phi``, where ``phi`` is the discrete operand's own forward error (0 for inputs and
  exact constants; a computed discrete value such as ``x*x`` carries its rounding).
  Both operands linear: ``style="tight"`` (default) splits the factor, ``(rho + 1)/2`` each
  (``(a e^(t/2)) (b e^(t/2)) = a b e^t``); ``style="bean"`` reproduces Bean's typing exactly:
  ``rho + 1/2`` each.
* ``sqrt``: ``2 (rho + 1)``; ``neg``, ``abs``, movement, ``max``/``min`` of linear values: ``rho``.
* ``fma(a, b, c)``: one rounding: ``c`` absorbs ``rho + 1``, the product ``rho + 1`` (split or
  pushed onto its linear factor as for ``*``).
* ``sum`` of n terms: ``rho + (n - 1)`` for every summation order (a tree of n leaves has depth
  at most n - 1), ``rho + ceil(log2 n)`` for ``order=pairwise``; ``mean`` adds the division's
  unit; one more where the elements are first rounded into a narrower accumulator. Dot
  products ``sum(x * y)``: ``n`` for x when y is discrete (Bean's DotProd); ``a @ b`` over K:
  ``rho + K`` for the linear operand (Bean's MatVecMul), plus one where the result is rounded
  into a narrower output format.
* Whether an operation rounds, into which format, and whether an exactness rule (scaling by
  a power of two: cost 0; sums exact in the subnormal range) may apply is
  :func:`numgrade.passes.rounding_model.judge`'s answer; the rules apply only where its
  operands are values of the result's format (``let y: bf16 = 2.0 * x`` with an f32 ``x``
  costs a bf16 rounding). Costs are in units of ``u``: a bf16 rounding is ``2^-8 / u``.
* Strict linearity (Bean): every element of a linear value may be used once. A value used more
  than once (``x * x``, a broadcast, the vector of a matrix-vector product, a value returned
  and also used) is made discrete, like Bean's ``!``: its own inputs absorb its rounding so it
  is reproduced exactly, and its uses see an exact value. An *input* used more than once is
  discrete: it gets no perturbation (reported ``None`` with that reason); the other inputs
  absorb everything. ``discrete=`` makes more inputs discrete (Bean's ``dnum`` inputs).
* Outside the admissible shape (no grade can exist in this model) the whole result is None
  with the reason: a perturbed value added to one that cannot be perturbed, a math function
  other than sqrt of a perturbed value, a branch or comparison that perturbations may flip,
  compensated (Kahan) summation, a discrete output that carries rounding error.
* Underflow counts (SPEC section 3): below the smallest normal number rounding is not
  relative, so a product, quotient or conversion whose range reaches (0, 2^-1022) (e.g.
  ``x * y`` over [-1000, 1000]) has no relative backward error bound; the result is None with
  that reason, and ``conditional`` holds the grades that hold where nothing underflows (Bean's
  real-number model). Sums are exact in the subnormal range, so they are never affected.
  Overflow and saturation make the program inadmissible too.

Reductions and products use closed forms (no unrolling): the analysis is linear in the
number of IR values, so a 10^4-term sum or dot product takes about a millisecond.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from ..ir import nodes as N
from ..ir.dims import bind_sizes
from ..ir.formats import Format
from ..ir.nodes import Op
from . import interval as I
from .interval import Interval
from .outward import inflate
from .rounding_model import Judgement, RoundSpec, judge, lowest_finite
from .sensitivity import (Graph, Node, compare_decision, flatten, hi, ideal_ranges, lo, mag,
                          matmul_k, mig, param_interval, reduce_count, sign_definite)

INF = math.inf
INFLATE = 2.0 ** -24     # input ranges are widened by this relative amount (covers x~)
MARGIN = 2.0 ** -20      # relative margin on the under/overflow thresholds
MAX_TRACKED_ELEMENTS = 1 << 20  # larger sliced tensors: every slice counts as a use of all
MAX_PERTURBATION = 2.0 ** -8    # grades * u beyond this are not worth reporting


class _Reinflate(Exception):
    """The perturbations exceed the widening of the input ranges: redo with this one."""

    def __init__(self, inflate: float):
        super().__init__(inflate)
        self.inflate = inflate


class Inadmissible(Exception):
    """The program is outside the shape for which Bean-style grades exist."""

    def __init__(self, msg: str, underflow: bool = False):
        super().__init__(msg)
        self.underflow = underflow


@dataclass
class BackwardResult:
    """Per-input backward error grades of a function (see the module docstring)."""

    units: dict[str, float | None]
    absolute: dict[str, float | None]
    relative: dict[str, float | None]
    unit: float
    unit_format: str
    reasons: dict[str, str] = field(default_factory=dict)
    discrete: list[str] = field(default_factory=list)
    style: str = "tight"
    reason: str | None = None
    conditional: dict[str, float | None] | None = None   # units, if nothing underflows
    seconds: float = 0.0

    def as_report(self) -> dict[str, float | None] | None:
        """What Report.backward_error holds: relative perturbation bounds, or None."""
        if self.reason is not None:
            return None
        return dict(self.relative)


def _rel_from_units(k: float, u: float) -> float:
    return inflate(math.expm1(k * u))


# =============================================================================================
class _Analysis:
    def __init__(self, g: Graph, linear: set[str], style: str, strict_underflow: bool,
                 inflate: float = INFLATE):
        self.inflate = inflate
        self.g = g
        self.style = style
        self.strict_underflow = strict_underflow
        self.linear_inputs = linear
        self.u = self._unit_format()
        pr = []
        for _, _, p in g.params:
            iv = param_interval(p)
            if p.value.fmt.kind == "float":
                lo_, hi_ = lo(iv), hi(iv)
                iv = Interval.of(lo_ - abs(lo_) * inflate, hi_ + abs(hi_) * inflate) \
                    if math.isfinite(lo_) and math.isfinite(hi_) else iv
            pr.append(iv)
        self.R = ideal_ranges(g, pr)
        self.granularity()

    def _unit_format(self) -> float:
        g = self.g
        fmts = [g.nodes[o].fmt for o in g.outputs if g.nodes[o].fmt.kind == "float"]
        if not fmts:
            fmts = [n.fmt for n in g.nodes if n.fmt is not None and n.fmt.kind == "float"]
        self.unit_fmt = fmts[0] if fmts else None
        return 2.0 ** -fmts[0].precision if fmts else 2.0 ** -53

    # -- costs ---------------------------------------------------------------------------
    def where(self, n: Node) -> str:
        return f" ({n.span})" if n.span is not None else ""

    def jd(self, i: int) -> Judgement:
        """The rounding judgement of node i (rounding_model.judge: the one place that decides
        whether an operation rounds, into what, and whether exactness rules may apply)."""
        return judge(self.g.nodes[i].value)

    def rnd_cost(self, spec: RoundSpec | None) -> float:
        """The cost, in units of self.u, of one rounding (0 where spec is None: exact).
        |ln(fl(x)/x)| <= ln(1 + u) < u with u = 2^-p (round to nearest) or 2^(1-p) (directed
        and stochastic), the u of the spec."""
        if spec is None:
            return 0.0
        if spec.fmt.kind != "float":
            return INF   # rounding to an integer is not relative
        return spec.u / self.u

    def math_cost(self, op: str, spec: RoundSpec) -> float:
        d = spec.u
        if d >= 1:
            return INF
        if op == Op.SQRT and d <= 2.0 ** -spec.fmt.precision:
            return d / self.u     # correctly rounded: |ln(fl(x)/x)| <= ln(1 + u) < u
        return inflate(-math.log1p(-d) / self.u)

    def check_range(self, i: int, spec: RoundSpec | None, exact_in_subnormals: bool = False,
                    iv: Interval | None = None,
                    ell_override: float = 0.0, q_override: float | None = None) -> None:
        """Inadmissible where the rounding of node i (spec; None: it does not round) may
        overflow, saturate or underflow."""
        n = self.g.nodes[i]
        fmt = n.fmt if spec is None else spec.fmt
        if fmt is None or fmt.kind != "float" or spec is None:
            return
        R = self.R[i] if iv is None else iv
        M = mag(R) * (1 + MARGIN)
        if spec.sat and M > fmt.max_finite:
            raise Inadmissible(f"this rounding may saturate {fmt.name}{self.where(n)}")
        if not spec.sat and M >= spec.overflow_at:
            raise Inadmissible(f"'{n.op}' may overflow {fmt.name}{self.where(n)}")
        if exact_in_subnormals or not self.strict_underflow:
            return
        if lo(R) == 0 and hi(R) == 0:
            return
        ell = self.ell[i] if iv is None else max(mig(iv) * (1 - MARGIN), ell_override)
        qe = (self.qe[i] if i < len(self.qe) else 0.0) if q_override is None else q_override
        if qe >= fmt.min_subnormal:
            return   # a multiple of the format's quantum is exact in its subnormal range
        if ell < fmt.min_normal * (1 + MARGIN):
            raise Inadmissible(
                f"'{n.op}' may underflow {fmt.name} (its range [{lo(R):.4g}, {hi(R):.4g}] reaches "
                f"below {fmt.min_normal:.3g}, where rounding errors are not relative){self.where(n)}",
                underflow=True)

    # -- granularity: the smallest nonzero magnitude of each computed value -----------------
    def granularity(self) -> None:
        """Per node: q (every computed value is an integer multiple of q, a power of two, 0 if
        unknown), ell (the exact, pre-rounding result of the operation is 0 or has magnitude
        >= ell) and ell_out (the same for the rounded result).

        A float difference b2 - a21 * x1 over ranges that contain 0 cannot be tiny and nonzero:
        both are multiples of the ulp at their smallest magnitude, and so is the difference.
        Rounding preserves being a multiple of a power of two q >= the format's smallest
        subnormal, so sums keep the granularity of their terms.
        """
        g, R = self.g, self.R
        nq: list[float] = []
        nl: list[float] = []
        self.ell = []
        self.qe = []
        for i, n in enumerate(g.nodes):
            fmt = n.fmt
            q = [nq[s] for s in n.srcs]
            L = [nl[s] for s in n.srcs]
            rq, rl = _range_grain(fmt, R[i])
            op = n.op
            qe, le = 0.0, max(0.0, mig(R[i]) * (1 - MARGIN))
            if op == Op.PARAM or op == Op.CONST or op in (Op.DIM, Op.ARANGE, Op.RAND):
                if op == Op.CONST:
                    rq, rl = _const_grain(fmt, n.value.attrs[0])
                qe, le = rq, rl
            elif op in N.MOVEMENT or op in (Op.NEG, Op.ABS, Op.RMAX, Op.RMIN, Op.MIN, Op.MAX):
                qe, le = min(q), min(L)
            elif op == Op.WHERE:
                qe, le = min(q[1], q[2]), min(L[1], L[2])
            elif op in (Op.ADD, Op.SUB, Op.SUM):
                qe = min(q)
                le = max(le, qe)
            elif op == Op.MUL:
                qe = q[0] * q[1]
                le = max(le, L[0] * L[1], qe)
            elif op == Op.FMA:
                qe = min(q[0] * q[1], q[2])
                le = max(le, qe)
            elif op == Op.DIV:
                mb = mag(R[n.srcs[1]])
                le = max(le, L[0] / mb if mb > 0 and math.isfinite(mb) else 0.0)
            elif op == Op.SQRT:
                le = max(le, math.sqrt(L[0]))
            elif op == Op.MEAN:
                k = reduce_count(g, n) or 0
                le = max(le, q[0] / k if k else 0.0)
            elif op == Op.MATMUL:
                qe = q[0] * q[1]
                le = max(le, qe)
            elif op == Op.ROUND:
                qe, le = q[0], max(le, L[0])
            if fmt is not None and fmt.kind == "float" and op not in (Op.PARAM, Op.CONST):
                # the rounded value is a float of fmt, and a multiple of qe when qe is one
                out_q = max(rq, qe) if qe >= fmt.min_subnormal else rq
                lo_out = le * (1 - 2.0 ** (1 - fmt.precision)) if le >= fmt.min_normal else rq
                out_l = max(rl, lo_out, out_q)
                out_q = max(out_q, _ulp_grain(fmt, out_l))
            elif fmt is not None and fmt.kind == "float":
                out_q, out_l = max(qe, _ulp_grain(fmt, le)), le
            else:
                out_q, out_l = qe, le
            nq.append(out_q)
            nl.append(out_l)
            self.ell.append(le)
            self.qe.append(qe)
        self.q = nq
        self.ell_out = nl

    # -- use counts (strict linearity, per element) ----------------------------------------
    def use_counts(self) -> list[float]:
        g = self.g
        acc: list = [0] * len(g.nodes)

        def add(s: int, c) -> None:
            acc[s] = acc[s] + c

        def add_at(s: int, shape: tuple[int, ...], idx: tuple) -> None:
            if not isinstance(acc[s], np.ndarray):
                acc[s] = np.full(shape, acc[s], dtype=np.int64)
            acc[s][idx] += 1      # in place: a scalar slice costs O(1)

        for o in g.outputs:
            add(o, 1)
        for c, n in enumerate(g.nodes):
            for j, s in enumerate(n.srcs):
                src = g.nodes[s]
                if n.op in N.COMPARE or n.op == Op.TOPK_MASK or (n.op == Op.WHERE and j == 0):
                    continue
                if n.op == Op.SLICE:
                    if src.shape is not None and n.index is not None and \
                            (src.size or 0) <= MAX_TRACKED_ELEMENTS:
                        add_at(s, src.shape, tuple(x for x in n.index if x is not None))
                    else:
                        add(s, 1)
                    continue
                if n.op in (Op.SUM, Op.MEAN, Op.RMAX, Op.RMIN, Op.RESHAPE, Op.TRANSPOSE, Op.CONCAT):
                    add(s, 1)
                    continue
                if n.op == Op.MATMUL:
                    K = matmul_k(g, n)
                    if n.size is None or src.size is None or K is None:
                        add(s, 2)
                    else:
                        add(s, max(1, n.size * K // max(src.size, 1)))
                    continue
                # elementwise (broadcasting) and broadcast
                if n.size is not None and src.size is not None:
                    add(s, max(1, n.size // max(src.size, 1)))
                elif n.sym_shape == src.sym_shape:
                    add(s, 1)
                else:
                    add(s, 2)
        self.counts = acc
        return [float(np.max(a)) if isinstance(a, np.ndarray) and a.size else float(a)
                if not isinstance(a, np.ndarray) else 0.0 for a in acc]

    def partial(self, users: list[list[int]]) -> list[bool]:
        """Nodes whose elements are used unevenly, only through slices (x[0] twice, x[1] once):
        the slices that touch a multiply-used element become discrete, the rest stay linear."""
        g = self.g
        outs = set(g.outputs)
        res = []
        for i, n in enumerate(g.nodes):
            cnt = self.counts[i]
            ok = isinstance(cnt, np.ndarray) and i not in outs and bool(users[i]) and \
                all(g.nodes[c].op == Op.SLICE and g.nodes[c].index is not None for c in users[i])
            res.append(ok)
        return res

    def slice_single_use(self, c: Node, s: int) -> bool:
        cnt = self.counts[s]
        idx = tuple(x for x in c.index if x is not None)
        sel = np.asarray(cnt[idx])
        return sel.size == 0 or int(sel.max()) <= 1

    # -- the analysis ---------------------------------------------------------------------
    def run(self) -> tuple[dict[str, float | None], dict[str, str]]:
        g = self.g
        nodes = g.nodes
        n_nodes = len(nodes)
        U = self.use_counts()
        part = self.partial(g.users())
        lin = [False] * n_nodes
        banged = [False] * n_nodes
        pname = {idx: name for name, idx, _ in g.params}
        reasons: dict[str, str] = {}
        held: dict[str, int] = {}
        for i, n in enumerate(nodes):
            if n.op == Op.PARAM:
                cand = pname[i] in self.linear_inputs
            elif n.fmt is None or n.fmt.kind != "float":
                cand = False
            elif n.op in (Op.CONST, Op.DIM, Op.ARANGE, Op.RAND):
                cand = False
            elif n.op == Op.WHERE:
                cand = lin[n.srcs[1]] or lin[n.srcs[2]]
            elif n.op == Op.SLICE and lin[n.srcs[0]] and part[n.srcs[0]]:
                cand = True
                if not self.slice_single_use(n, n.srcs[0]):
                    banged[i] = True
                    cand = False
                    root = n.srcs[0]
                    if nodes[root].op == Op.PARAM:
                        held[pname[root]] = held.get(pname[root], 0) + 1
            else:
                cand = any(lin[s] for s in n.srcs)
            if cand and U[i] > 1 and part[i]:
                lin[i] = True     # used unevenly through slices: decided per slice
            elif cand and U[i] > 1:
                banged[i] = True
                if n.op == Op.SLICE and nodes[n.srcs[0]].op == Op.PARAM:
                    held[pname[n.srcs[0]]] = held.get(pname[n.srcs[0]], 0) + 1
                if n.op == Op.PARAM:
                    reasons[pname[i]] = (f"used {int(U[i])} times (an element feeds more than one "
                                         "operation): held exact, like Bean's discrete inputs; "
                                         "the other inputs absorb the rounding errors")
            else:
                lin[i] = cand
        self.lin = lin
        self.banged = banged
        phi = [0.0] * n_nodes
        for i, n in enumerate(nodes):
            if lin[i]:
                continue
            phi[i] = 0.0 if (banged[i] or n.op == Op.PARAM) else self.phi_rule(i, n, phi, lin)
        self.phi = phi
        # outputs that no perturbation can reach must be exact
        for k, o in enumerate(g.outputs):
            if not lin[o] and not banged[o] and phi[o] != 0:
                raise Inadmissible(f"output {k} carries rounding error but depends on no input that "
                                   f"can absorb it (inputs used more than once, and values "
                                   f"computed from them only, are held exact){self.where(nodes[o])}")
        rho = [0.0] * n_nodes
        for i in range(n_nodes - 1, -1, -1):
            if lin[i] or banged[i]:
                if nodes[i].op == Op.PARAM:
                    continue
                self.push_rule(i, nodes[i], rho, phi, lin)
        for i, n in enumerate(nodes):
            if lin[i] or banged[i] or (math.isfinite(phi[i]) and n.op != Op.PARAM and
                                       n.fmt is not None and n.fmt.kind == "float"):
                self.check_node(i, n)
        units: dict[str, float | None] = {}
        for name, idx, p in g.params:
            if lin[idx]:
                units[name] = rho[idx]
                if name in held:
                    reasons[name] = ("elements used more than once are held exact (Bean's "
                                     "discrete variables); the grade is the largest over the "
                                     "other elements")
            elif name in reasons:
                units[name] = None
            else:
                units[name] = None
                reasons.setdefault(name, "discrete (held exact) by request" if
                                   p.value.fmt.kind == "float" else
                                   f"a {p.value.fmt.name} input: held exact")
        worst = max([v for v in units.values() if v is not None] + [max(phi, default=0.0)])
        self.worst = worst
        if worst * self.u > MAX_PERTURBATION:
            raise Inadmissible(f"the grades ({worst:.3g} u) are too large for the relative model")
        if 2 * math.expm1(worst * self.u) > self.inflate * (1 - MARGIN):
            raise _Reinflate(4 * math.expm1(worst * self.u))
        return units, reasons

    # discrete values: forward relative error (units), inf where none is known
    def phi_rule(self, i: int, n: Node, phi: list[float], lin: list[bool]) -> float:
        g, R = self.g, self.R
        op = n.op
        p = [phi[s] for s in n.srcs]
        fmt = n.fmt
        if op == Op.CONST:
            enc = N.const_enclosures(n.value)
            if enc is None:
                return 0.0
            worst = 0.0
            for f, e in ((f, e) for f, lohi in zip(n.value.attrs[0], enc) for e in lohi):
                if e == 0:
                    if f != 0:
                        return INF
                    continue
                q = Fraction(f) / e
                if q <= 0:
                    return INF
                rel = abs(q - 1)
                worst = max(worst, float(rel) * (1 + 2.0 ** -40))
            return inflate(-math.log1p(-min(worst, 0.5)) / self.u) if worst else 0.0
        if op in (Op.DIM, Op.ARANGE, Op.RAND):
            return 0.0
        if fmt is None or fmt.kind == "bool":
            # truth values: stable when the operands are exact or the ranges decide them
            if op in N.COMPARE or op == Op.TOPK_MASK:
                if all(x == 0 for x in p) and not any(lin[s] for s in n.srcs):
                    return 0.0
                if op in N.COMPARE and compare_decision(op, R[n.srcs[0]], R[n.srcs[1]]) is not None:
                    return 0.0
                return INF
            if op == Op.ROUND:
                return 0.0 if p[0] == 0 and not lin[n.srcs[0]] else INF
            return 0.0 if all(x == 0 for x in p) else INF
        if any(lin[s] for s in n.srcs if g.nodes[s].fmt.kind == "float"):
            return INF  # only for where-with-linear-condition shapes; flagged on use
        jd = self.jd(i)
        c = self.rnd_cost(jd.spec)      # 0 where the judgement says the result is exact
        if fmt.kind == "int":
            if not all(x == 0 for x in p):
                return INF
            if jd.spec is None:
                return 0.0
            # exact only where integral (no rounding to an integer) and within the range
            R_i = R[i]
            if jd.spec.eta > 0 or lo(R_i) < lowest_finite(fmt) or hi(R_i) > fmt.max_finite:
                return INF
            return 0.0
        if op in N.MOVEMENT:
            return max(p) if p else 0.0
        if op == Op.WHERE:
            return max(p[1], p[2]) + c if p[0] == 0 else INF
        if op == Op.ROUND:
            return p[0] + c
        if op in (Op.NEG, Op.ABS):
            return p[0] + c
        if op in (Op.MIN, Op.MAX):
            extra = c
            sa, sb = sign_definite(R[n.srcs[0]]), sign_definite(R[n.srcs[1]])
            if p[0] == 0 and p[1] == 0:
                return extra
            return max(p) + extra if sa != 0 and sa == sb else INF
        if op in (Op.ADD, Op.SUB):
            if p[0] == 0 and p[1] == 0:
                return c
            sb = sign_definite(R[n.srcs[1]]) * (1 if op == Op.ADD else -1)
            sa = sign_definite(R[n.srcs[0]])
            return max(p) + c if sa != 0 and sa == sb else INF
        if op in (Op.MUL, Op.DIV):
            if n.srcs[0] == n.srcs[1]:
                return (2 * p[0] if op == Op.MUL else 0.0) + c
            return p[0] + p[1] + c
        if op == Op.FMA:
            pp = 2 * p[0] if n.srcs[0] == n.srcs[1] else p[0] + p[1]
            prod = I.sqr(R[n.srcs[0]]) if n.srcs[0] == n.srcs[1] else I.mul(R[n.srcs[0]], R[n.srcs[1]])
            if pp == 0 and p[2] == 0:
                return c
            sa, sb = sign_definite(prod), sign_definite(R[n.srcs[2]])
            return max(pp, p[2]) + c if sa != 0 and sa == sb else INF
        if op in (Op.SQRT, Op.RSQRT):
            return p[0] / 2 + self.math_cost(op, jd.spec)
        if op in N.UNARY_MATH:
            cost = self.math_cost(op, jd.spec)
            if p[0] == 0:
                return cost
            from .sensitivity import elasticity
            w = math.exp(p[0] * self.u) * (1 + 2.0 ** -50)   # the computed argument's spread
            Ra = R[n.srcs[0]]
            if not (math.isfinite(lo(Ra)) and math.isfinite(hi(Ra))):
                return INF
            el = elasticity(op, Interval.of(min(lo(Ra) / w, lo(Ra) * w), max(hi(Ra) / w, hi(Ra) * w)))
            return inflate(el * p[0]) + cost if math.isfinite(el) else INF
        if op in (Op.SUM, Op.MEAN):
            k = reduce_count(g, n)
            order = n.attrs[2]
            if k is None or order == "kahan":
                return INF
            depth = max(k - 1, 0) if order != "pairwise" else (math.ceil(math.log2(k)) if k > 1 else 0)
            ca = self.rnd_cost(jd.acc)
            # elements rounded into a narrower accumulator first
            extra = ca if jd.first_rounded else 0.0
            if p[0] == 0 and k <= 2:
                base = ca * depth + extra
            elif sign_definite(R[n.srcs[0]]) != 0:
                base = p[0] + ca * depth + extra
            else:
                return INF
            return base + c           # a mean's division (c is 0 for a sum)
        if op in (Op.RMAX, Op.RMIN):
            return p[0] + c
        if op == Op.MATMUL:
            K = matmul_k(g, n)
            if K is None:
                return INF
            prod = I.mul(R[n.srcs[0]], R[n.srcs[1]])
            ca = self.rnd_cost(jd.acc)
            out = c
            if K == 1 or (p[0] == 0 and p[1] == 0 and K <= 2) or sign_definite(prod) != 0:
                return p[0] + p[1] + ca * K + out
            return INF
        return INF

    def disc(self, s: int) -> float:
        return self.phi[s]

    def is_zero(self, s: int) -> bool:
        R = self.R[s]
        return lo(R) == 0 and hi(R) == 0 and self.phi[s] == 0

    def pow2_const(self, s: int) -> bool:
        n = self.g.nodes[s]
        if n.op != Op.CONST or (len(n.value.attrs) > 1 and n.value.attrs[1] is not None):
            return False
        vals = n.value.attrs[0]
        if not vals:
            return False
        for v in vals:
            if v == 0 or not math.isfinite(v):
                return False
            m, _ = math.frexp(abs(v))
            if m != 0.5:
                return False
        return True

    def push(self, rho: list[float], s: int, val: float) -> None:
        if self.lin[s]:
            rho[s] = max(rho[s], val)

    def need_linear(self, i: int, n: Node, s: int, what: str) -> None:
        if not self.lin[s] and not self.is_zero(s):
            raise Inadmissible(
                f"{what} combines a perturbable value with one that cannot absorb a perturbation "
                f"(it depends on no perturbable input, or is used more than once): no relative "
                f"backward error bound exists in this model{self.where(n)}")

    def push_rule(self, i: int, n: Node, rho: list[float], phi: list[float], lin: list[bool]) -> None:
        g = self.g
        op = n.op
        r = rho[i]
        src = n.srcs
        jd = self.jd(i)
        c = self.rnd_cost(jd.spec)      # 0 where the judgement says the result is exact
        tight = self.style == "tight"
        if op in N.MOVEMENT:
            for s in src:
                if not lin[s] and (phi[s] != 0 or r != 0):
                    raise Inadmissible(f"a part that cannot be perturbed would have to absorb "
                                       f"rounding error{self.where(n)}")
                self.push(rho, s, r)
            return
        if op in (Op.ADD, Op.SUB):
            for s in src:
                self.need_linear(i, n, s, f"'{op}'")
                self.push(rho, s, r + c)
            return
        if op in (Op.MUL, Op.DIV):
            a, b = src
            if lin[a] and lin[b]:
                for s in src:
                    self.push(rho, s, (r + c) / 2 if tight else r + c / 2)
                return
            la, other = (a, b) if lin[a] else (b, a)
            if math.isinf(phi[other]):
                raise Inadmissible(f"'{op}' by a computed value whose rounding error has no known "
                                   f"relative bound{self.where(n)}")
            # scaling by a power of two is exact (in the normal range, check_node) only when
            # the scaled operand is a value of the result's format (jd.operands_fit)
            cost = 0.0 if (jd.operands_fit and phi[other] == 0 and self.pow2_const(other) and
                           (op == Op.MUL or other == b)) else c
            self.push(rho, la, r + cost + phi[other])
            return
        if op == Op.FMA:
            a, b, cc = src
            self.need_linear(i, n, cc, "fma")
            self.push(rho, cc, r + c)
            if lin[a] and lin[b]:
                for s in (a, b):
                    self.push(rho, s, (r + c) / 2 if tight else r + c / 2)
            elif lin[a] or lin[b]:
                la, other = (a, b) if lin[a] else (b, a)
                if math.isinf(phi[other]):
                    raise Inadmissible(f"fma by a computed value whose rounding error has no "
                                       f"known relative bound{self.where(n)}")
                self.push(rho, la, r + c + phi[other])
            else:
                prod = I.mul(self.R[a], self.R[b])
                if not (lo(prod) == 0 and hi(prod) == 0 and phi[a] == 0 and phi[b] == 0):
                    raise Inadmissible("fma adds a product that cannot be perturbed to a perturbed "
                                       f"value{self.where(n)}")
            return
        if op in (Op.NEG, Op.ABS):
            self.push(rho, src[0], r + c)
            return
        if op in (Op.SQRT, Op.RSQRT):
            self.push(rho, src[0], 2 * (r + self.math_cost(op, jd.spec)))
            return
        if op in (Op.MIN, Op.MAX):
            extra = c
            for s in src:
                if not lin[s]:
                    raise Inadmissible(f"'{op}' of a perturbable and a fixed value: perturbations "
                                       f"may change which one is taken{self.where(n)}")
                self.push(rho, s, r + extra)
            return
        if op == Op.ROUND:
            self.push(rho, src[0], r + c)
            return
        if op == Op.WHERE:
            cnd, a, b = src
            if phi[cnd] != 0:
                raise Inadmissible(f"the condition of where() may change under the perturbation"
                                   f"{self.where(n)}")
            for s in (a, b):
                if lin[s]:
                    self.push(rho, s, r + c)
                elif phi[s] != 0 or r + c != 0:
                    raise Inadmissible(f"a where() branch that cannot be perturbed would have to "
                                       f"absorb rounding error{self.where(n)}")
            return
        if op in (Op.SUM, Op.MEAN):
            k = reduce_count(g, n)
            order = n.attrs[2]
            if k is None:
                raise Inadmissible(f"the grade depends on the sizes {', '.join(sorted(g.unbound))}: "
                                   f"give them{self.where(n)}")
            if order == "kahan":
                raise Inadmissible(f"compensated (Kahan) summation is not a composition of "
                                   f"roundings that a Bean-style grade describes{self.where(n)}")
            depth = max(k - 1, 0) if order != "pairwise" else (math.ceil(math.log2(k)) if k > 1 else 0)
            ca = self.rnd_cost(jd.acc)
            # elements rounded into a narrower accumulator first; a mean's division (c)
            extra = ca if jd.first_rounded else 0.0
            self.push(rho, src[0], r + depth * ca + extra + c)
            return
        if op in (Op.RMAX, Op.RMIN):
            self.push(rho, src[0], r + c)
            return
        if op == Op.MATMUL:
            K = matmul_k(g, n)
            if K is None:
                raise Inadmissible(f"the grade depends on the sizes {', '.join(sorted(g.unbound))}: "
                                   f"give them{self.where(n)}")
            ca = self.rnd_cost(jd.acc)
            out = c
            a, b = src
            if lin[a] and lin[b]:
                for s in src:
                    self.push(rho, s, (r + out + K * ca) / 2 if tight else
                              r + out + (K - 1) * ca + ca / 2)
                return
            la, other = (a, b) if lin[a] else (b, a)
            if math.isinf(phi[other]):
                raise Inadmissible(f"a matrix product with a computed operand whose rounding "
                                   f"error has no known relative bound{self.where(n)}")
            self.push(rho, la, r + out + K * ca + phi[other])
            return
        raise Inadmissible(f"no backward-error rule for '{op}' of a perturbed value{self.where(n)}")

    def check_node(self, i: int, n: Node) -> None:
        """Over/underflow and stability checks for the nodes on the perturbed paths."""
        g = self.g
        op = n.op
        if op in N.MOVEMENT or op == Op.PARAM:
            return
        jd = self.jd(i)
        if op in (Op.SUM, Op.MEAN):
            s0 = n.srcs[0]
            if jd.first_rounded:      # each element is rounded into the accumulator first
                self.check_range(i, jd.acc, iv=self.R[s0], ell_override=self.ell_out[s0],
                                 q_override=self.q[s0])
            k = reduce_count(g, n)
            if op == Op.MEAN and k:   # the partial sums reach k times the mean (overflow only)
                self.check_range(i, jd.acc, exact_in_subnormals=True,
                                 iv=I.mul(self.R[s0], Fraction(k)))
            # sums of values of the accumulator's format are exact in its subnormal range
            self.check_range(i, jd.spec or jd.acc,
                             exact_in_subnormals=op == Op.SUM and not jd.first_rounded)
            return
        if op == Op.MATMUL:
            a, b = n.srcs
            prod = I.mul(self.R[a], self.R[b])
            # each product is rounded into the accumulator
            self.check_range(i, jd.acc, iv=prod, ell_override=self.ell_out[a] * self.ell_out[b],
                             q_override=self.q[a] * self.q[b])
            # the partial sums (overflow only: additions of accumulator values are exact in
            # its subnormal range), then the rounding into the output format, if any
            self.check_range(i, jd.acc, exact_in_subnormals=True)
            self.check_range(i, jd.spec)
            return
        # sums, differences (and min/max) of values of the result's format are exact in its
        # subnormal range: only where the operands fit (jd.operands_fit)
        self.check_range(i, jd.spec, exact_in_subnormals=op in (Op.ADD, Op.SUB, Op.MIN, Op.MAX)
                         and jd.operands_fit)


def _ulp_grain(fmt: Format, m: float) -> float:
    """Every float of fmt with magnitude >= m is a multiple of this power of two."""
    if m < fmt.min_normal:
        return fmt.min_subnormal
    e = math.frexp(m)[1] - 1          # 2^e <= m < 2^(e+1)
    return max(2.0 ** (e - fmt.precision + 1), fmt.min_subnormal)


def _range_grain(fmt: Format | None, R: Interval) -> tuple[float, float]:
    if fmt is None or fmt.kind != "float":
        return (1.0, 1.0) if fmt is not None and fmt.kind == "int" else (0.0, 0.0)
    m = mig(R) * (1 - MARGIN)
    q = _ulp_grain(fmt, m)
    return q, max(m, q)


def _const_grain(fmt: Format | None, values) -> tuple[float, float]:
    if fmt is None or fmt.kind != "float":
        return (1.0, 1.0) if fmt is not None and fmt.kind == "int" else (0.0, 0.0)
    nz = [abs(v) for v in values if v != 0 and math.isfinite(v)]
    if not nz:
        return fmt.min_subnormal, fmt.min_subnormal
    q = min(_lowbit(v) for v in nz)
    return q, min(nz)


def _lowbit(v: float) -> float:
    """The largest power of two dividing the float v (its last significant bit)."""
    m, e = math.frexp(v)
    k = 0
    mi = int(m * 2 ** 53)
    while mi and not (mi & 1):
        mi >>= 1
        k += 1
    return math.ldexp(1.0, e - 53 + k)


def _linear_inputs(fn: N.Function, discrete) -> set[str]:
    d = set(discrete or ())
    unknown = d - {p.name for p in fn.params}
    if unknown:
        raise ValueError(f"{fn.name}() has no input(s) {', '.join(sorted(unknown))}")
    return {p.name for p in fn.params if p.name not in d and p.value.fmt.kind == "float"}


def _run(g: Graph, linear: set[str], style: str, strict: bool):
    inflate = INFLATE
    for _ in range(4):
        try:
            an = _Analysis(g, linear, style, strict, inflate)
            units, reasons = an.run()
            return units, reasons, an
        except _Reinflate as ex:
            inflate = ex.inflate
    raise Inadmissible("the perturbations are too large for the range checks")


def backward_analysis(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None, *,
                      discrete=(), style: str = "tight", underflow: str = "strict") -> BackwardResult:
    """Bean-style backward error grades for every input of fn (see the module docstring).

    discrete: inputs to hold exact (Bean's `dnum`); inputs used more than once are always
    discrete. style: 'tight' (split the factor of a product of two perturbed values) or 'bean'
    (Bean's rule, which reproduces its published grades). underflow: 'strict' (SPEC: a possible
    underflow voids the bound) or 'ignore' (Bean's real-number model).
    """
    if style not in ("tight", "bean"):
        raise ValueError(f"unknown style {style!r} (tight, bean)")
    if underflow not in ("strict", "ignore"):
        raise ValueError(f"unknown underflow policy {underflow!r} (strict, ignore)")
    t0 = time.perf_counter()
    g = flatten(module, fn, dims)
    linear = _linear_inputs(fn, discrete)
    names = [p.name for p in fn.params]
    an = _Analysis(g, linear, style, underflow == "strict")
    u = an.u
    ufmt = an.unit_fmt.name if an.unit_fmt is not None else "f64"
    try:
        units, reasons, _ = _run(g, linear, style, underflow == "strict")
    except Inadmissible as ex:
        cond = None
        if ex.underflow:
            try:
                cond, _, _ = _run(g, linear, style, False)
            except Inadmissible:
                cond = None
        none = {nm: None for nm in names}
        return BackwardResult(dict(none), dict(none), dict(none), u, ufmt,
                              {nm: str(ex) for nm in names}, sorted(set(names) - linear), style,
                              str(ex), cond, time.perf_counter() - t0)
    absolute = {k: (None if v is None else inflate(v * u)) for k, v in units.items()}
    relative = {k: (None if v is None else _rel_from_units(v, u)) for k, v in units.items()}
    if all(v is None for v in units.values()) and names:
        reason = "no input can absorb the rounding errors (all are discrete)"
        return BackwardResult(units, absolute, relative, u, ufmt, reasons,
                              [n for n in names if units[n] is None], style, reason, None,
                              time.perf_counter() - t0)
    return BackwardResult(units, absolute, relative, u, ufmt, reasons,
                          [n for n in names if units[n] is None], style, None, None,
                          time.perf_counter() - t0)


def backward_error(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None,
                   **kwargs) -> dict[str, float | None] | None:
    """Per-input relative backward error bounds |x~ - x| / |x| (None for a held-exact input),
    or None when the program is outside the admissible shape; see backward_analysis."""
    return backward_analysis(module, fn, dims, **kwargs).as_report()


# =============================================================================================
# an explicit witness, for checking the grades by measurement
def backward_witness(module: N.Module, fn: N.Function, args, *, discrete=(), prec: int = 400):
    """Construct the perturbed inputs that the analysis promises, for one run.

    For scalar f64 programs (tensor inputs used through constant indices; the ops + - * /
    fma sqrt neg abs min max and f64 roundings): computes the run with exact rational
    arithmetic rounded to f64 (the reference semantics), then walks the graph backwards with
    the analysis' own assignment (a product of two perturbed values splits the factor, a
    discrete operand pushes its forward error onto the perturbed one, a value used twice is
    reproduced exactly) and returns ``(perturbed, factors, outputs)``: per input, an object
    array of mpmath numbers ``x~`` (prec bits) and of the factors ``x~ / x``; the computed
    outputs as Fractions. The ideal program at ``x~`` equals the outputs (up to the precision:
    square roots of factors are irrational), and ``|ln factor| <= units * u`` must hold.
    Raises ValueError for programs outside this small subset, Inadmissible where the analysis
    finds no grade.
    """
    import mpmath

    ctx = mpmath.MPContext()
    ctx.prec = prec
    arrays = [np.asarray(a, dtype=np.float64) for a in args]
    dims = {k: int(v) for k, v in bind_sizes((p.value.shape, a.shape)
                                               for p, a in zip(fn.params, arrays)).items()}
    g = flatten(module, fn, dims)
    _, _, an = _run(g, _linear_inputs(fn, discrete), "tight", True)
    nodes = g.nodes
    F = Fraction
    pidx = {idx: k for k, (_, idx, _) in enumerate(g.params)}
    comp: list = [None] * len(nodes)
    ideal: list = [None] * len(nodes)
    theta: list = [ctx.mpf(1)] * len(nodes)

    def mp(x):
        return ctx.mpf(x.numerator) / x.denominator if isinstance(x, Fraction) else ctx.mpf(x)

    def rnd(e: Fraction) -> Fraction:
        return F(float(e))

    for i, n in enumerate(nodes):
        op = n.op
        if n.fmt is None or n.fmt.name != "f64":
            raise ValueError("backward_witness handles f64 programs only")
        if op == Op.PARAM:
            a = arrays[pidx[i]]
            comp[i] = np.vectorize(F, otypes=[object])(a) if a.ndim else F(float(a))
            ideal[i] = comp[i]
            continue
        if n.shape != ():
            raise ValueError(f"backward_witness handles scalar values only ('{op}' is a tensor)")
        x = [comp[s] for s in n.srcs]
        xi = [ideal[s] for s in n.srcs]
        if op == Op.CONST:
            comp[i] = F(n.value.attrs[0][0])
            ex = n.value.attrs[1] if len(n.value.attrs) > 1 else None
            ideal[i] = ex[0] if ex is not None else comp[i]
            continue
        if op == Op.SLICE:
            idx = tuple(v for v in n.index if v is not None)
            comp[i] = x[0][idx]
            ideal[i] = xi[0][idx]
            continue
        ops2 = {Op.ADD: lambda a, b: a + b, Op.SUB: lambda a, b: a - b,
                Op.MUL: lambda a, b: a * b, Op.DIV: lambda a, b: a / b,
                Op.MIN: min, Op.MAX: max}
        if op in ops2:
            e = ops2[op](x[0], x[1])
            ie = ops2[op](xi[0], xi[1]) if not isinstance(xi[0], Fraction) or \
                not isinstance(xi[1], Fraction) else ops2[op](xi[0], xi[1])
        elif op == Op.FMA:
            e = x[0] * x[1] + x[2]
            ie = xi[0] * xi[1] + xi[2]
        elif op in (Op.NEG, Op.ABS, Op.ROUND):
            e = -x[0] if op == Op.NEG else abs(x[0]) if op == Op.ABS else x[0]
            ie = -xi[0] if op == Op.NEG else abs(xi[0]) if op == Op.ABS else xi[0]
        elif op == Op.SQRT:
            c = F(math.sqrt(float(x[0])))
            comp[i] = c
            theta[i] = mp(c) / ctx.sqrt(mp(x[0])) if c != 0 else ctx.mpf(1)
            ideal[i] = ctx.sqrt(mp(xi[0]))
            continue
        else:
            raise ValueError(f"backward_witness does not handle '{op}'")
        c = rnd(e)
        comp[i] = c
        theta[i] = mp(c) / mp(e) if e != 0 else ctx.mpf(1)
        ideal[i] = ie
    # discrete values used by perturbed ones are compared with their ideal values; a value
    # reproduced exactly (used more than once) is its own ideal value
    for i in range(len(nodes)):
        if an.banged[i]:
            ideal[i] = comp[i]
    # the backward walk
    psi: dict[int, object] = {}
    elem: dict[int, dict] = {}
    lin, banged = an.lin, an.banged
    for i in range(len(nodes) - 1, -1, -1):
        n = nodes[i]
        if not (lin[i] or banged[i]) or n.op == Op.PARAM:
            continue
        P = ctx.mpf(1) if banged[i] else psi.get(i, ctx.mpf(1))
        T = theta[i] * P
        s = n.srcs
        op = n.op

        def setp(k, val):
            if lin[k]:
                psi[k] = val

        if op == Op.SLICE:
            if lin[s[0]]:
                elem.setdefault(s[0], {})[tuple(v for v in n.index if v is not None)] = P
            continue
        if op in (Op.ADD, Op.SUB, Op.MIN, Op.MAX, Op.NEG, Op.ABS, Op.ROUND):
            for k in s:
                setp(k, T)
            continue
        if op == Op.SQRT:
            setp(s[0], T * T)
            continue
        if op in (Op.MUL, Op.DIV, Op.FMA):
            a, b = s[0], s[1]
            if op == Op.FMA:
                setp(s[2], T)
            if lin[a] and lin[b]:
                r = ctx.sqrt(T)
                setp(a, r)
                setp(b, r if op != Op.DIV else 1 / r)
            elif lin[a]:
                setp(a, T * mp(comp[b]) / mp(ideal[b]) if op != Op.DIV else T * mp(ideal[b]) / mp(comp[b]))
            elif lin[b]:
                if op == Op.DIV:
                    setp(b, mp(ideal[a]) / (mp(comp[a]) * T))
                else:
                    setp(b, T * mp(comp[a]) / mp(ideal[a]))
            continue
        raise ValueError(f"backward_witness does not handle '{op}'")
    perturbed, factors = {}, {}
    for k, (name, idx, p) in enumerate(g.params):
        a = comp[idx]
        if isinstance(a, np.ndarray):
            fac = np.empty(a.shape, dtype=object)
            for j in np.ndindex(a.shape):
                fac[j] = elem.get(idx, {}).get(j, ctx.mpf(1)) if lin[idx] else ctx.mpf(1)
            per = np.empty(a.shape, dtype=object)
            for j in np.ndindex(a.shape):
                per[j] = mp(a[j]) * fac[j]
        else:
            f_ = psi.get(idx, ctx.mpf(1)) if lin[idx] else ctx.mpf(1)
            fac = np.asarray(f_, dtype=object)
            per = np.asarray(mp(a) * f_, dtype=object)
        perturbed[name], factors[name] = per, fac
    return perturbed, factors, tuple(comp[o] for o in g.outputs)


# =============================================================================================
# what the analysis driver puts in a Report
def report_fields(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None) -> dict:
    """Sensitivities and backward error for numgrade.report.Report; never raises.

    Returns {"sensitivity": {input: float | None}, "sensitivity_metric": {input: metric},
    "backward_error": {input: float | None} | None, "backward_units": {input: k | None},
    "backward_unit": u, "notes": [str, ...]}. Use "sensitivity" (and "sensitivity_metric") in
    Report.coeffects and "backward_error" as Report.backward_error; "notes" explain the Nones.
    """
    from .sensitivity import sensitivity_analysis

    out: dict = {"notes": []}
    names = [p.name for p in fn.params]
    try:
        s = sensitivity_analysis(module, fn, dims)
        out["sensitivity"] = s.values
        out["sensitivity_metric"] = s.metric
        for k, why in s.reasons.items():
            out["notes"].append(f"sensitivity to {k}: unbounded ({why})")
    except Exception as ex:  # pragma: no cover - a bug must not take the report down
        out["sensitivity"] = {n: None for n in names}
        out["sensitivity_metric"] = {n: "absolute" for n in names}
        out["notes"].append(f"sensitivity analysis failed: {ex!r}")
    try:
        b = backward_analysis(module, fn, dims)
        out["backward_error"] = b.as_report()
        out["backward_units"] = b.units
        out["backward_unit"] = b.unit
        if b.reason is not None:
            note = f"backward error: none in Bean's model ({b.reason})"
            if b.conditional:
                note += ("; where nothing underflows it would be " +
                         ", ".join(f"{k} {v:g} u" for k, v in b.conditional.items() if v is not None))
            out["notes"].append(note)
        else:
            for k, why in b.reasons.items():
                out["notes"].append(f"backward error of {k}: {why}")
    except Exception as ex:  # pragma: no cover
        out["backward_error"] = None
        out["backward_units"] = {n: None for n in names}
        out["backward_unit"] = None
        out["notes"].append(f"backward error analysis failed: {ex!r}")
    return out
