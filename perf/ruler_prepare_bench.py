"""RULER preparation cost: seconds per sample for every task at 4K..128K tokens (Qwen3 tokenizer, essay haystack
from shared/data), to check that cost grows about linearly with length.

    .venv/bin/python perf/ruler_prepare_bench.py                       # 4k..32k x 3 samples, 64k/128k x 1 sample
    .venv/bin/python perf/ruler_prepare_bench.py --lengths 4k,32k --samples 5 --long-samples 0 --json out.json

Per task and length it reports the one-time setup (counting the essay's words or the list numbering, once per
tokenizer) and the mean seconds per sample; the last column is seconds per sample per 1K tokens, which stays
roughly flat when cost is linear in length. Runs on CPU; no GPU needed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from lowbit.tasks.prompts import REFERENCE, PromptContext
from lowbit.tasks.ruler.dataset import make_generator, needs_essay
from lowbit.tasks.ruler.haystacks import load_essay
from lowbit.tasks.ruler.messages import DEFAULT_CONFIG, PromptFrame
from lowbit.tasks.ruler.names import TASKS, length_label, parse_length, parse_tasks
from lowbit.tasks.ruler.tokens import PromptTokens
from lowbit.testing.data import shared_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="4k,8k,16k,32k")
    parser.add_argument("--long-lengths", default="64k,128k", help="lengths measured with --long-samples")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--long-samples", type=int, default=1)
    parser.add_argument("--tasks", default="all")
    parser.add_argument("--tokenizer", default=None, help="default: shared/data/tokenizers/qwen3")
    parser.add_argument("--json", help="also write the rows as JSON here")
    args = parser.parse_args()

    tokenizer = args.tokenizer or shared_path("tokenizers", "qwen3")
    essay_file = shared_path("ruler", "PaulGrahamEssays.json")
    if tokenizer is None or essay_file is None:
        print("needs shared/data/tokenizers/qwen3 and shared/data/ruler (or --tokenizer)", file=sys.stderr)
        return 2
    tasks = parse_tasks(args.tasks)
    plan = [(parse_length(x), args.samples) for x in args.lengths.split(",") if x]
    plan += [(parse_length(x), args.long_samples) for x in args.long_lengths.split(",") if x and args.long_samples]

    clock = time.perf_counter()
    frame = PromptFrame.of(REFERENCE, PromptContext("qwen3", DEFAULT_CONFIG))  # the default evaluation's messages
    tokens = PromptTokens.load(str(tokenizer), {"enable_thinking": False}, frame)
    tokens.fingerprint  # noqa: B018  (computed once, outside the timings)
    load_seconds = time.perf_counter() - clock
    essay = load_essay(Path(essay_file)) if needs_essay(tasks) else None
    print(f"# python {platform.python_version()}, {platform.processor() or platform.machine()}, "
          f"tokenizer {tokenizer} loaded in {load_seconds:.1f} s")
    print("| task | length | samples | setup s | s / sample | s / sample / 1K tokens | prompt tokens (mean) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for task in tasks:
        for length, samples in plan:
            clock = time.perf_counter()
            generator = make_generator(task, tokens, length, 42, essay)
            setup = time.perf_counter() - clock
            times, lengths = [], []
            for index in range(samples):
                clock = time.perf_counter()
                record = generator.sample(index)
                times.append(time.perf_counter() - clock)
                lengths.append(record["length"])
            per_sample = statistics.fmean(times)
            row = {"task": task, "length": length, "samples": samples, "setup_s": round(setup, 3),
                   "s_per_sample": round(per_sample, 3), "s_per_sample_per_1k": round(per_sample / (length / 1024), 4),
                   "prompt_tokens_mean": round(statistics.fmean(lengths), 1)}
            rows.append(row)
            print(f"| {task} | {length_label(length)} | {samples} | {setup:.2f} | {per_sample:.3f} | "
                  f"{row['s_per_sample_per_1k']:.4f} | {row['prompt_tokens_mean']:.0f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"tokenizer": str(tokenizer), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
