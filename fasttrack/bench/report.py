"""Bench reports: a markdown and an HTML page with a speed chart (PNG) beside the JSON rows.

`write_report(result, stem)` writes stem.md, stem.html and stem.png from the dict that
`fasttrack bench` saves as JSON ({"facts": ..., "rows": [...]}). The chart has one horizontal bar
per row, grouped by case (section / shape / op / pass), in milliseconds on a log axis, the eager
reference in grey and fasttrack in colour, so the speedups read at a glance.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

_LEAD = ["section", "shape", "op", "name", "impl", "pass", "targets"]
_MEAS = ["ms", "fps", "tflops", "peak_mb", "speedup", "mem_ratio"]


def _columns(rows):
    keys = [k for k in _LEAD if any(k in r for r in rows)]
    keys += [k for k in _MEAS if any(k in r for r in rows)]
    return keys


def _cell(v):
    if isinstance(v, float):
        return "nan" if math.isnan(v) else (f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
    return "" if v is None else str(v)


def _label(r) -> str:
    return " / ".join(str(r[k]) for k in ("section", "shape", "op", "name", "pass") if r.get(k) not in (None, ""))


def markdown(result: dict, chart_name: str | None = None) -> str:
    facts, rows = result["facts"], result["rows"]
    out = [f"# fasttrack bench on {facts.get('device_name')} ({facts.get('device')})", "",
           f"torch {facts.get('torch')}, triton {facts.get('triton')}, python {facts.get('python')}, "
           f"CUDA extension: {facts.get('has_cuda_ext')}, {facts.get('date')}", ""]
    if chart_name:
        out += [f"![speed chart]({chart_name})", ""]
    by_section: dict[str, list] = {}
    for r in rows:
        by_section.setdefault(r.get("section", "-"), []).append(r)
    for section, srows in by_section.items():
        cols = _columns(srows)
        out += [f"## {section}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in srows]
        out.append("")
    return "\n".join(out)


def html_page(result: dict, chart_name: str | None = None) -> str:
    facts, rows = result["facts"], result["rows"]
    title = html.escape(f"fasttrack bench on {facts.get('device_name')} ({facts.get('device')})")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h1>{title}</h1><p>torch {html.escape(str(facts.get('torch')))}, triton "
             f"{html.escape(str(facts.get('triton')))}, {html.escape(str(facts.get('date')))}</p>"]
    if chart_name:
        parts.append(f"<img src='{html.escape(chart_name)}' alt='speed chart' style='max-width:100%'>")
    sections: dict[str, list] = {}
    for r in rows:
        sections.setdefault(r.get("section", "-"), []).append(r)
    for section, srows in sections.items():
        cols = _columns(srows)
        parts.append(f"<h2>{html.escape(section)}</h2><table><tr>" +
                     "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
        for r in srows:
            parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def speed_chart(result: dict, path) -> bool:
    """Horizontal bars of ms per row (log scale). Returns False when matplotlib is missing."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return False
    del matplotlib
    def ms_of(r):
        # ops/recorder rows time one call ("ms"); tracker rows one frame ("ms_per_frame").
        v = r.get("ms", r.get("ms_per_frame"))
        return v if isinstance(v, (int, float)) and v == v and v > 0 else None

    rows = [dict(r, ms=ms_of(r)) for r in result["rows"] if ms_of(r) is not None]
    if not rows:
        return False
    labels = [f"{_label(r)}: {r.get('impl', '')}" + (f" x{r['targets']}" if r.get("targets") else "")
              for r in rows]
    def color(r) -> str:
        impl = str(r.get("impl") or "")
        name = str(r.get("name") or "")
        if impl in ("reference", "eager", "unpatched") or name.endswith((" eager", " unpatched")):
            return "#999999"
        return "#ff7f0e" if "no maps" in impl else "#1f77b4"
    colors = [color(r) for r in rows]
    fig = Figure(figsize=(10, 0.28 * len(rows) + 1.2))
    ax = fig.add_subplot(111)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [r["ms"] for r in rows], color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("milliseconds (log scale; grey = eager reference, blue = fasttrack, orange = peers without maps)")
    facts = result["facts"]
    ax.set_title(f"fasttrack bench: {facts.get('device_name')} ({facts.get('device')})", fontsize=9)
    for yi, r in zip(y, rows):
        txt = f"{r['ms']:.1f} ms" + (f"  x{r['speedup']:.1f}" if r.get("speedup") else "")
        ax.text(r["ms"], yi, " " + txt, va="center", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def write_report(result: dict, stem) -> list[Path]:
    """Write stem.md, stem.html and (with matplotlib) stem.png; returns the paths written."""
    stem = Path(stem)
    png = stem.with_suffix(".png")
    have_chart = speed_chart(result, png)
    chart = png.name if have_chart else None
    md, page = stem.with_suffix(".md"), stem.with_suffix(".html")
    md.write_text(markdown(result, chart))
    page.write_text(html_page(result, chart))
    return [md, page] + ([png] if have_chart else [])
