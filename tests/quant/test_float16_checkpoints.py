"""float16 checkpoints (models for GPUs without bfloat16) through `lowbit quantize` and `lowbit dequantize`.

The same weights (Qwen3, Qwen3-MoE, GPT-OSS), exactly representable in float16 and bfloat16, saved in float32,
bfloat16 and float16, quantize into the same codes and scales for every scheme (every format computes its scales
in float32; the group-wise integer scales, stored in the weight's 16-bit dtype, are made exact in each dtype by
giving every group an amax of half the integer range times a power of two). A float16 checkpoint dequantizes to float16, exactly what
transformers computes from it in float16, and both load and run in float16.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lowbit.quant.checkpoint import QuantizeRequest, dequantize_checkpoint, quantize_checkpoint

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (scheme, group_size, half the integer range when the scale is stored in the weight's dtype, else None)
SCHEMES = [("nvfp4", None, None), ("mxfp4", None, None), ("mxfp8", None, None), ("fp8", None, None),
           ("fp8-block", None, None), ("int8", None, None), ("int8", 32, 127.5), ("w4a16", 128, 7.5),
           ("w4a16", 32, 7.5)]
SCHEME_IDS = [scheme + (f"-g{group}" if group else "") for scheme, group, _ in SCHEMES]


def build(arch: str):
    """A one-layer random Qwen3, Qwen3-MoE or GPT-OSS (float32) whose Linear shapes are multiples of 128
    (GPT-OSS's experts are fused 3-D tensors, which `lowbit quantize` copies as they are)."""
    from transformers import (GptOssConfig, GptOssForCausalLM, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig,
                              Qwen3MoeForCausalLM)

    shape = dict(vocab_size=512, hidden_size=256, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                 head_dim=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    if arch == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(intermediate_size=512, **shape))
    if arch == "gpt_oss":
        return GptOssForCausalLM(GptOssConfig(intermediate_size=128, num_local_experts=4, num_experts_per_tok=2,
                                              sliding_window=16, **shape))
    return Qwen3MoeForCausalLM(Qwen3MoeConfig(intermediate_size=512, moe_intermediate_size=128, num_experts=4,
                                              num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
                                              **shape))


def representable(w: torch.Tensor, half_range: float | None) -> torch.Tensor:
    """w rounded to values that float16 and bfloat16 both hold; with `half_range`, every 32 columns of a matrix
    (or of each expert's matrix: (experts, out, in)) get an amax of half_range * 2**k, so that amax / half_range
    is exact in both."""
    w = w.detach().float().bfloat16().float()
    w = torch.where(w.half().float() == w, w, torch.zeros_like(w))
    if half_range is not None and w.ndim >= 2 and w.shape[-1] % 32 == 0:
        groups = w.reshape(*w.shape[:-1], -1, 32)
        amax = groups.abs().amax(dim=-1).clamp(min=2.0**-10)
        groups[..., 0] = -half_range * torch.exp2(torch.ceil(torch.log2(amax / half_range)))
    return w


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(arch, half_range) -> {dtype: checkpoint directory} of the same weights, built on first use."""
    built: dict[tuple[str, float | None], dict[torch.dtype, Path]] = {}

    def get(arch: str, half_range: float | None) -> dict[torch.dtype, Path]:
        if (arch, half_range) not in built:
            model = build(arch)
            with torch.no_grad():
                for parameter in model.parameters():
                    parameter.copy_(representable(parameter, half_range))
            root = tmp_path_factory.mktemp(f"{arch}-{half_range}")
            built[arch, half_range] = {}
            for dtype in DTYPES:  # float32 -> bfloat16 -> float16 is exact for these values
                model = model.to(dtype)
                model.config.dtype = dtype
                model.save_pretrained(root / str(dtype).removeprefix("torch."))
                built[arch, half_range][dtype] = root / str(dtype).removeprefix("torch.")
        return built[arch, half_range]

    return get


def read_dir(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def quantize(source: Path, out: Path, scheme: str, group_size: int | None) -> Path:
    quantize_checkpoint(QuantizeRequest(model=str(source), out=out, scheme=scheme, group_size=group_size,
                                        allow_partial=True))
    return out


def comparable_config(path: Path) -> dict:
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    for key in ("source_model", "weight_scale_dtype"):
        config["lowbit"].pop(key)
    return config


@pytest.mark.parametrize("scheme, group_size, half_range", SCHEMES, ids=SCHEME_IDS)
@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe", "gpt_oss"])
def test_float16_source_quantizes_to_the_codes_and_scales_of_bfloat16_and_float32(sources, tmp_path, arch, scheme,
                                                                                    group_size, half_range):
    outputs = {dtype: quantize(path, tmp_path / str(dtype), scheme, group_size)
               for dtype, path in sources(arch, half_range).items()}
    tensors = {dtype: read_dir(out) for dtype, out in outputs.items()}
    float16 = tensors[torch.float16]
    quantized = [name for name in float16 if name.endswith(("weight_packed", "weight_scale"))]
    assert len(quantized) >= 4  # GPT-OSS: the attention projections; its fused experts stay as they are
    for dtype in (torch.float32, torch.bfloat16):
        assert comparable_config(outputs[dtype]) == comparable_config(outputs[torch.float16])
        assert set(tensors[dtype]) == set(float16)
        for name, tensor in float16.items():
            other = tensors[dtype][name]
            if tensor.dtype == other.dtype:  # codes, float32 scales: bit for bit
                assert torch.equal(tensor.view(torch.uint8), other.view(torch.uint8)), name
            else:  # tensors kept in the source's dtype (norms, embeddings, 16-bit group scales): same values
                assert tensor.dtype == torch.float16 and other.dtype == dtype, name
                assert torch.equal(tensor.double(), other.double()), name
    scale_dtypes = {float16[name].dtype for name in quantized if name.endswith("weight_scale")}
    assert (scale_dtypes == {torch.float16}) if half_range else not scale_dtypes & {torch.float16, torch.bfloat16}


@pytest.mark.parametrize("scheme, group_size", [("w4a16", 128), ("int8", 32)])
def test_float16_dequantizes_to_exactly_what_transformers_computes_in_float16(sources, tmp_path, scheme, group_size):
    """q * scale with float16 scales, in float16: what a float16 runtime multiplies out."""
    from transformers import AutoModelForCausalLM

    quantized = quantize(sources("qwen3", 7.5 if scheme == "w4a16" else 127.5)[torch.float16], tmp_path / "q",
                         scheme, group_size)
    dense = dequantize_checkpoint(str(quantized), tmp_path / "dense").out
    ours = read_dir(dense)
    model = AutoModelForCausalLM.from_pretrained(quantized, dtype=torch.float16)
    with torch.no_grad():
        model(torch.arange(8)[None])  # transformers decompresses at the first forward pass
    state = model.state_dict()
    linear = [name for name in ours if name.endswith("proj.weight")]
    assert len(linear) == 7
    for name in linear:
        assert ours[name].dtype == torch.float16 and torch.equal(state[name], ours[name]), name


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp4", "mxfp8", "fp8-block", "w4a16"])
@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe", "gpt_oss"])
def test_float16_checkpoints_load_and_run_in_float16(sources, tmp_path, arch, scheme):
    """The dequantized checkpoint (float16 weights) and, for the dense model, the quantized one through the
    transformers predictor's loader, whose weights compressed-tensors decompresses to bfloat16 for the FP4 and
    MXFP8 formats (transformers runs quantized Qwen3-MoE experts only dequantized; GPT-OSS's stay unquantized)."""
    from transformers import AutoModelForCausalLM

    from lowbit.predictors.transformers import _cast_linear_weights_to_model_dtype, _load_model

    quantized = quantize(sources(arch, None)[torch.float16], tmp_path / "q", scheme, None)
    dense = dequantize_checkpoint(str(quantized), tmp_path / "dense").out
    assert {t.dtype for t in read_dir(dense).values()} == {torch.float16}
    models = {dense: AutoModelForCausalLM.from_pretrained(dense)}
    if arch == "qwen3":
        models[quantized] = _load_model(str(quantized), dtype="auto")
    for path, model in models.items():
        cast = _cast_linear_weights_to_model_dtype(model)
        assert model.dtype == torch.float16, path
        assert bool(cast) == (path == quantized and scheme in ("nvfp4", "mxfp4", "mxfp8")), cast
        with torch.no_grad():
            logits = model(torch.arange(16)[None]).logits
        assert logits.dtype == torch.float16 and bool(torch.isfinite(logits).all()), path
