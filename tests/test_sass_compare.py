"""benchmarks/sass_compare.py: loop trip counts and dynamic SASS instruction counts.

The ptxas tests compile small hand-made Triton kernels whose answer is known: a kernel with a
loop is compared with the same kernel written with ``tl.static_range`` (fully unrolled, so its
static SASS count *is* its dynamic count); a wrong trip count (1, or not divided by ptxas'
unroll factor) would be off by a factor of 4 or more.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("sass_compare_t",
                                               ROOT / "benchmarks" / "sass_compare.py")
sc = importlib.util.module_from_spec(_spec)
sys.modules["sass_compare_t"] = sc
_spec.loader.exec_module(sc)


# ---- source loops (no ptxas) -------------------------------------------------------------------
def test_source_loops_local_scalars(tmp_path):
    p = tmp_path / "k.py"
    p.write_text(textwrap.dedent("""\
        def k(x, v_n, v_m, B0: tl.constexpr):
            v_n = tl.cast(v_n, tl.int64)
            _t1 = tl.full((), 16384, tl.int64)
            for _base in range(0, _t1, B0):
                _t12 = tl.full((), 16, tl.int64)
                for _it in range(0, _t12):
                    pass
            for b in range(0, v_n, B0):
                pass
            for i in tl.static_range(4):
                pass
            _u = tl.full((), 3, tl.int64)
            _u = tl.full((), 5, tl.int64)
            for i in range(_u):
                pass
            for i in range(0, v_m):
                pass
            while x:
                pass
        """))
    loops = sc.source_loops(str(p), "k", {"v_n": 4096, "B0": 1024})
    trips = {lp["lo"]: lp["trips"] for lp in loops}
    assert trips == {4: 16, 6: 16, 8: 4, 10: 4, 14: None, 16: None, 18: None}


def _ins(addr, text, line=None):
    import re
    g = re.match(r"^@(!?U?P[T\d]+)\s+", text)
    body = text[g.end():] if g else text
    op, opnds = sc._operands(body)
    return {"addr": addr, "op": op, "opnds": opnds, "guard": g.group(1) if g else None,
            "line": line, "locs": [line] if line else [], "cold": False, "target": None}


def test_sass_trips_counter():
    # the fp8 partials loop of sass_compare's first run: 64-bit counter -0x400 += 0x400 until
    # >= 0x3c00: 16 iterations
    ins = [_ins(0x60, "IMAD.MOV.U32 R2, RZ, RZ, -0x400"),
           _ins(0x80, "IMAD.MOV.U32 R3, RZ, RZ, -0x1"),
           _ins(0x120, "IADD3 R2, P0, R2, 0x400, RZ"),
           _ins(0x130, "IMAD.X R3, RZ, RZ, R3, P0"),
           _ins(0x140, "FMNMX R4, R5, R4, !PT"),
           _ins(0x650, "ISETP.GE.U32.AND P3, PT, R2, 0x3c00, PT"),
           _ins(0x670, "ISETP.GE.U32.AND.EX P3, PT, R3, RZ, PT, P3"),
           _ins(0x780, "@!P3 BRA `(.L_x_0)")]
    assert sc.sass_trips(ins, 0x120, ins[-1]) == 16
    # counting down after the compare: 8, 7, ... taken while != 0 (checked before the step)
    ins = [_ins(0x10, "MOV R7, 0x8"),
           _ins(0x20, "ISETP.NE.AND P0, PT, R7, 0x1, PT"),
           _ins(0x30, "IADD3 R7, R7, -0x1, RZ"),
           _ins(0x40, "@P0 BRA `(.L_x_0)")]
    assert sc.sass_trips(ins, 0x20, ins[-1]) == 8
    # a bound in a register: unknown
    ins[1] = _ins(0x20, "ISETP.NE.AND P0, PT, R7, R9, PT")
    assert sc.sass_trips(ins, 0x20, ins[-1]) is None


def test_uniform_scalar_loads_are_not_data_loads():
    # NVFP4's quantise kernel (numgrade's and the expert's) reads the global scale once per
    # program from a kernel parameter; the data comes through 128-bit loads
    ins = [_ins(0x10, "LDC.64 R28, c[0x0][0x228]"),
           _ins(0x20, "S2R R0, SR_TID.X"),
           _ins(0x30, "LEA R26, P0, R0, UR4, 0x4"),
           _ins(0x40, "LEA.HI.X R27, R0, UR5, RZ, 0x4, P0"),
           _ins(0x50, "LDG.E R3, desc[UR6][R28.64]"),
           _ins(0x60, "LDG.E.128 R16, desc[UR6][R26.64]"),
           _ins(0x70, "LDG.E R4, desc[UR6][R26.64+0x10]"),          # per-thread: a data load
           _ins(0x80, "IMAD.MOV.U32 R8, RZ, RZ, c[0x0][0x210]"),
           _ins(0x90, "IMAD.MOV.U32 R9, RZ, RZ, R0"),              # thread-dependent half
           _ins(0xa0, "LDG.E R5, desc[UR6][R8.64]")]
    assert sc.uniform_loads(ins) == {0x50}


# ---- compiled kernels (Triton -> PTX -> ptxas) ---------------------------------------------
def _have_tools() -> bool:
    # find_spec, not import: importing triton before numgrade sets TRITON_INTERPRET (at
    # collection time) leaves Triton's standard library compiled, not interpreted
    import importlib.util as iu
    try:
        if iu.find_spec("triton") is None:
            return False
        sc.tool("ptxas")
        sc.tool("nvdisasm")
        return True
    except Exception:
        return False


needs_ptxas = pytest.mark.skipif(not _have_tools(), reason="needs triton, ptxas and nvdisasm")

KERNELS = '''
import triton
import triton.language as tl


@triton.jit
def lane_loop(x_ptr, out_ptr, v_dim0, B: tl.constexpr):
    v_dim0 = tl.cast(v_dim0, tl.int64)
    pid = tl.program_id(0).to(tl.int64)
    _t1 = tl.full((), 65536, tl.int64)
    acc = tl.zeros([B], tl.float32)
    for base in range(0, _t1, B):
        offs = base + tl.arange(0, B).to(tl.int64)
        mask = offs < _t1
        ix = pid * 65536 + offs
        ok = ix < v_dim0
        v = tl.load(x_ptr + tl.where(ok, ix, v_dim0 - 1), mask=mask)
        acc = tl.maximum(acc, tl.where(mask & ok, tl.abs(v), float('-inf')))
    tl.store(out_ptr + pid, tl.max(acc, axis=0))


@triton.jit
def lane_static(x_ptr, out_ptr, v_dim0, B: tl.constexpr):
    v_dim0 = tl.cast(v_dim0, tl.int64)
    pid = tl.program_id(0).to(tl.int64)
    acc = tl.zeros([B], tl.float32)
    for i in tl.static_range(65536 // B):
        offs = i * B + tl.arange(0, B).to(tl.int64)
        mask = offs < 65536
        ix = pid * 65536 + offs
        ok = ix < v_dim0
        v = tl.load(x_ptr + tl.where(ok, ix, v_dim0 - 1), mask=mask)
        acc = tl.maximum(acc, tl.where(mask & ok, tl.abs(v), float('-inf')))
    tl.store(out_ptr + pid, tl.max(acc, axis=0))


@triton.jit
def lanes_inner(x_ptr, out_ptr, B: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    _t1 = tl.full((), 128, tl.int64)
    _t12 = tl.full((), 48, tl.int64)
    for base in range(0, _t1, B):
        lane = pid * 128 + base + tl.arange(0, B)
        acc = tl.zeros([B], tl.float32)
        for j in range(0, _t12):
            v = tl.load(x_ptr + lane * 48 + j)
            acc = tl.math.div_rn(acc * 1.5 + tl.exp(v), v + 3.0)
        tl.store(out_ptr + lane, acc)


@triton.jit
def lanes_inner_static(x_ptr, out_ptr, B: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    for b in tl.static_range(128 // B):
        lane = pid * 128 + b * B + tl.arange(0, B)
        acc = tl.zeros([B], tl.float32)
        for j in tl.static_range(48):
            v = tl.load(x_ptr + lane * 48 + j)
            acc = tl.math.div_rn(acc * 1.5 + tl.exp(v), v + 3.0)
        tl.store(out_ptr + lane, acc)


@triton.jit
def runtime_loop(x_ptr, out_ptr, n):
    acc = 0.0
    for i in range(0, n):
        acc = acc * 1.5 + tl.load(x_ptr + i)
    tl.store(out_ptr, acc)


@triton.jit
def runtime_static(x_ptr, out_ptr, N: tl.constexpr):
    acc = 0.0
    for i in tl.static_range(N):
        acc = acc * 1.5 + tl.load(x_ptr + i)
    tl.store(out_ptr, acc)
'''


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("sass")
    src = d / "kernels.py"
    src.write_text(KERNELS)
    sc.CACHE = d / "cache"
    ptx_version = sc.ptxas_ptx_version(sc.tool("ptxas"))

    def go(fn, signature, constexprs, env, num_warps, elems_per_prog=1.0):
        job = {"path": str(src), "fn": fn, "signature": signature, "constexprs": constexprs,
               "div16": [i for i, t in enumerate(signature.values()) if t.startswith("*")],
               "options": {"num_warps": num_warps, "enable_fp_fusion": True,
                           "ptx_version": ptx_version},
               "arch": 90, "key": f"{fn}_{json.dumps(constexprs, sort_keys=True)}"
                                  .replace('"', "").replace(" ", "")}
        r = sc.compile_ptx_jobs([job], 1)[job["key"]]
        assert "ptx" in r, r.get("error")
        asm = sc.assemble(r["ptx"], "sm_90a", True)
        a = sc.analyse(asm["sass"], asm["log"], str(src), fn, env, 32 * num_warps,
                       elems_per_prog)
        a["sass_dir"] = asm["dir"]
        return a
    return go


def _close(a, b, factor):
    return b / factor <= a <= b * factor


@pytest.mark.slow
@needs_ptxas
def test_lane_loop_constexpr_step(build):
    """``for base in range(0, _t1, B)`` with a local constant bound and a constexpr step."""
    sig = {"x_ptr": "*fp32", "out_ptr": "*fp32", "v_dim0": "i64", "B": "constexpr"}
    env = {"B": 1024, "v_dim0": 1 << 24}
    loop = build("lane_loop", sig, {"B": 1024}, env, 4, 65536)
    ref = build("lane_static", sig, {"B": 1024}, env, 4, 65536)
    assert not ref["loops"] and ref["dynamic_instrs_per_thread"] == ref["static_instrs"]
    (lp,) = loop["loops"]
    assert lp["src_trips"] == 64 and lp["trips"] * (lp["unroll"] or 1) == 64, lp
    # the loop body counts 64 / unroll times, the rest once
    per_iter = lp["instrs"]
    assert loop["dynamic_instrs_per_thread"] == (loop["static_instrs"] - per_iter
                                                 + lp["trips"] * per_iter)
    assert loop["ipe"] == pytest.approx(loop["dynamic_instrs_per_thread"] * 128 / 65536)
    # the same work fully unrolled is within 2x (ptxas optimises the two differently); a
    # trip count of 1 would be ~40x below it
    assert _close(loop["dynamic_instrs_per_thread"], ref["dynamic_instrs_per_thread"], 2), \
        (loop["dynamic_instrs_per_thread"], ref["dynamic_instrs_per_thread"], loop["loops"])


@pytest.mark.slow
@needs_ptxas
def test_lane_loop_with_per_lane_scalar_loop(build):
    """A lane loop (4 trips) around a per-lane scalar loop (48 trips, local constant bound)."""
    sig = {"x_ptr": "*fp32", "out_ptr": "*fp32", "B": "constexpr"}
    loop = build("lanes_inner", sig, {"B": 32}, {"B": 32}, 1)
    ref = build("lanes_inner_static", sig, {"B": 32}, {"B": 32}, 1)
    inner = [lp for lp in loop["loops"] if lp["src_trips"] == 48]
    assert inner, loop["loops"]
    # 4 x 48 inner iterations in all: ptxas unrolls the 4-trip lane loop (4 copies of the
    # inner loop) or keeps it as a loop around the inner one
    outer = [lp for lp in loop["loops"] if lp["src_trips"] == 4]
    copies = sum(lp["trips"] for lp in inner) * (outer[0]["trips"] if outer else 1)
    assert copies == 4 * 48, loop["loops"]
    assert _close(loop["dynamic_instrs_per_thread"], ref["dynamic_instrs_per_thread"], 1.5), \
        (loop["dynamic_instrs_per_thread"], ref["dynamic_instrs_per_thread"], loop["loops"])


@pytest.mark.slow
@needs_ptxas
def test_runtime_loop_unrolled_by_ptxas(build):
    """``range(0, n)`` with n a runtime argument: ptxas unrolls it into a main loop and a
    remainder loop; the main loop runs n / unroll times."""
    sig_l = {"x_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32"}
    loop = build("runtime_loop", sig_l, {}, {"n": 256}, 1)
    lps = loop["loops"]
    assert lps and all(lp["src_trips"] == 256 for lp in lps), lps
    if len(lps) == 1:   # not unrolled
        assert lps[0]["trips"] == 256
        return
    main, rem = sorted(lps, key=lambda lp: lp["instrs"], reverse=True)
    u = main["unroll"]
    assert u and u > 1 and main["trips"] == 256 // u and rem["trips"] == 256 % u, lps
    # the unroll factor is the ratio of the loads in the two bodies
    ins = sc.parse_sass(open(Path(loop.get("sass_dir", "")) / "k.sass").read(), "") \
        if loop.get("sass_dir") else None
    if ins is not None:
        def ldg(lp):
            lo, hi = (int(x, 16) for x in lp["sass"])
            return sum(1 for r in ins if lo <= r["addr"] <= hi and r["op"].startswith("LDG"))
        assert ldg(main) == u * ldg(rem)
