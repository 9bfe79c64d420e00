"""A sweep's unit of work and its bookkeeping: the contract between the planner and the launchers.

A `Job` is one `lowbit` command (a quantize making a checkpoint, or an eval filling a run directory) with the
jobs it waits for and the resources it needs. A launcher (`Launcher`, registered in LAUNCHERS) runs jobs in
dependency order and records what happened in one state file per job:

    <sweep out>/.sweep/jobs/<name with / -> __>.json   launcher, external_id, submitted_at, started_at,
                                                       finished_at, state, log_path, reason
    <sweep out>/.sweep/logs/<name with / -> __>.log    the job's stdout and stderr

State files are read and written only through `read_state` / `write_state`. Whether a job's work is already
finished is told by its output, not by its state file (`is_done`), so a sweep rerun skips finished cells even
when the state files are gone.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from lowbit.records import write_json_atomic
from lowbit.registry import Registry

SWEEP_META = ".sweep"
QUANTIZE, EVAL = "quantize", "eval"
STATE_FIELDS = ("launcher", "external_id", "submitted_at", "started_at", "finished_at", "state", "log_path", "reason")


@dataclass(frozen=True)
class Resources:
    """What one job needs; each launcher translates these into its own terms."""

    gpus: int = 0
    cpus: int = 1
    mem_gb: int | None = None
    time_min: int | None = None


@dataclass(frozen=True)
class Job:
    name: str  # unique and path-safe, e.g. "quantize/qwen3_4B/nvfp4", "eval/qwen3_4B/nvfp4/mmlu-redux"
    kind: str  # QUANTIZE | EVAL
    argv: tuple[str, ...]  # lowbit's arguments, e.g. ("eval", "model=qwen3_4B", ...)
    output_dir: str  # the run directory (eval) or the checkpoint directory (quantize)
    depends_on: tuple[str, ...] = ()  # names of jobs that must succeed first
    resources: Resources = Resources()


class JobState(str, Enum):
    PENDING = "pending"  # not started: waiting for its turn or for the jobs it depends on
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Launcher(Protocol):
    """Built by `make_launcher` from the sweep file's `launcher.<name>` block: the class's OPTIONS table
    ({option: type}) says what the block may hold, and the class is called with those options as keywords."""

    name: str
    OPTIONS: dict[str, Any]

    def check(self, sweep_dir: Path) -> None:
        """Raise UsageError (one line: the problem and the fix) when this launcher cannot run here, before
        anything is submitted or written."""

    def submit(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Run (or queue) `jobs`, each after the jobs it depends on succeeded; records their state files."""

    def refresh(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Bring the state files of `jobs` up to date with the scheduler."""

    def cancel(self, jobs: list[Job], sweep_dir: Path) -> None:
        """Stop the jobs that are queued or running."""


# launcher= name -> "module:class"
LAUNCHERS = Registry("launcher", {
    "local": "lowbit.sweep.local:LocalLauncher",
    "slurm": "lowbit.sweep.slurm:SlurmLauncher",
})


def make_launcher(name: str, options: dict[str, Any] | None = None) -> Launcher:
    """The launcher registered as `name`, built from its options (each checked against the class's OPTIONS)."""
    from lowbit.errors import UsageError
    from lowbit.overrides import check_type, did_you_mean

    cls = LAUNCHERS.get(name)
    table = getattr(cls, "OPTIONS", {})
    checked = {}
    for key, value in (options or {}).items():
        if key not in table:
            raise UsageError(f"unknown {name} launcher option '{key}'.{did_you_mean(key, table)} "
                             f"Available: {', '.join(table) or 'none'}")
        checked[key] = check_type(f"launcher.{name}.{key}", value, table[key])
    return cls(**checked)


def job_command(job: Job) -> list[str]:
    """The process that runs `job`: this interpreter running lowbit."""
    return [sys.executable, "-m", "lowbit", *job.argv]


def file_stem(job: Job) -> str:
    return job.name.replace("/", "__")


def meta_dir(sweep_dir: Path) -> Path:
    return Path(sweep_dir) / SWEEP_META


def state_path(sweep_dir: Path, job: Job) -> Path:
    return meta_dir(sweep_dir) / "jobs" / f"{file_stem(job)}.json"


def log_path(sweep_dir: Path, job: Job) -> Path:
    return meta_dir(sweep_dir) / "logs" / f"{file_stem(job)}.log"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def read_state(sweep_dir: Path, job: Job) -> dict[str, Any]:
    """The job's recorded state ({} when it was never submitted); `state` is a JobState."""
    path = state_path(sweep_dir, job)
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError:  # written atomically, so only a hand edit gets here: treat as never submitted
        return {}
    if "state" in state:
        state["state"] = JobState(state["state"])
    return state


def write_state(sweep_dir: Path, job: Job, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the job's state file (atomically) and return the new state."""
    unknown = set(fields) - set(STATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown job state fields {sorted(unknown)}; valid: {', '.join(STATE_FIELDS)}")
    state = read_state(sweep_dir, job)
    state.update(fields)
    on_disk = {k: (v.value if isinstance(v, JobState) else v) for k, v in state.items()}
    write_json_atomic(state_path(sweep_dir, job), on_disk)
    return state


def is_done(job: Job) -> bool:
    """Whether the job's output is complete: an eval's run directory is scored under the config its argv asks
    for; a quantize job's checkpoint is in place (it is renamed into place only once complete)."""
    if job.kind == QUANTIZE:
        return (Path(job.output_dir) / "config.json").is_file()
    return eval_is_done(job.output_dir, job.argv[1:])


def eval_is_done(output_dir: str, overrides: tuple[str, ...] | list[str]) -> bool:
    from lowbit.rundir import RunDir

    run = RunDir(output_dir)
    if not run.is_scored():
        return False
    config = run.config()
    return config is not None and not config_mismatches(config.resolved, overrides)


# Overrides that change nothing in a finished run's results.
_NOT_RECORDED = ("overwrite", "output_dir")


def config_mismatches(recorded: dict[str, Any], overrides: tuple[str, ...] | list[str]) -> list[str]:
    """The override keys whose values differ from the config a run recorded (model= and predictor= are
    compared through the values they set: model_name and predictor_conf.name)."""
    from lowbit.overrides import parse

    differing = []
    for override in parse(list(overrides)):
        key = override.key
        if key in _NOT_RECORDED or key == "model":
            continue
        path = "predictor_conf.name" if key == "predictor" else key
        if _lookup(recorded, path) != override.value:
            differing.append(key)
    return differing


_MISSING = object()


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node
