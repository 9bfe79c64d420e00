"""On a real GPU: every kernel is bit-identical to its reference on larger shapes and all named cases, for
bfloat16 and float16 weights (float16: the cases within its range, and its extremes)."""

import pytest
import torch
from quant_cases import (
    FINITE_CASES,
    FLOAT16_CASES,
    NONFINITE_CASES,
    assert_bits_equal,
    assert_values_equal,
    make_weight,
    requires_cuda,
)

from lowbit.quant.formats import fp8, integer, mx, nvfp4

pytestmark = [pytest.mark.gpu, requires_cuda]
SHAPE = (512, 4096)
# (weight dtype, case): bfloat16 with every finite case, float16 with those it can hold
DTYPE_CASES = [(torch.bfloat16, case) for case in FINITE_CASES] + [(torch.float16, case) for case in FLOAT16_CASES]
DTYPE_CASE_IDS = [f"{str(dtype).removeprefix('torch.')}-{case}" for dtype, case in DTYPE_CASES]
by_dtype_and_case = pytest.mark.parametrize("dtype, case", DTYPE_CASES, ids=DTYPE_CASE_IDS)


@by_dtype_and_case
def test_nvfp4(dtype, case):
    w = make_weight(case, SHAPE, dtype=dtype, device="cuda")
    ref, out = nvfp4.quantize(w), nvfp4.quantize(w, backend="triton")
    assert_bits_equal(out.weight_packed, ref.weight_packed)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(nvfp4.dequantize(out, dtype, backend="triton"), nvfp4.dequantize(ref, dtype))


@pytest.mark.parametrize("case", FINITE_CASES + NONFINITE_CASES)
@pytest.mark.parametrize("rule", mx.SCALE_RULES)
@pytest.mark.parametrize("element", mx.ELEMENTS)
def test_mx(element, rule, case):
    w = make_weight(case, SHAPE, device="cuda")
    ref, out = mx.quantize(w, element, rule), mx.quantize(w, element, rule, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.scale, ref.scale)
    assert_values_equal(mx.dequantize(out, element, backend="triton"), mx.dequantize(ref, element))


@pytest.mark.parametrize("case", FLOAT16_CASES)
@pytest.mark.parametrize("rule", mx.SCALE_RULES)
@pytest.mark.parametrize("element", mx.ELEMENTS)
def test_mx_float16(element, rule, case):
    w = make_weight(case, SHAPE, dtype=torch.float16, device="cuda")
    ref, out = mx.quantize(w, element, rule), mx.quantize(w, element, rule, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.scale, ref.scale)
    assert_values_equal(mx.dequantize(out, element, torch.float16, backend="triton"),
                        mx.dequantize(ref, element, torch.float16))


@by_dtype_and_case
@pytest.mark.parametrize("granularity", fp8.GRANULARITIES)
def test_fp8(granularity, dtype, case):
    w = make_weight(case, SHAPE, dtype=dtype, device="cuda")
    ref, out = fp8.quantize(w, granularity), fp8.quantize(w, granularity, backend="triton")
    assert_bits_equal(out.weight, ref.weight)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(fp8.dequantize(out, dtype, backend="triton"), fp8.dequantize(ref, dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fp8_per_token(dtype):
    x = make_weight("student_t", (1024, 4096), dtype=dtype, device="cuda")
    assert_values_equal(fp8.fake_quantize_per_token(x, backend="triton"), fp8.fake_quantize_per_token(x))


def test_every_bf16_bit_pattern_through_mxfp8():
    # all 65536 bf16 values (NaN/Inf included), 32 per block: exhaustive over inputs, not over blocks
    w = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).reshape(-1, 1024).cuda()
    for element in mx.ELEMENTS:
        ref, out = mx.quantize(w, element), mx.quantize(w, element, backend="triton")
        assert_bits_equal(out.data, ref.data)
        assert_bits_equal(out.scale, ref.scale)


@by_dtype_and_case
@pytest.mark.parametrize(
    "quantize, dequantize, group_size",
    [
        (integer.quantize_int8, integer.dequantize_int8, None),
        (integer.quantize_int8, integer.dequantize_int8, 128),
        (integer.quantize_int4, integer.dequantize_int4, 32),
        (integer.quantize_int4, integer.dequantize_int4, 128),
    ],
)
def test_integer(quantize, dequantize, group_size, dtype, case):
    w = make_weight(case, SHAPE, dtype=dtype, device="cuda")
    ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(dequantize(out, dtype, backend="triton"), dequantize(ref, dtype))
