"""CPU timings of the kernel backends against the reference interpreter (issue 4).

    python benchmarks/kernel_cpu_timing.py [--rows 4096] [--cols 4096] [--backends tvm,kernel-interp]

Each program runs on an f32 [rows, cols] input; the time is the median of 5 calls after one
warm-up call (the build), end to end through `f.compile(backend)(x)`, so it includes the boundary
conversion and the storage encode/decode. Results are checked bit for bit against the reference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import numgrade as ng

CASES = [("rmsnorm", "rms_normalize"), ("softmax", "softmax"), ("nvfp4", "quantize")]


def _median(fn, reps: int = 5) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--backends", default="tvm,kernel-interp")
    a = ap.parse_args()
    x = np.random.default_rng(0).standard_normal((a.rows, a.cols)).astype(np.float32)
    print("| program | backend | seconds | vs reference | bit-exact |")
    print("|---|---|---|---|---|")
    for prog, name in CASES:
        f = ng.load_stdlib(prog)[name]
        want = f(x)
        t_ref = _median(lambda: f(x), reps=3)
        print(f"| {prog}.{name} | reference | {t_ref:.3f} | 1.00x | - |")
        for b in a.backends.split(","):
            k = f.compile(b)
            got = k(x)
            ws = want if isinstance(want, tuple) else (want,)
            gs = got if isinstance(got, tuple) else (got,)
            exact = all(np.array_equal(np.asarray(w, np.float64), np.asarray(g, np.float64),
                                       equal_nan=True) for w, g in zip(ws, gs))
            t = _median(lambda: k(x))
            print(f"| {prog}.{name} | {b} | {t:.3f} | {t_ref / t:.2f}x | {exact} |")


if __name__ == "__main__":
    main()
