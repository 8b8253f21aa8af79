"""TVM backend: prints a KernelProgram as TVMScript (TIR), compiles it with apache-tvm 0.27.

Why it looks the way it does (each point was found on TVM 0.27 and has a test that fails
without it):

* ``emit`` returns TVMScript *source*, parsed with ``tvm.script.from_source``: the text shown is
  exactly what is built. One ``T.prim_func`` per kernel; buffers are flat ``T.match_buffer`` s of
  a symbolic length; every scalar argument is an ``int64``. Program names are printed with a
  ``_`` suffix (after the identifier check), so they never meet the parser's globals (``T``,
  ``I``, ``tvm``) or the printer's own names, none of which end in ``_``.
* The grid is the outer loop: one ``T.parallel`` loop over the linear program id for ``llvm``
  (coordinates decomposed row-major with ``truncdiv``/``truncmod``), ``blockIdx.x`` x
  ``threadIdx.x`` bindings and a bounds check for ``cuda``. A kernel with an empty grid runs
  once; there its top-level parallel ``Loop`` s become ``T.parallel`` loops instead. Inner
  loops are serial; LLVM vectorises them.
* IEEE exactness, against four TVM habits. (1) TVM folds ``x + 0.0 -> x``, ``x * 0.0 -> 0``
  when it *constructs* an expression with a float literal operand: float constants are bound
  once per program instance (``c0: T.let[...]``) and used by name. (2) Its simplifier passes
  rewrite ``x - x -> 0``: the build uses its own short pass list (:func:`_pipeline`), with no
  simplifier. (3) Its LLVM target options hard-code ``AllowFPOpFusion = Fast``, and its code
  generator prints a literal ``a * b + c`` as ``llvm.fmuladd`` ("fuse if you like"; LLVM's
  constant folder evaluates it fused): the CPU is targeted with the FMA features switched off
  (``mattr=-fma,-fma4``, which also drops AVX-512 and keeps AVX2; without it the FMA test fails
  even for a product stored to memory first, since LLVM promotes and contracts it), and a float
  product feeding ``+``/``-`` is stored to a scratch scalar first, so no ``fmuladd`` exists. (4) Its float ``!=`` is
  LLVM's ordered ``one`` (false for NaN): printed ``T.Not(a == b)``. The same target options
  set ``NoNaNsFPMath``; the tests of every comparison and of NaN-propagating selects on NaN
  operands pass regardless (LLVM takes that option from function attributes, which TVM does
  not set).
* Other traps: TVM's ``-x`` is ``0 - x`` (wrong for +0.0) and an unsigned ``0 - x`` folds to 0,
  so float ``neg``/``abs`` flip/clear the sign bit through ``T.reinterpret`` and unsigned
  ``neg`` is ``(x ^ ~0) + 1``; ``i32`` ``add sub mul neg shl`` go through ``uint32`` (TVM marks
  signed arithmetic ``nsw``, which would make a wrap undefined); integer ``div``/``mod`` divide
  by ``max(b, 1)`` (operands are non-negative; the guard only makes a hoisted untaken
  ``select`` arm harmless); shift amounts are masked to the width; ``uint64`` literals from
  2**63 up and float64 literals beyond the float32 range (the parser range-checks float
  literals against float32) are ``T.reinterpret`` of their bits, as are inf and NaN.
* Values are never ``T.let``-bound chains: TVM's arithmetic analyzer substitutes each bound
  value into the next, exponential in the depth of shared values (a chain of 25 values each
  using the previous twice took 13 s to build, 100 did not finish in five minutes). A ``Let``
  read exactly once, by a later statement of its body with only ``Let`` s between, is printed
  nested at that use (the parser's time is per statement as much as per node); every other
  ``Let``, a ``Decl``, a reduction result and every subexpression used twice is a
  one-element ``T.alloc_buffer`` (scope ``global`` on the CPU: a stack ``alloca`` that LLVM
  promotes to a register; TVM serves ``local`` from its workspace allocator, a call per
  iteration; ``local`` on CUDA); everything else is printed nested.
* Reductions are exact in every order: ``seq`` is a left fold, ``pairwise`` (and ``any``, for
  which the oracle uses the same tree) the binary-counter stack algorithm with a 64-entry
  local array: after pushing element ``i`` the top two entries are merged ``ctz(i + 1)``
  times (exactly the merges of equal heights, so no height array is needed), then the stack is
  merged down to one entry.
* The math functions (``exp`` ...) call the C library by name (``T.call_pure_extern``): glibc's
  libm on the CPU (TVM's own ``tanh`` is an approximation), CUDA's on the GPU. numpy's SIMD
  versions, which the reference uses, may differ from glibc in the last place. The exception
  is f32 ``exp`` on the CPU: numgrade's own expansion (``kernels/math_f32.py``, within the
  model's 2 ulp on every f32 input), plain arithmetic that LLVM vectorises.
* On the CPU a row reduction whose folded value the row's epilogue needs again stores it into
  the output (``schedule.stash_reduced_values``): one thread runs a row in order.
* For ``cuda``, float ``+ - * /`` and ``sqrt`` are the ``__fadd_rn``-family intrinsics, never
  contracted whatever nvcc's ``--fmad``. :meth:`TVMBackend.emit_cuda` returns TVM's CUDA source
  (``sm_90a``); TVM compiles that source only when it is loaded, so neither a GPU nor nvcc is
  needed to get it.
* Launching: numpy arrays are passed without a copy through ``tvm_ffi.from_dlpack`` (the
  kernels assume element alignment only; ``tvm.runtime.from_dlpack`` insists on 64 bytes);
  read-only or empty arrays are copied in, and copied back unless they are inputs.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..kernels.ir import (DTYPE_BITS, FLOAT_DTYPES, MATH_OPS, Assign, Decl, Kernel,
                         KernelProgram, KExpr, Let, Loop, Reduce, Stmt, Store, walk_exprs)
from ..kernels.ir import IDENT_RE as _IDENT
from ..kernels.ir import expr_nodes, float_bits, var_names, wrap_int
from ..kernels.math_f32 import expand_exp_f32
from ..kernels.schedule import fold_indices, stash_reduced_values
from .base import NUMPY_DTYPES

# TVM builds every LLVM module with FPOpFusion::Fast (contraction into FMA wherever the CPU has
# it); taking FMA away from the CPU's features (AVX-512 goes with it) is the only reliable knob
NO_FMA_ATTRS = ("-fma", "-fma4")
CUDA_ARCH = "sm_90a"
CUDA_BLOCK = 128  # threads per block
# order-any reductions: interleaved partial folds per element width (four AVX2 vectors), and the
# chunks a kernel without a grid splits a top-level one into, run in parallel
LANES = {"f32": 32, "i32": 32, "u32": 32, "f64": 16, "i64": 16, "u64": 16}
CHUNKS = 64
# the schedule's knobs (kernels/autotune.py tries these): lanes for 32-bit elements (64-bit ones
# get half), and the chunks of a grid-less whole-tensor reduction
DEFAULT_KNOBS = {"lanes": LANES["f32"], "chunks": CHUNKS}
TUNE_SPACE = {"lanes": (16, 32, 64), "chunks": (16, 64, 256)}


def _lanes(dtype: str, knobs: Mapping[str, int]) -> int:
    """Interleaved folds for one element type: ``knobs['lanes']`` for 32 bits, half for 64."""
    return max(knobs["lanes"] * LANES.get(dtype, 16) // LANES["f32"], 1)
# pairwise reductions: whole aligned blocks of this many elements are summed as a tree apart
BLOCK = 16
# the script parser range-checks float literals against float32 whatever their type: larger
# float64 literals are printed as bit patterns
F32_MAX = float(np.finfo(np.float32).max)

TVM_DTYPES = {"f64": "float64", "f32": "float32", "i64": "int64", "i32": "int32",
              "u64": "uint64", "u32": "uint32", "u16": "uint16", "u8": "uint8", "bool": "bool"}
_ARITH = {"add": "+", "sub": "-", "mul": "*"}
_BITWISE = {"band": "&", "bor": "|", "bxor": "^"}
_COMPARE = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "=="}
_ROUNDING = {"floor": "T.floor", "ceil": "T.ceil", "trunc": "T.trunc", "rint": "T.nearbyint"}
_CUDA_FLOAT = {("add", "f32"): "__fadd_rn", ("sub", "f32"): "__fsub_rn",
               ("mul", "f32"): "__fmul_rn", ("div", "f32"): "__fdiv_rn",
               ("sqrt", "f32"): "__fsqrt_rn", ("add", "f64"): "__dadd_rn",
               ("sub", "f64"): "__dsub_rn", ("mul", "f64"): "__dmul_rn",
               ("div", "f64"): "__ddiv_rn", ("sqrt", "f64"): "__dsqrt_rn"}


def ident(name: str) -> str:
    """The script name of a program identifier: checked, then suffixed with ``_``.

    The suffix keeps program names apart from the parser's globals (``T``, ``I``, ``tvm``) and
    from the emitter's own names, none of which end in ``_``.
    """
    if not isinstance(name, str) or not _IDENT.match(name):
        raise ValueError(f"not an identifier: {name!r}")
    return name + "_"


def _tdt(dtype: str) -> str:
    return TVM_DTYPES[dtype]


def int_literal(value: int, dtype: str) -> str:
    """An exact TVMScript integer literal (``uint64`` past 2**63 via an ``int64`` bit cast)."""
    if dtype == "bool":
        return f"T.bool({bool(value)})"
    v = wrap_int(value, dtype)
    if dtype == "u64" and v >= 1 << 63:
        return f'T.reinterpret("uint64", T.int64({v - (1 << 64)}))'
    return f"T.{_tdt(dtype)}({v})"


def float_literal(value: float, dtype: str) -> str:
    """An exact TVMScript float literal: ``repr`` round-trips; inf/NaN/huge as bit patterns."""
    if dtype == "f32":
        value = float(np.float32(value))
    if math.isfinite(value) and abs(value) <= F32_MAX:
        return f"T.{_tdt(dtype)}({value!r})"
    if dtype == "f64":
        bits = float_bits(value, "f64", signed=True)
        return f'T.reinterpret("float64", T.int64({bits}))'
    bits = float_bits(value, "f32", signed=True)
    return f'T.reinterpret("float32", T.int32({bits}))'


# ---------------------------------------------------------------------------------------------
# printing one kernel
def _roots(s: Stmt) -> list[KExpr]:
    return list(walk_exprs([s]))


_var_names = var_names


def _count_var_uses(body: Sequence[Stmt]) -> dict[str, int]:
    """How many (node, argument) edges read each variable, each root expression apart."""
    uses: dict[str, int] = {}
    for root in walk_exprs(body):
        seen: set[KExpr] = set()
        stack = [root]
        if root.op == "var":
            uses[root.attrs[0]] = uses.get(root.attrs[0], 0) + 1
        while stack:
            e = stack.pop()
            if e in seen:
                continue
            seen.add(e)
            for a in e.args:
                if a.op == "var":
                    uses[a.attrs[0]] = uses.get(a.attrs[0], 0) + 1
                stack.append(a)
    return uses


@dataclass
class _Scope:
    """Names visible while printing: substitutions (acc_a/acc_b), mutable scalars, params."""

    subst: dict[str, str] = field(default_factory=dict)
    decls: set[str] = field(default_factory=set)


class _KernelPrinter:
    """Prints one :class:`Kernel` as a ``T.prim_func`` for ``target`` (``llvm`` or ``cuda``)."""

    def __init__(self, kernel: Kernel, storage: dict[str, str], target: str,
                 knobs: Mapping[str, int] = DEFAULT_KNOBS):
        self.knobs = knobs
        self.k = kernel
        self.storage = storage
        self.target = target
        self.lines: list[str] = []
        self.consts: dict[tuple[str, str], str] = {}  # (dtype, literal) -> bound name
        self.counter = 0
        self.scope = _Scope()
        self.uses: dict[KExpr, int] = {}
        self.var_uses = _count_var_uses(kernel.body)
        self.inline: dict[str, KExpr] = {}
        self.subst_memo: dict[KExpr, KExpr] = {}
        self.scratch = "local" if target == "cuda" else "global"

    # --- names --------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}{self.counter}"

    def emit(self, indent: str, line: str) -> None:
        self.lines.append(indent + line)

    # --- expressions ----------------------------------------------------------------------------
    def operand(self, e: KExpr, indent: str, memo: dict[KExpr, str],
                inline_int: bool = False, parent: KExpr | None = None) -> str:
        """An operand for ``e``: a literal, a name, a scratch load or a nested expression.

        A node used twice in the statement, or a float product feeding an addition, is stored
        to a scratch scalar first; every other node is printed nested in its user.
        """
        if e.op == "const":
            if e.dtype in FLOAT_DTYPES or not inline_int:
                return self.const_name(e)
            return int_literal(e.attrs[0], e.dtype)
        if e.op == "var":
            return self.var_ref(e)
        hit = memo.get(e)
        if hit is not None:
            return hit
        code = self.code(e, indent, memo)
        product_in_sum = (e.op == "mul" and e.dtype in FLOAT_DTYPES and parent is not None
                          and parent.op in ("add", "sub"))
        if self.uses.get(e, 0) < 2 and not product_in_sum:
            return f"({code})"
        name = self.fresh("e")
        self.scalar(indent, name, e.dtype, code)
        memo[e] = f"{name}[0]"
        return memo[e]

    def scalar(self, indent: str, name: str, dtype: str, code: str) -> None:
        """A one-element scratch buffer holding ``code``: an ``alloca`` that LLVM promotes.

        Not a ``T.let``: TVM's arithmetic analyzer substitutes every bound value into the
        next one, which is exponential in the depth of a chain of shared values.
        """
        self.emit(indent, f'{name} = T.alloc_buffer((1,), "{_tdt(dtype)}", '
                          f'scope="{self.scratch}")')
        self.emit(indent, f"{name}[0] = {code}")

    def const_name(self, e: KExpr) -> str:
        v = e.attrs[0]
        lit = (float_literal(float(v), e.dtype) if e.dtype in FLOAT_DTYPES
               else int_literal(v, e.dtype))
        key = (e.dtype, lit)
        name = self.consts.get(key)
        if name is None:
            name = self.consts[key] = f"c{len(self.consts)}"
        return name

    def var_ref(self, e: KExpr) -> str:
        name = e.attrs[0]
        if name in self.scope.subst:
            return self.scope.subst[name]
        if name in self.scope.decls:
            return f"{ident(name)}[0]"
        return ident(name)

    def code(self, e: KExpr, indent: str, memo: dict[KExpr, str]) -> str:
        """The TVMScript of one operation whose operands are already names or literals."""
        op, d = e.op, e.dtype
        if op in ("const", "var"):
            return self.operand(e, indent, memo)
        two_const = len(e.args) == 2 and all(a.op == "const" for a in e.args)

        def arg(i: int, inline: bool = False) -> str:
            return self.operand(e.args[i], indent, memo, inline and not two_const, e)

        cuda = self.target == "cuda"
        if op == "load":
            buf = e.attrs[0]
            return f"{ident(buf)}[{arg(0, True)}]"
        if op in _ARITH:
            if d in FLOAT_DTYPES:
                if cuda:
                    return f'T.call_pure_extern("{_tdt(d)}", "{_CUDA_FLOAT[op, d]}", {arg(0)}, {arg(1)})'
                return f"{arg(0)} {_ARITH[op]} {arg(1)}"
            a, b = arg(0, True), arg(1, True)
            if d == "i32":
                return (f'T.reinterpret("int32", T.reinterpret("uint32", {a}) {_ARITH[op]} '
                        f'T.reinterpret("uint32", {b}))')
            return f"{a} {_ARITH[op]} {b}"
        if op in ("div", "mod"):
            if d in FLOAT_DTYPES:
                if op == "mod":
                    raise ValueError("mod is an integer operation")
                if cuda:
                    return f'T.call_pure_extern("{_tdt(d)}", "{_CUDA_FLOAT[op, d]}", {arg(0)}, {arg(1)})'
                return f"{arg(0)} / {arg(1)}"
            fn = "T.truncdiv" if op == "div" else "T.truncmod"
            b = e.args[1]
            if b.op == "const" and wrap_int(b.attrs[0], b.dtype) > 0 and not two_const:
                return f"{fn}({arg(0, True)}, {arg(1, True)})"
            return f"{fn}({arg(0, True)}, T.max({arg(1, True)}, {int_literal(1, d)}))"
        if op in _BITWISE:
            return f"{arg(0, True)} {_BITWISE[op]} {arg(1, True)}"
        if op in ("shl", "shr"):
            return self.shift(e, arg)
        if op in _COMPARE or op == "ne":
            if e.args[0].dtype == "bool":  # TVM's LLVM code generator would emit an fcmp of i1
                sym = _COMPARE.get(op, "!=")
                return f'T.Cast("int32", {arg(0)}) {sym} T.Cast("int32", {arg(1)})'
        if op in _COMPARE:
            inline = e.args[0].dtype not in FLOAT_DTYPES
            return f"{arg(0, inline)} {_COMPARE[op]} {arg(1, inline)}"
        if op == "ne":
            if e.args[0].dtype in FLOAT_DTYPES:
                return f"T.Not({arg(0)} == {arg(1)})"
            return f"{arg(0, True)} != {arg(1, True)}"
        if op == "and":
            return f"T.And({arg(0)}, {arg(1)})"
        if op == "or":
            return f"T.Or({arg(0)}, {arg(1)})"
        if op == "not":
            return f"T.Not({arg(0)})"
        if op in ("neg", "abs"):
            return self.sign_op(e, arg)
        if op in _ROUNDING:
            return f"{_ROUNDING[op]}({arg(0)})"
        if op == "sqrt":
            if cuda:
                return f'T.call_pure_extern("{_tdt(d)}", "{_CUDA_FLOAT[op, d]}", {arg(0)})'
            return f"T.sqrt({arg(0)})"
        if op in MATH_OPS:
            if d == "f64":
                return f'T.call_pure_extern("float64", "{op}", {arg(0)})'
            if d != "f32":
                raise ValueError(f"{op} is defined on f64 and f32, got {d}")
            # f32 (the fast contract): the C library's single-precision functions. On the CPU
            # the TIR intrinsics, which LLVM lowers to libm's expf, logf, ... (or, in a
            # vectorised loop, to the vector library's versions); TVM's own tanh is an
            # approximation, so tanhf by name; on CUDA the accurate expf (TVM's rule would
            # print the approximate __expf)
            if cuda or op == "tanh":
                return f'T.call_pure_extern("float32", "{op}f", {arg(0)})'
            return f"T.{op}({arg(0)})"
        if op == "select":
            return f"T.Select({arg(0)}, {arg(1, True)}, {arg(2, True)})"
        if op == "bitcast":
            return f'T.reinterpret("{_tdt(d)}", {arg(0)})'
        if op == "cast":
            return self.cast(e, arg)
        raise ValueError(f"no TVM printing rule for op {op!r}")

    def shift(self, e: KExpr, arg: Callable[..., str]) -> str:
        d, amount = e.dtype, e.args[1]
        bits = DTYPE_BITS[d]
        fn = "T.shift_left" if e.op == "shl" else "T.shift_right"
        if amount.op == "const" and 0 <= int(amount.attrs[0]) < bits:
            amt = int_literal(int(amount.attrs[0]), d)
        else:
            amt = arg(1, True)
            if amount.dtype != d:
                amt = f'T.Cast("{_tdt(d)}", {amt})'
            amt = f"({amt} & {int_literal(bits - 1, d)})"
        if e.op == "shl" and d == "i32":
            return (f'T.reinterpret("int32", T.shift_left(T.reinterpret("uint32", {arg(0)}), '
                    f'T.reinterpret("uint32", {amt})))')
        return f"{fn}({arg(0)}, {amt})"

    def sign_op(self, e: KExpr, arg: Callable[..., str]) -> str:
        d = e.dtype
        x = arg(0)
        if d in FLOAT_DTYPES:
            u = "uint64" if d == "f64" else "uint32"
            bits = DTYPE_BITS[d]
            sign = int_literal(1 << (bits - 1), "u64" if d == "f64" else "u32")
            rest = int_literal((1 << (bits - 1)) - 1, "u64" if d == "f64" else "u32")
            if e.op == "neg":
                return f'T.reinterpret("{_tdt(d)}", T.reinterpret("{u}", {x}) ^ {sign})'
            return f'T.reinterpret("{_tdt(d)}", T.reinterpret("{u}", {x}) & {rest})'
        zero = int_literal(0, d)
        if d == "i32":
            neg = f'T.reinterpret("int32", (T.reinterpret("uint32", {x}) ^ T.uint32({2**32 - 1}))' \
                  f' + T.uint32(1))'
        elif d.startswith("u"):  # TVM folds an unsigned 0 - x to 0: two's complement by hand
            neg = f"({x} ^ {int_literal(-1, d)}) + {int_literal(1, d)}"
        else:
            neg = f"{zero} - {x}"
        if e.op == "neg":
            return neg
        if d.startswith("u"):
            return x
        return f"T.Select({x} < {zero}, {neg}, {x})"

    def cast(self, e: KExpr, arg: Callable[..., str]) -> str:
        src, d = e.args[0].dtype, e.dtype
        x = arg(0)
        if src == d:
            return x
        if d == "bool":
            if src in FLOAT_DTYPES:
                return f"T.Not({x} == {float_literal(0.0, src)})"
            return f"{x} != {int_literal(0, src)}"
        return f'T.Cast("{_tdt(d)}", {x})'

    # --- statements ---------------------------------------------------------------------------
    def count_uses(self, *roots: KExpr) -> None:
        """How often each node is an argument within the statement's expressions."""
        self.uses = {}
        for e in expr_nodes(roots):
            for a in e.args:
                self.uses[a] = self.uses.get(a, 0) + 1

    def expr(self, e: KExpr, indent: str) -> str:
        """Print ``e`` as the right-hand side of one statement (shared parts stored before)."""
        e = self.subst(e)
        self.count_uses(e)
        return self.code(e, indent, {})

    def rooted(self, e: KExpr, indent: str, memo: dict[KExpr, str],
               inline_int: bool = False) -> str:
        """``operand`` for a statement's root expression (the use counts set first)."""
        e = self.subst(e)
        self.count_uses(e)
        return self.operand(e, indent, memo, inline_int)

    # --- single-use values, printed where they are used ---------------------------------------
    def subst(self, e: KExpr) -> KExpr:
        """``e`` with the inlined ``Let`` names replaced by their values."""
        if not self.inline:
            return e
        memo = self.subst_memo
        hit = memo.get(e)
        if hit is not None:
            return hit
        if e.op == "var":
            out = self.inline.get(e.attrs[0], e)
        elif not e.args:
            out = e
        else:
            args = tuple(self.subst(a) for a in e.args)
            out = e if args == e.args else KExpr(e.op, args, e.attrs, e.dtype)
        memo[e] = out
        return out

    def inlinable(self, body: Sequence[Stmt], tail: Sequence[KExpr] = ()) -> set[str]:
        """The ``Let`` s of ``body`` read exactly once in the kernel, by a later statement of
        the same body (or by ``tail``, a reduction's element after it) with only ``Let`` s in
        between: printing their value at that use changes no evaluation order. Fewer scratch
        scalars make TVM's parse and LLVM's work on long kernels much shorter."""
        out: set[str] = set()
        direct = [frozenset(_var_names(_roots(s))) if not isinstance(s, (Loop, Reduce))
                  else frozenset() for s in body]
        for i, s in enumerate(body):
            if not isinstance(s, Let) or self.var_uses.get(s.name, 0) != 1:
                continue
            for j in range(i + 1, len(body) + 1):
                if j == len(body):
                    if s.name in _var_names(list(tail)):
                        out.add(s.name)
                    break
                if s.name in direct[j]:
                    out.add(s.name)
                    break
                if not isinstance(body[j], Let):
                    break
        return out

    def stmts(self, body: Sequence[Stmt], indent: str, top_parallel: bool = False,
              tail: Sequence[KExpr] = ()) -> None:
        start = len(self.lines)
        inline = self.inlinable(body, tail)
        for s in body:
            if isinstance(s, Let) and s.name in inline:
                self.inline[s.name] = self.subst(s.value)
                self.subst_memo = {}  # what was substituted before may now read s.name
                continue
            if isinstance(s, (Let, Decl)):
                value = s.value if isinstance(s, Let) else s.init
                rhs = self.expr(value, indent)
                self.scalar(indent, ident(s.name), value.dtype, rhs)
                self.scope.decls.add(s.name)
            elif isinstance(s, Assign):
                if s.name not in self.scope.decls:
                    raise ValueError(f"assignment to undeclared scalar {s.name!r}")
                rhs = self.expr(s.value, indent)
                self.emit(indent, f"{ident(s.name)}[0] = {rhs}")
            elif isinstance(s, Store):
                if s.buffer not in self.storage:
                    raise ValueError(f"store to unknown buffer {s.buffer!r}")
                memo: dict[KExpr, str] = {}
                index, value = self.subst(s.index), self.subst(s.value)
                self.count_uses(index, value)
                idx = self.operand(index, indent, memo, inline_int=True)
                val = self.operand(value, indent, memo)
                self.emit(indent, f"{ident(s.buffer)}[{idx}] = {val}")
            elif isinstance(s, Loop):
                ext = self.rooted(s.extent, indent, {}, inline_int=True)
                kind = "T.parallel" if top_parallel and s.kind == "parallel" else "T.serial"
                self.emit(indent, f"for {ident(s.var)} in {kind}({ext}):")
                self.stmts(s.body, indent + "    ")
            elif isinstance(s, Reduce):
                self.reduce(s, indent, top_parallel)
            else:  # pragma: no cover
                raise TypeError(f"unknown statement {s!r}")
        if len(self.lines) == start:
            self.emit(indent, "T.evaluate(0)")

    def element(self, r: Reduce, indent: str) -> str:
        """Bind ``leaf(value)`` of the current iteration and return its name."""
        v = self.fresh("v")
        self.scalar(indent, v, r.dtype if r.leaf is None else r.value.dtype,
                    self.expr(r.value, indent))
        if r.leaf is None:
            return f"{v}[0]"
        saved = self.scope.subst.get("acc_b")
        self.scope.subst["acc_b"] = f"{v}[0]"
        x = self.fresh("v")
        self.scalar(indent, x, r.dtype, self.expr(r.leaf, indent))
        x = f"{x}[0]"
        self._restore("acc_b", saved)
        return x

    def combine(self, r: Reduce, a: str, b: str, indent: str) -> str:
        saved_a, saved_b = self.scope.subst.get("acc_a"), self.scope.subst.get("acc_b")
        self.scope.subst["acc_a"], self.scope.subst["acc_b"] = a, b
        out = self.expr(r.combine, indent)
        self._restore("acc_a", saved_a)
        self._restore("acc_b", saved_b)
        return out

    def _restore(self, key: str, saved: str | None) -> None:
        if saved is None:
            self.scope.subst.pop(key, None)
        else:
            self.scope.subst[key] = saved

    def reduce(self, r: Reduce, indent: str, top_parallel: bool = False) -> None:
        if r.order not in ("seq", "pairwise", "any"):
            raise ValueError(f"unknown reduction order {r.order!r}")
        dt = _tdt(r.dtype)
        ext = self.rooted(r.extent, indent, {}, inline_int=True)
        init = self.expr(r.init, indent)
        res = self.fresh("res")
        self.emit(indent, f'{res} = T.alloc_buffer((1,), "{dt}", scope="{self.scratch}")')
        self.emit(indent, f"{res}[0] = {init}")
        if r.order == "seq":
            self.fold_seq(r, indent, "T.int64(0)", ext, res)
        elif r.order == "pairwise":
            self.fold_pairwise(r, indent, ext, res)
        elif top_parallel and self.target == "llvm":
            self.fold_chunks(r, indent, ext, res)
        else:
            self.fold_lanes(r, indent, "T.int64(0)", ext, res)
        self.scalar(indent, ident(r.name), r.dtype, f"{res}[0]")
        self.scope.decls.add(r.name)

    def _loop(self, var: str, start: str, stop: str) -> str:
        if start == "T.int64(0)":
            return f"for {var} in T.serial({stop}):"
        return f"for {var} in T.serial({start}, {stop}):"

    def _body_element(self, r: Reduce, indent: str, index: str | None = None) -> str:
        """Print the reduction body for one iteration (the iteration variable bound to
        ``index`` when given, else the loop variable itself); return its element's name."""
        saved = self.scope.subst.get(r.var)
        if index is not None:
            ix = self.fresh("ix")
            self.emit(indent, f"{ix}: T.let[T.int64] = {index}")
            self.scope.subst[r.var] = ix
        else:
            self.scope.subst.pop(r.var, None)
        self.subst_memo = {}
        if r.body:
            self.stmts(r.body, indent, tail=(r.value,))
        x = self.element(r, indent)
        self._restore(r.var, saved)
        self.subst_memo = {}
        return x

    def fold_seq(self, r: Reduce, indent: str, start: str, stop: str, res: str) -> None:
        """``res = fold(combine, elements start .. stop-1)`` left to right (unchanged when the
        range is empty)."""
        inner = indent + "    "
        i = ident(r.var)
        self.emit(indent, self._loop(i, start, stop))
        x = self._body_element(r, inner)
        self.emit(inner, f"if {i} == {start}:")
        self.emit(inner + "    ", f"{res}[0] = {x}")
        self.emit(inner, "else:")
        y = self.combine(r, f"{res}[0]", x, inner + "    ")
        self.emit(inner + "    ", f"{res}[0] = {y}")

    def fold_lanes(self, r: Reduce, indent: str, start: str, stop: str, res: str) -> None:
        """Order ``any``: ``w`` interleaved partial folds (lane ``l`` takes the elements
        ``l, l + w, ...`` of the whole blocks; ``w`` from the ``lanes`` knob), which LLVM keeps
        in vector registers, then the lanes combined as a tree and the leftover elements
        folded in."""
        w = _lanes(r.dtype, self.knobs)
        dt = _tdt(r.dtype)
        zero = "T.int64(0)"
        n, nb, lane, tail = (self.fresh(h) for h in ("n", "nb", "lane", "tail"))
        span = stop if start == zero else f"{stop} - {start}"
        self.emit(indent, f"{n}: T.let[T.int64] = {span}")
        self.emit(indent, f"{nb}: T.let[T.int64] = T.truncdiv({n}, T.int64({w}))")
        self.emit(indent, f'{lane} = T.alloc_buffer(({w},), "{dt}", scope="{self.scratch}")')
        j, l = self.fresh("j"), self.fresh("l")
        inner, inner2 = indent + "    ", indent + "        "
        self.emit(indent, f"for {j} in T.serial({nb}):")
        self.emit(inner, f"for {l} in T.serial(T.int64({w})):")
        base = f"{j} * T.int64({w}) + {l}"
        x = self._body_element(r, inner2, base if start == zero else f"{start} + {base}")
        y = self.combine(r, f"{lane}[{l}]", x, inner2)
        self.emit(inner2, f"{lane}[{l}] = T.Select({j} == {zero}, {x}, {y})")
        self.emit(indent, f"if {nb} > {zero}:")
        half = w // 2
        while half >= 1:
            p = self.fresh("p")
            self.emit(inner, f"for {p} in T.serial(T.int64({half})):")
            y = self.combine(r, f"{lane}[{p}]", f"{lane}[{p} + T.int64({half})]", inner2)
            self.emit(inner2, f"{lane}[{p}] = {y}")
            half //= 2
        self.emit(inner, f"{res}[0] = {lane}[0]")
        # the leftover elements: a left fold of their own, combined with the lanes' result
        rest = f"{nb} * T.int64({w})" if start == zero else f"{start} + {nb} * T.int64({w})"
        self.emit(indent, f'{tail} = T.alloc_buffer((1,), "{dt}", scope="{self.scratch}")')
        self.emit(indent, f"if {n} > {nb} * T.int64({w}):")
        self.fold_seq(r, inner, rest, stop, tail)
        self.emit(inner, f"if {nb} > {zero}:")
        y = self.combine(r, f"{res}[0]", f"{tail}[0]", inner2)
        self.emit(inner2, f"{res}[0] = {y}")
        self.emit(inner, "else:")
        self.emit(inner2, f"{res}[0] = {tail}[0]")

    def fold_chunks(self, r: Reduce, indent: str, ext: str, res: str) -> None:
        """Order ``any`` at the top of a kernel without a grid: ``chunks`` (a knob) contiguous
        chunks folded in parallel (each by :meth:`fold_lanes`), then the chunks' results in
        order."""
        dt = _tdt(r.dtype)
        chunks = self.knobs["chunks"]
        part, c, got = self.fresh("part"), self.fresh("c"), self.fresh("got")
        lo, hi, pres = self.fresh("lo"), self.fresh("hi"), self.fresh("res")
        inner, inner2 = indent + "    ", indent + "        "
        self.emit(indent, f'{part} = T.alloc_buffer(({chunks},), "{dt}", scope="{self.scratch}")')
        self.emit(indent, f"for {c} in T.parallel(T.int64({chunks})):")
        self.emit(inner, f"{lo}: T.let[T.int64] = T.truncdiv({c} * {ext}, T.int64({chunks}))")
        self.emit(inner, f"{hi}: T.let[T.int64] = T.truncdiv(({c} + T.int64(1)) * {ext}, "
                         f"T.int64({chunks}))")
        self.emit(inner, f'{pres} = T.alloc_buffer((1,), "{dt}", scope="{self.scratch}")')
        self.emit(inner, f"{pres}[0] = {res}[0]")
        self.fold_lanes(r, inner, lo, hi, pres)
        self.emit(inner, f"{part}[{c}] = {pres}[0]")
        c2 = self.fresh("c")
        self.emit(indent, f'{got} = T.alloc_buffer((1,), "int64", scope="{self.scratch}")')
        self.emit(indent, f"{got}[0] = T.int64(0)")
        self.emit(indent, f"for {c2} in T.serial(T.int64({chunks})):")
        self.emit(inner, f"if T.truncdiv(({c2} + T.int64(1)) * {ext}, T.int64({chunks})) > "
                         f"T.truncdiv({c2} * {ext}, T.int64({chunks})):")
        self.emit(inner2, f"if {got}[0] == T.int64(0):")
        self.emit(inner2 + "    ", f"{res}[0] = {part}[{c2}]")
        self.emit(inner2 + "    ", f"{got}[0] = T.int64(1)")
        self.emit(inner2, "else:")
        y = self.combine(r, f"{res}[0]", f"{part}[{c2}]", inner2 + "    ")
        self.emit(inner2 + "    ", f"{res}[0] = {y}")

    def fold_pairwise(self, r: Reduce, indent: str, ext: str, res: str) -> None:
        """Order ``pairwise``: the binary-counter stack over whole aligned blocks of ``BLOCK``
        elements, each block's own tree computed apart (vectorisable), then the leftover
        elements pushed one by one. A block's tree is exactly the merges the element-wise
        counter makes inside it, and pushing block ``j`` then merging ``ctz(j + 1)`` times
        leaves the stack as the element-wise counter leaves it: the result is the same."""
        dt = _tdt(r.dtype)
        b = BLOCK
        inner, inner2 = indent + "    ", indent + "        "
        stk, sp, cnt = self.fresh("stk"), self.fresh("sp"), self.fresh("cnt")
        nb, blk, blk2 = self.fresh("nb"), self.fresh("blk"), self.fresh("blk")
        self.emit(indent, f'{stk} = T.alloc_buffer((64,), "{dt}", scope="{self.scratch}")')
        self.emit(indent, f'{sp} = T.alloc_buffer((1,), "int64", scope="{self.scratch}")')
        self.emit(indent, f'{cnt} = T.alloc_buffer((1,), "int64", scope="{self.scratch}")')
        self.emit(indent, f'{blk} = T.alloc_buffer(({b},), "{dt}", scope="{self.scratch}")')
        self.emit(indent, f'{blk2} = T.alloc_buffer(({b // 2},), "{dt}", scope="{self.scratch}")')
        self.emit(indent, f"{stk}[0] = {res}[0]")
        self.emit(indent, f"{sp}[0] = T.int64(0)")
        self.emit(indent, f"{nb}: T.let[T.int64] = T.truncdiv({ext}, T.int64({b}))")
        j, l = self.fresh("j"), self.fresh("l")
        self.emit(indent, f"for {j} in T.serial({nb}):")
        self.emit(inner, f"for {l} in T.serial(T.int64({b})):")
        x = self._body_element(r, inner2, f"{j} * T.int64({b}) + {l}")
        self.emit(inner2, f"{blk}[{l}] = {x}")
        half, src, dst = b // 2, blk, blk2
        while half >= 1:
            p = self.fresh("p")
            self.emit(inner, f"for {p} in T.serial(T.int64({half})):")
            y = self.combine(r, f"{src}[{p} * T.int64(2)]", f"{src}[{p} * T.int64(2) + "
                             f"T.int64(1)]", inner2)
            self.emit(inner2, f"{dst}[{p}] = {y}")
            half //= 2
            src, dst = dst, src
        self.emit(inner, f"{stk}[{sp}[0]] = {src}[0]")
        self.emit(inner, f"{sp}[0] = {sp}[0] + T.int64(1)")
        self.emit(inner, f"{cnt}[0] = {j} + T.int64(1)")
        self.emit(inner, f"while {cnt}[0] & T.int64(1) == T.int64(0):")
        self.merge(r, stk, sp, inner2)
        self.emit(inner2, f"{cnt}[0] = T.shift_right({cnt}[0], T.int64(1))")
        i = ident(r.var)
        self.emit(indent, self._loop(i, f"{nb} * T.int64({b})", ext))
        x = self._body_element(r, inner)
        self.emit(inner, f"{stk}[{sp}[0]] = {x}")
        self.emit(inner, f"{sp}[0] = {sp}[0] + T.int64(1)")
        self.emit(inner, f"{cnt}[0] = {i} + T.int64(1)")
        self.emit(inner, f"while {cnt}[0] & T.int64(1) == T.int64(0):")
        self.merge(r, stk, sp, inner2)
        self.emit(inner2, f"{cnt}[0] = T.shift_right({cnt}[0], T.int64(1))")
        self.emit(indent, f"while {sp}[0] > T.int64(1):")
        self.merge(r, stk, sp, inner)
        self.emit(indent, f"{res}[0] = {stk}[0]")

    def merge(self, r: Reduce, stk: str, sp: str, indent: str) -> None:
        """Pop b, pop a, push combine(a, b)."""
        top = f"{sp}[0]"
        a, b = f"{stk}[{top} - T.int64(2)]", f"{stk}[{top} - T.int64(1)]"
        y = self.combine(r, a, b, indent)
        self.emit(indent, f"{stk}[{top} - T.int64(2)] = {y}")
        self.emit(indent, f"{sp}[0] = {top} - T.int64(1)")

    # --- the function ---------------------------------------------------------------------------
    def grid_total(self) -> str:
        parts = [self.extent_code(g) for g in self.k.grid]
        return " * ".join(parts) if parts else "T.int64(1)"

    def extent_code(self, g: KExpr) -> str:
        if g.op == "const":
            return int_literal(int(g.attrs[0]), "i64")
        if g.op == "var":
            return self.var_ref(g)
        raise ValueError(f"grid extents are constants or scalar parameters, got {g!r}")

    def print(self) -> list[str]:
        k = self.k
        fname = ident(k.name)
        params = [f"{ident(b)}_h: T.handle" for b in k.buffers]
        params += [f"{ident(p.name)}{'' if p.dtype == 'i64' else '_a'}: T.int64"
                   for p in k.scalars]
        head = ["    @T.prim_func",
                f"    def {fname}({', '.join(params)}):",
                f'        T.func_attr({{"global_symbol": "{fname}", "tir.noalias": True}})']
        for b in k.buffers:
            if b not in self.storage:
                raise ValueError(f"kernel {k.name} uses unknown buffer {b!r}")
            n = ident(b)
            head.append(f"        {n}_n = T.int64()")
            head.append(f'        {n} = T.match_buffer({n}_h, ({n}_n,), '
                        f'"{_tdt(self.storage[b])}", align=1)')
        for p in k.scalars:
            if p.dtype == "u64":
                head.append(f'        {ident(p.name)}: T.let[T.uint64] = '
                            f'T.reinterpret("uint64", {ident(p.name)}_a)')
            elif p.dtype != "i64":
                head.append(f'        {ident(p.name)}: T.let[T.{_tdt(p.dtype)}] = '
                            f'T.Cast("{_tdt(p.dtype)}", {ident(p.name)}_a)')
        if len(k.grid) != len(k.grid_vars):
            raise ValueError(f"kernel {k.name}: {len(k.grid)} extents, {len(k.grid_vars)} vars")
        for g in k.grid_vars:
            ident(g)
        total = self.grid_total()
        if self.target == "cuda":
            head.append(f"        for bx in T.thread_binding(T.truncdiv({total} + "
                        f"T.int64({CUDA_BLOCK - 1}), T.int64({CUDA_BLOCK})), "
                        f'thread="blockIdx.x"):')
            head.append(f"            for tx in T.thread_binding(T.int64({CUDA_BLOCK}), "
                        f'thread="threadIdx.x"):')
            head.append(f"                pid: T.let[T.int64] = bx * T.int64({CUDA_BLOCK}) + tx")
            head.append(f"                if pid < {total}:")
            indent = " " * 20
            head += self.decompose("pid", indent)
            top_parallel = False
        elif k.grid:
            head.append(f"        for pid in T.parallel({total}):")
            indent = " " * 12
            head += self.decompose("pid", indent)
            top_parallel = False
        else:
            indent = " " * 8
            top_parallel = True
        self.stmts(k.body, indent, top_parallel)
        consts = [f"{indent}{name}: T.let[T.{_tdt(dt)}] = {lit}"
                  for (dt, lit), name in self.consts.items()]
        return head + consts + self.lines

    def decompose(self, pid: str, indent: str) -> list[str]:
        """Bind the grid coordinates, row-major (the last varies fastest), from ``pid``."""
        grid, names = self.k.grid, self.k.grid_vars
        out = []
        rest = pid
        for j in range(len(grid) - 1, -1, -1):
            g = ident(names[j])
            if j == 0:
                out.append(f"{indent}{g}: T.let[T.int64] = {rest}")
                break
            ext = self.extent_code(grid[j])
            out.append(f"{indent}{g}: T.let[T.int64] = T.truncmod({rest}, {ext})")
            nxt = f"q{j}"
            out.append(f"{indent}{nxt}: T.let[T.int64] = T.truncdiv({rest}, {ext})")
            rest = nxt
        return out


# ---------------------------------------------------------------------------------------------
# index simplification: (a / n) * n + a % n -> a
_INT_DTYPES = ("i64", "i32", "u64", "u32", "u16", "u8")


def _all_stmts(body: Sequence[Stmt]):
    for s in body:
        yield s
        if isinstance(s, (Loop, Reduce)):
            yield from _all_stmts(s.body)


def _drop_unread_lets(body: tuple[Stmt, ...], read: set[str]) -> tuple[Stmt, ...]:
    out: list[Stmt] = []
    for s in body:
        if isinstance(s, Let) and s.name not in read:
            continue
        if isinstance(s, Loop):
            s = Loop(s.var, s.extent, _drop_unread_lets(s.body, read), s.kind)
        elif isinstance(s, Reduce):
            s = Reduce(s.name, s.var, s.extent, _drop_unread_lets(s.body, read), s.value,
                       s.combine, s.init, s.order, s.kind, s.leaf)
        out.append(s)
    return tuple(out)


def simplify_indices(kernel: Kernel, dims: Mapping | None = None) -> Kernel:
    """The kernel with flat indices rebuilt from quotient and remainder folded back
    (kernels/schedule.fold_indices: two 64-bit divisions per element fewer, which also lets
    LLVM vectorise) and the Lets no longer read dropped; the kernel itself when nothing
    changed."""
    body = fold_indices(kernel, dims or {}).body
    if body == kernel.body:
        return kernel
    for _ in range(4):  # a dropped Let may leave the Lets it read unread in turn
        read = var_names(list(walk_exprs(body)))
        new = _drop_unread_lets(body, read)
        if new == body:
            break
        body = new
    return Kernel(kernel.name, kernel.grid, kernel.grid_vars, body, kernel.buffers,
                  kernel.scalars, kernel.note)


def program_script(program: KernelProgram, target: str = "llvm",
                   knobs: Mapping[str, int] | None = None) -> str:
    """The TVMScript module (one ``T.prim_func`` per kernel) for ``target`` (llvm or cuda),
    with the schedule's ``knobs`` (DEFAULT_KNOBS where not given)."""
    knobs = {**DEFAULT_KNOBS, **(knobs or {})}
    if set(knobs) - set(DEFAULT_KNOBS) or any(int(v) < 1 for v in knobs.values()):
        raise ValueError(f"bad schedule knobs {knobs!r}")
    if target not in ("llvm", "cuda"):
        raise ValueError(f"unknown TVM target {target!r}")
    storage = {}
    for name, b in program.buffers.items():
        ident(name)
        if b.storage not in NUMPY_DTYPES:
            raise ValueError(f"buffer {name}: storage {b.storage!r} is not a storage dtype")
        storage[name] = b.storage
    lines = [f"# TVMScript for program {program.name} (target {target}); parsed as printed",
             "@I.ir_module", "class Module:"]
    seen: set[str] = set()
    for k in program.kernels:
        if k.name in seen:
            raise ValueError(f"two kernels named {k.name!r}")
        seen.add(k.name)
        if target == "llvm":   # one CPU thread runs a row in program order
            k = expand_exp_f32(stash_reduced_values(program, k))
        lines += _KernelPrinter(simplify_indices(k, program.dims), storage, target,
                                knobs).print()
    if not program.kernels:
        lines.append("    pass")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# building and running
def _target(kind: str) -> Any:
    import tvm
    if kind == "cuda":
        return tvm.target.Target({"kind": "cuda", "arch": CUDA_ARCH}, host={"kind": "llvm"})
    from tvm.target import codegen
    cpu = codegen.llvm_get_system_cpu()
    spec: dict[str, Any] = {"kind": "llvm"}
    if cpu and codegen.llvm_is_valid_cpu(cpu, codegen.llvm_get_system_triple()):
        spec["mcpu"] = cpu
    if codegen.llvm_cpu_has_features(["fma"], tvm.target.Target(spec)):
        spec["mattr"] = list(NO_FMA_ATTRS)
    return tvm.target.Target(spec)


PIPELINE = "numgrade_ieee"


def _pipeline() -> tuple[Any, Callable[[], Any], Callable[[], Any]]:
    """The TIR lowering passes the printed kernels need, and no simplifier.

    TVM's default pipeline runs some fifty passes, several of them arithmetic simplifiers that
    rewrite float expressions (``x - x -> 0``), and each analyzer-based pass costs time on long
    kernels. The printed TIR is already flat (1-D buffers, no blocks, no vector loops), so it
    needs only: thread bindings to launch attributes, buffer flattening, host/device split and
    the packed calling convention; then the host/device finalisation (builtins, intrinsics).
    """
    import tvm
    from tvm import s_tir, tirx

    @tvm.transform.module_pass(opt_level=0, name="numgrade_ieee_pipeline")
    def pipeline(mod: Any, _ctx: Any) -> Any:
        passes = [s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer(),
                  tirx.transform.VerifyMemory(), tirx.transform.AnnotateEntryFunc(),
                  tirx.transform.SplitHostDevice(), tirx.transform.MakePackedAPI()]
        return tvm.ir.transform.Sequential(passes)(mod)

    def host() -> Any:
        return tvm.ir.transform.Sequential([tirx.transform.LowerTVMBuiltin(),
                                            tirx.transform.LowerIntrin()])

    def device() -> Any:
        return tvm.ir.transform.Sequential([tirx.transform.LowerIntrin()])

    return pipeline, host, device


def compile_script(script: str, target: str) -> Any:
    """Parse the TVMScript and compile it with :func:`_pipeline`."""
    import tvm
    from tvm.tirx import compilation_pipeline
    if PIPELINE not in compilation_pipeline.PIPELINE_MAP:
        compilation_pipeline.register_tir_pipeline(PIPELINE, _pipeline)
    # the well-formedness check costs seconds on long kernels; the printer guarantees scoping
    mod = tvm.script.from_source(script, check_well_formed=False)
    with tvm.transform.PassContext(opt_level=3):
        return tvm.compile(mod, target=_target(target), tir_pipeline=PIPELINE)


def _to_i64(value: int) -> int:
    return wrap_int(int(value), "i64")


# TVM's CPU thread pool, unless the user configured it: TVM counts half the CPUs on x86 (it
# assumes hyper-threads), so a 2-CPU machine ran every parallel loop on one thread; its idle
# workers spin (300000 rounds) after each launch, taking the CPUs from torch's threads in the
# same process; and it pins threads to cores. Read when the pool starts (the first launch).
POOL_DEFAULTS = {"TVM_THREAD_POOL_SPIN_COUNT": "0", "TVM_BIND_THREADS": "0"}


def configure_cpu_threads() -> dict[str, str]:
    """One pool worker per CPU this process may run on, no spinning, no pinning (each only
    where the environment does not say otherwise); returns the settings in force."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for key, value in {"TVM_NUM_THREADS": str(cpus or 1), **POOL_DEFAULTS}.items():
        os.environ.setdefault(key, value)
    return {k: os.environ[k] for k in ("TVM_NUM_THREADS", *POOL_DEFAULTS)}


class _Launcher:
    """Runs the compiled kernels in order on numpy buffers (zero-copy when 64-byte aligned)."""

    def __init__(self, program: KernelProgram, lib: Any):
        configure_cpu_threads()
        self.program = program
        self.lib = lib
        self.calls = []
        for k in program.kernels:
            self.calls.append((lib[ident(k.name)], tuple(k.buffers),
                               tuple(p.name for p in k.scalars)))

    def __call__(self, buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        import tvm
        import tvm_ffi
        tensors: dict[str, Any] = {}
        copied: list[str] = []
        for name, b in self.program.buffers.items():
            arr = buffers[name]
            want = np.dtype(NUMPY_DTYPES[b.storage])
            if arr.ndim != 1 or arr.dtype != want:
                raise ValueError(f"buffer {name!r} must be a flat {want} array")
            if arr.flags.c_contiguous and arr.flags.writeable and arr.size \
                    and arr.ctypes.data % arr.itemsize == 0:
                # the kernels assume element alignment only (match_buffer align=1), so any
                # numpy array is imported without a copy (tvm.runtime.from_dlpack wants 64)
                tensors[name] = tvm_ffi.from_dlpack(arr)
            else:
                tensors[name] = tvm.runtime.tensor(np.ascontiguousarray(arr))
                copied.append(name)
        for fn, bufs, scal in self.calls:
            fn(*[tensors[b] for b in bufs], *[_to_i64(scalars[s]) for s in scal])
        for name in copied:
            if self.program.buffers[name].role != "in":
                buffers[name][...] = tensors[name].numpy()


class TVMBackend:
    """Kernel programs through TVMScript and TVM's LLVM (CPU) or CUDA code generators."""

    name = "tvm"
    exact_sum_order = True

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def available(self) -> tuple[bool, str]:
        try:
            import tvm
            tvm.script.from_source  # noqa: B018 - the TVMScript parser must be there
        except Exception as exc:  # pragma: no cover - depends on the installation
            return False, f"apache-tvm is not importable: {exc}"
        return True, ""

    def emit(self, program: KernelProgram) -> str:
        return program_script(program, "llvm")

    def _lib(self, program: KernelProgram, target: str,
             knobs: Mapping[str, int] | None = None) -> Any:
        script = program_script(program, target, knobs)
        key = (script, target)
        with self._lock:
            lib = self._cache.get(key)
            if lib is None:
                lib = self._cache[key] = compile_script(script, target)
        return lib

    def build(self, program: KernelProgram, target: str = "llvm", tune: bool = False) -> Any:
        """A launcher; with ``tune``, one that times the schedule's knobs (TUNE_SPACE) on the
        sizes of its first call and keeps the fastest (backends/autotune.py)."""
        if target != "llvm":
            raise ValueError("only the llvm target runs here; use emit_cuda for CUDA source")
        if not tune:
            return _Launcher(program, self._lib(program, target))
        from .autotune import TunedLauncher, Variant
        grid = [dict(DEFAULT_KNOBS)] + [
            {"lanes": la, "chunks": ch} for la in TUNE_SPACE["lanes"]
            for ch in TUNE_SPACE["chunks"] if {"lanes": la, "chunks": ch} != DEFAULT_KNOBS]
        variants = [Variant(k, program_script(program, target, k),
                            lambda k=k: _Launcher(program, self._lib(program, target, k)))
                    for k in grid]
        return TunedLauncher(variants, target=str(_target(target)))

    def emit_cuda(self, program: KernelProgram) -> str:
        """TVM's CUDA C source for the program (sm_90a); no GPU or nvcc needed."""
        if not program.kernels:
            return ""
        lib = self._lib(program, "cuda")
        mod = getattr(lib, "mod", lib)
        return "\n".join(m.inspect_source() for m in mod.imports if m.kind == "cuda")
