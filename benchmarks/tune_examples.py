"""Worked examples of precision tuning (issue 5): flow-matching Euler step, RMSNorm and softmax
at absolute budgets 1e-2, 1e-3 and 1e-5 (plus looser ones where lower formats pay), the cost
saved against all-f32 on each target, a soundness-harness check of every tuned program, and the
time to tune a program of a few hundred operations.

    python benchmarks/tune_examples.py [--targets sm_90,cpu] [--samples 64]
"""

from __future__ import annotations

import argparse
import collections
import time

import numgrade as ng
from numgrade.api_tune import make_tuned
from numgrade.harness import check
from numgrade.passes.tune import Budget, TuneOptions, TuneSession

CASES = [
    ("flow_matching", "euler_cfg", {"B": 64, "D": 4096}),
    ("rmsnorm", "rmsnorm", {"T": 4096, "D": 4096}),
    ("softmax", "softmax", {"M": 4096, "N": 4096}),
]
BUDGETS = (1.0, 1e-1, 1e-2, 1e-3, 1e-5)
CHECK_DIMS = {"B": 2, "D": 64, "T": 2, "M": 2, "N": 64}


def big_program(n: int = 100) -> str:
    lines = ["fn big(x: f32[N] in [0.5, 1], y: f32[N] in [0.5, 1]) -> f32[N] {",
             "    let a0 = x * y + 0.25"]
    lines += [f"    let a{k} = (a{k - 1} * 0.5 + x) * 0.75 - y * 0.125" for k in range(1, n)]
    return "\n".join(lines + [f"    return a{n - 1}", "}"])


def formats_used(r) -> str:
    c = collections.Counter(ch.format for ch in r.choices)
    return " ".join(f"{k}x{v}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="sm_90,sm_100,cpu")
    ap.add_argument("--samples", type=int, default=64)
    a = ap.parse_args()
    print("| function | sizes | target | budget | bound (full analysis) | formats | cost (us) "
          "| all-f32 (us) | cost / all-f32 | measured worst (harness) | tune time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for prog, name, dims in CASES:
        mod = ng.load(f"stdlib:{prog}")
        fn = mod[name]
        for target in a.targets.split(","):
            t0 = time.perf_counter()
            session = TuneSession(mod.ir, fn.ir, dims, TuneOptions(target=target), "abs")
            setup = time.perf_counter() - t0
            for b in BUDGETS:
                t1 = time.perf_counter()
                r = session.tune(Budget("abs", b))
                secs = setup + time.perf_counter() - t1
                setup = 0.0
                size = ", ".join(f"{k}={v}" for k, v in dims.items())
                if r.status != "ok":
                    print(f"| {prog}.{name} | {size} | {target} | {b:g} | impossible (best "
                          f"{r.best_bounds[0]:.3g}) | - | - | {r.baseline_cost * 1e6:.4g} | - | "
                          f"- | {secs:.1f} |")
                    continue
                measured = "-"
                if a.samples and target == a.targets.split(",")[0]:
                    tuned = make_tuned(fn, r)
                    cd = {k: CHECK_DIMS[k] for k in dims}
                    checks = check(tuned, cd, n_samples=a.samples, seed=0)
                    worst = max(c.max_abs for c in checks)
                    bad = sum(c.n_violations for c in checks)
                    measured = f"{worst:.3g}" + (f" ({bad} VIOLATIONS)" if bad else "")
                print(f"| {prog}.{name} | {size} | {target} | {b:g} | {r.bound:.3g} | "
                      f"{formats_used(r)} | {r.cost * 1e6:.4g} | {r.baseline_cost * 1e6:.4g} | "
                      f"{r.cost / r.baseline_cost:.3f} | {measured} | {secs:.1f} |", flush=True)
    mod = ng.compile_source(big_program())
    t0 = time.perf_counter()
    session = TuneSession(mod.ir, mod.big.ir, {"N": 1 << 20}, TuneOptions(), "abs")
    r = session.tune(Budget("abs", 1e-3))
    print(f"\nlarge program: {len(session.ops)} tunable operations, tuned for abs:1e-3 in "
          f"{time.perf_counter() - t0:.1f} s ({r.analyses} analyses, {session.model.method}; "
          f"{r.solver}); bound {r.bound:.3g}, cost {r.cost / r.baseline_cost:.3f}x all-f32, "
          f"formats {formats_used(r)}")


if __name__ == "__main__":
    main()
