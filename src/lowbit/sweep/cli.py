"""`lowbit sweep run | status | cancel | report FILE [key=value ...]`.

    lowbit sweep run sweeps/tiny-cpu.yaml [launcher=local|slurm] [launcher.local.max_parallel=2] [--dry-run]
    lowbit sweep status sweeps/tiny-cpu.yaml       # exit 1 when a job failed
    lowbit sweep cancel sweeps/tiny-cpu.yaml
    lowbit sweep report sweeps/tiny-cpu.yaml [margin=1.0]

The key=value items override the sweep file (Hydra's grammar: `output_dir=...`, `models.tiny.source=...`).
"""

from __future__ import annotations

import argparse
import sys

from lowbit.command import Command, Switch
from lowbit.errors import UsageError

SWEEP_OPTIONS = """\
FILE is a sweep YAML (see sweeps/); key=value items override it, e.g.
  launcher=local|slurm   launcher.local.max_parallel=2   launcher.slurm.partition=gpu
  output_dir=<dir>       models.<name>.source=<dir>      overrides=['limit=10'] (replaces the list)
"""

COMMAND = Command(
    "sweep", "run a matrix of models x precisions x tasks from a sweep file", actions=(
        Command("run", "expand the sweep into jobs and run what is not done", run="lowbit.sweep.cli:run",
                switches=(Switch(("--dry-run",), "print the plan (jobs, dependencies, what is done); run nothing"),),
                items_help="FILE, then key=value overrides", options=SWEEP_OPTIONS),
        Command("status", "a table of the sweep's jobs: done, running, pending, failed (the report once all ended)",
                run="lowbit.sweep.cli:status", items_help="FILE, then key=value overrides", options=SWEEP_OPTIONS),
        Command("cancel", "stop the sweep's queued and running jobs", run="lowbit.sweep.cli:cancel",
                items_help="FILE, then key=value overrides", options=SWEEP_OPTIONS),
        Command("report", "the results matrix: metric, interval, recovery, verdict, bits per weight",
                run="lowbit.sweep.cli:report", items_help="FILE, then key=value overrides (and margin=<points>)",
                options=SWEEP_OPTIONS + "  margin=<points>        non-inferiority margin (default 1.0)\n"),
    ))


def _load(args: argparse.Namespace, extra_options: tuple[str, ...] = ()):
    from lowbit.sweep.plan import build_plan
    from lowbit.sweep.spec import load_sweep

    files = [item for item in args.overrides if "=" not in item]
    items = [item for item in args.overrides if "=" in item]
    if len(files) != 1:
        raise UsageError(f"{args.command_path} takes one sweep file (e.g. sweeps/tiny-cpu.yaml), "
                         f"got {len(files)}: {' '.join(files) or 'none'}")
    options = {}
    for option in extra_options:
        options.update({item.partition("=")[0]: item.partition("=")[2]
                        for item in items if item.startswith(f"{option}=")})
    items = [item for item in items if item.partition("=")[0] not in extra_options]
    return build_plan(load_sweep(files[0], items)), options


def run(args: argparse.Namespace) -> int:
    from lowbit.sweep.jobs import make_launcher
    from lowbit.sweep.report import write_report
    from lowbit.sweep.status import all_ended, any_failed, format_status, job_statuses
    from lowbit.sweep.submit import format_plan, jobs_to_submit

    plan, _ = _load(args)
    spec = plan.spec
    launcher = make_launcher(spec.launcher, spec.launcher_options.get(spec.launcher))
    launcher.check(plan.sweep_dir)
    todo, done, in_flight = jobs_to_submit(plan)
    if args.dry_run:
        print(format_plan(plan, todo, done, in_flight))
        return 0
    if not todo:
        print(f"nothing to run: {len(done)} jobs done, {len(in_flight)} in flight")
    else:
        print(f"{spec.name}: submitting {len(todo)} jobs to the {launcher.name} launcher "
              f"({len(done)} done, {len(in_flight)} in flight)", flush=True)
        launcher.submit(todo, plan.sweep_dir)
    statuses = job_statuses(plan)
    print(format_status(statuses, plan.sweep_dir))
    if all_ended(statuses):
        for path in write_report(plan):
            print(f"wrote {path}")
    return 1 if any_failed(statuses) else 0


def status(args: argparse.Namespace) -> int:
    """The table; once every job has ended (a sweep another launcher ran to its end), the report too."""
    from lowbit.sweep.report import write_report
    from lowbit.sweep.status import all_ended, any_failed, format_status, job_statuses

    plan, _ = _load(args)
    statuses = job_statuses(plan)
    print(format_status(statuses, plan.sweep_dir))
    if all_ended(statuses) and any(s.submitted for s in statuses):
        for path in write_report(plan):
            print(f"wrote {path}")
    return 1 if any_failed(statuses) else 0


def cancel(args: argparse.Namespace) -> int:
    from lowbit.sweep.jobs import JobState, make_launcher, read_state

    plan, _ = _load(args)
    by_launcher: dict[str, list] = {}
    for job in plan.jobs:
        state = read_state(plan.sweep_dir, job)
        if state.get("state") in (JobState.PENDING, JobState.RUNNING) and state.get("launcher"):
            by_launcher.setdefault(state["launcher"], []).append(job)
    if not by_launcher:
        print("nothing to cancel: no job of this sweep is queued or running")
        return 0
    for name, jobs in by_launcher.items():
        make_launcher(name, plan.spec.launcher_options.get(name)).cancel(jobs, plan.sweep_dir)
        print(f"cancelled {len(jobs)} {name} job(s)")
    return 0


def report(args: argparse.Namespace) -> int:
    from lowbit.sweep.report import build_matrix, print_matrix, write_report

    plan, options = _load(args, extra_options=("margin",))
    margin = _margin(options.get("margin"))
    matrix = build_matrix(plan, margin)
    print_matrix(matrix, sys.stdout)
    for path in write_report(plan, margin, matrix):
        print(f"wrote {path}")
    return 0


def _margin(text: str | None) -> float:
    from lowbit.report.compare import DEFAULT_MARGIN

    if text is None:
        return DEFAULT_MARGIN
    try:
        margin = float(text)
    except ValueError:
        raise UsageError(f"margin must be a number of percentage points, got {text!r}") from None
    if not 0 < margin < 100:
        raise UsageError(f"margin is in percentage points and must be in (0, 100), got {margin}")
    return margin
