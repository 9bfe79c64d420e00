"""GPTQ on GPT-OSS: its fused experts are unfused into per-expert gate/up/down Linear modules, every one is
calibrated and written quantized, routers and lm_head are kept (CPU, tiny GPT-OSS, tiny local calibration set)."""

import json
import random
import re

import pytest
import torch

from lowbit.errors import UsageError

pytest.importorskip("llmcompressor", reason="llm-compressor is not installed (pip install --no-deps llmcompressor)")
gptq = pytest.importorskip("lowbit.quant.gptq")
from lowbit.quant.gpt_oss_experts import GptOssLinearExperts, linearized_gpt_oss_experts

WORDS = ("the", "a", "model", "weight", "layer", "token", "cat", "dog", "river", "stone", "light", "music", "number",
         "question", "answer", "seven")
GROUP = 32


def tiny_config():
    from transformers import GptOssConfig

    return GptOssConfig(vocab_size=128, hidden_size=64, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_local_experts=4,
                        num_experts_per_tok=2, dtype=torch.float32)


def test_linear_experts_hold_the_deinterleaved_projections_and_compute_the_same_function():
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    torch.manual_seed(0)
    config = tiny_config()
    fused = GptOssExperts(config)
    for parameter in fused.parameters():
        torch.nn.init.normal_(parameter, std=0.5)  # large enough that the +-7 clamps take effect
    linear = GptOssLinearExperts.from_experts_module(fused, config)
    assert len(linear) == 4
    expert = linear[2]
    assert torch.equal(expert.gate_proj.weight, fused.gate_up_proj[2][:, 0::2].T)
    assert torch.equal(expert.up_proj.bias, fused.gate_up_proj_bias[2][1::2])
    assert torch.equal(expert.down_proj.weight, fused.down_proj[2].T)

    hidden = torch.randn(24, 64) * 3
    logits = torch.randn(24, 4)
    top = torch.topk(logits, 2, dim=-1)
    weights = torch.softmax(top.values, dim=-1)
    with torch.no_grad():
        expected = fused(hidden, top.indices, weights)
        assert expected.abs().max() > 1
        torch.testing.assert_close(linear(hidden, top.indices, weights), expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_gpt_oss(tmp_path_factory):
    from lowbit.testing.tiny_gpt_oss import build_tiny_gpt_oss, harmony_tokenizer_files

    if harmony_tokenizer_files() is None:
        pytest.skip("shared/data/tokenizers (o200k_base.tiktoken, gpt_oss/chat_template.jinja) is absent; "
                    "see shared/data/SOURCES.md")
    return build_tiny_gpt_oss(tmp_path_factory.mktemp("tiny-gpt-oss"))


@pytest.fixture(scope="module")
def quantized(tiny_gpt_oss, tmp_path_factory):
    from support import run_lowbit

    root = tmp_path_factory.mktemp("gptq-gpt-oss")
    rng = random.Random(0)
    calibration = root / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(30))}) + "\n"
                                   for _ in range(8)))
    out = root / "w4a16"
    result = run_lowbit("quantize", f"model={tiny_gpt_oss}", "method=gptq", "scheme=w4a16", f"group_size={GROUP}",
                        f"out={out}", f"calibration={calibration}", "num_calibration_samples=8",
                        "calibration_max_length=32", "seed=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def saved_tensors(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = {}
    for shard in out.glob("*.safetensors"):
        tensors.update(load_file(shard))
    return tensors


def test_every_expert_is_written_quantized_per_projection_and_routers_and_lm_head_are_kept(quantized):
    tensors = saved_tensors(quantized)
    config = json.loads((quantized / "config.json").read_text())
    layers, experts = config["num_hidden_layers"], config["num_local_experts"]
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    shapes = {"gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden), "down_proj": (hidden, intermediate)}
    for layer in range(layers):
        for expert in range(experts):
            for projection, (rows, columns) in shapes.items():
                prefix = f"model.layers.{layer}.mlp.experts.{expert}.{projection}"
                assert tensors[f"{prefix}.weight_packed"].dtype == torch.int32
                assert tensors[f"{prefix}.weight_packed"].shape == (rows, columns // 8)
                assert tensors[f"{prefix}.weight_scale"].shape == (rows, columns // GROUP)
                assert tensors[f"{prefix}.bias"].shape == (rows,)
                assert f"{prefix}.weight" not in tensors
        router = f"model.layers.{layer}.mlp.router"
        assert tensors[f"{router}.weight"].dtype == torch.float32 and f"{router}.weight_packed" not in tensors
    assert not [n for n in tensors if re.search(r"experts\.(gate_up_proj|down_proj)", n)]  # nothing left fused
    assert tensors["lm_head.weight"].dtype == torch.float32 and "lm_head.weight_packed" not in tensors
    assert "model.layers.0.self_attn.q_proj.weight_packed" in tensors

    quantization = config["quantization_config"]
    assert quantization["format"] == "pack-quantized" and "lm_head" in quantization["ignore"]
    moe = quantization["lowbit"]["moe"]
    assert moe["routers"] == [f"model.layers.{i}.mlp.router" for i in range(layers)]
    assert moe["experts_per_block"] == [experts] and moe["unfused_expert_blocks"] == layers
    assert moe["experts_not_quantized"] == [] and moe["moe_calibrate_all_experts"]
    assert set(moe["experts_without_routed_tokens"]) <= set(moe["routers"])


def test_checkpoint_loads_in_transformers_with_linear_experts_and_generates(quantized, tiny_gpt_oss):
    from transformers import AutoModelForCausalLM

    with linearized_gpt_oss_experts():
        model = AutoModelForCausalLM.from_pretrained(quantized).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny_gpt_oss).eval()
    ids = torch.tensor([[200006, 1565, 200008, 3392, 382, 261]])
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    assert model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False).shape == (1, 9)

    # each decompressed projection is its own de-interleaved slice of the fused parameter, up to INT4 error
    for layer in range(2):
        fused = original.model.layers[layer].mlp.experts
        for expert in range(fused.num_experts):
            loaded = model.model.layers[layer].mlp.experts[expert]
            sources = {"gate_proj": fused.gate_up_proj[expert][:, 0::2].T, "up_proj": fused.gate_up_proj[expert][:, 1::2].T,
                       "down_proj": fused.down_proj[expert].T}
            for projection, source in sources.items():
                weight = getattr(loaded, projection).weight.detach()
                assert ((weight - source).norm() / source.norm()) < 0.25, (layer, expert, projection)
            assert ((loaded.gate_proj.weight - sources["up_proj"]).norm() / sources["up_proj"].norm()) > 1


def test_a_quantized_source_is_refused_with_the_dequantize_fix(tiny_model, tmp_path):
    source = tmp_path / "mxfp4"
    source.mkdir()
    config = json.loads((tiny_model / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4"}
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(UsageError, match=r"already quantized \(quant_method=mxfp4\).*lowbit dequantize"):
        gptq.quantize_calibrated(source, tmp_path / "out", scheme="w4a16_g32", calibration=str(source / "none"))
    assert not (tmp_path / "out").exists()
