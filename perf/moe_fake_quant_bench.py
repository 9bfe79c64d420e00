"""Cost of emulating fake-quantized MoE experts (lowbit.quant.fake_quant_experts), per MoE block and per model step.

Models: Qwen3-30B-A3B (48 layers, 128 experts, top-8, hidden 2048, expert width 768) and GPT-OSS-20B (24
layers, 32 experts, top-4, hidden 2880, width 2880), built from their configurations with random bf16 weights,
one after the other in this process.

--part steps (the target): whole-model forward steps, BF16 with transformers' default grouped_mm experts
against the same model emulated as the transformers predictor emulates it (`apply_fake_quant` with the
default targets: every decoder Linear and experts module), for each --formats activation format:
    decode B     one token for each of B sequences (B = 1, 8, 64) after a --context-token prefill, KV cache on
    prefill 4x1024
CUDA-synchronized wall time per step (median of --repeats), and the ratio emulated / BF16 per format.

--part blocks: one MoE block forward (block in isolation) for 8, 512 and 4096 tokens: transformers'
grouped_mm and eager experts forwards, lowbit's emulated forward with no format and with each format; then
the one-off cost of weight_quant per block.

    python perf/moe_fake_quant_bench.py [--part steps|blocks|all] [--json out.json]
    python perf/moe_fake_quant_bench.py --tiny --device cpu      # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import statistics
import time

import torch

from lowbit.quant import fake_quant, fake_quant_experts
from lowbit.quant.formats import registry

MODELS = {
    "qwen3_30b_a3b": dict(hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
                          num_experts_per_tok=8, vocab_size=151936, norm_topk_prob=True),
    "gpt_oss_20b": dict(hidden_size=2880, intermediate_size=2880, num_hidden_layers=24, num_attention_heads=64,
                        num_key_value_heads=8, head_dim=64, num_local_experts=32, num_experts_per_tok=4,
                        vocab_size=201088, sliding_window=128),
}
TINY = {
    "qwen3_30b_a3b": dict(hidden_size=64, intermediate_size=128, moe_intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_experts=8,
                          num_experts_per_tok=4, vocab_size=256, norm_topk_prob=True),
    "gpt_oss_20b": dict(hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                        num_key_value_heads=1, head_dim=32, num_local_experts=8, num_experts_per_tok=4,
                        vocab_size=256, sliding_window=16),
}
DECODE_BATCHES, PREFILL = (1, 8, 64), (4, 1024)
TINY_DECODE_BATCHES, TINY_PREFILL = (1, 2), (2, 16)
BLOCK_TOKENS, TINY_BLOCK_TOKENS = (8, 512, 4096), (8, 32)


def build_model(arch: str, dims: dict, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, GptOssConfig, Qwen3MoeConfig

    config_class = Qwen3MoeConfig if arch.startswith("qwen3") else GptOssConfig
    config = config_class(**dims, experts_implementation="grouped_mm")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def median_ms(fn, repeats: int, device: str, warmup: int = 3) -> float:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        began = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def step_times(model, batches: tuple[int, ...], prefill: tuple[int, int], context: int, repeats: int,
               device: str) -> dict[str, float]:
    """ms per decode step at each batch size (KV cache of `context` tokens) and per prefill forward."""
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    times = {}
    for batch in batches:
        prompt = torch.randint(0, vocab, (batch, context), generator=generator).to(device)
        token = torch.randint(0, vocab, (batch, 1), generator=generator).to(device)
        cache = model(prompt, use_cache=True).past_key_values  # the cache grows by a token per timed step
        times[f"decode {batch}"] = median_ms(lambda: model(token, past_key_values=cache, use_cache=True), repeats,
                                             device)
        del cache
    tokens = torch.randint(0, vocab, prefill, generator=generator).to(device)
    times[f"prefill {prefill[0]}x{prefill[1]}"] = median_ms(lambda: model(tokens, use_cache=False),
                                                            max(3, repeats // 4), device, warmup=1)
    return times


def run_steps(args, dtype: torch.dtype, backend: str) -> list[dict]:
    results = []
    batches, prefill = (TINY_DECODE_BATCHES, TINY_PREFILL) if args.tiny else (DECODE_BATCHES, PREFILL)
    for arch in MODELS:
        model = build_model(arch, (TINY if args.tiny else MODELS)[arch], args.device, dtype)
        with torch.inference_mode():
            bf16 = step_times(model, batches, prefill, args.context, args.repeats, args.device)
            for fmt in args.formats:
                emulation = fake_quant.apply_fake_quant(model, act_quant=fmt, backend=backend)
                emulated = step_times(model, batches, prefill, args.context, args.repeats, args.device)
                emulation.remove()
                for step, ms in bf16.items():
                    row = {"model": arch, "step": step, "format": fmt, "bf16_ms": round(ms, 3),
                           "emulated_ms": round(emulated[step], 3), "ratio": round(emulated[step] / ms, 3)}
                    results.append(row)
                    print(json.dumps(row), flush=True)
        del model
        gc.collect()
        if args.device == "cuda":
            torch.cuda.empty_cache()
    return results


def build_block(arch: str, dims: dict, device: str, dtype: torch.dtype) -> torch.nn.Module:
    if arch.startswith("qwen3"):
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

        block = Qwen3MoeSparseMoeBlock(Qwen3MoeConfig(**dims, experts_implementation="grouped_mm"))
    else:
        from transformers import GptOssConfig
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

        block = GptOssMLP(GptOssConfig(**dims, experts_implementation="grouped_mm"))
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(std=0.02)
    return block.to(device=device, dtype=dtype).eval()


def run_blocks(args, dtype: torch.dtype, backend: str) -> list[dict]:
    results = []
    for arch, dims in (TINY if args.tiny else MODELS).items():
        block = build_block(arch, dims, args.device, dtype)
        experts = block.experts
        for tokens in TINY_BLOCK_TOKENS if args.tiny else BLOCK_TOKENS:
            x = torch.randn(1, tokens, dims["hidden_size"], device=args.device, dtype=dtype)
            row = {"block": arch, "tokens": tokens}
            forward = functools.partial(block, x)
            with torch.inference_mode():
                for implementation in ("grouped_mm", "eager"):
                    experts.config._experts_implementation = implementation
                    row[implementation] = median_ms(forward, args.repeats, args.device)
                for fmt in ("none", *registry.activation_formats()):
                    handle = fake_quant_experts.install(experts, fmt, backend)
                    row[f"emulated {fmt}"] = median_ms(forward, args.repeats, args.device)
                    handle.remove()
            results.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        for fmt in ("int4_g32", "mxfp4", "nvfp4"):
            weights = {name: p.detach().clone() for name, p in experts.named_parameters()}
            began = time.perf_counter()
            fake_quant_experts.fake_quantize_weights(experts, fmt, backend)
            if args.device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - began
            with torch.no_grad():
                for name, p in experts.named_parameters():
                    p.copy_(weights[name])
            row = {"block": arch, "weight_quant": fmt, "seconds_per_block": round(seconds, 3)}
            results.append(row)
            print(json.dumps(row), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("steps", "blocks", "all"), default="all")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--context", type=int, default=512, help="tokens in the KV cache before a decode step")
    parser.add_argument("--formats", nargs="+", default=["nvfp4"], choices=registry.activation_formats(),
                        help="activation formats of the emulated steps")
    parser.add_argument("--tiny", action="store_true", help="tiny models, to check the script runs")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.tiny:
        args.context = min(args.context, 16)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    backend = fake_quant.resolve_backend("auto", torch.device(args.device))
    import transformers

    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
           "transformers": transformers.__version__, "backend": backend}
    print(json.dumps(env), flush=True)
    results = []
    if args.part in ("steps", "all"):
        results += run_steps(args, dtype, backend)
    if args.part in ("blocks", "all"):
        results += run_blocks(args, dtype, backend)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
