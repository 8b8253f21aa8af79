"""The kernel-level representation shared by every code-generating backend.

A :class:`KernelProgram` is what a function becomes after fusion: an ordered list of
:class:`Kernel` s over named buffers. Each kernel is a *grid* of independent program instances
(one per grid point) running a short list of statements over scalars:

* :class:`Let` binds an SSA scalar; :class:`Decl` / :class:`Assign` are the only mutable scalars
  (accumulators of serial loops).
* :class:`Loop` is a loop over ``range(extent)``. ``kind="parallel"``: iterations are independent
  (only :class:`Let`, :class:`Store` and nested reductions inside), so a backend may vectorise it
  (Triton does, over a block of lanes). ``kind="serial"``: runs in order and may
  :class:`Assign` to declared scalars.
* :class:`Reduce` folds ``value`` over ``range(extent)`` with a combine expression, in a stated
  order: ``seq`` (left to right), ``pairwise`` (the reference's level-by-level adjacent pairs,
  an odd element carried) or ``any`` (the backend's choice: exact combines such as max, and
  sums under the fast contract).
* :class:`Store` writes a storage-typed scalar to a buffer at a flat (row-major) index.

Expressions are one immutable, hash-consed node class, :class:`KExpr` (op, args, attrs,
dtype), over the primitive scalar types ``f64 f32 i64 i32 u64 u32 u16 u8 bool``. Every rounding
to a number format has already been expanded into these primitives (``kernel/legalize.py``), so
a backend only prints primitives: it never needs to know what e2m1 is. The primitive semantics:

=============  =====================================================================
``const``      attrs ``(value,)``; a Python int or float (inf and NaN allowed)
``var``        attrs ``(name,)``; a loop variable, a Let/Decl name, a size or a scalar param
``load``       attrs ``(buffer,)``, args ``(flat_index,)``; the stored value, storage dtype
``add sub mul``  IEEE in ``dtype`` (no fused multiply-add); ints wrap modulo 2**bits
``div``        floats: IEEE division; ints: quotient of non-negative operands
``mod``        ints only: remainder of non-negative operands
``neg abs``    floats: sign flip / clear (exact); ints: two's complement
``lt le gt ge eq ne``  comparisons (IEEE: NaN compares false except ``ne``), dtype bool
``and or not`` booleans
``band bor bxor shl shr``  ints; ``shr`` is logical for unsigned, arithmetic for signed
``select``     args ``(cond, a, b)``
``cast``       value conversion: int->float exact or RNE; float->float RNE (f64->f32 keeps
               inf/NaN, overflows to inf, rounds subnormals correctly); float->int truncates
               toward zero (operands are always in range); bool->int 0/1; int->bool ``!= 0``
``bitcast``    reinterpret bits between same-width types (f64<->i64/u64, f32<->i32/u32)
``floor ceil trunc rint sqrt``  floats; ``rint`` rounds half to even; sqrt IEEE
``exp log tanh sin cos exp2 log2``  f64: the platform's double-precision libm; f32 (fast
               contract only): the target's single-precision library (libdevice, libm)
=============  =====================================================================
"""

from __future__ import annotations

import re
import struct
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence, Union

from ..ir.dims import Dim

# every identifier in a KernelProgram matches this; backends refuse anything else
IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

DTYPES = ("f64", "f32", "i64", "i32", "u64", "u32", "u16", "u8", "bool")
FLOAT_DTYPES = ("f64", "f32")
INT_DTYPES = ("i64", "i32", "u64", "u32", "u16", "u8")
DTYPE_BITS = {"f64": 64, "f32": 32, "i64": 64, "i32": 32, "u64": 64, "u32": 32, "u16": 16,
              "u8": 8, "bool": 8}

BINARY_OPS = ("add", "sub", "mul", "div", "mod", "band", "bor", "bxor", "shl", "shr",
              "and", "or")
COMPARE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
UNARY_OPS = ("neg", "abs", "not", "floor", "ceil", "trunc", "rint", "sqrt")
MATH_OPS = ("exp", "log", "tanh", "sin", "cos", "exp2", "log2")
ALL_OPS = (("const", "var", "load", "select", "cast", "bitcast") + BINARY_OPS + COMPARE_OPS
           + UNARY_OPS + MATH_OPS)


class KExpr:
    """An immutable, hash-consed scalar expression."""

    __slots__ = ("op", "args", "attrs", "dtype", "__weakref__")
    _cache: "weakref.WeakValueDictionary[tuple, KExpr]" = weakref.WeakValueDictionary()

    op: str
    args: tuple["KExpr", ...]
    attrs: tuple[Any, ...]
    dtype: str

    def __new__(cls, op: str, args: Sequence["KExpr"] = (), attrs: Sequence[Any] = (),
                dtype: str = "f64") -> "KExpr":
        assert op in ALL_OPS, op
        assert dtype in DTYPES, dtype
        key = (op, tuple(args), _attr_key(attrs), dtype)
        hit = cls._cache.get(key)
        if hit is not None:
            return hit
        e = object.__new__(cls)
        object.__setattr__(e, "op", op)
        object.__setattr__(e, "args", tuple(args))
        object.__setattr__(e, "attrs", tuple(attrs))
        object.__setattr__(e, "dtype", dtype)
        cls._cache[key] = e
        return e

    def __setattr__(self, *_):
        raise AttributeError("KExpr is immutable")

    def __repr__(self) -> str:
        return format_expr(self)

    # --- convenience constructors, so that macro code reads like arithmetic -----------------
    def _bin(self, op: str, other: "KExpr | int | float", dtype: str | None = None) -> "KExpr":
        o = other if isinstance(other, KExpr) else const(other, self.dtype)
        return KExpr(op, (self, o), (), dtype or self.dtype)

    def __add__(self, o): return self._bin("add", o)
    def __sub__(self, o): return self._bin("sub", o)
    def __mul__(self, o): return self._bin("mul", o)
    def __truediv__(self, o): return self._bin("div", o)
    def __floordiv__(self, o): return self._bin("div", o)
    def __mod__(self, o): return self._bin("mod", o)
    def __and__(self, o): return self._bin("band" if self.dtype != "bool" else "and", o)
    def __or__(self, o): return self._bin("bor" if self.dtype != "bool" else "or", o)
    def __xor__(self, o): return self._bin("bxor", o)
    def __lshift__(self, o): return self._bin("shl", o)
    def __rshift__(self, o): return self._bin("shr", o)
    def __neg__(self): return KExpr("neg", (self,), (), self.dtype)
    def lt(self, o): return self._bin("lt", o, "bool")
    def le(self, o): return self._bin("le", o, "bool")
    def gt(self, o): return self._bin("gt", o, "bool")
    def ge(self, o): return self._bin("ge", o, "bool")
    def eq(self, o): return self._bin("eq", o, "bool")
    def ne(self, o): return self._bin("ne", o, "bool")
    def cast(self, dtype: str) -> "KExpr":
        return self if dtype == self.dtype else KExpr("cast", (self,), (), dtype)
    def bitcast(self, dtype: str) -> "KExpr":
        return self if dtype == self.dtype else KExpr("bitcast", (self,), (), dtype)


def _attr_key(attrs: Sequence[Any]) -> tuple:
    # 0.0 and -0.0, 1 and 1.0, NaN and -NaN must not hash-cons together: floats by their bits
    return tuple(("float", struct.pack("<d", a)) if isinstance(a, float)
                 else (type(a).__name__, repr(a)) if isinstance(a, int) else a for a in attrs)


def float_bits(value: float, dtype: str, signed: bool = False) -> int:
    """The IEEE bit pattern of ``value`` as an f32 or f64 (an unsigned integer, or the signed
    one of the same width); ``value`` must be representable in ``dtype`` (inf, NaN allowed)."""
    code = {("f32", False): "<I", ("f32", True): "<i", ("f64", False): "<Q",
            ("f64", True): "<q"}[(dtype, signed)]
    return struct.unpack(code, struct.pack("<f" if dtype == "f32" else "<d", value))[0]


def wrap_int(value: int, dtype: str) -> int:
    """``value`` modulo 2**bits, as the (signed or unsigned) integer of ``dtype``: the kernel
    IR's integer arithmetic wraps, and every backend prints its constants so."""
    bits = DTYPE_BITS[dtype]
    v = int(value) & ((1 << bits) - 1)
    if dtype.startswith("i") and v >= 1 << (bits - 1):
        v -= 1 << bits
    return v


def const(value: int | float, dtype: str) -> KExpr:
    if dtype in FLOAT_DTYPES:
        value = float(value)
    elif dtype == "bool":
        value = bool(value)
    else:
        value = int(value)
    return KExpr("const", (), (value,), dtype)


def var(name: str, dtype: str) -> KExpr:
    return KExpr("var", (), (name,), dtype)


def load(buffer: str, index: KExpr, dtype: str) -> KExpr:
    return KExpr("load", (index,), (buffer,), dtype)


def select(c: KExpr, a: KExpr, b: KExpr) -> KExpr:
    assert c.dtype == "bool" and a.dtype == b.dtype, (c.dtype, a.dtype, b.dtype)
    return KExpr("select", (c, a, b), (), a.dtype)


def unary(op: str, a: KExpr) -> KExpr:
    return KExpr(op, (a,), (), "bool" if op == "not" else a.dtype)


# ---------------------------------------------------------------------------------------------
# statements
@dataclass(frozen=True)
class Let:
    name: str
    value: KExpr


@dataclass(frozen=True)
class Decl:
    name: str
    init: KExpr


@dataclass(frozen=True)
class Assign:
    name: str
    value: KExpr


@dataclass(frozen=True)
class Store:
    buffer: str
    index: KExpr
    value: KExpr


@dataclass(frozen=True)
class Loop:
    var: str
    extent: KExpr
    body: tuple["Stmt", ...]
    kind: str = "parallel"  # 'parallel' | 'serial'


@dataclass(frozen=True)
class Reduce:
    """``name = fold(combine, [value at var = 0 .. extent-1])`` in ``order``.

    ``combine`` is an expression in the variables ``acc_a`` and ``acc_b`` (both of ``dtype``);
    ``init`` is the result for an empty range. ``body`` computes what ``value`` needs, per
    iteration. ``pairwise``: adjacent pairs level after level; an odd element out is carried
    unchanged (the reference adds -0.0, which changes nothing once ``leaf`` has been applied).
    ``leaf`` (in ``acc_b``) maps each element to the accumulator before it takes part.
    """

    name: str
    var: str
    extent: KExpr
    body: tuple["Stmt", ...]
    value: KExpr
    combine: KExpr
    init: KExpr
    order: str  # 'seq' | 'pairwise' | 'any'
    kind: str  # 'sum' | 'max' | 'min' (what combine does; a hint for backends)
    leaf: KExpr | None = None

    @property
    def dtype(self) -> str:
        return self.combine.dtype


Stmt = Union[Let, Decl, Assign, Store, Loop, Reduce]

def acc_vars(dtype: str) -> tuple[KExpr, KExpr]:
    return var("acc_a", dtype), var("acc_b", dtype)


@dataclass(frozen=True)
class BufferDecl:
    """A named global buffer: a program input, output or a temporary between kernels.

    ``fmt`` is the number format of the logical elements; ``storage`` the primitive dtype of
    one stored element (codes for sub-32-bit formats); ``packed`` e2m1 keeps two codes a byte
    (low nibble first), so ``load``/``store`` of it address bytes.
    """

    name: str
    fmt: str
    shape: tuple[Dim, ...]
    storage: str
    role: str  # 'in' | 'out' | 'temp'
    packed: bool = False


@dataclass(frozen=True)
class ScalarParam:
    """A scalar kernel argument set by the host: a size symbol or a random-stream key half."""

    name: str
    dtype: str


@dataclass(frozen=True)
class Kernel:
    name: str
    grid: tuple[KExpr, ...]  # i64 extents (consts or size params); one program per point
    grid_vars: tuple[str, ...]  # bound row-major from the program id: the last varies fastest
    body: tuple[Stmt, ...]
    buffers: tuple[str, ...]  # the buffers it reads or writes, in argument order
    scalars: tuple[ScalarParam, ...]
    note: str = ""  # what was fused into it, for people

    def grid_extents(self, scalars: dict[str, int]) -> tuple[int, ...]:
        """The grid's extents for given scalar argument values."""
        out = []
        for g in self.grid:
            out.append(int(g.attrs[0]) if g.op == "const" else int(scalars[g.attrs[0]]))
        return tuple(out)


@dataclass
class KernelProgram:
    """A function after fusion and lowering: buffers, kernels in launch order, stream keys."""

    name: str
    buffers: dict[str, BufferDecl]
    kernels: list[Kernel]
    inputs: list[str]  # buffer names in parameter order
    outputs: list[str]  # buffer names in result order
    result_is_tuple: bool
    sizes: list[str]  # size symbols, bound by the host from input shapes
    dims: dict[str, Dim] = field(default_factory=dict)  # i64 scalar param name -> its size
    # key-param prefix -> stream path: the ordinals of the calls leading to the consumer, then its
    # own (the key is stream_key folded along it from the seed)
    streams: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fusion: Any = None  # the FusionPlan it came from (bytes before/after), for reports
    contract: str = "exact"  # "exact": bit-identical to the reference; "fast" (SPEC section 3)


# ---------------------------------------------------------------------------------------------
# text dump (Triton's "each IR dumpable" and xDSL's printer, in small)
def format_expr(e: KExpr, names: dict[KExpr, str] | None = None) -> str:
    if names and e in names:
        return names[e]
    if e.op == "const":
        return f"{e.attrs[0]!r}:{e.dtype}"
    if e.op == "var":
        return e.attrs[0]
    args = ", ".join(format_expr(a, names) for a in e.args)
    if e.op == "load":
        return f"{e.attrs[0]}[{args}]"
    if e.op in ("cast", "bitcast"):
        return f"{e.op}<{e.dtype}>({args})"
    return f"{e.op}({args})"


def format_stmts(stmts: Sequence[Stmt], indent: str = "  ") -> Iterator[str]:
    for s in stmts:
        if isinstance(s, Let):
            yield f"{indent}{s.name}: {s.value.dtype} = {format_expr(s.value)}"
        elif isinstance(s, Decl):
            yield f"{indent}var {s.name}: {s.init.dtype} = {format_expr(s.init)}"
        elif isinstance(s, Assign):
            yield f"{indent}{s.name} <- {format_expr(s.value)}"
        elif isinstance(s, Store):
            yield f"{indent}{s.buffer}[{format_expr(s.index)}] = {format_expr(s.value)}"
        elif isinstance(s, Loop):
            yield f"{indent}for {s.var} in {s.kind}({format_expr(s.extent)}):"
            yield from format_stmts(s.body, indent + "  ")
        elif isinstance(s, Reduce):
            leaf = f" leaf {format_expr(s.leaf)}" if s.leaf is not None else ""
            yield (f"{indent}{s.name}: {s.dtype} = reduce {s.kind} {s.order} over {s.var} in "
                   f"range({format_expr(s.extent)}) combine {format_expr(s.combine)} init "
                   f"{format_expr(s.init)}{leaf}:")
            yield from format_stmts(s.body, indent + "  ")
            yield f"{indent}  yield {format_expr(s.value)}"
        else:  # pragma: no cover
            raise TypeError(s)


def format_kernel(k: Kernel) -> str:
    scal = "".join(f", {p.name}: {p.dtype}" for p in k.scalars)
    grid = "[" + ", ".join(format_expr(g) for g in k.grid) + "]"
    lines = [f"kernel {k.name}(" + ", ".join(k.buffers) + scal + f") grid {grid}"
             f" as ({', '.join(k.grid_vars)}):"]
    if k.note:
        lines.append(f"  # {k.note}")
    lines.extend(format_stmts(k.body))
    return "\n".join(lines)


def format_program(p: KernelProgram) -> str:
    from ..ir.dims import shape_str
    lines = [f"program {p.name}:"]
    for b in p.buffers.values():
        pk = " packed" if b.packed else ""
        lines.append(f"  buffer {b.name}: {b.fmt}{shape_str(b.shape)} as {b.storage}{pk} ({b.role})")
    for k in p.kernels:
        lines.append(format_kernel(k))
    return "\n".join(lines)


def expr_nodes(roots: Sequence[KExpr]) -> Iterator[KExpr]:
    """Every distinct node of the expression DAGs under roots, each once."""
    seen: set[KExpr] = set()
    stack = list(roots)
    while stack:
        e = stack.pop()
        if e in seen:
            continue
        seen.add(e)
        yield e
        stack.extend(e.args)


def var_names(roots: Sequence[KExpr]) -> set[str]:
    """The names of the variables the expressions under roots read."""
    return {e.attrs[0] for e in expr_nodes(roots) if e.op == "var"}


def walk_exprs(stmts: Sequence[Stmt]) -> Iterator[KExpr]:
    """Every root expression of the statements (not recursing into sub-expressions)."""
    for s in stmts:
        if isinstance(s, (Let, Assign)):
            yield s.value
        elif isinstance(s, Decl):
            yield s.init
        elif isinstance(s, Store):
            yield s.index
            yield s.value
        elif isinstance(s, Loop):
            yield s.extent
            yield from walk_exprs(s.body)
        elif isinstance(s, Reduce):
            yield s.extent
            yield from walk_exprs(s.body)
            yield s.value
            yield s.combine
            yield s.init
            if s.leaf is not None:
                yield s.leaf
