"""`lowbit ruler prepare`: generate RULER tasks for one tokenizer and length into a frozen folder.

    lowbit ruler prepare tokenizer=Qwen/Qwen3-4B max_seq_length=32k num_samples=500 seed=42 out=data/ruler-qwen3-32k
    lowbit ruler prepare tokenizer=../shared/data/tokenizers/qwen3 max_seq_length=4k num_samples=20 out=/tmp/r tasks=vt,cwe
    lowbit ruler prepare tokenizer=openai/gpt-oss-20b family=gpt_oss reasoning_effort=medium max_seq_length=32k out=...

Prompts are fitted with the messages the evaluation sends before them (`prompt`, `family`: the reference
profile's Qwen3 system message counts), and the folder serves evaluations under that profile only.

Evaluate from it with `lowbit eval eval_dataset=ruler-niah-32k data_dir=data/ruler-qwen3-32k`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lowbit.command import Command
from lowbit.tasks.prompts import DEFAULT_FAMILY, PROFILES, REFERENCE

DEFAULTS = {"num_samples": 500, "seed": 42, "enable_thinking": False, "prompt": REFERENCE, "family": DEFAULT_FAMILY}
# name -> (type, help)
OPTIONS: dict[str, tuple[Any, str]] = {
    "tokenizer": (str, "hub id or local directory of the model's tokenizer (required)"),
    "max_seq_length": (str | int, "4k | 8k | 16k | 32k | 64k | 128k or a token count (required)"),
    "out": (str, "new folder for the task files and manifest.json (required)"),
    "num_samples": (int, f"samples per task (default {DEFAULTS['num_samples']})"),
    "seed": (int, f"generation seed (default {DEFAULTS['seed']})"),
    "tasks": (str | list[str], "comma-separated: niah, niah_single_1 ... fwe (default: all eleven)"),
    "haystack_dir": (str, "folder with PaulGrahamEssays.json (default: the cache's copy, downloaded once)"),
    "cache_dir": (str, "cache for the downloaded essays (default ~/.cache/lowbit/ruler)"),
    "prompt": (str, f"prompt profile the evaluations use, {' | '.join(PROFILES)} (dataset.prompt; default "
                    f"{DEFAULTS['prompt']})"),
    "family": (str, "model family whose messages the profile sends: the sampling block's chat template, "
                    f"qwen3 | gpt_oss (default {DEFAULTS['family']})"),
    "enable_thinking": (bool, "chat-template argument (default false, as the models' ruler sampling blocks)"),
    "reasoning_effort": (str, "chat-template argument for GPT-OSS templates (low | medium | high; default unset)"),
}
PREPARE = Command(
    "prepare", "generate RULER tasks into a frozen folder", run="lowbit.tasks.ruler.cli:run",
    options="options (key=value):\n" + "\n".join(f"  {key:<17}{text}" for key, (_, text) in OPTIONS.items()))
COMMAND = Command("ruler", "prepare RULER long-context data for a tokenizer and length", actions=(PREPARE,))


def run(args: argparse.Namespace) -> int:
    return prepare(parse_options(args.overrides))


def parse_options(overrides: list[str]) -> dict[str, Any]:
    """Validated options: tokenizer, max_seq_length (tokens), out (Path), num_samples, seed, tasks, template kwargs,
    the prompt frame."""
    from lowbit import overrides as key_values
    from lowbit.chat import chat_formats
    from lowbit.errors import UsageError
    from lowbit.tasks.prompts import PromptContext
    from lowbit.tasks.ruler.messages import DEFAULT_CONFIG, PromptFrame
    from lowbit.tasks.ruler.names import parse_length, parse_tasks

    values = {**DEFAULTS, **key_values.parse_options(overrides, {k: t for k, (t, _) in OPTIONS.items()},
                                                      "ruler prepare")}
    for key, example in (("tokenizer", "tokenizer=Qwen/Qwen3-4B"), ("max_seq_length", "max_seq_length=32k"),
                         ("out", "out=data/ruler-32k")):
        if values.get(key) in (None, ""):
            raise UsageError(f"lowbit ruler prepare needs {key}= (e.g. {example})")
    try:
        length = parse_length(values["max_seq_length"])
    except ValueError as e:
        raise UsageError(f"max_seq_length: {e}") from e
    if values["num_samples"] < 1:
        raise UsageError(f"num_samples must be a positive integer, got {values['num_samples']}")
    if values["prompt"] not in PROFILES:
        raise UsageError(f"unknown prompt '{values['prompt']}'; choose one of {', '.join(PROFILES)}")
    if values["family"] not in chat_formats():
        raise UsageError(f"unknown family '{values['family']}'; choose one of {', '.join(chat_formats())}")
    options = {"tokenizer": values["tokenizer"], "max_seq_length": length, "out": Path(values["out"]),
               "tasks": parse_tasks(values.get("tasks")), "haystack_dir": values.get("haystack_dir"),
               "cache_dir": values.get("cache_dir"), "num_samples": values["num_samples"], "seed": values["seed"],
               "template_kwargs": {"enable_thinking": values["enable_thinking"]},
               "frame": PromptFrame.of(values["prompt"], PromptContext(values["family"], DEFAULT_CONFIG))}
    if values.get("reasoning_effort") is not None:
        if values["reasoning_effort"] not in ("low", "medium", "high"):
            raise UsageError(f"reasoning_effort must be low, medium or high, got {values['reasoning_effort']!r}")
        options["template_kwargs"]["reasoning_effort"] = values["reasoning_effort"]
    return options


def prepare(options: dict[str, Any]) -> int:
    from lowbit.errors import UsageError
    from lowbit.tasks.ruler.dataset import available_memory_bytes, check_resources, needs_essay, write_prepared
    from lowbit.tasks.ruler.haystacks import default_cache_root, essay_path, load_essay
    from lowbit.tasks.ruler.tokens import PromptTokens

    out = options["out"]
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty: choose a new out= folder")
    check_resources(out, options["tasks"], options["max_seq_length"], options["num_samples"], available_memory_bytes())
    tokens = PromptTokens.load(options["tokenizer"], options["template_kwargs"], options["frame"])
    supported = getattr(tokens.tokenizer, "model_max_length", None)
    if isinstance(supported, int) and supported < options["max_seq_length"] and supported < 10**9:  # 1e30: unset
        raise UsageError(f"max_seq_length={options['max_seq_length']} is longer than tokenizer "
                         f"'{options['tokenizer']}' supports (model_max_length {supported}): use at most "
                         f"max_seq_length={supported}")
    essay = None
    if needs_essay(options["tasks"]):
        root = Path(options["cache_dir"]).expanduser() if options["cache_dir"] else default_cache_root()
        essay = load_essay(essay_path(options["haystack_dir"], root))
    clock = time.perf_counter()
    manifest = write_prepared(out, options["tasks"], tokens, options["max_seq_length"], options["seed"],
                              options["num_samples"], essay, progress=_progress(options["num_samples"]))
    for task, entry in manifest["tasks"].items():
        lengths = entry["prompt_tokens"]
        print(f"{task:<16} {entry['samples']} samples, prompt tokens {lengths['min']}-{lengths['max']} "
              f"(+{entry['tokens_to_generate']} to generate), {entry['seconds']:.1f} s")
    print(f"prepared {len(manifest['tasks'])} task(s) at {options['max_seq_length']} tokens for "
          f"{options['frame'].describe()} in "
          f"{time.perf_counter() - clock:.1f} s; content hash {manifest['content_hash'][:16]}")
    print(f"data: {out}")
    return 0


def _progress(total: int):
    def report(task: str, done: int) -> None:
        if done == total:
            print(f"\r{task}: {done}/{total}", file=sys.stderr, flush=True)
        elif sys.stderr.isatty():
            print(f"\r{task}: {done}/{total}", end="", file=sys.stderr, flush=True)
    return report
