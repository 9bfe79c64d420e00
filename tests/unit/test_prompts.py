"""Prompt profiles (`dataset.prompt`): how a task picks its messages, what the config records, and the reference
study's first-match MMLU extraction reported beside lowbit's."""

import numpy as np
import pytest

from lowbit.config import resolve_eval
from lowbit.errors import UsageError
from lowbit.metrics.multiple_choice import extract_choice, first_match_choice
from lowbit.records import Sample
from lowbit.tasks import make_task
from lowbit.tasks.prompts import PromptContext
from support import answered

ITEM = {"subject": "anatomy", "index": 0, "question": "Which one?", "choices": ["w", "x", "y", "z"], "answer": 1,
        "error_type": "ok"}


@pytest.mark.parametrize("text, reference_rule, lowbit_rule", [
    ("ANSWER: B", "B", "B"),
    ("Answer: B\nOn reflection, ANSWER: C", "B", "C"),  # the study takes the first, lowbit the last commitment
    ("Reasoning first.\nanswer: D", "D", "D"),
    ("answer: because the options differ, D", "B", None),  # "answer:" then a word starting with b reads B
    ("**Answer:** A", "A", "A"),
    ("answer: **a**", "A", None),  # lowbit accepts capital letters only
    ("  c  ", "C", None),
    ("\\boxed{C}", "C", "C"),
    ("\\boxed{\\text{D. Narcolepsy}}", "D", "D"),
    ("\\text{Answer}: \\text{B}", "B", "B"),
    ("The answer is C", None, "C"),
    ("I think it's (B).", None, None),
    ("", None, None),
])
def test_first_match_rule_on_written_answers(text, reference_rule, lowbit_rule):
    assert first_match_choice(text) == reference_rule
    assert extract_choice(text).letter == lowbit_rule


def test_mmlu_metrics_count_extraction_disagreements_and_the_reference_rule_accuracy():
    task = make_task("mmlu-redux")
    answers = {  # gold B (answer 1) unless given
        "s1": ("Answer: B\nOn reflection, ANSWER: C", 1),  # lowbit wrong, study right
        "s2": ("ANSWER: B", 1),  # both right
        "s3": ("The answer is C", 2),  # lowbit right, study unparsed
        "s4": ("ANSWER: A", 3),  # both wrong, same letter
        "s5": ("answer: because the options differ, D", 1),  # lowbit unparsed, study reads B
        "flawed": ("Answer: B\nANSWER: C", 1),
    }
    rows = []
    for sample_id, (text, gold) in answers.items():
        item = {**ITEM, "answer": gold, "error_type": "bad_question_clarity" if sample_id == "flawed" else "ok"}
        rows.append(task.score(answered(Sample(id=sample_id, messages=[], item=item), text)))
    assert [r["reference_rule_extracted"] for r in rows] == [["B"], ["B"], [None], ["A"], ["B"], ["B"]]
    metrics = task.aggregate(rows)["metrics"]
    assert metrics["extraction_disagreements"] == 3  # s1, s3, s5; the excluded question does not count
    assert metrics["accuracy"]["value"] == pytest.approx(2 / 5)
    assert metrics["reference_rule_accuracy"]["value"] == pytest.approx(3 / 5)
    assert metrics["reference_rule_accuracy"]["n"] == 5


def test_reference_is_the_default_profile_and_config_yaml_records_it():
    default = resolve_eval(["eval_dataset=mmlu-redux"])
    assert default.resolved["dataset"]["prompt"] == "reference"
    assert default.task.messages(ITEM)[0] == {"role": "system", "content": "You are a helpful assistant."}
    lowbit = resolve_eval(["eval_dataset=mmlu-redux", "dataset.prompt=lowbit"])
    assert lowbit.resolved["dataset"]["prompt"] == "lowbit"
    assert [m["role"] for m in lowbit.task.messages(ITEM)] == ["user"]


def test_the_sampling_block_and_family_pick_the_messages():
    gpt_oss = resolve_eval(["model=gpt_oss_20B", "eval_dataset=mmlu-redux"]).task
    assert [m["role"] for m in gpt_oss.messages(ITEM)] == ["user"]
    record = {"question_title": "T", "question_content": "Q", "starter_code": ""}
    plain = resolve_eval(["eval_dataset=livecode_v5"]).task.messages(record)
    thinking = resolve_eval(["eval_dataset=livecode_v5", "eval_dataset_config=livecode_v5-thinking"]).task
    assert plain == [{"role": "user", "content": "T\n\nQ\n\nProvide only the complete Python code solution."}]
    assert thinking.messages(record)[0] == {"role": "system", "content": "You are a helpful assistant"}


def test_a_block_the_study_did_not_name_gets_the_tasks_own_messages():
    """MMLU-Redux in thinking mode (the math500 block) keeps the study's MMLU-Redux messages for Qwen3."""
    task = resolve_eval(["eval_dataset=mmlu-redux", "eval_dataset_config=math500"]).task
    assert task.messages(ITEM) == make_task("mmlu-redux").messages(ITEM)


def test_a_family_the_study_never_ran_is_refused_naming_the_lowbit_profile():
    task = make_task("math500")
    with pytest.raises(UsageError, match=r"ran math500 with qwen3, gpt_oss only.*pass dataset.prompt=lowbit$"):
        task.bind_model("some/llama", {}, PromptContext("llama3", "math500"))
    lowbit = make_task("math500", {"prompt": "lowbit"})
    lowbit.bind_model("some/llama", {}, PromptContext("llama3", "math500"))
    assert lowbit.messages({"problem": "1+1?"})[0]["content"].startswith("1+1?\nPlease reason")


def test_an_unknown_profile_is_a_one_line_error():
    with pytest.raises(UsageError, match=r"unknown dataset.prompt 'study'; choose one of reference, lowbit"):
        resolve_eval(["eval_dataset=aime25", "dataset.prompt=study"])


def test_an_unbound_task_uses_the_default_models_context():
    assert make_task("livecode_v5").prompt_context == PromptContext("qwen3", "livecode_v5")
    assert make_task("ruler-vt-8k").prompt_context == PromptContext("qwen3", "ruler-32k")


def test_compare_refuses_runs_of_different_profiles(tmp_path):
    from lowbit.report.compare import compare_runs
    from report_support import write_run

    correct = np.ones(200, dtype=bool)
    reference = write_run(tmp_path / "reference", "bf16", correct)
    lowbit = write_run(tmp_path / "lowbit", "nvfp4", correct, overrides=("dataset.prompt=lowbit",))
    with pytest.raises(UsageError, match=r"prompt: 'reference' vs 'lowbit'"):
        compare_runs([str(reference), str(lowbit)])
