"""MXFP4 / MXFP8: scale rules, NaN/Inf and zero blocks, layout, kernel == reference, SQNR floors."""

import pytest
import torch
from quant_cases import (
    FINITE_CASES,
    FLOAT16_CASES,
    NONFINITE_CASES,
    assert_bits_equal,
    assert_values_equal,
    make_weight,
    requires_triton,
    sqnr_db,
)

from lowbit.quant.formats import mx

SQNR_FLOOR_DB = {"fp4": 14.0, "fp8": 28.0}


def test_checkpoint_default_rule_is_vllms_even():
    assert mx.CHECKPOINT_SCALE_RULE == "even"


@pytest.mark.parametrize("element", mx.ELEMENTS)
def test_layout(element):
    q = mx.quantize(make_weight("normal", (4, 64)), element)
    assert q.scale.dtype == torch.uint8 and q.scale.shape == (4, 2)
    expected = (torch.uint8, (4, 32)) if element == "fp4" else (torch.float8_e4m3fn, (4, 64))
    assert (q.data.dtype, tuple(q.data.shape)) == expected


def test_hand_computed_mxfp4_block():
    # amax 6 -> code 127 under every rule (scale 1), elements are the E2M1 values themselves
    values = torch.tensor([[6.0, -4.0, 0.5, 1.5] + [0.0] * 28])
    for rule in mx.SCALE_RULES:
        q = mx.quantize(values, "fp4", rule)
        assert q.scale.tolist() == [[127]]
        assert q.data[0, :2].tolist() == [0x7 | (0xE << 4), 0x1 | (0x3 << 4)]


def test_floor_rule_saturates_where_even_rounds_up():
    values = torch.tensor([[7.5] + [0.0] * 31])  # 7.5 = 1.875 * 2**2
    floor, even = mx.quantize(values, "fp4", "floor"), mx.quantize(values, "fp4", "even")
    assert floor.scale.item() == 127 and mx.dequantize(floor)[0, 0].item() == 6.0
    assert even.scale.item() == 128 and mx.dequantize(even)[0, 0].item() == 8.0


@pytest.mark.parametrize("element", mx.ELEMENTS)
def test_nan_or_inf_poisons_its_block_only(element):
    w = make_weight("nan_inf", (2, 64))  # NaN at [0, 3], +Inf at [1, 40], -Inf at [1, 63]
    q = mx.quantize(w, element)
    assert q.scale.tolist()[0][0] == 0xFF and q.scale.tolist()[1][1] == 0xFF
    assert q.scale[0, 1] != 0xFF and q.scale[1, 0] != 0xFF
    d = mx.dequantize(q, element)
    assert torch.isnan(d[0, :32]).all() and torch.isnan(d[1, 32:]).all()
    assert torch.isfinite(d[0, 32:]).all() and torch.isfinite(d[1, :32]).all()


@pytest.mark.parametrize("rule", mx.SCALE_RULES)
def test_all_zero_block_scale_is_2_pow_minus_127(rule):
    q = mx.quantize(torch.zeros(1, 32), "fp4", rule)
    assert q.scale.item() == 0 and q.data.count_nonzero() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"weight": torch.zeros(2, 48)}, "not divisible by the block size 32"),
        ({"weight": torch.zeros(2, 32), "element": "fp6"}, "element must be one of"),
        ({"weight": torch.zeros(2, 32), "scale_rule": "nearest"}, "scale_rule must be one of"),
        ({"weight": torch.zeros(2, 32, dtype=torch.float64)}, "convert it to bfloat16"),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mx.quantize(**kwargs)


@pytest.mark.parametrize("element", mx.ELEMENTS)
@pytest.mark.parametrize("case", FINITE_CASES)
def test_round_trip_sqnr_floor(element, case):
    w = make_weight(case, (32, 256))
    d = mx.dequantize(mx.quantize(w, element), element)
    if case == "zeros":
        assert torch.count_nonzero(d) == 0
    else:
        assert sqnr_db(w, d) >= SQNR_FLOOR_DB[element]


@requires_triton
@pytest.mark.parametrize("case", FINITE_CASES + NONFINITE_CASES)
@pytest.mark.parametrize("rule", mx.SCALE_RULES)
@pytest.mark.parametrize("element", mx.ELEMENTS)
def test_triton_matches_reference(element, rule, case):
    w = make_weight(case, (4, 96))
    ref = mx.quantize(w, element, rule, backend="ref")
    out = mx.quantize(w, element, rule, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.scale, ref.scale)
    assert_values_equal(mx.dequantize(out, element, backend="triton"), mx.dequantize(ref, element))


@requires_triton
@pytest.mark.parametrize("case", FLOAT16_CASES)
@pytest.mark.parametrize("element", mx.ELEMENTS)
def test_triton_matches_reference_fp32_and_fp16(element, case):
    for dtype in (torch.float32, torch.float16):
        w = make_weight(case, (3, 64), dtype=dtype)
        ref, out = mx.quantize(w, element), mx.quantize(w, element, backend="triton")
        assert_bits_equal(out.data, ref.data)
        assert_bits_equal(out.scale, ref.scale)
        assert_values_equal(mx.dequantize(out, element, dtype, backend="triton"), mx.dequantize(ref, element, dtype))
