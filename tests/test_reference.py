"""The reference interpreter against independent implementations of its documented rules."""

from __future__ import annotations

from fractions import Fraction

import ml_dtypes
import mpmath
import numpy as np
import pytest

import numgrade as ng

FMT_DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16,
              "e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}


@pytest.mark.parametrize("fmt", list(FMT_DTYPES))
@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_elementwise_arithmetic_matches_native_dtypes(fmt, op):
    """numpy/ml_dtypes compute these in f32 and round once, which is exact for p <= 11."""
    dt = FMT_DTYPES[fmt]
    fn = ng.compile_source(f"fn f(a: {fmt}[N], b: {fmt}[N]) -> {fmt}[N] {{ return a {op} b }}").f
    rng = np.random.default_rng(hash((fmt, op)) % 2 ** 32)
    scale = 100.0 if fmt in ("e4m3", "e5m2") else 1e3
    a = (rng.standard_normal(5000) * scale).astype(np.float32).astype(dt)
    b = (rng.standard_normal(5000) * scale).astype(np.float32).astype(dt)
    b[b.astype(np.float32) == 0] = dt(1.0)
    with np.errstate(all="ignore"):
        if fmt in ("f32", "f16"):
            want = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
        else:  # ml_dtypes arithmetic on 8/16-bit floats goes through float32
            fa, fb = a.astype(np.float32), b.astype(np.float32)
            want = {"+": fa + fb, "-": fa - fb, "*": fa * fb, "/": fa / fb}[op].astype(dt)
    got = fn(a, b)
    assert got.dtype == np.dtype(dt)
    g, w = got.astype(np.float64), want.astype(np.float64)
    assert np.array_equal(g, w, equal_nan=True)


def test_f64_operations_are_native_ieee():
    fn = ng.compile_source("fn f(a: f64[N], b: f64[N]) -> f64[N] { return (a * b + a) / b }").f
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(1000), rng.standard_normal(1000)
    assert np.array_equal(fn(a, b), (a * b + a) / b)


def _pairwise(xs: list, add):
    level = list(xs)
    while len(level) > 1:
        if len(level) % 2:
            level.append(-0.0)
        level = [add(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000])
def test_sum_orders_follow_their_documented_definitions(n):
    src = """
    fn f(x: f32[N]) -> (f32, f32, f32, f32) {
        return (sum(x), sum(x, order=seq), sum(x, order=kahan), mean(x, order=seq))
    }
    """
    fn = ng.compile_source(src).f
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * np.exp(rng.uniform(-8, 8, n))).astype(np.float32)
    f32 = np.float32
    pw, seq, kah, mean = (np.float32(v) for v in fn(x))
    assert pw == _pairwise([f32(v) for v in x], lambda a, b: f32(a) + f32(b))
    s = f32(x[0])
    for v in x[1:]:
        s = f32(s + v)
    assert seq == s
    assert mean == f32(s / f32(n))
    s, c = f32(x[0]), f32(0)
    for v in x[1:]:
        y = f32(v - c)
        t = f32(s + y)
        c = f32(f32(t - s) - y)
        s = t
    assert kah == s


def test_kahan_is_more_accurate_than_naive_on_an_ill_conditioned_sum():
    fn = ng.compile_source("fn f(x: f32[N]) -> (f32, f32) "
                           "{ return (sum(x, order=seq), sum(x, order=kahan)) }").f
    x = np.array([1.0] + [1e-8] * 10000, np.float32)
    naive, kahan = fn(x)
    exact = float(sum(Fraction(float(v)) for v in x))
    assert abs(float(kahan) - exact) < abs(float(naive) - exact) / 100


def test_sum_with_wider_accumulator():
    fn = ng.compile_source("fn f(x: bf16[N]) -> f32 { return sum(x, acc=f32, order=seq) }").f
    x = np.full(4096, 1.0, ml_dtypes.bfloat16)
    assert float(fn(x)) == 4096.0  # bf16 accumulation would stall at 256


def test_matmul_rounds_products_and_sums_left_to_right_in_acc():
    fn = ng.compile_source("fn f(a: f32[M, K], b: f32[K, N]) -> (f32[M, N], f32[M, N]) "
                           "{ return (a @ b, matmul(a, b, acc=f64)) }").f
    rng = np.random.default_rng(5)
    a = rng.standard_normal((3, 17)).astype(np.float32)
    b = rng.standard_normal((17, 4)).astype(np.float32)
    c32, c64 = fn(a, b)
    for i in range(3):
        for j in range(4):
            s = np.float32(a[i, 0] * b[0, j])
            t = float(a[i, 0]) * float(b[0, j])
            for k in range(1, 17):
                s = np.float32(s + np.float32(a[i, k] * b[k, j]))
                t = t + float(a[i, k]) * float(b[k, j])
            assert c32[i, j] == s
            assert c64[i, j] == np.float32(t)


def test_reductions_over_several_axes_and_max_min():
    fn = ng.compile_source("fn f(x: f32[A, B, C]) -> (f32[B], f32[A, 1, C], f32) "
                           "{ return (max(x, axis=[0, 2]), min(x, axis=1, keepdims=true), "
                           "sum(x, order=seq)) }").f
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    mx, mn, s = fn(x)
    assert np.array_equal(mx, x.max(axis=(0, 2)))
    assert np.array_equal(mn, x.min(axis=1, keepdims=True))
    acc = np.float32(0)
    for v in x.reshape(-1):
        acc = np.float32(acc + v)
    assert s == acc


def test_ideal_mode_removes_every_rounding():
    src = "fn f(x: f32[N]) -> f32 { return sum(round(x * 3.0, e2m1) as f32 / 7.0, order=seq) }"
    fn = ng.compile_source(src).f
    x = np.array([0.1, 0.7, 1.3], np.float32)
    ideal = fn.ideal(x, as_float=False)
    exact = sum(Fraction(float(v)) * 3 / 7 for v in x)
    assert abs(Fraction(mpmath.mpf(ideal).__float__()) - exact) < Fraction(1, 10 ** 15)
    assert abs(float(fn(x)) - float(exact)) > 1e-3  # e2m1 rounding makes the computed value differ


def test_ideal_mode_keeps_high_precision_for_f64_programs():
    fn = ng.compile_source("fn f(x: f64, y: f64) -> f64 { return (x + y) - x }").f
    computed = fn(1e16, 1.0)
    ideal = fn.ideal(1e16, 1.0, as_float=False)
    assert computed == 0.0 and ideal == 1  # 1e16 + 1 rounds to 1e16: the error is exactly 1


def test_torch_in_torch_out_with_low_precision_dtypes():
    torch = pytest.importorskip("torch")
    src = """
    fn f(x: f32[N]) -> (e4m3[N], bf16[N], e2m1[N], f32[N]) {
        return (x as e4m3, x as bf16, x as e2m1, x * 2.0)
    }
    """
    fn = ng.compile_source(src).f
    x = torch.tensor([0.3, -1.7, 100.0], dtype=torch.float32)
    a, b, c, d = fn(x)
    assert a.dtype == torch.float8_e4m3fn and b.dtype == torch.bfloat16
    assert c.dtype == torch.float32 and d.dtype == torch.float32
    assert torch.equal(a.float(), x.to(torch.float8_e4m3fn).float())
    assert torch.equal(b, x.to(torch.bfloat16))
    assert c.tolist() == [0.5, -1.5, 6.0]


def test_numpy_out_dtypes_are_ml_dtypes():
    fn = ng.compile_source("fn f(x: f32[N]) -> (e2m1[N], e8m0[N], i32[N], bool[N]) "
                           "{ return (x as e2m1, x as e8m0, x as i32, x > 0.0) }").f
    a, b, c, d = fn(np.array([1.0, 3.0], np.float32))
    assert a.dtype == ml_dtypes.float4_e2m1fn and b.dtype == ml_dtypes.float8_e8m0fnu
    assert c.dtype == np.int32 and d.dtype == np.bool_


def test_rand_values_are_exact_f32_in_unit_interval_and_reproducible():
    fn = ng.compile_source("fn f(x: f32[N]) -> f32[N] ! {rand} { return x + rand([N]) }").f
    z = np.zeros(10000, np.float32)
    u = fn(z, seed=1)
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    assert np.array_equal(u, fn(z, seed=1)) and not np.array_equal(u, fn(z, seed=2))


def test_inputs_are_rounded_to_the_parameter_format():
    fn = ng.compile_source("fn f(x: bf16) -> bf16 { return x }").f
    assert float(fn(1.0 + 2 ** -9)) == 1.0  # f64 input rounded (RNE) to bf16 on entry


def test_ideal_mode_uses_exact_constants():
    fn = ng.compile_source("const C: f32 = 0.1\nfn f(x: f32) -> f32 { return x * C + x * 0.3 }").f
    ideal = fn.ideal(np.float32(1.0), as_float=False)
    assert abs(Fraction(float(mpmath.mpf(ideal))) - Fraction(4, 10)) < Fraction(1, 10 ** 15)
    c = fn.ir.results[0].srcs[0].srcs[1]
    assert c.attrs[1] == (Fraction(1, 10),)  # the rounded value and the exact one are both kept
