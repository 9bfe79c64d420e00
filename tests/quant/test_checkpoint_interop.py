"""Checkpoints checked with the libraries users load them with: compressed-tensors, transformers.

- compressed-tensors' own model-free dequantizer (`convert_checkpoint` + `CompressedTensorsDequantizer`) turns
  our checkpoints into exactly the tensors `lowbit dequantize` writes, for every scheme it can read;
- transformers (which decompresses through compressed-tensors' ModelCompressor) loads them and generates;
- Qwen3-MoE per-expert weights and GPT-OSS (native MXFP4 experts, fused BF16 experts) round-trip.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lowbit.quant.checkpoint import QuantizeRequest, dequantize_checkpoint, quantize_checkpoint

pytest.importorskip("compressed_tensors")


def read_dir(path: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(file))
    return out


def assert_same_tensors(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        assert tensor.dtype == theirs[name].dtype, name
        assert torch.equal(tensor.view(torch.uint8), theirs[name].view(torch.uint8)), name  # bit for bit


def quantize(source: Path, out: Path, scheme: str, **kwargs):
    return quantize_checkpoint(QuantizeRequest(model=str(source), out=out, scheme=scheme, **kwargs))


@pytest.fixture(scope="module")
def dense_qwen3(tmp_path_factory) -> Path:
    """A one-layer random Qwen3 in BF16 whose every Linear shape is a multiple of 128 (so fp8-block applies)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    out = tmp_path_factory.mktemp("dense_qwen3")
    config = Qwen3Config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=64, tie_word_embeddings=False,
                         dtype="bfloat16")
    torch.manual_seed(0)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    return out


# compressed-tensors 0.17's model-free path asks MXFP4 modules for a weight_global_scale that neither its own
# MXFP4 compressor nor vLLM's MXFP4 scheme stores, so MXFP4 is checked through transformers below.
@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp8", "fp8", "fp8-block", "int8", "w4a16"])
def test_compressed_tensors_dequantizer_gives_exactly_our_dequantized_tensors(dense_qwen3, tmp_path, scheme):
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters import CompressedTensorsDequantizer

    result = quantize(dense_qwen3, tmp_path / "q", scheme)
    assert len(result.quantized) == 7 and result.unquantized == []
    dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "ours")
    convert_checkpoint(tmp_path / "q", tmp_path / "theirs", CompressedTensorsDequantizer(tmp_path / "q"))
    assert_same_tensors(read_dir(tmp_path / "ours"), read_dir(tmp_path / "theirs"))


def transformers_and_dequantized_weights(model_dir, tmp_path, scheme: str, dtype: torch.dtype):
    """(transformers' decompressed state dict in `dtype`, lowbit dequantize's 7 Linear weights) of one checkpoint."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    quantize(model_dir, tmp_path / "q", scheme)
    dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "ours")
    ours = {name: t for name, t in read_dir(tmp_path / "ours").items() if name.endswith("_proj.weight")}
    assert len(ours) == 7
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q", dtype=dtype,
                                                 quantization_config=CompressedTensorsConfig(run_compressed=False))
    return model.state_dict(), ours


@pytest.mark.parametrize("scheme", ["mxfp4", "w4a16"])
def test_transformers_decompression_gives_our_dequantized_weights(dense_qwen3, tmp_path, scheme):
    # float32 keeps the stored float32 scales as they are (a bfloat16 model would round them first).
    state, ours = transformers_and_dequantized_weights(dense_qwen3, tmp_path, scheme, torch.float32)
    for name in ours:
        assert torch.equal(state[name].to(torch.bfloat16), ours[name]), name


@pytest.mark.parametrize("scheme, group_size, bits", [("w4a16", None, 4.125), ("w4a16", 32, 4.5), ("int8", 128, 8.125)])
def test_group_scales_are_stored_in_the_model_dtype_and_decompress_to_q_times_the_stored_scale(
        dense_qwen3, tmp_path, scheme, group_size, bits):
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters import CompressedTensorsDequantizer

    from lowbit.quant.formats import integer
    from lowbit.report.bits import bits_per_weight

    quantize(dense_qwen3, tmp_path / "q", scheme, group_size=group_size)
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["config_group_0"]["weights"]["scale_dtype"] is None  # as llm-compressor writes it
    assert config["lowbit"]["weight_scale_dtype"] == "torch.bfloat16"
    assert bits_per_weight(f"{scheme}-rtn", config).bits == bits  # 16-bit scales, as stored
    stored = read_dir(tmp_path / "q")
    convert_checkpoint(tmp_path / "q", tmp_path / "theirs", CompressedTensorsDequantizer(tmp_path / "q"))
    theirs = read_dir(tmp_path / "theirs")
    modules = [name.removesuffix(".weight_scale") for name in stored if name.endswith(".weight_scale")]
    assert len(modules) == 7
    for module in modules:
        scale = stored[f"{module}.weight_scale"]
        assert scale.dtype == torch.bfloat16, module
        q = integer.unpack_int4(stored[f"{module}.weight_packed"]) if scheme == "w4a16" else stored[f"{module}.weight"]
        assert scale.shape == (q.shape[0], q.shape[1] // (group_size or 128))
        runtime = q.to(torch.bfloat16).reshape(*scale.shape, -1) * scale[..., None]  # q * scale in bfloat16
        assert torch.equal(theirs[f"{module}.weight"], runtime.reshape(q.shape)), module


def test_transformers_in_bfloat16_decompresses_w4a16_to_exactly_our_dequantized_weights(dense_qwen3, tmp_path):
    """The model's own dtype: transformers converts stored scales to it, which leaves bfloat16 scales as they are."""
    state, ours = transformers_and_dequantized_weights(dense_qwen3, tmp_path, "w4a16", torch.bfloat16)
    for name in ours:
        assert state[name].dtype == torch.bfloat16 and torch.equal(state[name], ours[name]), name


def test_transformers_generates_with_a_quantized_tiny_qwen3_as_with_its_dequantized_copy(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantize(tiny_model, tmp_path / "q", "nvfp4")
    dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "bf16")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "q")  # the tokenizer files were copied
    ids = tokenizer("The quick brown fox", return_tensors="pt").input_ids
    # bfloat16, as such checkpoints are run (compressed-tensors decompresses NVFP4 weights to bfloat16)
    quantized = AutoModelForCausalLM.from_pretrained(tmp_path / "q", dtype=torch.bfloat16)
    dense = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.bfloat16)
    generated = quantized.generate(ids, max_new_tokens=6, do_sample=False)
    assert generated.shape == (1, ids.shape[1] + 6)
    assert torch.equal(generated, dense.generate(ids, max_new_tokens=6, do_sample=False))
    with torch.no_grad():
        assert torch.equal(quantized(generated).logits, dense(generated).logits)


def test_qwen3_moe_experts_are_quantized_per_expert_and_routers_kept(tmp_path):
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters import CompressedTensorsDequantizer
    from transformers import AutoModelForCausalLM

    from lowbit.testing.tiny_moe import build_tiny_qwen3_moe

    source = build_tiny_qwen3_moe(tmp_path / "moe", num_hidden_layers=1)
    result = quantize(source, tmp_path / "q", "nvfp4")
    stored = read_dir(tmp_path / "q")
    assert stored["model.layers.0.mlp.gate.weight"].dtype == torch.float32  # the router stays as it was
    for expert in range(4):
        prefix = f"model.layers.0.mlp.experts.{expert}"
        assert f"{prefix}.down_proj.weight_packed" in stored
        assert torch.equal(stored[f"{prefix}.gate_proj.weight_global_scale"],
                           stored[f"{prefix}.up_proj.weight_global_scale"])  # vLLM's w13 of this expert
    assert len(result.quantized) == 4 + 3 * 4
    dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "ours")
    convert_checkpoint(tmp_path / "q", tmp_path / "theirs", CompressedTensorsDequantizer(tmp_path / "q"))
    assert_same_tensors(read_dir(tmp_path / "ours"), read_dir(tmp_path / "theirs"))
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


# --- GPT-OSS -----------------------------------------------------------------------------------------------------

def gpt_oss_config():
    from transformers import GptOssConfig

    return GptOssConfig(vocab_size=256, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                        num_local_experts=4, num_experts_per_tok=2, num_attention_heads=2, num_key_value_heads=1,
                        head_dim=64, sliding_window=32, max_position_embeddings=1024, dtype="bfloat16")


@pytest.fixture(scope="module")
def native_gpt_oss(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny GPT-OSS in openai's native layout: experts as MXFP4 *_blocks / *_scales, the rest BF16."""
    from transformers import GptOssForCausalLM

    out = tmp_path_factory.mktemp("gpt_oss_native")
    config = gpt_oss_config()
    torch.manual_seed(0)
    GptOssForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tensors = read_dir(out)
    for file in out.glob("*.safetensors*"):
        file.unlink()
    generator = torch.Generator().manual_seed(1)
    native = {}
    for name in list(tensors):
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            experts, k, n = tensors.pop(name).shape  # transformers' (E, in, out) -> native (E, out, in/32, 16)
            native[f"{name}_blocks"] = torch.randint(0, 256, (experts, n, k // 32, 16), dtype=torch.uint8,
                                                     generator=generator)
            native[f"{name}_scales"] = torch.randint(112, 134, (experts, n, k // 32), dtype=torch.uint8,
                                                     generator=generator)
    save_file({**tensors, **native}, out / "model.safetensors")
    config_json = json.loads((out / "config.json").read_text())
    config_json["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (out / "config.json").write_text(json.dumps(config_json))
    return out, native


def test_gpt_oss_native_mxfp4_dequantizes_as_transformers_does(native_gpt_oss, tmp_path):
    from transformers import GptOssForCausalLM
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    source, native = native_gpt_oss
    result = dequantize_checkpoint(str(source), tmp_path / "bf16")
    assert len(result.quantized) == 4
    dense = read_dir(tmp_path / "bf16")
    for name in [n.removesuffix("_blocks") for n in native if n.endswith("_blocks")]:
        theirs = convert_moe_packed_tensors(native[f"{name}_blocks"], native[f"{name}_scales"], dtype=torch.bfloat16)
        assert name in dense and f"{name}_blocks" not in dense
        assert dense[name].dtype == torch.bfloat16 and torch.equal(dense[name], theirs), name
    assert "quantization_config" not in json.loads((tmp_path / "bf16" / "config.json").read_text())
    model, info = GptOssForCausalLM.from_pretrained(tmp_path / "bf16", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    state = model.state_dict()
    name = "model.layers.1.mlp.experts.gate_up_proj"
    assert torch.equal(state[name], dense[name])


def test_gpt_oss_quantize_keeps_experts_bf16_and_quantizes_attention(native_gpt_oss, tmp_path):
    from transformers import AutoModelForCausalLM

    source, native = native_gpt_oss
    result = quantize(source, tmp_path / "q", "mxfp4")
    assert sorted({m.rsplit(".", 1)[-1] for m in result.quantized}) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    stored = read_dir(tmp_path / "q")
    assert stored["model.layers.0.mlp.experts.down_proj"].dtype == torch.bfloat16  # native MXFP4 -> BF16 layout
    assert stored["model.layers.0.mlp.router.weight"].dtype == torch.bfloat16
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "q", dtype=torch.bfloat16)
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert logits.shape == (1, 4, 256) and bool(torch.isfinite(logits).all())
