"""What the LiveCodeBench sandbox tests share: their own process tree capped in a cgroup while they run."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from lowbit.tasks.livecodebench.cgroups import create_program_cgroup
from lowbit.tasks.livecodebench.sandbox import sandbox_isolation

TEST_MEMORY, TEST_TASKS = 3 << 30, 512


@pytest.fixture(scope="module", autouse=True)
def capped_process_tree():
    """Run the module inside a cgroup of its own (3 GiB, 512 tasks) where cgroups can be made, moving back after:
    if the sandbox's own limits regress, an attack fails its test instead of exhausting the machine. Programs
    whose sandbox joins a cgroup of its own leave this one; the rest stay under it."""
    layout = sandbox_isolation().cgroups
    if layout is None:
        yield
        return
    cap = create_program_cgroup(layout, TEST_MEMORY, TEST_TASKS)
    for procs in dict.fromkeys(cap.procs):
        Path(procs).write_text(str(os.getpid()))
    try:
        yield
    finally:
        for home in dict.fromkeys((layout.memory_parent, layout.pids_parent)):
            (home / "cgroup.procs").write_text(str(os.getpid()))
        assert all(str(os.getpid()) not in Path(p).read_text().split() for p in cap.procs)
        cap.kill_and_remove()


@pytest.fixture
def area():
    """A directory the sandbox user may enter (pytest's tmp_path is private to root), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="lcb-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
