"""Programs a precision tuner writes: every operation with operands and results in mixed number
formats, sums and matmuls accumulated in every format, and calls to random functions, lowered
and run bit for bit against the reference backend on every kernel backend.

The numpy kernel interpreter runs the full cross product; the compiled backends (Triton's
interpreter, TVM's LLVM build, the CUDA printer's gcc build) run a cover of it that goes through
every lowering path (operand carriers f32/f64, every result format), because their compile or
interpretation time grows with the program. Two things are not bits of the contract on the
compiled C backends and are compared loosely there, for float64 results only: the sign of a NaN
when both operands of a commutative operation are NaN (LLVM and gcc may swap the operands, and
IEEE 754 leaves the choice open), and transcendental functions (the platform's libm, not
numpy's), which are left out of their programs.
"""

from __future__ import annotations

import numpy as np
import pytest
from kernel_diff import backend_or_skip, bit_equal

from numgrade.api import compile_source
from numgrade.backends.reference import Interpreter
from numgrade.ir.formats import get_format, promote
from numgrade.kernels.ir import const
from numgrade.kernels.runtime import run_program

RESULTS = ["f64", "f32", "f16", "bf16", "e4m3", "e5m2"]
OPERANDS = ["f64", "f32", "bf16", "f16", "e4m3", "e5m2", "e2m1", "i32"]
BINARY = ["+", "-", "*", "/", "%", "min", "max"]
UNARY = ["-", "abs", "floor", "ceil", "sqrt", "rsqrt", "exp", "log", "tanh", "sigmoid", "sin",
         "cos", "exp2", "log2"]
LIBM = {"exp", "log", "tanh", "sigmoid", "sin", "cos", "exp2", "log2", "rsqrt"}
# the cover for the compiled backends: each carrier pair (f32/f64) and the fast f32 path
PAIRS_SMALL = [("f32", "f32"), ("bf16", "e4m3"), ("f64", "f32"), ("e2m1", "i32"),
               ("f16", "f64"), ("e5m2", "bf16")]
PAIRS_NARROW = [("bf16", "e4m3"), ("f64", "i32")]
COMPILED = ["triton", "tvm", "cuda-host"]


def _binary(op: str, a: str, b: str) -> str:
    return f"{op}(x_{a}, y_{b})" if op in ("min", "max") else f"x_{a} {op} y_{b}"


def mixed_source(full: bool, libm_f64: bool = True) -> tuple[str, dict[str, list[str]]]:
    """One function per result format; returns the source and each function's expressions."""
    params = ", ".join([f"x_{f}: {f}[N]" for f in OPERANDS] + [f"y_{f}: {f}[N]" for f in OPERANDS])
    fns, exprs = [], {}
    for j, r in enumerate(RESULTS):
        es = []
        narrow = r not in ("f64", "f32")  # the same rounding code: a thinner cover each
        pairs = [(a, b) for a in OPERANDS for b in OPERANDS] if full else \
            PAIRS_NARROW if narrow else PAIRS_SMALL
        for op in BINARY:
            es += [_binary(op, a, b) for a, b in pairs]
        for k, op in enumerate(UNARY):
            if op in LIBM and r == "f64" and not libm_f64 or not full and narrow and (k + j) % 2:
                continue
            srcs = OPERANDS if full else [OPERANDS[k % len(OPERANDS)]]
            es += [f"-x_{a}" if op == "-" else f"{op}(x_{a})" for a in srcs]
        srcs = OPERANDS if full else ["f64"] if narrow else ["f64", "bf16", "i32"]
        for a in srcs:
            for b, c in (("f32", "f64"), ("bf16", "e4m3"), (a, a)):
                es.append(f"fma(x_{a}, y_{b}, x_{c})")
        es += [f"x_{a} as {r}" for a in (OPERANDS if full else ["f64", "e4m3"])]
        exprs[f"mix_{r}"] = es
        lets = "\n".join(f"    let v{i}: {r}[N] = {e}" for i, e in enumerate(es))
        outs = ", ".join(f"v{i}" for i in range(len(es)))
        fns.append(f"fn mix_{r}({params}) -> ({', '.join([f'{r}[N]'] * len(es))}) {{\n"
                   f"{lets}\n    return ({outs})\n}}\n")
    # comparisons, logic and where across formats (where's branches: never int with float,
    # whose promoted format cannot hold every i32)
    es, types = [], []
    for k, (a, b) in enumerate((a, b) for a in OPERANDS for b in OPERANDS):
        if full or k % 5 == 0:
            for cmp in ("<", "<=", ">", ">=", "==", "!="):
                es.append(f"x_{a} {cmp} y_{b}")
                types.append("bool")
    floats = [f for f in OPERANDS if f != "i32"]
    for k, (a, b) in enumerate((a, b) for a in floats for b in floats):
        if full or k % 7 == 0:
            es.append(f"where(x_{a} < y_{b} and not (x_{b} > y_{a} or x_{a} == y_{a}), "
                      f"x_{a}, y_{b})")
            types.append(promote(get_format(a), get_format(b)).name)
    exprs["mix_logic"] = es
    lets = "\n".join(f"    let w{i} = {e}" for i, e in enumerate(es))
    fns.append(f"fn mix_logic({params}) -> ({', '.join(f'{t}[N]' for t in types)}) {{\n"
               f"{lets}\n    return ({', '.join(f'w{i}' for i in range(len(es)))})\n}}\n")
    return "\n".join(fns), exprs


def compile_mixed(full: bool, libm_f64: bool = True):
    src, exprs = mixed_source(full, libm_f64)
    return compile_source(src), exprs


def mixed_inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sp = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3e-8, 65504.0, 70000.0, 448.0,
                   500.0, -1e30, 3.0, 0.5, 2.0**-24, 1e300, -2.5, 1.5, 6.0, -7.0])
    out = []
    for k in range(2 * len(OPERANDS)):
        x = rng.standard_normal(n) * 10.0 ** rng.integers(-6, 7, n)
        x[:len(sp)] = np.roll(sp, 3 * k)
        if OPERANDS[k % len(OPERANDS)] == "i32":
            x = np.where(np.isfinite(x), np.clip(np.round(x), -2**31, 2**31 - 1), 7.0)
        out.append(x)
    return out


def compare(name: str, got, want, loose_f64_nan: bool, fmts: list[str]) -> list[int]:
    """Indices of outputs that differ (bits; loosely for f64 NaN signs when asked)."""
    bad = []
    for i, (g, w) in enumerate(zip(got, want)):
        if bit_equal(g, w):
            continue
        if loose_f64_nan and fmts[i] == "f64":
            g, w = np.asarray(g, float), np.asarray(w, float)
            both = np.isnan(g) & np.isnan(w)
            if np.array_equal(np.where(both, 0.0, g), np.where(both, 0.0, w)) and \
                    np.array_equal(np.signbit(np.where(both, 0.0, g)), np.signbit(np.where(both, 0.0, w))):
                continue
        bad.append(i)
    return bad


def _run_mixed(backend_name: str, full: bool, tmp_path_factory, n: int) -> None:
    be = backend_or_skip(backend_name, tmp_path_factory)
    compiled = backend_name in ("tvm", "cuda-host")
    mod, exprs = compile_mixed(full, libm_f64=not compiled)
    args = mixed_inputs(n)
    failures = {}
    for name, es in exprs.items():
        f = mod[name]
        prog = f.kernels()
        want = Interpreter(mod.ir).run(name, args, 7)
        got = run_program(prog, be.build(prog), f.ir, args, 7)
        fmts = [v.fmt.name for v in f.ir.results]
        bad = compare(name, got, want, compiled, fmts)
        if bad:
            failures[name] = [es[i] for i in bad]
    assert not failures, failures


def test_mixed_formats_full_cross_product_on_the_kernel_interpreter():
    _run_mixed("kernel-interp", True, None, 64)


@pytest.mark.parametrize("backend", COMPILED)
def test_mixed_formats_on_compiled_backends(backend, tmp_path_factory):
    _run_mixed(backend, False, tmp_path_factory, 40)


def test_min_max_of_equal_values_are_numpys():
    """numpy's minimum/maximum give the second operand of two equal values (so -0.0 vs 0.0
    depends on the order), and propagate NaN from either side."""
    a = np.array([-0.0, 0.0, np.nan, 1.0, np.nan, 2.0])
    b = np.array([0.0, -0.0, 1.0, np.nan, 3.0, 2.0])
    mod = compile_source("fn f(a: f64[N], b: f64[N]) -> (f64[N], f64[N]) {\n"
                         "    return (min(a, b), max(a, b))\n}\n")
    prog = mod.f.kernels()
    got = run_program(prog, backend_or_skip("kernel-interp").build(prog), mod.f.ir, [a, b])
    assert bit_equal(got[0], np.minimum(a, b)) and bit_equal(got[1], np.maximum(a, b))
    assert not np.signbit(got[0][0]) and np.signbit(got[0][1])  # the second of -0.0, 0.0


def test_nan_constants_keep_their_sign():
    """-NaN (e4m3's negative overflow) and NaN are different kernel constants, whichever is
    made first (they used to hash-cons into one), and so are 0.0 and -0.0."""
    neg, pos = const(-float("nan"), "f64"), const(float("nan"), "f64")
    assert pos is not neg and np.signbit(neg.attrs[0]) and not np.signbit(pos.attrs[0])
    assert const(-0.0, "f32") is not const(0.0, "f32")
    mod = compile_source("fn f(x: f32[N]) -> e4m3[N] {\n    let y: e4m3[N] = x * 2.0\n"
                         "    return y\n}\n")
    x = np.array([-1000.0, 1000.0, np.nan, -1.0])
    prog = mod.f.kernels()
    got = run_program(prog, backend_or_skip("kernel-interp").build(prog), mod.f.ir, [x])[0]
    assert list(np.signbit(got[:3])) == [True, False, False] and np.isnan(got[:3]).all()


# ---- sums, means and matmuls accumulated in every format ----------------------------------------
SUM_SRCS = ["f64", "f32", "bf16", "e4m3", "i32"]
ACCS = ["f64", "f32", "f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0", "i32"]
ORDERS = ["pairwise", "seq", "kahan"]


def reduction_source(full: bool) -> tuple[str, dict[str, list[tuple[str, str]]]]:
    """Per source format: each accumulation format with each order (sum and mean) and a matmul
    (the cover: one order per format, rotating, and fewer sources)."""
    fns, exprs = [], {}
    for s in (SUM_SRCS if full else ["f64", "e4m3"]):
        es = []
        for k, a in enumerate(ACCS):
            for j, o in enumerate(ORDERS):
                if full or j == k % 3:
                    es.append((f"sum(x, axis=-1, acc={a}, order={o})", a))
                    if a != "i32":
                        es.append((f"mean(x, axis=-1, acc={a}, order={o})", a))
            if full or k % 3 == 0:
                es.append((f"matmul(x, y, acc={a})", s if s != "i32" else "f32"))
        types = ", ".join(f"{t}[R]" if "matmul" not in e else f"{t}[R, C]" for e, t in es)
        outs = ", ".join(e for e, _ in es)
        fns.append(f"fn r_{s}(x: {s}[R, L], y: {s}[L, C]) -> ({types}) {{\n"
                   f"    return ({outs})\n}}\n")
        exprs[f"r_{s}"] = es
    return "\n".join(fns), exprs


def _run_reductions(backend_name: str, full: bool, tmp_path_factory, lengths) -> None:
    be = backend_or_skip(backend_name, tmp_path_factory)
    src, exprs = reduction_source(full)
    mod = compile_source(src)
    rng = np.random.default_rng(5)
    failures = []
    for name, es in exprs.items():
        f = mod[name]
        prog = f.kernels()
        launch = be.build(prog)
        for n in lengths:
            x = rng.standard_normal((3, n)) * 16
            x[0] *= 1e-3  # partial sums below and above each format's range
            if n:
                x[1, 0] = 3000.0  # overflows e4m3 (to NaN, -NaN when negative), e5m2, f16...
                x[2, -1] = -1e5
            y = rng.standard_normal((n, 2)) * 4
            if name == "r_i32":
                x, y = np.round(x * 10), np.round(y)
            want = Interpreter(mod.ir).run(name, [x, y], 1)
            got = run_program(prog, launch, f.ir, [x, y], 1)
            for i, (w, g) in enumerate(zip(want, got)):
                # an empty sum is 0, which e8m0 cannot hold: the reference's value there is not
                # a value of its format, so no backend can store it
                if n == 0 and es[i][1] == "e8m0" and "matmul" not in es[i][0]:
                    continue
                if not bit_equal(w, g):
                    failures.append((name, n, es[i][0]))
    assert not failures, failures


def test_reductions_in_every_format_on_the_kernel_interpreter():
    _run_reductions("kernel-interp", True, None, (0, 1, 2, 3, 7, 33))


@pytest.mark.parametrize("backend", COMPILED)
def test_reductions_in_every_format_on_compiled_backends(backend, tmp_path_factory):
    _run_reductions(backend, False, tmp_path_factory, (1, 4, 7))


# ---- calls to functions with the rand effect -----------------------------------------------------
RAND_SRC = """
fn sr(x: f32[N]) -> bf16[N] ! {rand} {
    return round(x, bf16, mode=sr)
}
fn noise(x: f32[N]) -> (bf16[N], f32[N]) ! {rand} {
    let u = rand([N])
    return (sr(x + u * 0.0), round(x * 3.0, e4m3, mode=sr) as f32 + u)
}
fn f(x: f32[N]) -> (bf16[N], bf16[N], bf16[N], bf16[N], f32[N]) ! {rand} {
    let a = sr(x)
    let b = sr(x)
    let c = round(x, bf16, mode=sr)
    let (d, e) = noise(x)
    return (a, b, c, d, e)
}
"""


@pytest.mark.parametrize("backend", ["kernel-interp"] + COMPILED)
def test_calls_to_random_functions_use_the_callees_seed(backend, tmp_path_factory):
    """Each call runs its callee with the seed stream_key(s, k): two calls of the same function
    on the same input round differently, nested calls too, and all bit for bit."""
    be = backend_or_skip(backend, tmp_path_factory)
    mod = compile_source(RAND_SRC)
    prog = mod.f.kernels()
    assert sorted(prog.streams.values()) == [(0, 0), (1, 0), (2,), (3, 0), (3, 1, 0), (3, 2)]
    x = np.random.default_rng(0).standard_normal(300)
    for seed in (0, 11):
        want = Interpreter(mod.ir).run("f", [x], seed)
        got = run_program(prog, be.build(prog), mod.f.ir, [x], seed)
        assert all(bit_equal(w, g) for w, g in zip(want, got)), seed
        inexact = got[0] != x  # the streams differ: so do the roundings
        assert (got[0] != got[1])[inexact].mean() > 0.2 and (got[0] != got[2]).mean() > 0.1


@pytest.mark.parametrize("fmt", ["e2m1", "e8m0"])
def test_widening_one_byte_codes_to_f32_matches_the_elementwise_cast(fmt):
    """torch has no e2m1/e8m0 dtype, so such results come back as float32 holding the values;
    the widening goes two codes at a time through a table (kernels/runtime.widen_to_f32):
    checked on every pair of codes, odd sizes and a strided view."""
    import ml_dtypes

    from numgrade.kernels.runtime import widen_to_f32
    dt = {"e2m1": ml_dtypes.float4_e2m1fn, "e8m0": ml_dtypes.float8_e8m0fnu}[fmt]
    pairs = np.arange(65536, dtype=np.uint16).view(np.uint8)   # every (low, high) pair
    if fmt == "e2m1":
        pairs = pairs & 15
    for x in (pairs.view(dt), pairs[:7].view(dt), pairs.view(dt).reshape(256, 512)[:, ::3]):
        got = widen_to_f32(x)
        want = x.astype(np.float32)
        assert got.dtype == np.float32 and got.shape == x.shape
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
