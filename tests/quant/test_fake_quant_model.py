"""apply_fake_quant on the tiny Qwen3: which layers it reaches, weight emulation, validation, removal."""

import pytest
import torch
from quant_cases import record_activation_quantizations
from transformers import AutoModelForCausalLM

from lowbit.quant import fake_quant as fq
from lowbit.quant.formats import nvfp4, registry

PROJECTIONS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@pytest.fixture()
def model(tiny_model):
    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def token_ids():
    return torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))


def logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_defaults_wrap_every_decoder_linear_and_keep_lm_head(model, token_ids):
    before = logits(model, token_ids)
    emulation = fq.apply_fake_quant(model, act_quant="nvfp4")
    layers = model.config.num_hidden_layers
    assert emulation.wrapped == [f"model.layers.{i}.{p}" for i in range(layers) for p in PROJECTIONS]
    described = emulation.describe()
    assert described["wrapped_count"] == 7 * layers and described["backend"] == "ref"
    assert described["wrapped"]["model.layers.*.mlp.down_proj"] == layers
    assert described["kept_linear"] == {"lm_head": 1} and described["unreached_fused_experts"] == {}
    assert described["act_quant"] == "nvfp4" and described["weight_quant"] == "none"
    quantized = logits(model, token_ids)
    assert not torch.allclose(quantized, before)
    emulation.remove()
    torch.testing.assert_close(logits(model, token_ids), before, rtol=0, atol=0)


def test_regex_targets_and_ignores(model):
    emulation = fq.apply_fake_quant(model, act_quant="int8", targets=[r"layers\.0\."], ignore=["self_attn"])
    assert emulation.wrapped == [f"model.layers.0.{p}" for p in PROJECTIONS if p.startswith("mlp")]
    assert len(emulation.kept) == 1 + 7 * model.config.num_hidden_layers - 3


def test_sibling_projections_share_one_fake_quantized_input(model, token_ids, monkeypatch):
    original = fq.fake_quantize_activation
    calls = record_activation_quantizations(monkeypatch)
    emulation = fq.apply_fake_quant(model, act_quant="fp8")
    shared = logits(model, token_ids)
    assert len(calls) == 4 * model.config.num_hidden_layers  # q/k/v and gate/up quantize their input once
    emulation.remove()
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(lambda m, args: (original(args[0], "fp8"),))
               for n in emulation.wrapped]
    torch.testing.assert_close(logits(model, token_ids), shared, rtol=0, atol=0)  # same as quantizing each call
    for handle in handles:
        handle.remove()


@pytest.mark.parametrize("fmt", registry.weight_formats())
def test_weight_quant_replaces_weights_by_their_dequantized_values(model, fmt):
    q_proj = model.model.layers[0].self_attn.q_proj
    original = q_proj.weight.detach().clone()
    lm_head = model.lm_head.weight.detach().clone()
    emulation = fq.apply_fake_quant(model, weight_quant=fmt)
    assert emulation.handles == [] and emulation.describe()["weight_scheme"] == registry.get_format(fmt).description
    changed = q_proj.weight.detach()
    assert not torch.equal(changed, original)
    assert (changed - original).norm() / original.norm() < 0.2
    torch.testing.assert_close(model.lm_head.weight.detach(), lm_head, rtol=0, atol=0)
    if fmt != "nvfp4":  # NVFP4's global scale is shared with k/v: checked below
        torch.testing.assert_close(changed, fq.fake_quantize_weight(original, fmt), rtol=0, atol=0)
    block = {"int4_g32": 32, "int4_g128": 128, "mxfp4": 32, "nvfp4": 16}.get(fmt)
    if block:  # a 4-bit format: at most 16 distinct values per scale group
        groups = changed.reshape(-1, block)
        assert max(len(torch.unique(g)) for g in groups) <= 16


def test_nvfp4_weights_share_a_global_scale_across_fused_siblings(model):
    attention = model.model.layers[0].self_attn
    weights = [attention.q_proj.weight.detach().clone(), attention.k_proj.weight.detach().clone(),
               attention.v_proj.weight.detach().clone()]
    fq.apply_fake_quant(model, weight_quant="nvfp4")
    shared = nvfp4.shared_global_scale(*weights)
    for weight, module in zip(weights, (attention.q_proj, attention.k_proj, attention.v_proj)):
        expected = nvfp4.dequantize_ref(nvfp4.quantize_ref(weight, shared), weight.dtype)
        torch.testing.assert_close(module.weight.detach(), expected, rtol=0, atol=0)


def test_nothing_applied_for_none(model, token_ids):
    before = logits(model, token_ids)
    emulation = fq.apply_fake_quant(model)
    assert emulation.wrapped == [] and emulation.backend == "none"
    torch.testing.assert_close(logits(model, token_ids), before, rtol=0, atol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"act_quant": "fp4"}, "act_quant 'fp4' is unknown"),
    ({"weight_quant": "int3"}, "weight_quant 'int3' is unknown"),
    ({"act_quant": "fp8", "targets": ["(unclosed"]}, "not a valid regular expression"),
    ({"act_quant": "fp8", "targets": ["no_such_module"]}, "match no nn.Linear"),
    ({"act_quant": "fp8", "ignore": "lm_head"}, "must be a list of regular expressions"),
])
def test_bad_options_raise_before_changing_the_model(model, token_ids, kwargs, message):
    before = logits(model, token_ids)
    with pytest.raises(ValueError, match=message):
        fq.apply_fake_quant(model, **kwargs)
    torch.testing.assert_close(logits(model, token_ids), before, rtol=0, atol=0)


def test_block_formats_refuse_layers_whose_width_does_not_fit():
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module()])
    model.layers[0].proj = torch.nn.Linear(40, 8)
    with pytest.raises(ValueError, match="layers.0.proj has 40; add it to quant_ignore"):
        fq.apply_fake_quant(model, act_quant="mxfp4")
    assert fq.apply_fake_quant(model, act_quant="fp8").wrapped == ["layers.0.proj"]


def test_fused_3d_modules_that_are_not_transformers_experts_are_reported_as_unreached():
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Module()])
    model.layers[0].experts = torch.nn.Module()
    model.layers[0].experts.gate_up_proj = torch.nn.Parameter(torch.zeros(4, 64, 32))
    model.layers[0].proj = torch.nn.Linear(32, 8)
    described = fq.apply_fake_quant(model, act_quant="fp8").describe()
    assert described["unreached_fused_experts"] == {"layers.*.experts": 1}
    assert described["unreached_reasons"] == {
        "layers.*.experts": "not a transformers experts module (no use_experts_implementation layout)"}
    assert described["wrapped_experts_count"] == 0
    assert fq.layer_patterns(["model.layers.10.mlp.experts.3.up_proj"]) == {"model.layers.*.mlp.experts.*.up_proj": 1}
