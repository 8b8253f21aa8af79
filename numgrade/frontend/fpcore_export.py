"""Export a scalar, straight-line Grade function as an FPCore benchmark.

``to_fpcore(fn)`` writes one ``(FPCore ...)`` form that other tools (FPTaylor, Daisy, Herbie,
Gappa via FPBench's exporters, ...) can read, so bounds can be cross-checked:

* parameters become arguments; a parameter whose format differs from the result's is annotated
  ``(! :precision binary32 x)``; ranges become ``:pre (and (<= lo x hi) ...)``;
* the result format is the benchmark's ``:precision``; an operation in another format is wrapped
  in ``(! :precision P ...)`` so that it rounds to its own format, as in Grade;
* values used more than once (and ``let`` names) are bound by one ``let*``, so sharing is kept;
* ``+ - * /``, unary minus, ``abs`` (``fabs``), ``sqrt exp log sin cos tanh exp2 log2 floor ceil``,
  ``min``/``max`` (``fmin``/``fmax``), ``fma``, comparisons, ``and or not``, ``where`` (``if``);
  ``rsqrt`` and ``sigmoid`` become ``1/sqrt(x)`` and ``1/(1+exp(-x))`` evaluated in binary64 and
  then cast to the result format, which is exactly how the reference interpreter defines them;
* an explicit rounding ``round(x, fmt, mode=m)`` / ``x as fmt`` is
  ``(! :precision P [:round M] (cast x))``. Grade's ``as`` saturates on overflow where FPCore's
  cast gives infinity; the context then carries ``:numgrade-saturate TRUE`` (ignored by other
  tools, honoured by numgrade's FPCore reader), so results differ only on overflow elsewhere;
* a constant is printed as the exact literal Grade kept for it (``0.1``, ``1/3``: the ideal
  program of both uses that value) when it rounds to the constant's value in its context, else as
  Python's shortest round-trip decimal of the rounded value (wrapped in its own precision where
  the context would round it differently).

Formats: binary64, binary32, binary16, and ``(float 8 16)`` for bf16 and ``(float 5 8)`` for e5m2
(both IEEE-style, with infinities). e4m3 (no infinity), e2m1, e8m0, i32, bool parameters,
tensors, reductions, random numbers, stochastic rounding and calls raise GradeError.
"""

from __future__ import annotations

import math
from fractions import Fraction

from ..errors import GradeError
from ..ir import nodes as N
from ..ir.formats import FORMATS, Format
from ..ir.nodes import Op, Value, toposort
from .constfold import exact_decimal, round_exact
from .fpcore import CONSTANT_NAMES, fpcore_precision_name

__all__ = ["to_fpcore", "FPCORE_RESERVED"]

F64 = FORMATS["f64"]

_BIN = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/", Op.MIN: "fmin", Op.MAX: "fmax"}
_CMP = {Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=", Op.EQ: "==", Op.NE: "!="}
_LOGIC = {Op.AND: "and", Op.OR: "or"}
_UNARY = {Op.NEG: "-", Op.ABS: "fabs", Op.SQRT: "sqrt", Op.EXP: "exp", Op.LOG: "log",
          Op.SIN: "sin", Op.COS: "cos", Op.TANH: "tanh", Op.EXP2: "exp2", Op.LOG2: "log2",
          Op.FLOOR: "floor", Op.CEIL: "ceil"}
_MODES = {"rne": "nearestEven", "ru": "toPositive", "rd": "toNegative", "rz": "toZero"}

FPCORE_RESERVED = set(CONSTANT_NAMES) | {
    "FPCore", "if", "let", "let*", "while", "while*", "for", "for*", "tensor", "tensor*", "cast",
    "array", "digits", "!", "+", "-", "*", "/", "fabs", "fma", "exp", "exp2", "expm1", "log",
    "log10", "log2", "log1p", "pow", "sqrt", "cbrt", "hypot", "sin", "cos", "tan", "asin", "acos",
    "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "tgamma",
    "lgamma", "ceil", "floor", "fmod", "remainder", "fmax", "fmin", "fdim", "copysign", "trunc",
    "round", "nearbyint", "<", ">", "<=", ">=", "==", "!=", "and", "or", "not", "isfinite",
    "isinf", "isnan", "isnormal", "signbit", "ref", "dim", "size"}


def _err(msg: str, fn: N.Function, v: Value | None = None) -> GradeError:
    span = fn.spans.get(v) if v is not None else None
    return GradeError(f"to_fpcore({fn.name}): {msg}", span or fn.span)


def _prec(fmt: Format, fn: N.Function, v: Value | None = None) -> str:
    p = fpcore_precision_name(fmt)
    if p is None:
        raise _err(f"format {fmt.name} has no FPCore precision (FPCore has binary64, binary32, "
                   "binary16 and IEEE-style (float es nbits) formats)", fn, v)
    return p


def _literal(x: float) -> str:
    if math.isnan(x):
        return "NAN"
    if math.isinf(x):
        return "INFINITY" if x > 0 else "(- INFINITY)"
    if x == int(x) and abs(x) < 2.0 ** 63:
        s = str(int(x))
        return "(- 0)" if s == "0" and math.copysign(1.0, x) < 0 else s
    return repr(x)


def _symbol(name: str, used: set[str]) -> str:
    s = name
    if s in FPCORE_RESERVED:
        s = s + "_"
    base, k = s, 2
    while s in used:
        s = f"{base}_{k}"
        k += 1
    used.add(s)
    return s


class _Exporter:
    def __init__(self, fn: N.Function):
        self.fn = fn
        self.names: dict[Value, str] = {}

    def run(self, name: str | None) -> str:
        fn = self.fn
        if fn.result_is_tuple or len(fn.results) != 1:
            raise _err("only functions with one scalar result can be exported", fn)
        if fn.effects:
            raise _err(f"functions with effects ({', '.join(sorted(fn.effects))}) cannot be "
                       "exported", fn)
        res = fn.results[0]
        order = toposort(fn.results)
        for v in order:
            if v.op in (Op.CALL, Op.PROJ):
                raise _err("calls cannot be exported (inline the callee first)", fn, v)
            if not isinstance(v.type, N.TensorType) or v.shape:
                raise _err(f"only scalar straight-line code can be exported; '{v.op}' makes a "
                           f"value of type {v.type}", fn, v)
        top_fmt = F64 if res.fmt.kind != "float" else res.fmt
        top = _prec(top_fmt, fn, res)
        used: set[str] = set()
        args = []
        pre = []
        for p in fn.params:
            f = p.value.fmt
            if f.kind != "float":
                raise _err(f"parameter '{p.name}' has format {f.name}, which FPCore arguments "
                           "cannot have", fn, p.value)
            s = _symbol(p.name, used)
            self.names[p.value] = s
            args.append(s if f == top_fmt else f"(! :precision {_prec(f, fn, p.value)} {s})")
            if p.range is not None:
                lo, hi = p.range
                if math.isfinite(lo) and math.isfinite(hi):
                    pre.append(f"(<= {_literal(lo)} {s} {_literal(hi)})")
                elif math.isfinite(lo):
                    pre.append(f"(<= {_literal(lo)} {s})")
                elif math.isfinite(hi):
                    pre.append(f"(<= {s} {_literal(hi)})")
        # which values get a let* binding: shared ones, named ones, and deep chains
        uses: dict[Value, int] = {}
        for v in order:
            for s in v.srcs:
                uses[s] = uses.get(s, 0) + 1
        bound: list[Value] = []
        depth: dict[Value, int] = {}
        for v in order:
            if v.op in (Op.PARAM, Op.CONST):
                depth[v] = 0
                continue
            self._check(v)
            d = 1 + max((depth[s] for s in v.srcs), default=0)
            if v is not res and (uses.get(v, 0) > 1 or v in fn.names or d > 24):
                bound.append(v)
                depth[v] = 0
            else:
                depth[v] = d
        binds = []
        for v in bound:
            text = self.define(v, top_fmt)
            self.names[v] = _symbol(fn.names.get(v, "t"), used)
            binds.append((self.names[v], text))
        body = self.ref(res, top_fmt)
        if binds:
            inner = "\n        ".join(f"[{n} {t}]" for n, t in binds)
            body = f"(let* ({inner})\n   {body})"
        lines = [f"(FPCore ({' '.join(args)})",
                 f" :name {_string(name or fn.name)}",
                 f" :precision {top}"]
        if pre:
            lines.append(f" :pre {pre[0] if len(pre) == 1 else '(and ' + ' '.join(pre) + ')'}")
        lines.append(f" {body})")
        return "\n".join(lines) + "\n"

    def _check(self, v: Value) -> None:
        fn = self.fn
        if v.op == Op.ROUND:
            mode, sat, stream = v.attrs
            if mode == "sr" or stream >= 0:
                raise _err("stochastic rounding cannot be exported to FPCore", fn, v)
            _prec(v.fmt, fn, v)
            return
        if v.op in _BIN or v.op in _UNARY or v.op in (Op.RSQRT, Op.SIGMOID, Op.FMA):
            _prec(v.fmt, fn, v)
            return
        if v.op in _CMP or v.op in _LOGIC or v.op in (Op.NOT, Op.WHERE):
            return
        if v.op == Op.MOD:
            raise _err("'%' (floored modulo) has no FPCore equivalent", fn, v)
        if v.op in (Op.CALL, Op.PROJ):
            raise _err("calls cannot be exported (inline the callee first)", fn, v)
        raise _err(f"operation '{v.op}' cannot be exported to FPCore", fn, v)

    # ------------------------------------------------------------------------------------
    def ref(self, v: Value, ctx: Format) -> str:
        """The text of v as an operand in a context of format ctx."""
        if v in self.names:
            return self.names[v]
        if v.op == Op.CONST:
            return self.constant(v, ctx)
        return self.define(v, ctx)

    def constant(self, v: Value, ctx: Format) -> str:
        """A literal that rounds to the constant's value in ctx, exact where Grade kept it."""
        x = v.attrs[0][0]
        if v.fmt.kind == "bool":
            return "TRUE" if x else "FALSE"
        if not math.isfinite(x):
            return _literal(x)
        exact = v.attrs[1] if len(v.attrs) > 1 and v.attrs[1] is not None else None
        want = Fraction(x)
        if exact is not None:  # the literal as written (the ideal program uses it)
            ex = exact[0]
            if _rounds_to(ex, ctx, x):
                return _exact_literal(ex)
            if _rounds_to(ex, v.fmt, x):
                return f"(! :precision {_prec(v.fmt, self.fn, v)} {_exact_literal(ex)})"
        if _rounds_to(want, ctx, x):
            return _literal(x)
        return f"(! :precision {_prec(v.fmt, self.fn, v)} {_literal(x)})"

    def define(self, v: Value, ctx: Format) -> str:
        """The defining expression of v in a context of format ctx."""
        op = v.op
        if op in _CMP:
            a, b = (self.ref(s, ctx) for s in v.srcs)
            return f"({_CMP[op]} {a} {b})"
        if op in _LOGIC:
            a, b = (self.ref(s, ctx) for s in v.srcs)
            return f"({_LOGIC[op]} {a} {b})"
        if op == Op.NOT:
            return f"(not {self.ref(v.srcs[0], ctx)})"
        if op == Op.WHERE:
            c, a, b = (self.ref(s, ctx) for s in v.srcs)
            return f"(if {c} {a} {b})"
        fmt = v.fmt
        if op in (Op.RSQRT, Op.SIGMOID):
            x = self.ref(v.srcs[0], F64)
            core = f"(/ 1 (sqrt {x}))" if op == Op.RSQRT else f"(/ 1 (+ 1 (exp (- {x}))))"
            text = core if ctx == F64 else f"(! :precision binary64 {core})"
            if fmt != F64:
                text = f"(! :precision {_prec(fmt, self.fn, v)} (cast {text}))"
            return text
        if op == Op.ROUND:
            mode, sat, _ = v.attrs
            x = self.ref(v.srcs[0], fmt)
            props = f":precision {_prec(fmt, self.fn, v)}"
            if mode != "rne":
                props += f" :round {_MODES[mode]}"
                if v.srcs[0] not in self.names:  # the operand keeps nearest-even rounding
                    x = f"(! :round nearestEven {x})"
            if sat and fmt.has_inf:
                props += " :numgrade-saturate TRUE"
            return f"(! {props} (cast {x}))"
        if op in _UNARY:
            core = f"({_UNARY[op]} {self.ref(v.srcs[0], fmt)})"
        elif op == Op.FMA:
            core = "(fma " + " ".join(self.ref(s, fmt) for s in v.srcs) + ")"
        else:
            a, b = (self.ref(s, fmt) for s in v.srcs)
            core = f"({_BIN[op]} {a} {b})"
        if fmt != ctx:
            return f"(! :precision {_prec(fmt, self.fn, v)} {core})"
        return core


def _rounds_to(ex: Fraction, fmt: Format, x: float) -> bool:
    try:
        return round_exact(ex, fmt, "rne", False) == x
    except (OverflowError, ValueError):
        return False


def _exact_literal(v: Fraction) -> str:
    """An FPCore literal denoting exactly v: a decimal when it terminates briefly, else p/q."""
    text = exact_decimal(abs(v), 30)
    if text is not None:
        return ("-" if v < 0 else "") + text
    return f"{v.numerator}/{v.denominator}"


def _string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_fpcore(fn, name: str | None = None) -> str:
    """FPCore text of a scalar straight-line function (an IR Function or an API Function)."""
    if not isinstance(fn, N.Function):
        ir = getattr(fn, "ir", None)
        if not isinstance(ir, N.Function):
            raise GradeError("to_fpcore() needs a numgrade function")
        fn = ir
    return _Exporter(fn).run(name)
