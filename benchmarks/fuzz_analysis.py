"""Differential fuzzing of numgrade's error analysis against an independent oracle.

Random well-typed Grade programs (tests/oracle/gen.py) are compiled with ng.compile_source and
analysed with f.analyze(**dims); each gets a few adversarial inputs (range ends, one ulp inside,
zero, random uniform / log-uniform, bisection onto floor/ceil/%/where/conversion flips); the
computed value (reference backend) is compared with our own exact/300-bit ideal evaluator and
the reported abs_error / rel_error / range. Prints programs/second, the worst measured/bound
ratio, the count of violations and, for each violating program, its source and the input.

    python benchmarks/fuzz_analysis.py --programs 2000 --seed 1 --jobs 2 --out results.json
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing as mp
import os
import signal
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))


def _signature(prog) -> str:
    """The operations of a (shrunk) program, as a class label."""
    from oracle.shrink import _walk

    ops = set()
    for n in _walk([e for _, _, e in prog.lets] + prog.outputs):
        a = n.attrs
        if n.op in ("param", "var", "lit", "index", "blocks", "flatten", "transpose"):
            if n.op == "index":
                ops.add("slice")
            continue
        if n.op == "const":
            ops.add("const:" + next(c[1] for c in prog.consts if c[0] == a["name"]))
        elif n.op == "bin":
            ops.add(a["sym"] + ":" + str(n.fmt))
        elif n.op == "math":
            ops.add(a["fn"] + ":" + str(n.fmt))
        elif n.op == "round":
            ops.add("round:" + a["fmt"] + ("" if a.get("sat") is None else ":sat=" + str(a["sat"])))
        elif n.op == "reduce":
            ops.add(a["fn"] + ":" + (a.get("acc") or str(n.fmt)))
        elif n.op == "matmul":
            ops.add("matmul:" + (a.get("acc") or str(n.fmt)))
        elif n.op == "cmp":
            ops.add("cmp")
        else:
            ops.add(n.op + ":" + str(n.fmt))
    for name, ann, _ in prog.lets:
        if ann:
            ops.add("let:" + ann)
    return " ".join(sorted(ops))


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _work(args):
    seed, depth, n_base, n_disc, do_shrink, limit = args
    from oracle.check import run_program
    from oracle.gen import generate

    if limit:
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(limit)
    try:
        prog = generate(seed, depth)
        r = run_program(prog, seed=seed, n_base=n_base, n_disc=n_disc)
        d = r.to_dict()
        if r.violations and do_shrink:
            from oracle.check import check
            from oracle.shrink import shrink

            if limit:
                signal.alarm(limit)
            try:
                v = r.violations[0]
                small, pt = shrink(prog, v.raw, v.kind, v.output)
                rs = check(small, pt, n_base=0, n_disc=0)
                vs = [w for w in rs.violations if w.kind == v.kind] or rs.violations
                if vs:
                    w = vs[0]
                    d["shrunk"] = {"source": small.source(), "dims": small.dims,
                                   **w.to_dict(), "signature": v.kind + " | " + _signature(small)}
            except _Timeout:
                pass
        return d
    except _Timeout:
        import traceback

        return {"seed": seed, "source": generate(seed, depth).source(), "dims": {},
                "status": "timeout", "message": traceback.format_exc()[-1200:],
                "violations": [], "bounds": [], "null_bounds": 0, "worst_ratio": 0.0,
                "n_inputs": 0, "seconds": float(limit)}
    except Exception as ex:  # noqa: BLE001 - the oracle must not silently drop a program
        import traceback
        from oracle.gen import generate

        try:
            src = generate(seed, depth).source()
        except Exception:  # noqa: BLE001
            src = "<generator failed>"
        return {"seed": seed, "source": src, "dims": {}, "status": "oracle-error",
                "message": traceback.format_exc()[-1500:], "violations": [], "bounds": [],
                "null_bounds": 0, "worst_ratio": 0.0, "n_inputs": 0, "seconds": 0.0}
    finally:
        if limit:
            signal.alarm(0)


def tags(src: str) -> list[str]:
    """Coarse features of a program, to group violations."""
    t = []
    for key, pat in [("where", "where("), ("floor/ceil", "floor("), ("floor/ceil", "ceil("),
                     ("mod", " % "), ("as-i32", "as i32"), ("as-bool", "as bool"),
                     ("round", "round("), ("matmul", "@"), ("matmul", "matmul("),
                     ("sum", "sum("), ("mean", "mean("), ("slice", ")[0"),
                     ("slice", ")[1"), ("blocks", "reshape("), ("const", "const "),
                     ("exp/sigmoid", "exp("), ("exp/sigmoid", "sigmoid("), ("let-ann", "let v0:"),
                     ("let-ann", "let v1:"), ("let-ann", "let v2:"), ("cmp", " > "),
                     ("cmp", " < "), ("cmp", " >= "), ("cmp", " <= "), ("cmp", " == "),
                     ("cmp", " != ")]:
        if pat in src and key not in t:
            t.append(key)
    return t


def _progress(results, t0):
    n = len(results)
    if n % 250 == 0:
        v = sum(r["status"] == "violation" for r in results)
        print(f"  [{n} programs, {time.perf_counter() - t0:.0f} s, {v} violating]",
              file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--inputs", type=int, default=8, help="base inputs per program")
    ap.add_argument("--disc", type=int, default=3, help="discontinuity bisections per program")
    ap.add_argument("--out", default=None)
    ap.add_argument("--no-shrink", action="store_true", help="do not minimise violations")
    ap.add_argument("--timeout", type=int, default=30, help="seconds per program (0: none)")
    ap.add_argument("--show", type=int, default=20, help="violating programs to print")
    a = ap.parse_args(argv)

    base = a.seed * 10_000_000
    tasks = [(base + i, a.depth, a.inputs, a.disc, not a.no_shrink, a.timeout)
             for i in range(a.programs)]
    t0 = time.perf_counter()
    results = []
    if a.jobs > 1:
        with mp.get_context("fork").Pool(a.jobs) as pool:
            for r in pool.imap_unordered(_work, tasks, chunksize=2):
                results.append(r)
                _progress(results, t0)
    else:
        for t in tasks:
            results.append(_work(t))
            _progress(results, t0)
    wall = time.perf_counter() - t0
    results.sort(key=lambda r: r["seed"])

    status = collections.Counter(r["status"] for r in results)
    checked = [r for r in results if r["status"] in ("ok", "violation")]
    viol = [r for r in results if r["status"] == "violation"]
    kinds = collections.Counter(v["kind"] for r in viol for v in r["violations"])
    n_out = sum(len(r["bounds"]) for r in checked)
    n_null = sum(r["null_bounds"] for r in checked)
    finite = [r["worst_ratio"] for r in checked if r["status"] == "ok"]
    worst_ok = max(finite, default=0.0)
    ratios = sorted(r["worst_ratio"] for r in checked if math.isfinite(r["worst_ratio"]))
    median = ratios[len(ratios) // 2] if ratios else 0.0
    n_inputs = sum(r["n_inputs"] for r in checked)

    print(f"programs: {len(results)} in {wall:.1f} s = {len(results) / wall:.1f} programs/s "
          f"({a.jobs} jobs); inputs checked: {n_inputs}")
    print(f"status: {dict(status)}")
    print(f"outputs: {n_out}, null abs bounds: {n_null}")
    print(f"worst measured/bound ratio among sound programs: {worst_ok:.6g}; median over "
          f"checked programs: {median:.3g}")
    print(f"violating programs: {len(viol)}; violations by kind: {dict(kinds)}")
    for r in viol[:a.show]:
        v = r["violations"][0]
        print(f"\n--- seed {r['seed']} dims {r['dims']} [{', '.join(tags(r['source']))}] "
              f"({len(r['violations'])} violations)")
        print(r["source"].rstrip())
        print(f"  {v['kind']} output {v['output']}{v['element']}: computed {v['computed']} "
              f"ideal {v['ideal']} |err| {v['measured']} bound {v['bound']}")
        print(f"  input: {v['inputs']}")
    classes: dict[str, list] = {}
    for r in viol:
        if "shrunk" in r:
            classes.setdefault(r["shrunk"]["signature"], []).append(r)
    if classes:
        print(f"\n=== {len(classes)} distinct violation signatures (kind | operations of the "
              f"shrunk program), one minimal reproducer each")
    for sig, rs in sorted(classes.items(), key=lambda kv: -len(kv[1])):
        sh = min((r["shrunk"] for r in rs), key=lambda x: len(x["source"]))
        print(f"\n# {sig}   ({len(rs)} programs)")
        print(sh["source"].rstrip() + (f"   # dims {sh['dims']}" if sh["dims"] else ""))
        print(f"  input {sh['inputs']}: computed {sh['computed']} ideal {sh['ideal']} "
              f"|err| {sh['measured']} bound {sh['bound']} ({sh['kind']})")
    for r in results:
        if r["status"] in ("oracle-error", "analysis-crash", "run-crash", "timeout"):
            print(f"\n--- seed {r['seed']}: {r['status']}\n{r['source']}\n{r['message']}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"programs": len(results), "seconds": wall, "jobs": a.jobs,
                       "status": dict(status), "violation_kinds": dict(kinds),
                       "worst_ratio_sound": worst_ok, "null_bounds": n_null, "outputs": n_out,
                       "results": [r for r in results if r["status"] != "ok"],
                       "ratios": {str(r["seed"]): r["worst_ratio"] for r in checked}},
                      fh, indent=1, default=str)
    return 1 if viol else 0


if __name__ == "__main__":
    sys.exit(main())
