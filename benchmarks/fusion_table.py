"""Kernels and bytes moved before/after fusion for every stdlib function (a Markdown table).

    python benchmarks/fusion_table.py [--dim M=4096 ...]

Bytes come from the fusion cost model (passes/fusion.py): every buffer a kernel reads or writes,
once per kernel; "before" is one kernel per non-movement operation.
"""

from __future__ import annotations

import argparse

import numgrade as ng


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", action="append", default=[])
    a = ap.parse_args()
    env = {k: int(v) for k, v in (d.split("=") for d in a.dim)} or {
        s: 4096 for s in ("M", "N", "T", "D", "S", "H", "F")} | {"E": 64, "B": 16, "K": 4096}
    print("| program.function | kernels (before) | bytes after | bytes before | ratio |")
    print("|---|---|---|---|---|")
    for prog in ng.stdlib_names():
        mod = ng.load_stdlib(prog)
        for name in mod.functions:
            plan = mod[name].fusion()
            try:
                bf = float(plan.bytes_fused.evaluate(env))
                bu = float(plan.bytes_unfused.evaluate(env))
                nums = f"{bf:.3g} | {bu:.3g} | {bu / bf:.2f}x" if bf else "0 | 0 | -"
            except KeyError:
                nums = f"{plan.bytes_fused} | {plan.bytes_unfused} | -"
            print(f"| {prog}.{name} | {len(plan.groups)} ({plan.kernels_unfused}) | {nums} |")


if __name__ == "__main__":
    main()
