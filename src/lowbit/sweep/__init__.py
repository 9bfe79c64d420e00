"""`lowbit sweep`: a matrix of models x precisions x tasks from one sweep file, run as dependent jobs.

    jobs.py     Job, Resources, JobState, job state files, the Launcher protocol and LAUNCHERS
"""
