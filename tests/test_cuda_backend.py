"""The CUDA C backend: printing checked bit for bit on the CPU, nvcc builds, GPU launches.

Without a GPU the printed kernel bodies are compiled by gcc (the backend's host variant) and run
against two oracles: an independent numpy computation written here and the kernel-IR
interpreter. The same programs are compiled by nvcc to PTX and cubin for sm_90a and sm_100a
(the PTX must show no fused multiply-add), the stdlib printed for each arch with its hardware
conversions, whose instructions the quantisers' PTX must (and, on the arch without them, must
not) contain; tests/test_cuda_convert.py checks those conversions themselves. Tests marked
``gpu`` launch them on a device.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from kernel_diff import fold_levels, fold_seq

from numgrade.backends.cuda_backend import (ARCHS, NVCC_FLAGS, CudaBackend, CudaHostBackend,
                                            c_literal, c_name, emit_bundle, emit_program,
                                            nvcc_compile_archs)
from numgrade.kernels.interp import run_program
from numgrade.kernels.ir import (MATH_OPS, Assign, BufferDecl, Decl, Kernel, KernelProgram,
                                 KExpr, Let, Loop, Reduce, ScalarParam, Store, acc_vars, const,
                                 load, select, unary, var)

I64 = "i64"
i, j, k, r, c = (var(n, I64) for n in "ijkrc")
n_, m_ = var("n", I64), var("m", I64)


def f64(v: float) -> KExpr:
    return const(v, "f64")


def f32(v: float) -> KExpr:
    return const(v, "f32")


def i64(v: int) -> KExpr:
    return const(v, I64)


def buf(name: str, storage: str, role: str) -> BufferDecl:
    return BufferDecl(name, storage, (), storage, role)


@dataclass
class Case:
    """A hand-built program, inputs for given sizes, and its numpy expectation."""

    program: KernelProgram
    inputs: Callable[[np.random.Generator, dict[str, int]], dict[str, np.ndarray]]
    sizes: list[dict[str, int]]
    expect: Callable[[dict[str, np.ndarray], dict[str, int]], dict[str, np.ndarray]] | None


def allocate(program: KernelProgram, given: dict[str, np.ndarray],
             lengths: dict[str, int]) -> dict[str, np.ndarray]:
    """Inputs as given; outputs and temporaries zero-filled with the stated lengths."""
    out = {}
    for name, d in program.buffers.items():
        if name in given:
            out[name] = np.ascontiguousarray(given[name])
        else:
            out[name] = np.zeros(lengths[name], dtype=np.dtype(_NP[d.storage]))
    return out


_NP = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "i32": np.int32,
       "u64": np.uint64, "u32": np.uint32, "u16": np.uint16, "u8": np.uint8}


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(f"u{a.itemsize}") if a.dtype.kind == "f" else a


def assert_bits(got: np.ndarray, want: np.ndarray, what: str, nan_payload: bool = False) -> None:
    """Bitwise equality, but any NaN matches any NaN unless ``nan_payload``: which operand's
    payload an operation propagates is up to the compiler (operand order) and the hardware."""
    assert got.dtype == want.dtype, (what, got.dtype, want.dtype)
    same = bits(got) == bits(want)
    if not nan_payload and got.dtype.kind == "f":
        same |= np.isnan(got) & np.isnan(want)
    bad = np.flatnonzero(~same)
    assert bad.size == 0, (f"{what}: {bad.size} of {got.size} differ, first at {bad[0]}: "
                           f"got {got[bad[0]]!r} want {want[bad[0]]!r}")


# ---------------------------------------------------------------------------------------------
# the programs
def special_f64(rng: np.random.Generator, n: int) -> np.ndarray:
    sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -2.5e-310, 2.2250738585072014e-308,
                   1.7976931348623157e308, 2.5, -3.5, 0.5, 1.5, -0.5, 3.4028235677973366e38,
                   3.4028235677973362e38, 1.401298464324817e-45, 7.006492321624085e-46,
                   2.0 ** 53 + 1, -(2.0 ** 63), 4294967295.9, 1e19])
    with np.errstate(over="ignore"):  # some overflow to inf on purpose
        x = rng.standard_normal(n) * 2.0 ** rng.integers(-1080, 1030, n)
    x[: min(n, sp.size)] = sp[: min(n, sp.size)]
    return rng.permutation(x)


def special_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1.1754944e-38, 3.4028235e38, 2.5,
                   -3.5, 0.5, 16777217.0], dtype=np.float32)
    with np.errstate(over="ignore"):
        x = (rng.standard_normal(n) * 2.0 ** rng.integers(-150, 128, n)).astype(np.float32)
    x[: min(n, sp.size)] = sp[: min(n, sp.size)]
    return rng.permutation(x)


def ints(rng: np.random.Generator, n: int, dtype, edges=()) -> np.ndarray:
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
    e = np.array([info.min, info.max, 0, 1] + list(edges), dtype=dtype)
    x[: min(n, e.size)] = e[: min(n, e.size)]
    return rng.permutation(x)


def elementwise_case() -> Case:
    """Every primitive op family, with the numpy result each must match."""
    a, b = load("a", i, "f64"), load("b", i, "f64")
    s, t = load("s", i, "f32"), load("t", i, "f32")
    p, q = load("p", i, I64), load("q", i, I64)
    u, w = load("u", i, "u32"), load("w", i, "u32")
    h, c8 = load("h", i, "u16"), load("c8", i, "u8")
    kq = q % i64(7) + i64(1)
    kw = w % const(13, "u32") + const(1, "u32")
    a_i = select(unary("abs", a).lt(f64(9.2e18)), a, f64(0.0))  # in range for a cast to i64
    a_u = select(a.ge(f64(0.0)) & a.lt(f64(4294967296.0)), a, f64(0.0))
    s_i = select(unary("abs", s).lt(f32(9.2e18)), s, f32(0.0))
    cols: dict[str, list[tuple[KExpr, Callable]]] = {
        "f64": [
            (a + b, lambda d: d["a"] + d["b"]), (a - b, lambda d: d["a"] - d["b"]),
            (a * b, lambda d: d["a"] * d["b"]), (a / b, lambda d: d["a"] / d["b"]),
            (a * b + a, lambda d: d["a"] * d["b"] + d["a"]),
            (unary("sqrt", unary("abs", a)), lambda d: np.sqrt(np.abs(d["a"]))),
            (unary("floor", a), lambda d: np.floor(d["a"])),
            (unary("ceil", a), lambda d: np.ceil(d["a"])),
            (unary("trunc", a), lambda d: np.trunc(d["a"])),
            (unary("rint", a), lambda d: np.rint(d["a"])),
            (-a, lambda d: -d["a"]),
            (select(a.lt(b), a, b), lambda d: np.where(d["a"] < d["b"], d["a"], d["b"])),
            (s.cast("f64"), lambda d: d["s"].astype(np.float64)),
            (p.cast("f64"), lambda d: d["p"].astype(np.float64)),
            (u.cast("f64"), lambda d: d["u"].astype(np.float64)),
            (p.bitcast("f64"), lambda d: d["p"].view(np.float64)),
            (p.bitcast("u64").cast("f64"), lambda d: d["p"].view(np.uint64).astype(np.float64)),
            (f64(math.inf) + a * f64(0.0), lambda d: np.inf + d["a"] * 0.0),
            (f64(math.nan), lambda d: np.full(d["a"].size, np.nan)),
            (f64(-0.0) * b, lambda d: -0.0 * d["b"]),
            (a * f64(0.1), lambda d: d["a"] * 0.1),
            (a + f64(5e-324), lambda d: d["a"] + 5e-324),
            ((p >> i64(3)).cast("f64"), lambda d: (d["p"] >> 3).astype(np.float64)),
            ((a.lt(b)).cast("f64"), lambda d: (d["a"] < d["b"]).astype(np.float64)),
        ],
        "f32": [
            (s + t, lambda d: d["s"] + d["t"]), (s - t, lambda d: d["s"] - d["t"]),
            (s * t, lambda d: d["s"] * d["t"]), (s / t, lambda d: d["s"] / d["t"]),
            (s * t + s, lambda d: d["s"] * d["t"] + d["s"]),
            (unary("sqrt", unary("abs", s)), lambda d: np.sqrt(np.abs(d["s"]))),
            (unary("rint", s), lambda d: np.rint(d["s"])),
            (unary("abs", s), lambda d: np.abs(d["s"])),
            (a.cast("f32"), lambda d: d["a"].astype(np.float32)),
            (p.cast("f32"), lambda d: d["p"].astype(np.float32)),
            (p.bitcast("u64").cast("f32"), lambda d: d["p"].view(np.uint64).astype(np.float32)),
            (u.cast("f32"), lambda d: d["u"].astype(np.float32)),
            (u.bitcast("f32"), lambda d: d["u"].view(np.float32)),
            (f32(0.1) * s, lambda d: np.float32(0.1) * d["s"]),
            (f32(1e-45) + s, lambda d: np.float32(1e-45) + d["s"]),
            ((f32(0.1) + s) * t, lambda d: (np.float32(0.1) + d["s"]) * d["t"]),
        ],
        "i64": [
            (p + q, lambda d: d["p"] + d["q"]), (p - q, lambda d: d["p"] - d["q"]),
            (p * q, lambda d: d["p"] * d["q"]), (-p, lambda d: -d["p"]),
            (unary("abs", p), lambda d: np.abs(d["p"])),
            (q / kq, lambda d: d["q"] // (d["q"] % 7 + 1)),
            (q % kq, lambda d: d["q"] % (d["q"] % 7 + 1)),
            (p >> i64(5), lambda d: d["p"] >> 5), (p << i64(7), lambda d: d["p"] << 7),
            (p >> (q % i64(64)), lambda d: d["p"] >> (d["q"] % 64)),
            (a_i.cast(I64), lambda d: np.where(np.abs(d["a"]) < 9.2e18, d["a"], 0.0)
             .astype(np.int64)),
            (s_i.cast(I64), lambda d: np.where(np.abs(d["s"]) < np.float32(9.2e18), d["s"], 0)
             .astype(np.int64)),
            (a.bitcast(I64), lambda d: d["a"].view(np.int64)),
            (select(p.gt(q), p, q), lambda d: np.maximum(d["p"], d["q"])),
            ((p ^ q) & i64(-16), lambda d: (d["p"] ^ d["q"]) & -16),
            (p | q, lambda d: d["p"] | d["q"]),
            (a.lt(b).cast(I64), lambda d: (d["a"] < d["b"]).astype(np.int64)),
            (u.cast(I64), lambda d: d["u"].astype(np.int64)),
            (i64(-2 ** 63) + p * i64(0), lambda d: np.full(d["p"].size, -2 ** 63, np.int64)),
        ],
        "u32": [
            (u * w, lambda d: d["u"] * d["w"]), (u + w, lambda d: d["u"] + d["w"]),
            (u - w, lambda d: d["u"] - d["w"]), (-u, lambda d: (0 - d["u"].astype(np.uint64))
                                                 .astype(np.uint32)),
            (u >> const(7, "u32"), lambda d: d["u"] >> 7),
            (u << const(9, "u32"), lambda d: d["u"] << 9),
            (u >> (q % i64(32)), lambda d: d["u"] >> (d["q"] % 32).astype(np.uint32)),
            (s.bitcast("u32"), lambda d: d["s"].view(np.uint32)),
            (u / kw, lambda d: d["u"] // (d["w"] % 13 + 1)),
            (u % kw, lambda d: d["u"] % (d["w"] % 13 + 1)),
            (a_u.cast("u32"), lambda d: np.where((d["a"] >= 0) & (d["a"] < 2.0 ** 32), d["a"], 0)
             .astype(np.uint32)),
            (p.cast("u32"), lambda d: d["p"].astype(np.uint32)),
            (const(-1, "u32") ^ u, lambda d: ~d["u"]),
            (s.bitcast("i32").cast("u32") >> const(31, "u32"),
             lambda d: d["s"].view(np.uint32) >> 31),
            ((s.bitcast("i32") >> const(31, "i32")).bitcast("u32"),
             lambda d: (d["s"].view(np.int32) >> 31).view(np.uint32)),
            ((s.bitcast("i32") * const(-3, "i32")).bitcast("u32"),
             lambda d: (d["s"].view(np.int32) * np.int32(-3)).view(np.uint32)),
        ],
        "u16": [
            (h * h, lambda d: d["h"] * d["h"]), (h + h, lambda d: d["h"] + d["h"]),
            (h - (h >> const(1, "u16")) * const(3, "u16"),
             lambda d: d["h"] - (d["h"] >> 1) * np.uint16(3)),
            (h << const(5, "u16"), lambda d: d["h"] << 5), (-h, lambda d: 0 - d["h"]),
            (u.cast("u16"), lambda d: d["u"].astype(np.uint16)),
        ],
        "u8": [
            (c8 + c8, lambda d: d["c8"] + d["c8"]), (c8 * c8, lambda d: d["c8"] * d["c8"]),
            (-c8, lambda d: 0 - d["c8"]), (c8 << const(3, "u8"), lambda d: d["c8"] << 3),
            (c8 ^ (c8 >> const(1, "u8")), lambda d: d["c8"] ^ (d["c8"] >> 1)),
            (c8.gt(const(100, "u8")).cast("u8"), lambda d: (d["c8"] > 100).astype(np.uint8)),
            (p.cast("bool").cast("u8"), lambda d: (d["p"] != 0).astype(np.uint8)),
            ((a.ne(a) | unary("not", s.le(t))).cast("u8"),
             lambda d: (np.isnan(d["a"]) | ~(d["s"] <= d["t"])).astype(np.uint8)),
            (a.eq(b).cast("u8"), lambda d: (d["a"] == d["b"]).astype(np.uint8)),
            (u.cast("u8"), lambda d: d["u"].astype(np.uint8)),
            (h.cast("f64").cast("u8") + c8, lambda d: (d["h"].astype(np.float64)
                                                       .astype(np.uint8) + d["c8"])),
        ],
    }
    body, stores = [], []
    for dt, col in cols.items():
        kk = len(col)
        for jj, (e, _) in enumerate(col):
            assert e.dtype == dt, (dt, jj, e)
            stores.append(Store(f"o_{dt}", i * i64(kk) + i64(jj), e))
    body = (Let("ng_unused", a),) + tuple(stores)  # an "ng_" name must be moved aside
    ins = {"a": "f64", "b": "f64", "s": "f32", "t": "f32", "p": I64, "q": I64, "u": "u32",
           "w": "u32", "h": "u16", "c8": "u8"}
    buffers = {n: buf(n, d, "in") for n, d in ins.items()}
    buffers.update({f"o_{dt}": buf(f"o_{dt}", dt, "out") for dt in cols})
    kern = Kernel("elementwise", (n_,), ("i",), body, tuple(buffers),
                  (ScalarParam("n", I64),))
    prog = KernelProgram("elementwise", buffers, [kern], list(ins), [f"o_{dt}" for dt in cols],
                         True, ["n"])

    def inputs(rng, sz):
        nn = sz["n"]
        return {"a": special_f64(rng, nn), "b": special_f64(rng, nn), "s": special_f32(rng, nn),
                "t": special_f32(rng, nn),
                "p": ints(rng, nn, np.int64, [2 ** 53 + 1, -1, 2 ** 62 + 3]),
                "q": rng.integers(0, 2 ** 62, nn, dtype=np.int64),
                "u": ints(rng, nn, np.uint32), "w": ints(rng, nn, np.uint32),
                "h": ints(rng, nn, np.uint16), "c8": ints(rng, nn, np.uint8),
                **{f"o_{dt}": np.zeros(nn * len(col), _NP[dt]) for dt, col in cols.items()}}

    def expect(d, sz):
        with np.errstate(all="ignore"):
            return {f"o_{dt}": np.stack([np.asarray(f(d), dtype=_NP[dt]) for _, f in col], axis=1)
                    .reshape(-1) for dt, col in cols.items()}

    return Case(prog, inputs, [{"n": 1000}, {"n": 1}, {"n": 0}], expect)


def serial_case() -> Case:
    """Horner's rule in a serial loop (Decl/Assign), a counter, and a nested parallel loop."""
    x = load("x", i, "f64")
    cj = load("c", j, "f64")
    acc, cnt = var("acc", "f64"), var("cnt", I64)
    body = (
        Decl("acc", f64(0.0)), Decl("cnt", i64(0)),
        Loop("j", m_, (Let("cj", cj), Assign("acc", acc * x + var("cj", "f64")),
                       Assign("cnt", cnt + select(var("cj", "f64").gt(f64(0.0)), i64(1), i64(0)))),
             "serial"),
        Store("y", i, acc), Store("cnt_out", i, cnt),
        Loop("j", m_, (Store("outer", i * m_ + j, x * cj - f64(1.0)),)),
    )
    bufs = {"x": buf("x", "f64", "in"), "c": buf("c", "f64", "in"), "y": buf("y", "f64", "out"),
            "cnt_out": buf("cnt_out", I64, "out"), "outer": buf("outer", "f64", "out")}
    kern = Kernel("horner", (n_,), ("i",), body, tuple(bufs),
                  (ScalarParam("n", I64), ScalarParam("m", I64)))
    prog = KernelProgram("horner", bufs, [kern], ["x", "c"], ["y", "cnt_out", "outer"], True,
                         ["n", "m"])

    def inputs(rng, sz):
        nn, mm = sz["n"], sz["m"]
        return {"x": rng.standard_normal(nn), "c": rng.standard_normal(mm),
                "y": np.zeros(nn), "cnt_out": np.zeros(nn, np.int64), "outer": np.zeros(nn * mm)}

    def expect(d, sz):
        y = np.zeros(sz["n"])
        for cv in d["c"]:
            y = y * d["x"] + cv
        return {"y": y, "cnt_out": np.full(sz["n"], int((d["c"] > 0).sum()), np.int64),
                "outer": (d["x"][:, None] * d["c"][None, :] - 1.0).reshape(-1)}

    return Case(prog, inputs, [{"n": 17, "m": 5}, {"n": 3, "m": 0}, {"n": 1, "m": 1000}], expect)






def reduce_case() -> Case:
    """Per row: order-sensitive float and integer folds in seq and pairwise order, a pairwise
    f32->f64 sum through ``leaf``, a NaN-propagating max in ``any`` order."""
    fa, fb = acc_vars("f64")
    ua, ub = acc_vars("u64")
    _, sb = acc_vars("f32")
    idx = r * m_ + j
    x, y, z = load("x", idx, "f64"), load("y", idx, "f32"), load("z", idx, "u64")
    skew = fa * f64(0.5) + fb  # not associative nor commutative: only the exact order matches
    poly = ua * const(3, "u64") + ub
    nanmax = select(fa.ge(fb) | fa.ne(fa), fa, fb)
    red = [
        Reduce("r0", "j", m_, (Let("v0", x),), var("v0", "f64"), skew, f64(-0.0), "seq", "sum"),
        Reduce("r1", "j", m_, (), x, skew, f64(-0.0), "pairwise", "sum"),
        Reduce("r2", "j", m_, (), y, fa + fb, f64(-0.0), "pairwise", "sum", sb.cast("f64")),
        Reduce("r3", "j", m_, (), x, nanmax, f64(-math.inf), "any", "max"),
        Reduce("r4", "j", m_, (), z, poly, const(7, "u64"), "seq", "sum"),
        Reduce("r5", "j", m_, (), z, poly, const(7, "u64"), "pairwise", "sum"),
    ]
    body = tuple(red) + tuple(
        Store("of", r * i64(4) + i64(t), var(f"r{t}", "f64")) for t in range(4)) + (
        Store("ou", r * i64(2), var("r4", "u64")),
        Store("ou", r * i64(2) + i64(1), var("r5", "u64")))
    bufs = {"x": buf("x", "f64", "in"), "y": buf("y", "f32", "in"), "z": buf("z", "u64", "in"),
            "of": buf("of", "f64", "out"), "ou": buf("ou", "u64", "out")}
    kern = Kernel("folds", (n_,), ("r",), body, tuple(bufs),
                  (ScalarParam("n", I64), ScalarParam("m", I64)))
    prog = KernelProgram("folds", bufs, [kern], ["x", "y", "z"], ["of", "ou"], True, ["n", "m"])

    def inputs(rng, sz):
        nn, mm = sz["n"], sz["m"]
        x = rng.standard_normal(nn * mm) * 2.0 ** rng.integers(-30, 30, nn * mm)
        if nn * mm > 40:
            x[37] = np.nan  # row 0 when m > 37 : max must propagate it
        return {"x": x, "y": special_f32(rng, nn * mm) if mm < 50 else
                rng.standard_normal(nn * mm).astype(np.float32),
                "z": rng.integers(0, 2 ** 64 - 1, nn * mm, dtype=np.uint64, endpoint=True),
                "of": np.zeros(nn * 4), "ou": np.zeros(nn * 2, np.uint64)}

    def expect(d, sz):
        nn, mm = sz["n"], sz["m"]
        skew_f = lambda a_, b_: a_ * 0.5 + b_  # noqa: E731  (np.float64 scalars)
        poly_f = lambda a_, b_: a_ * np.uint64(3) + b_  # noqa: E731
        of, ou = [], []
        with np.errstate(all="ignore"):
            for row in range(nn):
                xs = list(d["x"][row * mm:(row + 1) * mm])
                ys = [np.float64(v) for v in d["y"][row * mm:(row + 1) * mm]]
                zs = list(d["z"][row * mm:(row + 1) * mm])
                mx = -np.inf if not xs else (np.nan if np.isnan(xs).any() else max(xs))
                of += [fold_seq(xs, skew_f, -0.0), fold_levels(xs, skew_f, -0.0),
                       fold_levels(ys, lambda a_, b_: a_ + b_, -0.0), mx]
                ou += [fold_seq(zs, poly_f, np.uint64(7)), fold_levels(zs, poly_f, np.uint64(7))]
        return {"of": np.array(of, np.float64), "ou": np.array(ou, np.uint64)}

    return Case(prog, inputs, [{"n": 3, "m": 1000}, {"n": 4, "m": 17}, {"n": 2, "m": 3},
                               {"n": 2, "m": 1}, {"n": 2, "m": 0}, {"n": 1, "m": 64}], expect)


def matvec_case() -> Case:
    """A pairwise Reduce nested in a parallel loop: out[r, k] = sum_j A[r, j] * B[j, k]."""
    fa, fb = acc_vars("f64")
    kk = 5
    prod = load("A", r * m_ + j, "f64") * load("B", j * i64(kk) + k, "f64")
    body = (Loop("k", i64(kk), (
        Reduce("acc", "j", m_, (Let("pr", prod),), var("pr", "f64"), fa + fb, f64(-0.0),
               "pairwise", "sum"),
        Store("out", r * i64(kk) + k, var("acc", "f64")))),)
    bufs = {"A": buf("A", "f64", "in"), "B": buf("B", "f64", "in"), "out": buf("out", "f64", "out")}
    kern = Kernel("matvec", (n_,), ("r",), body, tuple(bufs),
                  (ScalarParam("n", I64), ScalarParam("m", I64)))
    prog = KernelProgram("matvec", bufs, [kern], ["A", "B"], ["out"], False, ["n", "m"])

    def inputs(rng, sz):
        return {"A": rng.standard_normal(sz["n"] * sz["m"]), "B": rng.standard_normal(sz["m"] * kk),
                "out": np.zeros(sz["n"] * kk)}

    def expect(d, sz):
        A = d["A"].reshape(sz["n"], sz["m"])
        B = d["B"].reshape(sz["m"], kk)
        return {"out": np.array([[fold_levels(list(A[a_] * B[:, b_]), lambda x_, y_: x_ + y_, -0.0)
                                  for b_ in range(kk)] for a_ in range(sz["n"])]).reshape(-1)}

    return Case(prog, inputs, [{"n": 7, "m": 33}, {"n": 2, "m": 1000}], expect)


def pipeline_case() -> Case:
    """Three kernels through temporaries: elementwise, an empty-grid total, a 2-D grid."""
    rows, cols = 3, 17
    fa, fb = acc_vars("f64")
    scaled = load("x", i, "f64") * f64(2.0) + f64(1.0)
    k1 = Kernel("scale", (n_,), ("i",), (Store("tmp", i, scaled),), ("x", "tmp"),
                (ScalarParam("n", I64),))
    k2 = Kernel("total", (), (), (
        Reduce("s", "j", n_, (), load("tmp", j, "f64"), fa + fb, f64(-0.0), "seq", "sum"),
        Store("tot", i64(0), var("s", "f64"))), ("tmp", "tot"), (ScalarParam("n", I64),))
    flat = r * i64(cols) + c
    k3 = Kernel("grid2", (i64(rows), i64(cols)), ("r", "c"), (
        Store("out", flat, load("tmp", flat % n_, "f64") - load("tot", i64(0), "f64")
              * r.cast("f64")),
        Store("coords", flat, r * i64(1000) + c)), ("tmp", "tot", "out", "coords"),
        (ScalarParam("n", I64),))
    bufs = {"x": buf("x", "f64", "in"), "tmp": buf("tmp", "f64", "temp"),
            "tot": buf("tot", "f64", "temp"), "out": buf("out", "f64", "out"),
            "coords": buf("coords", I64, "out")}
    prog = KernelProgram("pipeline", bufs, [k1, k2, k3], ["x"], ["out", "coords"], True, ["n"])

    def inputs(rng, sz):
        return {"x": rng.standard_normal(sz["n"]), "tmp": np.zeros(sz["n"]), "tot": np.zeros(1),
                "out": np.zeros(rows * cols), "coords": np.zeros(rows * cols, np.int64)}

    def expect(d, sz):
        tmp = d["x"] * 2.0 + 1.0
        tot = fold_seq(list(tmp), lambda a_, b_: a_ + b_, -0.0)
        f = np.arange(rows * cols)
        return {"tmp": tmp, "tot": np.array([tot]),
                "out": tmp[f % sz["n"]] - tot * (f // cols).astype(np.float64),
                "coords": (f // cols) * 1000 + f % cols}

    return Case(prog, inputs, [{"n": 17}, {"n": 1}, {"n": 1000}], expect)


def reserved_names_case() -> Case:
    """Valid identifiers that C would misread (keywords, libm, our prefix) still work."""
    x = load("double", var("int", I64), "f64")
    body = (Let("exp", x * x), Let("ng_pid", var("exp", "f64") + f64(1.0)),
            Let("__x", unary("exp", var("ng_pid", "f64"))),
            Store("float", var("int", I64), var("ng_pid", "f64") - var("__x", "f64") * f64(0.0)))
    bufs = {"double": buf("double", "f64", "in"), "float": buf("float", "f64", "out")}
    kern = Kernel("main", (var("sizeof", I64),), ("int",), body, ("double", "float"),
                  (ScalarParam("sizeof", I64),))
    prog = KernelProgram("reserved", bufs, [kern], ["double"], ["float"], False, ["sizeof"])
    return Case(prog, lambda rng, sz: {"double": rng.standard_normal(sz["sizeof"]),
                                       "float": np.zeros(sz["sizeof"])},
                [{"sizeof": 9}], lambda d, sz: {"float": d["double"] * d["double"] + 1.0})


def triangle_case() -> Case:
    """Ragged extents (a reduce over ``range(i)``) and a 1000-deep expression chain."""
    fa, fb = acc_vars("f64")
    x = load("x", i, "f64")
    chain = x
    for t in range(1000):
        chain = chain * f64(1.0 + 2.0 ** -40) + f64(t % 3)
    body = (Reduce("pre", "j", i, (), load("x", j, "f64"), fa + fb, f64(-0.0), "seq", "sum"),
            Store("pre_out", i, var("pre", "f64")), Store("chain", i, chain))
    bufs = {"x": buf("x", "f64", "in"), "pre_out": buf("pre_out", "f64", "out"),
            "chain": buf("chain", "f64", "out")}
    kern = Kernel("tri", (n_,), ("i",), body, tuple(bufs), (ScalarParam("n", I64),))
    prog = KernelProgram("triangle", bufs, [kern], ["x"], ["pre_out", "chain"], True, ["n"])

    def inputs(rng, sz):
        return {"x": rng.standard_normal(sz["n"]), "pre_out": np.zeros(sz["n"]),
                "chain": np.zeros(sz["n"])}

    def expect(d, sz):
        y = d["x"].copy()
        for t in range(1000):
            y = y * (1.0 + 2.0 ** -40) + float(t % 3)
        pre = [fold_seq(list(d["x"][:t]), lambda a_, b_: a_ + b_, -0.0) for t in range(sz["n"])]
        return {"pre_out": np.array(pre, np.float64), "chain": y}

    return Case(prog, inputs, [{"n": 100}], expect)


CASES = {"elementwise": elementwise_case, "serial": serial_case, "reduce": reduce_case,
         "matvec": matvec_case, "pipeline": pipeline_case, "reserved": reserved_names_case,
         "triangle": triangle_case}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda-cache")


@pytest.fixture(scope="module")
def built_cases():
    return {name: make() for name, make in CASES.items()}


def run_case(case: Case, launcher, oracle: bool = True, seed: int = 0):
    """Yield (what, got, want) for every output of every size: numpy and interpreter oracles."""
    for sz in case.sizes:
        rng = np.random.default_rng(seed)
        ins = case.inputs(rng, sz)
        mine = {n: a.copy() for n, a in ins.items()}
        launcher(mine, dict(sz))
        if case.expect is not None:
            for name, want in case.expect(ins, sz).items():
                yield f"{name} {sz} vs numpy", mine[name], want
        if oracle:
            ref = {n: a.copy() for n, a in ins.items()}
            run_program(case.program, ref, dict(sz))
            for name in case.program.outputs:
                yield f"{name} {sz} vs interp", mine[name], ref[name]


# ---------------------------------------------------------------------------------------------
# CPU: the printed bodies, compiled by gcc
@pytest.mark.parametrize("name", list(CASES))
def test_host_print_is_bit_exact(name, built_cases, cache):
    case = built_cases[name]
    launcher = CudaHostBackend(cache).build(case.program)
    for what, got, want in run_case(case, launcher, oracle=name != "reserved"):
        assert_bits(got, want, what)


def test_literals_are_exact(cache):
    vals = {"f64": [0.1, -0.0, math.inf, -math.inf, 5e-324, 1.7976931348623157e308, -2.5,
                    1 / 3, 2.0 ** -1074 * 3, 2.2250738585072009e-308],
            "f32": [0.1, 1e-45, 3.4028234663852886e38, -math.inf, -0.0, 1 / 3, 1e300],
            "i64": [-2 ** 63, 2 ** 63 - 1, -1, 0, 12345], "u64": [2 ** 64 - 1, 2 ** 63, 0],
            "i32": [-2 ** 31, 2 ** 31 - 1, -7], "u32": [2 ** 32 - 1, -1, 5],
            "u16": [65535, 70000], "u8": [255, 256 + 3]}
    stores = [Store(f"o_{dt}", i64(t), const(v, dt)) for dt, vs in vals.items()
              for t, v in enumerate(vs)]
    bufs = {f"o_{dt}": buf(f"o_{dt}", dt, "out") for dt in vals}
    kern = Kernel("lits", (), (), tuple(stores), tuple(bufs), ())
    prog = KernelProgram("lits", bufs, [kern], [], list(bufs), True, [])
    out = {f"o_{dt}": np.zeros(len(vs), _NP[dt]) for dt, vs in vals.items()}
    CudaHostBackend(cache).build(prog)(out, {})
    with np.errstate(over="ignore"):
        for dt, vs in vals.items():
            want = (np.array(vs, np.float64).astype(_NP[dt]) if dt[0] == "f"
                    else np.array([v % 2 ** (8 * np.dtype(_NP[dt]).itemsize) for v in vs],
                                  np.uint64).astype(_NP[dt]))
            assert_bits(out[f"o_{dt}"], want, dt, nan_payload=True)
    # NaN: exact bit patterns, whatever the payload
    nan_bits = 0x7FF4000000000123
    nan = np.array([nan_bits], np.uint64).view(np.float64)[0]
    assert c_literal(float(nan), "f64") == "ng_f64_from_bits(0x7FF4000000000123ULL)"
    assert c_literal(0.1, "f64") == "0x1.999999999999ap-4"
    assert c_literal(-2 ** 63, "i64") == "(-9223372036854775807LL - 1LL)"
    assert c_literal(-1, "u32") == "4294967295u"


def test_math_ops_are_libm(cache):
    """Host math calls are glibc's libm (as Python's math module); numpy's own differ by ulps."""
    ops = {"exp": math.exp, "log": math.log, "tanh": math.tanh, "sin": math.sin,
           "cos": math.cos, "exp2": math.exp2, "log2": math.log2}
    x = load("x", i, "f64")
    stores = [Store("y", i * i64(len(ops)) + i64(t),
                    unary(op, unary("abs", x) if op.startswith("log") else x))
              for t, op in enumerate(ops)]
    bufs = {"x": buf("x", "f64", "in"), "y": buf("y", "f64", "out")}
    prog = KernelProgram("math", bufs, [Kernel("m", (n_,), ("i",), tuple(stores), ("x", "y"),
                                               (ScalarParam("n", I64),))], ["x"], ["y"], False,
                         ["n"])
    xs = np.concatenate([np.random.default_rng(1).uniform(-30, 30, 500), [1.0, -1e-300, 0.5]])
    out = {"x": xs, "y": np.zeros(xs.size * len(ops))}
    CudaHostBackend(cache).build(prog)(out, {"n": xs.size})
    want = np.array([[f(abs(v) if op.startswith("log") else v) for op, f in ops.items()]
                     for v in xs]).reshape(-1)
    assert_bits(out["y"], want, "libm")
    ref = {"x": xs, "y": np.zeros(xs.size * len(ops))}
    run_program(prog, ref, {"n": xs.size})
    np.testing.assert_allclose(out["y"], ref["y"], rtol=4e-16, atol=0)


def test_identifiers_are_checked():
    assert c_name("x_1") == "x_1"
    assert c_name("int") == "ng_u_int" and c_name("ng_t0") == "ng_u_ng_t0"
    assert c_name("exp") == "ng_u_exp" and c_name("__z") == "ng_u___z"
    for bad in ["a b", "1x", "k-1", "x;y", "", "é"]:
        with pytest.raises(ValueError):
            c_name(bad)
    case = serial_case()
    good = case.program
    bad_let = Kernel("horner", good.kernels[0].grid, ("i",),
                     (Let("a;b", f64(1.0)),) + good.kernels[0].body, good.kernels[0].buffers,
                     good.kernels[0].scalars)
    for prog in [KernelProgram("p", good.buffers, [bad_let], good.inputs, good.outputs, True,
                               good.sizes),
                 KernelProgram("p", good.buffers, [Kernel("k(", (), (), (), (), ())], [], [],
                               False, [])]:
        with pytest.raises(ValueError):
            emit_program(prog, "cuda")
        with pytest.raises(ValueError):
            emit_program(prog, "host")


def test_emitted_cuda_shape(built_cases):
    src = CudaBackend().emit(built_cases["pipeline"].program)
    for kname in ("scale", "total", "grid2"):
        assert f'extern "C" __global__ void {kname}(' in src
    assert "(long long)blockIdx.x * blockDim.x + threadIdx.x" in src
    assert "if (ng_pid >= 1) return;" in src  # the empty grid has one instance
    assert "ng_pid >= 3LL * 17LL" in src
    src = CudaBackend().emit(built_cases["reduce"].program)
    assert "[64];" in src and "0x1.0000000000000p-1" in src  # pairwise stacks, hex literals


# ---------------------------------------------------------------------------------------------
# nvcc: every kernel compiles to PTX and cubin for both archs, with no fused multiply-add
def test_nvcc_builds_all_archs_without_fma(built_cases, cache):
    """The hand-built programs in one translation unit (one nvcc run per arch)."""
    programs = [case.program for case in built_cases.values()]
    source, symbols = emit_bundle(programs, "cuda")
    for arch, (ptx, cubin) in nvcc_compile_archs(source, ARCHS, cache).items():
        assert cubin[:4] == b"\x7fELF", arch
        assert f".target {arch}" in ptx
        funcs = ptx_functions(ptx)
        for prog, ks in zip(programs, symbols):
            assert len(ks) == len(prog.kernels)
            for sym, _ in ks:
                assert funcs.get(sym, (False,))[0], (arch, sym)
        assert_no_contraction(ptx, arch)
        elementwise = funcs[symbols[0][0][0]][1]
        for instr in ("div.rn.f32", "sqrt.rn.f32", "div.rn.f64", "sqrt.rn.f64", "mul.rn.f64",
                      "add.rn.f64", "mul.rn.f32", "add.rn.f32"):  # IEEE, explicitly rounded
            assert instr in elementwise, (arch, instr)
        assert "ftz" not in ptx and "approx" not in elementwise
        assert "ng_exp" in funcs and "fma." in funcs["ng_exp"][1]  # libdevice, out of line


def ptx_functions(ptx: str) -> dict[str, tuple[bool, str]]:
    """PTX function name -> (is an entry, its text), declarations and definitions together."""
    out: dict[str, tuple[bool, str]] = {}
    name, entry, lines = None, False, []
    head = re.compile(r"^\s*(?:\.visible\s+|\.weak\s+|\.extern\s+)*\.(entry|func)\s+"
                      r"(?:\([^)]*\)\s*)?([A-Za-z_$][\w$]*)")
    for line in ptx.splitlines() + [".func END_("]:
        m = head.match(line)
        if m:
            if name is not None:
                old = out.get(name, (entry, ""))
                out[name] = (old[0] or entry, old[1] + "\n".join(lines))
            name, entry, lines = m.group(2), m.group(1) == "entry", []
        lines.append(line)
    return out


def assert_no_contraction(ptx: str, what: str) -> None:
    """No fma in any kernel: only the out-of-line math wrappers (libdevice's own polynomials,
    written with fma on purpose) and libdevice's internal helpers may have one."""
    funcs = ptx_functions(ptx)
    assert any(is_entry for is_entry, _ in funcs.values()), what
    for fname, (is_entry, text) in funcs.items():
        if "fma." in text:
            assert not is_entry and (fname[3:] in MATH_OPS and fname.startswith("ng_")
                                     or fname.startswith("__")), (what, fname)


def test_fma_check_can_fail(built_cases, tmp_path):
    """Without --fmad=false the same source contracts a*b+c: the absence above means something."""
    src = CudaBackend().emit(built_cases["elementwise"].program)
    (tmp_path / "p.cu").write_text(src)
    flags = [f for f in NVCC_FLAGS if not f.startswith("--fmad")]
    subprocess.run(["nvcc", "-ptx", "-arch=sm_90a", *flags, "p.cu", "-o", "p.ptx"],
                   cwd=tmp_path, check=True)
    ptx = (tmp_path / "p.ptx").read_text()
    assert "fma.rn" in ptx
    with pytest.raises(AssertionError):
        assert_no_contraction(ptx, "contracted")


def test_compile_is_cached(built_cases, tmp_path, monkeypatch):
    backend = CudaBackend(tmp_path)
    cubin = backend.compile(built_cases["serial"].program, "sm_100a")
    monkeypatch.setenv("PATH", "/nonexistent")  # nvcc unreachable: only the cache can answer
    assert backend.compile(built_cases["serial"].program, "sm_100a") == cubin
    assert ".entry horner(" in backend.ptx(built_cases["serial"].program, "sm_100a")
    with pytest.raises(OSError):
        backend.compile(built_cases["matvec"].program, "sm_100a")


# ---------------------------------------------------------------------------------------------
# GPU: launch and compare with the host print (NaN payloads may differ between x86 and the GPU)
def _gpu_reason() -> str:
    ok, why = CudaBackend().available()
    return "" if ok else why


gpu = pytest.mark.skipif(bool(_gpu_reason()), reason=_gpu_reason() or "GPU present")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("name", list(CASES))
def test_gpu_matches_host(name, built_cases, cache):
    case = built_cases[name]
    dev = CudaBackend(cache).build(case.program)
    host = CudaHostBackend(cache).build(case.program)
    for sz in case.sizes:
        ins = case.inputs(np.random.default_rng(3), sz)
        a = {n: v.copy() for n, v in ins.items()}
        b = {n: v.copy() for n, v in ins.items()}
        dev(a, dict(sz))
        host(b, dict(sz))
        for out in case.program.outputs:
            if name == "reserved":  # exp: libdevice vs glibc may differ in the last place
                np.testing.assert_allclose(a[out], b[out], rtol=1e-15)
            else:
                assert_bits(a[out], b[out], f"{name} {out} {sz}")
        if case.expect is not None:
            for out, want in case.expect(ins, sz).items():
                if name != "reserved":
                    assert_bits(a[out], want, f"{name} {out} {sz} numpy")


# ---------------------------------------------------------------------------------------------
# every lowerable stdlib function: on the CPU bit for bit against the reference; through nvcc
@pytest.fixture(scope="module")
def stdlib_programs():
    from kernel_diff import stdlib_cases

    from numgrade.api import load_stdlib
    from numgrade.kernels.lower import NotLowerable
    out = []
    for lib, fname in stdlib_cases():
        try:
            out.append((lib, fname, load_stdlib(lib)[fname].kernels()))
        except NotLowerable:
            pass
    assert len(out) >= len(stdlib_cases()) // 2, "most stdlib functions should lower"
    return out


def _uses_math(program: KernelProgram) -> bool:
    from numgrade.kernels.ir import walk_exprs
    seen, stack = set(), [e for kern in program.kernels for e in walk_exprs(kern.body)]
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        if e.op in MATH_OPS:
            return True
        stack.extend(e.args)
    return False


def _check_stdlib(stdlib_programs, backend, exact_math: bool) -> None:
    from kernel_diff import bit_equal, run_both
    launchers = backend.build_many([prog for _, _, prog in stdlib_programs])
    by_source = {emit_program(prog, "host").source: la
                 for (_, _, prog), la in zip(stdlib_programs, launchers)}
    bad = []
    for lib, fname, prog in stdlib_programs:
        ref, got = run_both(lib, fname, lambda p: by_source[emit_program(p, "host").source])
        if all(bit_equal(a, b) for a, b in zip(ref, got)):
            continue
        close = all(np.allclose(a, b, rtol=1e-6, atol=0, equal_nan=True) for a, b in zip(ref, got))
        if exact_math or not (_uses_math(prog) and close):
            bad.append(f"{lib}.{fname}")
    assert not bad, f"differ from the reference: {bad}"


def test_stdlib_host_matches_reference(stdlib_programs, cache):
    _check_stdlib(stdlib_programs, CudaHostBackend(cache), exact_math=True)


@pytest.fixture(scope="module")
def stdlib_ptx(stdlib_programs, cache):
    """arch -> (PTX, kernel symbols per program) of the whole stdlib in one translation unit,
    printed for each arch (its own hardware conversions), the archs built side by side. (PTX
    only: ptxas on all of it doubles the time; the quantisers' cubins are built below.)"""
    programs = [prog for _, _, prog in stdlib_programs]
    printed = {arch: emit_bundle(programs, "cuda", arch) for arch in ARCHS}
    built = nvcc_compile_archs({a: src for a, (src, _) in printed.items()}, ARCHS, cache,
                               cubin=False)
    return {arch: (built[arch][0], printed[arch][1]) for arch in ARCHS}


def test_stdlib_compiles_for_all_archs_without_fma(stdlib_ptx):
    for arch, (ptx, symbols) in stdlib_ptx.items():
        assert f".target {arch}" in ptx
        funcs = ptx_functions(ptx)
        for ks in symbols:
            for sym, _ in ks:
                assert funcs.get(sym, (False,))[0], (arch, sym)
        assert_no_contraction(ptx, arch)


# the conversion instructions each quantiser's kernels must contain, per arch (and, where the
# arch lacks an instruction, must not): fp8 from sm_89 on, e2m1 and e8m0 on sm_100a only
QUANTISER_CVT = {
    ("fp8", "quantize_per_tensor"): {"cvt.rn.satfinite.e4m3x2.f32": ARCHS},
    ("fp8", "quantize_block_1x128"): {"cvt.rn.satfinite.e4m3x2.f32": ARCHS},
    ("nvfp4", "quantize"): {"cvt.rn.satfinite.e4m3x2.f32": ARCHS,
                            "cvt.rn.satfinite.e2m1x2.f32": ("sm_100a",)},
    ("four_over_six", "quantize"): {"cvt.rn.satfinite.e4m3x2.f32": ARCHS,
                                    "cvt.rn.satfinite.e2m1x2.f32": ("sm_100a",)},
    ("mxfp4", "quantize"): {"cvt.rz.satfinite.ue8m0x2.f32": ("sm_100a",),
                            "cvt.rn.satfinite.e2m1x2.f32": ("sm_100a",)},
    ("mxfp4", "quantize_ceil"): {"cvt.rp.satfinite.ue8m0x2.f32": ("sm_100a",),
                                 "cvt.rn.satfinite.e2m1x2.f32": ("sm_100a",)},
}


def test_stdlib_quantisers_use_hardware_conversions(stdlib_programs, stdlib_ptx):
    index = {(lib, fname): n for n, (lib, fname, _) in enumerate(stdlib_programs)}
    assert set(QUANTISER_CVT) <= set(index), "every quantiser named here should lower"
    for arch, (ptx, symbols) in stdlib_ptx.items():
        funcs = ptx_functions(ptx)
        for key, wanted in QUANTISER_CVT.items():
            text = "".join(funcs[sym][1] for sym, _ in symbols[index[key]])
            for instr, archs in wanted.items():
                assert (instr in text) == (arch in archs), (arch, key, instr)
        if arch == "sm_90a":  # no sm_100a-only form anywhere, not even in a helper
            assert "e2m1x2" not in ptx and "ue8m0x2" not in ptx


def test_stdlib_quantisers_build_cubins(stdlib_programs, cache):
    """ptxas accepts the hardware conversions: a cubin of every quantiser for each arch."""
    programs = [prog for lib, fname, prog in stdlib_programs if (lib, fname) in QUANTISER_CVT]
    printed = {arch: emit_bundle(programs, "cuda", arch) for arch in ARCHS}
    built = nvcc_compile_archs({a: src for a, (src, _) in printed.items()}, ARCHS, cache)
    for arch, (ptx, cubin) in built.items():
        assert cubin[:4] == b"\x7fELF" and f".target {arch}" in ptx
        assert "cvt.rn.satfinite.e4m3x2.f32" in ptx
        for ks in printed[arch][1]:
            for sym, _ in ks:
                assert f".entry {sym}(" in ptx, (arch, sym)


@pytest.mark.gpu
@gpu
def test_stdlib_gpu_matches_reference(stdlib_programs, cache):
    """libdevice's exp/log/tanh may differ from numpy's in the last place: those functions are
    compared to a relative 1e-6, every other one bit for bit."""
    _check_stdlib(stdlib_programs, CudaBackend(cache), exact_math=False)


# ---------------------------------------------------------------------------------------------
# the public surface: f.compile("cuda") and f.emit("cuda")
def test_compile_cuda_without_a_gpu_is_a_grade_error():
    import numgrade as ng
    f = ng.load("stdlib:fp8").quantize_per_tensor
    why = _gpu_reason()
    if not why:
        pytest.skip("a GPU is present: compile('cuda') succeeds here")
    with pytest.raises(ng.GradeError, match="backend 'cuda' cannot run here") as ex:
        f.compile("cuda")
    assert why in str(ex.value)  # names what is missing: libcuda, a device, or nvcc
    assert "no usable CUDA device" in why or "nvcc" in why


def test_emit_cuda_uses_the_hardware_conversions():
    """``f.emit("cuda")`` is the sm_90a print: fp8 through cuda_fp8.h, e2m1 in software."""
    import numgrade as ng
    src = ng.load("stdlib:nvfp4").quantize.emit("cuda")
    assert "#include <cuda_fp8.h>" in src and "__nv_cvt_float_to_fp8(" in src
    assert "__nv_cvt_float_to_fp4(" not in src  # sm_100a only
    src100 = CudaBackend().emit(ng.load("stdlib:nvfp4").quantize.kernels(), "sm_100a")
    assert "__nv_cvt_float_to_fp4(" in src100
    assert "ng_cv_" not in CudaBackend().emit_host(ng.load("stdlib:nvfp4").quantize.kernels())


@pytest.mark.gpu
@gpu
def test_gpu_device_resident_buffers(cache):
    """run_device on buffers that already live on the GPU (torch CUDA tensors, as bytes): the
    launcher copies nothing; the results match the reference bit for bit."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from kernel_diff import bit_equal, run_both

    def resident(program):
        launcher = CudaBackend(cache).build(program)

        def run(buffers, scalars):
            dev = {n: torch.from_numpy(a.view(np.uint8)).to("cuda:0") for n, a in buffers.items()}
            launcher.run_device({n: t.data_ptr() for n, t in dev.items()}, scalars)
            for n in program.outputs:
                buffers[n][:] = dev[n].cpu().numpy().view(buffers[n].dtype)
        return run

    for lib, fname in [("fp8", "quantize_per_tensor"), ("nvfp4", "quantize"),
                       ("mxfp4", "quantize_ceil"), ("layernorm", "layernorm_bf16")]:
        ref, got = run_both(lib, fname, resident)
        assert all(bit_equal(a, b) for a, b in zip(ref, got)), (lib, fname)
