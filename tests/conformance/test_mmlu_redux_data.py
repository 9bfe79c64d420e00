"""MMLU-Redux read through the task's own loader from the real files in shared/data/mmlu_redux."""

from collections import Counter

import pytest

from lowbit.errors import UsageError
from support import answered
from lowbit.tasks import make_task
from lowbit.tasks.mmlu_redux import SEED30, SUBJECTS




@pytest.fixture(scope="module")
def samples(mmlu_redux_dir):
    return make_task("mmlu-redux").load(str(mmlu_redux_dir))


def test_all_subjects_load_with_stable_unique_ids(samples):
    assert len(samples) == 57 * 100
    assert len({s.id for s in samples}) == len(samples)
    assert Counter(s.item["subject"] for s in samples) == {subject: 100 for subject in SUBJECTS}
    assert samples[0].id == "abstract_algebra/0" and samples[-1].id == "world_religions/99"
    assert Counter(s.item["error_type"] for s in samples) == {
        "ok": 5330, "bad_question_clarity": 132, "wrong_groundtruth": 107, "multiple_correct_answers": 39,
        "no_correct_answer": 35, "expert": 32, "bad_options_clarity": 25}


def test_seed30_subset(mmlu_redux_dir):
    samples = make_task("mmlu-redux", {"subset": "seed30"}).load(str(mmlu_redux_dir))
    assert len(SEED30) == len(set(SEED30)) == 30 and set(SEED30) <= set(SUBJECTS)
    assert {s.item["subject"] for s in samples} == set(SEED30) and len(samples) == 3000


@pytest.mark.parametrize("policy, included", [("corrected", 5700 - 132 - 39 - 35 - 25 - 5), ("ok_only", 5330),
                                              ("original", 5700), ("reference", 5700 - 35)])
def test_answer_key_policies(samples, policy, included):
    task = make_task("mmlu-redux", {"answer_key": policy})
    rows = [task.score(answered(s, "no letter here")) for s in samples]
    assert sum(not r["excluded"] for r in rows) == included


def test_the_reference_key_scores_wrong_groundtruth_against_the_correction(samples):
    task = make_task("mmlu-redux", {"answer_key": "reference"})
    corrected = [s for s in samples if s.item["error_type"] == "wrong_groundtruth"]
    with_fix = [s for s in corrected if s.item["correct_answer"]]
    without_fix = [s for s in corrected if not s.item["correct_answer"]]
    assert len(with_fix) == 102 and len(without_fix) == 5
    assert all(task.score(answered(s, f"ANSWER: {s.item['correct_answer']}"))["score"] == 1.0 for s in with_fix)
    for sample in without_fix:  # counted, and no letter is right
        rows = [task.score(answered(sample, f"ANSWER: {letter}")) for letter in "ABCD"]
        assert [r["score"] for r in rows] == [0.0] * 4 and not any(r["excluded"] for r in rows)
    flawed = next(s for s in samples if s.item["error_type"] == "bad_question_clarity")
    assert task.score(answered(flawed, f"ANSWER: {'ABCD'[flawed.item['answer']]}"))["score"] == 1.0


def test_gold_answers_score_perfectly_and_shifted_answers_do_not(samples):
    task = make_task("mmlu-redux")
    gold_rows, shifted_rows = [], []
    for sample in samples:
        gold, excluded = task.gold(sample.item)
        if excluded:
            continue
        shifted = "ABCD"[("ABCD".index(gold) + 1) % 4]
        gold_rows.append(task.score(answered(sample, f"Reasoning...\nANSWER: {gold}")))
        shifted_rows.append(task.score(answered(sample, f"ANSWER: {shifted}")))
    assert task.aggregate(gold_rows)["metrics"]["accuracy"]["value"] == 1.0
    assert task.aggregate(shifted_rows)["metrics"]["accuracy"]["value"] == 0.0


def test_wrong_groundtruth_rows_are_scored_against_the_correction(samples):
    task = make_task("mmlu-redux")
    corrected = [s for s in samples if s.item["error_type"] == "wrong_groundtruth" and s.item["correct_answer"]]
    assert len(corrected) == 102
    changed = [s for s in corrected if s.item["correct_answer"] != "ABCD"[s.item["answer"]]]
    assert changed, "some corrections must differ from the original key"
    for sample in changed:
        assert task.score(answered(sample, f"ANSWER: {sample.item['correct_answer']}"))["score"] == 1.0
        assert make_task("mmlu-redux", {"answer_key": "original"}).score(
            answered(sample, f"ANSWER: {sample.item['correct_answer']}"))["score"] == 0.0


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="anatomy.jsonl not found"):
        make_task("mmlu-redux", {"subjects": ["anatomy"]}).load(str(tmp_path))
