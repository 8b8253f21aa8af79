"""Test-session setup: select Triton's interpreter (on a machine without a CUDA device) before
any test module imports triton. Triton decides at import whether its standard library (tl.zeros,
tl.sum, ...) is interpreted; a triton imported first without TRITON_INTERPRET cannot run
interpreted kernels afterwards."""

from numgrade.backends.triton_backend import prepare_environment

prepare_environment()
