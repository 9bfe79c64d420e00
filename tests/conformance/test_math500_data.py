"""MATH-500 read through the task's own loader from the real file in shared/data/math500, and scored."""

import json
from collections import Counter

import pytest

from lowbit.errors import UsageError
from lowbit.records import Completion, Prediction
from lowbit.run import RunDir, score_run
from lowbit.tasks import make_task
from support import answered, require_shared

# Scoring problem i's gold solution against problem i+1's answer (the last against the first) matches only
# where the two answers are genuinely the same value: (problem, next problem, boxed answer, next gold).
COINCIDENCES = [
    ("test/algebra/1837.json", "test/algebra/2193.json", "5", "x=5"),
    ("test/number_theory/978.json", "test/algebra/2199.json", "7", "7"),
    ("test/number_theory/928.json", "test/counting_and_probability/761.json", "3", "3"),
]


@pytest.fixture(scope="module")
def math500_dir():
    return require_shared("math500", "real MATH-500 file")


@pytest.fixture(scope="module")
def task():
    return make_task("math500")


@pytest.fixture(scope="module")
def samples(task, math500_dir):
    return task.load(str(math500_dir))




def test_loads_500_problems_with_stable_unique_ids(samples):
    assert len(samples) == 500 and len({s.id for s in samples}) == 500
    assert samples[0].id == "test/precalculus/807.json"
    assert Counter(s.item["subject"] for s in samples) == {
        "Algebra": 124, "Intermediate Algebra": 97, "Prealgebra": 82, "Number Theory": 62, "Precalculus": 56,
        "Geometry": 41, "Counting & Probability": 38}
    assert Counter(s.item["level"] for s in samples) == {1: 43, 2: 90, 3: 105, 4: 128, 5: 134}


def test_every_gold_solution_scores_as_correct(task, samples):
    rows = [task.score(answered(s, s.item["solution"])) for s in samples]
    wrong = [(r["id"], r["extracted"], r["gold"]) for r in rows if r["score"] != 1.0]
    assert wrong == []
    assert not any(f for r in rows for f in r["scoring_failed"])


def test_solutions_match_the_next_problems_answer_only_by_genuine_coincidence(task, samples):
    matches = []
    for sample, following in zip(samples, samples[1:] + samples[:1]):
        shifted = {**sample.item, "answer": following.item["answer"]}
        row = task.score(Prediction(id=sample.id, prompt="", item=shifted, completions=[
            Completion(text="", answer=sample.item["solution"], reasoning=None, finish_reason="stop")]))
        assert not any(row["scoring_failed"])
        if row["score"]:
            matches.append((sample.id, following.id, row["extracted"][0], following.item["answer"]))
    assert matches == COINCIDENCES


def test_metrics_count_failures_and_group_by_subject_and_level(task, samples, tmp_path):
    chosen = samples[:6]
    run = RunDir(tmp_path)
    with run.prediction_writer() as writer:
        writer.append([
            answered(chosen[0], chosen[0].item["solution"]).to_json(),  # correct
            answered(chosen[1], "I am not sure.").to_json(),  # no box: parse failure
            answered(chosen[2], "$\\boxed{-12345}$").to_json(),  # wrong
            answered(chosen[3], "Let me think about $\\boxed{", finish_reason="length").to_json(),  # truncated
            answered(chosen[4], f"$\\boxed{{{chosen[4].item['answer']}}}$").to_json(),  # correct
            answered(chosen[5], f"$\\boxed{{{chosen[5].item['answer']}}}$").to_json(),  # correct
        ])
    metrics = score_run(run, task)
    assert json.loads(run.file("metrics.json").read_text())["metrics"] == metrics["metrics"]
    summary = metrics["metrics"]
    assert summary["accuracy"]["value"] == 0.5 and summary["accuracy"]["method"] == "wilson"
    assert (summary["samples"], summary["parse_failures"], summary["truncated_completions"]) == (6, 2, 1)
    assert summary["scoring_failures"] == 0 and summary["pass@1"] == summary["avg@1"] == summary["accuracy"]
    assert sum(g["n"] for g in metrics["groups"]["subject"].values()) == 6
    assert set(metrics["groups"]["level"]) == {str(s.item["level"]) for s in chosen}


def test_several_completions_add_pass_at_k_with_bootstrap_intervals(task, samples):
    gold = [f"$\\boxed{{{s.item['answer']}}}$" for s in samples[:20]]
    rows = [task.score(answered(s, g if i % 2 else "$\\boxed{-1}$", g if i % 4 == 0 else "$\\boxed{-1}$",
                               "$\\boxed{-1}$", g))
            for i, (s, g) in enumerate(zip(samples[:20], gold))]
    metrics = task.aggregate(rows)["metrics"]
    # per problem: i odd -> 2 of 4 correct; i % 4 == 0 -> 2 of 4; i % 4 == 2 -> 1 of 4
    assert metrics["avg@4"] == metrics["accuracy"] == metrics["pass@1"]
    assert metrics["accuracy"]["value"] == pytest.approx((10 * 0.5 + 5 * 0.5 + 5 * 0.25) / 20)
    assert metrics["accuracy"]["method"] == "cluster_bootstrap"
    assert metrics["pass@4"]["value"] == 1.0 and metrics["completions_per_sample"] == 4
    assert metrics["pass@2"]["value"] == pytest.approx((15 * (1 - 1 / 6) + 5 * 0.5) / 20)


def test_a_timeout_is_a_scoring_failure_not_a_crash(math500_dir):
    task = make_task("math500", {"time_limit_seconds": 1.0})
    sample = next(s for s in task.load(str(math500_dir)) if s.item["answer"].isdigit())  # a number to compare
    row = task.score(answered(sample, "$\\boxed{9^{9^{9^{9}}}}$", sample.item["solution"]))
    assert row["scores"] == [0.0, 1.0] and row["scoring_failed"] == [True, False]
    assert row["scoring_errors"] == ["timeout", None]
    assert task.aggregate([row])["metrics"]["scoring_failures"] == 1


def test_bad_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="test.jsonl"):
        make_task("math500").load(str(tmp_path))
    (tmp_path / "test.jsonl").write_text(json.dumps({"problem": "1+1?", "answer": "2"}) + "\n")
    with pytest.raises(UsageError, match=r"test\.jsonl:1: the record has no 'subject' field"):
        make_task("math500").load(str(tmp_path))
    with pytest.raises(UsageError, match="time_limit_seconds"):
        make_task("math500", {"time_limit_seconds": 0})
