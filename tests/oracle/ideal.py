"""The ideal value of a generated program: our own evaluator over our own trees.

Every rounding is removed: literals and constants keep their exact decimal values, `as fmt` and
`round(...)` are the identity (`as i32` too; `as bool` is the test `x != 0`), sums, means and
matrix products are exact. Values are exact Fractions for as long as the operations are
rational (+ - * / % floor ceil min max, comparisons, integer powers, ...) and 300-bit mpmath
numbers after a transcendental function; an mpmath value is flagged inexact so the driver can
allow for its (2^-290 relative) error when a bound is tight.
"""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np

from .gen import Node, Program

CTX = mpmath.MPContext()
CTX.prec = 300
MPF = type(CTX.mpf(1))
NAN = CTX.nan
INF = CTX.inf
MAX_BITS = 30000


class OracleLimit(Exception):
    """The ideal value is beyond what this evaluator computes reliably (the input is skipped)."""


HUGE = 2**20          # |x| beyond this: exp(x) is past every format (f64 overflows at ~709.8)


def mp(x):
    if isinstance(x, Fraction):
        return CTX.mpf(x.numerator) / x.denominator
    return x


def is_nan(x) -> bool:
    return isinstance(x, MPF) and CTX.isnan(x)


def is_finite(x) -> bool:
    return isinstance(x, Fraction) or CTX.isfinite(x)


def _tame(x):
    if isinstance(x, Fraction) and (x.numerator.bit_length() > MAX_BITS or
                                    x.denominator.bit_length() > MAX_BITS):
        return mp(x)
    return x


def _exactify(x):
    """An mpf that holds an exact finite value stays an mpf (we cannot know it is exact)."""
    return x


def add(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _tame(a + b)
    return mp(a) + mp(b)


def sub(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _tame(a - b)
    return mp(a) - mp(b)


def mul(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _tame(a * b)
    a, b = mp(a), mp(b)
    if (a == 0 and CTX.isinf(b)) or (b == 0 and CTX.isinf(a)):
        return NAN
    return a * b


def div(a, b):
    if b == 0:
        # 0/0 is undefined; x/0 is +-inf with the sign of x, the extended-real convention that
        # numgrade states (an infinity is a value a later min, clamp or tanh can absorb) and
        # that rsqrt(0) = inf and log(0) = -inf follow here too; the zero counts as +0
        if is_nan(a) or a == 0:
            return NAN
        return INF if a > 0 else -INF
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return _tame(a / b)
    a, b = mp(a), mp(b)
    if CTX.isinf(a) and CTX.isinf(b):
        return NAN
    return a / b


def floor(a):
    if isinstance(a, Fraction):
        return Fraction(math.floor(a))
    return CTX.floor(a) if CTX.isfinite(a) else a


def ceil(a):
    if isinstance(a, Fraction):
        return Fraction(math.ceil(a))
    return CTX.ceil(a) if CTX.isfinite(a) else a


def mod(a, b):
    """Floored modulo: a - b * floor(a / b), the result has the sign of the divisor (as in
    Python and numpy's np.mod); x % 0 is NaN."""
    if b == 0 or is_nan(a) or is_nan(b):
        return NAN
    if not is_finite(a):
        return NAN
    if not is_finite(b):
        # a % +inf = a for a >= 0, +inf for a < 0 (IEEE/numpy); mirror for -inf
        if (a >= 0) == (b > 0) or a == 0:
            return a
        return b
    # (an exact Fraction dividend is no help when the divisor is a 300-bit value: campaign seed
    # 1280005380, 2^400 % cos(2.5), took a wrong floor for a violation)
    if not (isinstance(a, Fraction) and isinstance(b, Fraction)) and is_finite(a) and \
            abs(mp(a)) >= abs(mp(b)) * CTX.mpf(2) ** (CTX.prec - 40):
        # the quotient's integer part takes (nearly) all the working precision: its floor,
        # and so the remainder, is not reliable
        raise OracleLimit("x % y with |x / y| beyond the working precision")
    return sub(a, mul(b, floor(div(a, b))))


def _is_square(n: int) -> bool:
    if n < 0:
        return False
    r = math.isqrt(n)
    return r * r == n


def math_fn(fn: str, a):
    if is_nan(a):
        return NAN
    if fn == "sqrt":
        if a < 0:
            return NAN
        if isinstance(a, Fraction) and _is_square(a.numerator) and _is_square(a.denominator):
            return Fraction(math.isqrt(a.numerator), math.isqrt(a.denominator))
        return CTX.sqrt(mp(a))
    if fn == "rsqrt":
        if a < 0:
            return NAN
        if a == 0:
            return INF
        s = math_fn("sqrt", a)
        return div(Fraction(1), s) if isinstance(s, Fraction) else 1 / s
    if fn in ("log", "log2"):
        if a < 0:
            return NAN
        if a == 0:
            return -INF
        if a == 1:
            return Fraction(0)
        if fn == "log2" and isinstance(a, Fraction):
            n, d = a.numerator, a.denominator
            if n & (n - 1) == 0 and d & (d - 1) == 0:
                return Fraction(n.bit_length() - d.bit_length())
        if not is_finite(a):
            return INF
        return CTX.log(mp(a)) if fn == "log" else CTX.log(mp(a), 2)
    if fn == "exp2" and isinstance(a, Fraction) and a.denominator == 1 and abs(a) < 100000:
        return Fraction(2) ** int(a)
    if a == 0:
        return {"exp": Fraction(1), "tanh": Fraction(0), "sigmoid": Fraction(1, 2),
                "sin": Fraction(0), "cos": Fraction(1), "exp2": Fraction(1)}[fn]
    if fn in ("exp", "exp2", "sigmoid", "tanh") and abs(a) > HUGE:
        # far past every format's range: exp(x) is +inf for all purposes of the check, and
        # exp(-x) rounds to 0 in every format; sigmoid/tanh are 0/1/-1 to within e^-(2^20)
        # (such an approximation can only hide an error of that size, never invent one)
        if fn == "sigmoid":
            return Fraction(1) if a > 0 else Fraction(0)
        if fn == "tanh":
            return Fraction(1) if a > 0 else Fraction(-1)
        return INF if a > 0 else Fraction(0)
    if fn in ("sin", "cos") and is_finite(a) and abs(a) > 2**1100:
        raise OracleLimit(f"{fn} of a number beyond 2^1100")
    x = mp(a)
    if fn == "exp":
        return CTX.exp(x)
    if fn == "exp2":
        return CTX.power(2, x)
    if fn == "tanh":
        return CTX.tanh(x)
    if fn == "sigmoid":
        return 1 / (1 + CTX.exp(-x))
    if fn == "sin":
        return CTX.sin(x) if CTX.isfinite(x) else NAN
    if fn == "cos":
        return CTX.cos(x) if CTX.isfinite(x) else NAN
    raise ValueError(fn)


def _pair(a, b):
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a, b
    return mp(a), mp(b)


def vmin(a, b):
    if is_nan(a) or is_nan(b):
        return NAN
    x, y = _pair(a, b)
    return a if x <= y else b


def vmax(a, b):
    if is_nan(a) or is_nan(b):
        return NAN
    x, y = _pair(a, b)
    return a if x >= y else b


def le(a, b) -> bool:
    x, y = _pair(a, b)
    return bool(x <= y)


def cmp(sym: str, a, b):
    if is_nan(a) or is_nan(b):
        return Fraction(int(sym == "!="))
    a, b = _pair(a, b)
    r = {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[sym]
    return Fraction(int(bool(r)))


def truthy(c) -> bool:
    return is_nan(c) or c != 0


def _u(f):
    g = np.frompyfunc(f, 1, 1)
    return lambda x: np.asarray(g(x), dtype=object)


def _b(f):
    g = np.frompyfunc(f, 2, 1)
    return lambda x, y: np.asarray(g(x, y), dtype=object)


BIN = {"+": _b(add), "-": _b(sub), "*": _b(mul), "/": _b(div), "%": _b(mod)}
VMIN, VMAX = _b(vmin), _b(vmax)
NEG = _u(lambda a: -a)
ABS = _u(abs)
FLOOR, CEIL = _u(floor), _u(ceil)
TOBOOL = _u(lambda a: Fraction(int(truthy(a))))


def obj(x) -> np.ndarray:
    a = np.empty(np.shape(x), dtype=object)
    a[...] = x
    return a


def _index(text: str):
    out = []
    for part in text.split(","):
        part = part.strip()
        if ":" in part:
            lo, hi = part.split(":")
            out.append(slice(int(lo) if lo else None, int(hi) if hi else None))
        elif part == "None":
            out.append(None)
        else:
            out.append(int(part))
    return tuple(out)


class Evaluator:
    """Evaluate a Program on one input assignment; ``memo`` keeps every node's value."""

    def __init__(self, prog: Program, inputs: dict[str, np.ndarray], dims: dict[str, int]):
        self.prog = prog
        self.inputs = inputs
        self.dims = dims
        self.memo: dict[int, np.ndarray] = {}

    def outputs(self) -> list[np.ndarray]:
        return [self.ev(o) for o in self.prog.outputs]

    def ev(self, e: Node) -> np.ndarray:
        k = id(e)
        if k not in self.memo:
            self.memo[k] = self._ev(e)
        return self.memo[k]

    def _ev(self, e: Node) -> np.ndarray:
        op, A = e.op, e.attrs
        if op == "param":
            return self.inputs[A["name"]]
        if op == "var":
            return self.ev(e.args[0])
        if op == "const":
            return obj(A["value"])
        if op == "lit":
            return obj(Fraction(A["text"]))
        if op == "size":
            return obj(Fraction(self.dims[A["name"]]))
        xs = [self.ev(a) for a in e.args]
        if op == "bin":
            return BIN[A["sym"]](xs[0], xs[1])
        if op == "cmp":
            s = A["sym"]
            return _b(lambda a, b: cmp(s, a, b))(xs[0], xs[1])
        if op == "neg":
            return NEG(xs[0])
        if op == "abs":
            return ABS(xs[0])
        if op == "floor":
            return FLOOR(xs[0])
        if op == "ceil":
            return CEIL(xs[0])
        if op == "math":
            fn = A["fn"]
            return _u(lambda a: math_fn(fn, a))(xs[0])
        if op == "pow":
            n = A["n"]

            def pw(a):
                r = Fraction(1)
                for _ in range(n):
                    r = mul(r, a)
                return r
            return _u(pw)(xs[0])
        if op == "fma":
            return BIN["+"](BIN["*"](xs[0], xs[1]), xs[2])
        if op == "min2":
            return VMIN(xs[0], xs[1])
        if op == "max2":
            return VMAX(xs[0], xs[1])
        if op == "not":
            return _u(lambda a: Fraction(int(not truthy(a))))(xs[0])
        if op == "where":
            c, a, b = np.broadcast_arrays(xs[0], xs[1], xs[2])
            out = np.empty(c.shape, dtype=object)
            for i in np.ndindex(c.shape):
                out[i] = a[i] if truthy(c[i]) else b[i]
            return out
        if op == "round":
            if A["fmt"] == "bool":
                return TOBOOL(xs[0])
            return xs[0]                       # every rounding removed (i32 included)
        if op == "reduce":
            return self.reduce(e, xs[0])
        if op == "matmul":
            return self.matmul(xs[0], xs[1])
        if op == "transpose":
            return obj(np.transpose(xs[0]))
        if op == "index":
            return obj(xs[0][_index(A["text"])])
        if op == "blocks":
            n = xs[0].shape[0]
            return obj(np.reshape(xs[0], (n // A["b"], A["b"])))
        if op == "flatten":
            return obj(np.reshape(xs[0], (-1,)))
        raise ValueError(op)

    def reduce(self, e: Node, x: np.ndarray) -> np.ndarray:
        A = e.attrs
        fn, axis, keep = A["fn"], A.get("axis"), A.get("keepdims", False)
        if axis is None:
            axes = tuple(range(x.ndim))
        else:
            axes = (axis % x.ndim,)
        rest = [i for i in range(x.ndim) if i not in axes]
        moved = np.transpose(x, rest + list(axes))
        oshape = tuple(x.shape[i] for i in rest)
        k = int(np.prod([x.shape[i] for i in axes])) if axes else 1
        flat = moved.reshape(oshape + (k,))
        out = np.empty(oshape, dtype=object)
        for idx in np.ndindex(oshape):
            vals = list(flat[idx])
            if fn in ("sum", "mean"):
                s = Fraction(0)
                for v in vals:
                    s = add(s, v)
                if fn == "mean":
                    s = div(s, Fraction(k))
            else:
                s = vals[0]
                for v in vals[1:]:
                    s = vmax(s, v) if fn == "max" else vmin(s, v)
            out[idx] = s
        if keep:
            out = out.reshape(tuple(1 if i in axes else x.shape[i] for i in range(x.ndim)))
        return out

    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        va, vb = a.ndim == 1, b.ndim == 1
        A2 = a[None, :] if va else a
        B2 = b[:, None] if vb else b
        m, k = A2.shape
        k2, n = B2.shape
        assert k == k2
        out = np.empty((m, n), dtype=object)
        for i in range(m):
            for j in range(n):
                s = Fraction(0)
                for t in range(k):
                    s = add(s, mul(A2[i, t], B2[t, j]))
                out[i, j] = s
        if va:
            out = out[0]
        if vb:
            out = out[..., 0]
        return obj(out)


def evaluate(prog: Program, inputs: dict[str, np.ndarray], dims: dict[str, int]):
    ev = Evaluator(prog, inputs, dims)
    return ev.outputs(), ev
