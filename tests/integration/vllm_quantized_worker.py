"""Load quantized checkpoints with vLLM (CPU build) in a fresh process, one after another, and generate greedily.

    python vllm_quantized_worker.py <result.json>   (checkpoint dirs on stdin, one a line)

vLLM is imported first and each checkpoint loads as soon as its line arrives, so the caller can start this
process before its checkpoints are written and quantize while vLLM imports (the slowest part of a start).

result.json: {<checkpoint dir>: {"token_ids": [int], "schemes": {layer: vLLM scheme class}} or {"error": str}}
"""

import gc
import json
import sys

# The tiny test models need 1 KiB per token; a fixed size spares zeroing a share of host memory at each start.
KV_CACHE_BYTES = 128 * 2**20


def layer_schemes(model) -> dict[str, str]:
    return {name: type(module.scheme).__name__ for name, module in model.named_modules()
            if getattr(module, "scheme", None) is not None}


def load_and_generate(model_dir: str) -> dict:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, kv_cache_memory_bytes=KV_CACHE_BYTES, max_model_len=512, enforce_eager=True, seed=0,
              max_num_seqs=4)
    try:
        output = llm.generate(["The capital of France is"], SamplingParams(temperature=0.0, max_tokens=8))
        schemes = {}
        for worker_schemes in llm.apply_model(layer_schemes):
            schemes.update(worker_schemes)
        return {"token_ids": list(output[0].outputs[0].token_ids), "schemes": schemes}
    finally:
        del llm
        gc.collect()


def main(result_path: str) -> None:
    import vllm  # noqa: F401  (imported before the first checkpoint arrives)

    results = {}
    for line in sys.stdin:
        model_dir = line.strip()
        if not model_dir:
            continue
        try:
            results[model_dir] = load_and_generate(model_dir)
        except Exception as e:  # reported per checkpoint: the test says which scheme failed and why
            results[model_dir] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
