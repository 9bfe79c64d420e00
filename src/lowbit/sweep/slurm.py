"""launcher=slurm: a sweep's jobs as SLURM jobs, submitted through submitit.

    launcher:
      name: slurm
      slurm: {partition: gpu, account: proj, qos: normal, time_min: 240, array_parallelism: 16,
              additional_parameters: {constraint: h100}, setup: ["module load cuda/12.8"]}

Jobs that share their resources and the jobs they wait for go out as one SLURM job array (at most
`array_parallelism` of its tasks at once); a job that waits for others gets `--dependency=afterok:<their ids>`
and `--kill-on-invalid-dep=yes`, so evals of a derived checkpoint start only once its quantize job succeeded,
and are cancelled if it failed. Each job's resources (gpus, cpus, mem_gb, time_min) become `--gpus-per-node`,
`--cpus-per-task`, `--mem` and `--time`.

A SLURM job runs `SlurmJobRun`: the job's lowbit command in a child process, its output appended to the job's
log (`<sweep out>/.sweep/logs/`), its state file updated as it starts and ends (the compute node shares the
sweep directory). submitit's own files go to `<sweep out>/.sweep/slurm/`. `SlurmJobRun` is submitit-
checkpointable: when SLURM preempts the job or its time runs out, submitit requeues it (at most
`max_num_timeout` times for time-outs), and the command runs again on the same run directory, which resumes
where it stopped (lowbit eval skips the samples already predicted); `requeue` also lets SLURM requeue a job
whose node failed.

`refresh` reads the queue with `squeue` (accounting through `sacct` is optional: clusters without it are
common); a job that left the queue is told by its state file and its output. `cancel` runs `scancel`.
A sweep run again resubmits only what is neither finished nor still queued or running.
"""

from __future__ import annotations

import getpass
import os
import re
import signal
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.sweep.jobs import (Job, JobState, Resources, is_done, job_command, log_path, meta_dir, now, read_state,
                               write_state)

# squeue's %T -> our state
_QUEUE_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "PREEMPTED": JobState.PENDING, "RESIZING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING, "COMPLETED": JobState.DONE, "CANCELLED": JobState.CANCELLED,
    "FAILED": JobState.FAILED, "TIMEOUT": JobState.FAILED, "NODE_FAIL": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED, "BOOT_FAIL": JobState.FAILED, "DEADLINE": JobState.FAILED,
    "SPECIAL_EXIT": JobState.FAILED, "REVOKED": JobState.CANCELLED,
}
_LIVE = (JobState.PENDING, JobState.RUNNING)
NO_SBATCH = ("launcher=slurm needs SLURM's sbatch on PATH: run the sweep on the cluster's login node (or in a "
             "container with the SLURM client), or use launcher=local")


@dataclass
class SlurmLauncher:
    """Options: the sweep file's `launcher.slurm` block (`OPTIONS`); each may be overridden on the command line
    as `launcher.slurm.<option>=<value>`."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 240  # the time limit of jobs whose resources give none (minutes)
    array_parallelism: int = 64  # tasks of one job array running at once
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # more sbatch options, {name: value}
    setup: list[str] = field(default_factory=list)  # shell lines run before each job (module load, ...)
    signal_delay_s: int = 90  # SIGUSR2 this long before the time limit: the job is requeued and resumes
    max_num_timeout: int = 3  # requeues after running out of time
    requeue: bool = True  # SLURM may requeue a job whose node failed or that was preempted
    python: str | None = None  # how a job starts Python, e.g. "apptainer exec --nv lowbit.sif python3"
    wait: bool = False  # submit, then wait until every job has ended
    poll_s: float = 10.0  # how often `wait` reads the queue

    name = "slurm"
    OPTIONS = {"partition": str | None, "account": str | None, "qos": str | None, "time_min": int,
               "array_parallelism": int, "additional_parameters": dict, "setup": list[str], "signal_delay_s": int,
               "max_num_timeout": int, "requeue": bool, "python": str | None, "wait": bool, "poll_s": float}

    # -- checks before anything is written ----------------------------------------------------------------

    def check(self, sweep_dir: Path) -> None:
        """One line when jobs cannot be submitted from here: no sbatch, no submitit, or options the cluster
        refuses (`sbatch --test-only` checks partition, account, qos and the extra parameters)."""
        if shutil.which("sbatch") is None:
            raise UsageError(NO_SBATCH)
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise UsageError("launcher=slurm needs submitit: pip install 'lowbit[sweep]'") from None
        for key in ("array_parallelism", "time_min"):
            if getattr(self, key) < 1:
                raise UsageError(f"launcher.slurm.{key} must be at least 1, got {getattr(self, key)}")
        probe = ["sbatch", "--test-only", f"--time={self.time_min}", *self._sbatch_flags(), "--wrap", "true"]
        result = subprocess.run(probe, capture_output=True, text=True)
        if result.returncode != 0:
            raise UsageError(f"sbatch refuses the launcher.slurm options: {_last_line(result.stderr)}; fix "
                             "partition / account / qos / time_min / additional_parameters in the sweep file")

    def _sbatch_flags(self) -> list[str]:
        named = {"partition": self.partition, "account": self.account, "qos": self.qos}
        flags = [f"--{key}={value}" for key, value in named.items() if value is not None]
        for key, value in self.additional_parameters.items():
            flags.append(f"--{key.replace('_', '-')}" + ("" if value is True else f"={value}"))
        return flags

    # -- submitting ---------------------------------------------------------------------------------------

    def submit(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Submit every job that is neither finished nor still queued/running, as job arrays in dependency
        order; a job already in the queue is kept (and waited for by the jobs that depend on it)."""
        self.check(sweep_dir)
        sweep_dir = Path(sweep_dir).absolute()
        self.refresh(jobs, sweep_dir)
        slurm_ids: dict[str, str] = {}  # job name -> SLURM id of a live job, queued before or now
        finished: set[str] = set()
        for job in jobs:
            state = read_state(sweep_dir, job)
            if state.get("launcher") == self.name and state.get("state") in _LIVE:
                slurm_ids[job.name] = str(state["external_id"])
            elif is_done(job):
                finished.add(job.name)
        known = {job.name for job in jobs}
        for name in {d for job in jobs for d in job.depends_on} - known:  # in flight from an earlier submission
            state = read_state(sweep_dir, _named(name))
            if state.get("launcher") == self.name and state.get("state") in _LIVE:
                slurm_ids[name] = str(state["external_id"])
        waiting = [job for job in _dependency_order(jobs) if job.name not in slurm_ids and job.name not in finished]
        while waiting:
            ready = [job for job in waiting if all(d in slurm_ids or d in finished for d in job.depends_on)]
            if not ready:  # what is left waits for jobs that are neither finished nor part of this sweep
                for job in waiting:
                    missing = [d for d in job.depends_on if d not in slurm_ids and d not in finished]
                    write_state(sweep_dir, job, launcher=self.name, state=JobState.FAILED, finished_at=now(),
                                reason=f"waits for {', '.join(missing)}, which is neither done nor submitted",
                                log_path=str(log_path(sweep_dir, job)))
                break
            for group in _groups(ready, lambda job: self._dependency(job, slurm_ids)):
                for job, slurm_id in zip(group, self._submit_group(group, sweep_dir, slurm_ids)):
                    slurm_ids[job.name] = slurm_id
            waiting = [job for job in waiting if job.name not in slurm_ids]
        if self.wait:
            self.wait_for(jobs, sweep_dir)

    def _dependency(self, job: Job, slurm_ids: dict[str, str]) -> str | None:
        ids = [slurm_ids[d] for d in job.depends_on if d in slurm_ids]
        return "afterok:" + ":".join(ids) if ids else None

    def _submit_group(self, group: list[Job], sweep_dir: Path, slurm_ids: dict[str, str]) -> list[str]:
        """One job array (one plain job for a group of one) for jobs sharing resources and dependencies."""
        import submitit

        first = group[0]
        executor = submitit.SlurmExecutor(folder=meta_dir(sweep_dir) / "slurm" / "%j",
                                          max_num_timeout=self.max_num_timeout, python=self.python)
        executor.update_parameters(**self._parameters(first.resources, self._dependency(first, slurm_ids),
                                                      f"lowbit-{first.kind}-{sweep_dir.name}"))
        for job in group:
            log_path(sweep_dir, job).parent.mkdir(parents=True, exist_ok=True)
        try:
            with executor.batch():
                submitted = [executor.submit(SlurmJobRun(job, str(sweep_dir))) for job in group]
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError,
                submitit.core.utils.FailedSubmissionError) as error:
            detail = getattr(error, "stderr", None) or getattr(error, "output", None) or str(error)
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            raise UsageError(f"sbatch refused {first.name}: {_last_line(detail)}") from None
        ids = [str(s.job_id) for s in submitted]
        for job, slurm_id in zip(group, ids):
            recorded = {"launcher": self.name, "submitted_at": now(), "log_path": str(log_path(sweep_dir, job))}
            if read_state(sweep_dir, job).get("external_id") != slurm_id:  # else it has already started
                recorded.update(external_id=slurm_id, state=JobState.PENDING, reason=None, started_at=None,
                                finished_at=None)
            write_state(sweep_dir, job, **recorded)
        return ids

    def _parameters(self, resources: Resources, dependency: str | None, job_name: str) -> dict[str, Any]:
        extra = dict(self.additional_parameters)
        if dependency:
            extra.update(dependency=dependency, kill_on_invalid_dep="yes")
        if self.requeue:
            extra["requeue"] = True
        parameters: dict[str, Any] = {
            "job_name": job_name, "partition": self.partition, "account": self.account, "qos": self.qos,
            "cpus_per_task": resources.cpus, "gpus_per_node": resources.gpus or None,
            "mem": f"{resources.mem_gb}GB" if resources.mem_gb else None,
            "array_parallelism": self.array_parallelism, "signal_delay_s": self.signal_delay_s,
            "setup": self.setup or None, "stderr_to_stdout": True, "additional_parameters": extra,
            "time": resources.time_min or self.time_min,  # submitit counts time-outs against it
        }
        return {key: value for key, value in parameters.items() if value is not None}

    # -- the queue ----------------------------------------------------------------------------------------

    def refresh(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Update the state files of jobs this launcher submitted from the queue (squeue), else from what the job
        itself recorded and its output; works, from the state files alone, where SLURM's commands are absent."""
        mine = [(job, state) for job, state in self._states(jobs, sweep_dir) if state.get("external_id")]
        if not mine:
            return
        queue = _squeue()
        accounted = None
        for job, state in mine:
            slurm_id = str(state["external_id"])
            recorded = state.get("state")
            if queue is not None and slurm_id in queue:
                queue_state, reason = queue[slurm_id]
                new = _QUEUE_STATES.get(queue_state, JobState.PENDING)
                if new != JobState.DONE and "DependencyNeverSatisfied" in reason:
                    if recorded != JobState.CANCELLED:
                        write_state(sweep_dir, job, state=JobState.CANCELLED, finished_at=now(),
                                    reason="not started: a job it waits for failed")
                    continue
                if new == JobState.RUNNING and recorded not in _LIVE:
                    continue  # the job recorded its own end; SLURM is still finishing it
                if new in _LIVE and recorded != new:
                    write_state(sweep_dir, job, state=new, reason=None)
                elif new not in _LIVE and recorded in _LIVE:
                    self._record_end(sweep_dir, job, new, queue_state)
                continue
            if recorded not in _LIVE or queue is None:
                continue
            # gone from the queue while it was queued or running: ask accounting, else tell by its output
            if accounted is None:
                accounted = _sacct([str(s["external_id"]) for _, s in mine])
            if slurm_id in accounted:
                self._record_end(sweep_dir, job, _QUEUE_STATES.get(accounted[slurm_id], JobState.FAILED),
                                 accounted[slurm_id])
            else:
                self._record_end(sweep_dir, job, JobState.DONE if is_done(job) else JobState.FAILED, None)

    def _states(self, jobs: list[Job], sweep_dir: Path) -> list[tuple[Job, dict[str, Any]]]:
        """(job, state) of the jobs whose state file this launcher wrote."""
        states = [(job, read_state(sweep_dir, job)) for job in jobs]
        return [(job, state) for job, state in states if state.get("launcher") == self.name]

    def _record_end(self, sweep_dir: Path, job: Job, state: JobState, slurm_state: str | None) -> None:
        if state == JobState.DONE and not is_done(job):
            state, slurm_state = JobState.FAILED, "COMPLETED without its output"
        reason = None
        if state != JobState.DONE:
            what = f"SLURM state {slurm_state}" if slurm_state else "it left the queue unfinished"
            reason = f"{what} (cancelled, killed or out of time); `lowbit sweep run` resumes it"
        write_state(sweep_dir, job, state=state, reason=reason, finished_at=now())

    def cancel(self, jobs: list[Job], sweep_dir: Path) -> None:
        """scancel every job of the sweep that is queued or running."""
        if shutil.which("scancel") is None:
            raise UsageError("lowbit sweep cancel needs SLURM's scancel on PATH: run it on the cluster's login node")
        self.refresh(jobs, sweep_dir)
        live = [(job, state) for job, state in self._states(jobs, sweep_dir) if state.get("state") in _LIVE]
        if not live:
            return
        subprocess.run(["scancel", *(str(state["external_id"]) for _, state in live)], check=False,
                       capture_output=True)
        for job, _ in live:
            write_state(sweep_dir, job, state=JobState.CANCELLED, reason="cancelled by lowbit sweep cancel",
                        finished_at=now())

    def wait_for(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Return once no job of the sweep is queued or running."""
        while True:
            self.refresh(jobs, sweep_dir)
            if not any(read_state(sweep_dir, job).get("state") in _LIVE for job in jobs):
                return
            time.sleep(self.poll_s)


# -- inside the SLURM job ------------------------------------------------------------------------------------


class SlurmJobRun:
    """What a SLURM job runs: the sweep job's lowbit command, its output appended to the job's log. Requeued
    (preemption, time limit) through submitit's checkpointing; the rerun resumes from its output directory."""

    def __init__(self, job: Job, sweep_dir: str):
        self.job = job
        self.sweep_dir = sweep_dir

    def __call__(self) -> str:
        import submitit

        environment = submitit.JobEnvironment()
        sweep_dir, job = Path(self.sweep_dir), self.job
        log = log_path(sweep_dir, job)
        log.parent.mkdir(parents=True, exist_ok=True)
        write_state(sweep_dir, job, state=JobState.RUNNING, external_id=str(environment.job_id), reason=None,
                    started_at=now(), finished_at=None)
        with log.open("a") as out:
            out.write(f"== {now()} SLURM job {environment.job_id} on {socket.gethostname()}: "
                      f"{' '.join(job_command(job))}\n")
            out.flush()
            start = out.tell()
            code = subprocess.run(job_command(job), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode
        if code == 0:
            write_state(sweep_dir, job, state=JobState.DONE, reason=None, finished_at=now())
            return job.output_dir
        if code < 0:  # killed by a signal: scancel, preemption or the time limit (SLURM sends SIGTERM)
            reason = (f"stopped by {signal.Signals(-code).name} (scancel, preemption or time limit); "
                      "`lowbit sweep run` resumes it")
            write_state(sweep_dir, job, state=JobState.CANCELLED, reason=reason, finished_at=now())
        else:
            reason = f"exit {code}: {_last_line(_read_from(log, start))}"
            write_state(sweep_dir, job, state=JobState.FAILED, reason=reason, finished_at=now())
        raise RuntimeError(reason)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit calls this when SLURM preempts the job or its time runs out: run the same job again."""
        import submitit

        write_state(Path(self.sweep_dir), self.job, state=JobState.PENDING,
                    reason="requeued (preempted or out of time); resumes from its run directory")
        return submitit.helpers.DelayedSubmission(self)


# -- helpers ----------------------------------------------------------------------------------------------


def _squeue() -> dict[str, tuple[str, str]] | None:
    """SLURM id -> (state, reason) of this user's jobs, array tasks one by one; None without squeue."""
    if shutil.which("squeue") is None:
        return None
    result = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T|%r"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return None
    queue = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            queue[parts[0]] = (parts[1], parts[2])
    return queue


def _sacct(ids: list[str]) -> dict[str, str]:
    """SLURM id -> final state from accounting; empty where accounting is off."""
    if shutil.which("sacct") is None or not ids:
        return {}
    result = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(ids)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return {}
    states = {}
    for line in result.stdout.splitlines():
        slurm_id, _, state = line.partition("|")
        if slurm_id:
            states[slurm_id] = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
    return states


def _named(name: str) -> Job:
    """A stand-in for a job known only by name (a dependency outside this submission), to read its state file."""
    return Job(name=name, kind="", argv=(), output_dir="")


def _dependency_order(jobs: list[Job]) -> list[Job]:
    names = {job.name for job in jobs}
    placed: set[str] = set()
    ordered: list[Job] = []
    pending = list(jobs)
    while pending:
        ready = [job for job in pending if all(d in placed or d not in names for d in job.depends_on)]
        if not ready:
            cycle = ", ".join(job.name for job in pending)
            raise UsageError(f"sweep jobs wait for each other in a cycle: {cycle}")
        ordered += ready
        placed.update(job.name for job in ready)
        pending = [job for job in pending if job.name not in placed]
    return ordered


def _groups(jobs: Iterable[Job], dependency) -> list[list[Job]]:
    grouped: dict[tuple, list[Job]] = {}
    for job in jobs:
        grouped.setdefault((job.kind, job.resources, dependency(job)), []).append(job)
    return list(grouped.values())


def _read_from(path: Path, offset: int) -> str:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _last_line(text: str) -> str:
    """The last non-empty line, progress bars' carriage returns counted as line ends."""
    lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
    return lines[-1][:300] if lines else "no output"
