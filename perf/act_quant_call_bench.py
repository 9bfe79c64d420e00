"""Host time of one activation fake-quant call, next to the Linear it feeds, and its time on the stream.

HF eager decode is bound by the host: every kernel launch costs CPU time whether or not the GPU is busy. This
measures, per call, with the GPU idle in between (loops of --calls without synchronizing, best of --rounds):
    Linear                 the bf16 nn.Linear forward a fake-quantized input feeds
    Linear + hook          the same Linear with lowbit's fake-quant pre-hook, for each format
    quantize only          the hook's quantizer alone (nvfp4: one launch up to 8192 blocks, two past them)
    triton dispatch        the same kernels through Triton's regular `kernel[grid](...)` path, for comparison
    on the stream          the quantizer's calls back to back, CUDA events around them: host or GPU time,
                           whichever binds (prefill-sized inputs are bound by the GPU)
    on the GPU             the quantizer's GPU time alone: a CUDA graph of --graph-calls calls, replayed
for 1, 16 and 64 rows of width 2048 (attention input) and 6144 (MLP down_proj input), and a 4 x 1024-token
prefill of each (--shapes).

--grouped ROWS,... times instead the NVFP4 per-expert quantizer (grouped_act_quant_triton: Qwen3-30B-A3B's 128
experts, width 2048, rows routed uniformly at random) the same ways, beside a copy.

--nvfp4-kernels times instead the NVFP4 kernels alone, GPU time only (a CUDA graph of --graph-calls launches,
replayed), over their launch parameters, beside a copy of the input: for inputs up to 8192 blocks the one launch
over (CHUNK, warps); for larger ones the amax and tables over (CHUNK, warps, programs per SM) and the
blocks over (BLOCKS, warps).

    python perf/act_quant_call_bench.py
    python perf/act_quant_call_bench.py --shapes 64x6144,4096x2048 --formats nvfp4
    python perf/act_quant_call_bench.py --grouped 8,512,32768
    python perf/act_quant_call_bench.py --nvfp4-kernels --shapes 4096x2048,4096x6144
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import triton

from lowbit.quant import fake_quant
from lowbit.quant import fake_quant_triton as fqt
from lowbit.quant import grouped_act_quant_triton as gqt
from lowbit.quant.formats import amax_triton, registry
from lowbit.quant.formats import minifloat_triton as mft


def host_us_per_call(fn, calls: int, rounds: int) -> float:
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - began) / calls * 1e6)
        torch.cuda.synchronize()
    return best


def event_us(run, times: int) -> float:
    """Stream time of run() called `times` times back to back, CUDA events around them, in us."""
    began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    began.record()
    for _ in range(times):
        run()
    ended.record()
    torch.cuda.synchronize()
    return began.elapsed_time(ended) * 1e3


def stream_us_per_call(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    return event_us(fn, calls) / calls


def graph_us_per_call(fn, calls: int, replays: int = 10) -> float:
    """GPU time of one fn() call: `calls` of them captured in a CUDA graph, replayed `replays` times."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    return event_us(graph.replay, replays) / (calls * replays)


def sweep_nvfp4_kernels(shapes: list[tuple[int, int]], calls: int) -> list[dict]:
    """The NVFP4 kernels alone over launch parameters, for bf16 inputs of `shapes`: the one-launch kernel where
    the quantizer launches it, else the amax-and-tables and blocks kernels."""
    device = torch.device("cuda")
    native = mft.native_casts(device)
    results = []
    for rows, width in shapes:
        x = torch.randn(rows, width, device=device, dtype=torch.bfloat16)
        out = torch.empty_like(x)
        out_arg, out_is_bf16 = mft.output_view(out, native)
        copy_us = graph_us_per_call(lambda: out.copy_(x), calls)
        print(f"{rows} x {width} bf16: copy {copy_us:.1f} us")
        shape = {"rows": rows, "width": width, "copy_us": copy_us}
        if x.numel() // 16 <= fqt.NVFP4_ONE_LAUNCH_MAX_BLOCKS:
            results += _sweep_one_launch(x, out_arg, out_is_bf16, native, calls, shape)
        else:
            results += _sweep_two_launches(x, out_arg, out_is_bf16, native, calls, shape)
    return results


def _sweep_one_launch(x, out_arg, out_is_bf16: bool, native: bool, calls: int, shape: dict) -> list[dict]:
    n_blocks = x.numel() // 16
    programs = triton.cdiv(n_blocks, fqt.NVFP4_GROUP_BLOCKS)
    results = []
    for chunk in (1024, 2048, 4096, 8192):
        for warps in (2, 4, 8, 16):
            us = graph_us_per_call(lambda: fqt._nvfp4_one_launch_kernel[(programs,)](
                x, out_arg, n_blocks, triton.cdiv(x.numel(), chunk), CHUNK=chunk, BLOCKS=fqt.NVFP4_GROUP_BLOCKS,
                OUT_IS_BF16=out_is_bf16, NATIVE=native, num_warps=warps), calls)
            current = (chunk, warps) == (fqt.NVFP4_ONE_LAUNCH_CHUNK, fqt.NVFP4_ONE_LAUNCH_WARPS)
            results.append(dict(shape, kernel="one launch", programs=programs, chunk=chunk, warps=warps, us=us))
            print(f"  one launch  programs={programs:<3} CHUNK={chunk:<5} warps={warps:<2}: {us:6.1f} us"
                  f"{'   (the launch used)' if current else ''}")
    return results


def _sweep_two_launches(x, out_arg, out_is_bf16: bool, native: bool, calls: int, shape: dict) -> list[dict]:
    device = x.device
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    state = fqt.nvfp4_state(device)
    chunk_now, warps_now = amax_triton.launch_for(device)
    numel = x.numel()
    n_blocks = numel // 16
    results = []
    for chunk in (2048, 4096, 8192):
        for warps in (1, 2, 4, 8):
            for per_sm in (2, 4, 8):
                programs = min(triton.cdiv(numel, chunk), per_sm * sms)
                us = graph_us_per_call(lambda: fqt._nvfp4_amax_tables_kernel[(programs,)](
                    x, *state, n_blocks, triton.cdiv(numel, chunk), CHUNK=chunk, NATIVE=native,
                    num_warps=warps), calls)
                current = (chunk, warps, per_sm) == (chunk_now, warps_now, amax_triton.PROGRAMS_PER_SM)
                results.append(dict(shape, kernel="amax and tables", chunk=chunk, warps=warps,
                                    programs_per_sm=per_sm, us=us))
                print(f"  amax and tables  CHUNK={chunk:<5} warps={warps} programs/SM={per_sm}: {us:6.1f} us"
                      f"{'   (the launch used)' if current else ''}")
    for blocks in (32, 64, 128, 256):
        for warps in (1, 2, 4, 8):
            us = graph_us_per_call(lambda: fqt._nvfp4_tables_kernel[(triton.cdiv(n_blocks, blocks),)](
                x, *state, out_arg, n_blocks, BLOCKS=blocks, OUT_IS_BF16=out_is_bf16, NATIVE=native,
                num_warps=warps),
                calls)
            current = (blocks, warps) == (fqt.NVFP4_GROUP_BLOCKS, fqt.NVFP4_TABLE_WARPS)
            results.append(dict(shape, kernel="blocks", blocks=blocks, warps=warps, us=us))
            print(f"  blocks           BLOCKS={blocks:<4} warps={warps}: {us:6.1f} us"
                  f"{'   (the launch used)' if current else ''}")
    return results


def time_grouped(rows_list: list[int], calls: int, rounds: int, graph_calls: int, device: str = "cuda") -> list[dict]:
    """The NVFP4 per-expert quantizer for 128 experts of width 2048: host, stream and GPU time per call."""
    quantizer = gqt.GroupedQuantizer(registry.activation_format("nvfp4"))
    generator = torch.Generator().manual_seed(0)
    results = []
    for rows in rows_list:
        counts = torch.bincount(torch.randint(0, 128, (rows,), generator=generator), minlength=128)
        ends = torch.cumsum(counts, 0).to(device=device, dtype=torch.int32)
        x = torch.randn(rows, 2048, device=device, dtype=torch.bfloat16)
        copy = torch.empty_like(x)
        call = lambda: quantizer(x, ends)
        row = {"rows": rows, "width": 2048, "experts": 128, "quantize_us": host_us_per_call(call, calls, rounds),
               "stream_us": stream_us_per_call(call, calls), "gpu_us": graph_us_per_call(call, graph_calls),
               "copy_gpu_us": graph_us_per_call(lambda: copy.copy_(x), graph_calls)}
        results.append(row)
        print(f"grouped rows={rows:<6} 128 experts x 2048: quantize {row['quantize_us']:5.1f} us   on the stream "
              f"{row['stream_us']:6.1f} us   on the GPU {row['gpu_us']:6.1f} us (copy {row['copy_gpu_us']:5.1f} us)",
              flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", default="1x2048,16x2048,64x2048,1x6144,16x6144,64x6144,4096x2048,4096x6144",
                        help="ROWSxWIDTH inputs, comma-separated")
    parser.add_argument("--formats", default=",".join(registry.activation_formats()))
    parser.add_argument("--grouped", help="ROWS,...: time the NVFP4 per-expert quantizer instead")
    parser.add_argument("--nvfp4-kernels", action="store_true",
                        help="time the NVFP4 kernels alone, over launch parameters")
    parser.add_argument("--graph-calls", type=int, default=20, help="calls per CUDA graph")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]

    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}))
    if args.nvfp4_kernels:
        results = sweep_nvfp4_kernels(shapes, args.graph_calls)
    elif args.grouped:
        results = time_grouped([int(rows) for rows in args.grouped.split(",")], args.calls, args.rounds,
                               args.graph_calls)
    if args.nvfp4_kernels or args.grouped:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return
    results = []
    timed = lambda fn: host_us_per_call(fn, args.calls, args.rounds)
    with torch.inference_mode():
        for rows, width in shapes:
            x = torch.randn(rows, width, device="cuda", dtype=torch.bfloat16)
            linear = torch.nn.Linear(width, 2048, bias=False, device="cuda", dtype=torch.bfloat16)
            base = timed(lambda: linear(x))
            for fmt in args.formats.split(","):
                hook = fake_quant.ActivationFakeQuant(fmt, "triton")
                handle = linear.register_forward_pre_hook(hook)

                def hooked():
                    hook.clear()  # each call quantizes, as for o_proj / down_proj
                    linear(x)

                row = {"rows": rows, "width": width, "format": fmt, "linear_us": base, "hooked_us": timed(hooked)}
                handle.remove()
                quantizer = fqt.ActivationQuantizer(fmt)
                row["quantize_us"] = timed(lambda: quantizer(x))
                row["stream_us"] = stream_us_per_call(lambda: quantizer(x), args.calls)
                row["gpu_us"] = graph_us_per_call(lambda: quantizer(x), args.graph_calls)
                dispatched = fqt.ActivationQuantizer(fmt, direct_launch=False)
                row["triton_dispatch_us"] = timed(lambda: dispatched(x))
                results.append(row)
                print(f"rows={rows:<4} width={width:<5} {fmt:<6} linear {base:6.1f} us   linear+hook "
                      f"{row['hooked_us']:6.1f} us   quantize {row['quantize_us']:5.1f} us   (through "
                      f"kernel[grid]: {row['triton_dispatch_us']:5.1f} us)   on the stream "
                      f"{row['stream_us']:6.1f} us   on the GPU {row['gpu_us']:6.1f} us", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
