"""`lowbit sweep`: a matrix of models x precisions x tasks from one sweep file, run as dependent jobs.

    spec.py     the sweep file: schema, Hydra composition, shape checks
    plan.py     the file expanded into cells and jobs, each cell checked by lowbit's own validators
    jobs.py     Job, Resources, JobState, job state files, the Launcher protocol and LAUNCHERS
    submit.py   what a run submits (not done, not in flight) and the --dry-run plan
    local.py    LocalLauncher: subprocesses on this machine, GPU slots, logs, cancel by process group
    status.py   where each job stands
    report.py   the results matrix through lowbit compare (rendered by lowbit.report.matrix)
    cli.py      lowbit sweep run | status | cancel | report
"""
