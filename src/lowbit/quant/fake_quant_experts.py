"""Fake quantization of transformers' fused MoE experts: the 3-D `gate_up_proj` / `down_proj` parameters that
Qwen3-MoE (`Qwen3MoeExperts`) and GPT-OSS (`GptOssExperts`) hold instead of one nn.Linear per expert.

transformers' `use_experts_implementation` decorator gives such a module its layout as instance attributes:
`has_gate` (a fused gate_up projection, else `up_proj` and `act_fn`), `has_bias` (`*_proj_bias` of shape
(E, out)), `is_transposed` (weights (E, in, out) instead of (E, out, in)) and `_apply_gate` (GPT-OSS: interleaved
gate/up, clamped SwiGLU). The emulated forward below reads that layout, so it runs every such module, whichever
`config._experts_implementation` the model was loaded with.

Activations, per expert e and its routed tokens (the rows of hidden_states whose top-k holds e):
    gate_up input   fake_quant(x[tokens of e])        down input   fake_quant(act(gate_up(...))[tokens of e])
Row-local formats (their spec's `row_local`: per-token int8, fp8 and block mxfp8, mxfp4) quantize each row
on its own, so the gate_up input is quantized once for all tokens before the expert loop (the same values,
one call). NVFP4's per-tensor global
scale is taken per expert over the tokens routed to it, as vLLM's NVFP4 MoE keeps one input global scale per
expert (`w13_input_global_scale`, `w2_input_global_scale`); dynamic, like the Linear path.

Weights: each expert's (out, in) matrix (the transpose of the stored one when `is_transposed`) goes through
`fake_quant.fake_quantize_weight`, so groups and blocks run along the expert's input dimension and NVFP4's
global scale is the expert's own, over gate and up together (vLLM fuses them into one w13 per expert).

`install` sets the module's instance attribute `forward`, shadowing the class's dispatching forward; its
handle's remove() deletes it again. Modules the emulation cannot run (packed experts such as a native MXFP4
GPT-OSS checkpoint on transformers' Triton kernels, expert parallel, a forward already replaced by offloading
hooks) raise UnsupportedExperts, which fake_quant reports as unreached. fake_quant imports this module, so its
names are read here as `fake_quant.<name>` at call time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lowbit.quant import fake_quant
from lowbit.quant.formats.spec import FormatSpec

MATMUL_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
EXPERTS_SCHEME = ("per expert: inputs of gate_up and down fake-quantized over the tokens routed to it "
                  "(nvfp4 global scale per expert), weights per expert along its input dim")


@dataclass(frozen=True)
class ExpertsLayout:
    """Where an experts module keeps its weights and how its forward combines them."""

    num_experts: int
    first: str  # "gate_up_proj" (has_gate) or "up_proj"
    transposed: bool
    has_bias: bool
    has_gate: bool

    @property
    def projections(self) -> tuple[str, str]:
        return self.first, "down_proj"

    def matrix(self, module: nn.Module, projection: str, expert: int) -> torch.Tensor:
        """Expert `expert`'s (out, in) weight of `projection`: a view of the module's parameter."""
        weight = getattr(module, projection)[expert]
        return weight.t() if self.transposed else weight

    def input_dim(self, module: nn.Module, projection: str) -> int:
        return getattr(module, projection).shape[1 if self.transposed else 2]


class UnsupportedExperts(ValueError):
    """A module with 3-D weights that the emulated experts forward cannot run; the message says why."""


def experts_layout(module: nn.Module) -> ExpertsLayout:
    """The layout of a transformers experts module; UnsupportedExperts says why the emulation cannot run it."""
    flags = ("has_gate", "has_bias", "is_transposed")
    if not all(isinstance(getattr(module, flag, None), bool) for flag in flags):
        raise UnsupportedExperts("not a transformers experts module (no use_experts_implementation layout)")
    if getattr(module, "_is_expert_parallel", False):
        raise UnsupportedExperts("expert parallel: its experts are sharded across devices")
    if "forward" in vars(module):
        raise UnsupportedExperts("its forward is already replaced (offloading or kernel hooks)")
    first = "gate_up_proj" if module.has_gate else "up_proj"
    names = [first, "down_proj"] + ([f"{first}_bias", "down_proj_bias"] if module.has_bias else [])
    for name in names:
        param = getattr(module, name, None)
        if not isinstance(param, torch.Tensor) or param.dtype not in MATMUL_DTYPES:
            dtype = str(getattr(param, "dtype", "missing")).removeprefix("torch.")
            raise UnsupportedExperts(f"{name} is {dtype}, not float32/bfloat16/float16 (packed or quantized experts)")
    for name in (first, "down_proj"):
        if getattr(module, name).ndim != 3:
            raise UnsupportedExperts(f"{name} is not a 3-D (experts, out, in) tensor")
    if module.has_gate and not callable(getattr(module, "_apply_gate", None)):
        raise UnsupportedExperts("gated experts without an _apply_gate method")
    if not module.has_gate and not callable(getattr(module, "act_fn", None)):
        raise UnsupportedExperts("ungated experts without an act_fn")
    return ExpertsLayout(num_experts=getattr(module, first).shape[0], first=first,
                         transposed=module.is_transposed, has_bias=module.has_bias, has_gate=module.has_gate)


def check_block_fit(name: str, module: nn.Module, spec: FormatSpec | None, key: str) -> None:
    """ValueError (naming the module and the fix) when an expert input dim does not divide the format's block."""
    block = spec.block_size if spec else None
    if not block:
        return
    layout = experts_layout(module)
    for projection in layout.projections:
        width = layout.input_dim(module, projection)
        if width % block:
            raise ValueError(f"{key}={spec.name} needs expert input dims divisible by {block}, but {name}.{projection} "
                             f"has {width}; add {name} to quant_ignore")


@torch.no_grad()
def fake_quantize_weights(module: nn.Module, fmt: str | FormatSpec, backend: str) -> None:
    """Replace every expert's gate_up (or up) and down weights by their dequantized `fmt` values, in place."""
    layout = experts_layout(module)
    spec = fake_quant.weight_spec(fmt)
    for projection in layout.projections:
        for expert in range(layout.num_experts):
            matrix = layout.matrix(module, projection, expert)
            values = fake_quant.fake_quantize_weight(matrix.contiguous(), spec, backend=backend)
            matrix.copy_(values)


class ExpertsFakeQuant:
    """The forward of one experts module with its expert inputs fake-quantized in `fmt` ("none" or None: exact).

    Installed as the module's instance attribute `forward`, shadowing the class's; `remove()` deletes it.
    Experts run in ascending order over their tokens in (top-k slot, token) order and accumulate with
    index_add_, as transformers' eager experts forward does, so with fmt="none" the result is bit-identical.
    """

    def __init__(self, module: nn.Module, fmt: str | FormatSpec | None, backend: str):
        self.module = module
        self.layout = experts_layout(module)
        self.spec = fake_quant.activation_spec(fmt)
        self.fmt = self.spec.name if self.spec else "none"
        self.backend = backend
        self._quantize = fake_quant.activation_quantizer(self.spec, backend) if self.spec else _unchanged
        # formats that are not row-local (nvfp4) are quantized per expert, right for every format, at one call each
        self._row_local = self.spec is None or self.spec.row_local

    def _project(self, x: torch.Tensor, projection: str, expert: int) -> torch.Tensor:
        weight = getattr(self.module, projection)[expert]
        out = x @ weight if self.layout.transposed else nn.functional.linear(x, weight)
        if self.layout.has_bias:
            out = out + getattr(self.module, f"{projection}_bias")[expert]
        return out

    def __call__(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                 top_k_weights: torch.Tensor) -> torch.Tensor:
        module, layout = self.module, self.layout
        num_tokens = hidden_states.shape[0]
        out = torch.zeros_like(hidden_states)
        slots = top_k_index.t().reshape(-1)  # (top_k * tokens,): entry k * tokens + t is token t's k-th expert
        order = torch.argsort(slots, stable=True)
        counts = torch.bincount(slots, minlength=layout.num_experts).tolist()  # the one host sync
        row_local = self._row_local
        inputs = self._quantize(hidden_states) if row_local else hidden_states
        start = 0
        for expert, count in enumerate(counts[:layout.num_experts]):  # ids >= num_experts: sentinels, skipped
            if count == 0:
                continue
            picked = order[start:start + count]
            start += count
            token, slot = picked % num_tokens, picked // num_tokens
            x = inputs[token] if row_local else self._quantize(inputs[token])
            h = self._project(x, layout.first, expert)
            h = module._apply_gate(h) if layout.has_gate else module.act_fn(h)
            h = self._project(self._quantize(h), "down_proj", expert)
            h = h * top_k_weights[token, slot, None]
            out.index_add_(0, token, h.to(out.dtype))
        return out


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class ExpertsForwardHandle:
    """Undoes one installed ExpertsFakeQuant: the module's class forward applies again."""

    module: nn.Module
    forward: Any

    def remove(self) -> None:
        if vars(self.module).get("forward") is self.forward:
            del self.module.forward


def install(module: nn.Module, fmt: str | FormatSpec | None, backend: str) -> ExpertsForwardHandle:
    """Run `module` through ExpertsFakeQuant(fmt) from now on; the handle's remove() restores its own forward."""
    forward = ExpertsFakeQuant(module, fmt, backend)
    module.forward = forward
    return ExpertsForwardHandle(module, forward)
