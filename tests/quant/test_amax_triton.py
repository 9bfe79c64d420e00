"""amax_triton: a tensor's (or each slice's) max |x| as fp32 bits on the device, NaN/Inf marked above +Inf."""

import pytest
import torch
from quant_cases import DEVICE, FINITE_CASES, FLOAT16_CASES, make_weight, requires_triton

pytestmark = [requires_triton,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.runtime.interpreter")]


def amax_of(x: torch.Tensor, slices: int = 1) -> torch.Tensor:
    from lowbit.quant.formats import amax_triton

    bits = amax_triton.amax_bits(x, slices)
    assert bits.dtype == torch.int32 and bits.shape == (slices,) and bits.device == x.device
    return bits.view(torch.float32)


@pytest.mark.parametrize("case, dtype", [(case, dtype) for dtype in (torch.bfloat16, torch.float32)
                                         for case in FINITE_CASES] + [(case, torch.float16) for case in FLOAT16_CASES])
def test_amax_equals_torch(case, dtype):
    x = make_weight(case, (8, 96), dtype=dtype)
    expected = torch.linalg.vector_norm(x, ord=float("inf")).float().reshape(1)
    assert torch.equal(amax_of(x), expected)


def test_every_slice_gets_its_own_amax_across_several_programs_and_chunks():
    from lowbit.quant.formats import amax_triton

    slices, per_slice = 3, 5 * amax_triton.CHUNK + 7  # several chunks per program, a partial last chunk
    x = torch.randn(slices, per_slice, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    x[1, -1] = -100.0  # in the last, partial chunk of slice 1
    expected = x.abs().amax(dim=1)
    assert torch.equal(amax_of(x, slices), expected)
    assert torch.equal(amax_of(x.reshape(-1)), expected.max().reshape(1))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_mark_only_their_slice_as_nonfinite(value):
    x = torch.ones(2, 64, dtype=torch.bfloat16, device=DEVICE)
    x[1, 5] = value
    amax = amax_of(x, 2)
    assert amax[0] == 1.0 and not torch.isfinite(amax[1])


def test_nan_ranks_above_inf():
    x = torch.zeros(1, 32, device=DEVICE)
    x[0, 0], x[0, 9] = float("inf"), float("nan")
    assert torch.isnan(amax_of(x)).all()


def test_unequal_slices_are_refused():
    from lowbit.quant.formats import amax_triton

    with pytest.raises(ValueError, match="does not split into 3 equal slices"):
        amax_triton.amax_bits(torch.ones(4, 4, device=DEVICE), 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_per_tensor_quantize_launches_never_wait_for_the_gpu():
    """Only the public entry points' final NaN/Inf check waits; everything before it is queued."""
    from lowbit.quant.formats import fp8_triton, nvfp4_triton

    w = torch.randn(256, 512, device="cuda", dtype=torch.bfloat16)
    given = torch.tensor([100.0], device="cuda")
    calls = (lambda: nvfp4_triton.quantize_unchecked_triton(w),
             lambda: nvfp4_triton.quantize_unchecked_triton(w, given),
             lambda: fp8_triton.quantize_triton(w, "tensor"))
    for call in calls:
        call()  # compiles
    torch.cuda.set_sync_debug_mode("error")
    try:
        for call in calls:
            call()
    finally:
        torch.cuda.set_sync_debug_mode("default")
