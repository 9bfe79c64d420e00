"""The LiveCodeBench sandbox, for real: limits on benign programs first, then the fixture problems' known
solutions, then hostile programs. Every hostile program must be scored failing, leave no process behind and
touch no file outside its temporary directory."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from lcb_sandbox_support import area, capped_process_tree  # noqa: F401 - fixtures; the cap is autouse

from lowbit.records import Completion, Prediction
from lowbit.tasks import make_task
from lowbit.tasks.livecodebench import continue_while_passing, judge, problem_of
from lowbit.tasks.livecodebench.sandbox import Limits, Program, run_program, run_programs, sandbox_isolation

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "livecodebench"
TIGHT = Limits(test_timeout_s=1.0, memory_bytes=512 << 20, output_bytes=1 << 20, processes=32)
# A+B with answers that appear nowhere in the inputs: a program can only print them by computing them.
SUM_INPUTS, SUM_OUTPUTS = ("1200 3400\n", "1357 12222\n"), ("4600\n", "13579\n")
REQUIRES_NAMESPACES = pytest.mark.skipif(not sandbox_isolation().namespaces,
                                         reason="unshare cannot create user/net/pid namespaces here")


@functools.lru_cache(maxsize=1)
def landlocked() -> bool:
    runs = run_program(Program("print(1)\n", "stdin", ["\n"]), TIGHT)
    return runs[0].landlocked


def run_sum(code: str, work_root: Path, limits: Limits = TIGHT, isolation=None):
    """Run `code` on the A+B tests (with the strongest isolation here, or `isolation`); returns (outcome, runs)."""
    problem = problem_of({"public_test_cases": json.dumps([{"input": i, "output": o, "testtype": "stdin"}
                                                            for i, o in zip(SUM_INPUTS, SUM_OUTPUTS)]),
                          "private_test_cases": "[]", "metadata": "{}", "question_id": "sum"})
    runs = run_program(Program(code, "stdin", problem.inputs), limits,
                       keep_going=lambda index, run: run.status == "ok" and run.output == SUM_OUTPUTS[index],
                       work_root=str(work_root), isolation=isolation)
    return judge(problem, runs)[0], runs


def sandbox_processes(marker: str) -> list[str]:
    """Processes whose command line mentions `marker` (a sandbox's work root, or a hostile program's token)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(f"{entry}: {cmdline[:120]}")
    return found


@pytest.fixture
def work_root(area):
    root = area / "sandboxes"
    root.mkdir(mode=0o755)
    yield root
    time.sleep(0.05)
    assert sandbox_processes(str(root)) == [], "a sandboxed process outlived its program"
    assert list(root.iterdir()) == [], "a sandbox directory was left behind"


# -- benign programs: the limits themselves ------------------------------------------------------------------

def test_correct_program_passes_and_runs_each_test_in_a_fresh_process(work_root):
    code = "import os\na, b = map(int, input().split())\nprint(a + b)\nopen('state', 'a').write('x')\n"
    outcome, runs = run_sum(code, work_root)
    assert outcome == "passed" and [r.output for r in runs] == list(SUM_OUTPUTS)


def test_process_limit_bounds_forks(work_root):
    code = ("import os, time\nn = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n    except OSError:\n"
            "        break\n    if pid == 0:\n        time.sleep(30)\n        os._exit(0)\n    n += 1\nprint(n)\n")
    _, runs = run_sum(code, work_root, Limits(test_timeout_s=3.0, processes=16))
    assert runs[0].status == "ok" and 0 < int(runs[0].output) < 16


def test_time_memory_and_output_limits_on_benign_programs(work_root):
    assert run_sum("import time\ntime.sleep(3)\n", work_root)[0] == "time_limit"
    assert run_sum("x = bytearray(800 << 20)\n", work_root)[0] == "memory_limit"
    assert run_sum("print('y' * (2 << 20))\n", work_root)[0] == "output_limit"
    assert run_sum("print(1 +\n", work_root)[0] == "compile_error"
    assert run_sum("raise ValueError('no')\n", work_root)[0] == "runtime_error"


def test_clean_environment_and_private_directory(work_root):
    code = "import os\nprint(sorted(os.environ))\nprint(os.getcwd())\n"
    _, runs = run_sum(code, work_root)
    names, cwd = runs[0].output.splitlines()
    assert eval(names) == ["HOME", "LANG", "PATH", "PYTHONHASHSEED", "PYTHONIOENCODING", "TMPDIR"]  # noqa: S307
    if sandbox_isolation().mode == "private_root":
        assert cwd == "/work"  # a private tmpfs; the host directory is only its mount point
    else:
        assert cwd.startswith(str(work_root))


# -- the fixture problems: known solutions score as expected ------------------------------------------------

def test_fixture_solutions_score_as_expected(work_root):
    records = [json.loads(line) for line in (FIXTURES / "problems.jsonl").read_text().splitlines()]
    solutions = json.loads((FIXTURES / "solutions.json").read_text())
    assert sum(r["platform"] == "leetcode" for r in records) >= 10 and sum(r["starter_code"] == "" for r in records) >= 10
    expected = {"correct": "passed", "wrong": "wrong_answer", "slow": "time_limit", "crash": "runtime_error"}
    jobs = [(r["question_id"], kind, problem_of(r)) for r in records for kind in expected]
    programs = [Program(solutions[qid][kind], p.mode, p.inputs, p.func_name) for qid, kind, p in jobs]
    limits = Limits(test_timeout_s=0.75)
    results = run_programs(programs, limits, [continue_while_passing(p) for _, _, p in jobs], work_root=str(work_root))
    got = {(qid, kind): judge(p, runs)[0] for (qid, kind, p), runs in zip(jobs, results)}
    assert got == {(qid, kind): expected[kind] for qid, kind, _ in jobs}


def test_task_scores_predictions_end_to_end():
    task = make_task("livecode_v5", {"test_timeout_seconds": 2.0, "start_date": None, "end_date": None})
    samples = {s.id: s for s in task.load(str(FIXTURES))}
    solutions = json.loads((FIXTURES / "solutions.json").read_text())
    answers = [f"Here it is.\n```python\n{solutions['9002']['correct']}```\n",
               f"```python\n{solutions['9002']['wrong']}```", "I cannot solve this."]
    prediction = Prediction(id="9002", prompt="", item=samples["9002"].item, completions=[
        Completion(text=a, answer=a, reasoning=None, finish_reason="stop") for a in answers])
    row = task.score(prediction)
    assert row["outcomes"] == ["passed", "wrong_answer", "no_code"] and row["scores"] == [1.0, 0.0, 0.0]
    metrics = task.aggregate([row])["metrics"]
    assert metrics["pass@1"]["value"] == pytest.approx(1 / 3) and metrics["pass@3"]["value"] == 1.0
    assert metrics["outcomes"]["passed"] == 1 and metrics["outcomes"]["no_code"] == 1


# -- hostile programs ----------------------------------------------------------------------------------------

HOSTILE = {
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory_bomb": "chunks = []\nwhile True:\n    chunks.append(bytearray(50 << 20))\n",
    "infinite_loop": "while True:\n    pass\n",
    "busy_threads": ("import threading\ndef spin():\n    while True:\n        pass\n"
                     "for _ in range(8):\n    threading.Thread(target=spin, daemon=True).start()\nspin()\n"),
    "stdout_flood": "import sys\nwhile True:\n    sys.stdout.write('flood' * 1000)\n",
    "deep_recursion": "import sys\nsys.setrecursionlimit(10 ** 8)\ndef f(n):\n    return f(n + 1) + 1\nprint(f(0))\n",
    "exit_zero_silently": "import os\nos._exit(0)\n",
    "close_stdout": "import os\nos.close(1)\na, b = map(int, input().split())\nprint(a + b)\n",
    "redirect_stdout": "import sys\nsys.stdout = open('/dev/null', 'w')\na, b = map(int, input().split())\nprint(a + b)\n",
    "print_other_tests_output": "print(4600)\n",
    "sleep_past_limit": "import time\ntime.sleep(60)\n",
    "kill_parent": "import os, signal\nfor sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):\n"
                   "    try:\n        os.kill(os.getppid(), sig)\n    except OSError:\n        pass\nprint(0)\n",
    "kill_process_group": "import os, signal\nos.killpg(0, signal.SIGKILL)\n",
    "detached_grandchild": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                            "        os.execv('/bin/sleep', ['sleep', '4242.5'])\n    os._exit(0)\ntime.sleep(0.2)\nprint(0)\n"),
    "read_expected_outputs": ("import os\nfor top in ('.', '..', os.environ.get('HOME', '.')):\n"
                              "    for root, _, files in os.walk(top):\n        for name in files:\n"
                              "            try:\n                print(open(os.path.join(root, name), errors='replace').read()[:2000])\n"
                              "            except OSError:\n                pass\n"),
}


@REQUIRES_NAMESPACES
@pytest.mark.parametrize("without", [frozenset(), frozenset({"private_root", "cgroup"})], ids=["strongest", "fallback"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_program_fails_and_leaves_nothing_behind(name, without, work_root):
    """On the strongest isolation here and on the user-namespace fallback (the same where that is the strongest)."""
    started = time.monotonic()
    outcome, runs = run_sum(HOSTILE[name], work_root, isolation=sandbox_isolation(without))
    assert outcome != "passed", runs
    assert all("13579" not in (r.output or "") for r in runs), "the program saw an expected output"
    assert time.monotonic() - started < 10
    assert sandbox_processes("4242.5") == []


@REQUIRES_NAMESPACES
def test_network_is_unreachable(work_root):
    """TCP is refused by Landlock where the kernel has it; UDP (which Landlock does not cover) and TCP without
    Landlock find only a downed loopback in the program's network namespace."""
    server, datagrams = socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(3)
    datagrams.bind(("127.0.0.1", 0))
    datagrams.settimeout(0.5)
    accepted = []
    threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True).start()
    code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), timeout=1)"
            ".sendall(b'leak')\nexcept OSError as e:\n    print('tcp', e.errno)\n"
            f"socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'leak', ('127.0.0.1', {datagrams.getsockname()[1]}))\n"
            "print(4600)\n")
    outcome, runs = run_sum(code, work_root)
    time.sleep(0.2)
    server.close()
    with pytest.raises(OSError):
        datagrams.recvfrom(16)
    datagrams.close()
    assert outcome == "runtime_error" and "Network is unreachable" in runs[0].detail
    assert runs[0].output.startswith("tcp ") and accepted in ([], [None])


def _accept(server: socket.socket):
    try:
        return server.accept()
    except OSError:
        return None


def test_files_outside_its_directory_cannot_be_written_or_deleted(area, work_root):
    if os.geteuid() != 0 and not landlocked():
        pytest.skip("no Landlock, and programs run as this user (not nobody): they can write what it can write")
    canary = area / "canary.txt"
    canary.write_text("keep")
    os.chmod(canary, 0o644)
    target = area / "planted.txt"
    code = (f"import os\nfor act in (lambda: open({str(target)!r}, 'w').write('x'), lambda: os.remove({str(canary)!r}),"
            f" lambda: os.rename({str(canary)!r}, {str(canary)!r} + '.moved')):\n    try:\n        act()\n"
            "    except OSError:\n        pass\nprint(0)\n")
    outcome, _ = run_sum(code, work_root)
    assert outcome == "wrong_answer"
    assert canary.read_text() == "keep" and not target.exists()
    assert sorted(p.name for p in area.iterdir()) == ["canary.txt", "sandboxes"]


def test_files_outside_its_directory_cannot_be_read(area, work_root):
    if not landlocked():
        pytest.skip("the kernel has no Landlock: programs can read what the sandbox user can read")
    secret = area / "expected_outputs.jsonl"
    secret.write_text("13579\n")
    os.chmod(secret, 0o644)
    fixture = FIXTURES / "problems.jsonl"
    code = (f"for path in ({str(secret)!r}, {str(fixture)!r}):\n    try:\n"
            "        print(open(path).read()[:100])\n    except OSError as e:\n        print('denied', e.errno)\n")
    outcome, runs = run_sum(code, work_root)
    # EACCES from Landlock; ENOENT in a private root, where the host's files do not exist at all
    expected = "denied 2" if sandbox_isolation().mode == "private_root" else "denied 13"
    assert outcome == "wrong_answer" and runs[0].output.splitlines() == [expected, expected]


def test_problem_time_limit_stops_a_program_whose_tests_are_each_within_theirs(work_root):
    limits = Limits(test_timeout_s=1.0, problem_timeout_s=1.2)
    code = "import time\ntime.sleep(0.7)\na, b = map(int, input().split())\nprint(a + b)\n"
    started = time.monotonic()
    outcome, runs = run_sum(code, work_root, limits)
    assert outcome == "time_limit" and runs[0].status == "ok" and runs[-1].detail == "problem time limit"
    assert time.monotonic() - started < 2.5
