"""FP8 E4M3: scales = amax / 448 per tensor / channel / 128x128 block, per-token fake-quant, kernel == reference."""

import pytest
import torch
from quant_cases import (FINITE_CASES, FLOAT16_CASES, assert_bits_equal, assert_values_equal, make_weight, requires_triton,
                         rounding_edge_groups, sqnr_db)

from lowbit.quant.formats import fp8
from lowbit.quant.formats import minifloat as mf

SHAPES = {"tensor": (6, 80), "channel": (6, 80), "block": (128, 256)}


@pytest.mark.parametrize("granularity, scale_shape", [("tensor", (1,)), ("channel", (256, 1)), ("block", (2, 3))])
def test_scale_is_amax_over_448(granularity, scale_shape):
    w = make_weight("student_t", (256, 384))
    q = fp8.quantize(w, granularity)
    assert q.weight.dtype == torch.float8_e4m3fn and q.weight_scale.dtype == torch.float32
    assert tuple(q.weight_scale.shape) == scale_shape
    expected = mf.true_divide(fp8.group_amax(w, granularity), 448.0)  # IEEE division on CPU and CUDA alike
    torch.testing.assert_close(q.weight_scale, expected, atol=0, rtol=0)
    assert q.weight.float().abs().max().item() == 448.0


def test_all_zero_channel_gets_the_scale_floor():
    w = make_weight("normal", (2, 64))
    w[1] = 0
    q = fp8.quantize(w, "channel")
    assert q.weight_scale[1, 0].item() == fp8.SCALE_FLOOR and q.weight[1].float().count_nonzero() == 0


@pytest.mark.parametrize(
    "weight, granularity, message",
    [
        (torch.zeros(100, 128), "block", "not a multiple of the"),
        (torch.zeros(4, 8, 8), "channel", "must be 2-D"),
        (torch.zeros(4, 8), "row", "granularity must be one of"),
        (torch.full((4, 8), float("inf")), "tensor", "NaN or Inf"),
    ],
)
def test_bad_input_raises_value_error(weight, granularity, message):
    with pytest.raises(ValueError, match=message):
        fp8.quantize(weight, granularity)


@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
@pytest.mark.parametrize("case", ["normal", "student_t", "tiny", "huge"])
def test_round_trip_sqnr_floor(granularity, case):
    w = make_weight(case, (128, 256))
    assert sqnr_db(w, fp8.dequantize(fp8.quantize(w, granularity))) >= 28.0


def test_per_token_fake_quant_uses_one_scale_per_row():
    x = make_weight("normal", (3, 64))
    x = x * torch.tensor([[1.0], [1e-3], [1e3]], dtype=x.dtype, device=x.device)
    y = fp8.fake_quantize_per_token(x)
    assert y.dtype == x.dtype and y.shape == x.shape
    for row in range(3):
        assert sqnr_db(x[row], y[row]) >= 28.0


@requires_triton
@pytest.mark.parametrize("case", FINITE_CASES)
@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_triton_matches_reference(granularity, case):
    w = make_weight(case, SHAPES[granularity])
    ref, out = fp8.quantize(w, granularity), fp8.quantize(w, granularity, backend="triton")
    assert_bits_equal(out.weight, ref.weight)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(fp8.dequantize(out, backend="triton"), fp8.dequantize(ref))


@requires_triton
@pytest.mark.parametrize("case", FLOAT16_CASES)
@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_triton_matches_reference_in_float16(granularity, case):
    w = make_weight(case, SHAPES[granularity], dtype=torch.float16)
    ref, out = fp8.quantize(w, granularity), fp8.quantize(w, granularity, backend="triton")
    assert_bits_equal(out.weight, ref.weight)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(fp8.dequantize(out, torch.float16, backend="triton"), fp8.dequantize(ref, torch.float16))


@requires_triton
@pytest.mark.parametrize("case", FINITE_CASES)
@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_triton_matches_reference_in_float32(granularity, case):
    w = make_weight(case, SHAPES[granularity], dtype=torch.float32)
    ref, out = fp8.quantize(w, granularity), fp8.quantize(w, granularity, backend="triton")
    assert_bits_equal(out.weight, ref.weight)
    assert_bits_equal(out.weight_scale, ref.weight_scale)


@requires_triton
@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_triton_rejects_nonfinite_like_the_reference(granularity):
    w = make_weight("nan_inf", SHAPES[granularity])
    for backend in ("ref", "triton"):
        with pytest.raises(ValueError, match="NaN or Inf"):
            fp8.quantize(w, granularity, backend=backend)


@requires_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_triton_per_token_matches_reference(dtype):
    x = make_weight("student_t", (6, 72), dtype=dtype).reshape(2, 3, 72)
    assert_values_equal(fp8.fake_quantize_per_token(x, backend="triton"), fp8.fake_quantize_per_token(x))


@requires_triton
@pytest.mark.parametrize("granularity", ["channel", "block"])
def test_triton_matches_reference_on_every_rounding_edge(granularity):
    """Quotients on and one ulp around every E4M3 midpoint: the kernel's division must be exact."""
    from lowbit.quant.formats import minifloat as mf

    grid = mf.round_magnitude(torch.linspace(0, 448, 20000), mf.E4M3_MBITS, mf.E4M3_EMIN, mf.E4M3_MAX).unique()
    midpoints = (grid[1:] + grid[:-1]) / 2
    if granularity == "channel":
        w = rounding_edge_groups(fp8.scale_from_amax, midpoints, groups=64, group_size=256)
    else:  # one 128x128 tile: its amax fixes one scale for all of it
        w = rounding_edge_groups(fp8.scale_from_amax, midpoints, groups=128, group_size=128, same_amax=True)
    ref, out = fp8.quantize(w, granularity), fp8.quantize(w, granularity, backend="triton")
    assert_bits_equal(out.weight, ref.weight)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
