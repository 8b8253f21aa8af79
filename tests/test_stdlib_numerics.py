"""The classic-numerics, sampler-step and SDF stdlib programs against independent references.

Programs: stdlib sums, dot, horner, flow_matching, ddim, sdf.

Where a program fixes its evaluation order (sequential, pairwise and Kahan sums, dot products,
unrolled Horner), the computed result must be bit-identical to a plain Python loop doing the same
IEEE operations (Python floats are IEEE binary64; numpy float32 scalars and arrays are binary32
with correctly rounded + - * / sqrt). The ideal mode (``fn.ideal``) is compared with exact
``fractions.Fraction`` arithmetic, and the computed results with the classical error bounds
(Higham, *Accuracy and Stability of Numerical Algorithms*), which is a check independent of how the
programs are written.
"""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

import numgrade as ng

U64 = 2.0 ** -53  # unit roundoff, binary64
U32 = 2.0 ** -24  # unit roundoff, binary32
F32 = np.float32


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def sums():
    return ng.load("stdlib:sums")


@pytest.fixture(scope="module")
def dot():
    return ng.load("stdlib:dot")


@pytest.fixture(scope="module")
def horner():
    return ng.load("stdlib:horner")


@pytest.fixture(scope="module")
def flow():
    return ng.load("stdlib:flow_matching")


@pytest.fixture(scope="module")
def ddim():
    return ng.load("stdlib:ddim")


@pytest.fixture(scope="module")
def sdf():
    return ng.load("stdlib:sdf")


def same_bits(got, want, dtype=np.float64) -> bool:
    """Bit-for-bit equality (distinguishes -0.0 from 0.0; NaN payloads compare as bits)."""
    g = np.asarray(got)
    w = np.asarray(want)
    assert g.dtype == np.dtype(dtype), f"result dtype {g.dtype}, expected {np.dtype(dtype)}"
    return g.shape == w.shape and g.astype(dtype).tobytes() == w.astype(dtype).tobytes()


def frac(v) -> Fraction:
    """An mpmath number (ideal mode, as_float=False) or a float, exactly, as a Fraction."""
    if isinstance(v, np.ndarray):
        v = v[()]
    if isinstance(v, (float, np.floating)):
        return Fraction(float(v))
    man, exp = int(v.man), int(v.exp)  # mpf.man is the magnitude: the sign is separate
    r = Fraction(man) * Fraction(2) ** exp if exp >= 0 else Fraction(man, 2 ** -exp)
    return -r if v < 0 else r


def exact_sum(xs) -> Fraction:
    return sum((Fraction(float(x)) for x in xs), Fraction(0))


def gamma(k: int, u: float = U64) -> float:
    return k * u / (1 - k * u)


def ill_conditioned(rng, n: int) -> np.ndarray:
    """Values over 40 binades, half of them cancelling the other half approximately."""
    x = rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)
    h = n // 2
    x[h:2 * h] = -x[:h] * (1 + rng.standard_normal(h) * 1e-6)
    return rng.permutation(x)


# --- Python loops doing the documented IEEE operations in the documented order
def seq_py(xs, zero=0.0):
    if len(xs) == 0:
        return zero
    s = xs[0]
    for x in xs[1:]:
        s = s + x
    return s


def pairwise_py(xs, zero=0.0, neg_zero=-0.0):
    """The reference interpreter's documented pairwise order: adjacent pairs (0,1), (2,3), ...
    are added, an odd element out is carried by adding -0.0, level after level."""
    level = list(xs)
    if not level:
        return zero
    while len(level) > 1:
        if len(level) % 2:
            level.append(neg_zero)
        level = [level[i] + level[i + 1] for i in range(0, len(level), 2)]
    return level[0]


def kahan_py(xs, zero=0.0):
    if len(xs) == 0:
        return zero
    s = xs[0]
    c = zero
    for x in xs[1:]:
        y = x - c
        t = s + y
        c = (t - s) - y
        s = t
    return s


SIZES = [1, 2, 3, 5, 8, 17, 100, 1001]


# --------------------------------------------------------------------------- sums, f64
@pytest.mark.parametrize("n", SIZES)
def test_sums_f64_bit_identical_to_python_loops(sums, n):
    rng = np.random.default_rng(1000 + n)
    x = ill_conditioned(rng, n)
    xs = [float(v) for v in x]
    assert same_bits(sums.naive(x), seq_py(xs))
    assert same_bits(sums.pairwise(x), pairwise_py(xs))
    assert same_bits(sums.kahan(x), kahan_py(xs))


def test_sums_empty_is_zero(sums):
    for f in (sums.naive, sums.pairwise, sums.kahan):
        assert same_bits(f(np.zeros(0)), 0.0)


def test_pairwise_carries_odd_element_with_minus_zero(sums):
    """-0.0 + -0.0 = -0.0 but -0.0 + 0.0 = +0.0: the padding value shows in the sign of zero."""
    assert same_bits(sums.pairwise(np.array([-0.0, -0.0, -0.0])), -0.0)
    assert same_bits(sums.naive(np.array([-0.0, -0.0, -0.0])), -0.0)


@pytest.mark.parametrize("n", [7, 100, 1001])
def test_sums_f64_within_classical_bounds(sums, n):
    """Higham: seq |E| <= gamma_{n-1} sum|x|, pairwise gamma_{ceil log2 n} sum|x|,
    Kahan (2u + O(n u^2)) sum|x|."""
    rng = np.random.default_rng(2000 + n)
    x = ill_conditioned(rng, n)
    ex = exact_sum(x)
    mag = float(sum(abs(Fraction(float(v))) for v in x))
    err = lambda r: abs(float(Fraction(float(r)) - ex))  # noqa: E731
    assert err(sums.naive(x)) <= gamma(n - 1) * mag
    assert err(sums.pairwise(x)) <= gamma(math.ceil(math.log2(n))) * mag
    assert err(sums.kahan(x)) <= (2 * U64 + 4 * n * U64 ** 2) * mag


def test_kahan_recovers_what_seq_loses(sums):
    """1 + 1000 * 2^-53: every sequential addition of 2^-53 to 1 is a tie that rounds back to 1."""
    x = np.array([1.0] + [2.0 ** -53] * 1000)
    exact = 1.0 + 1000 * 2.0 ** -53  # = 1 + 500 * 2^-52, representable
    assert same_bits(sums.naive(x), 1.0)
    assert same_bits(sums.kahan(x), exact)
    assert same_bits(sums.pairwise(x), pairwise_py([float(v) for v in x]))


@pytest.mark.parametrize("fname", ["naive", "pairwise", "kahan"])
def test_sums_ideal_is_exact_sum(sums, fname):
    """The ideal program is the real sum; with 40 binades of spread, 160 bits hold it exactly.
    (In the ideal Kahan program the compensation is identically 0.)"""
    rng = np.random.default_rng(3000)
    x = ill_conditioned(rng, 301)
    got = sums[fname].ideal(x, as_float=False)
    assert frac(got) == exact_sum(x)


# --------------------------------------------------------------------------- sums, f32
@pytest.mark.parametrize("n", SIZES)
def test_sums_f32_bit_identical_to_float32_loops(sums, n):
    rng = np.random.default_rng(4000 + n)
    x = (rng.standard_normal(n) * 2.0 ** rng.integers(-10, 10, n)).astype(F32)
    xs = list(x)  # numpy float32 scalars: binary32 arithmetic
    z, nz = F32(0.0), F32(-0.0)
    assert same_bits(sums.naive_f32(x), seq_py(xs, z), np.float32)
    assert same_bits(sums.pairwise_f32(x), pairwise_py(xs, z, nz), np.float32)
    assert same_bits(sums.kahan_f32(x), kahan_py(xs, z), np.float32)
    # f64 accumulator: Python float loop over the exact f32 values, rounded once
    assert same_bits(sums.naive_f32_acc64(x), F32(seq_py([float(v) for v in x])), np.float32)


def test_sums_f32_within_bounds_and_ideal_exact(sums):
    n = 513
    rng = np.random.default_rng(5000)
    x = ill_conditioned(rng, n).astype(F32)
    ex = exact_sum(x)
    mag = float(sum(abs(Fraction(float(v))) for v in x))
    err = lambda r: abs(float(Fraction(float(r)) - ex))  # noqa: E731
    assert err(sums.naive_f32(x)) <= gamma(n - 1, U32) * mag
    assert err(sums.pairwise_f32(x)) <= gamma(math.ceil(math.log2(n)), U32) * mag
    assert err(sums.kahan_f32(x)) <= (2 * U32 + 4 * n * U32 ** 2) * mag
    # f64 accumulation then one rounding to f32: |E| <= u32 |S| + gamma_{n-1}(u64) sum|x|
    assert err(sums.naive_f32_acc64(x)) <= U32 * abs(float(ex)) + gamma(n - 1) * mag * 1.01
    for f in (sums.naive_f32, sums.pairwise_f32, sums.kahan_f32, sums.naive_f32_acc64):
        assert frac(f.ideal(x, as_float=False)) == ex


# --------------------------------------------------------------------------- unrolled sums
def test_unrolled_sums_bit_identical(sums):
    rng = np.random.default_rng(6000)
    for _ in range(200):
        x = [float(v) for v in rng.uniform(0.1, 1000.0, 8)]
        x0, x1, x2, x3 = x[:4]
        assert same_bits(sums.sum8(*x), seq_py(x))
        assert same_bits(sums.sums4_sum1(x0, x1, x2, x3), ((x0 + x1) + x2) + x3)
        assert same_bits(sums.sums4_sum2(x0, x1, x2, x3), (x0 + x1) + (x2 + x3))


def test_unrolled_sums_association_matters_and_ideal_exact(sums):
    """sum1 and sum2 are the same real function but round differently on some inputs."""
    rng = np.random.default_rng(6001)
    differ = 0
    for _ in range(300):
        x = [float(v) for v in rng.uniform(0.1, 1000.0, 4)]
        a, b = sums.sums4_sum1(*x), sums.sums4_sum2(*x)
        differ += a != b
        ex = exact_sum(x)
        assert frac(sums.sums4_sum1.ideal(*x, as_float=False)) == ex
        assert frac(sums.sums4_sum2.ideal(*x, as_float=False)) == ex
        # positive inputs: relative error at most gamma_3 resp. gamma_2
        assert abs(Fraction(float(a)) - ex) <= Fraction(gamma(3)) * ex
        assert abs(Fraction(float(b)) - ex) <= Fraction(gamma(2)) * ex
    assert differ > 0
    x8 = [float(v) for v in rng.uniform(0.1, 1000.0, 8)]
    assert frac(sums.sum8.ideal(*x8, as_float=False)) == exact_sum(x8)


# --------------------------------------------------------------------------- dot, matvec
@pytest.mark.parametrize("n", [1, 2, 7, 64, 513])
def test_dot_bit_identical_and_bounded(dot, n):
    rng = np.random.default_rng(7000 + n)
    x = rng.standard_normal(n) * 2.0 ** rng.integers(-8, 8, n)
    y = rng.standard_normal(n)
    xs, ys = [float(v) for v in x], [float(v) for v in y]
    got = dot.dot(x, y)
    assert same_bits(got, seq_py([a * b for a, b in zip(xs, ys)]))
    ex = sum((Fraction(a) * Fraction(b) for a, b in zip(xs, ys)), Fraction(0))
    mag = float(sum(abs(Fraction(a) * Fraction(b)) for a, b in zip(xs, ys)))
    assert abs(float(Fraction(float(got)) - ex)) <= gamma(n) * mag  # Higham (3.5)
    assert frac(dot.dot.ideal(x, y, as_float=False)) == ex


@pytest.mark.parametrize("n", [1, 3, 64, 1000])
def test_dot_f32_variants_bit_identical(dot, n):
    rng = np.random.default_rng(8000 + n)
    x = rng.standard_normal(n).astype(F32)
    y = (rng.standard_normal(n) * 10).astype(F32)
    # f64 accumulation: products of binary32 values are exact in binary64
    want = F32(seq_py([float(a) * float(b) for a, b in zip(x, y)]))
    assert same_bits(dot.dot_f32(x, y), want, np.float32)
    # all-f32 loop: numpy float32 scalars
    want32 = seq_py([a * b for a, b in zip(x, y)], F32(0))
    assert same_bits(dot.dot_f32_acc32(x, y), want32, np.float32)
    ex = sum((Fraction(float(a)) * Fraction(float(b)) for a, b in zip(x, y)), Fraction(0))
    mag = float(sum(abs(Fraction(float(a)) * Fraction(float(b))) for a, b in zip(x, y)))
    err = lambda r: abs(float(Fraction(float(r)) - ex))  # noqa: E731
    assert err(dot.dot_f32(x, y)) <= U32 * abs(float(ex)) + gamma(n) * mag * 1.01
    assert err(dot.dot_f32_acc32(x, y)) <= gamma(n, U32) * mag
    for f in (dot.dot_f32, dot.dot_f32_acc32):
        assert frac(f.ideal(x, y, as_float=False)) == ex


def test_matvec_bit_identical_and_ideal_exact(dot):
    rng = np.random.default_rng(9000)
    M, N = 5, 37
    A = rng.standard_normal((M, N)) * 2.0 ** rng.integers(-6, 6, (M, N))
    x = rng.standard_normal(N)
    got = dot.matvec(A, x)
    assert got.shape == (M,)
    want = np.array([seq_py([float(A[i, j]) * float(x[j]) for j in range(N)]) for i in range(M)])
    assert same_bits(got, want)
    # each row is the dot product
    for i in range(M):
        assert same_bits(got[i], dot.dot(A[i], x))
    ideal = dot.matvec.ideal(A, x, as_float=False)
    for i in range(M):
        ex = sum((Fraction(float(A[i, j])) * Fraction(float(x[j])) for j in range(N)), Fraction(0))
        assert frac(ideal[i]) == ex


# --------------------------------------------------------------------------- horner
def horner_py(a, x):
    z = a[-1]
    for c in reversed(a[:-1]):
        z = z * x + c
    return z


def poly_exact(a, x) -> Fraction:
    fx = Fraction(x)
    return sum((Fraction(c) * fx ** k for k, c in enumerate(a)), Fraction(0))


def close_exact(ideal, exact: Fraction, rel: float = 2.0 ** -150) -> bool:
    return abs(frac(ideal) - exact) <= Fraction(rel) * abs(exact)


@pytest.mark.parametrize("deg", [2, 5, 10])
def test_horner_bit_identical_bounded_and_ideal(horner, deg):
    f = horner[f"horner{deg}"]
    rng = np.random.default_rng(10000 + deg)
    for _ in range(50):
        a = rng.uniform(0.1, 1000.0, deg + 1)
        x = float(rng.uniform(0.1, 1000.0) if rng.random() < 0.5 else rng.uniform(0.1, 2.0))
        al = [float(v) for v in a]
        got = f(a, x)
        assert same_bits(got, horner_py(al, x))
        ex = poly_exact(al, x)
        # positive coefficients and x: |p - fl(p)| <= gamma_{2n} p (Higham (5.3))
        assert abs(Fraction(float(got)) - ex) <= Fraction(gamma(2 * deg)) * ex
        assert close_exact(f.ideal(a, x, as_float=False), ex)


def test_polyval_direct_bit_identical_and_ideal(horner):
    rng = np.random.default_rng(11000)
    for _ in range(50):
        a = rng.uniform(0.1, 1000.0, 11)
        x = float(rng.uniform(0.1, 3.0))
        al = [float(v) for v in a]
        pw = [1.0, x]
        for _k in range(2, 11):
            pw.append(pw[-1] * x)
        want = al[0]
        for k in range(1, 11):
            want = want + al[k] * pw[k]
        got = horner.polyval_direct(a, x)
        assert same_bits(got, want)
        ex = poly_exact(al, x)
        # term k carries k roundings (k-1 in the power, 1 product), the sum k more: gamma_20
        assert abs(Fraction(float(got)) - ex) <= Fraction(gamma(20)) * ex
        assert close_exact(horner.polyval_direct.ideal(a, x, as_float=False), ex)
        assert close_exact(horner.horner10.ideal(a, x, as_float=False), ex)


# --------------------------------------------------------------------------- flow matching
def _bd(rng, shape, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(F32)


def test_euler_cfg_bit_identical_to_float32_numpy(flow):
    rng = np.random.default_rng(12000)
    B, D = 4, 33
    x, vc, vu = _bd(rng, (B, D)), _bd(rng, (B, D)), _bd(rng, (B, D))
    w, dt = 3.5, 0.05
    w32, dt32 = F32(w), F32(dt)
    got = flow.euler_cfg(x, vc, vu, w, dt)
    v = vu + w32 * (vc - vu)
    assert same_bits(got, x + dt32 * v, np.float32)
    # independent float64 reference on the same (f32) inputs
    x64, vc64, vu64 = (a.astype(np.float64) for a in (x, vc, vu))
    w64, dt64 = float(w32), float(dt32)
    ref = x64 + dt64 * (vu64 + w64 * (vc64 - vu64))
    # 5 roundings; first-order bound on the propagated errors, with slack 2
    bound = 2 * U32 * (np.abs(x64) + 2 * dt64 * (np.abs(vu64) + w64 * (np.abs(vc64) + 2 * np.abs(vu64))))
    assert np.all(np.abs(got.astype(np.float64) - ref) <= bound)
    ideal = flow.euler_cfg.ideal(x, vc, vu, w, dt)
    assert np.allclose(ideal, ref, rtol=1e-14, atol=1e-14)


def test_euler_cfg_guidance_one_and_zero(flow):
    """w = 1 gives the conditional velocity exactly; dt = 0 returns x_t exactly."""
    rng = np.random.default_rng(12001)
    x, vc, vu = _bd(rng, (3, 8)), _bd(rng, (3, 8)), _bd(rng, (3, 8))
    ideal = flow.euler_cfg.ideal(x, vc, vu, 1.0, 0.25)
    assert np.array_equal(ideal, x.astype(np.float64) + 0.25 * vc.astype(np.float64))
    assert same_bits(flow.euler_cfg(x, vc, vu, 2.0, 0.0), x, np.float32)


def test_euler_cfg_bf16_matches_f32_math_rounded_once(flow):
    rng = np.random.default_rng(12002)
    B, D = 3, 64
    bf = ml_dtypes.bfloat16
    x, vc, vu = (_bd(rng, (B, D)).astype(bf) for _ in range(3))
    w, dt = 2.0, 1.0 / 28
    got = flow.euler_cfg_bf16(x, vc, vu, w, dt)
    assert got.dtype == np.dtype(bf)
    xf, vcf, vuf = (a.astype(F32) for a in (x, vc, vu))
    want = (xf + F32(dt) * (vuf + F32(w) * (vcf - vuf))).astype(bf)
    assert same_bits(got, want, bf)
    # the same as the f32 program on the bf16 values, rounded once to bf16
    assert same_bits(flow.euler_cfg(xf, vcf, vuf, w, dt).astype(bf), got, bf)
    # within half a bf16 ulp (2^-9 relative) plus the f32 error of the f32 program
    ref = (xf.astype(np.float64) + float(F32(dt)) * (vuf.astype(np.float64) + w * (
        vcf.astype(np.float64) - vuf.astype(np.float64))))
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= 2.0 ** -8 * np.abs(ref) + 1e-4)


# --------------------------------------------------------------------------- DDIM
def ddim64(x, eps, at, ap):
    x0 = (x - math.sqrt(1 - at) * eps) / math.sqrt(at)
    return math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps, x0


@pytest.mark.parametrize("at,ap", [(0.3, 0.5), (0.02, 0.05), (0.9, 0.95), (0.0001, 0.0004)])
def test_ddim_step_bit_identical_and_close(ddim, at, ap):
    rng = np.random.default_rng(13000)
    B, D = 2, 40
    x, eps = _bd(rng, (B, D), 2.0), _bd(rng, (B, D), 1.0)
    at32, ap32 = F32(at), F32(ap)
    one = F32(1)
    x0 = (x - np.sqrt(one - at32) * eps) / np.sqrt(at32)
    want = np.sqrt(ap32) * x0 + np.sqrt(one - ap32) * eps
    got = ddim.ddim_step(x, eps, at, ap)
    assert same_bits(got, want, np.float32)
    got2, got_x0 = ddim.ddim_step_x0(x, eps, at, ap)
    assert same_bits(got2, want, np.float32) and same_bits(got_x0, x0, np.float32)
    ref, ref_x0 = ddim64(x.astype(np.float64), eps.astype(np.float64), float(at32), float(ap32))
    # relative to the magnitudes involved; 1 - a_t cancels in f32 only mildly for a_t <= 0.9
    scale = (np.abs(x) + np.abs(eps)).astype(np.float64) / math.sqrt(float(at32))
    assert np.all(np.abs(got_x0 - ref_x0) <= 16 * U32 * scale)
    assert np.all(np.abs(got - ref) <= 16 * U32 * (scale + np.abs(eps)))
    ideal, ideal_x0 = ddim.ddim_step_x0.ideal(x, eps, at, ap)
    assert np.allclose(ideal, ref, rtol=1e-13, atol=1e-13)
    assert np.allclose(ideal_x0, ref_x0, rtol=1e-13, atol=1e-13)


def test_ddim_step_identities(ddim):
    rng = np.random.default_rng(13001)
    x, eps = _bd(rng, (2, 16), 2.0), _bd(rng, (2, 16), 1.0)
    # alpha_bar_t = 1: no noise, x0 = x_t exactly (sqrt(0) * eps = 0, division by 1)
    _, x0 = ddim.ddim_step_x0(x, eps, 1.0, 1.0)
    assert same_bits(x0, x, np.float32)
    # same level before and after: the ideal step is the identity
    ideal = ddim.ddim_step.ideal(x, eps, 0.4, 0.4, as_float=False)
    for got, want in zip(ideal.ravel(), x.ravel()):
        assert abs(frac(got) - Fraction(float(want))) <= Fraction(2.0 ** -140)
    got = ddim.ddim_step(x, eps, 0.4, 0.4)
    assert np.all(np.abs(got.astype(np.float64) - x) <= 8 * U32 * (np.abs(x) + np.abs(eps)) * 2)


# --------------------------------------------------------------------------- SDF
# corner index 4*i + 2*j + k is the corner (x, y, z) = (i, j, k)
CORNERS = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def trilinear64(c, px, py, pz):
    """Weighted sum of the 8 corners (an arrangement independent of the program's lerps)."""
    c = np.asarray(c, dtype=np.float64)
    out = 0.0
    for idx, (i, j, k) in enumerate(CORNERS):
        wx = px if i else 1 - px
        wy = py if j else 1 - py
        wz = pz if k else 1 - pz
        out = out + c[..., idx] * wx * wy * wz
    return out


def _cells(rng, n):
    c = rng.uniform(-2, 2, (n, 8)).astype(F32)
    return c


def test_trilinear_bit_identical_and_close(sdf):
    rng = np.random.default_rng(14000)
    n = 300
    c = _cells(rng, n)
    tx, ty, tz = (rng.uniform(0, 1, n).astype(F32) for _ in range(3))
    got = sdf.trilinear(c, tx, ty, tz)
    one = F32(1)
    sx, sy, sz = one - tx, one - ty, one - tz
    c00 = sx * c[:, 0] + tx * c[:, 4]
    c01 = sx * c[:, 1] + tx * c[:, 5]
    c10 = sx * c[:, 2] + tx * c[:, 6]
    c11 = sx * c[:, 3] + tx * c[:, 7]
    want = sz * (sy * c00 + ty * c10) + tz * (sy * c01 + ty * c11)
    assert same_bits(got, want, np.float32)
    ref = trilinear64(c, tx.astype(np.float64), ty.astype(np.float64), tz.astype(np.float64))
    # 3 lerp levels, each at most ~4 roundings of values bounded by max|c| = 2
    assert np.all(np.abs(got.astype(np.float64) - ref) <= 16 * U32 * 2.0)
    ideal = sdf.trilinear.ideal(c, tx, ty, tz)
    assert np.allclose(ideal, ref, rtol=0, atol=1e-14)


def test_trilinear_exact_at_corners(sdf):
    rng = np.random.default_rng(14001)
    c = _cells(rng, 8)
    t = np.array(CORNERS, dtype=F32)  # row r sits on corner r
    got = sdf.trilinear(c, t[:, 0], t[:, 1], t[:, 2])
    assert same_bits(got, c[np.arange(8), np.arange(8)], np.float32)


def _rays(rng, n):
    o = rng.uniform(0, 1, (n, 3)).astype(F32)
    d = rng.standard_normal((n, 3))
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(F32)
    return o, d


def _polymul(p, q):
    r = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            r[i + j] += a * b
    return r


def cubic_exact(c, o, d) -> list[Fraction]:
    """Coefficients (c0, c1, c2, c3) of t -> trilinear(o + t d), expanded exactly from the lerp
    weights ((1 - p) or p along each axis): independent of the program's monomial route."""
    out = [Fraction(0)] * 4
    for idx, (i, j, k) in enumerate(CORNERS):
        poly = [Fraction(float(c[idx]))]
        for axis, bit in enumerate((i, j, k)):
            oa, da = Fraction(float(o[axis])), Fraction(float(d[axis]))
            lin = [oa, da] if bit else [1 - oa, -da]
            poly = _polymul(poly, lin)
        for m, v in enumerate(poly):
            out[m] += v
    return out


def test_ray_cubic_ideal_matches_exact_expansion(sdf):
    rng = np.random.default_rng(15000)
    n = 12
    c = _cells(rng, n)
    o, d = _rays(rng, n)
    ideal = sdf.ray_cubic.ideal(c, o, d, as_float=False)
    for r in range(n):
        ex = cubic_exact(c[r], o[r], d[r])
        for m in range(4):
            assert abs(frac(ideal[m][r]) - ex[m]) <= Fraction(2.0 ** -140), (r, m)


def test_ray_cubic_bit_identical_to_float32_numpy(sdf):
    """The program's own operation sequence in numpy float32 (the documented formulation)."""
    rng = np.random.default_rng(15003)
    n = 256
    c = _cells(rng, n)
    o, d = _rays(rng, n)
    ox, oy, oz = o[:, 0], o[:, 1], o[:, 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    e00, e01, e10, e11 = (c[:, 4 + m] - c[:, m] for m in range(4))
    k0, k1, k2, k3 = c[:, 0], e00, c[:, 2] - c[:, 0], c[:, 1] - c[:, 0]
    k4, k5 = e10 - e00, e01 - e00
    k6 = (c[:, 3] - c[:, 2]) - k3
    k7 = (e11 - e01) - k4
    m0, m1, m2 = ox * oy, dx * dy, ox * dy + oy * dx
    a0, a1, a2 = k0 + k1 * ox + k2 * oy + k4 * m0, k1 * dx + k2 * dy + k4 * m2, k4 * m1
    b0, b1, b2 = k3 + k5 * ox + k6 * oy + k7 * m0, k5 * dx + k6 * dy + k7 * m2, k7 * m1
    want = (a0 + oz * b0, a1 + oz * b1 + dz * b0, a2 + oz * b2 + dz * b1, dz * b2)
    got = sdf.ray_cubic(c, o, d)
    for g, w in zip(got, want):
        assert same_bits(g, w, np.float32)


def test_ray_cubic_evaluates_to_trilinear_along_ray(sdf):
    rng = np.random.default_rng(15001)
    n = 400
    c = _cells(rng, n)
    o, d = _rays(rng, n)
    o64, d64 = o.astype(np.float64), d.astype(np.float64)
    ts = np.linspace(0.0, 1.7, 7)
    ideal = sdf.ray_cubic.ideal(c, o, d)
    got = sdf.ray_cubic(c, o, d)
    assert all(g.dtype == np.float32 and g.shape == (n,) for g in got)
    for t in ts:
        p = o64 + t * d64
        ref = trilinear64(c, p[:, 0], p[:, 1], p[:, 2])
        cub_ideal = ((ideal[3] * t + ideal[2]) * t + ideal[1]) * t + ideal[0]
        assert np.allclose(cub_ideal, ref, rtol=0, atol=1e-13)
        g = [a.astype(np.float64) for a in got]
        cub = ((g[3] * t + g[2]) * t + g[1]) * t + g[0]
        # f32 coefficients (|c_m| <~ 4 here, 52 roundings, t <= 1.7): observed <= 1.7e-6
        assert np.all(np.abs(cub - ref) <= 1e-5), float(np.max(np.abs(cub - ref)))
    # c0 is the field at the ray origin
    ref0 = trilinear64(c, o64[:, 0], o64[:, 1], o64[:, 2])
    assert np.allclose(ideal[0], ref0, rtol=0, atol=1e-14)


def test_cubic_eval_bit_identical(sdf):
    rng = np.random.default_rng(15002)
    n = 64
    cs = [rng.standard_normal(n).astype(F32) for _ in range(4)]
    t = rng.uniform(0, 2, n).astype(F32)
    got = sdf.cubic_eval(*cs, t)
    want = ((cs[3] * t + cs[2]) * t + cs[1]) * t + cs[0]
    assert same_bits(got, want, np.float32)
