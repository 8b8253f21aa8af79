"""Inline calls: a function whose graph contains its callees' operations directly.

Analyses see through calls this way (a scale computed in a helper function keeps its relation
to the tensor it came from). Callee sizes are bound from the argument shapes and substituted in
every type and attribute. Random streams keep their ordinals, so an inlined function is for
analysis: run-time semantics stay with the call (the callee's seed is derived per call).
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import nodes as N
from ..ir.dims import Dim, bind_sizes
from ..ir.nodes import Op, TensorType, TupleType, Value


def _subst_attrs(v: Value, bind: dict[str, Dim]) -> tuple:
    if v.op == Op.DIM:
        return (v.attrs[0].substitute(bind),)
    if v.op == Op.SLICE:
        items = []
        for it in v.attrs[0]:
            if it[0] == "i":
                items.append(("i", it[1].substitute(bind)))
            elif it[0] == "s":
                items.append(("s", it[1].substitute(bind), it[2].substitute(bind), it[3]))
            else:
                items.append(it)
        return (tuple(items),)
    return v.attrs


def _subst_type(t, bind: dict[str, Dim]):
    if isinstance(t, TensorType):
        return TensorType(t.fmt, tuple(d.substitute(bind) for d in t.shape))
    if isinstance(t, TupleType):
        return TupleType(tuple(_subst_type(x, bind) for x in t.items))
    return t


def _bind(callee: N.Function, args: tuple[Value, ...]) -> dict[str, Dim]:
    return bind_sizes((p.value.shape, a.shape) for p, a in zip(callee.params, args))


def inline_calls(module: N.Module, fn: N.Function, depth: int = 0) -> N.Function:
    """A copy of fn with every call replaced by the callee's (inlined) graph."""
    if depth > 64 or not any(v.op == Op.CALL for v in N.toposort(fn.results)):
        return fn
    spans = dict(fn.spans)
    names = dict(fn.names)
    # inlined value -> (span of the call in fn, the callee it names, the function it comes
    # from): per-line error contributions roll a callee's sites up to the call line
    call_sites: dict[Value, tuple] = {}
    new: dict[int, Value] = {}
    for v in N.toposort(fn.results):
        srcs = tuple(new[id(s)] for s in v.srcs)
        if v.op == Op.CALL:
            callee = inline_calls(module, module.functions[v.attrs[0]], depth + 1)
            bind = _bind(callee, srcs)
            env: dict[int, Value] = {id(p.value): a for p, a in zip(callee.params, srcs)}
            for cv in N.toposort(callee.results):
                if id(cv) in env:
                    continue
                nv = Value(cv.op, tuple(env[id(s)] for s in cv.srcs), _subst_attrs(cv, bind),
                           _subst_type(cv.type, bind))
                env[id(cv)] = nv
                if cv in callee.spans:
                    spans.setdefault(nv, callee.spans[cv])
                inner = getattr(callee, "call_sites", {}).get(cv)
                call_sites[nv] = (fn.spans.get(v), v.attrs[0],
                                  inner[2] if inner else v.attrs[0])
            # a tuple stand-in: proj reads the inlined results
            new[id(v)] = _Results(tuple(env[id(r)] for r in callee.results))  # type: ignore
            continue
        if v.op == Op.PROJ:
            holder = srcs[0]
            nv = holder.items[v.attrs[0]]  # type: ignore[attr-defined]
        elif srcs == v.srcs:
            nv = v
        else:
            nv = Value(v.op, srcs, v.attrs, v.type)
        new[id(v)] = nv
        if v in fn.spans:
            spans.setdefault(nv, fn.spans[v])
        if v in fn.names:
            names.setdefault(nv, fn.names[v])
    results = tuple(new[id(r)] for r in fn.results)
    out = replace(fn, results=results, spans=spans, names=names, grades={})
    out.call_sites = call_sites  # type: ignore[attr-defined]
    return out


class _Results:
    """The results of an inlined call, until each proj picks one."""

    def __init__(self, items: tuple[Value, ...]):
        self.items = items
