"""Precision assignment: the cheapest per-operation formats whose sound bound meets a budget.

The search (issue 5) has four steps, each a small function below:

1. **Tunable operations** are the float operations that round (``+ - * /``, fma, the math
   functions, sums, means and matrix products). Parameters are the caller's data and keep their
   declared formats; explicit roundings (``round``, ``as``) and values fixed by a ``let name:
   type`` annotation are *pinned*. Exact operations (``neg abs min max where`` and data movement)
   keep their formats. The result format of a tunable operation is its working format (SPEC
   section 2: an operation rounds its exact result once to that format); for a reduction or a
   matrix product it is the accumulation format.
2. **A linear error model** from the real analysis: with every tunable operation in ``f64``, the
   analysis gives the error that the pinned roundings alone make (``base``); moving operation
   ``i`` alone to format ``f`` gives ``base + c[i, f]``. To first order the bound of an
   assignment is ``base + sum_i c[i, f_i]``. Small programs probe every (operation, format)
   pair; larger ones probe each operation once in f32 and scale by the unit roundoff.
3. **A mixed-integer program** (scipy's ``milp``, HiGHS): binary ``x[i, f]``, one format per
   operation, the linear bound of every output at most its share of the budget, minimising the
   target's roofline cost (per fused kernel ``t_k >= bytes/bandwidth`` and ``t_k >= op time``,
   :mod:`numgrade.passes.cost_model`). Beyond a few thousand variables, or when HiGHS gives up,
   a greedy descent does the same job.
4. **Repair with the full analysis**: the assignment is re-analysed without linearisation. If a
   bound exceeds the budget, the model's allowance for that output shrinks by the overshoot and
   the program is solved again; after a few rounds the most expensive error term is raised one
   format at a time until the sound bound meets the budget. The result is never returned unless
   the full analysis proves it; an impossible budget is reported with the best achievable bound
   (every tunable operation in f64).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import GradeError
from ..ir import nodes as N
from ..ir.derive import derived_format
from ..ir.formats import Format, get_format
from ..ir.nodes import Op, TensorType, Value
from ..report import Report
from .analyze import AnalysisOptions, analyze_function
from .inline import inline_calls

#: operations whose result is a rounding of an exact value to their working format
ROUNDING_OPS = {Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.FMA, Op.SUM, Op.MEAN, Op.MATMUL} | N.UNARY_MATH
#: the formats the search may choose, widest first
DEFAULT_FORMATS = ("f64", "f32", "f16", "bf16", "e5m2", "e4m3")
REPAIR_ROUNDS = 6
DIRECT_PROBE_LIMIT = 160     # (operation, format) pairs probed one by one; beyond: u-scaling


@dataclass(frozen=True)
class Budget:
    """An error budget for every output: ``abs`` bounds |computed - ideal|, ``rel`` that over
    |ideal|."""

    kind: str
    value: float

    def __post_init__(self):
        if self.kind not in ("abs", "rel"):
            raise GradeError(f"budget kind must be 'abs' or 'rel', not {self.kind!r}")
        if not (isinstance(self.value, (int, float)) and math.isfinite(self.value)
                and self.value > 0):
            raise GradeError(f"the budget must be a positive finite number, not {self.value!r}")

    @staticmethod
    def parse(text: "str | Budget | float") -> "Budget":
        """``abs:1e-3`` or ``rel:1e-2`` (a bare number means abs)."""
        if isinstance(text, Budget):
            return text
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            return Budget("abs", float(text))
        if not isinstance(text, str):
            raise GradeError(f"a budget is 'abs:X' or 'rel:X', not {text!r}")
        kind, sep, num = text.strip().partition(":")
        if not sep:
            kind, num = "abs", kind
        try:
            value = float(num)
        except ValueError:
            raise GradeError(f"cannot read the budget {text!r}: expected 'abs:X' or 'rel:X' "
                             "with X a positive number") from None
        return Budget(kind.strip().lower(), value)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


@dataclass(frozen=True)
class TuneOptions:
    target: str = "sm_90"
    formats: tuple[str, ...] = DEFAULT_FORMATS
    respect_pins: bool = True        # False: annotated lets are tuned too
    pin_outputs: bool = False        # True: outputs keep their declared formats
    milp_node_limit: int = 10_000    # branch-and-bound nodes of the MILP (HiGHS), never
    #                                  seconds: the assignment must not depend on load
    analysis: AnalysisOptions = AnalysisOptions()


@dataclass
class Choice:
    """The format chosen for one operation."""

    value: Value
    name: str
    op: str
    line: int | None
    col: int | None
    original: str
    format: str

    def to_json(self) -> dict:
        return {"value": self.name, "op": self.op, "line": self.line, "col": self.col,
                "original": self.original, "format": self.format}


@dataclass
class TuneResult:
    function: str
    budget: Budget
    target: str
    status: str                       # 'ok' | 'impossible'
    fn: N.Function                    # the tuned IR (the original when impossible)
    report: Report                    # full analysis of fn
    bounds: list[float | None]        # per output, in the budget's kind
    cost: float                       # estimated seconds on the target
    baseline_cost: float              # every tunable operation in f32
    baseline_bounds: list[float | None]
    best_bounds: list[float | None]   # every tunable operation in f64
    choices: list[Choice]
    dims: dict[str, int]
    seconds: float = 0.0
    analyses: int = 0
    solver: str = ""
    message: str = ""
    module_ir: N.Module | None = None

    @property
    def bound(self) -> float | None:
        vals = [b for b in self.bounds]
        if any(b is None for b in vals):
            return None
        return max(vals) if vals else 0.0

    def to_json(self) -> dict:
        return {"function": self.function,
                "budget": {"kind": self.budget.kind, "value": self.budget.value},
                "bound": self.bound, "bounds": self.bounds,
                "cost": self.cost, "baseline_cost": self.baseline_cost,
                "cost_unit": "s (estimated)", "target": self.target, "status": self.status,
                "message": self.message, "dims": self.dims,
                "best_achievable_bound": _max_or_none(self.best_bounds),
                "baseline_bound": _max_or_none(self.baseline_bounds),
                "assignment": [c.to_json() for c in self.choices],
                "solver": self.solver, "analyses": self.analyses, "seconds": self.seconds}


def _max_or_none(xs: list[float | None]) -> float | None:
    return None if any(x is None for x in xs) else (max(xs) if xs else 0.0)


# ---------------------------------------------------------------------------------------------
# step 1: what can be tuned, and rebuilding a function with other formats
def tunable_values(fn: N.Function, options: TuneOptions) -> list[Value]:
    outs = set(fn.results)
    found = []
    for v in N.toposort(fn.results):
        if v.op not in ROUNDING_OPS or not isinstance(v.type, TensorType):
            continue
        if v.fmt.kind != "float":
            continue
        if options.respect_pins and v in fn.pinned:
            continue
        if options.pin_outputs and v in outs:
            continue
        found.append(v)
    return found


def retype(fn: N.Function, fmt_of: dict[Value, Format]) -> N.Function:
    """The same function with the given values' working formats replaced (bottom-up rebuild;
    hash-consing makes an unchanged program the identical object graph)."""
    new: dict[Value, Value] = {}
    for v in N.toposort(fn.results):
        srcs = tuple(new[s] for s in v.srcs)
        t, attrs = v.type, v.attrs
        f = fmt_of.get(v)
        if f is None and srcs != v.srcs and isinstance(t, TensorType):
            f = derived_format(Value(v.op, srcs, attrs, t))   # movement, where, max/min: follow
        if f is not None and f != v.fmt:
            t = TensorType(f, v.shape)
            if v.op == Op.MATMUL:
                attrs = (f.name,) + tuple(attrs[1:])
        new[v] = v if (srcs == v.srcs and t is v.type and attrs is v.attrs) \
            else Value(v.op, srcs, attrs, t)
    remap = lambda d: {new.get(k, k): x for k, x in d.items()}  # noqa: E731
    return replace(fn, results=tuple(new[r] for r in fn.results), spans=remap(fn.spans),
                   names=remap(fn.names), grades={},
                   pinned=frozenset(new.get(p, p) for p in fn.pinned))


def prepare(module: N.Module, fn: N.Function) -> N.Function:
    """Inline calls so every operation is tunable (refused through `rand` callees, whose
    run-time seeds differ from an inlined copy's)."""
    for v in N.toposort(fn.results):
        if v.op == Op.CALL:
            callee = module.functions.get(v.attrs[0]) if hasattr(module, "functions") else None
            if callee is not None and "rand" in callee.effects:
                raise GradeError(f"{fn.name}() calls {v.attrs[0]}(), which has the rand effect; "
                                 "tuning through such calls is not supported yet", fn.spans.get(v))
    return inline_calls(module, fn)


# ---------------------------------------------------------------------------------------------
# step 2: the linear error model
class _Analyser:
    """Full analyses of retyped programs, cached by program identity."""

    def __init__(self, module: N.Module, fn: N.Function, dims: dict[str, int], kind: str,
                 options: AnalysisOptions):
        self.module, self.fn, self.dims, self.kind, self.options = module, fn, dims, kind, options
        self.cache: dict[tuple, tuple[N.Function, Report]] = {}
        self.count = 0

    def run(self, fmt_of: dict[Value, Format], quick: bool = False) -> tuple[N.Function, Report]:
        """The analysis of the retyped program; `quick` loosens the branch and bound (still
        sound, less tight) for the probes of large programs."""
        g = retype(self.fn, fmt_of)
        key = (g.results, quick)
        hit = self.cache.get(key)
        if hit is None:
            self.count += 1
            opts = replace(self.options, quick=True) if quick else self.options
            hit = (g, analyze_function(self.module, g, self.dims, opts))
            self.cache[key] = hit
        return hit

    def bounds(self, rep: Report) -> list[float | None]:
        out = []
        for o in rep.outputs:
            b = o.abs_error if self.kind == "abs" else o.rel_error
            out.append(b if b is not None and math.isfinite(b) else None)
        return out


@dataclass
class ErrorModel:
    base: list[float]                              # per output: pinned roundings only
    coef: dict[tuple[int, str], list[float]]       # (op index, format) -> per-output increase
    allowed: dict[int, list[str]]                  # op index -> admissible formats
    method: str


def build_error_model(an: _Analyser, ops: list[Value], formats: list[Format],
                      ranges: dict[Value, float]) -> ErrorModel:
    wide = get_format("f64")
    all64 = {v: wide for v in ops}
    _, rep0 = an.run(all64)
    base = an.bounds(rep0)
    if any(b is None for b in base):
        bad = [i for i, b in enumerate(base) if b is None]
        reasons = "; ".join(f"output {i}: {rep0.outputs[i].reason or 'no bound'}" for i in bad)
        raise _Impossible(base, f"even with every tunable operation in f64 there is no "
                                f"{an.kind} bound ({reasons})")
    allowed: dict[int, list[str]] = {}
    for i, v in enumerate(ops):
        mag = ranges.get(v, math.inf)
        allowed[i] = [f.name for f in formats
                      if f.name == "f64" or (math.isfinite(mag) and mag <= f.max_finite)]
    pairs = sum(len(a) - 1 for a in allowed.values())
    coef: dict[tuple[int, str], list[float]] = {}
    direct = pairs <= DIRECT_PROBE_LIMIT
    if direct:
        for i, v in enumerate(ops):
            coef[(i, "f64")] = [0.0] * len(base)
            for fname in allowed[i]:
                if fname == "f64":
                    continue
                _, rep = an.run({**all64, v: get_format(fname)})
                coef[(i, fname)] = [math.inf if x is None else max(0.0, x - b0)
                                    for x, b0 in zip(an.bounds(rep), base)]
    else:
        # one analysis with every tunable operation in f32: each rounding site's first-order
        # term (|adjoint| * local error, from the scalar and sliced analyses) per unit roundoff;
        # sites without a term (reductions, products) get a quick probe of their own
        f32 = get_format("f32")
        _, rep32 = an.run({v: f32 for v in ops})
        terms = getattr(rep32, "value_terms", {})
        by_new = terms
        g32 = retype(an.fn, {v: f32 for v in ops})
        new_of = _correspondence(an.fn, g32)
        deps = [_ancestors(r) for r in an.fn.results]
        base_q = None
        for i, v in enumerate(ops):
            coef[(i, "f64")] = [0.0] * len(base)
            t = by_new.get(new_of.get(v))
            if t is not None and math.isfinite(t):
                per_u = [t / f32.unit_roundoff if v in d else 0.0 for d in deps]
            else:
                if base_q is None:
                    base_q = an.bounds(an.run(all64, quick=True)[1])
                    base_q = [b if b is not None else b0 for b, b0 in zip(base_q, base)]
                _, rep = an.run({**all64, v: f32}, quick=True)
                per_u = [math.inf if x is None else max(0.0, x - b0) / f32.unit_roundoff
                         for x, b0 in zip(an.bounds(rep), base_q)]
            for fname in allowed[i]:
                if fname != "f64":
                    u = get_format(fname).unit_roundoff
                    coef[(i, fname)] = [c * u for c in per_u]
    for i in range(len(ops)):
        for fname in list(allowed[i]):
            if any(not math.isfinite(c) for c in coef[(i, fname)]):
                allowed[i].remove(fname)
    return ErrorModel(base, coef, allowed, "direct probes" if direct else
                      "first-order site terms of one f32 analysis, scaled by u")


def _correspondence(old: N.Function, new: N.Function) -> dict[Value, Value]:
    """Old value -> the value it became in a retyped copy (same graph shape, walked in step)."""
    out: dict[Value, Value] = {}
    stack = list(zip(old.results, new.results))
    while stack:
        a, b = stack.pop()
        if a in out:
            continue
        out[a] = b
        stack.extend(zip(a.srcs, b.srcs))
    return out


def _ancestors(root: Value) -> set[Value]:
    return set(N.toposort((root,)))


class _Impossible(Exception):
    def __init__(self, best: list[float | None], why: str):
        super().__init__(why)
        self.best, self.why = best, why


# ---------------------------------------------------------------------------------------------
# step 3: the mixed-integer program
@dataclass
class _Problem:
    ops: list[Value]
    allowed: dict[int, list[str]]
    terms: list                       # cost_model.KernelTerms
    target: object                    # cost_model.Target


def _fmt_of_value(v: Value, index: dict[Value, int]) -> int | None:
    return index.get(v)


def _cost_vectors(p: _Problem):
    """Variables: x[i, f] for each admissible pair, then t_k per kernel, then z_e per edge.
    Returns (var list, cost vector c, rows of A_ub, b_ub) with A_ub x <= b_ub."""
    from . import cost_model as CM

    tg = p.target
    index = {v: i for i, v in enumerate(p.ops)}
    xvars = [(i, f) for i in range(len(p.ops)) for f in p.allowed[i]]
    xpos = {k: j for j, k in enumerate(xvars)}
    nk = len(p.terms)
    edges = []
    for k, kt in enumerate(p.terms):
        for (c, o, e) in kt.edges:
            if c in index or o in index:
                edges.append((k, c, o, e))
    nvar = len(xvars) + nk + len(edges)
    cost = np.zeros(nvar)
    cost[len(xvars):len(xvars) + nk] = 1.0
    rows, rhs = [], []
    us = 1e6                      # times in microseconds: numbers near 1 for HiGHS's tolerances
    bw = tg.dram_bandwidth / us

    def fixed_or_var(v: Value, per_fmt) -> tuple[float, dict[int, float]]:
        i = index.get(v)
        if i is None:
            return per_fmt(v.fmt), {}
        return 0.0, {xpos[(i, f)]: per_fmt(get_format(f)) for f in p.allowed[i]}

    for k, kt in enumerate(p.terms):
        mem_const, mem_row = 0.0, np.zeros(nvar)
        for (v, e) in tuple(kt.reads) + tuple(kt.writes):
            c0, var = fixed_or_var(v, lambda f: e * tg.storage_bytes(f) / bw)
            mem_const += c0
            for j, a in var.items():
                mem_row[j] += a
        comp_const, comp_row = 0.0, np.zeros(nvar)
        for (v, e) in kt.ops:
            def per(f, v=v, e=e):
                s = tg.op_seconds(CM.cost_op(v), f)
                return math.inf if s is None else e * s * us
            if v in index:
                c0, var = fixed_or_var(v, per)
            else:
                c0, var = per(CM.working_format(v)), {}
            comp_const += c0 if math.isfinite(c0) else 0.0
            for j, a in var.items():
                comp_row[j] += a
        # t_k >= mem_k  <=>  mem_row . x - t_k <= -mem_const
        mem_row[len(xvars) + k] = -1.0
        rows.append(mem_row)
        rhs.append(-mem_const)
        for q, (kk, c, o, e) in enumerate(edges):
            if kk == k:
                comp_row[len(xvars) + nk + q] = e * _edge_conversion(p, c, o, index) * us
        comp_row[len(xvars) + k] = -1.0
        rows.append(comp_row)
        rhs.append(-comp_const)
    # z_e >= [fmt(c) != fmt(o)]
    for q, (k, c, o, e) in enumerate(edges):
        zc = len(xvars) + nk + q
        ic, io = index.get(c), index.get(o)
        fmts = set(p.allowed[ic] if ic is not None else [c.fmt.name]) | \
            set(p.allowed[io] if io is not None else [o.fmt.name])
        for f in fmts:
            row = np.zeros(nvar)
            # x[c, f] - x[o, f] - z <= 0 (fixed sides: 1 if it is f, else 0)
            const = 0.0
            if ic is not None:
                if (ic, f) in xpos:
                    row[xpos[(ic, f)]] += 1.0
            else:
                const += 1.0 if c.fmt.name == f else 0.0
            if io is not None:
                if (io, f) in xpos:
                    row[xpos[(io, f)]] -= 1.0
            else:
                const -= 1.0 if o.fmt.name == f else 0.0
            row[zc] = -1.0
            rows.append(row)
            rhs.append(-const)
    return xvars, xpos, cost, rows, rhs, nk, len(edges)


def _edge_conversion(p: _Problem, c: Value, o: Value, index: dict[Value, int]) -> float:
    """Per-element conversion time paid when consumer and operand formats differ: the dearest
    conversion among the formats either side may take (an upper estimate for the model)."""
    tg = p.target
    cf = p.allowed[index[c]] if c in index else [c.fmt.name]
    of = p.allowed[index[o]] if o in index else [o.fmt.name]
    worst = 0.0
    for a in of:
        for b in cf:
            if a != b:
                worst = max(worst, tg.convert_seconds(get_format(a), get_format(b)))
    return worst


def solve_assignment(p: _Problem, model: ErrorModel, caps: list[float],
                     node_limit: int) -> tuple[dict[int, str] | None, str]:
    """Cheapest assignment whose linear bound is within caps (None if infeasible)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    xvars, xpos, cost, rows, rhs, nk, ne = _cost_vectors(p)
    nvar = len(cost)
    A, lb, ub = [], [], []
    for r, b in zip(rows, rhs):
        A.append(r)
        lb.append(-np.inf)
        ub.append(b)
    for i in range(len(p.ops)):          # one format per operation
        row = np.zeros(nvar)
        for f in p.allowed[i]:
            row[xpos[(i, f)]] = 1.0
        A.append(row)
        lb.append(1.0)
        ub.append(1.0)
    for o, cap in enumerate(caps):       # the linear error model per output, scaled to cap 1
        row = np.zeros(nvar)
        for (i, f), j in xpos.items():
            row[j] = model.coef[(i, f)][o] / cap if cap > 0 else model.coef[(i, f)][o] * 1e300
        A.append(row)
        lb.append(-np.inf)
        ub.append(1.0 if cap > 0 else 0.0)
    integrality = np.zeros(nvar)
    integrality[:len(xvars)] = 1
    lo = np.zeros(nvar)
    hi = np.full(nvar, np.inf)
    hi[:len(xvars)] = 1.0
    hi[len(xvars) + nk:] = 1.0
    # no time limit: the search is deterministic (HiGHS's MIP search runs in one thread and
    # the node limit ends it), so the assignment never depends on the machine's load
    res = milp(cost, integrality=integrality, bounds=Bounds(lo, hi),
               constraints=LinearConstraint(np.array(A), np.array(lb), np.array(ub)),
               options={"node_limit": node_limit, "disp": False})
    if res.x is None:
        return None, f"milp: {res.message}"
    pick: dict[int, str] = {}
    for (i, f), j in xpos.items():
        if res.x[j] > 0.5:
            pick[i] = f
    if len(pick) != len(p.ops):
        return None, "milp: incomplete solution"
    return pick, "milp (HiGHS)" + ("" if res.status == 0 else f", {res.message}")


def greedy_assignment(p: _Problem, model: ErrorModel, caps: list[float],
                      cost_of) -> dict[int, str]:
    """Start with every operation in f64 and lower, one step at a time, the operation whose
    next narrower format saves the most cost per unit of error, while the linear bound fits."""
    order = {f: k for k, f in enumerate(DEFAULT_FORMATS)}
    pick = {i: "f64" if "f64" in p.allowed[i] else p.allowed[i][0] for i in range(len(p.ops))}
    used = [sum(model.coef[(i, pick[i])][o] for i in pick) for o in range(len(caps))]
    current = cost_of(pick)
    while True:
        best = None
        for i in pick:
            for f in sorted(p.allowed[i], key=lambda f: order.get(f, 99)):
                if order.get(f, 99) <= order.get(pick[i], 99):
                    continue
                extra = [model.coef[(i, f)][o] - model.coef[(i, pick[i])][o]
                         for o in range(len(caps))]
                if any(u + e > c for u, e, c in zip(used, extra, caps)):
                    continue
                trial = dict(pick)
                trial[i] = f
                saved = current - cost_of(trial)
                if saved <= 0:
                    continue
                score = saved / (max(extra) + 1e-300)
                if best is None or score > best[0]:
                    best = (score, i, f, extra, saved)
                break
        if best is None:
            return pick
        _, i, f, extra, saved = best
        pick[i] = f
        used = [u + e for u, e in zip(used, extra)]
        current -= saved


# ---------------------------------------------------------------------------------------------
# step 4: the driver
def tune_function(module: N.Module, fn: N.Function, dims: dict[str, int],
                  budget: "Budget | str | float", options: TuneOptions = TuneOptions(),
                  _session: "TuneSession | None" = None) -> TuneResult:
    session = _session or TuneSession(module, fn, dims, options, Budget.parse(budget).kind)
    return session.tune(Budget.parse(budget))


class TuneSession:
    """Everything that does not depend on the budget (the probes, the cost terms), so a Pareto
    sweep over budgets analyses each probe once."""

    def __init__(self, module: N.Module, fn: N.Function, dims: dict[str, int],
                 options: TuneOptions, kind: str):
        from . import cost_model as CM

        t0 = time.perf_counter()
        self.module, self.options, self.kind = module, options, kind
        missing = [d for d in fn.dims if d not in dims]
        if missing:
            raise GradeError(f"tuning {fn.name}() needs its sizes: give "
                             + ", ".join(f"{d}=..." for d in missing)
                             + " (--dim on the command line)")
        self.dims = dict(dims)
        self.original = fn
        self.fn = prepare(module, fn)
        self.target = CM.get_target(options.target)
        self.formats = [_candidate_format(f) for f in options.formats]
        if not any(f.name == "f64" for f in self.formats):
            self.formats.insert(0, get_format("f64"))
        self.ops = tunable_values(self.fn, options)
        self.an = _Analyser(module, self.fn, self.dims, kind, options.analysis)
        self.terms = CM.kernel_terms(self.fn, self.dims)
        self.ranges = self._ranges()
        self.impossible: _Impossible | None = None
        try:
            self.model = build_error_model(self.an, self.ops, self.formats, self.ranges)
            self.model = self._drop_uncostable(self.model)
        except _Impossible as ex:
            self.impossible, self.model = ex, None
        f32 = get_format("f32")
        self.baseline = {v: f32 for v in self.ops}
        self.setup_seconds = time.perf_counter() - t0

    def _ranges(self) -> dict[Value, float]:
        """max |value| of every tunable operation, from the original program's analysis
        (a format that cannot hold it would overflow and is not admissible)."""
        g, _ = self.an.run({})
        mags = {}
        for v in self.ops:
            gr = g.grades.get(v)
            if gr is not None and gr.range is not None:
                lo, hi = gr.range
                mags[v] = max(abs(lo), abs(hi))
            else:
                mags[v] = math.inf
        return mags

    def _drop_uncostable(self, model: ErrorModel) -> ErrorModel:
        from . import cost_model as CM

        for i, v in enumerate(self.ops):
            model.allowed[i] = [f for f in model.allowed[i]
                                if self.target.op_seconds(CM.cost_op(v), get_format(f))
                                is not None]
            if not model.allowed[i]:
                raise GradeError(f"target {self.target.name} can compute {v.op} in none of "
                                 f"the formats {', '.join(f.name for f in self.formats)}")
        return model

    # cost of an assignment, exactly through the cost model
    def cost(self, fmt_of: dict[Value, Format]) -> float:
        from . import cost_model as CM

        return CM.program_cost(retype(self.fn, fmt_of), self.dims, self.target).total

    def _fmt_of(self, pick: dict[int, str]) -> dict[Value, Format]:
        return {self.ops[i]: get_format(f) for i, f in pick.items()}

    def tune(self, budget: Budget) -> TuneResult:
        t0 = time.perf_counter()
        count0 = self.an.count
        if budget.kind != self.kind:
            raise GradeError("a tuning session is for one budget kind")
        base_fn, base_rep = self.an.run(self.baseline)
        baseline_bounds = self.an.bounds(base_rep)
        baseline_cost = self.cost(self.baseline)
        best_fmt = {v: get_format("f64") for v in self.ops}
        best_fn, best_rep = self.an.run(best_fmt)
        best_bounds = self.an.bounds(best_rep)

        def result(status, fmt_of, solver, message):
            g, rep = self.an.run(fmt_of)
            return TuneResult(self.original.name, budget, self.target.name, status, g, rep,
                              self.an.bounds(rep), self.cost(fmt_of), baseline_cost,
                              baseline_bounds, best_bounds, self._choices(g, fmt_of),
                              self.dims, self.setup_seconds + time.perf_counter() - t0,
                              self.an.count, solver, message, self.module)

        if self.impossible is not None or not _meets(best_bounds, budget.value):
            why = self.impossible.why if self.impossible else (
                f"the budget {budget} cannot be met: the best achievable {budget.kind} bound "
                f"(every tunable operation in f64) is {_fmt_bound(best_bounds)}")
            r = result("impossible", {}, "", why)
            return r
        p = _Problem(self.ops, self.model.allowed, self.terms, self.target)
        caps = [budget.value - b for b in self.model.base]
        solver = ""
        candidates: list[tuple[float, dict[Value, Format], str]] = []
        pick = None
        for _ in range(REPAIR_ROUNDS):
            pick, solver = self._solve(p, caps)
            if pick is None:
                break
            fmt_of = self._fmt_of(pick)
            _, rep = self.an.run(fmt_of)
            bounds = self.an.bounds(rep)
            if _meets(bounds, budget.value):
                candidates.append((self.cost(fmt_of), fmt_of, solver))
                break
            # shrink the model's allowance of each output by its overshoot
            for o, (b, cap) in enumerate(zip(bounds, caps)):
                if b is None or b > budget.value:
                    over = math.inf if b is None else b - budget.value
                    used = sum(self.model.coef[(i, f)][o] for i, f in pick.items())
                    caps[o] = min(cap, used - over) * 0.98 if math.isfinite(over) else cap * 0.5
        if not candidates:
            fmt_of = self._raise_until_met(pick, budget)
            candidates.append((self.cost(fmt_of), fmt_of, (solver + " + " if solver else "")
                               + "repair by raising formats"))
        if _meets(baseline_bounds, budget.value):
            candidates.append((baseline_cost, dict(self.baseline), "all-f32 baseline"))
        cost, fmt_of, solver = min(candidates, key=lambda c: c[0])
        return result("ok", fmt_of, solver, "")

    def _solve(self, p: _Problem, caps: list[float]) -> tuple[dict[int, str] | None, str]:
        if any(c < 0 for c in caps):
            return None, "no room in the budget beyond the pinned roundings"
        nvar = sum(len(a) for a in p.allowed.values())
        if nvar <= 4000:
            pick, how = solve_assignment(p, self.model, caps, self.options.milp_node_limit)
            if pick is not None:
                return pick, how
        cost_of = lambda pk: self.cost(self._fmt_of(pk))  # noqa: E731
        return greedy_assignment(p, self.model, caps, cost_of), "greedy"

    def _raise_until_met(self, pick: dict[int, str] | None, budget: Budget) -> dict[Value, Format]:
        """Raise the format of the largest error term one step at a time until the full
        analysis meets the budget (all-f64 does, so this ends)."""
        order = [f.name for f in self.formats]   # widest first
        pick = dict(pick or {i: "f64" for i in range(len(self.ops))})
        for _ in range(len(self.ops) * len(order) + 1):
            fmt_of = self._fmt_of(pick)
            _, rep = self.an.run(fmt_of)
            bounds = self.an.bounds(rep)
            if _meets(bounds, budget.value):
                return fmt_of
            worst = max((i for i in pick if pick[i] != "f64"),
                        key=lambda i: max(self.model.coef[(i, pick[i])]), default=None)
            if worst is None:
                break
            allowed = [f for f in order if f in self.model.allowed[worst]]
            k = allowed.index(pick[worst])
            pick[worst] = allowed[k - 1] if k > 0 else "f64"
        return {v: get_format("f64") for v in self.ops}

    def _choices(self, g: N.Function, fmt_of: dict[Value, Format]) -> list[Choice]:
        out = []
        names = _value_names(self.fn)
        for v in self.ops:
            f = fmt_of.get(v, v.fmt)
            sp = self.fn.spans.get(v)
            out.append(Choice(v, names.get(v, "?"), v.op, sp.line if sp else None,
                              sp.col if sp else None, v.fmt.name, f.name))
        return out

    def pareto(self, budgets: list[float]) -> list[TuneResult]:
        return [self.tune(Budget(self.kind, b)) for b in budgets]


def _candidate_format(name: str) -> Format:
    try:
        f = get_format(name)
    except KeyError:
        raise GradeError(f"unknown format {name!r} for tuning (choose from "
                         f"{', '.join(DEFAULT_FORMATS)}, e2m1)") from None
    if f.kind != "float" or not f.signed or not f.has_zero:
        raise GradeError(f"{name} cannot be a working format (it has no sign or no zero)")
    return f


def _meets(bounds: list[float | None], budget: float) -> bool:
    return all(b is not None and b <= budget for b in bounds)


def _fmt_bound(bounds: list[float | None]) -> str:
    return ", ".join("none" if b is None else f"{b:.3g}" for b in bounds)


def _value_names(fn: N.Function) -> dict[Value, str]:
    """Printer-style names: the let name where there is one, else %k in program order."""
    names, k = {}, 0
    for v in N.toposort(fn.results):
        if v in fn.names:
            names[v] = fn.names[v]
        elif v.op not in (Op.PARAM, Op.CONST):
            names[v] = f"%{k}"
            k += 1
    return names


def default_pareto_budgets(session: TuneSession, n: int = 8) -> list[float]:
    """Log-spaced budgets from just above the best achievable bound to the all-lowest-format
    bound's order of magnitude."""
    best = _max_or_none(session.an.bounds(session.an.run(
        {v: get_format("f64") for v in session.ops})[1]))
    if best is None:
        return []
    lo = max(best * 2, 1e-300)
    base = _max_or_none(session.an.bounds(session.an.run(session.baseline)[1])) or lo
    hi = max(base * 1e4, lo * 1e6)
    return [float(x) for x in np.geomspace(lo, hi, n)]
