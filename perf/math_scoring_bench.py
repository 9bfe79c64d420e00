"""Wall time of scoring MATH-500: every gold solution scored as if it were a model's answer, through the task.

    .venv/bin/python perf/math_scoring_bench.py [--data-dir shared/data/math500] [--repeats 3]

Each repeat uses a fresh task, so it pays what a `lowbit score` run pays: starting the math-verify worker
(importing SymPy) and parsing every gold answer once. Reported per repeat: worker start, scoring of the 500
items (extraction + math-verify in the worker + the round trip), and aggregation into metrics. The baseline
line times boxed-answer extraction alone, the part that runs in the parent. Per-item figures come from the
slowest repeat's items.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from importlib.metadata import version

from lowbit.metrics.math_answers import boxed_answer
from lowbit.records import Completion, Prediction
from lowbit.tasks import make_task
from lowbit.testing.data import shared_path


def gold_predictions(samples) -> list[Prediction]:
    return [Prediction(id=s.id, prompt="", item=s.item, completions=[
        Completion(text=s.item["solution"], answer=s.item["solution"], reasoning=None, finish_reason="stop")])
        for s in samples]


def one_repeat(data_dir: str) -> dict:
    task = make_task("math500")
    predictions = gold_predictions(task.load(data_dir))
    clock = time.perf_counter()
    task.verifier.check("1", "1")  # starts the worker
    start_seconds = time.perf_counter() - clock
    item_seconds, rows = [], []
    for prediction in predictions:
        clock = time.perf_counter()
        rows.append(task.score(prediction))
        item_seconds.append(time.perf_counter() - clock)
    clock = time.perf_counter()
    metrics = task.aggregate(rows)["metrics"]
    aggregate_seconds = time.perf_counter() - clock
    task.verifier.close()
    return {"start": start_seconds, "items": item_seconds, "aggregate": aggregate_seconds,
            "correct": round(metrics["accuracy"]["value"] * metrics["samples"]), "n": metrics["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="folder with MATH-500 test.jsonl (default: shared data)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data_dir = args.data_dir or shared_path("math500")
    if data_dir is None:
        raise SystemExit("no MATH-500 data: pass --data-dir or provide shared/data/math500")

    print(f"python {platform.python_version()}, sympy {version('sympy')}, math-verify {version('math-verify')}, "
          f"latex2sympy2_extended {version('latex2sympy2_extended')}, {os.cpu_count()} CPUs ({platform.machine()})")
    solutions = [p.completions[0].answer for p in gold_predictions(make_task("math500").load(str(data_dir)))]
    clock = time.perf_counter()
    for text in solutions:
        boxed_answer(text)
    print(f"baseline: boxed extraction alone, {len(solutions)} solutions: {time.perf_counter() - clock:.3f} s")

    results = [one_repeat(str(data_dir)) for _ in range(args.repeats)]
    for number, r in enumerate(results, start=1):
        scoring = sum(r["items"])
        print(f"repeat {number}: worker start {r['start']:.2f} s + scoring {r['n']} items {scoring:.2f} s + "
              f"aggregate {r['aggregate']:.2f} s = {r['start'] + scoring + r['aggregate']:.2f} s "
              f"({r['correct']}/{r['n']} correct)")
    slowest = max(results, key=lambda r: sum(r["items"]))["items"]
    ordered = sorted(slowest)
    print(f"per item (slowest repeat): median {1000 * statistics.median(ordered):.1f} ms, "
          f"p95 {1000 * ordered[int(0.95 * len(ordered))]:.1f} ms, max {1000 * ordered[-1]:.0f} ms")
    totals = sorted(r["start"] + sum(r["items"]) + r["aggregate"] for r in results)
    print(f"score all 500 gold solutions, end to end: median {statistics.median(totals):.2f} s "
          f"(min {totals[0]:.2f} s, max {totals[-1]:.2f} s)")


if __name__ == "__main__":
    main()
