"""tracking=mlflow against a real MLflow store: a real finished eval run logged as a sweep cell, read back with
MLflow's own client."""

from __future__ import annotations

import json

import pytest
from support import run_lowbit

from lowbit.errors import UsageError
from lowbit.rundir import RunDir
from lowbit.sweep.tracking import Cell, make_tracker, tracking_options

mlflow = pytest.importorskip("mlflow", reason="tracking=mlflow needs mlflow-skinny (requirements/cpu.txt)")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_cell(tiny_model_stopping, mmlu_redux_dir, tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    run_dir = sweep_dir / "qwen3_tiny" / "bf16" / "mmlu-redux"
    result = run_lowbit("eval", "model=qwen3_4B", f"model_name={tiny_model_stopping}", "precision=bf16",
                        "eval_dataset=mmlu-redux", f"data_dir={mmlu_redux_dir}", "dataset.subjects=[anatomy]",
                        f"output_dir={run_dir}", "predictor=transformers", "predictor_conf.show_progress=false",
                        "sampling.max_sequence_length=320", "limit=8")
    assert result.returncode == 0, result.stderr
    return sweep_dir, Cell("qwen3_tiny", "bf16", "mmlu-redux", run_dir)


def test_a_finished_cell_is_logged_once_with_its_interval_and_throughput(finished_cell, tmp_path):
    sweep_dir, cell = finished_cell
    tracker = make_tracker("mlflow", sweep_dir, "tiny-sweep")
    assert tracker.uri.startswith("sqlite:///") and str(sweep_dir) in tracker.uri

    run_id = tracker.log_cell(cell)
    assert run_id is not None
    assert tracker.log_cell(cell) is None  # same metrics.json: not logged twice

    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    experiment = client.get_experiment_by_name("tiny-sweep")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    logged = client.get_run(run_id)
    assert logged.info.run_name == "qwen3_tiny/bf16/mmlu-redux" and logged.info.status == "FINISHED"

    run = RunDir(cell.run_dir)
    metrics, info = run.metrics(), run.run_info()
    headline = metrics.headline_estimate
    got = logged.data.metrics
    assert got[metrics.headline] == pytest.approx(headline.value)
    assert got[f"{metrics.headline}.ci_low"] == pytest.approx(headline.ci_low)
    assert got[f"{metrics.headline}.ci_high"] == pytest.approx(headline.ci_high)
    assert got[f"{metrics.headline}.n"] == headline.n == 8
    assert got["completion_tokens_per_second"] == pytest.approx(info.totals.completion_tokens_per_second)
    assert got["completion_tokens"] == info.totals.completion_tokens > 0
    assert got["bits_per_weight"] == 16.0

    params = logged.data.params
    assert params["precision"] == "bf16"
    assert params["eval_dataset"] == "mmlu-redux"
    assert params["model_name"] == run.config().model_name
    assert params["sampling.max_sequence_length"] == "320"
    assert params["predictor_conf.name"] == "transformers"
    assert logged.data.tags["lowbit.cell"] == "qwen3_tiny/bf16/mmlu-redux"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert artifacts == {"config.yaml", "metrics.json"}
    local = client.download_artifacts(run_id, "metrics.json", str(tmp_path))
    assert json.loads(open(local).read()) == json.loads(run.file("metrics.json").read_text())


def test_the_matrix_files_are_one_run_updated_in_place(finished_cell, tmp_path):
    sweep_dir, _ = finished_cell
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


def test_a_rescored_cell_is_logged_again_and_the_older_run_marked(finished_cell, tmp_path):
    sweep_dir, cell = finished_cell
    tracker = make_tracker({"name": "mlflow", "experiment": "rescored"}, sweep_dir, "unused")
    first = tracker.log_cell(cell)
    metrics_file = RunDir(cell.run_dir).file("metrics.json")
    original = metrics_file.read_bytes()
    try:
        assert run_lowbit("score", "-c", str(cell.run_dir), "dataset.answer_key=original").returncode == 0
        second = tracker.log_cell(cell)
    finally:
        metrics_file.write_bytes(original)
    assert second is not None and second != first
    client = mlflow.MlflowClient(tracking_uri=tracker.uri)
    assert client.get_run(first).data.tags["lowbit.superseded"] == second


@pytest.mark.parametrize("block, message", [
    ({"name": "mlflow", "url": "x"}, "unknown tracking option 'url'. Did you mean 'uri'?"),
    ("wandb", "unknown tracking 'wandb'"),
    ({"name": "mlflow", "uri": ["a"]}, "tracking.uri must be a string or null"),
])
def test_bad_tracking_blocks_are_one_line(block, message):
    with pytest.raises(UsageError, match="^" + message.replace("(", r"\(").replace("?", r"\?")) as error:
        tracking_options(block)
    assert "\n" not in str(error.value)


def test_tracking_none_writes_nothing(tmp_path):
    assert make_tracker(None, tmp_path, "x") is None and make_tracker("none", tmp_path, "x") is None
    assert list(tmp_path.iterdir()) == []
