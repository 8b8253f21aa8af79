"""The kernel-IR interpreter (the kernel-level oracle) against independent references.

Floats are checked against exact rational arithmetic rounded by a rounding routine written here
(not numpy's), integers against Python ints reduced modulo 2**bits, reduction orders against a
recursive definition of the pairwise tree, statements against plain Python loops. Every
elementwise case runs twice: vectorised over a grid (numpy arrays) and as one empty-grid kernel
per element (numpy scalars), which must agree bit for bit.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np
import pytest

from numgrade.kernels import interp as I
from numgrade.kernels.interp import KernelInterpreter, KernelIRError
from numgrade.kernels.ir import (Assign, BufferDecl, Decl, Kernel, KernelProgram, KExpr, Let,
                                Loop, Reduce, ScalarParam, Store, acc_vars, const,
                                format_program, load, select, unary, var)

INF, NAN = float("inf"), float("nan")
NP = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "i32": np.int32,
      "u64": np.uint64, "u32": np.uint32, "u16": np.uint16, "u8": np.uint8}
UINT = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}
BITS = {"f64": 64, "f32": 32, "i64": 64, "i32": 32, "u64": 64, "u32": 32, "u16": 16, "u8": 8}
INTS = ("i64", "i32", "u64", "u32", "u16", "u8")


# ---------------------------------------------------------------------------------------------
# independent references
def f32_round(x: Fraction) -> float:
    """``x`` (non-zero) rounded to the nearest float32, ties to even; beyond the range: inf."""
    sign, a = (-1 if x < 0 else 1), abs(x)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    q = Fraction(2) ** (max(e, -126) - 23)
    m = a / q
    n = m.numerator // m.denominator
    rem = m - n
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and n % 2):
        n += 1
    r = n * q
    return sign * INF if r >= 2 ** 128 else sign * float(r)


def wrap(v: int, dtype: str) -> int:
    bits = BITS[dtype]
    v &= (1 << bits) - 1
    return v - (1 << bits) if dtype[0] == "i" and v >= 1 << (bits - 1) else v


def f32_bits(x: float) -> int:
    return struct.unpack("<I", struct.pack("<f", x))[0]


def pairwise_ref(xs: list, comb: Callable):
    """The pairwise tree: the largest power of two below n on the left, the rest on the right."""
    if len(xs) == 1:
        return xs[0]
    p = 1 << ((len(xs) - 1).bit_length() - 1)
    return comb(pairwise_ref(xs[:p], comb), pairwise_ref(xs[p:], comb))


def seq_ref(xs: list, comb: Callable):
    acc = xs[0]
    for x in xs[1:]:
        acc = comb(acc, x)
    return acc


# ---------------------------------------------------------------------------------------------
# program builders
def storage_of(dtype: str) -> str:
    return "u8" if dtype == "bool" else dtype


def buf(name: str, dtype: str, role: str) -> BufferDecl:
    return BufferDecl(name, dtype, (), dtype, role)


def program(kernels: Sequence[Kernel], buffers: Sequence[BufferDecl]) -> KernelProgram:
    return KernelProgram("p", {b.name: b for b in buffers}, list(kernels),
                         [b.name for b in buffers if b.role == "in"],
                         [b.name for b in buffers if b.role == "out"], False, [])


def kernel(name: str, grid: Sequence[int | KExpr], gvars: Sequence[str], body: Sequence,
           scalars: Sequence[ScalarParam] = ()) -> Kernel:
    g = tuple(x if isinstance(x, KExpr) else const(x, "i64") for x in grid)
    return Kernel(name, g, tuple(gvars), tuple(body), (), tuple(scalars))


def run(p: KernelProgram, inputs: dict[str, np.ndarray], sizes: dict[str, int],
        scalars: dict[str, int] | None = None, fill: float = 0) -> dict[str, np.ndarray]:
    """Allocate the non-input buffers (``sizes`` elements, filled), run, return all buffers."""
    arrays = dict(inputs)
    for b in p.buffers.values():
        if b.name not in arrays:
            arrays[b.name] = np.full(sizes[b.name], fill, NP[b.storage])
    KernelInterpreter().build(p)(arrays, scalars or {})
    return arrays


def elementwise(build: Callable[..., KExpr], operands: Sequence[tuple[Sequence, str]],
                out_dtype: str) -> np.ndarray:
    """``build`` applied lane by lane; checks the vectorised and the scalar path agree."""
    n = len(operands[0][0])
    arrays, decls = {}, []
    for i, (vals, dt) in enumerate(operands):
        st = storage_of(dt)
        arrays[f"a{i}"] = np.asarray(vals).astype(NP[st]) if dt != "bool" else \
            np.asarray(vals, dtype=bool).astype(np.uint8)
        decls.append(BufferDecl(f"a{i}", dt, (), st, "in"))
    ost = storage_of(out_dtype)
    decls += [BufferDecl(n, out_dtype, (), ost, "out") for n in ("y", "ys")]

    def operand(i: int, dt: str, idx: KExpr) -> KExpr:
        x = load(f"a{i}", idx, storage_of(dt))
        return x.ne(const(0, "u8")) if dt == "bool" else x

    def result(idx: KExpr) -> KExpr:
        r = build(*(operand(i, dt, idx) for i, (_, dt) in enumerate(operands)))
        assert r.dtype == out_dtype, (r.dtype, out_dtype)
        return r.cast("u8") if out_dtype == "bool" else r

    g = var("g", "i64")
    ks = [kernel("vec", [n], ["g"], [Store("y", g, result(g))])]
    for j in range(n):
        c = const(j, "i64")
        ks.append(kernel(f"s{j}", [], [], [Store("ys", c, result(c))]))
    out = run(program(ks, decls), arrays, {"y": n, "ys": n})
    y, ys = out["y"], out["ys"]
    u = UINT[y.dtype.itemsize * 8]
    assert np.array_equal(y.view(u), ys.view(u)), (y, ys)
    return y.astype(bool) if out_dtype == "bool" else y


def assert_floats(got: np.ndarray, want: Sequence[float], dtype: str) -> None:
    """Bit-exact (so -0.0 counts), except that any NaN matches any NaN."""
    want_a = np.array(want, dtype=NP[dtype])
    u = UINT[BITS[dtype]]
    for g, w in zip(got, want_a):
        if np.isnan(w):
            assert np.isnan(g), (got, want_a)
        else:
            assert g.view(u) == w.view(u), (got, want_a)


def binop(op: str) -> Callable[[KExpr, KExpr], KExpr]:
    return lambda a, b: KExpr(op, (a, b), (), a.dtype)


# ---------------------------------------------------------------------------------------------
# the backend contract
def test_backend_contract():
    be = KernelInterpreter()
    x = var("g", "i64")
    p = program([kernel("k", [3], ["g"], [Store("y", x, x * 2)])], [buf("y", "i64", "out")])
    assert be.name == "kernel-interp" and be.available() == (True, "")
    assert be.exact_sum_order is True
    assert be.emit(p) == format_program(p) and "kernel k" in be.emit(p)
    y = np.zeros(3, np.int64)
    be.build(p)({"y": y}, {})
    assert y.tolist() == [0, 2, 4]


# ---------------------------------------------------------------------------------------------
# float arithmetic
T24, T23, T22 = 2.0 ** -24, 2.0 ** -23, 2.0 ** -22
F32_MAX = float(np.finfo(np.float32).max)
SUB = 2.0 ** -149  # the smallest float32 subnormal

F32_CASES = {
    "add": [((1.0, T24), 1.0), ((1 + T23, T24), 1 + T22), ((1.0, 3 * T24), 1 + T22),
            ((F32_MAX, F32_MAX), INF), ((INF, -INF), NAN), ((-0.0, -0.0), -0.0),
            ((0.0, -0.0), 0.0), ((NAN, 1.0), NAN), ((SUB, SUB), 2 * SUB), ((1.0, -1.0), 0.0),
            ((-SUB, SUB), 0.0)],
    "sub": [((1.0, T24 / 2), 1.0), ((1.0, 1.0), 0.0), ((-0.0, 0.0), -0.0), ((INF, INF), NAN),
            ((2 * SUB, SUB), SUB), ((-F32_MAX, F32_MAX), -INF)],
    "mul": [((2.0 ** -100, 2.0 ** -100), 0.0), ((2.0 ** -75, 2.0 ** -75), 0.0),
            ((1.5 * 2.0 ** -75, 2.0 ** -75), SUB), ((-1.0, 0.0), -0.0), ((INF, 0.0), NAN),
            ((2.0 ** 64, 2.0 ** 64), INF), ((1 + T23, 1 + T23), 1 + 2 * T23),
            ((3.0, 1.0 / 3), 1.0)],
    "div": [((1.0, 0.0), INF), ((-1.0, 0.0), -INF), ((0.0, 0.0), NAN), ((1.0, -INF), -0.0),
            ((1.0, 3.0), struct.unpack("<f", struct.pack("<I", 0x3EAAAAAB))[0]),
            ((SUB, 2.0), 0.0), ((3 * SUB, 2.0), 2 * SUB), ((F32_MAX, 0.5), INF)],
}


@pytest.mark.parametrize("op", list(F32_CASES))
def test_f32_arithmetic_hand_cases(op):
    cases = F32_CASES[op]
    a = np.array([c[0][0] for c in cases], np.float32)
    b = np.array([c[0][1] for c in cases], np.float32)
    got = elementwise(binop(op), [(a, "f32"), (b, "f32")], "f32")
    assert_floats(got, [c[1] for c in cases], "f32")


def _random_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal(n) * np.exp2(rng.integers(-135, 110, n).astype(np.float64))
    return x.astype(np.float32)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_f32_arithmetic_is_correctly_rounded(op):
    """Random operands over the whole exponent range (subnormal, overflowing results too)."""
    rng = np.random.default_rng(["add", "sub", "mul", "div"].index(op))
    a, b = _random_f32(rng, 300), _random_f32(rng, 300)
    if op in ("add", "sub"):  # also near-cancellations and close exponents
        b[:100] = (a[:100] * np.float32(-1 if op == "add" else 1)
                   * (1 + rng.integers(-5, 5, 100) * np.float32(T23))).astype(np.float32)
    keep = (a != 0) & (b != 0)
    a, b = a[keep], b[keep]
    got = elementwise(binop(op), [(a, "f32"), (b, "f32")], "f32")
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
         "div": lambda x, y: x / y}[op]
    for x, y, g in zip(a, b, got):
        exact = f(Fraction(float(x)), Fraction(float(y)))
        want = f32_round(exact) if exact != 0 else 0.0
        assert f32_bits(float(g)) == f32_bits(want), (op, x, y, g, want)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_f64_arithmetic_is_correctly_rounded(op):
    rng = np.random.default_rng(10 + ["add", "sub", "mul", "div"].index(op))
    a = rng.standard_normal(300) * np.exp2(rng.integers(-520, 500, 300).astype(np.float64))
    b = rng.standard_normal(300) * np.exp2(rng.integers(-520, 500, 300).astype(np.float64))
    a[:5] = [5e-324, 1.0, 2.0 ** -1022, 1e308, 3.0]
    b[:5] = [0.5, 2.0 ** -53, -2.0 ** -1074, 10.0, 0.1]
    got = elementwise(binop(op), [(a, "f64"), (b, "f64")], "f64")
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
         "div": lambda x, y: x / y}[op]
    for x, y, g in zip(a, b, got):
        exact = f(Fraction(float(x)), Fraction(float(y)))
        try:
            want = float(exact)  # Fraction -> float rounds correctly (ties to even)
        except OverflowError:
            want = INF if exact > 0 else -INF
        assert float(g) == want and (want != 0 or math.copysign(1, g) == math.copysign(1, want))


def test_sqrt_and_rounding_functions():
    vals32 = [2.0, -0.0, -1.0, INF, 0.0, SUB, 1 + T23, 16777215.0]
    got = elementwise(lambda a: unary("sqrt", a), [(vals32, "f32")], "f32")
    want = [f32_round(Fraction(math.sqrt(v))) if v > 0 and v != INF else v if v >= 0 or v == 0
            else NAN for v in vals32]
    assert_floats(got, want, "f32")
    assert f32_bits(float(got[0])) == 0x3FB504F3
    rng = np.random.default_rng(3)
    r = np.abs(_random_f32(rng, 200))
    got = elementwise(lambda a: unary("sqrt", a), [(r, "f32")], "f32")
    assert all(f32_bits(float(g)) == f32_bits(f32_round(Fraction(math.sqrt(float(x)))))
               for x, g in zip(r, got) if x > 0)
    r64 = np.abs(rng.standard_normal(200)) * np.exp2(rng.integers(-1070, 1000, 200).astype(float))
    got = elementwise(lambda a: unary("sqrt", a), [(r64, "f64")], "f64")
    assert [float(g) for g in got] == [math.sqrt(float(x)) for x in r64]

    xs = [-0.5, 0.5, 1.5, 2.5, -2.5, 3.5, -0.0, -1.25, 8388609.0, INF, NAN, 4503599627370497.0]
    table = {
        "floor": [-1.0, 0.0, 1.0, 2.0, -3.0, 3.0, -0.0, -2.0, 8388609.0, INF, NAN,
                  4503599627370497.0],
        "ceil": [-0.0, 1.0, 2.0, 3.0, -2.0, 4.0, -0.0, -1.0, 8388609.0, INF, NAN,
                 4503599627370497.0],
        "trunc": [-0.0, 0.0, 1.0, 2.0, -2.0, 3.0, -0.0, -1.0, 8388609.0, INF, NAN,
                  4503599627370497.0],
        "rint": [-0.0, 0.0, 2.0, 2.0, -2.0, 4.0, -0.0, -1.0, 8388609.0, INF, NAN,
                 4503599627370497.0],
    }
    for op, want in table.items():
        assert_floats(elementwise(lambda a: unary(op, a), [(xs, "f64")], "f64"), want, "f64")
        got32 = elementwise(lambda a: unary(op, a), [(xs[:-1], "f32")], "f32")
        assert_floats(got32, want[:-1], "f32")


def test_neg_abs_and_comparisons():
    nan_bits = np.array([0x7FC00000, 0xFFC00001], np.uint32).view(np.float32)
    xs = np.concatenate([np.array([0.0, -0.0, 1.5, -INF], np.float32), nan_bits])
    neg = elementwise(lambda a: -a, [(xs, "f32")], "f32").view(np.uint32)
    ab = elementwise(lambda a: unary("abs", a), [(xs, "f32")], "f32").view(np.uint32)
    assert neg.tolist() == [0x80000000, 0x00000000, 0xBFC00000, 0x7F800000, 0xFFC00000,
                            0x7FC00001]
    assert ab.tolist() == [0, 0, 0x3FC00000, 0x7F800000, 0x7FC00000, 0x7FC00001]

    a = [1.0, NAN, NAN, 0.0, -INF, 2.0]
    b = [2.0, 1.0, NAN, -0.0, -INF, 1.0]
    want = {"lt": [1, 0, 0, 0, 0, 0], "le": [1, 0, 0, 1, 1, 0], "gt": [0, 0, 0, 0, 0, 1],
            "ge": [0, 0, 0, 1, 1, 1], "eq": [0, 0, 0, 1, 1, 0], "ne": [1, 1, 1, 0, 0, 1]}
    for dt in ("f32", "f64"):
        for op, w in want.items():
            got = elementwise(lambda x, y: KExpr(op, (x, y), (), "bool"), [(a, dt), (b, dt)],
                              "bool")
            assert got.astype(int).tolist() == w, (dt, op)
    p, q = [True, True, False, False], [True, False, True, False]
    assert elementwise(lambda x, y: x & y, [(p, "bool"), (q, "bool")], "bool").tolist() == \
        [True, False, False, False]
    assert elementwise(lambda x, y: x | y, [(p, "bool"), (q, "bool")], "bool").tolist() == \
        [True, True, True, False]
    assert elementwise(lambda x: unary("not", x), [(p, "bool")], "bool").tolist() == \
        [False, False, True, True]


def test_math_ops_are_numpys_float64_functions():
    xs = np.array([0.0, -0.0, 1.0, 0.5, -3.25, 10.0, 700.0, 1e-300, INF, -INF, NAN])
    fns = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
           "exp2": np.exp2, "log2": np.log2}
    with np.errstate(all="ignore"):
        for op, f in fns.items():
            got = elementwise(lambda a: unary(op, a), [(xs, "f64")], "f64")
            assert_floats(got, f(xs).tolist(), "f64")
    hand = {"exp": [1.0, 1.0], "exp2": [1.0, 1.0], "sin": [0.0, -0.0], "tanh": [0.0, -0.0]}
    for op, w in hand.items():
        assert_floats(elementwise(lambda a: unary(op, a), [([0.0, -0.0], "f64")], "f64"), w,
                      "f64")
    assert_floats(elementwise(lambda a: unary("log2", a), [([8.0, 0.0, -1.0], "f64")], "f64"),
                  [3.0, -INF, NAN], "f64")


# ---------------------------------------------------------------------------------------------
# integers
def _int_values(dt: str, rng: np.random.Generator) -> list[int]:
    bits, signed = BITS[dt], dt[0] == "i"
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    edge = [0, 1, 2, hi, hi - 1, lo, lo + 1, 3, 255, 256 % (hi + 1)]
    rand = [int(v) for v in rng.integers(lo, hi, 30, endpoint=True, dtype=NP[dt])]
    return [wrap(v, dt) for v in edge] + rand


@pytest.mark.parametrize("dt", INTS)
def test_integer_arithmetic_wraps(dt):
    rng = np.random.default_rng(BITS[dt] + (dt[0] == "u"))
    a = _int_values(dt, rng)
    b = list(reversed(_int_values(dt, rng)))
    ops = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
           "band": lambda x, y: x & y, "bor": lambda x, y: x | y, "bxor": lambda x, y: x ^ y}
    for op, f in ops.items():
        got = elementwise(binop(op), [(np.array(a, NP[dt]), dt), (np.array(b, NP[dt]), dt)], dt)
        assert [int(g) for g in got] == [wrap(f(x, y), dt) for x, y in zip(a, b)], op
    got = elementwise(lambda x: -x, [(np.array(a, NP[dt]), dt)], dt)
    assert [int(g) for g in got] == [wrap(-x, dt) for x in a]
    got = elementwise(lambda x: unary("abs", x), [(np.array(a, NP[dt]), dt)], dt)
    assert [int(g) for g in got] == [wrap(abs(x), dt) for x in a]
    # div / mod of non-negative operands
    na = [abs(x) for x in a if abs(x) == wrap(abs(x), dt)]
    nb = [max(abs(y), 1) for y in b if max(abs(y), 1) == wrap(max(abs(y), 1), dt)][:len(na)]
    na = na[:len(nb)]
    for op, f in (("div", lambda x, y: x // y), ("mod", lambda x, y: x % y)):
        got = elementwise(binop(op), [(np.array(na, NP[dt]), dt), (np.array(nb, NP[dt]), dt)],
                          dt)
        assert [int(g) for g in got] == [f(x, y) for x, y in zip(na, nb)], op
    cmp = elementwise(lambda x, y: x.lt(y), [(np.array(a, NP[dt]), dt), (np.array(b, NP[dt]), dt)],
                      "bool")
    assert cmp.tolist() == [x < y for x, y in zip(a, b)]


@pytest.mark.parametrize("dt", INTS)
def test_shifts_logical_for_unsigned_arithmetic_for_signed(dt):
    bits = BITS[dt]
    top = wrap(1 << (bits - 1), dt)
    vals = [1, top, wrap(-1, dt), wrap(-8, dt), 0x5A, wrap(0x12345678ABCDEF, dt)]
    amounts = [0, 1, bits - 1, 3]
    a = [v for v in vals for _ in amounts]
    s = [k for _ in vals for k in amounts]
    shl = elementwise(lambda x, y: x << y, [(np.array(a, NP[dt]), dt), (np.array(s, NP[dt]), dt)],
                      dt)
    shr = elementwise(lambda x, y: x >> y, [(np.array(a, NP[dt]), dt), (np.array(s, NP[dt]), dt)],
                      dt)
    assert [int(g) for g in shl] == [wrap(x << k, dt) for x, k in zip(a, s)]
    # Python's >> is arithmetic on the signed value and logical on a non-negative one
    assert [int(g) for g in shr] == [x >> k for x, k in zip(a, s)]
    if dt[0] == "i":
        assert int(shr[s.index(bits - 1, 4)]) == -1  # the sign bit shifted all the way down
        assert int(shl[1 * 4 + 0]) == top
    else:
        assert int(shr[s.index(bits - 1, 4)]) == 1
    # the amount may be given in another integer dtype
    got = elementwise(lambda x, y: x >> y, [(np.array([top], NP[dt]), dt),
                                            (np.array([bits - 1]), "i64")], dt)
    assert int(got[0]) == (-1 if dt[0] == "i" else 1)


# ---------------------------------------------------------------------------------------------
# conversions
def test_cast_f64_to_f32_rounds_to_nearest_even():
    xs = [3.5e38, F32_MAX * (1 + 2.0 ** -25), F32_MAX * (1 + 2.0 ** -24), 1.5 * SUB,
          2.0 ** -150, 2.0 ** -150 * (1 + 2.0 ** -52), -2.0 ** -151, 0.1, -0.0, NAN, -INF,
          1 + 2.0 ** -24, 1 + 3 * 2.0 ** -24, 2.5 * SUB, 2.0 ** -126 * (1 - 2.0 ** -25)]
    got = elementwise(lambda a: a.cast("f32"), [(xs, "f64")], "f32")
    want = [INF, F32_MAX, INF, 2 * SUB, 0.0, SUB, -0.0, f32_round(Fraction(0.1)), -0.0, NAN,
            -INF, 1.0, 1 + 2 * 2.0 ** -23, 2 * SUB, 2.0 ** -126]
    assert_floats(got, want, "f32")
    rng = np.random.default_rng(5)
    r = rng.standard_normal(400) * np.exp2(rng.integers(-160, 135, 400).astype(float))
    got = elementwise(lambda a: a.cast("f32"), [(r, "f64")], "f32")
    assert all(f32_bits(float(g)) == f32_bits(f32_round(Fraction(float(x))))
               for x, g in zip(r, got))
    back = elementwise(lambda a: a.cast("f64"), [(got, "f32")], "f64")
    assert back.tolist() == got.astype(float).tolist()


def test_cast_float_to_int_truncates():
    xs = [-2.7, 2.7, -0.0, 0.999, -1.0, 123456.5]
    for dt in ("i32", "i64"):
        for ft in ("f32", "f64"):
            got = elementwise(lambda a: a.cast(dt), [(xs, ft)], dt)
            assert [int(g) for g in got] == [-2, 2, 0, 0, -1, 123456]
    assert [int(g) for g in elementwise(lambda a: a.cast("u32"), [([3e9, 4294967295.0], "f64")],
                                        "u32")] == [3000000000, 4294967295]
    assert [int(g) for g in elementwise(lambda a: a.cast("u8"), [([255.9, 0.5], "f32")],
                                        "u8")] == [255, 0]
    big = float(2 ** 63 + 2 ** 11)
    got = elementwise(lambda a: a.cast("u64"), [([big], "f64")], "u64")
    assert int(got[0]) == 2 ** 63 + 2 ** 11
    assert int(elementwise(lambda a: a.cast("i64"), [([-2.0 ** 62], "f64")], "i64")[0]) == -2 ** 62


def test_cast_int_to_float_rounds_once():
    x = 2 ** 60 + 2 ** 36 + 1  # through f64 it would round twice and land on 2**60
    ints = np.array([x, 2 ** 24 + 1, 2 ** 24 + 3, -1], np.int64)
    got = elementwise(lambda a: a.cast("f32"), [(ints, "i64")], "f32")
    assert [int(g) for g in got] == [2 ** 60 + 2 ** 37, 2 ** 24, 2 ** 24 + 4, -1]
    got = elementwise(lambda a: a.cast("f64"), [(np.array([x, -(2 ** 53) - 1], np.int64), "i64")],
                      "f64")
    assert [int(g) for g in got] == [2 ** 60 + 2 ** 36, -(2 ** 53)]
    u = np.array([2 ** 64 - 1, 2 ** 63 + 2 ** 39 + 1, 7], np.uint64)
    assert [int(g) for g in elementwise(lambda a: a.cast("f32"), [(u, "u64")], "f32")] == \
        [2 ** 64, 2 ** 63 + 2 ** 40, 7]
    assert [int(g) for g in elementwise(lambda a: a.cast("f64"), [(u, "u64")], "f64")] == \
        [2 ** 64, 2 ** 63 + 2 ** 39, 7]  # f64's ulp there is 2**11
    got = elementwise(lambda a: a.cast("f32"), [(np.array([2 ** 31 - 1, -2 ** 31], np.int32),
                                                  "i32")], "f32")
    assert [int(g) for g in got] == [2 ** 31, -2 ** 31]


def test_cast_between_ints_and_bools():
    got = elementwise(lambda a: a.cast("u32"), [(np.array([-1, 2 ** 40 + 5], np.int64), "i64")],
                      "u32")
    assert [int(g) for g in got] == [2 ** 32 - 1, 5]
    got = elementwise(lambda a: a.cast("i32"), [(np.array([2 ** 32 - 1, 2 ** 31], np.uint32),
                                                  "u32")], "i32")
    assert [int(g) for g in got] == [-1, -2 ** 31]
    got = elementwise(lambda a: a.cast("u8"), [(np.array([300, -1], np.int32), "i32")], "u8")
    assert [int(g) for g in got] == [44, 255]
    got = elementwise(lambda a: a.cast("i64"), [(np.array([2 ** 64 - 1], np.uint64), "u64")], "i64")
    assert int(got[0]) == -1
    bools = [True, False]
    for dt in INTS + ("f32", "f64"):
        assert elementwise(lambda b: b.cast(dt), [(bools, "bool")], dt).tolist() == [1, 0]
    got = elementwise(lambda a: a.cast("bool"), [(np.array([0, 256, -3], np.int32), "i32")], "bool")
    assert got.tolist() == [False, True, True]


def test_bitcasts():
    f = np.array([1.0, -0.0, -2.5, INF], np.float32)
    got = elementwise(lambda a: a.bitcast("u32"), [(f, "f32")], "u32")
    assert [int(g) for g in got] == [0x3F800000, 0x80000000, 0xC0200000, 0x7F800000]
    got = elementwise(lambda a: a.bitcast("i32"), [(f, "f32")], "i32")
    assert [int(g) for g in got] == [0x3F800000, -2 ** 31, 0xC0200000 - 2 ** 32, 0x7F800000]
    # NaN payloads (quiet and signalling) survive a round trip through a float
    u = np.array([0x7FC00001, 0x7F800001, 0xFFFFFFFF, 0x00000001], np.uint32)
    got = elementwise(lambda a: a.bitcast("f32").bitcast("u32"), [(u, "u32")], "u32")
    assert got.tolist() == u.tolist()
    sub = elementwise(lambda a: a.bitcast("f32"), [(u[3:], "u32")], "f32")
    assert float(sub[0]) == SUB
    d = np.array([-1.5, 2.0 ** -1074], np.float64)
    got = elementwise(lambda a: a.bitcast("i64"), [(d, "f64")], "i64")
    assert [int(g) for g in got] == [struct.unpack("<q", struct.pack("<d", -1.5))[0], 1]
    got = elementwise(lambda a: a.bitcast("u64").bitcast("f64"), [(d, "f64")], "f64")
    assert got.tolist() == d.tolist()
    got = elementwise(lambda a: a.bitcast("f64"), [(np.array([2 ** 64 - 1], np.uint64), "u64")],
                      "f64")
    assert np.isnan(got[0])


def test_select_and_constants():
    a = [1.0, NAN, -0.0, 5.0]
    b = [2.0, 1.0, 0.0, -5.0]
    got = elementwise(lambda x, y: select(x.lt(y), x, y), [(a, "f64"), (b, "f64")], "f64")
    assert_floats(got, [1.0, 1.0, 0.0, -5.0], "f64")
    # the untaken arm may compute anything (here an integer division by zero) without faulting
    got = elementwise(lambda x: select(x.eq(const(0, "i32")), const(-1, "i32"),
                                       const(100, "i32") // x),
                      [(np.array([0, 7, 100], np.int32), "i32")], "i32")
    assert got.tolist() == [-1, 14, 1]
    # constants: wrapped to the integer width, floats rounded to nearest f32, specials kept
    got = elementwise(lambda x: x ^ const(-1, "u32"), [(np.array([0, 5], np.uint32), "u32")], "u32")
    assert got.tolist() == [2 ** 32 - 1, 2 ** 32 - 6]
    got = elementwise(lambda x: x + const(0.1, "f32"), [([0.0], "f32")], "f32")
    assert f32_bits(float(got[0])) == f32_bits(f32_round(Fraction(0.1)))
    got = elementwise(lambda x: select(x.gt(const(0.0, "f64")), const(-0.0, "f64"),
                                       select(x.lt(const(0.0, "f64")), const(-INF, "f64"),
                                              const(NAN, "f64"))),
                      [([1.0, -1.0, 0.0], "f64")], "f64")
    assert_floats(got, [-0.0, -INF, NAN], "f64")
    assert I.wrap_int(2 ** 64 + 3, "i64") == 3 and I.wrap_int(2 ** 63, "i64") == -2 ** 63


# ---------------------------------------------------------------------------------------------
# statements and grids
def test_multi_dimensional_grid_is_row_major_and_sized_by_scalars():
    i, j = var("i", "i64"), var("j", "i64")
    M = var("M", "i64")
    body = [Store("y", i * M + j, i * 100 + j), Store("z", i * M + j, var("s", "i64"))]
    k = kernel("k", [var("N", "i64"), M], ["i", "j"], body,
               [ScalarParam("N", "i64"), ScalarParam("M", "i64"), ScalarParam("s", "i64")])
    p = program([k], [buf("y", "i64", "out"), buf("z", "i64", "out")])
    out = run(p, {}, {"y": 15, "z": 15}, {"N": 3, "M": 5, "s": -7})
    assert out["y"].tolist() == [a * 100 + b for a in range(3) for b in range(5)]
    assert out["z"].tolist() == [-7] * 15


def test_empty_grid_runs_once_and_zero_extent_grid_never():
    body = [Store("y", const(1, "i64"), const(2.5, "f64"))]
    never = kernel("never", [0, 4], ["a", "b"], [Store("y", const(0, "i64"), const(9.0, "f64"))])
    p = program([kernel("once", [], [], body), never], [buf("y", "f64", "out")])
    assert run(p, {}, {"y": 3}, fill=-1).get("y").tolist() == [-1.0, 2.5, -1.0]


def test_nested_parallel_loops_and_lets():
    g, j, k = var("g", "i64"), var("j", "i64"), var("k", "i64")
    x = load("x", g * 4 + k, "f32")
    inner = (Let("t", x * var("w", "f32")), Store("y", (g * 3 + j) * 4 + k,
                                                  var("t", "f32") + j.cast("f32")))
    body = [Let("w", load("x", g * 4, "f32") + const(1.0, "f32")),
            Loop("j", const(3, "i64"), (Loop("k", const(4, "i64"), inner),))]
    p = program([kernel("k", [2], ["g"], body)], [buf("x", "f32", "in"), buf("y", "f32", "out")])
    xs = np.arange(8, dtype=np.float32) * np.float32(0.3)
    y = run(p, {"x": xs}, {"y": 24})["y"]
    want = [np.float32(xs[a * 4 + c] * (xs[a * 4] + np.float32(1))) + np.float32(b)
            for a in range(2) for b in range(3) for c in range(4)]
    assert y.tolist() == [float(w) for w in want]


def test_serial_loop_with_decl_assign_and_ordered_stores():
    """``acc = acc * 1.5 + x[k]`` in f32, inside a parallel loop, and a store every step."""
    g, j, k = var("g", "i64"), var("j", "i64"), var("k", "i64")
    acc = var("acc", "f32")
    lane = g * 4 + j
    ser = Loop("k", const(5, "i64"), (
        Let("xk", load("x", lane * 5 + k, "f32")),
        Assign("acc", acc * const(1.5, "f32") + var("xk", "f32")),
        Store("last", lane, k),
        Store("trace", lane * 5 + k, acc)), kind="serial")
    body = [Loop("j", const(4, "i64"), (Decl("acc", const(0.25, "f32")), ser,
                                        Store("y", lane, acc)))]
    p = program([kernel("k", [3], ["g"], body)],
                [buf("x", "f32", "in"), buf("y", "f32", "out"), buf("last", "i64", "out"),
                 buf("trace", "f32", "out")])
    xs = (np.random.default_rng(1).standard_normal(60) * 1e3).astype(np.float32)
    out = run(p, {"x": xs}, {"y": 12, "last": 12, "trace": 60})
    for lane_i in range(12):
        a = np.float32(0.25)
        for step in range(5):
            a = np.float32(a * np.float32(1.5)) + xs[lane_i * 5 + step]
            assert out["trace"][lane_i * 5 + step] == a
        assert out["y"][lane_i] == a
    assert out["last"].tolist() == [4] * 12


def test_kernel_level_serial_loop_and_zero_trip_loops():
    n = var("n", "i64")
    s = var("s", "i64")
    body = [Decl("s", const(1, "i64")),
            Loop("i", n, (Assign("s", s * const(3, "i64") + var("i", "i64")),), "serial"),
            Loop("i", const(0, "i64"), (Assign("s", const(-5, "i64")),), "serial"),
            Loop("i", const(0, "i64"), (Store("y", const(1, "i64"), s),)),
            Store("y", const(0, "i64"), s)]
    p = program([kernel("k", [], [], body, [ScalarParam("n", "i64")])], [buf("y", "i64", "out")])
    want = 1
    for i in range(40):
        want = wrap(want * 3 + i, "i64")
    assert run(p, {}, {"y": 2}, {"n": 40})["y"].tolist() == [want, 0]


ORDERS = ("seq", "pairwise")


def _u64_combine():
    a, b = acc_vars("u64")
    return a * const(0x9E3779B97F4A7C15, "u64") + b * const(31, "u64") + const(1, "u64")


def _u64_ref(x: int, y: int) -> int:
    return (x * 0x9E3779B97F4A7C15 + y * 31 + 1) % 2 ** 64


@pytest.mark.parametrize("order", ORDERS)
def test_reduction_order_for_every_length_up_to_70(order):
    """A non-associative, non-commutative combine shows the exact tree, for uniform extents
    (one kernel per length) and for an extent that differs per grid point (one kernel)."""
    g, i = var("g", "i64"), var("i", "i64")
    b = acc_vars("u64")[1]
    leaf = b ^ const(0xFF, "u64")
    xs = np.array([(v * 2654435761 + 7) % 2 ** 64 for v in range(70)], np.uint64)

    def red(extent: KExpr) -> Reduce:
        return Reduce("r", "i", extent, (Let("v", load("x", i, "u64")),), var("v", "u64"),
                      _u64_combine(), const(12345, "u64"), order, "sum", leaf)

    ks = [kernel(f"n{n}", [], [], [red(const(n, "i64")), Store("y", const(n, "i64"),
                                                                  var("r", "u64"))])
          for n in range(71)]
    ks.append(kernel("ragged", [71], ["g"], [red(g), Store("z", g, var("r", "u64"))]))
    p = program(ks, [buf("x", "u64", "in"), buf("y", "u64", "out"), buf("z", "u64", "out")])
    out = run(p, {"x": xs}, {"y": 71, "z": 71})
    ref = pairwise_ref if order == "pairwise" else seq_ref
    leaves = [int(v) ^ 0xFF for v in xs]
    want = [12345] + [ref(leaves[:n], _u64_ref) for n in range(1, 71)]
    assert [int(v) for v in out["y"]] == want
    assert [int(v) for v in out["z"]] == want


def test_any_order_max_and_pairwise_is_not_seq():
    g, i = var("g", "i64"), var("i", "i64")
    a, b = acc_vars("f32")
    x = load("x", g * 50 + i, "f32")
    mx = Reduce("m", "i", const(50, "i64"), (), x, select(a.ge(b), a, b), const(-INF, "f32"),
                "any", "max")
    sums = [Reduce(f"s_{o}", "i", const(50, "i64"), (), x, a + b, const(0.0, "f32"), o, "sum")
            for o in ORDERS]
    body = [mx, *sums, Store("m", g, var("m", "f32")),
            *(Store(f"s_{o}", g, var(f"s_{o}", "f32")) for o in ORDERS)]
    p = program([kernel("k", [40], ["g"], body)],
                [buf("x", "f32", "in"), buf("m", "f32", "out"),
                 *(buf(f"s_{o}", "f32", "out") for o in ORDERS)])
    rng = np.random.default_rng(2)
    xs = (rng.standard_normal(2000) * np.exp2(rng.integers(-20, 20, 2000))).astype(np.float32)
    out = run(p, {"x": xs}, {"m": 40, "s_seq": 40, "s_pairwise": 40})
    rows = xs.reshape(40, 50)
    assert out["m"].tolist() == rows.max(axis=1).tolist()
    add = lambda u, v: np.float32(u + v)  # noqa: E731
    assert out["s_seq"].tolist() == [float(seq_ref(list(r), add)) for r in rows]
    assert out["s_pairwise"].tolist() == [float(pairwise_ref(list(r), add)) for r in rows]
    assert out["s_seq"].tolist() != out["s_pairwise"].tolist()


@pytest.mark.parametrize("order", ORDERS)
def test_long_float_sums_fast_and_generic_paths_agree_with_reference(order):
    """``add(acc_a, acc_b)`` may take a vectorised shortcut; ``add(acc_b, acc_a)`` cannot."""
    i = var("i", "i64")
    a, b = acc_vars("f32")
    n = 3001
    x = load("x", i, "f32")
    reds = [Reduce("r0", "i", const(n, "i64"), (), x, a + b, const(0.0, "f32"), order, "sum"),
            Reduce("r1", "i", const(n, "i64"), (), x, b + a, const(0.0, "f32"), order, "sum")]
    body = [*reds, Store("y", const(0, "i64"), var("r0", "f32")),
            Store("y", const(1, "i64"), var("r1", "f32"))]
    p = program([kernel("k", [], [], body)], [buf("x", "f32", "in"), buf("y", "f32", "out")])
    rng = np.random.default_rng(4)
    xs = (rng.standard_normal(n) * np.exp2(rng.integers(-30, 30, n))).astype(np.float32)
    y = run(p, {"x": xs}, {"y": 2})["y"]
    add = lambda u, v: np.float32(u + v)  # noqa: E731
    want = (seq_ref if order == "seq" else pairwise_ref)(list(xs), add)
    assert y.tolist() == [float(want)] * 2


@pytest.mark.parametrize("order", ORDERS)
def test_reduce_with_leaf_init_and_empty_range(order):
    """f32 elements widened to f64 by ``leaf``; an empty range gives ``init``."""
    g, i = var("g", "i64"), var("i", "i64")
    a, b = acc_vars("f64")
    b32 = acc_vars("f32")[1]
    red = Reduce("s", "i", g * 7, (Let("v", load("x", i, "f32") * const(3.0, "f32")),),
                 var("v", "f32"), a + b, const(-0.0, "f64"), order, "sum", b32.cast("f64"))
    p = program([kernel("k", [6], ["g"], [red, Store("y", g, var("s", "f64"))])],
                [buf("x", "f32", "in"), buf("y", "f64", "out")])
    xs = (np.random.default_rng(6).standard_normal(35) * 1e8).astype(np.float32)
    y = run(p, {"x": xs}, {"y": 6})["y"]
    ref = seq_ref if order == "seq" else pairwise_ref
    want = [-0.0] + [ref([float(np.float32(v * np.float32(3))) for v in xs[:7 * r]],
                         lambda u, v: u + v) for r in range(1, 6)]
    assert_floats(y, want, "f64")


def test_reduce_inside_parallel_loop_invariant_values_and_nested_reduce():
    g, j, k = var("g", "i64"), var("j", "i64"), var("k", "i64")
    a, b = acc_vars("f64")
    x = load("x", (g * 3 + j) * 5 + k, "f64")
    row_sum = Reduce("rs", "k", const(5, "i64"), (), x * x, a + b, const(0.0, "f64"),
                     "pairwise", "sum")
    # a reduction whose elements do not depend on the grid point, and a max inside a sum
    inv = Reduce("inv", "k", const(5, "i64"), (), load("x", k, "f64"), a + b, const(0.0, "f64"),
                 "seq", "sum")
    inner_max = Reduce("mx", "k", const(5, "i64"), (), x, select(a.ge(b), a, b),
                       const(-INF, "f64"), "any", "max")
    outer = Reduce("sm", "j", const(3, "i64"), (inner_max,), var("mx", "f64"), a + b,
                   const(0.0, "f64"), "seq", "sum")
    body = [Loop("j", const(3, "i64"), (row_sum, Store("y", g * 3 + j, var("rs", "f64")))),
            inv, outer, Store("z", g, var("inv", "f64") + var("sm", "f64"))]
    p = program([kernel("k", [4], ["g"], body)],
                [buf("x", "f64", "in"), buf("y", "f64", "out"), buf("z", "f64", "out")])
    xs = np.random.default_rng(7).standard_normal(60)
    out = run(p, {"x": xs}, {"y": 12, "z": 4})
    t = xs.reshape(4, 3, 5)
    assert out["y"].tolist() == [pairwise_ref(list(t[q, r] * t[q, r]), lambda u, v: u + v)
                                 for q in range(4) for r in range(3)]
    inv_v = seq_ref(list(xs[:5]), lambda u, v: u + v)
    assert out["z"].tolist() == [inv_v + seq_ref([max(t[q, r]) for r in range(3)],
                                                 lambda u, v: u + v) for q in range(4)]


def test_ragged_extents_for_loops_and_reductions():
    """Extents that depend on a grid or an outer loop variable (1, 3, 17 ... per lane)."""
    g, j, k = var("g", "i64"), var("j", "i64"), var("k", "i64")
    a, b = acc_vars("i64")
    acc = var("acc", "i64")
    lens = [1, 3, 17, 0, 5, 17, 2]
    ext = load("lens", g, "i64")
    par = Loop("j", ext, (Store("p", g * 17 + j, g * 1000 + j),))
    ser = Loop("k", ext * 2, (Assign("acc", acc * const(3, "i64") + k + const(1, "i64")),),
               "serial")
    tri = Loop("j", const(6, "i64"), (
        Reduce("t", "k", j + g, (), load("x", k, "i64"), a * const(7, "i64") + b,
               const(-1, "i64"), "pairwise", "sum"),
        Store("tri", g * 6 + j, var("t", "i64"))))
    body = [par, Decl("acc", const(0, "i64")), ser, Store("s", g, acc), tri]
    p = program([kernel("k", [len(lens)], ["g"], body)],
                [buf("lens", "i64", "in"), buf("x", "i64", "in"), buf("p", "i64", "out"),
                 buf("s", "i64", "out"), buf("tri", "i64", "out")])
    xs = np.arange(30, dtype=np.int64) * 11 - 50
    out = run(p, {"lens": np.array(lens, np.int64), "x": xs},
              {"p": 17 * len(lens), "s": len(lens), "tri": 6 * len(lens)}, fill=-9)
    want_p = np.full(17 * len(lens), -9)
    for q, n in enumerate(lens):
        want_p[q * 17:q * 17 + n] = [q * 1000 + r for r in range(n)]
    assert out["p"].tolist() == want_p.tolist()
    want_s = []
    for n in lens:
        v = 0
        for r in range(2 * n):
            v = wrap(v * 3 + r + 1, "i64")
        want_s.append(v)
    assert out["s"].tolist() == want_s
    comb = lambda u, v: wrap(u * 7 + v, "i64")  # noqa: E731
    assert out["tri"].tolist() == [pairwise_ref([int(v) for v in xs[:r + q]], comb)
                                   if r + q else -1 for q in range(len(lens)) for r in range(6)]


def test_multi_kernel_program_through_a_temporary():
    g, i = var("g", "i64"), var("i", "i64")
    N = var("N", "i64")
    a, b = acc_vars("f64")
    size = [ScalarParam("N", "i64")]
    k1 = kernel("scale", [N], ["g"], [Store("t", g, load("x", g, "f64") * const(2.0, "f64"))],
                size)
    k2 = kernel("total", [], [], [Reduce("s", "i", N, (), load("t", i, "f64"), a + b,
                                         const(0.0, "f64"), "pairwise", "sum"),
                                  Store("tot", const(0, "i64"), var("s", "f64"))], size)
    k3 = kernel("center", [N], ["g"],
                [Store("y", g, load("t", N - g - const(1, "i64"), "f64")
                       - load("tot", const(0, "i64"), "f64"))], size)
    p = program([k1, k2, k3], [buf("x", "f64", "in"), buf("t", "f64", "temp"),
                               buf("tot", "f64", "temp"), buf("y", "f64", "out")])
    xs = np.random.default_rng(8).standard_normal(37)
    out = run(p, {"x": xs}, {"t": 37, "tot": 1, "y": 37}, {"N": 37})
    t = xs * 2.0
    tot = pairwise_ref(list(t), lambda u, v: u + v)
    assert out["y"].tolist() == (t[::-1] - tot).tolist()


def test_big_lanes_reuse_dying_arrays_without_clobbering_live_ones():
    """Long chains over >= 2**14 lanes compute in place; shared and bound values stay intact."""
    g, j = var("g", "i64"), var("j", "i64")
    n = 20000
    x = load("x", g, "f64")
    t = x * x
    u = t + const(1.0, "f64")
    w = (u * t).bitcast("i64") ^ const(1, "i64")
    r = w.bitcast("f64") + t + u
    alias = (t.bitcast("i64") ^ const(1, "i64")).bitcast("f64") + t  # a view of live ``t``
    body = [Let("a", x * const(2.0, "f64")),
            Store("y", g, r + var("a", "f64")),
            Store("z", g, var("a", "f64") * const(3.0, "f64")),
            Store("v", g, alias),
            Loop("j", const(2, "i64"), (Store("b", g * 2 + j, x * const(2.0, "f64")
                                              + j.cast("f64")),))]
    p = program([kernel("k", [n], ["g"], body)],
                [buf("x", "f64", "in"), buf("y", "f64", "out"), buf("z", "f64", "out"),
                 buf("b", "f64", "out"), buf("v", "f64", "out")])
    xs = np.random.default_rng(9).standard_normal(n)
    out = run(p, {"x": xs}, {"y": n, "z": n, "b": 2 * n, "v": n})
    tt = xs * xs
    uu = tt + 1.0
    ww = ((uu * tt).view(np.int64) ^ 1).view(np.float64)
    assert out["y"].tobytes() == (ww + tt + uu + xs * 2.0).tobytes()
    assert out["z"].tobytes() == (xs * 2.0 * 3.0).tobytes()
    assert out["v"].tobytes() == ((tt.view(np.int64) ^ 1).view(np.float64) + tt).tobytes()
    assert out["b"].tobytes() == np.stack([xs * 2.0, xs * 2.0 + 1.0], axis=1).ravel().tobytes()


# ---------------------------------------------------------------------------------------------
# malformed programs are refused
def _build(body, bufs, scalars=()):
    return KernelInterpreter().build(program([kernel("k", [2], ["g"], body, scalars)], bufs))


def test_malformed_programs_are_refused():
    g = var("g", "i64")
    y = buf("y", "f64", "out")
    with pytest.raises(KernelIRError, match="load dtype"):
        _build([Store("y", g, load("y", g, "f32").cast("f64"))], [y])
    with pytest.raises(KernelIRError, match="store of f32"):
        _build([Store("y", g, const(1.0, "f32"))], [y])
    with pytest.raises(KernelIRError, match="bitcast"):
        _build([Store("y", g, g.cast("i32").bitcast("f64"))], [y])
    with pytest.raises(KernelIRError, match="math ops"):   # f64 and f32 (fast contract) only
        _build([Store("y", g, unary("exp", g.cast("i32")).cast("f64"))], [y])
    with pytest.raises(KernelIRError, match="both args"):
        _build([Store("y", g, KExpr("add", (const(1.0, "f64"), const(1.0, "f32")), (), "f64"))],
               [y])
    a, b = acc_vars("f64")
    with pytest.raises(KernelIRError, match="must agree"):
        _build([Reduce("r", "i", const(2, "i64"), (), const(1.0, "f64"), a + b,
                       const(0.0, "f32"), "seq", "sum")], [y])


def test_runtime_errors():
    g = var("g", "i64")
    y = buf("y", "f64", "out")
    arrays = {"y": np.zeros(2)}
    with pytest.raises(KernelIRError, match="not declared"):
        _build([Assign("q", const(1.0, "f64"))], [y])(dict(arrays), {})
    # a parallel loop may not assign an accumulator declared outside it
    bad = [Decl("q", const(0.0, "f64")),
           Loop("j", const(2, "i64"), (Assign("q", const(1.0, "f64")),))]
    with pytest.raises(KernelIRError, match="not declared"):
        _build(bad, [y])(dict(arrays), {})
    with pytest.raises(KernelIRError, match="out of range"):
        _build([Store("y", g - const(1, "i64"), const(1.0, "f64"))], [y])(dict(arrays), {})
    with pytest.raises(KernelIRError, match="out of range"):
        _build([Store("y", g, load("y", g + const(1, "i64"), "f64"))], [y])(dict(arrays), {})
    with pytest.raises(KernelIRError, match="unbound"):
        _build([Store("y", g, var("nope", "f64"))], [y])(dict(arrays), {})
    with pytest.raises(KernelIRError, match="is int64, used as f64"):
        _build([Store("y", g, var("g", "f64"))], [y])(dict(arrays), {})
    with pytest.raises(KernelIRError, match="missing scalar"):
        _build([Store("y", g, var("s", "i64").cast("f64"))], [y],
               [ScalarParam("s", "i64")])(dict(arrays), {})
    with pytest.raises(KernelIRError, match="flat f64"):
        _build([Store("y", g, const(1.0, "f64"))], [y])({"y": np.zeros(2, np.float32)}, {})
