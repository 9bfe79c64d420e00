"""MATH-500: 500 competition problems from the MATH test set (Hendrycks et al., arXiv:2103.03874), the subset
chosen for "Let's Verify Step by Step" (Lightman et al., arXiv:2305.20050), with 7 subjects and levels 1-5.

Data: the Hugging Face dataset `HuggingFaceH4/MATH-500` (split `test`; fields problem, solution, answer,
subject, level, unique_id), or `data_dir` with a `test.jsonl` in the same schema. Sample ids are `unique_id`
(e.g. `test/precalculus/807.json`), stable across runs and precisions.

Prompts (`dataset.prompt`, lowbit.tasks.prompts): the problem, then "Please reason step by step, and put your final
answer within \\boxed{}.", as one user message. `reference` (default) joins them as the reference study did per
family: a space for Qwen3 (`math500`, `math500-nonthinking`), a newline for GPT-OSS, the problem as given;
`lowbit` strips the problem and joins with a newline.

Scoring (lowbit.metrics.math_answers): the last `\\boxed{}` of the answer text (after the reasoning split) is
compared with the gold `answer` by math-verify, in a worker process with a per-item time limit
(`dataset.time_limit_seconds`). No box is a parse failure; a timeout or a checker error is a scoring failure;
both score 0. With several completions per problem, metrics add avg@n and pass@k with cluster-bootstrap
intervals (lowbit.tasks.base.sampled_accuracy_metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.metrics.math_answers import DEFAULT_TIME_LIMIT, MathVerifier, boxed_answer
from lowbit.records import Prediction, Sample
from lowbit.tasks.base import Task, sampled_accuracy_metrics, score_row
from lowbit.tasks.data import read_hub, read_local_jsonl
from lowbit.tasks.prompts import REFERENCE, PromptProfiles, chat

HUB_ID = "HuggingFaceH4/MATH-500"
FIELDS = ("problem", "answer", "subject", "level", "unique_id")
PROMPT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."


def lowbit_math_messages(item: dict[str, Any]) -> list[dict[str, str]]:
    """lowbit's boxed-answer math prompt (MATH-500, AIME 2025): one user message."""
    return chat(f"{item['problem'].strip()}\n{PROMPT_SUFFIX}")


def qwen3_math_messages(item: dict[str, Any]) -> list[dict[str, str]]:
    """The reference study's Qwen3 MATH prompt: the problem as given, one space, the instruction."""
    return chat(f"{item['problem']} {PROMPT_SUFFIX}")


def gpt_oss_math_messages(item: dict[str, Any]) -> list[dict[str, str]]:
    """The reference study's GPT-OSS MATH prompt (also its AIME prompt): the problem as given, a newline, the
    instruction."""
    return chat(f"{item['problem']}\n{PROMPT_SUFFIX}")


PROMPTS = PromptProfiles("math500", "math500", lowbit=lowbit_math_messages, reference={
    ("qwen3", "math500"): qwen3_math_messages,
    ("qwen3", "math500-nonthinking"): qwen3_math_messages,
    ("gpt_oss", "math500"): gpt_oss_math_messages,
})


@dataclass
class Math500Options:
    time_limit_seconds: float = DEFAULT_TIME_LIMIT  # per completion, for answer checking
    hub_id: str = HUB_ID
    prompt: str = REFERENCE  # reference | lowbit (lowbit.tasks.prompts)


class BoxedAnswerScorer:
    """Scores each completion's last `\\boxed{}` answer against a gold answer with math-verify, in a killable worker
    started on first use (`time_limit_seconds` per completion)."""

    def __init__(self, time_limit_seconds: float):
        if not time_limit_seconds > 0:
            raise UsageError(f"dataset.time_limit_seconds must be positive, got {time_limit_seconds}")
        self.time_limit_seconds = time_limit_seconds
        self._verifier: MathVerifier | None = None

    def score(self, prediction: Prediction, gold: str, **fields: Any) -> dict[str, Any]:
        """One scores.jsonl row; `fields` are the row's grouping fields (subject, level, ...)."""
        if self._verifier is None:
            self._verifier = MathVerifier(self.time_limit_seconds)
        extracted = [boxed_answer(c.answer) for c in prediction.completions]
        verdicts = [self._verifier.check(e, gold) if e is not None else None for e in extracted]
        return {
            **score_row(prediction, [float(v is not None and v.correct) for v in verdicts], gold=gold, **fields),
            "extracted": extracted,
            "parse_failed": [e is None for e in extracted],
            "scoring_failed": [v is not None and v.failure is not None for v in verdicts],
            "scoring_errors": [v.failure if v is not None else None for v in verdicts],
        }


class Math500(Task):
    name = "math500"
    version = "2"
    Options = Math500Options
    prompt_profiles = PROMPTS
    non_prompt_options = frozenset({"time_limit_seconds"})
    strata = ("subject", "level")

    def __init__(self, options: Math500Options):
        super().__init__(options)
        self.scorer = BoxedAnswerScorer(options.time_limit_seconds)

    # -- data -------------------------------------------------------------------------------------------

    def load(self, data_dir: str | None) -> list[Sample]:
        fields = {name: (str, int, float) for name in FIELDS}
        rows = (read_local_jsonl(Path(data_dir) / "test.jsonl", f"MATH-500 records (schema of {HUB_ID})", fields)
                if data_dir else read_hub(self.options.hub_id, split="test", local_file="test.jsonl", fields=fields))
        samples = []
        for row in rows:
            samples.append(Sample(id=str(row["unique_id"]), messages=self.messages(row), item=dict(row)))
        if len({s.id for s in samples}) != len(samples):
            raise UsageError("MATH-500 data has repeated unique_id values: sample ids must be unique")
        return samples

    # -- scoring ----------------------------------------------------------------------------------------

    def score(self, prediction: Prediction) -> dict[str, Any]:
        return self.scorer.score(prediction, str(prediction.item["answer"]),
                                 subject=prediction.item.get("subject", "unknown"),
                                 level=prediction.item.get("level", 0))

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return sampled_accuracy_metrics(rows, group_by=("subject", "level"))
