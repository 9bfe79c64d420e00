"""Per-GPU launch parameters of the format kernels (lowbit.quant.formats.launch)."""

import torch

from lowbit.quant.formats import launch


def test_a_gpu_with_an_entry_gets_it_and_others_the_default(monkeypatch):
    monkeypatch.setattr(launch, "_device_name", lambda index: {0: "NVIDIA H200", 1: "NVIDIA H100 80GB HBM3"}[index])
    default = (1024, 4)
    assert launch.launch_parameters("int4 dequantize", default, torch.device("cuda", 0)) == (2048, 2)
    assert launch.launch_parameters("int4 dequantize", default, torch.device("cuda", 1)) == default
    assert launch.launch_parameters("no such kernel", default, torch.device("cuda", 0)) == default


def test_interpreter_runs_take_the_defaults():
    assert launch.launch_parameters("int4 dequantize", (1024, 4), torch.device("cpu")) == (1024, 4)


def test_every_entry_is_a_size_and_a_power_of_two_warp_count():
    for by_gpu in launch.BY_DEVICE.values():
        for size, warps in by_gpu.values():
            assert size > 0 and size & (size - 1) == 0 and warps in (1, 2, 4, 8, 16)
