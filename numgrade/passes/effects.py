"""Effect inference and checking.

A function's effects are those its operations need (``rand`` for stochastic rounding and random
values) plus its callees' effects. Each must be declared in the function's ``! {...}``; an
undeclared one is an error at the operation that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DiagnosticSink
from ..ir.nodes import Function, Module, Op, Value, toposort


@dataclass(frozen=True)
class EffectCheck:
    """The pass: infer each function's effects and report undeclared ones."""

    name: str = "effects"

    def run(self, module: Module, sink: DiagnosticSink) -> dict[str, frozenset[str]]:
        inferred: dict[str, frozenset[str]] = {}
        for fn in module.functions.values():
            inferred[fn.name] = self.check_function(fn, module, sink)
        return inferred

    @staticmethod
    def needs(v: Value, module: Module) -> frozenset[str]:
        if v.op == Op.ROUND and v.attrs[0] == "sr":
            return frozenset({"rand"})
        if v.op == Op.RAND:
            return frozenset({"rand"})
        if v.op == Op.CALL:
            callee = module.functions.get(v.attrs[0])
            return callee.effects if callee is not None else frozenset()
        return frozenset()

    def check_function(self, fn: Function, module: Module, sink: DiagnosticSink) -> frozenset[str]:
        found: set[str] = set()
        for v in toposort(fn.results):
            need = self.needs(v, module)
            found |= need
            for eff in sorted(need - fn.effects):
                what = ("stochastic rounding" if v.op == Op.ROUND else
                        "rand()" if v.op == Op.RAND else f"the call to {v.attrs[0]}()")
                sink.error(f"{what} has the effect '{eff}', which {fn.name}() does not declare; "
                           f"add `! {{{', '.join(sorted(fn.effects | {eff}))}}}` to its signature",
                           fn.spans.get(v, fn.span))
        return frozenset(found)


def check_effects(module: Module, sink: DiagnosticSink) -> dict[str, frozenset[str]]:
    return EffectCheck().run(module, sink)
