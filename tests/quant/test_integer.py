"""INT8 / INT4: compressed-tensors scale convention, pack-quantized bit layout, round trips, SQNR floors."""

import pytest
import torch
from quant_cases import (FINITE_CASES, assert_bits_equal, assert_values_equal, make_weight, requires_triton,
                         rounding_edge_groups, sqnr_db)

from lowbit.quant.formats import integer


def test_int4_pack_layout_lowest_bits_first_offset_by_8():
    values = torch.tensor([[-8, -7, 0, 1, 2, 3, 7, -1]])
    # nibbles value + 8 = 0, 1, 8, 9, 10, 11, 15, 7; element i in bits 4i..4i+3
    expected_bits = 0x7FBA9810
    word = integer.pack_int4(values)
    assert word.dtype == torch.int32 and word.shape == (1, 1)
    assert word.item() & 0xFFFFFFFF == expected_bits


def test_int4_pack_unpack_round_trip():
    values = torch.randint(-8, 8, (16, 256), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(integer.unpack_int4(integer.pack_int4(values)), values.to(torch.int8), atol=0, rtol=0)


def test_symmetric_scale_is_amax_over_half_the_range():
    amax = 127.5 / 64  # INT8 scale exactly 1/64, INT4 scale exactly 17/64
    w = torch.tensor([[1.0, -amax, 0.5, amax] * 8])
    q8 = integer.quantize_int8(w)
    assert q8.weight_scale.item() == 1 / 64
    assert q8.data[0, :4].tolist() == [64, -128, 32, 127]  # -amax -> -128 (half to even), +amax clamps to 127
    q4 = integer.quantize_int4(w, group_size=32)
    assert q4.weight_scale.item() == 17 / 64
    assert integer.unpack_int4(q4.data)[0, :4].tolist() == [4, -8, 2, 7]


@pytest.mark.parametrize(
    "quantize, group_size, floor_db",
    [
        (integer.quantize_int8, None, 38.0),
        (integer.quantize_int8, 128, 38.0),
        (integer.quantize_int4, 128, 17.0),
        (integer.quantize_int4, 32, 18.0),
    ],
)
def test_round_trip_sqnr_floor(quantize, group_size, floor_db):
    w = make_weight("normal", (64, 256))
    q = quantize(w, group_size)
    dequantize = integer.dequantize_int8 if quantize is integer.quantize_int8 else integer.dequantize_int4
    assert sqnr_db(w, dequantize(q)) >= floor_db


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: integer.quantize_int4(torch.zeros(4, 96), 64), "group_size must be one of"),
        (lambda: integer.quantize_int8(torch.zeros(4, 96), 64), "not divisible by group_size 64"),
        (lambda: integer.quantize_int8(torch.full((2, 8), float("nan"))), "NaN or Inf"),
        (lambda: integer.quantize_int8(torch.zeros(4, 8), backend="gpu"), "backend must be one of"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@requires_triton
@pytest.mark.parametrize("case", FINITE_CASES)
@pytest.mark.parametrize(
    "quantize, dequantize, group_size",
    [
        (integer.quantize_int8, integer.dequantize_int8, None),
        (integer.quantize_int8, integer.dequantize_int8, 32),
        (integer.quantize_int4, integer.dequantize_int4, 32),
        (integer.quantize_int4, integer.dequantize_int4, 128),
    ],
)
def test_triton_matches_reference(quantize, dequantize, group_size, case):
    w = make_weight(case, (6, 256))
    ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    for out_dtype in (torch.bfloat16, torch.float16):
        assert_values_equal(dequantize(out, out_dtype, backend="triton"), dequantize(ref, out_dtype))


@requires_triton
def test_triton_rejects_nonfinite_like_the_reference():
    with pytest.raises(ValueError, match="NaN or Inf"):
        integer.quantize_int4(make_weight("nan_inf", (4, 128)), 32, backend="triton")


@requires_triton
@pytest.mark.parametrize("bits, group_size", [(8, None), (8, 32), (4, 32), (4, 128)])
def test_triton_matches_reference_on_every_rounding_edge(bits, group_size):
    """Quotients on and one ulp around every half-integer: the kernel's division must be exact."""
    q_min, q_max = integer.INT8_RANGE if bits == 8 else integer.INT4_RANGE
    half_integers = torch.arange(q_min, q_max + 1) + 0.5
    scale_of_amax = lambda amax: torch.clamp(amax / ((q_max - q_min) / 2), min=integer.SCALE_FLOOR)  # noqa: E731
    columns = 256
    size = group_size or columns
    w = rounding_edge_groups(scale_of_amax, half_integers, groups=8 * columns // size, group_size=size)
    w = w.reshape(8, columns)
    quantize = integer.quantize_int8 if bits == 8 else integer.quantize_int4
    ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
