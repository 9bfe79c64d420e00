"""Generated tokens/s of the transformers predictor: batched lowbit generation vs a batch-size-1 loop.

A Qwen3-1.7B-shaped model with random bf16 weights (so no download is needed) and the real Qwen3 tokenizer
generates 256 new tokens for each of N prompts of about 512 tokens, with Qwen3's non-thinking sampling. The
baseline is the same predictor at batch size 1 (one prompt per generate() call, as a plain loop does), timed on
a subset since its rate does not depend on how many prompts it runs. Both run in one process, back to back.

    python perf/transformers_throughput.py --tokenizer <dir with the Qwen3 tokenizer> [--prompts 256]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lowbit.predictors.transformers import TransformersPredictor
from lowbit.sampling import Sampling

QWEN3_1_7B_SHAPE = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                        tie_word_embeddings=True, rope_theta=1000000.0)


def build_model(tokenizer_dir: Path, out_dir: Path) -> Path:
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, out_dir / name)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    config = Qwen3Config(**QWEN3_1_7B_SHAPE, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out_dir)
    GenerationConfig(eos_token_id=[eos], pad_token_id=tokenizer.pad_token_id).save_pretrained(out_dir)
    del model
    return out_dir


def make_prompts(predictor: TransformersPredictor, count: int, target_tokens: int) -> list[str]:
    rng = random.Random(0)
    words = [w for w in predictor.tokenizer.get_vocab() if w.isalpha() and len(w) > 3][:5000]
    prompts = []
    for _ in range(count):
        text = " ".join(rng.choice(words) for _ in range(target_tokens))
        ids = predictor.encode(text)[: target_tokens - 16]
        content = predictor.tokenizer.decode(ids)
        prompts.append(predictor.render([{"role": "user", "content": content}], {"enable_thinking": False}))
    return prompts


def timed(predictor: TransformersPredictor, prompts: list[str], sampling: Sampling) -> tuple[float, int]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = sum(g.completion_tokens for chunk in predictor.generate(prompts, sampling, seed=0)
                 for _, gens in chunk for g in gens)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--baseline-prompts", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(args.tokenizer, Path(tmp))
        batched = TransformersPredictor(str(model_dir), batch_size=args.batch_size, show_progress=False)
        prompts = make_prompts(batched, args.prompts, args.prompt_tokens)
        longest = max(len(batched.encode(p)) for p in prompts)
        # Every prompt may use the full new-token budget: the limit is the longest prompt plus new_tokens.
        sampling = Sampling(template="qwen3", max_sequence_length=longest + args.new_tokens, temperature=0.7,
                            top_p=0.8, top_k=20, presence_penalty=1.0)
        timed(batched, prompts[:2], sampling)  # warm-up: CUDA context, kernels
        batched_seconds, batched_tokens = timed(batched, prompts, sampling)
        batched.batch_size = 1
        single_seconds, single_tokens = timed(batched, prompts[: args.baseline_prompts], sampling)

    result = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "prompts": args.prompts, "prompt_tokens_max": longest, "new_tokens": args.new_tokens,
        "batch_size": args.batch_size,
        "batched_tokens_per_s": round(batched_tokens / batched_seconds, 1),
        "batched_seconds": round(batched_seconds, 2), "batched_tokens": batched_tokens,
        "batch1_tokens_per_s": round(single_tokens / single_seconds, 1),
        "batch1_seconds": round(single_seconds, 2), "batch1_prompts": args.baseline_prompts,
        "speedup": round((batched_tokens / batched_seconds) / (single_tokens / single_seconds), 1),
        "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }
    print(json.dumps(result, indent=2))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "transformers_throughput.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
