"""Benchmark: parse + check (lower, shape- and effect-check) the whole stdlib.

Target (issue 2): under 1 s for all programs. Reports the cold time (first compile in the
process, including building the LALR tables) and the best warm time of several repeats.

    python benchmarks/parse_check_stdlib.py [--check] [--repeat 5]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from importlib import resources


def compile_all() -> int:
    import numgrade as ng

    n = 0
    for name in ng.stdlib_names():
        text = resources.files("numgrade.stdlib").joinpath(f"{name}.grd").read_text()
        n += len(ng.compile_source(text, f"stdlib/{name}.grd").functions)
    return n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="exit 1 if the warm time is >= 1 s")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    t0 = time.perf_counter()
    import numgrade as ng  # noqa: F401

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    nfun = compile_all()
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        compile_all()
        warm.append(time.perf_counter() - t0)
    best = min(warm)
    import numgrade as ng

    print(f"stdlib: {len(ng.stdlib_names())} programs, {nfun} functions; import {t_import:.3f} s; "
          f"parse+check cold {cold:.3f} s, warm best of {a.repeat} {best:.3f} s "
          f"({platform.processor() or platform.machine()}, Python {platform.python_version()})")
    if a.check and (best >= 1.0 or cold >= 1.0):
        print("FAIL: parse+check of the stdlib must take under 1 s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
