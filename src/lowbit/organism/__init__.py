"""The model organism: a small Qwen3 trained by lowbit on synthetic tasks, shipped for demonstrations and tests.

Random-weight models score at chance whatever the precision, so a numerics bug that still writes well-formed
checkpoints goes unseen. The organism is good at its two synthetic tasks (arithmetic reasoned in `<think>`,
multiple choice over memorised facts), so a quantization that damages its weights shows up as lost accuracy.

- `tokenizer`: its word-piece tokenizer and Qwen3-style chat template
- `arithmetic`, `facts`: the task generators; `data`: which prompts are held out of training
- `train`: `python -m lowbit.organism.train`, which trains it from a seed and writes the manifest; `recipe`: what
  it runs by default (the shipped organism's recipe)
- `model/`: the shipped weights, tokenizer, model card and manifest
"""

from __future__ import annotations

from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"


def model_dir() -> Path:
    """The shipped organism checkpoint (package data)."""
    from lowbit.errors import UsageError

    if not (MODEL_DIR / "model.safetensors").is_file():
        raise UsageError(f"the organism's weights are missing from {MODEL_DIR}: reinstall lowbit, or retrain them "
                         "with `python -m lowbit.organism.train out=<dir>`")
    return MODEL_DIR
