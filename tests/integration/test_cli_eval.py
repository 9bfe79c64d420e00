"""`lowbit eval` and `lowbit score` end to end, in fresh processes, on a tiny random Qwen3 model."""

import json
import signal
import subprocess
import sys
import time

import pytest
import yaml

from support import read_jsonl, run_lowbit, write_mmlu_redux
from lowbit.testing.data import shared_path

pytestmark = pytest.mark.slow

SUBJECTS = ["anatomy", "virology"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The real MMLU-Redux files, or (when the shared data is absent) a small file set in the same schema."""
    real = shared_path("mmlu_redux")
    if real is not None:
        return real
    return write_mmlu_redux(tmp_path_factory.mktemp("mmlu"), SUBJECTS, 20, subject_prefix=True,
                            error_type=lambda i: "ok" if i % 7 else "bad_question_clarity")


def eval_args(model, data_dir, output_dir, *extra):
    return ["eval", "model=qwen3_4B", f"model_name={model}", "precision=bf16", "eval_dataset=mmlu-redux",
            f"data_dir={data_dir}", f"dataset.subjects=[{','.join(SUBJECTS)}]", f"output_dir={output_dir}",
            "predictor=transformers", "predictor_conf.batch_size=4", "predictor_conf.show_progress=false",
            "sampling.temperature=1.0", "sampling.top_p=1.0", "sampling.top_k=-1",
            "sampling.max_sequence_length=320", *extra]


@pytest.fixture(scope="module")
def finished_run(tiny_model_stopping, data_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("runs") / "qwen3_tiny_bf16_mmlu_redux"
    result = run_lowbit(*eval_args(tiny_model_stopping, data_dir, output_dir, "limit=12"))
    assert result.returncode == 0, result.stderr
    return output_dir, result


def test_run_directory_holds_every_file_with_its_contract(finished_run, tiny_model_stopping):
    output_dir, result = finished_run
    assert sorted(p.name for p in output_dir.iterdir()) == [
        "config.yaml", "metrics.json", "predictions.jsonl", "run.json", "scores.jsonl"]
    assert "mmlu-redux: accuracy" in result.stdout and str(output_dir) in result.stdout

    config = yaml.safe_load((output_dir / "config.yaml").read_text())
    assert config["model_name"] == str(tiny_model_stopping) and config["precision"] == "bf16"
    assert config["sampling"]["max_sequence_length"] == 320 and config["sampling"]["top_k"] == -1
    assert config["sampling"]["presence_penalty"] == 1.0  # from the model config's mmlu-redux block
    assert config["dataset"] == {"subset": "all", "subjects": SUBJECTS, "answer_key": "corrected",
                                 "hub_id": "edinburgh-dawg/mmlu-redux-2.0", "prompt": "reference"}

    predictions = read_jsonl(output_dir / "predictions.jsonl")
    assert [p["id"] for p in predictions] != [] and len({p["id"] for p in predictions}) == 12
    assert {p["id"] for p in predictions} == {f"anatomy/{i}" for i in range(12)}
    for p in predictions:
        assert p["prompt"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
        assert p["prompt"].endswith("<think>\n\n</think>\n\n")
        assert p["item"]["subject"] == "anatomy" and [m["role"] for m in p["messages"]] == ["system", "user"]
        (completion,) = p["completions"]
        assert p["preds"] == [completion["answer"]]
        assert completion["finish_reason"] in ("stop", "length")
        total = completion["prompt_tokens"] + completion["completion_tokens"]
        assert total == 320 if completion["finish_reason"] == "length" else total < 320

    scores = read_jsonl(output_dir / "scores.jsonl")
    assert [s["id"] for s in scores] == [p["id"] for p in predictions]
    assert all(set(s) >= {"score", "scores", "extracted", "parse_failed", "truncated", "gold", "excluded"}
               for s in scores)

    metrics = json.loads((output_dir / "metrics.json").read_text())
    accuracy = metrics["metrics"]["accuracy"]
    included = [s for s in scores if not s["excluded"]]
    assert accuracy["n"] == len(included) == metrics["metrics"]["samples"]
    assert accuracy["value"] == pytest.approx(sum(s["score"] for s in included) / len(included))
    assert accuracy["ci_low"] <= accuracy["value"] <= accuracy["ci_high"]
    assert metrics["metrics"]["excluded"] == 12 - len(included)
    assert set(metrics["groups"]["subject"]) == {"anatomy"}
    assert metrics["task"] == "mmlu-redux" and metrics["task_version"]
    generation = metrics["generation"]
    finished_by_length = sum(p["completions"][0]["finish_reason"] == "length" for p in predictions)
    assert generation["completions"] == 12 and generation["finish_length_share"] == round(finished_by_length / 12, 6)
    assert generation["ended_in_reasoning_share"] == 0  # non-thinking prompts
    assert generation["completion_tokens"]["n"] == 12 and generation["reasoning_tokens"]["median"] == 0
    assert generation["answer_tokens"]["mean"] == generation["completion_tokens"]["mean"]

    run = json.loads((output_dir / "run.json").read_text())
    assert run["task"]["name"] == "mmlu-redux" and run["model"]["precision"] == "bf16"
    assert {"torch", "transformers", "lowbit"} <= set(run["environment"]["packages"])
    assert "git_sha" in run["environment"] and run["environment"]["device"]["cuda_available"] in (True, False)
    (session,) = run["sessions"]
    assert session["predicted"] == 12 and session["completion_tokens"] > 0 and session["rss_peak_gib"] > 0
    assert session["completion_tokens"] == sum(p["completions"][0]["completion_tokens"] for p in predictions)
    assert session["completion_tokens_per_second"] > 0 and session["predictor"]["name"] == "transformers"
    assert session["prompt_tokens_per_second"] > 0 and session["wall_seconds"] >= session["generate_seconds"]


def test_score_reproduces_metrics_without_a_model(finished_run):
    output_dir, _ = finished_run
    before = json.loads((output_dir / "metrics.json").read_text())
    scores_before = (output_dir / "scores.jsonl").read_text()
    result = run_lowbit("score", "-c", str(output_dir), "--check-truncation")
    assert result.returncode == 0, result.stderr
    after = json.loads((output_dir / "metrics.json").read_text())
    volatile = ("scored_at", "scoring_seconds")
    assert {k: v for k, v in after.items() if k not in volatile} == {k: v for k, v in before.items() if k not in volatile}
    assert (output_dir / "scores.jsonl").read_text() == scores_before
    assert "prompt+completion tokens: p50" in result.stdout and "max_sequence_length: 320" in result.stdout


def test_rescoring_under_another_answer_key(finished_run):
    output_dir, _ = finished_run
    result = run_lowbit("score", "-c", str(output_dir), "dataset.answer_key=original")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["dataset_options"]["answer_key"] == "original" and metrics["metrics"]["excluded"] == 0
    assert run_lowbit("score", "-c", str(output_dir)).returncode == 0  # back to the run's own options


def test_rerunning_a_finished_run_loads_no_model_and_changes_no_prediction(finished_run, tiny_model_stopping,
                                                                           data_dir):
    output_dir, _ = finished_run
    predictions = (output_dir / "predictions.jsonl").read_text()
    result = run_lowbit(*eval_args(tiny_model_stopping, data_dir, output_dir, "limit=12"))
    assert result.returncode == 0, result.stderr
    assert (output_dir / "predictions.jsonl").read_text() == predictions
    assert len(json.loads((output_dir / "run.json").read_text())["sessions"]) == 1


def test_a_changed_config_is_refused_with_the_keys_that_differ(finished_run, tiny_model_stopping, data_dir):
    output_dir, _ = finished_run
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}
    result = run_lowbit(*eval_args(tiny_model_stopping, data_dir, output_dir, "limit=12", "seed=7",
                                   "sampling.temperature=0.5"))
    assert result.returncode == 2
    error = result.stderr.strip()
    assert "\n" not in error and "seed: 42 -> 7" in error and "sampling.temperature: 1.0 -> 0.5" in error
    assert "overwrite=true" in error
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before


def test_an_interrupted_run_resumes_without_duplicates_or_gaps(tiny_model_stopping, data_dir, tmp_path):
    SAMPLES = 8  # four chunks of two: killed once two are written (run.json has then counted the first), resumed
    output_dir = tmp_path / "interrupted"
    args = eval_args(tiny_model_stopping, data_dir, output_dir, f"limit={SAMPLES}", "predictor_conf.batch_size=2")
    process = subprocess.Popen([sys.executable, "-m", "lowbit", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    predictions = output_dir / "predictions.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if predictions.exists() and len(predictions.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = {p["id"] for p in read_jsonl(predictions)}
    assert 4 <= len(done_before) < SAMPLES, "the run was killed in the middle"
    assert not (output_dir / "metrics.json").exists()

    result = run_lowbit(*args)
    assert result.returncode == 0, result.stderr
    ids = [p["id"] for p in read_jsonl(predictions)]
    assert len(ids) == len(set(ids)) == SAMPLES
    assert set(ids) == {f"anatomy/{i}" for i in range(SAMPLES)}
    killed, resumed = json.loads((output_dir / "run.json").read_text())["sessions"]
    # The killed session was recorded as it started and updated chunk by chunk: it counts what it wrote.
    assert killed["finished"] is None and killed["resumed_from"] == 0
    assert len(done_before) - 2 <= killed["predicted"] <= len(done_before)  # at most the chunk in flight behind
    assert killed["completion_tokens"] > 0 and killed["generate_seconds"] > 0
    assert resumed["finished"] is not None
    assert resumed["resumed_from"] == len(done_before) and resumed["predicted"] == SAMPLES - len(done_before)
    totals = json.loads((output_dir / "run.json").read_text())["totals"]
    assert totals["predicted"] == killed["predicted"] + resumed["predicted"]
    assert totals["completion_tokens"] == killed["completion_tokens"] + resumed["completion_tokens"]
    assert len(read_jsonl(output_dir / "scores.jsonl")) == SAMPLES


@pytest.mark.parametrize("bad, message", [
    (["eval_dataset=mmlu_redux"], "unknown eval_dataset"),
    (["model_name=/nonexistent/checkpoint"], "model_name '/nonexistent/checkpoint' is not a directory"),
    (["model_name=not a/valid repo id"], "cannot load model 'not a/valid repo id'"),
    (["predictor_conf.batch_size=0"], "batch_size must be >= 1"),
])
def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(bad, message, tiny_model, data_dir, tmp_path):
    output_dir = tmp_path / "never"
    result = run_lowbit(*eval_args(tiny_model, data_dir, output_dir, "limit=2"), *bad)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lowbit: error:")]
    assert len(errors) == 1 and message in errors[0] and result.stderr.rstrip().endswith(errors[0])
    assert not output_dir.exists()


def test_score_reads_legacy_prediction_lines(data_dir, tmp_path):
    item = json.loads((data_dir / "anatomy.jsonl").read_text().splitlines()[0])
    gold = "ABCD"[item["answer"]]
    wrong = "ABCD"[(item["answer"] + 1) % 4]
    lines = [{"prompt": "p", "item": {**item, "subject": "anatomy"}, "preds": [f"ANSWER: {gold}"]},
             {"prompt": "p", "item": {**item, "question": "other", "subject": "anatomy"}, "preds": [f"ANSWER: {wrong}"]}]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_lowbit("score", "-c", str(tmp_path), "task=mmlu-redux", "--check-truncation")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"]["value"] == 0.5 and metrics["metrics"]["accuracy"]["n"] == 2
    assert "finish reason not recorded: 2" in result.stdout


def test_score_says_when_the_scorer_version_changed(finished_run):
    output_dir, _ = finished_run
    metrics_path = output_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**metrics, "task_version": "0"}))
    result = run_lowbit("score", "-c", str(output_dir))
    assert result.returncode == 0, result.stderr
    assert f"scorer changed since this run was last scored (version 0 -> {metrics['task_version']})" in result.stdout


def test_score_without_a_task_name_is_a_clear_error(tmp_path):
    (tmp_path / "predictions.jsonl").write_text('{"prompt": "p", "item": {}, "preds": ["A"]}\n')
    result = run_lowbit("score", "-c", str(tmp_path))
    assert result.returncode == 2 and "task=" in result.stderr


def test_the_run_sends_the_reference_messages_and_reports_both_extractions(finished_run):
    output_dir, _ = finished_run
    first = read_jsonl(output_dir / "predictions.jsonl")[0]
    assert first["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert first["messages"][1]["content"].startswith("There is a single choice question about anatomy.")
    metrics = json.loads((output_dir / "metrics.json").read_text())["metrics"]
    assert 0 <= metrics["extraction_disagreements"] <= metrics["completions"]
    assert metrics["reference_rule_accuracy"]["n"] == metrics["samples"]


def test_a_resume_under_another_prompt_profile_is_refused(finished_run, tiny_model_stopping, data_dir):
    output_dir, _ = finished_run
    before = {p.name: p.read_bytes() for p in output_dir.iterdir()}
    result = run_lowbit(*eval_args(tiny_model_stopping, data_dir, output_dir, "limit=12", "dataset.prompt=lowbit"))
    assert result.returncode == 2
    error = result.stderr.strip()
    assert "\n" not in error and "dataset.prompt: 'reference' -> 'lowbit'" in error
    assert {p.name: p.read_bytes() for p in output_dir.iterdir()} == before


def test_dry_run_shows_the_reference_messages_by_default(tiny_model, data_dir, tmp_path):
    args = ["eval", "model=qwen3_4B", f"model_name={tiny_model}", "eval_dataset=mmlu-redux", f"data_dir={data_dir}",
            "dataset.subjects=[anatomy]", f"output_dir={tmp_path / 'never'}", "--dry-run"]
    shown = {}
    for profile in ("default", "lowbit"):
        result = run_lowbit(*args, *(["dataset.prompt=lowbit"] if profile == "lowbit" else []))
        assert result.returncode == 0, result.stderr
        config, _, messages = result.stdout.partition("# first sample: anatomy/0\n")
        assert f"prompt: {'lowbit' if profile == 'lowbit' else 'reference'}" in config
        shown[profile] = json.loads(messages)
    reference_user = shown["default"][1]["content"]
    assert shown["default"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert reference_user.startswith("There is a single choice question about anatomy. Answer the question by")
    assert "\nOptions:\nA. " in reference_user and reference_user.endswith("\n")
    (lowbit_user,) = shown["lowbit"]
    assert lowbit_user["role"] == "user" and "\nA) " in lowbit_user["content"]
    assert not (tmp_path / "never").exists()
