"""Render the report: one self-contained report.html (figures embedded as base64 PNG, opens offline),
report.md with the same tables and links to figures/, and the numbers of every table for metrics.json.

The report is a list of :class:`Section` s; each holds blocks in order: paragraphs, warning boxes,
tables (:class:`microcal_hpc.report.tables.Table`), figures and preformatted text.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from microcal_hpc.report.tables import Table


@dataclass
class Paragraph:
    text: str


@dataclass
class Box:
    """A visible warning box (missing or failed jobs, contract problems)."""

    title: str
    lines: list[str]
    kind: str = "warning"  # warning | ok


@dataclass
class Figure:
    name: str  # file name below figures/
    path: Path  # absolute path of the PNG
    caption: str
    half: bool = False  # HTML: half the page width (two such figures side by side)


@dataclass
class Pre:
    title: str
    text: str


Block = Union[Paragraph, Box, Table, Figure, Pre]


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    subtitle: str
    sections: list[Section]

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


# ----------------------------------------------------------------------------------------------
# Value formatting (the same for HTML and Markdown)


def fmt(value: Any, key: str = "") -> str:
    """A table cell: 3 decimals; mean ± std; [low, high] intervals; '—' for missing values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict) and "mean" in value:
        return f"{fmt(value['mean'], key)} ± {value.get('std', 0.0):.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        signed = key in ("diff",) or key.startswith("diff")
        return f"[{value[0]:+.3f}, {value[1]:+.3f}]" if signed or min(value) < 0 else f"[{value[0]:.3f}, {value[1]:.3f}]"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if key == "p_value":
            return "< 0.001" if value < 0.001 else f"{value:.3f}"
        if key == "diff" or key.startswith("diff"):
            return f"{value:+.3f}"
        return f"{value:.3f}"
    return str(value)


def _row_value(row: dict[str, Any], key: str) -> str:
    return fmt(row.get(key), key)


# ----------------------------------------------------------------------------------------------
# HTML

CSS = """
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; margin: 24px auto; max-width: 1400px; color: #222;
       line-height: 1.45; padding: 0 16px; }
h1 { font-size: 1.7em; margin-bottom: 0.1em; }
h2 { font-size: 1.35em; border-bottom: 2px solid #1f77b4; padding-bottom: 3px; margin-top: 1.8em; }
h3 { font-size: 1.08em; margin: 1.3em 0 0.3em; }
.subtitle { color: #555; margin-top: 0; }
nav { background: #f4f6f9; padding: 8px 12px; border-radius: 4px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 6px 0 4px; font-size: 0.82em; }
table.wide { font-size: 0.76em; }
th, td { border: 1px solid #c8ccd2; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eef1f5; text-align: center; white-space: normal; }
td.text { text-align: left; }
td.long { white-space: normal; max-width: 520px; }
.table { overflow-x: auto; }
tr.best td { font-weight: bold; background: #fff7e6; }
tr.failed td { background: #fde8e8; }
tr.summary td { border-top: 2px solid #777; font-weight: bold; }
.basis { color: #444; font-size: 0.85em; margin: 0 0 2px; }
.note { color: #555; font-size: 0.82em; margin: 2px 0 10px; }
.box { border: 2px solid #d62728; background: #fff3f3; padding: 8px 14px; border-radius: 4px; margin: 10px 0; }
.box.ok { border-color: #2ca02c; background: #f1fbf1; }
.box h3 { margin-top: 0.2em; }
.box ul { margin: 4px 0; padding-left: 20px; font-size: 0.9em; }
figure { margin: 12px 0 18px; }
figure.half { display: inline-block; width: 48%; margin-right: 1.5%; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.88em; color: #333; margin-top: 4px; max-width: 1100px; }
pre { background: #f6f8fa; border: 1px solid #ddd; padding: 8px; font-size: 0.8em; max-height: 420px; overflow: auto; }
details summary { cursor: pointer; font-weight: bold; margin: 8px 0; }
"""


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def numeric_columns(t: Table) -> set[str]:
    """Keys of the columns whose values are all numbers (right-aligned); text columns are left-aligned."""
    out = set()
    for c in t.columns:
        vals = [r.get(c.key) for r in t.rows if r.get(c.key) is not None]
        if vals and all(isinstance(v, (int, float, dict, list, tuple)) and not isinstance(v, bool) for v in vals):
            out.add(c.key)
    return out


def table_html(t: Table) -> str:
    out = [f'<div class="table" id="table-{_esc(t.key)}">', f"<h3>{_esc(t.title)}</h3>",
           f'<p class="basis">Based on: {_esc(t.basis)}</p>',
           '<table class="wide">' if len(t.columns) >= 12 else "<table>", "<thead>"]
    if any(c.group for c in t.columns):
        cells, i, n = [], 0, len(t.columns)
        while i < n:
            c = t.columns[i]
            if not c.group:
                cells.append(f'<th rowspan="2">{_esc(c.header)}</th>')
                i += 1
                continue
            j = i
            while j < n and t.columns[j].group == c.group:
                j += 1
            cells.append(f'<th colspan="{j - i}">{_esc(c.group)}</th>')
            i = j
        out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("<tr>" + "".join(f"<th>{_esc(c.header)}</th>" for c in t.columns if c.group) + "</tr>")
    else:
        out.append("<tr>" + "".join(f"<th>{_esc(c.header)}</th>" for c in t.columns) + "</tr>")
    out.append("</thead><tbody>")
    if not t.rows:
        out.append(f'<tr><td class="text" colspan="{len(t.columns)}">no data in this run</td></tr>')
    numeric = numeric_columns(t)
    for row in t.rows:
        cls = "best" if row.get("best") else "failed" if row.get("failed") else \
            "summary" if isinstance(row.get("fold"), str) else ""
        cells = []
        for c in t.columns:
            v = _row_value(row, c.key)
            cls_td = "" if c.key in numeric else ' class="text long"' if len(v) > 30 else ' class="text"'
            cells.append(f"<td{cls_td}>{_esc(v)}</td>")
        out.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>" if cls else "<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if t.note:
        out.append(f'<p class="note">{_esc(t.note)}</p>')
    out.append("</div>")
    return "\n".join(out)


def figure_html(f: Figure, embed: bool = True) -> str:
    if embed:
        data = base64.b64encode(f.path.read_bytes()).decode("ascii")
        src = f"data:image/png;base64,{data}"
    else:
        src = f"figures/{f.name}"
    cls = ' class="half"' if f.half else ""
    return (f'<figure id="fig-{_esc(Path(f.name).stem)}"{cls}><img src="{src}" alt="{_esc(f.caption)}">'
            f"<figcaption>{_esc(f.caption)}</figcaption></figure>")


def render_html(report: Report, embed: bool = True) -> str:
    """The whole page; with ``embed`` every figure is a base64 data URI (self-contained)."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_esc(report.title)}</title>", f"<style>{CSS}</style></head><body>",
             f"<h1>{_esc(report.title)}</h1>", f'<p class="subtitle">{_esc(report.subtitle)}</p>',
             "<nav>" + "".join(f'<a href="#{s.id}">{_esc(s.title)}</a>' for s in report.sections) + "</nav>"]
    for s in report.sections:
        parts.append(f'<section id="{s.id}"><h2>{_esc(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Paragraph):
                parts.append(f"<p>{_esc(b.text)}</p>")
            elif isinstance(b, Box):
                cls = "box ok" if b.kind == "ok" else "box"
                items = "".join(f"<li>{_esc(x)}</li>" for x in b.lines)
                parts.append(f'<div class="{cls}"><h3>{_esc(b.title)}</h3>' + (f"<ul>{items}</ul>" if items else "") + "</div>")
            elif isinstance(b, Table):
                parts.append(table_html(b))
            elif isinstance(b, Figure):
                parts.append(figure_html(b, embed))
            elif isinstance(b, Pre):
                parts.append(f"<details><summary>{_esc(b.title)}</summary><pre>{_esc(b.text)}</pre></details>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------------
# Markdown


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def table_markdown(t: Table) -> str:
    heads = [f"{c.group}: {c.header}" if c.group else c.header for c in t.columns]
    numeric = numeric_columns(t)
    lines = [f"### {t.title}", "", f"*Based on: {t.basis}*", "",
             "| " + " | ".join(_md_cell(h) for h in heads) + " |",
             "|" + "|".join("---:" if c.key in numeric else "---" for c in t.columns) + "|"]
    for row in t.rows:
        cells = [_md_cell(_row_value(row, c.key)) for c in t.columns]
        if row.get("best"):  # as in the HTML: the best row in bold
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    if not t.rows:
        lines.append("| no data in this run |" + " |" * (len(heads) - 1))
    if t.note:
        lines += ["", f"{t.note}"]
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """The same sections and tables as Markdown, figures as links to figures/*.png."""
    out = [f"# {report.title}", "", report.subtitle, ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Paragraph):
                out += [b.text, ""]
            elif isinstance(b, Box):
                out += [f"> **{b.title}**", ">"] + [f"> - {x}" for x in b.lines] + [""]
            elif isinstance(b, Table):
                out += [table_markdown(b)]
            elif isinstance(b, Figure):
                out += [f"![{b.caption}](figures/{b.name})", "", f"*{b.caption}*", ""]
            elif isinstance(b, Pre):
                out += [f"<details><summary>{b.title}</summary>", "", "```", b.text.rstrip(), "```", "", "</details>", ""]
    return "\n".join(out) + "\n"


def figure_list(report: Report) -> list[dict[str, str]]:
    """``{file, caption}`` of every figure, for metrics.json."""
    return [{"file": f"figures/{f.name}", "caption": f.caption} for f in report.figures()]

