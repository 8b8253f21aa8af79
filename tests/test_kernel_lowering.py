"""Fusion, lowering and the primitive expansion of number formats (kernel/legalize.py).

The expansion of rounding, storage codes and Philox into primitives is checked against the
definition (``ir/formats.py``) with a small independent numpy evaluator of primitive expressions,
so every backend that prints primitives faithfully inherits bit-exactness from here.
"""

from __future__ import annotations

import keyword

import ml_dtypes
import numpy as np
import pytest

from numgrade.api import compile_source, load_stdlib, stdlib_names
from numgrade.ir.formats import FORMATS, philox_uint32, round_array
from numgrade.kernels import legalize as L
from numgrade.kernels.ir import Let, format_program, var, walk_exprs
from numgrade.kernels.lower import C_KEYWORDS, NotLowerable, is_safe_ident, lower_function, safe_ident

NP = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "i32": np.int32, "u64": np.uint64,
      "u32": np.uint32, "u16": np.uint16, "u8": np.uint8, "bool": np.bool_}
CMP = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
       "eq": np.equal, "ne": np.not_equal}


def _ev(e, env):
    """An independent evaluator of primitive expressions (numpy, vectorised)."""
    if e.op == "const":
        return np.array(e.attrs[0]).astype(NP[e.dtype]) if e.dtype not in ("u64", "u32") \
            else np.array(e.attrs[0] % (1 << (64 if e.dtype == "u64" else 32)), dtype=NP[e.dtype])
    if e.op == "var":
        return env[e.attrs[0]]
    a = [_ev(x, env) for x in e.args]
    op, d = e.op, NP[e.dtype]
    with np.errstate(all="ignore"):
        if op in ("add", "sub", "mul"):
            return {"add": np.add, "sub": np.subtract, "mul": np.multiply}[op](a[0], a[1]).astype(d)
        if op == "div":
            return (a[0] / a[1]).astype(d) if e.dtype in ("f64", "f32") else (a[0] // a[1]).astype(d)
        if op == "mod":
            return (a[0] % a[1]).astype(d)
        if op in ("band", "and"):
            return (a[0] & a[1]).astype(d)
        if op in ("bor", "or"):
            return (a[0] | a[1]).astype(d)
        if op == "bxor":
            return (a[0] ^ a[1]).astype(d)
        if op == "shl":
            return (a[0] << a[1]).astype(d)
        if op == "shr":
            return (a[0] >> a[1]).astype(d)
        if op in CMP:
            return CMP[op](a[0], a[1])
        if op == "select":
            return np.where(a[0], a[1], a[2]).astype(d)
        if op == "cast":
            x = a[0]
            if e.dtype in ("f64", "f32"):
                return x.astype(d)
            if x.dtype.kind == "f":
                return np.trunc(x).astype(np.int64).astype(d)
            return x.astype(d)
        if op == "bitcast":
            return np.ascontiguousarray(a[0]).view(d)
        if op == "neg":
            return (-a[0]).astype(d)
        if op == "abs":
            return np.abs(a[0]).astype(d)
        if op == "not":
            return ~a[0]
        return getattr(np, op)(a[0]).astype(d)


def _run(stmts, env, out):
    env = dict(env)
    for s in stmts:
        assert isinstance(s, Let)
        env[s.name] = _ev(s.value, env)
    return _ev(out, env)


def _inputs():
    rng = np.random.default_rng(0)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 448, 464, 465, -465, 6, 7, -7, 5,
               1e-40, -1e-40, 2.0**-127, 1.2 * 2.0**-127, 1.4 * 2.0**-126, 65504, 65520,
               3.4e38, 3.5e38, 0.25, 0.75, -0.75, 2.5, 3.5, 1e-45, 2.0**-149]
    return np.concatenate([rng.standard_normal(4000) * 10.0 ** rng.integers(-45, 45, 4000),
                           np.array(special), rng.standard_normal(1000)])


@pytest.mark.parametrize("fmt_name", [n for n in FORMATS if n != "f64"])
def test_round_to_matches_round_array(fmt_name):
    xs = _inputs()
    fmt = FORMATS[fmt_name]
    key = 0x1234567890ABCDEF
    for mode in ("rne", "rz", "ru", "rd", "sr"):
        for sat in (False, True):
            blk = L.Block()
            rw = lambda: L.philox_first_word(blk, var("idx", "u64"), var("k0", "u64"),  # noqa
                                             var("k1", "u64"))
            r = L.round_to(blk, var("x", "f64"), fmt, mode, sat, rw)
            got = _run(blk.stmts, {"x": xs, "idx": np.arange(xs.size, dtype=np.uint64),
                                   "k0": np.uint64(key & 0xFFFFFFFF), "k1": np.uint64(key >> 32)}, r)
            want = round_array(xs, fmt, mode, sat, key=key if mode == "sr" else None)
            same = (got.view(np.uint64) == want.view(np.uint64)) | (np.isnan(got) & np.isnan(want))
            assert same.all(), (fmt_name, mode, sat, xs[~same][:4], got[~same][:4], want[~same][:4])


def test_philox_matches_definition():
    blk = L.Block()
    w = L.philox_first_word(blk, var("idx", "u64"), var("k0", "u64"), var("k1", "u64"))
    idx = np.arange(3000, dtype=np.uint64) * np.uint64(7919) + np.uint64(2**40 - 5)
    for key in (0, 0xDEADBEEF12345678, 2**64 - 1):
        got = _run(blk.stmts, {"idx": idx, "k0": np.uint64(key & 0xFFFFFFFF),
                               "k1": np.uint64(key >> 32)}, w)
        assert np.array_equal(got, philox_uint32(key, idx).astype(np.uint64))


@pytest.mark.parametrize("fmt_name", ["f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0"])
def test_storage_codes_round_trip_every_code(fmt_name):
    fmt = FORMATS[fmt_name]
    st = L.storage_dtype(fmt)
    n = 16 if fmt_name == "e2m1" else (1 << (16 if st == "u16" else 8))
    codes = np.arange(n).astype(NP[st])
    blk = L.Block()
    vals = _run(blk.stmts, {"c": codes}, L.decode(blk, var("c", st), fmt))
    ref = codes.astype(np.uint8 if st == "u8" else np.uint16).view(fmt.np_dtype).astype(np.float32)
    same = (vals.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(vals) & np.isnan(ref))
    assert same.all()
    blk = L.Block()
    back = _run(blk.stmts, {"v": vals}, L.encode(blk, var("v", "f32"), fmt))
    assert ((back == codes) | np.isnan(vals)).all()


# --- fusion ------------------------------------------------------------------------------
@pytest.mark.parametrize("prog,fn,count", [
    ("softmax", "softmax", 1), ("softmax", "log_softmax", 1), ("softmax", "softmax_bf16", 1),
    ("rmsnorm", "rmsnorm", 1), ("layernorm", "layernorm", 1),
    ("nvfp4", "quantize", 2), ("nvfp4", "quantize_2d", 2), ("mxfp4", "quantize", 1),
    ("nvfp4", "dequantize", 1),
])
def test_fusion_kernel_counts(prog, fn, count):
    f = load_stdlib(prog)[fn]
    plan = f.fusion()
    assert len(plan.groups) == count, [g.describe({}) for g in plan.groups]
    env = {s: 64 for s in ("M", "N", "T", "D")}
    assert plan.bytes_fused.evaluate(env) < plan.bytes_unfused.evaluate(env)


def test_nvfp4_quantize_is_global_amax_then_one_block_kernel():
    plan = load_stdlib("nvfp4").quantize.fusion()
    first, second = plan.groups
    assert first.grid == () and len(first.inner) == 3  # whole-tensor amax
    assert [str(d) for d in second.grid] == ["M", "N/16"] and [str(d) for d in second.inner] == ["16"]
    # the block amax, the scale rounding and the element rounding are all in the second kernel
    assert len(second.stores) == 2


def test_every_stdlib_function_fuses_without_cycles_and_reports_bytes():
    for prog in stdlib_names():
        mod = load_stdlib(prog)
        for name in mod.functions:
            plan = mod[name].fusion()  # asserts acyclicity and launch order internally
            assert plan.groups
            assert str(plan.bytes_fused) and str(plan.bytes_unfused)


# --- lowering ----------------------------------------------------------------------------
def _names_in(program):
    names = set(program.buffers) | set(program.dims)
    for k in program.kernels:
        names.add(k.name)
        names |= set(k.grid_vars) | {p.name for p in k.scalars}
        stack = list(walk_exprs(k.body))
        while stack:
            e = stack.pop()
            if e.op == "var":
                names.add(e.attrs[0])
            stack.extend(e.args)
    return names


def test_every_lowered_stdlib_function_uses_only_safe_identifiers():
    lowered = 0
    for prog in stdlib_names():
        mod = load_stdlib(prog)
        for name in mod.functions:
            try:
                p = mod[name].kernels()
            except NotLowerable:
                continue
            lowered += 1
            bad = [n for n in _names_in(p) if not is_safe_ident(n)]
            assert not bad, (prog, name, bad)
            assert format_program(p)
    assert lowered >= 100


def test_every_stdlib_function_lowers():
    """Nothing in the standard library is left to the reference backend: f64 fma (the Horner
    programs), calls to random functions (nvfp4.quantize_rht_sr) and every accumulation format
    lower; the backend sweeps over ``stdlib_cases`` then cover all of it."""
    failed = []
    for prog in stdlib_names():
        mod = load_stdlib(prog)
        for name in mod.functions:
            try:
                mod[name].kernels()
            except NotLowerable as ex:
                failed.append((prog, name, str(ex)))
    assert not failed



@pytest.mark.parametrize("text", ["x\"; import os", "a\nb", "def", "class", "int", "while",
                                  "é∑", "", "0abc", "x" * 5000, "__init__", "T", "tl"])
def test_safe_ident_is_safe_for_hostile_text(text):
    name = safe_ident(text, "in0")
    assert is_safe_ident(name) and len(name) <= 48
    assert not keyword.iskeyword(name) and name not in C_KEYWORDS


def test_hostile_parameter_names_are_mangled():
    src = "fn f(def_: f32[N], while_: f32[N], " + "x" * 300 + ": f32[N]) -> f32[N] {\n" \
          "  return def_ * while_ + " + "x" * 300 + "\n}\n"
    f = compile_source(src).f
    p = f.kernels()
    assert all(is_safe_ident(n) and len(n) <= 48 for n in _names_in(p))


# --- the lowering, end to end, through the kernel-IR interpreter ---------------------------
from kernel_diff import bit_equal, run_both, stdlib_cases  # noqa: E402

from numgrade.kernels.interp import KernelInterpreter  # noqa: E402


@pytest.mark.parametrize("prog,name", stdlib_cases())
def test_lowered_stdlib_function_is_bit_exact_with_reference(prog, name):
    r = run_both(prog, name, KernelInterpreter().build)
    if r is None:
        pytest.skip("not lowerable yet")
    ref, got = r
    for a, b in zip(ref, got):
        assert bit_equal(a, b), (prog, name)
