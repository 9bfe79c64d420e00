"""A results matrix (rows model x precision, columns tasks) as markdown, CSV, JSON, one self-contained HTML page and
terminal tables that fit any width.

Each finished cell shows the task's headline metric with its 95% interval and, against the model's baseline
(BF16) cell of the same task, the recovery with its interval, the paired verdict and the bits per weight. The
statistics come from `lowbit compare` (`compare.py`, `paired_stats.py`): this module only lays them out. A cell
that has not finished shows its state instead (pending, running, failed, cancelled).

Verdicts: "significant drop" (the paired test rejects no difference and the candidate is lower), "within
margin" (the interval of the difference lies above -margin: non-inferior), "inconclusive" (neither), "at chance"
(both at or below the task's chance level: no verdict), "baseline", and "not compared: <why>".
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from lowbit.records import write_json_atomic, write_text_atomic
from lowbit.report.paired_stats import CONFIDENCE, PairedResult

VERDICT_STYLES = {"significant drop": "bold red", "within margin": "green", "at chance": "dim"}
FILE_NAMES = {"markdown": "sweep-report.md", "csv": "sweep-report.csv", "json": "sweep-report.json",
              "html": "sweep-report.html"}


@dataclass
class MatrixCell:
    state: str  # done | pending | running | failed | cancelled
    metric: str | None = None
    value: float | None = None  # fractions, as metrics.json holds them
    ci_low: float | None = None
    ci_high: float | None = None
    n: int | None = None
    recovery: float | None = None
    recovery_low: float | None = None
    recovery_high: float | None = None
    verdict: str = ""
    bits_per_weight: float | None = None
    tokens_per_second: float | None = None
    run_dir: str = ""
    reason: str = ""  # why a cell failed, one line


@dataclass
class ResultsMatrix:
    name: str
    margin_points: float
    tasks: list[str]
    rows: list[tuple[str, str]]  # (model, precision)
    cells: dict[tuple[str, str, str], MatrixCell] = field(default_factory=dict)  # (model, precision, task)

    def cell(self, model: str, precision: str, task: str) -> MatrixCell | None:
        return self.cells.get((model, precision, task))


def verdict(paired: PairedResult) -> str:
    if paired.at_floor:
        return "at chance"
    if paired.significant and paired.difference < 0:
        return "significant drop"
    return "within margin" if paired.non_inferior else "inconclusive"


# ------------------------------------------------------------------------------------------- text


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def cell_parts(cell: MatrixCell | None) -> list[str]:
    """["71.2 [68.9, 73.4]", "rec 98.1% [96.0, 100.2]", "within margin", "4.50 b/w"], or the unfinished state."""
    if cell is None:
        return []
    if cell.state != "done":
        return [cell.state]
    parts = [f"{_pct(cell.value)} [{_pct(cell.ci_low)}, {_pct(cell.ci_high)}]"]
    if cell.recovery is not None:
        parts.append(f"rec {_pct(cell.recovery)}% [{_pct(cell.recovery_low)}, {_pct(cell.recovery_high)}]")
    if cell.verdict:
        parts.append(cell.verdict)
    if cell.bits_per_weight is not None:
        parts.append(f"{cell.bits_per_weight:.2f} b/w")
    return parts


def cell_text(cell: MatrixCell | None) -> str:
    """One line: "71.2 [68.9, 73.4]; rec 98.1% [96.0, 100.2]; within margin; 4.50 b/w"."""
    return "; ".join(cell_parts(cell))


def _explanation(matrix: ResultsMatrix) -> str:
    return (f"Each cell: headline metric (%) with its {CONFIDENCE:.0%} interval; recovery against the model's "
            f"baseline with its interval; the paired verdict (margin {matrix.margin_points:g} point(s)); bits per "
            "weight. Unfinished cells show their state.")


def _failed(matrix: ResultsMatrix) -> list[str]:
    return [f"{'/'.join(key)}: {cell.reason}" for key, cell in matrix.cells.items() if cell.state == "failed"]


def print_text(matrix: ResultsMatrix, file: Any = None, width: int | None = None) -> None:
    """The matrix in a terminal of any width (`fit.py`): each cell's parts on lines of their own, the tasks spread
    over stacked tables led by model and precision, or one block per row, when the terminal is narrow."""
    from lowbit.report.fit import Cells, fit, print_blocks

    headers = ["model", "precision", *matrix.tasks]
    rows, styles = [], []
    for model, precision in matrix.rows:
        cells = {task: matrix.cell(model, precision, task) for task in matrix.tasks}
        rows.append({"model": model, "precision": precision,
                     **{task: "\n".join(cell_parts(cell)) for task, cell in cells.items()}})
        styles.append({task: VERDICT_STYLES.get(cell.verdict, "") for task, cell in cells.items() if cell})
    layout = Cells(headers=headers, keys=["model", "precision"], rows=rows, styles=styles, left=frozenset(headers),
                   spaced=True)

    def blocks(console: Any) -> list[Any]:
        from rich.text import Text

        parts = [Text(f"Sweep {matrix.name}", style="bold", overflow="fold")]
        for part in fit(layout, console):
            parts += [Text(""), part]
        parts += [Text(""), Text(_explanation(matrix), overflow="fold")]
        failed = _failed(matrix)
        if failed:
            parts += [Text(""), Text("Failed cells:"), *(Text(f"- {line}", overflow="fold") for line in failed)]
        return parts

    print_blocks(blocks, file, width)


def render_markdown(matrix: ResultsMatrix) -> str:
    header = ["model", "precision", *matrix.tasks]
    lines = [f"# Sweep {matrix.name}", "", _explanation(matrix), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, precision in matrix.rows:
        texts = [cell_text(matrix.cell(model, precision, task)).replace("|", "/") for task in matrix.tasks]
        lines.append("| " + " | ".join([model, precision, *texts]) + " |")
    failed = _failed(matrix)
    if failed:
        lines += ["", "Failed cells:", *(f"- {line}" for line in failed)]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("model", "precision", "task", "state", "metric", "value", "ci_low", "ci_high", "n", "recovery",
              "recovery_low", "recovery_high", "verdict", "bits_per_weight", "tokens_per_second", "run_dir", "reason")


def render_csv(matrix: ResultsMatrix) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for model, precision in matrix.rows:
        for task in matrix.tasks:
            cell = matrix.cell(model, precision, task)
            if cell is not None:
                values = asdict(cell)
                writer.writerow([model, precision, task,
                                 *("" if values[k] is None else values[k] for k in CSV_FIELDS[3:])])
    return out.getvalue()


def to_json(matrix: ResultsMatrix) -> dict[str, Any]:
    return {"name": matrix.name, "margin_points": matrix.margin_points, "confidence": CONFIDENCE,
            "tasks": matrix.tasks, "rows": [{"model": m, "precision": p} for m, p in matrix.rows],
            "cells": [{"model": m, "precision": p, "task": t, **asdict(cell)}
                      for (m, p, t), cell in matrix.cells.items()]}


def render_html(matrix: ResultsMatrix) -> str:
    from lowbit.report.html import STYLE, number_html

    head = "".join(f"<th>{escape(h)}</th>" for h in ("model", "precision", *matrix.tasks))
    rows = []
    for model, precision in matrix.rows:
        tds = [f"<td>{escape(model)}</td>", f"<td>{escape(precision)}</td>"]
        for task in matrix.tasks:
            cell = matrix.cell(model, precision, task)
            kind = "" if cell is None else ("verdict-fail" if cell.verdict == "significant drop" else
                                           "verdict-pass" if cell.verdict == "within margin" else "number")
            title = f' title="{escape(cell.reason or cell.run_dir)}"' if cell is not None else ""
            tds.append(f'<td class="{kind}"{title}>{number_html(cell_text(cell))}</td>')
        rows.append("<tr>" + "".join(tds) + "</tr>")
    failed = [f"<li><code>{escape('/'.join(key))}</code>: {escape(cell.reason)}</li>"
              for key, cell in matrix.cells.items() if cell.state == "failed"]
    body = [f"<h1>Sweep {escape(matrix.name)}</h1>",
            f'<p class="settings">Each cell: headline metric (%) with its {CONFIDENCE:.0%} interval; recovery '
            "against the model's baseline with its interval; the paired verdict (non-inferiority margin "
            f"{matrix.margin_points:g} point(s)); bits per weight. Unfinished cells show their state.</p>",
            f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>']
    if failed:
        body += ["<h2>Failed cells</h2><ul>", *failed, "</ul>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>Sweep {escape(matrix.name)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write_matrix(matrix: ResultsMatrix, out_dir: Path) -> list[Path]:
    """Every format rendered first, then written atomically."""
    contents = {"markdown": render_markdown(matrix), "csv": render_csv(matrix), "json": to_json(matrix),
                "html": render_html(matrix)}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in contents.items():
        path = out_dir / FILE_NAMES[name]
        (write_json_atomic if name == "json" else write_text_atomic)(path, content)
        written.append(path)
    return written
