"""Tuning results for people: a terminal table, and an HTML page with the Pareto curve.

The page is self-contained (inline CSS and SVG) and reuses the analysis report's styles; the
Pareto curve plots each budget of a sweep against the cheapest cost that provably meets it, with
the all-f32 baseline as a reference line.
"""

from __future__ import annotations

import html
import math
from typing import Sequence

from .passes.tune import TuneResult
from .render import _CSS, _table, fmt_num, render_html


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.4g} us"


def _ratio(r: TuneResult) -> str:
    if r.baseline_cost > 0:
        return f"{r.cost / r.baseline_cost:.3f}x the all-f32 baseline"
    return "baseline cost 0"


def summary_lines(r: TuneResult) -> list[str]:
    sizes = ", ".join(f"{k}={v}" for k, v in r.dims.items())
    out = [f"tune {r.function}: budget {r.budget}, target {r.target}"
           + (f", sizes {sizes}" if sizes else "")]
    if r.status != "ok":
        out.append(f"  impossible: {r.message}")
        return out
    out.append(f"  bound {fmt_num(r.bound)} <= {r.budget.value:g} ({r.budget.kind}, every "
               f"output; full analysis of the tuned program)")
    out.append(f"  cost {_us(r.cost)} estimated, all-f32 baseline {_us(r.baseline_cost)}: "
               f"{_ratio(r)}")
    return out


def render_tune_text(r: TuneResult) -> str:
    lines = summary_lines(r)
    if r.status == "ok":
        rows = [[c.name, c.op, "" if c.line is None else f"{c.line}:{c.col}", c.original,
                 c.format, "" if c.format == c.original else "*"] for c in r.choices]
        if rows:
            lines += _table(["value", "op", "line", "was", "now", ""], rows)
        else:
            lines.append("  nothing to tune: every rounding is pinned")
    lines.append(f"  {r.solver or 'no search'}; {r.analyses} analyses in {r.seconds:.2f} s")
    return "\n".join(lines) + "\n"


def _pareto_svg(points: Sequence[TuneResult], baseline: float, chosen: TuneResult) -> str:
    ok = [p for p in points if p.status == "ok" and p.cost > 0]
    if not ok:
        return '<p class="muted">no budget of the sweep is achievable</p>'
    W, H, L, R, T, B = 640, 320, 70, 20, 20, 50
    xs = [math.log10(p.budget.value) for p in ok] + [math.log10(chosen.budget.value)]
    ys = [p.cost * 1e6 for p in ok] + [baseline * 1e6, chosen.cost * 1e6]
    x0, x1 = min(xs), max(xs)
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 1, x1 + 1
    y0, y1 = 0.0, max(ys) * 1.1

    def px(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def py(y: float) -> float:
        return H - B - (y - y0) / (y1 - y0) * (H - T - B)

    s = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
         f'aria-label="Pareto curve: error budget against estimated cost">',
         f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="#fafafa" '
         f'stroke="#ccc"/>']
    for k in range(math.floor(x0), math.ceil(x1) + 1):
        if x0 - 1e-9 <= k <= x1 + 1e-9:
            s.append(f'<line x1="{px(k):.1f}" y1="{H - B}" x2="{px(k):.1f}" y2="{H - B + 5}" '
                     f'stroke="#555"/><text x="{px(k):.1f}" y="{H - B + 18}" font-size="11" '
                     f'text-anchor="middle">1e{k}</text>')
    for j in range(5):
        y = y1 * j / 4
        s.append(f'<text x="{L - 6}" y="{py(y) + 4:.1f}" font-size="11" text-anchor="end">'
                 f'{y:.3g}</text>')
    s.append(f'<text x="{(L + W - R) / 2}" y="{H - 8}" font-size="12" text-anchor="middle">'
             f'error budget ({html.escape(chosen.budget.kind)}, log scale)</text>')
    s.append(f'<text x="14" y="{(T + H - B) / 2}" font-size="12" text-anchor="middle" '
             f'transform="rotate(-90 14 {(T + H - B) / 2})">estimated cost (us)</text>')
    yb = py(baseline * 1e6)
    s.append(f'<line x1="{L}" y1="{yb:.1f}" x2="{W - R}" y2="{yb:.1f}" stroke="#888" '
             f'stroke-dasharray="5,4"/><text x="{W - R - 4}" y="{yb - 5:.1f}" font-size="11" '
             f'text-anchor="end">all-f32 baseline</text>')
    pts = sorted(ok, key=lambda p: p.budget.value)
    path = " ".join(f"{px(math.log10(p.budget.value)):.1f},{py(p.cost * 1e6):.1f}" for p in pts)
    s.append(f'<polyline points="{path}" fill="none" stroke="#c0392b" stroke-width="2"/>')
    for p in pts:
        s.append(f'<circle cx="{px(math.log10(p.budget.value)):.1f}" cy="{py(p.cost * 1e6):.1f}" '
                 f'r="3.5" fill="#c0392b"><title>budget {p.budget.value:.3g}: cost '
                 f'{p.cost * 1e6:.4g} us, bound {fmt_num(p.bound)}</title></circle>')
    if chosen.status == "ok":
        s.append(f'<circle cx="{px(math.log10(chosen.budget.value)):.1f}" '
                 f'cy="{py(chosen.cost * 1e6):.1f}" r="6" fill="none" stroke="#2c3e50" '
                 f'stroke-width="2"><title>the requested budget</title></circle>')
    s.append("</svg>")
    return "".join(s)


def render_tune_html(r: TuneResult, sweep: Sequence[TuneResult], tuned_source: str | None,
                     source_view=None) -> str:
    """The tuning summary, the assignment, the Pareto curve of the sweep, the tuned program and
    its full analysis report."""
    title = f"numgrade tune: {r.function}"
    body = [f"<h1>{html.escape(title)}</h1>", "<ul>"]
    body += [f"<li>{html.escape(line.strip())}</li>" for line in summary_lines(r)[1:]]
    body.append("</ul>")
    if r.status == "ok" and r.choices:
        head = "".join(f"<th>{h}</th>" for h in ("value", "op", "line", "was", "now"))
        rows = "".join(
            f"<tr><td class=\"mono\">{html.escape(c.name)}</td><td>{html.escape(c.op)}</td>"
            f"<td>{'' if c.line is None else f'{c.line}:{c.col}'}</td><td>{c.original}</td>"
            f"<td><b>{c.format}</b></td></tr>" for c in r.choices)
        body.append(f'<h2>Assignment</h2><table class="out"><tr>{head}</tr>{rows}</table>')
    body.append("<h2>Pareto curve: budget against cost</h2>")
    body.append('<p class="muted">each point: the cheapest assignment found whose sound bound '
                "(full analysis) meets that budget; the ring marks the requested budget.</p>")
    body.append(_pareto_svg(sweep, r.baseline_cost, r))
    rows = "".join(
        f"<tr><td class=\"num\">{p.budget.value:.3g}</td><td>{p.status}</td>"
        f"<td class=\"num\">{html.escape(fmt_num(p.bound))}</td>"
        f"<td class=\"num\">{p.cost * 1e6:.4g}</td>"
        f"<td class=\"num\">{(p.cost / p.baseline_cost if p.baseline_cost else 0):.3f}</td></tr>"
        for p in sorted(sweep, key=lambda p: p.budget.value))
    body.append('<table class="out"><tr><th>budget</th><th>status</th><th>bound</th>'
                f'<th>cost (us)</th><th>vs all-f32</th></tr>{rows}</table>')
    if tuned_source:
        body.append("<h2>Tuned program</h2><pre class=\"mono\">"
                    + html.escape(tuned_source) + "</pre>")
    inner = render_html([r.report], [source_view] if source_view else None, None,
                        title="Analysis of the tuned program")
    start, end = inner.find("<body>"), inner.rfind("</body>")
    body.append(inner[start + len("<body>"):end] if start >= 0 else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
