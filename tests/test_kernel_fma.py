"""The float64 fused multiply-add of ``kernels/fma.py``, against exact rational arithmetic.

Every case is checked against an oracle written here with ``fractions.Fraction`` (the exact
``a*b + c`` rounded once, IEEE 754 ``fusedMultiplyAdd`` for zeros, infinities and NaN), in both
result modes (nearest, and round-to-odd for narrower targets), on the numpy kernel interpreter
and on every compiled backend present (Triton's interpreter, TVM's LLVM build, the CUDA printer's
gcc build). Then through the lowering: f64 ``fma`` into every result format, bit for bit with the
reference backend, and the reference itself against the oracle.
"""

from __future__ import annotations

import itertools
import math
import struct
from fractions import Fraction

import numpy as np
import pytest
from kernel_diff import backend_or_skip, bit_equal

from numgrade.api import compile_source
from numgrade.backends.reference import Interpreter, ReferenceDomain
from numgrade.frontend.constfold import round_exact
from numgrade.ir.dims import Dim
from numgrade.ir.formats import get_format, round_array
from numgrade.kernels import legalize as L
from numgrade.kernels.fma import fma_f64
from numgrade.kernels.interp import run_program as run_ir
from numgrade.kernels.ir import BufferDecl, Kernel, KernelProgram, Loop, ScalarParam, Store, load, var
from numgrade.kernels.runtime import run_program

F64_MAX = 1.7976931348623157e308
TINY = 5e-324


# ---- the oracle --------------------------------------------------------------------------------
def _bits(x: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", x))[0]


def _nearest(x: Fraction) -> float:
    try:
        return float(x)  # CPython rounds int / int correctly, subnormals and signs included
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _odd(x: Fraction) -> float:
    """x rounded to odd on the float64 grid (an inexact result has an odd last bit)."""
    if abs(x) > Fraction(F64_MAX):
        return F64_MAX if x > 0 else -F64_MAX  # to odd never rounds onto the even 2**1024
    f = _nearest(x)
    if Fraction(f) == x:
        return f
    if _bits(f) & 1:
        return f
    return math.nextafter(f, math.inf if Fraction(f) < x else -math.inf)


def oracle(a: float, b: float, c: float, odd: bool) -> float:
    if not (math.isfinite(a) and math.isfinite(b)):
        return a * b + c  # an infinite or NaN product is exact
    if not math.isfinite(c):
        return c
    if a == 0 or b == 0:
        return a * b + c  # exact: IEEE signs of zero
    x = Fraction(a) * Fraction(b) + Fraction(c)
    if x == 0:
        return 0.0
    return _odd(x) if odd else _nearest(x)


def same(x: float, y: float) -> bool:
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return _bits(x) == _bits(y)


# ---- the cases ---------------------------------------------------------------------------------
def _rand(rng, n: int, lo: int = -1074, hi: int = 1023) -> np.ndarray:
    m = rng.random(n) + 1.0
    with np.errstate(all="ignore"):
        return rng.choice([-1.0, 1.0], n) * np.ldexp(m, rng.integers(lo, hi + 1, n))


def cases(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c): random over every binade, midpoint products, cancellation, the scaling
    thresholds, subnormal results and their ties, overflow, and all special combinations."""
    rng = np.random.default_rng(seed)
    parts = []
    # random operands over the whole exponent range, and in a moderate one
    parts.append((_rand(rng, n), _rand(rng, n), _rand(rng, n)))
    parts.append((_rand(rng, n, -60, 60), _rand(rng, n, -60, 60), _rand(rng, n, -130, 130)))
    # products that are exact 53-bit midpoints (54-bit odd), broken by a c of any size or not
    A = (rng.integers(2**26, 2**27, n) | 1).astype(float)
    B = (rng.integers(2**26, 2**27, n) | 1).astype(float)
    ea, eb = rng.integers(-1000, 900, n), rng.integers(-900, 1000, n)
    a, b = np.ldexp(A, ea - 26), np.ldexp(B, eb - 26)
    with np.errstate(all="ignore"):
        p = a * b
        rel = np.ldexp(1.0, -rng.integers(53, 260, n)) * rng.choice([-1.0, 1.0], n)
        kind = rng.integers(0, 5, n)
        c = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                      [0.0, p * rel, -p, -p * (1 + rng.integers(-3, 4, n) * 2.0**-52)], p * rel * 2**60)
    parts.append((a, b, c))
    # c at the scaling thresholds: exponent differences around -110 and +60
    a, b = _rand(rng, n, -200, 200), _rand(rng, n, -200, 200)
    with np.errstate(all="ignore"):
        d = rng.integers(-115, 66, n)
        c = np.ldexp(rng.random(n) + 1.0, np.frexp(a * b)[1] + d) * rng.choice([-1.0, 1.0], n)
    parts.append((a, b, c))
    # the same with c a power of two (a product just below half its ulp matters) and with
    # midpoint products (a c just above the product's grid matters)
    a, b = _rand(rng, n, -200, 200), _rand(rng, n, -200, 200)
    with np.errstate(all="ignore"):
        e = np.frexp(a * b)[1]
        c = np.ldexp(1.0, e + rng.integers(48, 66, n)) * rng.choice([-1.0, 1.0], n)
    parts.append((a, b, c))
    A = (rng.integers(2**26, 2**27, n) | 1).astype(float)
    a, b = np.ldexp(A, -26), np.ldexp((rng.integers(2**26, 2**27, n) | 1).astype(float), -26)
    c = np.ldexp(rng.random(n) + 1.0, -rng.integers(90, 115, n)) * rng.choice([-1.0, 1.0], n)
    parts.append((a, b, c))
    # results in the subnormal range: random, and exact subnormal midpoints nudged by the
    # product's low part ((2k+1) 2**-1075 (1 +- 2**-52)) or by c
    k = rng.integers(0, 2**20, n).astype(float) * 2 + 1
    nudge = rng.choice([0.5 * (1 + 2.0**-52), 0.5 * (1 - 2.0**-53), 0.5], n)
    parts.append((nudge * rng.choice([-1.0, 1.0], n), k * TINY,
                  np.where(rng.random(n) < 0.7, 0.0, TINY * rng.integers(-3, 4, n))))
    parts.append((_rand(rng, n, -560, -500), _rand(rng, n, -560, -480),
                  np.where(rng.random(n) < 0.5, 0.0, _rand(rng, n, -1074, -1000))))
    # overflow: products and sums at the top of the range
    parts.append((_rand(rng, n, 500, 1023), _rand(rng, n, 0, 600),
                  np.where(rng.random(n) < 0.5, -_rand(rng, n, 1000, 1023), F64_MAX)))
    # every combination of special operands
    sp = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, TINY, -TINY, F64_MAX, -F64_MAX,
          2.0**-1022, 3.0, 1e300, -1e-300, 1 + 2.0**-52]
    t = np.array(list(itertools.product(sp, repeat=3)))
    parts.append((t[:, 0], t[:, 1], t[:, 2]))
    return tuple(np.concatenate([q[i] for q in parts]) for i in range(3))  # type: ignore


def test_cases_hit_ties_cancellation_and_subnormals():
    """The oracle inputs really are hard: exact midpoints, cancellations, subnormal results."""
    a, b, c = cases(300)
    ties = cancel = sub = 0
    for x, y, z in zip(a, b, c):
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)) or x == 0 or y == 0:
            continue
        e = Fraction(x) * Fraction(y) + Fraction(z)
        if e == 0:
            cancel += 1
            continue
        f = _nearest(e)
        if math.isfinite(f):
            nb = math.nextafter(f, math.inf if Fraction(f) < e else -math.inf)
            if math.isfinite(nb) and abs(Fraction(nb) - e) == abs(Fraction(f) - e):
                ties += 1
            sub += abs(f) < 2.0**-1022
    assert ties > 100 and cancel > 20 and sub > 300, (ties, cancel, sub)


# ---- the kernel --------------------------------------------------------------------------------
def fma_program() -> KernelProgram:
    """rn[i] = fma(a, b, c) to nearest, ro[i] = the same rounded to odd."""
    i = var("i", "i64")
    blk = L.Block()
    a, b, c = (load(n, i, "f64") for n in "abc")
    rn = fma_f64(blk, a, b, c, odd=False)
    ro = fma_f64(blk, a, b, c, odd=True)
    body = (Loop("i", var("n", "i64"), tuple(blk.stmts) + (Store("rn", i, rn), Store("ro", i, ro))),)
    bufs = {n: BufferDecl(n, "f64", (Dim.sym("n"),), "f64", "in" if n in "abc" else "out")
            for n in ("a", "b", "c", "rn", "ro")}
    k = Kernel("fma_both", (), (), body, ("a", "b", "c", "rn", "ro"), (ScalarParam("n", "i64"),),
               note="float64 fma, nearest and odd")
    return KernelProgram("fma64", bufs, [k], ["a", "b", "c"], ["rn", "ro"], False, [])


def run_fma(launcher, a, b, c) -> tuple[np.ndarray, np.ndarray]:
    n = len(a)
    bufs = {"a": np.array(a), "b": np.array(b), "c": np.array(c), "rn": np.zeros(n),
            "ro": np.zeros(n)}
    launcher(bufs, {"n": n})
    return bufs["rn"], bufs["ro"]


def check_against_oracle(a, b, c, rn, ro) -> None:
    bad = []
    for j, (x, y, z) in enumerate(zip(a, b, c)):
        x, y, z = float(x), float(y), float(z)
        for odd, got in ((False, rn[j]), (True, ro[j])):
            want = oracle(x, y, z, odd)
            if not same(want, got):
                bad.append((odd, x.hex(), y.hex(), z.hex(), want, got))
    assert not bad, f"{len(bad)} wrong, e.g. {bad[:3]}"


def test_fma_is_correctly_rounded_on_the_kernel_interpreter():
    a, b, c = cases(4000)
    prog = fma_program()
    rn, ro = run_fma(lambda bufs, sc: run_ir(prog, bufs, sc), a, b, c)
    check_against_oracle(a, b, c, rn, ro)


@pytest.mark.parametrize("backend", ["triton", "tvm", "cuda-host"])
def test_fma_is_correctly_rounded_on_compiled_backends(backend, tmp_path_factory):
    be = backend_or_skip(backend, tmp_path_factory)
    a, b, c = cases(250, seed=1)
    rn, ro = run_fma(be.build(fma_program()), a, b, c)
    check_against_oracle(a, b, c, rn, ro)


# ---- through the lowering and the reference -----------------------------------------------------
RESULTS = ["f64", "f32", "f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0", "i32"]
COMPILED_RESULTS = ["f64", "f32", "e4m3", "e2m1"]  # compile time: a subset on the compilers
OPERANDS = [("a", "b", "c"), ("d", "a", "c"), ("d", "d", "a"), ("d", "d", "d")]
FMA_SRC = "fn f(a: f64[N], b: f64[N], c: f64[N], d: f32[N]) -> ({types}) {{\n{lets}\n  return ({outs})\n}}\n"


def fma_module(results=RESULTS):
    """fma of f64 and f32 operands (mixed too) into each result format, in that order."""
    lets, outs, types = [], [], []
    for r in results:
        for k, (x, y, z) in enumerate(OPERANDS):
            lets.append(f"  let v_{r}_{k}: {r}[N] = fma({x}, {y}, {z})")
            outs.append(f"v_{r}_{k}")
            types.append(f"{r}[N]")
    return compile_source(FMA_SRC.format(types=", ".join(types), lets="\n".join(lets),
                                         outs=", ".join(outs)))


def lowering_inputs(n: int, specials: int = 600):
    """cases(n) with a sample of the special combinations, and an f32 operand."""
    a, b, c = cases(n, seed=2)
    keep = np.concatenate([np.arange(8 * n), 8 * n + np.random.default_rng(4).choice(
        len(a) - 8 * n, specials, replace=False)])
    m = len(keep)
    d = np.asarray(round_array(_rand(np.random.default_rng(3), m, -140, 120), get_format("f32")))
    d[:8] = [0.0, -0.0, np.inf, np.nan, 1.5, -3.0, 2.0**-149, 2.0**127]
    return [a[keep], b[keep], c[keep], d]


def test_reference_fma_is_the_exact_value_rounded_once():
    """The reference backend's fma (both of its paths) agrees with the oracle here."""
    a, b, c, d = lowering_inputs(100)
    mod = fma_module()
    ref = Interpreter(mod.ir).run("f", [a, b, c, d])
    operands = [(a, b, c), (d, a, c), (d, d, a), (d, d, d)]
    for j, r in enumerate(RESULTS):
        fmt = get_format(r)
        for k, (x, y, z) in enumerate(operands):
            got = ref[4 * j + k]
            for t in range(0, len(x), 7):
                xv, yv, zv = float(x[t]), float(y[t]), float(z[t])
                exact_ok = all(map(math.isfinite, (xv, yv, zv))) and xv != 0 and yv != 0
                if r == "f64" or not exact_ok:
                    want = oracle(xv, yv, zv, False) if r == "f64" else \
                        float(round_array(np.array([oracle(xv, yv, zv, False)]), fmt)[0])
                else:
                    e = Fraction(xv) * Fraction(yv) + Fraction(zv)
                    want = round_exact(e, fmt)
                assert same(want, float(got[t])), (r, k, xv, yv, zv, want, got[t])


def test_reference_fma_signed_zeros_and_infinities_do_not_depend_on_the_path():
    """A zero product plus -0, or a finite product plus an infinity, give the IEEE result
    whether or not another element sends the reference to its exact (Fraction) path."""
    dom = ReferenceDomain()
    f64 = get_format("f64")
    wide = 1 + 2.0**-52  # 53 significant bits: forces the Fraction path for the whole array
    for extra in ([], [wide]):
        a = np.array([-0.0, 1e300, -1.0] + extra)
        b = np.array([1.0, 1e300, 0.0] + extra)
        c = np.array([-0.0, -np.inf, -0.0] + extra)
        r = dom.fma(a, b, c, f64)
        assert same(r[0], -0.0) and r[1] == -np.inf and same(r[2], -0.0), (extra, r)


@pytest.mark.parametrize("backend", ["kernel-interp", "triton", "tvm", "cuda-host"])
def test_f64_fma_lowers_bit_exact_into_every_format(backend, tmp_path_factory):
    be = backend_or_skip(backend, tmp_path_factory)
    results = RESULTS if backend == "kernel-interp" else COMPILED_RESULTS
    mod = fma_module(results)
    f = mod.f
    prog = f.kernels()
    args = lowering_inputs(150 if backend == "kernel-interp" else 40)
    want = Interpreter(mod.ir).run("f", args)
    got = run_program(prog, be.build(prog), f.ir, args)
    # LLVM does not preserve a NaN's sign (it may commute an fadd whose operands are both
    # NaN; LangRef, "Floating-Point Environment" / NaN payloads), so on the compiled backends
    # the sign of a NaN, and of the zero an e2m1 rounding makes of it, is the one thing left
    # to the compiler where an operand is not finite
    nonfinite = ~np.all([np.isfinite(np.asarray(a, np.float64)) for a in args], axis=0)

    def same(x, y) -> bool:
        if bit_equal(x, y) or backend == "kernel-interp":
            return bit_equal(x, y)
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        loose = nonfinite & (np.isnan(x) & np.isnan(y) | (x == 0) & (y == 0))
        return bool(np.all(np.where(loose, True, (x == y) | np.isnan(x) & np.isnan(y)) &
                           np.where(loose, True, np.signbit(x) == np.signbit(y))))
    bad = [i for i, (x, y) in enumerate(zip(want, got)) if not same(x, y)]
    assert not bad, [(results[i // len(OPERANDS)], OPERANDS[i % len(OPERANDS)]) for i in bad]


def test_emulation_compiles_to_ptx_without_a_hardware_fma():
    """On a GPU the emulation must stay plain multiplies and adds (no contraction into fma)."""
    import re

    from numgrade.backends.triton_backend import compile_ptx
    ptx = compile_ptx(fma_program(), "sm_90a")["fma_both"]
    assert ".entry" in ptx and "mul.rn.f64" in ptx and "add.rn.f64" in ptx
    assert not re.search(r"\bfma\.", ptx)
