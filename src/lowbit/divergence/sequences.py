"""The token sequences both models are scored on, teacher-forced.

    from_run     a baseline run's own completions: the exact rendered prompt followed by each completion's text,
                 each tokenized with the model's tokenizer; the completion's tokens are scored, each labelled
                 `reasoning` or `answer` (split where the run's reasoning split put the answer)
    from_corpus  chat-free text (MATH-500 solutions through the task's loader, or a .txt / .jsonl file) joined,
                 tokenized once and cut into chunks of `chunk_tokens`; every token after a chunk's first is scored
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError

REASONING, ANSWER, TEXT = "reasoning", "answer", "text"
CORPUS_FIELDS = ("text", "response", "solution", "content")  # the text of a .jsonl corpus line, first present


@dataclass
class Sequence:
    id: str
    token_ids: list[int]
    first_scored: int  # index of the first position whose token is predicted (scored positions: first..len-1)
    regions: list[str]  # one label per scored token


def from_run(predictions: list[Any], tokenizer: Any, run_path: str, limit: int | None = None) -> list[Sequence]:
    """Prompt + completion of every completion of a run's predictions (lowbit.records.Prediction)."""
    sequences = []
    for prediction in predictions:
        for number, completion in enumerate(prediction.completions):
            if not completion.text:
                continue
            prompt_ids = tokenizer(prediction.prompt, add_special_tokens=False)["input_ids"]
            encoded = tokenizer(completion.text, add_special_tokens=False, return_offsets_mapping=True)
            if not prompt_ids or not encoded["input_ids"]:
                continue
            answer_from = _answer_start(completion.text, completion.answer, completion.reasoning)
            regions = [ANSWER if start >= answer_from else REASONING for start, _ in encoded["offset_mapping"]]
            suffix = f"#{number}" if len(prediction.completions) > 1 else ""
            sequences.append(Sequence(f"{prediction.id}{suffix}", prompt_ids + encoded["input_ids"],
                                      len(prompt_ids), regions))
            if limit is not None and len(sequences) >= limit:
                return sequences
    if not sequences:
        raise UsageError(f"{run_path} has no completion text to score: give the output_dir of a finished "
                         "`lowbit eval` run, or use source=corpus")
    return sequences


def _answer_start(text: str, answer: str, reasoning: str | None) -> int:
    """Character offset where the answer begins in the completion text (len(text): all reasoning)."""
    if not reasoning:
        return 0
    answer = (answer or "").strip()
    if not answer:
        return len(text)
    found = text.rfind(answer)
    return found if found >= 0 else len(text)


def corpus_texts(corpus: str, data_dir: str | None) -> list[str]:
    """The texts of `corpus`: `math500` (the solutions, through the MATH-500 loader), or a .txt / .jsonl file."""
    if corpus == "math500":
        from lowbit.tasks import make_task

        return [sample.item["solution"] for sample in make_task("math500", {}).load(data_dir)]
    path = Path(corpus)
    if not path.is_file():
        raise UsageError(f"corpus '{corpus}' is neither math500 nor a file: give corpus=math500 or "
                         "corpus=<file.txt|file.jsonl>")
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            field = next((f for f in CORPUS_FIELDS if isinstance(row.get(f), str)), None)
            if field is None:
                raise UsageError(f"{path}: line {number} has no text field: each line needs one of "
                                 f"{', '.join(CORPUS_FIELDS)}")
            texts.append(row[field])
        return texts
    return [path.read_text(encoding="utf-8")]


def from_corpus(texts: list[str], tokenizer: Any, chunk_tokens: int, name: str,
                limit: int | None = None) -> list[Sequence]:
    """Consecutive chunks of `chunk_tokens` tokens of the texts joined by blank lines."""
    if chunk_tokens < 2:
        raise UsageError(f"chunk_tokens must be >= 2, got {chunk_tokens}")
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    if len(ids) < chunk_tokens:
        raise UsageError(f"corpus {name} has {len(ids)} tokens, fewer than one chunk (chunk_tokens={chunk_tokens}): "
                         "lower chunk_tokens or give more text")
    count = len(ids) // chunk_tokens if limit is None else min(limit, len(ids) // chunk_tokens)
    return [Sequence(f"chunk-{i}", ids[i * chunk_tokens:(i + 1) * chunk_tokens], 1, [TEXT] * (chunk_tokens - 1))
            for i in range(count)]
