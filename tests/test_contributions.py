"""Per-line error contributions are a decomposition of the reported bound.

Definition (numgrade/passes/contributions.py): the lines' amounts are shares of the largest
finite absolute bound among the outputs and sum to it; a line that calls a helper holds the
helper's whole share (``via_call``), and the helper's own lines are listed separately
(``callee_lines``) without entering the sum a second time.
"""

from __future__ import annotations

import json
import math

import pytest

import numgrade as ng
from numgrade import render

PROGRAMS = """\
fn doppler(u: f64 in [-100, 100], v: f64 in [20, 20000], t: f64 in [-30, 50]) -> f64 {
    let t1 = 331.4 + 0.6 * t
    let d = t1 + u
    return -t1 * v / (d * d)
}

fn sq(x: f32 in [0, 2]) -> f32 {
    let y = x * x
    return y + 1.0
}

fn calls_sq(a: f32 in [0, 2], b: f32 in [1, 2]) -> f32 {
    let t = sq(a)
    return t / b
}

fn scaled_sum(a: f32[N] in [0, 2]) -> f32 {
    let t = a * 3.0
    return sum(t)
}

fn calls_sum(a: f32[N] in [-1, 2]) -> f32 {
    let s = scaled_sum(a)
    return s * 0.7
}

fn two(x: f32 in [1, 2]) -> (f32, f32) {
    let big = x * x * 1000.0
    return (x * 3.0, big + 1.0)
}
"""


@pytest.fixture(scope="module")
def mod():
    return ng.compile_source(PROGRAMS, "contrib.grd")


def _line_of(text: str, needle: str) -> int:
    for k, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return k
    raise AssertionError(needle)


def _check(rep, bound_index: int | None = None) -> dict:
    """The contributions decompose the largest finite abs bound; returns the JSON detail."""
    bounds = [o.abs_error for o in rep.outputs if o.abs_error is not None]
    assert bounds, rep.outputs
    bound = max(bounds)
    lc = rep.line_contributions
    assert lc, "no contributions recorded"
    assert all(v >= 0 and math.isfinite(v) for v in lc.values()), lc
    assert all(v <= bound for v in lc.values()), (lc, bound)
    assert math.isclose(math.fsum(lc.values()), bound, rel_tol=1e-9), (lc, bound)
    d = json.loads(rep.to_json())["contributions"]
    assert d["bound"] == pytest.approx(bound, rel=1e-15)
    if bound_index is not None:
        assert d["output"] == bound_index
    shares = [r["share"] for r in d["lines"]]
    assert math.isclose(math.fsum(shares), 1.0, rel_tol=1e-9)
    assert all(0 <= s <= 1 for s in shares)
    for r in d["lines"]:
        assert r["amount"] == pytest.approx(lc[r["line"]])
        if "via_call" in r:    # the part via a call is inside the line's amount
            assert 0 <= r["via_call"] <= r["amount"] * (1 + 1e-12)
    # the callee lines break down the via-call parts, and are not counted twice
    via = math.fsum(r.get("via_call", 0.0) for r in d["lines"])
    assert math.isclose(math.fsum(r["amount"] for r in d["callee_lines"]), via,
                        rel_tol=1e-9, abs_tol=1e-300)
    return d


def test_softmax_contributions_sum_to_the_bound():
    sm = ng.load_stdlib("softmax")
    rep = sm.softmax.analyze(M=4, N=128)
    d = _check(rep, 0)
    text = sm.ir.source
    # every line of the body that rounds shows up (the maximum is exact)
    assert set(rep.line_contributions) == {_line_of(text, "let e = exp"),
                                           _line_of(text, "let s = sum"),
                                           _line_of(text, "return e / s")}
    assert not d["callee_lines"]


def test_rmsnorm_contributions_never_exceed_the_bound():
    # the sum of squares is a huge intermediate (u * |C| ~ 1e3): its local error is not its
    # contribution; the decomposition stays within the bound of about 1e-3
    rep = ng.load_stdlib("rmsnorm").rmsnorm.analyze(T=4, D=128)
    _check(rep, 0)


def test_scalar_tier_program(mod):
    rep = mod.doppler.analyze()
    assert rep.outputs[0].method.startswith("scalar-bnb")
    _check(rep, 0)
    assert len(rep.line_contributions) >= 2


def test_scalar_tier_call_line_holds_the_callee_share(mod):
    rep = mod.calls_sq.analyze()
    assert rep.outputs[0].method.startswith("scalar-bnb")
    d = _check(rep, 0)
    call = _line_of(PROGRAMS, "let t = sq(a)")
    assert rep.line_contributions.get(call, 0) > 0
    row = next(r for r in d["lines"] if r["line"] == call)
    assert row["callee"] == "sq" and row["via_call"] > 0
    own = {r["line"] for r in d["callee_lines"] if r["function"] == "sq"}
    assert own == {_line_of(PROGRAMS, "let y = x * x"), _line_of(PROGRAMS, "return y + 1.0")}
    # the callee's lines are not lines of the caller's sum
    assert not own & set(rep.line_contributions)


def test_tensor_tier_call_line_holds_the_callee_share(mod):
    rep = mod.calls_sum.analyze(N=64)
    assert rep.outputs[0].method == "tensor"
    d = _check(rep, 0)
    call = _line_of(PROGRAMS, "let s = scaled_sum(a)")
    assert rep.line_contributions.get(call, 0) > 0
    assert {r["function"] for r in d["callee_lines"]} == {"scaled_sum"}
    assert not {r["line"] for r in d["callee_lines"]} & set(rep.line_contributions)


def test_stdlib_call_line():
    sm = ng.load_stdlib("softmax")
    rep = sm.softmax_temperature.analyze(M=4, N=128)
    d = _check(rep, 0)
    call = _line_of(sm.ir.source, "return softmax(x / t)")
    row = next(r for r in d["lines"] if r["line"] == call)
    assert row["callee"] == "softmax" and row["via_call"] > 0


def test_largest_finite_output_is_decomposed(mod):
    rep = mod.two.analyze()
    errs = [o.abs_error for o in rep.outputs]
    _check(rep, errs.index(max(errs)))


def test_rendered_heat_map_states_shares_and_calls(mod):
    rep = mod.calls_sq.analyze()
    page = render.render_html([rep], {"calls_sq": (1, PROGRAMS)})
    assert "via call to sq" in page and "of the bound" in page
    assert "not counted twice" in page
    text = render.render_text([rep])
    assert "error by line (shares of the bound" in text and "via call to sq" in text
    assert "error by line" in render.render_markdown([rep])
