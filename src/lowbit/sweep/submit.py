"""What a `lowbit sweep run` submits, and the plan `--dry-run` prints.

A job is skipped when its output is complete (done) or when its launcher still has it queued or running (in
flight, after `Launcher.refresh`); every other job is submitted again: never started, failed, cancelled, or
partial (an eval resumes from its run directory). A submitted job's dependencies on skipped jobs are dropped
when those are done and kept when they are in flight, so a launcher finds an in-flight dependency through its
state file (its external_id).
"""

from __future__ import annotations

from dataclasses import replace

from lowbit.sweep.jobs import Job, JobState, read_state
from lowbit.sweep.plan import Plan
from lowbit.sweep.status import job_statuses


def jobs_to_submit(plan: Plan) -> tuple[list[Job], list[str], list[str]]:
    """(jobs to submit, names of done jobs, names of in-flight jobs)."""
    statuses = job_statuses(plan)
    done = [s.job.name for s in statuses if s.state == JobState.DONE]
    in_flight = [s.job.name for s in statuses
                 if s.state == JobState.RUNNING or (s.state == JobState.PENDING and s.external_id)]
    skipped = set(done) | set(in_flight)
    todo = [replace(s.job, depends_on=tuple(d for d in s.job.depends_on if d not in done))
            for s in statuses if s.job.name not in skipped]
    return todo, done, in_flight


def format_plan(plan: Plan, todo: list[Job], done: list[str], in_flight: list[str]) -> str:
    spec = plan.spec
    lines = [f"sweep {spec.name} ({spec.path}): {len(plan.cells)} cells, {len(plan.quantize_jobs)} quantize jobs, "
             f"launcher {spec.launcher}",
             f"output: {plan.sweep_dir}",
             f"{len(done)} done, {len(in_flight)} in flight, {len(todo)} to run", ""]
    to_run = {job.name: job for job in todo}
    for job in plan.jobs:
        if job.name in to_run:
            state = "to run"
            previous = read_state(plan.sweep_dir, job).get("state")
            if previous in (JobState.FAILED, JobState.CANCELLED):
                state = f"to run again ({previous.value})"
        else:
            state = "done" if job.name in done else "in flight"
        lines.append(f"{job.name}  [{state}]")
        if job.depends_on:
            lines.append(f"    after: {', '.join(job.depends_on)}")
        r = job.resources
        lines.append(f"    resources: {r.gpus} GPU, {r.cpus} CPU"
                     + (f", {r.mem_gb} GB" if r.mem_gb else "") + (f", {r.time_min} min" if r.time_min else ""))
        if job.name in to_run:
            lines.append("    lowbit " + " ".join(job.argv))
    return "\n".join(lines)


