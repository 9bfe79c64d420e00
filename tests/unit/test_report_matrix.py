"""The sweep's results matrix: the three-way paired verdict from lowbit compare's statistics, and its files."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from lowbit.report.matrix import MatrixCell, ResultsMatrix, cell_parts, cell_text, print_text, render_csv
from lowbit.report.matrix import render_html, render_markdown
from lowbit.report.matrix import verdict, write_matrix
from lowbit.report.paired_stats import compare_paired


def paired(baseline_right: int, candidate_right: int, n: int = 400, chance: float = 0.0):
    """n paired 0/1 scores: the candidate is right on a subset of the baseline's right answers (or a superset)."""
    baseline = np.zeros(n)
    baseline[:baseline_right] = 1
    candidate = np.zeros(n)
    candidate[:candidate_right] = 1
    return compare_paired(baseline, candidate, margin_points=1.0, chance=chance)


def test_the_verdict_is_a_drop_within_margin_inconclusive_or_at_chance():
    assert verdict(paired(300, 250)) == "significant drop"
    assert verdict(paired(300, 300)) == "within margin"
    assert verdict(paired(300, 296, n=120)) == "inconclusive"
    assert verdict(paired(10, 8, chance=0.25)) == "at chance"


def matrix() -> ResultsMatrix:
    m = ResultsMatrix(name="t", margin_points=1.0, tasks=["mmlu-redux", "math500"],
                      rows=[("tiny", "bf16"), ("tiny", "nvfp4")])
    m.cells["tiny", "bf16", "mmlu-redux"] = MatrixCell(state="done", metric="accuracy", value=0.7, ci_low=0.65,
                                                      ci_high=0.75, n=300, verdict="baseline", bits_per_weight=16.0)
    m.cells["tiny", "nvfp4", "mmlu-redux"] = MatrixCell(
        state="done", metric="accuracy", value=0.68, ci_low=0.63, ci_high=0.73, n=300, recovery=0.971,
        recovery_low=0.95, recovery_high=0.99, verdict="significant drop", bits_per_weight=4.5)
    m.cells["tiny", "bf16", "math500"] = MatrixCell(state="running")
    m.cells["tiny", "nvfp4", "math500"] = MatrixCell(state="failed", reason="exit 2: lowbit: error: no data")
    return m


def test_each_format_holds_every_cell_and_unfinished_ones_show_their_state(tmp_path):
    m = matrix()
    assert cell_text(m.cell("tiny", "nvfp4", "mmlu-redux")) == \
        "68.0 [63.0, 73.0]; rec 97.1% [95.0, 99.0]; significant drop; 4.50 b/w"
    markdown = render_markdown(m)
    assert "| tiny | bf16 | 70.0 [65.0, 75.0]; baseline; 16.00 b/w | running |" in markdown
    assert "- tiny/nvfp4/math500: exit 2: lowbit: error: no data" in markdown
    rows = list(csv.DictReader(io.StringIO(render_csv(m))))
    assert len(rows) == 4 and rows[2]["recovery"] == "0.971" and rows[3]["state"] == "failed"
    html = render_html(m)
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")
    assert "significant drop" in html and "verdict-fail" in html
    written = write_matrix(m, tmp_path)
    assert sorted(p.name for p in written) == ["sweep-report.csv", "sweep-report.html", "sweep-report.json",
                                               "sweep-report.md"]
    data = json.loads((tmp_path / "sweep-report.json").read_text())
    assert data["tasks"] == ["mmlu-redux", "math500"] and len(data["cells"]) == 4


def wide_matrix() -> ResultsMatrix:
    """Two models, three precisions and six tasks: every finished cell with an interval, recovery and verdict."""
    tasks = ["mmlu-redux", "math500", "aime25", "ifeval", "livecodebench", "ruler-niah-32k"]
    rows = [(model, precision) for model in ("Qwen3-4B", "Qwen3-30B-A3B-Instruct-2507")
            for precision in ("bf16", "nvfp4", "w4a4-nvfp4")]
    m = ResultsMatrix(name="wide", margin_points=1.0, tasks=tasks, rows=rows)
    for index, (model, precision) in enumerate(rows):
        for column, task in enumerate(tasks):
            value = 0.5 + 0.01 * index + 0.03 * column
            cell = MatrixCell(state="done", metric="accuracy", value=value, ci_low=value - 0.031,
                              ci_high=value + 0.029, n=500, bits_per_weight=16.0 if precision == "bf16" else 4.5)
            if precision == "bf16":
                cell.verdict = "baseline"
            else:
                cell.recovery, cell.recovery_low, cell.recovery_high = 0.9 + 0.01 * column, 0.87, 0.99
                cell.verdict = "significant drop" if column % 2 else "within margin"
            m.cells[model, precision, task] = cell
    m.cells["Qwen3-4B", "nvfp4", "ifeval"] = MatrixCell(state="failed", reason="exit 1: out of memory")
    return m


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_the_terminal_matrix_fits_the_width_and_keeps_every_figure(width):
    m = wide_matrix()
    out = io.StringIO()
    print_text(m, out, width)
    printed = out.getvalue()
    assert max(len(line) for line in printed.splitlines()) <= width and "…" not in printed
    for cell in m.cells.values():
        for part in cell_parts(cell):  # each figure with its interval, each verdict, each state, on one line
            assert part in printed, part
    for model, precision in m.rows:
        assert model in printed and precision in printed
    assert "- Qwen3-4B/nvfp4/ifeval: exit 1: out of memory" in printed
