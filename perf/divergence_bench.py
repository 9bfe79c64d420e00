"""Divergence throughput and peak memory against plain forward passes over the same tokens, and the stored
reference's size per million tokens (lowbit.divergence).

Qwen3-4B shape with random bf16 weights; the candidate is the baseline with every weight perturbed. Timed:
    forward      both models' plain forward passes (full logits, as `model(input_ids)` returns them)
    exact        lowbit's exact divergence of the same batch (both decoders, logits a slice at a time, KL etc.)
    reference    the baseline's stored top-k reference of the batch
    stored       the candidate against that stored reference; compared with the candidate's plain forward alone
Peak memory is torch's max_memory_allocated during each step (both models' weights included).

    PYTHONPATH=src python perf/divergence_bench.py                        # GPU: Qwen3-4B shape, 8 x 2048 tokens
    PYTHONPATH=src python perf/divergence_bench.py --layers 2 --batch 2 --seq 256 --hidden 512   # a CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from lowbit.divergence import engine, reference
from lowbit.divergence.sequences import Sequence


def build(args, device: str, seed: int):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(vocab_size=151936, hidden_size=args.hidden, intermediate_size=args.hidden * 38 // 10,
                         num_hidden_layers=args.layers, num_attention_heads=32 if args.hidden >= 2048 else 8,
                         num_key_value_heads=8 if args.hidden >= 2048 else 2, head_dim=128,
                         max_position_embeddings=40960, tie_word_embeddings=True, dtype="bfloat16")
    torch.manual_seed(seed)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen3ForCausalLM(config).to(dtype).eval()
    return model


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(step, device: str, reps: int) -> dict:
    step()  # warm-up
    sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(reps):
        step()
    sync(device)
    seconds = (time.perf_counter() - began) / reps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"seconds": round(seconds, 4), "peak_gib": round(peak, 3) if peak is not None else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=36)
    parser.add_argument("--hidden", type=int, default=2560)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=32)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    info = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
            **vars(args)}
    baseline = build(args, device, 0)
    candidate = build(args, device, 0)
    with torch.no_grad():
        for parameter in candidate.parameters():
            parameter.add_(torch.randn_like(parameter) * parameter.float().std().to(parameter.dtype) * 0.05)
    generator = torch.Generator().manual_seed(1)
    sequences = [Sequence(f"s{i}", torch.randint(0, 151000, (args.seq,), generator=generator).tolist(), 1,
                          ["text"] * (args.seq - 1)) for i in range(args.batch)]
    (batch,) = list(engine.batches(sequences, args.batch * args.seq, 0))
    tokens = sum(batch.scored)
    ids = batch.input_ids.to(device)
    base, cand = engine.ScoringModel(baseline), engine.ScoringModel(candidate)

    @torch.inference_mode()
    def forward_both():
        baseline(input_ids=ids, use_cache=False).logits
        candidate(input_ids=ids, use_cache=False).logits

    @torch.inference_mode()
    def forward_candidate():
        candidate(input_ids=ids, use_cache=False).logits

    results = {"forward_both": measure(forward_both, device, args.reps)}
    results["exact"] = measure(lambda: engine.exact_batch(base, cand, batch), device, args.reps)
    results["forward_candidate"] = measure(forward_candidate, device, args.reps)
    stored = engine.reference_batch(base, batch, args.top_k)
    results["reference"] = measure(lambda: engine.reference_batch(base, batch, args.top_k), device, args.reps)
    results["stored"] = measure(lambda: engine.stored_batch(stored, cand, batch), device, args.reps)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ref.safetensors"
        reference.write(path, stored, {"bench": True})
        size = path.stat().st_size
    for name, result in results.items():
        result["tokens_per_second"] = round(tokens / result["seconds"], 1)
    summary = {
        "exact_throughput_vs_forward": round(results["forward_both"]["seconds"] / results["exact"]["seconds"], 3),
        "stored_throughput_vs_candidate_forward": round(results["forward_candidate"]["seconds"]
                                                        / results["stored"]["seconds"], 3),
        "reference_mb_per_million_tokens": round(size / tokens, 1),
    }
    if device == "cuda":
        summary["exact_peak_vs_forward"] = round(results["exact"]["peak_gib"] / results["forward_both"]["peak_gib"], 3)
        summary["stored_peak_vs_candidate_forward"] = round(results["stored"]["peak_gib"]
                                                            / results["forward_candidate"]["peak_gib"], 3)
    report = {"info": info, "tokens": tokens, "results": results, "summary": summary}
    print(json.dumps(report, indent=1))
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "divergence_bench.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
