"""IFEval: 541 prompts with 834 verifiable instructions of 25 types (Zhou et al. 2023, arXiv:2311.07911).

Data: the Hugging Face dataset `google/IFEval` (split `train`; fields key, prompt, instruction_id_list, kwargs),
or `data_dir` holding `input_data.jsonl` in the same schema (the reference repository's file). Sample ids are
`str(key)`. The prompt is sent unchanged as the user message; under `dataset.prompt=reference` (default, the
reference study's messages) Qwen3 gets the system message "You are a helpful assistant." before it, GPT-OSS
none; `dataset.prompt=lowbit` sends the user message alone (lowbit.tasks.prompts).

Scoring (lowbit's own checkers, following the paper and the reference implementation's behaviour; the
definitions are in `checks_words.py` and `checks_format.py`, strict and loose evaluation in `instructions.py`):
- per completion, each instruction is judged followed or not, strictly and loosely; a prompt passes when all of
  its instructions are followed. A completion with no answer (stopped inside its reasoning) follows nothing.
- scores.jsonl: `scores` are the per-completion prompt-level *strict* passes (so `score`, the primary number,
  is prompt-level strict accuracy, the paper's headline metric); `loose_scores` the prompt-level loose passes;
  `instruction_ids`, and per completion the lists `instructions_strict` / `instructions_loose`.
- metrics.json: `prompt_strict`, `prompt_loose` (means over prompts, Wilson or normal interval as every lowbit
  accuracy), `instruction_strict`, `instruction_loose` (fraction of all instructions followed, with a cluster
  bootstrap interval over prompts: see `metrics.py`), `passed` (prompts passing and instructions followed),
  sample / completion / instruction / truncation counts, and groups `instruction_type` and
  `instruction_category` -> {strict, loose, total}. Counts are over completions: with one completion per
  prompt, `instruction_type` gives the instructions of that type followed strictly / loosely / present.
- keywords:letter_frequency counts the requested character as given, also when it is not a letter (key 1122
  asks for "#"); see `checks_words.py`.

Sentence counting needs NLTK's English Punkt data (`punkt_tab`): `dataset.nltk_data=<dir>` or `$NLTK_DATA`.
It is looked up when the task is created, so a missing package fails before any model runs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.metrics.stats import mean_estimate
from lowbit.records import Prediction, Sample
from lowbit.tasks.base import Task, score_row
from lowbit.tasks.data import read_hub, read_local_jsonl
from lowbit.tasks.prompts import HELPFUL_ASSISTANT, REFERENCE, PromptProfiles, chat
from lowbit.tasks.ifeval.instructions import INSTRUCTION_TYPES, build_checks, judge
from lowbit.tasks.ifeval.metrics import instruction_level_estimate
from lowbit.tasks.ifeval.text import TextAnalyzer

HUB_ID = "google/IFEval"
DATA_FILE = "input_data.jsonl"
PROMPTS = PromptProfiles("ifeval", "ifeval", lowbit=lambda item: chat(item["prompt"]), reference={
    ("qwen3", "ifeval"): lambda item: chat(item["prompt"], system=HELPFUL_ASSISTANT),
    ("gpt_oss", "ifeval"): lambda item: chat(item["prompt"]),
})


@dataclass
class IFEvalOptions:
    nltk_data: str | None = None  # directory holding tokenizers/punkt_tab (default: $NLTK_DATA, then NLTK's path)
    hub_id: str = HUB_ID
    prompt: str = REFERENCE  # reference | lowbit (lowbit.tasks.prompts)


class IFEval(Task):
    name = "ifeval"
    version = "2"
    Options = IFEvalOptions
    prompt_profiles = PROMPTS
    non_prompt_options = frozenset({"nltk_data"})
    headline_metric = "prompt_strict"

    def __init__(self, options: IFEvalOptions):
        super().__init__(options)
        self.text = TextAnalyzer.from_option(options.nltk_data)

    # -- data -------------------------------------------------------------------------------------------

    def load(self, data_dir: str | None) -> list[Sample]:
        fields = {"key": (int, str), "prompt": str, "instruction_id_list": list, "kwargs": list}
        rows = (read_local_jsonl(Path(data_dir) / DATA_FILE,
                                 f"IFEval records (schema of {HUB_ID}: key, prompt, instruction_id_list, kwargs)",
                                 fields)
                if data_dir else read_hub(self.options.hub_id, split="train", local_file=DATA_FILE, fields=fields))
        samples = []
        for row in rows:
            item = _item(row)
            try:
                build_checks(item["instruction_id_list"], item["kwargs"], self.text)
            except ValueError as e:
                raise UsageError(f"IFEval key {item['key']}: {e}") from e
            samples.append(Sample(id=str(item["key"]), messages=self.messages(item), item=item))
        return samples

    # -- scoring ----------------------------------------------------------------------------------------

    def score(self, prediction: Prediction) -> dict[str, Any]:
        item = prediction.item
        checks = build_checks(item["instruction_id_list"], item["kwargs"], self.text)
        judgements = [judge(checks, "" if c.ended_in_reasoning else c.answer) for c in prediction.completions]
        return score_row(
            prediction,
            [float(all(j.strict)) for j in judgements],
            loose_scores=[float(all(j.loose)) for j in judgements],
            instruction_ids=list(item["instruction_id_list"]),
            instructions_strict=[j.strict for j in judgements],
            instructions_loose=[j.loose for j in judgements],
        )

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        rows = [r for r in rows if not r.get("excluded")]
        loose = [_mean(r["loose_scores"]) for r in rows]
        counts = [len(r["instruction_ids"]) for r in rows]
        metrics = {
            "prompt_strict": mean_estimate([r["score"] for r in rows]).to_json(),
            "prompt_loose": mean_estimate(loose).to_json(),
            "instruction_strict": instruction_level_estimate(
                [_mean([sum(f) for f in r["instructions_strict"]]) for r in rows], counts),
            "instruction_loose": instruction_level_estimate(
                [_mean([sum(f) for f in r["instructions_loose"]]) for r in rows], counts),
            "passed": {  # counted over completions: with one completion per prompt, prompts / instructions
                "prompt_strict": int(sum(sum(r["scores"]) for r in rows)),
                "prompt_loose": int(sum(sum(r["loose_scores"]) for r in rows)),
                "instruction_strict": sum(sum(map(sum, r["instructions_strict"])) for r in rows),
                "instruction_loose": sum(sum(map(sum, r["instructions_loose"])) for r in rows),
            },
            "samples": len(rows),
            "completions": sum(len(r["scores"]) for r in rows),
            "instructions": sum(counts),
            "truncated_completions": sum(sum(r["truncated"]) for r in rows),
            "excluded": 0,
            "excluded_by_reason": {},
        }
        return {"metrics": metrics, "groups": _instruction_groups(rows)}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _instruction_groups(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Per instruction type and per category (the part before ":"): followed strictly, loosely, and the total,
    each counted over completions."""
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: {"strict": 0, "loose": 0, "total": 0})
    by_category: dict[str, dict[str, int]] = defaultdict(lambda: {"strict": 0, "loose": 0, "total": 0})
    for row in rows:
        for strict, loose in zip(row["instructions_strict"], row["instructions_loose"]):
            for instruction_id, s, lo in zip(row["instruction_ids"], strict, loose):
                for counter in (by_type[instruction_id], by_category[instruction_id.split(":")[0]]):
                    counter["strict"] += int(s)
                    counter["loose"] += int(lo)
                    counter["total"] += 1
    return {"instruction_type": dict(sorted(by_type.items())),
            "instruction_category": dict(sorted(by_category.items()))}


def _item(row: dict[str, Any]) -> dict[str, Any]:
    """The source record with kwargs reduced to the arguments that apply (the hub copy pads them with None)."""
    missing = [f for f in ("key", "prompt", "instruction_id_list", "kwargs") if f not in row]
    if missing:
        raise UsageError(f"IFEval record lacks {', '.join(missing)}: expected the schema of {HUB_ID} "
                         "(key, prompt, instruction_id_list, kwargs)")
    unknown = sorted(set(row["instruction_id_list"]) - set(INSTRUCTION_TYPES))
    if unknown:
        raise UsageError(f"IFEval key {row['key']}: unknown instruction type(s) {', '.join(unknown)}")
    kwargs = [{k: v for k, v in (entry or {}).items() if v is not None} for entry in row["kwargs"]]
    return {"key": row["key"], "prompt": row["prompt"], "instruction_id_list": list(row["instruction_id_list"]),
            "kwargs": kwargs}
