"""LiveCodeBench code generation (Jain et al., arXiv:2403.07974): competitive-programming problems from LeetCode,
AtCoder and Codeforces, scored by running the generated program on each problem's public and private tests.

Data (lowbit.tasks.livecodebench.data): release v5 of `livecodebench/code_generation_lite` read from its jsonl
files, keeping contests from `dataset.start_date` to `dataset.end_date` inclusive (default 2024-10-01 ..
2025-02-01), or `data_dir` with jsonl files in the same schema. Sample ids are question_id. Each sample's item is
the source record, tests still encoded as published, so `lowbit score` needs nothing but the run directory.

Prompts (lowbit.tasks.livecodebench.prompts, `dataset.prompt`): the reference study's per model family and
sampling block (default), or lowbit's lighteval / QwQ wording; both with the starter code when there is one.
The program is the last fenced python block of the answer text (after the reasoning split); no block is a parse
failure.

Execution (lowbit.tasks.livecodebench.sandbox): every program runs in its own sandbox on the public then the
private tests, stopping at the first failing test as the official evaluator does; stdin problems compare stdout,
functional problems the return value of Solution().<func_name>(*args) (lowbit.tasks.livecodebench.compare). The
programs of a batch run in parallel, one per core. A completion's outcome is that of its first failing test
(wrong_answer, time_limit, runtime_error, compile_error, memory_limit, output_limit), no_code without a python
block, or passed; it scores 1 when passed. metrics.json's `sandbox` says how programs were confined on the
scoring machine and which mechanisms were unavailable there (lowbit.tasks.livecodebench.isolation).

Metrics: pass@1 (the headline; = accuracy = avg@n) and unbiased pass@k for every k <= n with 95% intervals
(lowbit.tasks.base.sampled_accuracy_metrics), the same per difficulty and per platform, and completion counts of
each outcome.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.metrics.pass_at_k import pass_at_k
from lowbit.metrics.stats import problem_mean_estimate
from lowbit.records import Prediction, Sample
from lowbit.tasks.base import Task, sampled_accuracy_metrics, score_row
from lowbit.tasks.livecodebench import data
from lowbit.tasks.livecodebench.compare import return_value_matches, stdout_matches
from lowbit.tasks.livecodebench.prompts import PROMPTS, extract_code
from lowbit.tasks.livecodebench.sandbox import OUTCOMES, Limits, Program, TestRun, run_programs, sandbox_isolation
from lowbit.tasks.prompts import REFERENCE

GROUPS = ("difficulty", "platform")


@dataclass
class LiveCodeBenchOptions:
    release: str = "release_v5"
    start_date: str | None = "2024-10-01"  # contest dates kept, inclusive (ISO dates; None: unbounded)
    end_date: str | None = "2025-02-01"
    hub_id: str = data.HUB_ID
    test_timeout_seconds: float = 6.0  # per test, as the official evaluator
    problem_timeout_seconds: float | None = None  # per program; None: (per test + 1) * tests + 5
    memory_mb: int = 4096  # memory of a program's processes together (each one's address space without a cgroup)
    output_mb: int = 64  # stdout cap
    disk_mb: int = 256  # size of a program's private working directory
    workers: int = 0  # programs run at once; 0: one per CPU core
    prompt: str = REFERENCE  # reference | lowbit (lowbit.tasks.prompts)


@dataclass(frozen=True)
class Problem:
    """What scoring needs of one record: how to call the program, and its tests (public, then private)."""

    mode: str
    func_name: str | None
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class LiveCodeBench(Task):
    name = "livecode_v5"
    version = "2"
    Options = LiveCodeBenchOptions
    prompt_profiles = PROMPTS
    non_prompt_options = frozenset({"test_timeout_seconds", "problem_timeout_seconds", "memory_mb", "output_mb",
                                    "disk_mb", "workers"})
    headline_metric = "pass@1"

    def __init__(self, options: LiveCodeBenchOptions):
        super().__init__(options)
        for key in ("start_date", "end_date"):
            value = getattr(options, key)
            try:
                date.fromisoformat(value) if value else None
            except ValueError as e:
                raise UsageError(f"dataset.{key} must be an ISO date like 2024-10-01, got {value!r}") from e
        if not options.test_timeout_seconds > 0:
            raise UsageError(f"dataset.test_timeout_seconds must be positive, got {options.test_timeout_seconds}")
        for key in ("memory_mb", "output_mb", "disk_mb"):
            value = getattr(options, key)
            if not isinstance(value, int) or value < 1:
                raise UsageError(f"dataset.{key} must be a positive whole number of MiB, got {value!r}")
        self.limits = Limits(test_timeout_s=options.test_timeout_seconds,
                             problem_timeout_s=options.problem_timeout_seconds,
                             memory_bytes=options.memory_mb << 20, output_bytes=options.output_mb << 20,
                             disk_bytes=options.disk_mb << 20)
        self.sandbox: dict[str, Any] | None = None  # how programs were confined, once they have run

    # -- data -------------------------------------------------------------------------------------------

    def load(self, data_dir: str | None) -> list[Sample]:
        records = data.read_local(Path(data_dir)) if data_dir else data.read_release(self.options.release,
                                                                                     self.options.hub_id)
        for number, record in enumerate(records, start=1):
            data.check_record(record, f"LiveCodeBench record {number}")
        kept = data.in_window(records, self.options.start_date, self.options.end_date)
        for record in kept:  # every test decodes (and every pickle is plain data) before a model is loaded
            problem_of(record, cached=False)
        samples = [Sample(id=str(r["question_id"]), messages=self.messages(r), item=dict(r)) for r in kept]
        if len({s.id for s in samples}) != len(samples):
            raise UsageError("LiveCodeBench data has repeated question_id values: sample ids must be unique")
        return samples

    # -- scoring ----------------------------------------------------------------------------------------

    def score(self, prediction: Prediction) -> dict[str, Any]:
        return self.score_many([prediction])[0]

    def score_many(self, predictions: list[Prediction]) -> list[dict[str, Any]]:
        """Score rows of several predictions, running all their programs in parallel."""
        jobs: list[tuple[int, int, Problem, Program]] = []
        codes = [[extract_code(c.answer) for c in p.completions] for p in predictions]
        problems = [problem_of(p.item) for p in predictions]
        for row, (problem, row_codes) in enumerate(zip(problems, codes)):
            for column, code in enumerate(row_codes):
                if code is not None:
                    jobs.append((row, column, problem, Program(code, problem.mode, problem.inputs, problem.func_name)))
        isolation = sandbox_isolation()
        self.sandbox = isolation.describe()
        results = run_programs([job[3] for job in jobs], self.limits, [continue_while_passing(job[2]) for job in jobs],
                               workers=self.options.workers or None, isolation=isolation)
        verdicts: dict[tuple[int, int], tuple[str, int, str]] = {}
        for (row, column, problem, _), runs in zip(jobs, results):
            verdicts[row, column] = judge(problem, runs)
        return [self._row(p, problems[i], codes[i], [verdicts.get((i, j)) for j in range(len(codes[i]))])
                for i, p in enumerate(predictions)]

    def _row(self, prediction: Prediction, problem: Problem, codes: list[str | None],
             verdicts: list[tuple[str, int, str] | None]) -> dict[str, Any]:
        outcomes = [v[0] if v else "no_code" for v in verdicts]
        item = prediction.item
        return {
            **score_row(prediction, [float(o == "passed") for o in outcomes],
                        difficulty=item.get("difficulty", "unknown"), platform=item.get("platform", "unknown")),
            "outcomes": outcomes,
            "tests_passed": [v[1] if v else 0 for v in verdicts],
            "tests": len(problem.inputs),
            "failure_detail": [v[2] if v else "" for v in verdicts],
            "extracted": codes,
            "parse_failed": [c is None for c in codes],
        }

    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        result = sampled_accuracy_metrics(rows, group_by=GROUPS)
        included = [r for r in rows if not r.get("excluded")]
        counts = Counter(o for r in included for o in r["outcomes"])
        result["metrics"]["outcomes"] = {o: counts.get(o, 0) for o in (*OUTCOMES, "no_code")}
        if self.sandbox is not None:
            result["sandbox"] = self.sandbox
        n_min = min((len(r["scores"]) for r in included), default=0)
        n_max = max((len(r["scores"]) for r in included), default=0)
        for key in GROUPS:  # pass@k for every k <= n within each difficulty and platform
            values: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for r in included:
                values[str(r[key])].append(r)
            result["groups"][f"{key}_pass@k"] = {
                group: {f"pass@{k}": problem_mean_estimate(
                    [pass_at_k(len(r["scores"]), round(sum(r["scores"])), k) for r in group_rows], n_max).to_json()
                    for k in range(1, n_min + 1)}
                for group, group_rows in sorted(values.items())}
        return result


def _decode_problem(public: str, private: str, metadata: str, where: str) -> Problem:
    tests = data.decode_tests(public, f"{where} public tests") + data.decode_tests(private, f"{where} private tests")
    name = data.func_name({"metadata": metadata})
    mode = "functional" if name or any(t.testtype == "functional" for t in tests) else "stdin"
    if mode == "functional" and not name:
        raise UsageError(f"{where}: functional tests but no func_name in its metadata")
    return Problem(mode, name, tuple(t.input for t in tests), tuple(t.output for t in tests))


_problem_cached = lru_cache(maxsize=64)(_decode_problem)


def problem_of(item: dict[str, Any], *, cached: bool = True) -> Problem:
    """The decoded tests and calling convention of a record (cached: n completions share one decode)."""
    def text(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    decode = _problem_cached if cached else _decode_problem
    return decode(text(item.get("public_test_cases") or "[]"), text(item.get("private_test_cases") or "[]"),
                  text(item.get("metadata") or "{}"), f"LiveCodeBench problem {item.get('question_id')}")


def passes_test(problem: Problem, index: int, run: TestRun) -> bool:
    if run.status != "ok" or run.output is None:
        return False
    if problem.mode == "stdin":
        return stdout_matches(run.output, problem.outputs[index])
    return return_value_matches(run.output, problem.outputs[index])


def judge(problem: Problem, runs: list[TestRun]) -> tuple[str, int, str]:
    """(outcome, tests passed, detail of the first failure) of one program's runs."""
    for index, run in enumerate(runs):
        if not passes_test(problem, index, run):
            outcome = "wrong_answer" if run.status == "ok" else run.status
            return outcome, index, f"test {index}: {run.detail}"[:500]
    if len(runs) < len(problem.inputs):
        return "runtime_error", len(runs), "the program stopped before its last test"
    return "passed", len(runs), ""


def continue_while_passing(problem: Problem):
    """keep_going for the sandbox: run the next test only while the tests pass, as the official evaluator."""
    return lambda index, run: passes_test(problem, index, run)
