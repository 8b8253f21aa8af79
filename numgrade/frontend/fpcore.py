"""FPCore frontend: read FPBench benchmarks and translate the supported subset into Grade.

FPCore (https://fpbench.org/spec/) is the s-expression format of the FPBench suite::

    (FPCore name? (args...) :prop value ... body)

This module provides

* :func:`read_sexps` -- a non-recursive s-expression reader (``;`` comments, ``#| |#`` block
  comments, strings with ``\\"`` and ``\\\\`` escapes, ``[ ]`` as parentheses) whose malformed-text
  errors are :class:`~numgrade.errors.SourceError` diagnostics at FILE:LINE:COL;
* :func:`parse_fpcore_file` -- the benchmarks of a file as :class:`Benchmark` records: name,
  arguments, precision, the input ranges derived from ``:pre`` and the preconditions that are not
  simple variable bounds (``extra``: they restrict the domain further, so ignoring them gives a
  sound over-approximation -- every bound computed over the ranges holds on the real domain);
* :func:`to_grade` -- the Grade AST (one ``fn``) of a supported benchmark, or ``None`` with a
  precise reason;
* :func:`load_benchmarks` -- parse, translate, lower and effect-check every benchmark of a file;
* :func:`grade_source` -- the Grade text of a translated program.

Translation (FPCore semantics -> Grade semantics)
-------------------------------------------------
* ``:precision binary64 | binary32 | binary16`` (and ``(float 11 64)`` / ``(float 8 32)`` /
  ``(float 5 16)`` / ``(float 8 16)`` = bf16 / ``(float 5 8)`` = e5m2) map to f64/f32/f16/bf16/e5m2;
  the default is binary64. ``real``, ``integer``, ``binary80``... are unsupported, and so is a
  ``:round`` other than ``nearestEven`` (Grade's implicit rounding is round-to-nearest-even).
* Every FPCore operation rounds its result to the precision of its context; so does every Grade
  operation (to its working format). Where the operands' formats would make Grade's working
  format differ from the FPCore context (mixed precision through ``!``), the operation is bound
  with an annotated ``let t: fmt = ...`` so that it rounds once to the context's format.
* Numeric literals keep their exact text (decimal) or become exact divisions ``p / q``
  (rationals, hex and ``digits`` literals); Grade folds them exactly and rounds them once to the
  format they meet, which is the context precision, as in FPCore (the computed program uses the
  rounded value; numgrade's ideal program, like FPCore's real semantics, the exact one). An FPCore
  operation whose operands are all constants still rounds in FPCore, so its literal operands are
  written ``(lit as fmt)``: Grade then computes it like any other operation instead of folding it
  exactly. Comparisons of constants are decided at translation time (they are exact).
* The constants ``PI E LN2 ...`` are written with 60 significant digits and so are rounded once,
  correctly, to the context format (the ideal program sees the 60-digit value, within 1e-60 of
  the real constant). ``INFINITY`` and ``NAN`` have no Grade literal (unsupported).
* ``(- x)`` is unary minus; ``fabs`` is ``abs``; ``fmin``/``fmax`` are ``min``/``max`` (which
  propagate NaN where FPCore's return the other operand: noted); ``fma`` is Grade's ``fma`` (one
  rounding); ``pow`` with a constant integer exponent 0..16 is Grade's ``x ** n``, a left-to-right
  product (n-1 roundings where a correctly rounded ``pow`` rounds once for n >= 3: noted);
  ``sqrt exp log sin cos tanh exp2 log2 floor ceil`` map to the Grade functions of that name.
* ``if`` becomes ``where(c, a, b)``: both branches are evaluated (noted; a branch that is not taken
  may be NaN there, which the selection discards, but an analysis sees both).
* ``let`` (parallel) and ``let*`` (sequential) become Grade ``let`` statements with fresh names, so
  no shadowing is ever relied on; comparisons are variadic (chains), ``and``/``or``/``not``.
* ``(! :precision P e)`` changes the context; ``(cast e)`` rounds ``e`` to the context precision
  (``round(e, fmt, sat=false)``; ``:numgrade-saturate TRUE`` in the context -- written by the
  exporter for Grade's saturating ``as`` -- keeps saturation).
* Unsupported: loops (``while``, ``while*``, ``for``, ``for*``), tensors and arrays, functions that
  Grade lacks (``tan atan atan2 acos hypot cbrt expm1 log1p ...``), array arguments, and a variable
  without both a lower and an upper bound in ``:pre``.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple, Union

import mpmath

from ..errors import DiagnosticSink, GradeError, SourceError, Span, register_source
from ..ir.formats import FORMATS, Format, promote, represents
from . import ast as A
from .constfold import FoldError, exact_decimal, fold_unary, round_exact
from .lower import BUILTINS as _LOWER_BUILTINS

__all__ = [
    "Atom", "SList", "SExp", "read_sexps", "Arg", "Bound", "Constraint", "Benchmark",
    "parse_fpcore_file", "to_grade", "load_benchmarks", "load_fpcore_source", "LoadedBenchmark",
    "grade_source", "mangle", "FPCORE_PRECISIONS", "sexp_text",
]


# =============================================================================================
# s-expressions
@dataclass(frozen=True)
class Atom:
    """A symbol, number, string or keyword (``:name``)."""

    text: str
    kind: str  # 'symbol' | 'number' | 'string' | 'keyword'
    span: Span
    value: object = None  # numbers: exact Fraction; strings: the decoded text

    def __repr__(self) -> str:
        return f"Atom({self.text!r})"


@dataclass(frozen=True)
class SList:
    """A parenthesised list; ``bracket`` is '(' or '['."""

    items: tuple["SExp", ...]
    span: Span
    bracket: str = "("

    def head(self) -> str | None:
        if self.items and isinstance(self.items[0], Atom) and self.items[0].kind == "symbol":
            return self.items[0].text
        return None

    def __repr__(self) -> str:
        return f"SList({sexp_text(self)})"


SExp = Union[Atom, SList]

_RATIONAL = re.compile(r"[+-]?[0-9]+/[0-9]*[1-9][0-9]*\Z")
_DECNUM = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_HEXNUM = re.compile(r"([+-]?)0[xX]([0-9a-fA-F]+(?:\.[0-9a-fA-F]*)?|\.[0-9a-fA-F]+)"
                     r"(?:[pP]([+-]?[0-9]+))?\Z")
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>;[^\n]*)
  | (?P<block>\#\|)
  | (?P<string>")
  | (?P<open>[(\[])
  | (?P<close>[)\]])
  | (?P<atom>[^\s()\[\]";]+)
""", re.VERBOSE)
_CLOSE_OF = {"(": ")", "[": "]"}
MAX_SOURCE_CHARS = 8_000_000


def _parse_hex(m: re.Match) -> Fraction:
    sign, body, exp = m.group(1), m.group(2), m.group(3)
    if "." in body:
        ip, fp = body.split(".")
    else:
        ip, fp = body, ""
    mant = int((ip or "0") + fp, 16) if (ip or fp) else 0
    v = Fraction(mant) / Fraction(16) ** len(fp)
    e = int(exp) if exp else 0
    v = v * (Fraction(2) ** e)
    return -v if sign == "-" else v


def number_value(text: str) -> Fraction | None:
    """The exact value of an FPCore numeric token (rational, decimal, hex), or None."""
    if _RATIONAL.match(text):
        num, den = text.split("/")
        return Fraction(int(num), int(den))
    if _DECNUM.match(text):
        return Fraction(text)
    m = _HEXNUM.match(text)
    if m:
        return _parse_hex(m)
    return None


class _Locator:
    def __init__(self, text: str, file: str):
        self.file = file
        self.starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def pos(self, off: int) -> tuple[int, int]:
        li = bisect.bisect_right(self.starts, off) - 1
        return li + 1, off - self.starts[li] + 1

    def span(self, start: int, end: int | None = None) -> Span:
        line, col = self.pos(start)
        end_col = None
        if end is not None and end > start:
            l2, c2 = self.pos(end)
            if l2 == line:
                end_col = c2
        return Span(self.file, line, col, end_col)


def _decode_string(raw: str) -> str:
    out = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\" and i + 1 < len(raw):
            out.append(raw[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def read_sexps(text: str, file: str = "<fpcore>") -> list[SExp]:
    """Read every top-level datum of `text`; raise SourceError (located) on malformed text.

    The reader keeps an explicit stack of open lists, so nesting depth is not limited by Python's
    recursion limit.
    """
    if not isinstance(text, str):
        raise SourceError("FPCore source must be text", None)
    if len(text) > MAX_SOURCE_CHARS:
        raise SourceError(f"source is too large ({len(text)} characters; limit "
                          f"{MAX_SOURCE_CHARS})", Span(file, 1, 1))
    loc = _Locator(text, file)
    stack: list[tuple[str, int, list]] = []  # (open bracket, offset, items)
    top: list[SExp] = []
    i, n = 0, len(text)
    while i < n:
        m = _TOKEN.match(text, i)
        if m is None:  # pragma: no cover - every character matches one alternative
            raise SourceError(f"unexpected character {text[i]!r}", loc.span(i))
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            i = m.end()
            continue
        if kind == "block":
            j = text.find("|#", m.end())
            if j < 0:
                raise SourceError("unterminated block comment '#|'", loc.span(i, i + 2))
            i = j + 2
            continue
        if kind == "string":
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise SourceError("unterminated string", loc.span(i, i + 1))
            raw = text[i + 1:j]
            node: SExp = Atom(text[i:j + 1], "string", loc.span(i, j + 1), _decode_string(raw))
            i = j + 1
        elif kind == "open":
            stack.append((m.group(), i, []))
            i = m.end()
            continue
        elif kind == "close":
            c = m.group()
            if not stack:
                raise SourceError(f"unexpected {c!r} with no matching opening parenthesis",
                                  loc.span(i, i + 1))
            opener, start, items = stack.pop()
            if _CLOSE_OF[opener] != c:
                sp = loc.span(start)
                raise SourceError(f"{c!r} does not match the {opener!r} opened at line {sp.line}, "
                                  f"column {sp.col}", loc.span(i, i + 1))
            node = SList(tuple(items), loc.span(start, i + 1), opener)
            i = m.end()
        else:
            tok = m.group()
            val = number_value(tok)
            if val is not None:
                node = Atom(tok, "number", loc.span(i, m.end()), val)
            elif tok.startswith(":") and len(tok) > 1:
                node = Atom(tok, "keyword", loc.span(i, m.end()))
            else:
                node = Atom(tok, "symbol", loc.span(i, m.end()))
            i = m.end()
        (stack[-1][2] if stack else top).append(node)
    if stack:
        opener, start, _ = stack[-1]
        raise SourceError(f"unclosed {opener!r}: end of input reached before its "
                          f"{_CLOSE_OF[opener]!r}", loc.span(start, start + 1))
    return top


def sexp_text(e: SExp, limit: int = 10_000) -> str:
    """Compact one-line text of an s-expression (non-recursive)."""
    out: list[str] = []
    stack: list = [e]
    size = 0
    while stack:
        x = stack.pop()
        if isinstance(x, SList):
            stack.append(_CLOSE_OF[x.bracket])
            for k, it in enumerate(reversed(x.items)):
                stack.append(it)
                if k < len(x.items) - 1:
                    stack.append(" ")
            stack.append(x.bracket)
            continue
        piece = x if isinstance(x, str) else x.text
        out.append(piece)
        size += len(piece)
        if size > limit:
            out.append(" ...")
            break
    return "".join(out)


# =============================================================================================
# benchmarks
FPCORE_PRECISIONS = {"binary64": "f64", "binary32": "f32", "binary16": "f16"}
# (float es nbits) -> Grade format
_FLOAT_PRECISIONS = {(11, 64): "f64", (8, 32): "f32", (5, 16): "f16", (8, 16): "bf16",
                     (5, 8): "e5m2"}
ROUND_MODES = {"nearestEven": "rne", "toPositive": "ru", "toNegative": "rd", "toZero": "rz"}

CONSTANT_NAMES = ("E", "LOG2E", "LOG10E", "LN2", "LN10", "PI", "PI_2", "PI_4", "M_1_PI", "M_2_PI",
                  "M_2_SQRTPI", "SQRT2", "SQRT1_2", "INFINITY", "NAN", "TRUE", "FALSE")
_CONST_DIGITS = 60


def _constant_values() -> dict[str, tuple[Fraction, Fraction]]:
    """Each named constant as a 60-digit decimal and a bound on its distance from the real
    constant (one unit in the last digit; the decimal is rounded from a 400-bit value)."""
    ctx = mpmath.MPContext()
    ctx.prec = 400
    vals = {"E": ctx.e, "LOG2E": 1 / ctx.ln2, "LOG10E": 1 / ctx.ln10, "LN2": ctx.ln2,
            "LN10": ctx.ln10, "PI": ctx.pi, "PI_2": ctx.pi / 2, "PI_4": ctx.pi / 4,
            "M_1_PI": 1 / ctx.pi, "M_2_PI": 2 / ctx.pi, "M_2_SQRTPI": 2 / ctx.sqrt(ctx.pi),
            "SQRT2": ctx.sqrt(2), "SQRT1_2": 1 / ctx.sqrt(2)}
    out = {}
    for k, v in vals.items():
        # 60 significant digits, as an exact decimal
        s = ctx.nstr(v, _CONST_DIGITS, strip_zeros=False, min_fixed=-5, max_fixed=5)
        x = Fraction(s)
        unit = Fraction(10) ** (math.floor(math.log10(x)) - _CONST_DIGITS + 1)
        out[k] = (x, unit)
    return out


CONSTANT_ENCLOSURES: dict[str, tuple[Fraction, Fraction]] = _constant_values()
CONSTANTS: dict[str, Fraction] = {k: v for k, (v, _) in CONSTANT_ENCLOSURES.items()}


@dataclass
class Arg:
    """One FPCore argument: its name, an optional precision annotation and array dimensions."""

    name: str
    span: Span
    precision: SExp | None = None
    dims: tuple[SExp, ...] = ()
    props: dict[str, SExp] = field(default_factory=dict)


@dataclass
class Bound:
    """An input range derived from ``:pre`` (exact endpoints; None where unbounded)."""

    lo: Fraction | None = None
    hi: Fraction | None = None
    lo_strict: bool = False
    hi_strict: bool = False
    lo_expr: SExp | None = None
    hi_expr: SExp | None = None

    @property
    def complete(self) -> bool:
        return self.lo is not None and self.hi is not None

    def as_floats(self) -> tuple[float, float]:
        return float(self.lo), float(self.hi)


@dataclass
class Constraint:
    """A precondition conjunct that is not a simple bound on one variable.

    ``env`` holds the constants bound by enclosing ``let`` forms of the precondition.
    """

    expr: SExp
    env: dict[str, Fraction] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return sexp_text(self.expr)

    @property
    def span(self) -> Span:
        return self.expr.span


@dataclass
class Benchmark:
    """One FPCore of a file."""

    name: str                       # :name, else the FPCore's own name, else FILE:INDEX
    ident: str                      # a Grade identifier, unique in the file
    file: str
    index: int                      # 0-based position in the file
    span: Span
    args: list[Arg]
    precision: SExp | None          # the :precision value (None: default binary64)
    properties: dict[str, SExp]     # the last value of each property
    property_list: list[tuple[str, SExp]]
    pre: SExp | None
    ranges: dict[str, Bound]
    extra: list[Constraint]         # preconditions that are not variable bounds
    body: SExp
    fpcore_name: str | None = None  # (FPCore NAME (args) ...)
    text: str = ""                  # the FPCore's source text
    pre_notes: list[str] = field(default_factory=list)
    unsatisfiable: str | None = None  # why :pre can never hold, when it visibly cannot
    notes: list[str] = field(default_factory=list)  # filled by to_grade

    @property
    def precision_name(self) -> str:
        if self.precision is None:
            return "binary64"
        return sexp_text(self.precision)

    @property
    def arg_names(self) -> list[str]:
        return [a.name for a in self.args]

    def range_of(self, name: str) -> tuple[float, float] | None:
        b = self.ranges.get(name)
        return b.as_floats() if b is not None and b.complete else None


_GRADE_KEYWORDS = {"const", "fn", "in", "requires", "let", "return", "as", "and", "or", "not",
                   "true", "false", "None"}
_GRADE_BUILTINS = {"fma", "abs", "exp", "log", "sqrt", "rsqrt", "tanh", "sigmoid", "floor",
                   "ceil", "sin", "cos", "exp2", "log2", "sum", "mean", "max", "min", "where",
                   "round", "reshape", "transpose", "broadcast_to", "concat", "matmul",
                   "topk_mask", "rand", "arange", "feature"}
RESERVED = _GRADE_KEYWORDS | _GRADE_BUILTINS | set(_LOWER_BUILTINS) | set(FORMATS)


def mangle(name: str, used: set[str] | None = None) -> str:
    """A Grade identifier for an FPCore name (``t*`` -> ``t_star``), unique within `used`."""
    s = name.replace("*", "_star").replace("'", "_prime")
    s = re.sub(r"[^A-Za-z0-9_]+", "_", s)
    s = re.sub(r"_+", "_", s).strip("_") or "v"
    if s[0].isdigit():
        s = "v_" + s
    if s in RESERVED:
        s = s + "_"
    if used is not None:
        base, k = s, 2
        while s in used or s in RESERVED:
            s = f"{base}_{k}"
            k += 1
        used.add(s)
    return s


def parse_fpcore_file(text: str, filename: str = "<fpcore>") -> list[Benchmark]:
    """All benchmarks of an FPCore text; malformed text raises SourceError at FILE:LINE:COL."""
    register_source(filename, text)
    forms = read_sexps(text, filename)
    sink = DiagnosticSink()
    out: list[Benchmark] = []
    used: set[str] = set()
    lines = text.splitlines()
    for idx, form in enumerate(forms):
        b = _parse_fpcore(form, idx, filename, sink, used, lines)
        if b is not None:
            out.append(b)
    sink.raise_if_errors()
    return out


def _source_slice(lines: list[str], span: Span, end_span: Span | None) -> str:
    # best effort: the lines the form covers
    if end_span is None:
        return lines[span.line - 1] if 0 < span.line <= len(lines) else ""
    return "\n".join(lines[span.line - 1:end_span.line])


def _last_span(e: SExp) -> Span:
    while isinstance(e, SList) and e.items:
        e = e.items[-1]
    return e.span


def _parse_fpcore(form: SExp, idx: int, file: str, sink: DiagnosticSink, used: set[str],
                  lines: list[str]) -> Benchmark | None:
    if not isinstance(form, SList) or form.head() != "FPCore":
        what = sexp_text(form, 40) if isinstance(form, SList) else repr(form.text)
        sink.error(f"expected an (FPCore ...) form, found {what}", form.span)
        return None
    items = list(form.items[1:])
    fp_name = None
    where = form.span
    if items and isinstance(items[0], Atom) and items[0].kind == "symbol":
        fp_name = items[0].text
        where = items[0].span
        items = items[1:]
    if not items or not isinstance(items[0], SList):
        sink.error("FPCore needs an argument list, e.g. (FPCore (x y) ...)",
                   items[0].span if items else where)
        return None
    arg_list = items[0]
    args: list[Arg] = []
    ok = True
    seen: set[str] = set()
    for a in arg_list.items:
        arg = _parse_arg(a, sink)
        if arg is None:
            ok = False
            continue
        if arg.name in seen:
            sink.error(f"argument '{arg.name}' is declared twice", arg.span)
            ok = False
        seen.add(arg.name)
        args.append(arg)
    rest = items[1:]
    props: list[tuple[str, SExp]] = []
    body = None
    i = 0
    while i < len(rest):
        it = rest[i]
        if isinstance(it, Atom) and it.kind == "keyword":
            if i + 1 >= len(rest):
                sink.error(f"property {it.text} has no value", it.span)
                return None
            props.append((it.text[1:], rest[i + 1]))
            i += 2
            continue
        if body is not None:
            sink.error("unexpected datum after the FPCore body (one body expression is allowed)",
                       it.span)
            return None
        body = it
        i += 1
    if body is None:
        sink.error("FPCore has no body expression", form.span)
        return None
    if not ok:
        return None
    pd = dict(props)
    name = None
    if "name" in pd:
        nv = pd["name"]
        name = nv.value if isinstance(nv, Atom) and nv.kind == "string" else sexp_text(nv)
    if not name:
        name = fp_name or f"{file}:{idx}"
    ident = mangle(name, used)
    pre = pd.get("pre")
    ranges, extra, notes, unsat = analyze_pre(pre, [a.name for a in args])
    return Benchmark(name=name, ident=ident, file=file, index=idx, span=form.span, args=args,
                     precision=pd.get("precision"), properties=pd, property_list=props, pre=pre,
                     ranges=ranges, extra=extra, body=body, fpcore_name=fp_name,
                     text=_source_slice(lines, form.span, _last_span(form)), pre_notes=notes,
                     unsatisfiable=unsat)


def _parse_arg(a: SExp, sink: DiagnosticSink) -> Arg | None:
    if isinstance(a, Atom):
        if a.kind != "symbol":
            sink.error(f"an argument must be a name, not {a.text}", a.span)
            return None
        return Arg(a.text, a.span)
    items = list(a.items)
    if not items:
        sink.error("empty argument ()", a.span)
        return None
    if isinstance(items[0], Atom) and items[0].text == "!":
        props: dict[str, SExp] = {}
        j = 1
        while j < len(items) and isinstance(items[j], Atom) and items[j].kind == "keyword":
            if j + 1 >= len(items):
                sink.error(f"property {items[j].text} has no value", items[j].span)
                return None
            props[items[j].text[1:]] = items[j + 1]
            j += 2
        if j >= len(items) or not (isinstance(items[j], Atom) and items[j].kind == "symbol"):
            sink.error("an annotated argument is (! :prop value ... name dims...)", a.span)
            return None
        return Arg(items[j].text, items[j].span, props.get("precision"), tuple(items[j + 1:]),
                   props)
    if isinstance(items[0], Atom) and items[0].kind == "symbol":
        if len(items) < 2:
            sink.error("an array argument is (name dim ...)", a.span)
            return None
        return Arg(items[0].text, items[0].span, None, tuple(items[1:]))
    sink.error("an argument must be a name, (name dims...) or (! props... name)", a.span)
    return None


# ---------------------------------------------------------------------------------------------
# constant evaluation (bounds of :pre, pow exponents)
class _NotConst(Exception):
    pass


_CMP = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b, "==": lambda a, b: a == b}
_FOLD_UNARY = {"sqrt": "sqrt", "exp": "exp", "log": "log", "sin": "sin", "cos": "cos",
               "tanh": "tanh", "exp2": "exp2", "log2": "log2", "fabs": "abs", "floor": "floor",
               "ceil": "ceil"}


def const_value(e: SExp, env: dict[str, Fraction | bool] | None = None, depth: int = 0):
    """Exact value (Fraction, or bool) of a variable-free FPCore expression; raises _NotConst."""
    env = env or {}
    if depth > 150:
        raise _NotConst()
    if isinstance(e, Atom):
        if e.kind == "number":
            return e.value
        if e.kind == "symbol":
            if e.text in env:
                return env[e.text]
            if e.text == "TRUE":
                return True
            if e.text == "FALSE":
                return False
            if e.text in CONSTANTS:
                return CONSTANTS[e.text]
        raise _NotConst()
    h = e.head()
    args = e.items[1:]
    if h is None:
        raise _NotConst()
    if h in ("let", "let*") and len(args) == 2 and isinstance(args[0], SList):
        env2 = dict(env)
        for b in args[0].items:
            if not (isinstance(b, SList) and len(b.items) == 2 and isinstance(b.items[0], Atom)):
                raise _NotConst()
            env2[b.items[0].text] = const_value(b.items[1], env2 if h == "let*" else env, depth + 1)
        return const_value(args[1], env2, depth + 1)
    if h == "digits" and len(args) == 3:
        m, ex, base = (const_value(a, env, depth + 1) for a in args)
        return Fraction(m) * Fraction(base) ** int(ex)
    if h == "!":
        return const_value(e.items[-1], env, depth + 1)
    vals = [const_value(a, env, depth + 1) for a in args]
    nums = [v for v in vals if not isinstance(v, bool)]
    if h in ("and", "or", "not", "if"):
        if h == "and":
            return all(vals)
        if h == "or":
            return any(vals)
        if h == "not" and len(vals) == 1:
            return not vals[0]
        if h == "if" and len(vals) == 3:
            return vals[1] if vals[0] else vals[2]
        raise _NotConst()
    if len(nums) != len(vals):
        raise _NotConst()
    try:
        if h == "+" and vals:
            return sum(vals[1:], vals[0])
        if h == "-" and len(vals) == 1:
            return -vals[0]
        if h == "-" and len(vals) == 2:
            return vals[0] - vals[1]
        if h == "*" and vals:
            r = vals[0]
            for v in vals[1:]:
                r = r * v
            return r
        if h == "/" and len(vals) == 2 and vals[1] != 0:
            return vals[0] / vals[1]
        if h in ("fmin", "fmax") and len(vals) == 2:
            return min(vals) if h == "fmin" else max(vals)
        if h == "pow" and len(vals) == 2 and vals[1].denominator == 1 and abs(vals[1]) <= 64:
            if vals[0] == 0 and vals[1] < 0:
                raise _NotConst()
            return vals[0] ** int(vals[1])
        if h in _CMP and len(vals) >= 2:
            return all(_CMP[h](a, b) for a, b in zip(vals, vals[1:]))
        if h == "!=" and len(vals) >= 2:
            return len(set(vals)) == len(vals)
        if h in _FOLD_UNARY and len(vals) == 1:
            return fold_unary(_FOLD_UNARY[h], vals[0])
    except (FoldError, ZeroDivisionError, OverflowError, ValueError):
        raise _NotConst() from None
    raise _NotConst()


def analyze_pre(pre: SExp | None, args: list[str]):
    """Split a precondition into variable bounds and extra constraints.

    Returns (ranges, extra, notes, unsatisfiable-reason). Bounds come from comparison chains
    between one argument and constant expressions (``(<= a x b)``, ``(< a x)``, ``(>= x a)``,
    ``(== x c)``), through ``and`` and ``let`` forms with constant bindings; strict bounds are
    widened to closed ones. Everything else is an extra constraint.
    """
    ranges: dict[str, Bound] = {a: Bound() for a in args}
    extra: list[Constraint] = []
    notes: list[str] = []
    unsat: str | None = None
    if pre is None:
        return ranges, extra, notes, unsat
    argset = set(args)
    strict_seen = False
    work: list[tuple[SExp, dict]] = [(pre, {})]
    while work:
        e, env = work.pop()
        try:
            v = const_value(e, env)
        except _NotConst:
            v = None
        if v is not None:
            if v is False:
                unsat = f"precondition conjunct {sexp_text(e, 80)} is false"
            elif not isinstance(v, bool):
                extra.append(Constraint(e, dict(env)))
            continue
        if isinstance(e, SList):
            h = e.head()
            if h == "and":
                work.extend((x, env) for x in reversed(e.items[1:]))
                continue
            if h in ("let", "let*") and len(e.items) == 3 and isinstance(e.items[1], SList):
                env2 = dict(env)
                ok = True
                for b in e.items[1].items:
                    if not (isinstance(b, SList) and len(b.items) == 2
                            and isinstance(b.items[0], Atom)):
                        ok = False
                        break
                    try:
                        env2[b.items[0].text] = const_value(b.items[1],
                                                            env2 if h == "let*" else env)
                    except _NotConst:
                        ok = False
                        break
                if ok:
                    work.append((e.items[2], env2))
                else:
                    extra.append(Constraint(e, dict(env)))
                continue
            if h in ("<", "<=", ">", ">=", "==") and len(e.items) >= 3:
                terms = e.items[1:]
                simple = True
                for l, r in zip(terms, terms[1:]):
                    op = h
                    if op in (">", ">="):
                        l, r, op = r, l, {">": "<", ">=": "<="}[op]
                    lvar = isinstance(l, Atom) and l.kind == "symbol" and l.text in argset \
                        and l.text not in env
                    rvar = isinstance(r, Atom) and r.kind == "symbol" and r.text in argset \
                        and r.text not in env
                    lv = rv = None
                    if not lvar:
                        try:
                            lv = const_value(l, env)
                        except _NotConst:
                            lv = None
                    if not rvar:
                        try:
                            rv = const_value(r, env)
                        except _NotConst:
                            rv = None
                    if isinstance(lv, bool) or isinstance(rv, bool):
                        simple = False
                        continue
                    strict = op == "<"
                    if lvar and rv is not None:
                        _set_hi(ranges[l.text], rv, strict, r)
                        if op == "==":
                            _set_lo(ranges[l.text], rv, False, r)
                        strict_seen |= strict
                    elif rvar and lv is not None:
                        _set_lo(ranges[r.text], lv, strict, l)
                        if op == "==":
                            _set_hi(ranges[r.text], lv, False, l)
                        strict_seen |= strict
                    elif lv is not None and rv is not None:
                        if not _CMP[op](lv, rv):
                            unsat = f"precondition {sexp_text(e, 80)} is false"
                    else:
                        simple = False
                if not simple:
                    extra.append(Constraint(e, dict(env)))
                continue
        extra.append(Constraint(e, dict(env)))
    for a, b in ranges.items():
        if b.complete and b.lo > b.hi:
            unsat = f"the precondition gives an empty range for '{a}'"
    if strict_seen:
        notes.append("strict bounds in :pre are taken as closed ranges (a superset: sound)")
    return ranges, extra, notes, unsat


def _set_lo(b: Bound, v: Fraction, strict: bool, ex: SExp) -> None:
    if b.lo is None or v > b.lo or (v == b.lo and strict):
        b.lo, b.lo_strict, b.lo_expr = v, strict, ex


def _set_hi(b: Bound, v: Fraction, strict: bool, ex: SExp) -> None:
    if b.hi is None or v < b.hi or (v == b.hi and strict):
        b.hi, b.hi_strict, b.hi_expr = v, strict, ex


# =============================================================================================
# translation to the Grade AST
class Unsupported(Exception):
    """The benchmark is outside the supported subset (the message says why)."""


F64, BOOL = FORMATS["f64"], FORMATS["bool"]
MAX_PAREN_DEPTH = 150   # FPCore nesting accepted by the (recursive) translator
HOIST_DEPTH = 40        # Grade expressions deeper than this are bound to a let
MAX_POW = 16

_UNARY_MAP = {"sqrt": "sqrt", "exp": "exp", "log": "log", "sin": "sin", "cos": "cos",
              "tanh": "tanh", "exp2": "exp2", "log2": "log2", "fabs": "abs", "floor": "floor",
              "ceil": "ceil"}
_EXACT_UNARY = {"fabs", "floor", "ceil"}
_BINARY_ARITH = {"+", "-", "*", "/"}
_LOOPS = {"while", "while*", "for", "for*"}
_TENSORS = {"tensor", "tensor*", "array", "ref", "dim", "size"}
_KNOWN_UNSUPPORTED_HINT = {
    "tan": "Grade has no tan", "atan": "Grade has no atan", "atan2": "Grade has no atan2",
    "hypot": "Grade has no hypot", "cbrt": "Grade has no cbrt",
}


def precision_format(p: SExp | None) -> Format:
    """The Grade format of an FPCore precision, or raise Unsupported."""
    if p is None:
        return F64
    if isinstance(p, Atom):
        if p.text in FPCORE_PRECISIONS:
            return FORMATS[FPCORE_PRECISIONS[p.text]]
        raise Unsupported(f"unsupported precision {p.text} (supported: binary64, binary32, "
                          "binary16)")
    if p.head() == "float" and len(p.items) == 3:
        try:
            es, nb = int(const_value(p.items[1])), int(const_value(p.items[2]))
        except (_NotConst, TypeError, ValueError):
            es = nb = -1
        if (es, nb) in _FLOAT_PRECISIONS:
            return FORMATS[_FLOAT_PRECISIONS[(es, nb)]]
    raise Unsupported(f"unsupported precision {sexp_text(p, 60)}")


def fpcore_precision_name(fmt: Format) -> str | None:
    """The FPCore precision of a Grade format, None if FPCore cannot express it."""
    for k, v in FPCORE_PRECISIONS.items():
        if v == fmt.name:
            return k
    for (es, nb), v in _FLOAT_PRECISIONS.items():
        if v == fmt.name:
            return f"(float {es} {nb})"
    return None


@dataclass
class _TV:
    """A translated expression: Grade AST, format (None: a weak constant), kind, depth."""

    expr: A.Expr
    fmt: Format | None
    kind: str = "num"          # 'num' | 'bool'
    value: Fraction | bool | None = None  # exact value of weak constants
    depth: int = 1

    @property
    def weak(self) -> bool:
        return self.fmt is None


@dataclass
class _Ctx:
    fmt: Format
    saturate: bool = False
    mode: str = "rne"


def _frac_expr(v: Fraction, span: Span) -> A.Expr:
    """An exact Grade literal for a rational: decimal text when short, else p / q."""
    neg = v < 0
    a = -v if neg else v
    text = exact_decimal(a, 40)
    if text is not None:
        e: A.Expr = A.Number(span, text)
    else:
        e = A.BinOp(span, "/", A.Number(span, str(a.numerator)),
                    A.Number(span, str(a.denominator)))
    return A.UnOp(span, "-", e) if neg else e


def _number_expr(atom: Atom) -> A.Expr:
    """Grade literal for an FPCore numeric token, keeping decimal text exact."""
    t = atom.text
    sp = atom.span
    if _DECNUM.match(t):
        neg = t.startswith("-")
        body = t.lstrip("+-")
        e: A.Expr = A.Number(sp, body)
        return A.UnOp(sp, "-", e) if neg else e
    if _RATIONAL.match(t):
        neg = t.startswith("-")
        num, den = t.lstrip("+-").split("/")
        e = A.BinOp(sp, "/", A.Number(sp, num), A.Number(sp, den))
        return A.UnOp(sp, "-", e) if neg else e
    return _frac_expr(atom.value, sp)


class _Translator:
    def __init__(self, bench: Benchmark):
        self.bench = bench
        self.stmts: list[A.Let] = []
        self.used: set[str] = set()
        self.notes: list[str] = []

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def fresh(self, name: str) -> str:
        return mangle(name, self.used)

    # helpers ----------------------------------------------------------------------------
    def bind(self, name: str, tv: _TV, span: Span, annot: Format | None = None) -> _TV:
        g = self.fresh(name)
        typ = A.TypeExpr(span, annot.name, None) if annot is not None else None
        self.stmts.append(A.Let(span, (g,), False, typ, tv.expr))
        fmt = annot if annot is not None else tv.fmt
        return _TV(A.Name(span, g), fmt, tv.kind, tv.value, 1)

    def mk(self, expr: A.Expr, fmt: Format | None, kind: str, kids: list[_TV], span: Span,
           value=None) -> _TV:
        d = 1 + max((k.depth for k in kids), default=0)
        tv = _TV(expr, fmt, kind, value, d)
        if d > HOIST_DEPTH:
            tv = self.bind("t", tv, span)
        return tv

    def _rne(self, ctx: _Ctx) -> None:
        if ctx.mode != "rne":
            inv = {v: k for k, v in ROUND_MODES.items()}
            raise Unsupported(f"operations under :round {inv[ctx.mode]} are not supported "
                              "(Grade's implicit rounding is to nearest even; only cast may "
                              "round in another mode)")

    def typed(self, tv: _TV, ctx: _Ctx, span: Span) -> _TV:
        """A weak numeric constant rounded once to the context format: (c as fmt)."""
        if not tv.weak:
            return tv
        if tv.kind == "bool":
            return tv
        self._rne(ctx)
        self._check_literal(tv.value, ctx.fmt, span)
        return _TV(A.Cast(span, tv.expr, ctx.fmt.name, span), ctx.fmt, "num", None, tv.depth + 1)

    def _check_literal(self, v, fmt: Format, span: Span) -> None:
        if v is None or isinstance(v, bool):
            return
        if abs(v) > Fraction(F64.max_finite):
            raise Unsupported(f"constant {float(v):g} overflows binary64 (line {span.line})")
        r = round_exact(v, fmt, "rne", False)
        if r in (float("inf"), float("-inf")):
            raise Unsupported(f"constant {float(v):g} overflows {fmt.name} (line {span.line})")

    # entry ------------------------------------------------------------------------------
    def run(self) -> A.Program:
        b = self.bench
        reasons: list[str] = []
        top = precision_format(b.precision)
        rnd = b.properties.get("round")
        if rnd is not None and sexp_text(rnd) != "nearestEven":
            raise Unsupported(f"unsupported rounding mode :round {sexp_text(rnd)} (Grade rounds "
                              "to nearest even)")
        if b.unsatisfiable:
            raise Unsupported(b.unsatisfiable)
        scope: dict[str, _TV] = {}
        params: list[A.Param] = []
        self.used.update(RESERVED)
        for a in b.args:
            if a.dims:
                reasons.append(f"array argument '{a.name}' is not supported")
                continue
            try:
                fmt = precision_format(a.precision) if a.precision is not None else top
            except Unsupported as ex:
                reasons.append(f"argument '{a.name}': {ex}")
                continue
            g = self.fresh(a.name)
            bnd = b.ranges.get(a.name)
            rng = None
            if bnd is not None and bnd.complete:
                lo = bnd.lo_expr if isinstance(bnd.lo_expr, Atom) and bnd.lo_expr.kind == "number" \
                    else None
                hi = bnd.hi_expr if isinstance(bnd.hi_expr, Atom) and bnd.hi_expr.kind == "number" \
                    else None
                lo_e = _number_expr(lo) if lo is not None else _frac_expr(bnd.lo, a.span)
                hi_e = _number_expr(hi) if hi is not None else _frac_expr(bnd.hi, a.span)
                rng = (lo_e, hi_e)
            params.append(A.Param(a.span, g, A.TypeExpr(a.span, fmt.name, None), rng))
            scope[a.name] = _TV(A.Name(a.span, g), fmt)
        if reasons:
            raise Unsupported("; ".join(reasons))
        try:
            res = self.expr(b.body, scope, _Ctx(top), 0)
        except RecursionError:
            raise Unsupported("expression nested too deeply") from None
        missing: dict[str, list[str]] = {}
        for a in b.args:
            bnd = b.ranges.get(a.name)
            if bnd is None or not bnd.complete:
                what = ("no bounds" if bnd is None or (bnd.lo is None and bnd.hi is None) else
                        "only an upper bound" if bnd.lo is None else "only a lower bound")
                missing.setdefault(what, []).append(a.name)
        if missing:
            parts = []
            for what, names in missing.items():
                vs = ", ".join(f"'{n}'" for n in names)
                parts.append(f"no range for variable{'s' if len(names) > 1 else ''} {vs} in "
                             f":pre ({what})")
            raise Unsupported("; ".join(parts))
        if res.weak:
            ret_fmt = BOOL if res.kind == "bool" else top
        else:
            ret_fmt = res.fmt
        sp = b.span
        body = tuple(self.stmts) + (A.Return(b.body.span, res.expr),)
        fn = A.FnDecl(sp, b.ident, tuple(params), (A.TypeExpr(sp, ret_fmt.name, None),), False,
                      None, (), body, sp)
        if b.extra:
            self.note("preconditions kept as extra constraints (not used by the ranges, which "
                      "over-approximate the domain: sound for upper bounds): "
                      + "; ".join(c.text for c in b.extra))
        for n in b.pre_notes:
            self.note(n)
        return A.Program(sp, (fn,), b.file, {"fpcore_name": b.name, "notes": list(self.notes),
                                             "benchmark": b})

    # expressions ------------------------------------------------------------------------
    def expr(self, e: SExp, scope: dict[str, _TV], ctx: _Ctx, depth: int) -> _TV:
        if depth > MAX_PAREN_DEPTH:
            raise Unsupported(f"expression nested deeper than {MAX_PAREN_DEPTH} levels")
        if isinstance(e, Atom):
            return self.atom(e, scope, ctx)
        if not e.items:
            raise Unsupported(f"empty expression () at line {e.span.line}")
        h = e.head()
        if h is None:
            raise Unsupported(f"not an operation: {sexp_text(e, 60)}")
        args = e.items[1:]
        d = depth + 1
        if h in ("let", "let*"):
            return self.let(e, h, scope, ctx, d)
        if h == "if":
            return self.if_(e, scope, ctx, d)
        if h == "!":
            return self.annot(e, scope, ctx, d)
        if h == "cast":
            if len(args) != 1:
                raise Unsupported("cast takes one argument")
            return self.cast(self.expr(args[0], scope, ctx, d), ctx, e.span)
        if h == "digits":
            try:
                v = const_value(e)
            except _NotConst:
                raise Unsupported(f"malformed digits literal {sexp_text(e, 60)}") from None
            self._check_literal(v, F64, e.span)
            return _TV(_frac_expr(v, e.span), None, "num", v)
        if h in _LOOPS:
            raise Unsupported(f"loops ({h}) are not supported")
        if h in _TENSORS:
            raise Unsupported(f"tensors and arrays ({h}) are not supported")
        if h in _BINARY_ARITH:
            if h == "-" and len(args) == 1:
                x = self.num(args[0], scope, ctx, d)
                if x.weak:
                    return _TV(A.UnOp(e.span, "-", x.expr), None, "num", -x.value, x.depth + 1)
                return self.op_unary("-", x, ctx, e.span)
            if len(args) < 2:
                raise Unsupported(f"'{h}' needs two operands")
            acc = self.num(args[0], scope, ctx, d)
            for a in args[1:]:
                acc = self.op_binary(h, acc, self.num(a, scope, ctx, d), ctx, e.span)
            return acc
        if h in ("fmin", "fmax"):
            if len(args) != 2:
                raise Unsupported(f"'{h}' takes two operands")
            self.note("fmin/fmax become min/max, which propagate NaN (FPCore's return the other "
                      "operand)")
            x, y = (self.num(a, scope, ctx, d) for a in args)
            return self.op_binary(h, x, y, ctx, e.span)
        if h in _UNARY_MAP:
            if len(args) != 1:
                raise Unsupported(f"'{h}' takes one operand")
            return self.op_unary(h, self.num(args[0], scope, ctx, d), ctx, e.span)
        if h == "pow":
            return self.pow(e, scope, ctx, d)
        if h == "fma":
            if len(args) != 3:
                raise Unsupported("'fma' takes three operands")
            xs = self._align([self.num(a, scope, ctx, d) for a in args], ctx, e.span)
            natural = xs[0].fmt or xs[1].fmt or xs[2].fmt
            for x in xs:
                natural = promote(natural, x.fmt or natural)
            expr = A.Call(e.span, "fma", tuple(x.expr for x in xs), ())
            return self._finish(expr, natural, xs, ctx, e.span)
        if h in ("<", "<=", ">", ">=", "==", "!="):
            return self.compare(h, [self.num(a, scope, ctx, d) for a in args], ctx, e.span)
        if h in ("and", "or"):
            vals = [self.boolean(a, scope, ctx, d) for a in args]
            if all(v.weak and v.value is not None for v in vals):
                r = all(v.value for v in vals) if h == "and" else any(v.value for v in vals)
                return _TV(A.Bool(e.span, r), None, "bool", r)
            acc = vals[0]
            for v in vals[1:]:
                acc = self.mk(A.BinOp(e.span, h, acc.expr, v.expr), BOOL, "bool", [acc, v],
                              e.span)
            return acc
        if h == "not":
            if len(args) != 1:
                raise Unsupported("'not' takes one operand")
            x = self.boolean(args[0], scope, ctx, d)
            return self.mk(A.UnOp(e.span, "not", x.expr), None if x.weak else BOOL, "bool", [x],
                           e.span, None if x.value is None else not x.value)
        hint = _KNOWN_UNSUPPORTED_HINT.get(h)
        raise Unsupported(f"unsupported operation '{h}'" + (f" ({hint})" if hint else ""))

    def atom(self, e: Atom, scope: dict[str, _TV], ctx: _Ctx) -> _TV:
        if e.kind == "number":
            self._check_literal(e.value, F64, e.span)
            return _TV(_number_expr(e), None, "num", e.value)
        if e.kind != "symbol":
            raise Unsupported(f"unexpected {e.kind} {e.text} in an expression")
        if e.text in scope:
            tv = scope[e.text]
            return _TV(A.Name(e.span, tv.expr.id), tv.fmt, tv.kind, tv.value, 1)
        if e.text in ("TRUE", "FALSE"):
            return _TV(A.Bool(e.span, e.text == "TRUE"), None, "bool", e.text == "TRUE")
        if e.text in ("INFINITY", "NAN"):
            raise Unsupported(f"constant {e.text} has no Grade literal")
        if e.text in CONSTANTS:
            v, radius = CONSTANT_ENCLOSURES[e.text]
            self.note(f"constant {e.text} is written with {_CONST_DIGITS} significant digits and "
                      "rounded once to the context format; the analysis counts its distance "
                      "from the real constant as error")
            return _TV(A.Number(e.span, exact_decimal(v, 2 * _CONST_DIGITS), radius), None,
                       "num", v)
        raise Unsupported(f"unknown variable '{e.text}'")

    def num(self, e: SExp, scope, ctx, depth) -> _TV:
        tv = self.expr(e, scope, ctx, depth)
        if tv.kind != "num":
            raise Unsupported(f"a boolean is used as a number: {sexp_text(e, 60)}")
        return tv

    def boolean(self, e: SExp, scope, ctx, depth) -> _TV:
        tv = self.expr(e, scope, ctx, depth)
        if tv.kind != "bool":
            raise Unsupported(f"a number is used as a condition: {sexp_text(e, 60)}")
        return tv

    # operations -------------------------------------------------------------------------
    def _finish(self, expr: A.Expr, natural: Format, kids: list[_TV], ctx: _Ctx,
                span: Span) -> _TV:
        """An operation computing in `natural`; rebind with `let t: ctx = ...` if it differs."""
        self._rne(ctx)
        if natural == ctx.fmt:
            return self.mk(expr, ctx.fmt, "num", kids, span)
        if not represents(ctx.fmt, natural):
            self.note(f"operations in {ctx.fmt.name} on wider ({natural.name}) operands are "
                      f"computed in float64 and then rounded to {ctx.fmt.name} (double rounding "
                      "is possible)")
        tv = _TV(expr, None, "num", None, 1 + max((k.depth for k in kids), default=0))
        return self.bind("t", tv, span, annot=ctx.fmt)

    def _align(self, xs: list[_TV], ctx: _Ctx, span: Span) -> list[_TV]:
        """FPCore rounds literals to the context: type them where Grade would not."""
        if all(x.weak for x in xs):
            return [self.typed(x, ctx, span) for x in xs]
        strong = [x.fmt for x in xs if not x.weak]
        g = strong[0]
        for f in strong[1:]:
            g = promote(g, f)
        if g != ctx.fmt:
            return [self.typed(x, ctx, span) if x.weak else x for x in xs]
        for x in xs:
            if x.weak:
                self._rne(ctx)
                self._check_literal(x.value, ctx.fmt, span)
        return xs

    def op_unary(self, h: str, x: _TV, ctx: _Ctx, span: Span) -> _TV:
        (x,) = self._align([x], ctx, span)
        if h == "-":
            expr: A.Expr = A.UnOp(span, "-", x.expr)
        else:
            expr = A.Call(span, _UNARY_MAP[h], (x.expr,), ())
        return self._finish(expr, x.fmt, [x], ctx, span)

    def op_binary(self, h: str, x: _TV, y: _TV, ctx: _Ctx, span: Span) -> _TV:
        x, y = self._align([x, y], ctx, span)
        fx = x.fmt or y.fmt
        fy = y.fmt or x.fmt
        natural = promote(fx, fy)
        if h in ("fmin", "fmax"):
            expr: A.Expr = A.Call(span, "min" if h == "fmin" else "max", (x.expr, y.expr), ())
        else:
            expr = A.BinOp(span, h, x.expr, y.expr)
        return self._finish(expr, natural, [x, y], ctx, span)

    def pow(self, e: SList, scope, ctx: _Ctx, depth: int) -> _TV:
        args = e.items[1:]
        if len(args) != 2:
            raise Unsupported("'pow' takes two operands")
        try:
            n = const_value(args[1], {k: v.value for k, v in scope.items()
                                      if v.weak and v.value is not None})
        except _NotConst:
            raise Unsupported("pow with a non-constant exponent is not supported (only small "
                              "non-negative integer exponents)") from None
        if isinstance(n, bool) or n.denominator != 1 or not 0 <= n <= MAX_POW:
            raise Unsupported(f"pow with exponent {sexp_text(args[1], 40)} is not supported "
                              f"(only integer exponents 0..{MAX_POW})")
        n = int(n)
        x = self.num(args[0], scope, ctx, depth)
        if n == 0:
            return _TV(A.Number(e.span, "1"), None, "num", Fraction(1))
        if n == 1:
            (x,) = self._align([x], ctx, e.span)
            return self._finish(x.expr, x.fmt, [x], ctx, e.span) if not x.weak else x
        if n >= 3:
            self.note(f"pow(x, {n}) is expanded into {n - 1} multiplications ({n - 1} roundings; "
                      "a correctly rounded pow rounds once)")
        if x.weak or x.depth > 1:
            x = self.bind("p", self.typed(x, ctx, e.span) if x.weak else x, e.span)
        if x.fmt == ctx.fmt:  # Grade's ** is the same left-to-right product
            self._rne(ctx)
            return self.mk(A.BinOp(e.span, "**", x.expr, A.Number(e.span, str(n))), ctx.fmt,
                           "num", [x], e.span)
        acc = x
        for _ in range(n - 1):
            acc = self.op_binary("*", acc, x, ctx, e.span)
        return acc

    def compare(self, h: str, xs: list[_TV], ctx: _Ctx, span: Span) -> _TV:
        if len(xs) < 2:
            raise Unsupported(f"'{h}' needs at least two operands")
        if all(x.weak and x.value is not None for x in xs):
            # comparisons are exact: compare the constants rounded to the context, now
            self._rne(ctx)
            for x in xs:
                self._check_literal(x.value, ctx.fmt, span)
            vs = [Fraction(round_exact(x.value, ctx.fmt, "rne", False)) for x in xs]
            if h == "!=":
                r = len(set(vs)) == len(vs)
            else:
                r = all(_CMP[h](a, b) for a, b in zip(vs, vs[1:]))
            return _TV(A.Bool(span, r), None, "bool", r)
        xs = self._align(xs, ctx, span)
        if len(xs) > 2:  # operands used in several comparisons are bound once
            xs = [x if x.depth <= 1 else self.bind("c", x, span) for x in xs]
        if h == "!=":
            pairs = [(xs[i], xs[j]) for i in range(len(xs)) for j in range(i + 1, len(xs))]
        else:
            pairs = list(zip(xs, xs[1:]))
        acc = None
        for a, b in pairs:
            c = self.mk(A.BinOp(span, h, a.expr, b.expr), BOOL, "bool", [a, b], span)
            acc = c if acc is None else self.mk(A.BinOp(span, "and", acc.expr, c.expr), BOOL,
                                                "bool", [acc, c], span)
        return acc

    def let(self, e: SList, h: str, scope, ctx: _Ctx, depth: int) -> _TV:
        if len(e.items) != 3 or not isinstance(e.items[1], SList):
            raise Unsupported(f"malformed {h} at line {e.span.line}")
        inner = dict(scope)
        for b in e.items[1].items:
            if not (isinstance(b, SList) and len(b.items) == 2 and isinstance(b.items[0], Atom)
                    and b.items[0].kind == "symbol"):
                raise Unsupported(f"malformed {h} binding {sexp_text(b, 40)}")
            name = b.items[0].text
            tv = self.expr(b.items[1], inner if h == "let*" else scope, ctx, depth)
            inner[name] = self.bind(name, tv, b.span)
        return self.expr(e.items[2], inner, ctx, depth)

    def if_(self, e: SList, scope, ctx: _Ctx, depth: int) -> _TV:
        if len(e.items) != 4:
            raise Unsupported("'if' takes a condition and two branches")
        c = self.boolean(e.items[1], scope, ctx, depth)
        a = self.expr(e.items[2], scope, ctx, depth)
        b = self.expr(e.items[3], scope, ctx, depth)
        if a.kind != b.kind:
            raise Unsupported("'if' branches must both be numbers or both booleans")
        if c.weak and c.value is not None:  # a constant condition selects at translation time
            return a if c.value else b
        self.note("`if` becomes where(c, a, b): both branches are evaluated")
        if a.kind == "num":
            if a.weak and b.weak:
                a, b = self.typed(a, ctx, e.span), self.typed(b, ctx, e.span)
            elif a.weak and b.fmt != ctx.fmt:
                a = self.typed(a, ctx, e.span)
            elif b.weak and a.fmt != ctx.fmt:
                b = self.typed(b, ctx, e.span)
            fmt = promote(a.fmt or b.fmt, b.fmt or a.fmt)
        else:
            fmt = BOOL
        return self.mk(A.Call(e.span, "where", (c.expr, a.expr, b.expr), ()), fmt, a.kind,
                       [c, a, b], e.span)

    def annot(self, e: SList, scope, ctx: _Ctx, depth: int) -> _TV:
        items = e.items[1:]
        props: dict[str, SExp] = {}
        j = 0
        while j < len(items) - 1 and isinstance(items[j], Atom) and items[j].kind == "keyword":
            props[items[j].text[1:]] = items[j + 1]
            j += 2
        if j != len(items) - 1:
            raise Unsupported(f"malformed (! ...) annotation at line {e.span.line}")
        new = _Ctx(ctx.fmt, ctx.saturate, ctx.mode)
        if "precision" in props:
            new.fmt = precision_format(props["precision"])
        if "round" in props:
            m = sexp_text(props["round"])
            if m not in ROUND_MODES:
                raise Unsupported(f"unsupported rounding mode :round {m}")
            new.mode = ROUND_MODES[m]
        if "numgrade-saturate" in props:
            new.saturate = sexp_text(props["numgrade-saturate"]) == "TRUE"
        return self.expr(items[-1], scope, new, depth)

    def cast(self, x: _TV, ctx: _Ctx, span: Span) -> _TV:
        if x.kind != "num":
            raise Unsupported("cast of a boolean")
        if x.weak and ctx.mode == "rne":
            return self.typed(x, ctx, span)
        if x.fmt == ctx.fmt:
            return x
        if x.weak:
            self._check_literal(x.value, ctx.fmt, span)
        kw = []
        if ctx.mode != "rne":
            kw.append(A.KwArg(span, "mode", A.Name(span, ctx.mode)))
        if not ctx.saturate:
            kw.append(A.KwArg(span, "sat", A.Bool(span, False)))
        expr = A.Call(span, "round", (x.expr, A.Name(span, ctx.fmt.name)), tuple(kw))
        return self.mk(expr, ctx.fmt, "num", [x], span)


def to_grade(bench: Benchmark) -> tuple[A.Program | None, str | None]:
    """The Grade AST of a benchmark (one function named ``bench.ident``), or (None, reason).

    Translation notes (both branches of ``if`` evaluated, ``pow`` expanded, extra preconditions,
    rounded constants, ...) are in ``program.extra['notes']`` and ``bench.notes``.
    """
    t = _Translator(bench)
    try:
        prog = t.run()
    except Unsupported as ex:
        bench.notes = list(t.notes)
        return None, str(ex)
    bench.notes = list(t.notes)
    return prog, None


# =============================================================================================
# loading
class LoadedBenchmark(NamedTuple):
    bench: Benchmark
    module: object  # numgrade.api.Module | None
    reason: str | None


def load_fpcore_source(text: str, name: str = "<fpcore>") -> list[LoadedBenchmark]:
    """Parse, translate, lower and effect-check every benchmark of an FPCore text.

    Each supported benchmark becomes an :class:`numgrade.api.Module` with one function named
    ``bench.ident`` (the original ``:name`` is ``bench.name``); unsupported ones come with
    ``module=None`` and the reason.
    """
    from ..api import Module
    from ..passes.effects import check_effects
    from .lower import lower_program

    out: list[LoadedBenchmark] = []
    for b in parse_fpcore_file(text, name):
        prog, reason = to_grade(b)
        if prog is None:
            out.append(LoadedBenchmark(b, None, reason))
            continue
        sink = DiagnosticSink()
        try:
            ir = lower_program(prog, sink)
            check_effects(ir, sink)
        except RecursionError:
            out.append(LoadedBenchmark(b, None, "expression nested too deeply to lower"))
            continue
        if sink.errors:
            msgs = "; ".join(d.message for d in sink.errors[:3])
            out.append(LoadedBenchmark(b, None, f"translation does not lower: {msgs}"))
            continue
        ir.source = text
        ir.warnings = list(sink.warnings)
        out.append(LoadedBenchmark(b, Module(ir), None))
    return out


def load_benchmarks(path: str | Path) -> list[LoadedBenchmark]:
    """Every benchmark of an ``.fpcore`` file as (Benchmark, Module | None, reason)."""
    p = str(path)
    try:
        text = Path(p).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GradeError(f"{p}: no such file") from None
    except (OSError, UnicodeDecodeError) as ex:
        raise GradeError(f"{p}: cannot read: {ex}") from None
    return load_fpcore_source(text, p)


# =============================================================================================
# Grade text of a translated program
_PREC = {"or": 1, "and": 2, "not": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
         "+": 5, "-": 5, "*": 6, "/": 6, "%": 6, "@": 6}


def _expr_src(e: A.Expr) -> str:
    if isinstance(e, A.Number):
        return e.text
    if isinstance(e, A.Bool):
        return "true" if e.value else "false"
    if isinstance(e, A.Name):
        return e.id
    if isinstance(e, A.BinOp):
        return f"({_expr_src(e.left)} {e.op} {_expr_src(e.right)})"
    if isinstance(e, A.UnOp):
        inner = _expr_src(e.operand)
        return f"(not {inner})" if e.op == "not" else f"({e.op}{inner})"
    if isinstance(e, A.Cast):
        return f"({_expr_src(e.operand)} as {e.fmt})"
    if isinstance(e, A.Call):
        args = [_expr_src(a) for a in e.args] + [f"{k.name}={_expr_src(k.value)}"
                                                   for k in e.kwargs]
        return f"{e.func}({', '.join(args)})"
    raise ValueError(f"cannot print {type(e).__name__}")  # pragma: no cover


def grade_source(program: A.Program) -> str:
    """Grade source text of a program made by :func:`to_grade` (valid `.grd` syntax)."""
    out = []
    notes = program.extra.get("notes") if program.extra else None
    name = program.extra.get("fpcore_name") if program.extra else None
    if name:
        out.append(f"# FPCore benchmark {name!r} ({program.source_name})")
    for n in notes or ():
        out.append(f"# note: {n}")
    for item in program.items:
        if not isinstance(item, A.FnDecl):  # pragma: no cover - to_grade makes functions only
            continue
        ps = []
        for p in item.params:
            s = f"{p.name}: {p.type.fmt}"
            if p.range is not None:
                s += f" in [{_expr_src(p.range[0])}, {_expr_src(p.range[1])}]"
            ps.append(s)
        ret = ", ".join(t.fmt for t in item.ret)
        out.append(f"fn {item.name}({', '.join(ps)}) -> {ret} {{")
        for st in item.body:
            if isinstance(st, A.Let):
                typ = f": {st.type.fmt}" if st.type is not None else ""
                out.append(f"    let {st.targets[0]}{typ} = {_expr_src(st.value)}")
            else:
                out.append(f"    return {_expr_src(st.value)}")
        out.append("}")
    return "\n".join(out) + "\n"
