"""Per-line error contributions: a decomposition of the reported bound over source lines.

Definition (both tiers). The decomposed bound ``B`` is the largest finite absolute error bound
among the function's outputs (that output's index is reported). Every rounding site gets a
non-negative weight for that output:

* precise scalar tier: the site's first-order term ``|adjoint| * local rounding error``
  (``ScalarBound.site_share``: the terms of the branch and bound, as shares);
* tensor tier: the site's part of an *error flow* from the output back to the sites: a value
  whose bound is ``e`` keeps ``min(local, e) / e`` of the mass that reaches it (``local``: the
  rounding error its own operation adds), and passes the rest on to its operands in proportion
  to their bounds weighted by first-order sensitivities (``err(x) |y|`` and ``err(y) |x|`` for
  ``x * y``, ``err(x) / |y|`` and ``err(y) |x| / y^2`` for ``x / y``, ``err`` otherwise).

The weights are then scaled so that they sum to ``B`` exactly: a site's contribution is its
share of the bound (``share = contribution / B``; the shares add up to 1). Each site counts on
one line of the analysed function, the line the user reads: its own line, or, for a site
inlined from a called function, the line of the (outermost) call. A call line's amount thus
includes the callee's whole share ("via call"); the breakdown over the callee's own lines is
reported beside it (``callee_lines``) and is not added to the sum a second time. A value with
no source position of its own (an implicit conversion) counts on the line of the operation
that uses it. With no finite bound there is nothing to decompose (the line of the reason, if
known, is marked unbounded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import Span
from ..ir import nodes as N
from ..ir.nodes import Op, Value

DEFINITION_NOTE = ("per-line contributions: shares of the largest finite absolute bound "
                   "(output {out}, {bound:.4g}); each rounding site's first-order term, "
                   "normalised so the lines sum to the bound; a call line holds the callee's "
                   "whole share (via call), broken down on the callee's lines without being "
                   "counted twice")


@dataclass
class Site:
    """One rounding site's weight and where it is shown."""

    weight: float
    span: Span | None                  # its own line (in a callee for inlined sites)
    function: str | None = None        # the function whose line `span` is
    call_span: Span | None = None      # the outermost call in the analysed function, if inlined
    callee: str | None = None          # the function that call names


@dataclass
class Attribution:
    """The decomposition of one output's bound over lines (see the module docstring)."""

    output: int | None = None
    bound: float | None = None
    lines: dict[int, float] = field(default_factory=dict)        # sums to bound
    via_call: dict[int, float] = field(default_factory=dict)     # part of lines[n] via a call
    callees: dict[int, str] = field(default_factory=dict)        # call line -> callee name(s)
    # (function, file, line) -> amount on a callee's own line (already inside a call line)
    callee_lines: dict[tuple[str, str | None, int], float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        b = self.bound

        def share(x: float) -> float | None:
            return x / b if b else None
        return {
            "output": self.output, "bound": b,
            "definition": "shares of the largest finite absolute bound; call lines include "
                          "their callee's share (via_call), callee_lines break it down",
            "lines": [{"line": n, "amount": a, "share": share(a),
                       **({"via_call": self.via_call[n], "callee": self.callees.get(n)}
                          if n in self.via_call else {})}
                      for n, a in sorted(self.lines.items())],
            "callee_lines": [{"function": f, "file": fl, "line": n, "amount": a,
                              "share": share(a)}
                             for (f, fl, n), a in sorted(self.callee_lines.items(),
                                                         key=lambda kv: (kv[0][0], kv[0][2]))],
        }


def pick_output(bounds: Iterable[float | None]) -> tuple[int | None, float | None]:
    """The output with the largest finite absolute bound (the first of equals)."""
    best_i, best = None, None
    for i, b in enumerate(bounds):
        if b is not None and math.isfinite(b) and (best is None or b > best):
            best_i, best = i, b
    return best_i, best


def attribute(sites: Iterable[Site], output: int | None, bound: float | None) -> Attribution:
    """Scale the sites' weights to sum to ``bound`` and collect them per line."""
    att = Attribution(output, bound)
    if bound is None or not math.isfinite(bound):
        return att
    placed = []
    for s in sites:
        line_span = s.call_span if s.call_span is not None else s.span
        if line_span is None or not (math.isfinite(s.weight) and s.weight >= 0):
            continue
        placed.append((s, line_span.line))
    total = math.fsum(s.weight for s, _ in placed)
    scale = bound / total if total > 0 else 0.0
    for s, line in placed:
        amt = s.weight * scale
        att.lines[line] = att.lines.get(line, 0.0) + amt
        if s.call_span is not None:
            att.via_call[line] = att.via_call.get(line, 0.0) + amt
            if s.callee:
                names = att.callees.get(line)
                if names is None:
                    att.callees[line] = s.callee
                elif s.callee not in names.split(", "):
                    att.callees[line] = names + ", " + s.callee
            if s.span is not None:
                key = (s.function or "?", s.span.file, s.span.line)
                att.callee_lines[key] = att.callee_lines.get(key, 0.0) + amt
    # float rounding of the scaling must never put a line above the bound
    for d in (att.lines, att.via_call, att.callee_lines):
        for k, v in d.items():
            d[k] = min(v, bound)
    return att


# ---------------------------------------------------------------------------------------------
# where each value is shown

def _display_spans(fn: N.Function) -> dict[int, Span | None]:
    """Each value's span, or that of the first consumer with one (implicit conversions)."""
    order = N.toposort(fn.results)
    out: dict[int, Span | None] = {}
    consumer: dict[int, Span | None] = {}
    for v in reversed(order):
        sp = fn.spans.get(v) or consumer.get(id(v))
        out[id(v)] = sp
        if sp is not None:
            for s in v.srcs:
                consumer.setdefault(id(s), sp)
    return out


def value_sites(fn: N.Function) -> dict[int, tuple[Span | None, str, Span | None, str | None]]:
    """Per value of an inlined function (``inline_calls``): its own display span, the function
    it comes from, and the call span and callee in the analysed function when inlined."""
    spans = _display_spans(fn)
    calls = getattr(fn, "call_sites", None) or {}
    out = {}
    for v in N.toposort(fn.results):
        c = calls.get(v)
        if c is None:
            out[id(v)] = (spans.get(id(v)), fn.name, None, None)
        else:
            call_span, callee, home = c
            out[id(v)] = (fn.spans.get(v) or spans.get(id(v)), home, call_span, callee)
    return out


def scalar_node_sites(fn: N.Function, prog) -> list[
        tuple[Span | None, str | None, Span | None, str | None]]:
    """Per node of the scalar tier's program: (own span, its function, call span in fn,
    callee). The program's nodes hold values of ``prog.source``, the function with its calls
    inlined (``inline_calls``), whose side tables say where each value came from."""
    where = value_sites(prog.source if prog.source is not None else fn)
    out = []
    for n in prog.nodes:
        v = getattr(n, "value", None)
        if v is None or n.op == Op.PARAM or id(v) not in where:
            out.append((fn.spans.get(v) if v is not None else None, fn.name, None, None))
        else:
            out.append(where[id(v)])
    return out


def scalar_sites(fn: N.Function, module: N.Module | None, prog, site_share: dict[int, float]
                 ) -> list[Site]:
    where = scalar_node_sites(fn, prog)
    out = []
    for node, share in site_share.items():
        if 0 <= node < len(where):
            sp, home, cs, callee = where[node]
            out.append(Site(share, sp, home, cs, callee))
    return out


# ---------------------------------------------------------------------------------------------
# the tensor tier: local errors per value, and the error flow

def _mag(av) -> float:
    try:
        return float(av.R.mag())
    except (AttributeError, TypeError, ValueError):
        return math.inf


def _mig(av) -> float:
    try:
        return float(av.R.mig())
    except (AttributeError, TypeError, ValueError):
        return 0.0


def _err(av) -> float:
    if av is None or getattr(av, "R", None) is None:
        return 0.0
    try:
        e = float(av.err)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return 0.0
    return e if e >= 0 and not math.isnan(e) else 0.0


def _weights(v: Value, avs: list) -> list[float]:
    errs = [_err(a) for a in avs]
    w = list(errs)
    op = v.op
    if op in (Op.MUL, Op.MATMUL) and len(avs) == 2:
        w = [errs[0] * _mag(avs[1]), errs[1] * _mag(avs[0])]
    elif op == Op.DIV and len(avs) == 2:
        d = _mig(avs[1])
        if d > 0:
            w = [errs[0] / d, errs[1] * _mag(avs[0]) / (d * d)]
    elif op == Op.FMA and len(avs) == 3:
        w = [errs[0] * _mag(avs[1]), errs[1] * _mag(avs[0]), errs[2]]
    if any(math.isnan(x) for x in w) or (any(math.isinf(x) for x in w) and
                                          not any(math.isinf(x) for x in errs)):
        w = errs  # a sensitivity that is not finite says nothing: plain bounds
    return w


def flow_sites(fn: N.Function, values: dict[int, Any], site_local: dict[int, float],
               output: int, region_sites: dict[int, list] | None = None) -> list[Site]:
    """The tensor tier's error flow from output ``output`` of (inlined) ``fn`` to its sites.

    ``region_sites`` (the hybrid tier's elementwise regions, by root): the region's
    first-order terms as shares; a region root splits its mass by them instead, keeping the
    rounding sites' parts on those sites and passing the parts of the tensors it reads on."""
    root = fn.results[output]
    order = N.toposort([root])
    index = {id(v): k for k, v in enumerate(order)}
    mass: dict[int, float] = {id(root): 1.0}
    kept: dict[int, float] = {}
    region_sites = region_sites or {}
    for v in reversed(order):
        m = mass.get(id(v), 0.0)
        if m <= 0:
            continue
        terms = region_sites.get(id(v))
        if terms and math.fsum(t[1] for t in terms if math.isfinite(t[1])) > 0:
            tot = math.fsum(t[1] for t in terms if math.isfinite(t[1]) and t[1] > 0)
            me = index[id(v)]
            for sv, share, is_input in terms:
                if not (math.isfinite(share) and share > 0):
                    continue
                part = m * share / tot
                k = index.get(id(sv)) if sv is not None else None
                if k is None or k > me:
                    kept[id(v)] = kept.get(id(v), 0.0) + part   # not in the graph: the root
                elif is_input and k < me:
                    mass[id(sv)] = mass.get(id(sv), 0.0) + part
                else:
                    kept[id(sv)] = kept.get(id(sv), 0.0) + part
            continue
        e = _err(values.get(id(v)))
        local = site_local.get(id(v), 0.0)
        if math.isinf(e):
            own = 0.0
        elif e > 0:
            own = min(local, e) / e
        else:
            own = 1.0
        srcs = [s for s in v.srcs if isinstance(s.type, N.TensorType) and
                s.type.fmt.kind != "bool"]
        w = _weights(v, [values.get(id(s)) for s in srcs]) if srcs else []
        if any(math.isinf(x) for x in w):
            w = [1.0 if math.isinf(x) else 0.0 for x in w]
        tot = math.fsum(w)
        if tot <= 0 or not math.isfinite(tot):
            own = 1.0
        if own > 0:
            kept[id(v)] = kept.get(id(v), 0.0) + m * own
        rest = m * (1.0 - own)
        if rest > 0:
            for s, x in zip(srcs, w):
                if x > 0:
                    mass[id(s)] = mass.get(id(s), 0.0) + rest * x / tot
    where = value_sites(fn)
    out = []
    for v in order:
        k = kept.get(id(v))
        if k:
            sp, home, cs, callee = where.get(id(v), (None, None, None, None))
            out.append(Site(k, sp, home, cs, callee))
    return out


# ---------------------------------------------------------------------------------------------
# entry points for the driver (analyze.py): a failure here never changes a bound

_FAILURES = (ArithmeticError, ValueError, TypeError, IndexError, KeyError, AttributeError,
             RecursionError)


def scalar_attribution(fn: N.Function, module: N.Module | None, prog,
                       shares: list[dict[int, float]], outputs: list) -> Attribution:
    """The precise scalar tier's decomposition (``shares``: per output, node -> share)."""
    out_i, bound = pick_output(o.abs_error for o in outputs)
    if out_i is None or out_i >= len(shares):
        return Attribution()
    try:
        return attribute(scalar_sites(fn, module, prog, shares[out_i]), out_i, bound)
    except _FAILURES:
        return Attribution()


def tensor_attribution(inlined: N.Function, res, fa, outputs: list) -> Attribution:
    """The tensor tier's decomposition (``inlined``: the function ``fa`` ran on)."""
    out_i, bound = pick_output(o.abs_error for o in outputs)
    try:
        if out_i is None:   # nothing finite to decompose: mark where a bound was lost
            att = Attribution()
            for av in res.outputs:
                if not math.isfinite(_err(av)) and getattr(av, "span", None) is not None:
                    att.lines[av.span.line] = math.inf
            return att
        return attribute(flow_sites(inlined, res.values, getattr(fa, "site_local", {}), out_i,
                                    getattr(fa, "region_sites", None)), out_i, bound)
    except _FAILURES:
        return Attribution()
