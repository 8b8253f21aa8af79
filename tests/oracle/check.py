"""The soundness check: numgrade's computed value vs our ideal value vs numgrade's bound.

For one program: compile it with ``ng.compile_source``, take ``f.analyze(**dims)`` once, then for
each adversarial input run the reference backend (the computed value) and our evaluator (the
ideal value) and check, exactly (Fraction or 300-bit mpmath, no slack beyond the evaluator's own
2^-290 relative error on transcendental values):

* ``|computed - ideal| <= abs_error`` (abs_error None: not checked, counted as null),
* ``|computed - ideal| <= rel_error * |ideal|`` where rel_error is reported,
* ideal and computed inside ``range``,
* a NaN/inf computed or ideal value with a finite bound is a violation.
"""

from __future__ import annotations

import math
import random
import time
import traceback
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np

from . import ideal as I
from .fmts import F, ML_DTYPES, grid_ceil, grid_floor, next_down, next_up, on_grid
from .gen import Node, Program, generate

_ng = None


def ng():
    global _ng
    if _ng is None:
        import numgrade
        _ng = numgrade
    return _ng


# --- inputs -------------------------------------------------------------------------------

def _dtype(fmt: str):
    n = ML_DTYPES[fmt]
    return np.dtype(getattr(ml_dtypes, n)) if hasattr(ml_dtypes, n) and n not in (
        "float64", "float32", "float16", "int32", "bool") else np.dtype(n)


def to_numpy(fmt: str, vals: np.ndarray) -> np.ndarray:
    """Exact values of fmt (object array of Fractions) -> numpy array in fmt's dtype."""
    f64 = np.array([float(v) for v in vals.flat], dtype=np.float64).reshape(vals.shape)
    arr = f64.astype(_dtype(fmt))
    back = arr.astype(np.float64)
    assert np.array_equal(back, f64), (fmt, f64, back)
    return arr


class Domain:
    """The representable values of one parameter inside its declared range."""

    def __init__(self, fmt: str, lo: Fraction | None, hi: Fraction | None):
        self.fmt = fmt
        self.f = F[fmt]
        if fmt == "bool":
            self.glo, self.ghi = Fraction(0), Fraction(1)
        else:
            self.glo = grid_ceil(self.f, lo)
            self.ghi = grid_floor(self.f, hi)
        assert self.glo is not None and self.ghi is not None and self.glo <= self.ghi

    def snap(self, x: Fraction) -> Fraction:
        x = min(max(x, self.glo), self.ghi)
        g = grid_floor(self.f, x)
        if g is None or g < self.glo:
            g = grid_ceil(self.f, x)
        return min(max(g, self.glo), self.ghi)

    def special(self, rng: random.Random) -> Fraction:
        c = [self.glo, self.ghi]
        u = next_up(self.f, self.glo)
        if u is not None and u <= self.ghi:
            c.append(u)
        d = next_down(self.f, self.ghi)
        if d is not None and d >= self.glo:
            c.append(d)
        if self.glo <= 0 <= self.ghi and on_grid(self.f, Fraction(0)):
            c += [Fraction(0)] * 2
        for t in (1, -1, Fraction(1, 2)):
            if self.glo <= t <= self.ghi:
                c.append(self.snap(Fraction(t)))
        return rng.choice(c)

    def uniform(self, rng: random.Random) -> Fraction:
        t = Fraction(rng.random())
        return self.snap(self.glo + (self.ghi - self.glo) * t)

    def loguniform(self, rng: random.Random) -> Fraction:
        lo, hi = self.glo, self.ghi
        sgn = []
        if hi > 0:
            sgn.append(1)
        if lo < 0:
            sgn.append(-1)
        if not sgn:
            return lo
        s = rng.choice(sgn)
        top = hi if s > 0 else -lo
        low = max(Fraction(lo if s > 0 else -hi), self.f.quantum if self.fmt != "i32"
                  else Fraction(1))
        if low <= 0:
            low = self.f.quantum if self.fmt not in ("i32", "bool") else Fraction(1)
        if top < low:
            return self.uniform(rng)
        a, b = math.log2(low), math.log2(top)
        x = Fraction(2.0 ** (a + (b - a) * rng.random()))
        return self.snap(s * x)

    def draw(self, rng: random.Random) -> Fraction:
        k = rng.random()
        if self.fmt == "bool":
            return Fraction(rng.randint(0, 1))
        if k < 0.35:
            return self.special(rng)
        if k < 0.7:
            return self.uniform(rng)
        return self.loguniform(rng)


def _shape(shape: tuple, dims: dict[str, int]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else dims[d] for d in shape)


def base_inputs(prog: Program, rng: random.Random, n: int) -> list[dict[str, np.ndarray]]:
    doms = {p.name: Domain(p.fmt, p.lo, p.hi) for p in prog.params}
    out = []
    for k in range(n):
        d = {}
        for p in prog.params:
            dom = doms[p.name]
            shp = _shape(p.shape, prog.dims)
            a = np.empty(shp, dtype=object)
            for idx in np.ndindex(shp):
                if k == 0:
                    a[idx] = dom.glo
                elif k == 1:
                    a[idx] = dom.ghi
                elif k == 2:
                    a[idx] = rng.choice([dom.glo, dom.ghi])
                elif k == 3:
                    a[idx] = dom.special(rng)
                else:
                    a[idx] = dom.draw(rng)
            d[p.name] = a
        out.append(d)
    return out


# --- discontinuities: bisect an input coordinate until the ideal flips between grid neighbours

def _disc_nodes(prog: Program) -> list[tuple[Node, Any]]:
    seen, out = set(), []

    def walk(e: Node):
        if id(e) in seen:
            return
        seen.add(id(e))
        for a in e.args:
            walk(a)
        if e.op in ("floor", "ceil"):
            out.append((e, lambda ev, e=e: tuple(ev.ev(e).flat)))
        elif e.op == "bin" and e.attrs["sym"] == "%":
            out.append((e, lambda ev, e=e: tuple(
                I.FLOOR(I.BIN["/"](ev.ev(e.args[0]), ev.ev(e.args[1]))).flat)))
        elif e.op == "cmp":
            out.append((e, lambda ev, e=e: tuple(ev.ev(e).flat)))
        elif e.op == "round" and e.attrs["fmt"] == "bool":
            out.append((e, lambda ev, e=e: tuple(ev.ev(e).flat)))
        elif e.op == "round" and e.attrs["fmt"] in ("i32", "e2m1", "e8m0", "e4m3"):
            out.append((e, lambda ev, e=e: tuple(I.FLOOR(I.BIN["+"](
                ev.ev(e.args[0]), I.obj(Fraction(1, 2)))).flat)))
        elif e.op in ("min2", "max2"):
            out.append((e, lambda ev, e=e: tuple(I._b(lambda a, b: Fraction(int(I.le(a, b))))(
                ev.ev(e.args[0]), ev.ev(e.args[1])).flat)))
    for _, _, e in prog.lets:
        walk(e)
    for o in prog.outputs:
        walk(o)
    return out


def _key(v):
    try:
        return tuple(str(x) for x in v)
    except Exception:  # pragma: no cover
        return repr(v)


def disc_inputs(prog: Program, base: list[dict], rng: random.Random, budget: int) -> list[dict]:
    nodes = _disc_nodes(prog)
    if not nodes or not base:
        return []
    doms = {p.name: Domain(p.fmt, p.lo, p.hi) for p in prog.params if p.fmt != "bool"}
    if not doms:
        return []
    out = []
    tries = 0
    while len(out) < budget * 2 and tries < budget * 3:
        tries += 1
        node, ind = rng.choice(nodes)
        start = rng.choice(base)
        pname = rng.choice(list(doms))
        dom = doms[pname]
        shp = start[pname].shape
        idx = tuple(rng.randrange(s) for s in shp)
        whole = shp != () and rng.random() < 0.3

        def at(v: Fraction) -> dict:
            d = dict(start)
            a = start[pname].copy()
            if whole:
                a[...] = v
            else:
                a[idx] = v
            d[pname] = a
            return d

        def indicator(v):
            ev = I.Evaluator(prog, at(v), prog.dims)
            try:
                return _key(ind(ev))
            except (ZeroDivisionError, ValueError, OverflowError, TypeError, I.OracleLimit):
                return None
        a, b = dom.glo, dom.ghi
        if rng.random() < 0.5:      # a random sub-interval finds flips the endpoints hide
            m = dom.uniform(rng)
            a, b = (a, m) if rng.random() < 0.5 else (m, b)
        ka, kb = indicator(a), indicator(b)
        if ka == kb:
            continue
        steps = 0
        while steps < 80:
            steps += 1
            u = next_up(dom.f, a)
            if u is None or u >= b:
                break
            m = dom.snap((a + b) / 2)
            if m <= a or m >= b:
                m = u
            km = indicator(m)
            if km == ka:
                a = m
            else:
                b, kb = m, km
        out.append(at(a))
        out.append(at(b))
    return out


# --- checking -----------------------------------------------------------------------------

@dataclass
class Violation:
    kind: str
    output: int
    element: tuple
    computed: float
    ideal: str
    bound: Any
    inputs: dict
    measured: str = ""
    raw: dict | None = None      # the input point itself (exact Fractions), not serialised

    def to_dict(self) -> dict:
        return {"kind": self.kind, "output": self.output, "element": list(self.element),
                "computed": repr(self.computed), "ideal": self.ideal, "bound": repr(self.bound),
                "measured": self.measured, "inputs": self.inputs}


@dataclass
class Result:
    seed: Any
    source: str
    dims: dict
    status: str = "ok"          # ok | rejected | analysis-error | run-error | violation
    message: str = ""
    n_inputs: int = 0
    null_bounds: int = 0
    skipped: int = 0            # inputs whose ideal value is beyond the evaluator (OracleLimit)
    violations: list = field(default_factory=list)
    worst_ratio: float = 0.0
    ratios: list = field(default_factory=list)
    bounds: list = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"seed": self.seed, "source": self.source, "dims": self.dims,
                "status": self.status, "message": self.message, "n_inputs": self.n_inputs,
                "null_bounds": self.null_bounds, "skipped": self.skipped, "worst_ratio": self.worst_ratio,
                "bounds": self.bounds, "violations": [v.to_dict() for v in self.violations],
                "seconds": self.seconds}


def _fmt_val(x) -> str:
    if isinstance(x, Fraction) and max(x.numerator.bit_length(), x.denominator.bit_length()) > 1100:
        return I.CTX.nstr(I.mp(x), 20)
    if isinstance(x, Fraction):
        if x.denominator == 1 or x.denominator & (x.denominator - 1) == 0:
            return repr(float(x)) if float(x) == x else str(x)
        return str(x)
    return I.CTX.nstr(x, 20)


def _inputs_repr(inp: dict) -> dict:
    return {k: (_fmt_val(v[()]) if v.shape == () else [_fmt_val(t) for t in v.flat])
            for k, v in inp.items()}


def check_value(c: float, i, B, R, rng_, tol_needed: bool):
    """Return (kind or None, measured error as mpf/Fraction or None)."""
    bfin = B is not None and math.isfinite(B)
    if not I.is_finite(i):
        if bfin:
            return "ideal-nonfinite", None
        return None, None
    if not math.isfinite(c):
        if bfin:
            return "computed-nonfinite", None
        if rng_ is not None and (math.isnan(c) or not (rng_[0] <= c <= rng_[1])):
            return "range", None
        return None, None
    if isinstance(i, Fraction):
        err = abs(Fraction(c) - i)
        slack = Fraction(0)
    else:
        err = abs(I.CTX.mpf(c) - i)
        slack = abs(i) * I.CTX.mpf(2) ** -285 + I.CTX.mpf(2) ** -1200
    if isinstance(err, Fraction):
        over_abs = bfin and err > Fraction(B)
        over_rel = R is not None and math.isfinite(R) and err > Fraction(R) * abs(i)
    else:
        over_abs = bfin and err > I.CTX.mpf(B) + slack
        over_rel = R is not None and math.isfinite(R) and err > I.CTX.mpf(R) * abs(i) + slack
    if over_abs:
        return "abs", err
    if over_rel:
        return "rel", err
    if rng_ is not None:
        lo, hi = rng_
        if lo is not None and hi is not None:
            if isinstance(i, Fraction):
                inside = lo <= i <= hi
            else:
                inside = (lo == -math.inf or I.mp(lo) - slack <= i) and \
                    (hi == math.inf or i <= I.mp(hi) + slack)
            if not inside:
                return "range-ideal", err
            if not (lo <= c <= hi):
                return "range", err
    return None, err


def run_program(prog: Program, seed: Any = None, n_base: int = 8, n_disc: int = 3,
                rng: random.Random | None = None, extra_inputs: list[dict] | None = None,
                bound_override: dict | None = None) -> Result:
    t0 = time.perf_counter()
    src = prog.source()
    res = Result(seed, src, dict(prog.dims))
    rng = rng or random.Random(seed)
    G = ng()
    try:
        mod = G.compile_source(src)
    except G.GradeError as ex:
        res.status, res.message = "rejected", str(ex).splitlines()[0][:300]
        return res
    f = mod[prog.name]
    try:
        rep = f.analyze(**prog.dims)
    except G.GradeError as ex:
        res.status, res.message = "analysis-error", str(ex)[:300]
        return res
    except Exception as ex:  # noqa: BLE001 - a crash of the analysis is a finding too
        res.status = "analysis-crash"
        res.message = f"{type(ex).__name__}: {ex}\n" + traceback.format_exc()[-800:]
        return res
    outs = rep.outputs
    for o in outs:
        B = o.abs_error
        R = o.rel_error
        if bound_override is not None:
            B = bound_override.get("abs", B)
            R = bound_override.get("rel", R)
        rg = None if o.range is None else (
            Fraction(o.range[0]) if math.isfinite(o.range[0]) else -math.inf,
            Fraction(o.range[1]) if math.isfinite(o.range[1]) else math.inf)
        res.bounds.append({"abs": B, "rel": R, "range": rg})
        if B is None:
            res.null_bounds += 1
    try:
        base = base_inputs(prog, rng, n_base)
        inputs = base + disc_inputs(prog, base, rng, n_disc) + list(extra_inputs or [])
    except (ZeroDivisionError, ValueError, OverflowError) as ex:
        res.status, res.message = "input-error", repr(ex)
        return res
    for inp in inputs:
        arrays = [to_numpy(p.fmt, inp[p.name]) for p in prog.params]
        try:
            got = f(*arrays)
        except G.GradeError as ex:
            res.status, res.message = "run-error", str(ex)[:300]
            return res
        except Exception as ex:  # noqa: BLE001 - the product crashed: a finding, not ours
            res.status = "run-crash"
            res.message = f"{type(ex).__name__}: {ex}\n" + traceback.format_exc()[-800:]
            return res
        got = got if isinstance(got, tuple) else (got,)
        try:
            ideal, _ = I.evaluate(prog, inp, prog.dims)
        except I.OracleLimit:
            res.skipped += 1
            continue
        res.n_inputs += 1
        for k, (c, i, bd) in enumerate(zip(got, ideal, res.bounds)):
            c = np.asarray(c).astype(np.float64)
            i = np.broadcast_to(i, c.shape)
            rg = bd["range"]
            rgq = None if rg is None else rg
            for idx in np.ndindex(c.shape):
                cv, iv = float(c[idx]), i[idx]
                kind, err = check_value(cv, iv, bd["abs"], bd["rel"], rgq, True)
                B = bd["abs"]
                if err is not None and B is not None and math.isfinite(B):
                    if B > 0:
                        r = float(err / Fraction(B)) if isinstance(err, Fraction) else \
                            float(err / I.CTX.mpf(B))
                        res.worst_ratio = max(res.worst_ratio, r)
                    elif err > 0:
                        res.worst_ratio = math.inf
                if kind is not None:
                    res.violations.append(Violation(
                        kind, k, idx, cv, _fmt_val(iv), B if kind != "rel" else bd["rel"],
                        _inputs_repr(inp), "" if err is None else _fmt_val(err), inp))
    if res.violations:
        res.status = "violation"
    res.seconds = time.perf_counter() - t0
    return res


def run_seed(seed: int, max_depth: int = 3, **kw) -> Result:
    prog = generate(seed, max_depth)
    return run_program(prog, seed=seed, **kw)


# --- helpers for hand-written programs -----------------------------------------------------

def point(prog: Program, **vals) -> dict:
    """One input assignment: scalars or lists per parameter, checked to be representable and
    inside the declared range (exact Fractions from the float or decimal-string values)."""
    out = {}
    for p in prog.params:
        v = vals[p.name]
        shp = _shape(p.shape, prog.dims)
        a = np.empty(shp, dtype=object)
        flat = list(v) if isinstance(v, (list, tuple)) else [v] * max(1, int(np.prod(shp)))
        for idx, x in zip(np.ndindex(shp), flat):
            q = Fraction(x) if not isinstance(x, str) else Fraction(x)
            assert on_grid(F[p.fmt], q), f"{p.name}={x} is not a {p.fmt} value"
            assert p.lo is None or p.lo <= q <= p.hi, f"{p.name}={x} is outside its range"
            a[idx] = q
        out[p.name] = a
    return out


def check(prog: Program, *points: dict, seed: int = 0, n_base: int = 4, n_disc: int = 2,
          **kw) -> Result:
    """Run the oracle on prog with the given input points plus generated adversarial ones."""
    return run_program(prog, seed=seed, n_base=n_base, n_disc=n_disc,
                       extra_inputs=list(points), **kw)


def explain(res: Result, limit: int = 3) -> str:
    lines = [f"status={res.status} {res.message}", res.source.rstrip(), f"dims={res.dims}",
             f"bounds={res.bounds}"]
    for v in res.violations[:limit]:
        d = v.to_dict()
        lines.append(f"  {d['kind']} out{d['output']}{d['element']}: computed={d['computed']} "
                     f"ideal={d['ideal']} |err|={d['measured']} bound={d['bound']} "
                     f"inputs={d['inputs']}")
    if len(res.violations) > limit:
        lines.append(f"  ... {len(res.violations) - limit} more")
    return "\n".join(lines)
