"""NVFP4: the compressed-tensors convention, layout, validation, kernel == reference, SQNR floor."""

import pytest
import torch
from quant_cases import (
    DEVICE,
    FINITE_CASES,
    FLOAT16_CASES,
    assert_bits_equal,
    assert_values_equal,
    make_weight,
    requires_triton,
    sqnr_db,
)

from lowbit.quant.formats import nvfp4


def test_global_scale_is_a_divisor_448_times_6_over_amax():
    w = torch.tensor([[0.5, -3.0] + [0.0] * 14], dtype=torch.bfloat16)
    assert nvfp4.shared_global_scale(w).item() == pytest.approx(448 * 6 / 3.0)


def test_shared_global_scale_uses_the_largest_amax_of_the_group():
    q, k, v = (make_weight("normal", (16, 32), seed=s) for s in range(3))
    k[0, 0] = 50.0
    shared = nvfp4.shared_global_scale(q, k, v)
    assert shared.dtype == torch.float32 and shared.shape == (1,)
    assert shared.item() == pytest.approx(2688 / 50.0)


def test_hand_computed_block():
    # amax 6 with global scale 2688 / 6: block scale = 448 exactly, effective scale 1.
    values = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.25, 0.75, 1.25, -1.75, 2.5, 3.5, 5.0, -6.0]
    q = nvfp4.quantize_ref(torch.tensor([values]), torch.tensor([448.0]))
    assert q.weight_scale.float().item() == 448.0
    expected_codes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 2, 2, 0xC, 4, 6, 6, 0xF]
    expected_bytes = [lo | (hi << 4) for lo, hi in zip(expected_codes[0::2], expected_codes[1::2])]
    assert q.weight_packed.tolist() == [expected_bytes]


def test_layout_matches_vllm_parameters():
    q = nvfp4.quantize(make_weight("normal", (32, 64)))
    assert q.weight_packed.dtype == torch.uint8 and q.weight_packed.shape == (32, 32)
    assert q.weight_scale.dtype == torch.float8_e4m3fn and q.weight_scale.shape == (32, 4)
    assert q.weight_global_scale.dtype == torch.float32 and q.weight_global_scale.shape == (1,)


def test_all_zero_block_gets_compressed_tensors_eps_scale():
    w = make_weight("normal", (2, 32))
    w[0, :16] = 0
    q = nvfp4.quantize(w)
    assert q.weight_scale[0, 0].float().item() == nvfp4.ZERO_BLOCK_SCALE
    assert q.weight_packed[0, :8].tolist() == [0] * 8


@pytest.mark.parametrize(
    "weight, message",
    [
        (torch.zeros(4, 24), "not divisible by the block size 16"),
        (torch.zeros(4, 32, dtype=torch.int8), "convert it to bfloat16"),
        (torch.tensor([[float("nan")] * 16]), "NaN or Inf"),
    ],
)
def test_bad_input_raises_value_error(weight, message):
    with pytest.raises(ValueError, match=message):
        nvfp4.quantize(weight)


def test_bad_global_scale_raises_value_error():
    with pytest.raises(ValueError, match="finite and positive"):
        nvfp4.quantize(torch.ones(1, 16), torch.tensor([0.0]))


@pytest.mark.parametrize("case", FINITE_CASES)
def test_round_trip_sqnr_floor(case):
    w = make_weight(case, (64, 256))
    d = nvfp4.dequantize(nvfp4.quantize(w))
    if case == "zeros":
        assert torch.count_nonzero(d) == 0
    else:
        assert sqnr_db(w, d) >= 18.0


@requires_triton
@pytest.mark.parametrize("shape", [(8, 64), (3, 5, 48)])
@pytest.mark.parametrize("case", FINITE_CASES)
@pytest.mark.parametrize("shared_scale", [False, True])
def test_triton_matches_reference(case, shape, shared_scale):
    w = make_weight(case, (shape[0] * (shape[1] if len(shape) == 3 else 1), shape[-1])).reshape(shape)
    g = nvfp4.shared_global_scale(w, make_weight("huge", (2, 16))) if shared_scale else None
    ref = nvfp4.quantize(w, g, backend="ref")
    out = nvfp4.quantize(w, g, backend="triton")
    assert_bits_equal(out.weight_packed, ref.weight_packed)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_bits_equal(out.weight_global_scale, ref.weight_global_scale)
    for out_dtype in (torch.bfloat16, torch.float32):
        assert_values_equal(nvfp4.dequantize(out, out_dtype, backend="triton"), nvfp4.dequantize(ref, out_dtype))


@requires_triton
@pytest.mark.parametrize("case", FLOAT16_CASES)
def test_triton_matches_reference_in_float16(case):
    w = make_weight(case, (8, 64), dtype=torch.float16)
    ref, out = nvfp4.quantize(w, backend="ref"), nvfp4.quantize(w, backend="triton")
    assert_bits_equal(out.weight_packed, ref.weight_packed)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_bits_equal(out.weight_global_scale, ref.weight_global_scale)
    assert_values_equal(nvfp4.dequantize(out, torch.float16, backend="triton"), nvfp4.dequantize(ref, torch.float16))


@requires_triton
@pytest.mark.parametrize("case", FINITE_CASES)
@pytest.mark.parametrize("shared_scale", [False, True])
def test_triton_matches_reference_in_float32(case, shared_scale):
    w = make_weight(case, (8, 64), dtype=torch.float32)
    g = nvfp4.shared_global_scale(w, make_weight("normal", (2, 16))) if shared_scale else None
    ref, out = nvfp4.quantize(w, g, backend="ref"), nvfp4.quantize(w, g, backend="triton")
    assert_bits_equal(out.weight_packed, ref.weight_packed)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert_bits_equal(out.weight_global_scale, ref.weight_global_scale)


@requires_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_triton_global_scale_from_the_device_amax_reaches_every_program(dtype):
    """Several amax programs, each over several chunks, and many quantize programs, one of which stores the
    global scale: the result is still the reference's, bit for bit."""
    from lowbit.quant.formats import amax_triton, nvfp4_triton

    w = make_weight("normal", (24, 3 * amax_triton.CHUNK // 4), dtype=dtype)  # 18 chunks, 72 quantize programs
    w[17, 1000] = 40.0  # the amax, far from the first programs' blocks
    assert w.numel() // 16 > 4 * nvfp4_triton.QUANTIZE_BLOCKS
    ref, out = nvfp4.quantize(w, backend="ref"), nvfp4.quantize(w, backend="triton")
    assert out.weight_global_scale.item() == pytest.approx(2688 / 40.0)
    for name in ("weight_packed", "weight_scale", "weight_global_scale"):
        assert_bits_equal(getattr(out, name), getattr(ref, name))


@requires_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("global_scale", [None, 448.0])
def test_triton_rejects_nonfinite_like_the_reference(global_scale, dtype):
    w = make_weight("nan_inf", (4, 64), dtype=dtype)
    g = None if global_scale is None else torch.tensor([global_scale], device=DEVICE)
    for backend in ("ref", "triton"):
        with pytest.raises(ValueError, match="weight contains NaN or Inf"):
            nvfp4.quantize(w, g, backend=backend)


@requires_triton
def test_triton_rejects_a_bad_given_global_scale_like_the_reference():
    for backend in ("ref", "triton"):
        with pytest.raises(ValueError, match="finite and positive"):
            nvfp4.quantize(torch.ones(1, 16, device=DEVICE), torch.tensor([0.0]), backend=backend)


def _rounding_edge_weight(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 weight whose elements sit on and one ulp around every x with fl32(x / effective) at or next to an
    E2M1 midpoint: where a kernel that does not divide exactly would pick a different code."""
    from lowbit.quant.formats import minifloat as mf

    generator = torch.Generator().manual_seed(seed)
    global_scale = (2688.0 / (0.5 + torch.rand(1, generator=generator, dtype=torch.float64))).float()
    block_amax = 0.5 + torch.rand(rows, 1, generator=generator)  # one block per row, element 0 = its amax
    block_scale = mf.round_magnitude(mf.true_divide(block_amax, mf.E2M1_MAX) * global_scale,
                                     mf.E4M3_MBITS, mf.E4M3_EMIN, mf.E4M3_MAX)
    effective = block_scale / global_scale
    midpoints = torch.tensor(mf.E2M1_MIDPOINTS, dtype=torch.float32)
    centre = midpoints * effective  # (rows, 7), rounded: the neighbourhood where the quotient crosses
    candidates = torch.stack([centre, torch.nextafter(centre, centre * 2), torch.nextafter(centre, centre * 0)], -1)
    edge = candidates.reshape(rows, -1)[:, :15]
    edge = torch.minimum(edge, block_amax)
    signs = torch.where(torch.rand(edge.shape, generator=generator) < 0.5, -1.0, 1.0)
    return torch.cat([block_amax, edge * signs], dim=1).to(DEVICE), global_scale


@requires_triton
def test_triton_matches_reference_on_every_rounding_edge():
    w, global_scale = _rounding_edge_weight(rows=256, seed=3)
    ref = nvfp4.quantize(w, global_scale, backend="ref")
    out = nvfp4.quantize(w, global_scale, backend="triton")
    assert_bits_equal(out.weight_packed, ref.weight_packed)
    assert_bits_equal(out.weight_scale, ref.weight_scale)


@requires_triton
def test_triton_matches_reference_with_blocks_on_every_scale_code():
    """One block per E4M3 scale code the quantize kernel can meet (0, which is stored as ZERO_BLOCK_SCALE, up to
    saturation at 448): each block's divisor comes from its own entry of the kernel's divisor table."""
    from lowbit.quant.formats import minifloat as mf
    from lowbit.quant.formats import nvfp4_triton

    global_scale = torch.tensor([2688.0 / 3.7])
    codes = torch.arange(nvfp4_triton.SCALE_CODES.value - 1, dtype=torch.uint8)  # 0x7F is NaN, never a scale
    scales = codes.view(torch.float8_e4m3fn).to(torch.float32)
    block_amax = scales * mf.E2M1_MAX / global_scale  # an amax whose scale rounds to the code
    block_amax = torch.cat([block_amax, block_amax[-1:] * 4])  # and one past 448, which saturates
    generator = torch.Generator().manual_seed(5)
    elements = (torch.rand(block_amax.numel(), 15, generator=generator) * 2 - 1) * block_amax[:, None]
    w = torch.cat([block_amax[:, None], elements], dim=1).to(torch.bfloat16).to(DEVICE)
    ref = nvfp4.quantize(w, global_scale, backend="ref")
    out = nvfp4.quantize(w, global_scale, backend="triton")
    assert_bits_equal(out.weight_packed, ref.weight_packed)
    assert_bits_equal(out.weight_scale, ref.weight_scale)
    assert set(ref.weight_scale.view(torch.uint8).flatten().tolist()) == set(range(1, 0x7F))  # 0 is stored as 0x20
