"""INT8 / INT4: compressed-tensors scale convention, pack-quantized bit layout, round trips, SQNR floors, and
group-wise scales stored in the weight's 16-bit dtype with codes chosen against the stored scale."""

import pytest
import torch
from quant_cases import (DEVICE, FINITE_CASES, FLOAT16_CASES, assert_bits_equal, assert_values_equal, make_weight, requires_cuda,
                         requires_triton, rounding_edge_groups, sqnr_db)

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
@pytest.mark.parametrize("cols, group_size", [(100, None), (96, 12), (260, 4)])
def test_triton_dequantizes_int8_groups_that_split_the_kernels_runs_of_8(cols, group_size):
    """The kernel reads one scale per run of 8 columns where the group is a multiple of 8; other groups (and rows
    whose length is not a multiple of 8) take a scale per column."""
    ref = integer.quantize_int8(make_weight("student_t", (5, cols)), group_size)
    for out_dtype in (torch.bfloat16, torch.float16):
        assert_values_equal(integer.dequantize_int8(ref, out_dtype, backend="triton"),
                            integer.dequantize_int8(ref, out_dtype))


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
    floor = integer.scale_floor(torch.float32)
    scale_of_amax = lambda amax: torch.clamp(amax / ((q_max - q_min) / 2), min=floor)  # noqa: E731
    columns = 256
    size = group_size or columns
    w = rounding_edge_groups(scale_of_amax, half_integers, groups=8 * columns // size, group_size=size)
    w = w.reshape(8, columns)
    quantize = integer.quantize_int8 if bits == 8 else integer.quantize_int4
    ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)


# --- group-wise scales in the weight's 16-bit dtype ------------------------------------------------------------

GROUPED = [
    (integer.quantize_int4, integer.dequantize_int4, 32),
    (integer.quantize_int4, integer.dequantize_int4, 128),
    (integer.quantize_int8, integer.dequantize_int8, 32),
]


def wide_fp16_weight(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """fp16 weights whose 16-column blocks span magnitudes 2**-20 .. 2**13, fp16 subnormals included: some
    groups fall below the fp16 scale floor, none overflows."""
    generator = torch.Generator().manual_seed(seed)
    exponents = torch.randint(-20, 12, (shape[0], shape[1] // 16), generator=generator).float()
    x = torch.randn(shape, generator=generator) * torch.exp2(exponents).repeat_interleave(16, dim=1)
    return x.to(torch.float16).to(DEVICE)


def codes(q: integer.IntWeight) -> torch.Tensor:
    return (integer.unpack_int4(q.data) if q.data.dtype == torch.int32 else q.data).to(torch.int32)


def half_range(quantize) -> float:
    q_min, q_max = integer.INT4_RANGE if quantize is integer.quantize_int4 else integer.INT8_RANGE
    return (q_max - q_min) / 2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_group_scales_take_the_weight_dtype_when_16_bit_and_channel_scales_stay_float32(dtype):
    w = make_weight("normal", (4, 256), dtype=dtype)
    group_dtype = torch.float32 if dtype == torch.float32 else dtype
    assert integer.group_scale_dtype(dtype) == group_dtype
    assert integer.quantize_int4(w, 128).weight_scale.dtype == group_dtype
    assert integer.quantize_int8(w, 32).weight_scale.dtype == group_dtype
    assert integer.quantize_int8(w).weight_scale.dtype == torch.float32  # vLLM's W8A8 INT8 keeps them in float32


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quantize, dequantize, group_size", GROUPED)
def test_stored_scale_is_compressed_tensors_one_and_codes_are_nearest_to_it(quantize, dequantize, group_size, dtype):
    """The scale is compressed-tensors' `calculate_qparams` in the weight's dtype (floored at the dtype's smallest
    normal), each code is the nearest integer to x / stored scale (float64 here), and dequantizing to the
    weight's dtype gives q * scale computed in that dtype, as runtimes compute it."""
    qparams = pytest.importorskip("compressed_tensors.quantization.utils")
    from compressed_tensors.quantization import QuantizationArgs

    w = make_weight("student_t", (16, 256), dtype=dtype) if dtype == torch.bfloat16 else wide_fp16_weight((16, 256))
    q = quantize(w, group_size)
    groups = w.reshape(w.shape[0], -1, group_size)
    amax = groups.abs().amax(dim=2)
    args = QuantizationArgs(num_bits=4 if quantize is integer.quantize_int4 else 8, type="int", strategy="group",
                            group_size=group_size, symmetric=True)
    theirs, _ = qparams.calculate_qparams(-amax, amax, args)
    assert theirs.dtype == q.weight_scale.dtype == dtype
    floor = integer.scale_floor(dtype)
    assert_values_equal(q.weight_scale, torch.clamp(theirs.float(), min=floor).to(dtype))

    low, high = (-half_range(quantize) - 0.5, half_range(quantize) - 0.5)
    nearest = torch.clamp(torch.round(groups.double() / q.weight_scale.double()[..., None]), low, high)
    assert torch.equal(codes(q), nearest.reshape(w.shape).to(torch.int32))
    unrounded = torch.clamp(amax.float() / half_range(quantize), min=floor)
    assert not torch.equal(q.weight_scale.float(), unrounded)  # rounding the scale changed it ...
    against_unrounded = torch.clamp(torch.round(groups.double() / unrounded.double()[..., None]), low, high)
    assert not torch.equal(nearest, against_unrounded)  # ... and so some codes: they follow the stored scale

    runtime = codes(q).to(dtype).reshape(groups.shape) * q.weight_scale[..., None]  # arithmetic in dtype
    assert_values_equal(dequantize(q, dtype), runtime.reshape(w.shape))


@pytest.mark.parametrize("dtype, floor", [(torch.bfloat16, 2.0**-126), (torch.float16, 2.0**-14)])
def test_scales_are_floored_at_the_smallest_normal_of_their_dtype(dtype, floor):
    zeros = integer.quantize_int4(torch.zeros(2, 32, dtype=dtype), 32)
    assert zeros.weight_scale.dtype == dtype and bool((zeros.weight_scale.float() == floor).all())
    assert not bool(codes(zeros).any())
    small = torch.full((1, 32), 3e-4, dtype=torch.float16)  # amax / 7.5 = 4e-5: an fp16 subnormal
    q = integer.quantize_int4(small, 32)
    assert q.weight_scale.item() == 2.0**-14
    assert bool((codes(q) == round(small[0, 0].item() * 2**14)).all())  # 4.92 -> 5


def every_value_up_to(amax: float, dtype: torch.dtype, group_size: int, columns: int = 1024,
                      seed: int = 0) -> torch.Tensor:
    """Every finite value of `dtype` with magnitude <= amax (subnormals included, random signs), group_size - 1
    per group behind amax itself, so that every group has amax's scale: (rows, columns) in dtype."""
    first_non_finite = 0x7F80 if dtype == torch.bfloat16 else 0x7C00
    magnitudes = torch.arange(first_non_finite, dtype=torch.int32).to(torch.int16).view(dtype)
    magnitudes = magnitudes[magnitudes.float() <= amax]
    per_group, groups_per_row = group_size - 1, columns // group_size
    groups = -(-len(magnitudes) // per_group)
    groups += -groups % groups_per_row
    magnitudes = torch.cat([magnitudes, magnitudes.new_zeros(groups * per_group - len(magnitudes))])
    magnitudes = magnitudes.reshape(groups, per_group)
    signs = torch.where(torch.rand(magnitudes.shape, generator=torch.Generator().manual_seed(seed)) < 0.5, -1, 1)
    head = torch.full((groups, 1), amax, dtype=dtype)
    return torch.cat([head, magnitudes * signs.to(dtype)], dim=1).reshape(-1, columns).to(DEVICE)


@requires_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quantize, dequantize, group_size, amaxes", [
    (integer.quantize_int4, integer.dequantize_int4, 128, (7.5, 1.0, 0.3)),  # 7.5: scale 1, exact ties
    (integer.quantize_int8, integer.dequantize_int8, 32, (127.5, 1.0)),
])
def test_triton_matches_reference_on_every_16_bit_value(quantize, dequantize, group_size, amaxes, dtype):
    """Exhaustive over the weight values below a few group maxima: codes, 16-bit scales and dequantized values
    of the kernel are bit-identical to the reference's."""
    for amax in amaxes:
        w = every_value_up_to(amax, dtype, group_size)
        ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
        assert ref.weight_scale.dtype == dtype
        assert_bits_equal(out.data, ref.data)
        assert_bits_equal(out.weight_scale, ref.weight_scale)
        assert_values_equal(dequantize(out, dtype, backend="triton"), dequantize(ref, dtype))


@requires_triton
@pytest.mark.parametrize("case", ["wide", "student_t", "zeros", "f16_extremes"])
@pytest.mark.parametrize("quantize, dequantize, group_size", GROUPED)
def test_triton_matches_reference_with_fp16_scales(quantize, dequantize, group_size, case):
    w = wide_fp16_weight((6, 256)) if case == "wide" else make_weight(case, (6, 256), dtype=torch.float16)
    ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
    assert ref.weight_scale.dtype == torch.float16
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    for out_dtype in (torch.float16, torch.bfloat16):
        assert_values_equal(dequantize(out, out_dtype, backend="triton"), dequantize(ref, out_dtype))


@requires_triton
@pytest.mark.parametrize("case", FLOAT16_CASES)
def test_triton_matches_reference_per_channel_in_float16(case):
    w = make_weight(case, (6, 256), dtype=torch.float16)
    ref, out = integer.quantize_int8(w), integer.quantize_int8(w, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(integer.dequantize_int8(out, torch.float16, backend="triton"),
                        integer.dequantize_int8(ref, torch.float16))


@requires_triton
@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dequantize_reads_scales_of_every_dtype(scale_dtype):
    """Older lowbit checkpoints hold float32 group scales; both backends read all three dtypes."""
    values = torch.randint(-8, 8, (4, 64), generator=torch.Generator().manual_seed(0))
    scale = (torch.rand(4, 2, generator=torch.Generator().manual_seed(1)) + 0.5).to(scale_dtype)
    q = integer.IntWeight(integer.pack_int4(values).to(DEVICE), scale.to(DEVICE))
    expected = (values.reshape(4, 2, 32).float() * scale.float()[..., None]).reshape(4, 64).to(torch.bfloat16)
    assert_values_equal(integer.dequantize_int4(q), expected.to(DEVICE))
    assert_values_equal(integer.dequantize_int4(q, backend="triton"), expected.to(DEVICE))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("quantize, dequantize, group_size", GROUPED)
def test_gpu_kernel_matches_reference_with_16_bit_scales(quantize, dequantize, group_size, dtype):
    shape = (512, 4096)
    w = make_weight("student_t", shape, dtype=dtype) if dtype == torch.bfloat16 else wide_fp16_weight(shape)
    ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
    assert_bits_equal(out.data, ref.data)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_values_equal(dequantize(out, dtype, backend="triton"), dequantize(ref, dtype))
    for amax in (7.5, 1.0):
        w = every_value_up_to(amax, dtype, group_size)
        ref, out = quantize(w, group_size), quantize(w, group_size, backend="triton")
        assert_bits_equal(out.data, ref.data)
        assert_bits_equal(out.weight_scale, ref.weight_scale)
