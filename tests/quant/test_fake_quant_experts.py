"""Fake quantization of fused MoE experts (transformers' Qwen3-MoE and GPT-OSS experts modules): the emulated
forward against transformers' grouped_mm forward, a loop over experts and a plain float64 reference; its
kernel launches per layer; weight emulation per expert, reporting, validation, removal, and an end-to-end
generate."""

import pytest
import torch
from quant_cases import DEVICE, record_activation_quantizations, requires_triton
from torch.nn import functional as F
from transformers import GptOssConfig, GptOssForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from lowbit.quant import fake_quant as fq
from lowbit.quant import fake_quant_experts as fqe
from lowbit.quant.formats import fp8, integer, mx, nvfp4, registry

# the interpreter warns when a kernel's loop bound is a loaded scalar; the results are compared bit for bit
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:triton.runtime.interpreter")
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


def logits_with_experts_implementation(model, ids: torch.Tensor, implementation: str) -> torch.Tensor:
    """The model's logits with transformers' own experts forward `implementation` (eager, grouped_mm)."""
    before = model.config._experts_implementation
    model.config._experts_implementation = implementation
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        model.config._experts_implementation = before


@pytest.mark.parametrize("arch", BUILDERS)
def test_unquantized_emulated_forward_is_bit_identical_to_grouped_mm(arch):
    model = BUILDERS[arch]()
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    grouped = logits_with_experts_implementation(model, ids, "grouped_mm")
    eager = logits_with_experts_implementation(model, ids, "eager")
    with torch.no_grad():
        handles = [fqe.install(experts, "none", "ref") for experts in experts_of(model)]
        assert all(isinstance(vars(experts)["forward"], fqe.ExpertsFakeQuant) for experts in experts_of(model))
        emulated = model(ids).logits
        for handle in handles:
            handle.remove()
        restored = model(ids).logits
    torch.testing.assert_close(emulated, grouped, rtol=0, atol=0)
    torch.testing.assert_close(emulated, eager)  # eager sums the experts in another order: float rounding apart
    torch.testing.assert_close(restored, eager, rtol=0, atol=0)  # the models are built with eager experts
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


def test_row_local_formats_quantize_each_token_once_before_it_reaches_its_experts(monkeypatch):
    calls = record_activation_quantizations(monkeypatch)
    model = build_qwen3_moe()
    block = model.model.layers[0].mlp
    fq.apply_fake_quant(model, act_quant="fp8", targets=[r"layers\.0\.mlp\.experts$"])
    x = block_input()
    with torch.no_grad():
        run_block(block, x)
    pairs = x.shape[1] * model.config.num_experts_per_tok
    assert calls == [(x.shape[1], HIDDEN), (pairs, INTERMEDIATE)]  # the tokens, then every (token, expert) pair


def per_expert_forward(experts, act: str):
    """The emulation as a loop over experts (each expert's rows quantized by the format reference on their own,
    its own matmuls, outputs accumulated with index_add_): what the grouped forward computes at once."""
    quantize = ACT_REFERENCES[act]

    def forward(hidden_states, top_k_index, top_k_weights):
        out = torch.zeros_like(hidden_states)
        for e in range(experts.num_experts):
            token, slot = torch.where(top_k_index == e)
            if token.numel() == 0:
                continue
            h = F.linear(quantize(hidden_states[token]), expert_matrices(experts, "gate_up_proj")[e])
            h = h + experts.gate_up_proj_bias[e] if experts.has_bias else h
            h = F.linear(quantize(experts._apply_gate(h)), expert_matrices(experts, "down_proj")[e])
            h = h + experts.down_proj_bias[e] if experts.has_bias else h
            out.index_add_(0, token, h * top_k_weights[token, slot, None])
        return out

    return forward


@pytest.mark.parametrize("act", registry.activation_formats())
@pytest.mark.parametrize("arch", BUILDERS)
def test_logits_equal_the_per_expert_loop(arch, act):
    """Grouped and per-expert emulation quantize the same rows with the same scales. On the CPU torch's grouped
    matmul multiplies each expert's rows as F.linear does, and the tiny models' two experts per token sum
    alike in any order, so the logits are bit-identical. (On a GPU the grouped and the per-expert matmuls
    round differently, as transformers' grouped_mm and eager experts forwards do.)"""
    model = BUILDERS[arch]()
    ids = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        exact = model(ids).logits
        fq.apply_fake_quant(model, act_quant=act, targets=[r"\.experts$"])
        grouped = model(ids).logits
        for experts in experts_of(model):
            experts.forward = per_expert_forward(experts, act)
        looped = model(ids).logits
    assert not torch.equal(grouped, exact)
    torch.testing.assert_close(grouped, looped, rtol=0, atol=0)


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


# per-channel formats run one program per row, which Triton's interpreter makes slow on CPU
WEIGHT_FORMATS_BY_SPEED = [pytest.param(f, marks=pytest.mark.slow) if registry.get_format(f).block_size is None
                           else f for f in registry.weight_formats() if f != "int4_g128"]  # g128: see above


@requires_triton
@pytest.mark.parametrize("fmt", WEIGHT_FORMATS_BY_SPEED)
@pytest.mark.parametrize("arch", BUILDERS)
def test_triton_weight_quant_equals_the_reference_per_expert_loop(arch, fmt):
    model = BUILDERS[arch]().to(DEVICE)
    experts = experts_of(model)[0]
    originals = {p: expert_matrices(experts, p) for p in ("gate_up_proj", "down_proj")}
    emulation = fq.apply_fake_quant(model, weight_quant=fmt, targets=[r"layers\.0\.mlp\.experts$"],
                                    backend="triton")
    assert emulation.backend == "triton"
    for projection, original in originals.items():
        expected = torch.stack([fq.fake_quantize_weight(matrix, fmt) for matrix in original])
        torch.testing.assert_close(expert_matrices(experts, projection), expected, rtol=0, atol=0)


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8"])
def test_nonfinite_expert_weight_raises_before_changing_anything(fmt):
    model = build_qwen3_moe()
    experts = experts_of(model)[1]
    with torch.no_grad():
        experts.down_proj[2, 5, 7] = float("nan")
    weights = [p.detach().clone() for p in experts.parameters()]
    with pytest.raises(ValueError, match="weight contains NaN or Inf"):
        fqe.fake_quantize_weights(experts, fmt, "ref")
    for before, after in zip(weights, experts.parameters()):
        torch.testing.assert_close(after.detach(), before, rtol=0, atol=0, equal_nan=True)


@requires_triton
@pytest.mark.parametrize("arch", BUILDERS)
def test_nvfp4_expert_weights_take_two_launches_per_projection_however_many_experts(arch, monkeypatch):
    launched = count_kernel_launches(monkeypatch)
    block = wide_block(arch)
    fq.apply_fake_quant(block, weight_quant="nvfp4", targets=[r"^experts$"], ignore=[], backend="triton")
    assert launched == ["_expert_amax_kernel", "_grouped_nvfp4_kernel"] * 2


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


def wide_block(arch: str):
    """One MoE block with 16 experts and 8 per token, so that a single token already reaches 8 experts."""
    if arch == "qwen3_moe":
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock

        config = Qwen3MoeConfig(hidden_size=HIDDEN, moe_intermediate_size=INTERMEDIATE, num_experts=16,
                                num_experts_per_tok=8, norm_topk_prob=True, experts_implementation="grouped_mm")
        block = Qwen3MoeSparseMoeBlock(config)
    else:
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

        config = GptOssConfig(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_local_experts=16,
                              num_experts_per_tok=8, experts_implementation="grouped_mm")
        block = GptOssMLP(config)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(std=0.1)
    return block.to(DEVICE).eval()


def count_kernel_launches(monkeypatch) -> list[str]:
    """Patch triton_launch.Launch so that every launch of a fake-quant kernel appends the kernel's name."""
    from lowbit.quant.formats import triton_launch

    launched: list[str] = []
    launch = triton_launch.Launch.__call__

    def counting(self, grid, *args):
        launched.append(self.kernel.fn.__name__)
        return launch(self, grid, *args)

    monkeypatch.setattr(triton_launch.Launch, "__call__", counting)
    return launched


@requires_triton
@pytest.mark.parametrize("act", registry.activation_formats())
@pytest.mark.parametrize("arch", BUILDERS)
def test_activation_quantization_takes_the_same_few_launches_however_many_experts_are_hit(arch, act, monkeypatch):
    """The property that keeps emulated MoE decode near BF16 speed: both expert inputs of one layer are
    quantized in a fixed number of launches (one per input for row-local formats, an amax reduction and a
    quantization for NVFP4), not one per expert with tokens."""
    launched = count_kernel_launches(monkeypatch)
    block = wide_block(arch)
    fq.apply_fake_quant(block, act_quant=act, targets=[r"^experts$"], ignore=[], backend="triton")
    per_call = 2 if registry.activation_format(act).row_local else 4
    for tokens in (1, 8):
        x = torch.randn(1, tokens, HIDDEN, generator=torch.Generator().manual_seed(tokens)).to(DEVICE)
        launched.clear()
        with torch.no_grad():
            run_block(block, x)
            hit = route(block, x.reshape(-1, HIDDEN))[0].unique().numel()
        assert hit >= 8 + (tokens > 1)
        assert len(launched) == per_call, launched


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("act", ["nvfp4", "fp8"])
@pytest.mark.parametrize("arch", BUILDERS)
def test_emulated_experts_forward_never_waits_for_the_gpu(arch, act):
    block = wide_block(arch).to(torch.bfloat16)
    fq.apply_fake_quant(block, act_quant=act, targets=[r"^experts$"], ignore=[])
    x = torch.randn(1, 8, HIDDEN, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        run_block(block, x)  # compiles the kernels
        experts = block.experts
        index, weights = route(block, x.reshape(-1, HIDDEN))
        torch.cuda.set_sync_debug_mode("error")
        try:
            experts(x.reshape(-1, HIDDEN), index, weights)
        finally:
            torch.cuda.set_sync_debug_mode("default")
