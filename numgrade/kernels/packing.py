"""Packed low-precision storage of a kernel program's outputs: an option of the emitted kernels.

By default every e2m1/e4m3/e8m0 output element is one byte code, rows in row-major order. Two
storage options change what the *kernels* write (so every backend, which only prints primitives,
gets them), not what the host does afterwards:

* ``packed_e2m1``: an e2m1 output ``[..., N]`` (N even) is stored as ``uint8[..., N/2]``, element
  ``2j`` in the low nibble and ``2j+1`` in the high nibble: the layout of PyTorch's
  ``torch.float4_e2m1fn_x2`` (``torch/headeronly/util/Float4_e2m1fn_x2.h``: val0 in bits 3..0)
  and of CUDA's ``__nv_fp4x2_e2m1`` (``cuda_fp4.hpp``: ``.x`` low; the PTX
  ``cvt.rn.satfinite.e2m1x2.f32 d, hi, lo`` it uses takes the high element first). The
  rewrite: the loop (or grid axis) that stores the output is unrolled by two, its variable
  substituted by ``2i`` and ``2i+1`` (the second copy renamed), and the two codes are combined
  with a shift and an or into one byte store at ``index / 2``. That is only right when the store
  index ``f`` satisfies ``f(2i)`` even and ``f(2i+1) = f(2i) + 1``; ``pairing.py`` proves it by
  an abstract interpretation of the index (parity of each term, the loop variable with
  coefficient one, ``mod``/``div`` by even sizes), and anything it cannot prove is a GradeError,
  never a silent wrong layout. Loads of a packed buffer by a later kernel read the nibble back.
* ``scale_layout="swizzled_128x4"``: a block-scale output (e4m3 or e8m0 ``[M, C]`` next to an
  e2m1 ``[M, 16 C]`` or ``[M, 32 C]`` output) is stored in the tiled layout of Blackwell's
  block-scaled MMA, as documented for cuBLAS ("1D Block Scaling Factors Layout",
  https://docs.nvidia.com/cuda/cublas/index.html#d-block-scaling-factors-layout; also
  https://nvidia.github.io/cudnn-frontend/mxfp8-scale-factor-128x4-layout/ and the
  ``to_blocked`` helper of torchao's ``prototype/mx_formats``): tiles of 128 rows x 4 scale columns,
  each a contiguous 512-byte block laid out ``[32][4][4]``, offset in the tile
  ``(r % 32) * 16 + ((r % 128) // 32) * 4 + c % 4``, tiles ordered row-tile-major, rows padded
  to a multiple of 128 and columns to a multiple of 4. The store index is rewritten; a first
  kernel zero-fills the whole buffer, so the padding is zero without help from the host.

Results in these layouts come back as ``uint8`` arrays (torch.uint8 tensors), the packed one of
shape ``[..., N/2]``, the swizzled one flat; :func:`unpack_e2m1` and :func:`unswizzle_scales`
map them back to one code per element.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import gcd
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import GradeError
from ..ir import nodes as N
from ..ir.dims import Dim, divisible, shape_str
from .ir import (IDENT_RE, Assign, Decl, KExpr, Kernel, KernelProgram, Let, Loop, Reduce,
                 ScalarParam, Stmt, Store, const, load, select, var, walk_exprs)
from .pairing import INV0, STEP, Pairing

SCALE_LAYOUTS = ("rowmajor", "swizzled_128x4")
TILE_ROWS, TILE_COLS, TILE_BYTES = 128, 4, 512
SCALE_BLOCKS = (16, 32)  # NVFP4 and MXFP4 block lengths
I64 = "i64"


# ---------------------------------------------------------------------------------------------
# options and what they do to an output
@dataclass(frozen=True)
class StorageOptions:
    """How the kernels store low-precision outputs (the defaults are one code per element)."""

    packed_e2m1: bool = False
    scale_layout: str = "rowmajor"

    @staticmethod
    def make(packed_e2m1: Any = False, scale_layout: Any = "rowmajor") -> "StorageOptions":
        """Checked options: a GradeError names the accepted values."""
        if not isinstance(packed_e2m1, (bool, np.bool_)):
            raise GradeError(f"packed_e2m1 must be True or False, got {packed_e2m1!r:.40}")
        if not isinstance(scale_layout, str) or scale_layout not in SCALE_LAYOUTS:
            raise GradeError(f"unknown scale_layout {scale_layout!r:.40} (choose one of: "
                             f"{', '.join(SCALE_LAYOUTS)})")
        return StorageOptions(bool(packed_e2m1), scale_layout)

    @property
    def is_default(self) -> bool:
        return not self.packed_e2m1 and self.scale_layout == "rowmajor"


@dataclass(frozen=True)
class StoredOutput:
    """An output buffer whose bytes are not one code per logical element."""

    kind: str  # 'e2m1x2' | 'swizzled_128x4'
    result: int  # the first function result it holds
    logical: tuple[Dim, ...]  # the result's shape

    def stored_shape(self, env: Mapping[str, int], fn_name: str) -> tuple[int, ...]:
        """The uint8 array shape for bound sizes (GradeError for an odd packed axis)."""
        sizes = []
        for d in self.logical:
            v = d.evaluate(env)
            if v.denominator != 1:
                raise GradeError(f"{fn_name}(): size {d} is not an integer for these inputs")
            sizes.append(int(v))
        if self.kind == "e2m1x2":
            if sizes[-1] % 2:
                raise GradeError(
                    f"{fn_name}(): result {self.result} is e2m1{shape_str(self.logical)} with "
                    f"last dimension {self.logical[-1]} = {sizes[-1]}, which is odd; "
                    "packed_e2m1 stores two codes per byte and needs it even")
            return tuple(sizes[:-1]) + (sizes[-1] // 2,)
        rows, cols = sizes
        return (swizzled_size(rows, cols),)


def swizzled_size(rows: int, cols: int) -> int:
    """Bytes of a [rows, cols] scale matrix in the 128x4 tiled layout (with its padding)."""
    return -(-rows // TILE_ROWS) * TILE_ROWS * (-(-cols // TILE_COLS) * TILE_COLS)


# ---------------------------------------------------------------------------------------------
# host-side helpers: back to one code per element
def unpack_e2m1(packed):
    """uint8 ``[..., N/2]`` (two e2m1 codes a byte, low nibble first) -> uint8 codes ``[..., N]``.

    numpy in, numpy out; a torch tensor in, a torch tensor out.
    """
    a, back = _as_uint8(packed, "unpack_e2m1")
    if a.ndim == 0:
        raise GradeError("unpack_e2m1: need an array of at least one dimension")
    out = np.empty(a.shape[:-1] + (2 * a.shape[-1],), dtype=np.uint8)
    out[..., 0::2] = a & 0x0F
    out[..., 1::2] = a >> 4
    return back(out)


def unswizzle_scales(swizzled, rows: int, cols: int):
    """The 128x4-tiled scale bytes -> uint8 ``[rows, cols]`` in row-major order."""
    a, back = _as_uint8(swizzled, "unswizzle_scales")
    rows, cols = int(rows), int(cols)
    if rows < 0 or cols < 0:
        raise GradeError("unswizzle_scales: rows and cols must not be negative")
    want = swizzled_size(rows, cols)
    if a.size != want:
        raise GradeError(f"unswizzle_scales: [{rows}, {cols}] scales take {want} bytes in the "
                         f"128x4 layout, got {a.size}")
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    return back(a.reshape(-1)[_swizzle_offsets(r, c, cols)].copy())


def _swizzle_offsets(r, c, cols):
    """The tiled offset of scale (r, c), for numpy integer arrays (same formula as the kernels)."""
    tiles_per_row = -(-cols // TILE_COLS)
    return (((r // TILE_ROWS) * tiles_per_row + c // TILE_COLS) * TILE_BYTES
            + (r % 32) * 16 + ((r % TILE_ROWS) // 32) * 4 + c % TILE_COLS)


def _as_uint8(x, who: str) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    if type(x).__module__.startswith("torch") and hasattr(x, "detach"):
        import torch

        if x.dtype != torch.uint8:
            raise GradeError(f"{who}: need a torch.uint8 tensor, got {x.dtype}")
        return x.detach().cpu().numpy(), lambda a: torch.from_numpy(a)
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise GradeError(f"{who}: need a uint8 array, got {a.dtype}")
    return a, lambda b: b


def to_family(raw: np.ndarray, family: str):
    """A stored uint8 result in the caller's array family."""
    if family == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(raw))
    return raw


# ---------------------------------------------------------------------------------------------
# the program rewrite
def apply_storage(program: KernelProgram, fn: N.Function, opts: StorageOptions) -> KernelProgram:
    """``program`` with the storage options applied (a new program; the input is not changed).

    The returned program carries ``layouts``: output buffer name -> :class:`StoredOutput`, which
    the host runtime uses to allocate the buffers and to hand the bytes back undecoded.
    """
    if opts.is_default:
        return program
    layouts = _plan(program, fn, opts)
    rw = _Rewriter(program, fn, layouts)
    kernels = [rw.kernel(k) for k in program.kernels]
    zero = [rw.zero_kernel(name) for name, lay in layouts.items()
            if lay.kind == "swizzled_128x4"]
    buffers = dict(program.buffers)
    for name, lay in layouts.items():
        if lay.kind == "e2m1x2":
            b = buffers[name]
            buffers[name] = dataclasses.replace(
                b, shape=b.shape[:-1] + (b.shape[-1].divide(2),), packed=True)
    out = dataclasses.replace(program, buffers=buffers, kernels=zero + kernels, dims=rw.dims)
    out.constants = getattr(program, "constants", {})  # type: ignore[attr-defined]
    out.layouts = layouts  # type: ignore[attr-defined]
    return out


def _plan(program: KernelProgram, fn: N.Function, opts: StorageOptions) -> dict[str, StoredOutput]:
    layouts: dict[str, StoredOutput] = {}
    e2m1 = []
    for i, (name, r) in enumerate(zip(program.outputs, fn.results)):
        b = program.buffers[name]
        if b.fmt != "e2m1" or name in layouts:
            continue
        e2m1.append(r.shape)
        if not opts.packed_e2m1:
            continue
        if not r.shape:
            raise GradeError(f"packed_e2m1: result {i} of {fn.name}() is a scalar e2m1; only "
                             "arrays (paired along their last axis) can be packed")
        n = r.shape[-1].int_value()
        if n is not None and n % 2:
            raise GradeError(f"packed_e2m1: result {i} of {fn.name}() is e2m1"
                             f"{shape_str(r.shape)}, whose last dimension {n} is odd; two "
                             "codes per byte need it even")
        assert b.storage == "u8", b.storage
        layouts[name] = StoredOutput("e2m1x2", i, tuple(r.shape))
    if opts.packed_e2m1 and not layouts:
        raise GradeError(f"packed_e2m1: {fn.name}() has no e2m1 result to pack")
    if opts.scale_layout == "swizzled_128x4":
        found = False
        for i, (name, r) in enumerate(zip(program.outputs, fn.results)):
            b = program.buffers[name]
            if b.fmt in ("e4m3", "e8m0") and len(r.shape) == 2 and name not in layouts and any(
                    len(s) == 2 and s[0] == r.shape[0] and any(r.shape[1] * k == s[1]
                                                               for k in SCALE_BLOCKS)
                    for s in e2m1):
                layouts[name] = StoredOutput("swizzled_128x4", i, tuple(r.shape))
                found = True
        if not found:
            raise GradeError(f"scale_layout='swizzled_128x4': {fn.name}() has no block-scale "
                             "result (an e4m3 or e8m0 [M, N/16] or [M, N/32] next to an e2m1 "
                             "[M, N] result)")
    return layouts


class _Rewriter:
    """Rewrites the kernels of one program for a set of stored-output layouts."""

    def __init__(self, program: KernelProgram, fn: N.Function, layouts: dict[str, StoredOutput]):
        self.program, self.fn = program, fn
        self.dims: dict[str, Dim] = dict(program.dims)
        self.packed = {n for n, lay in layouts.items() if lay.kind == "e2m1x2"}
        self.swizzled = {n: lay for n, lay in layouts.items() if lay.kind == "swizzled_128x4"}
        moduli = dict(fn.moduli())
        self.even_dims: set[Dim] = set()
        for n in self.packed:
            last = layouts[n].logical[-1]
            s = last.plain_symbol()
            if s is not None:
                m = moduli.get(s, 1)
                moduli[s] = m * 2 // gcd(m, 2)
            else:
                self.even_dims.add(last)
        self.moduli = moduli
        self.names: set[str] = set()

    # --- sizes as kernel expressions ----------------------------------------------------
    def even(self, name: str) -> bool:
        d = self.dims.get(name)
        return d is not None and (divisible(d, 2, self.moduli) or d in self.even_dims)

    def dim_expr(self, d: Dim, stem: str) -> KExpr:
        n = d.int_value()
        if n is not None:
            return const(n, I64)
        for name, e in self.dims.items():
            if e == d:
                return var(name, I64)
        name = self.fresh_dim(stem)
        self.dims[name] = d
        return var(name, I64)

    def fresh_dim(self, stem: str) -> str:
        name, k = stem, 0
        while name in self.dims or name in self.program.buffers:
            k += 1
            name = f"{stem}{k}"
        return name

    # --- one kernel ---------------------------------------------------------------------
    def kernel(self, k: Kernel) -> Kernel:
        self.names = _all_names(k)
        lets = {s.name: s.value for s in _walk(k.body) if isinstance(s, Let)}
        body = _map_stmts(k.body, self.rewrite_expr_fn())
        body = self.swizzle_stores(body)
        body = self.pack_loops(body, lets, k)
        if any(isinstance(s, Store) and s.buffer in self.packed for s in body):
            return self.finish(*self.pack_grid(k, body, lets))
        return self.finish(k, body)

    def finish(self, k: Kernel, body: tuple[Stmt, ...]) -> Kernel:
        """``k`` with a new body; scalar parameters for any size variable it now uses."""
        used: set[str] = set()
        _vars_of(list(walk_exprs(body)) + list(k.grid), used)
        have = {p.name for p in k.scalars}
        extra = [ScalarParam(n, I64) for n in sorted(used) if n in self.dims and n not in have]
        scalars = tuple(sorted(k.scalars + tuple(extra), key=lambda p: p.name))
        return dataclasses.replace(k, body=body, scalars=scalars)

    def rewrite_expr_fn(self) -> Callable[[KExpr], KExpr]:
        """Loads of packed buffers read their nibble; loads of swizzled ones the tiled byte."""
        memo: dict[KExpr, KExpr] = {}

        def leaf(e: KExpr) -> KExpr:
            if e.op != "load":
                return e
            buf, idx = e.attrs[0], e.args[0]
            if buf in self.packed:
                byte = load(buf, idx // 2, "u8").cast("u32")
                shift = ((idx % 2) * 4).cast("u32")
                return ((byte >> shift) & const(15, "u32")).cast("u8")
            if buf in self.swizzled:
                return load(buf, self.swizzle_index(buf, idx), e.dtype)
            return e
        return lambda e: _transform(e, leaf, memo)

    def swizzle_index(self, buf: str, idx: KExpr) -> KExpr:
        rows_dim, cols_dim = self.swizzled[buf].logical
        cols = self.dim_expr(cols_dim, "scale_cols")
        r, c = idx // cols, idx % cols
        tiles_per_row = (cols + (TILE_COLS - 1)) // TILE_COLS
        tile = (r // TILE_ROWS) * tiles_per_row + c // TILE_COLS
        return (tile * TILE_BYTES + (r % 32) * 16 + ((r % TILE_ROWS) // 32) * 4
                + c % TILE_COLS)

    def swizzle_stores(self, body: Sequence[Stmt]) -> tuple[Stmt, ...]:
        if not self.swizzled:
            return tuple(body)
        out: list[Stmt] = []
        for s in body:
            if isinstance(s, Store) and s.buffer in self.swizzled:
                s = Store(s.buffer, self.swizzle_index(s.buffer, s.index), s.value)
            elif isinstance(s, Loop):
                s = dataclasses.replace(s, body=self.swizzle_stores(s.body))
            elif isinstance(s, Reduce):
                s = dataclasses.replace(s, body=self.swizzle_stores(s.body))
            out.append(s)
        return tuple(out)

    # --- packing ------------------------------------------------------------------------
    def pack_loops(self, body: Sequence[Stmt], lets: Mapping[str, KExpr],
                   k: Kernel) -> tuple[Stmt, ...]:
        """Innermost first: every loop that stores a packed buffer directly is unrolled by two."""
        out: list[Stmt] = []
        for s in body:
            if isinstance(s, Loop):
                s = dataclasses.replace(s, body=self.pack_loops(s.body, lets, k))
                if any(isinstance(t, Store) and t.buffer in self.packed for t in s.body):
                    s = self.unroll_loop(s, lets, k)
            elif isinstance(s, Reduce) and any(isinstance(t, Store) and t.buffer in self.packed
                                               for t in _walk(s.body)):
                raise GradeError(f"packed_e2m1: kernel {k.name} stores a packed output inside "
                                 "a reduction, which cannot be paired")
            out.append(s)
        return tuple(out)

    def check_pairs(self, k: Kernel, ivar: str, extent: KExpr, body: Sequence[Stmt],
                    lets: Mapping[str, KExpr]) -> str | None:
        """Why the stores of ``body`` cannot be paired along ``ivar`` (None when they can)."""
        inner = {n for s in _walk(body) for n in _defined(s) if not isinstance(s, Let)}
        inner |= {s.name for s in _walk(body) if isinstance(s, Assign)}  # mutated in the loop
        pa = Pairing(ivar, lets, inner, self.even)
        if pa.of(extent) != INV0:
            return f"the extent {extent!r} of {ivar} is not known to be even"
        for s in body:
            if isinstance(s, Store) and s.buffer in self.packed and pa.of(s.index) != STEP:
                return (f"the index of {s.buffer} does not step by one along {ivar} from an even "
                        "start")
        return None

    def unroll_loop(self, loop: Loop, lets: Mapping[str, KExpr], k: Kernel) -> Loop:
        why = self.check_pairs(k, loop.var, loop.extent, loop.body, lets)
        if why is not None:
            raise GradeError(f"packed_e2m1: cannot pair the e2m1 codes stored by kernel "
                             f"{k.name}: {why}")
        half = self.fresh(loop.var + "h")
        ext = loop.extent
        ext = const(int(ext.attrs[0]) // 2, I64) if ext.op == "const" else ext // 2
        body = self.paired_body(loop.var, var(half, I64), loop.body)
        return Loop(half, ext, body, loop.kind)

    def pack_grid(self, k: Kernel, body: tuple[Stmt, ...],
                  lets: Mapping[str, KExpr]) -> tuple[Kernel, tuple[Stmt, ...]]:
        """A packed store at grid level: the grid axis it steps along is halved instead."""
        reasons = []
        for j in reversed(range(len(k.grid))):
            gv, ext = k.grid_vars[j], k.grid[j]
            why = self.check_pairs(k, gv, ext, body, lets)
            if why is None:
                break
            reasons.append(why)
        else:
            why = "; ".join(reasons) or "it runs as a single program with no axis to pair"
            raise GradeError(f"packed_e2m1: cannot pair the e2m1 codes stored by kernel "
                             f"{k.name}: {why}")
        half = self.fresh(gv + "h")
        if ext.op == "const":
            new_ext = const(int(ext.attrs[0]) // 2, I64)
        else:
            new_ext = self.dim_expr(self.dims[ext.attrs[0]].divide(2), ext.attrs[0] + "_half")
        grid = k.grid[:j] + (new_ext,) + k.grid[j + 1:]
        gvars = k.grid_vars[:j] + (half,) + k.grid_vars[j + 1:]
        new_body = self.paired_body(gv, var(half, I64), body)
        return dataclasses.replace(k, grid=grid, grid_vars=gvars), new_body

    def paired_body(self, ivar: str, half: KExpr, body: Sequence[Stmt]) -> tuple[Stmt, ...]:
        """Two copies of ``body`` at ``ivar = 2h`` and ``2h + 1``; each pair of packed stores
        becomes one byte store after the second copy's value."""
        rename = {n: self.fresh(n + "_b") for s in _walk(body) for n in _defined(s)}
        rename[ivar] = self.fresh(ivar + "_b")
        memo: dict[KExpr, KExpr] = {}

        def ren(e: KExpr) -> KExpr:
            return _transform(e, lambda x: var(rename[x.attrs[0]], x.dtype)
                              if x.op == "var" and x.attrs[0] in rename else x, memo)

        first: list[Stmt] = [Let(ivar, half * 2)]
        second: list[Stmt] = [Let(rename[ivar], half * 2 + 1)]
        for s, s1 in zip(body, _map_stmts(body, ren, lambda n: rename.get(n, n))):
            if isinstance(s, Store) and s.buffer in self.packed:
                lo = s.value.cast("u32")
                hi = s1.value.cast("u32") << const(4, "u32")
                second.append(Store(s.buffer, s.index // 2, (lo | hi).cast("u8")))
            else:
                first.append(s)
                second.append(s1)
        return tuple(first + second)

    def fresh(self, stem: str) -> str:
        name, k = stem, 0
        while name in self.names or name in self.dims:
            k += 1
            name = f"{stem}{k}"
        assert IDENT_RE.match(name), name
        self.names.add(name)
        return name

    # --- zero-fill of a swizzled buffer -------------------------------------------------
    def zero_kernel(self, buf: str) -> Kernel:
        """Writes 0 over the whole tiled buffer (padding included) before any scale is stored:
        grid over the M scale rows, each program clearing one chunk (the last index clamped, so
        overlapping programs write the same zero)."""
        rows_dim, cols_dim = self.swizzled[buf].logical
        rows = self.dim_expr(rows_dim, "scale_rows")
        cols = self.dim_expr(cols_dim, "scale_cols")
        total = (((rows + (TILE_ROWS - 1)) // TILE_ROWS) * TILE_ROWS
                 * (((cols + (TILE_COLS - 1)) // TILE_COLS) * TILE_COLS))
        chunk = (total + rows - 1) // rows  # an extent of sizes only (Triton sizes its block)
        g, i, n = var("g0", I64), var("i1", I64), var("total", I64)
        at = var("at", I64)
        loop = Loop("i1", chunk, (Let("at", g * chunk + i),
                                  Store(buf, select(at.lt(n), at, n - 1), const(0, "u8"))),
                    "parallel")
        used: set[str] = set()
        _vars_of([chunk, total, rows], used)
        scalars = tuple(ScalarParam(s, I64) for s in sorted(used) if s in self.dims)
        name = f"k_zero_{buf}"
        taken = {kk.name for kk in self.program.kernels}
        while name in taken:
            name += "_"
        return Kernel(name, (rows,), ("g0",), (Let("total", total), loop), (buf,), scalars,
                      f"zero-fill of the 128x4-tiled scale buffer {buf}")


# ---------------------------------------------------------------------------------------------
# statement and expression plumbing
def _transform(e: KExpr, leaf: Callable[[KExpr], KExpr], memo: dict[KExpr, KExpr]) -> KExpr:
    """Rebuild ``e`` bottom-up, passing every rebuilt node through ``leaf``."""
    hit = memo.get(e)
    if hit is not None:
        return hit
    args = tuple(_transform(a, leaf, memo) for a in e.args)
    node = e if all(x is y for x, y in zip(args, e.args)) else KExpr(e.op, args, e.attrs, e.dtype)
    out = leaf(node)
    memo[e] = out
    return out


def _map_stmts(stmts: Sequence[Stmt], fe: Callable[[KExpr], KExpr],
               fn: Callable[[str], str] = lambda n: n) -> tuple[Stmt, ...]:
    """The statements with every expression mapped by ``fe`` and every defined name by ``fn``."""
    out: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Let):
            out.append(Let(fn(s.name), fe(s.value)))
        elif isinstance(s, Decl):
            out.append(Decl(fn(s.name), fe(s.init)))
        elif isinstance(s, Assign):
            out.append(Assign(fn(s.name), fe(s.value)))
        elif isinstance(s, Store):
            out.append(Store(s.buffer, fe(s.index), fe(s.value)))
        elif isinstance(s, Loop):
            out.append(Loop(fn(s.var), fe(s.extent), _map_stmts(s.body, fe, fn), s.kind))
        elif isinstance(s, Reduce):
            out.append(Reduce(fn(s.name), fn(s.var), fe(s.extent), _map_stmts(s.body, fe, fn),
                              fe(s.value), fe(s.combine), fe(s.init), s.order, s.kind,
                              fe(s.leaf) if s.leaf is not None else None))
        else:  # pragma: no cover
            raise TypeError(s)
    return tuple(out)


def _walk(stmts: Sequence[Stmt]):
    for s in stmts:
        yield s
        if isinstance(s, (Loop, Reduce)):
            yield from _walk(s.body)


def _defined(s: Stmt) -> tuple[str, ...]:
    if isinstance(s, (Let, Decl)):
        return (s.name,)
    if isinstance(s, Loop):
        return (s.var,)
    if isinstance(s, Reduce):
        return (s.name, s.var)
    return ()


def _vars_of(roots: Sequence[KExpr], acc: set[str]) -> None:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if e.op == "var":
            acc.add(e.attrs[0])
        stack.extend(e.args)


def _all_names(k: Kernel) -> set[str]:
    names = set(k.grid_vars) | {p.name for p in k.scalars}
    names |= {n for s in _walk(k.body) for n in _defined(s)}
    _vars_of(list(walk_exprs(k.body)) + list(k.grid), names)
    return names | {"acc_a", "acc_b"}
