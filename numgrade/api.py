"""The Python API of SPEC section 4: load programs, call functions, get their IR.

Inputs come in as numpy arrays, torch tensors or Python numbers; results go back in the family of
the inputs (numpy in, numpy out with ml_dtypes dtypes; torch in, torch out with torch's own
low-precision dtypes where it has them, float32 holding the exact values where it has not).
"""

from __future__ import annotations

import contextlib
import sys
import warnings

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DiagnosticSink, GradeError, SourceError
from .frontend.lower import lower_program
from .frontend.parser import parse
from .ir import nodes as N
from .ir.formats import Format, format_of_dtype, from_storage, to_storage
from .ir.printer import print_function, print_module
from .ir.verify import verify
from .passes.effects import check_effects

STDLIB_PACKAGE = "numgrade.stdlib"


def compile_source(text: str, name: str = "<source>") -> "Module":
    """Parse, lower and check a Grade program; raise GradeError with every diagnostic."""
    program = parse(text, name)
    sink = DiagnosticSink()
    try:
        with _deep_recursion():
            module = lower_program(program, sink)
    except RecursionError:
        raise SourceError("program nested too deeply", program.span) from None
    check_effects(module, sink)
    sink.raise_if_errors()
    verify(module)  # lowering must produce a well-typed graph; a failure here is our bug
    module.source = text
    module.warnings = list(sink.warnings)
    return Module(module)


@contextlib.contextmanager
def _deep_recursion():
    """Lowering recurses over expressions; the parser caps their nesting at MAX_DEPTH levels,
    each a few Python frames deep, so make room for that (and no more)."""
    from .frontend.parser import MAX_DEPTH

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 12 * MAX_DEPTH + 2000))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def load(path: str | Path) -> "Module":
    """Load a `.grd` file, or a stdlib program named `stdlib:NAME`."""
    p = str(path)
    if p.startswith("stdlib:"):
        return load_stdlib(p[len("stdlib:"):])
    if p.endswith(".ir"):  # the textual IR that `numgrade ir` prints reads back
        from .ir.parse_text import read_ir

        ir = read_ir(p)
        sink = DiagnosticSink()
        check_effects(ir, sink)
        sink.raise_if_errors()
        verify(ir)
        return Module(ir)
    try:
        from .frontend.parser import MAX_SOURCE_CHARS

        with open(p, encoding="utf-8") as fh:  # bounded: /dev/zero or a huge file is refused
            text = fh.read(MAX_SOURCE_CHARS + 1)
    except FileNotFoundError:
        raise GradeError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as ex:
        raise GradeError(f"{p}: cannot read: {ex}") from None
    return compile_source(text, p)


def stdlib_names() -> list[str]:
    files = resources.files(STDLIB_PACKAGE)
    return sorted(f.name[:-4] for f in files.iterdir() if f.name.endswith(".grd"))


def stdlib_path(name: str) -> str:
    return f"stdlib/{name}.grd"


def load_stdlib(name: str) -> "Module":
    """A stdlib program by name, e.g. load_stdlib('nvfp4')."""
    if not name.isidentifier() or name not in stdlib_names():
        raise GradeError(f"no stdlib program '{name}' (available: {', '.join(stdlib_names())})")
    text = resources.files(STDLIB_PACKAGE).joinpath(f"{name}.grd").read_text(encoding="utf-8")
    return compile_source(text, stdlib_path(name))


class NoSuchFunction(GradeError, AttributeError):
    """`mod.name` for a function the module does not have."""


class Module:
    """A compiled module; functions are attributes (mod.quantize) and items (mod['quantize'])."""

    def __init__(self, ir: N.Module):
        self.ir = ir

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def functions(self) -> list[str]:
        return list(self.ir.functions)

    @property
    def warnings(self) -> list:
        return self.ir.warnings

    def __getitem__(self, name: str) -> "Function":
        if name not in self.ir.functions:
            raise GradeError(f"module {self.ir.name} has no function '{name}' "
                             f"(it has: {', '.join(self.ir.functions) or 'none'})")
        return Function(self, self.ir.functions[name])

    def __getattr__(self, name: str) -> "Function":
        if name.startswith("__") or name == "ir":
            raise AttributeError(name)
        try:
            return self[name]
        except GradeError as ex:  # both kinds, so hasattr() works and GradeError catches it
            raise NoSuchFunction(ex.diagnostics) from None

    def __dir__(self):
        return list(super().__dir__()) + list(self.ir.functions)

    def __contains__(self, name: str) -> bool:
        return name in self.ir.functions

    def ir_text(self) -> str:
        return print_module(self.ir)

    def __repr__(self) -> str:
        return f"<numgrade.Module {self.ir.name}: {', '.join(self.ir.functions)}>"


class Function:
    """One function of a module: call it, print its IR, compile it for a backend."""

    def __init__(self, module: Module, ir: N.Function):
        self.module = module
        self.ir = ir

    @property
    def name(self) -> str:
        return self.ir.name

    def signature(self) -> str:
        return self.ir.signature()

    def ir_text(self) -> str:
        return print_function(self.ir)

    def to_grade(self, name: str | None = None) -> str:
        """Grade source (with its callees) that compiles back to this function's exact IR,
        every operation's format written out (frontend/grade_export.py)."""
        from .frontend.grade_export import function_to_grade

        return function_to_grade(self.module.ir, self.ir, name=name)

    def __call__(self, *args: Any, seed: int | None = None, backend: str = "reference",
                 **kwargs: Any) -> Any:
        return self.compile(backend)(*args, seed=seed, **kwargs)

    def ideal(self, *args: Any, seed: int | None = None, as_float: bool = True,
              **kwargs: Any) -> Any:
        """The same program over the reals (every rounding removed), in 160-bit arithmetic.

        Returns float64 arrays (as_float) or numpy object arrays of mpmath numbers.
        """
        from .backends.reference import IdealDomain, Interpreter

        arrays, _ = _to_arrays(_bind_kwargs(args, kwargs, self.ir), self.ir)
        try:
            outs = Interpreter(self.module.ir, IdealDomain()).run(self.ir.name, arrays, seed)
        except GradeError:
            raise
        except (ValueError, TypeError, IndexError, OverflowError, MemoryError) as ex:
            raise GradeError(f"{self.ir.name}(): cannot run on these inputs: {ex}") from None
        if as_float:
            outs = tuple(np.asarray(np.frompyfunc(float, 1, 1)(o), dtype=np.float64)
                         if np.ndim(o) else np.float64(float(o[()])) for o in outs)
        else:
            outs = tuple(o if np.ndim(o) else o[()] for o in outs)
        return outs if self.ir.result_is_tuple else outs[0]

    def analyze(self, tier: str = "auto", work: int | None = None,
                time_limit: float | None = None, target: str | None = None, **dims: int):
        """Sound ranges and forward error bounds of every output (SPEC section 3 and 6).

        Sizes left symbolic can be bound here: ``f.analyze(N=1024)``. Returns a Report.
        ``target`` ('cpu', 'sm_90', 'sm_100', 'reference'; None: every target) names the
        execution the bound is for; the bound covers both contracts there (the fast kernel and
        the exact one), and ``rep.coeffects['execution_model']`` says what it assumes.
        ``work`` is the branch and bound budget in work units (program nodes evaluated on
        boxes; scalar tier: per output, tensor tier: per elementwise region); None takes the
        default. Bounds never depend on wall-clock time, so ``time_limit`` (deprecated) is
        ignored with a DeprecationWarning.
        """
        from .passes.analyze import AnalysisOptions, analyze_function

        if tier not in ("auto", "scalar", "tensor"):
            raise GradeError(f"unknown analysis tier '{tier}' (auto, scalar, tensor)")
        if time_limit is not None:
            warnings.warn("analyze(time_limit=...) is ignored: analysis budgets count work, not "
                          "seconds, so bounds do not depend on load; pass work=N instead",
                          DeprecationWarning, stacklevel=2)
        if work is not None and (isinstance(work, bool) or not isinstance(work, int) or
                                 work <= 0):
            raise GradeError(f"work must be a positive integer (work units), got {work!r}")
        from .passes.rounding_model import TARGETS

        if target is not None and target not in TARGETS[1:]:
            raise GradeError(f"unknown target '{target}' (one of: {', '.join(TARGETS[1:])})")
        rep = analyze_function(self.module.ir, self.ir, dims,
                               AnalysisOptions(tier=tier, work=work, target=target))
        try:
            plan = self.fusion()
        except GradeError:
            plan = None
        if plan is not None:
            rep.extra["fusion"] = fusion_summary(plan, dims)
            rep.notes.append("fusion: " + rep.extra["fusion"]["text"])
        return rep

    def fusion(self):
        """The kernels this function fuses into (passes/fusion.py), with bytes moved."""
        from .passes.fusion import plan_fusion
        from .passes.inline import inline_calls

        return plan_fusion(inline_calls(self.module.ir, self.ir))

    def kernels(self, packed_e2m1: bool = False, scale_layout: str = "rowmajor",
                exact: bool = True):
        """The lowered kernel program (kernel/ir.py) that every kernel backend starts from,
        with the storage options of kernels/packing.py applied. ``exact``: the exact contract
        (bit-identical to the reference); False: the fast contract (SPEC section 3)."""
        from .kernels.lower import lower_function
        from .kernels.packing import StorageOptions, apply_storage

        opts = StorageOptions.make(packed_e2m1, scale_layout)
        cache = self.__dict__.setdefault("_kernels_by_contract", {})
        if exact not in cache:
            cache[exact] = lower_function(self.module.ir, self.ir, exact=exact)
        return apply_storage(cache[exact], self.ir, opts)

    def compile(self, backend: str = "reference", packed_e2m1: bool = False,
                scale_layout: str = "rowmajor", exact: bool = False,
                tune: bool = False) -> "CompiledFunction":
        """Bind to a backend; ``packed_e2m1`` / ``scale_layout`` are storage options of the
        kernel backends (kernels/packing.py): such results come back as uint8 bytes.

        ``exact=False`` (the default) is the fast contract: the kernel may sum in any order and
        use the target's math library, and its results lie within ``analyze(target=...)``'s
        bound; ``exact=True`` gives results bit-identical to the reference backend.
        ``tune=True`` (tvm, fast contract) times the schedule's variants on the sizes of the
        first call and keeps the fastest, remembered on disk (backends/autotune.py)."""
        from .backends.registry import get_backend
        from .kernels.packing import StorageOptions

        opts = StorageOptions.make(packed_e2m1, scale_layout)
        if backend == "reference" and not opts.is_default:
            raise GradeError("packed_e2m1 and scale_layout are options of the kernel backends "
                             "(kernel-interp, triton, tvm, cuda), not of the reference")
        if backend != "reference":
            be = get_backend(backend)
            ok, why = be.available()
            if not ok:
                raise GradeError(f"backend '{backend}' cannot run here: {why}")
        if tune and (backend != "tvm" or exact):
            raise GradeError("tune=True is an option of the tvm backend's fast contract (the "
                             "exact contract has one schedule; GPU autotuning needs a device "
                             "to time on)")
        cf = CompiledFunction(self, backend, opts, exact, tune)
        if not opts.is_default:  # an unpackable layout is reported now, not at the first call
            cf._program = self.kernels(opts.packed_e2m1, opts.scale_layout, exact)
        return cf

    def emit(self, backend: str, packed_e2m1: bool = False,
             scale_layout: str = "rowmajor", exact: bool = False) -> str:
        """The generated source of every kernel of this function for `backend`, as text
        (the fast contract unless ``exact``)."""
        from .backends.registry import get_backend

        be = get_backend(backend)
        return be.emit(self.kernels(packed_e2m1, scale_layout, exact))

    def tune(self, budget: "str | float", target: str = "sm_90", *, pin_outputs: bool = False,
             respect_pins: bool = True, formats: "tuple[str, ...] | None" = None, **dims: int):
        """The cheapest per-operation formats whose sound bound meets `budget` ('abs:X',
        'rel:X' or a number for abs) on `target` ('cpu', 'sm_90', 'sm_100'); sizes as in
        analyze(). Returns a TunedFunction (``.result``, ``.report``, ``.source``); raises
        BudgetUnreachable (a GradeError) with the best achievable bound when no assignment
        meets the budget."""
        from .api_tune import make_tuned
        from .passes.tune import DEFAULT_FORMATS, TuneOptions, tune_function

        opts = TuneOptions(target=target, formats=tuple(formats or DEFAULT_FORMATS),
                           respect_pins=respect_pins, pin_outputs=pin_outputs)
        return make_tuned(self, tune_function(self.module.ir, self.ir, dims, budget, opts))

    def __repr__(self) -> str:
        return f"<numgrade.Function {self.signature()}>"


class CompiledFunction:
    """A function bound to a backend; call it like the function."""

    def __init__(self, fn: Function, backend: str, storage=None, exact: bool = False,
                 tune: bool = False):
        self.fn = fn
        self.backend = backend
        self.storage = storage  # kernels.packing.StorageOptions, None for the defaults
        self.exact = exact      # the execution contract (SPEC section 3)
        self.tune = tune        # time the schedule's variants (backends/autotune.py)
        self._launcher = None
        self._program = None

    def __call__(self, *args: Any, seed: int | None = None, **kwargs: Any) -> Any:
        from .backends.reference import Interpreter

        ir = self.fn.ir
        # the kernel backends take arguments in their own dtypes and give results in their
        # formats' dtypes (no float64 round trip, kernels/runtime.py); the reference float64
        native = self.backend != "reference"
        arrays, family = _to_arrays(_bind_kwargs(args, kwargs, ir), ir, native)
        try:
            if self.backend == "reference":
                outs = Interpreter(self.fn.module.ir).run(ir.name, arrays, seed)
            else:
                outs = self._run_kernels(arrays, seed)
        except GradeError:
            raise
        except (ValueError, TypeError, IndexError, OverflowError, MemoryError) as ex:
            raise GradeError(f"{ir.name}(): cannot run on these inputs: {ex}") from None
        stored = getattr(self._program, "layouts", {})
        names = self._program.outputs if stored else ()
        res = tuple(_stored_result(o, family) if names and names[i] in stored
                    else _from_array(o, v.fmt, family)
                    for i, (o, v) in enumerate(zip(outs, ir.results)))
        return res if ir.result_is_tuple else res[0]

    @property
    def schedule(self) -> dict[str, dict]:
        """With ``tune``: per set of sizes called so far, the chosen knobs and the measured
        seconds of each variant; else empty."""
        return dict(getattr(self._launcher, "records", {}))

    def _run_kernels(self, arrays, seed):
        from .backends.registry import get_backend
        from .kernels.runtime import run_program

        if self._program is None:
            opts = self.storage
            self._program = self.fn.kernels(opts.packed_e2m1, opts.scale_layout, self.exact) \
                if opts else self.fn.kernels(exact=self.exact)
        program = self._program
        if self._launcher is None:
            be = get_backend(self.backend)
            self._launcher = be.build(program, tune=True) if self.tune else be.build(program)
        return run_program(program, self._launcher, self.fn.ir, arrays, seed, native=True)


def fusion_summary(plan, dims: dict[str, int] | None = None) -> dict[str, Any]:
    """Kernel count and bytes moved before/after fusion, symbolic and (when sizes are bound)
    as numbers."""
    out: dict[str, Any] = {
        "kernels": len(plan.groups), "kernels_unfused": plan.kernels_unfused,
        "bytes": str(plan.bytes_fused), "bytes_unfused": str(plan.bytes_unfused),
        "kernel_list": [g.describe(plan.fn.names) for g in plan.groups],
    }
    text = plan.summary()
    if dims:
        try:
            bf, bu = int(plan.bytes_fused.evaluate(dims)), int(plan.bytes_unfused.evaluate(dims))
            out["bytes_value"], out["bytes_unfused_value"] = bf, bu
            text += f" (= {bf} B after, {bu} B before)"
        except (KeyError, TypeError):
            pass
    out["text"] = text
    return out


# ---------------------------------------------------------------------------------------------
# boundary conversion
def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _torch_to_numpy(x, native: bool = False) -> np.ndarray:
    """A float64 copy of a tensor's values; ``native``: float32, float64 and int32 tensors are
    shared through DLPack instead (no copy for a CPU tensor)."""
    import torch

    if x.is_complex() or x.layout != torch.strided:
        raise GradeError(f"unsupported tensor (dtype {x.dtype}, layout {x.layout})")
    t = x.detach().cpu()
    if native and t.dtype in (torch.float32, torch.float64, torch.int32):
        return np.from_dlpack(t)
    if t.dtype in (torch.float32, torch.float64, torch.float16, torch.int32, torch.int64,
                   torch.bool, torch.int16, torch.int8, torch.uint8):
        return t.numpy().astype(np.float64)
    return t.to(torch.float64).numpy()


def _bind_kwargs(args: tuple, kwargs: dict, fn: N.Function) -> tuple:
    """Positional arguments, then keyword arguments by parameter name."""
    if not kwargs:
        return args
    names = [p.name for p in fn.params]
    out = list(args) + [_MISSING] * max(0, len(names) - len(args))
    for k, v in kwargs.items():
        if k not in names:
            raise GradeError(f"{fn.name}() has no parameter '{k}' (parameters: "
                             f"{', '.join(names) or 'none'})")
        i = names.index(k)
        if i < len(args):
            raise GradeError(f"{fn.name}() got argument '{k}' twice")
        out[i] = v
    missing = [n for n, v in zip(names, out) if v is _MISSING]
    if missing:
        raise GradeError(f"{fn.name}() is missing argument(s) {', '.join(missing)}")
    return tuple(out)


_MISSING = object()


def _to_arrays(args, fn: N.Function, native: bool = False) -> tuple[list[np.ndarray], str]:
    """Arguments as float64 arrays of exact values, and the caller's array family.
    ``native``: numpy arrays of the int, uint, float and bool kinds (and float32, float64,
    int32 tensors) are kept in their own dtype, for the kernel backends' runtime to take as
    they are or convert (kernels/runtime.py)."""
    family = "numpy"
    out = []
    if len(args) != len(fn.params):
        raise GradeError(f"{fn.name}() takes {len(fn.params)} argument(s), got {len(args)}")
    for a, p in zip(args, fn.params):
        if _is_torch(a):
            family = "torch"
            out.append(_torch_to_numpy(a, native))
            continue
        if isinstance(a, (complex, np.complexfloating)):
            raise GradeError(f"argument '{p.name}': complex numbers are not supported")
        if isinstance(a, (bool, int, float, np.number, np.bool_)):
            try:
                out.append(np.asarray(float(a), dtype=np.float64))
            except (OverflowError, ValueError, TypeError):
                raise GradeError(f"argument '{p.name}': {a!r:.40} is not a float64 number") \
                    from None
            continue
        if isinstance(a, np.ndarray):
            if native and a.dtype.kind in "iufb" and a.dtype.type.__module__ == "numpy":
                out.append(a)  # numpy's own dtypes (not ml_dtypes'): the runtime converts
            elif format_of_dtype(a.dtype) is not None:
                out.append(from_storage(a))
            elif a.dtype.kind in "iufb":
                out.append(a.astype(np.float64))
            else:
                raise GradeError(f"argument '{p.name}': unsupported array dtype {a.dtype}")
            continue
        if isinstance(a, (list, tuple)):
            try:
                arr = np.asarray(a, dtype=np.float64)
            except (ValueError, TypeError, OverflowError):
                raise GradeError(f"argument '{p.name}': not a rectangular array of numbers") from None
            out.append(arr)
            continue
        raise GradeError(f"argument '{p.name}': expected an array, tensor or number, "
                         f"got {type(a).__name__}")
    return out, family


_TORCH_DTYPES = {"f64": "float64", "f32": "float32", "f16": "float16", "bf16": "bfloat16",
                 "e4m3": "float8_e4m3fn", "e5m2": "float8_e5m2", "i32": "int32", "bool": "bool"}


def _native_result(x: np.ndarray, fmt: Format, family: str):
    """A result already in its format's numpy dtype (the kernel backends' runtime): numpy as it
    is; torch without a copy where torch has the dtype (a view of the same bytes), float32
    holding the exact values where it has not (e2m1, e8m0), as the float64 path gives."""
    if family != "torch":
        return x if x.ndim else x[()]
    import torch

    name = _TORCH_DTYPES.get(fmt.name)
    x = np.ascontiguousarray(x).reshape(x.shape)  # (ascontiguousarray makes 0-d 1-d)
    if name is None or not hasattr(torch, name):
        from .kernels.runtime import widen_to_f32
        return torch.from_numpy(widen_to_f32(x))
    want = getattr(torch, name)
    if x.dtype.kind in "fiub" and x.dtype.type.__module__ == "numpy":  # torch knows the dtype
        return torch.from_numpy(x).to(want)
    return torch.from_numpy(x.view(f"u{x.dtype.itemsize}")).view(want)


def _stored_result(x: np.ndarray, family: str):
    """A result in a packed or tiled storage layout: its uint8 bytes (kernels/packing.py)."""
    from .kernels.packing import to_family

    return to_family(x, family)


def _from_array(x: np.ndarray, fmt: Format, family: str):
    x = np.asarray(x)
    if x.dtype == np.dtype(fmt.np_dtype) and x.dtype != np.float64:
        return _native_result(x, fmt, family)
    x = np.asarray(x, dtype=np.float64)
    if family == "torch":
        import torch

        name = _TORCH_DTYPES.get(fmt.name)
        t = torch.from_numpy(np.ascontiguousarray(x).reshape(x.shape))  # keep 0-d scalars 0-d
        if name is None or not hasattr(torch, name):
            return t.to(torch.float32)  # e2m1 / e8m0: float32 holding the exact values
        return t.to(getattr(torch, name))
    st = to_storage(x, fmt)
    return st if st.ndim else st[()]
