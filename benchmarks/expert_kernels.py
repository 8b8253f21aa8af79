"""Hand-written ("expert") Triton kernels of numgrade's stdlib recipes, for benchmarks/sass_compare.py.

Each kernel follows the arithmetic of its recipe in numgrade/stdlib/*.grd, written the way an
experienced Triton author would: one program per row (or per group of quantisation blocks), a
power-of-two block covering it, ``tl.max``/``tl.sum``, native f32, ``tl.exp``/``tl.rsqrt``, e4m3
via ``.to(tl.float8e4nv)`` (RNE, saturating) and e2m1 by bit manipulation (RNE).  Per-tensor
amax is a grid-wide ``tl.atomic_max`` (kernel ``amax_kernel``, the output must start at 0).

Outputs have numgrade's storage layout (one uint8 code per e2m1/e4m3/e8m0 value, row-major),
so ``run(recipe, x)`` returns the same decoded values as ``numgrade``'s ``f(x)``.

Deviations an expert takes on purpose (fast contract): ``tl.exp``/``e / s``/``tl.rsqrt`` are
the approximate hardware forms; FMA contraction is on (Triton's usual default).  The scale
divisions of the quantisers are per block, so they use ``tl.math.div_rn`` (IEEE, like CUDA's
``/`` in Transformer Engine), which keeps the codes identical to the reference.

``specs(recipe, M, N)`` describes, per kernel, what sass_compare.py compiles: signature,
constexprs, integer arguments (specialised like Triton's JIT), grid and warps.
"""

from __future__ import annotations

import triton
import triton.language as tl

FLT_MAX = 3.4028234663852886e38


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _row_warps(block: int) -> int:  # the heuristic of Triton's fused-softmax tutorial
    return 16 if block >= 4096 else 8 if block >= 2048 else 4


# ---- row-wise normalisations ----------------------------------------------------------------
@triton.jit
def softmax_kernel(x_ptr, y_ptr, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + row * N + offs, mask=mask, other=-float("inf"))
    e = tl.exp(x - tl.max(x, axis=0))
    s = tl.sum(e, axis=0)
    tl.store(y_ptr + row * N + offs, e / s, mask=mask)


@triton.jit
def rmsnorm_kernel(x_ptr, w_ptr, y_ptr, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + row * N + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    r = tl.rsqrt(tl.sum(x * x, axis=0) / N + 1e-6)
    tl.store(y_ptr + row * N + offs, x * r * w, mask=mask)


@triton.jit
def layernorm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, N, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < N
    x = tl.load(x_ptr + row * N + offs, mask=mask, other=0.0)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0)
    xc = tl.where(mask, x - tl.sum(x, axis=0) / N, 0.0)
    r = tl.rsqrt(tl.sum(xc * xc, axis=0) / N + 1e-5)
    tl.store(y_ptr + row * N + offs, xc * r * w + b, mask=mask)


# ---- quantisers -----------------------------------------------------------------------------
@triton.jit
def amax_kernel(x_ptr, amax_ptr, numel, BLOCK: tl.constexpr):
    """max |x| over the whole tensor: one block per program, one float atomic max each."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < numel, other=0.0)
    tl.atomic_max(amax_ptr, tl.max(tl.abs(x), axis=0), sem="relaxed")


@triton.jit
def _fp8_scale(amax):
    """Transformer Engine's compute_scale_from_amax (fp8.grd): 448 / amax, guarded."""
    s = tl.math.div_rn(tl.full(amax.shape, 448.0, tl.float32), amax)
    bad = (amax == 0.0) | (amax > 3.4028234663852886e38) | (s != s)
    return tl.where(bad, 1.0, tl.minimum(s, 3.4028234663852886e38))


@triton.jit
def fp8_quant_tensor_kernel(x_ptr, amax_ptr, q_ptr, inv_ptr, numel, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    scale = _fp8_scale(tl.load(amax_ptr))
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    q = tl.clamp(x * scale, -448.0, 448.0).to(tl.float8e4nv)
    tl.store(q_ptr + offs, q.to(tl.uint8, bitcast=True), mask=mask)
    if pid == 0:
        tl.store(inv_ptr, tl.math.div_rn(tl.full((), 1.0, tl.float32), scale))


@triton.jit
def fp8_quant_1x128_kernel(x_ptr, q_ptr, inv_ptr, N, G: tl.constexpr):
    """Program (row, g) quantises G consecutive 1x128 blocks of a row (N % (128 G) == 0)."""
    row = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1) * G + tl.arange(0, G)
    offs = row * N + blk[:, None] * 128 + tl.arange(0, 128)[None, :]
    x = tl.load(x_ptr + offs)
    scale = _fp8_scale(tl.max(tl.abs(x), axis=1))
    q = tl.clamp(x * scale[:, None], -448.0, 448.0).to(tl.float8e4nv)
    tl.store(q_ptr + offs, q.to(tl.uint8, bitcast=True))
    tl.store(inv_ptr + row * (N // 128) + blk, tl.math.div_rn(tl.full((G,), 1.0, tl.float32), scale))


@triton.jit
def _e2m1_rne(v):
    """e2m1 code (sign << 3 | magnitude) of v in [-6, 6], round to nearest even, by bits."""
    sign = ((v.to(tl.uint32, bitcast=True) >> 28) & 8)
    a = tl.abs(v)
    ab = a.to(tl.uint32, bitcast=True)
    r = ab + 0x1FFFFF + ((ab >> 22) & 1)                  # RNE to one mantissa bit
    normal = (r >> 22) - 252                              # ((exp - 126) << 1) | mantissa
    sub = (a * 2.0 + 8388608.0).to(tl.uint32, bitcast=True) - 0x4B000000  # RNE(2a) below 1
    return (tl.where(a < 1.0, sub, normal) | sign).to(tl.uint8)


@triton.jit
def nvfp4_quant_kernel(x_ptr, amax_ptr, q_ptr, s_ptr, sdec_ptr, N, G: tl.constexpr):
    """Program (row, g): G 1x16 blocks; Transformer Engine's order of operations (nvfp4.grd)."""
    row = tl.program_id(0).to(tl.int64)
    grp = tl.program_id(1)
    s_enc = tl.minimum(tl.math.div_rn(tl.full((), 2688.0, tl.float32), tl.load(amax_ptr)),
                       3.4028234663852886e38)
    s_enc = tl.where(s_enc == 0.0, 1.0, s_enc)
    s_dec = tl.math.div_rn(tl.full((), 1.0, tl.float32), s_enc)
    mult = s_enc * 0.16666666666666666                   # f32(1/6), one f32 multiply
    blk = grp * G + tl.arange(0, G)
    offs = row * N + blk[:, None] * 16 + tl.arange(0, 16)[None, :]
    x = tl.load(x_ptr + offs)
    s = tl.clamp(tl.max(tl.abs(x), axis=1) * mult, -448.0, 448.0).to(tl.float8e4nv)
    enc = tl.minimum(tl.math.div_rn(tl.full((G,), 1.0, tl.float32), s.to(tl.float32) * s_dec),
                     3.4028234663852886e38)
    tl.store(q_ptr + offs, _e2m1_rne(tl.clamp(x * enc[:, None], -6.0, 6.0)))
    tl.store(s_ptr + row * (N // 16) + blk, s.to(tl.uint8, bitcast=True))
    if (row == 0) & (grp == 0):
        tl.store(sdec_ptr, s_dec)


@triton.jit
def mxfp4_quant_kernel(x_ptr, q_ptr, s_ptr, N, G: tl.constexpr):
    """Program (row, g): G 1x32 blocks; scale 2^(floor(log2 amax) - 2) clamped to 2^-127."""
    row = tl.program_id(0).to(tl.int64)
    blk = tl.program_id(1) * G + tl.arange(0, G)
    offs = row * N + blk[:, None] * 32 + tl.arange(0, 32)[None, :]
    x = tl.load(x_ptr + offs)
    amax = tl.max(tl.abs(x), axis=1)
    code = tl.maximum(((amax.to(tl.uint32, bitcast=True) >> 23) & 0xFF).to(tl.int32) - 2, 0)
    inv = ((254 - code) << 23).to(tl.float32, bitcast=True)   # 2^-k: x / 2^k, exactly
    tl.store(q_ptr + offs, _e2m1_rne(tl.clamp(x * inv[:, None], -6.0, 6.0)))
    tl.store(s_ptr + row * (N // 32) + blk, code.to(tl.uint8))


# ---- what sass_compare.py compiles, and how --check runs them ---------------------------------
def _k(name, sig, grid, warps, consts=None, ints=None):
    return {"name": name, "signature": sig, "constexprs": consts or {}, "ints": ints or {},
            "grid": grid, "num_warps": warps}


def specs(recipe: str, M: int, N: int) -> list[dict]:
    """Kernels of ``recipe`` for an f32 [M, N] input; ``ints`` are the integer arguments'
    values (specialised as Triton's JIT would: divisible by 16 -> tt.divisibility 16)."""
    f, u = "*fp32", "*u8"
    B = _pow2(N)
    if recipe == "softmax":
        return [_k("softmax_kernel", {"x_ptr": f, "y_ptr": f, "N": "i32", "BLOCK": "constexpr"},
                   (M,), _row_warps(B), {"BLOCK": B}, {"N": N})]
    if recipe == "rmsnorm":
        return [_k("rmsnorm_kernel", {"x_ptr": f, "w_ptr": f, "y_ptr": f, "N": "i32",
                                      "BLOCK": "constexpr"}, (M,), _row_warps(B), {"BLOCK": B},
                   {"N": N})]
    if recipe == "layernorm":
        return [_k("layernorm_kernel", {"x_ptr": f, "w_ptr": f, "b_ptr": f, "y_ptr": f,
                                        "N": "i32", "BLOCK": "constexpr"}, (M,), _row_warps(B),
                   {"BLOCK": B}, {"N": N})]
    numel, AB = M * N, 4096
    amax = _k("amax_kernel", {"x_ptr": f, "amax_ptr": f, "numel": "i32", "BLOCK": "constexpr"},
              (triton.cdiv(numel, AB),), 8, {"BLOCK": AB}, {"numel": numel})
    if recipe == "fp8_tensor":
        return [amax, _k("fp8_quant_tensor_kernel", {"x_ptr": f, "amax_ptr": f, "q_ptr": u,
                                                     "inv_ptr": f, "numel": "i32",
                                                     "BLOCK": "constexpr"},
                         (triton.cdiv(numel, AB),), 8, {"BLOCK": AB}, {"numel": numel})]
    if recipe == "fp8_1x128":
        G = min(8, N // 128)
        return [_k("fp8_quant_1x128_kernel", {"x_ptr": f, "q_ptr": u, "inv_ptr": f, "N": "i32",
                                              "G": "constexpr"}, (M, N // (128 * G)), 4,
                   {"G": G}, {"N": N})]
    if recipe == "nvfp4":
        G = min(64, N // 16)
        return [amax, _k("nvfp4_quant_kernel", {"x_ptr": f, "amax_ptr": f, "q_ptr": u,
                                                "s_ptr": u, "sdec_ptr": f, "N": "i32",
                                                "G": "constexpr"}, (M, N // (16 * G)), 4,
                         {"G": G}, {"N": N})]
    if recipe == "mxfp4":
        G = min(32, N // 32)
        return [_k("mxfp4_quant_kernel", {"x_ptr": f, "q_ptr": u, "s_ptr": u, "N": "i32",
                                          "G": "constexpr"}, (M, N // (32 * G)), 4, {"G": G},
                   {"N": N})]
    raise KeyError(recipe)


def run(recipe: str, x, w=None, b=None):
    """Launch the recipe's expert kernels (under TRITON_INTERPRET=1 on the CPU) on numpy
    inputs; returns numpy outputs in numgrade's storage (uint8 codes for e2m1/e4m3/e8m0)."""
    import numpy as np
    import torch
    M, N = x.shape
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    ks = {k["name"]: k for k in specs(recipe, M, N)}
    z8 = lambda *s: torch.zeros(s, dtype=torch.uint8)  # noqa: E731
    zf = lambda *s: torch.zeros(s, dtype=torch.float32)  # noqa: E731

    def go(name, *args):
        k = ks[name]
        globals()[name][k["grid"]](*args, **k["constexprs"], num_warps=k["num_warps"])

    if recipe in ("softmax", "rmsnorm", "layernorm"):
        y = zf(M, N)
        extra = [torch.from_numpy(np.asarray(a, np.float32)) for a in (w, b) if a is not None]
        go(f"{recipe}_kernel", t, *extra, y, N)
        return (y.numpy(),)
    amax = zf(1)
    if recipe in ("fp8_tensor", "nvfp4"):
        go("amax_kernel", t, amax, M * N)
    if recipe == "fp8_tensor":
        q, inv = z8(M, N), zf(1)
        go("fp8_quant_tensor_kernel", t, amax, q, inv, M * N)
        return q.numpy(), inv.numpy()[0]
    if recipe == "fp8_1x128":
        q, inv = z8(M, N), zf(M, N // 128)
        go("fp8_quant_1x128_kernel", t, q, inv, N)
        return q.numpy(), inv.numpy()
    if recipe == "nvfp4":
        q, s, sdec = z8(M, N), z8(M, N // 16), zf(1)
        go("nvfp4_quant_kernel", t, amax, q, s, sdec, N)
        return q.numpy(), s.numpy(), sdec.numpy()[0]
    if recipe == "mxfp4":
        q, s = z8(M, N), z8(M, N // 32)
        go("mxfp4_quant_kernel", t, q, s, N)
        return q.numpy(), s.numpy()
    raise KeyError(recipe)
