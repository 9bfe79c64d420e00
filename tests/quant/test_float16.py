"""float16 models (GPUs without bfloat16): every format's weight and activation emulation runs in float16 with
its scales computed in float32, so it equals the float32 emulation of the same values rounded once to float16,
saturating at 65504 instead of overflowing; MoE experts emulated in float16 match their float32 emulation."""

import pytest
import torch
from quant_cases import F16_MAX, make_weight
from test_fake_quant_experts import BUILDERS, block_input, experts_of, run_block

from lowbit.quant import fake_quant as fq
from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats import registry


def test_float16_outputs_saturate_at_65504_and_keep_nan():
    values = torch.tensor([65504.0, 65519.0, 65536.0, -65761.0, float("nan"), 1.5, -2.0**-24])
    out = mf.to_output_dtype(values, torch.float16)
    assert out.dtype == torch.float16
    assert out[:4].tolist() == [F16_MAX, F16_MAX, F16_MAX, -F16_MAX]
    assert torch.isnan(out[4]) and out[5:].tolist() == [1.5, -2.0**-24]
    assert torch.isinf(mf.to_output_dtype(torch.tensor([1e39]), torch.float32)).all()  # only float16 saturates


def exactly_scaled_weight(shape: tuple[int, int], group: int = 32) -> torch.Tensor:
    """float16 weights (float16's extremes included) whose every `group` columns have an amax of 7.5 * 2**k, so
    INT4's group scale amax / 7.5 is exact in float16 and in float32 alike."""
    w = make_weight("f16_extremes", shape, dtype=torch.float32, device="cpu").clamp(-F16_MAX / 2, F16_MAX / 2)
    groups = w.reshape(shape[0], -1, group)
    amax = groups.abs().amax(dim=2).clamp(min=2.0**-10)
    groups[:, :, 0] = -7.5 * torch.exp2(torch.ceil(torch.log2(amax / 7.5)))
    return w.to(torch.float16)


def weight_case(fmt: str) -> torch.Tensor:
    if registry.get_format(fmt).element == "INT4":
        return exactly_scaled_weight((8, 256))
    return make_weight("f16_extremes", (8, 256), dtype=torch.float16, device="cpu")


@pytest.mark.parametrize("fmt", registry.weight_formats())
def test_float16_weight_emulation_is_the_float32_one_rounded_to_float16(fmt):
    w = weight_case(fmt)
    in_float16 = fq.fake_quantize_weight(w, fmt)
    in_float32 = fq.fake_quantize_weight(w.float(), fmt)
    assert in_float16.dtype == torch.float16 and bool(torch.isfinite(in_float16).all())
    assert torch.equal(in_float16, mf.to_output_dtype(in_float32, torch.float16))


@pytest.mark.parametrize("fmt", registry.activation_formats())
def test_float16_activation_emulation_is_the_float32_one_rounded_to_float16(fmt):
    x = make_weight("f16_extremes", (6, 256), dtype=torch.float16, device="cpu").reshape(2, 3, 256)
    in_float16 = fq.fake_quantize_activation(x, fmt)
    in_float32 = fq.fake_quantize_activation(x.float(), fmt)
    assert in_float16.dtype == torch.float16 and bool(torch.isfinite(in_float16).all())
    assert torch.equal(in_float16, mf.to_output_dtype(in_float32, torch.float16))


@pytest.mark.parametrize("fmt", ["int8", "fp8", "mxfp8", "mxfp4", "nvfp4"])
@pytest.mark.parametrize("arch", list(BUILDERS))
def test_moe_experts_emulated_in_float16_match_their_float32_emulation(arch, fmt):
    exact, emulated = {}, {}
    for dtype in (torch.float32, torch.float16):
        model = BUILDERS[arch]().to(torch.float16).to(dtype)  # the same float16-representable weights
        block, x = model.model.layers[0].mlp, block_input().to(torch.float16).to(dtype)
        with torch.no_grad():
            exact[dtype] = run_block(block, x)
            emulation = fq.apply_fake_quant(model, act_quant=fmt, weight_quant=fmt, backend="ref")
            emulated[dtype] = run_block(block, x)
        assert emulation.wrapped_experts == [f"model.layers.{i}.mlp.experts" for i in range(len(experts_of(model)))]
    assert emulated[torch.float16].dtype == torch.float16

    def error(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.double() - b.double()).norm() / b.double().norm())

    # float16 matmuls round the expert hidden states, which moves a few of them across a rounding boundary of the
    # emulated format before the down projection (0.1-2% here); the emulated quantization error is far larger
    between_dtypes = error(emulated[torch.float16], emulated[torch.float32])
    assert between_dtypes < 3e-2
    assert between_dtypes < 0.5 * error(emulated[torch.float32], exact[torch.float32])
