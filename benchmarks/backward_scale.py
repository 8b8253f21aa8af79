"""Scale of the Bean-style backward-error and NumFuzz-style relative-precision analyses.

Prints the analysis time (and the grades) for the large instances of Bean's and NumFuzz's
benchmarks (ANCHORS.md sections 2 and 3): tensor programs use closed forms for reductions
and products, so their cost does not grow with the size; unrolled scalar programs are linear
in their number of operations. Parsing and lowering are timed separately.

    .venv/bin/python benchmarks/backward_scale.py
"""

from __future__ import annotations

import time

import numgrade as ng
from numgrade.passes.backward import backward_analysis
from numgrade.passes.numfuzz import U64, numfuzz_grade

R = "in [0.1, 1000]"

TENSOR = f"""
fn sum_seq(x: f64[N] {R}) -> f64 {{ return sum(x, order=seq) }}
fn sum_any(x: f64[N] {R}) -> f64 {{ return sum(x) }}
fn dot(x: f64[N] {R}, y: f64[N] {R}) -> f64 {{ return sum(x * y, order=seq) }}
fn matvec(A: f64[M, N] {R}, x: f64[N] {R}) -> f64[M] {{ return A @ x }}
fn mm(A: f64[M, N] {R}, B: f64[N, M] {R}) -> f64[M, M] {{ return A @ B }}
"""


def unrolled_sum(n: int) -> str:
    lines = [f"fn s(x: f64[{n}] {R}) -> f64 {{", "    let s = x[0]"]
    lines += [f"    let s = s + x[{i}]" for i in range(1, n)]
    return "\n".join(lines + ["    return s", "}", ""])


X = "in [0.5, 2]"   # keeps x^500 and x^-500 finite


def horner(n: int) -> str:
    lines = [f"fn h(a: f64[{n + 1}] {R}, x: f64 {X}) -> f64 {{", f"    let z = a[{n}]"]
    for k in range(n - 1, -1, -1):
        lines.append(f"    let z = z * x + a[{k}]")
    lines.append("    return z\n}\n")
    return "\n".join(lines)


def polyval(n: int) -> str:
    lines = [f"fn p(a: f64[{n + 1}] {R}, x: f64 {X}) -> f64 {{", "    let x1 = x"]
    for k in range(2, n + 1):
        lines.append(f"    let x{k} = x{k - 1} * x")
    lines.append("    let s = a[0]")
    lines += [f"    let s = s + a[{k}] * x{k}" for k in range(1, n + 1)]
    lines.append("    return s")
    lines.append("}\n")
    return "\n".join(lines)


def timed(f, *a, **k):
    t = time.perf_counter()
    r = f(*a, **k)
    return r, time.perf_counter() - t


def row(what: str, res, secs: float, extra: str = "") -> None:
    grades = {k: (None if v is None else round(v, 3)) for k, v in res.units.items()}
    print(f"  {what:34s} {secs * 1000:9.2f} ms   units of u: {grades}  {extra}"
          + (f"  [{res.reason}]" if res.reason else ""))


def main() -> None:
    mod = ng.compile_source(TENSOR, "scale.grd")
    print("Bean-style backward error (units of u = 2^-53)")
    for n in (1000, 10_000, 100_000):
        r, s = timed(backward_analysis, mod.ir, mod.ir.functions["sum_seq"], {"N": n})
        row(f"Sum {n} (tensor, order=seq)", r, s)
    r, s = timed(backward_analysis, mod.ir, mod.ir.functions["sum_any"], {"N": 10_000})
    row("Sum 10000 (tensor, any order)", r, s)
    for n in (1000, 10_000):
        r, s = timed(backward_analysis, mod.ir, mod.ir.functions["dot"], {"N": n}, discrete=["y"])
        row(f"DotProd {n} (y discrete, as Bean)", r, s)
    r, s = timed(backward_analysis, mod.ir, mod.ir.functions["dot"], {"N": 10_000})
    row("DotProd 10000 (both perturbed)", r, s)
    for n in (50, 1000):
        r, s = timed(backward_analysis, mod.ir, mod.ir.functions["matvec"], {"M": n, "N": n})
        row(f"MatVecMul {n}", r, s)
    for n in (1000, 10_000):
        t = time.perf_counter()
        m2 = ng.compile_source(unrolled_sum(n), "unrolled.grd")
        tp = time.perf_counter() - t
        r, s = timed(backward_analysis, m2.ir, m2.ir.functions["s"])
        row(f"Sum {n} (unrolled scalars)", r, s, f"(parse+lower {tp:.2f} s)")
    for n in (100, 500):
        m3 = ng.compile_source(horner(n), "horner.grd")
        r, s = timed(backward_analysis, m3.ir, m3.ir.functions["h"])
        row(f"Horner {n} (unrolled)", r, s)
        m4 = ng.compile_source(polyval(n), "polyval.grd")
        r, s = timed(backward_analysis, m4.ir, m4.ir.functions["p"])
        row(f"PolyVal {n} (unrolled)", r, s)

    print("\nNumFuzz-style relative precision (round toward +inf, u = 2^-52)")
    for name, dims, label in (("sum_seq", {"N": 1024}, "serial_sum 1024"),
                              ("mm", {"M": 64, "N": 64}, "mat_mul_64"),
                              ("mm", {"M": 128, "N": 128}, "mat_mul_128"),
                              ("sum_seq", {"N": 10_000}, "serial_sum 10000")):
        r, s = timed(numfuzz_grade, mod.ir, mod.ir.functions[name], dims)
        print(f"  {label:34s} {s * 1000:9.2f} ms   q = {r.grade:.3e} ({r.grade / U64:g} u)")
    m5 = ng.compile_source(horner(100).replace("z * x + a[", "fma(z, x, a[")
                           .replace("]\n", "])\n").replace(f"a[{100}])", f"a[{100}]"),
                           "horner_fma.grd")
    r, s = timed(numfuzz_grade, m5.ir, m5.ir.functions["h"])
    print(f"  {'Horner100 (fma)':34s} {s * 1000:9.2f} ms   q = {r.grade:.3e} ({r.grade / U64:g} u)")


if __name__ == "__main__":
    main()
