"""MMLU-Redux 2.0: 57 MMLU subjects x 100 questions, re-annotated for errors (Gema et al., arXiv:2406.04127).

Data: the Hugging Face dataset `edinburgh-dawg/mmlu-redux-2.0` (one config per subject, split `test`; fields
question, choices, answer, error_type, correct_answer, ...), or `data_dir` with one `<subject>.jsonl` per
subject in the same schema. Sample ids are `<subject>/<row index>`, stable across runs and precisions.

Answer keys (`dataset.answer_key`), applied at scoring time so a run can be re-scored under another policy:
- `corrected` (default): `ok` and `expert` rows keep `answer`; `wrong_groundtruth` rows are scored against the
  annotators' `correct_answer` (excluded when they gave none); the other error types are excluded.
- `ok_only`: only `ok` rows, with `answer` (what lm-evaluation-harness reports).
- `original`: every row with the original MMLU `answer`.
- `reference`: the reference study's key: `no_correct_answer` rows are excluded, `wrong_groundtruth` rows are
  scored against `correct_answer` (none right when the annotators gave none), all others against `answer`.

Prompts (`dataset.prompt`, lowbit.tasks.prompts): `reference` (default) is the reference study's message, a
subject hint asking for 'ANSWER: $LETTER' and "A. choice" options, after a system message for Qwen3; `lowbit` is
lowbit's own single user message. Scoring reads the last committed letter (lowbit.metrics.multiple_choice);
metrics.json also counts the completions whose letter the study's first-match rule reads differently
(`extraction_disagreements`) and gives the accuracy under that rule (`reference_rule_accuracy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.metrics.multiple_choice import extract_choice, first_match_choice
from lowbit.metrics.stats import mean_estimate
from lowbit.records import Prediction, Sample
from lowbit.tasks.base import Task, accuracy_metrics, score_row
from lowbit.tasks.data import read_hub, read_local_jsonl

# The fields a record must hold (the schema of edinburgh-dawg/mmlu-redux-2.0), with their types.
RECORD_FIELDS = {"question": str, "choices": list, "answer": int}
from lowbit.tasks.prompts import (HELPFUL_ASSISTANT, LETTERS, REFERENCE, PromptProfiles, chat, lettered_options,
                                  mmlu_subject_hint)

HUB_ID = "edinburgh-dawg/mmlu-redux-2.0"

SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies",
    "machine_learning", "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes",
    "moral_scenarios", "nutrition", "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies", "sociology",
    "us_foreign_policy", "virology", "world_religions",
)

# The 30-subject subset of the reference Qwen3 quantization study.
SEED30 = (
    "anatomy", "business_ethics", "clinical_knowledge", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_medicine", "college_physics", "econometrics", "electrical_engineering",
    "formal_logic", "global_facts", "high_school_chemistry", "high_school_mathematics", "high_school_physics",
    "high_school_statistics", "human_aging", "logical_fallacies", "machine_learning", "miscellaneous",
    "philosophy", "professional_accounting", "public_relations", "virology", "conceptual_physics",
    "high_school_us_history", "astronomy", "high_school_geography", "high_school_macroeconomics",
    "professional_law",
)
SUBSETS = {"all": SUBJECTS, "seed30": SEED30}
ANSWER_KEYS = ("corrected", "ok_only", "original", "reference")

LOWBIT_PROMPT = (
    "Answer the following multiple choice question. The last line of your response should be of the following "
    "format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of {letters}.\n\n{question}\n\n{options}"
)


def lowbit_messages(item: dict[str, Any]) -> list[dict[str, str]]:
    choices = "\n".join(f"{letter}) {choice}" for letter, choice in zip(LETTERS, item["choices"]))
    return chat(LOWBIT_PROMPT.format(letters=LETTERS, question=item["question"].strip(), options=choices))


def reference_user_message(item: dict[str, Any]) -> str:
    return (f"{mmlu_subject_hint(item['subject'])}\nQuestion: {item['question']}\nOptions:\n"
            f"{lettered_options(item['choices'])}\n")


PROMPTS = PromptProfiles("mmlu-redux", "mmlu-redux", lowbit=lowbit_messages, reference={
    ("qwen3", "mmlu-redux"): lambda item: chat(reference_user_message(item), system=HELPFUL_ASSISTANT),
    ("gpt_oss", "mmlu-redux"): lambda item: chat(reference_user_message(item)),
})


@dataclass
class MMLUReduxOptions:
    subset: str = "all"  # all | seed30
    subjects: list[str] | None = None  # explicit subject list; overrides subset
    answer_key: str = "corrected"  # corrected | ok_only | original | reference (see module docstring)
    hub_id: str = HUB_ID
    prompt: str = REFERENCE  # reference | lowbit (lowbit.tasks.prompts)


class MMLURedux(Task):
    name = "mmlu-redux"
    version = "2"
    Options = MMLUReduxOptions
    prompt_profiles = PROMPTS
    chance_level = 1 / len(LETTERS)
    strata = ("subject",)
    non_prompt_options = frozenset({"subset", "subjects", "answer_key"})

    def __init__(self, options: MMLUReduxOptions):
        super().__init__(options)
        if options.answer_key not in ANSWER_KEYS:
            raise UsageError(f"unknown dataset.answer_key '{options.answer_key}'; choose one of {', '.join(ANSWER_KEYS)}")
        if options.subjects is None and options.subset not in SUBSETS:
            raise UsageError(f"unknown dataset.subset '{options.subset}'; choose one of {', '.join(SUBSETS)} "
                             "or list subjects with dataset.subjects=[...]")
        unknown = sorted(set(options.subjects or ()) - set(SUBJECTS))
        if unknown:
            raise UsageError(f"unknown MMLU-Redux subject(s) {', '.join(unknown)}; valid: {', '.join(SUBJECTS)}")

    @property
    def subjects(self) -> tuple[str, ...]:
        return tuple(self.options.subjects) if self.options.subjects is not None else SUBSETS[self.options.subset]

    # -- data -------------------------------------------------------------------------------------------

    def load(self, data_dir: str | None) -> list[Sample]:
        samples = []
        for subject in self.subjects:
            rows = (read_local_jsonl(Path(data_dir) / f"{subject}.jsonl", f"the {subject} records of {HUB_ID}",
                                     RECORD_FIELDS)
                    if data_dir else read_hub(self.options.hub_id, config=subject, split="test",
                                              local_file="<subject>.jsonl files", fields=RECORD_FIELDS))
            for index, row in enumerate(rows):
                item = {"subject": subject, "index": index, **row}
                samples.append(Sample(id=f"{subject}/{index}", messages=self.messages(item), item=item))
        return samples

    # -- scoring ----------------------------------------------------------------------------------------

    def gold(self, item: dict[str, Any]) -> tuple[str | None, str | None]:
        """(gold letter, exclusion reason) under the configured answer key."""
        original = LETTERS[int(item["answer"])]
        error_type = item.get("error_type", "ok")
        policy = self.options.answer_key
        if policy == "original":
            return original, None
        if policy == "ok_only":
            return (original, None) if error_type == "ok" else (None, error_type)
        if policy == "reference":
            if error_type == "no_correct_answer":
                return None, error_type
            return (item.get("correct_answer"), None) if error_type == "wrong_groundtruth" else (original, None)
        if error_type in ("ok", "expert"):
            return original, None
        if error_type == "wrong_groundtruth":
            corrected = item.get("correct_answer")
            return (corrected, None) if corrected in tuple(LETTERS) else (None, "wrong_groundtruth_without_correction")
        return None, error_type

    def score(self, prediction: Prediction) -> dict[str, Any]:
        gold, excluded = self.gold(prediction.item)
        extractions = [extract_choice(c.answer, LETTERS) for c in prediction.completions]
        scores = [float(gold is not None and e.letter == gold) for e in extractions]
        return {
            **score_row(prediction, scores, excluded, subject=prediction.item.get("subject", "unknown"), gold=gold),
            "extracted": [e.letter for e in extractions],
            "parse_failed": [e.letter is None for e in extractions],
            "reference_rule_extracted": [first_match_choice(c.answer) for c in prediction.completions],
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        result = accuracy_metrics(rows, group_by=("subject",))
        result["metrics"].update(reference_rule_metrics([r for r in rows if not r.get("excluded")]))
        return result


def reference_rule_metrics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How the reference study's first-match extraction reads the same answers: completions whose letter differs
    from lowbit's (`extraction_disagreements`) and the accuracy under its letters (`reference_rule_accuracy`)."""
    disagreements, sample_scores = 0, []
    for row in rows:
        letters = row["reference_rule_extracted"]
        disagreements += sum(ours != theirs for ours, theirs in zip(row["extracted"], letters))
        right = [float(letter is not None and letter == row["gold"]) for letter in letters]
        sample_scores.append(sum(right) / len(right) if right else 0.0)
    return {"extraction_disagreements": disagreements,
            "reference_rule_accuracy": mean_estimate(sample_scores).to_json()}
