"""Run lowbit's vLLM predictor in a fresh process (vLLM engines must start under a __main__ guard).

    python vllm_worker.py <model dir> <request.json> <result.json>

request.json: {"engine": {predictor options}, "prompts": [[chat messages], ...], "template_kwargs": {...},
               "runs": [{"name": ..., "sampling": {Sampling fields}, "seed": int}, ...]}
result.json:  {"prompts": [rendered prompt, ...], "prompt_token_ids": [[...]], "runs": {name: [[generation, ...]]},
               "stats": {...}, "describe": {...}}
"""

import json
import sys
from dataclasses import asdict


def main(model_dir: str, request_path: str, result_path: str) -> None:
    from lowbit.predictors.vllm import VLLMPredictor
    from lowbit.sampling import Sampling

    request = json.loads(open(request_path).read())
    predictor = VLLMPredictor(model_dir, **request["engine"])
    prompts = [predictor.render(messages, request.get("template_kwargs", {})) for messages in request["prompts"]]
    result = {"prompts": prompts, "prompt_token_ids": [predictor.encode(p) for p in prompts], "runs": {}}
    for run in request["runs"]:
        generations = {}
        for chunk in predictor.generate(prompts, Sampling(**run["sampling"]), seed=run["seed"],
                                        keep_special_tokens=run.get("keep_special_tokens", False)):
            generations.update({index: [asdict(g) for g in gens] for index, gens in chunk})
        result["runs"][run["name"]] = [generations[i] for i in range(len(prompts))]
    result["stats"] = predictor.stats.to_json()
    result["describe"] = predictor.describe()
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
