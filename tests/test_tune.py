"""Precision tuning (issue 5): budgets met by the sound bound and by measurement, cost below the
all-f32 baseline where the budget allows, pins respected, impossible budgets reported, the
tuned program valid Grade that compiles on every backend, and the MILP optimal on a small case."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import numpy as np
import pytest

import numgrade as ng
from numgrade.api_tune import BudgetUnreachable, make_tuned
from numgrade.cli import main
from numgrade.errors import GradeError
from numgrade.harness import check
from numgrade.ir.formats import get_format
from numgrade.passes import cost_model as CM
from numgrade.passes.tune import Budget, TuneOptions, TuneSession, retype

EULER = dict(B=2, D=64)


@pytest.fixture(scope="module")
def euler_session():
    m = ng.load("stdlib:flow_matching")
    return m, TuneSession(m.ir, m.euler_cfg.ir, EULER, TuneOptions(), "abs")


@pytest.fixture(scope="module")
def loose(euler_session):
    """euler_cfg tuned for an absolute budget of 1 (shared by the tests of the tuned program),
    as f.tune() builds it: compiled back from its exported source."""
    m, s = euler_session
    return make_tuned(m.euler_cfg, s.tune(Budget("abs", 1.0)))


def test_budget_parsing():
    assert Budget.parse("abs:1e-3") == Budget("abs", 1e-3)
    assert Budget.parse("rel:0.01") == Budget("rel", 0.01)
    assert Budget.parse(0.5) == Budget("abs", 0.5)
    for bad in ("abs:", "abs:-1", "abs:nan", "foo:1", "rel:inf", "abs:0"):
        with pytest.raises(GradeError):
            Budget.parse(bad)


@pytest.mark.parametrize("budget", [1.0, 1e-2, 1e-4])
def test_euler_budgets_met_by_full_analysis(euler_session, budget):
    _, s = euler_session
    r = s.tune(Budget("abs", budget))
    assert r.status == "ok"
    assert r.bound is not None and r.bound <= budget
    # the proof is the full analysis of the tuned IR, re-run independently here
    from numgrade.passes.analyze import analyze_function
    rep = analyze_function(s.module, r.fn, EULER)
    assert all(o.abs_error is not None and o.abs_error <= budget for o in rep.outputs)
    # never dearer than the baseline when the baseline meets the budget
    if all(b is not None and b <= budget for b in r.baseline_bounds):
        assert r.cost <= r.baseline_cost * (1 + 1e-12)


def test_loose_budget_is_cheaper_than_f32(euler_session):
    _, s = euler_session
    r = s.tune(Budget("abs", 1.0))
    assert r.cost < r.baseline_cost
    assert any(c.format in ("bf16", "f16", "e5m2", "e4m3") for c in r.choices)


def test_tight_budget_needs_wider_formats(euler_session):
    _, s = euler_session
    r = s.tune(Budget("abs", 1e-6))   # all-f32 gives about 4e-5 here
    assert r.status == "ok" and r.bound <= 1e-6
    assert any(c.format == "f64" for c in r.choices)


def test_impossible_budget_reports_best_bound(euler_session):
    m, s = euler_session
    r = s.tune(Budget("abs", 1e-30))
    assert r.status == "impossible"
    assert "best achievable" in r.message and r.best_bounds[0] is not None
    with pytest.raises(BudgetUnreachable) as ei:
        m.euler_cfg.tune("abs:1e-30", formats=("f64", "f32"), **EULER)
    assert ei.value.result.best_bounds == r.best_bounds


def test_measured_error_within_budget(loose):
    """The soundness harness on the tuned program: measured |computed - ideal| <= budget."""
    checks = check(loose, EULER, n_samples=40, seed=3)
    assert checks and all(c.ok and c.samples > 0 for c in checks)
    for c in checks:
        assert c.abs_bound is not None and c.abs_bound <= 1.0 and c.max_abs <= 1.0


PINNED = """
fn f(x: f32[N] in [1, 2], y: f32[N] in [1, 2]) -> f32[N] {
    let p: f32[N] = x * y
    let q = p + x
    return q * 0.5 + y
}
"""


def test_pinned_formats_are_respected():
    m = ng.compile_source(PINNED)
    s = TuneSession(m.ir, m.f.ir, {"N": 8}, TuneOptions(), "abs")
    ops = [v.op for v in s.ops]
    assert "mul" in ops and ops.count("mul") == 1   # the annotated product is not tunable
    r = s.tune(Budget("abs", 1.0))
    pinned = [v for v in r.fn.pinned]
    assert pinned and all(v.fmt.name == "f32" for v in pinned)
    free = TuneSession(m.ir, m.f.ir, {"N": 8}, TuneOptions(respect_pins=False), "abs")
    assert len(free.ops) == len(s.ops) + 1


def test_pin_outputs_keeps_the_signature(euler_session):
    m, _ = euler_session
    s = TuneSession(m.ir, m.euler_cfg.ir, EULER,
                    TuneOptions(pin_outputs=True, formats=("f64", "f32", "bf16")), "abs")
    r = s.tune(Budget("abs", 1.0))
    assert [v.fmt.name for v in r.fn.results] == ["f32"]


def test_sizes_are_required():
    m = ng.load("stdlib:flow_matching")
    with pytest.raises(GradeError, match="needs its sizes"):
        m.euler_cfg.tune("abs:1e-2")


def test_milp_is_optimal_on_a_small_program():
    """Brute force over every assignment of a two-operation program: the tuner's cost equals
    the cheapest cost among the assignments whose full bound meets the budget."""
    src = """
fn g(x: f32[N] in [1, 4], y: f32[N] in [1, 4]) -> f32[N] {
    return x * y + x
}
"""
    m = ng.compile_source(src)
    dims = {"N": 4096}
    opts = TuneOptions(formats=("f64", "f32", "bf16", "f16"))
    s = TuneSession(m.ir, m.g.ir, dims, opts, "abs")
    tg = CM.get_target(opts.target)
    for budget in (0.2, 0.02, 1e-5):
        r = s.tune(Budget("abs", budget))
        best = math.inf
        for fs in itertools.product(*(s.model.allowed[i] for i in range(len(s.ops)))):
            fmt_of = {v: get_format(f) for v, f in zip(s.ops, fs)}
            g, rep = s.an.run(fmt_of)
            if all(o.abs_error is not None and o.abs_error <= budget for o in rep.outputs):
                best = min(best, CM.program_cost(retype(s.fn, fmt_of), dims, tg).total)
        assert r.status == "ok"
        assert r.cost == pytest.approx(best, rel=1e-9), budget


def test_tuned_source_round_trips_and_runs(loose):
    t = loose
    again = ng.compile_source(t.source)["euler_cfg"]
    assert again.ir.results == t.ir.results
    rng = np.random.default_rng(0)
    args = [rng.uniform(-16, 16, (2, 64)).astype(np.float32) for _ in range(3)] + \
        [np.float32(3.5), np.float32(0.25)]
    a, b = t(*args), again(*args)
    assert np.array_equal(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


@pytest.mark.parametrize("backend", ["kernel-interp", "triton", "tvm"])
def test_tuned_program_compiles_and_matches_reference(loose, backend):
    t = loose
    rng = np.random.default_rng(1)
    args = [rng.uniform(-16, 16, (2, 64)).astype(np.float32) for _ in range(3)] + \
        [np.float32(7.0), np.float32(0.125)]
    ref = np.asarray(t(*args), dtype=np.float64)
    out = np.asarray(t.compile(backend, exact=True)(*args), dtype=np.float64)
    assert np.array_equal(ref, out)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_tuned_program_emits_cuda_that_nvcc_compiles(loose, tmp_path):
    import subprocess

    t = loose
    cu = tmp_path / "k.cu"
    cu.write_text(t.emit("cuda"))
    subprocess.run(["nvcc", "-arch=sm_90a", "--ptx", "-o", str(tmp_path / "k.ptx"), str(cu)],
                   check=True, capture_output=True, timeout=300)


def test_cli_tune_json_and_out(tmp_path, capsys):
    out = tmp_path / "tuned.grd"
    code = main(["tune", "stdlib:rmsnorm", "rmsnorm", "--budget", "abs:1", "--dim", "T=2",
                 "--dim", "D=64", "--format", "json", "--out", str(out),
                 "--formats", "f64,f32,bf16"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("function", "budget", "bound", "cost", "baseline_cost", "assignment"):
        assert key in doc
    assert doc["bound"] <= 1.0 and doc["cost"] <= doc["baseline_cost"]
    assert main(["check", str(out)]) == 0
    tuned = ng.load(str(out)).rmsnorm
    rep = tuned.analyze(T=2, D=64)
    assert rep.outputs[0].abs_error <= 1.0


def test_cli_tune_impossible_and_usage(capsys):
    assert main(["tune", "stdlib:rmsnorm", "rmsnorm", "--budget", "abs:1e-40", "--dim", "T=2",
                 "--dim", "D=64", "--formats", "f64,f32"]) == 1
    err = capsys.readouterr().err
    assert "best achievable" in err
    assert main(["tune", "stdlib:rmsnorm", "rmsnorm", "--budget", "abs:x", "--dim", "T=2",
                 "--dim", "D=64"]) == 1
    with pytest.raises(SystemExit) as ei:
        main(["tune", "stdlib:rmsnorm", "rmsnorm"])
    assert ei.value.code == 2


def test_cli_tune_html_has_pareto_curve(tmp_path, capsys):
    page = tmp_path / "t.html"
    assert main(["tune", "stdlib:flow_matching", "euler_cfg", "--budget", "abs:1",
                 "--dim", "B=2", "--dim", "D=64", "--format", "html", "--pareto", "2", "--formats", "f64,f32,bf16",
                 "--report", str(page)]) == 0
    text = page.read_text()
    assert "Pareto curve" in text and "<polyline" in text and "all-f32 baseline" in text


def test_relative_budget():
    src = """
fn h(x: f32[N] in [1, 2], y: f32[N] in [1, 2]) -> f32[N] {
    return x * y + x
}
"""
    m = ng.compile_source(src)
    s = TuneSession(m.ir, m.h.ir, {"N": 1 << 20}, TuneOptions(formats=("f64", "f32", "bf16")),
                    "rel")
    for budget in (1e-2, 1e-9):
        r = s.tune(Budget("rel", budget))
        assert r.status == "ok" and r.bound <= budget
        assert all(o.rel_error is not None and o.rel_error <= budget for o in r.report.outputs)
    assert s.tune(Budget("rel", 1e-2)).cost < s.tune(Budget("rel", 1e-2)).baseline_cost
    with pytest.raises(GradeError, match="one budget kind"):
        s.tune(Budget("abs", 1e-2))
