"""LiveCodeBench against the real files in shared/data/livecodebench: the official record (Codeforces 1873A with its
real encoded private tests) decodes and scores, and the 279 real v5 prompts of QwQ's evaluation are rebuilt byte
for byte by the prompt template."""

from __future__ import annotations

import json

import pytest

from lowbit.records import Completion, Prediction
from lowbit.tasks import make_task
from lowbit.tasks.livecodebench import problem_of
from lowbit.tasks.livecodebench.prompts import WITH_STARTER_CODE, WITHOUT_STARTER_CODE, prompt_text
from lowbit.testing.data import shared_path

SHORT_SORT = ("t = int(input())\nfor _ in range(t):\n    s = input().strip()\n"
              "    print('YES' if sum(a != b for a, b in zip(s, 'abc')) in (0, 2) else 'NO')\n")


@pytest.fixture(scope="module")
def lcb_dir():
    path = shared_path("livecodebench")
    if path is None:
        pytest.skip("shared/data/livecodebench is absent (real LiveCodeBench records; see shared/data/SOURCES.md)")
    return path


@pytest.fixture(scope="module")
def official(lcb_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("lcb-official")
    (folder / "test.jsonl").write_text((lcb_dir / "official_format_sample.jsonl").read_text())
    task = make_task("livecode_v5", {"start_date": None, "end_date": None})
    (sample,) = task.load(str(folder))
    return task, sample


def test_official_private_tests_decode(official):
    _, sample = official
    problem = problem_of(sample.item)
    assert sample.id == "1873_A" and problem.mode == "stdin" and len(problem.inputs) == 5  # 1 public + 4 private
    assert problem.inputs[1:] == ("1\nabc\n", "3\nabc\nabc\nabc\n", "5\ncab\nacb\ncba\nbac\nbca\n",
                                  "6\nabc\nabc\nabc\nabc\nabc\nabc\n")
    assert problem.outputs[3] == "NO\nYES\nYES\nYES\nNO\n"


def test_official_problem_is_outside_the_default_window(official):
    folder = official[1]
    task = make_task("livecode_v5")  # contest 2023-08-21, before v5's default window of 2024-10-01 .. 2025-02-01
    assert folder.item["contest_date"].startswith("2023-08-21")
    assert task.options.start_date == "2024-10-01" and task.options.end_date == "2025-02-01"


def test_correct_solution_passes_all_five_tests_and_a_wrong_one_fails(official):
    task, sample = official
    answers = [f"```python\n{SHORT_SORT}```", "```python\nfor _ in range(int(input())):\n    input()\n    print('YES')\n```"]
    row = task.score(Prediction(id=sample.id, prompt="", item=sample.item, completions=[
        Completion(text=a, answer=a, reasoning=None, finish_reason="stop") for a in answers]))
    assert row["outcomes"] == ["passed", "wrong_answer"] and row["tests_passed"] == [5, 0] and row["tests"] == 5


def test_prompt_template_rebuilds_the_real_v5_prompts(lcb_dir):
    records = [json.loads(line) for line in (lcb_dir / "qwq_v5_prompts.jsonl").read_text().splitlines()]
    assert len(records) == 279
    with_starter = 0
    for record in records:
        prompt = record["prompt"]
        head, _, rest = prompt.partition("\n\nQuestion: ")
        if f"\n\n{WITH_STARTER_CODE}\n```python\n" in rest:
            question, _, tail = rest.rpartition(f"\n\n{WITH_STARTER_CODE}\n```python\n")
            starter = tail.removesuffix("\n```\n\n")
            with_starter += 1
        else:
            question = rest.rpartition(f"\n\n{WITHOUT_STARTER_CODE}")[0]
            starter = ""
        assert prompt_text(question, starter) == prompt, record["question_id"]
    assert with_starter == 104  # the LeetCode problems
