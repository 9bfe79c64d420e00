"""Synthetic run directories for the `lowbit compare` tests: `from report_support import write_run, planted`.

The runs are written the way `lowbit eval` writes them: a real resolved config (`resolve_eval`), `begin_run`
and `RunDir.record_session`, predictions through the append-only writer, and scores and metrics from the real task
scorers (`score_run`). Only the completions are made up, so that each run answers a planted set of questions right.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.config import EvalConfig, resolve_eval
from lowbit.records import Completion, Prediction
from lowbit.run import begin_run, score_run
from lowbit.rundir import RunDir, Session

N_SAMPLES = 2000
LETTERS = "ABCD"
MMLU_SUBJECTS = ("anatomy", "virology")


def mmlu_item(index: int) -> dict:
    subject = MMLU_SUBJECTS[index % len(MMLU_SUBJECTS)]
    return {"subject": subject, "index": index, "question": f"Synthetic question {index}?",
            "choices": ["one", "two", "three", "four"], "answer": index % 4, "error_type": "ok"}


@functools.cache
def resolved_config(eval_dataset: str, overrides: tuple[str, ...]) -> EvalConfig:
    """The config `lowbit eval` would record (composed once per setting: Hydra takes half a second)."""
    return resolve_eval([f"eval_dataset={eval_dataset}", *overrides])


def write_run(path: Path, precision: str, correct: np.ndarray, *, overrides: tuple[str, ...] = (),
              eval_dataset: str = "mmlu-redux", truncated_share: float = 0.0, reasoning_tokens: int | np.ndarray = 0,
              tokens_per_second: float = 1000.0, drop_ids: int = 0, question_suffix: str = "",
              system_line: str = "", quantization: dict[str, Any] | None = None,
              emulation: dict[str, Any] | None = None) -> Path:
    """A scored run directory in which sample i is answered right where `correct[i]` (one row per completion).

    `reasoning_tokens`: per completion, one count for all samples or one per sample; `quantization`: the
    checkpoint quantization_config recorded in run.json (as for a local quantized checkpoint); `emulation`: the
    transformers predictor's fake-quant record of the session."""
    base_cfg = resolved_config(eval_dataset, overrides)
    cfg = replace(base_cfg, resolved={**base_cfg.resolved, "precision": precision, "output_dir": str(path)})
    run = RunDir(path)
    begin_run(run, cfg, overwrite=True)
    if quantization is not None:
        info = run.run_info()
        info.model.quantization_config = quantization
        run.write_run_info(info)
    correct = np.atleast_2d(np.asarray(correct).T).T  # (samples, completions)
    reasoning = np.broadcast_to(np.asarray(reasoning_tokens, dtype=int), (len(correct),))
    rng = np.random.default_rng(len(correct))
    predictions = []
    for index in range(drop_ids, len(correct)):
        if eval_dataset == "mmlu-redux":
            item = mmlu_item(index)
            item["question"] += question_suffix if index == len(correct) - 1 else ""
            sample_id, gold = f"{item['subject']}/{index}", LETTERS[item["answer"]]
            answers = [f"ANSWER: {gold if ok else LETTERS[(item['answer'] + 1) % 4]}" for ok in correct[index]]
        else:
            item = {"id": f"synthetic-{index}", "problem": f"Compute {index} + 1.", "answer": str(index % 1000),
                    "part": ("I", "II")[index % 2]}
            sample_id = item["id"]
            answers = [f"\\boxed{{{index % 1000 if ok else (index + 1) % 1000}}}" for ok in correct[index]]
        messages = cfg.task.messages(item)
        tokens = int(reasoning[index])
        completions = [Completion(text=answer, answer=answer, reasoning="r" * tokens or None,
                                  finish_reason="length" if rng.random() < truncated_share else "stop",
                                  prompt_tokens=50, completion_tokens=20 + tokens, reasoning_tokens=tokens)
                       for answer in answers]
        prompt = f"{system_line}<|im_start|>user\n{messages[0]['content']}<|im_end|>\n<|im_start|>assistant\n"
        predictions.append(Prediction(id=sample_id, prompt=prompt, item=item, completions=completions,
                                      messages=messages).to_json())
    with run.prediction_writer() as writer:
        writer.append(predictions)
    completion_tokens = sum(c["completion_tokens"] for p in predictions for c in p["completions"])
    run.record_session(Session(predicted=len(predictions), prompt_tokens=50 * len(predictions),
                               completion_tokens=completion_tokens,
                               generate_seconds=completion_tokens / tokens_per_second,
                               predictor={"name": "transformers", "emulation": emulation} if emulation else {}))
    score_run(run, cfg.task)
    return path


def planted(base_correct: int, right_to_wrong: int, wrong_to_right: int, n: int = N_SAMPLES, seed: int = 0):
    """Baseline and candidate correctness with exactly the given flips, at shuffled positions."""
    order = np.random.default_rng(seed).permutation(n)
    baseline = np.zeros(n, dtype=bool)
    baseline[order[:base_correct]] = True
    candidate = baseline.copy()
    candidate[order[:right_to_wrong]] = False
    candidate[order[base_correct:base_correct + wrong_to_right]] = True
    return baseline, candidate
