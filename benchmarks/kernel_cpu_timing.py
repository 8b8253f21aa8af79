"""CPU timings: numgrade's TVM kernels (fast and exact contracts) against torch eager and
torch.compile, on the same recipes.

    python benchmarks/kernel_cpu_timing.py [--rows 4096] [--cols 4096] [--reps 7]
                                           [--no-compile] [--only softmax,nvfp4] [--tune]

Each program runs on one f32 [rows, cols] input (standard normal; the norms' weight and bias
[cols]). Every time is end to end from the caller's side, torch tensor in and torch tensors out
for every peer (numgrade through ``f.compile("tvm")(x)``, so its boundary conversion is
included), after one warm-up call (the build). The peers are timed interleaved, one call of each
per round, and the median of ``--reps`` rounds is reported, so that a background load hits them
alike. The torch peers are written here as the same recipes (each .grd's order of operations,
f32 throughout; e4m3 through ``.to(torch.float8_e4m3fn)`` after the clamp, e2m1 by an RNE
expression); torch.compile compiles those same functions (inductor, CPU) and is skipped, with
the reason printed, where it fails.

Checks: ``fast vs exact`` is the largest absolute difference between the fast contract's outputs
and the exact contract's on the full input (0 where the fast program has no sum or math function
to reorder); ``exact = ref`` says the exact contract is bit-identical to the reference
interpreter on a small input (``--check-rows`` x ``--check-cols``); ``torch vs exact`` is the
largest absolute difference between the torch recipe and numgrade exact (a check that the peer
computes the same thing).

``--tune`` adds numgrade fast with ``compile("tvm", tune=True)`` as one more peer: it tunes in
its warm-up call (on the full input, into a fresh cache folder), and the chosen knobs are
printed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import numgrade as ng

FLT_MAX = 3.4028234663852886e38


# ---------------------------------------------------------------------------------------------
# torch recipes (f32 throughout, in the order of operations of the .grd files)
def _torch_recipes():
    import torch

    f32 = torch.float32
    sixth = torch.tensor(1.0 / 6.0, dtype=f32)  # f32(1/6), as the .grd rounds the constant

    def rdiv(c, t):  # c / t as one f32 division (torch's ``c / t`` is reciprocal(t) * c)
        return torch.div(torch.full_like(t, c), t)

    def e4m3(v):  # RNE, saturating at 448 (the cast itself does not saturate)
        return v.clamp(-448.0, 448.0).to(torch.float8_e4m3fn)

    def e2m1(v):  # RNE to {0, .5, 1, 1.5, 2, 3, 4, 6}, saturating at 6; exact values as f32
        a = v.abs().clamp(max=6.0)
        step = torch.where(a < 2.0, 0.5, torch.where(a < 4.0, 1.0, 2.0))
        return torch.copysign(torch.round(a / step) * step, v)  # torch.round: half to even

    def softmax(x):
        return torch.softmax(x, dim=-1)

    def rms_normalize(x):
        return x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + 1e-6)

    def layernorm(x, w, b):
        mu = x.mean(dim=-1, keepdim=True)
        xc = x - mu
        var = (xc * xc).mean(dim=-1, keepdim=True)
        return xc * torch.rsqrt(var + 1e-5) * w + b

    def fp8_scale(amax):
        s = rdiv(448.0, amax)
        bad = (amax == 0) | (amax > FLT_MAX) | torch.isnan(s)
        return torch.where(bad, torch.ones_like(s), s.clamp(max=FLT_MAX))

    def fp8_per_tensor(x):
        scale = fp8_scale(x.abs().amax())
        return e4m3(x * scale), rdiv(1.0, scale)

    def fp8_1x128(x):
        m, n = x.shape
        xb = x.view(m, n // 128, 128)
        scale = fp8_scale(xb.abs().amax(dim=-1))
        return e4m3(xb * scale[:, :, None]).view(m, n), rdiv(1.0, scale)

    def nvfp4(x):  # Transformer Engine's fp32 reference quantiser, step for step
        m, n = x.shape
        xb = x.view(m, n // 16, 16)
        amax_b = xb.abs().amax(dim=-1)
        s = rdiv(2688.0, amax_b.amax()).clamp(max=FLT_MAX)
        s_enc = torch.where(s == 0, torch.ones_like(s), s)
        s_dec = rdiv(1.0, s_enc)
        mult = s_enc * sixth
        sb = e4m3(amax_b * mult)
        enc = rdiv(1.0, sb.to(f32) * s_dec).clamp(max=FLT_MAX)
        return e2m1(xb * enc[:, :, None]).view(m, n), sb, s_dec

    def mxfp4(x):  # scale = 2^(floor(log2 amax) - 2) (e8m0, rounded down), q = e2m1(x / scale)
        m, n = x.shape
        xb = x.view(m, n // 32, 32)
        amax = xb.abs().amax(dim=-1)
        a = torch.where(amax > 0, amax, torch.full_like(amax, 1.401298464324817e-45))
        scale = torch.ldexp(torch.ones_like(a), torch.frexp(a).exponent - 3)
        return e2m1(xb / scale[:, :, None]).view(m, n), scale

    def four_over_six(x):
        m, n = x.shape
        xb = x.view(m, n // 16, 16)
        amax_b = xb.abs().amax(dim=-1)
        s = rdiv(1536.0, amax_b.amax()).clamp(max=FLT_MAX)
        s_enc = torch.where(s == 0, torch.ones_like(s), s)
        s_dec = rdiv(1.0, s_enc)
        t = amax_b * (s_enc * sixth)
        s6, s4 = e4m3(t), e4m3(t * 1.5)

        def candidate(sc):
            sf = sc.to(f32)
            enc = rdiv(1.0, sf * s_dec).clamp(max=FLT_MAX)
            q = e2m1(xb * enc[:, :, None])
            d = q * sf[:, :, None] * s_dec - xb
            err = d[..., 0] * d[..., 0]  # f32, strictly left to right over the block
            for k in range(1, 16):
                err = err + d[..., k] * d[..., k]
            return q, err

        q6, err6 = candidate(s6)
        q4, err4 = candidate(s4)
        use4 = err4 < err6
        q = torch.where(use4[:, :, None], q4, q6).view(m, n)
        sb = torch.where(use4, s4.to(f32), s6.to(f32)).to(torch.float8_e4m3fn)
        return q, sb, s_dec, use4

    return {"softmax": softmax, "rms_normalize": rms_normalize, "layernorm": layernorm,
            "fp8_per_tensor": fp8_per_tensor, "fp8_1x128": fp8_1x128, "nvfp4": nvfp4,
            "mxfp4": mxfp4, "four_over_six": four_over_six}


# (label, stdlib program, function, torch recipe, takes weight and bias)
CASES = [
    ("softmax", "softmax", "softmax", "softmax", False),
    ("RMSNorm", "rmsnorm", "rms_normalize", "rms_normalize", False),
    ("LayerNorm", "layernorm", "layernorm", "layernorm", True),
    ("FP8 per-tensor", "fp8", "quantize_per_tensor", "fp8_per_tensor", False),
    ("FP8 1x128", "fp8", "quantize_block_1x128", "fp8_1x128", False),
    ("NVFP4", "nvfp4", "quantize", "nvfp4", False),
    ("MXFP4", "mxfp4", "quantize", "mxfp4", False),
    ("Four Over Six", "four_over_six", "quantize", "four_over_six", False),
]


def _tuple(r) -> tuple:
    return r if isinstance(r, tuple) else (r,)


def _f64(t) -> np.ndarray:
    import torch

    if isinstance(t, torch.Tensor):
        return t.detach().to(torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _max_abs_diff(a, b) -> float:
    worst = 0.0
    for x, y in zip(_tuple(a), _tuple(b)):
        x, y = _f64(x), _f64(y)
        both_nan = np.isnan(x) & np.isnan(y)
        d = np.where(both_nan, 0.0, np.abs(x - y))
        if d.size:
            worst = max(worst, float(np.nanmax(np.where(np.isnan(d), np.inf, d))))
    return worst


def _bit_equal(a, b) -> bool:
    for x, y in zip(_tuple(a), _tuple(b)):
        x, y = _f64(x), _f64(y)
        if x.shape != y.shape or not np.array_equal(x, y, equal_nan=True) \
                or not np.array_equal(np.signbit(x), np.signbit(y)):
            return False
    return True


def _inputs(rows: int, cols: int, with_affine: bool, seed: int = 0):
    import torch

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.standard_normal((rows, cols)).astype(np.float32))
    if not with_affine:
        return (x,)
    w = torch.from_numpy(rng.standard_normal(cols).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal(cols).astype(np.float32))
    return (x, w, b)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--check-rows", type=int, default=64)
    ap.add_argument("--check-cols", type=int, default=256)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--only", default="", help="comma-separated labels or programs")
    ap.add_argument("--tune", action="store_true", help="also time compile('tvm', tune=True)")
    a = ap.parse_args()
    if a.tune:
        import os
        import tempfile
        os.environ["NUMGRADE_CACHE"] = tempfile.mkdtemp(prefix="numgrade-tune-")

    recipes = _torch_recipes()
    cases = [c for c in CASES if not a.only or any(o.strip().lower() in
                                                   (c[0].lower(), c[1], c[3])
                                                   for o in a.only.split(","))]
    compile_note = ""
    if a.no_compile:
        compile_note = "torch.compile: skipped (--no-compile)"
    print(f"# input f32 [{a.rows}, {a.cols}]; median of {a.reps} interleaved rounds; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for label, prog, name, recipe, affine in cases:
        f = ng.load_stdlib(prog)[name]
        fast, exact = f.compile("tvm"), f.compile("tvm", exact=True)
        eager = recipes[recipe]
        # the exact contract against the reference interpreter, on a small input
        small = _inputs(a.check_rows, a.check_cols, affine, seed=1)
        exact_ok = _bit_equal(exact(*small), f(*small))
        args = _inputs(a.rows, a.cols, affine)
        peers: dict[str, Callable] = {"fast": lambda: fast(*args),
                                      "exact": lambda: exact(*args),
                                      "eager": lambda: eager(*args)}
        if a.tune:
            tuned = f.compile("tvm", tune=True)
            peers["tuned"] = lambda: tuned(*args)
        outs = {k: fn() for k, fn in peers.items()}  # warm-up (and the builds, the tuning)
        if a.tune:
            for rec in tuned.schedule.values():
                ms = ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in rec["seconds"].items())
                print(f"# {label}: tuned {rec['choice']} ({ms or 'one variant'})")
        compiled_why = compile_note
        if not a.no_compile:
            try:
                comp = torch.compile(eager)
                outs["compile"] = comp(*args)
                peers["compile"] = lambda: comp(*args)
            except Exception as ex:  # noqa: BLE001 - reported, the rest still runs
                compiled_why = f"torch.compile failed: {type(ex).__name__}: {str(ex)[:300]}"
        times: dict[str, list[float]] = {k: [] for k in peers}
        for _ in range(a.reps):
            for k, fn in peers.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((label, med, _max_abs_diff(outs["fast"], outs["exact"]), exact_ok,
                     _max_abs_diff(outs["eager"], outs["exact"]), compiled_why))
        if compiled_why and compiled_why != compile_note:
            print(f"# {label}: {compiled_why}")
    if compile_note:
        print(f"# {compile_note}")
    tcol = " numgrade tuned (s) | tuned / eager |" if a.tune else ""
    print("| program | numgrade fast (s) | numgrade exact (s) | torch eager (s) | "
          f"torch.compile (s) | fast / eager |{tcol} fast vs exact | exact = ref | "
          "torch vs exact |")
    print("|---|---|---|---|---|---|" + ("---|---|" if a.tune else "") + "---|---|---|")
    for label, med, d_fast, exact_ok, d_torch, _ in rows:
        comp = f"{med['compile']:.4f}" if "compile" in med else "-"
        tv = f" {med['tuned']:.4f} | {med['tuned'] / med['eager']:.2f}x |" if a.tune else ""
        print(f"| {label} | {med['fast']:.4f} | {med['exact']:.4f} | {med['eager']:.4f} | "
              f"{comp} | {med['fast'] / med['eager']:.2f}x |{tv} {d_fast:.3g} | {exact_ok} | "
              f"{d_torch:.3g} |")


if __name__ == "__main__":
    main()
