"""Cost of emulating fake-quantized MoE experts (lowbit.quant.fake_quant_experts) on one MoE block.

One Qwen3-30B-A3B block (128 experts, top-8, hidden 2048, expert width 768) and one GPT-OSS-20B block (32
experts, top-4, hidden 2880, width 2880) with random bf16 weights. Per block forward, CUDA-synchronized wall
time (median of --repeats) of:
    grouped_mm / eager     the model's own experts forward (transformers' default and its per-expert loop)
    emulated none          lowbit's per-expert forward with no quantization (the loop's own cost)
    emulated <fmt>         the same with each activation format (Triton kernels)
for 8 tokens (decode), 512 and 4096 tokens (prefill). Then the one-off cost of weight_quant per block.

    python perf/moe_fake_quant_bench.py [--json out.json]
    python perf/moe_fake_quant_bench.py --tiny --device cpu      # smoke run of the script itself
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import torch

from lowbit.quant import fake_quant, fake_quant_experts
from lowbit.quant.formats import registry

BLOCKS = {
    "qwen3_30b_a3b": {"hidden": 2048, "intermediate": 768, "experts": 128, "top_k": 8},
    "gpt_oss_20b": {"hidden": 2880, "intermediate": 2880, "experts": 32, "top_k": 4},
}
TINY = {"hidden": 64, "intermediate": 64, "experts": 4, "top_k": 2}


def build_block(arch: str, dims: dict, device: str, dtype: torch.dtype) -> torch.nn.Module:
    if arch.startswith("qwen3"):
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

        config = Qwen3MoeConfig(hidden_size=dims["hidden"], moe_intermediate_size=dims["intermediate"],
                                num_experts=dims["experts"], num_experts_per_tok=dims["top_k"], norm_topk_prob=True,
                                experts_implementation="grouped_mm")
        block = Qwen3MoeSparseMoeBlock(config)
    else:
        from transformers import GptOssConfig
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

        config = GptOssConfig(hidden_size=dims["hidden"], intermediate_size=dims["intermediate"],
                              num_local_experts=dims["experts"], num_experts_per_tok=dims["top_k"],
                              experts_implementation="grouped_mm")
        block = GptOssMLP(config)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(std=0.02)
    return block.to(device=device, dtype=dtype).eval()


def median_ms(fn, repeats: int, device: str) -> float:
    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        began = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny blocks, to check the script runs")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    backend = fake_quant.resolve_backend("auto", torch.device(args.device))
    import transformers

    env = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
           "transformers": transformers.__version__, "backend": backend}
    print(json.dumps(env))
    results = []
    for arch, dims in BLOCKS.items():
        dims = TINY if args.tiny else dims
        block = build_block(arch, dims, args.device, dtype)
        experts = block.experts
        for tokens in ((8, 32) if args.tiny else (8, 512, 4096)):
            x = torch.randn(1, tokens, dims["hidden"], device=args.device, dtype=dtype)
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
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}))
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
            print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
