"""@numgrade.kernel: Python functions lower to the same IR as the Grade language."""

from __future__ import annotations

import numpy as np
import pytest

import numgrade as ng
from numgrade.ir.printer import print_function


@ng.kernel
def axpy(a: ng.f32, x: ng.f32["N"], y: ng.f32["N"]) -> ng.f32["N"]:
    return a * x + y


@ng.kernel
def rms(x: ng.f32["T", "D"].within(-10, 10)) -> ng.f32["T", "D"]:
    """Row-wise RMS normalisation."""
    ms = ng.mean(x * x, axis=-1, keepdims=True)
    return x * ng.rsqrt(ms + 1e-6)


@ng.kernel
def quant(x: ng.f32["M", "N"]) -> (ng.e4m3["M", "N"], ng.f32):
    amax = ng.max(ng.abs(x))
    s = 448.0 / amax
    return (x * s).as_(ng.e4m3), 1.0 / s


def test_axpy_runs_and_matches_grade_source():
    x = np.arange(4, dtype=np.float32)
    assert np.array_equal(axpy(np.float32(2), x, x), 2 * x + x)
    same = ng.compile_source("fn axpy(a: f32, x: f32[N], y: f32[N]) -> f32[N] "
                             "{ return a * x + y }").axpy
    assert axpy.ir.results[0] is same.ir.results[0]  # hash-consed: the very same IR


def test_reductions_keywords_ranges_and_docstrings():
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    got = rms(x)
    want = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)
    assert np.allclose(got, want, rtol=1e-6)
    assert rms.ir.params[0].range == (-10.0, 10.0)


def test_tuple_results_and_casts():
    x = np.array([[1.0, -2.0], [0.5, 4.0]], np.float32)
    q, inv = quant(x)
    assert str(q.dtype) == "float8_e4m3fn"
    assert float(q.astype(np.float32).max()) == 448.0 and np.isclose(float(inv), 4 / 448)
    assert "round" in print_function(quant.ir)


def test_stochastic_rounding_needs_no_decorator_flag_but_an_effect_error_is_clear():
    with pytest.raises(ng.GradeError, match="rand"):
        @ng.kernel
        def sr(x: ng.f32["N"]) -> ng.e2m1["N"]:
            return ng.round(x, ng.e2m1, mode="sr")


def test_unsupported_python_is_a_located_diagnostic():
    with pytest.raises(ng.GradeError) as ei:
        @ng.kernel
        def loop(x: ng.f32["N"]) -> ng.f32["N"]:
            for _ in range(3):
                x = x + 1.0
            return x
    d = ei.value.diagnostics[0]
    assert "not supported" in d.message and d.span.file.endswith("test_embed.py")
    assert "for _ in range(3)" in str(ei.value)


def test_missing_annotation_and_bad_names():
    with pytest.raises(ng.GradeError, match="annotation"):
        @ng.kernel
        def f(x) -> ng.f32:
            return x
    with pytest.raises(ng.GradeError, match="unknown name 'z'"):
        @ng.kernel
        def g(x: ng.f32) -> ng.f32:
            return z  # noqa: F821
    with pytest.raises(ng.GradeError, match="dimension"):
        ng.f32[1.5]
