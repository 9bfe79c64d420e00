"""Cost of emulating fake-quantized MoE experts (lowbit.quant.fake_quant_experts), per MoE block and per model step.

Models: Qwen3-30B-A3B (48 layers, 128 experts, top-8, hidden 2048, expert width 768) and GPT-OSS-20B (24
layers, 32 experts, top-4, hidden 2880, width 2880), built from their configurations with random bf16 weights,
one after the other in this process.

--part steps (the target): whole-model forward steps, BF16 with transformers' default grouped_mm experts
against the same model emulated as the transformers predictor emulates it (`apply_fake_quant` with the
default targets: every decoder Linear and experts module), for each --formats activation format:
    decode B     one token for each of B sequences (B = 1, 8, 64) after a --context-token prefill, KV cache on
    prefill 4x1024
CUDA-synchronized wall time per step (median of --repeats), BF16 and the formats taking turns step by step so
that the shared host's slow phases fall on all of them alike, and the ratio emulated / BF16 per format.

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
    for _ in range(warmup):
        fn()
    return statistics.median(timed_ms(fn, device) for _ in range(repeats))


def timed_ms(fn, device: str) -> float:
    """Wall time of one call of `fn`, the device synchronized before and after."""
    if device == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) * 1e3


class Variant:
    """The model as BF16 (fmt None) or emulated with activation format `fmt`, switched on for one step at a time."""

    def __init__(self, model, fmt: str | None, backend: str):
        self.model, self.fmt, self.backend, self.emulation = model, fmt, backend, None

    def __enter__(self):
        if self.fmt:
            self.emulation = fake_quant.apply_fake_quant(self.model, act_quant=self.fmt, backend=self.backend)
        return self.model

    def __exit__(self, *exc):
        if self.emulation is not None:
            self.emulation.remove()
            self.emulation = None


def interleaved_ms(steps: dict[str, object], variants: dict[str, Variant], repeats: int, device: str,
                   warmup: int = 2) -> dict[str, dict[str, float]]:
    """Median ms per step of each variant, the variants taking turns step by step (order rotating each round), so
    a slow phase of the shared host slows every variant alike. `steps`: name -> fn(model)."""
    names = list(variants)
    for variant in variants.values():
        with variant as model:
            for fn in steps.values():
                for _ in range(warmup):
                    fn(model)
    times = {step: {name: [] for name in names} for step in steps}
    for round_ in range(repeats):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        for name in order:
            with variants[name] as model:
                for step, fn in steps.items():
                    times[step][name].append(timed_ms(functools.partial(fn, model), device))
    return {step: {name: statistics.median(values) for name, values in by_variant.items()}
            for step, by_variant in times.items()}


def model_steps(model, batches: tuple[int, ...], prefill: tuple[int, int], context: int, device: str) -> dict:
    """name -> fn(model): one decode step at each batch size (KV cache of `context` tokens, growing by a token
    per step) and one prefill forward."""
    vocab = model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    steps = {}
    for batch in batches:
        prompt = torch.randint(0, vocab, (batch, context), generator=generator).to(device)
        token = torch.randint(0, vocab, (batch, 1), generator=generator).to(device)
        cache = model(prompt, use_cache=True).past_key_values
        steps[f"decode {batch}"] = functools.partial(
            lambda m, token, cache: m(token, past_key_values=cache, use_cache=True), token=token, cache=cache)
    tokens = torch.randint(0, vocab, prefill, generator=generator).to(device)
    steps[f"prefill {prefill[0]}x{prefill[1]}"] = lambda m: m(tokens, use_cache=False)
    return steps


def profile_step(model, step, variants: dict[str, Variant], rows: int = 15) -> None:
    """torch.profiler's table of one step of each variant: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    for name, variant in variants.items():
        with variant as m:
            step(m)
            with profile(activities=activities) as prof:
                step(m)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
        print(f"profile: {name}", flush=True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), flush=True)


def run_steps(args, dtype: torch.dtype, backend: str) -> list[dict]:
    results = []
    batches, prefill = (TINY_DECODE_BATCHES, TINY_PREFILL) if args.tiny else (DECODE_BATCHES, PREFILL)
    for arch in MODELS:
        model = build_model(arch, (TINY if args.tiny else MODELS)[arch], args.device, dtype)
        variants = {"bf16": Variant(model, None, backend),
                    **{fmt: Variant(model, fmt, backend) for fmt in args.formats}}
        with torch.inference_mode():
            steps = model_steps(model, batches, prefill, args.context, args.device)
            if args.profile:
                profile_step(model, steps[f"decode {batches[0]}"], variants)
            medians = interleaved_ms(steps, variants, args.repeats, args.device)
        for step, ms in medians.items():
            for fmt in args.formats:
                row = {"model": arch, "step": step, "format": fmt, "bf16_ms": round(ms["bf16"], 3),
                       "emulated_ms": round(ms[fmt], 3), "ratio": round(ms[fmt] / ms["bf16"], 3)}
                results.append(row)
                print(json.dumps(row), flush=True)
        del model, steps, variants
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
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler's table of one decode step, BF16 and each format")
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
