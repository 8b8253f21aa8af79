"""The IR verifier: every value's type follows from its operation, operands and attributes.

Lowering, the textual IR parser and every pass that builds values are checked against the same
rules, so a pass that produces an ill-typed graph is caught where it happens rather than as a
wrong answer later. Problems are returned as messages (and raised as GradeError by `verify`).
"""

from __future__ import annotations

from ..errors import Diagnostic, GradeError
from . import nodes as N
from .dims import Dim, broadcast, shape_str
from .formats import FORMATS
from .nodes import Op, TensorType, TupleType, Value

_ARITY = {**{op: 1 for op in N.UNARY}, **{op: 2 for op in N.BINARY},
          Op.WHERE: 3, Op.FMA: 3, Op.ROUND: 1, Op.MATMUL: 2, Op.RESHAPE: 1, Op.TRANSPOSE: 1,
          Op.BROADCAST: 1, Op.SLICE: 1, Op.TOPK_MASK: 1, Op.PROJ: 1, Op.PARAM: 0, Op.CONST: 0,
          Op.DIM: 0, Op.ARANGE: 0, Op.RAND: 0,
          **{op: 1 for op in N.REDUCE}}
ONE = Dim.const(1)


def _product(shape) -> Dim:
    p = Dim.const(1)
    for d in shape:
        p = p * d
    return p


def check_value(v: Value, module: N.Module | None = None) -> list[str]:
    """Problems with one value (empty when it is well typed)."""
    op, t = v.op, v.type
    errs: list[str] = []
    if op in _ARITY and len(v.srcs) != _ARITY[op]:
        return [f"{op} takes {_ARITY[op]} operand(s), has {len(v.srcs)}"]
    if op == Op.PROJ:
        src = v.srcs[0]
        if not isinstance(src.type, TupleType) or not 0 <= v.attrs[0] < len(src.type.items):
            return ["proj of a value that is not a tuple, or index out of range"]
        if src.type.items[v.attrs[0]] != t:
            errs.append("proj type differs from the call's result type")
        return errs
    if op == Op.CALL:
        if not isinstance(t, TupleType):
            return ["a call's type must be a tuple of results"]
        if module is not None:
            callee = module.functions.get(v.attrs[0])
            if callee is None:
                return [f"call to unknown function '{v.attrs[0]}'"]
            if len(callee.params) != len(v.srcs):
                errs.append(f"call to {callee.name} with {len(v.srcs)} arguments, needs "
                            f"{len(callee.params)}")
            for p, a in zip(callee.params, v.srcs):
                if isinstance(a.type, TensorType) and a.fmt != p.value.fmt:
                    errs.append(f"argument {p.name} is {a.fmt.name}, needs {p.value.fmt.name}")
        return errs
    if not isinstance(t, TensorType) or t.fmt.name not in FORMATS:
        return [f"{op} must produce a tensor of a known format"]
    for s in v.srcs:
        if not isinstance(s.type, TensorType):
            return [f"{op} has a tuple operand (use proj)"]
    shapes = [s.shape for s in v.srcs]
    if op in N.COMPARE or op in N.LOGIC or op == Op.NOT or op == Op.TOPK_MASK:
        if t.fmt.kind != "bool":
            errs.append(f"{op} must produce bool")
    if op in N.LOGIC or op == Op.NOT:
        if any(s.fmt.kind != "bool" for s in v.srcs):
            errs.append(f"{op} needs bool operands")
    if op in N.ARITH or op in N.UNARY_MATH or op == Op.FMA:
        if any(s.fmt.kind == "bool" for s in v.srcs):
            errs.append(f"{op} on bool operands")
    if op in N.ELEMENTWISE or op == Op.FMA:
        want = ()
        for s in shapes:
            want = broadcast(want, s)
            if want is None:
                return [f"{op}: operand shapes {', '.join(shape_str(x) for x in shapes)} do not "
                        "broadcast"]
        if want != t.shape:
            errs.append(f"{op}: result shape {shape_str(t.shape)}, operands give "
                        f"{shape_str(want)}")
        if op == Op.WHERE and v.srcs[0].fmt.kind != "bool":
            errs.append("where needs a bool condition")
        if op == Op.ROUND:
            mode, sat, stream = v.attrs
            if mode not in ("rne", "rz", "ru", "rd", "sr") or not isinstance(sat, bool):
                errs.append(f"round: bad attributes {v.attrs}")
            if (mode == "sr") != (stream >= 0):
                errs.append("round: stochastic rounding needs a stream and nothing else does")
        return errs
    if op in N.REDUCE:
        axes, keep, order = v.attrs
        src = shapes[0]
        if any(not 0 <= a < len(src) for a in axes) or len(set(axes)) != len(axes):
            return [f"{op}: bad axes {axes} for shape {shape_str(src)}"]
        want = tuple(ONE if i in axes else d for i, d in enumerate(src)) if keep else \
            tuple(d for i, d in enumerate(src) if i not in axes)
        if want != t.shape:
            errs.append(f"{op}: result shape {shape_str(t.shape)}, expected {shape_str(want)}")
        if order not in ("any", "seq", "pairwise", "kahan"):
            errs.append(f"{op}: unknown order {order}")
        return errs
    if op == Op.MATMUL:
        a, b = shapes
        if not a or not b:
            return ["matmul of a scalar"]
        ka = a[-1]
        kb = b[0] if len(b) == 1 else b[-2]
        if ka != kb:
            return [f"matmul inner dimensions {ka} and {kb} differ"]
        batch = broadcast(a[:-2] if len(a) >= 2 else (), b[:-2] if len(b) >= 2 else ())
        if batch is None:
            return ["matmul batch dimensions do not broadcast"]
        want = batch + ((a[-2],) if len(a) >= 2 else ()) + ((b[-1],) if len(b) >= 2 else ())
        if want != t.shape:
            errs.append(f"matmul result shape {shape_str(t.shape)}, expected {shape_str(want)}")
        if v.attrs[0] not in FORMATS:
            errs.append(f"matmul: unknown accumulation format {v.attrs[0]}")
        return errs
    if op == Op.RESHAPE:
        if _product(shapes[0]) != _product(t.shape):
            errs.append(f"reshape changes the element count: {shape_str(shapes[0])} -> "
                        f"{shape_str(t.shape)}")
    elif op == Op.TRANSPOSE:
        perm = v.attrs[0]
        if sorted(perm) != list(range(len(shapes[0]))):
            return [f"transpose: {perm} is not a permutation"]
        if tuple(shapes[0][p] for p in perm) != t.shape:
            errs.append("transpose: result shape does not follow the permutation")
    elif op == Op.BROADCAST:
        if broadcast(shapes[0], t.shape) != t.shape:
            errs.append(f"broadcast: {shape_str(shapes[0])} does not broadcast to "
                        f"{shape_str(t.shape)}")
    elif op == Op.CONCAT:
        axis = v.attrs[0]
        total = Dim.const(0)
        for s in shapes:
            if len(s) != len(t.shape):
                return ["concat operands of different rank"]
            total = total + s[axis]
        if total != t.shape[axis]:
            errs.append("concat: the axis sizes do not add up")
    elif op == Op.SLICE:
        real = [it for it in v.attrs[0] if it[0] != "new"]
        if len(real) != len(shapes[0]):
            errs.append("slice: one item per source axis is needed")
    elif op == Op.CONST:
        n = _product(t.shape).int_value()
        if n is None or n != len(v.attrs[0]):
            errs.append(f"const: {len(v.attrs[0])} values for shape {shape_str(t.shape)}")
        if len(v.attrs) > 1 and v.attrs[1] is not None and len(v.attrs[1]) != len(v.attrs[0]):
            errs.append("const: exact values do not match the values")
        if len(v.attrs) > 2 and (v.attrs[1] is None or not v.attrs[2] > 0):
            errs.append("const: a radius needs exact values and must be positive")
    return errs


def verify_function(fn: N.Function, module: N.Module | None = None) -> list[Diagnostic]:
    diags = []
    for v in N.toposort(fn.results):
        for msg in check_value(v, module):
            diags.append(Diagnostic(f"IR verifier ({fn.name}): {msg}", fn.spans.get(v, fn.span)))
    for p in fn.params:
        if p.value.op != Op.PARAM:
            diags.append(Diagnostic(f"IR verifier ({fn.name}): parameter {p.name} is not a param",
                                    p.span))
    return diags


def verify(module: N.Module) -> None:
    """Raise GradeError listing every ill-typed value of the module."""
    diags = []
    for fn in module.functions.values():
        diags.extend(verify_function(fn, module))
    if diags:
        raise GradeError(diags)
