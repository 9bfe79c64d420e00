"""Throughput and overhead of the LiveCodeBench sandbox on this machine.

    PYTHONPATH=src python perf/lcb_sandbox_bench.py [--repeats 3] [--copies 4] [--baseline OLD/src]

1. Test executions per second: the correct solutions of the 20 fixture problems (tests/fixtures/livecodebench:
   10 stdin, 10 functional, 3 to 5 tests each, small and large inputs), `--copies` copies of each, through
   `run_programs` with one worker per core, as scoring runs them, with the strongest isolation available.
2. Overhead over a bare subprocess, for a trivial stdin program (A+B) with T tests, for each isolation level
   this machine offers (private root with cgroups, private root alone, user/pid/net namespaces, plain session;
   levels that resolve to the same isolation are measured once), the levels measured in turns in each round:
   - bare: `subprocess.run([python, -c, code])` once per test, no limits, no isolation (what a minimal
     evaluator does);
   - sandbox: one sandboxed program running the T tests (one harness start, one fork per test).
   - baseline (with `--baseline`): the sandbox of another lowbit source tree, e.g. a commit before a change.
   Reported: the sandbox's start-up cost per program (T = 1), its incremental cost per test (slope over T),
   and the bare subprocess's cost per test, each the median of `--repeats` rounds (and the fastest round's
   start-up); every row is measured in each round, so load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lowbit.tasks.livecodebench import continue_while_passing, judge, problem_of
from lowbit.tasks.livecodebench.sandbox import Isolation, Limits, Program, run_program, run_programs, sandbox_isolation

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "livecodebench"
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"
LEVELS = {"private root + cgroup": frozenset(), "private root": frozenset({"cgroup"}),
          "namespaces": frozenset({"private_root", "cgroup"}),
          "session": frozenset({"private_root", "cgroup", "namespaces"})}


def throughput(copies: int) -> dict:
    records = [json.loads(line) for line in (FIXTURES / "problems.jsonl").read_text().splitlines()]
    solutions = json.loads((FIXTURES / "solutions.json").read_text())
    problems = [problem_of(r) for r in records] * copies
    codes = [solutions[r["question_id"]]["correct"] for r in records] * copies
    programs = [Program(c, p.mode, p.inputs, p.func_name) for c, p in zip(codes, problems)]
    started = time.perf_counter()
    results = run_programs(programs, Limits(), [continue_while_passing(p) for p in problems])
    seconds = time.perf_counter() - started
    assert all(judge(p, runs)[0] == "passed" for p, runs in zip(problems, results))
    tests = sum(len(runs) for runs in results)
    return {"programs": len(programs), "tests": tests, "seconds": round(seconds, 3),
            "tests_per_second": round(tests / seconds, 1), "programs_per_second": round(len(programs) / seconds, 2),
            "cpu_seconds_in_tests": round(sum(r.seconds for runs in results for r in runs), 3)}


def sandbox_seconds(tests: int, isolation: Isolation) -> float:
    inputs = [f"{i} {i + 1}\n" for i in range(tests)]
    started = time.perf_counter()
    runs = run_program(Program(SUM, "stdin", inputs), Limits(), keep_going=lambda index, run: True,
                       isolation=isolation)
    assert len(runs) == tests and all(r.status == "ok" for r in runs)
    return time.perf_counter() - started


def baseline_seconds(tests: int, sandbox) -> float:
    """The same program through another lowbit's sandbox module (its own Program, Limits and run_program)."""
    inputs = [f"{i} {i + 1}\n" for i in range(tests)]
    started = time.perf_counter()
    runs = sandbox.run_program(sandbox.Program(SUM, "stdin", inputs), sandbox.Limits(),
                               keep_going=lambda index, run: True)
    assert len(runs) == tests and all(r.status == "ok" for r in runs)
    return time.perf_counter() - started


def load_baseline(src: Path):
    """The sandbox module of another lowbit source tree (one that imports only the standard library)."""
    path = src / "lowbit" / "tasks" / "livecodebench" / "sandbox.py"
    spec = importlib.util.spec_from_file_location("lowbit_baseline_sandbox", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    module.sandbox_isolation()  # its probe, once, outside the rounds
    return module


def bare_seconds(tests: int, python: str) -> float:
    started = time.perf_counter()
    for i in range(tests):
        out = subprocess.run([python, "-c", SUM], input=f"{i} {i + 1}\n", capture_output=True, text=True).stdout
        assert out == f"{2 * i + 1}\n"
    return time.perf_counter() - started


def levels() -> dict[str, Isolation]:
    """Each isolation level this machine offers, strongest first, named; duplicates dropped. The strongest is
    also measured with the scorer's own interpreter when it is not the one chosen (usually the system's)."""
    found: dict[str, Isolation] = {}
    for name, without in LEVELS.items():
        isolation = sandbox_isolation(without)
        if all((isolation.mode, isolation.cgroups) != (seen.mode, seen.cgroups) for seen in found.values()):
            found[name] = isolation
    own = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    strongest = next(iter(found.values()))
    if os.path.realpath(strongest.python) != own and strongest.mode == "private_root":
        found[f"{next(iter(found))}, scorer's python"] = dataclasses.replace(strongest, python=own)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=4, help="copies of each fixture solution in the batch")
    parser.add_argument("--baseline", type=Path, help="the src/ folder of another lowbit (e.g. `git archive REV src "
                        "| tar -x -C DIR`): its sandbox is measured in the same rounds")
    args = parser.parse_args()
    isolations = levels()
    strongest = sandbox_isolation()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, euid "
          f"{os.geteuid()}, load average {os.getloadavg()[0]:.2f}; strongest sandbox: {strongest.describe()}")

    runs = [throughput(args.copies) for _ in range(args.repeats)]
    best = max(runs, key=lambda r: r["tests_per_second"])
    print(f"throughput: {best['tests']} tests of {best['programs']} programs in {best['seconds']} s = "
          f"{best['tests_per_second']} tests/s, {best['programs_per_second']} programs/s "
          f"(best of {args.repeats}; all: {[r['tests_per_second'] for r in runs]}); time inside tests "
          f"{best['cpu_seconds_in_tests']} s")

    rows = {name: (isolation.python, functools.partial(sandbox_seconds, isolation=isolation))
            for name, isolation in isolations.items()}
    if args.baseline:
        baseline = load_baseline(args.baseline)
        rows[f"baseline ({args.baseline})"] = ("its choice", functools.partial(baseline_seconds, sandbox=baseline))
    rows["bare subprocess per test"] = (strongest.python, lambda tests: bare_seconds(tests, strongest.python))
    counts = (1, 21)
    samples: dict[tuple[str, int], list[float]] = {(name, t): [] for name in rows for t in counts}
    for _ in range(args.repeats):  # every row in each round, so load changes hit all rows alike
        for name, (_, measure) in rows.items():
            for t in counts:
                samples[name, t].append(measure(t))
    bare_one = statistics.median(samples["bare subprocess per test", 1])
    print(f"medians of {args.repeats} rounds; load average now {os.getloadavg()[0]:.2f}")
    print("| isolation | python | start-up per program (fastest round) | per further test | 21 tests | start-up "
          "over one bare subprocess |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (python, _) in rows.items():
        one, many = (statistics.median(samples[name, t]) for t in counts)
        print(f"| {name} | {python} | {one * 1000:.1f} ms ({min(samples[name, 1]) * 1000:.1f}) | "
              f"{(many - one) / 20 * 1000:.2f} ms | {many * 1000:.1f} ms | {(one - bare_one) * 1000:+.1f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
