"""Host time of one activation fake-quant call, next to the Linear it feeds, and its time on the stream.

HF eager decode is bound by the host: every kernel launch costs CPU time whether or not the GPU is busy. This
measures, per call, with the GPU idle in between (loops of --calls without synchronizing, best of --rounds):
    Linear                 the bf16 nn.Linear forward a fake-quantized input feeds
    Linear + hook          the same Linear with lowbit's fake-quant pre-hook, for each format
    quantize only          the hook's quantizer alone (nvfp4: one launch up to 8192 blocks, two past them)
    triton dispatch        the same kernels through Triton's regular `kernel[grid](...)` path, for comparison
    on the stream          the quantizer's calls back to back, CUDA events around them: host or GPU time,
                           whichever binds (prefill-sized inputs are bound by the GPU)
for 1, 16 and 64 rows of width 2048 (attention input) and 6144 (MLP down_proj input), and a 4 x 1024-token
prefill of each (--shapes).

    python perf/act_quant_call_bench.py
    python perf/act_quant_call_bench.py --shapes 64x6144,4096x2048 --formats nvfp4
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lowbit.quant import fake_quant
from lowbit.quant import fake_quant_triton as fqt
from lowbit.quant.formats import registry


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


def stream_us_per_call(fn, calls: int) -> float:
    for _ in range(20):
        fn()
    began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    began.record()
    for _ in range(calls):
        fn()
    ended.record()
    torch.cuda.synchronize()
    return began.elapsed_time(ended) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", default="1x2048,16x2048,64x2048,1x6144,16x6144,64x6144,4096x2048,4096x6144",
                        help="ROWSxWIDTH inputs, comma-separated")
    parser.add_argument("--formats", default=",".join(registry.activation_formats()))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    import triton

    print(json.dumps({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__}))
    results = []
    timed = lambda fn: host_us_per_call(fn, args.calls, args.rounds)
    with torch.inference_mode():
        for rows, width in (tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")):
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
                dispatched = fqt.ActivationQuantizer(fmt, direct_launch=False)
                row["triton_dispatch_us"] = timed(lambda: dispatched(x))
                results.append(row)
                print(f"rows={rows:<4} width={width:<5} {fmt:<6} linear {base:6.1f} us   linear+hook "
                      f"{row['hooked_us']:6.1f} us   quantize {row['quantize_us']:5.1f} us   (through "
                      f"kernel[grid]: {row['triton_dispatch_us']:5.1f} us)   on the stream "
                      f"{row['stream_us']:6.1f} us", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
