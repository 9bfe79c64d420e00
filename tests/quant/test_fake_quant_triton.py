"""The fused fake-quant kernels are bit-identical to the torch references (interpreter here, GPU when marked)."""

import pytest
import torch
from quant_cases import FINITE_CASES, assert_values_equal, make_weight, requires_cuda, requires_triton

from lowbit.quant import fake_quant as fq
from lowbit.quant.formats import registry

pytestmark = requires_triton
FORMATS = registry.activation_formats()


@pytest.fixture(scope="module")
def fqt():
    from lowbit.quant import fake_quant_triton

    return fake_quant_triton


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", FINITE_CASES + ("f16_extremes",))
@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_matches_reference(fmt, case, dtype):
    if dtype == torch.float16 and case in ("tiny", "huge", "mixed_blocks"):
        pytest.skip("outside float16's range")
    x = make_weight(case, (6, 96), dtype=dtype, seed=3)
    assert_values_equal(fq.fake_quantize_activation(x, fmt, backend="triton"), fq.fake_quantize_activation(x, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_handles_rows_longer_than_a_chunk_and_3d_inputs(fmt):
    x = make_weight("student_t", (2, 3 * 2048 + 64)).reshape(2, 1, -1)
    out = fq.fake_quantize_activation(x, fmt, backend="triton")
    assert out.shape == x.shape
    assert_values_equal(out, fq.fake_quantize_activation(x, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_kernel_marks_nonfinite_groups_as_the_reference_does(fmt):
    x = make_weight("nan_inf", (4, 64), dtype=torch.float32)
    out = fq.fake_quantize_activation(x, fmt, backend="triton")
    assert_values_equal(out, fq.fake_quantize_activation(x, fmt))
    assert torch.isnan(out[0, 3]) and torch.isnan(out[1, 40])


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_quantizer_serves_every_input_signature(fmt, fqt):
    """Compiled launches are kept per signature: widths, dtypes, row counts and misaligned pointers each get the
    kernel compiled for them, in any order, and repeat calls reuse it."""
    quantizer = fqt.ActivationQuantizer(fmt)
    flat = make_weight("student_t", (1, 8 * 512 + 1), dtype=torch.float32, seed=5).flatten()
    inputs = [flat[: 4 * 256].view(4, 256), flat[1 : 1 + 3 * 256].view(3, 256),  # the second starts 4 bytes off
              flat[: 2 * 512].view(2, 512), flat[: 256].view(1, 256).to(torch.bfloat16),
              flat[2 : 2 + 5 * 256].view(5, 256).to(torch.float16), flat[: 6 * 512].view(6, 512)[:, :256]]
    for x in inputs + inputs[::-1]:
        assert_values_equal(quantizer(x), fq.fake_quantize_activation(x, fmt))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("one_launch_max_blocks", [0, 1 << 20], ids=["two_launches", "one_launch"])
@pytest.mark.parametrize("case", ["student_t", "mixed_blocks", "nan_inf", "zeros", "tiny"])
def test_nvfp4_amax_in_the_launch_or_before_it_gives_the_reference(case, one_launch_max_blocks, dtype, fqt,
                                                                   monkeypatch):
    """One launch for decode-sized inputs, here of four programs that each fold the whole amax in four steps and
    quantize their 64 blocks; for larger inputs the amax-and-tables launch, then the blocks."""
    if dtype == torch.float16 and case in ("mixed_blocks", "tiny"):
        pytest.skip("outside float16's range")
    monkeypatch.setattr(fqt, "NVFP4_ONE_LAUNCH_MAX_BLOCKS", one_launch_max_blocks)
    monkeypatch.setattr(fqt, "NVFP4_ONE_LAUNCH_CHUNK", 1024)
    x = make_weight(case, (4, 1024), dtype=dtype)  # 256 blocks: four groups of 64
    assert_values_equal(fqt.ActivationQuantizer("nvfp4")(x), fq.fake_quantize_activation(x, "nvfp4"))


def test_nvfp4_two_launch_state_is_ready_for_every_next_call(fqt, monkeypatch):
    """The amax launch's last program resets the running amax and its count of finished programs: calls through
    one quantizer in a row, a NaN/Inf tensor among them and inputs of several amax programs, each give the
    reference, as if each were the first."""
    monkeypatch.setattr(fqt, "NVFP4_ONE_LAUNCH_MAX_BLOCKS", 0)
    quantizer = fqt.ActivationQuantizer("nvfp4")
    cases = ["student_t", "nan_inf", "zeros", "mixed_blocks", "normal", "tiny", "nan_inf", "student_t"]
    for index, case in enumerate(cases):
        rows = 2 + 3 * (index % 3)  # 2, 5 or 8 rows of 2048: one to four amax chunks of 4096 elements
        x = make_weight(case, (rows, 2048), dtype=torch.float32, seed=index)
        assert_values_equal(quantizer(x), fq.fake_quantize_activation(x, "nvfp4"))


@pytest.mark.gpu
@requires_cuda
def test_gpu_nvfp4_two_launch_state_is_kept_per_stream(fqt):
    """One quantizer called on two CUDA streams at once: each stream's calls keep their own amax and tables."""
    quantizer = fqt.ActivationQuantizer("nvfp4")
    inputs = [make_weight(case, (1024, 2048), dtype=torch.bfloat16, device="cuda", seed=seed)
              for seed, case in enumerate(["student_t", "normal", "mixed_blocks", "nan_inf"])]
    expected = [fq.fake_quantize_activation(x, "nvfp4") for x in inputs]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    outputs = []
    for _ in range(8):
        outputs.append([quantizer(inputs[0]), quantizer(inputs[1])])
        with torch.cuda.stream(side):
            outputs[-1] += [quantizer(inputs[2]), quantizer(inputs[3])]
    torch.cuda.current_stream().wait_stream(side)
    for round_outputs in outputs:
        for out, reference in zip(round_outputs, expected):
            assert_values_equal(out, reference)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ["normal", "student_t", "zeros", "mixed_blocks", "f16_extremes"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_gpu_kernel_matches_reference(fmt, case, dtype):
    if dtype == torch.float16 and case == "mixed_blocks":
        pytest.skip("outside float16's range")
    x = make_weight(case, (512, 6144), dtype=dtype, device="cuda")
    assert_values_equal(fq.fake_quantize_activation(x, fmt, backend="triton"), fq.fake_quantize_activation(x, fmt))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("fmt", FORMATS)
def test_gpu_wrapped_model_matches_cpu_reference(fmt, tmp_path):
    from transformers import AutoModelForCausalLM

    from lowbit.testing.tiny import build_tiny_qwen3

    path = build_tiny_qwen3(tmp_path / "tiny")
    ids = torch.randint(0, 1000, (2, 24), generator=torch.Generator().manual_seed(0))
    logits = {}
    for device in ("cpu", "cuda"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        emulation = fq.apply_fake_quant(model, act_quant=fmt, weight_quant="nvfp4")
        assert emulation.backend == ("triton" if device == "cuda" else "ref")
        with torch.no_grad():
            logits[device] = model(ids.to(device)).logits.cpu()
    # fp32 GEMMs differ in summation order between devices, which can move an activation across a rounding
    # boundary of the emulated format in a later layer: compare the whole output, not elements
    error = (logits["cuda"] - logits["cpu"]).norm() / logits["cpu"].norm()
    assert error < 1e-2
