"""``f.tune(budget=...)``: the tuned program as a Function of its own, with its proof.

The tuned IR is written out as Grade source (every format explicit) and compiled again; the
function returned is the one compiled from that text, and it must be the identical IR that the
analysis proved (hash-consed values make this an identity check), so what a user saves with
``.source`` is exactly what meets the budget.
"""

from __future__ import annotations

from typing import Any

from .errors import GradeError


class BudgetUnreachable(GradeError):
    """The budget is below the best bound any assignment achieves (``.result`` says which)."""

    def __init__(self, message: str, result: Any):
        super().__init__(message)
        self.result = result


def tuned_source(result) -> str:
    """Grade text of the tuned function (every format explicit), with a provenance header."""
    from .frontend.grade_export import function_to_grade

    body = function_to_grade(result.module_ir, result.fn)
    head = [f"# tuned by numgrade: {result.function}, budget {result.budget}, target "
            f"{result.target}"
            + (", sizes " + ", ".join(f"{k}={v}" for k, v in result.dims.items())
               if result.dims else ""),
            f"# sound bound {max(result.bounds) if result.bounds else 0:.6g}; estimated cost "
            f"{result.cost * 1e6:.4g} us (all-f32 baseline {result.baseline_cost * 1e6:.4g} us)"]
    return "\n".join(head) + "\n" + body + ("" if body.endswith("\n") else "\n")


def make_tuned(fn_api, result):
    """A TunedFunction compiled from the tuned source (checked identical to the proven IR)."""
    from .api import Function, compile_source

    if result.status != "ok":
        raise BudgetUnreachable(f"{result.function}(): {result.message}", result)
    text = tuned_source(result)
    mod = compile_source(text, name=f"<tuned {result.function}>")
    ir = mod.ir.functions[result.function]
    if tuple(ir.results) != tuple(result.fn.results) or \
            [p.value for p in ir.params] != [p.value for p in result.fn.params]:
        raise GradeError(f"internal error: the tuned source of {result.function}() does not "
                         "compile back to the proven program")

    class TunedFunction(Function):
        """The tuned function: call, analyse, compile and emit it like any other."""

        def __init__(self):
            super().__init__(mod, ir)
            self.result = result
            self.report = result.report
            self.source = text
            self.original = fn_api

        def __repr__(self) -> str:
            return (f"<numgrade.TunedFunction {self.signature()} bound {result.bound:.3g} "
                    f"<= {result.budget}>")

    return TunedFunction()
