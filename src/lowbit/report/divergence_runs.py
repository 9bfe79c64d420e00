"""`lowbit divergence` run directories among the runs given to `lowbit compare`: they hold no per-sample scores to
pair, so they are set apart and their figures shown beside the rows of the same model and precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        figures[(model_name(str(config.family)), str(config.precision))] = values
    return others, figures


def model_name(family: str) -> str:
    """A hub id's or a directory's last part: the same model named either way."""
    return family.rstrip("/").rsplit("/", 1)[-1]


def attach(rows: list, family: str, figures: dict[tuple[str, str], dict]) -> None:
    for row in rows:
        row.divergence = figures.get((model_name(family), row.precision))
