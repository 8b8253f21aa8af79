"""The ML-kernel stdlib programs against independent float64 numpy implementations.

Programs: stdlib softmax, logsumexp, rmsnorm, layernorm, rope, attention, moe.

For each kernel:

* the reference backend's f32 result is compared with a float64 numpy implementation written
  here, within a *forward error bound* derived below from the kernel's operation sequence (so a
  failure means a wrong program or a wrong interpreter, not an unlucky tolerance);
* on tiny shapes, ``fn.ideal(...)`` (the program over the reals) must agree with the numpy
  implementation to ~1e-12 of the output scale, and the computed result must be within the same
  bound of the ideal one (computed - ideal is exactly the rounding error the bound is about);
* invariants are checked (softmax rows sum to 1, rms of normalised rows is 1, top-k masks have k
  entries per row, causal attention ignores future keys, ...);
* bf16 variants return ml_dtypes.bfloat16 arrays; torch in gives torch out.

Error-bound conventions. u = 2^-24 is the unit roundoff of f32 (half an ulp of 1); every f32
operation of the reference backend is correctly rounded (|fl(a op b) - a op b| <= u |a op b|;
exp/log/rsqrt/sin/cos are float64 libm results rounded once, so <= u(1 + 2^-28)). A pairwise sum
of n terms is ceil(log2 n) additions deep, so for non-negative terms its relative error is at most
L u with L = ceil(log2 n); a left-to-right matmul over k terms errs by at most k u sum|a_i b_i|.
The derivations are first order; every bound below is multiplied by SLACK = 1.5, which covers the
second-order terms many times over for the sizes used here, and gets an absolute floor of a few
f32 subnormal quanta for results that underflow.

Inputs are float32 arrays drawn uniformly inside each parameter's *declared* range (the helper
``draw`` reads the range from the program and refuses to draw outside it).
"""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

import numgrade as ng

U = 2.0 ** -24          # f32 unit roundoff
U_BF16 = 2.0 ** -8      # bf16 unit roundoff (8 significand bits)
SLACK = 1.5
TINY = 2.0 ** -146      # a few f32 subnormal quanta: the absolute floor of every bound
IDEAL_RTOL = 1e-12      # ideal (160-bit, rounded to f64) vs numpy float64


@pytest.fixture(scope="module")
def mods():
    return {n: ng.load(f"stdlib:{n}") for n in
            ("softmax", "logsumexp", "rmsnorm", "layernorm", "rope", "attention", "moe")}


def L(n: int) -> int:
    """Depth of a pairwise sum of n terms."""
    return max(0, math.ceil(math.log2(max(n, 1))))


def draw(rng, fn, name, shape, lo=None, hi=None, dtype=np.float32):
    """Uniform values in [lo, hi] (default: the declared range of parameter `name` of fn)."""
    (p,) = [p for p in fn.ir.params if p.name == name]
    assert p.range is not None, f"{fn.name}: parameter {name} has no declared range"
    dlo, dhi = p.range
    lo = dlo if lo is None else lo
    hi = dhi if hi is None else hi
    assert dlo <= lo <= hi <= dhi, f"[{lo}, {hi}] is outside the declared range of {name}"
    x = rng.uniform(lo, hi, shape).astype(np.float32).astype(dtype)
    assert np.all((x.astype(np.float64) >= dlo) & (x.astype(np.float64) <= dhi))
    return x


def f64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def assert_within(got, ref, bound, what=""):
    """|got - ref| <= bound elementwise (bound broadcasts)."""
    got, ref = f64(got), f64(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.all(np.isfinite(got)), f"{what}: non-finite result"
    err = np.abs(got - ref)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), err.shape)
    bad = err > bound
    if np.any(bad):
        i = np.unravel_index(np.argmax(err - bound), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} element(s) outside the bound; worst at "
                             f"{i}: got {got[i]!r} ref {ref[i]!r} err {err[i]:.3e} "
                             f"bound {bound[i]:.3e}")


def assert_ideal_matches(ideal, ref, what=""):
    """The ideal program equals the numpy float64 implementation up to float64 noise."""
    ideal, ref = f64(ideal), f64(ref)
    scale = max(1e-300, float(np.max(np.abs(ref)))) if ref.size else 1.0
    assert_within(ideal, ref, IDEAL_RTOL * scale, what + " (ideal vs numpy)")


# =========================================================================== numpy references
def np_softmax(x):
    x = f64(x)
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True), z


def np_logsumexp(x, axis=-1):
    x = f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def np_rmsnorm(x, w, eps):
    x = f64(x)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * f64(w)


def np_layernorm(x, w, b, eps):
    x = f64(x)
    xc = x - x.mean(axis=-1, keepdims=True)
    sigma = np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + eps)
    return xc / sigma * f64(w) + f64(b), xc, sigma


def np_rope(x, c, s):
    x = f64(x)
    h = x.shape[-1] // 2
    x1, x2 = x[:, :h], x[:, h:]
    c, s = f64(c), f64(s)
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def np_rope_angles(t, d, log2_base=math.log2(10000.0)):
    i = np.arange(d // 2, dtype=np.float64)
    inv_freq = 2.0 ** (-(2.0 * i / d) * log2_base)
    return np.arange(t, dtype=np.float64)[:, None] * inv_freq[None, :]


def np_attention(q, k, v, causal=False):
    q, k, v = f64(q), f64(k), f64(v)
    t, d = q.shape
    s = k.shape[0]
    scores = q @ k.T / math.sqrt(d)
    if causal:
        future = np.arange(s)[None, :] > np.arange(t)[:, None] + (s - t)
        scores = np.where(future, -np.inf, scores)
    p, _ = np_softmax(scores)
    return p @ v, p


def np_route(x, w, k):
    logits = f64(x) @ f64(w)
    p, z = np_softmax(logits)
    order = np.argsort(-p, axis=-1, kind="stable")
    mask = np.zeros(p.shape, dtype=bool)
    np.put_along_axis(mask, order[:, :k], True, axis=-1)
    kept = np.where(mask, p, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True), mask, p, logits, z


def np_load_balance(x, w, k):
    _, mask, p, _, _ = np_route(x, w, k)
    t, e = p.shape
    f = mask.sum(axis=0) / (t * k)
    return e * float(np.sum(f * p.mean(axis=0)))


def np_z_loss(x, w):
    lse = np_logsumexp(f64(x) @ f64(w))
    return float(np.mean(lse ** 2))


# =========================================================================== error bounds
def softmax_bound(p, z, n):
    """p~ = p(1 + e): x - m errs by u|z| (exp turns it into a relative error |z|u), exp by u,
    the row sum of positive terms by L u plus the p-weighted mean of its terms' errors
    (sum_k p_k |z_k| <= ln n: it is the entropy of p minus log of the sum), the division by u."""
    return SLACK * U * p * (np.abs(z) + math.log(n) + L(n) + 4) + TINY


def lse_bound(lse, n):
    """log of a sum with relative error (ln n + L + 2)u, log rounding u*ln n, final add u|lse|."""
    return SLACK * U * (2 * math.log(n) + L(n) + 3 + np.abs(lse)) + TINY


def attention_bound(q, k, v, o):
    """Per output row t: scores (matmul over D, then * rsqrt(D): two roundings) err by at most
    delta_t = (D + 3) u max_j sum_i |q_ti k_ji| / sqrt(D); the softmax turns that into relative
    errors <= 2 delta_t plus its own rounding (see softmax_bound; sum_j p_j|z_j| <= ln S);
    P V is a left-to-right sum over S: (S + 1) u max|v| including the final rounding."""
    q, k, v = f64(q), f64(k), f64(v)
    t, d = q.shape
    s = k.shape[0]
    a = (np.abs(q) @ np.abs(k).T) / math.sqrt(d)
    delta = (d + 3) * U * a.max(axis=-1, keepdims=True)
    vmax = np.max(np.abs(v)) if v.size else 0.0
    rel = 2 * delta + U * (2 * math.log(s) + L(s) + 4)
    return SLACK * (vmax * (rel + (s + 1) * U)) + U * np.abs(f64(o)) + TINY


# =========================================================================== softmax
SOFTMAX_SHAPES = [(1, 1), (3, 7), (8, 33), (4, 256), (2, 1000)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES)
@pytest.mark.parametrize("spread", [None, 4.0])
def test_softmax_matches_numpy(mods, shape, spread):
    fn = mods["softmax"].softmax
    rng = np.random.default_rng([shape[0], shape[1], int(spread or 0)])
    lo, hi = (None, None) if spread is None else (-spread, spread)
    x = draw(rng, fn, "x", shape, lo, hi)
    ref, z = np_softmax(x)
    out = fn(x)
    assert out.dtype == np.float32 and out.shape == shape
    assert_within(out, ref, softmax_bound(ref, z, shape[1]), "softmax")
    # invariants: probabilities, rows sum to 1, the argmax gets the largest probability
    assert np.all(out >= 0) and np.all(out <= 1)
    row_err = np.abs(f64(out).sum(axis=-1) - 1.0)
    assert np.all(row_err <= SLACK * U * (2 * math.log(shape[1]) + L(shape[1]) + 5) + shape[1] * U)
    assert np.array_equal(np.argmax(out, axis=-1), np.argmax(x, axis=-1))


def test_softmax_shift_invariance_and_extremes(mods):
    fn = mods["softmax"].softmax
    # a constant row: exactly uniform (x - m == 0, exp(0) == 1, sum == N exactly)
    x = np.full((2, 5), 123.5, dtype=np.float32)
    assert np.array_equal(fn(x), np.full((2, 5), np.float32(0.2)))
    # logits 1000 apart: no overflow, the small one underflows to exactly 0
    y = fn(np.array([[1000.0, -1000.0]], dtype=np.float32))
    assert np.array_equal(y, np.array([[1.0, 0.0]], dtype=np.float32))
    # shifting by a power of two that keeps x - m exact gives a bit-identical result
    rng = np.random.default_rng(1)
    x = (rng.integers(-64, 64, (4, 9)) / 8).astype(np.float32)
    assert np.array_equal(fn(x), fn(x + np.float32(256)))


@pytest.mark.parametrize("shape", [(2, 5), (3, 4)])
def test_softmax_ideal(mods, shape):
    m = mods["softmax"]
    rng = np.random.default_rng(7 + shape[1])
    x = draw(rng, m.softmax, "x", shape, -6, 6)
    ref, z = np_softmax(x)
    ideal = m.softmax.ideal(x)
    assert_ideal_matches(ideal, ref, "softmax")
    assert_within(m.softmax(x), ideal, softmax_bound(ref, z, shape[1]), "softmax vs ideal")
    # log_softmax: the same ideal values, logged
    assert_ideal_matches(m.log_softmax.ideal(x), np.log(ref), "log_softmax")


def test_log_softmax_and_temperature(mods):
    m = mods["softmax"]
    rng = np.random.default_rng(3)
    x = draw(rng, m.log_softmax, "x", (5, 40), -30, 30)
    ref, z = np_softmax(x)
    lref = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    # (x - m) errs by u|z|, the log term by lse_bound, the final subtraction by u|result|
    assert_within(m.log_softmax(x), lref,
                  SLACK * U * (np.abs(z) + np.abs(lref)) + lse_bound(0.0, 40), "log_softmax")
    t = np.float32(0.75)
    xs = f64(x) / f64(t)
    ref_t, z_t = np_softmax(xs)
    # x / t adds a relative error u to each logit: an absolute u|x/t| to z, doubled for the max
    extra = SLACK * ref_t * 2 * U * np.max(np.abs(xs), axis=-1, keepdims=True)
    assert_within(m.softmax_temperature(x, t), ref_t, softmax_bound(ref_t, z_t, 40) + extra,
                  "softmax_temperature")


def test_softmax_bf16(mods):
    fn = mods["softmax"].softmax_bf16
    rng = np.random.default_rng(11)
    x = draw(rng, fn, "x", (6, 50), -8, 8, dtype=ml_dtypes.bfloat16)
    out = fn(x)
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == (6, 50)
    ref, z = np_softmax(f64(x))           # the bf16 inputs, exactly
    # f32 result (softmax_bound), then one bf16 rounding
    assert_within(out, ref, softmax_bound(ref, z, 50) + U_BF16 * ref * (1 + U) + 2.0 ** -133,
                  "softmax_bf16")


# =========================================================================== logsumexp
@pytest.mark.parametrize("shape", [(1, 1), (4, 9), (16, 100), (3, 1024)])
@pytest.mark.parametrize("spread", [None, 3.0])
def test_logsumexp_matches_numpy(mods, shape, spread):
    m = mods["logsumexp"]
    rng = np.random.default_rng([shape[0], shape[1], int(spread or 0), 2])
    lo, hi = (None, None) if spread is None else (-spread, spread)
    x = draw(rng, m.logsumexp, "x", shape, lo, hi)
    ref = np_logsumexp(x)
    out = m.logsumexp(x)
    assert out.dtype == np.float32 and out.shape == (shape[0],)
    assert_within(out, ref, lse_bound(ref, shape[1]), "logsumexp")
    # invariants: max(x) <= lse <= max(x) + log(N)
    mx = f64(x).max(axis=-1)
    assert np.all(f64(out) >= mx * (1 - 2 * U) - 2 * U * np.abs(mx) - U)
    assert np.all(f64(out) <= mx + math.log(shape[1]) + lse_bound(ref, shape[1]))
    kd = m.logsumexp_keepdims(x)
    assert kd.shape == (shape[0], 1) and np.array_equal(kd[:, 0], out)
    whole = np_logsumexp(f64(x).reshape(-1))
    assert_within(m.logsumexp_all(x), whole, lse_bound(whole, x.size), "logsumexp_all")


def test_logsumexp_ideal_and_bf16(mods):
    m = mods["logsumexp"]
    rng = np.random.default_rng(5)
    x = draw(rng, m.logsumexp, "x", (3, 5), -20, 20)
    ref = np_logsumexp(x)
    ideal = m.logsumexp.ideal(x)
    assert_ideal_matches(ideal, ref, "logsumexp")
    assert_within(m.logsumexp(x), ideal, lse_bound(ref, 5), "logsumexp vs ideal")
    assert_ideal_matches(m.logsumexp_all.ideal(x), np_logsumexp(f64(x).reshape(-1)), "lse_all")
    xb = draw(rng, m.logsumexp_bf16, "x", (4, 30), dtype=ml_dtypes.bfloat16)
    out = m.logsumexp_bf16(xb)
    assert out.dtype == np.float32  # bf16 in, f32 out by signature
    refb = np_logsumexp(f64(xb))
    assert_within(out, refb, lse_bound(refb, 30), "logsumexp_bf16")


# =========================================================================== rmsnorm
def rmsnorm_bound(ref, d):
    """Elementwise relative: squares u, their pairwise mean (L + 1)u, + eps u, so the mean
    square errs by (L + 3)u relatively; rsqrt halves that and adds u; two products add 2u."""
    return SLACK * U * np.abs(ref) * ((L(d) + 3) / 2 + 3) + TINY


@pytest.mark.parametrize("shape", [(1, 1), (3, 8), (7, 64), (5, 1000)])
def test_rmsnorm_matches_numpy(mods, shape):
    m = mods["rmsnorm"]
    rng = np.random.default_rng([shape[0], shape[1], 3])
    x = draw(rng, m.rmsnorm, "x", shape)
    w = draw(rng, m.rmsnorm, "w", shape[1:])
    ref = np_rmsnorm(x, w, 1e-6)
    out = m.rmsnorm(x, w)
    assert out.dtype == np.float32
    eps32 = float(np.float32(1e-6))   # the program's eps: 1e-6 rounded once to f32
    assert_within(out, np_rmsnorm(x, w, eps32), rmsnorm_bound(ref, shape[1]), "rmsnorm")
    # invariant: y / w has root-mean-square 1 per row (the eps shift is < 1e-6 relative here)
    wn = np.where(np.abs(f64(w)) > 1e-3, f64(w), 1.0)
    xs = np.where(np.abs(f64(w)) > 1e-3, f64(out) / wn, f64(x) / np.sqrt(
        np.mean(f64(x) ** 2, axis=-1, keepdims=True) + eps32))
    rms = np.sqrt(np.mean(xs ** 2, axis=-1))
    assert np.all(np.abs(rms - 1) < 1e-5)


def test_rmsnorm_eps_and_unweighted(mods):
    m = mods["rmsnorm"]
    rng = np.random.default_rng(12)
    x = draw(rng, m.rmsnorm_eps, "x", (6, 48), -0.01, 0.01)   # small rows: eps matters
    w = draw(rng, m.rmsnorm_eps, "w", (48,))
    eps = np.float32(1e-5)
    ref = np_rmsnorm(x, w, f64(eps))
    assert_within(m.rmsnorm_eps(x, w, eps), ref, rmsnorm_bound(ref, 48), "rmsnorm_eps")
    x = draw(rng, m.rms_normalize, "x", (4, 100))
    y = m.rms_normalize(x)
    ref = np_rmsnorm(x, np.ones(100), float(np.float32(1e-6)))
    assert_within(y, ref, rmsnorm_bound(ref, 100), "rms_normalize")
    assert np.all(np.abs(np.sqrt(np.mean(f64(y) ** 2, axis=-1)) - 1) < 1e-6)
    # an all-zero row stays zero (eps keeps the rsqrt finite)
    z = m.rmsnorm(np.zeros((2, 4), np.float32), np.ones(4, np.float32))
    assert np.array_equal(z, np.zeros((2, 4), np.float32))


def test_rmsnorm_ideal(mods):
    m = mods["rmsnorm"]
    rng = np.random.default_rng(21)
    x = draw(rng, m.rmsnorm, "x", (2, 6))
    w = draw(rng, m.rmsnorm, "w", (6,))
    eps32 = float(np.float32(1e-6))
    ref = np_rmsnorm(x, w, eps32)
    ideal = m.rmsnorm.ideal(x, w)
    assert_ideal_matches(ideal, ref, "rmsnorm")
    assert_within(m.rmsnorm(x, w), ideal, rmsnorm_bound(ref, 6), "rmsnorm vs ideal")
    assert_ideal_matches(m.rmsnorm_bf16.ideal(x.astype(ml_dtypes.bfloat16),
                                              w.astype(ml_dtypes.bfloat16)),
                         np_rmsnorm(f64(x.astype(ml_dtypes.bfloat16)),
                                    f64(w.astype(ml_dtypes.bfloat16)), eps32), "rmsnorm_bf16")


def test_rmsnorm_bf16(mods):
    fn = mods["rmsnorm"].rmsnorm_bf16
    rng = np.random.default_rng(4)
    x = draw(rng, fn, "x", (8, 128), dtype=ml_dtypes.bfloat16)
    w = draw(rng, fn, "w", (128,), dtype=ml_dtypes.bfloat16)
    out = fn(x, w)
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == (8, 128)
    ref = np_rmsnorm(f64(x), f64(w), float(np.float32(1e-6)))
    # the f32 computation (sum then divide by D instead of mean: the same error budget),
    # then one bf16 rounding
    assert_within(out, ref, rmsnorm_bound(ref, 128) + U_BF16 * np.abs(ref) * (1 + U),
                  "rmsnorm_bf16")


def test_rmsnorm_torch(mods):
    torch = pytest.importorskip("torch")
    m = mods["rmsnorm"]
    rng = np.random.default_rng(8)
    x = draw(rng, m.rmsnorm, "x", (3, 16))
    w = draw(rng, m.rmsnorm, "w", (16,))
    out = m.rmsnorm(torch.from_numpy(x), torch.from_numpy(w))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert np.array_equal(out.numpy(), m.rmsnorm(x, w))
    # torch's own formulation, in float64, within the same bound
    xt, wt = torch.from_numpy(x).double(), torch.from_numpy(w).double()
    tref = (xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + float(np.float32(1e-6))) * wt)
    assert_within(out.numpy(), tref.numpy(), rmsnorm_bound(tref.numpy(), 16), "rmsnorm torch")
    ob = m.rmsnorm_bf16(torch.from_numpy(x).to(torch.bfloat16),
                        torch.from_numpy(w).to(torch.bfloat16))
    assert isinstance(ob, torch.Tensor) and ob.dtype == torch.bfloat16
    assert np.array_equal(ob.float().numpy(),
                          f64(m.rmsnorm_bf16(x.astype(ml_dtypes.bfloat16),
                                             w.astype(ml_dtypes.bfloat16))).astype(np.float32))


# =========================================================================== layernorm
def layernorm_bound(x, w, ref, xc, sigma):
    """mu = mean(x) errs by (L + 1)u max|x| (a pairwise sum of mixed-sign terms, then /D);
    that error shifts every x - mu alike, which changes the variance only to second order
    (the deviations have mean 0), so var errs by (L + 4)u relatively (squares u, sum L u,
    / D u, + eps u, the rounding of x - mu 2u) and the rsqrt by half that plus u; the result
    then sees |w| (delta_mu + u|xc|) / sigma, (L/2 + 6)u |xc w / sigma| and u |y| (the + b)."""
    d = x.shape[-1]
    x, w = f64(x), f64(w)
    dmu = (L(d) + 1) * U * np.max(np.abs(x), axis=-1, keepdims=True)
    t = np.abs(xc * w / sigma)
    return SLACK * (np.abs(w) * (dmu + U * np.abs(xc)) / sigma + U * t * (L(d) / 2 + 6)
                    + U * np.abs(ref)) + TINY


@pytest.mark.parametrize("shape", [(1, 2), (3, 8), (7, 64), (5, 768)])
@pytest.mark.parametrize("offset", [0.0, 500.0])
def test_layernorm_matches_numpy(mods, shape, offset):
    m = mods["layernorm"]
    rng = np.random.default_rng([shape[0], shape[1], int(offset), 4])
    # offset rows: a mean far from 0 relative to the spread (the two-pass variance matters)
    x = draw(rng, m.layernorm, "x", shape, offset - 100, offset + 100)
    w = draw(rng, m.layernorm, "w", shape[1:])
    b = draw(rng, m.layernorm, "b", shape[1:])
    eps32 = float(np.float32(1e-5))
    ref, xc, sigma = np_layernorm(x, w, b, eps32)
    out = m.layernorm(x, w, b)
    assert out.dtype == np.float32
    assert_within(out, ref, layernorm_bound(x, w, ref, xc, sigma), "layernorm")
    # invariants of the unweighted form: zero mean, unit (biased) variance per row
    s = f64(m.standardize(x))
    ref_s, _, _ = np_layernorm(x, np.ones(shape[1]), np.zeros(shape[1]), eps32)
    assert_within(s, ref_s, layernorm_bound(x, np.ones(shape[1]), ref_s, xc, sigma),
                  "standardize")
    if shape[1] > 1:
        assert np.all(np.abs(s.mean(axis=-1)) < 1e-5)
        var_ideal = (sigma[:, 0] ** 2 - eps32) / sigma[:, 0] ** 2
        assert np.all(np.abs(s.var(axis=-1) - var_ideal) < 1e-5)


def test_layernorm_ideal_eps_bf16(mods):
    m = mods["layernorm"]
    rng = np.random.default_rng(31)
    x = draw(rng, m.layernorm, "x", (2, 5))
    w = draw(rng, m.layernorm, "w", (5,))
    b = draw(rng, m.layernorm, "b", (5,))
    eps32 = float(np.float32(1e-5))
    ref, xc, sigma = np_layernorm(x, w, b, eps32)
    ideal = m.layernorm.ideal(x, w, b)
    assert_ideal_matches(ideal, ref, "layernorm")
    assert_within(m.layernorm(x, w, b), ideal, layernorm_bound(x, w, ref, xc, sigma),
                  "layernorm vs ideal")
    # eps as an input: tiny rows, where eps is a large part of the denominator
    x = draw(rng, m.layernorm_eps, "x", (4, 32), -0.003, 0.003)
    w = draw(rng, m.layernorm_eps, "w", (32,))
    b = draw(rng, m.layernorm_eps, "b", (32,))
    eps = np.float32(1e-5)
    ref, xc, sigma = np_layernorm(x, w, b, f64(eps))
    assert_within(m.layernorm_eps(x, w, b, eps), ref, layernorm_bound(x, w, ref, xc, sigma),
                  "layernorm_eps")
    # bf16
    fn = m.layernorm_bf16
    xb = draw(rng, fn, "x", (6, 96), dtype=ml_dtypes.bfloat16)
    wb = draw(rng, fn, "w", (96,), dtype=ml_dtypes.bfloat16)
    bb = draw(rng, fn, "b", (96,), dtype=ml_dtypes.bfloat16)
    out = fn(xb, wb, bb)
    assert out.dtype == ml_dtypes.bfloat16
    ref, xc, sigma = np_layernorm(f64(xb), f64(wb), f64(bb), eps32)
    assert_within(out, ref, layernorm_bound(f64(xb), f64(wb), ref, xc, sigma)
                  + U_BF16 * np.abs(ref) * (1 + U), "layernorm_bf16")


# =========================================================================== rope
def rope_bound(x, c, s, theta_err=0.0):
    """out1 = fl(fl(x1 c) - fl(x2 s)): at most u(|x1 c| + |x2 s|) from the products and u|out1|
    <= u(|x1 c| + |x2 s|) from the difference (the same for out2); an absolute error theta_err
    in the angle moves cos and sin by at most theta_err each."""
    x = f64(x)
    h = x.shape[-1] // 2
    x1, x2 = np.abs(x[:, :h]), np.abs(x[:, h:])
    c, s = np.abs(f64(c)), np.abs(f64(s))
    half = 2 * U * (x1 * c + x2 * s) + (x1 + x2) * theta_err
    other = 2 * U * (x2 * c + x1 * s) + (x1 + x2) * theta_err
    return SLACK * np.concatenate([half, other], axis=-1) + TINY


@pytest.mark.parametrize("shape", [(1, 2), (3, 8), (16, 64), (5, 128)])
def test_rope_matches_numpy(mods, shape):
    m = mods["rope"]
    t, d = shape
    rng = np.random.default_rng([t, d, 5])
    x = draw(rng, m.rope, "x", shape)
    theta = rng.uniform(0, 100, (t, d // 2))
    c = np.cos(theta).astype(np.float32)
    s = np.sin(theta).astype(np.float32)
    out = m.rope(x, c, s)
    assert out.dtype == np.float32 and out.shape == shape
    ref = np_rope(x, c, s)
    assert_within(out, ref, rope_bound(x, c, s), "rope")
    # invariants: each rotated pair keeps its norm (c^2 + s^2 = 1 up to the f32 table rounding)
    h = d // 2
    n_in = f64(x)[:, :h] ** 2 + f64(x)[:, h:] ** 2
    n_out = f64(out)[:, :h] ** 2 + f64(out)[:, h:] ** 2
    assert np.all(np.abs(n_out - n_in) <= 1e-5 * np.maximum(n_in, 1e-30) + 1e-30)
    # the inverse rotation undoes it
    back = m.rope_inverse(out, c, s)
    assert_within(back, x, 2 * rope_bound(x, c, s) + 4 * U * np.abs(f64(x)), "rope_inverse")


def test_rope_odd_dim_is_rejected(mods):
    m = mods["rope"]
    with pytest.raises(ng.GradeError):
        m.rope(np.zeros((2, 3), np.float32), np.zeros((2, 1), np.float32),
               np.zeros((2, 1), np.float32))


def angle_error(t, d, extra_rel=0.0):
    """Absolute error of the computed angles theta[t, i] = t * 2^(-(2i/D) log2 base):
    the exponent -(2i/D) log2(base) is three f32 roundings (-2/D, i * that, * LOG2_BASE) and the
    rounding of the constant LOG2_BASE itself, an absolute error of 4u|arg|; exp2 turns it into a relative error 3u|arg| ln 2 + u; the product
    with the exact position adds u. extra_rel: a further relative error of the angle."""
    i = np.arange(d // 2, dtype=np.float64)
    arg = (2.0 * i / d) * math.log2(10000.0)
    rel = 4 * U * arg * math.log(2) + 2 * U + extra_rel
    theta = np_rope_angles(t, d)
    return theta * rel + U        # + u: the cos / sin rounding


LOG2_BASE_F32 = float(np.float32(math.log2(10000.0)))


@pytest.mark.parametrize("shape", [(1, 2), (4, 8), (16, 64), (33, 128)])
def test_rope_positions_matches_numpy(mods, shape):
    m = mods["rope"]
    t, d = shape
    rng = np.random.default_rng([t, d, 6])
    x = draw(rng, m.rope_positions, "x", shape)
    out = m.rope_positions(x)
    theta = np_rope_angles(t, d)              # the true base-10000 angles
    ref = np_rope(x, np.cos(theta), np.sin(theta))
    # the program's LOG2_BASE is log2(10000) rounded once to f32: a further relative error of
    # the angle of (2i/D) |LOG2_BASE_F32 - log2(10000)| ln 2 <= that times 1
    base_rel = abs(LOG2_BASE_F32 - math.log2(10000.0)) * math.log(2)
    err = angle_error(t, d, base_rel)
    assert_within(out, ref, rope_bound(x, np.cos(theta), np.sin(theta), err), "rope_positions")
    ang = m.rope_angles(x)
    assert ang.shape == (t, d // 2)
    assert_within(ang, theta, SLACK * (angle_error(t, d, base_rel) - U) + TINY, "rope_angles")
    assert np.all(ang[0] == 0) and np.all(ang[:, 0] == np.arange(t))   # inv_freq[0] == 1


def test_rope_ideal_and_bf16(mods):
    m = mods["rope"]
    rng = np.random.default_rng(17)
    x = draw(rng, m.rope_positions, "x", (3, 6))
    # the ideal program removes every rounding, that of the constant log2(10000) too
    theta = np_rope_angles(3, 6)
    ref = np_rope(x, np.cos(theta), np.sin(theta))
    ideal = m.rope_positions.ideal(x)
    assert_ideal_matches(ideal, ref, "rope_positions")
    assert_within(m.rope_positions(x), ideal,
                  rope_bound(x, np.cos(theta), np.sin(theta), angle_error(3, 6)),
                  "rope_positions vs ideal")
    c = draw(rng, m.rope, "cos", (3, 3))
    s = draw(rng, m.rope, "sin", (3, 3))
    assert_ideal_matches(m.rope.ideal(x, c, s), np_rope(x, c, s), "rope")
    xb = draw(rng, m.rope_bf16, "x", (4, 16), dtype=ml_dtypes.bfloat16)
    th = rng.uniform(0, 10, (4, 8))
    cb, sb = np.cos(th).astype(np.float32), np.sin(th).astype(np.float32)
    out = m.rope_bf16(xb, cb, sb)
    assert out.dtype == ml_dtypes.bfloat16
    ref = np_rope(f64(xb), cb, sb)
    assert_within(out, ref, rope_bound(f64(xb), cb, sb) + U_BF16 * np.abs(ref) * (1 + U),
                  "rope_bf16")


# =========================================================================== attention
ATT_SHAPES = [(1, 1, 1), (3, 5, 4), (8, 8, 16), (16, 40, 32)]   # (T, S, D)


@pytest.mark.parametrize("tsd", ATT_SHAPES)
@pytest.mark.parametrize("spread", [None, 1.0])
def test_attention_matches_numpy(mods, tsd, spread):
    m = mods["attention"]
    t, s, d = tsd
    rng = np.random.default_rng([t, s, d, int(spread or 0)])
    lo, hi = (None, None) if spread is None else (-spread, spread)
    q = draw(rng, m.attention, "q", (t, d), lo, hi)
    k = draw(rng, m.attention, "k", (s, d), lo, hi)
    v = draw(rng, m.attention, "v", (s, d))
    ref, p = np_attention(q, k, v)
    out = m.attention(q, k, v)
    assert out.dtype == np.float32 and out.shape == (t, d)
    assert_within(out, ref, attention_bound(q, k, v, ref), "attention")
    w = m.attention_weights(q, k)
    assert w.shape == (t, s)
    assert np.all(np.abs(f64(w).sum(axis=-1) - 1) < 1e-5)
    # invariant: a convex combination of the value rows
    vmax, vmin = f64(v).max(axis=0), f64(v).min(axis=0)
    tol = attention_bound(q, k, v, ref)
    assert np.all(f64(out) <= vmax + tol) and np.all(f64(out) >= vmin - tol)


@pytest.mark.parametrize("tsd", [(1, 1, 2), (4, 4, 8), (5, 9, 16), (12, 12, 32)])
def test_causal_attention(mods, tsd):
    m = mods["attention"]
    t, s, d = tsd
    rng = np.random.default_rng([t, s, d, 9])
    q = draw(rng, m.causal_attention, "q", (t, d), -2, 2)
    k = draw(rng, m.causal_attention, "k", (s, d), -2, 2)
    v = draw(rng, m.causal_attention, "v", (s, d))
    ref, p = np_attention(q, k, v, causal=True)
    out = m.causal_attention(q, k, v)
    assert_within(out, ref, attention_bound(q, k, v, ref), "causal_attention")
    # the last query sees every key: the same row as unmasked attention
    full = m.attention(q, k, v)
    assert_within(out[-1], full[-1], 2 * attention_bound(q, k, v, ref)[-1], "last row")
    # future keys are ignored: changing them (to anything finite) leaves the row bit-identical
    for row in range(t):
        first_future = row + (s - t) + 1
        if first_future >= s:
            continue
        k2, v2 = k.copy(), v.copy()
        k2[first_future:] = draw(rng, m.causal_attention, "k", (s - first_future, d))
        v2[first_future:] = draw(rng, m.causal_attention, "v", (s - first_future, d))
        out2 = m.causal_attention(q, k2, v2)
        assert np.array_equal(out2[:row + 1], out[:row + 1])
    with pytest.raises(ng.GradeError):     # requires S >= T
        m.causal_attention(q, k[:t - 1], v[:t - 1])


def test_attention_ideal(mods):
    m = mods["attention"]
    rng = np.random.default_rng(41)
    q = draw(rng, m.attention, "q", (2, 3), -3, 3)
    k = draw(rng, m.attention, "k", (4, 3), -3, 3)
    v = draw(rng, m.attention, "v", (4, 3))
    for name, causal in (("attention", False), ("causal_attention", True)):
        fn = m[name]
        ref, _ = np_attention(q, k, v, causal=causal)
        ideal = fn.ideal(q, k, v)
        assert_ideal_matches(ideal, ref, name)
        assert_within(fn(q, k, v), ideal, attention_bound(q, k, v, ref), name + " vs ideal")


def test_attention_bf16(mods):
    m = mods["attention"]
    fn = m.attention_bf16
    rng = np.random.default_rng(43)
    q = draw(rng, fn, "q", (8, 32), -2, 2, dtype=ml_dtypes.bfloat16)
    k = draw(rng, fn, "k", (24, 32), -2, 2, dtype=ml_dtypes.bfloat16)
    v = draw(rng, fn, "v", (24, 32), dtype=ml_dtypes.bfloat16)
    out = fn(q, k, v)
    assert out.dtype == ml_dtypes.bfloat16 and out.shape == (8, 32)
    ref, _ = np_attention(f64(q), f64(k), f64(v))
    # f32 pipeline bound, plus P rounded to bf16 (u_bf16 p_j each: u_bf16 max|v| in all) and
    # the final bf16 rounding (u_bf16 |o|)
    vmax = np.max(np.abs(f64(v)))
    bound = attention_bound(q, k, v, ref) + SLACK * U_BF16 * (vmax + np.abs(ref))
    assert_within(out, ref, bound, "attention_bf16")
    # torch in, torch out
    torch = pytest.importorskip("torch")
    tout = fn(*(torch.from_numpy(f64(a)).to(torch.bfloat16) for a in (q, k, v)))
    assert isinstance(tout, torch.Tensor) and tout.dtype == torch.bfloat16
    assert np.array_equal(tout.float().numpy(), f64(out).astype(np.float32))


# =========================================================================== moe
TOPK = 2


def router_deltas(x, w):
    """Per token: the largest logit error, H u sum_h |x_h w_he| (a left-to-right matmul)."""
    h = x.shape[1]
    return h * U * (np.abs(f64(x)) @ np.abs(f64(w))).max(axis=-1, keepdims=True)


def prob_rel_error(x, w, z, e):
    """Relative error of the router probabilities: 2 delta (logit errors through the softmax)
    plus the softmax's own rounding (softmax_bound)."""
    return 2 * router_deltas(x, w) + U * (np.abs(z) + math.log(e) + L(e) + 4)


def moe_inputs(rng, fn, t, h, e, xs=1.0, ws=0.5):
    x = draw(rng, fn, "x", (t, h), -xs, xs)
    w = draw(rng, fn, "w", (h, e), -ws, ws)
    return x, w


def assert_topk_margin(p, rel):
    """The test data must not hold near-ties at the top-k boundary (else the f32 and f64 masks
    could legitimately differ): the k-th and (k+1)-th probabilities differ by more than the
    probabilities' error bound."""
    if p.shape[1] <= TOPK:
        return
    srt = -np.sort(-p, axis=-1)
    gap = srt[:, TOPK - 1] - srt[:, TOPK]
    assert np.all(gap > 4 * SLACK * rel.max(axis=-1) * srt[:, TOPK - 1]), "test data near a tie"


@pytest.mark.parametrize("the", [(1, 4, 2), (6, 8, 4), (32, 16, 8), (64, 32, 16)])
def test_route_matches_numpy(mods, the):
    m = mods["moe"]
    t, h, e = the
    rng = np.random.default_rng([t, h, e, 10])
    x, w = moe_inputs(rng, m.route, t, h, e)
    gates_ref, mask_ref, p, logits, z = np_route(x, w, TOPK)
    rel = prob_rel_error(x, w, z, e)
    assert_topk_margin(p, rel)
    gates, mask = m.route(x, w)
    assert gates.dtype == np.float32 and mask.dtype == np.bool_
    assert np.array_equal(mask, mask_ref)
    # invariants: exactly TOPK experts per token, gates zero off the mask and summing to 1
    assert np.all(mask.sum(axis=-1) == TOPK)
    assert np.all(gates[~mask] == 0) and np.all(gates[mask] > 0)
    assert np.all(np.abs(f64(gates).sum(axis=-1) - 1) < 8 * U)
    # a gate is p_e / (p_a + p_b): relative errors of the two probabilities (at most rel each,
    # |z| taken over the selected ones), the two-term sum u and the division u
    zsel = np.where(mask_ref, np.abs(z), 0).max(axis=-1, keepdims=True)
    grel = 2 * (2 * router_deltas(x, w) + U * (zsel + math.log(e) + L(e) + 4)) + 2 * U
    assert_within(gates, gates_ref, SLACK * grel * gates_ref + TINY, "route gates")
    lg = m.router_logits(x, w)
    assert_within(lg, logits, SLACK * router_deltas(x, w) + TINY, "router_logits")


@pytest.mark.parametrize("the", [(1, 4, 2), (6, 8, 4), (32, 16, 8), (64, 32, 16)])
def test_moe_losses_match_numpy(mods, the):
    m = mods["moe"]
    t, h, e = the
    rng = np.random.default_rng([t, h, e, 11])
    x, w = moe_inputs(rng, m.route, t, h, e)
    _, _, p, logits, z = np_route(x, w, TOPK)
    rel = prob_rel_error(x, w, z, e)
    assert_topk_margin(p, rel)
    lb_ref = np_load_balance(x, w, TOPK)
    # f_e: exact counts / (T k) (u); P_e: a mean of positive probabilities (max rel + (L_T+1)u);
    # sum_e f_e P_e: products u, a positive pairwise sum L_E u; times E: u
    lb_rel = rel.max() + U * (L(t) + L(e) + 5)
    lb = m.load_balance_loss(x, w)
    assert lb.dtype == np.float32
    assert_within(lb, lb_ref, SLACK * lb_rel * lb_ref + TINY, "load_balance_loss")
    assert 0 < float(lb) <= e    # f and P are distributions: sum f P <= max P <= 1
    zl_ref = np_z_loss(x, w)
    lse = np_logsumexp(logits)
    # each lse errs by delta_t (logits) + lse_bound; squared: 2|lse| err + u lse^2; mean (L_T+1)u
    lse_err = router_deltas(x, w)[:, 0] + lse_bound(lse, e)
    zl_bound = SLACK * (np.mean(2 * np.abs(lse) * lse_err) + U * (L(t) + 2) * zl_ref) + TINY
    assert_within(m.z_loss(x, w), zl_ref, zl_bound, "z_loss")
    # the combined router: the same values as the separate functions
    g, mk, lb2, zl2 = m.router(x, w)
    g1, mk1 = m.route(x, w)
    assert np.array_equal(mk, mk1) and np.array_equal(g, g1)
    assert_within(lb2, lb_ref, SLACK * lb_rel * lb_ref + TINY, "router lb")
    assert_within(zl2, zl_ref, zl_bound, "router z")


def test_moe_uniform_router(mods):
    """w = 0: every probability is 1/E; ties go to the lowest indices, so every token picks
    experts 0..k-1 with gates 1/k; the load-balance loss is exactly 1 and z-loss (ln E)^2."""
    m = mods["moe"]
    e = 8
    x = np.random.default_rng(2).uniform(-10, 10, (5, 6)).astype(np.float32)
    w = np.zeros((6, e), np.float32)
    g, mk, lb, zl = m.router(x, w)
    assert np.array_equal(mk, np.broadcast_to(np.arange(e) < TOPK, (5, e)))
    assert np.array_equal(g, np.where(mk, np.float32(1 / TOPK), np.float32(0)))
    assert float(lb) == pytest.approx(1.0, abs=4 * U)
    assert float(zl) == pytest.approx(math.log(e) ** 2, rel=8 * U)
    with pytest.raises(ng.GradeError):     # requires E >= TOPK
        m.route(x, np.zeros((6, 1), np.float32))


def test_moe_ideal_and_dense(mods):
    m = mods["moe"]
    rng = np.random.default_rng(51)
    t, h, e = 3, 4, 4
    x, w = moe_inputs(rng, m.route, t, h, e)
    gates_ref, mask_ref, p, logits, z = np_route(x, w, TOPK)
    g_id, mk_id, lb_id, zl_id = m.router.ideal(x, w)
    assert_ideal_matches(g_id, gates_ref, "router gates")
    assert np.array_equal(f64(mk_id) != 0, mask_ref)
    assert_ideal_matches(lb_id, np_load_balance(x, w, TOPK), "router lb")
    assert_ideal_matches(zl_id, np_z_loss(x, w), "router z")
    # dense MoE layer: out[t] = sum_e gate[t, e] (x[t] @ W_e)
    we = draw(rng, m.moe_dense, "w_experts", (e, h, 5))
    ye = np.einsum("th,ehf->etf", f64(x), f64(we))
    ref = np.einsum("te,etf->tf", gates_ref, ye)
    assert_ideal_matches(m.moe_dense.ideal(x, w, we), ref, "moe_dense")
    out = m.moe_dense(x, w, we)
    # y_e: H u sum|x||W_e|; times the gate (gate error bound from test_route) + u; the sum over
    # E experts is a pairwise sum of mixed-sign terms: L_E u sum_e |g_e y_e|
    zsel = np.where(mask_ref, np.abs(z), 0).max(axis=-1, keepdims=True)
    grel = 2 * (2 * router_deltas(x, w) + U * (zsel + math.log(e) + L(e) + 4)) + 2 * U
    yerr = h * U * np.einsum("th,ehf->etf", np.abs(f64(x)), np.abs(f64(we)))
    gy = np.abs(gates_ref.T[:, :, None] * ye)
    bound = SLACK * (np.sum(gates_ref.T[:, :, None] * yerr + gy * (grel.T[:, :, None] + U), axis=0)
                     + (L(e) + 1) * U * gy.sum(axis=0)) + TINY
    assert_within(out, ref, bound, "moe_dense")
