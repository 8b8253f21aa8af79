"""A readable textual form of the IR (what `numgrade ir` prints).

One line per value in dependency order: ``%name = op operands {attrs} : type``, with the let
name of the source where it has one, and the grade when the analyses have filled it.
"""

from __future__ import annotations

from .dims import Dim, shape_str
from .nodes import Function, Module, Op, Value, toposort


def _num(x: float) -> str:
    if x == int(x) and abs(x) < 1e16:
        return f"{int(x)}.0" if x >= 0 or x != 0 else "-0.0"
    return repr(float(x))


def _attrs(v: Value) -> str:
    a = v.attrs
    if v.op == Op.CONST:
        vals = a[0]
        if len(vals) <= 8:
            body = ", ".join(_num(x) for x in vals)
        else:
            body = ", ".join(_num(x) for x in vals[:6]) + f", ... ({len(vals)} values)"
        return f"[{body}]" if v.shape else body
    if v.op == Op.DIM:
        return str(a[0])
    if v.op == Op.ROUND:
        mode, sat, stream = a
        s = f"mode={mode} sat={'true' if sat else 'false'}"
        return s + (f" stream={stream}" if stream >= 0 else "")
    if v.op in (Op.SUM, Op.MEAN, Op.RMAX, Op.RMIN):
        axes, keep, order = a
        s = f"axes={list(axes)}"
        if keep:
            s += " keepdims"
        if order != "any":
            s += f" order={order}"
        return s
    if v.op == Op.MATMUL:
        return f"acc={a[0]}"
    if v.op == Op.TRANSPOSE:
        return f"perm={list(a[0])}"
    if v.op == Op.CONCAT:
        return f"axis={a[0]}"
    if v.op == Op.SLICE:
        parts = []
        for it in a[0]:
            if it[0] == "new":
                parts.append("None")
            elif it[0] == "i":
                parts.append(str(it[1]))
            else:
                start, stop, step = it[1], it[2], it[3]
                parts.append(f"{start}:{stop}" + (f":{step}" if step != 1 else ""))
        return "[" + ", ".join(parts) + "]"
    if v.op == Op.TOPK_MASK:
        return f"k={a[0]} axis={a[1]}"
    if v.op == Op.RAND:
        return f"stream={a[0]}"
    if v.op == Op.CALL:
        return f"@{a[0]}" + (f" stream={a[1]}" if a[1] >= 0 else "")
    if v.op == Op.PROJ:
        return f"#{a[0]}"
    return ""


def print_function(fn: Function) -> str:
    names: dict[int, str] = {}
    used: set[str] = set()
    for p in fn.params:
        names[id(p.value)] = f"%{p.name}"
        used.add(p.name)
    lines: list[str] = []
    params = []
    for p in fn.params:
        rng = f" in [{_num(p.range[0])}, {_num(p.range[1])}]" if p.range else ""
        params.append(f"%{p.name}: {p.value.type}{rng}")
    rtypes = [str(t) for t in fn.result_types]
    ret = f"({', '.join(rtypes)})" if fn.result_is_tuple else rtypes[0]
    head = f"func @{fn.name}({', '.join(params)}) -> {ret}"
    if fn.effects:
        head += " ! {" + ", ".join(sorted(fn.effects)) + "}"
    if fn.requires:
        head += " requires " + ", ".join(c.text for c in fn.requires)
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
        attrs = _attrs(v)
        body = v.op + (f" {operands}" if operands else "") + (f" {{{attrs}}}" if attrs else "")
        line = f"  %{name} = {body} : {v.type}"
        g = fn.grades.get(v)
        if g is not None and (g.range or g.abs_error is not None):
            bits = []
            if g.range:
                bits.append(f"range=[{g.range[0]:.6g}, {g.range[1]:.6g}]")
            if g.abs_error is not None:
                bits.append(f"abs={g.abs_error:.3g}")
            if g.rel_error is not None:
                bits.append(f"rel={g.rel_error:.3g}")
            line += "  // " + " ".join(bits)
        lines.append(line)
    lines.append("  return " + ", ".join(names[id(r)] for r in fn.results))
    lines.append("}")
    return "\n".join(lines)


def print_module(mod: Module) -> str:
    return "\n\n".join(print_function(f) for f in mod.functions.values()) + "\n"
