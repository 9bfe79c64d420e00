"""Calibration samples for calibrated quantization (GPTQ, SmoothQuant): chat-templated, shuffled, tokenized.

Sources:
    DEFAULT_CALIBRATION (HuggingFaceH4/ultrachat_200k, split train_sft) from the Hugging Face hub; or
    a local .jsonl file: one object per line with "messages" (a chat, templated) or "text" (used as is); or
    a local text file (any other suffix): one sample per paragraph (blocks separated by blank lines).
Rows are shuffled with `seed`, the first `num_samples` non-empty ones are kept, and each is tokenized without
added special tokens (the chat template already holds them) and cut to `max_length` tokens. `info` records
the source, the count and a sha256 over the token ids, so two checkpoints calibrated on the same tokens can
be recognised.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError

DEFAULT_CALIBRATION = "HuggingFaceH4/ultrachat_200k"
DEFAULT_SPLIT = "train_sft"
DEFAULT_NUM_SAMPLES = 512
DEFAULT_MAX_LENGTH = 2048


@dataclass
class CalibrationSet:
    token_ids: list[list[int]]
    info: dict[str, Any]  # name, split, sha256, samples, max_length, seed

    def to_dataset(self):
        """A datasets.Dataset with input_ids / attention_mask, as llm-compressor's oneshot takes it."""
        from datasets import Dataset

        return Dataset.from_dict({"input_ids": self.token_ids,
                                  "attention_mask": [[1] * len(ids) for ids in self.token_ids]})


def _local_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        return [{"text": block.strip()} for block in text.split("\n\n") if block.strip()]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{number} is not valid JSON ({e.msg}); each line must be one object") from e
        if not isinstance(row, dict) or not ("messages" in row or "text" in row):
            raise UsageError(f"{path}:{number} has neither 'messages' nor 'text'; give one of them per line")
        rows.append(row)
    return rows


def _hub_rows(name: str, split: str, seed: int, needed: int) -> list[dict[str, Any]]:
    try:
        from datasets import load_dataset

        dataset = load_dataset(name, split=split)
    except Exception as e:  # offline, unknown dataset or split: all surface as one actionable line
        raise UsageError(f"cannot load calibration set {name} ({split}) from the hub: {str(e).splitlines()[0]} "
                         "(offline? pass calibration=<local .jsonl or text file>)") from e
    dataset = dataset.shuffle(seed=seed).select(range(min(len(dataset), needed)))
    return [dict(row) for row in dataset]


def _render(row: dict[str, Any], tokenizer: Any) -> str:
    messages = row.get("messages")
    if messages:
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError("calibration rows hold chats but the tokenizer has no chat template: give 'text' rows")
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return str(row.get("text") or "")


def load_calibration(
    source: str | None, tokenizer: Any, *, num_samples: int = DEFAULT_NUM_SAMPLES,
    max_length: int = DEFAULT_MAX_LENGTH, seed: int = 42, split: str = DEFAULT_SPLIT,
) -> CalibrationSet:
    """`num_samples` tokenized calibration samples from `source` (a hub dataset id or a local file)."""
    if not isinstance(num_samples, int) or num_samples < 1:
        raise UsageError(f"num_samples must be a positive integer, got {num_samples!r}")
    if not isinstance(max_length, int) or max_length < 2:
        raise UsageError(f"max_length must be an integer >= 2, got {max_length!r}")
    name = source or DEFAULT_CALIBRATION
    path = Path(name).expanduser()
    if path.is_file():
        rows = _local_rows(path)
        random.Random(seed).shuffle(rows)
        split = None
    elif name.startswith(("/", "./", "../", "~")) or path.suffix in (".jsonl", ".txt", ".json"):
        raise UsageError(f"calibration file {name} does not exist: give a .jsonl or text file, or a hub dataset id")
    else:
        rows = _hub_rows(name, split, seed, 2 * num_samples)  # extra rows stand in for empty ones
    token_ids = []
    for row in rows:
        ids = tokenizer(_render(row, tokenizer), add_special_tokens=False)["input_ids"][:max_length]
        if ids:
            token_ids.append(ids)
        if len(token_ids) == num_samples:
            break
    if not token_ids:
        raise UsageError(f"calibration set {name} holds no non-empty sample")
    digest = hashlib.sha256(json.dumps(token_ids, separators=(",", ":")).encode()).hexdigest()
    info = {"name": str(path.resolve()) if split is None else name, "split": split, "sha256": digest,
            "samples": len(token_ids), "requested_samples": num_samples, "max_length": max_length, "seed": seed,
            "tokens": sum(len(ids) for ids in token_ids)}
    return CalibrationSet(token_ids, info)
