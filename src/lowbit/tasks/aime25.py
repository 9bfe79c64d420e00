"""AIME 2025: the 30 problems of the 2025 American Invitational Mathematics Examination, parts I and II. Every
answer is an integer from 0 to 999.

Data: the Hugging Face dataset `opencompass/AIME2025` (configs `AIME2025-I` and `AIME2025-II`, split `test`;
fields question/problem and answer), or `data_dir` with a `test.jsonl` of records {id, problem, answer}.
Sample ids are `2025-I-<n>` / `2025-II-<n>` (n = 1..15 in exam order), the same from either source.

Prompts (`dataset.prompt`, lowbit.tasks.prompts): `reference` (default) is the reference study's, for Qwen3 an
AIME prompt after the system message "You are an expert mathematician.", for GPT-OSS its MATH prompt
(lowbit.tasks.math500); `lowbit` is lowbit's MATH prompt. Scoring: the last `\\boxed{}` of the answer text,
read as an integer (lowbit.metrics.math_answers.integer_answer); a box holding anything else is wrong, and no
box is a parse failure.

Metrics, for n completions per problem (sampling.num_return_sequences): avg@n (= accuracy) and unbiased pass@k
for every k <= n, with cluster-bootstrap intervals when n > 1, and maj@n, majority vote over the completions'
answers (ties split by the expected value of a random tie-break, see lowbit.metrics.pass_at_k).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.metrics.math_answers import boxed_answer, integer_answer
from lowbit.metrics.pass_at_k import majority_vote_score
from lowbit.metrics.stats import mean_estimate
from lowbit.records import Prediction, Sample
from lowbit.tasks.base import Task, sampled_accuracy_metrics, score_row
from lowbit.tasks.data import read_hub, read_local_jsonl
from lowbit.tasks.math500 import gpt_oss_math_messages, lowbit_math_messages
from lowbit.tasks.prompts import REFERENCE, PromptProfiles, chat

HUB_ID = "opencompass/AIME2025"
PARTS = ("I", "II")


def qwen3_aime_messages(item: dict[str, Any]) -> list[dict[str, str]]:
    return chat("This is an AIME problem. The answer must be an integer from 0 to 999.\n\n"
                f"Problem: {item['problem']}\n\nSolve step by step and put your final answer in \\boxed{{}}.",
                system="You are an expert mathematician.")


PROMPTS = PromptProfiles("aime25", "aime25", lowbit=lowbit_math_messages, reference={
    ("qwen3", "aime25"): qwen3_aime_messages,
    ("gpt_oss", "aime25"): gpt_oss_math_messages,
})


@dataclass
class AIME25Options:
    hub_id: str = HUB_ID
    prompt: str = REFERENCE  # reference | lowbit (lowbit.tasks.prompts)


class AIME25(Task):
    name = "aime25"
    version = "2"
    Options = AIME25Options
    prompt_profiles = PROMPTS
    strata = ("part",)

    # -- data -------------------------------------------------------------------------------------------

    def load(self, data_dir: str | None) -> list[Sample]:
        rows = _read_local(Path(data_dir)) if data_dir else _read_hub(self.options.hub_id)
        samples = []
        for row in rows:
            answer = integer_answer(str(row["answer"]))
            if answer is None or not 0 <= answer <= 999:
                raise UsageError(f"AIME record {row['id']} has answer {row['answer']!r}: AIME answers are "
                                 "integers from 0 to 999")
            id_parts = str(row["id"]).split("-")  # 2025-I-1 -> part I
            item = {**row, "part": id_parts[1] if len(id_parts) == 3 else "unknown"}
            samples.append(Sample(id=str(row["id"]), messages=self.messages(item), item=item))
        if len({s.id for s in samples}) != len(samples):
            raise UsageError("AIME data has repeated ids: sample ids must be unique")
        return samples

    # -- scoring ----------------------------------------------------------------------------------------

    def score(self, prediction: Prediction) -> dict[str, Any]:
        gold = integer_answer(str(prediction.item["answer"]))
        boxed = [boxed_answer(c.answer) for c in prediction.completions]
        answers = [_vote(b) for b in boxed]
        correct = [isinstance(a, int) and a == gold for a in answers]
        return {
            **score_row(prediction, [float(c) for c in correct], part=prediction.item.get("part", "unknown"),
                        gold=gold),
            "extracted": answers,
            "parse_failed": [b is None for b in boxed],
            "majority_vote": majority_vote_score(answers, correct),
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        result = sampled_accuracy_metrics(rows, group_by=("part",))
        included = [r for r in rows if not r.get("excluded")]
        n = max((len(r["scores"]) for r in included), default=1)
        # One value per problem (0, 1, or a tie's fraction): Wilson or normal interval over problems.
        result["metrics"][f"maj@{n}"] = mean_estimate([r["majority_vote"] for r in included]).to_json()
        return result


def _vote(boxed: str | None) -> int | str | None:
    """A completion's answer as it votes: its integer, the box's text when that is not an integer (wrong, but
    agreeing completions still form a majority), None without a box."""
    if boxed is None:
        return None
    number = integer_answer(boxed)
    return number if number is not None else boxed


def _read_local(data_dir: Path) -> list[dict[str, Any]]:
    path = data_dir / "test.jsonl"
    return read_local_jsonl(path, "AIME records {id, problem, answer}",
                            {"id": (str, int), "problem": str, "answer": (str, int)})


def _read_hub(hub_id: str) -> list[dict[str, Any]]:
    """Both exam parts in order, with ids like the local file's (2025-I-1 ... 2025-II-15)."""
    rows = []
    for part in PARTS:
        records = read_hub(hub_id, config=f"AIME2025-{part}", split="test", local_file="test.jsonl")
        for index, record in enumerate(records, start=1):
            problem = record.get("question", record.get("problem"))
            if problem is None or "answer" not in record:
                raise UsageError(f"{hub_id} AIME2025-{part} record {index} has no question/answer field")
            rows.append({"id": f"2025-{part}-{index}", "problem": problem, "answer": str(record["answer"])})
    return rows
