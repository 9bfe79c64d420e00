"""Streaming checkpoint quantization of a Qwen3-shaped random BF16 checkpoint: wall time and peak memory.

The checkpoint (--shape qwen3-1.7b: about 3.4 GB with all 28 layers; qwen3-4b: about 8 GB with all 36;
qwen3-30b-a3b: about 61 GB with all 48, 128 experts each) is generated on disk tensor by tensor, never whole in
memory.
Each measurement then runs in a fresh process, which reports its wall time and peak RSS (VmHWM):
    copy       read every tensor with safe_open and write it back in shards of the same size: the time to read
               and write the same bytes, the floor a streaming quantizer is measured against
    <scheme>   `lowbit quantize` (method rtn) of the same checkpoint on --device with --backend
With --backend triton each scheme first quantizes a one-layer checkpoint of the same shape in its own process, so
Triton's on-disk cache holds the kernels the timed run uses: the timed run is what every run after a machine's
first one costs (the warm-up's seconds, compiles included, are printed and recorded beside it).

    python perf/quantize_checkpoint_bench.py --layers 4 --schemes nvfp4,fp8            # CPU, a few minutes
    python perf/quantize_checkpoint_bench.py --device cuda --backend triton             # GPU: the full model
    python perf/quantize_checkpoint_bench.py --shape qwen3-4b --device cuda --backend triton
    python perf/quantize_checkpoint_bench.py --workdir /scratch/qbench --keep --json results.json
    python perf/quantize_checkpoint_bench.py --shape qwen3-30b-a3b --device cuda --backend triton \
        --generate-on cuda --workdir /dev/shm/qbench --out-dir /tmp/qbench_out --copy-gb 12 --schemes nvfp4,w4a16

The source stays in --workdir between runs with --keep (it is regenerated only when its shape changes).
--layers defaults to the shape's own layer count.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import shutil
import time
from pathlib import Path
from queue import Empty

QWEN3_COMMON = dict(head_dim=128, num_key_value_heads=8, vocab_size=151936, tie_word_embeddings=True,
                    model_type="qwen3", architectures=["Qwen3ForCausalLM"], torch_dtype="bfloat16", rms_norm_eps=1e-6,
                    max_position_embeddings=40960, rope_theta=1000000.0)
SHAPES = {
    "qwen3-1.7b": dict(QWEN3_COMMON, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16),
    "qwen3-4b": dict(QWEN3_COMMON, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                     num_attention_heads=32),
    "qwen3-30b-a3b": dict(QWEN3_COMMON, hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False,
                          model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"], num_experts=128,
                          num_experts_per_tok=8, moe_intermediate_size=768, decoder_sparse_step=1,
                          mlp_only_layers=[], norm_topk_prob=True),
}


def tensor_shapes(c: dict, layers: int) -> list[tuple[str, tuple[int, ...]]]:
    hidden, inter, q, kv = c["hidden_size"], c["intermediate_size"], c["num_attention_heads"] * c["head_dim"], \
        c["num_key_value_heads"] * c["head_dim"]
    shapes = [("model.embed_tokens.weight", (c["vocab_size"], hidden)), ("model.norm.weight", (hidden,))]
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes += [(f"{p}.input_layernorm.weight", (hidden,)), (f"{p}.post_attention_layernorm.weight", (hidden,)),
                   (f"{p}.self_attn.q_proj.weight", (q, hidden)), (f"{p}.self_attn.k_proj.weight", (kv, hidden)),
                   (f"{p}.self_attn.v_proj.weight", (kv, hidden)), (f"{p}.self_attn.o_proj.weight", (hidden, q)),
                   (f"{p}.self_attn.q_norm.weight", (c["head_dim"],)),
                   (f"{p}.self_attn.k_norm.weight", (c["head_dim"],))]
        if "num_experts" in c:  # Qwen3-MoE: a router and every expert's three projections
            expert_inter = c["moe_intermediate_size"]
            shapes.append((f"{p}.mlp.gate.weight", (c["num_experts"], hidden)))
            for e in range(c["num_experts"]):
                shapes += [(f"{p}.mlp.experts.{e}.gate_proj.weight", (expert_inter, hidden)),
                           (f"{p}.mlp.experts.{e}.up_proj.weight", (expert_inter, hidden)),
                           (f"{p}.mlp.experts.{e}.down_proj.weight", (hidden, expert_inter))]
        else:
            shapes += [(f"{p}.mlp.gate_proj.weight", (inter, hidden)), (f"{p}.mlp.up_proj.weight", (inter, hidden)),
                       (f"{p}.mlp.down_proj.weight", (hidden, inter))]
    if not c["tie_word_embeddings"]:
        shapes.append(("lm_head.weight", (c["vocab_size"], hidden)))
    return shapes


def checkpoint_bytes(config: dict, layers: int) -> int:
    """Bytes of the bf16 tensors of the checkpoint `generate` writes."""
    return sum(2 * math.prod(size) for _, size in tensor_shapes(config, layers))


def generate(source: Path, shape: str, layers: int, shard_bytes: int, device: str) -> None:
    """Write the random checkpoint, its values drawn on `device` (a GPU draws a 61 GB MoE in seconds)."""
    import torch

    from lowbit.quant.safetensors_io import ShardWriter, write_config

    marker = source / "bench_shape.json"
    identity = {"shape": shape, "layers": layers, "shard_bytes": shard_bytes, "generated_on": device}
    if marker.is_file() and json.loads(marker.read_text()) == identity:
        return
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    generator = torch.Generator(device).manual_seed(0)
    writer = ShardWriter(source, shard_bytes)
    config = SHAPES[shape]
    for name, size in tensor_shapes(config, layers):
        if len(size) == 1:
            tensor = torch.ones(size)
        else:
            tensor = (torch.randn(size, generator=generator, device=device) * 0.02).to(torch.bfloat16).cpu()
        writer.add(name, tensor.to(torch.bfloat16))
    writer.finish()
    write_config(source, {**config, "num_hidden_layers": layers})
    marker.write_text(json.dumps(identity))


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_copy(source: str, out: str, shard_bytes: int, copy_bytes: int | None, queue) -> None:
    """Copy the checkpoint's tensors in order, all of them or the first `copy_bytes` worth."""
    from lowbit.quant.safetensors_io import CheckpointReader, ShardWriter

    start = time.perf_counter()
    reader = CheckpointReader(Path(source))
    Path(out).mkdir(parents=True)
    writer = ShardWriter(Path(out), shard_bytes)
    for name in reader.names():
        if copy_bytes is not None and writer.total_bytes >= copy_bytes:
            break
        writer.add(name, reader.get(name))
    writer.finish()
    queue.put({"seconds": time.perf_counter() - start, "bytes_written": writer.total_bytes,
               "peak_rss_gib": peak_rss_gib()})


def run_quantize(source: str, out: str, scheme: str, device: str, backend: str, shard_bytes: int, queue) -> None:
    import torch

    from lowbit.quant.checkpoint import QuantizeRequest, quantize_checkpoint

    result = quantize_checkpoint(QuantizeRequest(model=source, out=Path(out), scheme=scheme, device=device,
                                                 backend=backend, max_shard_bytes=shard_bytes))
    gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    queue.put({"seconds": result.seconds, "bytes_read": result.bytes_read, "bytes_written": result.bytes_written,
               "peak_rss_gib": peak_rss_gib(), "gpu_peak_gib": gpu, "shards": len(result.shards)})


def in_fresh_process(target, *args) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not process.is_alive():  # it failed: its traceback is printed above
                raise SystemExit(f"{target.__name__} failed with exit code {process.exitcode}") from None
    process.join()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen3-1.7b", choices=sorted(SHAPES), help="the model's tensor shapes")
    parser.add_argument("--layers", type=int, help="decoder layers (default: the shape's own, 28 or 36)")
    parser.add_argument("--schemes", default="nvfp4,mxfp4,fp8,w4a16",
                        help="comma-separated lowbit quantize schemes (nvfp4, mxfp4, mxfp8, fp8, fp8-block, int8, "
                             "w4a16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backend", default="ref", choices=["ref", "triton"])
    parser.add_argument("--shard-mb", type=int, default=1024, help="output shard size (also the source's)")
    parser.add_argument("--workdir", default="/tmp/lowbit_quantize_bench", help="where the source checkpoint goes")
    parser.add_argument("--out-dir", help="where each run writes its output, removed after it (default: WORKDIR/out; "
                                          "put it on another file system when the source fills the workdir's)")
    parser.add_argument("--keep", action="store_true", help="keep the generated source checkpoint")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--generate-on", default="cpu", help="where the random values are drawn (cuda: much faster)")
    parser.add_argument("--copy-gb", type=float,
                        help="copy only the first this many GB and scale its time to the whole checkpoint (for "
                             "checkpoints whose full copy does not fit beside the source)")
    args = parser.parse_args()

    import torch

    from lowbit.quant.schemes import SCHEMES

    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown or not schemes:
        parser.error(f"--schemes: {'unknown ' + ', '.join(unknown) if unknown else 'none given'}; choose from "
                     f"{', '.join(SCHEMES)}")
    layers = SHAPES[args.shape]["num_hidden_layers"] if args.layers is None else args.layers
    if layers < 1:
        parser.error(f"--layers must be at least 1, got {layers}")

    work = Path(args.workdir)
    source, shard_bytes = work / "source", args.shard_mb * 2**20
    out = Path(args.out_dir) if args.out_dir else work / "out"
    tensor_bytes = checkpoint_bytes(SHAPES[args.shape], layers)  # what the copy writes (the files add headers)
    needed = tensor_bytes
    if args.backend == "triton":
        needed += checkpoint_bytes(SHAPES[args.shape], 1)  # the warm-up twin
    existing = next(p for p in (work, *work.parents) if p.exists())
    free = shutil.disk_usage(existing).free + sum(p.stat().st_size for p in source.glob("*.safetensors"))
    if free < needed:
        raise SystemExit(f"--workdir {work} has {free / 1e9:.1f} GB free for a {needed / 1e9:.1f} GB source: choose "
                         "a larger file system or fewer --layers")
    start = time.perf_counter()
    generate(source, args.shape, layers, shard_bytes, args.generate_on)
    source_bytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    print(f"source: {args.shape}, {layers} layers, {source_bytes / 1e9:.2f} GB ({time.perf_counter() - start:.0f} s to "
          f"generate or reuse); torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}")
    results = {"shape": args.shape, "layers": layers, "source_bytes": source_bytes, "device": args.device, "backend": args.backend,
               "runs": {}}
    shutil.rmtree(out, ignore_errors=True)
    copy_bytes = None if args.copy_gb is None else int(args.copy_gb * 1e9)
    copy = in_fresh_process(run_copy, str(source), str(out), shard_bytes, copy_bytes)
    shutil.rmtree(out, ignore_errors=True)
    if copy["bytes_written"] < tensor_bytes:  # a partial copy (--copy-gb): the floor at its rate
        print(f"copy floor from the first {copy['bytes_written'] / 1e9:.1f} GB: {copy['seconds']:.1f} s, scaled")
        copy = {**copy, "seconds": copy["seconds"] * tensor_bytes / copy["bytes_written"], "scaled_from_bytes":
                copy["bytes_written"], "bytes_written": tensor_bytes}
    results["runs"]["copy"] = copy
    print(f"{'run':<10} {'seconds':>8} {'x copy':>7} {'GB/s in':>8} {'out GB':>7} {'peak RSS GiB':>13} {'GPU GiB':>8}")
    print(f"{'copy':<10} {copy['seconds']:8.1f} {1.0:7.2f} {source_bytes / 1e9 / copy['seconds']:8.2f} "
          f"{copy['bytes_written'] / 1e9:7.2f} {copy['peak_rss_gib']:13.2f} {'-':>8}")
    warm_source = work / "warm_up_source"
    if args.backend == "triton":
        generate(warm_source, args.shape, 1, shard_bytes, args.generate_on)
    for scheme in schemes:
        if args.backend == "triton":
            warm = in_fresh_process(run_quantize, str(warm_source), str(out), scheme, args.device,
                                    args.backend, shard_bytes)
            shutil.rmtree(out, ignore_errors=True)
            results["runs"][f"{scheme} warm-up"] = warm
            print(f"{scheme + ' warm-up':<10} {warm['seconds']:8.1f} (one layer, compiling what the cache lacks)")
        run = in_fresh_process(run_quantize, str(source), str(out), scheme, args.device, args.backend,
                               shard_bytes)
        shutil.rmtree(out, ignore_errors=True)
        results["runs"][scheme] = run
        gpu = f"{run['gpu_peak_gib']:8.2f}" if run["gpu_peak_gib"] is not None else f"{'-':>8}"
        print(f"{scheme:<10} {run['seconds']:8.1f} {run['seconds'] / copy['seconds']:7.2f} "
              f"{source_bytes / 1e9 / run['seconds']:8.2f} {run['bytes_written'] / 1e9:7.2f} "
              f"{run['peak_rss_gib']:13.2f} {gpu}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
