"""Fake quantization of fused MoE experts (transformers' Qwen3-MoE and GPT-OSS experts modules): the emulated
forward against the models' own eager forward and a plain float64 reference, weight emulation per expert,
reporting, validation, removal, and an end-to-end generate."""

import pytest
import torch
from quant_cases import DEVICE, record_activation_quantizations, requires_triton
from torch.nn import functional as F
from transformers import GptOssConfig, GptOssForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from lowbit.quant import fake_quant as fq
from lowbit.quant import fake_quant_experts as fqe
from lowbit.quant.formats import fp8, integer, mx, nvfp4, registry

HIDDEN, INTERMEDIATE, EXPERTS, LAYERS = 64, 64, 4, 2
ACT_REFERENCES = {
    "int8": integer.fake_quantize_activation_ref,
    "fp8": fp8.fake_quantize_activation_ref,
    "mxfp8": lambda x: mx.fake_quantize_activation_ref(x, "fp8"),
    "mxfp4": lambda x: mx.fake_quantize_activation_ref(x, "fp4"),
    "nvfp4": nvfp4.fake_quantize_activation_ref,  # one global scale over the rows it is given: one expert's tokens
}


def build_qwen3_moe(seed: int = 0) -> Qwen3MoeForCausalLM:
    config = Qwen3MoeConfig(vocab_size=256, hidden_size=HIDDEN, intermediate_size=2 * INTERMEDIATE,
                            moe_intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS, num_attention_heads=2,
                            num_key_value_heads=1, head_dim=32, num_experts=EXPERTS, num_experts_per_tok=2,
                            mlp_only_layers=[], decoder_sparse_step=1, experts_implementation="eager")
    torch.manual_seed(seed)
    return Qwen3MoeForCausalLM(config).eval()


def build_gpt_oss(seed: int = 0) -> GptOssForCausalLM:
    config = GptOssConfig(vocab_size=256, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                          num_hidden_layers=LAYERS, num_local_experts=EXPERTS, num_experts_per_tok=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=16,
                          experts_implementation="eager")
    torch.manual_seed(seed)
    model = GptOssForCausalLM(config).eval()
    with torch.no_grad():  # transformers initializes the expert biases to zero; make them count
        for layer in model.model.layers:
            layer.mlp.experts.gate_up_proj_bias.normal_(std=0.05)
            layer.mlp.experts.down_proj_bias.normal_(std=0.05)
    return model


BUILDERS = {"qwen3_moe": build_qwen3_moe, "gpt_oss": build_gpt_oss}


def experts_of(model) -> list[torch.nn.Module]:
    return [layer.mlp.experts for layer in model.model.layers]


def expert_matrices(experts, projection: str) -> torch.Tensor:
    """(E, out, in) copies of a projection's weights, whatever the module's storage layout."""
    weight = getattr(experts, projection).detach()
    return (weight.transpose(1, 2) if experts.is_transposed else weight).clone()


def route(block, x2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-k expert ids, top-k weights) from the block's own (exact) router."""
    router = block.gate if hasattr(block, "gate") else block.router
    _, weights, index = router(x2d)
    return index, weights


def run_block(block, x: torch.Tensor) -> torch.Tensor:
    out = block(x)
    return out[0] if isinstance(out, tuple) else out  # GptOssMLP also returns its router scores


def swiglu_halves(h: torch.Tensor) -> torch.Tensor:  # Qwen3-MoE: [gate | up]
    gate, up = h[..., :INTERMEDIATE], h[..., INTERMEDIATE:]
    return F.silu(gate) * up


def gpt_oss_gate(experts):  # GPT-OSS: interleaved gate/up, clamped, (up + 1) * gate * sigmoid(alpha * gate)
    def gate(h: torch.Tensor) -> torch.Tensor:
        g, u = h[..., 0::2].clamp(max=experts.limit), h[..., 1::2].clamp(-experts.limit, experts.limit)
        return (u + 1) * g * torch.sigmoid(experts.alpha * g)
    return gate


def reference_moe(experts, x2d, index, weights, act, up_weights, down_weights, *, batch_input_scale=False):
    """float64 per expert: fake-quant its tokens' inputs (fp32, the format references) -> matmul -> gate ->
    fake-quant -> matmul, weighted by the router and summed over each token's experts. batch_input_scale:
    the gate_up input quantized once over all tokens instead (what differs for NVFP4's global scale)."""
    quantize = ACT_REFERENCES[act]
    inputs = quantize(x2d) if batch_input_scale else x2d
    gate = gpt_oss_gate(experts) if experts.is_transposed else swiglu_halves
    bias_up = experts.gate_up_proj_bias.detach() if experts.has_bias else torch.zeros(EXPERTS, 2 * INTERMEDIATE)
    bias_down = experts.down_proj_bias.detach() if experts.has_bias else torch.zeros(EXPERTS, HIDDEN)
    out = torch.zeros(x2d.shape, dtype=torch.float64)
    for e in range(EXPERTS):
        token, slot = torch.where(index == e)
        x = inputs[token] if batch_input_scale else quantize(x2d[token])
        h = x.double() @ up_weights[e].double().T + bias_up[e].double()
        h = quantize(gate(h).float()).double() @ down_weights[e].double().T + bias_down[e].double()
        out.index_add_(0, token, h * weights[token, slot].double()[:, None])
    return out


def block_input(seed: int = 1) -> torch.Tensor:
    """(1, 24, H) activations with a few outlier tokens, so that per-expert NVFP4 global scales differ."""
    x = torch.randn(1, 24, HIDDEN, generator=torch.Generator().manual_seed(seed))
    x[0, ::7] *= 20
    return x


@pytest.mark.parametrize("arch", BUILDERS)
def test_unquantized_emulated_forward_is_bit_identical_to_eager(arch):
    model = BUILDERS[arch]()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = model(ids).logits
        handles = [fqe.install(experts, "none", "ref") for experts in experts_of(model)]
        assert all(isinstance(vars(experts)["forward"], fqe.ExpertsFakeQuant) for experts in experts_of(model))
        emulated = model(ids).logits
        for handle in handles:
            handle.remove()
        restored = model(ids).logits
    torch.testing.assert_close(emulated, eager, rtol=0, atol=0)
    torch.testing.assert_close(restored, eager, rtol=0, atol=0)
    assert all("forward" not in vars(experts) for experts in experts_of(model))


@pytest.mark.parametrize("act, weight", [(act, "none") for act in registry.activation_formats()] + [
    ("nvfp4", "nvfp4"), ("mxfp4", "mxfp4"), ("int8", "int4_g32"), ("fp8", "fp8")])
@pytest.mark.parametrize("arch", BUILDERS)
def test_moe_block_matches_a_float64_per_expert_reference(arch, act, weight):
    model = BUILDERS[arch]()
    block = model.model.layers[0].mlp
    experts = block.experts
    first = "gate_up_proj"
    up, down = expert_matrices(experts, first), expert_matrices(experts, "down_proj")
    if weight != "none":
        up = torch.stack([fq.fake_quantize_weight(m, weight) for m in up])
        down = torch.stack([fq.fake_quantize_weight(m, weight) for m in down])
    emulation = fq.apply_fake_quant(model, act_quant=act, weight_quant=weight, targets=[r"layers\.0\.mlp\.experts$"])
    assert emulation.wrapped == [] and emulation.wrapped_experts == ["model.layers.0.mlp.experts"]
    x = block_input()
    with torch.no_grad():
        out = run_block(block, x).reshape(-1, HIDDEN)
        index, weights = route(block, x.reshape(-1, HIDDEN))
    assert index.unique().numel() == EXPERTS  # every expert has tokens
    expected = reference_moe(experts, x.reshape(-1, HIDDEN), index, weights, act, up, down)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("act, differs", [("nvfp4", True), ("mxfp4", False), ("int8", False)])
def test_only_nvfp4_depends_on_which_tokens_an_expert_sees(act, differs):
    """A batch-wide NVFP4 global scale (the Linear path's convention) would give other expert outputs; the
    row-local formats are the same either way."""
    model = build_qwen3_moe()
    block = model.model.layers[0].mlp
    fq.apply_fake_quant(model, act_quant=act, targets=[r"layers\.0\.mlp\.experts$"])
    x = block_input()
    with torch.no_grad():
        out = run_block(block, x).reshape(-1, HIDDEN).double()
        index, weights = route(block, x.reshape(-1, HIDDEN))
    up, down = expert_matrices(block.experts, "gate_up_proj"), expert_matrices(block.experts, "down_proj")
    batch_scaled = reference_moe(block.experts, x.reshape(-1, HIDDEN), index, weights, act, up, down,
                                 batch_input_scale=True)
    close = torch.allclose(out, batch_scaled, rtol=1e-5, atol=1e-5 * float(batch_scaled.abs().max()))
    assert close != differs


@pytest.mark.parametrize("act, calls_per_layer", [("fp8", lambda hit: 1 + hit), ("nvfp4", lambda hit: 2 * hit)])
def test_row_local_formats_quantize_the_expert_input_once(act, calls_per_layer, monkeypatch):
    calls = record_activation_quantizations(monkeypatch)
    model = build_qwen3_moe()
    block = model.model.layers[0].mlp
    fq.apply_fake_quant(model, act_quant=act, targets=[r"layers\.0\.mlp\.experts$"])
    x = block_input()
    with torch.no_grad():
        run_block(block, x)
        hit = route(block, x.reshape(-1, HIDDEN))[0].unique().numel()
    assert len(calls) == calls_per_layer(hit)
    if act == "fp8":
        assert calls[0] == (x.shape[1], HIDDEN)  # all tokens at once, before the expert loop


@pytest.mark.parametrize("fmt", registry.weight_formats())
@pytest.mark.parametrize("arch", BUILDERS)
def test_weight_quant_replaces_each_expert_matrix_by_its_fake_quantized_values(arch, fmt):
    model = BUILDERS[arch]()
    experts = experts_of(model)[0]
    if fmt == "int4_g128":  # the tiny models' expert input dims (64) do not divide 128
        with pytest.raises(ValueError, match=r"int4_g128 needs expert input dims divisible by 128, but "
                           r"model\.layers\.0\.mlp\.experts\.gate_up_proj has 64; add model\.layers\.0\.mlp"
                           r"\.experts to quant_ignore"):
            fq.apply_fake_quant(model, weight_quant=fmt, targets=[r"\.experts$"])
        return
    originals = {p: expert_matrices(experts, p) for p in ("gate_up_proj", "down_proj")}
    biases = [p.detach().clone() for n, p in experts.named_parameters() if n.endswith("_bias")]
    router = (model.model.layers[0].mlp.gate if arch == "qwen3_moe" else model.model.layers[0].mlp.router).weight
    router_before = router.detach().clone()
    emulation = fq.apply_fake_quant(model, weight_quant=fmt)
    assert emulation.handles == [] and len(emulation.wrapped_experts) == LAYERS
    for projection, original in originals.items():
        changed = expert_matrices(experts, projection)
        for e in range(EXPERTS):
            torch.testing.assert_close(changed[e], fq.fake_quantize_weight(original[e], fmt), rtol=0, atol=0)
        assert not torch.equal(changed, original)
    for before, (name, after) in zip(biases, [(n, p) for n, p in experts.named_parameters() if n.endswith("_bias")]):
        torch.testing.assert_close(after.detach(), before, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(router.detach(), router_before, rtol=0, atol=0)


@pytest.mark.parametrize("arch", BUILDERS)
def test_describe_counts_experts_and_remove_restores_logits(arch):
    model = BUILDERS[arch]()
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = model(ids).logits
        emulation = fq.apply_fake_quant(model, act_quant="nvfp4")
        quantized = model(ids).logits
        emulation.remove()
        after = model(ids).logits
    described = emulation.describe()
    assert described["wrapped_experts_count"] == LAYERS
    assert described["wrapped_experts"] == {"model.layers.*.mlp.experts": LAYERS}
    assert described["experts_scheme"] == fqe.EXPERTS_SCHEME
    assert described["unreached_fused_experts"] == {} and described["kept_experts"] == {}
    assert described["wrapped"]["model.layers.*.self_attn.q_proj"] == LAYERS
    assert not any("router" in name or name.endswith("mlp.gate") for name in emulation.wrapped)
    assert not torch.allclose(quantized, before)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert all("forward" not in vars(experts) for experts in experts_of(model))


def test_ignored_experts_stay_exact_and_are_reported_as_kept():
    model = build_gpt_oss()
    emulation = fq.apply_fake_quant(model, act_quant="fp8", ignore=[*fq.DEFAULT_IGNORE, r"\.experts$"])
    described = emulation.describe()
    assert described["wrapped_experts_count"] == 0 and described["experts_scheme"] is None
    assert described["kept_experts"] == {"model.layers.*.mlp.experts": LAYERS}
    assert all("forward" not in vars(experts) for experts in experts_of(model))


def test_block_format_misfit_raises_before_changing_anything():
    model = build_qwen3_moe()
    experts = experts_of(model)[1]
    experts.down_proj = torch.nn.Parameter(experts.down_proj.detach()[:, :, :48].clone())  # input dim 48
    weights = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"act_quant=mxfp4 needs expert input dims divisible by 32, but "
                       r"model\.layers\.1\.mlp\.experts\.down_proj has 48; add model\.layers\.1\.mlp\.experts"):
        fq.apply_fake_quant(model, act_quant="mxfp4", weight_quant="nvfp4")
    assert all(torch.equal(a, b.detach()) for a, b in zip(weights, model.parameters()))
    assert all("forward" not in vars(e) for e in experts_of(model))


def test_packed_experts_are_reported_as_unreached_with_the_reason():
    model = build_gpt_oss()
    experts = experts_of(model)[0]
    experts.gate_up_proj = torch.nn.Parameter(torch.zeros(EXPERTS, 2 * INTERMEDIATE, HIDDEN // 32, 16,
                                                          dtype=torch.uint8), requires_grad=False)
    described = fq.apply_fake_quant(model, act_quant="fp8").describe()
    assert described["unreached_fused_experts"] == {"model.layers.*.mlp.experts": 1}
    reason = "gate_up_proj is uint8, not float32/bfloat16/float16 (packed or quantized experts)"
    assert described["unreached_reasons"] == {"model.layers.*.mlp.experts": reason}
    assert described["wrapped_experts"] == {"model.layers.*.mlp.experts": 1}


def test_tiny_moe_generates_with_emulated_experts(tmp_path):
    from lowbit.predictors.transformers import TransformersPredictor
    from lowbit.sampling import Sampling
    from lowbit.testing.tiny_moe import build_tiny_qwen3_moe

    model_dir = build_tiny_qwen3_moe(tmp_path / "moe", hidden_size=64, moe_intermediate_size=64)
    predictor = TransformersPredictor(str(model_dir), batch_size=2, show_progress=False, act_quant="nvfp4",
                                      weight_quant="mxfp4")
    emulation = predictor.describe()["emulation"]
    assert emulation["wrapped_experts"] == {"model.layers.*.mlp.experts": 2}
    prompts = ["What is 2 + 2?", "Name a colour."]
    limit = max(len(predictor.encode(p)) for p in prompts) + 6
    batches = list(predictor.generate(prompts, Sampling(template="qwen3", max_sequence_length=limit,
                                                        do_sample=False), seed=0))
    results = [generation for batch in batches for _, generations in batch for generation in generations]
    assert len(results) == 2 and all(g.completion_tokens > 0 for g in results)


def test_the_comparison_note_names_the_experts_and_what_was_not_reached():
    from lowbit.report.compare import describe_emulation  # imports the run/config stack (hydra)

    model = build_gpt_oss()
    packed = experts_of(model)[1]
    packed.down_proj = torch.nn.Parameter(packed.down_proj.detach().to(torch.float8_e4m3fn), requires_grad=False)
    line = describe_emulation(fq.apply_fake_quant(model, act_quant="mxfp4").describe())
    assert line.startswith(f"activations mxfp4 emulated (fake-quant) on {4 * LAYERS} Linear layers and 1 MoE "
                           "experts module (every expert); kept in the model's dtype: lm_head; ")
    assert line.endswith("NOT emulated (fused experts): model.layers.*.mlp.experts (down_proj is float8_e4m3fn, "
                         "not float32/bfloat16/float16 (packed or quantized experts))")


@requires_triton
def test_triton_backend_gives_the_reference_results(act="nvfp4", weight="nvfp4"):
    """The kernels (Triton's interpreter on CPU, the GPU where there is one) reach every expert call."""
    outputs = []
    for backend in ("ref", "triton"):
        model = build_gpt_oss().to(DEVICE)
        block = model.model.layers[0].mlp
        emulation = fq.apply_fake_quant(model, act_quant=act, weight_quant=weight, backend=backend,
                                        targets=[r"layers\.0\.mlp\.experts$"])
        assert emulation.backend == backend
        with torch.no_grad():
            outputs.append(run_block(block, block_input().to(DEVICE)))
    torch.testing.assert_close(outputs[1], outputs[0], rtol=0, atol=0)
