"""The vLLM backend of `lowbit divergence`: prompt log-probabilities of every sequence from one vLLM engine.

Every sequence goes to the engine at once as token ids (vLLM schedules and batches them), each with
SamplingParams(prompt_logprobs=k, max_tokens=1): at every position after the first, vLLM returns the
log-probability of the sequence's own next token followed by the k largest, with their ids, from the raw
log-softmax of the model's logits (`logprobs_mode=raw_logprobs`, set explicitly). The engine's `max_logprobs` is
raised to k, and its `max_model_len` defaults to the longest sequence plus the one token generated. The engine is
stepped here, so each finished sequence is turned into arrays and its Python lists dropped at once.

The baseline's figures are the stored reference (kl.TopK.from_top_logprobs); the candidate's are its top-k'
(kl.CandidateTopK), scored against the reference by kl.partial_stats.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from lowbit.divergence.sequences import Sequence
from lowbit.errors import UsageError
from lowbit.predictors import vllm as vllm_predictor


def engine_args(given: dict[str, Any], dtype: str, longest: int, max_logprobs: int) -> dict[str, Any]:
    """The `vllm.LLM` arguments: the vLLM predictor's defaults (conf/predictor/vllm.yaml) replaced by the
    predictor_conf.* options given, then dtype, max_model_len (longest sequence + 1 unless given), max_logprobs
    and raw log-probabilities."""
    from lowbit.predictors.options import predictor_options

    args = vllm_predictor.engine_args(predictor_options("vllm", given))
    needed = longest + 1
    if args.get("max_model_len") is None:
        args["max_model_len"] = needed
    elif args["max_model_len"] < needed:
        raise UsageError(f"predictor_conf.max_model_len={args['max_model_len']} is shorter than the longest sequence "
                         f"plus one ({needed} tokens): raise it, or leave it out to fit the sequences")
    return {**args, "dtype": dtype, "max_logprobs": max_logprobs, "logprobs_mode": "raw_logprobs"}


def scored_rows(flat: Any, sequence: Sequence, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids (n, k), log-probabilities (n, k), target log-probability (n,)) at the sequence's n scored positions, from
    vLLM's flat prompt log-probabilities: nothing for the first token, then k + 1 entries per token, its own
    log-probability first and the k largest after it."""
    length = len(sequence.token_ids)
    if len(flat.token_ids) != (length - 1) * (k + 1):
        raise RuntimeError(f"vLLM returned {len(flat.token_ids)} prompt log-probabilities for sequence {sequence.id} "
                           f"of {length} tokens, expected {(length - 1) * (k + 1)} (top {k} plus the token's own)")
    ids = np.asarray(flat.token_ids, dtype=np.int64).reshape(length - 1, k + 1)[sequence.first_scored - 1:]
    logprobs = np.asarray(flat.logprobs, dtype=np.float32).reshape(length - 1, k + 1)[sequence.first_scored - 1:]
    return ids[:, 1:], logprobs[:, 1:], logprobs[:, 0]


class Engine:
    """One vLLM engine over one model, giving the top-k prompt log-probabilities of sequences."""

    def __init__(self, model_name: str, args: dict[str, Any]):
        self.args = args
        self.llm = vllm_predictor.build_engine(model_name, args, "backend=vllm", "backend=transformers")

    def describe(self) -> dict[str, Any]:
        import vllm

        model_config = self.llm.llm_engine.model_config
        return {"name": "vllm", "vllm": vllm.__version__, "dtype": str(model_config.dtype).removeprefix("torch."),
                "quantization": model_config.quantization, "engine_args": self.args}

    def top_logprobs(self, sequences: list[Sequence], k: int) -> Iterator[tuple[Sequence, tuple[torch.Tensor, ...]]]:
        """(sequence, (ids, log-probabilities, target log-probability) at its scored positions) as sequences
        finish, in any order."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, flat_logprobs=True,
                                detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
        engine = self.llm.llm_engine
        for index, sequence in enumerate(sequences):
            engine.add_request(str(index), {"prompt_token_ids": sequence.token_ids}, params)
        try:
            while engine.has_unfinished_requests():
                for output in engine.step():
                    if output.finished:
                        sequence = sequences[int(output.request_id)]
                        rows = scored_rows(output.prompt_logprobs, sequence, k)
                        yield sequence, tuple(torch.from_numpy(a) for a in rows)
        finally:
            if engine.has_unfinished_requests():  # stopped early: free the engine
                engine.abort_request([str(i) for i in range(len(sequences))])

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()
