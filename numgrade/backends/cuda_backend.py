"""CUDA C backend: prints a KernelProgram as CUDA C, builds PTX/cubin with nvcc, launches it.

Why it looks the way it does:

* The lowering has already expanded every rounding into primitives, so the printer only maps
  primitives to C. Every operation is printed so that C's rules cannot change its meaning:
  signed integer arithmetic goes through the unsigned type (wraps instead of undefined
  behaviour), 8/16-bit integers are computed in 32 bits and narrowed, integer ``div``/``mod``
  go through a zero-guarded unsigned helper (its operands are non-negative; the guard makes a
  hoisted untaken ``select`` arm harmless), bit casts use the CUDA intrinsics or ``memcpy``.
* Floats are plain C ``+ - * /``: nvcc runs with ``--fmad=false -prec-div=true -prec-sqrt=true
  -ftz=false`` so each is one IEEE operation (the PTX then carries ``.rn`` on every ``mul``/
  ``add``, which ptxas never contracts); literals are hexadecimal floats (exact) or bit
  patterns for inf/NaN.
* Each kernel becomes a ``__device__`` body function of one grid point plus an
  ``extern "C" __global__`` wrapper (linear 64-bit thread id, early return past the grid). The
  same body printed for the host (``target="host"``, a C function looping over the grid,
  ``gcc -O2 -ffp-contract=off -fno-fast-math``) is how the printing is checked bit for bit on
  machines without a GPU (:class:`CudaHostBackend`).
* Reductions are exact: ``seq`` (and ``any``) is a left fold, ``pairwise`` the binary-counter
  stack (64 values and heights in local arrays).
* The math functions (``exp`` ...) go through one out-of-line wrapper each (``ng_exp``):
  CUDA's libdevice on the GPU (whose polynomials use ``fma`` on purpose, so the PTX check for
  contraction looks at kernels, not at these), glibc's libm on the host. Neither is numpy's, so
  they may differ from the reference in the last place; ``exact_sum_order`` is unaffected.
* Several programs can share one translation unit (:func:`emit_bundle`, ``build_many``): nvcc's
  start-up and libdevice dominate small programs, so tests compile a whole stdlib in one go.
* Format conversions are printed per arch (``emit_*(..., arch)``): where ``cuda_convert`` finds
  a rounding or a storage encoding that the arch converts in hardware bit-identically (fp8 on
  sm_89+, bf16 on sm_90+, f16 and saturating f32 everywhere, e2m1 and e8m0 on the sm_100a
  family; that module's docstring has the table and the proofs), the ``Let`` holding it becomes
  a call of a helper built on ``cuda_fp8.h``/``cuda_fp4.h``/``cuda_bf16.h``/``cuda_fp16.h``,
  and the software expansion it replaces is dropped as dead. Everything else stays the primitive
  expansion, bit-exact by construction. ``target="host"`` is always the software path;
  ``target="host-emu"`` prints an arch's CUDA version as host C++ (g++ against the CUDA
  headers, whose host code stands in for the instructions), so that the printing around the
  instructions is checked on the CPU too (``CudaHostBackend(emulate=arch)``).
* Launching is ``cuda_launch``: the driver API through ctypes, device-resident buffers.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..kernels.ir import (FLOAT_DTYPES, Assign, Decl, Kernel, KernelProgram, KExpr, Let, Loop,
                         Reduce, ScalarParam, Stmt, Store)
from ..errors import GradeError
from ..kernels.ir import IDENT_RE as _IDENT
from ..kernels.ir import float_bits, wrap_int
from . import compile_cache
from . import cuda_convert as CV
from .cuda_launch import CudaError, CudaLauncher, Driver, HostLauncher

ARCHS = ("sm_90a", "sm_100a")
NVCC_FLAGS = ("--fmad=false", "-prec-div=true", "-prec-sqrt=true", "-ftz=false")
GCC_FLAGS = ("-O2", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno", "-std=c11",
             "-shared", "-fPIC")

C_TYPES = {"f64": "double", "f32": "float", "i64": "long long", "i32": "int",
           "u64": "unsigned long long", "u32": "unsigned int", "u16": "unsigned short",
           "u8": "unsigned char", "bool": "bool"}
INT_BITS = {"i64": 64, "i32": 32, "u64": 64, "u32": 32, "u16": 16, "u8": 8}
# the type integer arithmetic of each dtype is done in (wraps, no promotion to signed int)
WRAP = {"i64": "u64", "u64": "u64", "i32": "u32", "u32": "u32", "u16": "u32", "u8": "u32"}

# names a user identifier must not take verbatim in the printed C: keywords of C and C++, CUDA
# built-ins, the library functions and macros the printed code uses, and our own prefix
_RESERVED = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
co_return co_yield decltype default delete do double dynamic_cast else enum explicit export
extern false float for friend goto if inline int long mutable namespace new noexcept not not_eq
nullptr operator or or_eq private protected public register reinterpret_cast requires restrict
return short signed sizeof static static_assert static_cast struct switch template this
thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
wchar_t while xor xor_eq _Alignas _Alignof _Atomic _Bool _Complex _Generic _Imaginary
_Noreturn _Static_assert _Thread_local
threadIdx blockIdx blockDim gridDim warpSize main memcpy errno assert NULL INFINITY NAN
HUGE_VAL HUGE_VALF isnan isinf isfinite signbit fpclassify
exp log tanh sin cos exp2 log2 sqrt floor ceil trunc rint fabs
expf logf tanhf sinf cosf exp2f log2f sqrtf floorf ceilf truncf rintf fabsf
""".split())


def c_name(name: str) -> str:
    """The C identifier for a program identifier; refuses anything that is not one.

    Valid names that C would misread (keywords, library names, ``__x``, our ``ng_`` prefix) are
    kept readable but moved to the ``ng_u_`` prefix, which no verbatim name can take.
    """
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    if (name in _RESERVED or name.startswith("ng_") or name.startswith("__")
            or re.match(r"_[A-Z]", name)):
        return "ng_u_" + name
    return name


# ---------------------------------------------------------------------------------------------
# literals
def c_literal(value: int | float | bool, dtype: str) -> str:
    """An exact C literal of ``value`` in ``dtype`` (hex floats, suffixed integers)."""
    if dtype == "bool":
        return "true" if value else "false"
    if dtype in FLOAT_DTYPES:
        v = float(value)
        if dtype == "f32":
            with np.errstate(over="ignore"):  # beyond the f32 range: inf, as the IR says
                v = float(np.float32(v))  # a const of f32 holds the f32 nearest to its value
        if math.isfinite(v):
            text = v.hex() + ("f" if dtype == "f32" else "")
            return f"({text})" if text.startswith("-") else text
        if dtype == "f64":
            bits = float_bits(v, "f64")
            return f"ng_f64_from_bits(0x{bits:016X}ULL)"
        bits = float_bits(v, "f32")
        return f"ng_f32_from_bits(0x{bits:08X}u)"
    if dtype not in INT_BITS or isinstance(value, float):
        raise ValueError(f"bad literal {value!r} of type {dtype}")
    bits = INT_BITS[dtype]
    v = wrap_int(value, dtype)  # wrapped to the dtype, as the kernel IR defines
    signed = dtype[0] == "i"
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if dtype == "u64":
        return f"{v}ULL"
    if dtype in ("u32", "u16", "u8"):
        return f"{v}u" if dtype == "u32" else f"(({C_TYPES[dtype]}){v}u)"
    suffix = "LL" if dtype == "i64" else ""
    if v == lo:
        return f"(-{hi}{suffix} - 1{suffix})"
    return f"{v}{suffix}" if v >= 0 else f"(-{-v}{suffix})"


# ---------------------------------------------------------------------------------------------
# expressions
_MATH = ("exp", "log", "tanh", "sin", "cos", "exp2", "log2")
_FLOAT_FUN = {"floor": "floor", "ceil": "ceil", "trunc": "trunc", "rint": "rint",
              "sqrt": "sqrt", "abs": "fabs"}
_C_OPS = {"add": "+", "sub": "-", "mul": "*", "div": "/", "lt": "<", "le": "<=", "gt": ">",
          "ge": ">=", "eq": "==", "ne": "!=", "and": "&&", "or": "||", "band": "&", "bor": "|",
          "bxor": "^", "shl": "<<", "shr": ">>"}
_BITCAST = {("f64", "i64"): "ng_f64_as_i64", ("i64", "f64"): "ng_i64_as_f64",
            ("f64", "u64"): "ng_f64_as_u64", ("u64", "f64"): "ng_u64_as_f64",
            ("f32", "i32"): "ng_f32_as_i32", ("i32", "f32"): "ng_i32_as_f32",
            ("f32", "u32"): "ng_f32_as_u32", ("u32", "f32"): "ng_u32_as_f32"}
MAX_INLINE_DEPTH = 24  # deeper subexpressions get a temporary (readability, compiler limits)


class ExprPrinter:
    """Prints KExprs as C, hoisting shared or deep subexpressions into ``const`` temporaries.

    ``names`` maps a program variable name to its C spelling in the current scope;
    ``helpers`` collects the integer helpers the prelude must define.
    """

    def __init__(self, helpers: set[str], names: Callable[[str], str]):
        self.helpers = helpers
        self.names = names
        self.counter = 0

    def hoist(self, roots: Sequence[KExpr], emit: Callable[[str], None]) -> list[str]:
        """Emit the temporaries of ``roots`` (through ``emit``) and return their C text."""
        uses: dict[KExpr, int] = {}
        order: list[KExpr] = []  # post-order over the DAG: arguments before their users
        expanded: set[KExpr] = set()
        for root in roots:
            uses[root] = uses.get(root, 0) + 1
            stack = [(root, False)]
            while stack:
                e, done = stack.pop()
                if done:
                    order.append(e)
                    continue
                if e in expanded:
                    continue
                expanded.add(e)
                stack.append((e, True))
                for a in reversed(e.args):
                    uses[a] = uses.get(a, 0) + 1
                    if a not in expanded:
                        stack.append((a, False))
        text: dict[KExpr, str] = {}
        depth: dict[KExpr, int] = {}
        for e in order:
            s = self._node(e, [text[a] for a in e.args])
            d = 1 + max((depth[a] for a in e.args), default=0)
            if e.op not in ("const", "var") and (uses[e] > 1 or d > MAX_INLINE_DEPTH):
                t = f"ng_t{self.counter}"
                self.counter += 1
                emit(f"const {C_TYPES[e.dtype]} {t} = {_strip(s)};")
                s, d = t, 0
            text[e], depth[e] = s, d
        return [_strip(text[r]) for r in roots]

    def _node(self, e: KExpr, a: list[str]) -> str:
        op, t = e.op, e.dtype
        if op == "const":
            return c_literal(e.attrs[0], t)
        if op == "var":
            return self.names(e.attrs[0])
        if op == "load":
            return f"{self.names(e.attrs[0])}[{_strip(a[0])}]"
        if op == "select":
            return f"({a[0]} ? {a[1]} : {a[2]})"
        if op == "cast":
            return self._cast(e.args[0].dtype, t, a[0])
        if op == "bitcast":
            src = e.args[0].dtype
            if src == t:
                return a[0]
            if (src, t) in _BITCAST:
                return f"{_BITCAST[src, t]}({_strip(a[0])})"
            if src in INT_BITS and t in INT_BITS and INT_BITS[src] == INT_BITS[t]:
                return f"(({C_TYPES[t]}){a[0]})"
            raise ValueError(f"bitcast {src} -> {t}")
        if op in _MATH:
            if t == "f32":   # the fast contract: libdevice's / libm's single precision
                return f"{op}f({_strip(a[0])})"
            if t != "f64":
                raise ValueError(f"{op} on {t} (math ops are f64 and f32 only)")
            self.helpers.add(f"ng_{op}")
            return f"ng_{op}({_strip(a[0])})"
        if t in FLOAT_DTYPES:
            return self._float(op, t, a)
        if op in ("lt", "le", "gt", "ge", "eq", "ne", "and", "or"):
            return f"({a[0]} {_C_OPS[op]} {a[1]})"
        if op == "not":
            return f"(!{a[0]})"
        if t not in INT_BITS:
            raise ValueError(f"{op} of {t}")
        return self._int(op, t, a)

    def _float(self, op: str, t: str, a: list[str]) -> str:
        f = "f" if t == "f32" else ""
        if op in ("add", "sub", "mul", "div"):
            return f"({a[0]} {_C_OPS[op]} {a[1]})"
        if op == "neg":
            return f"(-{a[0]})"
        if op in _FLOAT_FUN:
            return f"{_FLOAT_FUN[op]}{f}({_strip(a[0])})"
        raise ValueError(f"{op} of {t}")

    def _int(self, op: str, t: str, a: list[str]) -> str:
        ct, w = C_TYPES[t], C_TYPES[WRAP[t]]
        same = WRAP[t] == t  # u32/u64: C arithmetic already wraps in the type itself
        if op in ("add", "sub", "mul", "band", "bor", "bxor"):
            if same:
                return f"({a[0]} {_C_OPS[op]} {a[1]})"
            return f"(({ct})(({w}){a[0]} {_C_OPS[op]} ({w}){a[1]}))"
        if op == "shl":
            return f"(({ct})(({w}){a[0]} << {a[1]}))"
        if op == "shr":  # arithmetic for signed (gcc/nvcc), logical for unsigned
            return f"({a[0]} >> {a[1]})" if t[0] == "i" or same else f"(({ct})({a[0]} >> {a[1]}))"
        if op in ("div", "mod"):
            name = f"ng_{op}_{t}"
            self.helpers.add(name)
            return f"{name}({_strip(a[0])}, {_strip(a[1])})"
        if op == "neg":
            return f"(({ct})(({w})0 - ({w}){a[0]}))"
        if op == "abs":
            if t[0] == "u":
                return a[0]
            name = f"ng_abs_{t}"
            self.helpers.add(name)
            return f"{name}({_strip(a[0])})"
        raise ValueError(f"{op} of {t}")

    @staticmethod
    def _cast(src: str, dst: str, a: str) -> str:
        if src == dst:
            return a
        if dst == "bool":
            zero = "0.0" if src in FLOAT_DTYPES else "0"
            return f"({a} != {zero})"
        return f"(({C_TYPES[dst]}){a})"


def _paren(s: str) -> str:
    """``s`` safe as an operand: names and plain literals as they are, the rest in parentheses."""
    return s if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|[0-9][0-9A-Za-z]*", s) else f"({s})"


def _strip(s: str) -> str:
    """Drop one pair of outer parentheses when they enclose the whole text."""
    if not (s.startswith("(") and s.endswith(")")):
        return s
    depth = 0
    for i, ch in enumerate(s):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(s) - 1:
            return s
    inner = s[1:-1]
    # a cast "(T)x" must keep its parentheses when it stands alone
    return s if re.match(r"\([A-Za-z ]+\)", inner) or inner.startswith("-") else inner


# ---------------------------------------------------------------------------------------------
# helpers printed into the prelude
def _prelude(target: str, helpers: set[str], convs: Sequence[CV.Conv] = ()) -> list[str]:
    fn = "__device__ __forceinline__" if target == "cuda" else "static inline"
    out = ["/* generated by numgrade: primitive operations only; build with --fmad=false */"]
    if target != "cuda":
        out += ["#include <math.h>", "#include <stdbool.h>", "#include <string.h>"]
    # hardware conversions: CUDA's headers (their host code in the emulation)
    out += [f"#include <{h}>" for h in CV.includes(convs)]
    out.append("")
    pairs = [("f64", "i64", "__double_as_longlong", "__longlong_as_double"),
             ("f32", "i32", "__float_as_int", "__int_as_float")]
    for f, i, to_i, to_f in pairs:
        ft, it, ut = C_TYPES[f], C_TYPES[i], C_TYPES["u" + i[1:]]
        if target == "cuda":
            out.append(f"{fn} {it} ng_{f}_as_{i}({ft} x) {{ return {to_i}(x); }}")
            out.append(f"{fn} {ft} ng_{i}_as_{f}({it} x) {{ return {to_f}(x); }}")
        else:
            out.append(f"{fn} {it} ng_{f}_as_{i}({ft} x) {{ {it} r; memcpy(&r, &x, sizeof r); "
                       f"return r; }}")
            out.append(f"{fn} {ft} ng_{i}_as_{f}({it} x) {{ {ft} r; memcpy(&r, &x, sizeof r); "
                       f"return r; }}")
        out.append(f"{fn} {ut} ng_{f}_as_u{i[1:]}({ft} x) {{ return ({ut})ng_{f}_as_{i}(x); }}")
        out.append(f"{fn} {ft} ng_u{i[1:]}_as_{f}({ut} x) {{ return ng_{i}_as_{f}(({it})x); }}")
        out.append(f"{fn} {ft} ng_{f}_from_bits({ut} x) {{ return ng_{i}_as_{f}(({it})x); }}")
    for h in sorted(helpers):
        if h[3:] in _MATH:  # one out-of-line copy of each libm/libdevice function
            attr = 'extern "C" __device__ __noinline__' if target == "cuda" else "static inline"
            out.append(f"{attr} double {h}(double x) {{ return {h[3:]}(x); }}")
            continue
        _, op, t = h.split("_")
        ct, wt = C_TYPES[t], C_TYPES[WRAP[t]]
        if op in ("div", "mod"):
            sym = "/" if op == "div" else "%"
            out.append(f"/* {op} of non-negative {t}; 0 for a zero divisor (an untaken arm) */")
            out.append(f"{fn} {ct} {h}({ct} a, {ct} b) {{ return b == 0 ? 0 : "
                       f"({ct})(({wt})a {sym} ({wt})b); }}")
        else:  # abs of a signed type, wrapping at the minimum
            out.append(f"{fn} {ct} {h}({ct} a) {{ return a < 0 ? ({ct})(({wt})0 - ({wt})a) : a; }}")
    if convs:
        out += CV.support_source(fn)
        for conv in convs:
            out += CV.helper_source(conv, fn, c_literal)
    out.append("")
    return out


# ---------------------------------------------------------------------------------------------
# statements and kernels
class _KernelPrinter:
    """Prints one kernel: its body function and its CUDA or host entry point."""

    def __init__(self, program: KernelProgram, kernel: Kernel, helpers: set[str],
                 convs: dict[str, CV.Conv] | None = None):
        self.program, self.kernel = program, kernel
        self.convs = convs or {}  # Let name -> the hardware helper that replaces its value
        self.live = CV.live_names(kernel, self.convs) if self.convs else None
        self.lines: list[str] = []
        self.indent = 1
        self.scopes: list[dict[str, str]] = [{}]
        self.ex = ExprPrinter(helpers, self.lookup)
        self.counter = 0

    # --- names ----------------------------------------------------------------------------
    def bind(self, name: str) -> str:
        self.scopes[-1][name] = c_name(name)
        return self.scopes[-1][name]

    def lookup(self, name: str) -> str:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        raise ValueError(f"kernel {self.kernel.name}: unbound variable {name!r}")

    def fresh(self, stem: str) -> str:
        self.counter += 1
        return f"ng_{stem}{self.counter}"

    def emit(self, line: str) -> None:
        self.lines.append("    " * self.indent + line)

    def exprs(self, *roots: KExpr) -> list[str]:
        return self.ex.hoist(roots, self.emit)

    def open(self, header: str = "") -> None:
        self.emit(f"{header} {{" if header else "{")
        self.indent += 1
        self.scopes.append({})

    def close(self) -> None:
        self.scopes.pop()
        self.indent -= 1
        self.emit("}")

    # --- the kernel -----------------------------------------------------------------------
    def params(self) -> list[tuple[str, str, str]]:
        """(kind, program name, C declaration) of each argument, in launch order."""
        k = self.kernel
        stored = {s.buffer for s in _walk_stmts(k.body) if isinstance(s, Store)}
        out = []
        for b in k.buffers:
            decl = self.program.buffers[b]
            const = "" if b in stored else "const "
            out.append(("buffer", b, f"{const}{C_TYPES[decl.storage]}* {c_name(b)}"))
        scalars = list(k.scalars)
        known = {p.name for p in scalars}
        for g in k.grid:  # a grid extent naming a size the kernel does not list still travels
            if g.op == "var" and g.attrs[0] not in known:
                scalars.append(ScalarParam(g.attrs[0], "i64"))
                known.add(g.attrs[0])
        for p in scalars:
            out.append(("scalar", p.name, f"{C_TYPES[p.dtype]} {c_name(p.name)}"))
        return out

    def print(self, target: str, prefix: str = ""
              ) -> tuple[list[str], list[tuple[str, str, str]], str]:
        """The kernel's C text, its launch arguments and its symbol."""
        k = self.kernel
        kname = prefix + c_name(k.name)
        params = self.params()
        for _, name, _ in params:
            self.bind(name)
        for g in k.grid:
            if g.dtype != "i64" or g.op not in ("const", "var"):
                raise ValueError(f"kernel {k.name}: grid extents are i64 consts or size params")
        self.scopes.append({})
        if k.grid_vars:
            self.emit("long long ng_rest = ng_pid;")
        n = len(k.grid_vars)
        extents = [_paren(e) for e in self.exprs(*k.grid)]
        for i in range(n - 1, -1, -1):
            v = self.bind(k.grid_vars[i])
            if i == 0:
                self.emit(f"const long long {v} = ng_rest;")
            else:
                self.emit(f"const long long {v} = ng_rest % {extents[i]};")
                self.emit(f"ng_rest /= {extents[i]};")
        self.stmts(k.body)
        body = self.lines
        decl = ", ".join(p[2] for p in params)
        call = ", ".join(c_name(p[1]) for p in params)
        fn = "__device__ __forceinline__" if target == "cuda" else "static inline"
        total = " * ".join(extents) or "1"
        text = []
        if k.note:
            text.append(f"/* {k.name}: {_comment(k.note)} */")
        text.append(f"{fn} void ng_body_{kname}({decl}{', ' if decl else ''}long long ng_pid)")
        text.append("{")
        text += body
        text.append("}")
        text.append("")
        args = f"{call}{', ' if call else ''}ng_pid"
        if target == "cuda":
            text.append(f'extern "C" __global__ void {kname}({decl})')
            text.append("{")
            text.append("    const long long ng_pid = (long long)blockIdx.x * blockDim.x + "
                        "threadIdx.x;")
            text.append(f"    if (ng_pid >= {total}) return;")
            text.append(f"    ng_body_{kname}({args});")
        else:
            extern = 'extern "C" ' if target == "host-emu" else ""
            text.append(f"{extern}void {kname}({decl or 'void'})")
            text.append("{")
            text.append(f"    const long long ng_total = {total};")
            text.append("    for (long long ng_pid = 0; ng_pid < ng_total; ++ng_pid)")
            text.append(f"        ng_body_{kname}({args});")
        text.append("}")
        text.append("")
        return text, params, kname

    # --- statements -----------------------------------------------------------------------
    def stmts(self, body: Sequence[Stmt]) -> None:
        for s in body:
            if isinstance(s, Let):
                if self.live is not None and s.name not in self.live:
                    continue  # only a replaced software conversion used it
                conv = self.convs.get(s.name)
                if conv is not None:
                    x = conv.x
                    if conv.f32_input and x.op == "cast" and x.args[0].dtype == "f32":
                        x = x.args[0]  # the f32 itself, not its widening
                    (v,) = self.exprs(x)
                    if conv.f32_input and x.dtype != "f32":
                        v = f"(float){_paren(v)}"  # exact: the value is an f32
                    v = f"{conv.helper}({_strip(v)})"
                else:
                    (v,) = self.exprs(s.value)
                self.emit(f"const {C_TYPES[s.value.dtype]} {self.bind(s.name)} = {v};")
            elif isinstance(s, Decl):
                (v,) = self.exprs(s.init)
                self.emit(f"{C_TYPES[s.init.dtype]} {self.bind(s.name)} = {v};")
            elif isinstance(s, Assign):
                (v,) = self.exprs(s.value)
                self.emit(f"{self.lookup(s.name)} = {v};")
            elif isinstance(s, Store):
                self.store(s)
            elif isinstance(s, Loop):
                if s.kind not in ("parallel", "serial"):
                    raise ValueError(f"loop kind {s.kind!r}")
                n = _paren(self.exprs(s.extent)[0])
                v = c_name(s.var)
                self.open(f"for (long long {v} = 0; {v} < {n}; ++{v})")
                self.bind(s.var)
                self.stmts(s.body)
                self.close()
            elif isinstance(s, Reduce):
                self.reduce(s)
            else:
                raise TypeError(f"unknown statement {s!r}")

    def store(self, s: Store) -> None:
        decl = self.program.buffers.get(s.buffer)
        if decl is None or s.buffer not in self.kernel.buffers:
            raise ValueError(f"kernel {self.kernel.name}: store to unknown buffer {s.buffer!r}")
        idx, val = self.exprs(s.index, s.value)
        if s.value.dtype != decl.storage:
            val = ExprPrinter._cast(s.value.dtype, decl.storage, f"({val})")
        self.emit(f"{self.lookup(s.buffer)}[{idx}] = {_strip(val)};")

    def combine(self, r: Reduce, dst: str, a: str, b: str, header: str = "") -> None:
        """``dst = combine(a, b)`` in a block binding ``acc_a``/``acc_b``."""
        t = C_TYPES[r.dtype]
        self.open(header)
        self.emit(f"const {t} {self.bind('acc_a')} = {a};")
        self.emit(f"const {t} {self.bind('acc_b')} = {b};")
        (c,) = self.exprs(r.combine)
        self.emit(f"{dst} = {c};")
        self.close()

    def leaf(self, r: Reduce, dst: str) -> None:
        """Run the body, then ``dst = leaf(value)``, in the current (loop) scope."""
        self.stmts(r.body)
        (v,) = self.exprs(r.value)
        if r.leaf is None:
            self.emit(f"{dst} = {v};")
            return
        self.open()
        self.emit(f"const {C_TYPES[r.value.dtype]} {self.bind('acc_b')} = {v};")
        (x,) = self.exprs(r.leaf)
        self.emit(f"{dst} = {x};")
        self.close()

    def reduce(self, r: Reduce) -> None:
        if r.order not in ("seq", "pairwise", "any"):
            raise ValueError(f"reduce order {r.order!r}")
        element = r.leaf.dtype if r.leaf is not None else r.value.dtype
        if element != r.dtype or r.init.dtype != r.dtype:
            raise ValueError(f"reduce {r.name}: element/init/combine dtypes differ")
        t = C_TYPES[r.dtype]
        n = _paren(self.exprs(r.extent)[0])
        res = c_name(r.name)
        self.emit(f"/* {r.name} = {r.kind} over {r.var} < {_comment(n)}, {r.order} order */")
        (init,) = self.exprs(r.init)
        self.emit(f"{t} {res} = {init};")
        i = c_name(r.var)
        x = self.fresh("x")
        if r.order in ("seq", "any"):
            self.open(f"for (long long {i} = 0; {i} < {n}; ++{i})")
            self.bind(r.var)
            self.emit(f"{t} {x};")
            self.leaf(r, x)
            self.emit(f"if ({i} == 0) {res} = {x};")
            self.combine(r, res, res, x, header="else")
            self.close()
            self.bind(r.name)
            return
        val, ht, sp = self.fresh("stack"), self.fresh("height"), self.fresh("sp")
        self.emit(f"{t} {val}[64];")
        self.emit(f"unsigned char {ht}[64];")
        self.emit(f"int {sp} = 0;")
        self.open(f"for (long long {i} = 0; {i} < {n}; ++{i})")
        self.bind(r.var)
        self.emit(f"{t} {x};")
        self.leaf(r, x)
        self.emit(f"{val}[{sp}] = {x};")
        self.emit(f"{ht}[{sp}] = 0;")
        self.emit(f"++{sp};")
        self.open(f"while ({sp} >= 2 && {ht}[{sp} - 1] == {ht}[{sp} - 2])")
        self.combine(r, f"{val}[{sp} - 2]", f"{val}[{sp} - 2]", f"{val}[{sp} - 1]")
        self.emit(f"{ht}[{sp} - 2] += 1;")
        self.emit(f"--{sp};")
        self.close()
        self.close()
        self.open(f"while ({sp} >= 2)")
        self.combine(r, f"{val}[{sp} - 2]", f"{val}[{sp} - 2]", f"{val}[{sp} - 1]")
        self.emit(f"--{sp};")
        self.close()
        self.emit(f"if ({sp} == 1) {res} = {val}[0];")
        self.bind(r.name)


def _walk_stmts(stmts: Sequence[Stmt]):
    for s in stmts:
        yield s
        if isinstance(s, (Loop, Reduce)):
            yield from _walk_stmts(s.body)


def _comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")


@dataclass
class Emitted:
    """A printed program: its source and, per kernel, the C name and launch arguments."""

    source: str
    kernels: list[tuple[str, list[tuple[str, str, str]]]]


def emit_program(program: KernelProgram, target: str = "cuda", arch: str = "sm_90a",
                 hardware: bool = True) -> Emitted:
    """Print every kernel of ``program`` for ``target`` ("cuda", "host" or "host-emu")."""
    source, (kernels,) = emit_bundle([program], target, arch, hardware=hardware)
    return Emitted(source, kernels)


TARGETS = ("cuda", "host", "host-emu")


def emit_bundle(programs: Sequence[KernelProgram], target: str = "cuda", arch: str = "sm_90a",
                prefixes: Sequence[str] | None = None, hardware: bool = True
                ) -> tuple[str, list[list[tuple[str, list[tuple[str, str, str]]]]]]:
    """Several programs in one translation unit (one compiler run), one prelude.

    ``prefixes`` (default ``p0_``, ``p1_`` ... when there are several programs) keep the kernel
    symbols of different programs apart. Returns the source and, per program, each kernel's
    symbol and launch arguments. ``target="cuda"`` uses ``arch``'s hardware conversions
    (``cuda_convert``) unless ``hardware`` is false; ``"host"`` is plain C, always the software
    path; ``"host-emu"`` is the CUDA print of ``arch`` as host C++, the conversion instructions
    run by the CUDA headers' own host code (a CPU check of everything around them).
    """
    if target not in TARGETS:
        raise ValueError(f"target {target!r}")
    specs = CV.hardware_specs(arch) if hardware and target != "host" else ()
    convs: dict[str, CV.Conv] = {}
    if prefixes is None:
        prefixes = [""] if len(programs) == 1 else [f"p{n}_" for n in range(len(programs))]
    helpers: set[str] = set()
    parts: list[str] = []
    out = []
    for program, prefix in zip(programs, prefixes, strict=True):
        if prefix and not _IDENT.match(prefix):
            raise ValueError(f"not an identifier prefix: {prefix!r}")
        parts.append(f"/* ---- program {_comment(program.name)} ---- */")
        kernels = []
        for k in program.kernels:
            found = CV.find_conversions(k, specs) if specs else {}
            for c in found.values():
                convs.setdefault(c.helper, c)
            text, params, symbol = _KernelPrinter(program, k, helpers, found).print(target,
                                                                                  prefix)
            parts += text
            kernels.append((symbol, params))
        out.append(kernels)
    head = _prelude(target, helpers, [convs[h] for h in sorted(convs)])
    head.insert(1, f"/* target {target}" + (f" {arch}" if target != "host" else "") + " */")
    return "\n".join(head + parts), out


# ---------------------------------------------------------------------------------------------
# compiling
def cache_root() -> Path:
    return compile_cache.cache_root("cuda")


_TOOL_VERSIONS: dict[str, str] = {}


def _tool_version(tool: str) -> str:
    if tool not in _TOOL_VERSIONS:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
        _TOOL_VERSIONS[tool] = out.stdout
    return _TOOL_VERSIONS[tool]


def _run(cmd: list[str], cwd: str) -> None:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr}{p.stdout}")


_cached = compile_cache.cached


def nvcc_compile(source: str, arch: str, cache: Path | None = None, cubin: bool = True
                 ) -> tuple[str, bytes]:
    """(PTX text, cubin bytes) of a CUDA source for ``arch``; the cubin is built from the PTX
    (``cubin=False``: PTX only, and empty bytes)."""
    cache = cache or cache_root()

    def make(tmp: Path) -> None:
        (tmp / "program.cu").write_text(source)
        _run(["nvcc", "-ptx", f"-arch={arch}", *NVCC_FLAGS, "program.cu", "-o", "program.ptx"],
             str(tmp))
        if cubin:
            _run(["nvcc", "-cubin", f"-arch={arch}", *NVCC_FLAGS, "program.ptx", "-o",
                  "program.cubin"], str(tmp))

    outputs = ["program.ptx", "program.cubin"] if cubin else ["program.ptx"]
    d = _cached([source, arch, *NVCC_FLAGS, _tool_version("nvcc")], outputs, cache, make)
    return (d / "program.ptx").read_text(), (d / "program.cubin").read_bytes() if cubin else b""


def nvcc_compile_archs(source: str | dict[str, str], archs: Sequence[str] = ARCHS,
                       cache: Path | None = None, cubin: bool = True
                       ) -> dict[str, tuple[str, bytes]]:
    """:func:`nvcc_compile` for several archs at once (concurrent nvcc processes); ``source``
    is one text for all, or one per arch (each arch printed with its own conversions)."""
    results: dict[str, tuple[str, bytes]] = {}
    errors: list[BaseException] = []

    def one(arch: str) -> None:
        try:
            text = source if isinstance(source, str) else source[arch]
            results[arch] = nvcc_compile(text, arch, cache, cubin)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    _tool_version("nvcc")
    threads = [threading.Thread(target=one, args=(a,)) for a in archs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {a: results[a] for a in archs}


@lru_cache(maxsize=None)
def cuda_include_dir() -> Path | None:
    """The include folder nvcc itself uses (so the emulation reads the same headers as the
    device build), else CUDA_HOME's or CUDA_PATH's."""
    dirs = []
    if shutil.which("nvcc"):
        p = subprocess.run(["nvcc", "--dryrun", "-E", "-x", "cu", os.devnull],
                           capture_output=True, text=True)
        m = re.search(r'^#\$ INCLUDES="-I([^"]+)"', p.stdout + p.stderr, re.M)
        if m:
            dirs.append(Path(m.group(1).strip()))
    dirs += [Path(r) / "include" for r in (os.environ.get("CUDA_HOME"),
                                           os.environ.get("CUDA_PATH")) if r]
    return next((d for d in dirs if (d / "cuda_fp8.h").exists()), None)


GXX_FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno",
             "-shared", "-fPIC", "-w")


def gxx_compile(source: str, cache: Path | None = None) -> Path:
    """A shared library of a ``host-emu`` source: C++ against the CUDA headers' host code."""
    cache = cache or cache_root()
    inc = cuda_include_dir()
    if inc is None:
        raise RuntimeError("the CUDA headers (cuda_fp8.h) are not found")

    def make(tmp: Path) -> None:
        (tmp / "program.cpp").write_text(source)
        _run(["g++", *GXX_FLAGS, f"-I{inc}", "program.cpp", "-o", "program.so", "-lm"],
             str(tmp))

    key = [source, *GXX_FLAGS, str(inc), _tool_version("g++")]
    return _cached(key, ["program.so"], cache, make) / "program.so"


def gcc_compile(source: str, cache: Path | None = None) -> Path:
    """A shared library of a host-C source (cached by source hash)."""
    cache = cache or cache_root()

    def make(tmp: Path) -> None:
        (tmp / "program.c").write_text(source)
        _run(["gcc", *GCC_FLAGS, "program.c", "-o", "program.so", "-lm"], str(tmp))

    return _cached([source, *GCC_FLAGS, _tool_version("gcc")], ["program.so"], cache, make) \
        / "program.so"


# ---------------------------------------------------------------------------------------------
# the backends
class CudaBackend:
    """CUDA C through nvcc; launches on the first CUDA device via the driver API."""

    name = "cuda"
    exact_sum_order = True

    def __init__(self, cache: Path | None = None):
        self.cache = cache

    def available(self) -> tuple[bool, str]:
        if shutil.which("nvcc") is None:
            return False, "nvcc is not on PATH"
        try:
            Driver.get()
        except (OSError, CudaError) as e:
            return False, f"no usable CUDA device: {e}"
        return True, ""

    def emit(self, program: KernelProgram, arch: str = "sm_90a") -> str:
        return emit_program(program, "cuda", arch).source

    def emit_host(self, program: KernelProgram) -> str:
        """The same kernels as plain C functions looping over their grid (for CPU checks)."""
        return emit_program(program, "host").source

    def compile(self, program: KernelProgram, arch: str = "sm_90a") -> bytes:
        """The cubin of the program for ``arch`` (cached by source hash)."""
        return nvcc_compile(self.emit(program, arch), arch, self.cache)[1]

    def ptx(self, program: KernelProgram, arch: str = "sm_90a") -> str:
        return nvcc_compile(self.emit(program, arch), arch, self.cache)[0]

    def build(self, program: KernelProgram) -> CudaLauncher:
        return self.build_many([program])[0]

    def build_many(self, programs: Sequence[KernelProgram]) -> list[CudaLauncher]:
        """Launchers for several programs from one nvcc run (one module), for the device's
        own arch (its hardware conversions included)."""
        try:
            driver = Driver.get()
            arch = driver.arch()
            source, symbols = emit_bundle(programs, "cuda", arch)
            _, cubin = nvcc_compile(source, arch, self.cache)
            functions = driver.load(cubin, [sym for ks in symbols for sym, _ in ks])
        except (OSError, CudaError) as e:
            raise GradeError(f"backend 'cuda' cannot run here: {e}") from None
        except RuntimeError as e:  # nvcc refused: too old for this GPU, or our bug
            raise GradeError(f"backend 'cuda': nvcc failed for {arch}: {e}") from None
        return [CudaLauncher(p, functions, ks) for p, ks in zip(programs, symbols)]


class CudaHostBackend:
    """The CUDA backend's printed body compiled for the CPU by gcc: runs (slowly) anywhere.

    By default the plain C print (every conversion in software). With ``emulate="sm_100a"``
    (any arch) it is that arch's CUDA print, hardware conversions included, built by g++
    against the CUDA headers, whose host code stands in for the instructions.
    """

    name = "cuda-host"
    exact_sum_order = True

    def __init__(self, cache: Path | None = None, emulate: str | None = None):
        self.cache = cache
        self.emulate = emulate
        if emulate is not None:
            CV.arch_number(emulate)  # refuses a malformed arch now

    def available(self) -> tuple[bool, str]:
        compiler = "g++" if self.emulate else "gcc"
        if shutil.which(compiler) is None:
            return False, f"{compiler} is not on PATH"
        if self.emulate and cuda_include_dir() is None:
            return False, "the CUDA headers (cuda_fp8.h) are not found"
        return True, ""

    def emit(self, program: KernelProgram) -> str:
        if self.emulate:
            return emit_program(program, "host-emu", self.emulate).source
        return emit_program(program, "host").source

    def build(self, program: KernelProgram) -> HostLauncher:
        return self.build_many([program])[0]

    def build_many(self, programs: Sequence[KernelProgram]) -> list[HostLauncher]:
        """Launchers for several programs from one gcc run (one shared library)."""
        if self.emulate:
            source, symbols = emit_bundle(programs, "host-emu", self.emulate)
            lib = ctypes.CDLL(str(gxx_compile(source, self.cache)))
        else:
            source, symbols = emit_bundle(programs, "host")
            lib = ctypes.CDLL(str(gcc_compile(source, self.cache)))
        return [HostLauncher(p, lib, ks) for p, ks in zip(programs, symbols)]
