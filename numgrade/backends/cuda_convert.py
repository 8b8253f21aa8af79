"""Hardware format conversions for the CUDA backend: which, where, and the proof they are exact.

The kernel IR has every rounding expanded into primitives (``kernels/legalize.py``). This module
finds, in a kernel's statements, the ``Let`` that holds ``legalize.round_to(x, fmt, mode, sat)``
(a *value*, f64) and the ``Let`` that holds ``legalize.encode`` of such a value (a storage
*code*), and gives the printer a helper call that computes the same bits with the GPU's
conversion instructions. The recognition rebuilds the expansion with legalize's own functions
and compares hash-consed closed forms, so it follows legalize wherever it goes; when it does not
match, the software expansion is printed, which is bit-exact by construction.

Each helper is ``rules(x) ? constant : hardware(x)``. The rules take NaN (by sign where the
reference tells them apart), infinities where they differ from the largest finite inputs, every
input from the point on where the reference gives the saturated or overflow result (found by
bisection over the f64 bit patterns on the reference, so the hardware never saturates), and for
e8m0 the non-positive inputs and those below 2**-126 (whose f32 would be subnormal). Their
results are the reference's own (``formats.round_array``, then ``to_storage`` for codes). The
instructions thus only see finite inputs strictly inside the range, where each is a correctly
rounded conversion (PTX ISA, "cvt", docs.nvidia.com/cuda/parallel-thread-execution/
#data-movement-and-conversion-instructions-cvt: ``.rn`` round to nearest even, ``.rz`` towards
zero, ``.rp`` towards +inf, on the destination format's grid with its subnormals), which is
numgrade's definition: ``round_array`` rounds the exact value once, on the same grid, with
gradual underflow and signed zeros. Decoding a code back to a value (f8/f4 -> f16, e8m0 ->
bf16, then -> f32) is exact. The CUDA headers' host code for the same functions (their
software model of the instructions) runs every helper on the CPU in the tests
(``CudaHostBackend(emulate=arch)``).

Recognition is limited to inputs it can evaluate again at the replaced ``Let``: an input that
names a shadowed variable is left alone, one that names a mutable (``Decl``) variable gets only
its value helper (at the rounding's own place), not a code helper further down.

Hardware by arch (``hardware_specs``):

* sm_89 and later (sm_90a, sm_100a): e4m3, e5m2 RNE through ``cuda_fp8.h``
  ``__nv_cvt_float_to_fp8(.., __NV_SATFINITE, ..)`` = ``cvt.rn.satfinite.e4m3x2.f32`` (the
  header uses the instruction only with ``__NV_SATFINITE``; ``__NV_NOSAT`` is its software
  path, so nosat overflow is a rule), values back through ``cvt.rn.f16x2.e4m3x2`` (exact).
* sm_90 and later: bf16 RNE from f64, ``__double2bfloat16`` = ``cvt.rn.bf16.f64``; every arch:
  f16 RNE from f64, ``__double2half`` = ``cvt.rn.f16.f64``; f32 RNE with saturation,
  ``cvt.rn.f32.f64`` plus rules. Directed f16/bf16/f32 modes stay software.
* sm_100a family (``__CUDA_ARCH_FAMILY_SPECIFIC__`` 100..129, i.e. ``sm_1XYa``): e2m1 RNE,
  ``__nv_cvt_float_to_fp4`` = ``cvt.rn.satfinite.e2m1x2.f32`` (e2m1 saturates in every mode, as
  numgrade's rne does; its NaN, a zero of the opposite sign, is a rule); e8m0 rz/rd/ru,
  ``__nv_cvt_float_to_e8m0`` = ``cvt.rz/rp.satfinite.ue8m0x2.f32`` (rd = rz on the positive
  inputs the instruction sees), values back through ``cvt.rn.bf16x2.ue8m0x2`` and
  ``cvt.rn.f16x2.e2m1x2``. e8m0 RNE (ml_dtypes' rule for the lowest binade) stays software.
* Stochastic rounding, i32 and the directed fp8/e2m1 modes are always software.

The instructions take f32. An f64 input that is exactly an f32 (a cast from f32) goes in
directly; any other f64 would round twice, so it first goes through ``ng_rto_f32``: round to
f32 *to odd* (truncate, then set the last bit if anything was lost). Rounding to odd at
precision 24 followed by RNE at precision <= 22 equals one RNE (Boldo and Melquiond, "When
double rounding is odd", 2005); e4m3 needs 4 bits, e2m1 2, and the f32 grid is finer than both
formats' subnormal grids, so the sticky bit always lands below their rounding point. For the
directed e8m0 modes the f64 is rounded to f32 in the same direction first:
``rz(rz32(x)) = rz(x)`` and ``ru(ru32(x)) = ru(x)`` because the e8m0 grid is part of the f32
grid on the inputs the instruction sees (``[2**-126, 2**128)``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

import numpy as np

from ..ir.formats import Format, get_format, round_array, to_storage
from ..kernels import legalize as L
from ..kernels.round_f32 import round_f32_to
from ..kernels.ir import float_bits, var_names
from ..kernels.ir import (Assign, Decl, Kernel, KExpr, Let, Loop, Reduce, Stmt, Store,
                          walk_exprs)

MODES_OP = {"rne": "rint", "rz": "trunc", "ru": "ceil", "rd": "floor"}


# ---------------------------------------------------------------------------------------------
# what each arch has
def arch_number(arch: str) -> tuple[int, bool]:
    """(compute capability as an integer, family-specific ``a``/``f`` suffix): sm_100a -> 100."""
    name = arch.removeprefix("sm_").removeprefix("compute_")
    digits = name.rstrip("af")
    if not digits.isdigit():
        raise ValueError(f"not a CUDA arch: {arch!r}")
    return int(digits), name != digits


@dataclass(frozen=True)
class Spec:
    """One rounding the hardware may do: target format, mode, saturation."""

    fmt: str
    mode: str
    sat: bool

    @property
    def format(self) -> Format:
        return get_format(self.fmt)

    @property
    def key(self) -> str:
        return f"{self.fmt}_{self.mode}_{'s' if self.sat else 'n'}"


@lru_cache(maxsize=None)
def hardware_specs(arch: str | None) -> tuple[Spec, ...]:
    """The roundings ``arch`` converts in hardware (none for ``None``: the software path)."""
    if arch is None:
        return ()
    cc, family = arch_number(arch)
    out = [Spec("f16", "rne", s) for s in (False, True)] + [Spec("f32", "rne", True)]
    if cc >= 89:
        out += [Spec(f, "rne", s) for f in ("e4m3", "e5m2") for s in (False, True)]
    if cc >= 90:
        out += [Spec("bf16", "rne", s) for s in (False, True)]
    if family and 100 <= cc < 130:  # cuda_fp8.h's condition for the short-type cvt forms
        out += [Spec("e2m1", "rne", s) for s in (False, True)]
        out += [Spec("e8m0", m, s) for m in ("rz", "rd", "ru") for s in (False, True)]
    return tuple(sp for sp in out if rules_for(sp) is not None)


# ---------------------------------------------------------------------------------------------
# the rules: inputs whose result is a constant, read off the reference
@dataclass(frozen=True)
class Rule:
    """``if cond(x): result``; cond is ("nan"|"nan-"|"ge"|"gt"|"le"|"lt", bound)."""

    cond: str
    bound: float
    code: int
    value: float


def _f64(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def _bits(x: float) -> int:
    return float_bits(x, "f64")


def ref_value(sp: Spec, x: float) -> float:
    with np.errstate(all="ignore"):
        return float(round_array(np.array([x]), sp.format, sp.mode, sp.sat)[0])


def ref_code(sp: Spec, x: float) -> int:
    """The storage code the reference gives ``x`` (the value's bits for f32)."""
    fmt = sp.format
    v = round_array(np.array([x]), fmt, sp.mode, sp.sat)
    st = np.ascontiguousarray(to_storage(v, fmt))
    return int(st.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[st.itemsize])[0])


def _same(sp: Spec, xs: Iterable[float]) -> tuple[int, int] | None:
    """(code, bits of the value) when every x gives the same result, else None."""
    got = {(ref_code(sp, x), _bits(ref_value(sp, x))) for x in xs}
    return got.pop() if len(got) == 1 else None


def _top_start(sp: Spec, sign: float) -> float | None:
    """The least |x| (finite, of the given sign) from which on every finite input of that sign
    rounds like the largest one: to +-max (saturation) or to the overflow value (inf, NaN).
    Rounding is monotone, so this is one bisection over the bit patterns."""
    top = _bits(ref_value(sp, sign * 1.7976931348623157e308))

    def at_top(b: int) -> bool:
        return _bits(ref_value(sp, sign * _f64(b))) == top

    lo, hi = _bits(sp.format.min_normal), 0x7FEFFFFFFFFFFFFF
    if at_top(lo):
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if at_top(mid) else (mid, hi)
    return _f64(hi)


@lru_cache(maxsize=None)
def rules_for(sp: Spec) -> tuple[Rule, ...] | None:
    """The ordered rules of a spec; None when its specials are not constant (no hardware)."""
    fmt = sp.format
    if fmt.kind != "float" or sp.mode == "sr":
        return None
    nan, inf = float("nan"), float("inf")
    rules: list[Rule] = []

    def rule(cond: str, bound: float, got: tuple[int, int]) -> None:
        rules.append(Rule(cond, bound, got[0], _f64(got[1])))

    def add(cond: str, bound: float, xs: Sequence[float]) -> bool:
        got = _same(sp, xs)
        if got is not None:
            rule(cond, bound, got)
        return got is not None

    pos, neg = _same(sp, [nan]), _same(sp, [-nan])
    if pos is None or neg is None:
        return None
    if pos != neg:
        rule("nan-", 0.0, neg)
    rule("nan", 0.0, pos)
    t_pos = _top_start(sp, 1.0)
    if t_pos is None:
        return None
    top = _same(sp, [t_pos, 1.7976931348623157e308])
    if top is None:
        return None
    if _same(sp, [inf]) != top:
        add("ge", inf, [inf])
    rule("ge", t_pos, top)
    if fmt.signed:
        t_neg = _top_start(sp, -1.0)
        if t_neg is None:
            return None
        bottom = _same(sp, [-t_neg, -1.7976931348623157e308])
        if bottom is None:
            return None
        if _same(sp, [-inf]) != bottom:
            add("le", -inf, [-inf])
        rule("le", -t_neg, bottom)
    else:  # e8m0: x <= 0 is invalid; below 2**-126 the f32 input would be subnormal
        mn = fmt.min_normal
        low = _f64(_bits(mn) + 1)
        if not (add("le", 0.0, [0.0, -0.0, -1.0, -inf])
                and add("le", mn, [5e-324, mn * 0.75, mn])
                and add("lt", 2 * mn, [low, 2 * mn - 2.0 ** -160])):
            return None
    return tuple(rules)


# ---------------------------------------------------------------------------------------------
# finding the roundings and encodings in a kernel
@dataclass(frozen=True)
class Conv:
    """A Let to print as a hardware helper: ``kind`` "value" (f64) or "code" (storage)."""

    spec: Spec
    kind: str
    x: KExpr  # the input as written where the rounding is (in scope at the Let)
    f32_input: bool  # x is a cast from f32 (passed as the f32 itself)

    @property
    def helper(self) -> str:
        return f"ng_cv_{self.spec.key}_{self.kind}_{'f' if self.f32_input else 'd'}"


def _subst(e: KExpr, env: dict[str, KExpr], memo: dict[KExpr, KExpr]) -> KExpr:
    """``e`` with every variable bound in ``env`` replaced by its closed form."""
    hit = memo.get(e)
    if hit is not None:
        return hit
    if e.op == "var":
        out = env.get(e.attrs[0], e)
    elif not e.args:
        out = e
    else:
        args = tuple(_subst(a, env, memo) for a in e.args)
        out = e if args == e.args else KExpr(e.op, args, e.attrs, e.dtype)
    memo[e] = out
    return out


def _close_block(stmts: Sequence[Stmt], env: dict[str, KExpr]) -> None:
    memo: dict[KExpr, KExpr] = {}
    for s in stmts:
        if isinstance(s, Let):
            env[s.name] = _subst(s.value, env, memo)


def _walk(stmts: Sequence[Stmt]) -> Iterable[Stmt]:
    for s in stmts:
        yield s
        if isinstance(s, (Loop, Reduce)):
            yield from _walk(s.body)


class _Probe:
    """Closed forms of legalize's expansions for a given input (cached per input and spec)."""

    def __init__(self) -> None:
        self.rounds: dict[tuple[KExpr, Spec], KExpr] = {}
        self.codes: dict[tuple[KExpr, Spec], tuple[KExpr, ...]] = {}

    @staticmethod
    def _closed(build: Callable[[L.Block], KExpr]) -> KExpr:
        blk = L.Block(prefix="#probe")  # '#' keeps the probe's names apart from the kernel's
        out = build(blk)
        env: dict[str, KExpr] = {}
        _close_block(blk.stmts, env)
        return _subst(out, env, {})

    def rounding(self, x: KExpr, sp: Spec) -> KExpr | None:
        """The closed form of the rounding of x: legalize.round_to of an f64, or
        round_f32.round_f32_to of an f32 (None where that has no expansion)."""
        key = (x, sp)
        if key not in self.rounds:
            if x.dtype == "f32":
                self.rounds[key] = self._closed(
                    lambda b: round_f32_to(b, x, sp.format, sp.mode, sp.sat) or x)
            else:
                self.rounds[key] = self._closed(
                    lambda b: L.round_to(b, x, sp.format, sp.mode, sp.sat))
        return self.rounds[key]

    def encodings(self, r: KExpr, sp: Spec) -> tuple[KExpr, ...]:
        """encode of the rounded value as it reaches a store: directly or via its f32 carrier."""
        key = (r, sp)
        if key not in self.codes:
            fmt = sp.format
            if fmt.name in ("f32", "f64"):
                self.codes[key] = ()
            else:
                self.codes[key] = tuple(self._closed(lambda b, v=v: L.encode(b, v, fmt))
                                        for v in (r, r.cast("f32").cast("f64")))
        return self.codes[key]


def _constants(kernel: Kernel) -> tuple[set[float], set[str]]:
    vals: set[float] = set()
    ops: set[str] = set()
    seen: set[KExpr] = set()
    stack = list(walk_exprs(kernel.body))
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        ops.add(e.op)
        if e.op == "const" and e.dtype == "f64":
            vals.add(e.attrs[0])
        stack.extend(e.args)
    return vals, ops


def _plausible(specs: Sequence[Spec], kernel: Kernel) -> list[Spec]:
    """Specs whose expansion could be in the kernel (its grid constants and rounding op)."""
    vals, ops = _constants(kernel)
    out = []
    for sp in specs:
        f = sp.format
        marks = {2.0 ** f.emin, 2.0 ** f.emax, 2.0 ** (1 - f.precision)}
        if MODES_OP[sp.mode] in ops and marks <= vals:
            out.append(sp)
        elif "bitcast" in ops and f.precision < 24:   # an f32 rounding (round_f32_to)
            out.append(sp)
    return out


def find_conversions(kernel: Kernel, specs: Sequence[Spec]) -> dict[str, Conv]:
    """Let name -> the hardware helper that computes the same bits, for ``specs``."""
    specs = _plausible(specs, kernel)
    if not specs:
        return {}
    counts: dict[str, int] = {}
    for s in _walk(kernel.body):
        for name in _bound_names(s):
            counts[name] = counts.get(name, 0) + 1
    env: dict[str, KExpr] = {}
    memo: dict[KExpr, KExpr] = {}
    for s in _walk(kernel.body):  # names bound once only: a shadowed name stays opaque
        if isinstance(s, Let) and counts[s.name] == 1:
            env[s.name] = _subst(s.value, env, memo)
    # an input naming a shadowed variable is left alone (equal closed forms would not mean
    # equal values); one naming a mutable (Decl) variable gets its value helper only, at the
    # rounding's own place (its Lets are consecutive), never a code helper further down, which
    # would evaluate the input again after an Assign may have changed it
    shadowed = {n for n, c in counts.items() if c > 1}
    mutable = {s.name for s in _walk(kernel.body) if isinstance(s, Decl)}
    out: dict[str, Conv] = {}
    _scan(kernel.body, env, specs, _Probe(), {}, out, shadowed, mutable)
    return out


def _var_names(e: KExpr) -> set[str]:
    return var_names([e])


def _bound_names(s: Stmt) -> list[str]:
    if isinstance(s, (Let, Decl)):
        return [s.name]
    if isinstance(s, Loop):
        return [s.var]
    if isinstance(s, Reduce):
        return [s.name, s.var]
    return []


def _scan(stmts: Sequence[Stmt], env: dict[str, KExpr], specs: Sequence[Spec], probe: _Probe,
          codes: dict[KExpr, tuple[Spec, KExpr, bool]], out: dict[str, Conv],
          shadowed: set[str], mutable: set[str]) -> None:
    """One block: roundings whose input is written in this block, encodings in it or below."""
    codes = dict(codes)  # encodings expected from roundings visible here
    rounds: dict[KExpr, tuple[Spec, KExpr, bool, bool]] = {}  # .., whether codes may follow
    for s in stmts:
        if isinstance(s, Let) and s.name in env:
            closed = env[s.name]
            found = rounds.get(closed)
            if found is not None:
                sp, x, f32_in, stable = found
                out[s.name] = Conv(sp, "value", x, f32_in)
                for c in probe.encodings(closed, sp) if stable else ():
                    codes.setdefault(c, (sp, x, f32_in))
            hit = codes.get(closed)
            if hit is not None and s.name not in out:
                sp, x, f32_in = hit
                out[s.name] = Conv(sp, "code", x, f32_in)
            v = s.value
            # the first step of a rounding: the bits of an f64 (legalize.round_to) or of an
            # f32 (round_f32.round_f32_to)
            if v.op == "bitcast" and (v.dtype, v.args[0].dtype) in (("u64", "f64"),
                                                                    ("u32", "f32")):
                x_local = v.args[0]
                x_closed = _subst(x_local, env, {})
                names = _var_names(x_closed)
                if names & shadowed:
                    continue
                f32_in = x_closed.dtype == "f32" or \
                    (x_closed.op == "cast" and x_closed.args[0].dtype == "f32")
                stable = not names & mutable
                for sp in specs:
                    rounds.setdefault(probe.rounding(x_closed, sp), (sp, x_local, f32_in, stable))
        elif isinstance(s, (Loop, Reduce)):
            _scan(s.body, env, specs, probe, codes, out, shadowed, mutable)


def live_names(kernel: Kernel, convs: dict[str, Conv]) -> set[str]:
    """Names a statement still needs once ``convs`` replace their Lets (the rest are dead)."""
    deps: dict[str, set[str]] = {}
    roots: set[str] = set()

    names = _var_names
    for s in _walk(kernel.body):
        if isinstance(s, Let):
            src = convs[s.name].x if s.name in convs else s.value
            deps.setdefault(s.name, set()).update(names(src))
        elif isinstance(s, (Decl, Assign)):
            roots |= names(s.init if isinstance(s, Decl) else s.value)
        elif isinstance(s, Store):
            roots |= names(s.index) | names(s.value)
        elif isinstance(s, Loop):
            roots |= names(s.extent)
        elif isinstance(s, Reduce):
            for e in (s.extent, s.value, s.combine, s.init, s.leaf):
                if e is not None:
                    roots |= names(e)
    for g in kernel.grid:
        roots |= names(g)
    live, stack = set(), list(roots)
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(deps.get(n, ()))
    return live


# ---------------------------------------------------------------------------------------------
# printing the helpers
CODE_CTYPE = {1: "unsigned char", 2: "unsigned short"}
# the header each format's helpers call into (cuda_fp4.h and fp8.h's e8m0 API are CUDA 12.8+,
# needed only where the sm_100a-family conversions are used)
HEADERS = {"f16": "cuda_fp16.h", "bf16": "cuda_bf16.h", "e4m3": "cuda_fp8.h",
           "e5m2": "cuda_fp8.h", "e8m0": "cuda_fp8.h", "e2m1": "cuda_fp4.h"}


def includes(convs: Iterable[Conv]) -> list[str]:
    """The CUDA headers a set of helpers needs, in a stable order."""
    return sorted({HEADERS[c.spec.fmt] for c in convs if c.spec.fmt in HEADERS})


def code_ctype(fmt: Format) -> str:
    return CODE_CTYPE[2 if fmt.bits == 16 else 1]


def _f32_input(sp: Spec, x: str, f32_input: bool) -> str:
    """The f32 operand of the instruction for the f64 (or exact f32) ``x``."""
    if f32_input:
        return x
    if sp.fmt == "e8m0":
        return f"ng_f32_{'ru' if sp.mode == 'ru' else 'rz'}({x})"
    return f"ng_rto_f32({x})"


def _hardware(sp: Spec, kind: str, x: str, f32_input: bool) -> tuple[list[str], str]:
    """(statements, expression) of the unchecked hardware result for finite in-range ``x``."""
    xd = f"(double){x}" if f32_input else x
    if sp.fmt == "f32":
        return [], f"(double)(float){xd}"
    if sp.fmt in ("bf16", "f16"):
        if sp.fmt == "bf16":
            stmt = f"const __nv_bfloat16 h = __double2bfloat16({xd});"
            val, raw = "__bfloat162float(h)", "((__nv_bfloat16_raw)h).x"
        else:
            stmt = f"const __half h = __double2half({xd});"
            val, raw = "__half2float(h)", "((__half_raw)h).x"
        return [stmt], (f"(double){val}" if kind == "value" else raw)
    xf = _f32_input(sp, x, f32_input)
    if sp.fmt in ("e4m3", "e5m2"):
        interp = "__NV_E4M3" if sp.fmt == "e4m3" else "__NV_E5M2"
        code = f"(unsigned char)__nv_cvt_float_to_fp8({xf}, __NV_SATFINITE, {interp})"
        val = f"(double)__half2float(__half(__nv_cvt_fp8_to_halfraw(c, {interp})))"
    elif sp.fmt == "e2m1":
        code = f"(unsigned char)__nv_cvt_float_to_fp4({xf}, __NV_E2M1, cudaRoundNearest)"
        val = "(double)__half2float(__half(__nv_cvt_fp4_to_halfraw(c, __NV_E2M1)))"
    elif sp.fmt == "e8m0":
        rnd = "cudaRoundPosInf" if sp.mode == "ru" else "cudaRoundZero"
        code = f"(unsigned char)__nv_cvt_float_to_e8m0({xf}, __NV_SATFINITE, {rnd})"
        val = "(double)__bfloat162float(__nv_bfloat16(__nv_cvt_e8m0_to_bf16raw(c)))"
    else:  # pragma: no cover - hardware_specs lists no other format
        raise ValueError(sp)
    if kind == "code":
        return [], code
    return [f"const unsigned char c = {code};"], val


def _cond(rule: Rule, x: str, f32_input: bool, lit: Callable[[float, str], str]) -> str:
    if rule.cond == "nan":
        return f"{x} != {x}"
    if rule.cond == "nan-":
        sign = f"ng_f32_as_i32({x}) < 0" if f32_input else f"ng_f64_as_i64({x}) < 0"
        return f"({x} != {x} && {sign})"
    op = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}[rule.cond]
    return f"{x} {op} {lit(rule.bound, 'f64')}"


def helper_source(conv: Conv, fn: str, lit: Callable[[float, str], str]) -> list[str]:
    """The C of one helper; ``fn`` is the function qualifier, ``lit`` prints exact literals."""
    sp, fmt = conv.spec, conv.spec.format
    rules = rules_for(sp)
    assert rules is not None
    ret = "double" if conv.kind == "value" else code_ctype(fmt)
    arg = "float" if conv.f32_input else "double"
    stmts, hw = _hardware(sp, conv.kind, "x", conv.f32_input)
    what = (f"{sp.fmt} {sp.mode}{' saturating' if sp.sat else ''} "
            f"{'value' if conv.kind == 'value' else 'storage code'} of an "
            f"{'f32' if conv.f32_input else 'f64'}")
    out = [f"/* {what}: hardware inside the range, the reference's constants outside */",
           f"{fn} {ret} {conv.helper}({arg} x)", "{"]
    out += [f"    {s}" for s in stmts]
    out.append(f"    const {ret} hw = {hw};")
    chain = []
    for rl in rules:
        res = lit(rl.value, "f64") if conv.kind == "value" else f"({ret}){rl.code}u"
        chain.append(f"{_cond(rl, 'x', conv.f32_input, lit)} ? {res}")
    out.append("    return " + "\n        : ".join(chain + ["hw;"]))
    out.append("}")
    return out


def support_source(fn: str) -> list[str]:
    """Helpers the conversions share: f64 -> f32 to odd, toward zero and upward (portable C)."""
    return [
        "/* f64 -> f32 rounded to odd: truncate, then set the last bit when anything was lost */",
        f"{fn} float ng_f32_rz(double x)",
        "{",
        "    const float f = (float)x;  /* nearest; step back toward zero if it went past x */",
        "    const bool past = (double)f > x ? x > 0.0 : ((double)f < x && x < 0.0);",
        "    return past ? ng_u32_as_f32(ng_f32_as_u32(f) - 1u) : f;",
        "}",
        f"{fn} float ng_f32_ru(double x)  /* x > 0 only */",
        "{",
        "    const float f = (float)x;",
        "    return (double)f < x ? ng_u32_as_f32(ng_f32_as_u32(f) + 1u) : f;",
        "}",
        f"{fn} float ng_rto_f32(double x)",
        "{",
        "    const float f = ng_f32_rz(x);",
        "    return (double)f != x ? ng_u32_as_f32(ng_f32_as_u32(f) | 1u) : f;",
        "}",
    ]
