"""The run directory: typed records round-trip through their files, old run directories still read."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowbit.errors import UsageError
from lowbit.metrics.stats import Estimate
from lowbit.records import Completion, Prediction, legacy_id
from lowbit.rundir import (SCHEMA_VERSION, Metrics, ModelInfo, RunConfig, RunDir, RunInfo, ScoreRow, Session,
                           TaskInfo)

RESOLVED = {
    "model": {"model_name": "Qwen/Qwen3-4B"}, "model_name": "/ckpts/qwen3-4b-nvfp4", "precision": "nvfp4",
    "eval_dataset": "mmlu-redux", "seed": 42, "dataset": {"subset": "all", "answer_key": "corrected"},
    "sampling": {"template": "qwen3", "temperature": 0.7, "max_sequence_length": 320},
    "predictor_conf": {"name": "transformers", "batch_size": 8},
}
ACCURACY = {"value": 0.5, "n": 2, "stderr": 0.5, "ci_low": 0.09, "ci_high": 0.91, "method": "wilson",
            "confidence": 0.95}


def session(**overrides) -> Session:
    fields = {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00", "wall_seconds": 60.0,
              "predicted": 2, "resumed_from": 0, "model_load_seconds": 3.5,
              "predictor": {"name": "transformers", "emulation": {"act_quant": "nvfp4", "weight_quant": "none"}},
              "prompts": 2, "prompt_tokens": 100, "completion_tokens": 40, "generate_seconds": 4.0,
              "prompt_tokens_per_second": 25.0, "completion_tokens_per_second": 10.0, "prompts_over_limit": 0,
              "prompt_tokens_truncated": 0, "gpu_peak_gib": None, "rss_peak_gib": 1.25}
    return Session(**{**fields, **overrides})


def metrics() -> Metrics:
    return Metrics(task="mmlu-redux", task_version="1", headline="accuracy",
                   metrics={"accuracy": ACCURACY, "samples": 2, "excluded_by_reason": {}},
                   groups={"subject": {"anatomy": ACCURACY}}, generation={"completions": 2},
                   dataset_options={"answer_key": "corrected"}, scored_at="2026-01-01T00:02:00+00:00",
                   scoring_seconds=0.01, extra={"outcomes": {"passed": 1}})


# ------------------------------------------------------------------------------------------- round trips


def test_config_round_trips_and_exposes_what_readers_need(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config(RunConfig.from_json(RESOLVED))
    config = run.config()
    assert config == RunConfig.from_json(RESOLVED) and config.to_json() == RESOLVED
    assert (config.task, config.precision, config.family, config.model_name) == (
        "mmlu-redux", "nvfp4", "Qwen/Qwen3-4B", "/ckpts/qwen3-4b-nvfp4")
    assert config.sampling["temperature"] == 0.7 and config.predictor == "transformers" and config.seed == 42
    assert config.dataset == {"subset": "all", "answer_key": "corrected"}


def test_run_info_round_trips_with_sessions_and_derived_totals(tmp_path):
    run = RunDir(tmp_path)
    info = RunInfo(environment={"python": "3.11", "device": {"cuda_available": False}},
                   task=TaskInfo(name="ruler-vt-32k", version="3", dataset={"content_hash": "ab12"}),
                   model=ModelInfo(model_name="/ckpts/q", precision="nvfp4", quantization_config={"format": "x"}))
    run.write_run_info(info)
    run.record_session(session())
    recorded = run.record_session(session(completion_tokens=60, generate_seconds=6.0, extra={"requests": 7}))
    assert run.run_info() == recorded
    assert recorded.task == info.task and recorded.model == info.model and len(recorded.sessions) == 2
    assert recorded.sessions[1].extra == {"requests": 7}
    totals = recorded.totals
    assert (totals.completion_tokens, totals.generate_seconds, totals.predicted) == (100, 10.0, 4)
    assert totals.completion_tokens_per_second == 10.0
    on_disk = json.loads(run.file("run.json").read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION and on_disk["totals"]["completion_tokens"] == 100
    assert on_disk["sessions"][1]["requests"] == 7  # backend totals sit beside the session's fields
    assert recorded.device == {"cuda_available": False} and recorded.quantization == {"format": "x"}
    assert recorded.emulation == {"act_quant": "nvfp4", "weight_quant": "none"}


def test_a_run_info_without_sessions_has_no_throughput_and_no_emulation():
    info = RunInfo()
    assert info.totals.completion_tokens_per_second is None and info.emulation is None
    none_emulated = RunInfo(sessions=[session(predictor={"name": "transformers",
                                                         "emulation": {"act_quant": "none", "weight_quant": "none"}})])
    assert none_emulated.emulation is None


def test_score_rows_and_metrics_round_trip_with_a_schema_version(tmp_path):
    run = RunDir(tmp_path)
    rows = [ScoreRow(id="anatomy/0", score=1.0, scores=[1.0], truncated=[False], excluded=None,
                     task_fields={"extracted": ["B"], "gold": "B", "subject": "anatomy"}),
            ScoreRow(id="anatomy/1", score=0.0, scores=[0.0], truncated=[True], excluded="bad_question_clarity")]
    run.write_scores(rows, metrics())
    assert run.scores() == rows and run.metrics() == metrics()
    lines = [json.loads(line) for line in run.file("scores.jsonl").read_text().splitlines()]
    assert all(line["schema_version"] == SCHEMA_VERSION for line in lines)
    assert lines[0]["gold"] == "B" and lines[1]["excluded"] == "bad_question_clarity"
    assert json.loads(run.file("metrics.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "scores.jsonl"]  # no temp files left


def test_metrics_hand_out_their_estimates():
    scored = metrics()
    assert scored.headline_estimate == Estimate(**ACCURACY)
    assert scored.estimate("samples") is None and scored.estimate("missing") is None
    assert scored.group_estimates("subject") == {"anatomy": Estimate(**ACCURACY)}
    with_extras = Metrics(task="ifeval", task_version="1", headline="prompt_strict",
                          metrics={"prompt_strict": {**ACCURACY, "passed": 1}})
    assert with_extras.headline_estimate == Estimate(**ACCURACY)  # fields a task adds beside an estimate are kept
    assert with_extras.to_json()["metrics"]["prompt_strict"]["passed"] == 1


def test_predictions_append_and_read_back(tmp_path):
    run = RunDir(tmp_path)
    prediction = Prediction(id="x/1", prompt="p", item={"q": 1}, messages=[{"role": "user", "content": "q"}],
                            completions=[Completion(text="ANSWER: B", answer="ANSWER: B", reasoning=None,
                                                    finish_reason="stop", prompt_tokens=3, completion_tokens=2)])
    with run.prediction_writer() as writer:
        writer.append([prediction.to_json(), {**prediction.to_json(), "prompt": "a repeat"}])
    assert run.predictions() == [prediction] and run.predicted_ids() == {"x/1"}


def test_clear_removes_only_run_files(tmp_path):
    run = RunDir(tmp_path)
    run.write_config(RunConfig.from_json(RESOLVED))
    run.write_scores([], metrics())
    (tmp_path / "notes.txt").write_text("mine")
    run.clear()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and run.config() is None


# ------------------------------------------------------------------------------------------- versions


def test_a_file_from_a_newer_lowbit_is_refused_with_the_fix(tmp_path):
    run = RunDir(tmp_path)
    run.write_scores([], metrics())
    data = json.loads(run.file("metrics.json").read_text())
    run.file("metrics.json").write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(UsageError, match=r"metrics.json was written by a newer lowbit .*upgrade lowbit"):
        run.metrics()


def write_old_run(path: Path, precision: str, answers: list[str]) -> RunDir:
    """A run directory as lowbit wrote it before schema versions, with predictions in the oldest form."""
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump({**RESOLVED, "precision": precision, "model_name": "Qwen/Qwen3-4B",
                                                      "predictor_conf": {"name": "vllm"}}))
    (path / "run.json").write_text(json.dumps({
        "environment": {"device": {"cuda_available": True, "gpus": ["NVIDIA H100"]}},
        "task": {"name": "mmlu-redux"}, "model": {"model_name": "Qwen/Qwen3-4B", "precision": precision},
        "quantization": {"format": "nvfp4-pack-quantized"} if precision == "nvfp4" else None,
        "sessions": [{"predicted": 2, "completion_tokens": 40, "generate_seconds": 2.0}],
        "totals": {"completion_tokens": 40, "generate_seconds": 2.0, "completion_tokens_per_second": 20.0},
    }))
    items = [{"subject": "anatomy", "question": f"q{i}", "choices": ["a", "b", "c", "d"], "answer": 1}
             for i in range(2)]
    (path / "predictions.jsonl").write_text("".join(
        json.dumps({"prompt": f"prompt {i}", "item": item, "preds": [answers[i]]}) + "\n"
        for i, item in enumerate(items)))
    ids = [legacy_id(item, f"prompt {i}") for i, item in enumerate(items)]
    (path / "scores.jsonl").write_text("".join(
        json.dumps({"id": sample_id, "score": float(answers[i] == "ANSWER: B"), "scores": [
            float(answers[i] == "ANSWER: B")], "extracted": [answers[i][-1]], "excluded": None,
            "subject": "anatomy"}) + "\n" for i, sample_id in enumerate(ids)))
    correct = sum(a == "ANSWER: B" for a in answers)
    (path / "metrics.json").write_text(json.dumps({
        "task": "mmlu-redux", "task_version": 1, "headline": "accuracy",
        "metrics": {"accuracy": {"value": correct / 2, "n": 2, "stderr": 0.5, "ci_low": 0.0, "ci_high": 1.0,
                                 "method": "wilson"}},
        "groups": {"subject": {"anatomy": {"value": correct / 2, "n": 2}}}}))
    return RunDir(path)


def test_an_old_run_directory_reads_as_before(tmp_path):
    run = write_old_run(tmp_path / "old", "nvfp4", ["ANSWER: B", "ANSWER: C"])
    predictions = run.predictions()
    assert [p.preds for p in predictions] == [["ANSWER: B"], ["ANSWER: C"]]
    assert all(c.finish_reason is None for p in predictions for c in p.completions)
    assert run.predicted_ids() == {p.id for p in predictions} == {row.id for row in run.scores()}
    info = run.run_info()
    assert info.schema_version == 0 and info.task.version is None and info.sessions[0].prompt_tokens is None
    assert info.quantization == {"format": "nvfp4-pack-quantized"} and info.totals.completion_tokens_per_second == 20.0
    scored = run.metrics()
    assert scored.schema_version == 0 and scored.task_version == "1" and scored.generation == {}
    assert scored.headline_estimate.confidence == 0.95 and scored.headline_estimate.value == 0.5
    rows = run.scores()
    assert rows[0].truncated == [] and rows[0].task_fields == {"extracted": ["B"], "subject": "anatomy"}
    assert run.config().family == "Qwen/Qwen3-4B"


def test_old_run_directories_are_compared(tmp_path):
    from lowbit.report import compare_runs

    baseline = write_old_run(tmp_path / "bf16", "bf16", ["ANSWER: B", "ANSWER: B"])
    candidate = write_old_run(tmp_path / "nvfp4", "nvfp4", ["ANSWER: B", "ANSWER: C"])
    comparison = compare_runs([str(baseline.path), str(candidate.path)])
    (group,) = comparison.groups
    base_row, row = group.rows
    assert base_row.is_baseline and row.paired_samples == 2 and row.paired.difference == pytest.approx(-0.5)
    assert row.bits_source and row.throughput_ratio == pytest.approx(1.0)


def test_reading_runs_imports_neither_the_eval_flow_nor_hydra_nor_torch():
    code = ("import sys, lowbit.rundir, lowbit.report.comparison, lowbit.report.render; "
            "print(sorted(m for m in ('hydra', 'torch', 'omegaconf', 'lowbit.run', 'lowbit.config', "
            "'lowbit.report.pairing') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
