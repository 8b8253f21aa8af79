"""numgrade's own single-precision ``exp``, written in kernel-IR arithmetic so that a CPU
compiler can vectorise it (a call to libm's ``expf`` stays one scalar call per element).

    exp(x) = 2^k * p(r),   k = rint(x log2 e),   r = (x - k L1) - k L2,   L1 + L2 ~ ln 2

* ``x`` is first clamped to [-104, 89] (exp(-104) < 2^-150 rounds to 0, exp(89) > FLT_MAX
  overflows; a NaN becomes -104 so that no NaN reaches the integer conversion, and is put
  back at the end), so k is in [-150, 128].
* ``L1 = 0x3F317200`` has 15 significant bits, so ``k L1`` is exact for |k| <= 2^8, and
  ``x - k L1`` is exact (Sterbenz); ``L2 = f32(ln 2 - L1)`` carries the rest.
* ``p(r) = 1 + r (1 + r (1/2 + r (1/6 + ... + r / 7!)))``: the degree-7 Taylor polynomial
  (truncation below 6e-9 relative for |r| <= 0.35) in Horner form, f32 coefficients.
* ``2^k`` is applied as two exact powers of two, ``2^k1 * 2^k2`` with k1 = floor(k / 2), so
  neither overflows and the result rounds once, also into the subnormal range.

Every f32 input was checked against float64 ``exp``: the largest error is 0.863 of the model's
unit (``|y - exp(x)| / (2u exp(x) + 2 eta)``, u = 2^-24, eta = 2^-150), within the 2 ulp
(``k = 4``) the rounding model assumes for ``exp`` (``benchmarks/exp_f32_exhaustive.py``; a
strided sample in ``tests/test_fast_contract.py``). No multiply-add may be contracted (the
TVM target disables FMA), so the result is the same on every CPU.
"""

from __future__ import annotations

import math

from .ir import KExpr, const, select, unary

F32 = "f32"
LOG2E = 1.4426950408889634
LN2_HI = 0.693145751953125                      # 0x3F317200
LN2_LO = float(__import__("numpy").float32(0.6931471805599453 - LN2_HI))
TAYLOR = [1.0 / math.factorial(n) for n in range(8)]


def _c(v: float) -> KExpr:
    return const(v, F32)


def _pow2(k: KExpr) -> KExpr:
    """2^k for an integer-valued f32 k in [-126, 127], by building its exponent field."""
    e = (k.cast("i32") + 127) << 23
    return e.bitcast(F32)


def exp_f32(x: KExpr) -> KExpr:
    """exp(x) for an f32 x, as arithmetic on f32 and i32 (see the module docstring)."""
    assert x.dtype == F32
    xc = select(x.gt(_c(-104.0)), x, _c(-104.0))        # NaN -> -104
    xc = select(xc.lt(_c(89.0)), xc, _c(89.0))
    k = unary("rint", xc * _c(LOG2E))
    r = (xc - k * _c(LN2_HI)) - k * _c(LN2_LO)
    q = _c(TAYLOR[7])
    for n in (6, 5, 4, 3, 2):
        q = q * r + _c(TAYLOR[n])
    q = q * r + _c(1.0)
    p = _c(1.0) + r * q
    k1 = unary("floor", k * _c(0.5))
    y = (p * _pow2(k1)) * _pow2(k - k1)
    return select(x.ne(x), x, y)


def expand_exp_f32(kernel):
    """The kernel with every f32 ``exp`` written out by :func:`exp_f32` (for CPU targets)."""
    import dataclasses

    from .schedule import rewrite_stmts
    body = rewrite_stmts(kernel.body, lambda e: exp_f32(e.args[0])
                         if e.op == "exp" and e.dtype == F32 else None)
    return kernel if body == kernel.body else dataclasses.replace(kernel, body=body)
