"""Soundness harness: measure rounding errors and compare them with the analysis' bounds.

SPEC section 3 promises, for every output and every input in the declared ranges,
``abs_error >= |computed - ideal|``, ``rel_error >= |computed - ideal| / |ideal|`` (where given)
and ``range`` holding every ideal and computed value. :func:`check` tests those promises on
inputs it chooses:

* uniform samples in the box (and log-uniform magnitudes, and mixtures with special values);
* corners and edges of the box: all-min, all-max, every sign pattern (or a random subset of the
  corners), zeros, values near 0 (subnormals, the smallest normal), powers of two, values one
  unit in the last place inside the endpoints, equal arguments (cancellation), and for tensors
  whole-tensor patterns (alternating endpoints, rows that sum to about 0, one large element among
  tiny ones, ramps);
* a short search toward large errors: the worst inputs so far are perturbed (relative steps,
  steps of a few units in the last place, coordinates set to an endpoint) for a few generations.

The measured error is ``|computed - ideal|`` evaluated exactly: the computed value (a float64
holding a value of the output format) and the ideal value (a 160-bit mpmath number from
``fn.ideal(..., as_float=False)``) are subtracted without rounding, and the comparison with the
bound is exact too (no slack): a measured error above the bound is a :class:`Violation`.

Parameters without a declared range are sampled in [-1, 1], and additionally (``wide=True``) over
the whole range of their format, since the analysis' claim covers every value of the format then.
Programs with the ``rand`` effect are run with the same seed in both worlds (the ideal program
sees the same random numbers). Scalar straight-line programs (every parameter, result and
intermediate a scalar, no random numbers, no calls) are evaluated in batches by running the
reference interpreter on vectors, which is exact elementwise; the first samples are cross-checked
against the public API and any disagreement falls back to one call per sample.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
from mpmath import libmp as L

from .ir import nodes as N
from .ir.formats import Format, round_array

__all__ = ["check", "OutputCheck", "Violation", "default_dims", "markdown_table",
           "loader_code", "ParamSpace", "batchable", "merge"]

_FNAN, _FINF, _FNINF, _FZERO = L.fnan, L.finf, L.fninf, L.fzero


# =============================================================================================
# results
@dataclass
class Violation:
    """One input on which a claim of the analysis fails (measured > bound, or outside range)."""

    kind: str                     # 'abs' | 'rel' | 'range' | 'invalid' (a NaN or negative claim)
    program: str
    function: str
    output: int
    element: int                  # flat index into the output
    inputs: dict[str, Any]        # parameter name -> float or numpy float64 array
    seed: int | None
    computed: float
    ideal: str                    # the ideal value, printed with 30 digits
    measured: float               # abs error, rel error, or the value outside the range
    bound: Any                    # the bound (float) or the range (lo, hi)
    dims: dict[str, int] = field(default_factory=dict)
    loader: str = ""
    tuple_result: bool = False

    def describe(self) -> str:
        if self.kind == "invalid":
            return (f"VIOLATION {self.program}:{self.function} output {self.output}: the "
                    f"reported claim {self.bound!r} is not a valid bound")
        if self.kind == "range":
            what = f"value {self.measured!r} outside range {self.bound}"
        else:
            what = f"{self.kind} error {self.measured!r} > bound {self.bound!r}"
        return (f"VIOLATION {self.program}:{self.function} output {self.output}[{self.element}]: "
                f"{what} (computed {self.computed!r}, ideal {self.ideal}, seed {self.seed})")

    def reproducer(self) -> str:
        """Python code that recomputes the violating sample."""
        lines = ["import numpy as np", "import numgrade as ng", f"fn = {self.loader or '...'}"]
        args = []
        for name, v in self.inputs.items():
            if np.ndim(v) == 0:
                lines.append(f"{_pyname(name)} = float.fromhex({float(v).hex()!r})")
            else:
                a = np.asarray(v, dtype=np.float64)
                hexes = ", ".join(repr(float(x).hex()) for x in a.ravel())
                lines.append(f"{_pyname(name)} = np.array([float.fromhex(h) for h in "
                             f"[{hexes}]]).reshape({a.shape})")
            args.append(_pyname(name))
        call = ", ".join(args)
        seed = f", seed={self.seed}" if self.seed is not None else ""
        lines += [f"c = fn({call}{seed})", f"i = fn.ideal({call}{seed}, as_float=False)"]
        if self.tuple_result:
            lines += [f"c, i = c[{self.output}], i[{self.output}]"]
        lines += [f"c = float(np.asarray(c, dtype=np.float64).ravel()[{self.element}])",
                  f"i = np.asarray(i, dtype=object).ravel()[{self.element}]",
                  "print('computed', c, 'ideal', i, 'abs error', abs(i - c))"]
        lines.append(f"# output {self.output}, element {self.element}: computed "
                     f"{self.computed!r}, ideal {self.ideal}; {self.kind} bound {self.bound!r}, "
                     f"measured {self.measured!r}; dims {self.dims}")
        return "\n".join(lines)


def _pyname(name: str) -> str:
    return name if name.isidentifier() else "_" + "".join(c if c.isalnum() else "_" for c in name)


@dataclass
class OutputCheck:
    """What the harness measured for one output, against what the analysis claims."""

    program: str
    function: str
    output: int
    format: str
    abs_bound: float | None
    rel_bound: float | None
    range: tuple[float, float] | None
    reason: str | None
    dims: dict[str, int]
    samples: int = 0              # samples evaluated (inputs on which the function ran)
    max_abs: float = 0.0          # worst measured |computed - ideal| (rounded up to a float)
    max_rel: float | None = None  # worst measured relative error (where |ideal| > 0)
    abs_ratio: float | None = None
    rel_ratio: float | None = None
    worst_input: dict[str, Any] | None = None      # the input of max_abs
    worst_rel_input: dict[str, Any] | None = None
    worst_seed: int | None = None
    worst_computed: float | None = None
    worst_ideal: str | None = None
    undefined: int = 0            # samples where this output's ideal value was NaN or infinite
    errors: int = 0               # samples on which the function could not run
    violation_counts: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)   # the first few of each kind
    seconds: float = 0.0
    mode: str = ""                # 'batch' | 'loop'

    @property
    def skipped(self) -> bool:
        """No claim at all to check (abs, rel and range all None)."""
        return self.abs_bound is None and self.rel_bound is None and self.range is None

    @property
    def ok(self) -> bool:
        return not any(self.violation_counts.values())

    @property
    def n_violations(self) -> int:
        return sum(self.violation_counts.values())

    @property
    def ratio(self) -> float | None:
        rs = [r for r in (self.abs_ratio, self.rel_ratio) if r is not None]
        return max(rs) if rs else None


# =============================================================================================
# sizes
def default_dims(fn, base: int = 8, given: dict[str, int] | None = None) -> dict[str, int]:
    """Sizes for every symbolic dim of ``fn``: ``given`` ones kept, the others near ``base``,
    multiples of the required moduli, satisfying every size requirement."""
    ir = _fir(fn)
    given = {k: v for k, v in (given or {}).items() if k in ir.dims}
    mod = ir.moduli()
    free = [d for d in ir.dims if d not in given]

    def start(d: str) -> int:
        m = mod.get(d, 1)
        return m * max(1, -(-base // m))

    env = dict(given)
    env.update({d: start(d) for d in free})
    if _sizes_ok(ir, env) or not free:
        return env
    # small search: each free dim over a few multiples of its modulus around base
    import itertools

    choices = []
    for d in free:
        m = mod.get(d, 1)
        cands = sorted({m * k for k in range(1, 9)} | {start(d)} | {m * max(1, base * 2 // m)})
        choices.append(cands)
    best, best_cost = None, None
    for combo in itertools.product(*choices):
        e = dict(given)
        e.update(zip(free, combo))
        if _sizes_ok(ir, e):
            cost = sum(abs(v - start(d)) for d, v in zip(free, combo))
            if best_cost is None or cost < best_cost:
                best, best_cost = e, cost
        if len(choices) > 3 and best is not None:
            break
    return best if best is not None else env


def _sizes_ok(ir: N.Function, env: dict[str, int]) -> bool:
    for c in ir.requires:
        if c.holds(env) is False:
            return False
    for p in ir.params:
        for d in p.value.shape:
            try:
                v = d.evaluate(env)
            except KeyError:
                return False
            if v.denominator != 1 or v < 0:
                return False
    return True


def _fir(fn) -> N.Function:
    return fn.ir


# =============================================================================================
# the input space
class ParamSpace:
    """One parameter: its format, concrete shape, sampling box and the exact representable range."""

    def __init__(self, p: N.Parameter, env: dict[str, int], wide: bool = True):
        self.name = p.name
        self.fmt: Format = p.value.fmt
        self.shape = tuple(int(d.evaluate(env)) for d in p.value.shape)
        self.size = int(np.prod(self.shape)) if self.shape else 1
        self.declared = p.range is not None
        self.kind = self.fmt.kind                         # float | int | bool
        self.wide = False
        f = self.fmt
        if self.kind == "bool":
            self.lo = self.hi = None
            self.full = (0.0, 1.0)
            self.box = (0.0, 1.0)
            self.specials = np.array([0.0, 1.0])
            return
        if self.declared:
            full = (float(p.range[0]), float(p.range[1]))
        else:
            full = (-f.max_finite, f.max_finite) if f.signed else (0.0, f.max_finite)
        self.full = self._exact_bounds(*full)
        if self.declared:
            self.box = self.full
        else:
            self.box = self._exact_bounds(max(-1.0, self.full[0]), min(1.0, self.full[1]))
        self.wide = wide and not self.declared
        self.specials = self._special_values()

    # exact representable endpoints ------------------------------------------------------
    def _exact_bounds(self, lo: float, hi: float) -> tuple[float, float]:
        f = self.fmt
        if self.kind == "int":
            lo2 = float(max(math.ceil(lo), -2**31))
            hi2 = float(min(math.floor(hi), 2**31 - 1))
            return (lo2, max(lo2, hi2))
        if not f.signed and lo <= 0:
            lo = f.min_subnormal
        if not f.has_zero and lo <= 0 <= hi:  # pragma: no cover - e8m0 is unsigned
            lo = f.min_subnormal
        lo2 = float(round_array(np.array(lo), f, mode="ru", sat=True))
        hi2 = float(round_array(np.array(hi), f, mode="rd", sat=True))
        if not (lo2 <= hi2):  # no value of the format in the range: take the nearest one
            lo2 = hi2 = float(round_array(np.array((lo + hi) / 2), f, sat=True))
        return (lo2, hi2)

    def project(self, x: np.ndarray) -> np.ndarray:
        """Values of the format inside the full range (rounding is monotone, ends are exact)."""
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "bool":
            return (x > 0.5).astype(np.float64)
        x = np.where(np.isnan(x), 0.0, x)
        x = np.clip(x, self.full[0], self.full[1])
        if self.kind == "int":
            return np.clip(np.rint(x), self.full[0], self.full[1])
        r = round_array(x, self.fmt, mode="rne", sat=True)
        r = np.where(np.isnan(r), self.full[0], r)
        return np.clip(r, self.full[0], self.full[1])

    def ulp_step(self, x: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Move each element k steps (signed) through the format's values, staying in range."""
        x = np.asarray(x, dtype=np.float64).copy()
        if self.kind == "bool":
            return np.where(k != 0, 1.0 - x, x)
        if self.kind == "int":
            return self.project(x + k)
        k = np.broadcast_to(k, x.shape)
        for _ in range(int(np.max(np.abs(k))) if k.size else 0):
            up = k > 0
            dn = k < 0
            with np.errstate(all="ignore"):
                xu = round_array(np.nextafter(x, np.inf), self.fmt, mode="ru", sat=True)
                xd = round_array(np.nextafter(x, -np.inf), self.fmt, mode="rd", sat=True)
            x = np.where(up, xu, np.where(dn, xd, x))
            k = k - np.sign(k)
        return self.project(x)

    def _special_values(self) -> np.ndarray:
        lo, hi = self.full
        blo, bhi = self.box
        f = self.fmt
        c = [lo, hi, blo, bhi, 0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, (blo + bhi) / 2,
             (lo + hi) / 2]
        if self.kind == "float":
            c += [f.min_subnormal, -f.min_subnormal, f.min_normal, -f.min_normal,
                  1.0 + 2.0 ** (1 - f.precision), 1.0 - 2.0 ** -f.precision, 1.5, -1.5, 3.0]
            # powers of two inside the range, log-spaced
            m = max(abs(lo), abs(hi))
            if m > 0:
                top = math.floor(math.log2(m))
                bottom = max(f.emin - f.precision + 1, top - 80)
                nz = min(abs(lo), abs(hi)) if lo > 0 or hi < 0 else 0.0
                if nz > 0:
                    bottom = max(bottom, math.ceil(math.log2(nz)))
                es = sorted(set(np.linspace(bottom, top, 10).round().astype(int).tolist()))
                for e in es:
                    c += [2.0 ** e, -(2.0 ** e)]
        arr = self.project(np.array(c, dtype=np.float64))
        near = [self.ulp_step(np.array([lo]), np.array([1]))[0],
                self.ulp_step(np.array([hi]), np.array([-1]))[0],
                self.ulp_step(np.array([blo]), np.array([1]))[0],
                self.ulp_step(np.array([bhi]), np.array([-1]))[0]]
        arr = np.concatenate([arr, self.project(np.array(near))])
        return np.unique(arr)

    # samplers ---------------------------------------------------------------------------
    def uniform(self, rng: np.random.Generator, box: tuple[float, float] | None = None) -> np.ndarray:
        if self.kind == "bool":
            return rng.integers(0, 2, self.shape).astype(np.float64)
        lo, hi = box or self.box
        with np.errstate(all="ignore"):
            x = lo + (hi - lo) * rng.random(self.shape)
            if not np.all(np.isfinite(x)):  # a range wider than float64 can span
                x = np.where(rng.random(self.shape) < 0.5, lo, hi) * rng.random(self.shape)
        return self.project(x)

    def loguniform(self, rng: np.random.Generator, box: tuple[float, float] | None = None) -> np.ndarray:
        """Log-uniform magnitudes (60 binades below the top of the box; every binade of the
        format when sampling the whole format range), random signs where the box allows."""
        if self.kind == "bool":
            return rng.integers(0, 2, self.shape).astype(np.float64)
        lo, hi = box or self.box
        m = max(abs(lo), abs(hi))
        if m == 0:
            return self.project(np.zeros(self.shape))
        top = math.log2(m)
        if lo > 0 or hi < 0:
            bottom = math.log2(min(abs(lo), abs(hi)))
        else:
            smallest = self.fmt.emin - self.fmt.precision + 1 if self.kind == "float" else 0
            bottom = smallest if box == self.full and self.wide else max(smallest, top - 60)
        e = bottom + (top - bottom) * rng.random(self.shape)
        mag = np.exp2(e)
        if lo >= 0:
            sign = np.ones(self.shape)
        elif hi <= 0:
            sign = -np.ones(self.shape)
        else:
            sign = np.where(rng.random(self.shape) < 0.5, -1.0, 1.0)
        return self.project(sign * mag)

    def special(self, rng: np.random.Generator) -> np.ndarray:
        return self.specials[rng.integers(0, len(self.specials), self.shape)].astype(np.float64)

    def random(self, rng: np.random.Generator) -> np.ndarray:
        """A sample of the main distribution: uniform, log-uniform, or a mixture with specials
        (and, for a parameter without a declared range, sometimes the whole format range)."""
        box = self.full if (self.wide and rng.random() < 0.2) else None
        r = rng.random()
        if r < 0.5:
            return self.uniform(rng, box)
        if r < 0.75:
            return self.loguniform(rng, box)
        x = self.uniform(rng, box)
        if self.size > 1:
            pick = rng.random(self.shape)
            x = np.where(pick < 0.15, self.special(rng), x)
            x = np.where((pick >= 0.15) & (pick < 0.3), self.loguniform(rng, box), x)
        else:
            x = self.special(rng)
        return self.project(x)

    def pattern(self, name: str, rng: np.random.Generator) -> np.ndarray:
        """Whole-tensor (or scalar) structured inputs."""
        lo, hi = self.box
        if self.kind == "bool":
            if name in ("lo", "zero"):
                return np.zeros(self.shape)
            if name == "hi":
                return np.ones(self.shape)
            return rng.integers(0, 2, self.shape).astype(np.float64)
        n = self.size
        flat_idx = np.arange(n).reshape(self.shape) if self.shape else np.array(0)
        if name == "lo":
            x = np.full(self.shape, lo)
        elif name == "hi":
            x = np.full(self.shape, hi)
        elif name == "zero":
            x = np.zeros(self.shape)
        elif name == "fmin":
            x = np.full(self.shape, self.full[0])
        elif name == "fmax":
            x = np.full(self.shape, self.full[1])
        elif name == "alt":
            x = np.where(flat_idx % 2 == 0, lo, hi)
        elif name == "signs":
            x = np.where(rng.random(self.shape) < 0.5, lo, hi)
        elif name == "specials":
            x = self.special(rng)
        elif name == "ramp":
            x = np.linspace(lo, hi, n).reshape(self.shape) if n > 1 else np.full(self.shape, hi)
        elif name == "spike":  # tiny values and one large one per row
            small = self.loguniform(rng, (lo, hi)) * 2.0 ** -20
            x = np.where(flat_idx % max(1, self.shape[-1] if self.shape else 1) == 0, hi, small)
        elif name == "bigsmall":  # large first, then small values: absorption in sums
            x = self.uniform(rng) * 2.0 ** -24
            if self.shape:
                x = np.array(x)
                x[..., 0] = hi
                if self.shape[-1] > 1 and lo < 0:
                    x[..., -1] = lo
        elif name == "cancel":  # rows that sum to (nearly) zero
            x = self.uniform(rng)
            if self.shape and self.shape[-1] > 1 and lo < 0 < hi:
                x = np.array(x)
                half = self.shape[-1] // 2
                perm = rng.permutation(half)
                x[..., half:2 * half] = -x[..., :half][..., perm]
                x = x * (1 + 2.0 ** -30 * rng.standard_normal(self.shape))
        elif name == "equal":  # every element the same random value
            v = self.uniform(rng) if not self.shape else self.uniform(rng).ravel()[0]
            x = np.full(self.shape, v)
        else:
            raise ValueError(name)
        return self.project(x)


_TENSOR_PATTERNS = ("lo", "hi", "zero", "alt", "signs", "specials", "ramp", "spike", "bigsmall",
                    "cancel", "equal")


# =============================================================================================
# running the program in both worlds
class _Runner:
    """Computed and ideal outputs of a batch of inputs, as flat per-output arrays."""

    def __init__(self, fn, spaces: list[ParamSpace], computed=None):
        self.fn = fn
        self.spaces = spaces
        self.ir: N.Function = fn.ir
        self.module_ir = fn.module.ir
        self.rand = "rand" in self.ir.effects or self.ir.rand_consumers > 0
        # the computed program: the reference, or a compiled kernel (fn.compile(...))
        self.computed = computed
        self.mode = "batch" if computed is None and self._batchable() else "loop"
        self.validated = False

    def _batchable(self) -> bool:
        return batchable(self.fn)

    # one sample through the public API -----------------------------------------------------
    def _api(self, args: list[np.ndarray], seed: int | None):
        pargs = [float(a) if np.ndim(a) == 0 else a for a in args]
        c = (self.computed or self.fn)(*pargs, seed=seed)
        i = self.fn.ideal(*pargs, seed=seed, as_float=False)
        if not self.ir.result_is_tuple:
            c, i = (c,), (i,)
        cs = [np.asarray(x, dtype=np.float64).ravel() for x in c]
        ids = []
        for x in i:
            if isinstance(x, np.ndarray):
                ids.append(np.asarray(x, dtype=object).ravel())
            else:
                a = np.empty(1, dtype=object)
                a[0] = x
                ids.append(a)
        return cs, ids

    def run(self, batch: list[list[np.ndarray]], seeds: list[int | None]):
        """Returns (outputs, ok): outputs[k] = (computed flat, ideal flat, owner flat), where
        owner is the batch position of each element; ok[b] is False where the run failed."""
        nout = len(self.ir.results)
        if self.mode == "batch":
            try:
                res = self._run_batch(batch)
                if not self.validated:
                    self._validate(batch, res)
                if self.mode == "batch":
                    return res, [True] * len(batch)
            except Exception:  # noqa: BLE001 - fall back to the public API, one sample at a time
                self.mode = "loop"
        outs = [([], [], []) for _ in range(nout)]
        ok = []
        for b, (args, seed) in enumerate(zip(batch, seeds)):
            try:
                with warnings.catch_warnings(), np.errstate(all="ignore"):
                    warnings.simplefilter("ignore")
                    cs, ids = self._api(args, seed)
            except Exception:  # noqa: BLE001 - counted as an error sample
                ok.append(False)
                continue
            ok.append(True)
            for k in range(nout):
                outs[k][0].append(cs[k])
                outs[k][1].append(ids[k])
                outs[k][2].append(np.full(cs[k].shape, b, dtype=np.int64))
        res = []
        for c, i, o in outs:
            if c:
                res.append((np.concatenate(c), np.concatenate(i), np.concatenate(o)))
            else:
                res.append((np.zeros(0), np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)))
        return res, ok

    def _run_batch(self, batch):
        from .backends.reference import IdealDomain, Interpreter

        B = len(batch)
        cols = []
        for j, sp in enumerate(self.spaces):
            col = np.array([float(args[j]) for args in batch], dtype=np.float64)
            if sp.fmt.name != "f64":
                col = round_array(col, sp.fmt) if sp.kind != "bool" else (col != 0).astype(np.float64)
            cols.append(col)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            ci = Interpreter(self.module_ir)
            couts = ci._run(self.ir, [ci.domain.lift(c) for c in cols], {}, 0)
            ii = Interpreter(self.module_ir, IdealDomain())
            iouts = ii._run(self.ir, [ii.domain.lift(c) for c in cols], {}, 0)
        owner = np.arange(B, dtype=np.int64)
        res = []
        for c, i in zip(couts, iouts):
            c = np.broadcast_to(np.asarray(c, dtype=np.float64), (B,)).copy()
            i = np.asarray(i, dtype=object)
            if i.shape != (B,):
                i2 = np.empty(B, dtype=object)
                i2[:] = [i.ravel()[0]] * B if i.size == 1 else list(i.ravel())
                i = i2
            res.append((c, i, owner))
        return res

    def _validate(self, batch, res):
        """The batch evaluation must agree exactly with the public API on the first samples."""
        self.validated = True
        for b in range(min(3, len(batch))):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                cs, ids = self._api(batch[b], None)
            for k, (c, i, _) in enumerate(res):
                same_c = (c[b] == cs[k][0]) or (math.isnan(c[b]) and math.isnan(cs[k][0]))
                same_i = _raw(i[b]) == _raw(ids[k][0]) or (_isnan(_raw(i[b])) and
                                                          _isnan(_raw(ids[k][0])))
                if not (same_c and same_i):
                    self.mode = "loop"
                    return


def batchable(fn) -> bool:
    """Whether the harness evaluates ``fn`` in batches: a scalar straight-line program (every
    parameter, result and intermediate value a scalar; elementwise operations only; no random
    numbers, no calls)."""
    ir = fn.ir
    if "rand" in ir.effects or ir.rand_consumers > 0:
        return False
    if any(p.value.shape for p in ir.params) or any(r.shape for r in ir.results):
        return False
    allowed = N.ELEMENTWISE | {N.Op.CONST, N.Op.PARAM}
    for v in N.toposort(ir.results):
        if v.op not in allowed:
            return False
        if not isinstance(v.type, N.TensorType) or v.shape:
            return False
        if v.op == N.Op.ROUND and v.attrs[2] >= 0:
            return False
    return True


# =============================================================================================
# exact measurement
def _raw(x) -> tuple:
    """An mpmath raw mpf tuple of a number (mpf, int, float, bool)."""
    m = getattr(x, "_mpf_", None)
    if m is not None:
        return m
    if isinstance(x, (bool, np.bool_)):
        return L.from_int(int(x))
    if isinstance(x, (int, np.integer)):
        return L.from_int(int(x))
    return L.from_float(float(x))


def _isnan(r) -> bool:
    return r == _FNAN


def _isfinite(r) -> bool:
    return r not in (_FNAN, _FINF, _FNINF)


def _to_float_up(r) -> float:
    """A float >= |r| (nearest above): measured values are rounded up for display."""
    if r == _FNAN:
        return math.nan
    if r in (_FINF, _FNINF):
        return math.inf
    return L.to_float(L.mpf_abs(r), rnd=L.round_up)


def _ratio(num, den) -> float:
    """num / den as a float (both raw, nonnegative); inf where den is 0 and num > 0."""
    if num == _FZERO:
        return 0.0
    if den == _FZERO or num in (_FINF, _FNINF):
        return math.inf
    return L.to_float(L.mpf_div(num, den, 64, L.round_up))


def _ideal_str(r) -> str:
    if r == _FNAN:
        return "nan"
    if r == _FINF:
        return "inf"
    if r == _FNINF:
        return "-inf"
    return L.to_str(r, 30)


class _Acc:
    """Per-output accumulator."""

    def __init__(self, chk: OutputCheck, keep: int = 3):
        self.chk = chk
        self.keep = keep
        self.max_abs = _FZERO
        self.max_rel = None
        self.abs_b = None if chk.abs_bound is None else L.from_float(chk.abs_bound)
        self.rel_b = None if chk.rel_bound is None else L.from_float(chk.rel_bound)
        if chk.range is not None:
            self.rlo, self.rhi = L.from_float(chk.range[0]), L.from_float(chk.range[1])
        else:
            self.rlo = self.rhi = None
        self.undef_samples: set[int] = set()


class _Session:
    def __init__(self, fn, dims, seed, program, loader, wide, keep, computed=None):
        self.fn = fn
        self.ir = fn.ir
        self.dims = dims
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.program = program
        self.loader = loader
        self.spaces = [ParamSpace(p, dims, wide) for p in self.ir.params]
        self.runner = _Runner(fn, self.spaces, computed)
        self.accs: list[_Acc] = []
        self.pool: list[tuple[float, list[np.ndarray], int | None]] = []   # (score, input, seed)
        self.pool_size = 8
        self.sample_counter = 0

    def next_seed(self) -> int | None:
        if not self.runner.rand:
            return None
        self.sample_counter += 1
        return (self.seed * 1_000_003 + self.sample_counter) % (2**31)

    def inputs_dict(self, args: list[np.ndarray]) -> dict[str, Any]:
        return {sp.name: (float(a) if np.ndim(a) == 0 else np.array(a, dtype=np.float64))
                for sp, a in zip(self.spaces, args)}

    def evaluate(self, batch: list[list[np.ndarray]], seeds: list[int | None] | None = None):
        if not batch:
            return
        seeds = seeds if seeds is not None else [self.next_seed() for _ in batch]
        outs, ok = self.runner.run(batch, seeds)
        scores = np.zeros(len(batch))
        for acc, (c, i, owner) in zip(self.accs, outs):
            self._measure(acc, c, i, owner, batch, seeds, scores)
        for b, good in enumerate(ok):
            for acc in self.accs:
                if good:
                    acc.chk.samples += 1
                else:
                    acc.chk.errors += 1
        for b in range(len(batch)):
            if ok[b]:
                self._offer(scores[b], batch[b], seeds[b])

    def _offer(self, score: float, args, seed) -> None:
        if not math.isfinite(score) and score > 0:
            score = 1e300
        if len(self.pool) < self.pool_size or score > self.pool[-1][0]:
            self.pool.append((score, [np.array(a) for a in args], seed))
            self.pool.sort(key=lambda t: -t[0])
            del self.pool[self.pool_size:]

    def _violation(self, acc: _Acc, kind: str, e: int, args, seed, cval, ival, measured, bound):
        chk = acc.chk
        chk.violation_counts[kind] = chk.violation_counts.get(kind, 0) + 1
        if sum(1 for v in chk.violations if v.kind == kind) < acc.keep:
            chk.violations.append(Violation(kind, self.program, self.ir.name, chk.output, e,
                                            self.inputs_dict(args), seed, float(cval),
                                            _ideal_str(ival), measured, bound, dict(self.dims),
                                            self.loader, self.ir.result_is_tuple))

    def _measure(self, acc: _Acc, c: np.ndarray, i: np.ndarray, owner: np.ndarray, batch, seeds,
                 scores: np.ndarray) -> None:
        chk = acc.chk
        start = {}
        for idx in range(len(c)):
            b = int(owner[idx])
            e = idx - start.setdefault(b, idx)
            cf = float(c[idx])
            cr = L.from_float(cf)
            ir_ = _raw(i[idx])
            # range: every computed and every ideal value (where the ideal is defined: an
            # undefined ideal, NaN or infinite, is counted in `undefined` instead)
            if acc.rlo is not None and _isfinite(ir_):
                for val in (cr, ir_):
                    if val == _FNAN or L.mpf_lt(val, acc.rlo) or L.mpf_gt(val, acc.rhi):
                        self._violation(acc, "range", e, batch[b], seeds[b], cf, ir_,
                                        _to_float_signed(val), chk.range)
                        scores[b] = math.inf
                        break
            if not _isfinite(ir_):
                if not (cr == ir_):
                    acc.undef_samples.add(b)
                continue
            err = L.mpf_abs(L.mpf_sub(cr, ir_, 0)) if _isfinite(cr) else _FINF
            if L.mpf_gt(err, acc.max_abs) or (err == _FINF and acc.max_abs != _FINF):
                acc.max_abs = err
                chk.worst_input = self.inputs_dict(batch[b])
                chk.worst_seed = seeds[b]
                chk.worst_computed = cf
                chk.worst_ideal = _ideal_str(ir_)
            if acc.abs_b is not None:
                r = _ratio(err, acc.abs_b)
                if r > scores[b]:
                    scores[b] = r
                if err == _FINF or L.mpf_gt(err, acc.abs_b):
                    self._violation(acc, "abs", e, batch[b], seeds[b], cf, ir_,
                                    _to_float_up(err), chk.abs_bound)
            if acc.rel_b is not None:
                mag = L.mpf_abs(ir_)
                rel = _ratio(err, mag)
                if acc.max_rel is None or rel > acc.max_rel:
                    acc.max_rel = rel
                    chk.worst_rel_input = self.inputs_dict(batch[b])
                rr = rel / chk.rel_bound if chk.rel_bound > 0 else (math.inf if rel > 0 else 0.0)
                if rr > scores[b]:
                    scores[b] = rr
                # exact: err > rel_bound * |ideal|
                if err == _FINF or L.mpf_gt(err, L.mpf_mul(acc.rel_b, mag, 0)):
                    self._violation(acc, "rel", e, batch[b], seeds[b], cf, ir_, rel,
                                    chk.rel_bound)
        if acc.max_abs is not None:
            chk.max_abs = _to_float_up(acc.max_abs)
        chk.max_rel = acc.max_rel
        chk.undefined += len(acc.undef_samples)
        acc.undef_samples.clear()

    # phases -------------------------------------------------------------------------------
    def corner_inputs(self, limit: int) -> list[list[np.ndarray]]:
        rng = self.rng
        sps = self.spaces
        scalar = all(not sp.shape for sp in sps)
        out: list[list[np.ndarray]] = []
        seen: set[bytes] = set()

        def add(args):
            args = [sp.project(np.asarray(a, dtype=np.float64)) for sp, a in zip(sps, args)]
            key = b"".join(np.ascontiguousarray(a).tobytes() for a in args)
            if key not in seen:
                seen.add(key)
                out.append(args)

        # canonical: all-min, all-max, zeros, the full format range for unranged params
        for name in ("lo", "hi", "zero"):
            add([sp.pattern(name, rng) for sp in sps])
        if any(sp.wide for sp in sps):
            add([sp.pattern("fmax" if sp.wide else "hi", rng) for sp in sps])
            add([sp.pattern("fmin" if sp.wide else "lo", rng) for sp in sps])
        if scalar:
            d = len(sps)
            ends = [np.array([sp.box[0], sp.box[1]]) for sp in sps]
            if d <= 10:
                for m in range(2 ** d):
                    add([ends[j][(m >> j) & 1] for j in range(d)])
            else:
                for _ in range(256):
                    add([ends[j][rng.integers(0, 2)] for j in range(d)])
            # edges: one coordinate at a special value, the others at corners / midpoints
            grid = [np.unique(np.concatenate([[sp.box[0], sp.box[1], (sp.box[0] + sp.box[1]) / 2],
                                              sp.specials])) for sp in sps]
            for _ in range(4 * limit):
                add([g[rng.integers(0, len(g))] for g in grid])
                if len(out) >= 4 * limit:
                    break
            # equal arguments (cancellation in differences), slightly perturbed
            for _ in range(limit // 4 + 1):
                v = sps[0].random(rng) if sps else 0.0
                args = [np.array(float(v)) for _ in sps]
                pert = [sp.ulp_step(a, rng.integers(-2, 3)) for sp, a in zip(sps, args)]
                add(pert)
        else:
            for name in _TENSOR_PATTERNS:
                add([sp.pattern(name, rng) if sp.shape else sp.pattern(
                    ("lo", "hi", "specials")[rng.integers(0, 3)], rng) for sp in sps])
            for _ in range(limit):
                add([sp.pattern(_TENSOR_PATTERNS[rng.integers(0, len(_TENSOR_PATTERNS))], rng)
                     for sp in sps])
                if len(out) >= 2 * limit:
                    break
        if len(out) > limit:
            head = out[:5]
            rest = out[5:]
            pick = rng.choice(len(rest), size=max(0, limit - 5), replace=False)
            out = head + [rest[k] for k in sorted(pick)]
        return out

    def random_inputs(self, n: int) -> list[list[np.ndarray]]:
        return [[sp.random(self.rng) for sp in self.spaces] for _ in range(n)]

    def mutate(self, args: list[np.ndarray]) -> list[np.ndarray]:
        rng = self.rng
        sps = self.spaces
        out = [np.array(a, dtype=np.float64) for a in args]
        choices = [j for j, sp in enumerate(sps)]
        if not choices:
            return out
        # how many parameters to touch
        js = rng.choice(choices, size=min(len(choices), 1 + int(rng.integers(0, 2))),
                        replace=False)
        for j in js:
            sp = sps[j]
            x = out[j]
            mask = np.ones(sp.shape, dtype=bool) if not sp.shape else (
                rng.random(sp.shape) < max(1.0 / sp.size, rng.choice([0.05, 0.2, 1.0])))
            kind = rng.integers(0, 5)
            if sp.kind == "bool":
                y = np.where(mask, 1.0 - x, x)
            elif kind == 0:    # a few units in the last place
                y = sp.ulp_step(x, np.where(mask, rng.integers(-3, 4, sp.shape), 0))
            elif kind == 1:    # relative step
                s = 2.0 ** -float(rng.integers(1, 40))
                y = x * (1 + s * rng.standard_normal(sp.shape))
            elif kind == 2:    # absolute step relative to the box
                w = (sp.box[1] - sp.box[0]) * 2.0 ** -float(rng.integers(1, 30))
                y = x + w * rng.standard_normal(sp.shape)
            elif kind == 3:    # coordinate to an endpoint / special value
                y = np.where(mask, sp.special(rng), x)
            else:              # fresh values in part of the tensor
                y = np.where(mask, sp.random(rng), x)
            out[j] = sp.project(np.where(mask, y, x))
        return out


def _to_float_signed(r) -> float:
    if r == _FNAN:
        return math.nan
    if r == _FINF:
        return math.inf
    if r == _FNINF:
        return -math.inf
    return L.to_float(r)


def loader_code(fn) -> str:
    """Python code that loads ``fn`` again (for reproducers)."""
    mod = fn.module.ir.name or ""
    name = fn.ir.name
    if mod.startswith("stdlib/") and mod.endswith(".grd"):
        return f"ng.load_stdlib({mod[7:-4]!r})[{name!r}]"
    if mod.endswith(".fpcore"):
        return ("[m for b, m, r in __import__('numgrade.frontend.fpcore', fromlist=['x'])"
                f".load_benchmarks({mod!r}) if m is not None and b.ident == {name!r}][0][{name!r}]")
    if mod.endswith(".grd") or mod.endswith(".ir"):
        return f"ng.load({mod!r})[{name!r}]"
    return f"<module {mod!r}>[{name!r}]"


# =============================================================================================
# the entry point
def check(fn, dims: dict[str, int] | None = None, n_samples: int = 100, seed: int = 0,
          search: bool = True, *, corners: bool = True, max_corners: int | None = None,
          search_samples: int | None = None, batch_size: int = 256,
          time_limit: float | None = None, report=None, program: str | None = None,
          wide: bool = True, analyze_kwargs: dict | None = None,
          batch: bool = True, computed=None) -> list[OutputCheck]:
    """Check the analysis' claims for every output of ``fn`` on sampled inputs.

    ``dims`` binds symbolic sizes (missing ones get :func:`default_dims`); ``n_samples`` random
    samples, then up to ``max_corners`` corner/edge inputs (default ``max(32, n_samples // 2)``),
    then ``search_samples`` search evaluations (default ``n_samples // 2``). ``report`` may
    pass a precomputed ``fn.analyze(**dims)``. ``time_limit`` (seconds) stops early.
    ``batch=False`` evaluates every sample through the public API even where batching applies.
    ``computed``: the callable whose results are checked (default: ``fn`` itself, the reference
    backend), e.g. ``fn.compile("tvm")``, a fast kernel, against the same ideal values.
    Returns one :class:`OutputCheck` per output; a claim is checked where it is not None.
    """
    t0 = time.perf_counter()
    ir = fn.ir
    dims = default_dims(fn, given=dims)
    if report is None:
        report = fn.analyze(**dims, **(analyze_kwargs or {}))
    program = program or (fn.module.ir.name or "<module>")
    loader = loader_code(fn)
    checks = []
    for o, v in zip(report.outputs, ir.results):
        rng_ = tuple(o.range) if o.range is not None else None
        checks.append(OutputCheck(program, ir.name, o.index, o.format, o.abs_error, o.rel_error,
                                  rng_, o.reason, dict(dims)))
    for c in checks:   # a claim that is not a number, or negative, or an empty range
        bad = [b for b in (c.abs_bound, c.rel_bound) if b is not None and not (b >= 0)]
        if c.range is not None and not (c.range[0] <= c.range[1]):
            bad.append(c.range)
        if bad:
            c.violation_counts["invalid"] = len(bad)
            c.violations.append(Violation("invalid", program, ir.name, c.output, -1, {}, None,
                                          math.nan, "-", math.nan, bad[0], dict(dims), loader,
                                          ir.result_is_tuple))
    if all(c.skipped for c in checks):
        for c in checks:
            c.seconds = time.perf_counter() - t0
        return checks
    sess = _Session(fn, dims, seed, program, loader, wide, keep=3, computed=computed)
    sess.accs = [_Acc(c) for c in checks]
    if not batch:
        sess.runner.mode = "loop"
    deadline = None if time_limit is None else t0 + time_limit

    def out_of_time() -> bool:
        return deadline is not None and time.perf_counter() > deadline

    def run_all(inputs: list[list[np.ndarray]]) -> None:
        bs = batch_size if sess.runner.mode == "batch" else 1
        k = 0
        while k < len(inputs) and not out_of_time():
            bs = batch_size if sess.runner.mode == "batch" else 1
            sess.evaluate(inputs[k:k + bs])
            k += bs

    # (b) corners first: they are cheap and often the worst
    if corners:
        limit = max_corners if max_corners is not None else max(32, n_samples // 2)
        run_all(sess.corner_inputs(limit))
    # (a) random samples
    run_all(sess.random_inputs(n_samples))
    # (c) search from the worst inputs
    if search and not out_of_time():
        budget = search_samples if search_samples is not None else max(8, n_samples // 2)
        gens = max(1, min(12, budget // max(1, sess.pool_size)))
        per_gen = max(1, budget // gens)
        for _ in range(gens):
            if out_of_time() or not sess.pool:
                break
            parents = list(sess.pool)
            kids = []
            seeds = []
            for m in range(per_gen):
                # bias toward the best parent
                pi = min(int(sess.rng.exponential(1.5)), len(parents) - 1)
                kids.append(sess.mutate(parents[pi][1]))
                seeds.append(parents[pi][2] if (sess.runner.rand and sess.rng.random() < 0.5)
                             else sess.next_seed())
            bs = batch_size if sess.runner.mode == "batch" else 1
            for k in range(0, len(kids), bs):
                if out_of_time():
                    break
                sess.evaluate(kids[k:k + bs], seeds[k:k + bs])
    for c, acc in zip(checks, sess.accs):
        if c.abs_bound is not None:
            c.abs_ratio = _ratio(acc.max_abs, acc.abs_b)
        if c.rel_bound is not None and acc.max_rel is not None:
            c.rel_ratio = acc.max_rel / c.rel_bound if c.rel_bound > 0 else (
                math.inf if acc.max_rel > 0 else 0.0)
        c.seconds = time.perf_counter() - t0
        c.mode = sess.runner.mode
    return checks


# =============================================================================================
# reporting
def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return str(x)
    return f"{x:.3g}"


def markdown_table(checks: Iterable[OutputCheck], include_skipped: bool = True) -> str:
    """Program, function, output, samples, bound, worst measured, ratio, violations."""
    rows = ["| program | function | out | samples | abs bound | worst abs | abs ratio | "
            "rel bound | worst rel | rel ratio | range | violations |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for c in checks:
        if c.skipped and not include_skipped:
            continue
        viol = ", ".join(f"{k}: {n}" for k, n in sorted(c.violation_counts.items()) if n) or "0"
        if c.skipped:
            viol = "skipped (no bound)"
        if c.errors:
            viol += f"; {c.errors} run(s) failed"
        rng = "-" if c.range is None else f"[{_fmt(c.range[0])}, {_fmt(c.range[1])}]"
        rows.append(f"| {c.program} | {c.function} | {c.output} | {c.samples} | "
                    f"{_fmt(c.abs_bound)} | {_fmt(c.max_abs) if c.samples else '-'} | "
                    f"{_fmt(c.abs_ratio)} | {_fmt(c.rel_bound)} | {_fmt(c.max_rel)} | "
                    f"{_fmt(c.rel_ratio)} | {rng} | {viol} |")
    return "\n".join(rows)


def merge(a: OutputCheck, b: OutputCheck) -> OutputCheck:
    """Combine two checks of the same output (e.g. from two processes or two seeds)."""
    out = OutputCheck(**{k: getattr(a, k) for k in a.__dataclass_fields__})
    out.samples = a.samples + b.samples
    out.errors = a.errors + b.errors
    out.undefined = a.undefined + b.undefined
    if b.samples and (b.max_abs > a.max_abs or not a.samples):
        out.max_abs, out.worst_input, out.worst_seed = b.max_abs, b.worst_input, b.worst_seed
        out.worst_computed, out.worst_ideal = b.worst_computed, b.worst_ideal
    ratios = [r for r in (a.abs_ratio, b.abs_ratio) if r is not None]
    out.abs_ratio = max(ratios) if ratios else None
    if b.max_rel is not None and (a.max_rel is None or b.max_rel > a.max_rel):
        out.max_rel, out.worst_rel_input = b.max_rel, b.worst_rel_input
    ratios = [r for r in (a.rel_ratio, b.rel_ratio) if r is not None]
    out.rel_ratio = max(ratios) if ratios else None
    out.violation_counts = dict(a.violation_counts)
    for k, n in b.violation_counts.items():
        out.violation_counts[k] = out.violation_counts.get(k, 0) + n
    out.violations = list(a.violations) + list(b.violations)
    out.seconds = a.seconds + b.seconds
    return out


def violations(checks: Sequence[OutputCheck]) -> list[Violation]:
    return [v for c in checks for v in c.violations]
