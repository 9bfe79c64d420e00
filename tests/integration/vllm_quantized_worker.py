"""Load quantized checkpoints with vLLM (CPU build) in a fresh process, one after another, and generate greedily.

    python vllm_quantized_worker.py <result.json> <checkpoint dir> [<checkpoint dir> ...]

result.json: {<checkpoint dir>: {"token_ids": [int], "schemes": {layer: vLLM scheme class}} or {"error": str}}
"""

import gc
import json
import sys


def layer_schemes(model) -> dict[str, str]:
    return {name: type(module.scheme).__name__ for name, module in model.named_modules()
            if getattr(module, "scheme", None) is not None}


def load_and_generate(model_dir: str) -> dict:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, gpu_memory_utilization=0.3, max_model_len=512, enforce_eager=True, seed=0,
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


def main(result_path: str, *model_dirs: str) -> None:
    results = {}
    for model_dir in model_dirs:
        try:
            results[model_dir] = load_and_generate(model_dir)
        except Exception as e:  # reported per checkpoint: the test says which scheme failed and why
            results[model_dir] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    with open(result_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
