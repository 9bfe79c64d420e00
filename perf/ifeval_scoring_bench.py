"""Time to score IFEval: the 541 reference GPT-4 responses through the task's own `score` and `aggregate`.

    PYTHONPATH=src python perf/ifeval_scoring_bench.py [--repeats 3] [--data DIR] [--nltk-data DIR]

Data defaults to shared/data/ifeval and shared/data/nltk. "cold" is the first pass in a fresh process (it
includes loading langdetect's language profiles and the Punkt parameters); "warm" is the median of the
following passes. Scoring is single-threaded; the 8 loose variants of each response are what cost the most,
through language detection and sentence splitting.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from importlib.metadata import version

from lowbit.records import Completion, Prediction
from lowbit.tasks import make_task
from lowbit.testing.data import shared_path

RESPONSES = "input_response_data_gpt4_20231107_145030.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm passes after the cold one")
    parser.add_argument("--data", default=str(shared_path("ifeval") or ""), help="folder with the IFEval files")
    parser.add_argument("--nltk-data", default=str(shared_path("nltk") or ""), help="folder with tokenizers/punkt_tab")
    args = parser.parse_args()
    if not args.data or not args.nltk_data:
        print("shared/data/ifeval or shared/data/nltk not found: pass --data and --nltk-data", file=sys.stderr)
        return 2

    print(f"python {platform.python_version()}, nltk {version('nltk')}, langdetect {version('langdetect')}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    task = make_task("ifeval", {"nltk_data": args.nltk_data})
    by_prompt = {s.item["prompt"]: s for s in task.load(args.data)}
    with open(os.path.join(args.data, RESPONSES), encoding="utf-8") as f:
        responses = [json.loads(line) for line in f if line.strip()]
    predictions = [
        Prediction(id=by_prompt[r["prompt"]].id, prompt=r["prompt"], item=by_prompt[r["prompt"]].item,
                   completions=[Completion(text=r["response"], answer=r["response"], reasoning=None,
                                           finish_reason="stop")])
        for r in responses]

    timings = []
    for _ in range(1 + args.repeats):
        start = time.perf_counter()
        rows = [task.score(p) for p in predictions]
        scored = time.perf_counter()
        metrics = task.aggregate(rows)["metrics"]
        timings.append((scored - start, time.perf_counter() - scored))

    (cold_score, cold_aggregate), warm = timings[0], timings[1:] or timings
    warm_score = statistics.median(t[0] for t in warm)
    warm_aggregate = statistics.median(t[1] for t in warm)
    print(f"{len(predictions)} responses, {metrics['instructions']} instructions")
    print(f"score:     cold {cold_score:.2f} s, warm {warm_score:.2f} s "
          f"({1000 * warm_score / len(predictions):.1f} ms/response)")
    print(f"aggregate: cold {cold_aggregate:.2f} s, warm {warm_aggregate:.2f} s (cluster bootstrap, 2000 resamples)")
    print(f"prompt strict {metrics['prompt_strict']['value']:.4f}, instruction strict "
          f"{metrics['instruction_strict']['value']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
