"""The contract between the host runtime and the code-generating backends.

A backend turns a :class:`~numgrade.kernels.ir.KernelProgram` into source text (``emit``) and
into a :class:`Launcher` (``build``). The host runtime (``numgrade/kernel/runtime.py``) binds
sizes, converts arguments to storage arrays, allocates outputs and temporaries, computes the
scalar arguments, calls the launcher, and converts the outputs back.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..kernels.ir import KernelProgram

# numpy dtype of each primitive storage dtype (bool is never a storage dtype: u8 0/1 is used)
NUMPY_DTYPES = {"f64": np.float64, "f32": np.float32, "i64": np.int64, "i32": np.int32,
                "u64": np.uint64, "u32": np.uint32, "u16": np.uint16, "u8": np.uint8}


class Launcher(Protocol):
    def __call__(self, buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        """Run every kernel of the program in order.

        ``buffers``: one flat (1-D, C-contiguous) numpy array of the buffer's storage dtype per
        buffer of the program; inputs are filled, outputs and temporaries allocated. Results
        must be in the output arrays when this returns (device backends copy back).
        ``scalars``: the value of every ScalarParam any kernel takes (sizes as Python ints,
        random-stream key halves as ints in [0, 2**32)).
        """


class KernelBackend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether the backend can build and run here, and why not."""

    def emit(self, program: KernelProgram) -> str:
        """The whole generated source for the program, readable, as one text."""

    def build(self, program: KernelProgram) -> Launcher:
        """Compile (cached) and return something that runs the program."""
