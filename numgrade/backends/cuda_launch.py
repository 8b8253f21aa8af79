"""Running printed kernels: on the CPU (the host print, through ctypes) and on a CUDA GPU.

The GPU side uses the CUDA driver API through ctypes (``cuModuleLoadData`` on the cubin,
``cuLaunchKernel`` on each ``extern "C"`` kernel, one thread per grid point), in the primary
context of device 0, the one the CUDA runtime, and so PyTorch, uses as well. Device memory is
PyTorch's (``torch.empty(..., device="cuda:0")``, its caching allocator and current stream) when
torch has CUDA, else ``cuMemAlloc``; either way a launcher keeps its buffers on the device
between calls and copies only inputs in and outputs out. :meth:`CudaLauncher.run_device` takes
device pointers the caller already holds (a torch CUDA tensor's ``data_ptr()``), no copies.
"""

from __future__ import annotations

import ctypes
import math
import threading
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import GradeError
from ..kernels.ir import Kernel, KernelProgram
from .base import NUMPY_DTYPES

BLOCK = 256  # threads per block
CTYPES_SCALARS = {"f64": ctypes.c_double, "f32": ctypes.c_float, "i64": ctypes.c_longlong,
                  "i32": ctypes.c_int, "u64": ctypes.c_ulonglong, "u32": ctypes.c_uint,
                  "u16": ctypes.c_ushort, "u8": ctypes.c_ubyte, "bool": ctypes.c_bool}

Symbols = list[tuple[str, list[tuple[str, str, str]]]]  # per kernel: symbol, launch arguments


class CudaError(RuntimeError):
    pass


class Driver:
    """The primary context of device 0 and the handful of driver calls a launch needs."""

    _instance: "Driver | None" = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> "Driver":
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def __init__(self) -> None:
        self.lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_void_p
        for name, args in {
            "cuInit": [ctypes.c_uint], "cuDeviceGetCount": [ctypes.POINTER(ctypes.c_int)],
            "cuDeviceGet": [ctypes.POINTER(ctypes.c_int), ctypes.c_int],
            "cuDeviceGetAttribute": [ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_int],
            "cuDevicePrimaryCtxRetain": [ctypes.POINTER(v), ctypes.c_int],
            "cuCtxSetCurrent": [v], "cuCtxSynchronize": [],
            "cuModuleLoadData": [ctypes.POINTER(v), ctypes.c_char_p],
            "cuModuleGetFunction": [ctypes.POINTER(v), v, ctypes.c_char_p],
            "cuMemAlloc_v2": [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t],
            "cuMemFree_v2": [ctypes.c_uint64],
            "cuMemcpyHtoD_v2": [ctypes.c_uint64, v, ctypes.c_size_t],
            "cuMemcpyDtoH_v2": [v, ctypes.c_uint64, ctypes.c_size_t],
            "cuLaunchKernel": [v] + [ctypes.c_uint] * 7 + [v, ctypes.POINTER(v), v],
            "cuGetErrorString": [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)],
        }.items():
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        self.check(self.lib.cuInit(0), "cuInit")
        n = ctypes.c_int()
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(n)), "cuDeviceGetCount")
        if n.value < 1:
            raise CudaError("no CUDA device")
        self.dev = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.dev), 0), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), self.dev),
                   "cuDevicePrimaryCtxRetain")
        self.modules: list[ctypes.c_void_p] = []  # loaded modules live as long as the process
        self.make_current()

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            msg = ctypes.c_char_p()
            self.lib.cuGetErrorString(rc, ctypes.byref(msg))
            raise CudaError(f"{what}: CUDA error {rc} ({(msg.value or b'?').decode()})")

    def make_current(self) -> None:
        self.check(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")

    def arch(self) -> str:
        """The device's target name: sm_90a on Hopper, sm_100a on Blackwell, sm_89 on Ada."""
        cc = []
        for attr in (75, 76):  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR
            x = ctypes.c_int()
            self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(x), attr, self.dev),
                       "cuDeviceGetAttribute")
            cc.append(x.value)
        major, minor = cc
        return f"sm_{major}{minor}" + ("a" if major >= 9 else "")

    def load(self, cubin: bytes, names: Sequence[str]) -> dict[str, ctypes.c_void_p]:
        self.make_current()
        mod = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(mod), cubin), "cuModuleLoadData")
        self.modules.append(mod)
        out = {}
        for n in names:
            f = ctypes.c_void_p()
            self.check(self.lib.cuModuleGetFunction(ctypes.byref(f), mod, n.encode()),
                       f"cuModuleGetFunction({n})")
            out[n] = f
        return out

    def alloc(self, nbytes: int) -> int:
        p = ctypes.c_uint64()
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(p), max(nbytes, 1)), "cuMemAlloc")
        return p.value

    def free(self, ptr: int) -> None:
        self.check(self.lib.cuMemFree_v2(ptr), "cuMemFree")

    def to_device(self, ptr: int, a: np.ndarray) -> None:
        if a.nbytes:
            self.check(self.lib.cuMemcpyHtoD_v2(ptr, a.ctypes.data, a.nbytes), "cuMemcpyHtoD")

    def to_host(self, a: np.ndarray, ptr: int) -> None:
        if a.nbytes:
            self.check(self.lib.cuMemcpyDtoH_v2(a.ctypes.data, ptr, a.nbytes), "cuMemcpyDtoH")

    def launch(self, fn: ctypes.c_void_p, total: int, args: Sequence[Any],
               stream: int | None = None) -> None:
        """One thread per grid point, ``BLOCK`` to a block, on ``stream`` (None: the default)."""
        blocks = (total + BLOCK - 1) // BLOCK
        if blocks == 0:
            return
        if blocks >= 2**31:
            raise CudaError(f"grid of {total} points is too large for one launch")
        ptrs = (ctypes.c_void_p * max(len(args), 1))(
            *[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args])
        self.check(self.lib.cuLaunchKernel(fn, blocks, 1, 1, BLOCK, 1, 1, 0,
                                           ctypes.c_void_p(stream or None), ptrs, None),
                   "cuLaunchKernel")

    def sync(self) -> None:
        self.check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")


def torch_cuda():
    """The torch module when it can use the GPU, else None."""
    try:
        import torch
    except ImportError:
        return None
    try:
        return torch if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA setup makes torch raise here: use the driver instead
        return None


def _scalar_args(params: Sequence[tuple[str, str, str]], kernel: Kernel, scalars: dict[str, int],
                 buffer_arg: Callable[[str], object]) -> list:
    dtypes = {p.name: p.dtype for p in kernel.scalars}
    out = []
    for kind, name, _ in params:
        if kind == "buffer":
            out.append(buffer_arg(name))
        else:
            out.append(CTYPES_SCALARS[dtypes.get(name, "i64")](scalars[name]))
    return out


def _check_buffers(program: KernelProgram, buffers: dict[str, np.ndarray]) -> None:
    for name, decl in program.buffers.items():
        a = buffers[name]
        want = np.dtype(NUMPY_DTYPES[decl.storage])
        if a.dtype != want or a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"buffer {name}: need a flat contiguous {want} array, got "
                             f"{a.dtype} {a.shape}")


class HostLauncher:
    """Runs the host print of a program (grid points in order) through ctypes."""

    def __init__(self, program: KernelProgram, lib: ctypes.CDLL, kernels: Symbols):
        self.program, self.lib, self.kernels = program, lib, kernels

    def __call__(self, buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        _check_buffers(self.program, buffers)
        for k, (symbol, params) in zip(self.program.kernels, self.kernels):
            args = _scalar_args(params, k, scalars,
                                lambda b: ctypes.c_void_p(buffers[b].ctypes.data))
            fn = getattr(self.lib, symbol)
            fn.restype = None
            fn(*args)


class _DeviceBuffer:
    """``nbytes`` of device memory: a torch uint8 tensor, or a cuMemAlloc block."""

    def __init__(self, driver: Driver, torch, nbytes: int):
        self.driver, self.torch, self.nbytes = driver, torch, nbytes
        if torch is not None:
            self.tensor = torch.empty(max(nbytes, 1), dtype=torch.uint8, device="cuda:0")
            self.ptr = int(self.tensor.data_ptr())
        else:
            self.tensor = None
            self.ptr = driver.alloc(nbytes)

    def upload(self, a: np.ndarray) -> None:
        if not a.nbytes:
            return
        if self.tensor is not None:
            src = self.torch.from_numpy(np.ascontiguousarray(a).view(np.uint8).reshape(-1))
            self.tensor[: a.nbytes].copy_(src)
        else:
            self.driver.to_device(self.ptr, a)

    def download(self, a: np.ndarray) -> None:
        if not a.nbytes:
            return
        if self.tensor is not None:
            a.view(np.uint8).reshape(-1)[:] = self.tensor[: a.nbytes].cpu().numpy()
        else:
            self.driver.to_host(a, self.ptr)

    def release(self) -> None:
        if self.tensor is None and self.ptr:
            self.driver.free(self.ptr)
        self.ptr, self.tensor = 0, None


class CudaLauncher:
    """Launches a program's kernels in order on the GPU; buffers stay on the device."""

    def __init__(self, program: KernelProgram, functions: dict[str, ctypes.c_void_p],
                 kernels: Symbols):
        self.program, self.functions, self.kernels = program, functions, kernels
        self.driver = Driver.get()
        self.torch = torch_cuda()
        self.device: dict[str, _DeviceBuffer] = {}  # kept between calls of the same sizes

    def _stream(self) -> int | None:
        return int(self.torch.cuda.current_stream(0).cuda_stream) if self.torch else None

    def run_device(self, pointers: dict[str, int], scalars: dict[str, int]) -> None:
        """Launch every kernel on device buffers the caller holds (one pointer per buffer of
        the program, e.g. torch CUDA tensors' ``data_ptr()``), then wait for them."""
        missing = sorted(set(self.program.buffers) - set(pointers))
        if missing:
            raise ValueError(f"no device pointer for buffers {missing}")
        d = self.driver
        d.make_current()
        stream = self._stream()
        for k, (symbol, params) in zip(self.program.kernels, self.kernels):
            total = math.prod(k.grid_extents(scalars))
            args = _scalar_args(params, k, scalars, lambda b: ctypes.c_uint64(int(pointers[b])))
            d.launch(self.functions[symbol], total, args, stream)
        if self.torch is not None:
            self.torch.cuda.current_stream(0).synchronize()
        else:
            d.sync()

    def __call__(self, buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        """Host arrays in and out: every buffer goes to the device as the host filled it
        (inputs, constants, zeroed outputs and temporaries), the outputs come back."""
        _check_buffers(self.program, buffers)
        try:
            self._run_host_arrays(buffers, scalars)
        except CudaError as e:  # a failed launch or copy: say so, without a traceback
            raise GradeError(f"{self.program.name}(): the CUDA run failed: {e}") from None

    def _run_host_arrays(self, buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        self.driver.make_current()
        for name, a in buffers.items():
            if name not in self.program.buffers:
                continue
            buf = self.device.get(name)
            if buf is None or buf.nbytes != a.nbytes:
                if buf is not None:
                    buf.release()
                buf = self.device[name] = _DeviceBuffer(self.driver, self.torch, a.nbytes)
            buf.upload(a)
        self.run_device({n: b.ptr for n, b in self.device.items()}, scalars)
        outs = set(self.program.outputs) | {n for n, b in self.program.buffers.items()
                                            if b.role == "out"}
        for name in outs:
            self.device[name].download(buffers[name])

    def release(self) -> None:
        """Give the device buffers back now (they are also dropped with the launcher)."""
        for buf in self.device.values():
            buf.release()
        self.device.clear()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter exit the driver may already be gone
            pass
