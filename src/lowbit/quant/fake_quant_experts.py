"""Fake quantization of transformers' fused MoE experts: the 3-D `gate_up_proj` / `down_proj` parameters that
Qwen3-MoE (`Qwen3MoeExperts`) and GPT-OSS (`GptOssExperts`) hold instead of one nn.Linear per expert.

transformers' `use_experts_implementation` decorator gives such a module its layout as instance attributes:
`has_gate` (a fused gate_up projection, else `up_proj` and `act_fn`), `has_bias` (`*_proj_bias` of shape
(E, out)), `is_transposed` (weights (E, in, out) instead of (E, out, in)) and `_apply_gate` (GPT-OSS: interleaved
gate/up, clamped SwiGLU). The emulated forward below reads that layout, so it runs every such module, whichever
`config._experts_implementation` the model was loaded with.

Activations, per expert e and its routed tokens (the rows of hidden_states whose top-k holds e):
    gate_up input   fake_quant(x[tokens of e])        down input   fake_quant(act(gate_up(...))[tokens of e])
computed as transformers' grouped_mm experts forward computes the experts: the (token, expert) pairs sorted
by expert, every expert's rows multiplied in one grouped matmul, and each input quantized for all experts at
once (grouped_act_quant.py). Row-local formats (their spec's `row_local`: per-token int8, fp8 and block
mxfp8, mxfp4) quantize each row on its own, so the gate_up input is quantized once per token, before its rows
are copied to its experts (the same values, fewer rows). NVFP4's per-tensor global scale is taken per
expert over the tokens routed to it, as vLLM's NVFP4 MoE keeps one input global scale per expert
(`w13_input_global_scale`, `w2_input_global_scale`); dynamic, like the Linear path. Either way a forward
makes the same few quantization launches however many experts have tokens, and waits for nothing on the GPU.

Weights: each expert's (out, in) matrix (the transpose of the stored one when `is_transposed`) is quantized as
`fake_quant.fake_quantize_weight` quantizes it, so groups and blocks run along the expert's input dimension and
NVFP4's global scale is the expert's own, over gate and up together (vLLM fuses them into one w13 per expert).
Each projection's experts go through one call, bit-identical to a loop over the matrices (`fake_quantize_stacked`):
formats whose scales belong to a row or a block of one row see the (E, out, in) stack as one (E * out, in)
matrix; NVFP4's global scales are per matrix, so its experts are quantized as grouped rows, expert e owning
rows e * out:(e + 1) * out, every matrix's amax in one reduction (grouped_act_quant).

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

from lowbit.quant import fake_quant, grouped_act_quant
from lowbit.quant.formats.backend import check_finite_amax
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

    def stacked(self, module: nn.Module, projection: str) -> torch.Tensor:
        """Every expert's (out, in) weight of `projection`, (E, out, in): a view of the module's parameter."""
        weight = getattr(module, projection)
        return weight.transpose(1, 2) if self.transposed else weight

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
    """Replace every expert's gate_up (or up) and down weights by their dequantized `fmt` values, in place;
    nothing changes when a weight is refused (NaN/Inf)."""
    layout = experts_layout(module)
    spec = fake_quant.weight_spec(fmt)
    stacks = [layout.stacked(module, projection) for projection in layout.projections]
    values = [fake_quantize_stacked(stack.contiguous(), spec, backend) for stack in stacks]
    for stack, value in zip(stacks, values):
        stack.copy_(value)


def fake_quantize_stacked(weights: torch.Tensor, spec: FormatSpec, backend: str) -> torch.Tensor:
    """weights (E, out, in): each (out, in) matrix fake-quantized as fake_quant.fake_quantize_weight would, in
    one call for the stack where the format's scales allow it (see the module docstring)."""
    experts, rows, cols = weights.shape
    if spec.shared_global_scale is None and rows % spec.block_rows == 0:  # no scale spans two matrices
        return spec.fake_quantize_weight(weights.reshape(experts * rows, cols), backend, None).reshape(weights.shape)
    if spec.shared_global_scale is not None and spec.fake_quantize_activation is not None:
        # NVFP4: a matrix quantized with its own global scale 2688 / amax is what the activation convention
        # does to the rows it is given, so each expert's rows form one group of the grouped quantizer
        check_finite_amax(torch.linalg.vector_norm(weights, ord=float("inf")), "a weight")
        ends = torch.arange(1, experts + 1, dtype=torch.int32, device=weights.device) * rows
        quantize = grouped_act_quant.GroupedActivationQuantizer(spec, backend)
        return quantize(weights.reshape(experts * rows, cols), ends).reshape(weights.shape)
    return torch.stack([spec.fake_quantize_weight(matrix, backend, None) for matrix in weights])


class ExpertsFakeQuant:
    """The forward of one experts module with its expert inputs fake-quantized in `fmt` ("none" or None: exact).

    Installed as the module's instance attribute `forward`, shadowing the class's; `remove()` deletes it.
    It is transformers' grouped_mm experts forward (`grouped_mm_experts_forward`) with the two expert inputs
    fake-quantized: the (token, expert) pairs sorted by expert, every expert's rows multiplied in one grouped
    matmul (transformers' `_grouped_linear`), the weighted expert outputs summed per token in fp32. With
    fmt="none" the result is bit-identical to it. Each input is quantized for all experts at once
    (grouped_act_quant): on the Triton backend a fixed number of kernel launches per call, whatever the number
    of experts with tokens, and nothing on the way waits for the GPU.
    """

    def __init__(self, module: nn.Module, fmt: str | FormatSpec | None, backend: str):
        from transformers.integrations.moe import _grouped_linear  # the grouped matmul of grouped_mm's forward

        self._grouped_linear = _grouped_linear
        self.module = module
        self.layout = experts_layout(module)
        self.spec = fake_quant.activation_spec(fmt)
        self.fmt = self.spec.name if self.spec else "none"
        self.backend = backend
        self._quantize = grouped_act_quant.GroupedActivationQuantizer(self.spec, backend) if self.spec else None

    def _project(self, x: torch.Tensor, projection: str, ends: torch.Tensor, expert_of_row: torch.Tensor):
        bias = getattr(self.module, f"{projection}_bias")[expert_of_row] if self.layout.has_bias else None
        return self._grouped_linear(x, getattr(self.module, projection), ends, bias=bias,
                                    is_transposed=self.layout.transposed)

    def __call__(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                 top_k_weights: torch.Tensor) -> torch.Tensor:
        module, quantize = self.module, self._quantize
        num_tokens, top_k = hidden_states.shape[0], top_k_index.shape[-1]
        expert_of_row, pair = torch.sort(top_k_index.reshape(-1))  # rows: (token, expert) pairs by expert
        token = pair // top_k
        # cumulative rows per expert, grouped_mm's offsets; histc as transformers takes it (float on CPU / MPS)
        counted = expert_of_row.float() if hidden_states.device.type in ("cpu", "mps") else expert_of_row.int()
        rows_per_expert = torch.histc(counted, bins=self.layout.num_experts, min=0, max=self.layout.num_experts - 1)
        ends = torch.cumsum(rows_per_expert, dim=0, dtype=torch.int32)
        if quantize is None:
            x = hidden_states[token]
        elif quantize.row_local:  # each token quantized once, then copied to its experts' rows
            x = quantize.rows(hidden_states)[token]
        else:
            x = quantize(hidden_states[token], ends)
        h = self._project(x, self.layout.first, ends, expert_of_row)
        h = module._apply_gate(h) if self.layout.has_gate else module.act_fn(h)
        if quantize is not None:
            h = quantize(h, ends)
        h = self._project(h, "down_proj", ends, expert_of_row)
        h = h * top_k_weights.reshape(-1)[pair].unsqueeze(-1)
        unsorted = torch.empty_like(h)
        unsorted[pair] = h  # back to (token, slot) order
        return unsorted.view(num_tokens, top_k, -1).sum(dim=1).to(hidden_states.dtype)


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
