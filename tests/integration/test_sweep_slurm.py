"""launcher=slurm through a real one-node SLURM cluster (slurm_cluster.py): the tiny CPU sweep runs to its results
matrix, the evals of the quantize-derived precision start only after its checkpoint exists, and a job scancel'ed
mid-run is finished by the next `lowbit sweep run` without duplicate predictions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from slurm_cluster import SlurmCluster, missing_binaries
from support import read_jsonl, require_shared, run_lowbit

ROOT = Path(__file__).resolve().parents[2]
SWEEP = "sweeps/tiny-cpu.yaml"
# two samples per cell, written one at a time (so a job can be stopped between them)
SMALL_CELLS = "cells=[{overrides:['limit=2','predictor_conf.batch_size=1']}]"
LIVE = ("pending", "running")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"SLURM is not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge")
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge)")
    if os.geteuid() != 0:
        pytest.skip("the one-node test cluster runs slurmd and its jobs as root: run the SLURM tests as root")
    with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
        yield running


def sweep(cluster: SlurmCluster, *items: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_lowbit("sweep", *items, cwd=ROOT, timeout=timeout, env_overrides={"SLURM_CONF": str(cluster.conf)})


def squeue(cluster: SlurmCluster, *args: str) -> list[list[str]]:
    out = subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True, env=cluster.env(), check=True)
    return [line.split("|") for line in out.stdout.splitlines() if line.strip()]


def job_state(sweep_dir: Path, name: str) -> dict:
    path = sweep_dir / ".sweep" / "jobs" / f"{name.replace('/', '__')}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def slurm_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.slow
def test_tiny_sweep_runs_on_slurm_and_a_cancelled_job_resumes(cluster, tiny_model_stopping, tmp_path):
    require_shared("mmlu_redux", "the tiny sweep's MMLU-Redux files")
    require_shared("math500", "the tiny sweep's MATH-500 file")
    out = tmp_path / "sweep"
    items = [SWEEP, "launcher=slurm", f"models.tiny.source={tiny_model_stopping}", f"output_dir={out}", SMALL_CELLS,
             "launcher.slurm.poll_s=1"]

    submitted = sweep(cluster, "run", *items)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "submitting 7 jobs to the slurm launcher" in submitted.stdout

    # stop one eval between its two predictions, as a user's scancel (or a node failure) would
    victim = "eval/tiny/bf16/mmlu-redux"
    victim_dir = out / "tiny" / "bf16" / "mmlu-redux"
    predictions = victim_dir / "predictions.jsonl"

    def mid_run():
        return (predictions.exists() and len(read_jsonl(predictions)) == 1
                and not (victim_dir / "metrics.json").exists())

    wait_until(mid_run, 420, f"{victim} to write its first prediction")
    victim_id = job_state(out, victim)["external_id"]
    subprocess.run(["scancel", victim_id], env=cluster.env(), check=True)
    wait_until(lambda: not squeue(cluster, "-o", "%i"), 600, "the other jobs to end", poll_s=2)
    assert len(read_jsonl(predictions)) == 1 and not (victim_dir / "metrics.json").exists(), \
        f"{victim} finished before it could be cancelled"

    status = sweep(cluster, "status", *items)
    victim_line = next(line for line in status.stdout.splitlines() if line.startswith(victim + " "))
    assert "cancelled" in victim_line, status.stdout
    others = [line for line in status.stdout.splitlines() if line.startswith(("eval/", "quantize/"))
              and not line.startswith(victim + " ")]
    assert len(others) == 6 and all(" done " in line + " " for line in others), status.stdout

    # the next run submits only the cancelled cell, which resumes from its run directory
    rerun = sweep(cluster, "run", *items, "launcher.slurm.wait=true")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "submitting 1 jobs" in rerun.stdout, rerun.stdout
    ids = [row["id"] for row in read_jsonl(predictions)]
    assert len(ids) == len(set(ids)) == 2
    sessions = json.loads((victim_dir / "run.json").read_text())["sessions"]
    assert [s["resumed_from"] for s in sessions][-1] == 1

    # every cell finished, and the matrix was written
    for model_precision in ("bf16", "int8", "nvfp4-w4a4"):
        for task in ("mmlu-redux", "math500-nonthinking"):
            assert (out / "tiny" / model_precision / task / "metrics.json").is_file()
    assert "wrote" in rerun.stdout
    report = sweep(cluster, "report", *items)
    assert report.returncode == 0 and "int8" in report.stdout and "nvfp4-w4a4" in report.stdout

    # the int8 evals started after the quantize job that made their checkpoint ended: SLURM's own times
    times = {row[0]: row[1:] for row in squeue(cluster, "-t", "all", "-o", "%i|%S|%e")}
    quantize_end = slurm_time(times[job_state(out, "quantize/tiny/int8")["external_id"]][1])
    checkpoint = out / "checkpoints" / "tiny" / "int8" / "config.json"
    assert checkpoint.stat().st_mtime <= quantize_end + 1
    for task in ("mmlu-redux", "math500-nonthinking"):
        state = job_state(out, f"eval/tiny/int8/{task}")
        assert slurm_time(times[state["external_id"]][0]) >= quantize_end
        first_line = Path(state["log_path"]).read_text().splitlines()[0]
        started = datetime.fromisoformat(first_line.split()[1]).timestamp()
        assert started >= int(checkpoint.stat().st_mtime)


@pytest.mark.slow
def test_sweep_cancel_scancels_what_is_queued_or_running(cluster, tiny_model_stopping, tmp_path):
    require_shared("mmlu_redux", "the tiny sweep's MMLU-Redux files")
    out = tmp_path / "sweep"
    items = [SWEEP, "launcher=slurm", f"models.tiny.source={tiny_model_stopping}", f"output_dir={out}", SMALL_CELLS]
    submitted = sweep(cluster, "run", *items)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    ids = {job_state(out, name)["external_id"] for name in
           ("quantize/tiny/int8", "eval/tiny/int8/mmlu-redux", "eval/tiny/bf16/mmlu-redux")}
    assert ids <= {row[0] for row in squeue(cluster, "-o", "%i|%T")}

    cancelled = sweep(cluster, "cancel", *items)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    wait_until(lambda: not squeue(cluster, "-o", "%i"), 60, "the queue to empty")
    status = sweep(cluster, "status", *items)
    rows = [line.split()[1] for line in status.stdout.splitlines() if line.startswith(("eval/", "quantize/"))]
    assert len(rows) == 7 and set(rows) <= {"done", "cancelled"}, status.stdout  # a fast job may have finished
    # a job may also end between the queue listing and scancel: asked to cancel, it still reads done
    reported = re.search(r"cancelled (\d+) slurm job\(s\)", cancelled.stdout)
    assert reported and rows.count("cancelled") <= int(reported.group(1)) <= 7, cancelled.stdout + status.stdout
    assert rows.count("cancelled") >= 4, status.stdout  # two CPUs: few jobs can have ended before the cancel


def test_sbatch_refusing_the_partition_is_one_line_before_anything_is_written(cluster, tiny_model_stopping, tmp_path):
    out = tmp_path / "sweep"
    result = sweep(cluster, "run", SWEEP, "launcher=slurm", "launcher.slurm.partition=nosuch", f"output_dir={out}",
                   f"models.tiny.source={tiny_model_stopping}")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sbatch refuses the launcher.slurm options" in lines[0] and "partition" in lines[0]
    assert not out.exists()
    assert not squeue(cluster, "-o", "%i")


def test_slurm_without_sbatch_is_one_line_before_anything_is_written(tiny_model_stopping, tmp_path):
    out = tmp_path / "sweep"
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_lowbit("sweep", "run", SWEEP, "launcher=slurm", f"output_dir={out}",
                        f"models.tiny.source={tiny_model_stopping}", cwd=ROOT, env_overrides={"PATH": str(empty_bin)})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sbatch" in lines[0] and "launcher=local" in lines[0]
    assert not out.exists()
