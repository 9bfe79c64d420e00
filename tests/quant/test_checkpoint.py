"""Streaming checkpoint quantization: layouts, fused global scales, sharding bounds, atomic output, bad input.

Checkpoints here are written directly with safetensors (Qwen3-shaped names, random weights) so each test runs
in well under a second; tests/quant/test_checkpoint_interop.py checks the results with the real libraries.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lowbit.errors import UsageError
from lowbit.quant import safetensors_io as ckpt_files
from lowbit.quant.checkpoint import QuantizeRequest, dequantize_checkpoint, quantize_checkpoint
from lowbit.quant.formats import fp8, integer, mx, nvfp4
from lowbit.quant.schemes import SCHEMES

HIDDEN, INTERMEDIATE, KV = 256, 512, 128


def layer_tensors(layer: int, generator: torch.Generator, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    def w(rows, cols, scale=0.02):
        return (torch.randn(rows, cols, generator=generator) * scale).to(dtype)

    prefix = f"model.layers.{layer}"
    return {
        f"{prefix}.input_layernorm.weight": torch.ones(HIDDEN, dtype=dtype),
        f"{prefix}.self_attn.q_proj.weight": w(HIDDEN, HIDDEN),
        f"{prefix}.self_attn.k_proj.weight": w(KV, HIDDEN, 0.05),  # larger amax: it sets the shared scale
        f"{prefix}.self_attn.v_proj.weight": w(KV, HIDDEN),
        f"{prefix}.self_attn.o_proj.weight": w(HIDDEN, HIDDEN),
        f"{prefix}.self_attn.q_norm.weight": torch.ones(64, dtype=dtype),
        f"{prefix}.mlp.gate_proj.weight": w(INTERMEDIATE, HIDDEN),
        f"{prefix}.mlp.up_proj.weight": w(INTERMEDIATE, HIDDEN, 0.03),
        f"{prefix}.mlp.down_proj.weight": w(HIDDEN, INTERMEDIATE),
    }


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], shards: int = 1, config: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in names[i::shards]}
        save_file(part, path / file)
        weight_map.update({n: file for n in part})
    (path / ckpt_files.INDEX).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (path / ckpt_files.CONFIG).write_text(json.dumps(config or {"architectures": ["Qwen3ForCausalLM"],
                                                          "model_type": "qwen3"}))
    (path / "tokenizer_config.json").write_text("{}")
    (path / "generation_config.json").write_text('{"do_sample": true}')
    (path / "chat_template.jinja").write_text("{{ messages }}")
    return path


@pytest.fixture
def source(tmp_path) -> Path:
    generator = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(512, HIDDEN, generator=generator).to(torch.bfloat16),
               "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
               "lm_head.weight": torch.randn(512, HIDDEN, generator=generator).to(torch.bfloat16)}
    for layer in range(2):
        tensors.update(layer_tensors(layer, generator))
    return write_checkpoint(tmp_path / "src", tensors, shards=2)


def read_dir(path: Path) -> dict[str, torch.Tensor]:
    index = json.loads((path / ckpt_files.INDEX).read_text())["weight_map"]
    out = {}
    for file in sorted(set(index.values())):
        out.update(load_file(path / file))
    assert set(out) == set(index)
    return out


def quantize(source: Path, out: Path, scheme: str, **kwargs):
    return quantize_checkpoint(QuantizeRequest(model=str(source), out=out, scheme=scheme, **kwargs))


def test_scheme_config_groups_equal_the_compressed_tensors_presets():
    quant_scheme = pytest.importorskip("compressed_tensors.quantization.quant_scheme")
    presets = {"nvfp4": "NVFP4A16", "mxfp4": "MXFP4", "mxfp8": "MXFP8", "fp8": "FP8_DYNAMIC", "fp8-block": "FP8_BLOCK",
               "int8": "INT8", "w4a16": "W4A16"}
    assert set(presets) == set(SCHEMES)
    for name, preset in presets.items():
        scheme = SCHEMES[name]
        expected = quant_scheme.preset_name_to_scheme(preset, ["Linear"]).model_dump(mode="json")
        expected["format"] = scheme.format
        assert scheme.config_group(scheme.resolve_group_size(None), ["Linear"]) == expected, name


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_quantize_writes_the_compressed_tensors_layout_and_dequantize_inverts_it(source, tmp_path, scheme):
    result = quantize(source, tmp_path / "q", scheme)
    stored = read_dir(tmp_path / "q")
    original = read_dir(source)
    linear = [n.removesuffix(".weight") for n in original if n.endswith("_proj.weight")]
    assert result.unquantized == [] and sorted(result.quantized) == sorted(linear)  # every shape fits every block
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
                 "model.layers.0.self_attn.q_norm.weight"):
        assert torch.equal(stored[name], original[name])  # ignored by default, copied bit for bit
    module = "model.layers.1.mlp.down_proj"
    weight = original[f"{module}.weight"]
    params = {k.removeprefix(module + "."): v for k, v in stored.items() if k.startswith(module + ".")}
    expected = SCHEMES[scheme].encode(weight, SCHEMES[scheme].resolve_group_size(None), "ref", None)
    assert set(params) == set(expected)
    for suffix, value in expected.items():
        assert params[suffix].dtype == value.dtype and torch.equal(params[suffix].view(torch.uint8),
                                                                   value.view(torch.uint8)), suffix

    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["quantization_status"] == "compressed"
    assert config["format"] == SCHEMES[scheme].format
    assert config["config_groups"]["config_group_0"]["targets"] == ["Linear"]
    assert config["lowbit"]["scheme"] == scheme and config["lowbit"]["source_model"] == str(source)
    for side in ("tokenizer_config.json", "generation_config.json", "chat_template.jinja"):
        assert (tmp_path / "q" / side).read_text() == (source / side).read_text()

    dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "bf16")
    dense = read_dir(tmp_path / "bf16")
    assert set(dense) == set(original)
    assert "quantization_config" not in json.loads((tmp_path / "bf16" / "config.json").read_text())
    # The dequantized weight is the format's own dequantization of what was stored.
    reference = {
        "nvfp4": lambda e: nvfp4.dequantize_ref(nvfp4.NVFP4Weight(e["weight_packed"], e["weight_scale"],
                                                                  e["weight_global_scale"])),
        "mxfp4": lambda e: mx.dequantize_ref(mx.MXWeight(e["weight_packed"], e["weight_scale"]), "fp4"),
        "mxfp8": lambda e: mx.dequantize_ref(mx.MXWeight(e["weight"], e["weight_scale"]), "fp8"),
        "fp8": lambda e: fp8.dequantize_ref(fp8.FP8Weight(e["weight"], e["weight_scale"])),
        "fp8-block": lambda e: fp8.dequantize_ref(fp8.FP8Weight(e["weight"], e["weight_scale"])),
        "int8": lambda e: integer.dequantize_int8_ref(integer.IntWeight(e["weight"], e["weight_scale"])),
        "w4a16": lambda e: integer.dequantize_int4_ref(integer.IntWeight(e["weight_packed"], e["weight_scale"])),
    }[scheme]
    assert dense[f"{module}.weight"].dtype == torch.bfloat16
    assert torch.equal(dense[f"{module}.weight"], reference(expected))
    relative = (dense[f"{module}.weight"].float() - weight.float()).norm() / weight.float().norm()
    assert relative < {"mxfp4": 0.2, "nvfp4": 0.15, "w4a16": 0.15}.get(scheme, 0.05)


def test_nvfp4_fused_siblings_share_one_global_scale_from_their_joint_amax(source, tmp_path):
    quantize(source, tmp_path / "q", "nvfp4")
    stored, original = read_dir(tmp_path / "q"), read_dir(source)
    for layer in range(2):
        for siblings in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
            parent = "self_attn" if "q_proj" in siblings else "mlp"
            names = [f"model.layers.{layer}.{parent}.{s}" for s in siblings]
            amax = max(original[f"{n}.weight"].float().abs().max() for n in names)
            expected = nvfp4.shared_global_scale(*[original[f"{n}.weight"] for n in names])
            for n in names:
                assert torch.equal(stored[f"{n}.weight_global_scale"], expected)
                assert torch.equal(stored[f"{n}.weight_global_scale"], (torch.tensor(2688.0) / amax).reshape(1))
        own = f"model.layers.{layer}.self_attn.o_proj"
        assert torch.equal(stored[f"{own}.weight_global_scale"], nvfp4.shared_global_scale(original[f"{own}.weight"]))


def test_output_is_sharded_and_memory_stays_near_one_tensor_plus_one_shard(tmp_path):
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(6):
        tensors.update(layer_tensors(layer, generator))
    source = write_checkpoint(tmp_path / "src", tensors, shards=3)
    limit = 300_000
    result = quantize(source, tmp_path / "q", "fp8", max_shard_bytes=limit)
    largest_output = INTERMEDIATE * HIDDEN  # an FP8 gate/up/down weight, bytes
    assert len(result.shards) >= 6
    assert result.peak_pending_bytes <= limit  # no shard is held beyond its bound ...
    assert result.bytes_written > 8 * limit  # ... while the model is many times larger
    assert result.largest_tensor_bytes == INTERMEDIATE * HIDDEN * 2
    for file in result.shards:
        shard = load_file(tmp_path / "q" / file)
        assert sum(t.nbytes for t in shard.values()) <= max(limit, largest_output + 4 * INTERMEDIATE)
    index = json.loads((tmp_path / "q" / ckpt_files.INDEX).read_text())
    assert index["metadata"]["total_size"] == result.bytes_written
    assert sorted(set(index["weight_map"].values())) == result.shards
    assert all(f"-of-{len(result.shards):05d}" in f for f in result.shards)


def test_shapes_off_the_block_are_refused_unless_a_partial_checkpoint_is_asked_for(tmp_path):
    generator = torch.Generator().manual_seed(2)
    tensors = layer_tensors(0, generator)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.randn(64, HIDDEN, generator=generator).to(torch.bfloat16)
    source = write_checkpoint(tmp_path / "src", tensors)
    with pytest.raises(UsageError, match=r"^3 of 7 targeted modules .* fp8-block block .*"
                                         r"model\.layers\.0\.self_attn\.k_proj: \(64, .*allow_partial=true"):
        quantize(source, tmp_path / "q", "fp8-block")
    assert not (tmp_path / "q").exists()


def test_shapes_off_the_block_are_left_unquantized_with_their_fused_siblings_and_listed(tmp_path):
    generator = torch.Generator().manual_seed(2)
    tensors = layer_tensors(0, generator)
    tensors["model.layers.0.self_attn.k_proj.weight"] = torch.randn(64, HIDDEN, generator=generator).to(torch.bfloat16)
    source = write_checkpoint(tmp_path / "src", tensors)
    result = quantize(source, tmp_path / "q", "fp8-block", allow_partial=True)
    attention = [f"model.layers.0.self_attn.{p}" for p in ("k_proj", "q_proj", "v_proj")]
    assert result.unquantized == attention  # k_proj has 64 rows; q/v go with it (vLLM fuses q/k/v)
    stored = read_dir(tmp_path / "q")
    for module in attention:
        assert torch.equal(stored[f"{module}.weight"], tensors[f"{module}.weight"])
    assert stored["model.layers.0.self_attn.o_proj.weight"].dtype == torch.float8_e4m3fn
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert set(attention) <= set(config["ignore"]) and config["lowbit"]["unquantized_modules"] == attention


def test_targets_and_ignore_are_regexes_written_into_the_config(source, tmp_path):
    result = quantize(source, tmp_path / "q", "int8", targets=[r".*mlp\.(gate|up)_proj"],
                      ignore=[r"model\.layers\.1\."])
    assert result.quantized == ["model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"]
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["config_group_0"]["targets"] == [r"re:.*mlp\.(gate|up)_proj"]
    assert config["ignore"] == [r"re:model\.layers\.1\."]


def test_group_size_override_changes_the_int4_groups(source, tmp_path):
    quantize(source, tmp_path / "q", "w4a16", group_size=32)
    stored = read_dir(tmp_path / "q")
    assert stored["model.layers.0.mlp.down_proj.weight_scale"].shape == (HIDDEN, INTERMEDIATE // 32)
    assert torch.equal(stored["model.layers.0.mlp.down_proj.weight_shape"], torch.tensor([HIDDEN, INTERMEDIATE]))
    config = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["config_group_0"]["weights"]["group_size"] == 32


def leaves_nothing(tmp_path: Path, out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


@pytest.mark.parametrize("case, message", [
    ("nan", "contains NaN or Inf"),
    ("inf_nvfp4", "contains NaN or Inf"),
    ("int_weight", "has dtype I32"),
    ("no_match", "match no weight"),
    ("bad_regex", "not a valid regular expression"),
    ("split_fused", "vLLM fuses them"),
    ("bad_group", "takes group_size"),
    ("unknown_scheme", "unknown scheme"),
])
def test_bad_input_is_one_usage_error_and_leaves_no_output(source, tmp_path, case, message):
    tensors = read_dir(source)
    kwargs: dict = {"scheme": "fp8"}
    if case == "nan":
        tensors["model.layers.1.mlp.down_proj.weight"][3, 5] = float("nan")
    elif case == "inf_nvfp4":
        tensors["model.layers.1.self_attn.v_proj.weight"][0, 0] = float("inf")
        kwargs["scheme"] = "nvfp4"
    elif case == "int_weight":
        tensors["model.layers.1.mlp.down_proj.weight"] = torch.zeros(HIDDEN, INTERMEDIATE, dtype=torch.int32)
    elif case == "no_match":
        kwargs["targets"] = [".*does_not_exist"]
    elif case == "bad_regex":
        kwargs["ignore"] = ["(unclosed"]
    elif case == "split_fused":
        kwargs["targets"] = [r".*q_proj"]
    elif case == "bad_group":
        kwargs.update(scheme="w4a16", group_size=48)
    elif case == "unknown_scheme":
        kwargs["scheme"] = "fp3"
    bad = write_checkpoint(tmp_path / "bad", tensors)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message) as error:
        quantize(bad, out, **kwargs)
    assert "\n" not in str(error.value)
    assert leaves_nothing(tmp_path, out)


def test_missing_config_index_or_weights_are_usage_errors(source, tmp_path):
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    with pytest.raises(UsageError, match="has no config.json"):
        quantize(no_config, tmp_path / "o1", "fp8")
    (source / ckpt_files.INDEX).unlink()
    with pytest.raises(UsageError, match="no model.safetensors.index.json"):
        quantize(source, tmp_path / "o2", "fp8")
    with pytest.raises(UsageError, match="is not a directory or a hub id"):
        quantize(tmp_path / "absent", tmp_path / "o3", "fp8")
    assert leaves_nothing(tmp_path, tmp_path / "o1") and leaves_nothing(tmp_path, tmp_path / "o2")


def test_existing_output_needs_overwrite_and_is_replaced_whole(source, tmp_path):
    out = tmp_path / "q"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(UsageError, match="exists and is not empty"):
        quantize(source, out, "int8")
    assert (out / "keep.txt").read_text() == "user data"
    quantize(source, out, "int8", overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_already_quantized_source_is_refused_and_dense_source_cannot_be_dequantized(source, tmp_path):
    quantize(source, tmp_path / "q", "fp8")
    with pytest.raises(UsageError, match="already quantized"):
        quantize(tmp_path / "q", tmp_path / "qq", "fp8")
    with pytest.raises(UsageError, match="has no quantization_config"):
        dequantize_checkpoint(str(source), tmp_path / "d")


def test_eval_run_metadata_records_the_lowbit_block(source, tmp_path):
    from lowbit.environment import quantization_metadata

    quantize(source, tmp_path / "q", "mxfp4")
    recorded = quantization_metadata(str(tmp_path / "q"))
    assert recorded["format"] == "mxfp4-pack-quantized"
    assert recorded["lowbit"]["scheme"] == "mxfp4" and recorded["lowbit"]["method"] == "rtn"


# --- GPT-OSS experts stored per expert (GPTQ's layout) come back fused ------------------------------------------

GPT_OSS_EXPERTS, GPT_OSS_INTERMEDIATE = 4, 64
GPT_OSS_CONFIG = {"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": HIDDEN,
                  "intermediate_size": GPT_OSS_INTERMEDIATE, "num_local_experts": GPT_OSS_EXPERTS}


def per_expert_gpt_oss(path: Path) -> Path:
    """A GPT-OSS-shaped checkpoint with per-expert gate/up/down Linear weights and biases, over 3 shards."""
    generator = torch.Generator().manual_seed(3)
    tensors = {"model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16)}
    shapes = {"gate_proj": (GPT_OSS_INTERMEDIATE, HIDDEN), "up_proj": (GPT_OSS_INTERMEDIATE, HIDDEN),
              "down_proj": (HIDDEN, GPT_OSS_INTERMEDIATE)}
    for layer in range(2):
        prefix = f"model.layers.{layer}"
        tensors[f"{prefix}.self_attn.o_proj.weight"] = torch.randn(HIDDEN, HIDDEN, generator=generator).bfloat16()
        tensors[f"{prefix}.mlp.router.weight"] = torch.randn(GPT_OSS_EXPERTS, HIDDEN, generator=generator).bfloat16()
        for expert in range(GPT_OSS_EXPERTS):
            for projection, shape in shapes.items():
                module = f"{prefix}.mlp.experts.{expert}.{projection}"
                tensors[f"{module}.weight"] = (torch.randn(shape, generator=generator) * 0.02).bfloat16()
                tensors[f"{module}.bias"] = torch.randn(shape[0], generator=generator).bfloat16()
    return write_checkpoint(path, tensors, shards=3, config=GPT_OSS_CONFIG)


def test_gpt_oss_per_expert_checkpoint_dequantizes_to_the_fused_interleaved_layout(tmp_path):
    quantize(per_expert_gpt_oss(tmp_path / "src"), tmp_path / "q", "w4a16", allow_partial=True)
    assert "model.layers.1.mlp.experts.3.up_proj.weight_packed" in read_dir(tmp_path / "q")
    result = dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "fused", max_shard_bytes=200_000)
    fused = read_dir(tmp_path / "fused")
    assert result.fused_experts == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    assert len(result.shards) > 1 and not [n for n in fused if re.search(r"experts\.\d+\.", n)]
    assert "quantization_config" not in json.loads((tmp_path / "fused" / ckpt_files.CONFIG).read_text())
    # the same checkpoint read as a model without GPT-OSS's fused experts: its per-expert BF16 weights
    (tmp_path / "q" / ckpt_files.CONFIG).write_text(json.dumps(
        {**json.loads((tmp_path / "q" / ckpt_files.CONFIG).read_text()), "model_type": "qwen3_moe"}))
    dequantize_checkpoint(str(tmp_path / "q"), tmp_path / "per_expert")
    per_expert = read_dir(tmp_path / "per_expert")
    for layer in range(2):
        block = f"model.layers.{layer}.mlp.experts"
        assert fused[f"{block}.gate_up_proj"].shape == (GPT_OSS_EXPERTS, HIDDEN, 2 * GPT_OSS_INTERMEDIATE)
        assert fused[f"{block}.gate_up_proj"].dtype == torch.bfloat16
        assert fused[f"{block}.down_proj"].shape == (GPT_OSS_EXPERTS, GPT_OSS_INTERMEDIATE, HIDDEN)
        for expert in range(GPT_OSS_EXPERTS):
            gate, up, down = (f"{block}.{expert}.{projection}" for projection in ("gate_proj", "up_proj", "down_proj"))
            assert torch.equal(fused[f"{block}.gate_up_proj"][expert], torch.stack(  # gate even, up odd columns
                [per_expert[f"{gate}.weight"].T, per_expert[f"{up}.weight"].T], dim=-1).flatten(-2))
            assert torch.equal(fused[f"{block}.gate_up_proj_bias"][expert], torch.stack(
                [per_expert[f"{gate}.bias"], per_expert[f"{up}.bias"]], dim=-1).flatten())
            assert torch.equal(fused[f"{block}.down_proj"][expert], per_expert[f"{down}.weight"].T)
            assert torch.equal(fused[f"{block}.down_proj_bias"][expert], per_expert[f"{down}.bias"])
        assert torch.equal(fused[f"model.layers.{layer}.self_attn.o_proj.weight"],
                           per_expert[f"model.layers.{layer}.self_attn.o_proj.weight"])


@pytest.mark.parametrize("drop, message", [
    ("model.layers.1.mlp.experts.2.up_proj.bias", r"experts\.2\.up_proj has no bias"),
    ("model.layers.0.mlp.experts.3.", r"layers\.0\.mlp\.experts lacks experts \[3\]"),
], ids=["bias", "expert"])
def test_gpt_oss_experts_missing_from_the_checkpoint_are_one_usage_error_and_leave_no_output(tmp_path, drop,
                                                                                            message):
    quantize(per_expert_gpt_oss(tmp_path / "src"), tmp_path / "q", "w4a16", allow_partial=True)
    tensors = {n: t for n, t in read_dir(tmp_path / "q").items() if not n.startswith(drop)}
    config = json.loads((tmp_path / "q" / ckpt_files.CONFIG).read_text())
    broken = write_checkpoint(tmp_path / "broken", tensors, config=config)
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message) as error:
        dequantize_checkpoint(str(broken), out)
    assert "\n" not in str(error.value) and "incomplete" in str(error.value)
    assert leaves_nothing(tmp_path, out)
