"""Prefill and decode time of a Qwen3-1.7B-shaped model under each activation fake-quant format vs BF16.

The model is built from a config with random bf16 weights (no download) and run with transformers in eager
mode, as the transformers predictor runs it. In one process, for BF16 and every act_quant format and backend:
    prefill  one forward pass over --prefill-batch x --prefill-tokens tokens (no cache), in --reps rounds that
             interleave the configurations; ratio to BF16 within each round, medians reported
    decode   --decode-steps single-token steps at each --decode-batches size after a --context-tokens prefill.
             Decode is bound by the host's CPU, which is shared and drifts from second to second, so the
             configurations take turns step by step on one growing KV cache (the order rotating every step),
             each step is timed on its own, and a format's ratio is the median over steps of its step time
             over the BF16 step next to it.
The "ref" backend is the torch reference on the GPU, shown to motivate the fused Triton kernels ("triton", what
the predictor uses on CUDA). At the end, the one-time cost of fake-quantizing every decoder weight to NVFP4 at
load is timed.

    python perf/act_quant_bench.py                       # a few minutes on an H100
    python perf/act_quant_bench.py --backends triton --json results.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time

import torch

from lowbit.quant import fake_quant
from lowbit.quant.formats import registry

QWEN3_1_7B_SHAPE = dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                        num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=40960,
                        tie_word_embeddings=True, rope_theta=1000000.0)


def build_model(device: str, layers: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**{**QWEN3_1_7B_SHAPE, "num_hidden_layers": layers}, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(torch.bfloat16).eval()
    return model


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_prefill(model, ids: torch.Tensor, reps: int, device: str) -> float:
    times = []
    for _ in range(reps + 1):  # the first call warms up (Triton compiles, cuBLAS picks kernels)
        synchronize(device)
        began = time.perf_counter()
        model(input_ids=ids, use_cache=False, logits_to_keep=1)
        synchronize(device)
        times.append(time.perf_counter() - began)
    return statistics.median(times[1:])


def time_decode(model, hooks: dict, linears: list, batch: int, context: int, steps: int, device: str) -> dict:
    """Seconds of every decode step per configuration (hooks: name -> ActivationFakeQuant, None for BF16)."""
    from transformers import DynamicCache

    generator = torch.Generator(device="cpu").manual_seed(1)
    prompt = torch.randint(0, 150000, (batch, context), generator=generator).to(device)
    tokens = torch.randint(0, 150000, (steps + 1, batch, 1), generator=generator).to(device)
    cache = DynamicCache(config=model.config)
    model(input_ids=prompt, past_key_values=cache, use_cache=True, logits_to_keep=1)
    names = list(hooks)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for step in range(steps + 1):  # step 0 warms every configuration up (Triton compiles, launches are planned)
        turn = step % len(names)
        for name in names[turn:] + names[:turn]:
            hook = hooks[name]
            handles = [m.register_forward_pre_hook(hook) for m in linears] if hook is not None else []
            synchronize(device)
            began = time.perf_counter()
            model(input_ids=tokens[step], past_key_values=cache, use_cache=True, logits_to_keep=1)
            synchronize(device)
            if step:
                seconds[name].append(time.perf_counter() - began)
            for handle in handles:
                handle.remove()
            if hook is not None:
                hook.clear()
    return seconds


def environment(device: str) -> dict:
    import transformers

    info = {"torch": torch.__version__, "transformers": transformers.__version__, "device": device}
    if device == "cuda":
        import triton

        info.update(gpu=torch.cuda.get_device_name(), triton=triton.__version__)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", default=",".join(registry.activation_formats()))
    parser.add_argument("--backends", default="triton,ref", help="triton (fused kernels) and/or ref (torch)")
    parser.add_argument("--prefill-batch", type=int, default=4)
    parser.add_argument("--prefill-tokens", type=int, default=1024)
    parser.add_argument("--decode-batches", default="1,16")
    parser.add_argument("--context-tokens", type=int, default=512)
    parser.add_argument("--decode-steps", type=int, default=64, help="timed steps per configuration")
    parser.add_argument("--reps", type=int, default=5, help="prefill rounds over all configurations")
    parser.add_argument("--layers", type=int, default=QWEN3_1_7B_SHAPE["num_hidden_layers"],
                        help="fewer decoder layers for a quick smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    formats = args.formats.split(",")
    backends = args.backends.split(",")
    decode_batches = [int(b) for b in args.decode_batches.split(",")]
    print(json.dumps(environment(device)))
    model = build_model(device, args.layers)
    prefill_ids = torch.randint(0, 150000, (args.prefill_batch, args.prefill_tokens),
                                generator=torch.Generator().manual_seed(0)).to(device)

    configs = [("bf16", "-")] + [(fmt, backend) for backend in backends for fmt in formats]
    prefill: dict[tuple[str, str], list[float]] = {config: [] for config in configs}
    gc.collect()  # a collection inside a timed step would be charged to whichever format ran then
    gc.disable()
    try:
        with torch.inference_mode():
            for round_index in range(args.reps):
                for fmt, backend in configs:
                    emulation = fake_quant.apply_fake_quant(model, act_quant=fmt, backend=backend) \
                        if fmt != "bf16" else None
                    prefill[(fmt, backend)].append(time_prefill(model, prefill_ids, 1, device))
                    if emulation is not None:
                        emulation.remove()
                print(f"prefill round {round_index + 1}/{args.reps} done", flush=True)
            names = fake_quant.select_linears(model, fake_quant.DEFAULT_TARGETS, fake_quant.DEFAULT_IGNORE)[0]
            modules = dict(model.named_modules())
            linears = [modules[name] for name in names]
            hooks = {config: fake_quant.ActivationFakeQuant(*config) if config[0] != "bf16" else None
                     for config in configs}
            decode = {batch: time_decode(model, hooks, linears, batch, args.context_tokens, args.decode_steps,
                                         device) for batch in decode_batches}
    finally:
        gc.enable()

    results = []
    base = configs[0]
    for config in configs:
        row = {"act_quant": config[0], "backend": config[1], "wrapped": len(linears) if config != base else 0,
               "prefill_s": statistics.median(prefill[config]),
               "prefill_ratio": statistics.median(t / b for t, b in zip(prefill[config], prefill[base]))}
        for batch, seconds in decode.items():
            row[f"decode_b{batch}_s"] = statistics.median(seconds[config])
            row[f"decode_b{batch}_ratio"] = statistics.median(t / b for t, b in zip(seconds[config], seconds[base]))
        results.append(row)
    timed = ["prefill_s"] + [f"decode_b{batch}_s" for batch in decode_batches]
    header = f"{'act_quant':<10}{'backend':<8}" + "".join(f"{k.removesuffix('_s') + ' ms':>16}{'x bf16':>8}"
                                                          for k in timed)
    print(header)
    for row in results:
        print(f"{row['act_quant']:<10}{row['backend']:<8}" + "".join(
            f"{row[k] * 1e3:>16.2f}{row[k.removesuffix('_s') + '_ratio']:>8.2f}" for k in timed))

    synchronize(device)
    began = time.perf_counter()
    emulation = fake_quant.apply_fake_quant(model, weight_quant="nvfp4")
    synchronize(device)
    weight_seconds = time.perf_counter() - began
    print(f"weight_quant=nvfp4 at load: {weight_seconds:.2f} s for {len(emulation.wrapped)} layers "
          f"({emulation.backend})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(device), "args": vars(args), "results": results,
                       "weight_quant_nvfp4_load_s": weight_seconds}, f, indent=1)


if __name__ == "__main__":
    main()
