"""The analysis driver: effects, coeffects, ranges and forward error bounds into a Report.

Scalar straight-line functions with ranged inputs get the precise tier (scalar_error: interval
adjoints with branch and bound); everything else the tensor tier (forward + hybrid). Both
fill the IR's grade slots (``Function.grades``) and produce a :class:`numgrade.report.Report`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ..errors import DiagnosticSink, GradeError
from ..ir import nodes as N
from ..ir.nodes import Grade, Op
from ..report import OutputReport, Report
from .backward import report_fields
from .effects import EffectCheck
from .forward import ForwardAnalysis
from .hybrid import QUICK_REGION_WORK, REGION_WORK, HybridAnalysis
from .inline import inline_calls
from .rounding_model import execution_model
from . import contributions as CB
from . import scalar_error as SE


@dataclass(frozen=True)
class AnalysisOptions:
    tier: str = "auto"          # auto | scalar | tensor
    work: int | None = None     # branch and bound budget in work units (scalar tier: per
    #                             output, tensor tier: per region); None: the default, or the
    #                             quick one. Never seconds: bounds must not depend on load
    quick: bool = False         # looser branch and bound (sound, less tight): tuning probes
    target: str | None = None   # the execution target the bound is for (None: every target)


def _work(options: AnalysisOptions, default: int, quick: int) -> int:
    """The branch and bound budget (work units) the options ask for."""
    if options.work is not None:
        return options.work
    return quick if options.quick else default


def target_needs(fn: N.Function) -> list[str]:
    """Context a kernel of this function needs or benefits from (read by the backends)."""
    needs = set()
    for v in N.toposort(fn.results):
        if v.op == Op.ROUND or (isinstance(v.type, N.TensorType) and v.srcs and
                                v.op in N.ELEMENTWISE):
            fmt = v.type.fmt if isinstance(v.type, N.TensorType) else None
            if fmt is None:
                continue
            # what backends/cuda_convert.py emits: the instructions round to nearest, and
            # toward zero or up for e8m0; other modes are the software expansion everywhere
            mode = v.attrs[0] if v.op == Op.ROUND else "rne"
            if fmt.name in ("e2m1", "e4m3", "e5m2") and mode != "rne" or (
                    fmt.name == "e8m0" and mode not in ("rz", "rd", "ru")):
                needs.add(f"{fmt.name} {mode} conversion: emulated in software (no hardware "
                          "instruction rounds that way)")
            elif fmt.name == "e2m1":
                needs.add("e2m1 conversion: native on sm_100a (cvt.rn.satfinite.e2m1x2.f32), "
                          "emulated in software elsewhere")
            elif fmt.name in ("e4m3", "e5m2"):
                needs.add(f"{fmt.name} conversion: native on sm_89 and later, emulated elsewhere")
            elif fmt.name == "e8m0":
                needs.add("e8m0 scale conversion: native on sm_100a, emulated elsewhere")
        if v.op == Op.ROUND and v.attrs[0] == "sr" or v.op == Op.RAND:
            needs.add("counter-based Philox-4x32-10 stream (seed, element index)")
    for c in fn.requires:
        if c.kind == "feature":
            needs.add(f"feature {c.feature}")
    return sorted(needs)


def analyze_function(module: N.Module, fn: N.Function, dims: dict[str, int] | None = None,
                     options: AnalysisOptions = AnalysisOptions()) -> Report:
    t0 = time.perf_counter()
    dims = dict(dims or {})
    for k, val in dims.items():
        if k not in fn.dims:
            raise GradeError(f"{fn.name}() has no size '{k}' (its sizes: "
                             f"{', '.join(fn.dims) or 'none'})")
        if not isinstance(val, int) or val < 0:
            raise GradeError(f"size {k} must be a non-negative integer, got {val!r}")
    for c in fn.requires:
        if c.holds(dims) is False:
            raise GradeError(f"{fn.name}() requires {c.text}, which fails for the given sizes",
                             c.span)
    sink = DiagnosticSink()
    effects = EffectCheck().check_function(fn, module, sink)
    outputs: list[OutputReport] = []
    warnings: list[str] = []
    contributions: dict[int, float] = {}
    notes: list[str] = []
    value_terms: dict = {}      # rounding site -> its first-order share of the bound
    attribution = CB.Attribution()   # per-line decomposition of the bound (contributions.py)
    shares: list[dict[int, float]] = []   # scalar tier: per output, site -> share
    use_scalar = options.tier == "scalar" or (options.tier == "auto" and _scalar_ok(fn))
    sensitivity: dict[str, float | None] = {p.name: None for p in fn.params}
    done = False
    if use_scalar:
        try:
            prog = SE.build(fn, module)
            for i, v in enumerate(fn.results):
                b = SE.analyse(prog, i, work=_work(options, SE.DEFAULT_WORK, SE.QUICK_WORK),
                               **({"tol": 0.25, "max_iters": 6} if options.quick else {}))
                outputs.append(_output_from_scalar(i, v, b))
                fn.grades[v] = Grade(range=_hull(b.ideal_range, b.computed_range),
                                     abs_error=b.abs_error, rel_error=b.rel_error)
                for node, share in b.site_share.items():
                    sv = prog.nodes[node].value
                    amount = share * b.abs_error
                    if sv is not None and math.isfinite(amount):
                        value_terms[sv] = max(value_terms.get(sv, 0.0), amount)
                shares.append(b.site_share)
            attribution = CB.scalar_attribution(fn, module, prog, shares, outputs)
            notes.append("precise scalar tier: mean-value form with interval adjoints, "
                         "branch and bound over the input box")
            done = True
        except SE.Unsupported as ex:
            notes.append(f"scalar tier not applicable ({ex}); compositional tier used")
            outputs = []
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError,
                RecursionError, MemoryError) as ex:  # a bug must never become a wrong bound
            notes.append(f"scalar tier failed ({type(ex).__name__}: {ex}); compositional "
                         "tier used")
            outputs = []
    if not done:
        hw = _work(options, REGION_WORK, QUICK_REGION_WORK)
        fa = (HybridAnalysis(module, dims, hw, 6, 0.25) if options.quick else
              HybridAnalysis(module, dims, hw)) if options.tier != "forward" else \
            ForwardAnalysis(module, dims)
        try:
            inlined = inline_calls(module, fn)
            res = fa.run(inlined)
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError, AttributeError,
                RecursionError, MemoryError) as ex:
            # an internal failure gives null bounds with the reason, never a traceback
            why = f"internal error in the analysis ({type(ex).__name__}: {ex})"
            outs = [OutputReport(i, v.fmt.name, _shape(v), None, None, None, why)
                    for i, v in enumerate(fn.results)]
            return Report(fn.name, outs, sorted(effects | fn.effects),
                          {"sensitivity": sensitivity, "requires": [c.text for c in fn.requires],
                           "target": target_needs(fn)}, None, time.perf_counter() - t0, "",
                          [], {}, fn.span.file if fn.span else None, dims, notes)
        for i, (v, av) in enumerate(zip(fn.results, res.outputs)):
            outputs.append(_output_from_av(i, v, av, fn))
        for v, av in ((v, res.values.get(id(v))) for v in N.toposort(fn.results)):
            if av is None or not isinstance(v.type, N.TensorType):
                continue
            fn.grades[v] = Grade(range=_range_of(av), abs_error=_finite_or_none(av.err))
        for msg, sp in res.warnings:
            warnings.append(f"{sp}: warning: {msg}" if sp else f"warning: {msg}")
        attribution = CB.tensor_attribution(inlined, res, fa, outputs)
        value_terms = dict(getattr(fa, "value_terms", {}))
        notes.append("tensor tier: closed-form rules for reductions and products (sound for "
                     "every summation order); elementwise regions bounded by sliced scalar "
                     "analysis")
    contributions = attribution.lines
    if attribution.bound is not None and attribution.lines:
        notes.append(CB.DEFINITION_NOTE.format(out=attribution.output, bound=attribution.bound))
    extra = report_fields(module, fn, dims)
    sensitivity = extra.get("sensitivity", sensitivity)
    notes.extend(extra.get("notes", []))
    coeffects = {
        "sensitivity": sensitivity,
        "sensitivity_metric": extra.get("sensitivity_metric", {}),
        "requires": [c.text for c in fn.requires],
        "target": target_needs(fn),
        "execution_model": execution_model(options.target),
    }
    for p in fn.params:  # the grade slot of each input records its sensitivity
        g = fn.grades.setdefault(p.value, Grade())
        g.sensitivity = {p.name: sensitivity.get(p.name)} if sensitivity else None
    rep = Report(fn.name, outputs, sorted(effects | fn.effects), coeffects,
                 extra.get("backward_error"),
                 time.perf_counter() - t0, "", _dedupe(warnings), contributions,
                 fn.span.file if fn.span else None, dims, notes)
    rep.signature = graded_signature(fn, rep)
    rep.value_terms = value_terms
    if attribution.bound is not None:
        rep.contributions = attribution.to_dict()
    return rep


def _dedupe(xs: list[str]) -> list[str]:
    seen, out = set(), []
    for x in xs:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def _scalar_ok(fn: N.Function) -> bool:
    return all(not p.value.shape and p.range is not None for p in fn.params) and \
        all(not r.shape for r in fn.results)


def _hull(a, b):
    return (min(a[0], b[0]), max(a[1], b[1]))


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _range_of(av) -> tuple[float, float] | None:
    lo = min(float(av.R.lo), float(av.C.lo))
    hi = max(float(av.R.hi), float(av.C.hi))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return (lo, hi)


def _shape(v: N.Value) -> list:
    return [d.int_value() if d.int_value() is not None else str(d) for d in v.shape]


def _output_from_scalar(i: int, v: N.Value, b: SE.ScalarBound) -> OutputReport:
    rng = _hull(b.ideal_range, b.computed_range)
    reason = None
    abs_e = b.abs_error if math.isfinite(b.abs_error) else None
    if abs_e is None:
        rng = (math.nan, math.nan)  # reported as null: the computed value may be inf or NaN
    if abs_e is None:
        reason = "a value may overflow, or an operation may leave its domain (division by 0, " \
                 "sqrt/log of a negative)"
    rel = b.rel_error
    if rel is None and reason is None:
        reason = "ideal value can be 0"
    return OutputReport(i, v.fmt.name, _shape(v),
                        rng if all(map(math.isfinite, rng)) else None, abs_e, rel, reason,
                        method="scalar-bnb" + ("" if b.converged else " (work budget reached)"))


def _output_from_av(i: int, v: N.Value, av, fn: N.Function) -> OutputReport:
    err = av.err
    rng = _range_of(av)
    reason = None
    abs_e = err if math.isfinite(err) else None
    if abs_e is None:
        rng = None  # the computed value may be inf or NaN: no interval holds it
    if abs_e is None:
        where = f" ({av.span})" if av.span else ""
        reason = (av.reason or "the error bound is not finite") + where
    rel = None
    mig = min(abs(float(av.R.lo)), abs(float(av.R.hi))) if (float(av.R.lo) > 0 or
                                                            float(av.R.hi) < 0) else 0.0
    if abs_e is not None and mig > 0:
        rel = av.rel_part()
        if not math.isfinite(rel):
            rel = None
            reason = "no finite relative bound"
    elif abs_e is not None:
        reason = "ideal value can be 0"
    if v.fmt.kind == "bool":
        abs_e = 0.0 if av.stable else None
        rel = None
        reason = None if av.stable else "the computed and ideal truth values may differ"
    return OutputReport(i, v.fmt.name, _shape(v), rng, abs_e, rel, reason, method="tensor")


def graded_signature(fn: N.Function, rep: Report) -> str:
    """E.g. `quantize : (x: !1 f32[M, N]) -> M[1.2e-7] (e2m1[M, N], ...) ! {}`."""
    sens = rep.coeffects.get("sensitivity", {})
    ps = []
    for p in fn.params:
        s = sens.get(p.name)
        grade = "!?" if s is None else f"!{s:.3g}"
        ps.append(f"{p.name}: {grade} {p.value.type}")
    errs = [o.abs_error for o in rep.outputs]
    q = "?" if any(e is None for e in errs) else f"{max(errs):.3g}" if errs else "0"
    rts = [str(t) for t in fn.result_types]
    ret = f"({', '.join(rts)})" if fn.result_is_tuple else rts[0]
    eff = ", ".join(rep.effects)
    return f"{fn.name} : ({', '.join(ps)}) -> M[{q}] {ret} ! {{{eff}}}"
