"""Random streams through calls, for the kernel lowering.

The reference runs a call to a function with the ``rand`` effect with the seed
``stream_key(s, k)`` (``k`` the call's stream ordinal), so the callee's ``j``-th random consumer
uses the key ``stream_key(stream_key(s, k), j)``. Inlining (``passes/inline.py``) keeps the
callee's ordinals as they are, which would give every call the caller's key ``stream_key(s, j)``
and could even merge two calls' (hash-consed) roundings into one.

:func:`bind_streams` therefore specialises each such callee per call, before inlining: every
random consumer inside it gets a fresh ordinal, unique in the program, mapped to its *path*
``(k, j)`` (longer through nested calls). The lowering names a key parameter after the path and
the runtime derives the key by folding ``stream_key`` along it, exactly as the reference does.
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import nodes as N
from ..ir.nodes import Op, Value

# fresh ordinals start here, far above any ordinal a function numbers in program order
FRESH_BASE = 1 << 40


def _stream(v: Value) -> int:
    """The random-stream ordinal of a consumer or call, -1 if it has none."""
    if v.op == Op.ROUND:
        return v.attrs[2]
    if v.op in (Op.RAND, Op.CALL):
        return v.attrs[-1]
    return -1


def _with_stream(v: Value, stream: int) -> tuple:
    if v.op == Op.ROUND:
        return v.attrs[:2] + (stream,)
    return v.attrs[:-1] + (stream,)


class _Binder:
    def __init__(self, module: N.Module):
        self.module = module
        self.functions = dict(module.functions)
        self.paths: dict[int, tuple[int, ...]] = {}

    def fresh(self, path: tuple[int, ...]) -> int:
        ordinal = FRESH_BASE + len(self.paths)
        self.paths[ordinal] = path
        return ordinal

    def rewrite(self, fn: N.Function, prefix: tuple[int, ...]) -> N.Function:
        """fn with its random consumers renumbered under ``prefix`` and rand calls specialised
        (at the top level, ``prefix == ()``, its own consumers keep their ordinals)."""
        new: dict[int, Value] = {}
        changed = False
        for v in N.toposort(fn.results):
            srcs = tuple(new[id(s)] for s in v.srcs)
            attrs = v.attrs
            k = _stream(v)
            if v.op == Op.CALL and k >= 0:
                callee = self.rewrite(self.module.functions[v.attrs[0]], prefix + (k,))
                name = f"{callee.name}__stream{len(self.functions)}"
                while name in self.functions:
                    name += "_"
                self.functions[name] = replace(callee, name=name)
                attrs = (name, -1)  # the callee's consumers now carry their own keys
            elif k >= 0 and prefix:
                attrs = _with_stream(v, self.fresh(prefix + (k,)))
            nv = v if srcs == v.srcs and attrs == v.attrs else Value(v.op, srcs, attrs, v.type)
            changed |= nv is not v
            new[id(v)] = nv
        if not changed:
            return fn
        results = tuple(new[id(r)] for r in fn.results)
        spans = {new[id(v)]: s for v, s in fn.spans.items() if id(v) in new}
        names = {new[id(v)]: s for v, s in fn.names.items() if id(v) in new}
        return replace(fn, results=results, spans=spans, names=names, grades={})


def bind_streams(module: N.Module, fn: N.Function
                 ) -> tuple[N.Module, N.Function, dict[int, tuple[int, ...]]]:
    """(module with specialised callees, fn calling them, fresh ordinal -> stream path)."""
    if not any(v.op == Op.CALL and v.attrs[1] >= 0 for v in N.toposort(fn.results)):
        return module, fn, {}
    b = _Binder(module)
    out = b.rewrite(fn, ())
    return replace(module, functions=b.functions), out, b.paths


def stream_path(paths: dict[int, tuple[int, ...]], ordinal: int) -> tuple[int, ...]:
    """The path of a (possibly fresh) ordinal: ``(k,)`` for the function's own consumers."""
    return paths.get(ordinal, (ordinal,))
