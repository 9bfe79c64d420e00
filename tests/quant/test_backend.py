"""Backend dispatch: an unknown backend or an unusable Triton is a ValueError that names the fix."""

import pytest
import torch

from lowbit.quant.formats import backend, nvfp4


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        nvfp4.quantize(torch.ones(1, 16), backend="cuda")


def test_triton_missing_names_the_install(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    with pytest.raises(ValueError, match="pip install triton"):
        nvfp4.quantize(torch.ones(1, 16), backend="triton")


def test_triton_on_cpu_without_interpreter_names_the_fix(monkeypatch):
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        nvfp4.quantize(torch.ones(1, 16), backend="triton")


@pytest.mark.skipif(not backend.triton_available(), reason="triton is not installed: pip install triton")
def test_native_casts_only_off_the_interpreter_and_unless_forced_off(monkeypatch):
    from lowbit.quant.formats import minifloat_triton

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not minifloat_triton.native_casts_allowed()
    monkeypatch.delenv("TRITON_INTERPRET")
    assert minifloat_triton.native_casts_allowed()
    monkeypatch.setenv("LOWBIT_TRITON_BIT_CASTS", "1")
    assert not minifloat_triton.native_casts_allowed()


@pytest.mark.skipif(not backend.triton_available(), reason="triton is not installed: pip install triton")
@pytest.mark.parametrize("capability, native", [((7, 0), False), ((7, 5), False), ((8, 0), False), ((8, 6), False),
                                                ((8, 9), True), ((9, 0), True), ((10, 0), True)])
def test_native_casts_only_on_gpus_with_e4m3_conversions(monkeypatch, capability, native):
    """Triton has E4M3 from compute capability 8.9: V100, T4, A100 and A10 GPUs run the bit-arithmetic twins."""
    from lowbit.quant.formats import minifloat_triton

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("LOWBIT_TRITON_BIT_CASTS", raising=False)
    monkeypatch.setattr(minifloat_triton, "_capability", lambda index: capability)
    assert minifloat_triton.native_casts(torch.device("cuda", 0)) is native
    assert not minifloat_triton.native_casts(torch.device("cpu"))
