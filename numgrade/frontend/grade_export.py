"""Export IR functions as Grade source that compiles back to exactly the same IR.

The precision tuner changes the formats of operations and must write the result as a `.grd`
file with every format explicit; :func:`function_to_grade` does that for any function the
frontend can produce (and for retyped copies of one). Compiling its text gives back the same
hash-consed values, parameters, ranges, requirements, effects and random streams.

How the IR maps back to Grade (lower.py is the other direction):

* every operation is one ``let name: fmt[dims] = expr`` whose operands are names. The annotated
  type is the *working format* of arithmetic, math functions, ``fma``, ``sum``/``mean`` (written
  with ``acc=`` too) and matmul, so a result format that differs from the operands' promoted
  format (an f32 ``mul`` with a bf16 result) comes back as it is. Operations whose format Grade
  derives from their operands (``where``, ``concat``, data movement, ``max``/``min`` reductions,
  comparisons) must have that derived format, else GradeError names the operation;
* a scalar constant is a literal that folds to its exact value (constfold.py): inline next to a
  typed operand when it adopts the constant's format there, otherwise bound by its own ``let``,
  with ``as fmt`` or ``round(.., mode=.., sat=..)`` when it was rounded that way. Constant arrays
  become module ``const`` declarations;
* stochastic roundings, ``rand`` and calls of functions with the ``rand`` effect are numbered in
  the order they are lowered, so they are written in stream order (a stream no live value uses
  is consumed by a dead ``rand()``);
* callees are exported with the caller under their own names (a call names its callee in the IR);
* a requirement keeps its source text; names in it that are not sizes (``E >= TOPK``) become
  integer ``const`` declarations when their value follows from the requirement, otherwise the
  requirement is written in canonical form (a comment says so).

With ``check=True`` (the default) the text is compiled again and compared with the IR, so an
export that would not be faithful raises GradeError instead of writing a different program.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..errors import GradeError
from ..ir.derive import _FOLLOWS_SRC, derived_format  # noqa: F401 (re-exported)
from ..ir import nodes as N
from ..ir.formats import FORMATS, Format, promote
from ..ir.nodes import Op, TupleType, Value, toposort
from .grade_consts import Unwritable, adopted_literal, array_const_decl, scalar_const_text
from .grade_literals import dim_text, float_text, identifier, is_plain_name, type_text
from .lower import BUILTINS, UNARY_FUNCS

__all__ = ["function_to_grade", "derived_format", "emission_order"]

F32, I32, BOOL = FORMATS["f32"], FORMATS["i32"], FORMATS["bool"]
RESERVED = frozenset(FORMATS) | BUILTINS | {"None", "feature"}
_UNARY = {op: name for name, op in UNARY_FUNCS.items()}
_SYMBOLS = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/", Op.MOD: "%", Op.EQ: "==",
            Op.NE: "!=", Op.LT: "<", Op.LE: "<=", Op.GT: ">", Op.GE: ">=", Op.AND: "and",
            Op.OR: "or"}
_REDUCE = {Op.SUM: "sum", Op.MEAN: "mean", Op.RMAX: "max", Op.RMIN: "min"}
_CHOSEN = N.ARITH | (N.UNARY - {Op.NOT}) | {Op.FMA, Op.MATMUL, Op.SUM, Op.MEAN}
_REQ_RE = re.compile(r"^(.*?)\s*(==|!=|<=|>=|<|>)\s*(.*)$")
_REQ_CHARS = re.compile(r"^[A-Za-z_0-9\s%*/+\-()<>=!.]*$")


def function_to_grade(module: N.Module, fn: N.Function, *, name: str | None = None,
                      check: bool = True) -> str:
    """Self-contained Grade source for `fn` (and the functions it calls) that compiles back to
    the same IR; `name` renames `fn` (callees keep theirs: calls name them)."""
    fns = _closure(module, fn)
    top = _top_name(fn, name, fns)
    out_names = {f.name: f.name for f in fns}
    out_names[fn.name] = top
    ctx = _Context(module, out_names)
    ctx.plan(fns)
    bodies = [_FunctionWriter(ctx, f).write() for f in fns]
    head = [f"# Grade source exported by numgrade from {module.name}: {fn.name}()"
            + (f", written as {top}()" if top != fn.name else ""),
            "# Every operation is one `let` annotated with its exact result format; compiling",
            "# this text gives back the same IR."]
    head += [f"# note: {n}" for n in ctx.notes]
    parts = ["\n".join(head)]
    if ctx.decls:
        parts.append("\n".join(ctx.decls))
    parts += bodies
    text = "\n\n".join(parts) + "\n"
    if check:
        _check(text, ctx, fns)
    return text


# ---------------------------------------------------------------------------------------------
# module level: which functions, their names, constant declarations
def _closure(module: N.Module, fn: N.Function) -> list[N.Function]:
    """fn's callees (transitively, callees before callers), then fn."""
    order: list[N.Function] = []
    seen: set[str] = set()

    def visit(f: N.Function) -> None:
        seen.add(f.name)
        for v in toposort(f.results):
            if v.op != Op.CALL or v.attrs[0] in seen:
                continue
            callee = module.functions.get(v.attrs[0])
            if callee is None or callee is fn:
                raise GradeError(f"{f.name}() calls '{v.attrs[0]}', which module {module.name} "
                                 "does not define" if callee is None else
                                 f"{f.name}() calls {fn.name}() recursively")
            visit(callee)
        order.append(f)

    visit(fn)
    return order


def _top_name(fn: N.Function, name: str | None, fns: list[N.Function]) -> str:
    if name is not None:
        if not is_plain_name(name) or name in RESERVED:
            raise GradeError(f"'{name}' cannot name a Grade function (a name that is not a "
                             "keyword, format or built-in function is needed)")
        top = name
    else:
        top = fn.name if is_plain_name(fn.name) and fn.name not in RESERVED else \
            identifier(fn.name) + "_fn"
    for f in fns[:-1]:
        if not is_plain_name(f.name) or f.name in RESERVED:
            raise GradeError(f"the callee '{f.name}' of {fn.name}() cannot be written in Grade: "
                             "its name is a keyword, format or built-in (calls name callees)")
        if f.name == top:
            raise GradeError(f"cannot name the exported function '{top}': {fn.name}() calls a "
                             "function of that name")
    return top


@dataclass
class _Context:
    """What all exported functions share: names and module-level declarations."""

    module: N.Module
    out_names: dict[str, str]
    const_names: dict[int, str] = field(default_factory=dict)    # id(array const) -> name
    req_text: dict[int, str] = field(default_factory=dict)       # id(constraint) -> text
    verbatim: set[int] = field(default_factory=set)              # constraints written as is
    globals: set[str] = field(default_factory=set)
    decls: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def plan(self, fns: list[N.Function]) -> None:
        local = set()
        for f in fns:
            _check_params(f)
            local |= {p.name for p in f.params} | set(f.dims)
        self.globals = set(self.out_names.values())
        req_consts: dict[str, int] = {}
        for f in fns:
            for c in f.requires:
                self._requirement(f, c, local, req_consts)
        for n, val in req_consts.items():
            self.decls.append(f"const {n}: i32 = {val}")
        self.globals |= set(req_consts)
        by_id = {id(v): n for n, v in self.module.consts.items()}
        for f in fns:
            for v in toposort(f.results):
                if v.op == Op.CONST and v.shape and id(v) not in self.const_names:
                    want = by_id.get(id(v), "C")
                    n = _fresh(want if is_plain_name(want) else identifier(want),
                               self.globals | local)
                    self.globals.add(n)
                    self.const_names[id(v)] = n
                    self.decls.append(array_const_decl(n, v))

    def _requirement(self, f: N.Function, c: N.Constraint, local: set[str],
                     consts: dict[str, int]) -> None:
        """The text to write for one requirement: its own text when it reads back the same."""
        if c.kind == "feature":
            self.req_text[id(c)] = f"feature({c.feature})"
            if c.text == self.req_text[id(c)]:
                self.verbatim.add(id(c))
            return
        found = _requirement_consts(c, set(f.dims)) if _REQ_CHARS.match(c.text) else None
        if found is not None and all(
                n not in local and n not in RESERVED and n not in self.globals
                and consts.get(n, v) == v for n, v in found.items()):
            consts.update(found)
            self.req_text[id(c)] = c.text
            self.verbatim.add(id(c))
            return
        lhs = dim_text(c.lhs)
        if c.mod is not None:
            lhs = f"({lhs}) % {c.mod}" if len(c.lhs.terms) > 1 else f"{lhs} % {c.mod}"
        self.req_text[id(c)] = f"{lhs} {c.op} {dim_text(c.rhs)}"
        self.notes.append(f"{f.name}(): requirement '{c.text}' is written as "
                          f"'{self.req_text[id(c)]}'")


def _check_params(f: N.Function) -> None:
    dims = set(f.dims)
    for p in f.params:
        if not is_plain_name(p.name) or p.name in FORMATS or p.name in dims:
            raise GradeError(f"parameter '{p.name}' of {f.name}() cannot be written in Grade "
                             "(a parameter's name is part of the IR, and this one is a keyword, "
                             "a format or a size name)")


def _requirement_consts(c: N.Constraint, dims: set[str]) -> dict[str, int] | None:
    """Values of the non-size names of a requirement's text (``E >= TOPK``: TOPK = 2), found
    where a name is a whole side or the modulus; None when some name has no such place."""
    names = set(re.findall(r"(?<![\w.])[A-Za-z_]\w*", c.text)) - dims
    if not names:
        return {}
    m = _REQ_RE.match(c.text.strip())
    if m is None or m.group(2) != c.op:
        return None
    left, right = m.group(1).strip(), m.group(3).strip()
    mod_m = re.match(r"^(.*?)\s*%\s*([A-Za-z_]\w*)$", left)
    out: dict[str, int] = {}
    for n in names:
        if right == n and c.rhs.int_value() is not None:
            out[n] = c.rhs.int_value()
        elif left == n and c.mod is None and c.lhs.int_value() is not None:
            out[n] = c.lhs.int_value()
        elif mod_m is not None and mod_m.group(2) == n and c.mod is not None:
            out[n] = c.mod
        else:
            return None
    return out


def _fresh(base: str, taken: set[str]) -> str:
    name, k = base, 1
    while name in taken or name in RESERVED or not is_plain_name(name):
        k += 1
        name = f"{base}_{k}"
    return name


# ---------------------------------------------------------------------------------------------
# one function
def _stream(v: Value) -> int | None:
    """The random-stream ordinal v consumes, if any."""
    if v.op == Op.ROUND and v.attrs[0] == "sr":
        return v.attrs[2]
    if v.op == Op.RAND:
        return v.attrs[0]
    if v.op == Op.CALL and v.attrs[1] >= 0:
        return v.attrs[1]
    return None


def emission_order(fn: N.Function) -> list[Value | int]:
    """The live values in an order lowering can create them in: operands first, random-stream
    consumers in stream order (an int is a stream no live value uses)."""
    consumers: dict[int, Value] = {}
    for v in toposort(fn.results):
        s = _stream(v)
        if s is not None:
            if s in consumers or s < 0:
                raise GradeError(f"{fn.name}(): random stream {s} is used twice; Grade numbers "
                                 "each stochastic rounding, rand() and call once")
            consumers[s] = v
    total = max([fn.rand_consumers] + [s + 1 for s in consumers])
    order: list[Value | int] = []
    done: set[int] = set()

    def visit(root: Value, limit: float) -> None:
        stack: list[tuple[Value, bool]] = [(root, False)]
        while stack:
            v, expanded = stack.pop()
            if expanded:
                order.append(v)
                continue
            if id(v) in done:
                continue
            s = _stream(v)
            if s is not None and s > limit:
                raise GradeError(f"{fn.name}(): random stream {s} ({v.op}) is needed before "
                                 f"stream {int(limit)}; Grade numbers streams in program order")
            done.add(id(v))
            stack.append((v, True))
            stack.extend((x, False) for x in reversed(v.srcs) if id(x) not in done)

    for k in range(total):
        if k in consumers:
            visit(consumers[k], k)
        else:
            order.append(k)
    for r in fn.results:
        visit(r, math.inf)
    return order


class _FunctionWriter:
    """The Grade text of one function."""

    def __init__(self, ctx: _Context, fn: N.Function):
        self.ctx = ctx
        self.fn = fn
        self.names: dict[int, str] = {}
        self.counters: dict[str, int] = {}
        self.taken = set(ctx.globals) | {p.name for p in fn.params} | set(fn.dims)
        self.inline: dict[tuple[int, int], str] = {}   # (id(user), operand) -> literal
        self.uses: dict[int, list[tuple[Value, int]]] = {}
        self.projs: dict[int, dict[int, Value]] = {}    # id(call) -> {index: proj}

    def fresh(self, base: str | None, default: str) -> str:
        """A new local name: base made unique, or default numbered (t1, t2, ...)."""
        if base:
            n = _fresh(identifier(base), self.taken)
        else:
            k = self.counters.get(default, 0) + 1
            while f"{default}{k}" in self.taken or f"{default}{k}" in RESERVED:
                k += 1
            self.counters[default] = k
            n = f"{default}{k}"
        self.taken.add(n)
        return n

    def write(self) -> str:
        fn = self.fn
        order = emission_order(fn)
        for p in fn.params:
            self.names[id(p.value)] = p.name
        for v in order:
            if isinstance(v, int):
                continue
            for i, s in enumerate(v.srcs):
                self.uses.setdefault(id(s), []).append((v, i))
            if v.op == Op.PROJ:
                self.projs.setdefault(id(v.srcs[0]), {})[v.attrs[0]] = v
        self._plan_inline(order)
        body: list[str] = []
        for item in order:
            if isinstance(item, int):
                n = self.fresh(None, "_unused_stream")
                body.append(f"let {n} = rand()  # random stream {item} has no live use")
                continue
            try:
                line = self._statement(item)
            except Unwritable as ex:
                raise GradeError(f"{fn.name}(): {item.op} ({item.type}) cannot be written in "
                                 f"Grade: {ex.why}") from None
            if line:
                body.append(line)
        rs = [self.ref(r) for r in fn.results]
        if fn.result_is_tuple:
            body.append(f"return ({', '.join(rs)}{',' if len(rs) == 1 else ''})")
        else:
            body.append(f"return {rs[0]}")
        head = self._header()
        return head + ("{" if head.endswith("\n") else " {") + "\n" + \
            "\n".join("    " + b for b in body) + "\n}"

    def _header(self) -> str:
        fn = self.fn
        ps = []
        pending = list(fn.dims)

        def param_dim(d) -> str:
            """A size of a parameter type; a plain name introduces a size, so one that comes
            before its turn in fn.dims is written `M + 0` (which does not)."""
            s = d.plain_symbol()
            if s is None or s not in pending:
                return dim_text(d)
            if pending[0] == s:
                pending.pop(0)
                return s
            return f"{s} + 0"

        for p in fn.params:
            t = p.value.tensor_type
            dims = ", ".join(param_dim(d) for d in t.shape)
            s = f"{p.name}: {t.fmt.name}" + (f"[{dims}]" if t.shape else "")
            if p.range is not None:
                s += f" in [{float_text(p.range[0])}, {float_text(p.range[1])}]"
            ps.append(s)
        rt = [type_text(v.tensor_type) for v in fn.results]
        ret = f"({', '.join(rt)}{',' if len(rt) == 1 else ''})" if fn.result_is_tuple else rt[0]
        head = f"fn {self.ctx.out_names[fn.name]}({', '.join(ps)}) -> {ret}"
        if fn.effects:
            head += " ! {" + ", ".join(sorted(fn.effects)) + "}"
        if fn.requires:
            head += "\n    requires " + ", ".join(self.ctx.req_text[id(c)] for c in fn.requires)
            head += "\n"
        return head

    # constants next to typed operands ---------------------------------------------------------
    def _plan_inline(self, order: list) -> None:
        """Literals written in place: a scalar constant as an operand of a binary operation or a
        `where` branch whose other operand is not constant adopts that operand's format."""
        for v in order:
            if isinstance(v, int):
                continue
            if v.op in N.ARITH or v.op in N.COMPARE:
                pairs = ((0, 1), (1, 0))
            elif v.op == Op.WHERE:
                pairs = ((1, 2), (2, 1))
            else:
                continue
            for i, j in pairs:
                c, other = v.srcs[i], v.srcs[j]
                if c.op != Op.CONST or c.shape or other.op == Op.CONST:
                    continue
                text = adopted_literal(c, other.fmt)
                if text is not None:
                    self.inline[(id(v), i)] = text

    def _needs_let(self, c: Value) -> bool:
        return any(r is c for r in self.fn.results) or any(
            (id(u), i) not in self.inline for u, i in self.uses.get(id(c), ()))

    # statements ---------------------------------------------------------------------------------
    def ref(self, v: Value, user: Value | None = None, pos: int = -1) -> str:
        if user is not None and (id(user), pos) in self.inline:
            return self.inline[(id(user), pos)]
        if id(v) in self.names:
            return self.names[id(v)]
        if v.op == Op.CONST and v.shape:
            return self.ctx.const_names[id(v)]
        raise AssertionError(f"{v.op} used before it is written")  # pragma: no cover

    def _statement(self, v: Value) -> str | None:
        fn = self.fn
        if v.op in (Op.PARAM, Op.PROJ) or (v.op == Op.CONST and v.shape):
            return None  # parameters, call results (bound by the call), module constants
        if v.op == Op.CONST:
            if not self._needs_let(v):
                return None
            text = scalar_const_text(v)
            n = self.fresh(fn.names.get(v), "c")
            self.names[id(v)] = n
            return f"let {n}: {type_text(v.tensor_type)} = {text}"
        if v.op == Op.CALL:
            return self._call(v)
        _check_format(v)
        expr = self._expr(v)
        n = self.fresh(fn.names.get(v), "t")
        self.names[id(v)] = n
        return f"let {n}: {type_text(v.tensor_type)} = {expr}"

    def _call(self, v: Value) -> str:
        callee = self.ctx.module.functions[v.attrs[0]]
        args = ", ".join(self.ref(s) for s in v.srcs)
        call = f"{self.ctx.out_names[callee.name]}({args})"
        projs = self.projs.get(id(v), {})
        items = v.type.items if isinstance(v.type, TupleType) else ()
        names = []
        for i, t in enumerate(items):
            p = projs.get(i)
            n = self.fresh(self.fn.names.get(p) if p is not None else None,
                           "r" if p is not None else "_unused")
            if p is not None:
                self.names[id(p)] = n
            names.append((n, t))
        if not callee.result_is_tuple:
            n, t = names[0]
            return f"let {n}: {type_text(t)} = {call}"
        if len(names) == 1:
            n, t = names[0]
            return f"let {n}: {type_text(t)} = {call}[0]"
        types = ", ".join(f"{n}: {type_text(t)}" for n, t in names)
        return f"let ({', '.join(n for n, _ in names)}) = {call}  # {types}"

    def _expr(self, v: Value) -> str:
        a = [self.ref(s, v, i) for i, s in enumerate(v.srcs)]
        op, at = v.op, v.attrs
        if op in (Op.MIN, Op.MAX):
            return f"{op}({a[0]}, {a[1]})"
        if op in _SYMBOLS:
            return f"{a[0]} {_SYMBOLS[op]} {a[1]}"
        if op == Op.NOT:
            return f"not {a[0]}"
        if op == Op.NEG:
            return f"-{a[0]}"
        if op in _UNARY:
            return f"{_UNARY[op]}({a[0]})"
        if op == Op.WHERE:
            return f"where({a[0]}, {a[1]}, {a[2]})"
        if op == Op.FMA:
            return f"fma({a[0]}, {a[1]}, {a[2]})"
        if op == Op.ROUND:
            mode, sat, _ = at
            if mode == "rne" and sat:
                return f"{a[0]} as {v.fmt.name}"
            kw = (f", mode={mode}" if mode != "rne" else "") + ("" if sat else ", sat=false")
            return f"round({a[0]}, {v.fmt.name}{kw})"
        if op in _REDUCE:
            return self._reduce(v, a[0])
        if op == Op.MATMUL:
            if at[0] == v.fmt.name:
                return f"{a[0]} @ {a[1]}"
            return f"matmul({a[0]}, {a[1]}, acc={at[0]})"
        if op in (Op.RESHAPE, Op.BROADCAST):
            f = "reshape" if op == Op.RESHAPE else "broadcast_to"
            return f"{f}({a[0]}, [{', '.join(dim_text(d) for d in v.shape)}])"
        if op == Op.TRANSPOSE:
            return f"transpose({a[0]}, [{', '.join(str(p) for p in at[0])}])"
        if op == Op.CONCAT:
            return f"concat([{', '.join(a)}], axis={at[0]})"
        if op == Op.SLICE:
            return f"{a[0]}[{_slice_text(at[0], v.srcs[0].shape)}]"
        if op == Op.TOPK_MASK:
            return f"topk_mask({a[0]}, {at[0]}, axis={at[1]})"
        if op == Op.ARANGE:
            return f"arange({dim_text(v.shape[0])})"
        if op == Op.RAND:
            return f"rand([{', '.join(dim_text(d) for d in v.shape)}])" if v.shape else "rand()"
        if op == Op.DIM:
            s = at[0].plain_symbol()
            if s is None or s not in self.fn.dims:
                raise Unwritable(f"only a size name can be read as a value, not {at[0]}")
            return s
        raise Unwritable("Grade has no syntax for this operation")

    def _reduce(self, v: Value, x: str) -> str:
        axes, keep, order = v.attrs
        src = v.srcs[0]
        kw = []
        if tuple(axes) != tuple(range(src.tensor_type.rank)):
            kw.append(f"axis={axes[0]}" if len(axes) == 1 else
                      f"axis=[{', '.join(str(i) for i in axes)}]")
        if keep:
            kw.append("keepdims=true")
        if order != "any":
            kw.append(f"order={order}")
        if v.op in (Op.SUM, Op.MEAN) and v.fmt != src.fmt:
            kw.append(f"acc={v.fmt.name}")
        return f"{_REDUCE[v.op]}({', '.join([x] + kw)})"


def _check_format(v: Value) -> None:
    """Raise Unwritable when lowering cannot give v its format."""
    if v.op in _CHOSEN:
        if v.fmt.kind == "bool":
            raise Unwritable("arithmetic cannot produce bool")
        if v.op == Op.MEAN and v.fmt.kind == "int":
            raise Unwritable("mean accumulates in a float format (i32 becomes f32)")
        return
    want = derived_format(v)
    if want is not None and v.fmt != want:
        raise Unwritable(f"Grade gives it the format {want.name} of its operands (only "
                          "arithmetic, math functions, fma, sum/mean, matmul and round choose "
                          "their result format)")


def _slice_text(items: tuple, shape: tuple) -> str:
    out = []
    axis = 0
    for it in items:
        if it[0] == "new":
            out.append("None")
            continue
        n = shape[axis]
        axis += 1
        if it[0] == "i":
            out.append(_index_text(it[1]))
            continue
        start, stop, step = it[1], it[2], it[3]
        s = ("" if start.int_value() == 0 else _index_text(start)) + ":" + \
            ("" if stop == n else _index_text(stop))
        out.append(s + (f":{step}" if step != 1 else ""))
    while len(out) > 1 and out[-1] == ":":
        out.pop()  # trailing whole axes are implied
    return ", ".join(out)


def _index_text(d) -> str:
    v = d.int_value()
    if v is not None and v < 0:
        raise Unwritable(f"a negative index {v} reads as counting from the end in Grade")
    return dim_text(d)


# ---------------------------------------------------------------------------------------------
# the round-trip check
def _check(text: str, ctx: _Context, fns: list[N.Function]) -> None:
    from ..api import compile_source

    top = fns[-1]
    try:
        new = compile_source(text, "<grade export>").ir
    except GradeError as ex:
        raise GradeError(f"{top.name}() cannot be written in Grade exactly: the exported text "
                         f"does not compile ({ex.message})") from None
    for f in fns:
        g = new.functions.get(ctx.out_names[f.name])
        why = "it is missing" if g is None else _difference(f, g, ctx)
        if why:
            raise GradeError(f"{f.name}() cannot be written in Grade exactly: {why}")


def _difference(f: N.Function, g: N.Function, ctx: _Context) -> str | None:
    """What differs between a function and its exported-and-compiled copy (None: nothing)."""
    if [(p.name, p.range) for p in f.params] != [(p.name, p.range) for p in g.params] or \
            any(p.value is not q.value for p, q in zip(f.params, g.params)):
        return "its parameters come back different"
    if len(f.results) != len(g.results) or any(a is not b for a, b in zip(f.results, g.results)):
        got = {id(v) for v in toposort(g.results)}
        for v in toposort(f.results):
            if id(v) not in got:
                name = f.names.get(v)
                return (f"{v.op} ({v.type}{', ' + repr(name) if name else ''}) comes back as a "
                        "different operation")
        return "its results come back different"
    if f.result_is_tuple != g.result_is_tuple or f.effects != g.effects or f.dims != g.dims \
            or f.rand_consumers != g.rand_consumers:
        return "its signature, effects, sizes or random streams come back different"
    if len(f.requires) != len(g.requires):
        return "its requirements come back different"
    for c, d in zip(f.requires, g.requires):
        if (c.kind, c.lhs, c.mod, c.op, c.rhs, c.feature) != \
                (d.kind, d.lhs, d.mod, d.op, d.rhs, d.feature) or \
                (id(c) in ctx.verbatim and c.text != d.text):
            return f"requirement '{c.text}' comes back as '{d.text}'"
    return None
