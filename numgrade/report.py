"""Analysis reports (SPEC section 6): what `f.analyze()` returns and `numgrade analyze` prints.

A report holds, per output, the sound range and forward error bounds (or null with a reason),
the function's effects and coeffects (per-input sensitivities, requirements, target needs), the
per-input backward error where the program admits it, per-line error contributions (a
decomposition of the largest finite bound over the function's lines: they sum to it, a call
line holding its callee's share; ``passes/contributions.py``), and the time the analysis took. Rendering lives in `numgrade.render`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


def _num(x: Any) -> Any:
    """JSON-safe number: finite floats as floats, everything else (inf, NaN, None) as null."""
    if x is None:
        return None
    if isinstance(x, bool):
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None


@dataclass
class OutputReport:
    """The grade of one output of a function."""

    index: int
    format: str
    shape: list[Any]
    range: tuple[float, float] | None
    abs_error: float | None
    rel_error: float | None
    reason: str | None = None
    abs_error_symbolic: str | None = None   # a sympy expression in the size symbols, if unbound
    method: str | None = None               # which analysis produced the bound

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "index": self.index, "format": self.format,
            "shape": [s if isinstance(s, int) else str(s) for s in self.shape],
            "range": None if self.range is None else [_num(self.range[0]), _num(self.range[1])],
            "abs_error": _num(self.abs_error), "rel_error": _num(self.rel_error),
            "reason": self.reason,
        }
        if self.abs_error_symbolic is not None:
            d["abs_error_symbolic"] = self.abs_error_symbolic
        if self.method is not None:
            d["method"] = self.method
        return d


@dataclass
class Report:
    """Everything the analyses established about one function."""

    function: str
    outputs: list[OutputReport]
    effects: list[str]
    coeffects: dict[str, Any]
    backward_error: dict[str, float | None] | None = None
    seconds: float = 0.0
    signature: str = ""
    warnings: list[str] = field(default_factory=list)
    line_contributions: dict[int, float] = field(default_factory=dict)
    source_file: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # the decomposition behind line_contributions (passes/contributions.py): the output and
    # bound it decomposes, per line amount, share and the part via a call, callee lines
    contributions: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "function": self.function,
            "outputs": [o.to_dict() for o in self.outputs],
            "effects": list(self.effects),
            "coeffects": _jsonable(self.coeffects),
            "backward_error": None if self.backward_error is None
            else {k: _num(v) for k, v in self.backward_error.items()},
            "seconds": round(self.seconds, 6),
        }
        if self.signature:
            d["signature"] = self.signature
        if self.warnings:
            d["warnings"] = list(self.warnings)
        if self.dims:
            d["dims"] = dict(self.dims)
        if self.notes:
            d["notes"] = list(self.notes)
        if self.contributions is not None:
            d["contributions"] = _jsonable(self.contributions)
        if "fusion" in self.extra:
            d["fusion"] = _jsonable(self.extra["fusion"])
        return d

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, bool)) or x is None:
        return x
    return _num(x)
