"""The local launcher with real `lowbit` jobs: GPU slots and CUDA_VISIBLE_DEVICES, dependencies, failures with
their one-line reason, the lock against a second scheduler, and the per-job state files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from lowbit.errors import UsageError
from lowbit.sweep.jobs import (EVAL, QUANTIZE, Job, JobState, Resources, config_mismatches, log_path, make_launcher,
                               read_state, write_state)
from lowbit.sweep.local import LocalLauncher, failure_reason


def quantize_job(name: str, source: Path, out: Path, depends_on: tuple[str, ...] = (), gpus: int = 1) -> Job:
    return Job(name=name, kind=QUANTIZE, depends_on=depends_on, resources=Resources(gpus=gpus), output_dir=str(out),
               argv=("quantize", f"model={source}", "scheme=int8", f"out={out}", "device=cpu", "backend=ref"))


def interval(state: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(state["started_at"]), datetime.fromisoformat(state["finished_at"])


def test_jobs_share_the_visible_gpus_one_slot_each_never_more_at_once(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    launcher = make_launcher("local", {})
    assert launcher.gpus == ["3", "5"] and launcher.max_parallel == 2
    jobs = [quantize_job(f"quantize/m/p{i}", tiny_model, tmp_path / "ckpt" / f"p{i}") for i in range(4)]
    launcher.check(tmp_path)
    launcher.submit(jobs, tmp_path)

    states = [read_state(tmp_path, job) for job in jobs]
    assert [s["state"] for s in states] == [JobState.DONE] * 4
    devices = [log_path(tmp_path, job).read_text().splitlines()[0].split()[2] for job in jobs]
    assert set(devices) == {"CUDA_VISIBLE_DEVICES=3", "CUDA_VISIBLE_DEVICES=5"}
    spans = [interval(s) for s in states]
    for start, _ in spans:  # at any job's start, at most two jobs are running
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    assert all((tmp_path / "ckpt" / f"p{i}" / "config.json").is_file() for i in range(4))


def test_a_failed_job_has_its_error_line_and_its_dependents_do_not_start(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a CPU machine: one job at a time
    launcher = LocalLauncher()
    assert launcher.gpus == [] and launcher.max_parallel == 1
    bad = Job(name="quantize/m/bad", kind=QUANTIZE, output_dir=str(tmp_path / "bad"),
              argv=("quantize", f"model={tiny_model}", "scheme=int9", f"out={tmp_path / 'bad'}"))
    after = Job(name="eval/m/bad/mmlu-redux", kind=EVAL, output_dir=str(tmp_path / "run"), depends_on=(bad.name,),
                argv=("eval", f"model_name={tmp_path / 'bad'}", f"output_dir={tmp_path / 'run'}"))
    fine = quantize_job("quantize/m/fine", tiny_model, tmp_path / "fine")
    launcher.submit([bad, after, fine], tmp_path)

    failed = read_state(tmp_path, bad)
    assert failed["state"] == JobState.FAILED
    assert failed["reason"].startswith("exit 2: lowbit: error: unknown scheme 'int9'")
    assert Path(failed["log_path"]) == log_path(tmp_path, bad)
    skipped = read_state(tmp_path, after)
    assert skipped["state"] == JobState.FAILED and skipped["reason"] == f"not started: {bad.name} failed"
    assert skipped["started_at"] is None and not (tmp_path / "run").exists()
    assert read_state(tmp_path, fine)["state"] == JobState.DONE


def test_a_second_scheduler_of_the_same_sweep_is_refused(tmp_path):
    from lowbit.sweep import local

    with local._scheduler_lock(tmp_path):
        with pytest.raises(UsageError, match="already running here"):
            LocalLauncher().check(tmp_path)
    LocalLauncher().check(tmp_path)  # released


def test_state_files_merge_fields_and_refuse_unknown_ones(tmp_path):
    job = Job(name="eval/a/b/c", kind=EVAL, argv=("eval",), output_dir=str(tmp_path))
    assert read_state(tmp_path, job) == {}
    write_state(tmp_path, job, launcher="local", state=JobState.PENDING)
    state = write_state(tmp_path, job, state=JobState.RUNNING, external_id=42)
    assert state == {"launcher": "local", "state": JobState.RUNNING, "external_id": 42}
    assert read_state(tmp_path, job) == state
    assert (tmp_path / ".sweep" / "jobs" / "eval__a__b__c.json").is_file()
    with pytest.raises(ValueError, match="unknown job state fields"):
        write_state(tmp_path, job, colour="red")


def test_launcher_options_are_checked_against_the_launchers_table():
    with pytest.raises(UsageError, match="unknown local launcher option 'max_paralel'. Did you mean 'max_parallel'"):
        make_launcher("local", {"max_paralel": 2})
    with pytest.raises(UsageError, match="launcher.local.max_parallel must be an integer"):
        make_launcher("local", {"max_parallel": "two"})
    with pytest.raises(UsageError, match="unknown launcher 'lokal'"):
        make_launcher("lokal")


def test_a_finished_run_counts_as_done_only_under_the_config_its_job_asks_for():
    recorded = {"limit": 4, "seed": 42, "predictor_conf": {"name": "transformers"}, "dataset": {"subset": "seed30"}}
    same = ["model=qwen3_4B", "limit=4", "predictor=transformers", "dataset.subset=seed30", "output_dir=/x"]
    assert config_mismatches(recorded, same) == []
    assert config_mismatches(recorded, ["limit=5", "predictor=vllm", "seed=42"]) == ["limit", "predictor"]


def test_the_failure_reason_is_lowbits_own_error_line(tmp_path):
    log = tmp_path / "job.log"
    log.write_text("# header\nloading\nlowbit: error: data_dir must hold test.jsonl\n")
    assert failure_reason(log, 2) == "exit 2: lowbit: error: data_dir must hold test.jsonl"
    log.write_text("# header\nTraceback (most recent call last):\nMemoryError\n")
    assert failure_reason(log, -9) == "killed by signal 9: MemoryError"


def test_a_job_that_outlived_its_killed_scheduler_is_not_started_twice(tiny_model, tmp_path):
    """The scheduler killed with SIGKILL leaves its job running in its own session: status keeps it running, a
    new run refuses to start it a second time, cancel stops it."""
    job = Job(name="eval/m/p/t", kind=EVAL, output_dir=str(tmp_path / "run"), argv=("eval",))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "lowbit"],
                               start_new_session=True)
    try:
        write_state(tmp_path, job, launcher="local", state=JobState.RUNNING, external_id=sleeper.pid)
        launcher = LocalLauncher()
        launcher.refresh([job], tmp_path)
        assert read_state(tmp_path, job)["state"] == JobState.RUNNING
        with pytest.raises(UsageError, match=f"still running \\(pid {sleeper.pid}\\)"):
            launcher.submit([job], tmp_path)
        launcher.cancel([job], tmp_path)
        assert sleeper.wait(timeout=30) == -signal.SIGTERM
        assert read_state(tmp_path, job)["state"] == JobState.CANCELLED
    finally:
        if sleeper.poll() is None:
            os.killpg(sleeper.pid, signal.SIGKILL)
    write_state(tmp_path, job, state=JobState.RUNNING)  # its process is gone now: failed, unfinished
    LocalLauncher().refresh([job], tmp_path)
    assert read_state(tmp_path, job)["state"] == JobState.FAILED


def test_a_job_needing_more_gpus_than_visible_is_refused_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    job = Job(name="eval/big/bf16/t", kind=EVAL, argv=("eval",), output_dir=str(tmp_path / "run"),
              resources=Resources(gpus=2))
    with pytest.raises(UsageError, match="eval/big/bf16/t needs 2 GPUs but 1 are visible"):
        LocalLauncher().submit([job], tmp_path)
    assert not (tmp_path / ".sweep").exists()
