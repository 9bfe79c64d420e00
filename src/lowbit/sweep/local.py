"""The local launcher: a sweep's jobs as subprocesses of `lowbit sweep run`, in dependency order.

As many jobs run at once as the visible GPUs allow, each with its own `CUDA_VISIBLE_DEVICES` holding
`gpus_per_job` GPUs (default: the job's own `resources.gpus`), and no more than `max_parallel` (default: one per
GPU). Without a GPU, jobs run one at a time on the CPU. Each job's stdout and stderr go to its log; its state
file follows it (pending, running with its pid, done, failed with the log's last error line, cancelled).

`lowbit sweep run` holds `.sweep/local.lock` while it schedules, so a second run of the same sweep is refused;
`lowbit sweep cancel` stops the scheduler, which stops every running job's process group (SIGTERM, then SIGKILL)
and marks what did not finish as cancelled.
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lowbit.errors import UsageError
from lowbit.sweep.jobs import Job, JobState, is_done, job_command, log_path, meta_dir, now, read_state, write_state

LOCK = "local.lock"
STOP_GRACE_S = 10.0  # between SIGTERM and SIGKILL of a job's process group


class LocalLauncher:
    name = "local"
    OPTIONS = {"max_parallel": int | None, "gpus_per_job": int | None}

    def __init__(self, max_parallel: int | None = None, gpus_per_job: int | None = None):
        for key, value in (("max_parallel", max_parallel), ("gpus_per_job", gpus_per_job)):
            if value is not None and value < (1 if key == "max_parallel" else 0):
                raise UsageError(f"launcher.local.{key} must be {'positive' if key == 'max_parallel' else '>= 0'}, "
                                 f"got {value}")
        self.gpus = visible_gpus()
        self.gpus_per_job = gpus_per_job
        self.max_parallel = max_parallel or max(1, len(self.gpus))

    # -- the Launcher protocol --------------------------------------------------------------------------

    def check(self, sweep_dir: Path) -> None:
        holder = lock_holder(sweep_dir)
        if holder is not None:
            raise UsageError(f"this sweep is already running here (lowbit sweep run, pid {holder}): wait for it, or "
                             "stop it with lowbit sweep cancel")
        if self.gpus:
            wanted = self.gpus_per_job
            if wanted is not None and wanted > len(self.gpus):
                raise UsageError(f"launcher.local.gpus_per_job={wanted} but {len(self.gpus)} GPU(s) are visible: "
                                 f"lower it to {len(self.gpus)} or less")

    def submit(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Run `jobs` to the end (blocking); a job whose dependency failed is not started."""
        for job in jobs:
            wanted = self.gpus_per_job if self.gpus_per_job is not None else job.resources.gpus
            if self.gpus and wanted > len(self.gpus):
                raise UsageError(f"{job.name} needs {wanted} GPUs but {len(self.gpus)} are visible: run the sweep where "
                                 "more are, or lower its tensor/pipeline parallelism")
            state = read_state(sweep_dir, job)
            if state.get("state") == JobState.RUNNING and _is_lowbit_job(state.get("external_id")):
                raise UsageError(f"{job.name} is still running (pid {state['external_id']}) from an earlier sweep run: "
                                 "wait for it, or stop it with lowbit sweep cancel")
        with _scheduler_lock(sweep_dir):
            for job in jobs:
                write_state(sweep_dir, job, launcher=self.name, state=JobState.PENDING, external_id=None,
                            submitted_at=now(), log_path=str(log_path(sweep_dir, job)), reason=None, started_at=None,
                            finished_at=None)
            _Scheduler(self, jobs, Path(sweep_dir)).run()

    def refresh(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Without a live scheduler, a job recorded as running ended with it: done if its output is complete,
        else failed."""
        if lock_holder(sweep_dir) is not None:
            return  # the scheduler keeps the state files current itself
        for job in jobs:
            state = read_state(sweep_dir, job)
            if state.get("launcher") != self.name or state.get("state") != JobState.RUNNING:
                continue
            if _is_lowbit_job(state.get("external_id")):
                continue  # outlived its scheduler (killed with SIGKILL): still running
            if is_done(job):
                write_state(sweep_dir, job, state=JobState.DONE, reason=None, finished_at=now())
            else:
                write_state(sweep_dir, job, state=JobState.FAILED, finished_at=now(),
                            reason=f"process {state.get('external_id')} ended with its sweep run, unfinished")

    def cancel(self, jobs: list[Job], sweep_dir: Path) -> None:
        holder = lock_holder(sweep_dir)
        if holder is not None:
            os.kill(holder, signal.SIGTERM)  # the scheduler stops its jobs and marks them cancelled
            deadline = time.monotonic() + STOP_GRACE_S + 5
            while lock_holder(sweep_dir) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
        for job in jobs:  # jobs left behind by a scheduler that was killed
            state = read_state(sweep_dir, job)
            if state.get("launcher") != self.name or state.get("state") not in (JobState.RUNNING, JobState.PENDING):
                continue
            _stop_group(state.get("external_id"))
            write_state(sweep_dir, job, state=JobState.CANCELLED, reason="cancelled by lowbit sweep cancel",
                        finished_at=now())


# ----------------------------------------------------------------------------------------------- scheduling


class _Scheduler:
    def __init__(self, launcher: LocalLauncher, jobs: list[Job], sweep_dir: Path):
        self.launcher, self.sweep_dir = launcher, sweep_dir
        self.waiting = list(jobs)
        self.names = {job.name for job in jobs}  # a dependency outside this set is already done
        self.finished: dict[str, JobState] = {}
        self.running: dict[str, tuple[Job, subprocess.Popen, list[str]]] = {}
        self.free_gpus = list(launcher.gpus)
        self.exits: queue.Queue[tuple[Job, int]] = queue.Queue()

    def run(self) -> None:
        previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            while self.waiting or self.running:
                self._start_ready()
                if not self.running:
                    break
                job, code = self.exits.get()
                self._finish(job, code)
        except _Stopped:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self._cancel_all()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start_ready(self) -> None:
        for job in list(self.waiting):
            failed = [d for d in job.depends_on if self.finished.get(d, JobState.DONE) != JobState.DONE]
            if failed:
                self.waiting.remove(job)
                self.finished[job.name] = JobState.FAILED
                write_state(self.sweep_dir, job, state=JobState.FAILED, finished_at=now(),
                            reason=f"not started: {failed[0]} failed",
                            log_path=str(log_path(self.sweep_dir, _named(failed[0]))))
                continue
            if any(d in self.names and d not in self.finished for d in job.depends_on):
                continue  # its dependencies are still waiting or running
            gpus = self._gpus_for(job)
            if len(self.running) >= self.launcher.max_parallel or gpus > len(self.free_gpus):
                continue
            self.waiting.remove(job)
            self._launch(job, [self.free_gpus.pop(0) for _ in range(gpus)])

    def _gpus_for(self, job: Job) -> int:
        if not self.launcher.gpus:
            return 0  # a CPU machine: one job at a time, whatever it asked for
        return self.launcher.gpus_per_job if self.launcher.gpus_per_job is not None else job.resources.gpus

    def _launch(self, job: Job, gpus: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if self.launcher.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        log = log_path(self.sweep_dir, job)
        log.parent.mkdir(parents=True, exist_ok=True)
        devices = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} " if self.launcher.gpus else ""
        with open(log, "a") as out:
            out.write(f"# {now()} {devices}{' '.join(job_command(job))}\n")
            out.flush()
            process = subprocess.Popen(job_command(job), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.running[job.name] = (job, process, gpus)
        write_state(self.sweep_dir, job, state=JobState.RUNNING, external_id=process.pid, log_path=str(log),
                    started_at=now())
        threading.Thread(target=lambda: self.exits.put((job, process.wait())), daemon=True).start()

    def _finish(self, job: Job, code: int) -> None:
        _, _, gpus = self.running.pop(job.name)
        self.free_gpus = sorted(self.free_gpus + gpus, key=self.launcher.gpus.index)
        if code == 0 and is_done(job):
            state, reason = JobState.DONE, None
        elif code == 0:
            state, reason = JobState.FAILED, f"exited 0 but {job.output_dir} is incomplete"
        else:
            state, reason = JobState.FAILED, failure_reason(log_path(self.sweep_dir, job), code)
        self.finished[job.name] = state
        write_state(self.sweep_dir, job, state=state, reason=reason, finished_at=now())

    def _cancel_all(self) -> None:
        for _, process, _ in self.running.values():
            _stop_group(process.pid)
        for job, process, _ in self.running.values():
            process.wait()
            write_state(self.sweep_dir, job, state=JobState.CANCELLED, reason="cancelled while running",
                        finished_at=now())
        for job in self.waiting:
            write_state(self.sweep_dir, job, state=JobState.CANCELLED, reason="cancelled before it started",
                        finished_at=now())


class _Stopped(Exception):
    pass


def _raise_stopped(signum, frame) -> None:
    raise _Stopped


def _named(name: str) -> Job:
    """A stand-in carrying only a job's name (enough to find its log)."""
    return Job(name=name, kind="", argv=(), output_dir="")


# ----------------------------------------------------------------------------------------------- processes


def visible_gpus() -> list[str]:
    """The GPUs jobs may use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists, else none."""
    declared = os.environ.get("CUDA_VISIBLE_DEVICES")
    if declared is not None:
        return [gpu for gpu in declared.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in listed.splitlines() if line.strip()]


def failure_reason(log: Path, code: int) -> str:
    """One line: lowbit's own error line when the log has one, else its last line, with the exit status."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        lines = []
    errors = [line for line in lines if line.startswith("lowbit: error:")]
    last = errors[-1] if errors else lines[-1] if lines and not lines[-1].startswith("# ") else ""
    status = f"killed by signal {-code}" if code < 0 else f"exit {code}"
    return f"{status}: {last[:240]}" if last else status


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_lowbit_job(pid: object) -> bool:
    """Whether `pid` is alive and still a lowbit job (not an unrelated process that reused the number)."""
    if not _alive(pid):
        return False
    try:
        return b"lowbit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the recorded pid


def _stop_group(pid: object) -> None:
    """SIGTERM a job's process group (its pid leads a session of its own), SIGKILL what is left after a grace."""
    if not _is_lowbit_job(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ----------------------------------------------------------------------------------------------- the lock


def lock_holder(sweep_dir: Path) -> int | None:
    """The pid of the `lowbit sweep run` scheduling this sweep here, or None."""
    path = meta_dir(sweep_dir) / LOCK
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = handle.read().strip()
                return int(text) if text.isdigit() else -1
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None


@contextmanager
def _scheduler_lock(sweep_dir: Path) -> Iterator[None]:
    path = meta_dir(sweep_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError("this sweep is already running here: wait for it, or stop it with lowbit sweep cancel")
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
