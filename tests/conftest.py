"""Shared fixtures: tiny random Qwen3 checkpoints and the shared benchmark data (skipped when absent)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.records import Completion, Prediction
from lowbit.testing.data import shared_path

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Random Qwen3 (head_dim 64, float32) with the real Qwen3 tokenizer; completions run until their budget."""
    from lowbit.testing.tiny import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


@pytest.fixture(scope="session")
def tiny_model_stopping(tmp_path_factory) -> Path:
    """Like tiny_model, but sampled completions end with <|im_end|> after a few dozen tokens on average."""
    from lowbit.testing.tiny import build_tiny_qwen3

    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3-stop"), eos_logit=10.0)


def require_shared(name: str, what: str) -> Path:
    """shared/data/<name>, or skip the test with a reason when this machine lacks it."""
    path = shared_path(name)
    if path is None:
        pytest.skip(f"shared/data/{name} is absent ({what}; see shared/data/SOURCES.md)")
    return path


@pytest.fixture(scope="session")
def mmlu_redux_dir() -> Path:
    return require_shared("mmlu_redux", "real MMLU-Redux files")


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
