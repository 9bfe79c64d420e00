"""AIME 2025 read through the task's own loader from the real file in shared/data/aime25, and scored."""

import json

import pytest

from lowbit.errors import UsageError
from lowbit.tasks import make_task
from support import answered, require_shared


@pytest.fixture(scope="module")
def aime25_dir():
    return require_shared("aime25", "real AIME 2025 file")


@pytest.fixture(scope="module")
def task():
    return make_task("aime25")


@pytest.fixture(scope="module")
def samples(task, aime25_dir):
    return task.load(str(aime25_dir))




def test_loads_both_parts_with_integer_answers(samples):
    assert [s.id for s in samples] == [f"2025-{p}-{n}" for p in ("I", "II") for n in range(1, 16)]
    assert all(0 <= int(s.item["answer"]) <= 999 for s in samples)
    assert samples[0].item["answer"] == "70" and samples[0].item["part"] == "I"


@pytest.mark.parametrize("answer,correct", [
    ("So the sum is $\\boxed{70}$.", True),
    ("$\\boxed{070}$", True),
    ("$\\boxed{\\text{70}}$", True),
    ("$\\boxed{b = 70}$", True),
    ("$\\boxed{70.0}$", True),
    ("$\\boxed{71}$", False),
    ("$\\boxed{\\frac{140}{2}}$", False),  # AIME answers are integers as written
    ("$\\boxed{7}$", False),
    ("The sum is 70.", False),  # no box
])
def test_answers_are_read_as_integers(task, samples, answer, correct):
    row = task.score(answered(samples[0], answer))
    assert row["score"] == float(correct)


def test_several_completions_give_avg_pass_and_majority(task, samples):
    def boxed(value):
        return f"$\\boxed{{{value}}}$"

    first, second, third, fourth = samples[:4]
    gold = [int(s.item["answer"]) for s in samples[:4]]
    rows = [
        task.score(answered(first, *[boxed(gold[0])] * 3, boxed(1))),  # 3/4 correct, majority right
        task.score(answered(second, boxed(gold[1]), boxed(1), boxed(1), "no answer")),  # 1/4, majority wrong
        task.score(answered(third, boxed(gold[2]), boxed(gold[2]), boxed(5), boxed(5))),  # 2/4, a tie: 0.5
        task.score(answered(fourth, "cut off", "cut off", "cut off", "cut off", finish_reason="length")),  # none
    ]
    assert [r["majority_vote"] for r in rows] == [1.0, 0.0, 0.5, 0.0]
    metrics = task.aggregate(rows)["metrics"]
    assert metrics["avg@4"]["value"] == pytest.approx((0.75 + 0.25 + 0.5 + 0) / 4)
    assert metrics["avg@4"]["method"] == "cluster_bootstrap" and metrics["pass@1"] == metrics["avg@4"]
    # pass@2 per problem: 1 - C(4-c, 2)/C(4, 2) -> c=3: 1, c=1: 1/2, c=2: 5/6, c=0: 0
    assert metrics["pass@2"]["value"] == pytest.approx((1 + 0.5 + 5 / 6 + 0) / 4)
    assert metrics["pass@4"]["value"] == 0.75
    assert metrics["maj@4"]["value"] == pytest.approx(1.5 / 4) and metrics["maj@4"]["method"] == "normal"
    assert (metrics["parse_failures"], metrics["truncated_completions"]) == (5, 4)


def test_one_completion_is_plain_accuracy(task, samples):
    rows = [task.score(answered(s, f"$\\boxed{{{s.item['answer']}}}$" if i < 10 else "$\\boxed{1000}$"))
            for i, s in enumerate(samples)]
    metrics = task.aggregate(rows)["metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(1 / 3) and metrics["accuracy"]["method"] == "wilson"
    assert metrics["maj@1"]["value"] == pytest.approx(1 / 3) and metrics["pass@1"] == metrics["accuracy"]
    assert "pass@2" not in metrics


def test_answers_outside_0_to_999_are_refused(tmp_path):
    (tmp_path / "test.jsonl").write_text(json.dumps({"id": "2025-I-1", "problem": "?", "answer": "1/2"}) + "\n")
    with pytest.raises(UsageError, match="0 to 999"):
        make_task("aime25").load(str(tmp_path))
