"""Proving that a store index pairs consecutive elements along a loop variable.

Packing two e2m1 codes per byte (``packing.py``) unrolls the loop that stores them by two and
writes one byte at ``f(2h) / 2``. That is right only if, for every ``h``, ``f(2h)`` is even and
``f(2h + 1) = f(2h) + 1``. This is an abstract interpretation of the i64 index expression over
a small domain: does it depend on the loop variable, and with what parity. Its rules are the
facts used: ``i`` with coefficient one plus an even invariant steps; ``x % d`` and ``x // d``
with ``d`` even do not wrap between ``2h`` and ``2h + 1``; sizes are even when the caller says so
(the packed axis, which the host checks, and ``requires N % k == 0`` facts). Whatever it cannot
prove is reported as not pairable.
"""

from __future__ import annotations

from typing import Callable, Mapping

from .ir import KExpr

# kinds of the pairing analysis: INV does not depend on the loop variable (with a parity, 0, 1
# or None for unknown); STEP is e(2i) even and e(2i+1) == e(2i) + 1
INV0, INV1, INVU, STEP = ("inv", 0), ("inv", 1), ("inv", None), ("step", 0)


class Pairing:
    """Proves that a store index pairs consecutive elements along a loop variable ``i``.

    ``lets`` resolves Let-bound names (kernel names are unique); names in ``inner`` (accumulators
    declared or assigned, reduction results and loop variables inside the loop) and loads may
    depend on ``i`` in unknown ways; ``even`` says which size variables are known to be even.
    """

    def __init__(self, ivar: str, lets: Mapping[str, KExpr], inner: set[str],
                 even: Callable[[str], bool]):
        self.ivar, self.lets, self.inner, self.even = ivar, lets, inner, even
        self.memo: dict[KExpr, tuple | None] = {}

    def of(self, e: KExpr) -> tuple | None:
        hit = self.memo.get(e, False)
        if hit is not False:
            return hit
        r = self._of(e)
        self.memo[e] = r
        return r

    def _of(self, e: KExpr) -> tuple | None:
        op = e.op
        if op == "const":
            v = e.attrs[0]
            return ("inv", int(v) % 2) if isinstance(v, int) and not isinstance(v, bool) \
                else INVU
        if op == "var":
            name = e.attrs[0]
            if name == self.ivar:
                return STEP
            if name in self.inner:
                return None
            if name in self.lets:
                return self.of(self.lets[name])
            return INV0 if self.even(name) else INVU
        if op == "load":  # memory may change between iterations: never proven invariant
            return None
        args = [self.of(a) for a in e.args]
        if any(a is None for a in args):
            return None
        steps = [a[0] == "step" for a in args]
        if not any(steps):
            return self._inv(op, e, args)
        if op == "add" and len(args) == 2:
            other = args[1] if steps[0] else args[0]
            return STEP if not all(steps) and other == INV0 else None
        if op == "sub":
            return STEP if steps[0] and args[1] == INV0 else None
        if op == "mul":
            other = e.args[1] if steps[0] else e.args[0]
            ok = not all(steps) and other.op == "const" and other.attrs[0] == 1
            return STEP if ok else None
        if op == "mod":  # x % d with x(2i) even and d even: no wrap between 2i and 2i+1
            return STEP if steps[0] and args[1] == INV0 else None
        if op == "div":  # ... and the quotient is the same for both
            return INVU if steps[0] and args[1] == INV0 else None
        if op == "cast" and e.dtype in ("i64", "i32") and e.args[0].dtype in ("i64", "i32"):
            return STEP
        if op == "select" and not steps[0] and steps[1] and steps[2]:
            return STEP
        return None

    @staticmethod
    def _inv(op: str, e: KExpr, args: list[tuple]) -> tuple:
        p = [a[1] for a in args]
        if op in ("add", "sub") and None not in p:
            return ("inv", (p[0] + p[1]) % 2)
        if op == "mul":
            if 0 in p:
                return INV0
            return INV1 if p == [1, 1] else INVU
        if op == "mod" and p[1] == 0 and p[0] is not None:
            return ("inv", p[0])
        if op == "cast" and e.dtype in ("i64", "i32") and e.args[0].dtype in ("i64", "i32"):
            return args[0]
        if op == "select" and p[1] == p[2]:
            return ("inv", p[1])
        return INVU
