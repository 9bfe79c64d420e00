"""`lowbit sweep` end to end with the local launcher: the shipped tiny CPU sweep (a tiny random Qwen3 x {bf16, int8
made by lowbit quantize, nvfp4 W4A4 emulated} x {MMLU-Redux, MATH-500}) to its results matrix, a rerun that skips
what is done, a failed cell in `status`, and a sweep cancelled mid-run then finished by the next run without
duplicate predictions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from support import read_jsonl, require_shared, run_lowbit

from lowbit.sweep.jobs import JobState, read_state
from lowbit.sweep.plan import build_plan
from lowbit.sweep.spec import load_sweep

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TINY_SWEEP = REPO / "sweeps" / "tiny-cpu.yaml"
# short runs: two samples per cell, completions cut early
FAST = ("overrides=['predictor=transformers','limit=2','sampling.temperature=1.0','sampling.top_k=-1',"
        "'sampling.max_sequence_length=200']")


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory) -> Path:
    """A tiny Qwen3 whose completions end after a token or two."""
    from lowbit.testing.tiny import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-quick"), eos_logit=30.0)


@pytest.fixture(scope="module")
def shared_data() -> Path:
    require_shared("mmlu_redux", "real MMLU-Redux files")
    return require_shared("math500", "real MATH-500 files").parent


def sweep(action: str, *items: str, shared_data: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return run_lowbit("sweep", action, str(TINY_SWEEP), *items, timeout=timeout, cwd=REPO,
                      env_overrides={"LOWBIT_SHARED_DATA": str(shared_data)})


def test_the_tiny_sweep_runs_to_its_matrix_and_a_rerun_skips_every_finished_cell(quick_model, shared_data, tmp_path):
    out = tmp_path / "sweep"
    items = (f"models.tiny.source={quick_model}", f"output_dir={out}", FAST)
    result = sweep("run", *items, shared_data=shared_data)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 jobs: 0 pending, 0 running, 7 done, 0 failed, 0 cancelled" in result.stdout

    plan = build_plan(load_sweep(TINY_SWEEP, list(items)), validate=False)
    quantize = read_state(out, plan.job("quantize/tiny/int8"))
    checkpoint_made = datetime.fromisoformat(quantize["finished_at"])
    for cell in plan.cells:
        assert Path(cell.job.output_dir) == out / cell.model / cell.precision / cell.task
        if cell.precision == "int8":  # its evals waited for the checkpoint
            assert datetime.fromisoformat(read_state(out, cell.job)["started_at"]) >= checkpoint_made
            assert json.loads((Path(cell.job.output_dir) / "run.json").read_text())["model"]["quantization_config"]

    report = json.loads((out / "report" / "sweep-report.json").read_text())
    cells = {(c["model"], c["precision"], c["task"]): c for c in report["cells"]}
    assert set(cells) == {("tiny", p, t) for p in ("bf16", "int8", "nvfp4-w4a4")
                          for t in ("mmlu-redux", "math500-nonthinking")}
    for (_, precision, _), cell in cells.items():
        assert cell["state"] == "done" and cell["n"] >= 1 and cell["ci_low"] <= cell["value"] <= cell["ci_high"]
        assert cell["verdict"] == "baseline" if precision == "bf16" else cell["verdict"] in (
            "significant drop", "within margin", "inconclusive", "at chance")
    assert [cells["tiny", p, "mmlu-redux"]["bits_per_weight"] for p in ("bf16", "int8", "nvfp4-w4a4")] == \
        [16.0, pytest.approx(8.0078), 4.5]
    for name in ("sweep-report.md", "sweep-report.csv", "sweep-report.html"):
        assert (out / "report" / name).stat().st_size > 0
    assert "| tiny | int8 |" in (out / "report" / "sweep-report.md").read_text()

    predictions = {c.job.name: (Path(c.job.output_dir) / "predictions.jsonl").stat().st_mtime_ns for c in plan.cells}
    again = sweep("run", *items, shared_data=shared_data)
    assert again.returncode == 0, again.stderr
    assert "nothing to run: 7 jobs done" in again.stdout
    assert predictions == {c.job.name: (Path(c.job.output_dir) / "predictions.jsonl").stat().st_mtime_ns
                           for c in plan.cells}

    status = sweep("status", *items, shared_data=shared_data)
    assert status.returncode == 0 and "7 done" in status.stdout
    changed = sweep("run", *items[:2], FAST.replace("'limit=2'", "'limit=3'"), "--dry-run", shared_data=shared_data)
    assert changed.returncode == 0 and "1 done, 0 in flight, 6 to run" in changed.stdout  # a new config: not done


def test_a_failed_cell_shows_its_reason_and_log_and_status_exits_non_zero(quick_model, shared_data, tmp_path):
    out = tmp_path / "sweep"
    empty = tmp_path / "empty"
    empty.mkdir()
    items = (f"models.tiny.source={quick_model}", f"output_dir={out}", FAST, "models.tiny.precisions=[bf16]",
             "models.tiny.tasks=[mmlu-redux]", f"tasks.mmlu-redux.overrides=['data_dir={empty}']")
    result = sweep("run", *items, shared_data=shared_data)
    assert result.returncode == 1
    status = sweep("status", *items, shared_data=shared_data)
    assert status.returncode == 1
    line = next(line for line in status.stdout.splitlines() if line.startswith("eval/tiny/bf16/mmlu-redux"))
    assert " failed " in line and "lowbit: error:" in line and "abstract_algebra.jsonl" in line
    assert f"log: {out / '.sweep' / 'logs' / 'eval__tiny__bf16__mmlu-redux.log'}" in line
    report = (out / "report" / "sweep-report.md").read_text()
    assert "| tiny | bf16 | failed |" in report


def test_a_sweep_cancelled_mid_run_is_finished_by_the_next_run_without_duplicate_predictions(
        tiny_model, shared_data, tmp_path):
    out = tmp_path / "sweep"
    items = (f"models.tiny.source={tiny_model}", f"output_dir={out}", "models.tiny.precisions=[bf16]",
             "models.tiny.tasks=[math500-nonthinking]",
             "overrides=['predictor=transformers','predictor_conf.batch_size=1','limit=4',"
             "'sampling.max_sequence_length=160']")
    env = {"LOWBIT_SHARED_DATA": str(shared_data), "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1"}
    running = subprocess.Popen([sys.executable, "-m", "lowbit", "sweep", "run", str(TINY_SWEEP), *items], cwd=REPO,
                               env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    predictions = out / "tiny" / "bf16" / "math500-nonthinking" / "predictions.jsonl"
    deadline = time.monotonic() + 600
    while not (predictions.exists() and predictions.read_text().count("\n") >= 1):
        assert running.poll() is None and time.monotonic() < deadline, running.stdout.read() if running.poll() else ""
        time.sleep(0.5)
    cancel = sweep("cancel", *items, shared_data=shared_data)
    assert cancel.returncode == 0 and "cancelled 1 local job(s)" in cancel.stdout
    running.wait(timeout=120)
    plan = build_plan(load_sweep(TINY_SWEEP, list(items)), validate=False)
    (cell,) = plan.cells
    assert read_state(out, cell.job)["state"] == JobState.CANCELLED
    partial = len(read_jsonl(predictions))
    assert 1 <= partial < 4

    finished = sweep("run", *items, shared_data=shared_data)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    ids = [row["id"] for row in read_jsonl(predictions)]
    assert len(ids) == len(set(ids)) == 4
    sessions = json.loads((predictions.parent / "run.json").read_text())["sessions"]
    assert sessions[-1]["resumed_from"] == partial
