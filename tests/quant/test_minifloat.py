"""E2M1 / E4M3 / E8M0 numerics: every representable value, the ties, bit layouts, scale rules."""

import pytest
import torch
from quant_cases import DEVICE, HAS_TRITON, requires_triton

from lowbit.quant.formats import minifloat as mf


@pytest.mark.parametrize("code, value", list(enumerate(mf.E2M1_VALUES)))
def test_e2m1_representable_value(code, value):
    for sign, sign_bit in ((1.0, 0), (-1.0, mf.E2M1_SIGN_BIT)):
        x = torch.tensor([sign * value])
        assert mf.quantize_e2m1(x).item() == code | sign_bit
        assert mf.e2m1_decode(torch.tensor([code | sign_bit])).item() == sign * value


@pytest.mark.parametrize(
    "x, expected",
    [
        (0.25, 0.0), (0.75, 1.0), (1.25, 1.0), (1.75, 2.0), (2.5, 2.0), (3.5, 4.0), (5.0, 4.0),  # ties to even
        (0.2500001, 0.5), (2.5000002, 3.0), (4.9999995, 4.0),  # just off the ties
        (6.5, 6.0), (1e30, 6.0),  # saturation
    ],
)
def test_e2m1_rounding(x, expected):
    for sign in (1.0, -1.0):
        code = mf.quantize_e2m1(torch.tensor([sign * x], dtype=torch.float32))
        assert mf.e2m1_decode(code).item() == sign * expected


def test_e2m1_negative_values_rounding_to_zero_keep_the_sign():
    assert mf.quantize_e2m1(torch.tensor([-0.1, -0.0, 0.0])).tolist() == [0x8, 0x8, 0x0]


E4M3_TABLE = [  # (value, byte): the spec as data
    (0.0, 0x00), (2.0**-9, 0x01), (0.875 * 2.0**-6, 0x07), (2.0**-6, 0x08), (1.0, 0x38), (1.125, 0x39),
    (240.0, 0x77), (448.0, 0x7E), (-448.0, 0xFE), (-1.0, 0xB8),
]


@pytest.mark.parametrize("value, byte", E4M3_TABLE)
def test_e4m3_table(value, byte):
    assert mf.quantize_e4m3(torch.tensor([value])).item() == byte
    assert torch.tensor([byte], dtype=torch.uint8).view(torch.float8_e4m3fn).float().item() == value


def test_e4m3_saturates_instead_of_nan():
    assert mf.quantize_e4m3(torch.tensor([500.0, -1e9])).tolist() == [0x7E, 0xFE]


def test_e4m3_matches_torch_cast_on_random_values():
    generator = torch.Generator().manual_seed(0)
    exponents = torch.randint(-16, 10, (200_000,), generator=generator).float()
    x = torch.randn(200_000, generator=generator) * torch.exp2(exponents)
    x = x.clamp(-448, 448)
    expected = x.to(torch.float8_e4m3fn).view(torch.uint8)
    torch.testing.assert_close(mf.quantize_e4m3(x), expected, atol=0, rtol=0)


def test_e8m0_decode():
    codes = torch.tensor([0, 1, 126, 127, 128, 254, 255], dtype=torch.uint8)
    values = mf.e8m0_decode(codes)
    assert values[:6].tolist() == [2.0**-127, 2.0**-126, 0.5, 1.0, 2.0, 2.0**127]
    assert torch.isnan(values[6])


@pytest.mark.parametrize(
    "amax, floor, even, rceil",
    [
        # amax, then the expected E8M0 code for E2M1 elements (emax 2, max 6) under each rule
        (1.0, 125, 125, 125),  # 1/6 -> ceil(log2) = -2
        (6.0, 127, 127, 127),
        (1.74, 125, 125, 126),
        (1.75, 125, 126, 126),
        (7.0, 127, 128, 128),
        (0.0, 0, 0, 0),  # all-zero block: 2**-127
        (2.0**-130, 0, 0, 0),  # clamped at the smallest code
        (3.0e38, 252, 253, 253),  # 3e38 = 1.76 * 2**127
    ],
)
def test_e8m0_scale_rules_for_fp4(amax, floor, even, rceil):
    a = torch.tensor([amax], dtype=torch.float32)
    for rule, expected in (("floor", floor), ("even", even), ("rceil", rceil)):
        assert mf.e8m0_code_from_amax(a, mf.E2M1_EMAX, mf.E2M1_MAX, rule).item() == expected, rule


def test_e8m0_scale_rule_validation():
    with pytest.raises(ValueError, match="scale rule"):
        mf.e8m0_code_from_amax(torch.tensor([1.0]), 2, 6.0, "nearest")


def test_fp4_pack_layout_even_element_in_low_nibble():
    codes = torch.tensor([[0x1, 0x2, 0xF, 0x0, 0x7, 0x8]], dtype=torch.uint8)
    expected = torch.tensor([[0x21, 0x0F, 0x87]], dtype=torch.uint8)
    torch.testing.assert_close(mf.pack_fp4(codes), expected, atol=0, rtol=0)
    torch.testing.assert_close(mf.unpack_fp4(expected), codes, atol=0, rtol=0)


if HAS_TRITON:
    import triton
    import triton.language as tl

    from lowbit.quant.formats import minifloat_triton as mft

    @triton.jit
    def _encode_e2m1_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offsets, mask=offsets < n, other=0.0)
        tl.store(out_ptr + offsets, mft.encode_e2m1(x), mask=offsets < n)


@requires_triton
def test_triton_e2m1_encoding_matches_midpoint_counting():
    """encode_e2m1 (grid rounding on the fp32 bits) == quantize_e2m1 (midpoint counting) on every tie, the
    values a few ulps around each midpoint and grid value, saturation, zeros and subnormals."""
    anchors = torch.tensor([*mf.E2M1_MIDPOINTS, *mf.E2M1_VALUES, 7.0, 1e30, 2.0**-149, 2.0**-126, 0.1])
    around = [anchors]
    up, down = anchors.clone(), anchors.clone()
    for _ in range(3):
        up, down = torch.nextafter(up, torch.tensor(float("inf"))), torch.nextafter(down, torch.tensor(0.0))
        around += [up, down]
    generator = torch.Generator().manual_seed(0)
    values = torch.cat([*around, torch.randn(4096, generator=generator) * 3, torch.zeros(1)])
    values = torch.cat([values, -values]).to(DEVICE)
    out = torch.empty(values.shape, dtype=torch.int32, device=DEVICE)
    _encode_e2m1_kernel[(triton.cdiv(values.numel(), 1024),)](values, out, values.numel(), BLOCK=1024)
    assert torch.equal(out.cpu(), mf.quantize_e2m1(values.cpu()).to(torch.int32))
