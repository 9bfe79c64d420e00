"""Activation fake-quant: a wrapped nn.Linear equals an independent float64 quantize -> dequantize -> matmul.

The float64 oracle below is written from the format definitions (round half to even onto each minifloat's
grid, scales as each convention defines them), not from lowbit's fp32 arithmetic, so the tolerance only has
to absorb fp32 / bf16 / fp16 rounding of the matmul and of the dequantized values.
"""

import pytest
import torch
from quant_cases import DEVICE, requires_triton
from torch import nn

from lowbit.quant import fake_quant as fq
from lowbit.quant.formats import registry

FORMATS = registry.activation_formats()
IN_FEATURES, OUT_FEATURES = 128, 48
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}  # relative Frobenius error of the output


def round_to_minifloat(v: torch.Tensor, mbits: int, emin: int, max_value: float) -> torch.Tensor:
    """float64 v rounded half to even onto a sign-magnitude float grid with `mbits` mantissa bits, saturating."""
    magnitude = v.abs().clamp(max=max_value)
    exponent = torch.floor(torch.log2(magnitude.clamp(min=2.0**-200))).clamp(min=emin)
    step = torch.exp2(exponent - mbits)
    return torch.sign(v) * torch.clamp(torch.round(magnitude / step) * step, max=max_value)


def e4m3(v):
    return round_to_minifloat(v, 3, -6, 448.0)


def e2m1(v):
    return round_to_minifloat(v, 1, 0, 6.0)


def oracle(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """float64 quantize -> dequantize of x (..., K) per the documented conventions."""
    x = x.to(torch.float64)
    rows = x.reshape(-1, x.shape[-1])
    if fmt in ("int8", "fp8"):
        amax = rows.abs().amax(dim=1, keepdim=True)
        if fmt == "int8":
            q = torch.clamp(torch.round(rows * 127 / amax), -128, 127)
            out = q * amax / 127
        else:
            scale = amax / 448
            out = e4m3(rows / scale) * scale
        out = torch.where(amax > 0, out, torch.zeros_like(out))
    elif fmt in ("mxfp8", "mxfp4"):
        blocks = rows.reshape(-1, 32)
        amax = blocks.abs().amax(dim=1, keepdim=True)
        exponent, significand = torch.floor(torch.log2(amax)), amax / torch.exp2(torch.floor(torch.log2(amax)))
        exponent = exponent + (significand >= 1.75).to(torch.float64)  # the "even" rule rounds amax up
        element_emax, element = (8, e4m3) if fmt == "mxfp8" else (2, e2m1)
        scale = torch.exp2(exponent - element_emax)
        out = torch.where(amax > 0, element(blocks / scale) * scale, torch.zeros_like(blocks))
    else:
        blocks = rows.reshape(-1, 16)
        global_scale = 448 * 6 / rows.abs().max()
        block_scale = e4m3(blocks.abs().amax(dim=1, keepdim=True) / 6 * global_scale)
        block_scale = torch.where(block_scale == 0, torch.full_like(block_scale, 0.125), block_scale)
        effective = block_scale / global_scale
        out = e2m1(blocks / effective) * effective
    return out.reshape(x.shape)


def make_input(kind: str, dtype, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((3, 7, IN_FEATURES), generator=generator)
    if kind == "outliers":  # a few hot channels, as in LLM activations, plus heavy-tailed noise and a zero token
        x = x / torch.randn((3, 7, IN_FEATURES), generator=generator).abs().clamp(min=0.05).sqrt()
        x[..., [5, 77, 100]] *= 60.0
        x[1, 2] = 0.0
    return x.to(device=DEVICE, dtype=dtype)


def wrapped_linear(fmt: str, dtype, backend: str) -> tuple[nn.Module, fq.Emulation]:
    torch.manual_seed(1)
    model = nn.Module()
    model.layers = nn.ModuleList([nn.Module()])
    model.layers[0].proj = nn.Linear(IN_FEATURES, OUT_FEATURES)
    model = model.to(device=DEVICE, dtype=dtype)
    emulation = fq.apply_fake_quant(model, act_quant=fmt, backend=backend)
    assert emulation.wrapped == ["layers.0.proj"]
    return model.layers[0].proj, emulation


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.to(torch.float64), b.to(torch.float64)
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("backend", ["ref", pytest.param("triton", marks=requires_triton)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["random", "outliers"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_wrapped_linear_matches_float64_quantize_dequantize_matmul(fmt, kind, dtype, backend):
    layer, _ = wrapped_linear(fmt, dtype, backend)
    x = make_input(kind, dtype)
    with torch.no_grad():
        out = layer(x)
    weight, bias = layer.weight.detach().to(torch.float64), layer.bias.detach().to(torch.float64)
    expected = oracle(x, fmt) @ weight.T + bias
    unquantized = x.to(torch.float64) @ weight.T + bias
    assert out.dtype == dtype and out.shape == (3, 7, OUT_FEATURES)
    assert relative_error(out, expected) < TOLERANCE[dtype]
    # the emulation is visible: the quantization error is far above the float32 tolerance
    assert relative_error(unquantized, expected) > 100 * TOLERANCE[torch.float32]


def test_oracle_grid_rounding_is_half_to_even():
    values = torch.tensor([0.25, 0.75, 1.25, 2.5, 3.5, 5.0, 7.0, -2.5], dtype=torch.float64)
    assert e2m1(values).tolist() == [0.0, 1.0, 1.0, 2.0, 4.0, 4.0, 6.0, -2.0]
    assert e4m3(torch.tensor([17.0, 19.0, 500.0, 2.0**-10], dtype=torch.float64)).tolist() == [16.0, 20.0, 448.0, 0.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_reference_on_special_rows(fmt):
    x = torch.randn(4, 64)
    x[1] = 0.0
    out = fq.fake_quantize_activation(x, fmt)
    assert torch.equal(out[1], torch.zeros(64))
    torch.testing.assert_close(out.double(), oracle(x, fmt), rtol=1e-6, atol=0)
    poisoned = x.clone()
    poisoned[2, 5] = float("nan")
    out = fq.fake_quantize_activation(poisoned, fmt)
    assert torch.isnan(out[2, 5])
    if fmt in ("int8", "fp8"):  # per-token groups: only the poisoned row
        assert torch.isnan(out[2]).all() and torch.isfinite(out[[0, 1, 3]]).all()


def test_int8_follows_the_per_token_reciprocal_convention():
    x = torch.tensor([[1.0, -0.5, 0.25, 2.0 / 127]])  # amax 1: q = round(x * 127)
    codes = fq.fake_quantize_activation(x, "int8") * 127
    assert [round(c, 4) for c in codes[0].tolist()] == [127.0, -64.0, 32.0, 2.0]  # -63.5 -> -64 (half to even)
