"""Control groups that bound a whole sandboxed program tree: memory (swap included) and process count.

cgroup v2 where its memory and pids controllers can be delegated (groups under `lowbit.sandbox` at the root of
the unified hierarchy: `memory.max`, `memory.swap.max` 0, `pids.max`), else cgroup v1 (groups beside lowbit's
own in the memory and pids hierarchies: `memory.limit_in_bytes`, `memory.memsw.limit_in_bytes` where swap is
accounted, `pids.max`). Both count page cache, tmpfs and memfd pages, which RLIMIT_AS does not. Creating groups
needs root; `find_cgroups` says why none can be used otherwise.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

V2_PARENT = "lowbit.sandbox"
_names = itertools.count()


@dataclass(frozen=True)
class CgroupLayout:
    """Where program groups are made: `version` "v2" (one directory holds both controllers) or "v1" (one
    directory per controller)."""

    version: str
    memory_parent: Path
    pids_parent: Path


@dataclass(frozen=True)
class ProgramCgroup:
    """One program's groups: `procs` are the cgroup.procs files its harness joins, `oom_events` the file whose
    `oom_kill` line counts its OOM kills."""

    layout: CgroupLayout
    dirs: tuple[Path, ...]

    @property
    def procs(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    @property
    def oom_events(self) -> str:
        return str(self.dirs[0] / ("memory.events" if self.layout.version == "v2" else "memory.oom_control"))

    def kill_and_remove(self, timeout_s: float = 5.0) -> None:
        """Kill whatever is still in the groups, then remove them (a group can only go once it is empty)."""
        deadline = time.monotonic() + timeout_s
        kill_file = self.dirs[0] / "cgroup.kill"
        for directory in self.dirs:
            while directory.exists():
                try:
                    directory.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                if kill_file.exists():
                    _write(kill_file, "1")
                for pid in _members(directory):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass  # exited meanwhile
                time.sleep(0.01)


def find_cgroups() -> tuple[CgroupLayout | None, str]:
    """The layout to use here, or None and the reason there is none."""
    if os.geteuid() != 0:
        return None, "lowbit is not root, so it cannot create control groups"
    mounts = _cgroup_mounts()
    unified = mounts.get("cgroup2")
    if unified is not None:
        available = (unified / "cgroup.controllers").read_text().split()
        if {"memory", "pids"} <= set(available):
            parent = unified / V2_PARENT
            try:
                _write(unified / "cgroup.subtree_control", "+memory +pids")
                parent.mkdir(exist_ok=True)
                _write(parent / "cgroup.subtree_control", "+memory +pids")
                return CgroupLayout("v2", parent, parent), ""
            except OSError as e:
                v2_reason = f"cgroup v2 cannot delegate memory and pids ({e.strerror})"
        else:
            v2_reason = f"cgroup v2 offers only {' '.join(available) or 'no controllers'}"
    else:
        v2_reason = "no cgroup v2 hierarchy"
    memory, pids = mounts.get("memory"), mounts.get("pids")
    if memory is None or pids is None:
        return None, f"{v2_reason}, and no cgroup v1 memory and pids hierarchies"
    own = _own_groups()
    layout = CgroupLayout("v1", memory / own.get("memory", "/").lstrip("/"), pids / own.get("pids", "/").lstrip("/"))
    if not (os.access(layout.memory_parent, os.W_OK) and os.access(layout.pids_parent, os.W_OK)):
        return None, f"{v2_reason}, and the cgroup v1 groups are not writable"
    return layout, ""


def create_program_cgroup(layout: CgroupLayout, memory_bytes: int, processes: int) -> ProgramCgroup:
    name = f"lowbit-{os.getpid()}-{next(_names)}"
    if layout.version == "v2":
        group = layout.memory_parent / name
        group.mkdir()
        cgroup = ProgramCgroup(layout, (group,))
        _limit(cgroup, [("memory.max", memory_bytes), ("memory.swap.max", 0), ("pids.max", processes)])
        return cgroup
    memory, pids = layout.memory_parent / name, layout.pids_parent / name
    memory.mkdir()
    cgroup = ProgramCgroup(layout, (memory,))
    try:
        pids.mkdir()
    except OSError:
        cgroup.kill_and_remove()
        raise
    cgroup = ProgramCgroup(layout, (memory, pids))
    _limit(cgroup, [("memory.limit_in_bytes", memory_bytes), ("memory.memsw.limit_in_bytes", memory_bytes),
                    ("pids.max", processes)])
    return cgroup


def _limit(cgroup: ProgramCgroup, settings: list[tuple[str, int]]) -> None:
    try:
        for name, value in settings:
            path = next((d / name for d in cgroup.dirs if (d / name).exists()), None)
            if path is None and name in ("memory.swap.max", "memory.memsw.limit_in_bytes"):
                continue  # swap is not accounted here (the kernel has no swap accounting)
            if path is None:
                raise OSError(f"{name} is missing in {cgroup.dirs[0]}")
            _write(path, str(value))
    except OSError:
        cgroup.kill_and_remove()
        raise


def _write(path: Path, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def _members(directory: Path) -> list[int]:
    try:
        return [int(line) for line in (directory / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _cgroup_mounts() -> dict[str, Path]:
    """"cgroup2" -> the unified hierarchy's mount point, and each v1 controller -> its hierarchy's mount point."""
    mounts: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        mount_point, fstype, options = fields[4], fields[separator + 1], fields[separator + 3]
        if fstype == "cgroup2":
            mounts.setdefault("cgroup2", Path(mount_point))
        elif fstype == "cgroup":
            for option in options.split(","):
                if option in ("memory", "pids"):
                    mounts.setdefault(option, Path(mount_point))
    return mounts


def _own_groups() -> dict[str, str]:
    """This process's group per v1 controller, from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if controller:
                groups[controller] = path
    return groups
