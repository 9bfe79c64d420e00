"""Which sandbox this machine can give a program, strongest first, and how to describe it.

1. `private_root` (lowbit runs as root): `unshare --mount --pid --net`; the harness joins the program's cgroup
   (lowbit.tasks.livecodebench.cgroups: memory, swap and process count of the whole program tree; when no cgroup
   can be made, per-process rlimits instead), pivots into a private root (read-only system and interpreter,
   /proc of its own PID namespace, a size-limited tmpfs as working directory) and becomes `nobody`.
2. `namespaces`: `unshare --user --net --pid` as `nobody` (or lowbit's user): no network, every process dies
   with the harness, but the host's file system and /proc stay visible (Landlock narrows the files), and memory,
   processes and file size are bounded per process.
3. `session`: no namespaces; a program that leaves its session (setsid) can outlive it.
Every level keeps Landlock (where the kernel has it), the rlimits, no ptrace of the harness and the kill of the
harness's session. The first level whose probe program runs is used; each level skipped is logged once, with
its reason, and listed in `describe()`, which the task reports in metrics.json.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from lowbit.tasks.livecodebench.cgroups import CgroupLayout, find_cgroups

log = logging.getLogger(__name__)
NOBODY = 65534
MODES = ("private_root", "namespaces", "session")
MECHANISMS = ("private_root", "cgroup", "namespaces")  # what `without` may leave out


class SandboxError(RuntimeError):
    """The sandbox itself could not be built or started (never a verdict on a program)."""


@dataclass(frozen=True)
class Isolation:
    """How programs are started here: `mode` (one of MODES), the interpreter (`python`, installed under
    `python_prefix`), the cgroup layout (None: per-process rlimits only), and what is unavailable and why."""

    mode: str
    python: str
    cgroups: CgroupLayout | None = None
    unavailable: tuple[tuple[str, str], ...] = field(default=())

    @property
    def python_prefix(self) -> str:
        return os.path.dirname(os.path.dirname(os.path.realpath(self.python)))

    @property
    def namespaces(self) -> bool:
        return self.mode != "session"

    def command(self) -> list[str]:
        """The harness's command line up to the interpreter's options."""
        unshare = shutil.which("unshare", path="/usr/bin:/bin") or "unshare"
        if self.mode == "private_root":
            return [unshare, "--mount", "--pid", "--net", "--fork", "--kill-child", "--propagation", "private",
                    self.python]
        if self.mode == "namespaces":
            return [unshare, "--user", "--net", "--pid", "--fork", "--kill-child", self.python]
        return [self.python]

    def describe(self) -> dict:
        """What confines a program here, for the run's records."""
        cgroup = f"cgroup {self.cgroups.version}" if self.cgroups else None
        private = self.mode == "private_root"
        return {
            "isolation": self.mode,
            "python": self.python,
            "user": "nobody" if os.geteuid() == 0 else "lowbit's user",
            "namespaces": {"private_root": ["mount", "pid", "net"], "namespaces": ["user", "pid", "net"]}.get(
                self.mode, []),
            "memory": (f"{cgroup} memory limit on the program tree, swap included where the kernel accounts it"
                       if cgroup else "RLIMIT_AS per process"),
            "processes": f"{cgroup} pids.max on the program tree" if cgroup else "RLIMIT_NPROC",
            "disk": "private size-limited tmpfs" if private else "RLIMIT_FSIZE per file only",
            "file_system": ("private root: read-only /usr and interpreter, own /proc" if private
                            else "host's, narrowed by Landlock where the kernel has it"),
            "unavailable": dict(self.unavailable),
        }


def identity() -> dict:
    """Popen arguments that drop root to `nobody` (the user lowbit runs as otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def candidates(without: frozenset[str]) -> tuple[list[Isolation], list[tuple[str, str]]]:
    """Isolations to try, strongest first, and the mechanisms already known to be unavailable (with why)."""
    unknown = set(without) - set(MECHANISMS)
    if unknown:
        raise ValueError(f"unknown sandbox mechanisms {sorted(unknown)}; choose from {', '.join(MECHANISMS)}")
    skipped: list[tuple[str, str]] = []
    modes = list(MODES)
    for mechanism, reason in (("private_root", "left out on request"), ("namespaces", "left out on request")):
        if mechanism in without:
            skipped.append((mechanism, reason))
            modes.remove(mechanism)
    if "private_root" in modes and os.geteuid() != 0:
        skipped.append(("private_root", "lowbit is not root, so it cannot mount a private root"))
        modes.remove("private_root")
    if not shutil.which("unshare", path="/usr/bin:/bin"):
        skipped += [(mode, "no unshare in /usr/bin or /bin") for mode in modes if mode != "session"]
        modes = ["session"]
    layout = None
    if "cgroup" in without:
        skipped.append(("cgroup", "left out on request"))
    elif "private_root" in modes:
        layout, reason = find_cgroups()
        if layout is None:
            skipped.append(("cgroup", reason))
    # The system's interpreter first: it starts faster than most virtualenv or pyenv builds (a shared libpython).
    pythons = dict.fromkeys(p for p in (shutil.which("python3", path="/usr/bin:/bin"),
                                        os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)) if p)
    tried = []
    for mode in modes:
        layouts = [layout, None] if mode == "private_root" and layout is not None else [None]
        tried += [Isolation(mode, python, group) for group in layouts for python in pythons]
    return tried, skipped


def choose_isolation(probe: Callable[[Isolation], bool], without: frozenset[str] = frozenset()) -> Isolation:
    """The first candidate isolation that runs a probe program (`probe` returns whether Landlock applied, or
    raises SandboxError); logs each mechanism left unused and why, once."""
    tried, skipped = candidates(without)
    failures: dict[tuple[str, bool], str] = {}
    for isolation in tried:
        try:
            landlock = probe(isolation)
        except (OSError, SandboxError) as e:
            failures.setdefault((isolation.mode, isolation.cgroups is not None), f"{isolation.python}: {e}")
            continue
        unavailable = dict(skipped)
        for mode in MODES[:MODES.index(isolation.mode)]:
            unavailable.setdefault(mode, f"failed here ({failures.get((mode, False), failures.get((mode, True)))})")
        if isolation.cgroups is None:
            unavailable.setdefault("cgroup", f"failed here ({failures[('private_root', True)]})"
                                   if ("private_root", True) in failures else "used only with a private root")
        if not landlock:
            unavailable["landlock"] = "the kernel has no Landlock"
        for mechanism, why in unavailable.items():
            log.warning("LiveCodeBench sandbox: %s unavailable (%s); programs run with %s isolation", mechanism, why,
                        isolation.mode)
        return Isolation(isolation.mode, isolation.python, isolation.cgroups, tuple(unavailable.items()))
    raise SandboxError("no sandbox can run a Python program here; tried: "
                       + "; ".join(f"{mode}: {why}" for (mode, _), why in failures.items()))
