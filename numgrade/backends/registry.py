"""Backends by name. Each is imported only when asked for (triton and tvm are heavy imports)."""

from __future__ import annotations

from importlib import import_module

from ..errors import GradeError

# name -> (module, class); "reference" is the IR interpreter and is not a kernel backend
KERNEL_BACKENDS = {
    "triton": ("numgrade.backends.triton_backend", "TritonBackend"),
    "tvm": ("numgrade.backends.tvm_backend", "TVMBackend"),
    "cuda": ("numgrade.backends.cuda_backend", "CudaBackend"),
    "kernel-interp": ("numgrade.kernels.interp", "KernelInterpreter"),
}
ALL_BACKENDS = ("reference",) + tuple(KERNEL_BACKENDS)

_instances: dict[str, object] = {}


def get_backend(name: str):
    """The backend object for `name` (a GradeError names the choices when it is unknown)."""
    if name not in KERNEL_BACKENDS:
        raise GradeError(f"unknown backend '{name}' (available: {', '.join(ALL_BACKENDS)})")
    if name not in _instances:
        mod_name, cls = KERNEL_BACKENDS[name]
        try:
            mod = import_module(mod_name)
        except ImportError as ex:
            raise GradeError(f"backend '{name}' cannot be loaded here: {ex}") from None
        _instances[name] = getattr(mod, cls)()
    return _instances[name]
