"""The host side of a kernel program: bind sizes, fill buffers, set scalars, launch, read back.

Arguments arrive as float64 arrays of exact values (the API's boundary conversion); they are
rounded into their parameter's format exactly as the reference backend does, encoded into the
buffer's storage (codes for sub-32-bit formats), and the outputs are decoded back into float64
arrays of exact values, which the API converts to the caller's array family.

``native=True`` (what the API passes for the kernel backends) is the same without the float64
round trip where none is needed: an argument that already has its buffer's storage dtype and
a format stored as itself (an f32 array for an f32 parameter; f64, i32 likewise) *is* the
buffer, flattened without a copy; the outputs come back in their format's own numpy dtype
(float32 for f32, the ml_dtypes type for e4m3, e2m1, ...; a view of the storage codes, no
decoding) rather than as float64. Every value and bit is what the float64 path gives.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from ..backends.base import NUMPY_DTYPES
from ..backends.reference import bind_arguments
from ..errors import GradeError
from ..ir.formats import from_storage, get_format, round_array, stream_key, to_storage
from .ir import KernelProgram

DEFAULT_SEED = 0


def encode_array(values: np.ndarray, fmt_name: str, storage: str) -> np.ndarray:
    """Exact float64 values of a format -> a flat array of the storage dtype."""
    fmt = get_format(fmt_name)
    v = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if fmt.kind == "bool":
        return (v != 0).astype(np.uint8)
    if fmt.kind == "int":
        return v.astype(np.int32)
    if fmt.name in ("f32", "f64"):
        return v.astype(NUMPY_DTYPES[fmt.name])
    st = to_storage(v, fmt)
    return np.ascontiguousarray(st).view(NUMPY_DTYPES[storage]).reshape(-1).copy()


def decode_array(raw: np.ndarray, fmt_name: str, shape: tuple[int, ...]) -> np.ndarray:
    fmt = get_format(fmt_name)
    if fmt.kind == "bool":
        return (raw != 0).astype(np.float64).reshape(shape)
    if fmt.kind == "int" or fmt.name in ("f32", "f64"):
        return raw.astype(np.float64).reshape(shape)
    codes = raw.view(fmt.np_dtype)
    return from_storage(codes).reshape(shape)


def _native_input(a: np.ndarray, fmt_name: str, storage: str) -> np.ndarray | None:
    """``a`` flattened (a view where it can be) when it already is the buffer's storage array:
    its dtype is the storage dtype and the format is stored as itself (f32, f64, i32)."""
    if not isinstance(a, np.ndarray) or fmt_name not in ("f32", "f64", "i32"):
        return None
    if storage != fmt_name or a.dtype != np.dtype(NUMPY_DTYPES[storage]):
        return None
    return a.reshape(-1)


def native_output(raw: np.ndarray, fmt_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A storage array as an array of its format's own numpy dtype (no float64 round trip):
    the array itself for f32, f64, i32; a view of the codes for the narrow formats."""
    fmt = get_format(fmt_name)
    want = np.dtype(fmt.np_dtype)
    if raw.dtype == want:
        return raw.reshape(shape)
    if fmt.kind == "bool" or (fmt.kind == "float" and fmt.name not in ("f32", "f64")
                              and want.itemsize == raw.dtype.itemsize):
        if fmt.kind == "bool":
            return (raw != 0).reshape(shape)
        return raw.view(want).reshape(shape)
    return decode_array(raw, fmt_name, shape)


@functools.lru_cache(maxsize=None)
def _pair_table(dtype: np.dtype) -> np.ndarray:
    """For a one-byte dtype: the float32 bit patterns of every pair of codes, indexed by the
    pair read as one little-endian uint16 (first code in the low byte)."""
    one = np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)
    bits = one.view(np.uint32).astype(np.uint64)
    i = np.arange(65536, dtype=np.uint32)
    return bits[i & 0xFF] | (bits[i >> 8] << np.uint64(32))


def widen_to_f32(x: np.ndarray) -> np.ndarray:
    """x (a one-byte float format such as e2m1 or e8m0, as ml_dtypes stores it) as float32
    holding the same values: two codes at a time through a 65536-entry table, five times as
    fast as ml_dtypes' elementwise cast on a 16M-element NVFP4 result; other arrays cast."""
    if x.dtype.itemsize != 1 or x.dtype.kind != "V" or x.size % 2:   # ml_dtypes: kind V
        return x.astype(np.float32)
    flat = np.ascontiguousarray(x).view(np.uint8).reshape(-1)
    return _pair_table(x.dtype)[flat.view(np.uint16)].view(np.float32).reshape(x.shape)


def run_program(program: KernelProgram, launcher, fn, arrays: Sequence[np.ndarray],
                seed: int | None = None, native: bool = False) -> tuple[np.ndarray, ...]:
    """Run a lowered function on float64 argument arrays; returns float64 result arrays.

    ``native``: arguments may also be arrays of other dtypes (numpy's int, uint, float and
    bool kinds; those matching their buffer are used as they are), and results come back in
    their formats' own dtypes (see the module docstring)."""
    env = bind_arguments(fn, arrays)
    seed = DEFAULT_SEED if seed is None else int(seed)
    buffers: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    layouts = getattr(program, "layouts", {})  # packed / tiled outputs (kernels/packing.py)
    for name, b in program.buffers.items():
        if name in layouts:
            shape = layouts[name].stored_shape(env, fn.name)
        else:
            shape = tuple(int(d.evaluate(env)) for d in b.shape)
        shapes[name] = shape
        n = int(np.prod(shape)) if shape else 1
        buffers[name] = np.zeros(n, dtype=NUMPY_DTYPES[b.storage])
    for name, a, p in zip(program.inputs, arrays, fn.params):
        b = program.buffers[name]
        if native:
            direct = _native_input(a, b.fmt, b.storage)
            if direct is not None and b.fmt == "f32" and \
                    getattr(program, "contract", "exact") == "exact" and np.isnan(direct).any():
                # the exact contract: an f32 input is rounded into f32 like every value, which
                # makes any NaN the positive quiet one (round_array), as the reference does
                direct = np.where(np.isnan(direct), np.float32(np.nan), direct)
            if direct is not None:
                buffers[name] = direct
                continue
        fmt = get_format(b.fmt)
        vals = np.asarray(a, dtype=np.float64)
        if fmt.name != "f64" and fmt.kind != "bool":
            vals = round_array(vals, fmt)
        buffers[name] = encode_array(vals, b.fmt, b.storage)
    for name, data in getattr(program, "constants", {}).items():
        b = program.buffers[name]
        buffers[name] = encode_array(data, b.fmt, b.storage)
    scalars: dict[str, int] = {}
    for name, d in program.dims.items():
        val = d.evaluate(env)
        if val.denominator != 1:
            raise GradeError(f"{fn.name}(): size {d} is not an integer for these inputs")
        scalars[name] = int(val)
    for name, path in program.streams.items():
        key = seed
        for ordinal in (path if isinstance(path, tuple) else (path,)):  # through rand calls
            key = stream_key(key, ordinal)
        scalars[f"{name}_lo"] = key & 0xFFFFFFFF
        scalars[f"{name}_hi"] = key >> 32
    launcher(buffers, scalars)
    # outputs in a packed or tiled layout come back as their uint8 bytes, undecoded
    outs = []
    for o in program.outputs:
        raw = buffers[o]
        if o in layouts:
            outs.append(raw.reshape(shapes[o]))
        elif native:
            if o in program.inputs:  # never hand back the caller's own array
                raw = raw.copy()
            outs.append(native_output(raw, program.buffers[o].fmt, shapes[o]))
        else:
            outs.append(decode_array(raw, program.buffers[o].fmt, shapes[o]))
    return tuple(outs)
