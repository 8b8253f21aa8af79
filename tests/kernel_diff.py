"""Shared by the backend tests: run every stdlib function through a kernel backend and compare
with the reference backend (the oracle)."""

from __future__ import annotations

import numpy as np

from numgrade.api import load_stdlib, stdlib_names
from numgrade.backends.reference import Interpreter
from numgrade.kernels.lower import NotLowerable
from numgrade.kernels.runtime import run_program

SIZES = dict(M=16, N=128, T=3, D=32, S=5, E=8, H=16, F=8, K=4, B=2, R=4, C=3)
# for the slow executors (Triton's interpreter runs every program instance in Python): each
# size symbol as small as the function's divisibility requirements allow
SMALL = dict(M=2, N=16, T=3, D=8, S=5, E=8, H=4, F=4, K=4, B=2, R=3, C=3)


def small_sizes(fn) -> dict[str, int]:
    """SMALL, with each symbol raised to the least multiple of its required modulus."""
    sizes = dict(SMALL)
    for sym, m in fn.moduli().items():
        v = sizes.get(sym, m)
        sizes[sym] = v if v % m == 0 else m * -(-v // m)
    return sizes


def stdlib_cases():
    """(program, function) for every stdlib function."""
    return [(p, n) for p in stdlib_names() for n in load_stdlib(p).functions]


def random_args(fn, seed: int = 1, sizes: dict[str, int] | None = None) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = SIZES if sizes is None else sizes
    args = []
    for p in fn.params:
        shape = []
        for d in p.value.shape:
            try:
                shape.append(int(d.evaluate(sizes)))
            except KeyError:
                shape.append(4)
        lo, hi = p.range if p.range else (-4.0, 4.0)
        args.append(rng.uniform(max(lo, -1e4), min(hi, 1e4), size=shape))
    return args


def run_both(prog: str, name: str, launcher_for, seed: int = 3, small: bool = False):
    """(reference outputs, kernel outputs) or None when the function is not lowerable.

    ``small``: the least sizes the function allows (:func:`small_sizes`)."""
    mod = load_stdlib(prog)
    f = mod[name]
    try:
        program = f.kernels()
    except NotLowerable:
        return None
    args = random_args(f.ir, sizes=small_sizes(f.ir) if small else None)
    ref = Interpreter(mod.ir).run(name, args, seed)
    got = run_program(program, launcher_for(program), f.ir, args, seed)
    return ref, got


def bit_equal(a, b) -> bool:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
            and np.array_equal(np.signbit(a), np.signbit(b)))


# --- the backends, by name -------------------------------------------------------------------
_BACKENDS: dict = {}
BACKEND_NAMES = ("kernel-interp", "triton", "tvm", "cuda-host")


def backend_or_skip(name: str, tmp_path_factory=None):
    """One shared instance of a kernel backend (so compiled kernels are reused), or a skip
    when it is not available here (cuda-host needs gcc; its builds go to a temporary cache)."""
    import pytest
    if name not in _BACKENDS:
        if name == "kernel-interp":
            from numgrade.kernels.interp import KernelInterpreter
            be = KernelInterpreter()
        elif name == "triton":
            from numgrade.backends.triton_backend import TritonBackend
            be = TritonBackend()
        elif name == "tvm":
            try:
                from numgrade.backends.tvm_backend import TVMBackend
            except ImportError as ex:  # pragma: no cover - apache-tvm is a dev dependency
                pytest.skip(f"TVM: {ex}")
            be = TVMBackend()
        elif name == "cuda-host":
            from numgrade.backends.cuda_backend import CudaHostBackend
            cache = tmp_path_factory.mktemp("cuda_host") if tmp_path_factory else None
            be = CudaHostBackend(cache)
        else:
            raise ValueError(name)
        ok, why = be.available()
        if not ok:
            pytest.skip(f"{name}: {why}")
        _BACKENDS[name] = be
    return _BACKENDS[name]


# --- reduction orders, independently of any backend ----------------------------------------
def fold_seq(xs, combine, init):
    """Left to right; ``init`` only for an empty range."""
    if len(xs) == 0:
        return init
    acc = xs[0]
    for v in xs[1:]:
        acc = combine(acc, v)
    return acc


def fold_levels(xs, combine, init):
    """Adjacent pairs level after level, an odd element carried (the reference's tree)."""
    xs = list(xs)
    if not xs:
        return init
    while len(xs) > 1:
        nxt = [combine(xs[t], xs[t + 1]) for t in range(0, len(xs) - 1, 2)]
        xs = nxt + ([xs[-1]] if len(xs) % 2 else [])
    return xs[0]


def fold_stack(xs, combine, init):
    """The binary-counter stack algorithm, as the kernel IR states it (with heights)."""
    stack: list = []
    for v in xs:
        stack.append((v, 0))
        while len(stack) >= 2 and stack[-1][1] == stack[-2][1]:
            (b, hb), (a, _) = stack.pop(), stack.pop()
            stack.append((combine(a, b), hb + 1))
    while len(stack) >= 2:
        (b, _), (a, _) = stack.pop(), stack.pop()
        stack.append((combine(a, b), 0))
    return stack[0][0] if stack else init
