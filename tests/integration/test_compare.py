"""`lowbit compare` on synthetic run directories whose truth is known.

The runs are written the way `lowbit eval` writes them: a real resolved config (`resolve_eval`), `RunDir.begin`
and `record_session`, predictions through the append-only writer, and scores and metrics from the real task
scorers (`score_run`). Only the completions are made up, so that each run answers a planted set of questions right.
"""

from __future__ import annotations

import csv
import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lowbit.config import EvalConfig, resolve_eval
from lowbit.errors import UsageError
from lowbit.records import Completion, Prediction
from lowbit.report import compare_main, compare_runs, split_compare_arguments
from lowbit.run import RunDir, score_run

N_SAMPLES = 2000
LETTERS = "ABCD"


def mmlu_item(index: int) -> dict:
    subject = ("anatomy", "virology")[index % 2]
    return {"subject": subject, "index": index, "question": f"Synthetic question {index}?",
            "choices": ["one", "two", "three", "four"], "answer": index % 4, "error_type": "ok"}


@functools.cache
def resolved_config(eval_dataset: str, overrides: tuple[str, ...]) -> EvalConfig:
    """The config `lowbit eval` would record (composed once per setting: Hydra takes half a second)."""
    return resolve_eval([f"eval_dataset={eval_dataset}", *overrides])


def write_run(path: Path, precision: str, correct: np.ndarray, *, overrides: tuple[str, ...] = (),
              eval_dataset: str = "mmlu-redux", truncated_share: float = 0.0, reasoning_tokens: int = 0,
              tokens_per_second: float = 1000.0, drop_ids: int = 0, question_suffix: str = "",
              system_line: str = "") -> Path:
    """A scored run directory in which sample i is answered right where `correct[i]` (one row per completion)."""
    base_cfg = resolved_config(eval_dataset, overrides)
    cfg = replace(base_cfg, resolved={**base_cfg.resolved, "precision": precision, "output_dir": str(path)})
    run = RunDir(path)
    run.begin(cfg, overwrite=True)
    correct = np.atleast_2d(np.asarray(correct).T).T  # (samples, completions)
    rng = np.random.default_rng(len(correct))
    predictions = []
    for index in range(drop_ids, len(correct)):
        if eval_dataset == "mmlu-redux":
            item = mmlu_item(index)
            item["question"] += question_suffix if index == len(correct) - 1 else ""
            sample_id, gold = f"{item['subject']}/{index}", LETTERS[item["answer"]]
            answers = [f"ANSWER: {gold if ok else LETTERS[(item['answer'] + 1) % 4]}" for ok in correct[index]]
        else:
            item = {"id": f"synthetic-{index}", "problem": f"Compute {index} + 1.", "answer": str(index % 1000),
                    "part": "I"}
            sample_id = item["id"]
            answers = [f"\\boxed{{{index % 1000 if ok else (index + 1) % 1000}}}" for ok in correct[index]]
        messages = cfg.task.messages(item)
        completions = [Completion(text=answer, answer=answer, reasoning="r" * reasoning_tokens or None,
                                  finish_reason="length" if rng.random() < truncated_share else "stop",
                                  prompt_tokens=50, completion_tokens=20 + reasoning_tokens,
                                  reasoning_tokens=reasoning_tokens)
                       for answer in answers]
        prompt = f"{system_line}<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        predictions.append(Prediction(id=sample_id, prompt=prompt, item=item, completions=completions,
                                      messages=messages).to_json())
    with run.prediction_writer() as writer:
        writer.append(predictions)
    completion_tokens = sum(len(p["completions"]) * (20 + reasoning_tokens) for p in predictions)
    run.record_session({"predicted": len(predictions), "prompt_tokens": 50 * len(predictions),
                        "completion_tokens": completion_tokens,
                        "generate_seconds": completion_tokens / tokens_per_second})
    score_run(run, cfg.task)
    return path


def planted(base_correct: int, right_to_wrong: int, wrong_to_right: int, n: int = N_SAMPLES, seed: int = 0):
    """Baseline and candidate correctness with exactly the given flips, at shuffled positions."""
    order = np.random.default_rng(seed).permutation(n)
    baseline = np.zeros(n, dtype=bool)
    baseline[order[:base_correct]] = True
    candidate = baseline.copy()
    candidate[order[:right_to_wrong]] = False
    candidate[order[base_correct:base_correct + wrong_to_right]] = True
    return baseline, candidate


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    baseline, dropped = planted(1400, right_to_wrong=150, wrong_to_right=50)  # a 5-point drop
    _, noisy = planted(1400, right_to_wrong=30, wrong_to_right=30)  # the same accuracy, 60 flips
    return {
        "bf16": write_run(root / "qwen3_4B_bf16", "bf16", baseline, reasoning_tokens=100),
        "nvfp4": write_run(root / "qwen3_4B_nvfp4", "nvfp4", dropped, truncated_share=0.1, reasoning_tokens=130,
                           tokens_per_second=1500.0),
        "fp8": write_run(root / "qwen3_4B_fp8", "fp8", noisy, reasoning_tokens=100, drop_ids=10),
        "hot": write_run(root / "qwen3_4B_hot", "int8", noisy[:200], overrides=("sampling.temperature=0.6",)),
    }


def test_planted_drop_is_flagged_and_noise_is_not(runs, tmp_path, capsys):
    status = compare_main([str(runs["bf16"]), str(runs["nvfp4"]), str(runs["fp8"])], None, 1.0,
                          str(tmp_path / "report"), [])
    assert status == 0
    (group,) = compare_runs([str(runs["bf16"]), str(runs["nvfp4"]), str(runs["fp8"])]).groups
    assert (group.family, group.task, group.metric) == ("Qwen3-4B", "mmlu-redux", "accuracy")
    base, fp8, nvfp4 = group.rows
    assert base.is_baseline and base.metric["value"] == pytest.approx(0.7)

    drop = nvfp4.paired
    assert drop.difference == pytest.approx(-0.05) and (drop.right_to_wrong, drop.wrong_to_right) == (150, 50)
    assert drop.test == "mcnemar_exact" and drop.significant and not drop.non_inferior
    assert drop.difference_high < -0.03 and drop.recovery == pytest.approx(1300 / 1400)
    assert nvfp4.verdict == "not shown within 1 point of bf16"
    assert nvfp4.truncation_change_points == pytest.approx(10, abs=2.5)  # about 10% of completions hit the limit
    assert nvfp4.reasoning_mean_drift_percent == pytest.approx(30.0)
    assert nvfp4.throughput_ratio == pytest.approx(1.5, rel=1e-3)

    noise = fp8.paired
    assert noise.n == N_SAMPLES - 10 and fp8.only_in_baseline == 10 and fp8.only_in_candidate == 0
    assert not noise.significant and noise.difference_low < 0 < noise.difference_high
    assert fp8.verdict == "within 1 point of bf16 at 95% confidence"
    assert any("10 id(s) only in baseline" in note for note in fp8.notes)

    printed = capsys.readouterr().out
    assert "Qwen3-4B - mmlu-redux - accuracy" in printed and "-5.00 [" in printed and "150/50" in printed
    report = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert report["settings"]["margin_points"] == 1.0 and report["not_compared"] == []
    assert report["groups"][0]["rows"][2]["paired"]["p_value"] < 1e-11
    rows = list(csv.DictReader((tmp_path / "report" / "comparison.csv").open()))
    assert [r["precision"] for r in rows] == ["bf16", "fp8", "nvfp4"]
    assert rows[2]["non_inferior"] == "False" and float(rows[2]["difference"]) == pytest.approx(-0.05)
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "| nvfp4 |" in markdown and "not shown within 1 point of bf16" in markdown


def test_sampling_mismatch_is_refused_with_what_differs(runs, capsys):
    with pytest.raises(UsageError, match=r"sampling \(temperature: 0.1 vs 0.6\)"):
        compare_runs([str(runs["bf16"]), str(runs["hot"])])
    # with something else to compare, the refused run is listed and the exit status says so
    assert compare_main([str(runs["bf16"]), str(runs["hot"]), str(runs["fp8"])], None, 1.0, None, []) == 1
    assert "not compared:" in capsys.readouterr().err


def test_task_version_mismatch_is_refused(runs, tmp_path, monkeypatch):
    from lowbit.tasks.mmlu_redux import MMLURedux

    monkeypatch.setattr(MMLURedux, "version", "2")
    baseline, _ = planted(1400, 0, 0, n=200)
    newer = write_run(tmp_path / "newer", "nvfp4", baseline)
    with pytest.raises(UsageError, match=r"task version \(run.json\) 1 vs 2; scorer version \(metrics.json\) 1 vs 2"):
        compare_runs([str(runs["bf16"]), str(newer)])


def test_different_questions_are_refused(tmp_path):
    baseline, _ = planted(100, 0, 0, n=200)
    first = write_run(tmp_path / "a", "bf16", baseline)
    second = write_run(tmp_path / "b", "nvfp4", baseline, question_suffix=" (revised)")
    with pytest.raises(UsageError, match=r"chat messages of 1 shared id\(s\), e.g. virology/199"):
        compare_runs([str(first), str(second)])


def test_a_different_chat_template_is_refused(tmp_path):
    baseline, _ = planted(100, 0, 0, n=200)
    first = write_run(tmp_path / "a", "bf16", baseline)
    second = write_run(tmp_path / "b", "nvfp4", baseline, system_line="<|im_start|>system\nBe brief.<|im_end|>\n")
    with pytest.raises(UsageError, match=r"rendered prompts \(chat template\) of 200 shared id\(s\)"):
        compare_runs([str(first), str(second)])


def test_prompt_options_split_groups_and_scoring_options_are_noted(tmp_path, capsys):
    baseline, candidate = planted(100, 5, 5, n=200)
    write_run(tmp_path / "run_bf16", "bf16", baseline)
    write_run(tmp_path / "run_nvfp4", "nvfp4", candidate, overrides=("dataset.answer_key=original",))
    write_run(tmp_path / "run_fork", "mxfp4", candidate, overrides=("dataset.hub_id=someone/mmlu-redux-fork",))
    comparison = compare_runs([str(tmp_path / "run_*")])
    (group,) = comparison.groups
    assert [row.precision for row in group.rows] == ["bf16", "nvfp4"]
    assert group.rows[1].notes == ["scored with different dataset options (answer_key: 'corrected' vs 'original')"]
    ((run, reason),) = comparison.refused
    assert run.endswith("run_fork") and "dataset options that change prompts (hub_id: " in reason
    assert compare_main([str(tmp_path / "run_*"), "baseline=bf16", "margin=5"], None, None, None, None) == 1
    captured = capsys.readouterr()
    assert "within 5 points of bf16 at 95% confidence" in captured.out and "run_fork" in captured.err


def test_partial_credit_scores_use_the_permutation_test(tmp_path):
    rng = np.random.default_rng(5)
    rates = rng.uniform(0.2, 0.9, size=300)
    overrides = ("sampling.num_return_sequences=4",)
    base = write_run(tmp_path / "aime_bf16", "bf16", rng.random((300, 4)) < rates[:, None], overrides=overrides,
                     eval_dataset="aime25")
    write_run(tmp_path / "aime_mxfp4", "mxfp4", rng.random((300, 4)) < rates[:, None] - 0.15,
                     overrides=overrides, eval_dataset="aime25")
    (group,) = compare_runs([str(tmp_path / "aime_*")], baseline=str(base)).groups
    row = group.rows[1]
    assert row.run.endswith("aime_mxfp4") and row.paired.test == "sign_flip_permutation"
    assert row.paired.significant and row.paired.difference == pytest.approx(-0.15, abs=0.05)
    assert group.baseline.startswith("bf16")


def test_bad_input_fails_with_one_line(runs, tmp_path):
    two = [str(runs["bf16"]), str(runs["nvfp4"])]
    for kwargs, message in [
        ({"baseline": "fp16"}, "no run has precision 'fp16' (precisions: bf16, nvfp4)"),
        ({"margin": 0}, "margin is in percentage points"),
    ]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compare_runs(two, **kwargs)
    with pytest.raises(UsageError, match="has no config.yaml"):
        compare_runs([str(runs["bf16"]), str(tmp_path)])
    with pytest.raises(UsageError, match="matches no run directory"):
        compare_runs([str(tmp_path / "nothing_*")])
    with pytest.raises(UsageError, match="unknown format"):
        compare_main(two, None, 1.0, str(tmp_path), ["html"])
    with pytest.raises(UsageError, match="2 runs of Qwen3-4B mmlu-redux have precision bf16"):
        compare_runs(two + [str(write_run(tmp_path / "bf16_again", "bf16", planted(10, 0, 0, n=20)[0]))])
    paths, options = split_compare_arguments([str(runs["bf16"]), "baseline=fp8", "margin=0.5"])
    assert paths == [str(runs["bf16"])] and options == {"baseline": "fp8", "margin": "0.5"}
    with pytest.raises(UsageError, match="unknown option 'margn='"):
        split_compare_arguments(["margn=2"])
    with pytest.raises(UsageError, match="margin must be a number"):
        compare_main([*two, "margin=one"])
    with pytest.raises(UsageError, match=r"baseline given twice \(fp8 and bf16\)"):
        compare_main([*two, "baseline=fp8"], baseline="bf16")
    with pytest.raises(UsageError, match="neither a run directory nor a precision label"):
        compare_runs(two, baseline=str(tmp_path / "missing"))


def test_the_command_line_compares_globbed_runs(runs, tmp_path):
    from support import run_lowbit

    pattern = str(runs["bf16"].parent / "*")
    result = run_lowbit("compare", pattern, "baseline=bf16", "margin=1", "--out", str(tmp_path / "cli"),
                        "--format", "json")
    assert result.returncode in (0, 1), result.stderr  # 1: a run that could not be paired is listed
    assert "mmlu-redux" in result.stdout and (tmp_path / "cli" / "comparison.json").is_file()
