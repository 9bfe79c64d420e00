"""GPTQ through llm-compressor on a tiny Qwen3 with a tiny local calibration set (CPU)."""

import json
import random

import pytest
import torch

from lowbit.errors import UsageError

pytest.importorskip("llmcompressor", reason="llm-compressor is not installed (pip install --no-deps llmcompressor)")
gptq = pytest.importorskip("lowbit.quant.gptq")

WORDS = ("the a model quantization weight layer token matrix error sample cat dog runs fast slow blue green seven "
         "river stone light under over music number question answer").split()
SCHEME = "w4a16_g32"


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(count)]


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("calibration") / "calibration.jsonl"
    rows = [{"text": t} for t in texts(28, seed=0)]
    rows += [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": t[::-1]}]}
             for t in texts(4, seed=1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def checkpoints(tiny_model, calibration_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantized")
    records = {}
    for method in gptq.METHODS:
        records[method] = gptq.quantize_calibrated(tiny_model, out / method, scheme=SCHEME, method=method,
                                                   calibration=str(calibration_file), num_samples=32,
                                                   max_length=64, seed=0)
    return out, records


def test_checkpoint_records_recipe_calibration_and_versions(checkpoints, calibration_file):
    out, records = checkpoints
    config = json.loads((out / "gptq" / "config.json").read_text())["quantization_config"]
    assert config["format"] == "pack-quantized" and config["quant_method"] == "compressed-tensors"
    weights = config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["group_size"], weights["strategy"]) == (4, 32, "group")
    assert "lm_head" in config["ignore"]
    record = config["lowbit"]
    assert record == json.loads(json.dumps(records["gptq"]))
    assert record["method"] == "gptq" and record["scheme"] == SCHEME and "GPTQModifier" in record["recipe"][0]
    calibration = record["calibration"]
    assert calibration["name"] == str(calibration_file) and calibration["samples"] == 32
    assert len(calibration["sha256"]) == 64 and calibration == records["rtn"]["calibration"]
    assert set(record["versions"]) >= {"llmcompressor", "compressed_tensors", "transformers", "torch"}
    assert record["moe"] is None  # a dense model has no routers


def test_checkpoint_loads_in_transformers_and_generates(checkpoints):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoints[0] / "gptq").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    output = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert output.shape == (1, 10)
    assert torch.isfinite(model(ids).logits).all()


def layer_errors(tiny_model, quantized_dir, token_ids) -> dict[str, float]:
    """Per Linear: ||X W_q^T - X W^T|| on the inputs X the original model gives that layer on token_ids."""
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    original = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    decompressed = AutoModelForCausalLM.from_pretrained(
        quantized_dir, dtype=torch.float32, quantization_config=CompressedTensorsConfig(run_compressed=False))
    quantized = dict(decompressed.named_modules())
    inputs, handles = {}, []
    for name, module in original.named_modules():
        if isinstance(module, torch.nn.Linear) and name != "lm_head":
            handles.append(module.register_forward_pre_hook(
                lambda m, args, name=name: inputs.setdefault(name, []).append(args[0].reshape(-1, args[0].shape[-1]))))
    with torch.no_grad():
        for ids in token_ids:
            original(torch.tensor([ids]))
    modules = dict(original.named_modules())
    errors = {}
    for name, xs in inputs.items():
        x = torch.cat(xs)
        delta = quantized[name].weight.detach().float() - modules[name].weight.detach()
        errors[name] = float((x @ delta.T).norm())
    return errors


def test_gptq_layer_output_error_on_held_out_inputs_is_lower_than_rtn(checkpoints, tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    held_out = [tokenizer(t, add_special_tokens=False)["input_ids"][:64] for t in texts(16, seed=7)]
    out, _ = checkpoints
    gptq_errors = layer_errors(tiny_model, out / "gptq", held_out)
    rtn_errors = layer_errors(tiny_model, out / "rtn", held_out)
    assert sum(gptq_errors.values()) < 0.9 * sum(rtn_errors.values())
    better = sum(gptq_errors[n] < rtn_errors[n] for n in gptq_errors)
    assert better >= 0.75 * len(gptq_errors), (gptq_errors, rtn_errors)


@pytest.mark.parametrize("kwargs, message", [
    ({"scheme": "w3a16"}, "unknown scheme 'w3a16'"),
    ({"scheme": "w4a16_g128", "smoothquant": True}, "smoothquant=true needs a scheme that quantizes activations"),
    ({"scheme": "w8a8", "method": "awq"}, "unknown method 'awq'"),
])
def test_bad_requests_fail_before_loading(tiny_model, tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        gptq.quantize_calibrated(tiny_model, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_schemes_map_to_the_intended_compressed_tensors_arguments():
    w4a8 = gptq.scheme_config("w4a8", ["Linear"])
    assert (w4a8.weights.num_bits, w4a8.weights.strategy) == (4, "channel")
    assert (w4a8.input_activations.num_bits, w4a8.input_activations.strategy) == (8, "token")
    assert w4a8.input_activations.dynamic is True
    assert gptq.scheme_config("w8a16_g128", ["Linear"]).weights.group_size == 128
    assert gptq.scheme_config("nvfp4a16", ["Linear"]).weights.strategy == "tensor_group"
    recipe = gptq.build_recipe("w8a8_no_attn", "gptq", True, ["Linear"], list(gptq.DEFAULT_IGNORE))
    assert [type(m).__name__ for m in recipe] == ["SmoothQuantModifier", "GPTQModifier"]
    assert gptq.ATTENTION in recipe[1].ignore and r"re:.*mlp\.gate$" in recipe[1].ignore


def test_routed_token_counts_name_experts_that_saw_no_token():
    class Router(torch.nn.Module):  # as transformers' TopKRouter: (logits, scores, indices)
        def forward(self, x):
            logits = torch.stack([x.sum(-1), -x.sum(-1), torch.zeros_like(x.sum(-1))], -1)
            indices = torch.topk(logits, 1, dim=-1).indices
            return logits, logits, indices

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Config", (), {"num_experts_per_tok": 1})()
            self.embed = torch.nn.Embedding(10, 4)
            self.block_router = Router()

        def forward(self, input_ids):
            return self.block_router(self.embed(input_ids))

    model = Model()
    routed = gptq.count_routed_tokens(model, [{"input_ids": [1, 2, 3]}, {"input_ids": [4, 5]}], "cpu")
    assert sum(routed["block_router"]) == 5 and routed["block_router"][2] == 0
    assert gptq.uncalibrated_experts(routed) == {"block_router": [i for i, n in enumerate(routed["block_router"])
                                                                  if n == 0]}


def test_lowbit_quantize_method_gptq_writes_a_checkpoint_transformers_loads(tiny_model, calibration_file, tmp_path):
    from support import run_lowbit
    from transformers import AutoModelForCausalLM

    out = tmp_path / "w4a16-gptq"
    result = run_lowbit("quantize", f"model={tiny_model}", "method=gptq", "scheme=w4a16", "group_size=32",
                        f"out={out}", f"calibration={calibration_file}", "num_calibration_samples=16",
                        "calibration_max_length=64", "seed=0")
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["lowbit"]["method"] == "gptq" and config["lowbit"]["scheme"] == "w4a16_g32"
    assert config["lowbit"]["calibration"]["samples"] == 16
    assert "quantized" in result.stdout and "(gptq)" in result.stdout
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False).shape == (1, 5)


@pytest.mark.parametrize("args, message", [
    (["method=gptq", "scheme=mxfp4"], "has no calibrated (llm-compressor) recipe"),
    (["scheme=w4a16", "group_size=64", "method=gptq"], "has no calibrated"),
    (["scheme=w8a8", "num_calibration_samples=0"], "num_calibration_samples must be an integer >= 1"),
])
def test_lowbit_quantize_refuses_bad_calibrated_requests_in_one_line(tiny_model, tmp_path, args, message):
    from support import run_lowbit

    result = run_lowbit("quantize", f"model={tiny_model}", f"out={tmp_path / 'q'}", *args)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "q").exists()


def test_qwen3_moe_gptq_calibrates_every_expert_and_keeps_the_routers(calibration_file, tmp_path):
    from safetensors import safe_open

    from lowbit.testing.tiny_moe import build_tiny_qwen3_moe

    model = build_tiny_qwen3_moe(tmp_path / "moe", num_experts=4, num_hidden_layers=2)
    record = gptq.quantize_calibrated(model, tmp_path / "out", scheme=SCHEME, method="gptq",
                                      calibration=str(calibration_file), num_samples=16, max_length=64, seed=0)
    assert record["moe"]["routers"] == ["model.layers.0.mlp.gate", "model.layers.1.mlp.gate"]
    assert record["moe"]["moe_calibrate_all_experts"] and record["moe"]["experts_not_quantized"] == []
    assert record["moe"]["experts_per_block"] == [4] and record["moe"]["unfused_expert_blocks"] == 2
    names = []
    for shard in (tmp_path / "out").glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            names += list(f.keys())
    # transformers keeps the experts fused; llm-compressor unfuses them, and every one is written quantized
    packed = {n for n in names if ".mlp.experts." in n and n.endswith(".weight_packed")}
    assert len(packed) == 2 * 4 * 3
    assert sorted(n for n in names if ".mlp.gate." in n) == [f"model.layers.{i}.mlp.gate.weight" for i in range(2)]
