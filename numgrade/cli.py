"""The `numgrade` command line (SPEC section 5).

Exit status: 0 success; 1 an error in the user's program or input, printed as
``FILE:LINE:COL: error: message`` with the source line and a caret; 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from . import api
from .errors import GradeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors exit 2 with a one-line reason
        self.print_usage(sys.stderr)
        print(f"numgrade: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _build() -> argparse.ArgumentParser:
    p = _Parser(prog="numgrade", description="Graded analysis and kernels for numeric programs.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    c = sub.add_parser("check", help="parse, type-, shape- and effect-check a program")
    c.add_argument("file", help="a .grd file or stdlib:NAME")
    r = sub.add_parser("run", help="run a function on the reference backend")
    r.add_argument("file")
    r.add_argument("fn")
    r.add_argument("--input", action="append", default=[], metavar="NAME=PATH.npy")
    r.add_argument("--random", type=int, metavar="SEED", default=None,
                   help="fill inputs not given with uniform values in their declared range "
                        "(default [-1, 1]) and use SEED for the rand effect")
    r.add_argument("--dim", action="append", default=[], metavar="N=1024",
                   help="sizes for randomly generated inputs (default 16)")
    r.add_argument("--out", metavar="OUT.npz")
    r.add_argument("--backend", default="reference")
    r.add_argument("--exact", action="store_true",
                   help="kernel backends: the exact contract (bit-identical to the reference)")
    i = sub.add_parser("ir", help="print the IR")
    i.add_argument("file")
    i.add_argument("fn", nargs="?")
    i.add_argument("--kernels", action="store_true",
                   help="print the fused kernel program instead (kernels, bytes moved)")
    em = sub.add_parser("emit", help="generate kernel source for a backend")
    em.add_argument("file")
    em.add_argument("fn")
    em.add_argument("--backend", required=True, choices=["triton", "tvm", "cuda"])
    em.add_argument("--out", metavar="DIR", help="write the source into DIR (default: stdout)")
    em.add_argument("--packed-e2m1", action="store_true",
                    help="store e2m1 results two codes per byte (low nibble first)")
    em.add_argument("--scale-layout", default="rowmajor", choices=["rowmajor", "swizzled_128x4"],
                    help="layout of block-scale results (swizzled_128x4: cuBLAS's tiled layout)")
    em.add_argument("--exact", action="store_true",
                    help="the exact contract: bit-identical to the reference interpreter "
                         "(default: the fast contract, within analyze(target=...)'s bound)")
    sub.add_parser("stdlib", help="list the stdlib programs")
    ex = sub.add_parser("export", help="write a function (and its callees) as Grade source "
                                       "with every format explicit")
    ex.add_argument("file", help="a .grd file, a .ir file or stdlib:NAME")
    ex.add_argument("fn")
    ex.add_argument("--out", metavar="PATH", help="write the source here instead of stdout")
    an = sub.add_parser("analyze", help="sound ranges and error bounds of a function (or all)")
    an.add_argument("file", help="a .grd file or stdlib:NAME")
    an.add_argument("fn", nargs="?", help="the function (default: every function of FILE)")
    an.add_argument("--dim", action="append", default=[], metavar="N=1024",
                    help="bind a size symbol for the analysis")
    an.add_argument("--target", default=None, choices=("cpu", "sm_90", "sm_100", "reference"),
                    help="the execution the bound is for (default: every target; the report "
                         "names the model)")
    _report_args(an)
    tu = sub.add_parser("tune", help="the cheapest per-operation formats whose sound bound "
                                     "meets an error budget")
    tu.add_argument("file", help="a .grd file or stdlib:NAME")
    tu.add_argument("fn")
    tu.add_argument("--budget", required=True, metavar="abs:X|rel:X",
                    help="error budget for every output (absolute or relative)")
    tu.add_argument("--target", default="sm_90", choices=("cpu", "sm_90", "sm_100"),
                    help="cost model (default sm_90)")
    tu.add_argument("--dim", action="append", default=[], metavar="N=1024",
                    help="bind a size symbol (tuning needs every size)")
    tu.add_argument("--out", metavar="TUNED.grd", help="write the tuned program here")
    tu.add_argument("--format", choices=("text", "json", "html"), default="text")
    tu.add_argument("--report", metavar="PATH", help="write the report here instead of stdout")
    tu.add_argument("--formats", metavar="F,F,...",
                    help="formats the search may use (default f64,f32,f16,bf16,e5m2,e4m3)")
    tu.add_argument("--pin-outputs", action="store_true",
                    help="keep the declared formats of the outputs")
    tu.add_argument("--ignore-pins", action="store_true",
                    help="also tune values whose format a `let name: type` annotation fixes")
    tu.add_argument("--pareto", type=int, default=6, metavar="N",
                    help="html: budgets in the Pareto sweep (default 6; 0: none)")
    fp = sub.add_parser("fpcore", help="analyse the benchmarks of an FPBench .fpcore file")
    fp.add_argument("file", help="a .fpcore file")
    fp.add_argument("--name", help="only the benchmark with this :name")
    _report_args(fp)
    return p


def _dims(items: list[str]) -> dict[str, int]:
    out = {}
    for it in items:
        name, _, val = it.partition("=")
        if not name.isidentifier() or not val.lstrip("-").isdigit() or int(val) < 0:
            raise SystemExit(_usage(f"bad --dim '{it}', expected NAME=INTEGER"))
        out[name] = int(val)
    return out


def _usage(msg: str) -> int:
    print(f"numgrade: error: {msg}", file=sys.stderr)
    return 2


def _random_inputs(fn: api.Function, given: dict[str, np.ndarray], seed: int,
                   dims: dict[str, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed % (1 << 128))  # numpy takes non-negative seeds only
    env = dict(dims)
    for p in fn.ir.params:  # sizes from given inputs first
        if p.name in given:
            for d, n in zip(p.value.shape, given[p.name].shape):
                syms = d.symbols()
                if len(syms) == 1 and str(d) == next(iter(syms)):
                    env.setdefault(next(iter(syms)), int(n))
    for s in fn.ir.dims:
        env.setdefault(s, _default_size(fn, s))
    out = []
    for p in fn.ir.params:
        if p.name in given:
            out.append(given[p.name])
            continue
        shape = tuple(int(d.evaluate(env)) for d in p.value.shape)
        lo, hi = p.range if p.range else (-1.0, 1.0)
        if p.value.fmt.kind == "bool":
            out.append(rng.random(shape) < 0.5)
        else:
            out.append(rng.uniform(lo, hi, size=shape))
    return out


def _default_size(fn: api.Function, sym: str) -> int:
    m = fn.ir.moduli().get(sym, 1)
    return max(16, m) if 16 % m == 0 else m * ((16 + m - 1) // m)


def _load_inputs(items: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for it in items:
        name, sep, path = it.partition("=")
        if not sep or not name.isidentifier():
            raise GradeError(f"bad --input '{it}', expected NAME=PATH.npy")
        try:
            out[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as ex:
            raise GradeError(f"{path}: cannot load input '{name}': {ex}") from None
        if not isinstance(out[name], np.ndarray):  # an .npz archive
            raise GradeError(f"{path}: input '{name}' must be a .npy array file, not an archive")
    return out


def _savable(x) -> np.ndarray:
    """An array .npz keeps: ml_dtypes formats (which np.save writes as raw bytes) become
    float32 holding the exact values, as for torch results without the format."""
    arr = np.asarray(x)
    return arr.astype(np.float32) if arr.dtype.kind == "V" else arr


def _cmd_run(a) -> int:
    dims = _dims(a.dim)  # usage mistakes first
    mod = api.load(a.file)
    fn = mod[a.fn]
    given = _load_inputs(a.input)
    unknown = set(given) - {p.name for p in fn.ir.params}
    if unknown:
        raise GradeError(f"{a.fn}() has no parameter {', '.join(sorted(unknown))}")
    missing = [p.name for p in fn.ir.params if p.name not in given]
    if missing and a.random is None:
        raise GradeError(f"missing input(s) {', '.join(missing)}: give --input NAME=PATH.npy "
                         "or --random SEED")
    try:
        args = _random_inputs(fn, given, a.random or 0, dims)
    except (ValueError, MemoryError, OverflowError) as ex:
        raise GradeError(f"cannot make random inputs for {a.fn}(): {ex}") from None
    res = fn.compile(a.backend, exact=a.exact)(*args, seed=a.random)
    outs = res if fn.ir.result_is_tuple else (res,)
    if a.out:
        arrays = {f"out{i}": _savable(o) for i, o in enumerate(outs)}
        arrays.update({f"in_{p.name}": np.asarray(x) for p, x in zip(fn.ir.params, args)})
        try:
            np.savez(a.out, **arrays)
        except OSError as ex:
            raise GradeError(f"{a.out}: cannot write: {ex}") from None
    for i, (o, t) in enumerate(zip(outs, fn.ir.result_types)):
        arr = np.asarray(o).astype(np.float64)
        body = np.array2string(arr, threshold=20, edgeitems=3, precision=6)
        print(f"out{i}: {t} shape={tuple(arr.shape)}\n{body}")
    if a.out:
        print(f"wrote {a.out}")
    return 0


# ---------------------------------------------------------------------------------------------
# analyze / fpcore: reports in text, JSON (SPEC section 6), Markdown or one HTML page

_FORMATS = ("text", "json", "md", "html")


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=_FORMATS, default="text")
    p.add_argument("--out", metavar="PATH", help="write the report here instead of stdout")
    p.add_argument("--tier", choices=("auto", "scalar", "tensor"), default="auto",
                   help="scalar: precise tier for scalar code; tensor: compositional rules")
    p.add_argument("--samples", type=int, default=64, metavar="N",
                   help="html: random inputs measured per function (0: none; default 64)")
    p.add_argument("--seed", type=int, default=0, help="html: seed of the random inputs")
    p.add_argument("--measure-time", type=float, default=5.0, metavar="SECONDS",
                   help="html: time budget for measuring one function (default 5)")


def _safe_analyze(fn: api.Function, tier: str, dims: dict[str, int], target: str | None = None):
    """fn.analyze(); an internal failure becomes null bounds with the reason (GradeErrors,
    the user's mistakes, propagate)."""
    import warnings

    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn.analyze(tier=tier, target=target, **dims)
    except GradeError:
        raise
    except RecursionError:
        return _null_report(fn.ir, "the program is nested too deeply for the analysis")
    except Exception as ex:  # noqa: BLE001 - never a traceback: a null bound with the reason
        msg = str(ex).strip().splitlines()
        return _null_report(fn.ir, f"internal error in the analysis ({type(ex).__name__}: "
                                   f"{msg[0][:200] if msg else ''})")


def _null_report(fn_ir, reason: str):
    from .report import OutputReport, Report

    outs = [OutputReport(i, v.fmt.name, [d.int_value() if d.int_value() is not None else str(d)
                                         for d in v.shape], None, None, None, reason)
            for i, v in enumerate(fn_ir.results)]
    return Report(fn_ir.name, outs, sorted(fn_ir.effects),
                  {"sensitivity": {p.name: None for p in fn_ir.params},
                   "requires": [c.text for c in fn_ir.requires], "target": []},
                  None, 0.0, fn_ir.signature(),
                  source_file=fn_ir.span.file if fn_ir.span else None)


def _measure_for_html(fn: api.Function, rep, a, dims: dict[str, int]):
    """Measured errors for the HTML plots, with the bounds at the measured sizes."""
    import warnings

    from . import render

    if a.samples <= 0:
        return None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        m = render.measure(fn, a.samples, dims, a.seed, time_budget=a.measure_time)
        bound_dims = {k: v for k, v in (rep.dims or {}).items()}
        if m.dims != bound_dims:
            try:
                again = fn.analyze(tier=a.tier, **m.dims)
                m.bounds = [o.abs_error for o in again.outputs]
                m.bound_reasons = [o.reason for o in again.outputs]
                m.bounds_note = ("the plotted bounds are re-derived for the measured sizes "
                                 + ", ".join(f"{k}={v}" for k, v in m.dims.items()))
            except Exception as ex:  # noqa: BLE001
                m.bounds = [None] * len(fn.ir.results)
                m.bounds_note = f"no bound at the measured sizes: {str(ex).splitlines()[0]}"
    return m


def _emit(text: str, out: str | None) -> None:
    if not out:
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text, encoding="utf-8")
    except OSError as ex:
        raise GradeError(f"{out}: cannot write: {ex}") from None
    print(f"wrote {out}", file=sys.stderr)


def _render(a, reports, sources, measurements, fpcore: bool = False) -> str:
    import json

    from . import render

    if a.format == "json":
        objs = [r.to_dict() for r in reports]
        one = len(objs) == 1 and not fpcore
        return json.dumps(objs[0] if one else objs, indent=2, allow_nan=False) + "\n"
    if a.format == "md":
        return render.render_markdown(reports)
    if a.format == "html":
        title = f"numgrade {'fpcore' if fpcore else 'analyze'}: {a.file}"
        return render.render_html(reports, sources, measurements, title=title)
    return render.render_fpcore_text(reports) if fpcore else render.render_text(reports)


def _cmd_analyze(a) -> int:
    from . import render

    dims = _dims(a.dim)
    if a.samples < 0 or a.measure_time < 0:
        return _usage("--samples and --measure-time must not be negative")
    mod = api.load(a.file)
    fns = [mod[a.fn]] if a.fn else [mod[n] for n in mod.functions]
    if not fns:
        raise GradeError(f"{a.file}: no function to analyse")
    if not a.fn:
        known = set().union(*(f.ir.dims for f in fns))
        unknown = sorted(set(dims) - known)
        if unknown:
            raise GradeError(f"no function of {a.file} has a size {', '.join(unknown)} "
                             f"(sizes: {', '.join(sorted(known)) or 'none'})")
    reports, sources, measurements = [], [], []
    text = mod.ir.source
    starts = [f.ir.span.line for f in fns if f.ir.span is not None]
    if a.fn:  # the neighbours bound the excerpt even when only one function is shown
        starts = [mod[n].ir.span.line for n in mod.functions if mod[n].ir.span is not None]
    for f in fns:
        fd = dims if a.fn else {k: v for k, v in dims.items() if k in f.ir.dims}
        rep = _safe_analyze(f, a.tier, fd, getattr(a, "target", None))
        reports.append(rep)
        if a.format == "html":
            sources.append(render.function_source(f.ir, text, rep.source_file, starts)
                           if text else None)
            measurements.append(_measure_for_html(f, rep, a, fd))
    _emit(_render(a, reports, sources, measurements), a.out)
    return 0


def _cmd_fpcore(a) -> int:
    from . import render
    from .frontend.fpcore import Unsupported, load_benchmarks, precision_format
    from .report import OutputReport, Report

    if a.samples < 0 or a.measure_time < 0:
        return _usage("--samples and --measure-time must not be negative")
    loaded = load_benchmarks(a.file)
    if a.name is not None:
        loaded = [x for x in loaded if a.name in (x.bench.name, x.bench.ident,
                                                   x.bench.fpcore_name)]
        if not loaded:
            names = [x.bench.name for x in load_benchmarks(a.file)]
            more = ", ..." if len(names) > 20 else ""
            raise GradeError(f"{a.file}: no benchmark named '{a.name}' (it has: "
                             f"{', '.join(names[:20]) or 'none'}{more})")
    reports, sources, measurements = [], [], []
    for bench, mod, reason in loaded:
        fn = None
        if mod is None:
            try:
                fmt = precision_format(bench.precision).name
            except (Unsupported, GradeError):
                fmt = bench.precision_name
            rep = Report(bench.name, [OutputReport(0, fmt, [], None, None, None, reason)], [],
                         {"sensitivity": {n: None for n in bench.arg_names}, "requires": [],
                          "target": []}, None, 0.0, source_file=bench.file)
            rep.extra["unsupported"] = True
        else:
            fn = mod[bench.ident]
            try:
                rep = _safe_analyze(fn, a.tier, {})
            except GradeError as ex:  # a benchmark-level failure: null bounds with the reason
                rep = _null_report(fn.ir, ex.message)
            rep.function = bench.name
        rep.notes = list(bench.pre_notes) + list(bench.notes) + list(rep.notes)
        reports.append(rep)
        if a.format == "html":
            lines = bench.text.splitlines() or [""]
            sources.append(render.SourceView(bench.file, bench.span.line, "\n".join(lines)))
            measurements.append(_measure_for_html(fn, rep, a, {}) if fn is not None else None)
    _emit(_render(a, reports, sources, measurements, fpcore=True), a.out)
    return 0


def _kernels_text(mod, names) -> str:
    from .kernels.ir import format_program

    parts = []
    for n in names:
        f = mod[n]
        plan = f.fusion()
        parts.append(f"# {n}: {plan.summary()}")
        try:
            parts.append(format_program(f.kernels()))
        except GradeError as ex:
            parts.append(f"# not lowered to kernels: {ex.message}")
    return "\n".join(parts)


def _cmd_emit(a) -> int:
    from pathlib import Path

    mod = api.load(a.file)
    src = mod[a.fn].emit(a.backend, packed_e2m1=a.packed_e2m1, scale_layout=a.scale_layout,
                         exact=a.exact)
    if a.out is None:
        print(src)
        return 0
    ext = {"triton": "py", "tvm": "py", "cuda": "cu"}[a.backend]
    out = Path(a.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{a.fn}.{a.backend}.{ext}"
        path.write_text(src, encoding="utf-8")
    except OSError as ex:
        raise GradeError(f"cannot write {a.out}: {ex.strerror or ex}") from None
    print(path)
    return 0


def _cmd_tune(a) -> int:
    import json

    from . import render_tune
    from .api_tune import tuned_source
    from .passes.tune import DEFAULT_FORMATS, Budget, TuneOptions, TuneSession, \
        default_pareto_budgets

    dims = _dims(a.dim)
    if a.pareto < 0:
        return _usage("--pareto must not be negative")
    budget = Budget.parse(a.budget)
    formats = tuple(f.strip() for f in a.formats.split(",") if f.strip()) if a.formats \
        else DEFAULT_FORMATS
    mod = api.load(a.file)
    f = mod[a.fn]
    opts = TuneOptions(target=a.target, formats=formats, respect_pins=not a.ignore_pins,
                       pin_outputs=a.pin_outputs)
    session = TuneSession(mod.ir, f.ir, dims, opts, budget.kind)
    res = session.tune(budget)
    text = tuned_source(res) if res.status == "ok" else None
    if text is not None:
        api.compile_source(text, name=a.out or "<tuned>")   # the written file must be valid
        if a.out:
            try:
                Path(a.out).write_text(text, encoding="utf-8")
            except OSError as ex:
                raise GradeError(f"{a.out}: cannot write: {ex.strerror or ex}") from None
            print(f"wrote {a.out}", file=sys.stderr)
    if a.format == "json":
        out = json.dumps(res.to_json(), indent=2, allow_nan=False) + "\n"
    elif a.format == "html":
        budgets = default_pareto_budgets(session, a.pareto) if a.pareto else []
        sweep = session.pareto(budgets) if budgets else []
        out = render_tune.render_tune_html(res, sweep + ([res] if res.status == "ok" else []),
                                           text)
    else:
        out = render_tune.render_tune_text(res)
    _emit(out, a.report)
    if res.status != "ok":
        print(f"numgrade: error: {res.function}(): {res.message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build().parse_args(argv)
    try:
        if args.cmd == "check":
            mod = api.load(args.file)
            for w in mod.warnings:
                print(w.render(api_sources()), file=sys.stderr)
            for name in mod.functions:
                print(f"ok  {mod[name].signature()}")
            return 0
        if args.cmd == "run":
            return _cmd_run(args)
        if args.cmd == "ir":
            mod = api.load(args.file)
            if args.kernels:
                print(_kernels_text(mod, [args.fn] if args.fn else mod.functions))
                return 0
            print(mod[args.fn].ir_text() if args.fn else mod.ir_text(), end="\n")
            return 0
        if args.cmd == "emit":
            return _cmd_emit(args)
        if args.cmd == "analyze":
            return _cmd_analyze(args)
        if args.cmd == "fpcore":
            return _cmd_fpcore(args)
        if args.cmd == "tune":
            return _cmd_tune(args)
        if args.cmd == "export":
            _emit(api.load(args.file)[args.fn].to_grade(), args.out)
            return 0
        if args.cmd == "stdlib":
            for n in api.stdlib_names():
                print(n)
            return 0
    except GradeError as ex:
        print(ex.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        return 130
    return 2  # pragma: no cover


def api_sources():
    from .errors import _SOURCES

    return _SOURCES


def entry() -> None:
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `numgrade ir FILE | head`: the reader has gone, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
