"""How long evals wait after the quantize job they depend on has finished, on a real one-node SLURM cluster.

A quantize -> eval dependency is SLURM's `afterok`: the gap between the quantize job's end and its evals'
start is scheduling latency, to compare with the scheduler's periodic intervals (`sched_interval`, the main
scheduler; `bf_interval`, backfill). Each round submits, through lowbit's SLURM launcher, one "quantize" job
and two "eval" jobs depending on it, each running a real but trivial lowbit command (`lowbit eval --list`), and
reads SLURM's own start and end times (squeue, one-second resolution), and the times the jobs recorded in their
state files (the quantize command's end; an eval's start in Python, after srun and submitit have started it;
milliseconds). Needs slurm-wlm and munge (as the tests).

    PYTHONPATH=src python perf/slurm_dependency_latency.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from slurm_cluster import SlurmCluster, missing_binaries  # noqa: E402

from lowbit.sweep.jobs import EVAL, QUANTIZE, Job, Resources, read_state  # noqa: E402
from lowbit.sweep.slurm import SlurmLauncher  # noqa: E402

CONFIGS = {
    "test cluster (sched_interval=5, bf_interval=5)": "sched_interval=5,bf_interval=5",
    "SLURM defaults (sched_interval=60, bf_interval=30)": "",
}


def round_jobs(index: int, work: Path) -> list[Job]:
    quantize = Job(name=f"quantize/m/p{index}", kind=QUANTIZE, argv=("eval", "--list"),
                   output_dir=str(work / f"ckpt{index}"), resources=Resources(cpus=1, mem_gb=1))
    evals = [Job(name=f"eval/m/p{index}/t{t}", kind=EVAL, argv=("eval", "--list"),
                 output_dir=str(work / f"run{index}-{t}"), depends_on=(quantize.name,),
                 resources=Resources(cpus=1, mem_gb=1)) for t in range(2)]
    return [quantize, *evals]


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def measure(parameters: str, rounds: int) -> tuple[list[float], list[float]]:
    """(SLURM's gaps: quantize job end -> eval job start; the jobs' own: quantize command end -> eval start)."""
    with tempfile.TemporaryDirectory(prefix="lowbit-slurm-perf-") as tmp:
        work = Path(tmp)
        with SlurmCluster(work / "cluster", scheduler_parameters=parameters) as cluster:
            os.environ["SLURM_CONF"] = str(cluster.conf)  # the launcher's sbatch / squeue talk to this cluster
            launcher = SlurmLauncher(wait=True, poll_s=1.0, time_min=10)
            gaps, recorded = [], []
            for index in range(rounds):
                jobs = round_jobs(index, work)
                launcher.submit(jobs, work / "sweep")
                listed = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%S|%e"], capture_output=True,
                                        text=True, check=True).stdout
                times = {row.split("|")[0]: row.split("|")[1:] for row in listed.split()}
                ids = [str(read_state(work / "sweep", job)["external_id"]) for job in jobs]
                quantize_end = seconds(times[ids[0]][1])
                gaps += [seconds(times[i][0]) - quantize_end for i in ids[1:]]
                states = [read_state(work / "sweep", job) for job in jobs]
                recorded += [seconds(s["started_at"]) - seconds(states[0]["finished_at"]) for s in states[1:]]
            del os.environ["SLURM_CONF"]
            return gaps, recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if missing_binaries():
        sys.exit(f"SLURM is not installed ({', '.join(missing_binaries())} missing): apt-get install slurm-wlm munge")
    print("| scheduler | evals | SLURM gap median / max s | command gap median / max s |")
    print("|---|---:|---:|---:|")
    for label, parameters in CONFIGS.items():
        gaps, recorded = measure(parameters, args.rounds)
        print(f"| {label} | {len(gaps)} | {statistics.median(gaps):.0f} / {max(gaps):.0f} | "
              f"{statistics.median(recorded):.2f} / {max(recorded):.2f} |", flush=True)


if __name__ == "__main__":
    main()
