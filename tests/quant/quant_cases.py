"""Named weight cases and the SQNR helper shared by the tests/quant modules (built once, used everywhere)."""

import importlib.util

import pytest
import torch

HAS_TRITON = importlib.util.find_spec("triton") is not None
requires_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed: pip install triton")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# Kernels run where Triton runs natively: the GPU if there is one, else the CPU interpreter (conftest.py).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

FINITE_CASES = ("normal", "student_t", "zeros", "tiny", "huge", "mixed_blocks")
NONFINITE_CASES = ("nan_inf",)
# float16 holds the finite cases whose magnitudes it can represent, and one case of its own
FLOAT16_CASES = ("normal", "student_t", "zeros", "f16_extremes")
F16_MAX = 65504.0


def sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB; +inf when the approximation is exact."""
    reference, approximation = reference.to(torch.float64), approximation.to(torch.float64)
    noise = (reference - approximation).pow(2).sum()
    if noise == 0:
        return float("inf")
    return float(10 * torch.log10(reference.pow(2).sum() / noise))


def make_weight(case: str, shape: tuple[int, int], dtype=torch.bfloat16, device=DEVICE, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator)
    if case == "normal":
        x = base
    elif case == "student_t":  # heavy tails: a few outliers set the block scales
        chi2 = torch.randn((3, *shape), generator=generator).pow(2).sum(0) / 3
        x = base / chi2.sqrt()
    elif case == "zeros":
        x = torch.zeros(shape)
    elif case == "tiny":
        x = base * 1e-30
    elif case == "huge":
        x = base * 1e30
    elif case == "mixed_blocks":  # every 16 columns another magnitude, some blocks all zero
        exponents = torch.randint(-40, 40, (shape[0], shape[1] // 16), generator=generator).float()
        x = base * torch.exp2(exponents).repeat_interleave(16, dim=1)
        x[:, 16:32] = 0
    elif case == "f16_extremes":  # float16's range end to end: every 16 columns another magnitude, from its
        # subnormals up to its largest value 65504, which each row holds once (as -65504 in odd rows)
        exponents = torch.randint(-26, 16, (shape[0], shape[1] // 16), generator=generator).float()
        x = (base * torch.exp2(exponents).repeat_interleave(16, dim=1)).clamp(-F16_MAX, F16_MAX)
        x[:, 0] = torch.where(torch.arange(shape[0]) % 2 == 0, F16_MAX, -F16_MAX)
        x[:, 1] = 61000.0  # in the top binade, where a scale rounded up sends values past 65504
    elif case == "nan_inf":
        x = base.clone()
        x[0, 3] = float("nan")
        x[1, 40] = float("inf")
        x[-1, -1] = float("-inf")
    else:
        raise ValueError(f"unknown case {case!r}")
    return x.to(dtype).to(device)


def assert_bits_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    """Exact equality of two tensors' bytes (works for float8 and for NaN payloads)."""
    assert a.shape == b.shape and a.dtype == b.dtype
    as_bytes = lambda t: t.contiguous().view(torch.uint8)  # noqa: E731
    torch.testing.assert_close(as_bytes(a), as_bytes(b), atol=0, rtol=0)


def assert_values_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    """Exact equality of values, NaN equal to NaN (payload bits may differ between backends)."""
    torch.testing.assert_close(a, b, atol=0, rtol=0, equal_nan=True)


def rounding_edge_groups(scale_of_amax, boundaries: torch.Tensor, groups: int, group_size: int, seed: int = 0,
                         same_amax: bool = False):
    """fp32 (groups, group_size): element 0 of each group is its amax (one for all with same_amax), which
    fixes the group's scale; the others lie on and one ulp around boundary * scale, the inputs whose
    quotient x / scale sits at a rounding boundary of the target grid, where an inexact division would
    pick another code."""
    generator = torch.Generator().manual_seed(seed)
    amax = 0.5 + torch.rand(1 if same_amax else groups, 1, generator=generator).expand(groups, 1)
    scale = scale_of_amax(amax)
    centre = boundaries.to(torch.float32)[None, :] * scale
    edges = torch.stack([centre, torch.nextafter(centre, centre * 2), torch.nextafter(centre, centre * 0)], -1)
    edges = edges.reshape(groups, -1)
    pick = torch.randint(0, edges.shape[1], (groups, group_size - 1), generator=generator)
    chosen = torch.minimum(torch.gather(edges, 1, pick), amax)
    signs = torch.where(torch.rand(chosen.shape, generator=generator) < 0.5, -1.0, 1.0)
    return torch.cat([amax, chosen * signs], dim=1).to(DEVICE)


def record_activation_quantizations(monkeypatch) -> list[tuple[int, ...]]:
    """Patch fake_quant so every activation fake-quantization appends its input's shape to the returned list."""
    from lowbit.quant import fake_quant

    shapes: list[tuple[int, ...]] = []
    make_quantizer = fake_quant.activation_quantizer

    def recording_quantizer(fmt, backend):
        quantize = make_quantizer(fmt, backend)

        def recording(x):
            shapes.append(tuple(x.shape))
            return quantize(x)

        return recording

    monkeypatch.setattr(fake_quant, "activation_quantizer", recording_quantizer)
    return shapes
