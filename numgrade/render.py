"""Rendering of analysis reports: terminal text, Markdown, and a self-contained HTML page.

* :func:`render_text` -- per function the graded signature, a table of the outputs (format,
  shape, range, absolute and relative bound or the reason there is none, method), warnings,
  notes and the analysis time;
* :func:`render_markdown` -- the same as Markdown (one table per function);
* :func:`render_html` -- one HTML page with inline CSS and inline SVG only (no external assets):
  per function the source lines coloured by their contribution to the final error (log10 colour
  scale with a legend; the lines are shares of the bound and sum to it, a call line holds its
  callee's share "via call", the callee's own lines are listed below without being counted
  twice: see ``passes/contributions.py``) and, per output, a plot of measured error against
  the sound bound;
* :func:`measure` -- the measurements behind the plots: random inputs drawn uniformly in the
  declared ranges, ``max |computed - ideal|`` per sample and output (the ideal program is the
  reference interpreter over 160-bit reals, so inputs are kept tiny and time is bounded);
* :func:`render_fpcore_text` -- the one-line-per-benchmark table of ``numgrade fpcore``.
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from .report import Report

# ---------------------------------------------------------------------------------------------
# numbers


def fmt_num(x: Any, digits: int = 4) -> str:
    """A bound or range end for people: 4 significant digits, '-' for null, 'inf' for inf."""
    if x is None:
        return "-"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if f == 0:
        return "0"
    return f"{f:.{digits}g}"


def _fmt_range(r) -> str:
    if r is None:
        return "-"
    return f"[{fmt_num(r[0])}, {fmt_num(r[1])}]"


def _fmt_shape(shape: Sequence[Any]) -> str:
    if not shape:
        return "scalar"
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _fmt_seconds(s: float) -> str:
    if s < 1.0:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s"


def _rel_cell(o) -> str:
    return fmt_num(o.rel_error) if o.rel_error is not None else "-"


def _output_rows(rep: Report) -> list[list[str]]:
    rows = []
    for o in rep.outputs:
        rows.append([str(o.index), o.format, _fmt_shape(o.shape), _fmt_range(o.range),
                     fmt_num(o.abs_error), _rel_cell(o), o.method or "-", o.reason or ""])
    return rows


_HEADERS = ["#", "format", "shape", "range", "abs error", "rel error", "method", "reason"]


def _table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """A plain-text table; the last column is left unpadded (reasons can be long)."""
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    out = []

    def line(cells: list[str]) -> str:
        parts = [c.ljust(widths[i]) for i, c in enumerate(cells[:-1])] + [cells[-1]]
        return (indent + "  ".join(parts)).rstrip()

    out.append(line(headers))
    out.append((indent + "  ".join("-" * w for w in widths[:-1]) + "  " +
                "-" * max(len(headers[-1]), 1)).rstrip())
    out.extend(line(r) for r in rows)
    return out


# ---------------------------------------------------------------------------------------------
# text


def _coeffect_lines(rep: Report) -> list[str]:
    out = []
    dims = getattr(rep, "dims", None) or {}
    if dims:
        out.append("sizes: " + ", ".join(f"{k}={v}" for k, v in dims.items()))
    if rep.effects:
        out.append("effects: {" + ", ".join(rep.effects) + "}")
    req = (rep.coeffects or {}).get("requires") or []
    if req:
        out.append("requires: " + ", ".join(str(r) for r in req))
    if rep.backward_error:
        out.append("backward error: " + ", ".join(f"{k} {fmt_num(v)}"
                                                  for k, v in rep.backward_error.items()))
    return out


def _pct(share: float | None) -> str:
    if share is None or not math.isfinite(share):
        return "?"
    return f"{100 * share:.3g}%"


def _contribution_summary(rep: Report, top: int = 6) -> str:
    """One line: the largest per-line shares of the decomposed bound (calls marked)."""
    c = getattr(rep, "contributions", None) or {}
    rows = [r for r in c.get("lines", []) if r.get("share") is not None]
    if not rows or not c.get("bound"):
        return ""
    rows.sort(key=lambda r: -r["amount"])
    shown = [r for r in rows if r["share"] >= 1e-4] or rows[:1]   # 0.01% and up
    top = min(top, len(shown))
    parts = []
    for r in rows[:top]:
        via = ""
        if r.get("via_call") is not None:
            vs = r["via_call"] / c["bound"]
            via = f" (via call to {r.get('callee')}" + \
                ("" if abs(vs - r["share"]) <= 1e-12 else f": {_pct(vs)}") + ")"
        parts.append(f"line {r['line']} {_pct(r['share'])}{via}")
    more = f", {len(rows) - top} more" if len(rows) > top else ""
    return (f"error by line (shares of the bound {fmt_num(c['bound'])}, output "
            f"{c.get('output')}): " + ", ".join(parts) + more)


def render_text(reports: Sequence[Report]) -> str:
    """The reports as a terminal table, one block per function."""
    blocks = []
    for rep in reports:
        lines = [rep.signature or rep.function]
        lines.extend("  " + c for c in _coeffect_lines(rep))
        lines.extend(_table(_HEADERS, _output_rows(rep)))
        target = (rep.coeffects or {}).get("target") or []
        if target:
            lines.append("  target needs:")
            lines.extend(f"    {t}" for t in target)
        model = (rep.coeffects or {}).get("execution_model")
        if model:
            lines.append(f"  execution model: target {model['target']}, contracts "
                         f"{' and '.join(model['contracts'])}; math: {model['math']}")
        if rep.warnings:
            lines.append("  warnings:")
            lines.extend(f"    {w}" for w in rep.warnings)
        contrib = _contribution_summary(rep)
        if contrib:
            lines.append("  " + contrib)
        if rep.notes:
            lines.append("  notes:")
            lines.extend(f"    {n}" for n in rep.notes)
        lines.append(f"  analysed in {_fmt_seconds(rep.seconds)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def render_fpcore_text(reports: Sequence[Report]) -> str:
    """One row per benchmark: name, abs bound, rel bound, time, reason (the first output's)."""
    rows = []
    bounded = unsupported = 0
    total = 0.0
    for rep in reports:
        o = rep.outputs[0] if rep.outputs else None
        abs_e = o.abs_error if o else None
        rel_e = o.rel_error if o else None
        reason = (o.reason or "") if o else "no output"
        if rep.extra.get("unsupported"):
            unsupported += 1
        elif abs_e is not None:
            bounded += 1
        total += rep.seconds
        rows.append([rep.function, fmt_num(abs_e), fmt_num(rel_e),
                     "-" if rep.extra.get("unsupported") else _fmt_seconds(rep.seconds), reason])
    lines = _table(["benchmark", "abs bound", "rel bound", "time", "reason"], rows, indent="")
    lines.append("")
    lines.append(f"{len(reports)} benchmarks: {bounded} with an absolute bound, "
                 f"{unsupported} unsupported, {_fmt_seconds(total)} analysing")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# markdown


def _md_cell(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_code(s: str) -> str:
    # inline code that survives backticks in the text and pipes inside a table
    fence = "``" if "`" in s else "`"
    return f"{fence}{s}{fence}"


def render_markdown(reports: Sequence[Report]) -> str:
    """A Markdown section per function: signature, a table of outputs, warnings and notes."""
    parts = []
    for rep in reports:
        lines = [f"### {_md_cell(rep.function)}", ""]
        if rep.signature:
            lines += [_md_code(rep.signature), ""]
        for c in _coeffect_lines(rep):
            lines.append(f"- {_md_cell(c)}")
        if _coeffect_lines(rep):
            lines.append("")
        lines.append("| " + " | ".join(_HEADERS) + " |")
        lines.append("|" + "|".join("---" for _ in _HEADERS) + "|")
        for r in _output_rows(rep):
            lines.append("| " + " | ".join(_md_cell(c) for c in r) + " |")
        lines.append("")
        if rep.warnings:
            lines.append("**Warnings**")
            lines.append("")
            lines.extend(f"- {_md_code(w)}" for w in rep.warnings)
            lines.append("")
        contrib = _contribution_summary(rep)
        if contrib:
            lines += [_md_cell(contrib), ""]
        if rep.notes:
            lines.append("**Notes**")
            lines.append("")
            lines.extend(f"- {_md_cell(n)}" for n in rep.notes)
            lines.append("")
        lines.append(f"_Analysed in {_fmt_seconds(rep.seconds)}._")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + ("\n" if parts else "")


# ---------------------------------------------------------------------------------------------
# measurement


@dataclass
class Measurement:
    """Measured errors of one function: per output, ``max |computed - ideal|`` per sample.

    A sample's entry is 0.0 for an exact result, inf where the computed or ideal value is not
    finite while the other is (or they differ in a non-finite way). ``bounds`` are the sound
    absolute bounds at the measured sizes (filled by the caller when they differ from the
    report's; None means "use the report's").
    """

    function: str
    dims: dict[str, int]
    seed: int
    errors: list[list[float]] = field(default_factory=list)     # [output][sample]
    samples: int = 0
    requested: int = 0
    seconds: float = 0.0
    failure: str | None = None       # why nothing (or less than asked) was measured
    bounds: list[float | None] | None = None
    bounds_note: str | None = None
    bound_reasons: list[str | None] | None = None


def _size_env(fn_ir, dims: dict[str, int]) -> dict[str, int]:
    env = {k: int(v) for k, v in dims.items() if k in fn_ir.dims}
    moduli = fn_ir.moduli()
    for s in fn_ir.dims:
        if s not in env:
            m = moduli.get(s, 1)
            env[s] = max(16, m) if 16 % m == 0 else m * ((16 + m - 1) // m)
    return env


def _input_elements(fn_ir, env: dict[str, int]) -> int:
    total = 0
    for p in fn_ir.params:
        n = 1
        for d in p.value.shape:
            n *= max(int(d.evaluate(env)), 0)
        total += n
    return total


def _draw_inputs(fn_ir, env: dict[str, int], rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for p in fn_ir.params:
        shape = tuple(int(d.evaluate(env)) for d in p.value.shape)
        lo, hi = p.range if p.range else (-1.0, 1.0)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
            lo, hi = -1.0, 1.0
        kind = p.value.fmt.kind
        if kind == "bool":
            out.append(rng.random(shape) < 0.5)
        elif kind == "int":
            ilo, ihi = math.ceil(lo), math.floor(hi)
            if ilo > ihi:
                ilo, ihi = -1, 1
            out.append(rng.integers(ilo, ihi + 1, size=shape).astype(np.float64))
        else:
            out.append(rng.uniform(lo, hi, size=shape))
    return out


def _sample_error(c: Any, ideal: Any) -> float:
    """max |c - ideal| over the elements, the difference taken in mpmath (the ideal values are
    160-bit reals: rounding them to float64 first would hide sub-ulp errors of f64 programs)."""
    import mpmath

    c = np.asarray(c, dtype=np.float64).reshape(-1)
    ideal = np.asarray(ideal, dtype=object).reshape(-1)
    worst = 0.0
    with mpmath.workprec(320):  # ideal values may come from another context: keep all bits
        for cv, iv in zip(c.tolist(), ideal.tolist()):
            iv = mpmath.mpf(iv)
            if mpmath.isnan(iv) or math.isnan(cv):
                if not (mpmath.isnan(iv) and math.isnan(cv)):
                    return math.inf
                continue
            if mpmath.isinf(iv) or math.isinf(cv):
                if not (mpmath.isinf(iv) and math.isinf(cv) and (iv > 0) == (cv > 0)):
                    return math.inf
                continue
            d = float(abs(mpmath.mpf(cv) - iv))
            if d > worst:
                worst = d
    return worst


MAX_MEASURED_ELEMENTS = 4096


def measure(fn, n_samples: int = 64, dims: dict[str, int] | None = None, seed: int = 0,
            time_budget: float = 8.0) -> Measurement:
    """Run ``fn`` and ``fn.ideal`` on ``n_samples`` random inputs; per output and sample
    record ``max |computed - ideal|``.

    Inputs are uniform in each parameter's declared range (default [-1, 1]); sizes come from
    ``dims``, others default to 16 (rounded up to a multiple of a ``requires N % k == 0``
    modulus). If the requested sizes make the inputs larger than ``MAX_MEASURED_ELEMENTS``
    elements, the default sizes are used instead (the ideal interpreter is slow). Sampling stops
    when ``time_budget`` seconds are spent. Never raises for a failing run: the reason is kept in
    ``failure``.
    """
    ir = fn.ir
    t0 = time.perf_counter()
    env = _size_env(ir, dict(dims or {}))
    note = None
    try:
        small = _size_env(ir, {})
        if small != env and _input_elements(ir, env) > MAX_MEASURED_ELEMENTS:
            if _input_elements(ir, small) < _input_elements(ir, env):
                note = ("the requested sizes are too large for the ideal interpreter; measured at "
                        + ", ".join(f"{k}={v}" for k, v in small.items()))
                env = small
    except Exception:  # pragma: no cover - a size expression that cannot be evaluated
        pass
    m = Measurement(fn.name, env, seed, [[] for _ in ir.results], requested=n_samples)
    rng = np.random.default_rng(seed % (1 << 128))
    tuple_result = ir.result_is_tuple
    failed, first_failure = 0, None
    for k in range(max(n_samples, 0)):
        if k > 0 and time.perf_counter() - t0 > time_budget:
            note = _join(note, f"time budget of {time_budget:g} s reached after {k} of "
                               f"{n_samples} samples")
            break
        try:
            args = _draw_inputs(ir, env, rng)
            run_seed = (seed + k) % (1 << 63)
            with np.errstate(all="ignore"):
                comp = fn(*args, seed=run_seed)
                ideal = fn.ideal(*args, seed=run_seed, as_float=False)
            comps = comp if tuple_result else (comp,)
            ideals = ideal if tuple_result else (ideal,)
            errs = [_sample_error(c, i) for c, i in zip(comps, ideals)]
        except Exception as ex:  # noqa: BLE001 - a failing sample is reported, not raised
            failed += 1
            first_failure = first_failure or f"sample {k}: {_one_line(ex)}"
            continue
        for j, e in enumerate(errs):
            m.errors[j].append(e)
        m.samples += 1
    if failed:
        note = _join(note, f"{failed} sample(s) could not be evaluated ({first_failure})")
    m.failure = note
    m.seconds = time.perf_counter() - t0
    return m


def _join(a: str | None, b: str) -> str:
    return b if a is None else f"{a}; {b}"


def _one_line(ex: BaseException) -> str:
    s = str(ex).strip().splitlines()
    return (s[0] if s else type(ex).__name__)[:300]


# ---------------------------------------------------------------------------------------------
# source excerpts


@dataclass
class SourceView:
    """Lines of a source text shown for one function: ``text`` starts at line ``first``."""

    file: str | None
    first: int
    text: str


def function_source(fn_ir, text: str, file: str | None = None,
                    other_starts: Iterable[int] = ()) -> SourceView:
    """The lines of a function's definition in ``text`` (with its leading comment lines).

    The start is the function's span; the end is the last line any of its values points at,
    extended to the closing brace, and never past the next function's start.
    """
    lines = text.splitlines()
    if fn_ir.span is None or not lines:
        return SourceView(file, 1, text)
    start = max(1, fn_ir.span.line)
    nxt = min([s for s in other_starts if s > start] or [len(lines) + 1])
    last = max([sp.line for sp in fn_ir.spans.values()
                if sp is not None and sp.file == fn_ir.span.file and start <= sp.line < nxt]
               or [start])
    end = last
    while end < nxt - 1 and end < len(lines) and "}" not in lines[end - 1]:
        end += 1
    end = min(end, len(lines))
    while start > 1 and lines[start - 2].lstrip().startswith("#") and start - 1 >= 1:
        start -= 1
    return SourceView(file, start, "\n".join(lines[start - 1:end]))


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1d2330;background:#fbfbfd;max-width:1100px}
h1{font-size:1.4em;margin:0 0 4px}h2{font-size:1.15em;margin:32px 0 6px;padding-top:10px;
border-top:1px solid #d8dbe3}h3{font-size:1em;margin:18px 0 6px}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.sig{background:#eef1f7;padding:6px 10px;border-radius:4px;display:inline-block;
white-space:pre-wrap}
table.out{border-collapse:collapse;margin:8px 0;font-size:13px}
table.out th,table.out td{border:1px solid #d8dbe3;padding:3px 8px;text-align:left;
vertical-align:top}
table.out th{background:#eef1f7}
td.num{font-family:ui-monospace,Menlo,Consolas,monospace;text-align:right}
.src{border:1px solid #d8dbe3;border-radius:4px;background:#fff;overflow-x:auto;margin:8px 0}
.src table{border-collapse:collapse;width:100%}
.src td{padding:0 8px;white-space:pre;font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:12.5px;line-height:1.45}
.src td.ln{color:#8a90a0;text-align:right;user-select:none;border-right:1px solid #e3e5eb;
width:1%}
.src td.amt{color:#555b6b;text-align:right;width:1%;border-left:1px solid #e3e5eb}
.src tr.zero td.code{background:#f1f4f8}
.src tr.inf td.code{background:repeating-linear-gradient(45deg,#e9d7f5,#e9d7f5 4px,#f6effb 4px,
#f6effb 8px)}
.legend{display:flex;align-items:center;gap:14px;flex-wrap:wrap;font-size:12px;color:#444;
margin:4px 0 10px}
.sw{display:inline-block;width:14px;height:12px;border:1px solid #bbb;vertical-align:middle;
margin-right:4px}
.warn{color:#8a4b00}.note{color:#4a5160}.muted{color:#6b7180;font-size:12px}
.bad{color:#b00020;font-weight:600}.good{color:#1b6e20}
ul{margin:4px 0 8px 18px;padding:0}li{margin:2px 0}
nav table{font-size:13px}
"""

# colour stops for the log10 contribution scale: pale yellow -> orange -> dark red
_STOPS = [(0.0, (255, 247, 188)), (0.5, (254, 153, 41)), (1.0, (179, 0, 0))]


def _heat(t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    for (t0, c0), (t1, c1) in zip(_STOPS, _STOPS[1:]):
        if t <= t1:
            u = 0.0 if t1 == t0 else (t - t0) / (t1 - t0)
            c = tuple(round(a + (b - a) * u) for a, b in zip(c0, c1))
            return "#%02x%02x%02x" % c
    return "#%02x%02x%02x" % _STOPS[-1][1]


class _LogScale:
    """log10 colour scale over the positive finite contributions of one function."""

    def __init__(self, values: Iterable[float]):
        pos = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
        self.empty = not pos
        if pos:
            self.lo, self.hi = math.log10(min(pos)), math.log10(max(pos))
            if self.hi - self.lo < 1.0:  # at least one decade: similar amounts look alike
                self.lo = self.hi - 1.0
        else:
            self.lo, self.hi = 0.0, 1.0

    def t(self, v: float) -> float:
        return (math.log10(v) - self.lo) / (self.hi - self.lo)

    def colour(self, v: float) -> str:
        return _heat(self.t(v))


def _legend_html(scale: _LogScale, uid: str) -> str:
    parts = ['<div class="legend"><span>error contribution per line, shares of the bound '
             '(log<sub>10</sub>):</span>']
    if scale.empty:
        parts.append('<span class="muted">no line contributes a finite nonzero amount</span>')
    else:
        w, h = 260, 34
        stops = "".join(f'<stop offset="{t:.2f}" stop-color="{_heat(t)}"/>' for t, _ in
                        [(i / 10, None) for i in range(11)])
        ticks = []
        lo_d, hi_d = math.ceil(scale.lo - 1e-9), math.floor(scale.hi + 1e-9)
        decades = list(range(lo_d, hi_d + 1))
        if len(decades) > 8:
            step = math.ceil(len(decades) / 8)
            decades = decades[::step]
        labels = [(d, f"1e{d}") for d in decades]
        if not labels:
            labels = [(scale.lo, fmt_num(10 ** scale.lo, 2)),
                      (scale.hi, fmt_num(10 ** scale.hi, 2))]
        for d, lab in labels:
            x = 6 + (d - scale.lo) / (scale.hi - scale.lo) * (w - 12)
            ticks.append(f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="18" stroke="#555"/>'
                         f'<text x="{x:.1f}" y="29" font-size="10" text-anchor="middle" '
                         f'fill="#444">{html.escape(lab)}</text>')
        parts.append(
            f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="colour scale">'
            f'<defs><linearGradient id="g{uid}" x1="0" x2="1" y1="0" y2="0">{stops}'
            f'</linearGradient></defs>'
            f'<rect x="6" y="2" width="{w - 12}" height="12" fill="url(#g{uid})" '
            f'stroke="#bbb"/>{"".join(ticks)}</svg>')
        parts.append(f'<span>min {html.escape(fmt_num(10 ** scale.lo, 3))}, '
                     f'max {html.escape(fmt_num(10 ** scale.hi, 3))}</span>')
    parts.append('<span><span class="sw" style="background:#f1f4f8"></span>0</span>')
    parts.append('<span><span class="sw" style="background:#e9d7f5"></span>unbounded</span>')
    parts.append('<span><span class="sw" style="background:#fff"></span>'
                 'no recorded contribution</span>')
    parts.append("</div>")
    return "".join(parts)


def _source_html(rep: Report, view: SourceView | None, uid: str) -> str:
    if view is None:
        return '<p class="muted">(no source text available)</p>'
    contrib = {int(k): float(v) if v is not None else math.nan
               for k, v in (rep.line_contributions or {}).items()}
    detail = getattr(rep, "contributions", None) or {}
    bound = detail.get("bound")
    via = {int(r["line"]): r for r in detail.get("lines", []) if r.get("via_call") is not None}
    scale = _LogScale(contrib.values())
    # shares of the decomposed bound (the lines sum to it); older reports: of the line total
    finite_total = bound if bound else \
        sum(v for v in contrib.values() if math.isfinite(v) and v > 0)
    of_what = (f"of the bound {fmt_num(bound, 4)} (output {detail.get('output')})" if bound
               else "of the per-line total")
    rows = []
    for k, line in enumerate(view.text.splitlines()):
        n = view.first + k
        code = html.escape(line) or " "
        v = contrib.get(n)
        cls, style, amt, title = "", "", "", ""
        if v is not None:
            if not math.isfinite(v):
                cls, amt, title = "inf", "unbounded", f"line {n}: unbounded contribution"
            elif v == 0:
                cls, amt, title = "zero", "0", f"line {n}: contributes 0"
            else:
                t = scale.t(v)
                fg = "color:#fff;" if t > 0.72 else ""
                style = f' style="background:{scale.colour(v)};{fg}"'
                share = f" ({100 * v / finite_total:.3g}% {of_what})" \
                    if finite_total > 0 else ""
                amt = fmt_num(v, 3) + (f" ({100 * v / finite_total:.3g}%)"
                                       if finite_total > 0 else "")
                title = f"line {n}: contributes {fmt_num(v, 4)}{share}"
            r = via.get(n)
            if r is not None:
                amt += f" via call to {r.get('callee')}"
                title += (f"; {fmt_num(r['via_call'], 4)} of it via the call to "
                          f"{r.get('callee')} (its lines are listed below)")
        tattr = f' title="{html.escape(title)}"' if title else ""
        rows.append(f'<tr class="{cls}"{tattr}><td class="ln">{n}</td>'
                    f'<td class="code"{style}>{code}</td><td class="amt">{html.escape(amt)}</td>'
                    f'</tr>')
    where = f'<div class="muted">{html.escape(view.file)}</div>' if view.file else ""
    return (where + _legend_html(scale, uid) + '<div class="src"><table>' + "".join(rows) +
            "</table></div>" + _callee_lines_html(detail))


def _callee_lines_html(detail: dict) -> str:
    """The callee lines behind the call lines' amounts (already counted on the call lines)."""
    rows = detail.get("callee_lines") or []
    if not rows:
        return ""
    items = "".join(
        f'<li class="mono">{html.escape(str(r.get("function")))}, line {int(r["line"])}: '
        f'{html.escape(fmt_num(r["amount"], 3))} ({html.escape(_pct(r.get("share")))})</li>'
        for r in rows)
    return ('<p class="muted">via calls: the called functions\' own lines (their amounts are '
            'already in the call lines above, not counted twice):</p><ul>' + items + "</ul>")


def _plot_svg(errors: list[float], bound: float | None, title: str) -> str:
    """Scatter of per-sample max measured error (log y) with the bound as a dashed line."""
    W, H = 660, 250
    L, R, T, B = 70, 18, 24, 40
    pw, ph = W - L - R, H - T - B
    finite = [e for e in errors if math.isfinite(e) and e > 0]
    vals = finite + ([bound] if bound is not None and math.isfinite(bound) and bound > 0 else [])
    if vals:
        lo_d = math.floor(math.log10(min(vals)))
        hi_d = math.ceil(math.log10(max(vals)))
        if hi_d <= lo_d:
            hi_d = lo_d + 1
        if bound is not None and bound > 0 and math.isfinite(bound) and \
                abs(math.log10(bound) - hi_d) < 0.3:
            hi_d += 1  # keep the bound line off the top edge
    else:
        lo_d, hi_d = -17, 0
    zero_y = T + ph + 12          # exact samples: a strip under the axis
    inf_y = T - 10                # non-finite samples: a strip above the plot

    def y_of(v: float) -> float:
        return T + ph - (math.log10(v) - lo_d) / (hi_d - lo_d) * ph

    n = len(errors)

    def x_of(i: int) -> float:
        return L + (pw / 2 if n <= 1 else i / (n - 1) * pw)

    s = [f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
         f'aria-label="{html.escape(title)}" font-family="system-ui,sans-serif">',
         f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fff" stroke="#c9cdd6"/>']
    decades = list(range(lo_d, hi_d + 1))
    step = max(1, math.ceil(len(decades) / 8))
    for d in decades[::step]:
        y = T + ph - (d - lo_d) / (hi_d - lo_d) * ph
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#eceef2"/>'
                 f'<text x="{L - 6}" y="{y + 3.5:.1f}" font-size="10" text-anchor="end" '
                 f'fill="#555">1e{d}</text>')
    if n:
        for i in sorted({0, n - 1, *(range(0, n, max(1, n // 8)))}):
            x = x_of(i)
            s.append(f'<text x="{x:.1f}" y="{T + ph + 28}" font-size="10" text-anchor="middle" '
                     f'fill="#555">{i}</text>')
    s.append(f'<text x="{L + pw / 2:.1f}" y="{H - 2}" font-size="11" text-anchor="middle" '
             f'fill="#333">sample</text>')
    s.append(f'<text x="14" y="{T + ph / 2:.1f}" font-size="11" text-anchor="middle" '
             f'fill="#333" transform="rotate(-90 14 {T + ph / 2:.1f})">'
             f'max |computed − ideal|</text>')
    has_bound = bound is not None and math.isfinite(bound) and bound > 0
    if has_bound:
        y = y_of(bound)
        s.append(f'<line x1="{L}" y1="{y:.1f}" x2="{L + pw}" y2="{y:.1f}" stroke="#c0392b" '
                 f'stroke-width="1.6" stroke-dasharray="6 4"/>'
                 f'<text x="{L + pw - 4}" y="{y - 5:.1f}" font-size="11" text-anchor="end" '
                 f'fill="#c0392b">sound bound {html.escape(fmt_num(bound))}</text>')
    elif bound is not None and bound == 0:
        s.append(f'<text x="{L + pw - 4}" y="{zero_y - 16}" font-size="11" text-anchor="end" '
                 f'fill="#c0392b">sound bound 0 (exact)</text>')
    for i, e in enumerate(errors):
        x = x_of(i)
        over = bound is not None and (not math.isfinite(e) or e > bound)
        colour = "#b00020" if over else "#2c6fbb"
        if e == 0:
            s.append(f'<rect x="{x - 2:.1f}" y="{zero_y - 2}" width="4" height="4" '
                     f'fill="{colour}"><title>sample {i}: exact (0)</title></rect>')
        elif not math.isfinite(e):
            s.append(f'<path d="M{x - 3:.1f},{inf_y + 3} L{x:.1f},{inf_y - 3} L{x + 3:.1f},'
                     f'{inf_y + 3} Z" fill="{colour}"><title>sample {i}: not finite'
                     f'</title></path>')
        else:
            s.append(f'<circle cx="{x:.1f}" cy="{y_of(e):.1f}" r="2.6" fill="{colour}" '
                     f'fill-opacity="0.8"><title>sample {i}: {html.escape(fmt_num(e))}'
                     f'</title></circle>')
    if any(e == 0 for e in errors):
        s.append(f'<text x="{L - 6}" y="{zero_y + 3}" font-size="10" text-anchor="end" '
                 f'fill="#555">0</text>')
    if any(not math.isfinite(e) for e in errors):
        s.append(f'<text x="{L - 6}" y="{inf_y + 3}" font-size="10" text-anchor="end" '
                 f'fill="#555">inf</text>')
    s.append("</svg>")
    return "".join(s)


def _measure_summary(errors: list[float], bound: float | None) -> str:
    if not errors:
        return '<span class="muted">no samples</span>'
    mx = max(errors)
    txt = f"max measured {fmt_num(mx)} over {len(errors)} sample{'' if len(errors) == 1 else 's'}"
    if bound is None:
        return html.escape(txt + "; no sound bound to compare with")
    if mx <= bound:
        ratio = ""
        if bound > 0 and mx > 0:
            q = mx / bound
            ratio = f" ({100 * q:.3g}% of the bound)" if q >= 1e-3 else \
                f" (the bound is {fmt_num(1 / q, 2)} times the largest measured error)"
        return f'<span class="good">{html.escape(txt)} &le; bound {html.escape(fmt_num(bound))}' \
               f'{html.escape(ratio)}</span>'
    return f'<span class="bad">{html.escape(txt)} EXCEEDS the bound ' \
           f'{html.escape(fmt_num(bound))}</span>'


def _outputs_table_html(rep: Report) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _HEADERS)
    rows = []
    for r in _output_rows(rep):
        cells = []
        for i, c in enumerate(r):
            cls = ' class="num"' if i in (3, 4, 5) else ""
            cells.append(f"<td{cls}>{html.escape(c)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="out"><tr>{head}</tr>{"".join(rows)}</table>'


def _anchor(i: int) -> str:
    return f"f{i}"


def render_html(reports: Sequence[Report], sources: Any = None, measurements: Any = None,
                title: str = "numgrade analysis") -> str:
    """One self-contained HTML page (inline CSS and SVG, no external assets).

    ``sources`` maps a function name (or, as a list, the report's position) to a
    :class:`SourceView`, a ``(first_line, text)`` pair or the whole source text (starting at
    line 1); ``measurements`` likewise to a :class:`Measurement`. Per function: the graded
    signature, the outputs table, the source with each line coloured by its contribution to the
    final error (``rep.line_contributions``, log10 colour scale, legend), and per output a plot
    of measured error against the bound.
    """
    def pick(table, i: int, rep: Report):
        if table is None:
            return None
        if isinstance(table, (list, tuple)):
            return table[i] if i < len(table) else None
        return table.get(rep.function)

    body = [f"<h1>{html.escape(title)}</h1>"]
    if len(reports) > 1:
        rows = []
        for i, rep in enumerate(reports):
            o = rep.outputs[0] if rep.outputs else None
            more = f" (+{len(rep.outputs) - 1} more)" if len(rep.outputs) > 1 else ""
            rows.append(f'<tr><td><a href="#{_anchor(i)}">{html.escape(rep.function)}</a></td>'
                        f'<td class="num">{html.escape(fmt_num(o.abs_error if o else None))}'
                        f'{html.escape(more)}</td>'
                        f'<td class="num">{html.escape(fmt_num(o.rel_error if o else None))}</td>'
                        f'<td>{html.escape((o.reason or "") if o else "")}</td></tr>')
        body.append('<nav><table class="out"><tr><th>function</th><th>abs error (output 0)'
                    '</th><th>rel error</th><th>reason</th></tr>' + "".join(rows) +
                    "</table></nav>")
    for i, rep in enumerate(reports):
        sec = [f'<section id="{_anchor(i)}"><h2>{html.escape(rep.function)}</h2>']
        if rep.signature:
            sec.append(f'<div class="sig mono">{html.escape(rep.signature)}</div>')
        cl = _coeffect_lines(rep)
        if cl:
            sec.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in cl) + "</ul>")
        sec.append(_outputs_table_html(rep))
        if rep.warnings:
            sec.append("<h3>Warnings</h3><ul>" + "".join(
                f'<li class="warn mono">{html.escape(w)}</li>' for w in rep.warnings) + "</ul>")
        sec.append("<h3>Where the error comes from</h3>")
        sec.append(_source_html(rep, _as_view(pick(sources, i, rep), rep), str(i)))
        m = pick(measurements, i, rep)
        sec.append("<h3>Measured error against the bound</h3>")
        if m is None:
            sec.append('<p class="muted">not measured</p>')
        else:
            sec.append(_measurement_html(rep, m))
        if rep.notes:
            sec.append("<h3>Notes</h3><ul>" + "".join(
                f'<li class="note">{html.escape(n)}</li>' for n in rep.notes) + "</ul>")
        sec.append(f'<p class="muted">analysed in {html.escape(_fmt_seconds(rep.seconds))}</p>')
        sec.append("</section>")
        body.append("".join(sec))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _as_view(src: Any, rep: Report) -> SourceView | None:
    if src is None:
        return None
    if isinstance(src, SourceView):
        return src
    if isinstance(src, tuple):
        return SourceView(rep.source_file, int(src[0]), str(src[1]))
    return SourceView(rep.source_file, 1, str(src))


def _measurement_html(rep: Report, m: Measurement) -> str:
    sizes = ", ".join(f"{k}={v}" for k, v in m.dims.items())
    head = (f"{m.samples} random input(s), uniform in the declared ranges (default [-1, 1])"
            + (f", sizes {sizes}" if sizes else "") + f", seed {m.seed}; "
            f"computed = reference backend, ideal = the same program over 160-bit reals; "
            f"{_fmt_seconds(m.seconds)}.")
    out = [f'<p class="muted">{html.escape(head)}</p>']
    if m.failure:
        out.append(f'<p class="warn">{html.escape(m.failure)}</p>')
    if m.bounds_note:
        out.append(f'<p class="muted">{html.escape(m.bounds_note)}</p>')
    for j, o in enumerate(rep.outputs):
        errs = m.errors[j] if j < len(m.errors) else []
        bound, reason = o.abs_error, o.reason
        if m.bounds is not None and j < len(m.bounds):
            bound = m.bounds[j]
            if m.bound_reasons is not None and j < len(m.bound_reasons):
                reason = m.bound_reasons[j]
        label = f"output {o.index}: {o.format} {_fmt_shape(o.shape)}"
        out.append(f"<h4>{html.escape(label)}</h4>")
        if bound is None:
            out.append(f'<p class="muted">no sound bound: {html.escape(reason or "unknown")}'
                       "</p>")
        if errs:
            out.append(_plot_svg(errs, bound, label))
        out.append(f"<p>{_measure_summary(errs, bound)}</p>")
    return "".join(out)
