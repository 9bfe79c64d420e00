"""Shared fixtures: tiny random Qwen3 checkpoints and the shared benchmark data (skipped when absent).
Helper functions live in support.py."""

from __future__ import annotations

import os
from pathlib import Path

# Parallel workers (`make test`: one per core) each keep to one thread, as do the commands they start: torch's
# OpenMP threads on every worker would oversubscribe the cores (measured: the slow integration files run 21% faster).
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
from support import require_shared


@pytest.fixture(autouse=True)
def piped_output_width(monkeypatch):
    """Every test sees output that is not a terminal, whatever runs it (pytest-xdist's workers set COLUMNS=80):
    tests that want a width set COLUMNS themselves."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


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


@pytest.fixture(scope="session")
def mmlu_redux_dir() -> Path:
    return require_shared("mmlu_redux", "real MMLU-Redux files")
