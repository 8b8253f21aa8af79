"""Every f32 input through numgrade's own vectorisable ``exp`` (kernels/math_f32.py), as the TVM
backend compiles it, against float64 ``exp``.

    python benchmarks/exp_f32_exhaustive.py [--stride 1] [--chunk 16777216]

The rounding model assumes ``|fl(exp(x)) - exp(x)| <= 4u exp(x) + 4 eta`` for an f32 ``exp``
(u = 2^-24, eta = 2^-150: 2 ulp, rounding_model.MATH_ULP_FACTOR). The script reports the
largest ``|y - exp(x)| / (2u exp(x) + 2 eta)`` (so the model allows 2), the number of inputs
beyond the model, results that are infinite where exp(x) < FLT_MAX or finite where it is not,
and NaN handling. float64 ``exp`` is within 1 ulp of float64 (about 1e-16 relative), far
below the f32 errors measured. ``--stride k`` checks every k-th bit pattern (the CI sample).
Exit status 1 if any input is beyond the model.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import numgrade as ng

FLT_MAX = float(np.finfo(np.float32).max)
U, ETA = 2.0 ** -24, 2.0 ** -150


def check(stride: int = 1, chunk: int = 1 << 24) -> dict:
    f = ng.compile_source("fn f(x: f32[N]) -> f32[N] {\n    return exp(x)\n}\n").f
    kernel = f.compile("tvm")
    assert "T.nearbyint" in f.emit("tvm"), "the TVM kernel does not use numgrade's exp"
    worst, worst_x, beyond, wrong_inf, wrong_nan, n = 0.0, None, 0, 0, 0, 0
    step = chunk * stride
    for start in range(0, 1 << 32, step):
        bits = np.arange(start, min(start + step, 1 << 32), stride, dtype=np.uint64)
        x = bits.astype(np.uint32).view(np.float32)
        with np.errstate(all="ignore"):
            y = np.asarray(kernel(x), np.float64)
            e = np.exp(x.astype(np.float64))
            nan = np.isnan(x)
            wrong_nan += int(np.sum(nan != np.isnan(y)))
            fin = ~nan & (e < FLT_MAX)
            wrong_inf += int(np.sum(fin & ~np.isfinite(y)))
            wrong_inf += int(np.sum(~nan & (e > FLT_MAX * (1 + U)) & np.isfinite(y)))
            err = np.where(fin, np.abs(y - e), 0.0)
            ratio = np.where(fin, err / (2 * U * e + 2 * ETA), 0.0)
        beyond += int(np.sum(ratio > 2.0))
        k = int(np.argmax(ratio))
        if ratio[k] > worst:
            worst, worst_x = float(ratio[k]), float(x[k])
        n += x.size
    return {"inputs": n, "worst": worst, "worst_x": worst_x, "beyond_model": beyond,
            "wrong_overflow": wrong_inf, "wrong_nan": wrong_nan}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=1 << 24)
    a = ap.parse_args()
    t0 = time.perf_counter()
    r = check(a.stride, a.chunk)
    print(f"f32 inputs checked: {r['inputs']} (stride {a.stride}) in "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"largest |y - exp(x)| / (2u exp(x) + 2 eta): {r['worst']:.4f} at x = "
          f"{r['worst_x']!r} (the model allows 2)")
    print(f"beyond the model: {r['beyond_model']}; wrong overflow: {r['wrong_overflow']}; "
          f"wrong NaN: {r['wrong_nan']}")
    return 0 if r["beyond_model"] == 0 and r["wrong_overflow"] == 0 and \
        r["wrong_nan"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
