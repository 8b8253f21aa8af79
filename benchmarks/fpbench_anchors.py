"""Benchmark: absolute error bounds on the 16 FPBench anchor benchmarks (ANCHORS.md section 1).

For each benchmark: numgrade's sound bound, the published FPTaylor / Gappa / Daisy / Fluctuat
bounds, the ratio to FPTaylor, the analysis time, and the worst error measured on sampled inputs
(reference backend against the 160-bit ideal program), which must never exceed the bound.

Assumptions: binary64, round to nearest even, inputs are binary64 values in the :pre box, the
evaluation order is the one written in the FPCore (no reassociation, no FMA contraction).

    python benchmarks/fpbench_anchors.py [--samples 2000] [--markdown] [--work UNITS]

The analysis budget counts work (box-node evaluations), not seconds: the bounds are the same on
any machine under any load; only the time columns vary.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from pathlib import Path

import mpmath
import numpy as np

ANCHORS = {  # name: (FPTaylor, Gappa+hints, Daisy, Fluctuat)
    "doppler1": (1.218e-13, 1.61e-13, 4.19e-13, 3.90e-13),
    "doppler2": (2.226e-13, 2.86e-13, 1.05e-12, 9.75e-13),
    "doppler3": (6.63e-14, 8.68e-14, 1.68e-13, 1.57e-13),
    "rigidBody1": (2.949e-13, 2.95e-13, 2.95e-13, 3.22e-13),
    "rigidBody2": (3.607e-11, 3.61e-11, 3.61e-11, 3.65e-11),
    "turbine1": (1.67e-14, 2.41e-14, 8.65e-14, 9.20e-14),
    "turbine2": (2.00e-14, 3.32e-14, 1.31e-13, 1.29e-13),
    "turbine3": (9.57e-15, 0.352, 6.23e-14, 6.99e-14),
    "verhulst": (2.47e-16, 2.87e-16, 3.72e-16, 5.52e-16),
    "predatorPrey": (1.59e-16, 1.67e-16, 1.75e-16, 2.49e-16),
    "carbonGas": (4.96e-9, 6.00e-9, 3.91e-8, 4.51e-8),
    "sine": (4.43e-16, 6.91e-16, 1.13e-15, 7.97e-16),
    "sqroot": (5.02e-16, 5.35e-16, 5.71e-16, 6.84e-16),
    "jetEngine": (1.03e-11, 4426, None, 4.08e-8),
    "kepler2": (1.58e-12, 2.38e-12, 2.46e-12, None),
    "himmilbeau": (1.00e-12, 8.51e-13, 2.33e-12, None),
}
FILES = ["rosa", "fptaylor-real2float", "fptaylor-extra"]


def suite_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "fpbench"


def load_anchor_functions():
    from numgrade.frontend.fpcore import load_benchmarks

    found = {}
    for f in FILES:
        for bench, mod, _reason in load_benchmarks(suite_dir() / f"{f}.fpcore"):
            if bench.name in ANCHORS and bench.name not in found and mod is not None:
                found[bench.name] = mod
    return found


def measure(mod, n: int, seed: int) -> float:
    from numgrade.backends.reference import IdealDomain, Interpreter

    fn = mod.ir.functions[mod.functions[0]]
    lo = np.array([p.range[0] for p in fn.params])
    hi = np.array([p.range[1] for p in fn.params])
    rng = np.random.default_rng(seed)
    pts = rng.uniform(lo, hi, size=(n, len(lo)))
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    pts = np.concatenate([pts, corners])
    ref, ideal = Interpreter(mod.ir), Interpreter(mod.ir, IdealDomain())
    worst = 0.0
    for row in pts:
        args = [np.float64(v) for v in row]
        c = ref.run(fn.name, args)[0]
        i = ideal.run(fn.name, args)[0]
        e = abs(mpmath.mpf(float(c)) - i[()])
        worst = max(worst, float(e))
    return worst


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--work", type=int, default=None,
                    help="branch and bound budget in work units (default: the analysis default)")
    a = ap.parse_args()
    from numgrade.passes import scalar_error as SE

    work = a.work if a.work is not None else SE.DEFAULT_WORK

    mods = load_anchor_functions()
    rows = []
    violations = 0
    for name, (fpt, gappa, daisy, fluct) in ANCHORS.items():
        mod = mods[name]
        fn = mod.ir.functions[mod.functions[0]]
        t0, c0 = time.perf_counter(), time.process_time()
        b = SE.analyse(SE.build(fn, mod.ir), 0, work=work)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        worst = measure(mod, a.samples, 0) if a.samples else float("nan")
        violations += worst > b.abs_error
        rows.append((name, b.abs_error, fpt, gappa, daisy, b.abs_error / fpt, dt, worst, dc))
    head = ("| benchmark | numgrade | FPTaylor | Gappa+hints | Daisy | ratio to FPTaylor | time (s) "
            f"| cpu (s) | worst measured ({a.samples} samples + corners) |")
    print(head)
    print("|" + "---|" * 9)
    fmt = lambda x: "-" if x is None else f"{x:.3g}"  # noqa: E731
    for r in rows:
        print(f"| {r[0]} | {r[1]:.4g} | {fmt(r[2])} | {fmt(r[3])} | {fmt(r[4])} | {r[5]:.3f} "
              f"| {r[6]:.3f} | {r[8]:.3f} | {r[7]:.3g} |")
    ratios = [r[5] for r in rows]
    print(f"\nmax ratio {max(ratios):.3f}, at most FPTaylor's on {sum(x <= 1 for x in ratios)}/16, "
          f"max time {max(r[6] for r in rows):.3f} s (cpu {max(r[8] for r in rows):.3f} s), "
          f"violations {violations}, "
          f"work budget {work} units "
          f"({platform.machine()}, Python {platform.python_version()})")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
