"""Snapshot every bound numgrade reports on the stdlib and the FPBench suite, and compare two
snapshots (which bounds got looser, tighter, became null or finite).

Used to check that a change to the analysis loosens no bound it did not have to (run the
snapshot on the old and the new tree, then compare)::

    python benchmarks/bound_snapshot.py snap --out new.json
    python benchmarks/bound_snapshot.py compare old.json new.json
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
import warnings


def snapshot(fpbench_dir: str) -> dict[str, list]:
    import numgrade as ng
    import numgrade.stdlib as stdlib_pkg
    from numgrade.harness import default_dims

    out: dict[str, list] = {}
    progs = sorted(os.path.basename(p)[:-4] for p in
                   glob.glob(os.path.join(os.path.dirname(stdlib_pkg.__file__), "*.grd")))
    for prog in progs:
        mod = ng.load(f"stdlib:{prog}")
        for name in mod.functions:
            f = mod[name]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rep = f.analyze(**default_dims(f))
            out[f"stdlib:{prog}:{name}"] = [(o.abs_error, o.rel_error) for o in rep.outputs]
            print(f"stdlib:{prog}:{name}", out[f"stdlib:{prog}:{name}"], flush=True)
    return out


def snapshot_fpcore(fpbench_dir: str) -> dict[str, list]:
    import subprocess

    out: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(fpbench_dir, "*.fpcore"))):
        r = subprocess.run([sys.executable, "-m", "numgrade.cli", "fpcore", path, "--format",
                            "json"], capture_output=True, text=True)
        try:
            items = json.loads(r.stdout)
        except json.JSONDecodeError:
            print("fpcore failed:", path, r.stderr[-500:], file=sys.stderr)
            continue
        for k, item in enumerate(items):
            key = f"fpbench:{os.path.basename(path)}:{k}:{item.get('function')}"
            out[key] = [(o.get("abs_error"), o.get("rel_error")) for o in item["outputs"]]
            print(key, out[key], flush=True)
    return out


def compare(old: dict, new: dict, tol: float = 1e-9) -> int:
    looser, tighter, lost, gained = [], [], [], []
    for key in sorted(old):
        if key not in new:
            continue
        for i, (o, n) in enumerate(zip(old[key], new[key])):
            for kind, a, b in (("abs", o[0], n[0]), ("rel", o[1], n[1])):
                if a is None and b is None:
                    continue
                if b is None:
                    lost.append((key, i, kind, a))
                elif a is None:
                    gained.append((key, i, kind, b))
                elif b > a * (1 + tol):
                    looser.append((key, i, kind, a, b, b / a if a else math.inf))
                elif b < a * (1 - tol):
                    tighter.append((key, i, kind, a, b))
    print(f"compared {len(set(old) & set(new))} functions: {len(looser)} looser, "
          f"{len(tighter)} tighter, {len(lost)} now null, {len(gained)} now finite")
    for x in looser:
        print("LOOSER ", *x)
    for x in lost:
        print("NULL   ", *x)
    for x in gained:
        print("FINITE ", *x)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snap")
    s.add_argument("--out", required=True)
    s.add_argument("--fpbench", default=os.path.join(os.path.dirname(__file__), "..", "..",
                                                      "shared", "fpbench"))
    s.add_argument("--only", choices=["stdlib", "fpbench"], default=None)
    c = sub.add_parser("compare")
    c.add_argument("old")
    c.add_argument("new")
    a = ap.parse_args()
    if a.cmd == "snap":
        res = {}
        if a.only in (None, "stdlib"):
            res.update(snapshot(a.fpbench))
        if a.only in (None, "fpbench"):
            res.update(snapshot_fpcore(a.fpbench))
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=0)
        return 0
    with open(a.old) as fh:
        old = json.load(fh)
    with open(a.new) as fh:
        new = json.load(fh)
    return compare(old, new)


if __name__ == "__main__":
    sys.exit(main())
