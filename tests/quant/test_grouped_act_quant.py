"""Fake quantization of all MoE experts' rows at once (grouped_act_quant): the Triton kernels are bit-identical
to the torch reference (interpreter here, the GPU where there is one), and the reference quantizes each
expert's rows as the format quantizes a tensor of its own."""

import pytest
import torch
from quant_cases import DEVICE, assert_values_equal, make_weight, requires_triton

from lowbit.quant import grouped_act_quant as gaq
from lowbit.quant.formats import registry

FORMATS = registry.activation_formats()
# the interpreter warns when a loop bound is a loaded scalar; the values are compared bit for bit
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.runtime.interpreter")


def grouped_rows(rows_per_expert: list[int], width: int, case: str = "student_t", dtype=torch.float32, seed: int = 0):
    """(x (rows, width) with each expert's rows at its own magnitude, int32 ends): experts sorted as grouped_mm
    sorts them; an expert with 0 rows has none."""
    ends = torch.tensor(rows_per_expert).cumsum(0).to(torch.int32)
    x = make_weight(case, (int(ends[-1]), width), dtype=torch.float32, device="cpu", seed=seed)
    magnitude = torch.tensor([4.0 ** (e % 5 - 2) for e in range(len(rows_per_expert))])
    x = x * magnitude.repeat_interleave(torch.tensor(rows_per_expert))[:, None]
    return x.to(dtype).to(DEVICE), ends.to(DEVICE)


def test_the_reference_quantizes_each_expert_on_its_own_and_row_local_formats_all_rows_at_once():
    x, ends = grouped_rows([3, 0, 5, 1], 64)
    spec = registry.activation_format("nvfp4")
    grouped = gaq.fake_quantize_grouped(x, ends, "nvfp4")
    bounds = [0, *ends.tolist()]
    for start, end in zip(bounds, bounds[1:]):
        if end > start:
            assert_values_equal(grouped[start:end], spec.fake_quantize_activation(x[start:end]))
    assert not torch.equal(grouped, spec.fake_quantize_activation(x))  # one scale for all rows differs
    for fmt in ("int8", "fp8", "mxfp8", "mxfp4"):
        assert_values_equal(gaq.fake_quantize_grouped(x, ends, fmt), registry.activation_format(fmt)
                            .fake_quantize_activation(x))


def test_the_reference_refuses_ends_that_do_not_cover_the_rows():
    x, ends = grouped_rows([3, 2], 32)
    with pytest.raises(ValueError, match=r"ends must close at the row count 5, got 4; pass the cumulative"):
        gaq.fake_quantize_grouped(x, ends - 1, "nvfp4")


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", FORMATS)
def test_kernels_match_the_reference(fmt, dtype):
    x, ends = grouped_rows([3, 0, 5, 1, 0, 2], 64, dtype=dtype)
    assert_values_equal(gaq.fake_quantize_grouped(x, ends, fmt, backend="triton"),
                        gaq.fake_quantize_grouped(x, ends, fmt))


@requires_triton
@pytest.mark.parametrize("case", ["zeros", "tiny", "huge", "mixed_blocks"])
def test_nvfp4_kernels_match_the_reference_at_the_edges_of_the_scales(case):
    x, ends = grouped_rows([2, 1, 3], 32, case=case)
    assert_values_equal(gaq.fake_quantize_grouped(x, ends, "nvfp4", backend="triton"),
                        gaq.fake_quantize_grouped(x, ends, "nvfp4"))


@requires_triton
def test_nvfp4_amax_spreads_a_hot_expert_over_several_programs_and_rows_longer_than_a_chunk():
    from lowbit.quant import grouped_act_quant_triton as gaqt

    rows = [1, 70, 0, 2]  # 73 rows over 4 experts: 5 row tiles per expert, so 8 amax programs per expert
    assert gaqt.amax_split(sum(rows), len(rows)) == gaqt.MAX_SPLIT
    x, ends = grouped_rows(rows, gaqt.AMAX_CHUNK + 64, dtype=torch.bfloat16)
    x[40, 7] = 900.0  # the hot expert's amax sits in one of its later tiles
    assert_values_equal(gaq.fake_quantize_grouped(x, ends, "nvfp4", backend="triton"),
                        gaq.fake_quantize_grouped(x, ends, "nvfp4"))


@requires_triton
def test_nvfp4_nonfinite_values_make_only_their_expert_nan():
    x, ends = grouped_rows([2, 3, 2], 32)
    x[3, 5] = float("nan")
    x[6, 0] = float("-inf")
    out = gaq.fake_quantize_grouped(x, ends, "nvfp4", backend="triton")
    assert_values_equal(out, gaq.fake_quantize_grouped(x, ends, "nvfp4"))
    assert torch.isnan(out[2:]).all() and not torch.isnan(out[:2]).any()


@requires_triton
def test_one_quantizer_serves_every_signature():
    quantizer = gaq.GroupedActivationQuantizer("nvfp4", "triton")
    cases = [grouped_rows([1, 2], 32), grouped_rows([4, 0, 1], 32), grouped_rows([2, 2], 64, dtype=torch.bfloat16),
             grouped_rows([1, 2], 32, seed=3)]
    for x, ends in cases + cases[::-1]:
        assert_values_equal(quantizer(x, ends), gaq.fake_quantize_grouped(x, ends, "nvfp4"))
