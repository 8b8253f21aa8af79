"""The reference interpreter: the living definition of numgrade's semantics.

It executes the IR with numpy, carrying every value as a float64 array that holds exact values of
the value's format, and rounds each operation's result to its format with
:func:`numgrade.ir.formats.round_array`. The rules, which every other backend must reproduce:

* ``+ - * / sqrt`` and conversions: the exact real result rounded once to the result format
  (computed in float64 and then rounded: for formats of at most 24 significand bits this double
  rounding is innocuous, since 53 >= 2p + 2; float64 results are numpy's IEEE operations).
* ``exp log tanh sigmoid sin cos exp2 log2 rsqrt``: the float64 libm value (numpy) rounded once
  to the result format. ``rsqrt(x) = 1/sqrt(x)`` and ``sigmoid(x) = 1/(1+exp(-x))`` in float64.
* ``fma(a, b, c)``: the exact ``a*b + c`` rounded once.
* ``min max abs neg floor ceil where``, comparisons, and data movement: exact.
* ``sum``/``mean`` with ``order=any`` or ``pairwise``: a pairwise tree over the reduced elements
  (flattened in row-major order): adjacent pairs ``(0,1), (2,3), ...`` are added and rounded to the
  accumulation format, an odd element out is carried by adding ``-0.0``, level after level.
  ``order=seq``: left to right; ``order=kahan``: Kahan's compensated summation, left to right.
  ``mean`` divides the sum by the element count and rounds once.
* ``matmul``: for each output element, products ``a[i,k]*b[k,j]`` rounded to the accumulation
  format and added left to right over ``k``, each sum rounded (no fused multiply-add); the final
  value is rounded to the result format.
* implicit rounding (arithmetic results) is round-to-nearest-even without saturation: overflow
  gives inf where the format has it, NaN where it has only NaN (e4m3), saturation for e2m1.
* random numbers: the ``k``-th random consumer of a function run with seed ``s`` uses the Philox
  stream keyed by ``stream_key(s, k)`` indexed by the flat element index; a call to a function
  with the ``rand`` effect runs the callee with seed ``stream_key(s, k)``.

The *ideal* mode (:class:`IdealDomain`) evaluates the same program with every rounding removed,
in 160-bit mpmath arithmetic, so ``computed - ideal`` is the rounding error of a run.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Sequence

import mpmath
import numpy as np

from ..errors import GradeError
from ..ir import nodes as N
from ..ir.dims import Dim
from ..ir.formats import Format, get_format, philox_uniform, round_array, stream_key
from ..ir.nodes import Op, Value

DEFAULT_SEED = 0


class ReferenceDomain:
    """Exact-format arithmetic on float64 arrays."""

    name = "reference"

    def lift(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)

    def rnd(self, x: np.ndarray, fmt: Format) -> np.ndarray:
        if fmt.name == "f64":
            return np.asarray(x, dtype=np.float64)
        return round_array(np.asarray(x, dtype=np.float64), fmt)

    def explicit_round(self, x, fmt: Format, mode: str, sat: bool, key: int | None) -> np.ndarray:
        return round_array(np.asarray(x, dtype=np.float64), fmt, mode=mode, sat=sat, key=key)

    def zeros_like_neg(self, shape) -> np.ndarray:
        return np.full(shape, -0.0)

    def const(self, attrs: tuple, shape: tuple[int, ...]) -> np.ndarray:
        return np.array(attrs[0], dtype=np.float64).reshape(shape)

    def unary(self, op: str, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            if op == Op.NEG:
                return -x
            if op == Op.ABS:
                return np.abs(x)
            if op == Op.FLOOR:
                return np.floor(x)
            if op == Op.CEIL:
                return np.ceil(x)
            if op == Op.EXP:
                return np.exp(x)
            if op == Op.LOG:
                return np.log(x)
            if op == Op.SQRT:
                return np.sqrt(x)
            if op == Op.RSQRT:
                return 1.0 / np.sqrt(x)
            if op == Op.TANH:
                return np.tanh(x)
            if op == Op.SIGMOID:
                return 1.0 / (1.0 + np.exp(-x))
            if op == Op.SIN:
                return np.sin(x)
            if op == Op.COS:
                return np.cos(x)
            if op == Op.EXP2:
                return np.exp2(x)
            if op == Op.LOG2:
                return np.log2(x)
            if op == Op.NOT:
                return (x == 0).astype(np.float64)
        raise NotImplementedError(op)

    def binary(self, op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            if op == Op.ADD:
                return a + b
            if op == Op.SUB:
                return a - b
            if op == Op.MUL:
                return a * b
            if op == Op.DIV:
                return a / b
            if op == Op.MOD:
                return np.mod(a, b)
            if op == Op.MIN:
                return np.minimum(a, b)
            if op == Op.MAX:
                return np.maximum(a, b)
            cmp = {Op.LT: np.less, Op.LE: np.less_equal, Op.GT: np.greater,
                   Op.GE: np.greater_equal, Op.EQ: np.equal, Op.NE: np.not_equal}
            if op in cmp:
                return cmp[op](a, b).astype(np.float64)
            if op == Op.AND:
                return ((a != 0) & (b != 0)).astype(np.float64)
            if op == Op.OR:
                return ((a != 0) | (b != 0)).astype(np.float64)
        raise NotImplementedError(op)

    def truthy(self, c: np.ndarray) -> np.ndarray:
        return np.asarray(c) != 0

    def fma(self, a, b, c, fmt: Format) -> np.ndarray:
        """a*b + c rounded once to fmt.

        When a*b is exact in float64 (operands of at most 26 significand bits) and fmt has at
        most 51 bits, the sum is formed exactly as s + e (TwoSum), s is rounded to odd by e,
        and one rounding to fmt follows (round-to-odd makes the double rounding innocuous).
        Otherwise each element is computed with exact rational arithmetic.
        """
        a, b, c = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, c)))
        with np.errstate(all="ignore"):
            p = a * b
            exact_p = np.all(_fits_26_bits(a)) and np.all(_fits_26_bits(b)) and \
                fmt.precision <= 51 and np.all(np.isfinite(p))
            if exact_p:
                s = p + c
                bb = s - p
                e = (p - (s - bb)) + (c - bb)
                bits = s.view(np.int64)
                fix = (e != 0) & np.isfinite(s) & ((bits & 1) == 0)
                s = np.where(fix, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
                return round_array(s, fmt)
        from ..frontend.constfold import round_exact

        out = np.empty(a.shape, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            x, y, z = float(a[idx]), float(b[idx]), float(c[idx])
            fin_xy = np.isfinite(x) and np.isfinite(y)
            if not (fin_xy and np.isfinite(z)) or x == 0 or y == 0:
                # IEEE fusedMultiplyAdd: a zero product adds exactly (signed zeros as in the
                # fast path above); a finite product plus an infinite or NaN c is c
                s = x * y + z if not fin_xy or np.isfinite(z) else z
                out[idx] = round_array(np.array(s), fmt)[()]
                continue
            out[idx] = round_exact(Fraction(x) * Fraction(y) + Fraction(z), fmt)
        return out

    def to_output(self, x: np.ndarray) -> np.ndarray:
        return x


def _fits_26_bits(x: np.ndarray) -> np.ndarray:
    """Whether each value has at most 26 significant bits (so products are exact in f64)."""
    m, _ = np.frexp(np.where(np.isfinite(x), x, 0.0))
    scaled = m * 2.0 ** 26
    return scaled == np.round(scaled)


class IdealDomain(ReferenceDomain):
    """Every rounding removed: 160-bit mpmath values in numpy object arrays."""

    name = "ideal"

    def __init__(self, prec: int = 160):
        self.ctx = mpmath.MPContext()
        self.ctx.prec = prec
        self._mpf = np.frompyfunc(self.ctx.mpf, 1, 1)
        ctx = self.ctx

        def _safe(f):
            def g(*a):
                try:
                    return f(*a)
                except (ZeroDivisionError, ValueError):
                    return ctx.nan
            return g

        def _div(a, b):
            if b == 0:
                if a == 0 or ctx.isnan(a):
                    return ctx.nan
                return ctx.inf if a > 0 else -ctx.inf
            return a / b

        def _log(a):
            if a == 0:
                return -ctx.inf
            return ctx.log(a) if a > 0 else ctx.nan

        def _sqrt(a):
            return ctx.sqrt(a) if a >= 0 else ctx.nan

        def _rsqrt(a):
            return ctx.inf if a == 0 else (1 / ctx.sqrt(a) if a > 0 else ctx.nan)

        def _mod(a, b):
            if b == 0:
                return ctx.nan
            return a - b * ctx.floor(a / b)

        u = lambda f: np.frompyfunc(_safe(f), 1, 1)  # noqa: E731
        b = lambda f: np.frompyfunc(_safe(f), 2, 1)  # noqa: E731
        self._unary = {
            Op.NEG: u(lambda a: -a), Op.ABS: u(abs), Op.FLOOR: u(ctx.floor), Op.CEIL: u(ctx.ceil),
            Op.EXP: u(ctx.exp), Op.LOG: u(_log), Op.SQRT: u(_sqrt), Op.RSQRT: u(_rsqrt),
            Op.TANH: u(ctx.tanh), Op.SIGMOID: u(lambda a: 1 / (1 + ctx.exp(-a))),
            Op.SIN: u(ctx.sin), Op.COS: u(ctx.cos), Op.EXP2: u(lambda a: ctx.power(2, a)),
            Op.LOG2: u(lambda a: _log(a) / ctx.ln2 if a != 0 else -ctx.inf),
        }
        self._binary = {
            Op.ADD: b(lambda x, y: x + y), Op.SUB: b(lambda x, y: x - y),
            Op.MUL: b(lambda x, y: x * y), Op.DIV: b(_div), Op.MOD: b(_mod),
            Op.MIN: b(lambda x, y: x if ctx.isnan(x) else y if ctx.isnan(y) else min(x, y)),
            Op.MAX: b(lambda x, y: x if ctx.isnan(x) else y if ctx.isnan(y) else max(x, y)),
        }

    def lift(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype == object:
            return x
        return np.asarray(self._mpf(np.asarray(x, dtype=np.float64)), dtype=object)

    def rnd(self, x, fmt: Format):
        x = np.asarray(x, dtype=object)
        if fmt.kind == "int":  # integer arithmetic is exact in both worlds
            return x
        return x

    def explicit_round(self, x, fmt, mode, sat, key):
        return np.asarray(x, dtype=object)

    def const(self, attrs: tuple, shape: tuple[int, ...]) -> np.ndarray:
        values, exact = attrs[0], attrs[1] if len(attrs) > 1 else None
        if exact is None:
            return self.lift(np.array(values, dtype=np.float64).reshape(shape))
        ctx = self.ctx
        vals = [ctx.mpf(x.numerator) / x.denominator for x in exact]
        out = np.empty(len(vals), dtype=object)
        out[:] = vals
        return out.reshape(shape)

    def zeros_like_neg(self, shape):
        return self.lift(np.zeros(shape))

    def unary(self, op, x):
        if op == Op.NOT:
            return self.lift((self.truthy(x) == 0).astype(np.float64))
        return np.asarray(self._unary[op](np.asarray(x, dtype=object)), dtype=object)

    def binary(self, op, a, b):
        a = np.asarray(a, dtype=object)
        b = np.asarray(b, dtype=object)
        if op in self._binary:
            return np.asarray(self._binary[op](a, b), dtype=object)
        cmp = {Op.LT: lambda x, y: x < y, Op.LE: lambda x, y: x <= y, Op.GT: lambda x, y: x > y,
               Op.GE: lambda x, y: x >= y, Op.EQ: lambda x, y: x == y, Op.NE: lambda x, y: x != y}
        if op in cmp:
            r = np.frompyfunc(cmp[op], 2, 1)(a, b)
            return self.lift(np.asarray(r, dtype=bool).astype(np.float64))
        if op == Op.AND:
            return self.lift((self.truthy(a) & self.truthy(b)).astype(np.float64))
        if op == Op.OR:
            return self.lift((self.truthy(a) | self.truthy(b)).astype(np.float64))
        raise NotImplementedError(op)

    def fma(self, a, b, c, fmt):
        return self.binary(Op.ADD, self.binary(Op.MUL, a, b), c)

    def truthy(self, c) -> np.ndarray:
        return np.asarray(np.frompyfunc(lambda v: bool(v != 0), 1, 1)(np.asarray(c, dtype=object)),
                          dtype=bool)

    def to_output(self, x):
        return np.asarray(x, dtype=object)


class Interpreter:
    """Evaluates functions of a module in a domain (reference or ideal)."""

    def __init__(self, module: N.Module, domain: ReferenceDomain | None = None):
        self.module = module
        self.domain = domain or ReferenceDomain()

    # binding ------------------------------------------------------------------------------
    def bind(self, fn: N.Function, args: Sequence[np.ndarray]) -> dict[str, int]:
        return bind_arguments(fn, args)

    def run(self, name: str, args: Sequence[Any], seed: int | None = None) -> tuple:
        fn = self.module.functions[name]
        vals = [np.asarray(a, dtype=np.float64) if not isinstance(a, np.ndarray) or a.dtype != object
                else a for a in args]
        env = self.bind(fn, vals)
        inputs = []
        for p, a in zip(fn.params, vals):
            fmt = p.value.fmt
            # inputs are data in their parameter's format, in both domains
            if fmt.name != "f64":
                a = round_array(np.asarray(a, dtype=np.float64), fmt) if fmt.kind != "bool" \
                    else (np.asarray(a) != 0).astype(np.float64)
            inputs.append(self.domain.lift(a))
        return self._run(fn, inputs, env, DEFAULT_SEED if seed is None else int(seed))

    # evaluation ---------------------------------------------------------------------------
    def _run(self, fn: N.Function, inputs: list, env: dict[str, int], seed: int) -> tuple:
        D = self.domain
        memo: dict[int, Any] = {}
        for p, x in zip(fn.params, inputs):
            memo[id(p.value)] = x
        for v in N.toposort(fn.results):
            if id(v) in memo:
                continue
            memo[id(v)] = self._eval(fn, v, [memo[id(s)] for s in v.srcs], env, seed)
        return tuple(D.to_output(memo[id(r)]) for r in fn.results)

    def _shape(self, shape: tuple[Dim, ...], env) -> tuple[int, ...]:
        return tuple(int(d.evaluate(env)) for d in shape)

    def _eval(self, fn: N.Function, v: Value, xs: list, env: dict[str, int], seed: int):
        D = self.domain
        op = v.op
        t = v.type
        if op == Op.CONST:
            return D.const(v.attrs, self._shape(t.shape, env))
        if op == Op.DIM:
            return D.lift(np.array(float(v.attrs[0].evaluate(env))))
        if op in N.UNARY:
            return D.rnd(D.unary(op, xs[0]), t.fmt)
        if op in N.COMPARE or op in N.LOGIC:
            return D.binary(op, xs[0], xs[1])
        if op in N.ARITH:
            return D.rnd(D.binary(op, xs[0], xs[1]), t.fmt)
        if op == Op.FMA:
            return D.fma(xs[0], xs[1], xs[2], t.fmt)
        if op == Op.WHERE:
            c = D.truthy(xs[0])
            return np.where(c, xs[1], xs[2])
        if op == Op.ROUND:
            mode, sat, stream = v.attrs
            key = stream_key(seed, stream) if stream >= 0 else None
            return D.explicit_round(xs[0], t.fmt, mode, sat, key)
        if op in N.REDUCE:
            return self._reduce(v, xs[0])
        if op == Op.MATMUL:
            return self._matmul(v, xs[0], xs[1])
        if op == Op.RESHAPE:
            return np.reshape(xs[0], self._shape(t.shape, env))
        if op == Op.TRANSPOSE:
            return np.transpose(xs[0], v.attrs[0])
        if op == Op.BROADCAST:
            return np.array(np.broadcast_to(xs[0], self._shape(t.shape, env)))
        if op == Op.CONCAT:
            return np.concatenate(xs, axis=v.attrs[0])
        if op == Op.SLICE:
            idx = []
            for it in v.attrs[0]:
                if it[0] == "new":
                    idx.append(None)
                elif it[0] == "i":
                    idx.append(int(it[1].evaluate(env)))
                else:
                    idx.append(slice(int(it[1].evaluate(env)), int(it[2].evaluate(env)), it[3]))
            return np.array(xs[0][tuple(idx)])
        if op == Op.TOPK_MASK:
            k, axis = v.attrs
            x = np.asarray(xs[0])
            if x.dtype == object:
                x = x.astype(np.float64)  # ordering only; the mask itself is exact
            order = np.argsort(-x, axis=axis, kind="stable")
            ranks = np.empty_like(order)
            np.put_along_axis(ranks, order, np.broadcast_to(
                np.arange(x.shape[axis]).reshape([-1 if i == axis % x.ndim else 1
                                                  for i in range(x.ndim)]), x.shape), axis=axis)
            return D.lift((ranks < k).astype(np.float64))
        if op == Op.ARANGE:
            return D.lift(np.arange(self._shape(t.shape, env)[0], dtype=np.float64))
        if op == Op.RAND:
            shape = self._shape(t.shape, env)
            n = int(np.prod(shape)) if shape else 1
            u = philox_uniform(stream_key(seed, v.attrs[0]), np.arange(n, dtype=np.uint64))
            return D.lift(np.asarray(u, dtype=np.float64).reshape(shape))
        if op == Op.CALL:
            name, stream = v.attrs
            callee = self.module.functions[name]
            sub_env = self.bind(callee, [np.empty(np.shape(x), dtype=np.uint8) for x in xs])
            sub_seed = stream_key(seed, stream) if stream >= 0 else seed
            return self._run(callee, list(xs), sub_env, sub_seed)
        if op == Op.PROJ:
            return xs[0][v.attrs[0]]
        raise NotImplementedError(f"reference: {op}")  # pragma: no cover

    def _reduce(self, v: Value, x):
        D = self.domain
        axes, keep, order = v.attrs
        fmt = v.fmt
        x = np.asarray(x)
        rank = x.ndim
        rest = [i for i in range(rank) if i not in axes]
        moved = np.transpose(x, rest + list(axes))
        out_shape = tuple(x.shape[i] for i in rest)
        k = int(np.prod([x.shape[i] for i in axes])) if axes else 1
        flat = moved.reshape(out_shape + (k,))
        if v.op in (Op.RMAX, Op.RMIN):
            if k == 0:
                raise GradeError(f"{'max' if v.op == Op.RMAX else 'min'} of an empty tensor")
            if flat.dtype == object:
                f = (lambda a, b: D.binary(Op.MAX if v.op == Op.RMAX else Op.MIN, a, b))
                r = flat[..., 0]
                for i in range(1, k):
                    r = f(r, flat[..., i])
            else:
                r = np.max(flat, axis=-1) if v.op == Op.RMAX else np.min(flat, axis=-1)
        else:
            r = self._sum(flat, fmt, order, k)
            if v.op == Op.MEAN:
                r = D.rnd(D.binary(Op.DIV, r, D.lift(np.array(float(k)))), fmt)
        if keep:
            r = np.reshape(r, tuple(1 if i in axes else x.shape[i] for i in range(rank)))
        return r

    def _sum(self, flat, fmt: Format, order: str, k: int):
        D = self.domain
        if k == 0:
            return D.lift(np.zeros(flat.shape[:-1]))
        add = lambda a, b: D.rnd(D.binary(Op.ADD, a, b), fmt)  # noqa: E731
        if order in ("seq", "kahan"):
            s = D.rnd(flat[..., 0], fmt)
            if order == "seq":
                for i in range(1, k):
                    s = add(s, flat[..., i])
                return s
            c = D.lift(np.zeros(flat.shape[:-1]))
            sub = lambda a, b: D.rnd(D.binary(Op.SUB, a, b), fmt)  # noqa: E731
            for i in range(1, k):
                y = sub(flat[..., i], c)
                tt = add(s, y)
                c = sub(sub(tt, s), y)
                s = tt
            return s
        level = flat
        while level.shape[-1] > 1:
            if level.shape[-1] % 2:
                pad = D.zeros_like_neg(level.shape[:-1] + (1,))
                level = np.concatenate([level, pad], axis=-1)
            level = add(level[..., 0::2], level[..., 1::2])
        return D.rnd(level[..., 0], fmt)

    def _matmul(self, v: Value, a, b):
        D = self.domain
        acc = get_format(v.attrs[0])
        a, b = np.asarray(a), np.asarray(b)
        va, vb = a.ndim == 1, b.ndim == 1
        if va:
            a = a[None, :]
        if vb:
            b = b[:, None]
        k = a.shape[-1]
        out_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
        s = None
        for i in range(k):
            p = D.rnd(D.binary(Op.MUL, a[..., :, i:i + 1], b[..., i:i + 1, :]), acc)
            s = p if s is None else D.rnd(D.binary(Op.ADD, s, p), acc)
        if s is None:
            s = D.lift(np.zeros(out_shape))
        s = np.broadcast_to(s, out_shape)
        r = D.rnd(s, v.fmt)
        if va:
            r = r[..., 0, :]
        if vb:
            r = r[..., 0]
        return np.array(r)


def bind_arguments(fn: N.Function, args: Sequence[np.ndarray]) -> dict[str, int]:
    """Size symbols from the argument shapes, with the rank, consistency and `requires` checks
    every backend's host side shares."""
    if len(args) != len(fn.params):
        raise GradeError(f"{fn.name}() takes {len(fn.params)} argument(s), got {len(args)}")
    env: dict[str, int] = {}
    for p, a in zip(fn.params, args):
        shape = p.value.shape
        if np.ndim(a) != len(shape):
            raise GradeError(f"argument '{p.name}' of {fn.name}() must have rank {len(shape)} "
                             f"(type {p.value.type}), got shape {tuple(np.shape(a))}")
        for d, n in zip(shape, np.shape(a)):
            syms = d.symbols()
            if len(syms) == 1 and d == Dim.sym(next(iter(syms))):
                s = next(iter(syms))
                if s in env and env[s] != n:
                    raise GradeError(f"dimension {s} of {fn.name}() is {env[s]} from an earlier "
                                     f"argument but {n} in '{p.name}'")
                env[s] = int(n)
    # requirements first: N % 16 == 0 explains a size N/16 better than the size does
    for c in fn.requires:
        if c.holds(env) is False:
            vals = ", ".join(f"{s} = {env[s]}" for s in sorted(c.lhs.symbols() | c.rhs.symbols())
                             if s in env)
            raise GradeError(f"{fn.name}() requires {c.text}, which fails for {vals}", c.span)
    for p, a in zip(fn.params, args):
        for d, n in zip(p.value.shape, np.shape(a)):
            try:
                want = d.evaluate(env)
            except KeyError as ex:  # pragma: no cover - lowering guarantees plain symbols
                raise GradeError(f"dimension {ex.args[0]} cannot be bound") from None
            if want != n:
                raise GradeError(f"argument '{p.name}' of {fn.name}() has size {n} where its "
                                 f"type {p.value.type} needs {d} = {want}")
    return env
