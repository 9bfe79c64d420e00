"""Throughput and overhead of the LiveCodeBench sandbox on this machine.

    PYTHONPATH=src python perf/lcb_sandbox_bench.py [--repeats 3] [--copies 4]

1. Test executions per second: the correct solutions of the 20 fixture problems (tests/fixtures/livecodebench:
   10 stdin, 10 functional, 3 to 5 tests each, small and large inputs), `--copies` copies of each, through
   `run_programs` with one worker per core, as scoring runs them.
2. Overhead over a bare subprocess, for a trivial stdin program (A+B) with T tests:
   - bare: `subprocess.run([python, -c, code])` once per test, no limits, no isolation (what a minimal
     evaluator does);
   - sandbox: one sandboxed program running the T tests (one harness start, one fork per test).
   Reported: the sandbox's start-up cost per program (T = 1), its incremental cost per test (slope over T),
   and the bare subprocess's cost per test, each the median of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from lowbit.tasks.livecodebench import continue_while_passing, judge, problem_of
from lowbit.tasks.livecodebench.sandbox import Limits, Program, run_program, run_programs, sandbox_isolation

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "livecodebench"
SUM = "a, b = map(int, input().split())\nprint(a + b)\n"


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


def sandbox_seconds(tests: int) -> float:
    inputs = [f"{i} {i + 1}\n" for i in range(tests)]
    started = time.perf_counter()
    runs = run_program(Program(SUM, "stdin", inputs), Limits(), keep_going=lambda index, run: True)
    assert len(runs) == tests and all(r.status == "ok" for r in runs)
    return time.perf_counter() - started


def bare_seconds(tests: int, python: str) -> float:
    started = time.perf_counter()
    for i in range(tests):
        out = subprocess.run([python, "-c", SUM], input=f"{i} {i + 1}\n", capture_output=True, text=True).stdout
        assert out == f"{2 * i + 1}\n"
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--copies", type=int, default=4, help="copies of each fixture solution in the batch")
    args = parser.parse_args()
    isolation = sandbox_isolation()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"sandbox: {isolation.name}, programs run by {isolation.python}, euid {os.geteuid()}")

    runs = [throughput(args.copies) for _ in range(args.repeats)]
    best = max(runs, key=lambda r: r["tests_per_second"])
    print(f"throughput: {best['tests']} tests of {best['programs']} programs in {best['seconds']} s = "
          f"{best['tests_per_second']} tests/s, {best['programs_per_second']} programs/s "
          f"(best of {args.repeats}; all: {[r['tests_per_second'] for r in runs]}); time inside tests "
          f"{best['cpu_seconds_in_tests']} s")

    counts = (1, 21)
    sandbox = {t: statistics.median(sandbox_seconds(t) for _ in range(args.repeats)) for t in counts}
    bare = {t: statistics.median(bare_seconds(t, isolation.python) for _ in range(args.repeats)) for t in counts}
    startup = sandbox[1]
    per_test = (sandbox[21] - sandbox[1]) / 20
    bare_per_test = (bare[21] - bare[1]) / 20
    print(f"sandbox: {startup * 1000:.1f} ms for a program with 1 test (start-up), then {per_test * 1000:.2f} ms "
          f"per further test; {sandbox[21] * 1000:.1f} ms for 21 tests")
    print(f"bare subprocess per test: {bare[1] * 1000:.1f} ms for 1 test, {bare_per_test * 1000:.2f} ms per further "
          f"test; {bare[21] * 1000:.1f} ms for 21 tests")
    print(f"overhead: start-up {(startup - bare[1]) * 1000:+.1f} ms per program over one bare subprocess; per test "
          f"{(per_test - bare_per_test) * 1000:+.2f} ms ({per_test / bare_per_test:.2f}x a bare subprocess per test)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
