"""GPT-OSS experts as per-expert gate/up/down Linear modules, for calibrated quantization through llm-compressor.

transformers keeps GPT-OSS experts as fused 3-D parameters (`GptOssExperts`): `gate_up_proj` (E, H, 2I) with
gate and up interleaved along the last axis (gate in the even columns, up in the odd ones), `down_proj`
(E, I, H), both transposed relative to a Linear weight, each with a bias, and the activation
`(clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)` with `g = clamp(gate, max=limit)`.

`GptOssLinearExperts` holds the same numbers as one `GptOssExpertMLP` per expert with three Linear modules,
`gate_proj` (I, H), `up_proj` (I, H) and `down_proj` (H, I), gate and up de-interleaved, and computes the same
function. It is registered in llm-compressor's MoE registry (`LinearExperts2D`), so `oneshot` linearises GPT-OSS
with it instead of its generic conversion (which splits the interleaved `gate_up_proj` into halves: the forward
pass still matches, but a module named `gate_proj` would then hold half gate and half up rows). Routing,
`moe_calibrate_all_experts` (every token through every expert) and token weighting come from `LinearExperts2D`.

A compressed-tensors checkpoint written from the linearised model stores, per layer L and expert E,
`model.layers.L.mlp.experts.E.{gate,up,down}_proj.{weight_packed|weight, weight_scale, ..., bias}`.
transformers loads it inside `linearized_gpt_oss_experts()`, which builds the model with these modules.
"""

from __future__ import annotations

import contextlib

import torch
from llmcompressor.modeling.moe.linear_experts import ExpertMLP, LinearExperts2D
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts


class GptOssExpertMLP(ExpertMLP):
    """One GPT-OSS expert: de-interleaved gate/up projections, GPT-OSS's clamped gated activation, down."""

    def __init__(self, hidden_size: int, intermediate_size: int, alpha: float, limit: float, dtype: torch.dtype):
        super().__init__()
        self.alpha, self.limit = alpha, limit
        self.gate_proj = torch.nn.Linear(hidden_size, intermediate_size, bias=True, dtype=dtype)
        self.up_proj = torch.nn.Linear(hidden_size, intermediate_size, bias=True, dtype=dtype)
        self.down_proj = torch.nn.Linear(intermediate_size, hidden_size, bias=True, dtype=dtype)

    @torch.no_grad()
    def copy_from_experts_module(self, experts: GptOssExperts, index: int) -> None:
        gate_up, gate_up_bias = experts.gate_up_proj[index], experts.gate_up_proj_bias[index]  # (H, 2I), (2I,)
        self.gate_proj.weight.copy_(gate_up[:, 0::2].T)
        self.up_proj.weight.copy_(gate_up[:, 1::2].T)
        self.gate_proj.bias.copy_(gate_up_bias[0::2])
        self.up_proj.bias.copy_(gate_up_bias[1::2])
        self.down_proj.weight.copy_(experts.down_proj[index].T)
        self.down_proj.bias.copy_(experts.down_proj_bias[index])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        gate = self.gate_proj(hidden_states).clamp(max=self.limit)
        up = self.up_proj(hidden_states).clamp(min=-self.limit, max=self.limit)
        return self.down_proj((up + 1) * gate * torch.sigmoid(gate * self.alpha))


class GptOssLinearExperts(LinearExperts2D):
    """Drop-in for `GptOssExperts` (same call: hidden states, router indices, routing weights)."""

    is_concatenated = False
    is_transposed = True
    has_bias = True
    has_gate = True

    def __init__(self, config) -> None:
        dtype = getattr(torch, config.dtype) if isinstance(config.dtype, str) else config.dtype
        dtype = dtype or torch.get_default_dtype()
        torch.nn.ModuleList.__init__(self, [
            GptOssExpertMLP(config.hidden_size, config.intermediate_size, config.swiglu_alpha, config.swiglu_limit,
                            dtype)
            for _ in range(config.num_local_experts)])
        self.num_experts = config.num_local_experts
        self.intermediate_size = config.intermediate_size


def register() -> None:
    """Make llm-compressor's `linearize_moe` (run by `oneshot`) use `GptOssLinearExperts` for GPT-OSS."""
    LinearExperts2D._registry[GptOssExperts] = GptOssLinearExperts


@contextlib.contextmanager
def linearized_gpt_oss_experts():
    """Within the block, GPT-OSS models are built with `GptOssLinearExperts` in place of `GptOssExperts`, so
    transformers' `from_pretrained` loads a checkpoint written in the per-expert layout (quantized or not)."""
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP

    build_mlp = GptOssMLP.__init__

    def build_with_linear_experts(self, config):
        build_mlp(self, config)
        self.experts = GptOssLinearExperts(config)

    GptOssMLP.__init__ = build_with_linear_experts
    try:
        yield
    finally:
        GptOssMLP.__init__ = build_mlp
