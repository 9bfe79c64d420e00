"""The RULER eval tasks: ruler-<task>-<length>, e.g. ruler-niah-32k (the eight NIAH variants), ruler-vt-8k.

Data, in order of precedence:
- `data_dir`: a folder made by `lowbit ruler prepare` (its length must match the task's); its content hash is
  recorded in run.json, so every precision evaluated from it saw identical prompts.
- `dataset.source=hf`: the prebuilt hub dataset `lighteval/RULER-32768-Qwen-3` (one split per task, records
  {index, input, outputs, length}; 32K tokens for Qwen3 tokenizers).
- otherwise generated on the fly with the evaluated model's tokenizer and chat-template arguments (or
  `dataset.tokenizer`), cached under `dataset.cache_dir` (default ~/.cache/lowbit/ruler) in a folder keyed by
  tokenizer fingerprint, prompt frame, length, seed and sample count, and reused by later runs.

Sample ids are `<task>/<index>` (e.g. `niah_single_1/0`).

Messages (`dataset.prompt`, lowbit.tasks.ruler.messages): the generated prompt as the user message; under
`reference` (default, the reference study's messages) Qwen3 gets the system message "You are a helpful
assistant." before it, GPT-OSS none; `lowbit` sends the user message alone. Prompts are fitted with the messages
before them counted, so prompt and answer budget fill the length; data fitted under another profile (or another
family's messages) is refused, or generated again in the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from lowbit.errors import UsageError
from lowbit.records import Prediction, Sample
from lowbit.tasks.base import Task, score_row
from lowbit.tasks.prompts import REFERENCE, PromptContext
from lowbit.tasks.ruler import names
from lowbit.tasks.ruler.messages import DEFAULT_CONFIG, PROMPTS, PromptFrame
from lowbit.tasks.ruler.scoring import aggregate, clean_answer, string_match_all

HUB_ID = "lighteval/RULER-32768-Qwen-3"
HUB_LENGTH = 32768
SOURCES = ("generate", "hf")


@dataclass
class RulerOptions:
    source: str = "generate"  # generate (on the fly, cached) | hf (the prebuilt hub dataset, 32K only)
    num_samples: int = 500  # samples per task when generating
    seed: int = 42  # generation seed (the sampling seed is the top-level `seed`)
    tokenizer: str | None = None  # hub id or directory; null: the evaluated model's tokenizer
    cache_dir: str | None = None  # generated data cache; null: $LOWBIT_CACHE/ruler or ~/.cache/lowbit/ruler
    haystack_dir: str | None = None  # folder with PaulGrahamEssays.json; null: the cache's copy, downloaded once
    hub_id: str = HUB_ID
    prompt: str = REFERENCE  # reference | lowbit (lowbit.tasks.prompts)


class RulerTask(Task):
    version = "3"  # 3: prompts fitted with the profile's system message counted
    Options = RulerOptions
    prompt_profiles = PROMPTS
    non_prompt_options = frozenset({"cache_dir", "haystack_dir"})
    headline_metric = "score"
    sampling_config = DEFAULT_CONFIG
    subtasks: ClassVar[tuple[str, ...]] = ()
    max_seq_length: ClassVar[int] = names.HEADLINE_LENGTH

    def __init__(self, options: RulerOptions):
        super().__init__(options)
        if options.source not in SOURCES:
            raise UsageError(f"unknown dataset.source '{options.source}'; choose one of {', '.join(SOURCES)}")
        if options.num_samples < 1:
            raise UsageError(f"dataset.num_samples must be a positive integer, got {options.num_samples}")
        if options.source == "hf" and options.hub_id == HUB_ID and self.max_seq_length != HUB_LENGTH:
            raise UsageError(f"{HUB_ID} holds {HUB_LENGTH}-token prompts only: use the 32k task with "
                             "dataset.source=hf, or generate this length (dataset.source=generate)")
        self._model: tuple[str, dict[str, Any]] | None = None
        self._fingerprint: dict[str, Any] | None = None

    def bind_model(self, model_name: str, template_kwargs: dict[str, Any],
                   prompt_context: PromptContext | None = None) -> None:
        super().bind_model(model_name, template_kwargs, prompt_context)
        self._model = (model_name, dict(template_kwargs))

    def required_sequence_length(self) -> int:
        return self.max_seq_length

    def dataset_fingerprint(self) -> dict[str, Any] | None:
        return self._fingerprint

    # -- data -------------------------------------------------------------------------------------------

    def load(self, data_dir: str | None) -> list[Sample]:
        from lowbit.tasks.ruler import dataset

        if data_dir:
            manifest, records = dataset.read_prepared(Path(data_dir), self.subtasks, self.max_seq_length,
                                                      self.prompt_frame)
            self._fingerprint = _fingerprint("prepared", manifest, {t: manifest["tasks"][t]["sha256"]
                                                                    for t in self.subtasks})
        elif self.options.source == "hf":
            records = {task: _parse_records(_read_hub(self.options.hub_id, task), f"{self.options.hub_id}/{task}")
                       for task in self.subtasks}
            self._fingerprint = {"source": "hf", "hub_id": self.options.hub_id,
                                 "files": {t: _records_hash(r) for t, r in records.items()}}
            self._fingerprint["content_hash"] = dataset.content_hash(self._fingerprint["files"])
        else:
            manifest, records = self._generated()
            self._fingerprint = _fingerprint("generated", manifest, {t: manifest["tasks"][t]["sha256"]
                                                                     for t in self.subtasks})
        return [Sample(id=f"{task}/{r['index']}", messages=self.messages(r), item={**r, "task": task})
                for task in self.subtasks for r in records[task]]

    def _generated(self) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        from lowbit.tasks.ruler import dataset
        from lowbit.tasks.ruler.haystacks import default_cache_root, essay_path, load_essay
        from lowbit.tasks.ruler.tokens import PromptTokens

        options = self.options
        if options.tokenizer:
            tokenizer, template_kwargs = options.tokenizer, (self._model[1] if self._model else {})
        elif self._model:
            tokenizer, template_kwargs = self._model
        else:
            raise UsageError(f"{self.name} generates its prompts with the model's tokenizer: pass data_dir=<folder from "
                             "`lowbit ruler prepare`> or dataset.tokenizer=<hub id or dir>")
        tokens = PromptTokens.load(tokenizer, template_kwargs, self.prompt_frame)
        root = Path(options.cache_dir).expanduser() if options.cache_dir else default_cache_root()
        folder = root / (f"{tokens.fingerprint[:16]}-{tokens.frame.key}-{self.max_seq_length}-{options.seed}-"
                         f"{options.num_samples}")
        dataset.ensure_cached(folder, self.subtasks, tokens, self.max_seq_length, options.seed, options.num_samples,
                              lambda: load_essay(essay_path(options.haystack_dir, root)))
        return dataset.read_prepared(folder, self.subtasks, self.max_seq_length, tokens.frame)

    @property
    def prompt_frame(self) -> PromptFrame:
        """The messages this task sends before each prompt under its profile and context: prompts are fitted
        with them."""
        return PromptFrame.of(self.options.prompt, self.prompt_context)

    # -- scoring ----------------------------------------------------------------------------------------

    def score(self, prediction: Prediction) -> dict[str, Any]:
        expected = [str(x) for x in prediction.item["outputs"]]
        answers = [c.answer for c in prediction.completions]
        return {
            **score_row(prediction, [string_match_all(a, expected) for a in answers],
                        task=prediction.item.get("task", "unknown"), gold=expected),
            "null": [not clean_answer(a) for a in answers],
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return aggregate(rows)


def _fingerprint(source: str, manifest: dict[str, Any], files: dict[str, str]) -> dict[str, Any]:
    from lowbit.tasks.ruler.dataset import content_hash

    return {"source": source, "content_hash": content_hash(files), "files": files,
            "manifest_content_hash": manifest["content_hash"], "tokenizer": manifest["tokenizer"],
            "tokenizer_fingerprint": manifest["tokenizer_fingerprint"],
            "chat_template_kwargs": manifest["chat_template_kwargs"], "prompt": manifest["prompt"],
            "max_seq_length": manifest["max_seq_length"],
            "seed": manifest["seed"], "num_samples": manifest["num_samples"],
            "generator_version": manifest["generator_version"]}


def _records_hash(records: list[dict[str, Any]]) -> str:
    return hashlib.sha256("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                                  for r in records).encode()).hexdigest()


def _read_hub(hub_id: str, task: str) -> list[dict[str, Any]]:
    from lowbit.tasks.data import read_hub

    return read_hub(hub_id, split=task, local_file="a folder from `lowbit ruler prepare`")


def _parse_records(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Records of the prebuilt RULER datasets ({index, input, outputs, length}, an optional answer_prefix that
    is appended to the input when it is not already there) in the prepared-data form."""
    records = []
    for number, row in enumerate(rows):
        if not isinstance(row.get("input"), str) or not isinstance(row.get("outputs"), list) or not row["outputs"]:
            raise UsageError(f"{where}: record {number} lacks a text 'input' or a non-empty 'outputs' list "
                             "(expected RULER records {index, input, outputs, length})")
        text, prefix = row["input"], row.get("answer_prefix") or ""
        if prefix and not text.rstrip().endswith(prefix.strip()):
            text += prefix
        records.append({"index": int(row.get("index", number)), "input": text,
                        "outputs": [str(x) for x in row["outputs"]], "length": row.get("length")})
    if len({r["index"] for r in records}) != len(records):
        raise UsageError(f"{where}: repeated record indexes; sample ids must be unique")
    return records


@functools.cache
def task_class(name: str) -> type[RulerTask]:
    """The task class of one eval_dataset name (a UsageError for names that are not RULER's)."""
    subtasks, length = names.parse_eval_name(name)
    return type(f"Ruler_{name.replace('-', '_')}", (RulerTask,),
                {"name": name, "subtasks": subtasks, "max_seq_length": length, "__module__": __name__})


LISTED_NAMES = names.listed_names()
