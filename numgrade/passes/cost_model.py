"""Per-target cost model for precision tuning (issue 5, item 1).

Why it looks like this: the tuner (``passes/tune.py``) picks a format for every operation by a
mixed-integer program, so the cost must be a sum of per-value terms, each depending only on that
value's own format: bytes moved per stored or loaded element, time per computed element, and a
conversion paid on a (consumer, operand) edge when their formats differ. The terms come from the
fusion plan (``passes/fusion.py``) and never from the formats, so the tuner can rebuild them with
format variables; :func:`program_cost` evaluates them for the formats the program carries.

A program's estimated time on a target is a roofline per fused kernel::

    seconds = sum over kernels k of  launch_overhead + max(memory_s(k), compute_s(k))
    memory_s(k)  = sum(elements * storage_bytes(fmt)) / dram_bandwidth   over reads and writes
    compute_s(k) = sum(elements * op_seconds(op, working fmt))            over computed values
                 + sum(elements * convert_seconds(src, dst))               over edges, src != dst

Per-element op times are instruction mixes (how many instructions of each class one element
needs) divided by sourced per-class throughputs. Pipes are assumed not to overlap (a sum, so a
slight overestimate). A format a target cannot compute natively is emulated at its real cost:
operands decoded to f32, the operation done in f32, the result rounded back to the format (one
f32 operation followed by one rounding gives the correctly rounded result for + - * / sqrt,
because f32 has at least 2p + 2 significand bits for every narrower format here: Figueroa,
"When is double rounding innocuous?", SIGNUM 1995). Operations that make no sense in a format
(transcendentals in i32, arithmetic in bool) are excluded: ``op_seconds`` returns None.

Sourced figures (docs/cost_model.md has the full table and the derived per-element costs):

====================  =========================================  =============================
figure                value                                      source
====================  =========================================  =============================
H200 HBM3e bandwidth  4.8e12 B/s                                 NVIDIA H200 datasheet (SXM)
H200 FP64 / FP32      34 / 67 TFLOPS (non-tensor; FMA = 2 FLOP)  NVIDIA H200 datasheet (SXM)
H100/H200 FP16, BF16  2 x FP32 (133.8 vs 66.9 TFLOPS, packed)    NVIDIA H100 whitepaper, tab. 3
B200 HBM3e bandwidth  8e12 B/s                                   NVIDIA Blackwell datasheet
B200 FP64 / FP32      40 / 80 TFLOPS (HGX B200, 1000 W)          NVIDIA Blackwell datasheet
per-SM clock rates    FP32 128, FP16x2 256 (results), SFU 16,    CUDA C++ Programming Guide,
(cc 9.0 and 10.0)     int32 64, conversions 16                   "Arithmetic Instructions"
cvt to e4m3/e5m2      hardware on sm_89+ (x2 packed)             PTX ISA, cvt; clang builtins
cvt to e2m1, ue8m0    hardware on sm_100a only (x2 packed)       PTX ISA 8.6, cvt (Target ISA)
GPU launch            3e-6 s per kernel (estimate)               back-to-back launches: 2-5 us
CPU core (AVX2)       3.0 GHz, 2 FMA ports x 8 f32 / 4 f64 lanes Intel opt. manual; Agner Fog
CPU div / sqrt        VDIVPS y 5, VDIVPD y 8, VSQRTPS y 6,       Agner Fog, instruction tables
                      VSQRTPD y 9 cycles recip. throughput       (Skylake)
CPU F16C cvt          VCVTPH2PS / VCVTPS2PH y: 1 per cycle       Agner Fog (Skylake)
CPU DRAM per core     20e9 B/s                                   measured here: numpy copy,
                                                                 one thread, 20-25 GB/s
====================  =========================================  =============================

Matrix products are costed on the SIMT cores (K multiply-adds per output, each a rounded product
and a rounded sum, as the language defines them), not on tensor cores: the sound bound assumes
per-step rounding in the accumulation format, which tensor-core accumulation does not implement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..errors import GradeError
from ..ir import nodes as N
from ..ir.dims import Dim
from ..ir.formats import FORMATS, Format, get_format, promote, represents
from ..ir.nodes import Op, Value
from .fusion import HEAVY, Group, plan_fusion

__all__ = [
    "Target", "TARGETS", "get_target", "KernelTerms", "KernelCost", "CostBreakdown",
    "kernel_terms", "program_cost", "cost_op", "working_format", "edge_formats",
    "cost_table_markdown", "rates_table_markdown",
]

Mix = tuple[tuple[str, float], ...]  # (instruction class, instructions per element)


def _mix(**counts: float) -> Mix:
    return tuple(sorted((k, float(c)) for k, c in counts.items() if c))


def _add(*mixes: Mix) -> Mix:
    out: dict[str, float] = {}
    for m in mixes:
        for k, c in m:
            out[k] = out.get(k, 0.0) + c
    return tuple(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# sourced figures (see the module docstring for the table and docs/cost_model.md)
H200_DRAM = 4.8e12          # B/s, NVIDIA H200 datasheet (SXM)
H200_FP64_FLOPS = 34e12     # non-tensor, NVIDIA H200 datasheet
H200_FP32_FLOPS = 67e12     # non-tensor, NVIDIA H200 datasheet
B200_DRAM = 8e12            # B/s, NVIDIA Blackwell datasheet (HGX B200)
B200_FP64_FLOPS = 40e12     # NVIDIA Blackwell datasheet (HGX B200, 1000 W)
B200_FP32_FLOPS = 80e12     # NVIDIA Blackwell datasheet (HGX B200, 1000 W)
# results per clock per SM, CUDA C++ Programming Guide "Arithmetic Instructions" (cc 9.0, 10.0)
SM_RESULTS = {"f32": 128, "h2": 256, "sfu": 16, "int": 64, "cvt": 16}
GPU_LAUNCH = 3e-6           # s, estimate: back-to-back kernel launches cost 2-5 us
CPU_CLOCK = 3.0e9           # Hz, a generic AVX2 core (assumption)
CPU_DRAM = 20e9             # B/s per core, measured here (numpy copy, one thread: 20-25 GB/s)
CPU_LAUNCH = 1e-7           # s, estimate: a function call and loop set-up, no threads


def _gpu_rates(fp32_flops: float, fp64_flops: float) -> dict[str, float]:
    """Per-class results per second: datasheet FP32/FP64 peaks (FMA = 2 FLOP), the other
    classes in the CUDA guide's per-SM ratio to FP32."""
    f32 = fp32_flops / 2
    rates = {k: f32 * n / SM_RESULTS["f32"] for k, n in SM_RESULTS.items()}
    rates["f64"] = fp64_flops / 2
    return rates


def _cpu_rates() -> dict[str, float]:
    """One AVX2 core: 2 FMA ports x 8 f32 (4 f64) lanes; dividers and F16C per Agner Fog."""
    c = CPU_CLOCK
    return {"f32": 2 * 8 * c, "f64": 2 * 4 * c, "int": 2 * 8 * c, "cvt": 8 * c,
            "div32": 8 / 5 * c, "div64": 4 / 8 * c, "sqrt32": 8 / 6 * c, "sqrt64": 4 / 9 * c}


# instruction mixes per element, by operation class and host format (estimates of typical
# implementations: CUDA libdevice-style on GPUs, SLEEF/SVML-style vector math on the CPU)
_GPU_MIXES: dict[tuple[str, str], Mix] = {
    ("basic", "f32"): _mix(f32=1), ("basic", "f64"): _mix(f64=1),
    ("basic", "f16"): _mix(h2=1), ("basic", "bf16"): _mix(h2=1),
    ("div", "f32"): _mix(sfu=1, f32=6, int=1), ("div", "f64"): _mix(sfu=1, f64=9, int=2),
    ("sqrt", "f32"): _mix(sfu=1, f32=4, int=1), ("sqrt", "f64"): _mix(sfu=1, f64=8, int=2),
    ("rsqrt", "f32"): _mix(sfu=1, f32=5, int=1), ("rsqrt", "f64"): _mix(sfu=1, f64=9, int=2),
    ("exp", "f32"): _mix(sfu=1, f32=4, int=1), ("exp", "f64"): _mix(f64=20, int=4),
    ("log", "f32"): _mix(sfu=1, f32=6, int=2), ("log", "f64"): _mix(f64=24, int=4),
    ("tanh", "f32"): _mix(sfu=2, f32=8, int=2), ("tanh", "f64"): _mix(sfu=1, f64=30, int=4),
    ("sincos", "f32"): _mix(f32=12, int=4), ("sincos", "f64"): _mix(f64=30, int=6),
    ("floor", "f32"): _mix(cvt=1), ("floor", "f64"): _mix(cvt=1),
}
_CPU_MIXES: dict[tuple[str, str], Mix] = {
    ("basic", "f32"): _mix(f32=1), ("basic", "f64"): _mix(f64=1),
    ("div", "f32"): _mix(div32=1), ("div", "f64"): _mix(div64=1),
    ("sqrt", "f32"): _mix(sqrt32=1), ("sqrt", "f64"): _mix(sqrt64=1),
    ("rsqrt", "f32"): _mix(sqrt32=1, div32=1), ("rsqrt", "f64"): _mix(sqrt64=1, div64=1),
    ("exp", "f32"): _mix(f32=10, int=3), ("exp", "f64"): _mix(f64=16, int=4),
    ("log", "f32"): _mix(f32=12, int=4), ("log", "f64"): _mix(f64=20, int=5),
    ("tanh", "f32"): _mix(f32=12, div32=1, int=3), ("tanh", "f64"): _mix(f64=20, div64=1, int=4),
    ("sincos", "f32"): _mix(f32=14, int=4), ("sincos", "f64"): _mix(f64=24, int=5),
    ("floor", "f32"): _mix(f32=2), ("floor", "f64"): _mix(f64=2),
}

# direct conversions per element: (mix, hardware?)
Conv = tuple[Mix, bool]
_GPU_CONV: dict[tuple[str, str], Conv] = {
    ("f32", "f64"): (_mix(cvt=1), True), ("f64", "f32"): (_mix(cvt=1), True),
    ("f16", "f32"): (_mix(cvt=1), True), ("f32", "f16"): (_mix(cvt=0.5), True),  # f16x2 pack
    ("f16", "f64"): (_mix(cvt=1), True), ("f64", "f16"): (_mix(cvt=1), True),
    ("bf16", "f32"): (_mix(int=1), True), ("f32", "bf16"): (_mix(cvt=0.5), True),  # bf16x2 pack
    ("i32", "f32"): (_mix(cvt=1), True), ("f32", "i32"): (_mix(cvt=1), True),
    ("i32", "f64"): (_mix(cvt=1), True), ("f64", "i32"): (_mix(cvt=1), True),
    # sm_89+: cvt.rn.satfinite.{e4m3,e5m2}x2.{f32,f16x2} and cvt.rn.f16x2.{e4m3,e5m2}x2
    ("f32", "e4m3"): (_mix(cvt=0.5), True), ("f16", "e4m3"): (_mix(cvt=0.5), True),
    ("e4m3", "f16"): (_mix(cvt=0.5), True),
    ("f32", "e5m2"): (_mix(cvt=0.5), True), ("f16", "e5m2"): (_mix(cvt=0.5), True),
    ("e5m2", "f16"): (_mix(cvt=0.5), True),
}
_SM100_CONV: dict[tuple[str, str], Conv] = {
    # sm_100a: cvt.rn.satfinite.e2m1x2.f32, cvt.rn.f16x2.e2m1x2; ue8m0x2 only with .rz/.rp
    # (round-to-nearest adds an integer fix-up), cvt.rn.bf16x2.ue8m0x2
    ("f32", "e2m1"): (_mix(cvt=0.5), True), ("e2m1", "f16"): (_mix(cvt=0.5), True),
    ("f32", "e8m0"): (_mix(cvt=0.5, int=2), True), ("e8m0", "bf16"): (_mix(cvt=0.5), True),
}
_SM90_CONV: dict[tuple[str, str], Conv] = {
    # no e2m1 / ue8m0 conversion instructions: integer-op software conversions
    ("f32", "e2m1"): (_mix(int=12), False), ("e2m1", "f32"): (_mix(int=4), False),
    ("f32", "e8m0"): (_mix(int=4), False), ("e8m0", "f32"): (_mix(int=2), False),
}
_CPU_CONV: dict[tuple[str, str], Conv] = {
    ("f32", "f64"): (_mix(cvt=2), True), ("f64", "f32"): (_mix(cvt=2), True),  # 4 lanes
    ("f16", "f32"): (_mix(cvt=1), True), ("f32", "f16"): (_mix(cvt=1), True),  # F16C
    ("bf16", "f32"): (_mix(int=1), True), ("f32", "bf16"): (_mix(int=6), False),
    ("i32", "f32"): (_mix(cvt=1), True), ("f32", "i32"): (_mix(cvt=1), True),
    ("i32", "f64"): (_mix(cvt=2), True), ("f64", "i32"): (_mix(cvt=2), True),
    ("f32", "e4m3"): (_mix(int=14), False), ("e4m3", "f32"): (_mix(int=6), False),
    ("f32", "e5m2"): (_mix(int=14), False), ("e5m2", "f32"): (_mix(int=6), False),
    ("f32", "e2m1"): (_mix(int=12), False), ("e2m1", "f32"): (_mix(int=4), False),
    ("f32", "e8m0"): (_mix(int=4), False), ("e8m0", "f32"): (_mix(int=2), False),
}
_ROUND_TO_ODD = _mix(int=3)  # f64 -> f32 by round-to-odd, so a second rounding stays correct

# ---------------------------------------------------------------------------------------------
# operation classes
_CLASS: dict[str, str] = {
    **{o: "basic" for o in (Op.ADD, Op.SUB, Op.MUL, Op.FMA, Op.MIN, Op.MAX, Op.SUM, Op.MEAN,
                            Op.RMAX, Op.RMIN)},
    Op.MATMUL: "matmul", "reduce_sum_kahan": "kahan", "reduce_mean_kahan": "kahan",
    Op.DIV: "div", Op.MOD: "mod", Op.SQRT: "sqrt", Op.RSQRT: "rsqrt",
    Op.EXP: "exp", Op.EXP2: "exp", Op.LOG: "log", Op.LOG2: "log", Op.TANH: "tanh",
    Op.SIGMOID: "sigmoid", Op.SIN: "sincos", Op.COS: "sincos", Op.FLOOR: "floor",
    Op.CEIL: "floor", Op.NEG: "sign", Op.ABS: "sign",
    **{o: "select" for o in N.COMPARE | N.LOGIC | {Op.NOT, Op.WHERE}},
    Op.ROUND: "round", "round_sr": "philox", Op.RAND: "rand", Op.ARANGE: "arange",
    Op.TOPK_MASK: "topk",
    **{o: "free" for o in N.MOVEMENT | {Op.PARAM, Op.CONST, Op.DIM}},
}
_PHILOX = _mix(int=80)  # Philox4x32-10: 10 rounds of 2 wide multiplies (4 IMAD) and 4 XOR
_INT_OK = {"basic", "matmul", "kahan", "sign", "select", "floor", "div", "mod", "topk", "free",
           "round", "philox", "arange"}
_BOOL_OK = {"select", "free", "round", "philox", "topk"}


def _composite(cls: str) -> tuple[str, ...] | None:
    """Classes costed as a sum of others."""
    return {"sigmoid": ("exp", "div", "basic"), "mod": ("div", "floor", "basic"),
            "matmul": ("basic", "basic"), "kahan": ("basic",) * 4}.get(cls)


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Target:
    """One machine: memory bandwidth, launch overhead and per-class instruction throughputs."""

    name: str               # "cpu" | "sm_90" | "sm_100"
    description: str
    dram_bandwidth: float   # bytes / s
    launch_overhead: float  # s per kernel launch
    rates: Mapping[str, float]                  # instruction class -> results / s
    native_basic: frozenset[str]                # formats with native + - * fma min max
    mixes: Mapping[tuple[str, str], Mix]        # (class, f32|f64|f16|bf16) -> mix
    conversions: Mapping[tuple[str, str], Conv]  # direct conversion paths
    sources: tuple[str, ...] = ()
    _conv_cache: dict = field(default_factory=dict, repr=False)

    # -- memory -------------------------------------------------------------------------------
    def storage_bytes(self, fmt: Format) -> float:
        """Bytes per element in memory; e2m1 adds its NVFP4 block scale (1 e4m3 byte / 16)."""
        if fmt.kind == "bool":
            return 1.0
        if fmt.name == "e2m1":
            return fmt.bits / 8 + 1 / 16
        return fmt.bits / 8

    # -- arithmetic ---------------------------------------------------------------------------
    def _seconds(self, mix: Mix) -> float:
        return sum(c / self.rates[k] for k, c in mix)

    def native(self, op: str, fmt: Format) -> bool:
        """True if `op` in `fmt` runs as the hardware's own instructions (else emulated)."""
        cls = _op_class(op)
        if fmt.kind in ("bool", "int") or cls in ("free", "select", "sign", "topk", "philox",
                                                  "arange"):
            return self._plain_mix(cls, fmt) is not None
        if cls == "round":
            return self.convert_native(FORMATS["f32"], fmt)
        if cls == "rand":
            return fmt.name == "f32"
        if cls in ("basic", "matmul", "kahan"):
            return fmt.name in self.native_basic
        return fmt.name in ("f32", "f64")

    def op_seconds(self, op: str, fmt: Format) -> float | None:
        """Seconds per element of `op` (an ``Op`` name, or a :func:`cost_op` variant) computed
        in working format `fmt`, including the final rounding; None if excluded."""
        cls = _op_class(op)
        mix = self._plain_mix(cls, fmt)
        if mix is not None:
            return self._seconds(mix)
        if fmt.kind != "float":
            return None
        f32 = FORMATS["f32"]
        host = self._float_mix(cls, f32)
        decode = self.convert_seconds(fmt, f32)
        encode = self.convert_seconds(f32, fmt)
        return self._seconds(host) + _arity(op) * decode + encode

    def _plain_mix(self, cls: str, fmt: Format) -> Mix | None:
        """The mix when no emulation is involved; None if the format needs emulation or the
        operation is excluded in it."""
        if cls == "free" or cls == "round":
            return ()  # data movement is free; a rounding's conversion is paid on its edge
        if cls == "philox":
            return _PHILOX
        if cls == "topk":
            return _mix(int=3)  # per compared pair: compare, tie-break, count
        if fmt.kind == "bool":
            return _mix(int=1) if cls in _BOOL_OK else None
        if fmt.kind == "int":
            if cls not in _INT_OK:
                return None
            return _mix(int=20) if cls in ("div", "mod") else _mix(int=1)  # CUDA guide: ~20
        if cls in ("select", "sign"):
            return _mix(int=1)  # select / sign-bit operations work on any encoding
        if cls == "arange":
            return _add(_mix(int=1), self.conversions.get(("i32", "f32"), ((), True))[0])
        if cls == "rand":
            return _add(_PHILOX, _mix(cvt=1, f32=1)) if fmt.name == "f32" else None
        if cls in ("basic", "matmul", "kahan") and fmt.name not in self.native_basic:
            return None
        if cls not in ("basic", "matmul", "kahan") and fmt.name not in ("f32", "f64"):
            return None
        return self._float_mix(cls, fmt)

    def _float_mix(self, cls: str, fmt: Format) -> Mix:
        parts = _composite(cls)
        if parts is not None:
            return _add(*(self._float_mix(p, fmt) for p in parts))
        if cls == "rand":
            return _add(_PHILOX, _mix(cvt=1, f32=1))
        if cls in ("select", "sign"):
            return _mix(int=1)
        return self.mixes[(cls, fmt.name)]

    # -- conversions --------------------------------------------------------------------------
    def convert_seconds(self, src: Format, dst: Format) -> float:
        """Seconds per element to convert values of `src` into `dst` (0 when equal)."""
        return self._seconds(self._conversion(src, dst)[0])

    def convert_native(self, src: Format, dst: Format) -> bool:
        """True if the conversion uses conversion hardware only (no software rounding)."""
        return self._conversion(src, dst)[1]

    def _conversion(self, src: Format, dst: Format) -> Conv:
        key = (src.name, dst.name)
        hit = self._conv_cache.get(key)
        if hit is None:
            hit = self._conv_cache[key] = self._route(src, dst)
        return hit

    def _route(self, src: Format, dst: Format) -> Conv:
        """Cheapest path: exact (widening) steps, then one direct step into dst; a wider-than-f32
        source goes through f32 by round-to-odd so that the second rounding stays correct."""
        if src == dst:
            return (), True
        if src.kind == "bool" or dst.kind == "bool":
            return _mix(int=1), True
        best: Conv | None = None
        reach: dict[str, Conv] = {src.name: ((), True)}
        frontier = [src.name]
        while frontier:  # exact steps only (the graph has ten nodes)
            nxt = []
            for a in frontier:
                for (x, y), (m, hw) in self.conversions.items():
                    if x == a and y not in reach and represents(FORMATS[y], FORMATS[a]):
                        reach[y] = (_add(reach[a][0], m), reach[a][1] and hw)
                        nxt.append(y)
            frontier = nxt
        for mid, (m, hw) in reach.items():
            cand = (m, hw) if mid == dst.name else None
            step = self.conversions.get((mid, dst.name))
            if step is not None:
                cand = (_add(m, step[0]), hw and step[1])
            if cand is not None and (best is None
                                     or self._seconds(cand[0]) < self._seconds(best[0])):
                best = cand
        if best is not None:
            return best
        f32 = FORMATS["f32"]
        if src == f32 or dst == f32:
            raise AssertionError(f"no conversion path {src.name} -> {dst.name}")
        a, b = self._conversion(src, f32), self._conversion(f32, dst)
        lossy = not represents(f32, src)
        return _add(a[0], b[0], _ROUND_TO_ODD if lossy else ()), a[1] and b[1] and not lossy


def _arity(op: str) -> int:
    """Operands an emulated operation decodes (a reduction: its input and the accumulator)."""
    if op in (Op.FMA, Op.MATMUL):
        return 3
    if op in (Op.RAND, Op.ARANGE):
        return 0
    return 1 if op in N.UNARY or op in (Op.ROUND, "round_sr") else 2


def _op_class(op: str) -> str:
    try:
        return _CLASS[op]
    except KeyError:
        raise GradeError(f"the cost model has no cost for operation '{op}'") from None


def _gpu(name: str, description: str, dram: float, fp32: float, fp64: float,
         extra_conv: dict[tuple[str, str], Conv], sources: tuple[str, ...]) -> Target:
    return Target(name, description, dram, GPU_LAUNCH, _gpu_rates(fp32, fp64),
                  frozenset({"f64", "f32", "f16", "bf16"}), _GPU_MIXES,
                  {**_GPU_CONV, **extra_conv}, sources)


TARGETS: dict[str, Target] = {
    "cpu": Target("cpu", "one generic AVX2 x86 core (3.0 GHz, 2 FMA ports), f16/bf16/fp8 "
                         "arithmetic emulated in f32", CPU_DRAM, CPU_LAUNCH, _cpu_rates(),
                  frozenset({"f64", "f32"}), _CPU_MIXES, _CPU_CONV,
                  ("Agner Fog, Instruction tables (Skylake)",
                   "Intel 64 and IA-32 Architectures Optimization Reference Manual",
                   "measured here: numpy copy of 128 MiB f32, one thread, 20-25 GB/s")),
    "sm_90": _gpu("sm_90", "NVIDIA H200 SXM (Hopper, sm_90): HBM3e 4.8 TB/s, SIMT cores",
                  H200_DRAM, H200_FP32_FLOPS, H200_FP64_FLOPS, _SM90_CONV,
                  ("NVIDIA H200 Tensor Core GPU datasheet",
                   "NVIDIA H100 Tensor Core GPU Architecture whitepaper, table 3",
                   "CUDA C++ Programming Guide, Arithmetic Instructions", "PTX ISA, cvt")),
    "sm_100": _gpu("sm_100", "NVIDIA B200 (HGX, Blackwell, sm_100a): HBM3e 8 TB/s, SIMT cores",
                   B200_DRAM, B200_FP32_FLOPS, B200_FP64_FLOPS, _SM100_CONV,
                   ("NVIDIA Blackwell datasheet (HGX B200)",
                    "CUDA C++ Programming Guide, Arithmetic Instructions",
                    "PTX ISA 8.6, cvt (e2m1x2 / ue8m0x2 on sm_100a)")),
}


def get_target(name: str) -> Target:
    """A target by name; GradeError naming the known targets otherwise."""
    t = TARGETS.get(name) if isinstance(name, str) else None
    if t is None:
        raise GradeError(f"unknown target '{name}' (known targets: {', '.join(TARGETS)})")
    return t


# ---------------------------------------------------------------------------------------------
# how a value is costed (shared with the tuner so both sides agree)
def cost_op(v: Value) -> str:
    """The operation name to cost `v` by: its op, or a variant whose cost differs
    (stochastic rounding draws a Philox number; Kahan sums take four additions)."""
    if v.op == Op.ROUND and v.attrs[0] == "sr":
        return "round_sr"
    if v.op in (Op.SUM, Op.MEAN) and v.attrs[2] == "kahan":
        return v.op + "_kahan"
    return v.op


def working_format(v: Value) -> Format:
    """The format `v` is computed in: a matrix product's accumulator, a comparison's promoted
    operands, a top-k mask's input; otherwise its own result format."""
    if v.op == Op.MATMUL:
        return get_format(v.attrs[0])
    if v.op in N.COMPARE:
        return promote(v.srcs[0].fmt, v.srcs[1].fmt)
    if v.op == Op.TOPK_MASK:
        return v.srcs[0].fmt
    return v.fmt


def edge_formats(consumer: Value, operand: Value) -> tuple[Format, Format]:
    """(from, to) of the conversion an edge may pay; a self-edge is the final rounding of a
    matrix product from its accumulator into its result format."""
    if consumer is operand:
        return working_format(consumer), consumer.fmt
    return operand.fmt, working_format(consumer)


# ---------------------------------------------------------------------------------------------
# the format-independent terms of a fused program
@dataclass(frozen=True)
class KernelTerms:
    """One fused kernel (a fusion-plan group); element counts only, no formats."""

    index: int
    reads: tuple[tuple[Value, int], ...]    # params, array constants, other kernels' buffers
    writes: tuple[tuple[Value, int], ...]   # outputs and buffers used by later kernels
    ops: tuple[tuple[Value, int], ...]      # element-operations computed here (recomputation)
    edges: tuple[tuple[Value, Value, int], ...]  # (consumer, operand, elements)
    kind: str = ""                          # 'rowwise' | 'elementwise' | 'matmul' | 'topk'
    description: str = ""


class _Sizes:
    """Element counts with the function's sizes bound."""

    def __init__(self, dims: Mapping[str, int]):
        self.dims = dims
        self.cache: dict[Dim, int] = {}

    def dim(self, d: Dim) -> int:
        n = self.cache.get(d)
        if n is None:
            try:
                x = d.evaluate(self.dims)
            except KeyError as ex:
                raise GradeError(f"size {ex.args[0]} is not bound") from None
            if x.denominator != 1 or x < 0:
                raise GradeError(f"size {d} is {x} for the given sizes: not a whole number")
            n = self.cache[d] = int(x)
        return n

    def numel(self, v: Value) -> int:
        n = 1
        for d in v.shape:
            n *= self.dim(d)
        return n


def _check(fn: N.Function, dims: Mapping[str, int]) -> list[Value]:
    """All values of fn, after checking it is call-free and its sizes are bound and valid."""
    if not isinstance(dims, Mapping):
        raise GradeError("dims must map size names to integers, e.g. {'N': 1024}")
    for k, x in dims.items():
        if isinstance(x, bool) or not isinstance(x, int) or x < 0:
            raise GradeError(f"size {k}={x!r} must be a non-negative integer")
    order = N.toposort(fn.results)
    used: set[str] = set(fn.dims)
    for v in order:
        if v.op in (Op.CALL, Op.PROJ):
            raise GradeError(f"{fn.name}() calls {v.attrs[0] if v.op == Op.CALL else 'a function'}"
                             "; inline the calls first (pass module=...)")
        used |= {s for d in v.shape for s in d.symbols()}
        if v.op == Op.DIM:
            used |= v.attrs[0].symbols()
    missing = sorted(used - set(dims))
    if missing:
        raise GradeError(f"cost of {fn.name}() needs its sizes bound: "
                         + ", ".join(f"{m}=..." for m in missing))
    for c in fn.requires:
        if c.holds(dict(dims)) is False:
            raise GradeError(f"{fn.name}() requires {c.text}, which the given sizes violate")
    return order


def _producer(v: Value) -> Value:
    """The value whose format an operand carries (data movement keeps formats; concat
    promotes, so it is a producer itself)."""
    while v.op in N.MOVEMENT and v.op != Op.CONCAT:
        v = v.srcs[0]
    return v


def _unbroadcast(v: Value) -> Value:
    while v.op == Op.BROADCAST:
        v = v.srcs[0]
    return v


class _KernelBuilder:
    """Walks one fusion group the way the lowering evaluates it: each reduction's input in its
    own loop, the stores of one layout in one loop; cheap values are recomputed per loop."""

    def __init__(self, g: Group, size: _Sizes):
        self.g, self.size = g, size
        self.owned = set(g.heavies)
        self.reads: dict[Value, int] = {}
        self.ops: dict[Value, int] = {}
        self.edges: dict[tuple[Value, Value], int] = {}

    def op(self, v: Value, n: int) -> None:
        self.ops[v] = self.ops.get(v, 0) + n

    def edge(self, c: Value, operand: Value, n: int) -> None:
        p = _producer(operand)
        if p.op == Op.DIM or (p.op == Op.CONST and not p.shape):
            return  # compile-time constants are converted once, when the kernel is built
        key = (c, p)
        self.edges[key] = self.edges.get(key, 0) + n

    def build(self, names: dict[Value, str]) -> KernelTerms:
        numel = self.size.numel
        for h in self.g.heavies:
            phase: set[Value] = set()
            if h.op in N.REDUCE:
                src = h.srcs[0]
                self.op(h, numel(src))
                self.edge(h, src, numel(_unbroadcast(src)))
                self.walk(src, phase)
            elif h.op == Op.MATMUL:
                a, b = h.srcs
                self.op(h, numel(h) * self.size.dim(a.shape[-1]))
                for s in (a, b):
                    self.edge(h, s, numel(_unbroadcast(s)))
                    self.walk(s, phase)
                self.edges[(h, h)] = self.edges.get((h, h), 0) + numel(h)
            else:  # top-k mask: every element is ranked against its row
                src = h.srcs[0]
                axis = h.attrs[1] % len(src.shape)
                self.op(h, numel(h) * self.size.dim(src.shape[axis]))
                self.walk(src, phase)
        loops: dict[object, set[Value]] = {}
        for o, layout in self.g.stores:
            if o not in self.owned:
                self.walk(o, loops.setdefault(layout, set()))
        writes = tuple((o, numel(o)) for o, _ in self.g.stores)
        return KernelTerms(self.g.index, tuple(self.reads.items()), writes,
                           tuple(self.ops.items()),
                           tuple((c, p, n) for (c, p), n in self.edges.items()),
                           self.g.kind, self.g.describe(names))

    def walk(self, root: Value, phase: set[Value]) -> None:
        numel = self.size.numel
        stack = [root]
        while stack:
            x = stack.pop()
            if x in phase:
                continue
            phase.add(x)
            if x.op == Op.PARAM or (x.op == Op.CONST and x.shape) or (
                    x.op in HEAVY and x not in self.owned):
                self.reads.setdefault(x, numel(x))
                continue
            if x.op in (Op.CONST, Op.DIM) or x.op in HEAVY:
                continue  # scalar constants are immediates; owned heavies have their own loop
            stack.extend(x.srcs)
            if x.op in N.MOVEMENT and x.op != Op.CONCAT:
                continue
            n = numel(x)
            if x.op != Op.CONCAT:
                self.op(x, n)
            if x.op in N.COMPARE:
                continue  # compared exactly in the wider operand format, at integer-op cost
            for s in (x.srcs[1:] if x.op == Op.WHERE else x.srcs):
                self.edge(x, s, min(n, numel(_unbroadcast(s))))


def kernel_terms(fn: N.Function, dims: Mapping[str, int],
                 module: N.Module | None = None) -> list[KernelTerms]:
    """The format-independent cost terms of every fused kernel of `fn` (call-free, or give the
    `module` to inline its calls). Values are those of the fusion plan's function, which is
    `fn` itself unless nested max/min reductions were flattened."""
    if module is not None:
        from .inline import inline_calls

        fn = inline_calls(module, fn)
    _check(fn, dims)
    plan = plan_fusion(fn)
    size = _Sizes(dims)
    return [_KernelBuilder(g, size).build(plan.fn.names) for g in plan.groups]


# ---------------------------------------------------------------------------------------------
# evaluating the terms
@dataclass(frozen=True)
class KernelCost:
    index: int
    kind: str
    description: str
    memory_bytes: float
    memory_seconds: float
    compute_seconds: float
    launch_seconds: float

    @property
    def seconds(self) -> float:
        return self.launch_seconds + max(self.memory_seconds, self.compute_seconds)

    @property
    def bound(self) -> str:
        return "memory" if self.memory_seconds >= self.compute_seconds else "compute"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "kind": self.kind, "description": self.description,
                "bound": self.bound, "seconds": self.seconds, "memory_bytes": self.memory_bytes,
                "memory_seconds": self.memory_seconds, "compute_seconds": self.compute_seconds,
                "launch_seconds": self.launch_seconds}


@dataclass(frozen=True)
class CostBreakdown:
    """Estimated time of one function on one target, kernel by kernel."""

    function: str
    target: str
    dims: dict[str, int]
    kernels: tuple[KernelCost, ...]

    @property
    def total(self) -> float:
        """Seconds: the sum over kernels of launch + max(memory, compute)."""
        return sum(k.seconds for k in self.kernels)

    @property
    def memory_bytes(self) -> float:
        return sum(k.memory_bytes for k in self.kernels)

    def to_dict(self) -> dict[str, Any]:
        return {"function": self.function, "target": self.target, "dims": dict(self.dims),
                "seconds": self.total, "memory_bytes": self.memory_bytes,
                "kernels": [k.to_dict() for k in self.kernels]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _value_seconds(v: Value, target: Target) -> float:
    s = target.op_seconds(cost_op(v), working_format(v))
    if s is None:
        raise GradeError(f"target {target.name} cannot compute {v.op} in "
                         f"{working_format(v).name}")
    return s


def program_cost(fn: N.Function, dims: Mapping[str, int], target: Target,
                 module: N.Module | None = None) -> CostBreakdown:
    """The roofline estimate of `fn` with the formats it carries (see the module docstring)."""
    if isinstance(target, str):
        target = get_target(target)
    kernels = []
    for k in kernel_terms(fn, dims, module):
        nbytes = float(sum(n * target.storage_bytes(v.fmt) for v, n in k.reads + k.writes))
        compute = sum(n * _value_seconds(v, target) for v, n in k.ops)
        for c, o, n in k.edges:
            src, dst = edge_formats(c, o)
            if src != dst:
                compute += n * target.convert_seconds(src, dst)
        kernels.append(KernelCost(k.index, k.kind, k.description, nbytes,
                                  nbytes / target.dram_bandwidth, compute,
                                  target.launch_overhead))
    return CostBreakdown(fn.name, target.name, dict(dims), tuple(kernels))


# ---------------------------------------------------------------------------------------------
_TABLE_FORMATS = ("f64", "f32", "bf16", "f16", "e4m3", "e5m2", "e2m1")
_TABLE_OPS = (Op.ADD, Op.DIV, Op.EXP, Op.RSQRT)


def cost_table_markdown(targets: Iterable[Target] | None = None) -> str:
    """The derived per-element table (docs/cost_model.md embeds it; a test keeps them equal)."""
    lines = ["| target | format | bytes | " + " | ".join(f"{o} ps" for o in _TABLE_OPS)
             + " | to f32 ps | from f32 ps | native add |",
             "|---|---|---|" + "---|" * len(_TABLE_OPS) + "---|---|---|"]
    f32 = FORMATS["f32"]
    for t in targets or TARGETS.values():
        for name in _TABLE_FORMATS:
            f = FORMATS[name]
            ops = [t.op_seconds(o, f) for o in _TABLE_OPS]
            cells = [_ps(s) for s in ops] + [_ps(t.convert_seconds(f, f32)),
                                             _ps(t.convert_seconds(f32, f))]
            lines.append(f"| {t.name} | {name} | {_g(t.storage_bytes(f))} | "
                         + " | ".join(cells) + f" | {'yes' if t.native(Op.ADD, f) else 'no'} |")
    return "\n".join(lines)


_CLASSES = ("f64", "f32", "h2", "sfu", "int", "cvt", "div32", "div64", "sqrt32", "sqrt64")


def rates_table_markdown(targets: Iterable[Target] | None = None) -> str:
    """Per-target memory, launch and per-class throughputs (G results/s), as docs show them."""
    lines = ["| target | DRAM GB/s | launch us | " + " | ".join(_CLASSES) + " |",
             "|---|---|---|" + "---|" * len(_CLASSES)]
    for t in targets or TARGETS.values():
        cells = [_num(t.rates[c] / 1e9) if c in t.rates else "-" for c in _CLASSES]
        head = [t.name, _num(t.dram_bandwidth / 1e9), _num(t.launch_overhead * 1e6)]
        lines.append("| " + " | ".join(head + cells) + " |")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:.4g}" if x < 1e4 else f"{x:.0f}"


def _ps(s: float | None) -> str:
    return "excluded" if s is None else f"{s * 1e12:.4g}"


def _g(x: float) -> str:
    return f"{x:g}"
