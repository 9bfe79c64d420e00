"""tracking=mlflow against a real MLflow store: a real tiny sweep run with tracking=mlflow logs its finished cell
and its report files, read back with MLflow's own client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import require_shared, run_lowbit

from lowbit.errors import UsageError
from lowbit.rundir import RunDir
from lowbit.sweep.plan import build_plan
from lowbit.sweep.spec import load_sweep
from lowbit.sweep.tracking import make_tracker, tracking_options

mlflow = pytest.importorskip("mlflow", reason="tracking=mlflow needs mlflow-skinny (requirements/cpu.txt)")

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tracked_sweep(tiny_model_stopping, tmp_path_factory):
    """The tiny CPU sweep cut to one cell (bf16 x MMLU-Redux, 8 samples), run by the local launcher with
    tracking=mlflow; (sweep dir, the cell)."""
    require_shared("mmlu_redux", "the tiny sweep's MMLU-Redux files")
    sweep_dir = tmp_path_factory.mktemp("sweep")
    items = [f"models.tiny.source={tiny_model_stopping}", "models.tiny.precisions=[bf16]",
             "models.tiny.tasks=[mmlu-redux]", f"output_dir={sweep_dir}", "cells=[{overrides:['limit=8']}]",
             "tracking=mlflow"]
    result = run_lowbit("sweep", "run", "sweeps/tiny-cpu.yaml", *items, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    (cell,) = build_plan(load_sweep(ROOT / "sweeps" / "tiny-cpu.yaml", items)).cells
    return sweep_dir, cell


def test_a_sweep_logs_its_finished_cell_and_its_matrix(tracked_sweep, tmp_path):
    sweep_dir, cell = tracked_sweep
    tracker = make_tracker("mlflow", sweep_dir, "tiny-cpu")
    assert tracker.uri == f"sqlite:///{sweep_dir / '.sweep' / 'mlflow' / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    experiment = client.get_experiment_by_name("tiny-cpu")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tiny/bf16/mmlu-redux", "matrix"}
    logged = client.get_run(runs["tiny/bf16/mmlu-redux"].info.run_id)
    assert logged.info.status == "FINISHED"
    assert tracker.log_cell(cell) is None  # already logged with this metrics.json: not twice

    run = RunDir(cell.job.output_dir)
    metrics, info = run.metrics(), run.run_info()
    headline = metrics.headline_estimate
    got = logged.data.metrics
    assert got[metrics.headline] == pytest.approx(headline.value)
    assert got[f"{metrics.headline}.ci_low"] == pytest.approx(headline.ci_low)
    assert got[f"{metrics.headline}.ci_high"] == pytest.approx(headline.ci_high)
    assert got[f"{metrics.headline}.n"] == headline.n > 0
    assert got["completion_tokens_per_second"] == pytest.approx(info.totals.completion_tokens_per_second)
    assert got["completion_tokens"] == info.totals.completion_tokens > 0
    assert got["bits_per_weight"] == 16.0

    params = logged.data.params
    assert params["precision"] == "bf16"
    assert params["eval_dataset"] == "mmlu-redux"
    assert params["model_name"] == run.config().model_name
    assert params["sampling.max_sequence_length"] == str(run.config().sampling["max_sequence_length"])
    assert params["predictor_conf.name"] == "transformers"
    assert logged.data.tags["lowbit.cell"] == "tiny/bf16/mmlu-redux"
    assert {a.path for a in client.list_artifacts(logged.info.run_id)} == {"config.yaml", "metrics.json"}
    local = client.download_artifacts(logged.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == json.loads(run.file("metrics.json").read_text())

    matrix_files = {Path(a.path).name for a in client.list_artifacts(runs["matrix"].info.run_id, "matrix")}
    written = {p.name for p in (sweep_dir / "report").iterdir()}
    assert matrix_files == written and any(name.endswith(".html") for name in written)


def test_the_matrix_files_are_one_run_updated_in_place(tracked_sweep, tmp_path):
    sweep_dir, _ = tracked_sweep
    tracker = make_tracker({"name": "mlflow", "experiment": "matrix-check"}, sweep_dir, "unused")
    report = tmp_path / "report.md"
    report.write_text("| model | mmlu-redux |\n|---|---|\n| qwen3_tiny | 0.25 |\n")
    first = tracker.log_matrix([report])
    report.write_text("| model | mmlu-redux |\n|---|---|\n| qwen3_tiny | 0.30 |\n")
    second = tracker.log_matrix([report, tmp_path / "report.md"])
    assert first == second
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    assert [a.path for a in client.list_artifacts(first, "matrix")] == ["matrix/report.md"]
    local = client.download_artifacts(first, "matrix/report.md", str(tmp_path / "back"))
    assert "0.30" in open(local).read()


def test_a_rescored_cell_is_logged_again_and_the_older_run_marked(tracked_sweep, tmp_path):
    sweep_dir, cell = tracked_sweep
    tracker = make_tracker({"name": "mlflow", "experiment": "rescored"}, sweep_dir, "unused")
    first = tracker.log_cell(cell)
    metrics_file = RunDir(Path(cell.job.output_dir)).file("metrics.json")
    original = metrics_file.read_bytes()
    try:
        assert run_lowbit("score", "-c", str(Path(cell.job.output_dir)), "dataset.answer_key=original").returncode == 0
        second = tracker.log_cell(cell)
    finally:
        metrics_file.write_bytes(original)
    assert second is not None and second != first
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    assert client.get_run(first).data.tags["lowbit.superseded"] == second


@pytest.mark.parametrize("block, message", [
    ({"name": "mlflow", "url": "x"}, "tracking: unknown tracking option 'url'. Did you mean 'uri'?"),
    ("wandb", "unknown tracking 'wandb'"),
    ({"name": "mlflow", "uri": ["a"]}, "tracking.uri must be a string or null"),
])
def test_bad_tracking_blocks_are_one_line(block, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace("?", r"\?")) as error:
        tracking_options(block)
    assert "\n" not in str(error.value)


def test_a_tracking_uri_mlflow_cannot_use_is_one_line(tmp_path):
    with pytest.raises(UsageError, match=r"^tracking.uri=nosuch://x: MLflow cannot use it .*set tracking=none$"):
        make_tracker({"name": "mlflow", "uri": "nosuch://x"}, tmp_path, "x")


def test_tracking_none_writes_nothing(tmp_path):
    assert make_tracker(None, tmp_path, "x") is None and make_tracker("none", tmp_path, "x") is None
    assert list(tmp_path.iterdir()) == []
