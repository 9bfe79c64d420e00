"""Running untrusted programs: one sandboxed harness per program, its tests one after another, programs in parallel.

Each program gets one harness process (lowbit/tasks/livecodebench/runner.py, passed with -c) with a clean
environment, in its own session, and confined by the strongest isolation that works on this machine
(lowbit.tasks.livecodebench.isolation): a private root in mount, PID and network namespaces with cgroup limits
on the whole program tree when lowbit runs as root, else user, PID and network namespaces with per-process
rlimits, else a plain session. The job (program, test inputs, limits) goes to the harness through its stdin;
outputs come back through its stdout, each read bounded in bytes and by the problem's deadline. The scorer never
opens a file the program could have touched: the host directory a program gets (its mount point, or its working
directory without a mount namespace) is only created and removed here, on every exit path, as are its cgroups.
Expected outputs never enter the sandbox: outputs are compared here, by lowbit.tasks.livecodebench.compare.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lowbit.tasks.livecodebench.cgroups import create_program_cgroup
from lowbit.tasks.livecodebench.isolation import NOBODY, Isolation, SandboxError, choose_isolation, identity
from lowbit.tasks.livecodebench.runner import STDERR_TAIL, WORK

RUNNER = Path(__file__).with_name("runner.py")
OUTCOMES = ("passed", "wrong_answer", "time_limit", "runtime_error", "compile_error", "memory_limit", "output_limit")
HEADER_BYTES = 1 << 16  # the longest report header line accepted from the harness
__all__ = ["OUTCOMES", "Isolation", "Limits", "Program", "SandboxError", "TestRun", "run_program", "run_programs",
           "sandbox_isolation"]


@dataclass(frozen=True)
class Limits:
    """Per-test and per-program limits. The defaults follow the official evaluator's 6 s per test; the problem
    limit defaults to its global timeout, (test limit + 1) * tests + 5 s. Memory and processes bound the whole
    program tree where a cgroup applies, else each process (RLIMIT_AS, RLIMIT_NPROC); disk is the size of the
    program's private working directory (without one, only each file is bounded, by the output cap)."""

    test_timeout_s: float = 6.0
    problem_timeout_s: float | None = None
    memory_bytes: int = 4 << 30
    output_bytes: int = 64 << 20  # stdout cap (RLIMIT_FSIZE: any file the program writes)
    processes: int = 64
    disk_bytes: int = 256 << 20

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


@functools.lru_cache(maxsize=None)
def sandbox_isolation(without: frozenset[str] = frozenset()) -> Isolation:
    """The strongest isolation that runs a program here (leaving out the mechanisms named in `without`:
    "private_root", "cgroup", "namespaces"), found once per process by running a trivial program each way."""
    def probe(isolation: Isolation) -> bool:
        runs = _run_with(isolation, Program("print(6 * 7)\n", "stdin", ["\n"]), Limits(test_timeout_s=20.0),
                         lambda index, run: False, None)
        if runs[0].status != "ok" or runs[0].output != "42\n":
            raise SandboxError(f"the probe program failed: {runs[0].status} {runs[0].detail}")
        return runs[0].landlocked

    return choose_isolation(probe, without)


def run_program(program: Program, limits: Limits = Limits(), keep_going: Continue | None = None,
                work_root: str | None = None, isolation: Isolation | None = None) -> list[TestRun]:
    """Run `program` on its inputs in order; stop early when `keep_going` says so or at a failed execution.
    Returns one TestRun per test executed (fewer than the inputs when it stopped early). Raises SandboxError when
    the sandbox itself cannot be built (never a verdict on the program)."""
    return _run_with(isolation or sandbox_isolation(), program, limits,
                     keep_going or (lambda index, run: run.status == "ok"), work_root)


def run_programs(programs: Sequence[Program], limits: Limits = Limits(),
                 keep_going: Sequence[Continue | None] | None = None, workers: int | None = None,
                 work_root: str | None = None, isolation: Isolation | None = None) -> list[list[TestRun]]:
    """`run_program` for each program (with `keep_going[i]` for program i), `workers` (default: one per CPU
    core) at a time; results in input order."""
    workers = workers or os.cpu_count() or 1
    deciders = list(keep_going) if keep_going is not None else [None] * len(programs)
    if len(deciders) != len(programs):
        raise ValueError(f"{len(programs)} programs but {len(deciders)} keep_going functions")
    isolation = isolation or sandbox_isolation()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pair: run_program(pair[0], limits, pair[1], work_root, isolation),
                             zip(programs, deciders)))


def _run_with(isolation: Isolation, program: Program, limits: Limits, keep_going: Continue,
              work_root: str | None) -> list[TestRun]:
    if program.mode not in ("stdin", "functional"):
        raise ValueError(f"program mode must be stdin or functional, got {program.mode!r}")
    job_dir = Path(tempfile.mkdtemp(prefix="lcb-", dir=work_root))
    cgroup = None
    try:
        if isolation.cgroups is not None:
            cgroup = create_program_cgroup(isolation.cgroups, limits.memory_bytes, limits.processes)
        return _run_in(job_dir, isolation, cgroup, program, limits, keep_going)
    finally:
        try:
            if cgroup is not None:
                cgroup.kill_and_remove()
        finally:
            _remove_tree(job_dir)


def _run_in(job_dir: Path, isolation: Isolation, cgroup, program: Program, limits: Limits,
            keep_going: Continue) -> list[TestRun]:
    private_root = isolation.mode == "private_root"
    job = {"mode": program.mode, "func_name": program.func_name, "code": program.code, "inputs": list(program.inputs),
           "test_timeout_s": limits.test_timeout_s, "memory_bytes": limits.memory_bytes,
           "output_bytes": limits.output_bytes, "processes": limits.processes, "disk_bytes": limits.disk_bytes,
           "root": str(job_dir) if private_root else None, "python_prefix": isolation.python_prefix,
           "user_namespace": isolation.mode == "namespaces",
           "cgroup": {"procs": cgroup.procs, "oom_events": cgroup.oom_events} if cgroup is not None else None}
    home = WORK if private_root else str(job_dir)
    if not private_root and os.geteuid() == 0:
        os.chown(job_dir, NOBODY, NOBODY)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home, "PYTHONHASHSEED": "0",
           "PYTHONIOENCODING": "utf-8"}
    deadline = time.monotonic() + limits.problem_limit(len(program.inputs))
    process = subprocess.Popen([*isolation.command(), "-I", "-B", "-c", _runner_source()],
                               cwd="/" if private_root else job_dir, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, close_fds=True,
                               **({} if private_root else identity()))
    try:
        payload = json.dumps(job).encode("utf-8")
        if not _send(process, f"{len(payload)}\n".encode() + payload, deadline):
            return [_no_report(process, deadline)]
        return _converse(process, program, limits, keep_going, deadline)
    finally:
        _kill_session(process)


def _remove_tree(path: Path) -> None:
    """Remove a directory a program may have filled (without a private root): links are removed, never followed;
    a tree too deep for Python's recursion goes with rm."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except RecursionError:
        subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=False, timeout=300,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@functools.lru_cache(maxsize=1)
def _runner_source() -> str:
    """The harness, passed with -c: the sandbox user need not be able to read lowbit's installation."""
    return RUNNER.read_text(encoding="utf-8")


def _send(process: subprocess.Popen, data: bytes, deadline: float) -> bool:
    """Write the job to the harness before the deadline; False when it ended or the time ran out."""
    fd = process.stdin.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([], [fd], [], remaining)[1]:
            return False
        try:
            view = view[os.write(fd, view[:1 << 16]):]
        except BlockingIOError:
            continue
        except OSError:  # the harness ended
            return False
    return True


class _Reports:
    """The harness's report stream: header lines and the bytes they announce, each read bounded in size and
    ending at EOF or at the deadline (then None)."""

    def __init__(self, fd: int, deadline: float):
        self.fd, self.deadline, self.buffer = fd, deadline, bytearray()

    def _fill(self) -> bool:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
            return False
        chunk = os.read(self.fd, 1 << 16)
        self.buffer += chunk
        return bool(chunk)

    def header(self) -> dict | None:
        while b"\n" not in self.buffer[:HEADER_BYTES]:
            if len(self.buffer) >= HEADER_BYTES or not self._fill():
                return None
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        try:
            header = json.loads(line)
        except json.JSONDecodeError:
            return None
        return header if isinstance(header, dict) else None

    def exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _converse(process: subprocess.Popen, program: Program, limits: Limits, keep_going: Continue,
              deadline: float) -> list[TestRun]:
    reports = _Reports(process.stdout.fileno(), deadline)
    ready = reports.header()
    if ready is None:
        return [_no_report(process, deadline)]
    if "setup_error" in ready:
        raise SandboxError(f"the sandbox could not be built: {ready['setup_error']}")
    runs: list[TestRun] = []
    for index in range(len(program.inputs)):
        report = reports.header()
        if report is None:
            runs.append(_no_report(process, deadline, started=True))
            return runs
        output_size, stderr_size = report.get("output_bytes"), report.get("stderr_bytes")
        if not (isinstance(output_size, int) and -1 <= output_size <= limits.output_bytes
                and isinstance(stderr_size, int) and 0 <= stderr_size <= STDERR_TAIL):
            runs.append(TestRun("runtime_error", None, 0.0, "the harness sent a malformed report"))
            return runs
        output = reports.exactly(max(output_size, 0))
        stderr = reports.exactly(stderr_size)
        if output is None or stderr is None:
            runs.append(_no_report(process, deadline, started=True))
            return runs
        if report.get("program"):  # the program did not compile: no test ran
            runs.append(TestRun("compile_error", None, 0.0, str(report.get("detail", ""))))
            return runs
        tail = stderr.decode("utf-8", errors="replace").strip()
        detail = str(report.get("detail", "")) + (f"; stderr: {tail}" if tail else "")
        run = TestRun(str(report.get("status")), output.decode("utf-8", errors="replace") if output_size >= 0 else None,
                      float(report.get("seconds", 0.0)), detail, bool(report.get("landlock")))
        runs.append(run)
        go_on = keep_going(index, run) and index + 1 < len(program.inputs)
        if not _send(process, b"next\n" if go_on else b"stop\n", deadline) or not go_on:
            return runs
    return runs


def _no_report(process: subprocess.Popen, deadline: float, started: bool = False) -> TestRun:
    """The verdict when no report came: the problem's time ran out, or the harness ended (before it began a
    test: the sandbox could not start, which is not the program's fault)."""
    if time.monotonic() >= deadline:
        return TestRun("time_limit", None, 0.0, "problem time limit")
    if not started:
        raise SandboxError(f"the sandbox did not start: {_stderr_of(process) or 'the harness ended silently'}")
    return TestRun("runtime_error", None, 0.0, "harness ended unexpectedly")


def _stderr_of(process: subprocess.Popen, size: int = 2000) -> str:
    """What the harness or unshare wrote to stderr before the harness redirected it (at most `size` bytes)."""
    fd = process.stderr.fileno()
    if not select.select([fd], [], [], 1.0)[0]:
        return ""
    return os.read(fd, size).decode("utf-8", errors="replace").strip()


def _kill_session(process: subprocess.Popen) -> None:
    """Kill the harness's whole session at once (every report is in by now; with namespaces the kernel then kills
    everything inside them) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group already exited
    process.wait()
    for pipe in (process.stdin, process.stdout, process.stderr):
        try:
            pipe.close()
        except OSError:
            pass  # a pipe of a killed process may already be broken
