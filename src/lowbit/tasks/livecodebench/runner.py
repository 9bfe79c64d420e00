"""The trusted harness that runs inside the sandbox: `python -I runner.py JOB_DIR`. Standard library only.

It is started by lowbit.tasks.livecodebench.sandbox, normally as process 1 of fresh user, network and PID
namespaces (`unshare --user --net --pid --fork --kill-child`), as an unprivileged user when lowbit runs as root.
It reads JOB_DIR/job.json (the program's mode, function name, test *inputs* and limits: expected outputs never
enter the sandbox), compiles the program once, then for each test forks a child that runs the program on that
input with stdin, stdout and stderr redirected to files in JOB_DIR. The untrusted code only ever runs in those
children, after the limits below are in place. Per test it writes one JSON line to its report pipe, then waits
for one line on its command pipe: "next" runs the following test, anything else (or EOF) ends the run, so the
scorer can stop at the first failing test as the official evaluator does.

Limits set here, before any untrusted code runs: RLIMIT_AS (memory), RLIMIT_FSIZE (stdout cap, and any file),
RLIMIT_NPROC (processes; counted per user namespace), RLIMIT_CORE 0, RLIMIT_CPU per test, a wall-clock limit per
test (kill of the child's process group), and, when this harness is process 1 of its PID namespace, a kill of every
other process in the namespace after each test, so nothing a test leaves behind (a detached grandchild included)
outlives it. The harness is marked non-dumpable, so tests cannot ptrace it or open its pipes through /proc, and
it confines itself with Landlock where the kernel has it (read-only system and interpreter, read-write JOB_DIR,
no other file, no TCP) before the first test.
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
import traceback

# Exit codes of a test child, set by this harness (a program can forge them, but only to its own detriment:
# the scorer compares the output itself).
EXIT_OK, EXIT_RUNTIME, EXIT_MEMORY, EXIT_COMPILE = 0, 1, 3, 5

# Names competitive programs use without importing them, as the official harness makes them available.
PRELUDE = """\
import sys, os, math, re, string, random, heapq, bisect, collections, itertools, functools, operator, copy
from typing import *
from collections import *
from itertools import *
from functools import *
from heapq import *
from bisect import *
from math import *
from string import *
from operator import *
sys.setrecursionlimit(50000)
"""

PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
# Landlock (Linux >= 5.13): system calls, and the file-system rights each ABI version knows.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
READ_ONLY = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
# What a Python program may read besides its own directory: the system and the interpreter's installation.
READABLE = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/etc", "/proc", "/dev/urandom", "/dev/random",
            "/dev/zero", "/dev/null")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def main(job_dir: str) -> None:
    with open(os.path.join(job_dir, "job.json"), encoding="utf-8") as f:
        job = json.load(f)
    # Keep the scorer's pipes on high descriptors that test children close before running any program.
    commands = os.fdopen(os.dup(0), "r", encoding="utf-8")
    reports = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, signals without a handler cannot reach us
    _set_limits(job)
    _make_undumpable()

    with open(os.path.join(job_dir, "program.py"), encoding="utf-8") as f:
        source = f.read()
    try:
        code = compile(source, "<solution>", "exec")
    except (SyntaxError, ValueError) as e:  # ValueError: source with NUL bytes
        _report(reports, {"program": True, "status": "compile_error", "seconds": 0.0,
                          "detail": f"{type(e).__name__}: {e}"})
        return
    exec(PRELUDE, {})  # imports the prelude's modules once, so each test child finds them loaded
    confined = _confine_files(job_dir)
    private = {reports.fileno(), commands.fileno()}
    for index, test_input in enumerate(job["inputs"]):
        _report(reports, {**_run_test(job, job_dir, code, index, test_input, private), "landlock": confined})
        if commands.readline().strip() != "next":
            return


def _set_limits(job: dict) -> None:
    limit = resource.setrlimit
    limit(resource.RLIMIT_CORE, (0, 0))
    limit(resource.RLIMIT_AS, (job["memory_bytes"], job["memory_bytes"]))
    limit(resource.RLIMIT_FSIZE, (job["output_bytes"], job["output_bytes"]))
    processes = job["processes"]
    if os.getpid() != 1:  # no user namespace: the count covers every process of this user, so add what runs
        processes += _processes_of_this_user()
    limit(resource.RLIMIT_NPROC, (processes, processes))


def _processes_of_this_user() -> int:
    uid, count = str(os.getuid()), 0
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                count += any(line.startswith("Uid:") and line.split()[1] == uid for line in f)
        except (OSError, ValueError):
            continue
    return count


def _make_undumpable() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl on this libc: the namespaces and Landlock still apply


def _confine_files(job_dir: str) -> bool:
    """Landlock this process and its children: read-only access to the system and the interpreter, full access
    to JOB_DIR, nothing else (so no other file can be read, written or deleted), and no TCP connect or bind.
    Irreversible, and inherited by every test. False where the kernel has no Landlock."""
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                       ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        return False
    fs_rights = FS_RIGHTS_BY_ABI.get(abi, FS_RIGHTS_BY_ABI[5])
    attr = _RulesetAttr(fs_rights, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0)
    size = ctypes.sizeof(attr) if abi >= 4 else 8
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    interpreter = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    rules = [(path, READ_ONLY) for path in (*READABLE, *sorted(interpreter))]
    rules += [("/dev/null", FS_WRITE_FILE | FS_READ_FILE), (job_dir, fs_rights)]
    for path, rights in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.isdir(path):
            rights &= FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (1 << 14) | (1 << 15)  # rights a file can carry
        rule = _PathBeneathAttr(rights & fs_rights, fd)
        libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                     ctypes.byref(rule), ctypes.c_uint32(0))
        os.close(fd)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    restricted = libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) == 0
    os.close(ruleset)
    return restricted


def _report(reports, record: dict) -> None:
    reports.write(json.dumps(record) + "\n")
    reports.flush()


def _run_test(job: dict, job_dir: str, code, index: int, test_input: str, private: set[int]) -> dict:
    paths = {name: os.path.join(job_dir, f"{name}_{index}") for name in ("in", "out", "err", "ret")}
    with open(paths["in"], "w", encoding="utf-8") as f:
        f.write(test_input)
    timeout = job["test_timeout_s"]
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, code, paths, test_input, private, timeout)  # never returns
    pidfd = os.pidfd_open(pid)
    timed_out = not select.select([pidfd], [], [], timeout)[0]
    if timed_out:
        _kill_group(pid)
    _, status = os.waitpid(pid, 0)
    seconds = time.monotonic() - start
    os.close(pidfd)
    _kill_leftovers(pid)
    return {"test": index, "seconds": round(seconds, 4), **_verdict(status, timed_out)}


def _kill_group(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass  # already gone


def _kill_leftovers(pid: int) -> None:
    """Everything the test started: as PID 1 of our namespace every other process in it, else its group."""
    if os.getpid() != 1:
        _kill_group(pid)
        return
    while True:
        try:
            os.kill(-1, signal.SIGKILL)  # from PID 1 of a namespace: every other process of the namespace
        except ProcessLookupError:
            pass  # nothing else is running
        try:
            os.waitpid(-1, 0)  # orphans are re-parented to PID 1: reap them
        except ChildProcessError:
            return


def _verdict(status: int, timed_out: bool) -> dict:
    if timed_out:
        return {"status": "time_limit", "detail": "wall-clock limit per test"}
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        outcome = {signal.SIGXFSZ: "output_limit", signal.SIGXCPU: "time_limit"}.get(sig, "runtime_error")
        return {"status": outcome, "detail": f"killed by {name}"}
    code = os.WEXITSTATUS(status)
    outcome = {EXIT_OK: "ok", EXIT_MEMORY: "memory_limit", EXIT_COMPILE: "compile_error"}.get(code, "runtime_error")
    return {"status": outcome, "detail": f"exit code {code}"}


def _child(job: dict, code, paths: dict, test_input: str, private: set[int], timeout: float) -> None:
    status = EXIT_RUNTIME
    try:
        os.setpgid(0, 0)
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a write past the cap must kill
        for fd in private:
            os.close(fd)
        cpu = int(timeout) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        os.dup2(os.open(paths["in"], os.O_RDONLY), 0)
        os.dup2(os.open(paths["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
        os.dup2(os.open(paths["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
        sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)
        sys.stdout = sys.__stdout__ = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = sys.__stderr__ = open(2, "w", encoding="utf-8", closefd=False)
        status = _execute(job, code, paths, test_input)
    except MemoryError:
        status = EXIT_MEMORY
    except BaseException:  # noqa: BLE001 - anything the program raises is its runtime error
        status = EXIT_RUNTIME
        traceback_to_stderr()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001 - a program may close or break its own streams
                pass
        os._exit(status)


def _execute(job: dict, code, paths: dict, test_input: str) -> int:
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(PRELUDE, namespace)
    if job["mode"] == "stdin":
        try:
            exec(code, namespace)
        except SystemExit as e:
            return EXIT_OK if e.code in (None, 0) else EXIT_RUNTIME
        return EXIT_OK
    args = [json.loads(line) for line in test_input.split("\n")]
    try:
        exec(code, namespace)
        method = getattr(namespace["Solution"](), job["func_name"])
    except MemoryError:
        raise
    except BaseException:  # noqa: BLE001 - the official evaluator counts a module that fails to load as a compile error
        traceback_to_stderr()
        return EXIT_COMPILE
    result = method(*args)
    if isinstance(result, tuple):
        result = list(result)
    text = json.dumps(result)
    with open(paths["ret"], "w", encoding="utf-8") as f:
        f.write(text)
    return EXIT_OK


def traceback_to_stderr() -> None:
    try:
        traceback.print_exc()
    except BaseException:  # noqa: BLE001 - stderr may be closed or over its size limit
        pass


if __name__ == "__main__":
    main(sys.argv[1])
