"""Kernel bandwidth on a GPU: numgrade's backends against a device copy, torch eager and
torch.compile (issue 4, item 8).

    python benchmarks/kernel_bandwidth.py [--gb 1.0] [--backends triton,cuda,tvm]

For each program (NVFP4 quantise, FP8 per-tensor quantise, RMSNorm, softmax) at a size whose
input is --gb gigabytes, it reports the achieved bandwidth (bytes read + written by the fused
kernels, from the fusion cost model, over the median time of 20 runs after warm-up) and its
ratio to a device-to-device copy of the same number of bytes. Needs CUDA; without it the script
says so and exits 0 (CI runs `--dry-run`, which lowers and emits every program without timing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

import numgrade as ng

CASES = [("nvfp4", "quantize"), ("fp8", "quantize_per_tensor"), ("rmsnorm", "rms_normalize"),
         ("softmax", "softmax")]


def _bytes(f, env) -> int:
    return int(f.fusion().bytes_fused.evaluate(env))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--backends", default="triton,cuda,tvm")
    ap.add_argument("--dry-run", action="store_true")
    a = ap.parse_args()
    rows = []
    for prog, fn in CASES:
        mod = ng.load_stdlib(prog)
        if fn not in mod:
            print(f"skip {prog}.{fn}: no such function")
            continue
        f = mod[fn]
        if a.dry_run:
            for b in a.backends.split(","):
                try:
                    src = f.emit(b)
                    print(f"{prog}.{fn} [{b}]: {len(f.kernels().kernels)} kernel(s), "
                          f"{len(src.splitlines())} lines emitted")
                except ng.GradeError as ex:
                    print(f"{prog}.{fn} [{b}]: {ex}")
            continue
        try:
            import torch
        except ImportError:
            print("torch is not installed")
            return 0
        if not torch.cuda.is_available():
            print("no CUDA device: nothing measured (see BENCHMARKS.md)")
            return 0
        cols = 4096
        rows_ = max(1, int(a.gb * 2**30 / 4 / cols))
        x = torch.randn(rows_, cols, device="cuda")
        env = {"M": rows_, "N": cols, "T": rows_, "D": cols}
        nbytes = _bytes(f, env)
        copy_src = torch.empty(nbytes // 8, dtype=torch.float32, device="cuda")
        copy_dst = torch.empty_like(copy_src)
        copy_t = _time(lambda: copy_dst.copy_(copy_src))
        copy_bw = nbytes / copy_t
        for b in a.backends.split(","):
            try:
                k = f.compile(b)
                k(x.cpu().numpy())  # warm-up / build
                t = _time(lambda: k(x))
                rows.append((f"{prog}.{fn}", b, nbytes / t / 1e9, nbytes / t / copy_bw))
            except ng.GradeError as ex:
                rows.append((f"{prog}.{fn}", b, float("nan"), float("nan")))
                print(f"{prog}.{fn} [{b}]: {ex}", file=sys.stderr)
    for r in rows:
        print(f"{r[0]:24s} {r[1]:8s} {r[2]:8.1f} GB/s  {100 * r[3]:5.1f}% of copy")
    return 0


def _time(fn, reps: int = 20) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


if __name__ == "__main__":
    sys.exit(main())
