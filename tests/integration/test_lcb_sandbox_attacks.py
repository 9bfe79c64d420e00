"""Attacks on the LiveCodeBench sandbox, for real: a program that plants files for the scorer to read, limits that
must hold for the whole program tree (memory, memfd, processes, disk), and what a program can see of the host.
Each attack runs on the strongest isolation this machine has and, where the fallback must hold it too, on the
fallback (user/net/pid namespaces, per-process rlimits).

The attacks are modest (about 1 GiB against a 256 MiB limit) and this module's own process tree runs in a cgroup
capped at 3 GiB and 512 tasks (lcb_sandbox_support), so a regression fails a test instead of exhausting the
machine."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from lcb_sandbox_support import area, capped_process_tree  # noqa: F401 - fixtures; the cap is autouse

from lowbit.records import Completion, Prediction
from lowbit.tasks import make_task
from lowbit.tasks.livecodebench import judge, problem_of
from lowbit.tasks.livecodebench.sandbox import Limits, Program, run_program, sandbox_isolation

STRONGEST = sandbox_isolation()
FALLBACK = frozenset({"private_root", "cgroup"})
SMALL = Limits(test_timeout_s=3.0, memory_bytes=256 << 20, output_bytes=1 << 20, processes=32, disk_bytes=16 << 20)
SUM_INPUTS, SUM_OUTPUTS = ("1200 3400\n", "1357 12222\n"), ("4600\n", "13579\n")
REQUIRES_CGROUP = pytest.mark.skipif(STRONGEST.cgroups is None, reason="no cgroup can be made here (see "
                                     "sandbox_isolation().describe()['unavailable'])")
REQUIRES_PRIVATE_ROOT = pytest.mark.skipif(STRONGEST.mode != "private_root",
                                           reason="no private root here (lowbit is not root, or mounts are refused)")


@pytest.fixture(params=["strongest", "fallback"])
def isolation(request):
    if request.param == "strongest":
        return STRONGEST
    fallback = sandbox_isolation(FALLBACK)
    if fallback.mode == STRONGEST.mode and fallback.cgroups == STRONGEST.cgroups:
        pytest.skip("the strongest isolation here is already the fallback")
    return fallback


@pytest.fixture
def work_root(area):
    root = area / "sandboxes"
    root.mkdir(mode=0o755)
    yield root
    assert list(root.iterdir()) == [], "a sandbox directory was left behind"
    for parent in ({STRONGEST.cgroups.memory_parent, STRONGEST.cgroups.pids_parent} if STRONGEST.cgroups else ()):
        # the module's cap is the one group of this process that may exist meanwhile
        assert len(list(parent.glob(f"lowbit-{os.getpid()}-*"))) == 1, "a program's cgroup was left behind"


def run_sum(code: str, work_root: Path, limits: Limits = SMALL, isolation=STRONGEST, mode: str = "stdin"):
    """Run `code` on the A+B tests (stdin mode) or on Solution().add(a, b) (functional mode)."""
    if mode == "stdin":
        tests = [{"input": i, "output": o, "testtype": "stdin"} for i, o in zip(SUM_INPUTS, SUM_OUTPUTS)]
        metadata = "{}"
    else:
        tests = [{"input": "\n".join(i.split()), "output": o.strip(), "testtype": "functional"}
                 for i, o in zip(SUM_INPUTS, SUM_OUTPUTS)]
        metadata = json.dumps({"func_name": "add"})
    problem = problem_of({"public_test_cases": json.dumps(tests), "private_test_cases": "[]", "metadata": metadata,
                          "question_id": f"sum-{mode}"})
    started = time.monotonic()
    runs = run_program(Program(code, problem.mode, problem.inputs, problem.func_name), limits,
                       keep_going=lambda index, run: True, work_root=str(work_root), isolation=isolation)
    assert time.monotonic() - started < 20, "the scorer took too long"
    return judge(problem, runs)[0], runs


# -- the scorer never reads what the program planted -----------------------------------------------------------

PLANT = """\
import os, sys
targets = {targets!r}
names = [f"{{kind}}_{{i}}" for kind in ("in", "out", "err", "ret") for i in range(3)] + ["job.json", "program.py"]
for directory in (os.getcwd(), os.environ.get("TMPDIR", "."), os.path.dirname(os.getcwd())):
    for number, name in enumerate(names):
        path = os.path.join(directory, name)
        try:
            os.unlink(path)
        except OSError:
            pass
        try:
            if {fifo}:
                os.mkfifo(path)
            else:
                os.symlink(targets[number % len(targets)], path)
        except OSError:
            pass
raise SystemExit("planted")
"""


@pytest.mark.parametrize("mode", ["stdin", "functional"])
@pytest.mark.parametrize("fifo", [False, True], ids=["symlinks", "fifos"])
def test_planted_symlinks_and_fifos_are_never_read(mode, fifo, isolation, area, work_root):
    secret = area / "root-only.txt"
    token = f"TOPSECRET-{uuid.uuid4().hex}"
    secret.write_text(token * 10)
    os.chmod(secret, 0o600)
    code = PLANT.format(targets=[str(secret), "/dev/zero", "/dev/urandom"], fifo=fifo)
    if mode == "functional":
        code += "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    outcome, runs = run_sum(code, work_root, isolation=isolation, mode=mode)
    assert outcome != "passed"
    assert all(token not in (r.output or "") + r.detail for r in runs)
    assert all(len(r.output or "") <= SMALL.output_bytes and len(r.detail) < 2000 for r in runs)


def test_failure_detail_of_a_scored_run_holds_no_planted_file(area):
    secret = area / "root-only.txt"
    token = f"TOPSECRET-{uuid.uuid4().hex}"
    secret.write_text(token)
    os.chmod(secret, 0o600)
    code = PLANT.format(targets=[str(secret)], fifo=False)
    task = make_task("livecode_v5", {"test_timeout_seconds": 2.0, "start_date": None, "end_date": None})
    tests = [{"input": i, "output": o, "testtype": "stdin"} for i, o in zip(SUM_INPUTS, SUM_OUTPUTS)]
    item = {"question_id": "sum", "public_test_cases": json.dumps(tests), "private_test_cases": "[]",
            "metadata": "{}", "difficulty": "easy", "platform": "atcoder"}
    answer = f"```python\n{code}```"
    row = task.score(Prediction(id="sum", prompt="", item=item, completions=[
        Completion(text=answer, answer=answer, reasoning=None, finish_reason="stop")]))
    assert row["outcomes"] == ["runtime_error"] and token not in json.dumps(row)
    assert task.aggregate([row])["sandbox"] == STRONGEST.describe()


def test_huge_sparse_stdout_is_an_output_limit(isolation, work_root):
    outcome, runs = run_sum("import os\nos.ftruncate(1, 1 << 40)\nprint(4600)\n", work_root, isolation=isolation)
    assert outcome == "output_limit" and runs[0].output == ""


def test_forged_reports_on_every_descriptor_are_not_read(isolation, work_root):
    forged = json.dumps({"test": 0, "status": "ok", "seconds": 0, "output_bytes": 5, "stderr_bytes": 0}) + "\n4600\n"
    code = ("import os\nfor fd in range(3, 256):\n    try:\n        os.write(fd, %r.encode())\n    except OSError:\n"
            "        pass\nfor entry in set(os.listdir('/proc')) - {'self', 'thread-self', os.readlink('/proc/self')}:\n"
            "    for fd in range(16):\n        try:\n"
            "            with open(f'/proc/{entry}/fd/{fd}', 'w') as f:\n                f.write(%r)\n"
            "        except (OSError, ValueError):\n            pass\nprint(0)\n" % (forged, forged))
    outcome, runs = run_sum(code, work_root, isolation=isolation)
    assert outcome == "wrong_answer" and [r.output for r in runs] == ["0\n", "0\n"]


# -- limits on the whole program tree ----------------------------------------------------------------------------

FORKED_LIMITS = Limits(test_timeout_s=8.0, memory_bytes=256 << 20, output_bytes=1 << 20, processes=32)
FORKED_MEMORY = """\
import os, time
children = []
for _ in range(5):
    pid = os.fork()
    if pid == 0:
        block = bytearray(180 << 20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        time.sleep(1.0)
        os._exit(0)
    children.append(pid)
held = sum(os.waitpid(pid, 0)[1] == 0 for pid in children)
print(held)
"""


@REQUIRES_CGROUP
def test_memory_of_forked_children_counts_together(work_root):
    """Five children of 180 MiB each are under the 256 MiB per-process limit, but not together."""
    outcome, runs = run_sum(FORKED_MEMORY, work_root, FORKED_LIMITS)
    assert outcome == "memory_limit" and runs[0].status == "memory_limit"


def test_forked_memory_on_the_fallback_is_bounded_per_process_only(work_root):
    """What the fallback cannot do, stated: each child stays under RLIMIT_AS, so all five hold their 180 MiB."""
    fallback = sandbox_isolation(FALLBACK)
    outcome, runs = run_sum(FORKED_MEMORY, work_root, FORKED_LIMITS, isolation=fallback)
    assert fallback.describe()["memory"] == "RLIMIT_AS per process"
    assert outcome == "wrong_answer" and runs[0].output == "5\n"


@REQUIRES_CGROUP
def test_memfd_pages_count_against_the_memory_limit(work_root):
    code = ("import os\nfiles = []\nfor _ in range(16):\n    fd = os.memfd_create('x')\n"
            "    for _ in range(4):\n        os.write(fd, b'x' * (16 << 20))\n    files.append(fd)\n"
            "print(len(files))\n")
    limits = Limits(test_timeout_s=5.0, memory_bytes=256 << 20, output_bytes=(64 << 20) + 1, processes=32)
    outcome, runs = run_sum(code, work_root, limits)
    assert outcome == "memory_limit" and runs[0].status == "memory_limit"


@REQUIRES_PRIVATE_ROOT
def test_disk_is_bounded_for_all_files_together(work_root):
    code = ("import os\nwritten = 0\nfor directory in ('.', '/tmp'):\n    for i in range(64):\n        try:\n"
            "            with open(os.path.join(directory, f'{directory[-1]}{i}'), 'wb') as f:\n"
            "                f.write(b'x' * (1 << 20))\n            written += 1\n        except OSError:\n"
            "            break\nprint(written)\n")
    _, runs = run_sum(code, work_root, Limits(test_timeout_s=5.0, output_bytes=2 << 20, disk_bytes=16 << 20))
    assert runs[0].status == "ok" and 8 <= int(runs[0].output) <= 16


@REQUIRES_CGROUP
def test_process_count_covers_the_whole_tree(work_root):
    """Every process forks as many children as it can: the tree as a whole stays under the limit."""
    code = ("import os, time\nfirst = os.getpid()\nr, w = os.pipe()\nfor _ in range(7):\n    try:\n"
            "        if os.fork() == 0:\n            os.write(w, b'x')\n    except OSError:\n        pass\n"
            "if os.getpid() != first:\n    time.sleep(2)\n    os._exit(0)\ntime.sleep(1)\nos.close(w)\n"
            "print(len(os.read(r, 1 << 16)))\n")
    _, runs = run_sum(code, work_root, Limits(test_timeout_s=5.0, memory_bytes=1 << 30, processes=24))
    assert runs[0].status == "ok" and 0 < int(runs[0].output) < 24


# -- what a program can see of the host --------------------------------------------------------------------------

@REQUIRES_PRIVATE_ROOT
def test_host_unix_sockets_are_out_of_reach(area, work_root):
    path = area / "host.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(1)
    server.settimeout(0.5)
    code = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({str(path)!r})\n"
            "    s.sendall(b'leak')\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n")
    outcome, runs = run_sum(code, work_root)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()
    assert runs[0].output == "refused 2\n"


@REQUIRES_PRIVATE_ROOT
def test_host_processes_and_files_are_invisible(work_root):
    marker = f"4243.{os.getpid()}"
    sleeper = subprocess.Popen(["/bin/sleep", marker])
    try:
        code = ("import os\npids = [e for e in os.listdir('/proc') if e.isdigit()]\n"
                "lines = [open(f'/proc/{p}/cmdline', 'rb').read().decode(errors='replace') for p in pids]\n"
                f"print(len(pids), any({marker!r} in line for line in lines))\n"
                "print([p for p in ('/root/.bashrc', '/home', '/work/main', '/sys', '/etc/passwd', '/var')\n"
                "       if os.path.exists(p)])\n"
                "for act in (lambda: open('/usr/lowbit-test', 'w'), lambda: os.mkdir('/evil'),\n"
                "            lambda: os.setuid(0)):\n"
                "    try:\n        act()\n        print('allowed')\n    except OSError as e:\n        print('denied')\n")
        outcome, runs = run_sum(code, work_root)
    finally:
        sleeper.kill()
        sleeper.wait()
    processes, found = runs[0].output.splitlines()[0].split()
    assert int(processes) <= 3 and found == "False"  # the harness and this test's process
    assert runs[0].output.splitlines()[1:] == ["[]", "denied", "denied", "denied"]


# -- which mechanisms are in use, and the fallbacks ----------------------------------------------------------------

def test_fallback_is_described_and_keeps_the_per_process_limits(work_root):
    fallback = sandbox_isolation(FALLBACK)
    described = fallback.describe()
    assert described["unavailable"]["private_root"] == "left out on request"
    assert fallback.cgroups is None and described["processes"] == "RLIMIT_NPROC"
    assert run_sum("a, b = map(int, input().split())\nprint(a + b)\n", work_root, isolation=fallback)[0] == "passed"
    outcome, _ = run_sum("x = bytearray(400 << 20)\n", work_root, isolation=fallback)
    assert outcome == "memory_limit"


@REQUIRES_CGROUP
def test_strongest_isolation_uses_every_mechanism_here():
    described = STRONGEST.describe()
    assert described["isolation"] == "private_root" and described["namespaces"] == ["mount", "pid", "net"]
    assert described["memory"].startswith(f"cgroup {STRONGEST.cgroups.version}")
    assert described["unavailable"] == {}


def test_unknown_mechanisms_are_refused():
    with pytest.raises(ValueError, match="unknown sandbox mechanisms"):
        sandbox_isolation(frozenset({"seccomp"}))


def test_directory_and_cgroups_are_removed_when_scoring_fails_midway(work_root):
    def fail(index, run):
        raise RuntimeError("the scorer failed")

    program = Program("import os\nopen('kept', 'w').write('x')\nprint(1)\n", "stdin", ["\n", "\n"])
    with pytest.raises(RuntimeError, match="the scorer failed"):
        run_program(program, SMALL, keep_going=fail, work_root=str(work_root))


def test_a_directory_tree_deeper_than_python_recursion_is_removed(isolation, work_root):
    code = "import os\nfor _ in range(1500):\n    os.mkdir('d')\n    os.chdir('d')\nprint(4600)\n"
    limits = Limits(test_timeout_s=10.0, memory_bytes=256 << 20, output_bytes=1 << 20, processes=32)
    outcome, runs = run_sum(code, work_root, limits, isolation=isolation)
    assert runs[0].status == "ok" and runs[0].output == "4600\n"  # the tree was built; work_root checks it is gone
