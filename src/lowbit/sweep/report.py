"""`lowbit sweep report`: the sweep's results matrix, from its run directories, through `lowbit compare`.

For each model and task, the finished cells are compared with the model's baseline cell (the precision named
`bf16`, else the first precision that evaluates the model's own source checkpoint) by
`lowbit.report.compare.compare_runs`; the matrix (`lowbit.report.matrix`) lays the rows out. Written to
`<sweep out>/report/sweep-report.{md,csv,json,html}`, also when `lowbit sweep run` ends with every job finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from lowbit.errors import UsageError
from lowbit.report.matrix import MatrixCell, ResultsMatrix, print_text, verdict, write_matrix
from lowbit.sweep.jobs import JobState
from lowbit.sweep.plan import Cell, Plan
from lowbit.sweep.spec import SOURCE

REPORT_DIR = "report"


def baseline_precision(plan: Plan, model: str) -> str | None:
    precisions = plan.spec.models[model].precisions
    if "bf16" in precisions:
        return "bf16"
    return next((name for name in precisions if plan.spec.precisions[name].checkpoint == SOURCE), None)


def build_matrix(plan: Plan, margin: float) -> ResultsMatrix:
    from lowbit.sweep.status import job_statuses

    statuses = {s.job.name: s for s in job_statuses(plan, refresh=False)}
    tasks = list(dict.fromkeys(cell.task for cell in plan.cells))
    rows = list(dict.fromkeys((cell.model, cell.precision) for cell in plan.cells))
    matrix = ResultsMatrix(name=plan.spec.name, margin_points=margin, tasks=tasks, rows=rows)
    columns: dict[tuple[str, str], list[Cell]] = {}
    for cell in plan.cells:
        columns.setdefault((cell.model, cell.task), []).append(cell)
    for (model, task), cells in columns.items():
        finished = [c for c in cells if statuses[c.job.name].state == JobState.DONE]
        for cell in cells:
            status = statuses[cell.job.name]
            if status.state != JobState.DONE:
                matrix.cells[cell.model, cell.precision, task] = MatrixCell(
                    state=status.state.value, reason=status.reason, run_dir=cell.job.output_dir)
        _fill_column(matrix, model, task, finished, baseline_precision(plan, model), margin)
    for (model, precision, task), entry in matrix.cells.items():
        emulate = plan.spec.precisions[precision].emulate or {}
        if entry.state == "done" and entry.bits_per_weight is None and emulate.get("weight_quant"):
            entry.bits_per_weight = _label_bits(str(emulate["weight_quant"]))
    return matrix


def _label_bits(label: str) -> float | None:
    """Bits per weight of an emulated weight format (int4_g128 -> int4 with groups of 128)."""
    from lowbit.report.bits import bits_per_weight

    return bits_per_weight(label.replace("_g", "-g"), None).bits


def _fill_column(matrix: ResultsMatrix, model: str, task: str, finished: list[Cell], baseline: str | None,
                 margin: float) -> None:
    from lowbit.report.compare import compare_runs

    base = next((c for c in finished if c.precision == baseline), None)
    rows = {}
    if base is not None and len(finished) > 1:
        try:
            comparison = compare_runs([c.job.output_dir for c in finished], base.job.output_dir, margin)
        except UsageError as e:
            comparison = None
            refused = {c.job.output_dir: str(e) for c in finished}
        else:
            rows = {row.run: (row, group.metric) for group in comparison.groups for row in group.rows}
            refused = dict(comparison.refused)
    else:
        refused = {}
    for cell in finished:
        run_dir = cell.job.output_dir
        row, metric = rows.get(run_dir, (None, None))
        entry = _own_metrics(cell) if row is None else MatrixCell(
            state="done", metric=metric, **_estimate(row.metric), bits_per_weight=row.bits_per_weight,
            tokens_per_second=row.tokens_per_second, run_dir=run_dir)
        if row is not None and row.paired is not None:
            entry.recovery, entry.recovery_low, entry.recovery_high = (
                row.paired.recovery, row.paired.recovery_low, row.paired.recovery_high)
            entry.verdict = verdict(row.paired)
        elif row is not None and row.is_baseline:
            entry.verdict = "baseline"
        elif cell is base:
            entry.verdict = "baseline"
        elif run_dir in refused:
            entry.verdict = f"not compared: {refused[run_dir]}"
        elif base is None:
            entry.verdict = f"no {baseline or 'baseline'} cell yet"
        matrix.cells[model, cell.precision, task] = entry


def _own_metrics(cell: Cell) -> MatrixCell:
    """A finished cell without a comparison: its own headline metric, interval and bits per weight."""
    from lowbit.report.bits import bits_per_weight
    from lowbit.rundir import RunDir

    run = RunDir(cell.job.output_dir)
    metrics = run.metrics()
    info = run.run_info()
    return MatrixCell(
        state="done", metric=metrics.headline if metrics else None,
        **_estimate(metrics.headline_estimate if metrics else None),
        bits_per_weight=bits_per_weight(cell.precision, info.quantization).bits,
        tokens_per_second=info.totals.completion_tokens_per_second, run_dir=cell.job.output_dir)


def _estimate(estimate) -> dict:
    """value, interval and n of an estimate, as a record (Estimate) or as its JSON."""
    def get(name: str):
        return estimate.get(name) if isinstance(estimate, dict) else getattr(estimate, name, None)

    return {"value": get("value"), "ci_low": get("ci_low"), "ci_high": get("ci_high"), "n": get("n")}


def print_matrix(matrix: ResultsMatrix, out: TextIO) -> None:
    print_text(matrix, out)


def write_report(plan: Plan, margin: float | None = None, matrix: ResultsMatrix | None = None) -> list[Path]:
    """The matrix files; with tracking on, every finished cell and the files go to the tracker too."""
    from lowbit.report.compare import DEFAULT_MARGIN

    if matrix is None:
        matrix = build_matrix(plan, DEFAULT_MARGIN if margin is None else margin)
    written = write_matrix(matrix, plan.sweep_dir / REPORT_DIR)
    if plan.spec.tracking is not None:
        from lowbit.sweep.tracking import track_sweep

        track_sweep(plan, written)
    return written
