"""Launch parameters of the format kernels that differ by GPU.

Each kernel has defaults in its module (chosen by the sweeps of `perf/quant_formats_bench.py --sweep` on the
first GPU measured); where a sweep on another GPU found a choice better by a margin, that GPU's name
(`torch.cuda.get_device_name`) maps to it here. Interpreter runs (CPU tensors) always take the defaults.
"""

import functools

import torch

# kernel -> {GPU name: (size, num_warps)}; size is the kernel's BLOCKS or CHUNK, as its module names it
BY_DEVICE: dict[str, dict[str, tuple[int, int]]] = {
    # H200, 2026-12-05: 85% of copy against 75% with the default (1024 columns, 4 warps)
    "int4 dequantize": {"NVIDIA H200": (2048, 2)},
    # H200: 65% of copy (one read) against 47% with the default (4096 elements, 8 warps) for the scalar-load
    # kernel (2026-12-05); for the 16-byte-load kernel the sweep puts 8192 elements on 1 warp first (95%, 2 warps
    # 92%; 2026-12-05, later)
    "amax": {"NVIDIA H200": (8192, 1)},
}


def launch_parameters(kernel: str, default: tuple[int, int], device: torch.device) -> tuple[int, int]:
    """(size, num_warps) for `kernel` on `device`: its entry for this GPU, else `default`."""
    if device.type != "cuda":
        return default
    return BY_DEVICE.get(kernel, {}).get(_device_name(device.index), default)


@functools.cache
def _device_name(index: int | None) -> str:
    return torch.cuda.get_device_name(index)
