"""Compositional forward error analysis for tensor programs (linear in program size).

Every value gets an abstract value: the interval ``R`` of its ideal elements, the interval ``C``
of its computed elements, and a mixed error bound ``|computed - ideal| <= r |ideal| + a`` that
holds elementwise. Rules per operation are closed forms (rounding_model for roundings; Higham's
gamma_k = k u / (1 - k u) for reductions and dot products, valid for every summation order a
backend may use; Lipschitz and relative forms for the math functions). Relative error composes
tightly through products, quotients and sums of sign-definite values; absolute error through the
rest. Branches (where) whose condition can differ between the computed and the ideal program
add the jump between the branches. A bound that cannot be established is infinite, with the
reason and the source span recorded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import Span
from ..ir import nodes as N
from ..ir.dims import Dim, bind_sizes
from ..ir.formats import Format
from ..ir.nodes import Op, TensorType, Value
from . import interval as I
from .interval import Interval
from .outward import down, up
from .rounding_model import RoundSpec, judge, lowest_finite

INF = math.inf
SAFE = 1 + 2.0 ** -48   # inflation that covers the rounding of the bound arithmetic itself


def _iv(lo: float, hi: float) -> Interval:
    return Interval.of(np.float64(lo), np.float64(hi))


def _f(x) -> float:
    return float(np.asarray(x))


def gamma(k: float, u: float) -> float:
    """Higham's gamma_k = k u / (1 - k u); inf when k u >= 1."""
    if k <= 0:
        return 0.0
    ku = k * u
    return INF if ku >= 1 else ku / (1 - ku) * SAFE


@dataclass
class AV:
    """Abstract value: ideal range, computed range, mixed error bound, branch stability."""

    R: Interval
    C: Interval
    r: float = 0.0
    a: float = 0.0
    stable: bool = True          # for bools: computed and ideal truth agree everywhere
    reason: str | None = None    # why the bound is infinite
    span: Span | None = None
    alt: tuple[float, float] | None = None   # a second valid (r, a) pair, for reporting

    def _err(self, r: float, a: float) -> float:
        if r == 0:
            return a
        m = _f(self.R.mag())
        return INF if not math.isfinite(m) else (r * m + a) * SAFE

    def _rel(self, r: float, a: float) -> float:
        if a == 0:
            return r
        mig = _f(self.R.mig())
        if mig <= 0:
            return INF
        return (r + a / mig) * SAFE

    @property
    def bounded(self) -> bool:
        """False once a rule has given up the bound (a or r infinite): then no second form
        (alt) may bring it back."""
        return math.isfinite(self.a) and math.isfinite(self.r)

    @property
    def err(self) -> float:
        """Total absolute error bound."""
        if not self.bounded:
            return INF
        e = self._err(self.r, self.a)
        if self.alt is not None:
            e = min(e, self._err(*self.alt))
        return e

    def rel_part(self) -> float:
        """r' with |computed - ideal| <= r' |ideal| (inf when the ideal can be 0)."""
        if not self.bounded:
            return INF
        e = self._rel(self.r, self.a)
        if self.alt is not None:
            e = min(e, self._rel(*self.alt))
        return e

    def sign_definite(self) -> bool:
        lo, hi = _f(self.R.lo), _f(self.R.hi)
        clo, chi = _f(self.C.lo), _f(self.C.hi)
        return (lo >= 0 and clo >= 0) or (hi <= 0 and chi <= 0)


def _bad(av: AV, reason: str, span: Span | None) -> AV:
    return replace(av, a=INF, reason=av.reason or reason, span=av.span or span)


@dataclass
class Result:
    values: dict[int, AV]
    outputs: list[AV]
    warnings: list[tuple[str, Span | None]] = field(default_factory=list)
    contributions: dict[int, float] = field(default_factory=dict)   # line -> local rounding error


def _sides(lo_ok, hi_ok):
    return lambda d: lo_ok(_f(d.lo)) and hi_ok(_f(d.hi))


_ANY = (lambda t: True)
# op -> (its test on d = p - q holds on all of [lo, hi], fails on all of it); ties (d = 0)
# belong to the side that the op's own test puts them on
_COMPARE_SIDES = {
    Op.LT: (_sides(_ANY, lambda h: h < 0), _sides(lambda l: l >= 0, _ANY)),
    Op.LE: (_sides(_ANY, lambda h: h <= 0), _sides(lambda l: l > 0, _ANY)),
    Op.GT: (_sides(lambda l: l > 0, _ANY), _sides(_ANY, lambda h: h <= 0)),
    Op.GE: (_sides(lambda l: l >= 0, _ANY), _sides(_ANY, lambda h: h < 0)),
    Op.EQ: (_sides(lambda l: l == 0, lambda h: h == 0),
            lambda d: _f(d.lo) > 0 or _f(d.hi) < 0),
    Op.NE: (lambda d: _f(d.lo) > 0 or _f(d.hi) < 0,
            _sides(lambda l: l == 0, lambda h: h == 0)),
}


class ForwardAnalysis:
    """Runs the rules over a function's values in dependency order."""

    def __init__(self, module: N.Module, dims: dict[str, int]):
        self.module = module
        self.dims = dims
        self.warnings: list[tuple[str, Span | None]] = []
        self.contributions: dict[int, float] = {}
        # per value (id), the local rounding error its own rule added (contributions.py)
        self.site_local: dict[int, float] = {}
        self._current: list[Value] = []

    # entry points -----------------------------------------------------------------------
    def run(self, fn: N.Function, params: list[AV] | None = None) -> Result:
        if params is None:
            params = [self.param_av(p) for p in fn.params]
        env: dict[int, AV] = {}
        self.env = env
        for p, av in zip(fn.params, params):
            env[id(p.value)] = av
        for v in N.toposort(fn.results):
            if id(v) in env:
                continue
            args = [env[id(s)] for s in v.srcs]
            span = fn.spans.get(v)
            self._current.append(v)
            try:
                av = self.rule(fn, v, args, span)
            except _Unbound as ex:
                av = AV(Interval.entire(), Interval.entire(), a=INF, reason=str(ex), span=span)
            finally:
                self._current.pop()
            if av.reason is None and not math.isfinite(av.a):
                av = replace(av, reason="the error bound is not finite", span=span)
            env[id(v)] = av
        return Result(env, [env[id(r)] for r in fn.results], self.warnings, self.contributions)

    def param_av(self, p: N.Parameter) -> AV:
        fmt = p.value.fmt
        if p.range is not None:
            R = _iv(*p.range)
        elif fmt.kind == "bool":
            R = _iv(0, 1)
        else:
            m = fmt.max_finite
            R = _iv(-m if fmt.signed else 0.0, m)
        return AV(R, R)

    # helpers -----------------------------------------------------------------------------
    def env_get(self, v: Value) -> AV | None:
        return self.env.get(id(v))

    def size(self, d: Dim) -> int:
        try:
            return int(d.evaluate(self.dims))
        except KeyError as ex:
            raise _Unbound(f"the bound depends on the size {ex.args[0]}: give it "
                           f"(analyze({ex.args[0]}=...) or --dim {ex.args[0]}=...)") from None

    def count(self, v: Value, axes) -> int:
        n = 1
        for a in axes:
            n *= self.size(v.shape[a])
        return n

    def note(self, span: Span | None, local: float) -> None:
        if span is not None and math.isfinite(local):
            self.contributions[span.line] = max(self.contributions.get(span.line, 0.0), local)
        if self._current and math.isfinite(local) and local > 0:
            k = id(self._current[-1])
            self.site_local[k] = self.site_local.get(k, 0.0) + float(local)

    def round_step(self, pre: AV, spec: RoundSpec | None, span: Span | None, what: str) -> AV:
        """Apply one rounding (or none) to a pre-rounding abstract value."""
        if spec is None:
            return pre
        C = pre.C
        cmag = _f(C.mag())
        extra_a = 0.0
        if spec.fmt.name == "e8m0" and _f(C.lo) <= 0:
            return replace(pre, C=Interval.entire(), a=INF,
                           reason=pre.reason or "e8m0 of a value that can be <= 0 is NaN",
                           span=pre.span or span)
        if spec.sat and spec.keeps_inf and not math.isfinite(cmag):
            return replace(pre, C=Interval.entire(), a=INF, span=pre.span or span,
                           reason=pre.reason or f"an infinite value stays infinite in {what}")
        if spec.sat:
            m = spec.max_finite
            low = lowest_finite(spec.fmt)
            if cmag > m:
                extra_a = cmag - m
                self.warnings.append((f"{what} may saturate {spec.fmt.name} (|value| up to "
                                      f"{cmag:.4g} > {m:.4g})", span))
                C = Interval.of(np.clip(C.lo, low, m), np.clip(C.hi, low, m))
        elif cmag >= spec.overflow_at:
            self.warnings.append((f"{what} may overflow {spec.fmt.name} (|value| up to "
                                  f"{cmag:.4g})", span))
            return replace(pre, C=Interval.entire(), a=INF,
                           reason=pre.reason or f"may overflow {spec.fmt.name}", span=pre.span or span)
        u, eta = spec.u, spec.eta

        def rounded(pr: float, pa: float) -> tuple[float, float]:
            return ((pr + u * (1 + pr)) * SAFE, (pa * (1 + u) + eta + extra_a * (1 + u)) * SAFE)

        r, a = rounded(pre.r, pre.a)
        alt = rounded(*pre.alt) if pre.alt is not None else None   # both forms round
        Cn = C * Interval.of(np.float64(1 - u), np.float64(1 + u)) + Interval.of(np.float64(-eta), np.float64(eta))
        # rounding is monotone and fl(0) = 0, so it keeps the sign of its argument
        clo, chi = _f(C.lo), _f(C.hi)
        Cn = Interval.of(np.float64(max(_f(Cn.lo), 0.0) if clo >= 0 else _f(Cn.lo)),
                         np.float64(min(_f(Cn.hi), 0.0) if chi <= 0 else _f(Cn.hi)))
        if spec.fmt.kind in ("float", "int"):
            m, low = spec.fmt.max_finite, lowest_finite(spec.fmt)
            if spec.fmt.kind == "float" and spec.fmt.signed:
                low = -m
            Cn = Interval.of(np.clip(Cn.lo, low, m) if math.isfinite(m) else Cn.lo,
                             np.clip(Cn.hi, low, m) if math.isfinite(m) else Cn.hi)
        self.note(span, u * cmag + eta)
        return replace(pre, C=Cn, r=r, a=a, alt=alt)

    # the rules -----------------------------------------------------------------------------
    def rule(self, fn: N.Function, v: Value, x: list[AV], span: Span | None) -> AV:
        """The abstract value of v from its operands' (subclasses may tighten it)."""
        return _no_bound_in_no_bound_out(self.local_rule(fn, v, x, span), x, span)

    def local_rule(self, fn: N.Function, v: Value, x: list[AV], span: Span | None) -> AV:
        op = v.op
        t = v.type
        fmt = t.fmt if isinstance(t, TensorType) else None
        if op == Op.CONST:
            vals = np.array(v.attrs[0], dtype=np.float64)
            if not np.all(np.isfinite(vals)):
                return AV(Interval.entire(), Interval.entire(), a=INF,
                          reason="a constant is not finite", span=span)
            C = _iv(vals.min(), vals.max())
            enc = N.const_enclosures(v)
            if enc is None:
                return AV(C, C)
            R = Interval.of(np.float64(down(min(lo for lo, _ in enc))),
                            np.float64(up(max(hi for _, hi in enc))))
            return AV(R, C, a=up(N.const_error(v)) * SAFE)
        if op == Op.DIM:
            n = float(v.attrs[0].evaluate(self.dims)) if v.attrs[0].symbols() <= set(self.dims) \
                else None
            R = _iv(n, n) if n is not None else _iv(0, 2.0 ** 31)
            return AV(R, R)
        if op == Op.ARANGE:
            n = self.size(v.shape[0])
            R = _iv(0, max(n - 1, 0))
            return AV(R, R)
        if op == Op.RAND:
            R = _iv(0.0, 1.0 - 2.0 ** -24)
            return AV(R, R)
        if op in N.MOVEMENT:
            if op == Op.CONCAT:
                R = I.hull(*[a.R for a in x])
                C = I.hull(*[a.C for a in x])
                return AV(R, C, max(a.r for a in x), max(a.a for a in x),
                          all(a.stable for a in x), next((a.reason for a in x if a.reason), None))
            # the same bounds, but a distinct abstract value: the elements are not aligned with
            # the source's any more (x * x[0] is no square)
            return replace(x[0])
        if op == Op.PROJ:
            return x[0].outputs[v.attrs[0]]  # type: ignore[attr-defined]
        if op == Op.CALL:
            callee = self.module.functions[v.attrs[0]]
            sub = type(self)(self.module, self._callee_dims(callee, v))
            res = sub.run(callee, x)
            self.warnings.extend(res.warnings)
            out = AV(_iv(0, 0), _iv(0, 0))
            out.outputs = res.outputs  # type: ignore[attr-defined]
            return out
        if op in N.COMPARE:
            return self.compare(op, x[0], x[1])
        if op in N.LOGIC or op == Op.NOT:
            st = all(a.stable for a in x)
            return AV(_iv(0, 1), _iv(0, 1), stable=st)
        if op == Op.TOPK_MASK:
            st = x[0].err == 0
            return AV(_iv(0, 1), _iv(0, 1), stable=st)
        if op == Op.WHERE:
            return self.round_step(self.where(x, fmt, span), judge(v).spec, span, "this where")
        if op == Op.ROUND:
            mode, sat, _ = v.attrs
            pre = x[0]
            if fmt.kind == "bool":
                return AV(_iv(0, 1), _iv(0, 1), stable=pre.err == 0)
            if v.srcs[0].fmt.kind == "bool":  # a truth value as 0/1: wrong when it may flip
                pre = AV(_iv(0, 1), _iv(0, 1), 0.0, 0.0 if pre.stable else 1.0)
            return self.round_step(pre, judge(v).spec, span, "this rounding")
        if op in N.REDUCE:
            return self.reduce(v, x[0], span)
        if op == Op.MATMUL:
            return self.matmul(v, x[0], x[1], span)
        if op == Op.FMA:
            prod = self.arith(Op.MUL, x[0], x[1], span)
            pre = self.arith(Op.ADD, prod, x[2], span)
            return self.round_step(pre, judge(v).spec, span, "this fma")
        if op in N.ARITH:
            pre = self.arith(op, x[0], x[1], span)
            return self.round_step(pre, judge(v).spec, span, "this operation")
        if op in N.UNARY:
            pre = self.unary(op, x[0], span)
            return self.round_step(pre, judge(v).spec, span, f"{op}")
        raise _Unbound(f"no error rule for '{op}'")

    def _callee_dims(self, callee: N.Function, call: Value) -> dict[str, int]:
        dims: dict[str, int] = {}
        bound = bind_sizes((p.value.shape, a.shape) for p, a in zip(callee.params, call.srcs))
        for s, da in bound.items():
            try:
                dims[s] = int(da.evaluate(self.dims))
            except KeyError:
                pass
        return dims

    def compare(self, op: str, p: AV, q: AV) -> AV:
        if not (p.bounded and q.bounded):   # an operand may be NaN: the comparison is False
            return AV(_iv(0, 1), _iv(0, 1), stable=False)
        if p.err == 0 and q.err == 0:
            return AV(_iv(0, 1), _iv(0, 1), stable=True)
        dR = p.R - q.R
        dC = p.C - q.C
        # the comparison is stable when its truth is one constant over the differences of both
        # programs (each op's test on d = p - q, ties included, in _COMPARE_SIDES)
        always, never = _COMPARE_SIDES[op]
        stable = (always(dR) and always(dC)) or (never(dR) and never(dC))
        return AV(_iv(0, 1), _iv(0, 1), stable=stable)

    def where(self, x: list[AV], fmt: Format, span: Span | None) -> AV:
        c, a, b = x
        R = I.hull(a.R, b.R)
        C = I.hull(a.C, b.C)
        if c.stable:
            return AV(R, C, max(a.r, b.r), max(a.a, b.a), a.stable and b.stable,
                      a.reason or b.reason, a.span or b.span)
        jump = _f((C - R).mag())
        err = max(a.err, b.err)
        self.warnings.append(("the branch taken may differ between the computed and the ideal "
                              "program", span))
        return AV(R, C, 0.0, max(jump, err) * SAFE, False, a.reason or b.reason)

    def arith(self, op: str, x: AV, y: AV, span: Span | None) -> AV:
        reason = x.reason or y.reason
        if op in (Op.ADD, Op.SUB):
            R = x.R + y.R if op == Op.ADD else x.R - y.R
            C = x.C + y.C if op == Op.ADD else x.C - y.C
            yr = y.R if op == Op.ADD else -y.R
            same = (_f(x.R.lo) >= 0 and _f(yr.lo) >= 0) or (_f(x.R.hi) <= 0 and _f(yr.hi) <= 0)
            if same:
                r, a = max(x.r, y.r), x.a + y.a
            else:
                r, a = 0.0, x.err + y.err
            return AV(R, C, r, a * SAFE, reason=reason)
        if op == Op.MUL:
            R = I.sqr(x.R) if x is y else x.R * y.R
            C = I.sqr(x.C) if x is y else x.C * y.C
            r = x.r + y.r + x.r * y.r
            a = x.a * _f(y.R.mag()) * (1 + y.r) + y.a * _f(x.R.mag()) * (1 + x.r) + x.a * y.a
            if x.a == 0 and y.a == 0:
                a = 0.0
            return AV(R, C, r * SAFE, _nan_inf(a) * SAFE, reason=reason)
        if op == Op.DIV:
            R = I.div(x.R, y.R)
            C = I.div(x.C, y.C)
            if _f(y.C.mig()) <= 0 or _f(y.R.mig()) <= 0:
                return AV(R, C, 0.0, INF, reason=reason or "division by a value that can be 0",
                          span=span)
            ry = y.rel_part()
            if ry >= 1:
                return AV(R, C, 0.0, INF, reason=reason or "the divisor's error can reach its size",
                          span=span)
            # (1 + rx) / (1 - ry) - 1, written so that terms below an ulp of 1 survive
            r = (x.r + ry) / (1 - ry)
            a = x.a / _f(y.C.mig()) if x.a else 0.0
            return AV(R, C, r * SAFE, a * SAFE, reason=reason)
        if op in (Op.MIN, Op.MAX):
            f = I.min if op == Op.MIN else I.max
            R, C = f(x.R, y.R), f(x.C, y.C)
            if x.sign_definite() and y.sign_definite() and \
                    (_f(x.R.lo) >= 0) == (_f(y.R.lo) >= 0):
                return AV(R, C, max(x.r, y.r), max(x.a, y.a), reason=reason)
            return AV(R, C, 0.0, max(x.err, y.err), reason=reason)
        if op == Op.MOD:
            if _f(y.R.mig()) <= 0 or _f(y.C.mig()) <= 0:
                return AV(Interval.entire(), Interval.entire(), 0.0, INF, reason=reason or
                          "x % y with a divisor that can be 0 is NaN", span=span)
            R = I.hull(_iv(-_f(y.R.mag()), _f(y.R.mag())))
            C = I.hull(_iv(-_f(y.C.mag()), _f(y.C.mag())))
            if x.err == 0 and y.err == 0:
                return AV(R, C)
            return AV(R, C, 0.0, _f((C - R).mag()), reason=reason)
        raise _Unbound(f"no error rule for '{op}'")

    def unary(self, op: str, x: AV, span: Span | None) -> AV:
        reason = x.reason
        H = I.hull(x.R, x.C)
        E = x.err
        if op == Op.NEG:
            return AV(-x.R, -x.C, x.r, x.a, reason=reason)
        if op == Op.ABS:
            return AV(I.abs(x.R), I.abs(x.C), x.r, x.a, reason=reason)
        if op in (Op.FLOOR, Op.CEIL):
            f = I.floor if op == Op.FLOOR else I.ceil
            return AV(f(x.R), f(x.C), 0.0, (E + 1) * SAFE if E > 0 else 0.0, reason=reason)
        if op == Op.EXP:
            R, C = I.exp(x.R), I.exp(x.C)
            r = math.expm1(E) * SAFE if E < 700 else INF
            return AV(R, C, r, 0.0, reason=reason)
        if op == Op.EXP2:
            R, C = I.exp2(x.R), I.exp2(x.C)
            r = math.expm1(E * math.log(2)) * SAFE if E < 1000 else INF
            return AV(R, C, r, 0.0, reason=reason)
        if op in (Op.LOG, Op.LOG2):
            f = I.log if op == Op.LOG else I.log2
            R, C = f(x.R), f(x.C)
            if _f(x.R.mig()) <= 0 or _f(x.C.lo) <= 0:
                return AV(R, C, 0.0, INF, reason=reason or f"{op} of a value that can be <= 0",
                          span=span)
            rx = x.rel_part()
            if rx >= 1:
                return AV(R, C, 0.0, INF, reason=reason or f"{op} of a value whose error reaches its size", span=span)
            a = -math.log1p(-rx) * SAFE
            if op == Op.LOG2:
                a /= math.log(2)
            return AV(R, C, 0.0, a, reason=reason)
        if op == Op.SQRT:
            R, C = I.sqrt(x.R), I.sqrt(x.C)
            if _f(x.C.lo) < 0 or _f(x.R.lo) < 0:
                return AV(R, C, 0.0, INF, reason=reason or "sqrt of a value that can be negative",
                          span=span)
            rx = x.rel_part()
            if rx < 1:
                # 1 - sqrt(1 - rx) = rx / (1 + sqrt(1 - rx)) <= rx / (2 - rx), without the
                # cancellation that loses an rx below an ulp of 1
                return AV(R, C, rx / (2 - rx) * SAFE, 0.0, reason=reason)
            return AV(R, C, 0.0, math.sqrt(E) * SAFE, reason=reason)
        if op == Op.RSQRT:
            R, C = I.rsqrt(x.R), I.rsqrt(x.C)
            if _f(x.C.lo) <= 0 or _f(x.R.lo) <= 0:
                return AV(R, C, 0.0, INF, reason=reason or "rsqrt of a value that can be <= 0",
                          span=span)
            rx = x.rel_part()
            if rx >= 1:
                return AV(R, C, 0.0, INF, reason=reason, span=span)
            # 1 / sqrt(1 - rx) - 1 = rx / (s (1 + s)) with s = sqrt(1 - rx) >= 1 - rx
            return AV(R, C, rx / ((1 - rx) * (2 - rx)) * SAFE, 0.0, reason=reason)
        # Lipschitz on the hull of ideal and computed arguments
        fns = {Op.TANH: (I.tanh, lambda h: 1.0 - I.sqr(I.tanh(h))),
               Op.SIGMOID: (I.sigmoid, lambda h: I.sigmoid(h) * (1.0 - I.sigmoid(h))),
               Op.SIN: (I.sin, I.cos), Op.COS: (I.cos, I.sin)}
        f, df = fns[op]
        L = _f(df(H).mag())
        return AV(f(x.R), f(x.C), 0.0, L * E * SAFE if E else 0.0, reason=reason)

    def reduce(self, v: Value, x: AV, span: Span | None) -> AV:
        axes, keep, order = v.attrs
        n = self.count(v.srcs[0], axes)
        if v.op in (Op.RMAX, Op.RMIN):
            out = AV(x.R, x.C, x.r, x.a, reason=x.reason) if \
                x.sign_definite() and _f(x.R.lo) >= 0 else AV(x.R, x.C, 0.0, x.err, reason=x.reason)
            return self.round_step(out, judge(v).spec, span, "this reduction")
        jd = judge(v)
        spec = jd.acc
        nn = np.float64(n)
        R = x.R * nn
        C = x.C * nn
        # roundings on an element's path: one per addition, and one more when the element is
        # itself rounded into the accumulator first (acc narrower than the inputs)
        first = 1 if jd.first_rounded else 0
        u, eta = spec.u, spec.eta
        if order == "pairwise":
            k = math.ceil(math.log2(n)) if n > 1 else 0
            g = gamma(max(k, first), u)
        elif order == "kahan":
            g = (2 * u + 9 * n * u * u) * SAFE + first * u if n * u < 0.1 else INF
        else:
            g = gamma(n - 1 + first, u)
        n_eta = max(n - 1 + first, 0) * eta
        if x.sign_definite():
            # sum of same-sign values: relative errors stay relative
            r = (x.r + g * (1 + x.r)) * SAFE
            a = (n * x.a * (1 + g) + n_eta * (1 + g)) * SAFE
        else:
            r = 0.0
            a = (n * x.err + g * n * _f(x.C.mag()) + n_eta * (1 + g)) * SAFE
        cmag = max(_f(C.mag()), _f(x.C.mag()))
        out = AV(R, C, r, a, reason=x.reason)
        out = self._accumulator_limits(out, spec, cmag, g, n_eta, span, "the sum")
        self.note(span, g * n * _f(x.C.mag()) + n_eta)
        if v.op == Op.MEAN:
            div = AV(_iv(n, n), _iv(n, n))
            p = v.fmt.precision if v.fmt.kind == "float" else 53
            if n > 2.0 ** p:
                # the fast kernel divides by the count rounded into the mean's format
                cn = float(np.float64(n) * (1 + 2.0 ** -p))
                div = AV(_iv(n, n), _iv(n * (1 - 2.0 ** -p), cn), 2.0 ** -p * SAFE, 0.0)
            q = self.arith(Op.DIV, out, div, span)
            return self.round_step(q, jd.spec, span, "the mean")
        return out

    def _accumulator_limits(self, out: AV, spec: RoundSpec, mag: float, g: float, n_eta: float,
                            span: Span | None, what: str) -> AV:
        """Exact partial sums up to `mag` in magnitude, computed ones up to mag (1 + g) + n_eta
        (the computed range widens by that much). An accumulator that may overflow gives no
        bound; one that saturates (e2m1, i32, sat) may end anywhere in its finite range, so the
        error is at most that range plus the ideal magnitude."""
        fmt = spec.fmt
        reach = mag * (1 + g) + n_eta
        slack = (mag * g + n_eta) * SAFE
        C = out.C
        lo = _f(C.lo) - slack if _f(C.lo) < 0 else max(_f(C.lo) - slack, 0.0)
        hi = _f(C.hi) + slack if _f(C.hi) > 0 else min(_f(C.hi) + slack, 0.0)
        out = replace(out, C=_iv(lo, hi))
        if fmt.name == "e8m0" and lo <= 0:
            return replace(out, C=Interval.entire(), a=INF, span=span,
                           reason=out.reason or "e8m0 of a value that can be <= 0 is NaN")
        if not spec.sat and reach >= spec.overflow_at:
            self.warnings.append((f"{what} may overflow {fmt.name}", span))
            return replace(out, a=INF, reason=out.reason or f"{what} may overflow {fmt.name}",
                           span=span)
        if spec.sat and reach > fmt.max_finite:
            self.warnings.append((f"{what} may saturate {fmt.name}", span))
            low = lowest_finite(fmt)
            C = Interval.of(np.float64(low), np.float64(fmt.max_finite))
            a = (max(fmt.max_finite, -low) + _f(out.R.mag())) * SAFE
            return replace(out, C=C, r=0.0, a=a)
        return out

    def matmul(self, v: Value, x: AV, y: AV, span: Span | None) -> AV:
        a_shape = v.srcs[0].shape
        K = self.size(a_shape[-1])
        jd = judge(v)
        spec = jd.acc
        # row i of a times column j of b: different elements even when a is b
        prod = self.arith(Op.MUL, x, replace(y) if x is y else y, span)
        kk = np.float64(K)
        R = prod.R * kk
        C = prod.C * kk
        # each product is rounded into the accumulator, then K - 1 additions: K roundings on
        # a path (Higham's gamma_K for dot products)
        g = gamma(K, spec.u)
        pmag = _f(prod.C.mag())
        n_eta = 2 * K * spec.eta
        if prod.sign_definite():
            r = (prod.r + g * (1 + prod.r)) * SAFE
            a = (K * prod.a * (1 + g) + n_eta * (1 + g)) * SAFE
        else:
            r = 0.0
            a = (K * prod.err + g * K * pmag + n_eta * (1 + g)) * SAFE
        out = AV(R, C, r, a, reason=prod.reason)
        out = self._accumulator_limits(out, spec, pmag * K, g, n_eta, span,
                                       "the matrix product")
        self.note(span, g * K * pmag)
        return self.round_step(out, jd.spec, span, "the matrix product")


class _Unbound(Exception):
    pass


def _no_bound_in_no_bound_out(av: AV, args: list, span: Span | None) -> AV:
    """An operand without a finite bound (it may be NaN or inf) gives a result without one:
    no rule may turn it finite (x % 2 of a NaN is NaN)."""
    for a in args:
        if not isinstance(a, AV) or hasattr(a, "outputs"):
            continue
        if not (math.isfinite(a.a) and math.isfinite(a.r)):
            if math.isfinite(av.a) and math.isfinite(av.r):
                return replace(av, a=INF, reason=av.reason or a.reason or
                               "an operand has no finite bound", span=av.span or a.span or span)
    if av.a != av.a or av.r != av.r:
        return replace(av, a=INF, r=0.0 if av.r != av.r else av.r,
                       reason=av.reason or "the error bound is not finite", span=av.span or span)
    return av


def _nan_inf(x: float) -> float:
    return INF if x != x else x
