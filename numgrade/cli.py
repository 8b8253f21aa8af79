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
    i = sub.add_parser("ir", help="print the IR")
    i.add_argument("file")
    i.add_argument("fn", nargs="?")
    sub.add_parser("stdlib", help="list the stdlib programs")
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
    rng = np.random.default_rng(seed)
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
        except (OSError, ValueError) as ex:
            raise GradeError(f"{path}: cannot load input '{name}': {ex}") from None
    return out


def _cmd_run(a) -> int:
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
    args = _random_inputs(fn, given, a.random or 0, _dims(a.dim))
    res = fn.compile(a.backend)(*args, seed=a.random)
    outs = res if fn.ir.result_is_tuple else (res,)
    if a.out:
        arrays = {f"out{i}": np.asarray(o) for i, o in enumerate(outs)}
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
            print(mod[args.fn].ir_text() if args.fn else mod.ir_text(), end="\n")
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
