"""The per-target cost model (passes/cost_model.py): sourced numbers, storage, the fused-kernel
terms counted by hand, memory- versus compute-bound kernels, emulation and user errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from numgrade.api import compile_source, load_stdlib, stdlib_names
from numgrade.errors import GradeError
from numgrade.ir.formats import FORMATS
from numgrade.ir.nodes import Op
from numgrade.passes import cost_model as CM
from numgrade.passes.inline import inline_calls

DOC = Path(__file__).resolve().parents[1] / "docs" / "cost_model.md"
F = FORMATS


def _ops(k: CM.KernelTerms) -> Counter:
    out: Counter = Counter()
    for v, n in k.ops:
        out[v.op] += n
    return out


# --- the sourced numbers -----------------------------------------------------------------
def test_sourced_gpu_figures():
    h, b = CM.get_target("sm_90"), CM.get_target("sm_100")
    assert h.dram_bandwidth == 4.8e12 and b.dram_bandwidth == 8e12  # datasheets
    # FP32 67 / 80 TFLOPS and FP64 34 / 40 TFLOPS, an FMA being two FLOPs
    assert h.rates["f32"] == 67e12 / 2 and h.rates["f64"] == 34e12 / 2
    assert b.rates["f32"] == 80e12 / 2 and b.rates["f64"] == 40e12 / 2
    for t in (h, b):  # CUDA guide per-SM ratios: FP16x2 256, SFU 16, int 64, cvt 16 vs FP32 128
        f32 = t.rates["f32"]
        assert t.rates["h2"] == 2 * f32  # H100 whitepaper: 133.8 vs 66.9 TFLOPS non-tensor
        assert t.rates["sfu"] == f32 / 8 and t.rates["cvt"] == f32 / 8
        assert t.rates["int"] == f32 / 2
        assert t.launch_overhead == 3e-6


def test_sourced_cpu_figures():
    c = CM.get_target("cpu")
    assert c.dram_bandwidth == 20e9  # ~20 GB/s per core, measured with numpy here
    assert c.rates["f32"] == 2 * 8 * 3.0e9 and c.rates["f64"] == c.rates["f32"] / 2
    assert c.rates["div32"] == 8 / 5 * 3.0e9 and c.rates["div64"] == 4 / 8 * 3.0e9
    assert "h2" not in c.rates and "sfu" not in c.rates  # no half arithmetic, no SFU


def test_docs_tables_are_the_code():
    text = DOC.read_text(encoding="utf-8")
    assert CM.rates_table_markdown() in text
    assert CM.cost_table_markdown() in text
    for figure in ("4.8 TB/s", "8 TB/s", "34 / 67 TFLOPS", "40 / 80 TFLOPS", "133.8", "sm_100a",
                   "sm_89", "20 GB/s", "0.5625"):
        assert figure in text, figure


def test_storage_bytes_per_format():
    want = {"f64": 8, "f32": 4, "f16": 2, "bf16": 2, "e4m3": 1, "e5m2": 1, "e8m0": 1,
            "e2m1": 0.5 + 1 / 16, "i32": 4, "bool": 1}
    for t in CM.TARGETS.values():
        assert {n: t.storage_bytes(F[n]) for n in want} == want


# --- conversions, native and emulated arithmetic -----------------------------------------
def test_conversion_hardware_per_target():
    h, b, c = (CM.get_target(n) for n in ("sm_90", "sm_100", "cpu"))
    f32 = F["f32"]
    assert h.convert_native(f32, F["e4m3"]) and b.convert_native(f32, F["e4m3"])
    assert not h.convert_native(f32, F["e2m1"]) and b.convert_native(f32, F["e2m1"])
    assert not h.convert_native(f32, F["e8m0"]) and b.convert_native(f32, F["e8m0"])
    assert not c.convert_native(f32, F["e4m3"]) and c.convert_native(f32, F["f16"])  # F16C
    # e2m1 without conversion hardware pays a software conversion
    assert h.convert_seconds(f32, F["e2m1"]) == 12 / h.rates["int"]
    assert b.convert_seconds(f32, F["e2m1"]) == 0.5 / b.rates["cvt"]
    assert h.convert_seconds(f32, f32) == 0.0
    # exact widening then one rounding: e4m3 -> f16 -> f32 on the GPUs
    assert h.convert_seconds(F["e4m3"], f32) == 1.5 / h.rates["cvt"]
    # f64 -> e4m3 has no instruction: through f32 by round-to-odd
    assert h.convert_seconds(F["f64"], F["e4m3"]) == pytest.approx(
        h.convert_seconds(F["f64"], f32) + 3 / h.rates["int"] + h.convert_seconds(f32, F["e4m3"]))


def test_scalar_fp8_and_fp4_arithmetic_is_emulated_everywhere():
    f32 = F["f32"]
    for t in CM.TARGETS.values():
        for name in ("e4m3", "e5m2", "e2m1", "e8m0"):
            f = F[name]
            assert not t.native(Op.ADD, f)
            want = t.op_seconds(Op.ADD, f32) + 2 * t.convert_seconds(f, f32) \
                + t.convert_seconds(f32, f)
            assert t.op_seconds(Op.ADD, f) == pytest.approx(want)
            assert t.op_seconds(Op.ADD, f) > t.op_seconds(Op.ADD, f32)
        assert t.native(Op.ADD, f32) and t.native(Op.EXP, F["f64"])
    # bf16 / f16: native packed arithmetic on the GPUs, emulated in f32 on the AVX2 core
    for n in ("sm_90", "sm_100"):
        t = CM.get_target(n)
        assert t.native(Op.MUL, F["bf16"]) and not t.native(Op.EXP, F["bf16"])
        assert t.op_seconds(Op.MUL, F["bf16"]) == t.op_seconds(Op.MUL, f32) / 2
    cpu = CM.get_target("cpu")
    assert not cpu.native(Op.MUL, F["bf16"])
    assert cpu.op_seconds(Op.MUL, F["bf16"]) > cpu.op_seconds(Op.MUL, f32)


def test_excluded_and_variant_operations():
    t = CM.get_target("sm_90")
    assert t.op_seconds(Op.EXP, F["i32"]) is None and t.op_seconds(Op.ADD, F["bool"]) is None
    assert t.op_seconds(Op.ADD, F["i32"]) == 1 / t.rates["int"]
    assert t.op_seconds(Op.LT, F["bool"]) == 1 / t.rates["int"]
    assert t.op_seconds("round_sr", F["bf16"]) > t.op_seconds(Op.ROUND, F["bf16"]) == 0.0
    assert t.op_seconds("reduce_sum_kahan", F["f32"]) == 4 * t.op_seconds(Op.SUM, F["f32"])
    with pytest.raises(GradeError, match="no cost for operation 'call'"):
        t.op_seconds(Op.CALL, F["f32"])


# --- the terms, counted by hand ----------------------------------------------------------
def test_softmax_terms_by_hand():
    fn = load_stdlib("softmax").softmax.ir
    (k,) = CM.kernel_terms(fn, {"M": 3, "N": 5})
    assert k.kind == "rowwise"
    assert [(v.op, n) for v, n in k.reads] == [(Op.PARAM, 15)]
    assert [(v.op, n) for v, n in k.writes] == [(Op.DIV, 15)]
    # exp(x - m) is evaluated in the row-sum loop and again in the output loop
    assert _ops(k) == Counter({Op.RMAX: 15, Op.SUM: 15, Op.SUB: 30, Op.EXP: 30, Op.DIV: 15})
    edges = Counter()
    for c, o, n in k.edges:
        edges[(c.op, o.op)] += n
    assert edges[(Op.SUB, Op.RMAX)] == 2 * 3  # the row maximum, once per row and loop
    assert edges[(Op.DIV, Op.SUM)] == 3


def test_rmsnorm_terms_by_hand():
    fn = load_stdlib("rmsnorm").rmsnorm.ir
    (k,) = CM.kernel_terms(fn, {"T": 3, "D": 5})
    assert sorted(n for _, n in k.reads) == [5, 15]  # x and w (eps is an immediate)
    assert [n for _, n in k.writes] == [15]
    assert _ops(k) == Counter({Op.MEAN: 15, Op.MUL: 45, Op.ADD: 3, Op.RSQRT: 3})


def test_matmul_and_recomputation_across_kernels_by_hand():
    mod = compile_source(
        "fn mm(a: f32[N, K], b: f32[K, P]) -> f32[N, P] { return a @ b }\n"
        "fn norm(x: f32[M, N]) -> f32[M] { let y = exp(x)\n return sum(y / sum(y), axis=-1) }\n")
    (k,) = CM.kernel_terms(mod.mm.ir, {"N": 2, "K": 3, "P": 4})
    assert sorted(n for _, n in k.reads) == [6, 12] and [n for _, n in k.writes] == [8]
    assert _ops(k) == Counter({Op.MATMUL: 2 * 4 * 3})  # K multiply-adds per output
    first, second = CM.kernel_terms(mod.norm.ir, {"M": 3, "N": 7})
    # the whole-tensor sum is its own kernel; exp is recomputed by the row-sum kernel
    assert _ops(first) == Counter({Op.SUM: 21, Op.EXP: 21})
    assert _ops(second) == Counter({Op.EXP: 21, Op.DIV: 21, Op.SUM: 21})
    assert sorted((v.op, n) for v, n in second.reads) == [(Op.PARAM, 21), (Op.SUM, 1)]
    assert [(v.op, n) for v, n in second.writes] == [(Op.SUM, 3)]


def test_nvfp4_quantize_terms_by_hand():
    mod = load_stdlib("nvfp4")
    amax, block = CM.kernel_terms(mod.quantize.ir, {"M": 2, "N": 32}, module=mod.ir)
    assert [n for _, n in amax.reads] == [64] and _ops(amax)[Op.RMAX] == 64
    assert sorted(n for _, n in block.reads) == [1, 64]  # x and the global amax buffer
    assert sorted((v.fmt.name, n) for v, n in block.writes) == [("e2m1", 64), ("e4m3", 4)]
    assert _ops(block)[Op.RMAX] == 64  # block amax over 2 x 2 blocks of 16


def test_memory_bytes_equal_fusion_count_for_the_stdlib():
    """With storage = bits / 8 the read and write terms are exactly what fusion.py counts."""
    checked = 0
    for prog in stdlib_names():
        mod = load_stdlib(prog)
        for name in mod.functions:
            f = mod[name]
            fn = inline_calls(mod.ir, f.ir)
            dims = {d: 128 for d in fn.dims}
            plan = f.fusion()
            terms = CM.kernel_terms(fn, dims)
            mine = sum(n * (v.fmt.bits / 8 if v.fmt.kind != "bool" else 1)
                       for k in terms for v, n in k.reads + k.writes)
            assert len(terms) == len(plan.groups)
            assert mine == plan.bytes_fused.evaluate(dims), (prog, name)
            checked += 1
    assert checked >= 100


@pytest.mark.parametrize("prog,name,dims", [
    ("softmax", "softmax", {"M": 64, "N": 1024}), ("softmax", "log_softmax", {"M": 64, "N": 1024}),
    ("rmsnorm", "rmsnorm", {"T": 64, "D": 1024}), ("rmsnorm", "rmsnorm_bf16", {"T": 64, "D": 1024}),
])
def test_softmax_and_rmsnorm_are_one_kernel_with_fusions_bytes(prog, name, dims):
    f = load_stdlib(prog)[name]
    for t in CM.TARGETS.values():
        cost = CM.program_cost(f.ir, dims, t)
        assert len(cost.kernels) == 1
        assert cost.memory_bytes == f.fusion().bytes_fused.evaluate(dims)
        assert cost.kernels[0].memory_seconds == cost.memory_bytes / t.dram_bandwidth


def test_e2m1_storage_is_charged_its_block_scales():
    mod = load_stdlib("nvfp4")
    dims = {"M": 64, "N": 256}
    cost = CM.program_cost(mod.quantize.ir, dims, "sm_100", module=mod.ir)
    plain = mod.quantize.fusion().bytes_fused.evaluate(dims)
    assert cost.memory_bytes == plain + 64 * 256 / 16  # one e4m3 byte per 16 codes


# --- memory- versus compute-bound --------------------------------------------------------
def test_bf16_storage_halves_the_memory_time_of_euler_cfg():
    mod = load_stdlib("flow_matching")
    text = mod.ir.source
    start = text.index("fn euler_cfg(")
    src = text[start:text.index("\n}", start) + 2].replace("f32", "bf16")
    full_bf16 = compile_source(src).euler_cfg  # storage and arithmetic in bf16
    B, D = 256, 4096
    dims = {"B": B, "D": D}
    for t in CM.TARGETS.values():
        f32 = CM.program_cost(mod.euler_cfg.ir, dims, t).kernels[0]
        mixed = CM.program_cost(mod.euler_cfg_bf16.ir, dims, t).kernels[0]
        half = CM.program_cost(full_bf16.ir, dims, t).kernels[0]
        assert f32.memory_bytes == 4 * (4 * B * D + 2)  # three tensors in, one out, w and dt
        assert mixed.memory_bytes == 2 * 4 * B * D + 4 * 2
        assert half.memory_bytes == 2 * (4 * B * D + 2)
        assert mixed.memory_seconds / f32.memory_seconds == pytest.approx(0.5, rel=1e-5)
        assert half.memory_seconds == pytest.approx(f32.memory_seconds / 2)
        if t.name != "cpu":
            assert f32.bound == mixed.bound == half.bound == "memory"
            # bf16 arithmetic is native (packed): half the f32 operation time
            assert half.compute_seconds == pytest.approx(f32.compute_seconds / 2)
            assert mixed.seconds < f32.seconds
        else:  # emulated bf16 arithmetic costs more than f32 on the AVX2 core
            assert half.compute_seconds > f32.compute_seconds


def test_compute_bound_matmul_weighs_operations():
    src = ("fn mm(a: f32[N, K], b: f32[K, P]) -> f32[N, P] {{ return matmul(a, b, acc={acc}) }}")
    n = 1024
    dims = {"N": n, "K": n, "P": n}
    f32 = compile_source(src.format(acc="f32")).mm.ir
    f64 = compile_source(src.format(acc="f64")).mm.ir
    for t in CM.TARGETS.values():
        c32, c64 = CM.program_cost(f32, dims, t), CM.program_cost(f64, dims, t)
        k32, k64 = c32.kernels[0], c64.kernels[0]
        assert k32.bound == k64.bound == "compute"
        # a rounded product and a rounded sum per multiply-add
        assert k32.compute_seconds == pytest.approx(n ** 3 * 2 / t.rates["f32"])
        assert c32.total == pytest.approx(t.launch_overhead + k32.compute_seconds)
        # the f64 accumulator: same bytes, operations at the f64 rate plus the conversions
        assert k64.memory_bytes == k32.memory_bytes
        want = (n ** 3 * 2 / t.rates["f64"] + 2 * n * n * t.convert_seconds(F["f32"], F["f64"])
                + n * n * t.convert_seconds(F["f64"], F["f32"]))
        assert k64.compute_seconds == pytest.approx(want)
        assert c64.total > 1.9 * c32.total - t.launch_overhead


def test_cost_breakdown_json():
    f = load_stdlib("softmax").softmax
    cost = CM.program_cost(f.ir, {"M": 8, "N": 128}, CM.get_target("sm_90"))
    d = json.loads(cost.to_json())
    assert d["function"] == "softmax" and d["target"] == "sm_90"
    assert d["seconds"] == cost.total and d["dims"] == {"M": 8, "N": 128}
    (k,) = d["kernels"]
    assert k["bound"] == "memory" and k["memory_bytes"] == 2 * 4 * 8 * 128
    assert k["seconds"] == pytest.approx(3e-6 + k["memory_seconds"])


# --- user mistakes -----------------------------------------------------------------------
def test_bad_target_name():
    with pytest.raises(GradeError, match="unknown target 'sm_80'.*cpu, sm_90, sm_100"):
        CM.get_target("sm_80")
    with pytest.raises(GradeError, match="unknown target"):
        CM.program_cost(load_stdlib("softmax").softmax.ir, {"M": 1, "N": 1}, "h100")


def test_unbound_and_invalid_sizes():
    sm = load_stdlib("softmax").softmax.ir
    with pytest.raises(GradeError, match="needs its sizes bound: N=..."):
        CM.kernel_terms(sm, {"M": 4})
    with pytest.raises(GradeError, match="non-negative integer"):
        CM.kernel_terms(sm, {"M": 4, "N": -1})
    with pytest.raises(GradeError, match="non-negative integer"):
        CM.kernel_terms(sm, {"M": 4, "N": 2.5})
    fp8 = load_stdlib("fp8")
    with pytest.raises(GradeError, match="requires N % 128 == 0"):
        CM.kernel_terms(fp8.quantize_block_1x128.ir, {"M": 2, "N": 100}, module=fp8.ir)
    nv = load_stdlib("nvfp4")
    with pytest.raises(GradeError, match="inline the calls first"):
        CM.kernel_terms(nv.quantize.ir, {"M": 2, "N": 32})
