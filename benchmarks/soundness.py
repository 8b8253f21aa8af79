"""The soundness harness at scale: every stdlib function and supported FPBench benchmark.

For each program the harness (numgrade.harness.check) samples inputs in the declared ranges
(uniform, corners and edges, a search toward large errors), measures |computed - ideal| exactly
and compares it with the reported abs_error / rel_error / range. The work is split into chunks
(each a harness run with its own seed) spread over worker processes; progress goes to stderr,
a Markdown table (program, function, output, samples, bound, worst measured, worst ratio,
violations) to stdout, followed by every violation with a reproducer.

    python benchmarks/soundness.py                          # ~10^6 samples, 2 processes
    python benchmarks/soundness.py --samples-per-program 2000 --tensor-samples 100
    python benchmarks/soundness.py --time-limit 600 --state /tmp/sound.pkl   # resumable
    python benchmarks/soundness.py --write                  # also append to BENCHMARKS.md
    python benchmarks/soundness.py --no-fpbench --usefulness   # bound / worst per output

Bounded by --samples-per-program (scalar programs, batch-evaluated), --tensor-samples (programs
with tensors or random numbers, one call per sample), --per-program-time and --time-limit.
With --state FILE, finished chunks are saved after each one and a rerun skips them.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import pickle
import platform
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FPBENCH_FILES = ("rosa.fpcore", "fptaylor-real2float.fpcore", "fptaylor-extra.fpcore",
                 "fptaylor-tests.fpcore", "daisy.fpcore")


# ---------------------------------------------------------------------------------------------
# programs
def list_programs(args) -> list[tuple[str, str, str]]:
    """(kind, source, function): kind 'stdlib' (source = module name) or 'fpcore' (a path)."""
    import numgrade as ng

    out = []
    if not args.no_stdlib:
        for name in ng.stdlib_names():
            for f in ng.load_stdlib(name).functions:
                out.append(("stdlib", name, f))
    if not args.no_fpbench:
        from numgrade.frontend.fpcore import load_benchmarks

        root = Path(args.fpbench_dir)
        for file in FPBENCH_FILES:
            p = root / file
            if not p.exists():
                print(f"note: {p} missing, skipped", file=sys.stderr)
                continue
            for b, m, _ in load_benchmarks(p):
                if m is not None:
                    out.append(("fpcore", str(p), b.ident))
    if args.only:
        rx = re.compile(args.only)
        out = [t for t in out if rx.search(label(t))]
    return out


def label(task) -> str:
    kind, source, fn = task[:3]
    return f"{source}.{fn}" if kind == "stdlib" else f"{Path(source).stem}.{fn}"


_CACHE: dict = {}


def load_function(kind: str, source: str, fn: str):
    key = (kind, source, fn)
    if key not in _CACHE:
        import numgrade as ng

        if kind == "stdlib":
            f = ng.load_stdlib(source)[fn]
        else:
            from numgrade.frontend.fpcore import load_benchmarks

            f = next(m for b, m, _ in load_benchmarks(source) if b.ident == fn)[fn]
        _CACHE[key] = f
    return _CACHE[key]


_REPORTS: dict = {}


# ---------------------------------------------------------------------------------------------
# one chunk (runs in a worker)
def run_chunk(job):
    import warnings

    warnings.simplefilter("ignore")
    from numgrade.harness import check, default_dims

    (kind, source, fn_name, chunk, n_chunks, n, seed, size, time_limit) = job
    t0 = time.perf_counter()
    try:
        fn = load_function(kind, source, fn_name)
        dims = default_dims(fn, base=size)
        key = (kind, source, fn_name, size)
        if key not in _REPORTS:
            _REPORTS[key] = fn.analyze(**dims)
        rep = _REPORTS[key]
        # chunk 0 also takes the corners; random samples and search share the rest
        corners = chunk == 0
        n_rand = max(1, (2 * n) // 3)
        n_search = max(1, n - n_rand)
        checks = check(fn, dims, n_samples=n_rand, seed=seed, search=True, corners=corners,
                       max_corners=min(500, max(16, n // 4)), search_samples=n_search,
                       time_limit=time_limit, report=rep,
                       program=source if kind == "stdlib" else Path(source).stem,
                       batch_size=512)
        return job, checks, None, time.perf_counter() - t0
    except Exception as ex:  # noqa: BLE001 - reported in the table, the run goes on
        return job, None, f"{type(ex).__name__}: {ex}", time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------
def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def _looseness(bound, worst) -> float | None:
    """bound / worst measured (inf where the worst measured is 0 under a positive bound)."""
    if bound is None or worst is None or not math.isfinite(bound):
        return None
    if worst == 0:
        return 1.0 if bound == 0 else math.inf
    return bound / worst


def usefulness_table(checks) -> str:
    """Issue 12's measure: for every output with a finite bound, how many times the worst
    error found the bound is (abs and rel; the tighter of the two decides), loosest first."""
    rows = []
    for c in checks:
        la = _looseness(c.abs_bound, c.max_abs if c.samples else None)
        lr = _looseness(c.rel_bound, c.max_rel)
        both = [x for x in (la, lr) if x is not None]
        if both:
            rows.append((min(both), c, la, lr))
    rows.sort(key=lambda r: -r[0])

    def f(x):
        return "-" if x is None else "inf" if math.isinf(x) else f"{x:.3g}"
    out = ["| program | function | out | abs bound | worst abs | bound / worst (abs) | "
           "rel bound | worst rel | bound / worst (rel) | within 10x |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for best, c, la, lr in rows:
        out.append(f"| {c.program} | {c.function} | {c.output} | {f(c.abs_bound)} | "
                   f"{f(c.max_abs)} | {f(la)} | {f(c.rel_bound)} | {f(c.max_rel)} | {f(lr)} | "
                   f"{'yes' if best <= 10 else 'no'} |")
    n10 = sum(1 for r in rows if r[0] <= 10)
    out += ["", f"{n10} of {len(rows)} outputs with a finite bound are within 10x of the worst "
                "error found; outputs without a finite bound are not listed."]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples-per-program", type=int, default=12500,
                    help="samples per scalar (batch-evaluated) program (default 12500)")
    ap.add_argument("--tensor-samples", type=int, default=None,
                    help="samples per tensor or random program (default samples/25)")
    ap.add_argument("--chunk", type=int, default=2500, help="samples per chunk (scalar programs)")
    ap.add_argument("--tensor-chunk", type=int, default=100, help="samples per tensor chunk")
    ap.add_argument("--size", type=int, default=8, help="base value of symbolic sizes")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=None, help="seconds for the whole run")
    ap.add_argument("--per-program-time", type=float, default=None,
                    help="seconds of sampling per program")
    ap.add_argument("--only", default=None, help="regex over 'module.function' / 'file.bench'")
    ap.add_argument("--no-stdlib", action="store_true")
    ap.add_argument("--no-fpbench", action="store_true")
    ap.add_argument("--fpbench-dir", default=str(REPO.parent / "shared" / "fpbench"))
    ap.add_argument("--state", default=None, help="pickle of finished chunks (resumable runs)")
    ap.add_argument("--write", action="store_true", help="append the table to BENCHMARKS.md")
    ap.add_argument("--usefulness", action="store_true",
                    help="also print bound / worst measured per output, loosest first")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args(argv)

    from numgrade.harness import batchable, markdown_table, merge

    t_start = time.perf_counter()
    programs = list_programs(args)
    tensor_n = args.tensor_samples if args.tensor_samples is not None else \
        max(20, args.samples_per_program // 25)
    jobs = []
    for t in programs:
        fn = load_function(*t)
        if batchable(fn):
            total, chunk = args.samples_per_program, args.chunk
        else:
            total, chunk = tensor_n, args.tensor_chunk
        n_chunks = max(1, math.ceil(total / chunk))
        per = math.ceil(total / n_chunks)
        for k in range(n_chunks):
            tl = None if args.per_program_time is None else args.per_program_time / n_chunks
            jobs.append((t[0], t[1], t[2], k, n_chunks, per,
                         args.seed * 100_003 + k * 7919 + 1, args.size, tl))
    # big programs first would starve progress; interleave chunks by index instead
    jobs.sort(key=lambda j: (j[3], j[0] != "stdlib"))

    done: dict = {}
    if args.state and Path(args.state).exists():
        with open(args.state, "rb") as fh:
            done = pickle.load(fh)
        print(f"resuming: {len(done)} chunk(s) already done", file=sys.stderr)
    todo = [j for j in jobs if j not in done]
    print(f"{len(programs)} programs, {len(jobs)} chunks ({len(todo)} to run), "
          f"{args.processes} processes", file=sys.stderr)

    def remaining() -> float | None:
        if args.time_limit is None:
            return None
        return args.time_limit - (time.perf_counter() - t_start)

    samples_so_far = sum(c[0][0].samples for c in done.values() if c[0])
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    pool = ctx.Pool(args.processes)
    pending = []
    it = iter(todo)
    n_done = 0
    stopped = False
    try:
        while True:
            while len(pending) < 2 * args.processes and not stopped:
                j = next(it, None)
                if j is None:
                    break
                rem = remaining()
                if rem is not None and rem <= 1:
                    stopped = True
                    break
                if rem is not None:
                    tl = rem if j[8] is None else min(j[8], rem)
                    j2 = j[:8] + (tl,)
                else:
                    j2 = j
                pending.append((j, pool.apply_async(run_chunk, (j2,))))
            if not pending:
                break
            ready = [p for p in pending if p[1].ready()]
            if not ready:
                time.sleep(0.05)
                continue
            for p in ready:
                pending.remove(p)
                j, (_, checks, err, secs) = p[0], p[1].get()
                done[j] = (checks, err) if checks is not None else (None, err)
                n_done += 1
                if checks:
                    samples_so_far += checks[0].samples
                    ratios = [c.ratio for c in checks if c.ratio is not None]
                    nv = sum(c.n_violations for c in checks)
                    msg = (f"{checks[0].samples} samples, worst ratio "
                           f"{max(ratios) if ratios else float('nan'):.3g}, {nv} violation(s)")
                else:
                    msg = f"ERROR {err}"
                print(f"[{n_done}/{len(todo)}] {label(j)} chunk {j[3] + 1}/{j[4]}: {msg} "
                      f"({secs:.1f}s; {samples_so_far} samples in all, "
                      f"{time.perf_counter() - t_start:.0f}s elapsed)", file=sys.stderr, flush=True)
                if args.state:
                    tmp = args.state + ".tmp"
                    with open(tmp, "wb") as fh:
                        pickle.dump(done, fh)
                    os.replace(tmp, args.state)
    finally:
        pool.terminate()

    # merge chunks per (program, function, output)
    merged: dict = {}
    errors: list[str] = []
    order: list = []
    for j in jobs:
        if j not in done:
            continue
        checks, err = done[j]
        if checks is None:
            errors.append(f"{label(j)} chunk {j[3] + 1}: {err}")
            continue
        for c in checks:
            key = (j[0], j[1], j[2], c.output)
            if key not in merged:
                merged[key] = c
                order.append(key)
            else:
                merged[key] = merge(merged[key], c)
    rows = [merged[k] for k in order]
    checked = [c for c in rows if not c.skipped]
    skipped = len(rows) - len(checked)
    total_samples = sum(c.samples for c in rows if c.output == 0)
    ratios = [c.ratio for c in checked if c.ratio is not None]
    nviol = sum(c.n_violations for c in rows)
    elapsed = time.perf_counter() - t_start
    cmd = "python benchmarks/soundness.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    lines = [markdown_table(checked), "",
             f"{len(checked)} outputs checked ({skipped} without any bound skipped), "
             f"{total_samples} samples in all, {elapsed:.0f} s; worst ratio "
             f"{max(ratios) if ratios else float('nan'):.4g}; violations: {nviol}"
             + (" (run stopped by --time-limit)" if stopped or len(done) < len(jobs) else "")]
    if args.usefulness:
        lines += ["", usefulness_table(checked)]
    if errors:
        lines += ["", "Errors:"] + [f"- {e}" for e in errors]
    bad = [c for c in rows if c.n_violations]
    if bad:
        lines += ["", "Violations (per output: the count by kind, up to 3 examples, one reproducer):"]
        for c in bad:
            counts = ", ".join(f"{k}: {n}" for k, n in sorted(c.violation_counts.items()) if n)
            lines += ["", f"### {c.program}.{c.function} output {c.output} ({counts})", ""]
            seen = set()
            examples = []
            for v in c.violations:
                key = (v.kind, v.measured)
                if key not in seen:
                    seen.add(key)
                    examples.append(v)
            examples.sort(key=lambda v: -(v.measured if isinstance(v.measured, float) and
                                          not math.isnan(v.measured) else math.inf))
            lines += [f"- {v.describe()}" for v in examples[:3]]
            lines += ["", "```python", examples[0].reproducer(), "```"]
    text = "\n".join(lines)
    print(text)
    if args.write:
        head = (f"\n## Soundness harness ({datetime.now(timezone.utc):%Y-%m-%d})\n\n"
                f"Command: `{cmd.strip()}`  \nMachine: {machine()}\n\n")
        with open(args.out, "a", encoding="utf-8") as fh:
            fh.write(head + text + "\n")
        print(f"appended to {args.out}", file=sys.stderr)
    return 1 if nviol else 0


if __name__ == "__main__":
    sys.exit(main())
