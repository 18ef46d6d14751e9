"""Bench reports: a console table, a markdown and an HTML page, and a chart (PNG).

`write_report(result, stem)` writes stem.md, stem.html and stem.png from the dict that
`fasttrack bench` saves as JSON ({"facts": ..., "rows": [...]}). Tables: one per section, with
every numeric column of its rows (and a legend of what each column means). The chart: one panel
per time unit (ms per call, ms per UNet step, ms per frame: times of different work never share
an axis) and a panel of peak allocated MB, horizontal bars on log axes, the reference in grey,
fasttrack in blue, other implementations (map-free floors, torch.compile) in orange.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

from .harness import UNITS

_LEAD = ["shape", "op", "name", "impl", "pass", "phase", "targets", "unit"]
_MEASURES = ["ms", "runs", "frames_per_s", "target_frames_per_s", "ops_per_frame", "host_reads",
             "host_writes", "host_ms", "gflops", "tflops", "peak_allocated_mb", "speedup",
             "mem_ratio", "rel_err"]
_TAIL = ["dtype", "note", "error"]
# Not table columns: the section is the table's heading, the device and the thread count are
# in the facts, the role is the chart's colour (and reads from impl / name).
_HIDDEN = {"section", "device", "role"}

LEGEND = {
    "ms": "median milliseconds per timed call of the row's unit (device synchronized inside)",
    "runs": "timed calls behind the median",
    "frames_per_s": "frames per second, one target per frame (1000 / ms)",
    "target_frames_per_s": "target-frames per second: K targets tracked per frame x frames per "
                           "second (1000 K / ms)",
    "ops_per_frame": "aten ops dispatched in one update_batch (one extra untimed frame under "
                     "FrameWatch, after the timed ones)",
    "host_reads": "host reads in that frame (device -> host copies, .item() and the like: each "
                  "one a host sync; the frame's read of its boxes included)",
    "host_writes": "host writes in that frame (host -> device copies, torch.tensor of host data; "
                   "the frame's upload included)",
    "host_ms": "wall ms of that frame under FrameWatch: an upper bound of its host time (the "
               "watch runs Python per op; on a CUDA device it includes the wait for the device "
               "in the final read); ms is the same update unwatched",
    "gflops": "GFLOPs of one timed call (algorithmic count)",
    "tflops": "achieved TFLOP/s (gflops / ms)",
    "peak_allocated_mb": "peak allocated MB: the peak of live tensor memory above the level at "
                         "the start of one untimed call (CUDA allocator peak; CPU: torch.profiler "
                         "allocation events)",
    "speedup": "the reference row's ms / this row's ms (same case)",
    "mem_ratio": "this row's peak allocated MB / the reference row's (same case)",
    "rel_err": "relative Frobenius difference of fasttrack's harmonized map from the eager one's",
    "us_per_call": "host: microseconds per op call, the fastest of interleaved batches (Triton "
                   "launches stubbed where the launch column says so)",
    "sdpa_us": "host: microseconds per SDPA call on the same tensors, batches interleaved with the op's",
    "x_sdpa": "host: us_per_call / sdpa_us",
    "wall_us": "host, CUDA: microseconds of one synchronized call (fastest of 20)",
    "kernel_us": "host, CUDA: microseconds of the call's kernels (torch.profiler)",
    "host_us": "host, CUDA: wall_us - kernel_us",
    "learning_steps": "learning steps in one init call",
    "ms_per_learning_step": "ms / learning_steps",
    "gmacs": "multiply-accumulates of one step, in G",
    "paper_gflops": "the paper's GFLOPs figure for the same model",
}


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def columns(rows: list[dict]) -> list[str]:
    """The columns of a table of `rows`: identifying fields, then every numeric field (known
    measures first), then dtype / note / error."""
    present = {k for r in rows for k in r} - _HIDDEN
    numeric = {k for r in rows for k, v in r.items() if _numeric(v)} - set(_LEAD) - _HIDDEN
    keys = [k for k in _LEAD if k in present]
    keys += [k for k in _MEASURES if k in numeric] + sorted(numeric - set(_MEASURES))
    keys += [k for k in _TAIL if k in present]
    return keys + sorted(present - set(keys))


def cell(v) -> str:
    """A table cell: 4 significant digits, small numbers in exponent form (3e-07 is not 0.0)."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and abs(v) < 1e-2:
            return f"{v:.2e}"
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def _sections(rows) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(r.get("section", "-"), []).append(r)
    return out


def text_table(rows: list[dict]) -> str:
    """A fixed-width console table of `rows` (the report's columns, errors left out)."""
    if not rows:
        return "(no rows)"
    keys = [k for k in columns(rows) if k != "error"]
    cells = [[cell(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    return "\n".join([line, "-" * len(line)] + ["  ".join(c.ljust(w) for c, w in zip(cs, widths)) for cs in cells])


def _title(facts) -> str:
    return f"fasttrack bench on {facts.get('device_name')} ({facts.get('device')})"


def _subtitle(facts) -> str:
    return (f"torch {facts.get('torch')} ({facts.get('torch_threads')} CPU threads), triton "
            f"{facts.get('triton')}, python {facts.get('python')}, CUDA extension: "
            f"{facts.get('has_cuda_ext')}, {facts.get('date')}")


def markdown(result: dict, chart_name: str | None = None) -> str:
    """The report as markdown: facts, the chart, one table per section with its legend."""
    facts = result["facts"]
    out = [f"# {_title(facts)}", "", _subtitle(facts), ""]
    if chart_name:
        out += [f"![bench chart]({chart_name})", ""]
    for section, rows in _sections(result["rows"]).items():
        cols = columns(rows)
        out += [f"## {section}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        out += ["| " + " | ".join(cell(r.get(c)).replace("|", "/") for c in cols) + " |" for r in rows]
        out += [""] + [f"- `{c}`: {LEGEND[c]}" for c in cols if c in LEGEND] + [""]
    return "\n".join(out)


def html_page(result: dict, chart_name: str | None = None) -> str:
    """The report as one HTML page (same tables and legends as `markdown`)."""
    facts, esc = result["facts"], html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(_title(facts))}</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             "td:first-child,th:first-child{text-align:left}</style></head><body>",
             f"<h1>{esc(_title(facts))}</h1><p>{esc(_subtitle(facts))}</p>"]
    if chart_name:
        parts.append(f"<img src='{esc(chart_name)}' alt='bench chart' style='max-width:100%'>")
    for section, rows in _sections(result["rows"]).items():
        cols = columns(rows)
        parts.append(f"<h2>{esc(section)}</h2><table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(cell(r.get(c)))}</td>" for c in cols) + "</tr>" for r in rows]
        parts.append("</table><ul>" + "".join(f"<li><code>{esc(c)}</code>: {esc(LEGEND[c])}</li>"
                                             for c in cols if c in LEGEND) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def row_label(r) -> str:
    """What a row measures, in one line: "ops / SD-32 / attention / torch / fwd", "... x4"."""
    keys = ("section", "shape", "op", "name", "impl", "pass", "phase")
    return " / ".join(str(r[k]) for k in keys if r.get(k) not in (None, "")) + (
        f" x{r['targets']}" if r.get("targets") else "")


def _positive(r, key):
    v = r.get(key)
    return _numeric(v) and math.isfinite(v) and v > 0


def panels(rows: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """The chart's panels: (title, row key, rows) for each unit's times, then peak allocated MB."""
    out = [(f"ms per {u}", "ms", [r for r in rows if r.get("unit") == u and _positive(r, "ms")]) for u in UNITS]
    out.append(("peak allocated MB", "peak_allocated_mb", [r for r in rows if _positive(r, "peak_allocated_mb")]))
    return [p for p in out if p[2]]


_COLORS = {"reference": "#999999", "fasttrack": "#1f77b4", "other": "#ff7f0e"}


def chart(result: dict, path) -> list[str] | None:
    """Write the chart (module docstring) to `path`; returns the panel titles, or None when
    matplotlib is missing or no row has a time or a memory figure."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    ps = panels(result["rows"])
    if not ps:
        return None
    heights = [0.22 * len(p[2]) + 0.9 for p in ps]
    fig = Figure(figsize=(10, sum(heights) + 0.8), layout="constrained")
    axes = fig.subplots(len(ps), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    for ax, (title, key, rows) in zip(axes, ps):
        y = list(range(len(rows)))[::-1]
        values = [r[key] for r in rows]
        ax.barh(y, values, color=[_COLORS.get(r.get("role"), "#1f77b4") for r in rows])
        # Bars on a log axis start at its left edge: a fixed decade below the smallest value
        # keeps their lengths comparable (log ratios); the right margin leaves room for text.
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 10, max(values) * 4)
        ax.set_yticks(y)
        ax.set_yticklabels([row_label(r) for r in rows], fontsize=6)
        ratio, meaning = ("speedup", "speedup over") if key == "ms" else ("mem_ratio", "peak / peak of")
        ax.set_title(f"{title} (log scale; grey: reference, blue: fasttrack, orange: other; "
                     f"xN: {meaning} the reference)", fontsize=8)
        for yi, r in zip(y, rows):
            txt = cell(r[key]) + (f"  x{r[ratio]:.2f}" if _numeric(r.get(ratio)) else "")
            ax.text(r[key], yi, " " + txt, va="center", fontsize=5)
    fig.suptitle(_title(result["facts"]), fontsize=9)
    fig.savefig(path, dpi=110)
    return [p[0] for p in ps]


def write_report(result: dict, stem) -> list[Path]:
    """Write stem.md, stem.html and (with matplotlib) stem.png; returns the paths written."""
    stem = Path(stem)
    png = stem.with_suffix(".png")
    name = png.name if chart(result, png) else None
    md, page = stem.with_suffix(".md"), stem.with_suffix(".html")
    md.write_text(markdown(result, name))
    page.write_text(html_page(result, name))
    return [md, page] + ([png] if name else [])
