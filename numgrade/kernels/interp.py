"""A numpy executor of kernel IR: the oracle every code-generating backend is compared with.

It implements the backend contract of :mod:`numgrade.backends.base` and follows the primitive
semantics of :mod:`numgrade.kernels.ir` with numpy scalar types of the stated dtypes (float32
arithmetic in ``np.float32``, wrap-around integers of the stated width and signedness, logical
vs arithmetic shifts by signedness, truncating float->int casts, bitcasts via ``.view``).

Why it is fast enough to be useful: nothing is interpreted per program instance. A kernel runs
once for *all* grid points, which are numpy axes (one per grid coordinate, so the row-major
decomposition of the program id is the axis order). A parallel ``Loop`` or a ``Reduce`` appends
one axis for all its iterations; values are kept in their *broadcast* shape (a value that does
not depend on a loop variable keeps a size-1 axis there), so loop-invariant work is done once.
A ``Reduce`` evaluates its body for all iterations and then folds along the last axis in exactly
the stated order; ``seq`` with a plain ``add``/``mul``/bitwise combine uses ``ufunc.accumulate``
(strictly left to right), any other ``seq`` combine a loop over the iterations, ``pairwise`` and
``any`` the level-by-level adjacent-pair tree (an odd element out carried), which equals the
binary-counter stack algorithm of the IR. Serial loops run iteration by iteration. An extent that
differs between lanes (a loop bound depending on a grid or outer loop variable) is handled by
running the statement once per distinct extent on the lanes that have it, gathered to one flat
axis, and scattering the results (reduction values, assigned accumulators) back.

Deliberate strictness, since this is the oracle: dtypes are checked when the program is built
(and variables' dtypes when read), a negative or too large load/store index raises, and an
``Assign`` to a scalar that was not declared in the same (serial) scope raises.
Outside the IR's stated domain it simply does what numpy does: integer ``div``/``mod`` of negative
operands floor, shifts by at least the bit width give 0 (or -1), out-of-range float->int casts
give numpy's value. Integer constants are wrapped to their dtype (``const(-1, "u32")`` is
``0xFFFFFFFF``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..backends.base import NUMPY_DTYPES
from .ir import wrap_int  # noqa: F401 - also this module's public name (tests)
from .ir import (DTYPE_BITS, FLOAT_DTYPES, INT_DTYPES, MATH_OPS, Assign, Decl, Kernel,
                 KernelProgram, KExpr, Let, Loop, Reduce, Stmt, Store, acc_vars,
                 format_program)

NP_DTYPES: dict[str, np.dtype] = {k: np.dtype(v) for k, v in NUMPY_DTYPES.items()}
NP_DTYPES["bool"] = np.dtype(np.bool_)

Value = Any  # a numpy scalar (np.generic) or an ndarray broadcastable to the frame's lanes

# values at least this large are worth reusing as a ufunc's output when they die there
_REUSE_MIN_SIZE = 1 << 14


class KernelIRError(ValueError):
    """The program is not well-formed kernel IR (a dtype, scope or index error)."""


# ---------------------------------------------------------------------------------------------
# primitive operations
_BINARY_UFUNCS: dict[str, np.ufunc] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "mod": np.remainder,
    "band": np.bitwise_and, "bor": np.bitwise_or, "bxor": np.bitwise_xor,
    "and": np.logical_and, "or": np.logical_or,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
    "eq": np.equal, "ne": np.not_equal,
}
_UNARY_UFUNCS: dict[str, np.ufunc] = {
    "neg": np.negative, "abs": np.absolute, "not": np.logical_not, "floor": np.floor,
    "ceil": np.ceil, "trunc": np.trunc, "rint": np.rint, "sqrt": np.sqrt, "exp": np.exp,
    "log": np.log, "tanh": np.tanh, "sin": np.sin, "cos": np.cos, "exp2": np.exp2,
    "log2": np.log2,
}
# combines that ufunc.accumulate folds strictly left to right, bit for bit
_ACCUMULATE_UFUNCS = {"add": np.add, "mul": np.multiply, "band": np.bitwise_and,
                      "bor": np.bitwise_or, "bxor": np.bitwise_xor, "and": np.logical_and,
                      "or": np.logical_or}


def np_scalar(value: int | float | bool, dtype: str) -> np.generic:
    """A numpy scalar of ``dtype`` holding ``value`` (ints wrapped, floats rounded RNE)."""
    t = NP_DTYPES[dtype].type
    if dtype in INT_DTYPES:
        return t(wrap_int(value, dtype))
    if dtype == "bool":
        return t(bool(value))
    return t(float(value))


def _shift(ufunc: np.ufunc) -> Callable[..., Value]:
    def f(a: Value, b: Value, out: np.ndarray | None = None) -> Value:
        if b.dtype != a.dtype:  # the amount may come in another integer dtype
            b = b.astype(a.dtype)
        return ufunc(a, b, out=out)
    return f


def _where(c: Value, a: Value, b: Value, out: np.ndarray | None = None) -> Value:
    return np.where(c, a, b)


def _op_function(e: KExpr) -> tuple[Callable[..., Value], bool]:
    """The numpy function computing ``e`` from its arguments, and whether it accepts ``out=``."""
    op = e.op
    if op == "div":
        return (np.divide if e.dtype in FLOAT_DTYPES else np.floor_divide), True
    if op in ("shl", "shr"):
        return _shift(np.left_shift if op == "shl" else np.right_shift), True
    if op in _BINARY_UFUNCS:
        return _BINARY_UFUNCS[op], True
    if op in MATH_OPS and e.dtype == "f32":
        # single precision: the float64 function rounded once (within half an ulp and a hair,
        # inside the target libraries' bounds the analysis assumes)
        f = _UNARY_UFUNCS[op]
        return (lambda a, out=None: f(a.astype(np.float64)).astype(np.float32)), False
    if op in _UNARY_UFUNCS:
        return _UNARY_UFUNCS[op], True
    if op == "select":
        return _where, False
    target = NP_DTYPES[e.dtype]
    if op == "cast":
        return (lambda a, out=None: a.astype(target)), False
    if op == "bitcast":
        return (lambda a, out=None: a.view(target)), False
    raise KernelIRError(f"no evaluation rule for op {op!r}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# static checks
def _check_expr(e: KExpr, storage: Mapping[str, str]) -> None:
    """Raise KernelIRError unless the node's argument dtypes fit its op (per kernel/ir.py)."""
    op, d, ad = e.op, e.dtype, [a.dtype for a in e.args]

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise KernelIRError(f"{what}: {op} with args {ad} -> {d} in {e!r}")

    if op in ("const", "var"):
        return
    if op == "load":
        buf = e.attrs[0]
        need(buf in storage, f"unknown buffer {buf!r}")
        need(d == storage[buf], f"load dtype differs from storage {storage[buf]}")
        need(ad[0] in INT_DTYPES, "index must be an integer")
    elif op in ("add", "sub", "mul", "div"):
        need(d not in ("bool",) and ad == [d, d], "arithmetic needs both args of the result dtype")
    elif op in ("mod", "band", "bor", "bxor"):
        need(d in INT_DTYPES and ad == [d, d], "integer op needs integer args of the result dtype")
    elif op in ("shl", "shr"):
        need(d in INT_DTYPES and ad[0] == d and ad[1] in INT_DTYPES, "shift needs integers")
    elif op in ("and", "or"):
        need(d == "bool" and ad == ["bool", "bool"], "logical op needs bools")
    elif op == "not":
        need(d == "bool" and ad == ["bool"], "not needs a bool")
    elif op in ("lt", "le", "gt", "ge", "eq", "ne"):
        need(d == "bool" and ad[0] == ad[1], "comparison needs equal arg dtypes, gives bool")
    elif op in ("neg", "abs"):
        need(d != "bool" and ad == [d], "neg/abs keeps its dtype")
    elif op in ("floor", "ceil", "trunc", "rint", "sqrt"):
        need(d in FLOAT_DTYPES and ad == [d], "float op keeps its float dtype")
    elif op in MATH_OPS:
        need(d in FLOAT_DTYPES and ad == [d], "math ops keep their float dtype")
    elif op == "select":
        need(ad == ["bool", d, d], "select needs (bool, T, T) -> T")
    elif op == "bitcast":
        need(DTYPE_BITS[d] == DTYPE_BITS[ad[0]] and "bool" not in (d, ad[0]),
             "bitcast needs same-width non-bool types")
    elif op == "cast":
        need(len(ad) == 1, "cast takes one argument")


def _check_stmts(stmts: Sequence[Stmt], storage: Mapping[str, str]) -> None:
    for s in stmts:
        if isinstance(s, Store):
            if s.buffer not in storage:
                raise KernelIRError(f"store to unknown buffer {s.buffer!r}")
            if s.value.dtype != storage[s.buffer] or s.index.dtype not in INT_DTYPES:
                raise KernelIRError(f"store of {s.value.dtype} at {s.index.dtype} index into "
                                    f"{s.buffer}: {storage[s.buffer]}")
        elif isinstance(s, Loop):
            if s.kind not in ("parallel", "serial") or s.extent.dtype not in INT_DTYPES:
                raise KernelIRError(f"bad loop {s.var}: kind {s.kind}, extent {s.extent.dtype}")
            _check_stmts(s.body, storage)
        elif isinstance(s, Reduce):
            dt = s.combine.dtype
            if s.order not in ("seq", "pairwise", "any") or s.extent.dtype not in INT_DTYPES:
                raise KernelIRError(f"bad reduce {s.name}: order {s.order}, extent "
                                    f"{s.extent.dtype}")
            leaf_dt = s.leaf.dtype if s.leaf is not None else s.value.dtype
            if s.init.dtype != dt or leaf_dt != dt:
                raise KernelIRError(f"reduce {s.name}: init {s.init.dtype}, element {leaf_dt}, "
                                    f"combine {dt} must agree")
            _check_stmts(s.body, storage)


def _subexprs(root: KExpr) -> list[KExpr]:
    """The distinct nodes of ``root``'s DAG in post order (arguments first), iteratively."""
    seen: set[int] = set()
    order: list[KExpr] = []
    stack: list[tuple[KExpr, bool]] = [(root, False)]
    while stack:
        e, expanded = stack.pop()
        if id(e) in seen:
            continue
        if expanded or not e.args:
            seen.add(id(e))
            order.append(e)
            continue
        stack.append((e, True))
        stack.extend((a, False) for a in reversed(e.args) if id(a) not in seen)
    return order


# ---------------------------------------------------------------------------------------------
# compiled expressions
class _Plan:
    """One expression DAG as a straight-line list of numpy calls, freeing values after last use.

    A value computed here that dies at a ufunc of the same shape and dtype becomes that ufunc's
    ``out``: on big lanes this halves the memory traffic of long elementwise chains.
    """

    __slots__ = ("steps", "size")

    def __init__(self, root: KExpr):
        nodes = _subexprs(root)
        index = {id(e): i for i, e in enumerate(nodes)}
        last = list(range(len(nodes)))
        for i, e in enumerate(nodes):
            for a in e.args:
                last[index[id(a)]] = i
        last[-1] = len(nodes)  # the result is never freed
        steps = []
        for i, e in enumerate(nodes):
            args = tuple(index[id(a)] for a in e.args)
            kills = tuple(sorted({j for j in args if last[j] == i}))
            if e.op == "const":
                steps.append(("const", np_scalar(e.attrs[0], e.dtype), args, kills, e))
            elif e.op == "var":
                steps.append(("var", (e.attrs[0], NP_DTYPES[e.dtype]), args, kills, e))
            elif e.op == "load":
                steps.append(("load", e.attrs[0], args, kills, e))
            else:
                fn, takes_out = _op_function(e)
                steps.append(("out" if takes_out else "call", (fn, NP_DTYPES[e.dtype]), args,
                              kills, e))
        self.steps = steps
        self.size = len(nodes)

    def __call__(self, env: Mapping[str, Value], buffers: Mapping[str, np.ndarray]) -> Value:
        vals: list[Value] = [None] * self.size
        owned = [False] * self.size  # a fresh array no one else refers to
        for i, (kind, data, args, kills, e) in enumerate(self.steps):
            if kind == "const":
                v = data
            elif kind == "var":
                name, want = data
                try:
                    v = env[name]
                except KeyError:
                    raise KernelIRError(f"unbound variable {name!r}") from None
                if v.dtype != want:
                    raise KernelIRError(f"variable {name!r} is {v.dtype}, used as {e.dtype}")
            elif kind == "load":
                v = _gather(buffers[data], vals[args[0]], data)
                owned[i] = isinstance(v, np.ndarray)
            else:
                fn, dt = data
                xs = [vals[j] for j in args]
                out = None
                if kind == "out":
                    out = _reusable(xs, [vals[j] for j in kills if owned[j]], dt)
                if e.op == "bitcast":  # a view: it owns memory only if its argument dies here
                    v = fn(*xs)
                    owned[i] = owned[args[0]] and args[0] in kills and isinstance(v, np.ndarray)
                else:
                    v = fn(*xs, out=out)
                    owned[i] = isinstance(v, np.ndarray) and v.ndim > 0
            vals[i] = v
            for j in kills:
                vals[j] = None
        return vals[-1]


def _reusable(xs: list[Value], dying: list[np.ndarray], dt: np.dtype) -> np.ndarray | None:
    """A dying argument that can hold the result of an elementwise op over ``xs``."""
    for c in dying:
        if c.size >= _REUSE_MIN_SIZE and c.dtype == dt and c.flags.writeable \
                and c.flags.c_contiguous:
            if c.shape == np.broadcast_shapes(*(np.shape(x) for x in xs)):
                return c
    return None


def _check_index(idx: Value, n: int, buffer: str) -> None:
    if np.ndim(idx) == 0:
        bad = not 0 <= int(idx) < n
    else:
        bad = idx.size > 0 and (int(idx.min()) < 0 or int(idx.max()) >= n)
    if bad:
        raise KernelIRError(f"index out of range for buffer {buffer!r} of {n} elements")


def _gather(buf: np.ndarray, idx: Value, buffer: str) -> Value:
    _check_index(idx, buf.shape[0], buffer)
    return buf[idx] if np.ndim(idx) == 0 else np.take(buf, idx)


# ---------------------------------------------------------------------------------------------
# statements
@dataclass
class _Frame:
    """The lanes statements run over: ``shape`` (grid axes, then one per enclosing parallel loop
    or reduction), the bound names (each broadcastable to ``shape``: ndim 0 or len(shape)), and
    which of them may be ``Assign``-ed here."""

    env: dict[str, Value]
    shape: tuple[int, ...]
    mutable: set[str]


def _expand(v: Value) -> Value:
    return v[..., None] if np.ndim(v) else v


def _names(e: KExpr) -> set[str]:
    return {n.attrs[0] for n in _subexprs(e) if n.op == "var"}


class _Executor:
    """Runs the kernels of one program; holds its compiled expressions and scope facts."""

    def __init__(self, program: KernelProgram):
        self.program = program
        self.storage = {n: b.storage for n, b in program.buffers.items()}
        self.scalar_dtypes: dict[str, str] = {}
        self.plans: dict[int, _Plan] = {}
        self.refs: dict[int, frozenset[str]] = {}  # statement -> names it (transitively) reads
        self.dead: dict[int, list[tuple[str, ...]]] = {}  # body -> names to drop after stmt i
        self._keep: list[Any] = []  # the objects whose id() keys the caches above
        for k in program.kernels:
            for p in k.scalars:
                self.scalar_dtypes[p.name] = p.dtype
            for g in k.grid:
                if g.dtype not in INT_DTYPES or g.op not in ("const", "var"):
                    raise KernelIRError(f"kernel {k.name}: grid extents are int consts or vars")
            if len(k.grid) != len(k.grid_vars):
                raise KernelIRError(f"kernel {k.name}: {len(k.grid)} extents, "
                                    f"{len(k.grid_vars)} grid vars")
            _check_stmts(k.body, self.storage)
            self._prepare_body(k.body)

    # --- preparation ------------------------------------------------------------------------
    def _plan(self, e: KExpr) -> _Plan:
        p = self.plans.get(id(e))
        if p is None:
            for n in _subexprs(e):
                _check_expr(n, self.storage)
            p = self.plans[id(e)] = _Plan(e)
            self._keep.append(e)
        return p

    def _stmt_exprs(self, s: Stmt) -> list[KExpr]:
        if isinstance(s, (Let, Assign)):
            return [s.value]
        if isinstance(s, Decl):
            return [s.init]
        if isinstance(s, Store):
            return [s.index, s.value]
        if isinstance(s, Loop):
            return [s.extent]
        if isinstance(s, Reduce):
            return [s.extent, s.value, s.combine, s.init] + ([s.leaf] if s.leaf else [])
        raise KernelIRError(f"unknown statement {s!r}")

    def _prepare_body(self, body: Sequence[Stmt],
                      keep: frozenset[str] = frozenset()) -> frozenset[str]:
        """Compile every expression, record what each statement reads, plan the frees.

        ``keep``: names read after the body ends (a Reduce's ``value``), never freed in it."""
        reads = []
        for s in body:
            names: set[str] = set()
            for e in self._stmt_exprs(s):
                self._plan(e)
                names |= _names(e)
            if isinstance(s, Reduce):
                names |= self._prepare_body(s.body, frozenset(_names(s.value)))
            elif isinstance(s, Loop):
                names |= self._prepare_body(s.body)
            self.refs[id(s)] = frozenset(names)
            self._keep.append(s)
            reads.append(names)
        last: dict[str, int] = {}
        for i, s in enumerate(body):
            for n in reads[i]:
                last[n] = i
            if isinstance(s, (Let, Reduce)):
                last.setdefault(s.name, i)
        dead: list[list[str]] = [[] for _ in body]
        bound = {s.name for s in body if isinstance(s, (Let, Reduce))}
        for n, i in last.items():
            if n in bound and n not in keep:
                dead[i].append(n)
        self.dead[id(body)] = [tuple(d) for d in dead]
        self._keep.append(body)
        return frozenset(set().union(*reads)) if reads else frozenset()

    # --- running ----------------------------------------------------------------------------
    def run(self, buffers: dict[str, np.ndarray], scalars: Mapping[str, int]) -> None:
        for name, b in self.program.buffers.items():
            a = buffers.get(name)
            if a is None:
                raise KernelIRError(f"no array for buffer {name!r}")
            if a.ndim != 1 or a.dtype != NP_DTYPES[b.storage]:
                raise KernelIRError(f"buffer {name!r} must be a flat {b.storage} array, got "
                                    f"{a.dtype}{list(a.shape)}")
        self.buffers = buffers
        missing = [n for n in self.scalar_dtypes if n not in scalars]
        if missing:
            raise KernelIRError(f"missing scalar arguments {missing}")
        self.scalars = {n: np_scalar(scalars[n], d) for n, d in self.scalar_dtypes.items()}
        with np.errstate(all="ignore"):
            for k in self.program.kernels:
                self._run_kernel(k)

    def _run_kernel(self, k: Kernel) -> None:
        extents = k.grid_extents(self.scalars)
        if any(n <= 0 for n in extents):
            return
        env: dict[str, Value] = dict(self.scalars)
        rank = len(extents)
        for i, (name, n) in enumerate(zip(k.grid_vars, extents)):  # one axis per coordinate
            axis = (1,) * i + (n,) + (1,) * (rank - i - 1)
            env[name] = np.arange(n, dtype=np.int64).reshape(axis)
        self._run_body(k.body, _Frame(env, tuple(extents), set()))

    def _eval(self, e: KExpr, env: Mapping[str, Value]) -> Value:
        return self.plans[id(e)](env, self.buffers)

    def _run_body(self, body: Sequence[Stmt], frame: _Frame) -> None:
        for s, dead in zip(body, self.dead[id(body)]):
            self._run_stmt(s, frame)
            for n in dead:
                frame.env.pop(n, None)

    def _run_stmt(self, s: Stmt, frame: _Frame) -> None:
        env = frame.env
        if isinstance(s, Let):
            env[s.name] = self._eval(s.value, env)
        elif isinstance(s, Decl):
            env[s.name] = self._eval(s.init, env)
            frame.mutable.add(s.name)
        elif isinstance(s, Assign):
            if s.name not in frame.mutable:
                raise KernelIRError(f"assignment to {s.name!r}, not declared in this scope")
            v = self._eval(s.value, env)
            if v.dtype != env[s.name].dtype:
                raise KernelIRError(f"assignment of {v.dtype} to {s.name!r}: {env[s.name].dtype}")
            env[s.name] = v
        elif isinstance(s, Store):
            self._store(s, frame)
        elif isinstance(s, (Loop, Reduce)):
            ext = self._eval(s.extent, env)
            if np.ndim(ext) == 0:
                self._run_uniform(s, frame, max(int(ext), 0))
            else:
                lo, hi = int(ext.min()), int(ext.max())
                if lo == hi or hi <= 0:
                    self._run_uniform(s, frame, max(lo, 0))
                else:
                    self._run_ragged(s, frame, ext)
        else:  # pragma: no cover
            raise KernelIRError(f"unknown statement {s!r}")

    def _store(self, s: Store, frame: _Frame) -> None:
        buf = self.buffers[s.buffer]
        idx = self._eval(s.index, frame.env)
        val = self._eval(s.value, frame.env)
        if not frame.shape:
            _check_index(idx, buf.shape[0], s.buffer)
            buf[idx] = val
            return
        idx = np.broadcast_to(idx, frame.shape)
        _check_index(idx, buf.shape[0], s.buffer)
        buf[idx] = np.broadcast_to(val, frame.shape)

    def _run_uniform(self, s: Loop | Reduce, frame: _Frame, n: int) -> None:
        if isinstance(s, Loop) and s.kind == "serial":
            for it in range(n):
                child = _Frame(dict(frame.env), frame.shape, set(frame.mutable))
                child.env[s.var] = np.int64(it)
                self._run_body(s.body, child)
                for name in frame.mutable:
                    frame.env[name] = child.env[name]
            return
        if n == 0:
            if isinstance(s, Reduce):
                frame.env[s.name] = self._eval(s.init, frame.env)
            return
        rank = len(frame.shape)
        env = {name: _expand(frame.env[name]) for name in self.refs[id(s)] if name in frame.env}
        env[s.var] = np.arange(n, dtype=np.int64).reshape((1,) * rank + (n,))
        child = _Frame(env, frame.shape + (n,), set())
        self._run_body(s.body, child)
        if isinstance(s, Reduce):
            frame.env[s.name] = self._reduce(s, child, n)

    def _reduce(self, s: Reduce, child: _Frame, n: int) -> Value:
        """Fold the values of all ``n`` iterations along the last axis in the stated order."""
        v = self._eval(s.value, child.env)
        lead = v.shape[:-1] if np.ndim(v) else (1,) * (len(child.shape) - 1)
        x = np.broadcast_to(v, lead + (n,))
        if s.leaf is not None:
            x = np.broadcast_to(self._eval(s.leaf, dict(self.scalars, acc_b=x)), lead + (n,))
        if s.order == "seq":
            r = self._fold_seq(s, x)
        else:
            r = self._fold_pairwise(s, x)
        if r.dtype != NP_DTYPES[s.dtype]:  # pragma: no cover - guarded by the static checks
            raise KernelIRError(f"reduce {s.name} produced {r.dtype}")
        return r

    def _combine(self, s: Reduce, a: Value, b: Value) -> Value:
        r = self._eval(s.combine, dict(self.scalars, acc_a=a, acc_b=b))
        return np.broadcast_to(r, np.broadcast_shapes(np.shape(a), np.shape(b)))

    def _fold_seq(self, s: Reduce, x: np.ndarray) -> Value:
        a, b = acc_vars(s.dtype)
        uf = _ACCUMULATE_UFUNCS.get(s.combine.op)
        if uf is not None and s.combine.args == (a, b):
            return uf.accumulate(x, axis=-1, dtype=x.dtype)[..., -1]
        cols = np.moveaxis(x, -1, 0)
        if cols.ndim > 1:
            cols = np.ascontiguousarray(cols)  # each step reads one contiguous slab
        acc = cols[0]
        for i in range(1, cols.shape[0]):
            acc = self._combine(s, acc, cols[i])
        return acc

    def _fold_pairwise(self, s: Reduce, x: np.ndarray) -> Value:
        level = x
        while level.shape[-1] > 1:
            n = level.shape[-1]
            pairs = self._combine(s, level[..., 0:n - 1:2], level[..., 1:n:2])
            level = np.concatenate([pairs, level[..., n - 1:]], axis=-1) if n % 2 else pairs
        return level[..., 0]

    def _run_ragged(self, s: Loop | Reduce, frame: _Frame, ext: np.ndarray) -> None:
        """Run ``s`` once per distinct extent, on the lanes having it gathered to one axis."""
        full = np.broadcast_to(ext, frame.shape)
        if isinstance(s, Reduce):
            written: Iterable[str] = (s.name,)
        else:
            written = tuple(frame.mutable) if s.kind == "serial" else ()
        names = (self.refs[id(s)] | frame.mutable) & frame.env.keys()
        results: dict[str, np.ndarray] = {}
        for n in np.unique(ext):  # ext's own shape: often far smaller than the lanes
            mask = full == n
            env = {name: (np.broadcast_to(v, frame.shape)[mask] if np.ndim(v) else v)
                   for name, v in ((name, frame.env[name]) for name in names)}
            sub = _Frame(env, (int(mask.sum()),), set(frame.mutable))
            self._run_uniform(s, sub, max(int(n), 0))
            for name in written:
                val = sub.env[name]
                dest = results.get(name)
                if dest is None:
                    if name in frame.env:
                        dest = np.array(np.broadcast_to(frame.env[name], frame.shape))
                    else:
                        dest = np.empty(frame.shape, NP_DTYPES[s.dtype])
                    results[name] = dest
                dest[mask] = val
        frame.env.update(results)


# ---------------------------------------------------------------------------------------------
# the backend
class _Launcher:
    def __init__(self, program: KernelProgram):
        self._executor = _Executor(program)

    def __call__(self, buffers: dict[str, np.ndarray], scalars: dict[str, int]) -> None:
        self._executor.run(buffers, scalars)


class KernelInterpreter:
    """The kernel-IR oracle as a backend: ``emit`` dumps the IR, ``build`` runs it with numpy."""

    name = "kernel-interp"
    exact_sum_order = True

    def available(self) -> tuple[bool, str]:
        return True, ""

    def emit(self, program: KernelProgram) -> str:
        return format_program(program)

    def build(self, program: KernelProgram) -> _Launcher:
        return _Launcher(program)


def run_program(program: KernelProgram, buffers: dict[str, np.ndarray],
                scalars: Mapping[str, int] | None = None) -> None:
    """Run ``program`` in place on ``buffers`` (a convenience for tests and debugging)."""
    _Executor(program).run(buffers, dict(scalars or {}))
