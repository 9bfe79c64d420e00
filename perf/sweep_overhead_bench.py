"""Scheduling overhead of the local sweep launcher: 16 trivial cells, wall time against the cells' own times.

A tiny random Qwen3 (its completions end after a token or two) is evaluated on one MATH-500 sample per cell:
4 precision labels of the same checkpoint x 4 seeds = 16 evals, run one at a time (a CPU machine) by
`lowbit sweep run`. From the job state files:

    own time      each job's process, from its start to its recorded end, summed over the 16 jobs
    start-up      from launching `lowbit sweep run` to the first job's start (loading, validating, planning)
    gaps          between one job's end and the next job's start, summed (the scheduler's own cost)
    tail          from the last job's end to the command's exit (status table, report files)

Target: wall <= 1.05 x own time + start-up.

    PYTHONPATH=src python perf/sweep_overhead_bench.py [--cells 16] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def sweep_file(directory: Path, model: Path, math500: Path, cells: int) -> Path:
    precisions = max(1, cells // 4)
    seeds = list(range(1, cells // precisions + 1))
    data = {
        "name": "overhead",
        "output_dir": str(directory / "out"),
        "overrides": ["predictor=transformers", "limit=1", "sampling.max_sequence_length=200",
                      "predictor_conf.show_progress=false"],
        "models": {"tiny": {"model": "qwen3_4B", "source": str(model),
                            "precisions": [f"p{i}" for i in range(precisions)]}},
        "precisions": {f"p{i}": {"checkpoint": "source"} for i in range(precisions)},
        "tasks": {"math500": {"eval_dataset_config": "math500-nonthinking", "seeds": seeds,
                              "overrides": [f"data_dir={math500}"]}},
        "resources": {"gpus": 0},
    }
    path = directory / "overhead.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=16)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = parser.parse_args()

    from lowbit.sweep.jobs import read_state
    from lowbit.sweep.plan import build_plan
    from lowbit.sweep.spec import load_sweep
    from lowbit.testing.data import shared_path
    from lowbit.testing.tiny import build_tiny_qwen3

    math500 = shared_path("math500")
    if math500 is None:
        sys.exit("needs shared/data/math500 (or LOWBIT_SHARED_DATA)")
    directory = args.keep or Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    directory.mkdir(parents=True, exist_ok=True)
    model = build_tiny_qwen3(directory / "tiny", eos_logit=30.0)
    path = sweep_file(directory, model, math500, args.cells)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}

    launched = time.time()
    result = subprocess.run([sys.executable, "-m", "lowbit", "sweep", "run", str(path)], env=env, cwd=REPO,
                            capture_output=True, text=True)
    ended = time.time()
    if result.returncode != 0:
        sys.exit(result.stdout + result.stderr)

    plan = build_plan(load_sweep(path), validate=False)
    spans = sorted((datetime.fromisoformat(s["started_at"]).timestamp(),
                    datetime.fromisoformat(s["finished_at"]).timestamp())
                   for s in (read_state(plan.sweep_dir, job) for job in plan.jobs))
    own = sum(end - start for start, end in spans)
    gaps = sum(max(0.0, nxt[0] - cur[1]) for cur, nxt in zip(spans, spans[1:]))
    wall = ended - launched
    startup = spans[0][0] - launched
    tail = ended - spans[-1][1]
    print(f"{len(spans)} cells, one at a time; machine: {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"wall {wall:.2f} s = start-up {startup:.2f} s + own time {own:.2f} s (mean {own / len(spans):.2f} s/cell) "
          f"+ gaps {gaps:.3f} s + tail {tail:.2f} s")
    print(f"scheduling overhead: gaps {100 * gaps / own:.2f}% of own time; "
          f"(wall - start-up) / own time = {(wall - startup) / own:.4f} (target <= 1.05)")


if __name__ == "__main__":
    main()
