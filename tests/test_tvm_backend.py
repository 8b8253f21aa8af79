"""The TVM backend: hand-built kernel programs compiled by TVM (LLVM, CPU) and run bit for bit.

Every program is compared with an independent numpy computation written here and with the
kernel-IR interpreter (the oracle). The CUDA side is checked as source (TVM's CUDA codegen needs
no GPU). The IEEE traps of TVM (constant folding of ``x + 0.0``, ``x * 0.0``, ``x - x``, FMA
contraction, NaN ``!=``) each have a case that fails if the backend falls into them.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from numgrade.backends.tvm_backend import (TVMBackend, _target, float_literal,  # noqa: E402
                                           ident, int_literal, program_script)
from kernel_diff import bit_equal, fold_seq, fold_stack, run_both, stdlib_cases  # noqa: E402
from numgrade.kernels.interp import run_program  # noqa: E402
from numgrade.kernels.ir import (Assign, BufferDecl, Decl, Kernel, KernelProgram,  # noqa: E402
                                KExpr, Let, Loop, Reduce, ScalarParam, Store, acc_vars, const,
                                load, select, unary, var)

I64 = "i64"
g, h, i, j = (var(n, I64) for n in "ghij")
n_, m_, p_ = var("n", I64), var("m", I64), var("p", I64)
NP = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "i32": np.int32,
      "u64": np.uint64, "u32": np.uint32, "u16": np.uint16, "u8": np.uint8}


def c(v, dtype: str) -> KExpr:
    return const(v, dtype)


def program(kernels: list[Kernel], buffers: dict[str, tuple[str, str]],
            name: str = "p") -> KernelProgram:
    decls = {b: BufferDecl(b, s, (), s, role) for b, (s, role) in buffers.items()}
    return KernelProgram(name, decls, kernels, [b for b, (_, r) in buffers.items() if r == "in"],
                         [b for b, (_, r) in buffers.items() if r == "out"], False, [])


@pytest.fixture(scope="module")
def backend() -> TVMBackend:
    be = TVMBackend()
    ok, why = be.available()
    assert ok, why
    return be


def run(be: TVMBackend, prog: KernelProgram, inputs: dict[str, np.ndarray],
        lengths: dict[str, int], scalars: dict[str, int]) -> tuple[dict, dict]:
    """Run on TVM and on the interpreter; return both buffer sets."""
    def fresh() -> dict[str, np.ndarray]:
        out = {}
        for name, b in prog.buffers.items():
            if name in inputs:
                out[name] = inputs[name].copy()
            else:
                out[name] = np.zeros(lengths[name], NP[b.storage])
        return out
    got, want = fresh(), fresh()
    be.build(prog)(got, scalars)
    run_program(prog, want, scalars)
    return got, want


def bits(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


def assert_bits(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (what, got.dtype, want.dtype)
    bad = np.nonzero(bits(got) != bits(want))[0]
    assert bad.size == 0, f"{what}: {bad.size} differ, first at {bad[0]}: {got[bad[0]]!r} vs " \
                          f"{want[bad[0]]!r}"


SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, 1.5, 2.5, -2.5, 3.7, -3.7, np.inf, -np.inf, np.nan,
           5e-324, -5e-324, 1e-310, 1e308, -1e308, 3.4028235e38, 3.5e38, 1e-45, 1.4e-45, 7e-46,
           1 + 2.0 ** -12, 1 + 2.0 ** -27, 2.0 ** 53 + 2, 0.1, -0.3]


def special_f64(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal(n) * 10.0 ** rng.integers(-5, 5, n)
    x[:len(SPECIAL)] = SPECIAL
    return x


# ---------------------------------------------------------------------------------------------
# elementwise: every primitive, with the special values
def _f64_ops() -> list[tuple[str, Callable, Callable]]:
    z, nz, one = c(0.0, "f64"), c(-0.0, "f64"), c(1.0, "f64")
    return [
        ("add", lambda x, y: x + y, lambda x, y: x + y),
        ("sub", lambda x, y: x - y, lambda x, y: x - y),
        ("mul", lambda x, y: x * y, lambda x, y: x * y),
        ("div", lambda x, y: x / y, lambda x, y: x / y),
        ("sqrt", lambda x, y: unary("sqrt", x), lambda x, y: np.sqrt(x)),
        ("neg", lambda x, y: -x, lambda x, y: -x),
        ("abs", lambda x, y: unary("abs", x), lambda x, y: np.abs(x)),
        ("floor", lambda x, y: unary("floor", x), lambda x, y: np.floor(x)),
        ("ceil", lambda x, y: unary("ceil", x), lambda x, y: np.ceil(x)),
        ("trunc", lambda x, y: unary("trunc", x), lambda x, y: np.trunc(x)),
        ("rint", lambda x, y: unary("rint", x), lambda x, y: np.rint(x)),
        # the constant-folding traps: TVM would print these as x, 0, 0, 0, x
        ("x+0", lambda x, y: x + z, lambda x, y: x + 0.0),
        ("0+x", lambda x, y: z + x, lambda x, y: 0.0 + x),
        ("x*0", lambda x, y: x * z, lambda x, y: x * 0.0),
        ("x-x", lambda x, y: x - x, lambda x, y: x - x),
        ("0/x", lambda x, y: z / x, lambda x, y: 0.0 / x),
        ("x-(-0)", lambda x, y: x - nz, lambda x, y: x - (-0.0)),
        ("x*1+0", lambda x, y: x * one + z, lambda x, y: x * 1.0 + 0.0),
        ("0-x", lambda x, y: z - x, lambda x, y: 0.0 - x),
        # contraction trap: x*y + 1 and x*y - x*y
        ("xy+1", lambda x, y: x * y + one, lambda x, y: x * y + 1.0),
        ("xy-xy", lambda x, y: x * y - x * y, lambda x, y: x * y - x * y),
        ("min", lambda x, y: select(x.lt(y), x, y), lambda x, y: np.where(x < y, x, y)),
        ("max", lambda x, y: select(x.gt(y), x, y), lambda x, y: np.where(x > y, x, y)),
        ("nanmax", lambda x, y: select(x.ne(x) | x.ge(y), x, y),
         lambda x, y: np.where((x != x) | (x >= y), x, y)),
        ("bits", lambda x, y: x.bitcast("u64").bitcast("f64"), lambda x, y: x),
        ("f32rt", lambda x, y: x.cast("f32").cast("f64"),
         lambda x, y: x.astype(np.float32).astype(np.float64)),
    ]


CMP_OPS = ["lt", "le", "gt", "ge", "eq", "ne"]
NP_CMP = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
          "eq": np.equal, "ne": np.not_equal}


def elementwise_program() -> tuple[KernelProgram, list, dict[str, int]]:
    """One kernel over g in range(n): each op writes slot k of row g of an output buffer."""
    x, y = load("x", g, "f64"), load("y", g, "f64")
    xf, yf = load("xf", g, "f32"), load("yf", g, "f32")
    u, u2 = load("u", g, "u32"), load("u2", g, "u32")
    v, v2 = load("v", g, "u64"), load("v2", g, "u64")
    s, s2 = load("s", g, "i32"), load("s2", g, "i32")
    t = load("t", g, "i64")
    b8 = load("b8", g, "u8")
    sh = load("sh", g, "u8")  # shift amounts in [0, 31]
    fops = _f64_ops()
    body: list = []
    checks: list = []  # (buffer, slot, numpy fn of inputs)

    def put(buffer: str, e: KExpr, fn: Callable, K: int) -> None:
        slot = sum(1 for b, *_ in checks if b == buffer)
        body.append(Store(buffer, g * c(K, I64) + c(slot, I64), e))
        checks.append((buffer, slot, fn))

    K64, K32, KU8, KI = 40, 20, 20, 40
    for name, ke, fn in fops:
        put("o64", ke(x, y), (lambda f: lambda a: f(a["x"], a["y"]))(fn), K64)
    put("o64", xf.cast("f64"), lambda a: a["xf"].astype(np.float64), K64)
    put("o64", t.cast("f64"), lambda a: a["t"].astype(np.float64), K64)
    put("o64", v.cast("f64"), lambda a: a["v"].astype(np.float64), K64)
    put("o64", s.cast("f64"), lambda a: a["s"].astype(np.float64), K64)
    put("o64", v.bitcast("f64"), lambda a: a["v"].view(np.float64), K64)
    put("o64", (x.lt(y)).cast("f64"), lambda a: (a["x"] < a["y"]).astype(np.float64), K64)
    one32 = c(1.0, "f32")
    f32ops = [
        (xf + yf, lambda a: a["xf"] + a["yf"]), (xf - yf, lambda a: a["xf"] - a["yf"]),
        (xf * yf, lambda a: a["xf"] * a["yf"]), (xf / yf, lambda a: a["xf"] / a["yf"]),
        (unary("sqrt", xf), lambda a: np.sqrt(a["xf"])),
        (xf * yf - one32, lambda a: a["xf"] * a["yf"] - np.float32(1)),
        (-xf, lambda a: -a["xf"]), (unary("abs", xf), lambda a: np.abs(a["xf"])),
        (unary("rint", xf), lambda a: np.rint(a["xf"])),
        (x.cast("f32"), lambda a: a["x"].astype(np.float32)),
        (t.cast("f32"), lambda a: a["t"].astype(np.float32)),
        (v.cast("f32"), lambda a: a["v"].astype(np.float32)),
        (u.bitcast("f32"), lambda a: a["u"].view(np.float32)),
        (xf + c(0.0, "f32"), lambda a: a["xf"] + np.float32(0.0)),
    ]
    for e, fn in f32ops:
        put("o32", e, fn, K32)
    for op in CMP_OPS:
        put("ob", KExpr(op, (x, y), (), "bool").cast("u8"),
            (lambda o: lambda a: NP_CMP[o](a["x"], a["y"]).astype(np.uint8))(op), KU8)
        put("ob", KExpr(op, (xf, xf), (), "bool").cast("u8"),
            (lambda o: lambda a: NP_CMP[o](a["xf"], a["xf"]).astype(np.uint8))(op), KU8)
    put("ob", (x.lt(y) & y.lt(x)).cast("u8"), lambda a: np.zeros_like(a["b8"]), KU8)
    put("ob", (x.lt(y) | x.eq(y)).cast("u8"), lambda a: (a["x"] <= a["y"]).astype(np.uint8), KU8)
    put("ob", unary("not", x.eq(x)).cast("u8"), lambda a: np.isnan(a["x"]).astype(np.uint8), KU8)
    put("ob", b8 + b8, lambda a: a["b8"] + a["b8"], KU8)
    put("ob", b8.cast("bool").cast("u8"), lambda a: (a["b8"] != 0).astype(np.uint8), KU8)
    put("ob", b8 >> c(3, "u8"), lambda a: a["b8"] >> np.uint8(3), KU8)
    put("ob", x.cast("bool").cast("u8"), lambda a: (a["x"] != 0).astype(np.uint8), KU8)
    amt32 = sh.cast("u32")
    ints = [
        ("ou32", u * u2, lambda a: a["u"] * a["u2"]),
        ("ou32", u + u2, lambda a: a["u"] + a["u2"]),
        ("ou32", u - u2, lambda a: a["u"] - a["u2"]),
        ("ou32", u >> amt32, lambda a: a["u"] >> a["sh"].astype(np.uint32)),
        ("ou32", u << amt32, lambda a: a["u"] << a["sh"].astype(np.uint32)),
        ("ou32", u >> sh, lambda a: a["u"] >> a["sh"].astype(np.uint32)),
        ("ou32", u ^ c(0xFFFFFFFF, "u32"), lambda a: a["u"] ^ np.uint32(0xFFFFFFFF)),
        ("ou32", (u & c(0xFF00FF00, "u32")) | c(1, "u32"),
         lambda a: (a["u"] & np.uint32(0xFF00FF00)) | np.uint32(1)),
        ("ou32", xf.bitcast("u32"), lambda a: a["xf"].view(np.uint32)),
        ("ou32", u // (u2 | c(1, "u32")), lambda a: a["u"] // (a["u2"] | np.uint32(1))),
        ("ou32", u % (u2 | c(1, "u32")), lambda a: a["u"] % (a["u2"] | np.uint32(1))),
        ("ou32", -u, lambda a: np.uint32(0) - a["u"]),
        ("oi32", s + s2, lambda a: a["s"] + a["s2"]),
        ("oi32", s - s2, lambda a: a["s"] - a["s2"]),
        ("oi32", s * s2, lambda a: a["s"] * a["s2"]),
        ("oi32", s >> sh.cast("i32"), lambda a: a["s"] >> a["sh"].astype(np.int32)),
        ("oi32", s << sh.cast("i32"), lambda a: a["s"] << a["sh"].astype(np.int32)),
        ("oi32", -s, lambda a: -a["s"]),
        ("oi32", unary("abs", s), lambda a: np.abs(a["s"])),
        ("oi32", load("xr", g, "f64").cast("i32"), lambda a: a["xr"].astype(np.int32)),
        ("oi32", (s.lt(s2)).cast("i32"), lambda a: (a["s"] < a["s2"]).astype(np.int32)),
        ("ou64", v * v2, lambda a: a["v"] * a["v2"]),
        ("ou64", v + v2, lambda a: a["v"] + a["v2"]),
        ("ou64", v >> sh.cast("u64"), lambda a: a["v"] >> a["sh"].astype(np.uint64)),
        ("ou64", v << c(40, "u64"), lambda a: a["v"] << np.uint64(40)),
        ("ou64", v & c(0xFFFFFFFFFFFFFFFF, "u64"), lambda a: a["v"]),
        ("ou64", v ^ c(1 << 63, "u64"), lambda a: a["v"] ^ np.uint64(1 << 63)),
        ("ou64", x.bitcast("u64"), lambda a: a["x"].view(np.uint64)),
        ("ou64", u.cast("u64"),
         lambda a: a["u"].astype(np.uint64)),
        ("oi64", t >> c(7, I64), lambda a: a["t"] >> np.int64(7)),
        ("oi64", t << c(3, I64), lambda a: a["t"] << np.int64(3)),
        ("oi64", -t, lambda a: -a["t"]),
        ("oi64", unary("abs", t), lambda a: np.abs(a["t"])),
        ("oi64", load("xr", g, "f64").cast(I64), lambda a: a["xr"].astype(np.int64)),
        ("oi64", x.bitcast(I64), lambda a: a["x"].view(np.int64)),
        ("oi64", (t & c(0xFFFF, I64)) // c(7, I64), lambda a: (a["t"] & 0xFFFF) // 7),
        ("oi64", (t & c(0xFFFF, I64)) % c(7, I64), lambda a: (a["t"] & 0xFFFF) % 7),
        ("oi64", s.cast(I64), lambda a: a["s"].astype(np.int64)),
        ("oi64", u.cast(I64), lambda a: a["u"].astype(np.int64)),
        ("oi64", select(t.gt(c(0, I64)), t, c(-5, I64)), lambda a: np.where(a["t"] > 0, a["t"], -5)),
        ("ou16", u.cast("u16"),
         lambda a: a["u"].astype(np.uint16)),
        ("ou16", u.cast("u16") * c(3, "u16"), lambda a: a["u"].astype(np.uint16) * np.uint16(3)),
    ]
    for buffer, e, fn in ints:
        put(buffer, e, fn, KI)
    k = Kernel("elementwise", (n_,), ("g",), tuple(body),
               ("x", "y", "xf", "yf", "u", "u2", "v", "v2", "s", "s2", "t", "b8", "sh", "xr",
                "o64", "o32", "ob", "ou32", "oi32", "ou64", "oi64", "ou16"),
               (ScalarParam("n", I64),))
    bufs = {"x": ("f64", "in"), "y": ("f64", "in"), "xf": ("f32", "in"), "yf": ("f32", "in"),
            "u": ("u32", "in"), "u2": ("u32", "in"), "v": ("u64", "in"), "v2": ("u64", "in"),
            "s": ("i32", "in"), "s2": ("i32", "in"), "t": ("i64", "in"), "b8": ("u8", "in"),
            "sh": ("u8", "in"), "xr": ("f64", "in"),
            "o64": ("f64", "out"), "o32": ("f32", "out"), "ob": ("u8", "out"),
            "ou32": ("u32", "out"), "oi32": ("i32", "out"), "ou64": ("u64", "out"),
            "oi64": ("i64", "out"), "ou16": ("u16", "out")}
    sizes = {"o64": K64, "o32": K32, "ob": KU8, "ou32": KI, "oi32": KI, "ou64": KI, "oi64": KI,
             "ou16": KI}
    return program([k], bufs, "elementwise"), checks, sizes


def elementwise_inputs(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    x = special_f64(rng, n)
    y = np.roll(x, 7) if n > 7 else x.copy()
    y[::5] = rng.standard_normal(len(y[::5]))
    with np.errstate(over="ignore"):
        a = {"x": x, "y": y, "xf": x.astype(np.float32), "yf": y.astype(np.float32)}
    a["xf"][:4] = [1 + 2.0 ** -12, np.nan, -0.0, 1.4e-45]
    a["yf"][:4] = [1 + 2.0 ** -12, 1.0, 0.0, 0.5]
    u = rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32)
    u[:3] = [0, 0xFFFFFFFF, 0x80000000]
    a["u"], a["u2"] = u, np.roll(u, 3)
    v = rng.integers(0, 2 ** 63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    v[:3] = [0, 2 ** 64 - 1, 2 ** 63]
    a["v"], a["v2"] = v, np.roll(v, 5)
    s = rng.integers(-2 ** 31, 2 ** 31, n).astype(np.int32)
    s[:4] = [-2 ** 31, 2 ** 31 - 1, -1, 0]
    a["s"], a["s2"] = s, np.roll(s, 1)
    t = rng.integers(-2 ** 62, 2 ** 62, n).astype(np.int64)
    t[:3] = [0, -1, 2 ** 53 + 1]
    a["t"] = t
    a["b8"] = rng.integers(0, 256, n).astype(np.uint8)
    a["sh"] = rng.integers(0, 32, n).astype(np.uint8)
    a["xr"] = np.trunc(rng.uniform(-2e9, 2e9, n) * 0.5) + rng.uniform(-0.99, 0.99, n)
    a["xr"][:4] = [-0.5, 0.9, -1.5, 2.0 ** 30 + 0.5]
    return a


def test_elementwise_primitives_bit_exact(backend):
    prog, checks, K = elementwise_program()
    rng = np.random.default_rng(1)
    for n in (97, 1, 0):
        inputs = elementwise_inputs(rng, max(n, 64))
        inputs = {k: v[:n] for k, v in inputs.items()}
        lengths = {b: K[b] * n for b in K}
        got, want = run(backend, prog, inputs, lengths, {"n": n})
        with np.errstate(all="ignore"):
            for buffer, slot, fn in checks:
                expect = np.asarray(fn(inputs)).astype(got[buffer].dtype)
                rows = got[buffer].reshape(n, K[buffer]) if n else got[buffer].reshape(0, 1)
                wrows = want[buffer].reshape(n, K[buffer]) if n else rows
                if n:
                    assert_bits(rows[:, slot], expect, f"{buffer}[{slot}] vs numpy")
                    assert_bits(rows[:, slot], wrows[:, slot], f"{buffer}[{slot}] vs interp")


def test_no_fused_multiply_add(backend):
    """a*b+c with a=b=1+2**-12, c=-1 is 2**-11 in f32 (2**-11+2**-24 if fused); same in f64."""
    for dt, eps in (("f32", 2.0 ** -12), ("f64", 2.0 ** -27)):
        a, b = load("a", g, dt), load("b", g, dt)
        k = Kernel("fma", (n_,), ("g",),
                   (Let("prod", a * b), Store("o", g, var("prod", dt) + load("c", g, dt)),
                    Store("o2", g, a * b + load("c", g, dt))),
                   ("a", "b", "c", "o", "o2"), (ScalarParam("n", I64),))
        prog = program([k], {"a": (dt, "in"), "b": (dt, "in"), "c": (dt, "in"),
                             "o": (dt, "out"), "o2": (dt, "out")}, f"fma_{dt}")
        t = NP[dt]
        n = 33
        ins = {"a": np.full(n, 1 + eps, t), "b": np.full(n, 1 + eps, t), "c": np.full(n, -1, t)}
        got, _ = run(backend, prog, ins, {"o": n, "o2": n}, {"n": n})
        ieee = ins["a"] * ins["b"] + ins["c"]
        assert ieee[0] == 2 * eps  # the rounded product loses eps**2
        assert_bits(got["o"], ieee, f"{dt} via let")
        assert_bits(got["o2"], ieee, f"{dt} inline")
    # TVM's LLVM options allow contraction everywhere: the CPU target must lack FMA
    from tvm.target import codegen
    assert not codegen.llvm_cpu_has_features(["fma"], _target("llvm"))


def test_empty_program(backend):
    prog = program([], {}, "nothing")
    assert "class Module" in backend.emit(prog)
    backend.build(prog)({}, {})
    assert backend.emit_cuda(prog) == ""


def test_literals_are_exact(backend):
    values = {"f64": [0.1, 5e-324, -0.0, math.inf, -math.inf, math.nan, 1.7976931348623157e308,
                      -2.5],
              "f32": [0.1, 1e-45, -0.0, math.inf, math.nan, 3.4028234663852886e38, 16777217.0],
              "u64": [2 ** 64 - 1, 2 ** 63, 0, 12345678901234567890],
              "i64": [-2 ** 63, 2 ** 63 - 1, -1], "u32": [2 ** 32 - 1, 2 ** 31, -1],
              "i32": [-2 ** 31, 2 ** 31 - 1], "u16": [65535, 1], "u8": [255, 0, 256 + 7]}
    kernels, bufs = [], {}
    for dt, vs in values.items():
        body = tuple(Store(f"o_{dt}", c(k, I64), c(v, dt)) for k, v in enumerate(vs))
        kernels.append(Kernel(f"lit_{dt}", (), (), body, (f"o_{dt}",), ()))
        bufs[f"o_{dt}"] = (dt, "out")
    prog = program(kernels, bufs, "literals")
    got, want = run(backend, prog, {}, {f"o_{dt}": len(vs) for dt, vs in values.items()}, {})
    for dt, vs in values.items():
        if dt in ("f64", "f32"):
            expect = np.array(vs, NP[dt])
        else:
            bits_ = 8 * np.dtype(NP[dt]).itemsize
            expect = np.array([v % (1 << bits_) for v in vs], np.uint64).astype(NP[dt])
        assert_bits(got[f"o_{dt}"], expect, dt)
        assert_bits(got[f"o_{dt}"], want[f"o_{dt}"], dt + " interp")
    assert float_literal(0.1, "f64") == "T.float64(0.1)"
    assert float_literal(0.1, "f32") == "T.float32(0.10000000149011612)"
    assert "T.int64(-4503599627370496)" in float_literal(-math.inf, "f64")
    assert int_literal(2 ** 64 - 1, "u64") == 'T.reinterpret("uint64", T.int64(-1))'
    assert int_literal(-1, "u32") == "T.uint32(4294967295)"


def test_math_ops_are_libm(backend):
    """exp, log, ... call the C library: equal to Python's math (the same libm) bit for bit."""
    fns = {"exp": math.exp, "log": math.log, "tanh": math.tanh, "sin": math.sin,
           "cos": math.cos, "exp2": math.exp2,
           "log2": math.log2}
    x = load("x", g, "f64")
    body = tuple(Store("o", g * c(len(fns), I64) + c(k, I64), unary(op, x))
                 for k, op in enumerate(fns))
    prog = program([Kernel("math", (n_,), ("g",), body, ("x", "o"), (ScalarParam("n", I64),))],
                   {"x": ("f64", "in"), "o": ("f64", "out")}, "mathops")
    xs = np.random.default_rng(2).uniform(0.01, 20.0, 200)
    got, _ = run(backend, prog, {"x": xs}, {"o": 200 * len(fns)}, {"n": 200})
    rows = got["o"].reshape(200, len(fns))
    for k, (op, fn) in enumerate(fns.items()):
        assert_bits(rows[:, k], np.array([fn(float(v)) for v in xs]), op)


# ---------------------------------------------------------------------------------------------
# loops, accumulators, reductions




def test_reductions_all_orders(backend):
    a32, b32 = acc_vars("f32")
    a64, b64 = acc_vars("f64")
    el = load("a", g * n_ + i, "f32")
    sq = b32 * b32
    nanmax = select(a32.ne(a32) | a32.ge(b32), a32, b32)  # NaN-propagating, order-sensitive zeros
    specs = [  # (name, order, combine, init, leaf, python combine, python leaf, dtype)
        ("sum_seq", "seq", a32 + b32, -0.0, None, "add", None, "f32"),
        ("sum_pw", "pairwise", a32 + b32, -0.0, None, "add", None, "f32"),
        ("sumsq_pw", "pairwise", a32 + b32, 0.0, sq, "add", "sq", "f32"),
        ("sumsq_seq", "seq", a32 + b32, 0.0, sq, "add", "sq", "f32"),
        ("max_any", "any", nanmax, -math.inf, None, "nanmax", None, "f32"),
        ("max_seq", "seq", nanmax, -math.inf, None, "nanmax", None, "f32"),
        ("sub_pw", "pairwise", a64 - b64 * c(0.5, "f64"), 7.0, None, "subhalf", None, "f64"),
        ("sub_seq", "seq", a64 - b64 * c(0.5, "f64"), 7.0, None, "subhalf", None, "f64"),
    ]
    body, bufs = [], {"a": ("f32", "in")}
    for name, order, comb, init, leaf, *_ , dt in specs:
        value = el if dt == "f32" else el.cast("f64")
        body.append(Reduce(name, "i", n_, (), value, comb, c(init, dt), order, "sum", leaf))
        body.append(Store("o_" + name, g, var(name, dt)))
        bufs["o_" + name] = (dt, "out")
    k = Kernel("reduce", (m_,), ("g",), tuple(body), tuple(bufs), (ScalarParam("n", I64),
                                                                    ScalarParam("m", I64)))
    prog = program([k], bufs, "reductions")
    py = {"add": lambda a, b: a + b, "subhalf": lambda a, b: a - b * np.float64(0.5),
          "nanmax": lambda a, b: a if (a != a) or a >= b else b}
    rng = np.random.default_rng(3)
    for n in (0, 1, 3, 17, 1000):
        m = 3
        x = (rng.standard_normal(m * n) * 10.0 ** rng.integers(-4, 5, m * n)).astype(np.float32)
        if n >= 3:
            x[1] = -0.0
            x[n + 2] = np.nan
        got, want = run(backend, prog, {"a": x}, {b: m for b in bufs if b != "a"},
                        {"n": n, "m": m})
        for name, order, _, init, leaf, pc, pl, dt in specs:
            t = NP[dt]
            expect = []
            for r in range(m):
                xs = [t(v) for v in x[r * n:(r + 1) * n]]
                if pl == "sq":
                    xs = [v * v for v in xs]
                fold = fold_seq if order == "seq" else fold_stack
                with np.errstate(all="ignore"):
                    expect.append(fold(xs, py[pc], t(init)))
            assert_bits(got["o_" + name], np.array(expect, t), f"{name} n={n}")
            assert_bits(got["o_" + name], want["o_" + name], f"{name} n={n} interp")


def test_serial_loops_accumulators_and_nesting(backend):
    """Decl/Assign in serial loops (ragged inner extent), a Reduce inside a parallel loop."""
    x = load("x", g * n_ + i, "f64")
    tri = Loop("j", i + c(1, I64), (Assign("cnt", var("cnt", I64) + j),), "serial")
    serial = Loop("i", n_, (Let("xi", x),
                            Assign("acc", var("acc", "f64") * c(0.5, "f64") + var("xi", "f64")),
                            Assign("pos", var("pos", I64)
                                   + select(var("xi", "f64").gt(c(0.0, "f64")), c(1, I64),
                                            c(0, I64))),
                            tri), "serial")
    a64, b64 = acc_vars("f64")
    inner = Loop("j", p_, (Reduce("rs", "i", n_, (Let("w", load("x", g * n_ + i, "f64")),),
                                  var("w", "f64") * load("y", j, "f64"), a64 + b64,
                                  c(0.0, "f64"), "pairwise", "sum"),
                           Store("mv", g * p_ + j, var("rs", "f64"))), "parallel")
    body = (Decl("acc", c(0.0, "f64")), Decl("pos", c(0, I64)), Decl("cnt", c(0, I64)),
            serial, Store("oacc", g, var("acc", "f64")), Store("opos", g, var("pos", I64)),
            Store("ocnt", g, var("cnt", I64)), inner)
    k = Kernel("serial", (m_,), ("g",), body, ("x", "y", "oacc", "opos", "ocnt", "mv"),
               (ScalarParam("n", I64), ScalarParam("m", I64), ScalarParam("p", I64)))
    prog = program([k], {"x": ("f64", "in"), "y": ("f64", "in"), "oacc": ("f64", "out"),
                         "opos": ("i64", "out"), "ocnt": ("i64", "out"), "mv": ("f64", "out")},
                   "serial")
    rng = np.random.default_rng(4)
    for n, m, p in ((17, 5, 3), (0, 2, 4), (200, 3, 1)):
        xs, ys = rng.standard_normal(m * n), rng.standard_normal(max(p, 1))[:p]
        got, want = run(backend, prog, {"x": xs, "y": ys},
                        {"oacc": m, "opos": m, "ocnt": m, "mv": m * p}, {"n": n, "m": m, "p": p})
        for r in range(m):
            row = xs[r * n:(r + 1) * n]
            acc = 0.0
            for v in row:
                acc = acc * 0.5 + v
            assert got["oacc"][r] == acc and got["opos"][r] == int((row > 0).sum())
            assert got["ocnt"][r] == sum(ii * (ii + 1) // 2 for ii in range(n))
            for jj in range(p):
                want_mv = fold_stack([v * ys[jj] for v in row], lambda a, b: a + b, 0.0)
                assert_bits(got["mv"][r * p + jj:r * p + jj + 1], np.array([want_mv]), "mv")
        for b in ("oacc", "opos", "ocnt", "mv"):
            assert_bits(got[b], want[b], b + " interp")


def test_kernels_through_temp_buffer_and_grids(backend):
    """Three kernels: a 1-D grid into a temp, an empty grid reducing it, a 3-D const grid."""
    k1 = Kernel("scale", (n_,), ("g",),
                (Store("tmp", g, load("a", g, "f32").cast("f64") * c(3.0, "f64")),),
                ("a", "tmp"), (ScalarParam("n", I64),))
    a64, b64 = acc_vars("f64")
    k2 = Kernel("total", (), (),
                (Reduce("s", "i", n_, (), load("tmp", i, "f64"), a64 + b64, c(0.0, "f64"),
                        "seq", "sum"),
                 Store("out", c(0, I64), var("s", "f64")),
                 Loop("i", n_, (Store("neg", i, -load("tmp", i, "f64")),), "parallel")),
                ("tmp", "out", "neg"), (ScalarParam("n", I64),))
    g0, g1, g2 = var("g0", I64), var("g1", I64), var("g2", I64)
    k3 = Kernel("coords", (c(2, I64), c(3, I64), c(4, I64)), ("g0", "g1", "g2"),
                (Store("co", (g0 * c(3, I64) + g1) * c(4, I64) + g2,
                       g0 * c(100, I64) + g1 * c(10, I64) + g2),), ("co",), ())
    prog = program([k1, k2, k3], {"a": ("f32", "in"), "tmp": ("f64", "temp"),
                                  "out": ("f64", "out"), "neg": ("f64", "out"),
                                  "co": ("i64", "out")}, "pipeline")
    script = backend.emit(prog)
    assert script.count("@T.prim_func") == 3 and "T.parallel(n_)" in script
    rng = np.random.default_rng(5)
    for n in (1000, 1, 0):
        a = rng.standard_normal(n).astype(np.float32)
        got, want = run(backend, prog, {"a": a}, {"tmp": n, "out": 1, "neg": n, "co": 24},
                        {"n": n})
        tmp = a.astype(np.float64) * 3.0
        assert_bits(got["out"], np.array([fold_seq(list(tmp), lambda x, y: x + y, 0.0)]), "sum")
        assert_bits(got["neg"], -tmp, "neg")
        assert list(got["co"]) == [a0 * 100 + a1 * 10 + a2 for a0 in range(2)
                                   for a1 in range(3) for a2 in range(4)]
        for b in ("out", "neg", "co"):
            assert_bits(got[b], want[b], b + " interp")


def test_unaligned_and_readonly_arrays(backend):
    """Arrays off the 64-byte boundary run zero-copy; read-only and empty inputs are copied."""
    k = Kernel("twice", (n_,), ("g",), (Store("o", g, load("a", g, "f64") * c(2.0, "f64")),),
               ("a", "o"), (ScalarParam("n", I64),))
    prog = program([k], {"a": ("f64", "in"), "o": ("f64", "out")}, "twice")
    launch = backend.build(prog)
    base = np.arange(40, dtype=np.float64)
    a = base[1:34]  # 8 bytes past whatever alignment base has
    a.flags.writeable = False
    o = np.zeros(41)[3:36]
    launch({"a": a, "o": o}, {"n": 33})
    assert_bits(o, a * 2.0, "twice")
    assert backend.build(prog).lib is launch.lib  # compiled once, cached


def test_identifiers_are_checked(backend):
    for bad in ("1x", "a b", "x;y", "a-b", ""):
        k = Kernel("k", (), (), (Store("o", c(0, I64), c(1.0, "f64")),), ("o",), ())
        with pytest.raises(ValueError):
            program_script(program([k], {bad: ("f64", "out")}))
        with pytest.raises(ValueError):
            ident(bad)
    k = Kernel("k", (), (), (Let("bad name", c(1.0, "f64")),), (), ())
    with pytest.raises(ValueError):
        backend.emit(program([k], {}))
    # names that are the parser's own globals are kept apart by the suffix
    k = Kernel("T", (n_,), ("I",), (Let("tvm", load("T", var("I", I64), "f64")),
                                    Store("R", var("I", I64), var("tvm", "f64"))),
               ("T", "R"), (ScalarParam("n", I64),))
    prog = program([k], {"T": ("f64", "in"), "R": ("f64", "out")}, "reserved")
    got, _ = run(backend, prog, {"T": np.arange(5.0)}, {"R": 5}, {"n": 5})
    assert list(got["R"]) == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_emit_is_what_is_built(backend):
    prog, _, _ = elementwise_program()
    text = backend.emit(prog)
    assert text == program_script(prog, "llvm")
    mod = tvm.script.from_source(text)
    assert [gv.name_hint for gv in mod.get_global_vars()] == ["elementwise_"]
    assert "T.parallel(n_)" in text and "T.Not(" in text


def test_cuda_source_generated(backend):
    prog, _, _ = elementwise_program()
    src = backend.emit_cuda(prog)
    assert '__global__' in src and "blockIdx.x" in src and "threadIdx.x" in src
    for intrinsic in ("__dadd_rn", "__dmul_rn", "__ddiv_rn", "__fmul_rn", "__fsqrt_rn"):
        assert intrinsic in src, intrinsic
    script = program_script(prog, "cuda")
    assert 'thread="blockIdx.x"' in script and "T.parallel" not in script


def test_long_shared_chains_compile_fast(backend):
    """Sixty Lets, each using the previous one twice: TVM's analyzer would expand T.let values
    exponentially; scratch scalars keep the build linear."""
    body, prev = [], load("a", g, "f64")
    for k in range(60):
        body.append(Let(f"t{k}", prev * prev * c(0.5, "f64") + prev))
        prev = var(f"t{k}", "f64")
    body.append(Store("o", g, prev))
    k = Kernel("chain", (n_,), ("g",), tuple(body), ("a", "o"), (ScalarParam("n", I64),))
    prog = program([k], {"a": ("f64", "in"), "o": ("f64", "out")}, "chain")
    x = np.linspace(-1e-3, 1e-3, 9)
    got, want = run(backend, prog, {"a": x}, {"o": 9}, {"n": 9})
    expect = x.copy()
    for _ in range(60):
        expect = expect * expect * 0.5 + expect
    assert_bits(got["o"], expect, "chain")
    assert_bits(got["o"], want["o"], "chain interp")


# ---------------------------------------------------------------------------------------------
# end to end: every lowerable stdlib function against the reference backend
@pytest.mark.parametrize("prog,name", stdlib_cases())
def test_stdlib_function_bit_exact_with_reference(prog, name, backend):
    r = run_both(prog, name, backend.build)
    if r is None:
        pytest.skip("not lowerable")
    ref, got = r
    for a, b in zip(ref, got):
        assert bit_equal(a, b), (prog, name)


def test_comparisons_of_bools(backend):
    """Comparing two bools: TVM's LLVM code generator emits an fcmp (or fails) for i1 operands,
    so the printer compares them as int32."""
    x, y = load("x", g, "f64"), load("y", g, "f64")
    a, b = x.gt(c(0.0, "f64")), y.gt(c(0.0, "f64"))
    cmps = [a.eq(b), a.ne(b), a.lt(b), a.le(b), a.gt(b), a.ge(b)]
    body = tuple(Store("o", g * c(6, I64) + c(k, I64), select(v, c(1, "u8"), c(0, "u8")))
                 for k, v in enumerate(cmps))
    k = Kernel("boolcmp", (n_,), ("g",), body, ("x", "y", "o"), (ScalarParam("n", I64),))
    prog = program([k], {"x": ("f64", "in"), "y": ("f64", "in"), "o": ("u8", "out")})
    xs, ys = np.array([1.0, -1.0, 1.0, -1.0]), np.array([1.0, 1.0, -1.0, -1.0])
    got, want = run(backend, prog, {"x": xs, "y": ys}, {"o": 24}, {"n": 4})
    A, B = (xs > 0).astype(int), (ys > 0).astype(int)
    expect = np.stack([A == B, A != B, A < B, A <= B, A > B, A >= B], 1).astype(np.uint8)
    assert_bits(got["o"], expect.reshape(-1), "bool comparisons")
    assert_bits(got["o"], want["o"], "bool comparisons interp")


# ---------------------------------------------------------------------------------------------
# the fast contract: f32 math functions, order-any sums; the CPU schedule; the host boundary
def _libm_f32(name: str):
    import ctypes
    import ctypes.util
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda v: np.float32(fn(float(v)))


def test_f32_math_ops_are_libm_single(backend):
    """log, tanh, ... on f32 are the C library's logf, tanhf, ... bit for bit (tanhf by name:
    TVM's own tanh is an approximation); printed as the float32 TIR intrinsics. exp is
    numgrade's vectorisable expansion (kernels/math_f32.py), within an ulp of expf."""
    ops = ("exp", "log", "tanh", "sin", "cos", "exp2", "log2")
    x = load("x", g, "f32")
    body = tuple(Store("o", g * c(len(ops), I64) + c(k, I64), unary(op, x))
                 for k, op in enumerate(ops))
    prog = program([Kernel("math32", (n_,), ("g",), body, ("x", "o"),
                           (ScalarParam("n", I64),))],
                   {"x": ("f32", "in"), "o": ("f32", "out")}, "mathops32")
    text = backend.emit(prog)
    assert "T.exp(" not in text and "T.nearbyint(" in text and '"tanhf"' in text
    assert "float64" not in text
    xs = np.random.default_rng(5).uniform(0.01, 20.0, 300).astype(np.float32)
    xs[:4] = [1.0, 0.5, 10.0, 19.75]
    got, _ = run(backend, prog, {"x": xs}, {"o": 300 * len(ops)}, {"n": 300})
    rows = got["o"].reshape(300, len(ops))
    for k, op in enumerate(ops):
        fn = _libm_f32(op + "f")
        want = np.array([fn(v) for v in xs], np.float32)
        if op == "exp":   # each within 0.863 (numgrade) and 0.5 (glibc) ulp of exp(x)
            ulps = np.abs(rows[:, k].view(np.int32).astype(np.int64) - want.view(np.int32))
            assert ulps.max() <= 1, ulps.max()
            continue
        assert_bits(rows[:, k], want, op + "f")
    # CUDA: the accurate single-precision functions by name, never TVM's __expf
    cuda = program_script(prog, "cuda")
    assert '"expf"' in cuda and "__expf" not in cuda


def _reduce_program(order: str, kind: str, grid: bool) -> KernelProgram:
    a32, b32 = acc_vars("f32")
    if kind == "sum":
        comb, init = a32 + b32, c(0.0, "f32")
    else:
        comb, init = select(a32.ne(a32) | a32.gt(b32), a32, b32), c(-math.inf, "f32")
    if grid:
        el = load("a", g * n_ + i, "f32")
        body = (Reduce("r", "i", n_, (), el, comb, init, order, kind), Store("o", g, var("r", "f32")))
        k = Kernel("red", (m_,), ("g",), body, ("a", "o"), (ScalarParam("n", I64),
                                                            ScalarParam("m", I64)))
    else:  # no grid: a top-level order-any reduction is split into chunks run in parallel
        el = load("a", i, "f32")
        body = (Reduce("r", "i", n_, (), el, comb, init, order, kind),
                Store("o", c(0, I64), var("r", "f32")))
        k = Kernel("red", (), (), body, ("a", "o"), (ScalarParam("n", I64),))
    return program([k], {"a": ("f32", "in"), "o": ("f32", "out")}, f"red_{order}_{kind}_{grid}")


@pytest.mark.parametrize("grid", [True, False])
@pytest.mark.parametrize("kind", ["sum", "max"])
def test_order_any_reductions(backend, kind, grid):
    """Order any: lanes (vectorisable partial folds) in a grid kernel, parallel chunks without a
    grid. Small integers sum exactly in every order, so the result must equal the oracle's bit
    for bit; empty ranges give init, all -0.0 sums stay -0.0, a NaN propagates."""
    prog = _reduce_program("any", kind, grid)
    text = backend.emit(prog)
    assert text.count("T.parallel(") == 1
    if not grid:
        assert "T.parallel(T.int64(64))" in text
    rng = np.random.default_rng(11)
    m = 3 if grid else 1
    for n in (0, 1, 5, 31, 32, 33, 63, 64, 65, 1000, 4099):
        x = rng.integers(-50, 50, m * n).astype(np.float32)
        lengths = {"o": m}
        scal = {"n": n, "m": m} if grid else {"n": n}
        got, want = run(backend, prog, {"a": x}, lengths, scal)
        assert_bits(got["o"], want["o"], f"{kind} n={n}")
        if n:
            xs = x.reshape(m, n).astype(np.float64)
            expect = xs.sum(1) if kind == "sum" else xs.max(1)
            assert np.array_equal(got["o"].astype(np.float64), expect), (kind, n)
        if n >= 40:
            y = x.copy()
            y[37] = np.nan
            got, _ = run(backend, prog, {"a": y}, lengths, scal)
            assert np.isnan(got["o"][0]), (kind, n)
            if kind == "sum":
                z = np.full(m * n, -0.0, np.float32)
                got, _ = run(backend, prog, {"a": z}, lengths, scal)
                assert_bits(got["o"], np.full(m, -0.0, np.float32), f"-0 sum n={n}")
    # a sum of general floats in any order is within n ulps-worth of the exact sum
    n = 5000
    x = rng.standard_normal(m * n).astype(np.float32)
    got, _ = run(backend, prog, {"a": x}, {"o": m}, {"n": n, "m": m} if grid else {"n": n})
    xs = x.reshape(m, n).astype(np.float64)
    expect = xs.sum(1) if kind == "sum" else xs.max(1)
    tol = n * 2.0 ** -24 * np.abs(xs).sum(1) if kind == "sum" else 0.0
    assert np.all(np.abs(got["o"] - expect) <= tol)


def test_pairwise_blocks_match_the_element_counter(backend):
    """Pairwise sums fold whole aligned blocks as trees, then the counter: bit-identical to the
    oracle's level-by-level pairs at every length around the block size."""
    a32, b32 = acc_vars("f32")
    comb = select((a32 + b32).ne(a32 + b32), c(math.nan, "f32"), a32 + b32)
    el = load("a", g * n_ + i, "f32")
    body = (Reduce("r", "i", n_, (), el, comb, c(0.0, "f32"), "pairwise", "sum",
                   b32 * b32), Store("o", g, var("r", "f32")))
    k = Kernel("pw", (m_,), ("g",), body, ("a", "o"), (ScalarParam("n", I64), ScalarParam("m", I64)))
    prog = program([k], {"a": ("f32", "in"), "o": ("f32", "out")}, "pw_blocks")
    rng = np.random.default_rng(12)
    for n in (0, 1, 15, 16, 17, 31, 32, 33, 48, 255, 256, 257, 1000, 4099):
        m = 4
        x = (rng.standard_normal(m * n) * 10.0 ** rng.integers(-4, 5, m * n)).astype(np.float32)
        got, want = run(backend, prog, {"a": x}, {"o": m}, {"n": n, "m": m})
        expect = [fold_stack([v * v for v in x[r * n:(r + 1) * n]], lambda p, q: p + q,
                             np.float32(0.0)) for r in range(m)]
        assert_bits(got["o"], np.array(expect, np.float32), f"pairwise n={n}")
        assert_bits(got["o"], want["o"], f"pairwise n={n} interp")


def test_rows_run_in_parallel_bit_exact(backend):
    """The grid (rows) is one T.parallel loop; with several threads the exact contract of a
    row-wise program is still bit-identical to the reference (each row is one instance)."""
    import numgrade as ng
    f = ng.load_stdlib("softmax").softmax
    text = f.emit("tvm", exact=True)
    assert "for pid in T.parallel(n_M_)" in text
    x = np.random.default_rng(13).standard_normal((257, 300)).astype(np.float32) * 5
    want = f(x)
    got = f.compile("tvm", exact=True)(x)
    assert got.dtype == np.float32 and bit_equal(want, got)
    fast = f.compile("tvm")(x)  # the fast contract: f32 exp and an any-order sum
    assert fast.dtype == np.float32 and np.max(np.abs(fast - want)) < 1e-6


def _record_buffers(k):
    """Wrap a compiled function's launcher so that the buffers it gets are recorded."""
    seen = {}
    inner = k._launcher

    def launcher(buffers, scalars):
        seen.update(buffers)
        inner(buffers, scalars)
    k._launcher = launcher
    return seen


def test_boundary_zero_copy_torch_and_numpy(backend):
    """f32 arguments reach the kernels without a float64 round trip or a copy (torch through
    DLPack), and f32 results come back sharing the kernel's output buffer: numpy in numpy out,
    torch in torch out; narrow formats keep their types (e4m3 as torch.float8_e4m3fn, e2m1 as
    float32 holding the values)."""
    torch = pytest.importorskip("torch")
    import numgrade as ng
    f = ng.load_stdlib("rmsnorm").rms_normalize
    k = f.compile("tvm", exact=True)
    x = torch.randn(33, 64)
    k(x)  # builds
    seen = _record_buffers(k)
    out = k(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == x.shape
    assert seen["in0_x"].ctypes.data == x.data_ptr()  # the tensor's own memory
    assert seen["out0"].ctypes.data == out.data_ptr()  # the kernel's buffer, no copy back
    assert bit_equal(f(x).numpy(), out.numpy())
    xn = x.numpy().copy()
    outn = k(xn)
    assert isinstance(outn, np.ndarray) and outn.dtype == np.float32
    assert seen["in0_x"].ctypes.data == xn.ctypes.data and seen["out0"] is not None
    assert bit_equal(outn, out.numpy())
    # a non-contiguous tensor and a float64 one still work (converted as before)
    xt = torch.randn(64, 33).t()
    assert bit_equal(k(xt).numpy(), f(xt).numpy())
    assert k(x.double()).dtype == torch.float32
    # narrow formats: same types and bits as the reference
    q = ng.load_stdlib("nvfp4").quantize
    xq = torch.randn(8, 64)
    for a_, b_ in zip(q.compile("tvm", exact=True)(xq), q(xq)):
        assert a_.dtype == b_.dtype and a_.shape == b_.shape
        assert bit_equal(a_.to(torch.float64).numpy(), b_.to(torch.float64).numpy())
    for a_, b_ in zip(q.compile("tvm", exact=True)(xq.numpy()), q(xq.numpy())):
        assert a_.dtype == b_.dtype and np.shape(a_) == np.shape(b_)
        assert bit_equal(np.asarray(a_, np.float64), np.asarray(b_, np.float64))


def test_cpu_thread_pool_uses_every_cpu_without_spinning(monkeypatch):
    """TVM would run parallel loops on half the CPUs (it assumes hyper-threads: one thread on a
    2-CPU machine) and spin its idle workers against torch's; the launcher configures the pool
    from the CPUs this process may use, and leaves a user's own settings alone."""
    import os

    from numgrade.backends import tvm_backend as TB
    for key in ("TVM_NUM_THREADS", *TB.POOL_DEFAULTS):
        monkeypatch.delenv(key, raising=False)
    cfg = TB.configure_cpu_threads()
    assert cfg == {"TVM_NUM_THREADS": str(len(os.sched_getaffinity(0))),
                   "TVM_THREAD_POOL_SPIN_COUNT": "0", "TVM_BIND_THREADS": "0"}
    monkeypatch.setenv("TVM_NUM_THREADS", "3")
    monkeypatch.setenv("TVM_THREAD_POOL_SPIN_COUNT", "1000")
    assert TB.configure_cpu_threads()["TVM_NUM_THREADS"] == "3"
    assert os.environ["TVM_THREAD_POOL_SPIN_COUNT"] == "1000"
