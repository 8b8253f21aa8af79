"""numgrade: graded analysis and kernel generation for numeric algorithm programs."""

from .errors import GradeError, SourceError, Diagnostic, Span
from .api import Module, Function, compile_source, load, load_stdlib, stdlib_names
from .embed import kernel, f64, f32, f16, bf16, e4m3, e5m2, e2m1, e8m0, i32
from .embed import bool_ as bool  # noqa: A001 - the format is called bool in the language

__version__ = "0.1.0"

__all__ = ["GradeError", "SourceError", "Diagnostic", "Span", "Module", "Function",
           "compile_source", "load", "load_stdlib", "stdlib_names", "kernel", "f64", "f32",
           "f16", "bf16", "e4m3", "e5m2", "e2m1", "e8m0", "i32", "bool"]
