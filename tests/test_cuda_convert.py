"""Hardware format conversions of the CUDA backend (numgrade/backends/cuda_convert.py).

One Grade function per hardware rounding (format, mode, saturation) and input type returns the
rounded value in its format (a storage code) and as f64 (the value), so each function exercises
both helpers. On the CPU they run as the sm_90a and sm_100a CUDA prints compiled by g++, the
conversion instructions executed by the CUDA headers' host code, bit for bit against the
reference on inputs chosen to break them: every grid point and midpoint of the format, values
an f64 ulp and an f32 half-ulp around the midpoints (a conversion through f32 rounds twice
there), the rule thresholds and their neighbours, the specials. nvcc compiles the same bundle
for both archs and the PTX must hold each instruction where the arch has it and nowhere else;
on a GPU (``gpu`` marker) they run on the device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from kernel_diff import bit_equal
from test_cuda_backend import _gpu_reason, ptx_functions

import numgrade as ng
from numgrade.backends import cuda_convert as CV
from numgrade.backends.cuda_backend import (ARCHS, CudaBackend, CudaHostBackend, emit_bundle,
                                            emit_program, nvcc_compile_archs)
from numgrade.backends.reference import Interpreter
from numgrade.ir.formats import from_storage, get_format, round_array
from numgrade.kernels import legalize as L
from numgrade.kernels.ir import (Assign, BufferDecl, Decl, Kernel, KernelProgram, Let, Loop,
                                 ScalarParam, Store, const, load, var)
from numgrade.kernels.runtime import run_program

ALL = CV.hardware_specs("sm_100a")  # a superset of sm_90a's
gpu = pytest.mark.skipif(bool(_gpu_reason()), reason=_gpu_reason() or "GPU present")

# the instruction each format's code and value take on the GPU (PTX mnemonics)
CODE_CVT = {"e4m3": "cvt.rn.satfinite.e4m3x2.f32", "e5m2": "cvt.rn.satfinite.e5m2x2.f32",
            "e2m1": "cvt.rn.satfinite.e2m1x2.f32", "bf16": "cvt.rn.bf16.f64",
            "f16": "cvt.rn.f16.f64"}
VALUE_CVT = {"e4m3": "cvt.rn.f16x2.e4m3x2", "e5m2": "cvt.rn.f16x2.e5m2x2",
             "e2m1": "cvt.rn.f16x2.e2m1x2", "e8m0": "cvt.rn.bf16x2.ue8m0x2"}


def fname(sp: CV.Spec, dtype: str) -> str:
    return f"cv_{sp.key}_{dtype}"


@pytest.fixture(scope="module")
def module():
    src = []
    for sp in ALL:
        for dt in ("f64", "f32"):
            sat = "true" if sp.sat else "false"
            src.append(f"fn {fname(sp, dt)}(x: {dt}[N]) -> ({sp.fmt}[N], f64[N]) {{\n"
                       f"    let r = round(x, {sp.fmt}, mode={sp.mode}, sat={sat})\n"
                       "    return (r, r as f64)\n}")
    return ng.compile_source("\n".join(src), "conversions.grd")


@dataclass
class Case:
    """One conversion function: its rounding, input type, kernel program and inputs."""

    spec: CV.Spec
    dtype: str
    name: str
    module: Any  # the numgrade Module holding it
    program: Any  # its KernelProgram
    x: np.ndarray


@pytest.fixture(scope="module")
def cases(module) -> list[Case]:
    out = []
    for sp in ALL:
        for dt in ("f64", "f32"):
            if sp.fmt == "f32" and dt == "f32":
                # no conversion at all; (and the kernel lowering takes an f32 -> f32 rounding
                # as exact even with sat=true, so +-inf stays inf where the reference
                # saturates: a lowering bug, reported, not the CUDA backend's)
                continue
            name = fname(sp, dt)
            out.append(Case(sp, dt, name, module, module[name].kernels(), inputs(sp, dt)))
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cuda-convert-cache")


def grid(fmt_name: str, rng: np.random.Generator) -> np.ndarray:
    """Positive finite values of the format: all of them for 8-bit formats, a sample else."""
    fmt = get_format(fmt_name)
    if fmt.bits <= 8:
        codes = np.arange(256, dtype=np.uint8)
        vals = from_storage(codes.view(fmt.np_dtype))
    else:
        width = np.uint16 if fmt.bits == 16 else np.uint32
        top = (1 << (fmt.bits - 1)) - 1
        codes = np.concatenate([rng.integers(0, top, 3000), [1, 2, top - 1, top]]).astype(width)
        vals = from_storage(codes.view(fmt.np_dtype))
    return np.unique(vals[np.isfinite(vals) & (vals > 0)])


def inputs(sp: CV.Spec, dtype: str, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fmt = get_format(sp.fmt)
    g = grid(sp.fmt, rng)
    mid = (g[:-1] + g[1:]) / 2  # exact: grid values have few significant bits
    xs = [g, mid, np.nextafter(mid, np.inf), np.nextafter(mid, -np.inf),
          mid * (1 + 2.0 ** -30), mid * (1 - 2.0 ** -30),  # f32 rounds these onto the midpoint
          mid * (1 + 2.0 ** -23), g * (1 + 2.0 ** -40)]
    for rule in CV.rules_for(sp):
        if np.isfinite(rule.bound) and rule.bound != 0:
            b = abs(rule.bound)
            xs.append(np.array([b, np.nextafter(b, 0), np.nextafter(b, np.inf), 2 * b, b / 2]))
    lo, hi = max(fmt.emin - 4, -1070), min(fmt.emax + 3, 1020)
    xs.append(rng.uniform(1, 2, 2000) * 2.0 ** rng.integers(lo, hi, 2000))
    xs.append(np.array([0.0, 5e-324, 2.0 ** -1000, 2.0 ** -149, 2.0 ** -150, 2.0 ** -127,
                        2.0 ** -126, 3 * 2.0 ** -128, 1.5 * 2.0 ** -127, 3.4028234663852886e38,
                        3.4028235677973366e38, 2.0 ** 127, 1.5 * 2.0 ** 127, 2.0 ** 128,
                        1.7976931348623157e308, np.inf, np.nan]))
    x = np.concatenate(xs)
    x = np.concatenate([x, -x])
    if dtype == "f32":
        with np.errstate(over="ignore"):
            x = x.astype(np.float32).astype(np.float64)
    return rng.permutation(x)


def _check(cases: list[Case], launchers: list) -> None:
    bad = []
    for case, launcher in zip(cases, launchers, strict=True):
        ref = Interpreter(case.module.ir).run(case.name, [case.x], 0)
        got = run_program(case.program, launcher, case.module[case.name].ir, [case.x], 0)
        for what, a, b in zip(("code", "value"), ref, got):
            if not bit_equal(a, b):
                diff = np.flatnonzero(~((a == b) | (np.isnan(a) & np.isnan(b)))
                                      | (np.signbit(a) != np.signbit(b)))
                bad.append(f"{case.name} {what}: {diff.size} differ, e.g. "
                           f"x={case.x[diff[0]]!r} ref {a[diff[0]]!r} got {b[diff[0]]!r}")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------------------
def test_hardware_specs_follow_the_arch():
    keys = {a: {(s.fmt, s.mode) for s in CV.hardware_specs(a)}
            for a in ("sm_80", "sm_89", "sm_90a", "sm_100a", "sm_120a", "sm_100")}
    assert ("e4m3", "rne") not in keys["sm_80"] and ("e4m3", "rne") in keys["sm_89"]
    assert ("bf16", "rne") not in keys["sm_89"] and ("bf16", "rne") in keys["sm_90a"]
    for a in ("sm_80", "sm_89", "sm_90a", "sm_100"):  # no family-specific short-type cvt
        assert not {("e2m1", "rne"), ("e8m0", "rz"), ("e8m0", "ru")} & keys[a], a
    for a in ("sm_100a", "sm_120a"):
        assert {("e2m1", "rne"), ("e8m0", "rz"), ("e8m0", "rd"), ("e8m0", "ru")} <= keys[a]
    for a in keys:  # never: directed fp8, e8m0 nearest (ml_dtypes' lowest-binade rule), sr
        assert not {("e4m3", "rz"), ("e2m1", "ru"), ("e8m0", "rne"), ("e4m3", "sr")} & keys[a]
    assert CV.hardware_specs(None) == ()
    with pytest.raises(ValueError):
        CV.arch_number("hopper")


def test_rules_are_the_reference_at_their_thresholds():
    """Each threshold is where the reference starts giving the rule's constant (tight)."""
    for sp in ALL:
        for rule in CV.rules_for(sp):
            if rule.cond not in ("ge", "le") or not np.isfinite(rule.bound) or rule.bound == 0:
                continue
            inward = np.nextafter(rule.bound, 0.0)
            at, before = CV.ref_code(sp, rule.bound), CV.ref_code(sp, inward)
            assert at == rule.code, (sp, rule)
            if sp.fmt != "e8m0" or rule.cond == "ge":
                assert before != rule.code, (sp, rule)


def test_inputs_would_catch_double_rounding(cases):
    """Rounding through f32 first differs from one rounding on some test input of every
    f64-input fp8/e2m1 function: the round-to-odd step is really exercised."""
    for case in cases:
        sp, x = case.spec, case.x
        if case.dtype != "f64" or sp.fmt not in ("e4m3", "e5m2", "e2m1"):
            continue
        fmt = get_format(sp.fmt)
        with np.errstate(over="ignore"):
            twice = round_array(x.astype(np.float32).astype(np.float64), fmt, sp.mode, sp.sat)
        once = round_array(x, fmt, sp.mode, sp.sat)
        assert np.any((twice != once) & ~np.isnan(once)), sp


@pytest.mark.parametrize("arch", ARCHS)
def test_conversions_emulated_are_bit_exact(arch, cases, cache):
    """The arch's CUDA print on the CPU; hardware helpers exactly where the arch has them."""
    own = set(CV.hardware_specs(arch))
    for case in cases:
        sp, dt, name = case.spec, case.dtype, case.name
        src = emit_program(case.program, "cuda", arch).source
        used = set(re.findall(r"= (ng_cv_\w+)\(", src))
        kinds = ["value"] + (["code"] if sp.fmt != "f32" else [])  # f32 is stored as a value
        want = {f"ng_cv_{sp.key}_{kind}_{'f' if dt == 'f32' else 'd'}" for kind in kinds}
        if sp not in own:
            want = set()  # software on this arch
        # e2m1 saturates in every mode: its _s_ and _n_ helpers are one function, and an f32
        # input's expansion (round_f32_to) is the same for both
        same = (lambda names: {n.replace("e2m1_rne_s_", "e2m1_rne_n_") for n in names})
        assert same(used) == same(want), (arch, name, used)
    be = CudaHostBackend(cache, emulate=arch)
    ok, why = be.available()
    if not ok:
        pytest.skip(why)
    _check(cases, be.build_many([c.program for c in cases]))


def test_software_path_is_kept_where_asked(cases):
    programs = [c.program for c in cases]
    for src in (emit_bundle(programs, "host")[0],
                emit_bundle(programs, "cuda", "sm_100a", hardware=False)[0]):
        assert "ng_cv_" not in src and "#include <cuda_fp8.h>" not in src
    sm80 = emit_bundle(programs, "cuda", "sm_80")[0]  # f16 and f32 only: cvt.rn.f16.f64
    assert set(re.findall(r"ng_cv_([a-z0-9]+)_", sm80)) == {"f16", "f32"}
    assert "__nv_cvt" not in sm80


def test_conversions_ptx_per_arch(cases, cache):
    programs = [c.program for c in cases]
    printed = {a: emit_bundle(programs, "cuda", a) for a in ARCHS}
    built = nvcc_compile_archs({a: s for a, (s, _) in printed.items()}, ARCHS, cache)
    for arch, (ptx, cubin) in built.items():
        assert cubin[:4] == b"\x7fELF"
        own = set(CV.hardware_specs(arch))
        funcs = ptx_functions(ptx)
        for case, ks in zip(cases, printed[arch][1]):
            sp, name = case.spec, case.name
            text = "".join(funcs[sym][1] for sym, _ in ks)
            hw = sp in own
            if sp.fmt in CODE_CVT:
                assert (CODE_CVT[sp.fmt] in text) == hw, (arch, name, CODE_CVT[sp.fmt])
            if sp.fmt == "e8m0":
                rnd = "rp" if sp.mode == "ru" else "rz"
                assert (f"cvt.{rnd}.satfinite.ue8m0x2.f32" in text) == hw, (arch, name)
            if sp.fmt in VALUE_CVT:
                assert (VALUE_CVT[sp.fmt] in text) == hw, (arch, name, VALUE_CVT[sp.fmt])
        if arch == "sm_90a":
            assert "e2m1x2" not in ptx and "ue8m0x2" not in ptx


@pytest.mark.gpu
@gpu
def test_gpu_conversions_are_bit_exact(cases, cache):
    """The instructions themselves, on the device, against the reference."""
    _check(cases, CudaBackend(cache).build_many([c.program for c in cases]))


@pytest.mark.parametrize("arch", ARCHS)
def test_stdlib_emulated_matches_reference(arch, cache):
    """Every lowerable stdlib function as the arch's CUDA print on the CPU, bit for bit."""
    from kernel_diff import run_both, stdlib_cases

    from numgrade.api import load_stdlib
    from numgrade.kernels.lower import NotLowerable
    be = CudaHostBackend(cache, emulate=arch)
    ok, why = be.available()
    if not ok:
        pytest.skip(why)
    progs = []
    for lib, fn in stdlib_cases():
        try:
            progs.append((lib, fn, load_stdlib(lib)[fn].kernels()))
        except NotLowerable:
            pass
    launchers = be.build_many([p for _, _, p in progs])
    by_source = {emit_program(p, "host").source: la for (_, _, p), la in zip(progs, launchers)}
    uses_hw = 0
    bad = []
    for lib, fn, p in progs:
        uses_hw += "ng_cv_" in emit_program(p, "cuda", arch).source
        ref, got = run_both(lib, fn, lambda q: by_source[emit_program(q, "host").source])
        if not all(bit_equal(a, b) for a, b in zip(ref, got)):
            bad.append(f"{lib}.{fn}")
    assert not bad, f"differ from the reference on {arch}: {bad}"
    assert uses_hw >= 10, uses_hw  # the quantisers, bf16 and f16 programs at least


def _decl_program(mutate: bool):
    """out[i] = e4m3 code and value of x[i] rounded while held in a Decl; with ``mutate`` the
    Decl is assigned between the rounding and the encoding."""
    fmt = get_format("e4m3")
    i, z = var("i", "i64"), var("z", "f64")
    blk = L.Block()
    r = L.round_to(blk, z, fmt)
    enc = blk.child()
    code = L.encode(enc, r.cast("f32").cast("f64"), fmt)
    body = [Decl("z", load("x", i, "f64")), *blk.stmts]
    if mutate:
        body.append(Assign("z", z * const(2.0, "f64")))
    body += [*enc.stmts, Store("out", i, code), Store("val", i, r)]
    bufs = {n: BufferDecl(n, st, (), st, role) for n, st, role in
            [("x", "f64", "in"), ("out", "u8", "out"), ("val", "f64", "out")]}
    kern = Kernel("k", (var("n", "i64"),), ("i",), tuple(body), ("x", "out", "val"),
                  (ScalarParam("n", "i64"),))
    return KernelProgram("decl", bufs, [kern], ["x"], ["out", "val"], True, ["n"])


@pytest.mark.parametrize("mutate", [False, True])
def test_mutable_inputs_get_no_late_code_helper(mutate, cache):
    """An input held in a Decl keeps its value helper (same place as the software), never a
    code helper after an Assign; the emulated print equals the software print bit for bit."""
    program = _decl_program(mutate)
    found = CV.find_conversions(program.kernels[0], CV.hardware_specs("sm_90a"))
    assert sorted(c.kind for c in found.values()) == ["value"]
    x = inputs(CV.Spec("e4m3", "rne", True), "f64")
    runs = []
    for be in (CudaHostBackend(cache), CudaHostBackend(cache, emulate="sm_90a")):
        bufs = {"x": x.copy(), "out": np.zeros(x.size, np.uint8), "val": np.zeros(x.size)}
        be.build(program)(bufs, {"n": x.size})
        runs.append(bufs)
    assert np.array_equal(runs[0]["out"], runs[1]["out"])
    assert bit_equal(runs[0]["val"], runs[1]["val"])


def test_shadowed_inputs_stay_software():
    """A rounding of a name bound twice (here ``s``, shadowed in the loop) is not matched."""
    fmt = get_format("e4m3")
    i = var("i", "i64")
    blk = L.Block()
    r = L.round_to(blk, var("s", "f64"), fmt)
    body = (Let("s", load("x", i, "f64")),
            Loop("j", var("n", "i64"), (Let("s", load("y", i, "f64")), *blk.stmts)))
    kern = Kernel("k", (var("n", "i64"),), ("i",), body, ("x", "y"), ())
    assert r.op == "var" and CV.find_conversions(kern, CV.hardware_specs("sm_90a")) == {}
