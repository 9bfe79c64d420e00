"""`lowbit sweep status`: where each job of a sweep stands.

A job whose output is complete is done, whatever its state file says (a cell finished by an earlier sweep, or by
hand, counts). Otherwise the state file tells, after the launcher that wrote it has brought it up to date
(`Launcher.refresh`): pending (never submitted, or queued), running, failed (with the one-line reason and the
log), cancelled.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lowbit.sweep.jobs import Job, JobState, is_done, make_launcher, read_state
from lowbit.sweep.plan import Plan


@dataclass(frozen=True)
class JobStatus:
    job: Job
    state: JobState
    reason: str = ""
    log_path: str = ""
    external_id: str = ""
    submitted: bool = False


def job_statuses(plan: Plan, refresh: bool = True) -> list[JobStatus]:
    sweep_dir = plan.sweep_dir
    jobs = plan.jobs
    done = {job.name for job in jobs if is_done(job)}
    if refresh:
        by_launcher: dict[str, list[Job]] = {}
        for job in jobs:
            launcher = read_state(sweep_dir, job).get("launcher")
            if job.name not in done and launcher:
                by_launcher.setdefault(launcher, []).append(job)
        for name, launched in by_launcher.items():
            make_launcher(name, plan.spec.launcher_options.get(name)).refresh(launched, sweep_dir)
    statuses = []
    for job in jobs:
        state = read_state(sweep_dir, job)
        if job.name not in done and state.get("state") == JobState.DONE:
            state = {}  # done under another config, or its output was removed since: to run afresh
        current = JobState.DONE if job.name in done else state.get("state", JobState.PENDING)
        statuses.append(JobStatus(
            job=job, state=current, reason=str(state.get("reason") or "") if current != JobState.DONE else "",
            log_path=str(state.get("log_path") or ""), external_id=str(state.get("external_id") or ""),
            submitted=bool(state)))
    return statuses


def format_status(statuses: list[JobStatus], sweep_dir: Path) -> str:
    counts = Counter(status.state for status in statuses)
    rows = [("job", "state", "id", "reason / log")]
    for status in statuses:
        state = status.state.value if status.submitted or status.state == JobState.DONE else "pending (not submitted)"
        detail = status.reason
        if status.state in (JobState.FAILED, JobState.RUNNING, JobState.CANCELLED) and status.log_path:
            detail = f"{detail} (log: {status.log_path})" if detail else f"log: {status.log_path}"
        rows.append((status.job.name, state, status.external_id, detail))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip() for row in rows]
    summary = ", ".join(f"{counts.get(state, 0)} {state.value}" for state in JobState)
    return "\n".join([f"sweep {sweep_dir}: {len(statuses)} jobs: {summary}", *lines])


def all_ended(statuses: list[JobStatus]) -> bool:
    """Whether the sweep has finished: no job is queued, running or still to submit."""
    return all(status.state in (JobState.DONE, JobState.FAILED, JobState.CANCELLED) for status in statuses)


def any_failed(statuses: list[JobStatus]) -> bool:
    return any(status.state == JobState.FAILED for status in statuses)
