"""Analysis reports: the JSON of SPEC section 6, and `numgrade analyze` / `numgrade fpcore` in
their four formats (text, json, md, html), with the exit statuses of SPEC section 5."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import numgrade as ng
from numgrade import cli, render
from numgrade.report import OutputReport, Report

ROOT = Path(__file__).resolve().parents[1]
FPBENCH = Path(os.environ.get("NUMGRADE_FPBENCH",
                              str(Path(__file__).resolve().parents[2] / "shared" / "fpbench")))
ROSA = FPBENCH / "rosa.fpcore"

INLINE = """\
# an inline test program
fn axpy(a: f32 in [1, 2], x: f32[N] in [1, 2], y: f32[N] in [1, 2]) -> f32[N] {
    let ax = a * x
    return ax + y
}

fn ratio(x: f64 in [-1, 1], y: f64 in [-1, 1]) -> f64 {
    return x / y
}

fn noisy(x: f32[N] in [-6, 6]) -> (e2m1[N], f32) ! {rand} {
    let q = round(x, e2m1, mode=sr)
    return (q, sum(x * x))
}

fn blocks(x: f32[N] in [-1, 1]) -> f32[N/16] requires N % 16 == 0 {
    return sum(reshape(x, [N/16, 16]), axis=-1)
}
"""


# ---------------------------------------------------------------------------------------------
# the schema of SPEC section 6

def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_report(d: dict) -> None:
    """Assert that d is one SPEC section 6 report object."""
    for key in ("function", "outputs", "effects", "coeffects", "backward_error", "seconds"):
        assert key in d, f"missing key {key!r} in {sorted(d)}"
    assert isinstance(d["function"], str) and d["function"]
    assert isinstance(d["effects"], list) and all(isinstance(e, str) for e in d["effects"])
    co = d["coeffects"]
    assert isinstance(co, dict)
    assert isinstance(co.get("sensitivity"), dict)
    assert all(v is None or _is_num(v) for v in co["sensitivity"].values())
    assert isinstance(co.get("requires"), list)
    assert all(isinstance(r, str) for r in co["requires"])
    be = d["backward_error"]
    assert be is None or (isinstance(be, dict) and all(v is None or _is_num(v)
                                                        for v in be.values()))
    assert _is_num(d["seconds"]) and d["seconds"] >= 0
    assert isinstance(d["outputs"], list) and d["outputs"]
    for k, o in enumerate(d["outputs"]):
        for key in ("index", "format", "shape", "range", "abs_error", "rel_error", "reason"):
            assert key in o, f"output {k}: missing key {key!r}"
        assert o["index"] == k
        assert isinstance(o["format"], str) and o["format"]
        assert isinstance(o["shape"], list)
        assert all(isinstance(s, (int, str)) and not isinstance(s, bool) for s in o["shape"])
        r = o["range"]
        assert r is None or (isinstance(r, list) and len(r) == 2 and all(map(_is_num, r))
                             and r[0] <= r[1])
        for key in ("abs_error", "rel_error"):
            v = o[key]
            assert v is None or (_is_num(v) and v >= 0), (key, v)
            if v is None:  # a bound that cannot be established comes with a reason
                assert isinstance(o["reason"], str) and o["reason"].strip(), o
        assert o["reason"] is None or isinstance(o["reason"], str)


# ---------------------------------------------------------------------------------------------
# Report.to_dict / to_json

@pytest.mark.parametrize("lib,fn,dims", [
    ("dot", "dot", {"N": 64}),
    ("dot", "matvec", {}),
    ("horner", "horner5", {}),
    ("nvfp4", "quantize", {"M": 4, "N": 32}),
    ("stochastic_round", "sr", {"N": 16}),
])
def test_json_schema_stdlib(lib, fn, dims):
    f = ng.load(f"stdlib:{lib}")[fn]
    rep = f.analyze(**dims)
    d = rep.to_dict()
    check_report(d)
    assert d["function"] == fn
    assert len(d["outputs"]) == len(f.ir.results)
    assert json.loads(rep.to_json()) == json.loads(json.dumps(d))
    if lib == "stochastic_round":
        assert "rand" in d["effects"]
    if lib == "nvfp4":
        assert "N % 16 == 0" in d["coeffects"]["requires"]
        assert [o["format"] for o in d["outputs"]] == ["e2m1", "e4m3", "f32"]
    if fn == "matvec":  # sizes left symbolic: the shape says so, the bound is null with a reason
        assert d["outputs"][0]["shape"] == ["M"]


def test_json_schema_inline_program():
    mod = ng.compile_source(INLINE, "inline.grd")
    reps = {n: mod[n].analyze(**({"N": 64} if mod[n].ir.dims else {})) for n in mod.functions}
    for rep in reps.values():
        check_report(json.loads(rep.to_json()))
    ax = reps["axpy"].to_dict()["outputs"][0]
    assert ax["shape"] == ["N"] and ax["format"] == "f32"
    assert ax["abs_error"] is not None and 0 < ax["abs_error"] < 1e-5
    assert ax["rel_error"] is not None and 0 < ax["rel_error"] < 1e-5
    assert ax["range"][0] <= 2 and ax["range"][1] >= 6
    ratio = reps["ratio"].to_dict()["outputs"][0]
    assert ratio["abs_error"] is None and ratio["reason"]  # y can be 0
    noisy = reps["noisy"].to_dict()
    assert noisy["effects"] == ["rand"] and len(noisy["outputs"]) == 2
    assert reps["blocks"].to_dict()["coeffects"]["requires"] == ["N % 16 == 0"]


def test_json_nulls_for_non_finite_numbers():
    rep = Report("f", [OutputReport(0, "f32", ["N"], (-math.inf, 1.0), math.inf, math.nan,
                                    "overflow")], [], {"sensitivity": {"x": math.inf},
                                                       "requires": []}, None, 0.5)
    d = json.loads(rep.to_json())  # allow_nan=False: would raise on inf / NaN
    assert d["outputs"][0]["abs_error"] is None and d["outputs"][0]["rel_error"] is None
    assert d["outputs"][0]["range"] == [None, 1.0]
    assert d["coeffects"]["sensitivity"]["x"] is None


# ---------------------------------------------------------------------------------------------
# the CLI, in process

@pytest.fixture()
def inline_file(tmp_path) -> Path:
    p = tmp_path / "inline.grd"
    p.write_text(INLINE, encoding="utf-8")
    return p


def _main(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_text(capsys, inline_file):
    code, out, err = _main(capsys, "analyze", inline_file, "axpy", "--dim", "N=64")
    assert code == 0, err
    rep = ng.load(inline_file).axpy.analyze(N=64)
    assert rep.signature and rep.signature in out
    o = rep.outputs[0]
    for cell in ("f32", "[N]", render.fmt_num(o.abs_error), render.fmt_num(o.rel_error),
                 render.fmt_num(o.range[0]), "abs error", "rel error", "N=64"):
        assert cell in out, cell
    assert "analysed in" in out


def test_analyze_text_every_function_with_reasons(capsys, inline_file):
    code, out, err = _main(capsys, "analyze", inline_file, "--dim", "N=32")
    assert code == 0, err
    for name in ("axpy", "ratio", "noisy", "blocks"):
        assert f"{name} : (" in out  # each graded signature
    ratio = ng.load(inline_file).ratio.analyze()
    assert ratio.outputs[0].reason in out       # a null bound prints its reason
    assert "effects: {rand}" in out and "requires: N % 16 == 0" in out


def test_analyze_markdown(capsys):
    code, out, err = _main(capsys, "analyze", "stdlib:dot", "--dim", "N=128", "--format", "md")
    assert code == 0, err
    lines = out.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.startswith("| # | format | shape")]
    assert len(heads) == len(ng.load("stdlib:dot").functions)
    for i in heads:
        assert re.fullmatch(r"\|(---\|)+", lines[i + 1])
        assert lines[i + 2].startswith("| 0 | ")
    assert "### dot" in out


def test_analyze_json_one_and_many(capsys, inline_file):
    code, out, _ = _main(capsys, "analyze", inline_file, "ratio", "--format", "json")
    assert code == 0
    d = json.loads(out)
    assert isinstance(d, dict) and d["function"] == "ratio"
    check_report(d)
    code, out, _ = _main(capsys, "analyze", inline_file, "--format", "json", "--dim", "N=16")
    arr = json.loads(out)
    assert isinstance(arr, list) and [x["function"] for x in arr] == \
        ["axpy", "ratio", "noisy", "blocks"]
    for x in arr:
        check_report(x)


def test_analyze_html(capsys, inline_file, tmp_path):
    out_path = tmp_path / "report.html"
    code, out, err = _main(capsys, "analyze", inline_file, "--dim", "N=16", "--format", "html",
                           "--out", out_path, "--samples", "24")
    assert code == 0, err
    page = out_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count("<html") == 1
    assert "<svg" in page and "<style>" in page
    # the source lines, escaped, with the error-carrying lines coloured
    assert "let ax = a * x" in page and "return ax + y" in page
    assert "fn ratio(x: f64 in [-1, 1], y: f64 in [-1, 1]) -&gt; f64 {" in page
    assert re.search(r'<td class="code" style="background:#[0-9a-f]{6};[^"]*">\s*return ax \+ y',
                     page)
    assert "log<sub>10</sub>" in page  # the legend of the colour scale
    # a plot per output, with the bound line, and the measurement respects the bound
    assert page.count("<svg") >= 5 and "sound bound" in page
    assert "EXCEEDS" not in page and "max measured" in page
    # self-contained: no external resources at all
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert "http" not in page and "<script" not in page and "<link" not in page
    assert f"wrote {out_path}" in err


def test_fpcore_text_and_name(capsys):
    if not ROSA.exists():
        pytest.skip(f"no FPBench suite at {FPBENCH}")
    code, out, err = _main(capsys, "fpcore", ROSA, "--name", "doppler1")
    assert code == 0, err
    assert out.splitlines()[0].split() == ["benchmark", "abs", "bound", "rel", "bound", "time",
                                           "reason"]
    assert re.search(r"^doppler1\s+\d\.\d+e-1[0-9]\s", out, re.M)
    assert "1 benchmarks" in out
    code, out, err = _main(capsys, "fpcore", ROSA, "--name", "Pendulum", "--format", "json")
    [d] = json.loads(out)
    check_report(d)
    assert d["function"] == "Pendulum" and "loop" in d["outputs"][0]["reason"]
    code, out, err = _main(capsys, "fpcore", ROSA, "--name", "no-such-benchmark")
    assert code == 1 and "no benchmark named 'no-such-benchmark'" in err


def test_internal_error_becomes_null_bound(capsys, inline_file, monkeypatch):
    def boom(self, *a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(ng.api.Function, "analyze", boom)
    code, out, err = _main(capsys, "analyze", inline_file, "axpy", "--format", "json")
    assert code == 0 and "Traceback" not in err
    d = json.loads(out)
    check_report(d)
    assert d["outputs"][0]["abs_error"] is None
    assert "simulated failure" in d["outputs"][0]["reason"]


# ---------------------------------------------------------------------------------------------
# rendering and measurement, directly

def test_measure_respects_the_bound():
    mod = ng.compile_source(INLINE, "inline.grd")
    m = render.measure(mod.axpy, 16, {"N": 8}, seed=3)
    assert m.dims == {"N": 8} and m.samples == 16 and m.failure is None
    bound = mod.axpy.analyze(N=8).outputs[0].abs_error
    assert max(m.errors[0]) > 0  # f32 rounding is visible against the 160-bit ideal
    assert max(m.errors[0]) <= bound
    r = render.measure(mod.ratio, 8, {}, seed=1)  # an f64 program: sub-ulp errors still count
    assert r.samples == 8 and max(r.errors[0]) > 0
    big = render.measure(mod.axpy, 2, {"N": 1 << 20}, seed=0)  # too big for the ideal mode
    assert big.dims == {"N": 16} and "too large" in big.failure


def test_html_flags_a_violated_bound():
    rep = Report("f", [OutputReport(0, "f32", [], (0.0, 1.0), 1e-7, None, "ideal value can be 0")],
                 [], {"sensitivity": {}, "requires": []}, None, 0.001, "f : () -> M[1e-07] f32",
                 line_contributions={1: 1e-8, 2: 0.0, 3: math.inf})
    m = render.Measurement("f", {}, 0, [[0.0, 1e-9, 5e-7, math.inf]], samples=4)
    page = render.render_html([rep], {"f": (1, "let a = x\nlet b = a\nreturn b / y")}, {"f": m})
    assert "EXCEEDS the bound" in page
    assert 'class="zero"' in page and 'class="inf"' in page
    assert "<title>sample 3: not finite</title>" in page
    assert "return b / y" in page and "http" not in page


def test_function_source_excerpt():
    mod = ng.load("stdlib:nvfp4")
    text = mod.ir.source
    starts = [mod[n].ir.span.line for n in mod.functions]
    view = render.function_source(mod.quantize.ir, text, "nvfp4.grd", starts)
    lines = view.text.splitlines()
    assert any(ln.startswith("fn quantize(") for ln in lines)
    assert lines[-1].strip() == "}" and not any(ln.startswith("fn dequantize") for ln in lines)


# ---------------------------------------------------------------------------------------------
# the CLI as a program: JSON on stdout, exit statuses, no tracebacks

def _numgrade(*argv, timeout=120) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "numgrade"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "numgrade.cli"]
    return subprocess.run(cmd + [str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_cli_analyze_json_subprocess():
    p = _numgrade("analyze", "stdlib:horner", "horner2", "--format", "json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    check_report(d)
    assert d["function"] == "horner2" and d["outputs"][0]["abs_error"] > 0
    p = _numgrade("analyze", "stdlib:horner", "--format", "json")
    arr = json.loads(p.stdout)
    assert [x["function"] for x in arr] == ng.load("stdlib:horner").functions


def test_cli_fpcore_rosa_json():
    if not ROSA.exists():
        pytest.skip(f"no FPBench suite at {FPBENCH}")
    from numgrade.frontend.fpcore import load_benchmarks

    names = [b.bench.name for b in load_benchmarks(ROSA)]
    p = _numgrade("fpcore", os.path.relpath(ROSA, ROOT), "--format", "json")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    arr = json.loads(p.stdout)
    assert isinstance(arr, list) and [d["function"] for d in arr] == names
    for d in arr:
        check_report(d)
    by = {d["function"]: d for d in arr}
    for name in ("doppler1", "doppler2", "doppler3", "turbine1", "verhulst", "carbonGas"):
        o = by[name]["outputs"][0]
        assert o["abs_error"] is not None and 0 < o["abs_error"] < 1e-6, (name, o)
        assert o["rel_error"] is not None and o["rel_error"] < 1e-10, (name, o)
    o = by["doppler1"]["outputs"][0]
    assert o["format"] == "f64" and o["shape"] == [] and o["range"][1] < 0
    unsupported = [d for d in arr if "loops" in (d["outputs"][0]["reason"] or "")]
    assert unsupported  # the while-loop benchmarks: null bounds with the loader's reason
    for d in unsupported:
        assert d["outputs"][0]["abs_error"] is None and d["outputs"][0]["rel_error"] is None


@pytest.mark.parametrize("argv", [
    ["analyze"],
    ["analyze", "stdlib:dot", "--format", "xml"],
    ["analyze", "stdlib:dot", "--dim", "N=x"],
    ["analyze", "stdlib:dot", "--tier", "fast"],
    ["fpcore"],
    ["fpcore", "x.fpcore", "--format", "pdf"],
])
def test_cli_usage_errors_exit_2(argv):
    p = _numgrade(*argv)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and "error" in p.stderr


def test_cli_user_errors_exit_1(tmp_path):
    bad = tmp_path / "bad.grd"
    bad.write_text("fn f(x: f32 in [0, 1]) -> f32 {\n    return x + y\n}\n", encoding="utf-8")
    p = _numgrade("analyze", bad, "--format", "json")
    assert p.returncode == 1 and p.stdout == ""
    assert re.search(rf"^{re.escape(str(bad))}:2:\d+: error: ", p.stderr, re.M)
    assert "return x + y" in p.stderr and "^" in p.stderr and "Traceback" not in p.stderr

    badfp = tmp_path / "bad.fpcore"
    badfp.write_text("(FPCore (x) :pre (<= 0 x 1) (+ x 1))\n(FPCore (x) (+ x\n",
                     encoding="utf-8")
    p = _numgrade("fpcore", badfp, "--format", "json")
    assert p.returncode == 1 and re.search(rf"^{re.escape(str(badfp))}:2:\d+: error: ",
                                           p.stderr, re.M)
    assert "Traceback" not in p.stderr

    for argv in (["analyze", tmp_path / "missing.grd"], ["analyze", "stdlib:dot", "nope"],
                 ["analyze", "stdlib:dot", "dot", "--dim", "Q=4"],
                 ["analyze", "stdlib:nvfp4", "quantize", "--dim", "N=17"],
                 ["fpcore", tmp_path / "missing.fpcore"]):
        p = _numgrade(*argv)
        assert p.returncode == 1, (argv, p.stderr)
        assert "error:" in p.stderr and "Traceback" not in p.stderr, argv
