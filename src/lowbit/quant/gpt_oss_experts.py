"""GPT-OSS experts as per-expert gate/up/down Linear modules, and the way back to transformers' fused layout.

transformers keeps GPT-OSS experts as fused 3-D parameters (`GptOssExperts`): `gate_up_proj` (E, H, 2I) with
gate and up interleaved along the last axis (gate in the even columns, up in the odd ones), `down_proj`
(E, I, H), both transposed relative to a Linear weight, each with a bias (`gate_up_proj_bias` (E, 2I),
`down_proj_bias` (E, H)), and the activation `(clamp(up, -limit, limit) + 1) * g * sigmoid(alpha * g)` with
`g = clamp(gate, max=limit)`. These are the names and shapes `GptOssForCausalLM.save_pretrained` writes and
vLLM's GPT-OSS loader reads.

`GptOssLinearExperts` holds the same numbers as one `GptOssExpertMLP` per expert with three Linear modules,
`gate_proj` (I, H), `up_proj` (I, H) and `down_proj` (H, I), gate and up de-interleaved, and computes the same
function. For calibration, `register()` puts a subclass of it into llm-compressor's MoE registry
(`LinearExperts2D`), so `oneshot` linearises GPT-OSS with it instead of its generic conversion (which splits the
interleaved `gate_up_proj` into halves: the forward pass still matches, but a module named `gate_proj` would
then hold half gate and half up rows). Routing, `moe_calibrate_all_experts` (every token through every expert)
and token weighting then come from `LinearExperts2D`. Only `register()` imports llm-compressor.

A compressed-tensors checkpoint written from the linearised model stores, per layer L and expert E,
`model.layers.L.mlp.experts.E.{gate,up,down}_proj.{weight_packed|weight, weight_scale, ..., bias}`
(`stores_experts_per_expert` tells such a checkpoint from its config and tensor names). transformers loads it
inside `linearized_gpt_oss_experts()`, which builds the model with these modules; `FusedExperts` rebuilds the
fused parameters from dense per-expert projections (`lowbit dequantize`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

MODEL_TYPE = "gpt_oss"
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# model.layers.L.mlp.experts.E.{gate,up,down}_proj.<tensor>: the experts block, the expert, the projection
PER_EXPERT_TENSOR = re.compile(r"^(?P<block>.*\.mlp\.experts)\.(?P<expert>\d+)\.(?P<projection>gate_proj|up_proj|"
                               r"down_proj)\.(?P<tensor>[^.]+)$")


def is_gpt_oss(config: dict) -> bool:
    return config.get("model_type") == MODEL_TYPE


def per_expert_tensor(name: str) -> tuple[str, int, str, str] | None:
    """(experts block, expert index, projection, tensor suffix) of a per-expert tensor name, else None."""
    match = PER_EXPERT_TENSOR.match(name)
    if match is None:
        return None
    return match["block"], int(match["expert"]), match["projection"], match["tensor"]



def per_expert_blocks(names) -> dict[str, dict[int, dict[str, dict[str, str]]]]:
    """{experts block: {expert: {projection: {tensor suffix: tensor name}}}} of the per-expert tensors in names."""
    blocks: dict[str, dict[int, dict[str, dict[str, str]]]] = {}
    for name in names:
        if (parsed := per_expert_tensor(name)) is not None:
            block, expert, projection, suffix = parsed
            blocks.setdefault(block, {}).setdefault(expert, {}).setdefault(projection, {})[suffix] = name
    return blocks

def stores_experts_per_expert(model: str | Path) -> bool:
    """Whether `model` (a checkpoint directory or hub id) is a GPT-OSS checkpoint with per-expert projections.

    Reads config.json and the tensor names (the safetensors index, or a single file's header) through
    transformers' file resolution, so a hub id costs no download that loading would not make anyway. False when
    the files cannot be reached: loading the model then reports why.
    """
    from transformers.utils import cached_file

    def resolve(filename: str) -> str | None:
        try:
            return cached_file(str(model), filename, _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False)
        except (OSError, ValueError):  # malformed repo id, gated or unknown repo
            return None

    config = resolve("config.json")
    if config is None or not is_gpt_oss(json.loads(Path(config).read_text())):
        return False
    if (index := resolve("model.safetensors.index.json")) is not None:
        names = json.loads(Path(index).read_text()).get("weight_map") or {}
    elif (single := resolve("model.safetensors")) is not None:
        from safetensors import safe_open

        with safe_open(single, framework="pt") as f:
            names = list(f.keys())
    else:
        return False
    return any(per_expert_tensor(name) is not None for name in names)


class GptOssExpertMLP(torch.nn.Module):
    """One GPT-OSS expert: de-interleaved gate/up projections, GPT-OSS's clamped gated activation, down."""

    def __init__(self, hidden_size: int, intermediate_size: int, alpha: float, limit: float, dtype: torch.dtype):
        super().__init__()
        self.alpha, self.limit = alpha, limit
        self.gate_proj = torch.nn.Linear(hidden_size, intermediate_size, bias=True, dtype=dtype)
        self.up_proj = torch.nn.Linear(hidden_size, intermediate_size, bias=True, dtype=dtype)
        self.down_proj = torch.nn.Linear(intermediate_size, hidden_size, bias=True, dtype=dtype)

    @torch.no_grad()
    def copy_from_experts_module(self, experts, index: int) -> None:
        """Take expert `index` of a fused `GptOssExperts` (the inverse of `FusedExperts.set_expert`)."""
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


class GptOssLinearExperts(torch.nn.ModuleList):
    """Drop-in for `GptOssExperts` (same call: hidden states (T, H), router indices (T, k), routing weights)."""

    def __init__(self, config) -> None:
        dtype = getattr(torch, config.dtype) if isinstance(config.dtype, str) else config.dtype
        dtype = dtype or torch.get_default_dtype()
        torch.nn.ModuleList.__init__(self, [
            GptOssExpertMLP(config.hidden_size, config.intermediate_size, config.swiglu_alpha, config.swiglu_limit,
                            dtype)
            for _ in range(config.num_local_experts)])
        self.num_experts = config.num_local_experts
        self.intermediate_size = config.intermediate_size

    @classmethod
    @torch.no_grad()
    def from_experts_module(cls, experts, config) -> GptOssLinearExperts:
        linear = cls(config)
        for index, expert in enumerate(linear):
            expert.copy_from_experts_module(experts, index)
        return linear

    def forward(self, hidden_states: torch.Tensor, router_indices: torch.Tensor,
                routing_weights: torch.Tensor) -> torch.Tensor:
        output = torch.zeros_like(hidden_states)
        with torch.no_grad():
            routed = torch.nn.functional.one_hot(router_indices, self.num_experts).permute(2, 1, 0)  # (E, k, T)
            hit = torch.greater(routed.sum(dim=(-1, -2)), 0).nonzero().flatten().tolist()
        for index in hit:
            position, tokens = torch.where(routed[index])
            expert_output = self[index](hidden_states[tokens]) * routing_weights[tokens, position, None]
            output.index_add_(0, tokens, expert_output.to(output.dtype))
        return output


@functools.cache
def calibration_experts_class() -> type:
    """`GptOssLinearExperts` as an llm-compressor `LinearExperts2D` (its forward honours the calibrate-all flag)."""
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D

    class GptOssCalibrationExperts(LinearExperts2D, GptOssLinearExperts):
        is_concatenated = False
        is_transposed = True
        has_bias = True
        has_gate = True
        __init__ = GptOssLinearExperts.__init__

    return GptOssCalibrationExperts


def register() -> None:
    """Make llm-compressor's `linearize_moe` (run by `oneshot`) unfuse GPT-OSS experts with this module's layout."""
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    LinearExperts2D._registry[GptOssExperts] = calibration_experts_class()


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


@dataclass
class FusedExperts:
    """transformers' fused parameters of one GPT-OSS experts block, filled one expert at a time."""

    gate_up_proj: torch.Tensor  # (E, H, 2I), gate in the even columns, up in the odd ones
    gate_up_proj_bias: torch.Tensor  # (E, 2I)
    down_proj: torch.Tensor  # (E, I, H)
    down_proj_bias: torch.Tensor  # (E, H)

    @classmethod
    def empty(cls, num_experts: int, hidden_size: int, intermediate_size: int, weight_dtype: torch.dtype,
              bias_dtype: torch.dtype) -> FusedExperts:
        e, h, i = num_experts, hidden_size, intermediate_size
        return cls(torch.empty(e, h, 2 * i, dtype=weight_dtype), torch.empty(e, 2 * i, dtype=bias_dtype),
                   torch.empty(e, i, h, dtype=weight_dtype), torch.empty(e, h, dtype=bias_dtype))

    def set_expert(self, index: int, weights: dict[str, torch.Tensor], biases: dict[str, torch.Tensor]) -> None:
        """Write expert `index` from its Linear weights ({gate_proj: (I, H), up_proj: (I, H), down_proj: (H, I)})
        and biases ({gate_proj: (I,), up_proj: (I,), down_proj: (H,)}); ValueError naming a misfit shape."""
        _, hidden, gate_up = self.gate_up_proj.shape
        intermediate = gate_up // 2
        expected = {"gate_proj": (intermediate, hidden), "up_proj": (intermediate, hidden),
                    "down_proj": (hidden, intermediate)}
        for projection, shape in expected.items():
            if tuple(weights[projection].shape) != shape or tuple(biases[projection].shape) != shape[:1]:
                raise ValueError(f"expert {index} {projection} has weight {tuple(weights[projection].shape)} and "
                                 f"bias {tuple(biases[projection].shape)}, expected {shape} and {shape[:1]} "
                                 f"(hidden_size {hidden}, intermediate_size {intermediate})")
        self.gate_up_proj[index, :, 0::2] = weights["gate_proj"].T
        self.gate_up_proj[index, :, 1::2] = weights["up_proj"].T
        self.gate_up_proj_bias[index, 0::2] = biases["gate_proj"]
        self.gate_up_proj_bias[index, 1::2] = biases["up_proj"]
        self.down_proj[index] = weights["down_proj"].T
        self.down_proj_bias[index] = biases["down_proj"]

    def named_tensors(self, block: str) -> dict[str, torch.Tensor]:
        """{`<block>.gate_up_proj`: ..., ...}: the names `GptOssForCausalLM` saves and loads."""
        return {f"{block}.{name}": getattr(self, name)
                for name in ("gate_up_proj", "gate_up_proj_bias", "down_proj", "down_proj_bias")}
