#!/usr/bin/env bash
# The GPU checks and benchmarks perf/RESULTS.md records, for one CUDA machine, in two parts that each fit a
# ten-minute run:
#   kernels    the format kernels bit for bit on the GPU (native conversions, then LOWBIT_TRITON_BIT_CASTS=1), the
#              instruction counts they are compiled to, and the formats bench (kernels and end to end vs copy,
#              the NVFP4 / INT4 / MXFP8 quantize, FP4 / INT4 dequantize and amax kernels over launch parameters)
#   pipelines  streaming `lowbit quantize` against the copy floor (Qwen3-4B shape; Qwen3-30B-A3B shape, 61 GB,
#              in /dev/shm) and the activation fake-quant overhead (dense Qwen3-1.7B shape; MoE decode steps)
# Each step's whole output goes to OUT/<step>.txt (JSON results beside it where the bench writes them); this
# prints each step's exit status, seconds and last lines. A step past its time limit is stopped and the next
# one runs. Step names after OUT_DIR run only those steps of the part.
#
#   PYTHONPATH=src bash perf/gpu_checks.sh kernels /tmp/gpu_out
#   PYTHONPATH=src bash perf/gpu_checks.sh pipelines /tmp/gpu_out
#   PYTHONPATH=src bash perf/gpu_checks.sh pipelines /tmp/gpu_out quantize-qwen3-4b act-quant-dense
set -u
part=${1:-}
out=${2:-}
if [[ -z "$part" || -z "$out" || ! "$part" =~ ^(kernels|pipelines)$ ]]; then
    echo "usage: bash perf/gpu_checks.sh kernels|pipelines OUT_DIR [STEP ...]" >&2
    exit 2
fi
shift 2
declare -A STEPS=([kernels]="tests-native tests-bit-casts kernel-instructions formats-bench"
                  [pipelines]="quantize-qwen3-4b quantize-qwen3-30b-a3b act-quant-dense act-quant-moe")
for name in "$@"; do
    if [[ " ${STEPS[$part]} " != *" $name "* ]]; then
        echo "perf/gpu_checks.sh: no step '$name' in $part; its steps are: ${STEPS[$part]}" >&2
        exit 2
    fi
done
only=" ${*:-${STEPS[$part]}} "  # the steps to run: those named, else all of the part
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "perf/gpu_checks.sh: no CUDA GPU visible to torch; run it on a GPU machine" >&2
    exit 2
fi
mkdir -p "$out"
cd "$(dirname "$0")/.."

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2 start
    shift 2
    [[ "$only" == *" $name "* ]] || return 0
    start=$(date +%s)
    timeout "$limit" "$@" > "$out/$name.txt" 2>&1
    echo "=== $name: exit $?, $(( $(date +%s) - start )) s"
    tail -n 30 "$out/$name.txt"
}

KERNEL_TESTS=(tests/quant/test_gpu_formats.py tests/quant/test_minifloat.py tests/quant/test_nvfp4.py
              tests/quant/test_mx.py tests/quant/test_integer.py tests/quant/test_fp8.py tests/quant/test_float16.py
              tests/quant/test_amax_triton.py tests/quant/test_fake_quant_triton.py tests/quant/test_fp4_decode.py
              tests/quant/test_grouped_act_quant.py tests/quant/test_launch.py)
shm=/dev/shm/lowbit_gpu_checks

if [[ $part == kernels ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    step tests-native 200 python3 -m pytest -q -n 8 -p no:cacheprovider "${KERNEL_TESTS[@]}"
    step tests-bit-casts 120 env LOWBIT_TRITON_BIT_CASTS=1 python3 -m pytest -q -n 8 -p no:cacheprovider \
        tests/quant/test_gpu_formats.py
    step kernel-instructions 60 python3 perf/kernel_instructions.py
    step formats-bench 200 python3 perf/quant_formats_bench.py --skip-reference --sweep --sweep-only "int4 quantize" \
        "nvfp4 quantize" "fp4 dequantize" "mxfp8 quantize" "amax" "int4 dequantize" --sweep-blocks 32,64,128,256 \
        --sweep-warps 1,2,4
else
    rm -rf "$shm"
    step quantize-qwen3-4b 150 python3 perf/quantize_checkpoint_bench.py --shape qwen3-4b --device cuda \
        --backend triton --generate-on cuda --workdir "$shm" --json "$out/quantize-qwen3-4b.json"
    rm -rf "$shm"
    df -h /dev/shm /tmp | tail -n 2  # the 61 GB source goes to RAM-backed /dev/shm, the outputs to disk
    step quantize-qwen3-30b-a3b 220 python3 perf/quantize_checkpoint_bench.py --shape qwen3-30b-a3b --device cuda \
        --backend triton --generate-on cuda --workdir "$shm" --out-dir /tmp/lowbit_gpu_checks_out --copy-gb 12 \
        --schemes nvfp4,w4a16 --json "$out/quantize-qwen3-30b-a3b.json"
    rm -rf "$shm" /tmp/lowbit_gpu_checks_out
    step act-quant-dense 110 python3 perf/act_quant_bench.py --backends triton --decode-steps 32 --reps 3 \
        --decode-batches 1,16,64 --json "$out/act-quant-dense.json"
    step act-quant-moe 110 python3 perf/moe_fake_quant_bench.py --part steps --formats nvfp4 mxfp4 fp8 --repeats 8 \
        --json "$out/act-quant-moe.json"
fi
