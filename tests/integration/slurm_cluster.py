"""A real one-node SLURM cluster for tests and perf runs: Debian's slurm-wlm + munge, every file in one temp
directory, daemons started here and stopped by their PIDs.

    with SlurmCluster(tmp_dir) as cluster:   # munged, slurmctld and slurmd up, the node idle
        subprocess.run(["sbatch", ...], env=cluster.env())

munged runs on a private socket with a private key, and slurmctld/slurmd on free ports, so the cluster touches
nothing outside its directory and can run beside another one. Accounting is off (no slurmdbd): `sacct` fails
on this cluster, as on some real ones. `SLURM_CONF` in `env()` points the client commands at it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
# The scheduler's periodic intervals on this cluster (seconds); SLURM's defaults are 60 and 30.
SCHED_INTERVAL_S = 5
BACKFILL_INTERVAL_S = 5


def missing_binaries() -> list[str]:
    return [name for name in (*DAEMONS, "sbatch", "squeue", "scancel", "sinfo") if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _short_hostname() -> str:
    return subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()


class SlurmCluster:
    """One controller and one compute node on this machine, as root (jobs run as root too)."""

    def __init__(self, root: Path, cpus: int | None = None,
                 scheduler_parameters: str = f"sched_interval={SCHED_INTERVAL_S},bf_interval={BACKFILL_INTERVAL_S}"):
        self.root = Path(root)
        self.scheduler_parameters = scheduler_parameters  # "" for SLURM's defaults
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)  # munged wants its socket directory searchable by everyone
        self.host = _short_hostname()
        self.cpus = cpus or os.cpu_count() or 1
        # well under free memory: jobs asking for more are refused by SLURM rather than run out of memory
        self.memory_mb = max(1024, int(psutil.virtual_memory().available / 2**20 * 0.6))
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge.socket"
        self._started: list[str] = []

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.root / "log" / f"{daemon}.log"

    def _write_conf(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=lowbit",
            f"SlurmctldHost={self.host}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.pid_file('slurmctld')}",
            f"SlurmdPidFile={self.pid_file('slurmd')}",
            f"SlurmctldLogFile={self.log_file('slurmctld')}",
            f"SlurmdLogFile={self.log_file('slurmd')}",
            "SlurmUser=root",
            "SchedulerType=sched/backfill",
            *([f"SchedulerParameters={self.scheduler_parameters}"] if self.scheduler_parameters else []),
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "ReturnToService=2",
            "KillWait=5",
            "MinJobAge=1800",  # finished jobs stay visible to squeue (start and end times) for 30 minutes
            f"DefMemPerCPU={self.memory_mb // self.cpus}",  # a job asking for no memory gets its CPUs' share
            f"NodeName={self.host} CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n")

    def _start_munged(self) -> None:
        key = self.root / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        subprocess.run(["munged", "--force", f"--key-file={key}", f"--socket={self.munge_socket}",
                        f"--pid-file={self.pid_file('munged')}", f"--log-file={self.log_file('munged')}",
                        f"--seed-file={self.root / 'munged.seed'}"], check=True, capture_output=True)
        self._started.append("munged")

    def start(self, timeout_s: float = 60) -> SlurmCluster:
        """Start the daemons and wait until the node is idle; stops what it started if that fails."""
        try:
            self._write_conf()
            self._start_munged()
            for daemon in ("slurmctld", "slurmd"):
                subprocess.run([daemon, "-f", str(self.conf)], check=True, capture_output=True, env=self.env())
                self._started.append(daemon)
            self._wait_idle(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=self.env())
            state = probe.stdout.strip()
            if probe.returncode == 0 and state == "idle":
                return
            time.sleep(0.5)
        logs = {d: self.log_file(d).read_text()[-2000:] for d in DAEMONS if self.log_file(d).exists()}
        raise RuntimeError(f"SLURM node not idle after {timeout_s:.0f}s (sinfo: {state!r}); logs: {logs}")

    def stop(self) -> None:
        """Stop the daemons this cluster started, by the PIDs in their pid files (the node first)."""
        for daemon in reversed(self._started):
            pid_file = self.pid_file(daemon)
            try:
                pid = int(pid_file.read_text().strip())
            except (FileNotFoundError, ValueError):
                continue
            _terminate(pid)
        self._started.clear()
        # processes of this cluster's jobs that outlive slurmd are found by the job environment SLURM gave them
        for proc in psutil.process_iter(["pid"]):
            try:
                environ = proc.environ()
                if environ.get("SLURM_CONF") == str(self.conf) and "SLURM_JOB_ID" in environ:
                    _terminate(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(pid: int, grace_s: float = 10) -> None:
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(grace_s)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        proc.kill()
