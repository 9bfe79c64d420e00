"""Running untrusted programs: one sandboxed process per program, its tests one after another, programs in parallel.

Each program gets a fresh temporary directory holding the program, its test inputs and the harness's output
files, and one harness process (lowbit/tasks/livecodebench/runner.py) started
- with a clean environment (PATH, LANG, HOME and TMPDIR pointing into its directory, nothing inherited),
- as user `nobody` (65534) when lowbit runs as root, so RLIMIT_NPROC applies and the file system is read-only to
  it outside world-writable directories,
- through `unshare --user --net --pid --fork --kill-child` when user namespaces are available: no network
  interface but a downed loopback, and the harness is process 1 of its own PID namespace, so when it ends (or is
  killed) the kernel kills every process the program started, a detached grandchild included;
- in its own session, which the scorer kills as a whole at the per-problem limit.
The harness then confines itself and every test with Landlock (Linux >= 5.13): the program can read only the
system directories and the interpreter, read and write only its own directory, and cannot connect or bind TCP
sockets (TestRun.landlocked says whether it applied). Without user namespaces (`sandbox_isolation()` says which
is in use) a process that leaves the session (setsid) can outlive its program, and without Landlock too the
network stays reachable and the program can read what its user can read: run scoring in a container or VM then.

The harness applies memory (RLIMIT_AS), file size (RLIMIT_FSIZE: the stdout cap), process count (RLIMIT_NPROC),
per-test CPU and wall-clock limits before any untrusted code runs; see runner.py. Expected outputs never enter
the sandbox: outputs are compared here, by lowbit.tasks.livecodebench.compare.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

RUNNER = Path(__file__).with_name("runner.py")
NOBODY = 65534
NAMESPACES = ["--user", "--net", "--pid", "--fork", "--kill-child"]
_CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
OUTCOMES = ("passed", "wrong_answer", "time_limit", "runtime_error", "compile_error", "memory_limit", "output_limit")


@dataclass(frozen=True)
class Limits:
    """Per-test and per-program limits. The defaults follow the official evaluator's 6 s per test; the problem
    limit defaults to its global timeout, (test limit + 1) * tests + 5 s."""

    test_timeout_s: float = 6.0
    problem_timeout_s: float | None = None
    memory_bytes: int = 4 << 30
    output_bytes: int = 64 << 20  # stdout cap (RLIMIT_FSIZE: any file the program writes)
    processes: int = 64

    def problem_limit(self, tests: int) -> float:
        if self.problem_timeout_s is not None:
            return self.problem_timeout_s
        return (self.test_timeout_s + 1) * tests + 5


@dataclass
class Program:
    """One program to run: `mode` "stdin" (inputs on stdin) or "functional" (Solution().<func_name>(*args))."""

    code: str
    mode: str
    inputs: Sequence[str]
    func_name: str | None = None


@dataclass
class TestRun:
    """One execution: `status` ok, time_limit, runtime_error, compile_error, memory_limit or output_limit;
    `output` is stdout (stdin mode) or the JSON of the return value (functional mode), None when absent."""

    status: str
    output: str | None
    seconds: float
    detail: str = ""
    landlocked: bool = False  # the harness confined file access with Landlock (runner._confine_files)


# Decides, after each test, whether to run the next one: (test index, its run) -> continue?
Continue = Callable[[int, TestRun], bool]


@dataclass(frozen=True)
class Isolation:
    """How programs are started on this machine: `namespaces` (user, network and PID namespaces through unshare)
    or not, and the Python interpreter, one that the sandbox user can execute (the scorer's own, else the
    system's: the harness and competitive programs need only the standard library)."""

    namespaces: bool
    python: str

    @property
    def name(self) -> str:
        return "namespaces" if self.namespaces else "session"


@functools.lru_cache(maxsize=1)
def sandbox_isolation() -> Isolation:
    """The strongest isolation that works here, found by starting a trivial program each way once."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin")
    pythons = dict.fromkeys(p for p in (sys.executable, getattr(sys, "_base_executable", None),
                                        shutil.which("python3", path="/usr/bin:/bin")) if p)
    for prefix in ([[unshare, *NAMESPACES]] if unshare else []) + [[]]:
        for python in pythons:
            try:
                probe = subprocess.run([*prefix, python, "-I", "-c", "import json, resource, select"],
                                       env=_CLEAN_ENV, capture_output=True, timeout=20, cwd="/", **_identity())
            except (OSError, subprocess.SubprocessError):
                continue
            if probe.returncode == 0:
                return Isolation(namespaces=bool(prefix), python=python)
    raise RuntimeError("no Python interpreter can run as the sandbox user "
                       f"({'nobody' if os.geteuid() == 0 else 'this user'}); tried {', '.join(pythons)}")


def _identity() -> dict:
    """Popen arguments that drop root to `nobody` (the user lowbit runs as otherwise)."""
    if os.geteuid() != 0:
        return {}
    return {"user": NOBODY, "group": NOBODY, "extra_groups": []}


def run_program(program: Program, limits: Limits = Limits(), keep_going: Continue | None = None,
                work_root: str | None = None) -> list[TestRun]:
    """Run `program` on its inputs in order; stop early when `keep_going` says so or at a failed execution.
    Returns one TestRun per test executed (fewer than the inputs when it stopped early)."""
    job_dir = Path(tempfile.mkdtemp(prefix="lcb-", dir=work_root))
    try:
        return _run_in(job_dir, program, limits, keep_going or (lambda index, run: run.status == "ok"))
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def run_programs(programs: Sequence[Program], limits: Limits = Limits(),
                 keep_going: Sequence[Continue | None] | None = None, workers: int | None = None,
                 work_root: str | None = None) -> list[list[TestRun]]:
    """`run_program` for each program (with `keep_going[i]` for program i), `workers` (default: one per CPU
    core) at a time; results in input order."""
    workers = workers or os.cpu_count() or 1
    deciders = list(keep_going) if keep_going is not None else [None] * len(programs)
    if len(deciders) != len(programs):
        raise ValueError(f"{len(programs)} programs but {len(deciders)} keep_going functions")
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: run_program(pair[0], limits, pair[1], work_root), zip(programs, deciders)))


def _run_in(job_dir: Path, program: Program, limits: Limits, keep_going: Continue) -> list[TestRun]:
    if program.mode not in ("stdin", "functional"):
        raise ValueError(f"program mode must be stdin or functional, got {program.mode!r}")
    (job_dir / "program.py").write_text(program.code, encoding="utf-8")
    job = {"mode": program.mode, "func_name": program.func_name, "inputs": list(program.inputs),
           "test_timeout_s": limits.test_timeout_s, "memory_bytes": limits.memory_bytes,
           "output_bytes": limits.output_bytes, "processes": limits.processes}
    (job_dir / "job.json").write_text(json.dumps(job), encoding="utf-8")
    if os.geteuid() == 0:
        for path in (job_dir, job_dir / "program.py", job_dir / "job.json"):
            os.chown(path, NOBODY, NOBODY)
    isolation = sandbox_isolation()
    prefix = [shutil.which("unshare", path="/usr/bin:/bin"), *NAMESPACES] if isolation.namespaces else []
    env = {**_CLEAN_ENV, "HOME": str(job_dir), "TMPDIR": str(job_dir), "PYTHONHASHSEED": "0",
           "PYTHONIOENCODING": "utf-8"}
    deadline = time.monotonic() + limits.problem_limit(len(program.inputs))
    process = subprocess.Popen([*prefix, isolation.python, "-I", "-B", "-c", _runner_source(), str(job_dir)], cwd=job_dir,
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               start_new_session=True, close_fds=True, **_identity())
    try:
        return _converse(process, job_dir, program, keep_going, deadline)
    finally:
        _kill_session(process)


@functools.lru_cache(maxsize=1)
def _runner_source() -> str:
    """The harness, passed with -c: the sandbox user need not be able to read lowbit's installation."""
    return RUNNER.read_text(encoding="utf-8")


def _converse(process: subprocess.Popen, job_dir: Path, program: Program, keep_going: Continue,
              deadline: float) -> list[TestRun]:
    runs: list[TestRun] = []
    lines = _report_lines(process, deadline)
    for index in range(len(program.inputs)):
        report = next(lines, None)
        if report is None:  # the problem's time ran out, or the harness died
            timed_out = time.monotonic() >= deadline
            runs.append(TestRun("time_limit" if timed_out else "runtime_error", None, 0.0,
                                "problem time limit" if timed_out else "harness ended unexpectedly"))
            return runs
        if report.get("program"):  # the program did not compile: no test ran
            runs.append(TestRun("compile_error", None, 0.0, report["detail"]))
            return runs
        run = TestRun(report["status"], _output(job_dir, program.mode, index), report["seconds"],
                      report.get("detail", "") + _stderr_tail(job_dir, index), bool(report.get("landlock")))
        runs.append(run)
        go_on = keep_going(index, run) and index + 1 < len(program.inputs)
        try:
            process.stdin.write(b"next\n" if go_on else b"stop\n")
            process.stdin.flush()
        except (BrokenPipeError, OSError):
            return runs
        if not go_on:
            return runs
    return runs


def _report_lines(process: subprocess.Popen, deadline: float):
    """The harness's JSON report lines as they arrive; ends at EOF or at the deadline."""
    fd, buffer = process.stdout.fileno(), b""
    while True:
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            return


def _output(job_dir: Path, mode: str, index: int) -> str | None:
    path = job_dir / (f"out_{index}" if mode == "stdin" else f"ret_{index}")
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def _stderr_tail(job_dir: Path, index: int, size: int = 600) -> str:
    try:
        with open(job_dir / f"err_{index}", "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - size))
            tail = f.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return ""
    return f"; stderr: {tail}" if tail else ""


def _kill_session(process: subprocess.Popen) -> None:
    """Kill the harness's whole session at once (every report is in by now; with namespaces the kernel then kills
    everything inside them) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group already exited
    process.wait()
    for pipe in (process.stdin, process.stdout):
        try:
            pipe.close()
        except OSError:
            pass  # a pipe of a killed process may already be broken
