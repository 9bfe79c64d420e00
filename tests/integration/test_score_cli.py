"""`lowbit score` on synthetic run directories written through the real eval and scoring code."""

from __future__ import annotations

import numpy as np
from report_support import write_run
from support import run_lowbit


def test_scoring_a_run_as_another_task_is_refused_and_changes_nothing(tmp_path):
    run = write_run(tmp_path / "mmlu", "bf16", np.ones(20, dtype=bool))
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    result = run_lowbit("score", "-c", str(run), "task=math500")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lowbit: error:")]
    assert len(errors) == 1 and "is a mmlu-redux run" in errors[0] and "eval_dataset=math500" in errors[0]
    assert {path.name: path.read_bytes() for path in run.iterdir()} == before


def test_the_summary_line_counts_what_the_headline_leaves_out(tmp_path):
    run = write_run(tmp_path / "mmlu", "bf16", np.arange(40) % 3 > 0, truncated_share=0.5)
    result = run_lowbit("score", "-c", str(run))
    assert result.returncode == 0, result.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("mmlu-redux: accuracy"))
    assert "n=40" in summary and "of 40 completion(s) hit the length limit" in summary
    assert "could not be parsed" not in summary and "excluded" not in summary  # none of either: not mentioned
