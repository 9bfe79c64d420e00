"""Helpers shared by test modules: `from support import ...` (conftest.py holds only fixtures; a module named
conftest is ambiguous when several test folders have one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from lowbit.records import Completion, Prediction
from lowbit.testing.data import shared_path


def require_shared(name: str, what: str) -> Path:
    """shared/data/<name>, or skip the test with a reason when this machine lacks it."""
    path = shared_path(name)
    if path is None:
        pytest.skip(f"shared/data/{name} is absent ({what}; see shared/data/SOURCES.md)")
    return path


def answered(sample, *answers: str, finish_reason: str = "stop") -> Prediction:
    """A prediction for `sample` whose completions answered `answers` (no reasoning, no token counts)."""
    return Prediction(id=sample.id, prompt="", item=sample.item, completions=[
        Completion(text=a, answer=a, reasoning=None, finish_reason=finish_reason) for a in answers])


def run_lowbit(*args: str, timeout: float = 600, env_overrides: dict[str, str] | None = None,
               **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a fresh interpreter, as a user would."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", **(env_overrides or {})}
    return subprocess.run([sys.executable, "-m", "lowbit", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def mmlu_redux_rows(count: int, prefix: str = "", error_type: Callable[[int], str] = lambda i: "ok") -> list[dict]:
    """`count` MMLU-Redux rows in the dataset's own fields: question `{prefix}question {i}?`, answer i % 4."""
    return [{"question": f"{prefix}question {i}?", "choices": ["w", "x", "y", "z"], "answer": i % 4,
             "error_type": error_type(i), "source": None, "correct_answer": None, "potential_reason": None}
            for i in range(count)]


def write_mmlu_redux(folder: Path, subjects: Iterable[str], count: int, subject_prefix: bool = False,
                     error_type: Callable[[int], str] = lambda i: "ok") -> Path:
    """A local MMLU-Redux copy (`data_dir=folder`): one `<subject>.jsonl` of `count` rows per subject."""
    folder.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        rows = mmlu_redux_rows(count, f"{subject} " if subject_prefix else "", error_type)
        (folder / f"{subject}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
