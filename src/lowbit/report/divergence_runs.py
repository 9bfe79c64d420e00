"""`lowbit divergence` run directories among the runs given to `lowbit compare`: they hold no per-sample scores to
pair, so they are set apart and their figures shown beside the rows of the same model and precision.

A divergence run measures a candidate against its baseline model, so its model is the baseline's (the
`baseline_model` its metrics record; the config's model entry for runs that recorded none), named as
`evaluated_model.py` names the models of evaluation runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit.report.evaluated_model import model_name
from lowbit.rundir import RunDir

TASK = "divergence"
FIGURES = ("kl_mean", "kl_p99", "same_top_rate", "ppl_ratio", "top_prob_change_rms")


def split_divergence_runs(entries: list[tuple[str, Path]]
                          ) -> tuple[list[tuple[str, Path]], dict[tuple[str, str], dict]]:
    """(the other runs, {(model name, precision): figures}) of (label, path) entries."""
    others, figures = [], {}
    for label, path in entries:
        run = RunDir(path)
        config = run.config() if run.has_config() else None
        metrics = run.metrics() if config is not None and config.task == TASK else None
        if metrics is None:
            others.append((label, path))
            continue
        values: dict[str, Any] = {name: metrics.metrics.get(name) for name in FIGURES}
        values.update(run=label, source=(metrics.extra.get(TASK) or {}).get("source"),
                      tokens=metrics.metrics.get("tokens"))
        baseline_model = (metrics.extra.get(TASK) or {}).get("baseline_model") or config.family
        figures[(model_name(str(baseline_model)), str(config.precision))] = values
    return others, figures


def attach(rows: list, model: str, figures: dict[tuple[str, str], dict]) -> None:
    """Each row's divergence figures, from the run of the group's model (its name) and the row's precision."""
    for row in rows:
        row.divergence = figures.get((model, row.precision))
