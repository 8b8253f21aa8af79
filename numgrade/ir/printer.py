"""The textual form of the IR (what `numgrade ir` prints); :mod:`.parse_text` reads it back.

The text is complete: parsing it rebuilds the same hash-consed value graph, and printing the
parsed function gives the same text. The syntax (whitespace and line breaks are not significant
to the parser; ``//`` starts a comment)::

    const @TABLE: f32[2, 2] = [1.0, 0.0, 0.0, 1.0]          // module-level constant arrays

    func @name(%x: f32[M, N] in [-1.0, 1.0], %k: i32) -> (f32[M], bool[M]) ! {rand}
        requires N % 16 == 0, K <= 4096, feature(native_e2m1), E >= 2 "E >= TOPK" {
      %a = op %b %c {attrs} : type          // range=[lo, hi] abs=... rel=...  (grades, if known)
      ...
      return %a, %b
    }

Values are named by their `let` name where the source has one (and it is not taken yet),
otherwise numbered. Types are ``fmt`` or ``fmt[dims]``; a call's type is a tuple ``(t1, t2)``.
Dimensions print as polynomials (``N/16``, ``2*K + 1``, ``M*N``, ``K^2``). A requirement prints
in canonical form (``lhs [% k] op rhs`` or ``feature(NAME)``), followed by its source text as a
string when that differs. An ``attributes {dims=[...], rand_consumers=n}`` clause follows the
requirements only when those cannot be derived (dims: plain size names of the parameter types in
order of first appearance; rand_consumers: one more than the largest stream).

Attributes per op: ``const {1.5}``, ``const {[v0, v1, ...]}`` (all values, row-major, repr()
floats so the text is exact; long arrays continue on indented lines), ``const {@NAME}`` (a
module constant, in module printing), ``dim {N/16}``, ``round {mode=sr sat=true stream=0}``,
``reduce_* {axes=[0, 1] keepdims order=kahan}``, ``matmul {acc=f32}``, ``transpose {perm=[1, 0]}``,
``concat {axis=0}``, ``slice {[0:N, 3, None, 0:16:2]}``, ``topk_mask {k=2 axis=1}``,
``rand {stream=1}``, ``call {@callee stream=2}``, ``proj {#1}``; any other attribute tuple prints
generically as ``{attrs=(1, "s", true, none, dim(N), 2.5)}``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Mapping

from .dims import Dim
from .nodes import Constraint, Function, Module, Op, Parameter, TensorType, Value, toposort

REDUCE_OPS = (Op.SUM, Op.MEAN, Op.RMAX, Op.RMIN)
CONST_LINE = 8           # constant arrays up to this many values print on one line


def fnum(x: float) -> str:
    """An exact, readable float: repr() round-trips (``0.1``, ``1e-05``, ``-0.0``, ``inf``)."""
    return repr(float(x))


def const_data(vals: tuple, shape: tuple[Dim, ...], indent: str = "  ") -> str:
    """The values of a constant: ``1.5`` for a scalar, ``[...]`` (flat, row-major) otherwise."""
    if not shape:
        return fnum(vals[0]) if len(vals) == 1 else "[" + ", ".join(fnum(x) for x in vals) + "]"
    if len(vals) <= CONST_LINE:
        return "[" + ", ".join(fnum(x) for x in vals) + "]"
    last = shape[-1].int_value() or 1
    if 2 <= last <= 16:
        per = last                      # one row per line
    else:                               # whole rows split evenly, or eight values a line
        per = next((k for k in range(CONST_LINE, 3, -1) if last % k == 0), CONST_LINE)
    rows = [", ".join(fnum(x) for x in vals[i:i + per]) for i in range(0, len(vals), per)]
    inner = indent + "    "
    return "[\n" + ",\n".join(inner + r for r in rows) + "\n" + indent + "]"


def frac_text(x) -> str:
    return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def const_text(attrs: tuple, shape: tuple[Dim, ...], indent: str = "  ") -> str:
    """Values, then ``exact [p/q, ...]`` when rounding changed a constant (the ideal uses it),
    then ``within p/q`` when the real values are only known to within that (folded functions)."""
    text = const_data(attrs[0], shape, indent)
    exact = attrs[1] if len(attrs) > 1 else None
    if exact is not None:
        body = ", ".join(frac_text(x) for x in exact)
        text += f" exact [{body}]" if shape or len(exact) != 1 else f" exact {body}"
    if len(attrs) > 2:
        text += f" within {frac_text(attrs[2])}"
    return text


def constraint_canonical(c: Constraint) -> str:
    """The canonical text of a requirement (what the parser rebuilds it from)."""
    if c.kind == "feature":
        return f"feature({c.feature})"
    lhs = str(c.lhs)
    if c.mod is not None:
        if len(c.lhs.terms) > 1:
            lhs = f"({lhs})"
        lhs = f"{lhs} % {c.mod}"
    return f"{lhs} {c.op} {c.rhs}"


def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def constraint_str(c: Constraint) -> str:
    canon = constraint_canonical(c)
    return canon if c.text == canon else f"{canon} {quote(c.text)}"


def generic_attr(a: Any) -> str:
    """A literal for the generic attribute form."""
    if a is None:
        return "none"
    if isinstance(a, bool):
        return "true" if a else "false"
    if isinstance(a, int):
        return str(a)
    if isinstance(a, float):
        return fnum(a)
    if isinstance(a, Fraction):
        return f"frac({a.numerator}, {a.denominator})"
    if isinstance(a, str):
        return quote(a)
    if isinstance(a, Dim):
        return f"dim({a})"
    if isinstance(a, tuple):
        items = [generic_attr(x) for x in a]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    raise TypeError(f"cannot print attribute {a!r} of type {type(a).__name__}")


def slice_item_str(it: tuple) -> str:
    if it[0] == "new":
        return "None"
    if it[0] == "i":
        return str(it[1])
    start, stop, step = it[1], it[2], it[3]
    return f"{start}:{stop}" + (f":{step}" if step != 1 else "")


def attrs_str(v: Value, consts: Mapping[int, str] | None = None, indent: str = "  ") -> str:
    """The text between the braces of a value line ('' when the op has no attributes)."""
    a = v.attrs
    try:
        if v.op == Op.CONST:
            if consts and id(v) in consts:
                return "@" + consts[id(v)]
            return const_text(a, v.shape, indent)
        if v.op == Op.DIM:
            return str(a[0])
        if v.op == Op.ROUND:
            mode, sat, stream = a
            s = f"mode={mode} sat={'true' if sat else 'false'}"
            return s + (f" stream={stream}" if stream >= 0 else "")
        if v.op in REDUCE_OPS:
            axes, keep, order = a
            s = "axes=[" + ", ".join(str(x) for x in axes) + "]"
            if keep:
                s += " keepdims"
            if order != "any":
                s += f" order={order}"
            return s
        if v.op == Op.MATMUL:
            (acc,) = a
            return f"acc={acc}"
        if v.op == Op.TRANSPOSE:
            (perm,) = a
            return "perm=[" + ", ".join(str(x) for x in perm) + "]"
        if v.op == Op.CONCAT:
            (axis,) = a
            return f"axis={axis}"
        if v.op == Op.SLICE:
            (items,) = a
            return "[" + ", ".join(slice_item_str(it) for it in items) + "]"
        if v.op == Op.TOPK_MASK:
            k, axis = a
            return f"k={k} axis={axis}"
        if v.op == Op.RAND:
            (stream,) = a
            return f"stream={stream}"
        if v.op == Op.CALL:
            name, stream = a
            return f"@{name}" + (f" stream={stream}" if stream >= 0 else "")
        if v.op == Op.PROJ:
            (index,) = a
            return f"#{index}"
    except (TypeError, ValueError, IndexError, AttributeError):
        pass  # an unexpected attribute layout: print it generically
    if not a:
        return ""
    return "attrs=" + generic_attr(tuple(a))


def derived_dims(params: list[Parameter]) -> list[str]:
    """The size symbols introduced by the parameters: plain names, in order of appearance."""
    out: list[str] = []
    for p in params:
        t = p.value.type
        for d in getattr(t, "shape", ()):
            syms = d.symbols()
            if len(syms) == 1:
                s = next(iter(syms))
                if d == Dim.sym(s) and s not in out:
                    out.append(s)
    return out


def derived_rand_consumers(results) -> int:
    n = 0
    for v in toposort(results):
        if v.op in (Op.ROUND, Op.CALL) and len(v.attrs) >= 2 and isinstance(v.attrs[-1], int):
            n = max(n, v.attrs[-1] + 1)
        elif v.op == Op.RAND and v.attrs and isinstance(v.attrs[0], int):
            n = max(n, v.attrs[0] + 1)
    return n


def _grade_comment(g) -> str:
    if g is None or not (g.range or g.abs_error is not None):
        return ""
    bits = []
    if g.range:
        bits.append(f"range=[{g.range[0]:.6g}, {g.range[1]:.6g}]")
    if g.abs_error is not None:
        bits.append(f"abs={g.abs_error:.3g}")
    if g.rel_error is not None:
        bits.append(f"rel={g.rel_error:.3g}")
    return "  // " + " ".join(bits)


def print_function(fn: Function, consts: Mapping[int, str] | None = None) -> str:
    """The text of one function. ``consts`` (id of value -> name) prints module constants by name."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for p in fn.params:
        names[id(p.value)] = f"%{p.name}"
        used.add(p.name)
    lines: list[str] = []
    params = []
    for p in fn.params:
        rng = f" in [{fnum(p.range[0])}, {fnum(p.range[1])}]" if p.range else ""
        params.append(f"%{p.name}: {p.value.type}{rng}")
    rtypes = [str(v.type) for v in fn.results]
    ret = f"({', '.join(rtypes)})" if fn.result_is_tuple else rtypes[0]
    head = f"func @{fn.name}({', '.join(params)}) -> {ret}"
    if fn.effects:
        head += " ! {" + ", ".join(sorted(fn.effects)) + "}"
    if fn.requires:
        head += " requires " + ", ".join(constraint_str(c) for c in fn.requires)
    extra = []
    if list(fn.dims) != derived_dims(fn.params):
        extra.append("dims=[" + ", ".join(fn.dims) + "]")
    if fn.rand_consumers != derived_rand_consumers(fn.results):
        extra.append(f"rand_consumers={fn.rand_consumers}")
    if extra:
        head += " attributes {" + ", ".join(extra) + "}"
    lines.append(head + " {")
    counter = 0
    for v in toposort(fn.results):
        if id(v) in names:
            continue
        base = fn.names.get(v)
        if base and base not in used:
            name = base
        else:
            name = str(counter)
            counter += 1
        used.add(name)
        names[id(v)] = f"%{name}"
        operands = " ".join(names[id(s)] for s in v.srcs)
        attrs = attrs_str(v, consts)
        body = v.op + (f" {operands}" if operands else "") + (f" {{{attrs}}}" if attrs else "")
        lines.append(f"  %{name} = {body} : {v.type}" + _grade_comment(fn.grades.get(v)))
    lines.append("  return " + ", ".join(names[id(r)] for r in fn.results))
    lines.append("}")
    return "\n".join(lines)


def print_module(mod: Module) -> str:
    """Module constants (arrays) first, then the functions; constants print by name in bodies."""
    parts: list[str] = []
    consts: dict[int, str] = {}
    for name, v in mod.consts.items():
        if v.op != Op.CONST or not isinstance(v.type, TensorType):
            continue
        consts.setdefault(id(v), name)
        parts.append(f"const @{name}: {v.type} = {const_text(v.attrs, v.shape, '')}")
    parts.extend(print_function(f, consts) for f in mod.functions.values())
    return "\n\n".join(parts) + "\n"
