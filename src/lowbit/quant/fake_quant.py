"""Fake quantization of a transformers model's nn.Linear layers: quantize -> dequantize of their inputs at every
call (activation emulation) and, optionally, of their weights once at load (weight emulation), so a W4A4 /
W4A8 / W8A8 model can be evaluated on hardware, or from a BF16 checkpoint, that cannot run it natively.

Formats are the registry's (quant/formats/registry.py); the activation references are each format's
`fake_quantize_activation`. Activation conventions (all dynamic: computed from each input tensor at every call,
nothing calibrated):
    int8   per token: scale = amax_row / 127, q = round_half_even(x * (127 / amax_row)) saturated to [-128, 127],
           value = q * scale (vLLM's dynamic per-token INT8 kernel: reciprocal multiply, cvt.rni.sat.s8)
    fp8    per token E4M3: scale = amax_row / 448 (fp8.fake_quantize_per_token's arithmetic)
    mxfp8  E4M3 elements, mxfp4 E2M1 elements: 32-element blocks along the input dim, E8M0 scales with
           mx.CHECKPOINT_SCALE_RULE ("even", what vLLM and compressed-tensors quantize MX activations with)
    nvfp4  E2M1 elements in 16-blocks with E4M3 block scales under a per-tensor global scale 2688 / amax(x),
           the nvfp4 module's weight arithmetic applied to x. compressed-tensors' NVFP4 W4A4 preset marks the
           activations `dynamic="local"`: block scales are dynamic, the global scale `input_global_scale` is
           static, calibrated by llm-compressor (same 448 * 6 / amax formula over calibration data) and used as
           is by vLLM's `scaled_fp4_quant`. Without calibration lowbit takes the amax of the current input, an
           upper bound of what a calibrated scale allows; it only positions the block scales inside E4M3's
           range, so the two differ only for blocks far (> 2**-6) below the tensor's maximum. Because the
           global scale spans the whole input tensor, rows of one batch (padding included) influence each other.
A group (row, or block, or for nvfp4 the whole tensor) holding NaN/Inf comes out as NaN, never an error: the
forward pass makes no synchronizing checks. Dequantized activations are rounded to the input's dtype before
the matmul, where real low-precision GEMMs multiply the codes exactly and scale in fp32.

Weights (`weight_quant`) are quantized once with the formats' weight layouts (per-channel INT8 / FP8, INT4
groups of 32 or 128, MX, NVFP4 with one global scale shared by q/k/v and by gate/up as vLLM fuses them) and
replaced by their dequantized values. MoE experts held as fused 3-D parameters (transformers' Qwen3-MoE and
GPT-OSS experts modules) get the same treatment per expert through fake_quant_experts.py. Torch references run
on CPU; on CUDA the fused kernels of fake_quant_triton.py (bit-identical to the formats' references) quantize
activations in one launch per layer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from lowbit.quant import fake_quant_experts
from lowbit.quant.formats import registry
from lowbit.quant.formats.backend import BACKENDS, check_backend, triton_available
from lowbit.quant.formats.spec import FormatSpec
from lowbit.quant.module_patterns import NEVER_QUANTIZED, compile_patterns, searchable

DEFAULT_TARGETS = (r"(^|\.)layers\.\d+\.",)  # every Linear and experts module inside a decoder layer
DEFAULT_IGNORE = searchable(NEVER_QUANTIZED)  # quant_ignore is matched with re.search
FUSED_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def activation_spec(fmt: str | FormatSpec | None) -> FormatSpec | None:
    """The activation format `fmt` names (None for "none"); a spec is taken as it is."""
    return fmt if isinstance(fmt, FormatSpec) or fmt is None else registry.activation_format(fmt)


def weight_spec(fmt: str | FormatSpec | None) -> FormatSpec | None:
    """The weight format `fmt` names (None for "none"); a spec is taken as it is."""
    return fmt if isinstance(fmt, FormatSpec) or fmt is None else registry.weight_format(fmt)


def check_formats(act_quant: str, weight_quant: str) -> tuple[str, str]:
    """The canonical names of `act_quant` and `weight_quant`; ValueError naming the key and the choices."""
    act, weight = activation_spec(act_quant), weight_spec(weight_quant)
    return (act.name if act else "none"), (weight.name if weight else "none")


# -- activations -------------------------------------------------------------------------------------------


def activation_quantizer(fmt: str | FormatSpec, backend: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function x -> fake-quantized x for `fmt` on `backend` (checked by the caller), resolved once."""
    spec = _required(activation_spec(fmt), "act_quant")
    if backend == "triton":
        from lowbit.quant import fake_quant_triton

        return fake_quant_triton.ActivationQuantizer(spec)
    return spec.fake_quantize_activation


def fake_quantize_activation(x: torch.Tensor, fmt: str | FormatSpec, *, backend: str = "ref") -> torch.Tensor:
    """x (..., K) quantized and dequantized per `fmt` (see the module docstring), in x's dtype."""
    spec = _required(activation_spec(fmt), "act_quant")
    check_backend(backend, x)
    if backend == "triton":
        from lowbit.quant import fake_quant_triton

        return fake_quant_triton.fake_quantize(x, spec)
    return spec.fake_quantize_activation(x)


# -- weights -----------------------------------------------------------------------------------------------


def fake_quantize_weight(
    weight: torch.Tensor, fmt: str | FormatSpec, *, backend: str = "ref", global_scale: torch.Tensor | None = None
) -> torch.Tensor:
    """The dequantized values of `weight` (N, K) stored in `fmt`, in weight's dtype."""
    return _required(weight_spec(fmt), "weight_quant").fake_quantize_weight(weight, backend, global_scale)


def _required(spec: FormatSpec | None, key: str) -> FormatSpec:
    if spec is None:
        raise ValueError(f"{key} 'none' quantizes nothing: apply_fake_quant leaves such inputs exact")
    return spec


# -- applying to a model -----------------------------------------------------------------------------------


class ActivationFakeQuant:
    """A forward pre-hook replacing a Linear's input by its fake-quantized copy.

    Sibling projections (q/k/v, gate/up) are called one after the other with the same tensor object; the hook
    shared by all layers keeps the last (input, output) pair and reuses it for an identical input object.
    It runs at every Linear call, so everything that can be resolved ahead (format, backend, compiled kernel
    launches) is resolved in `activation_quantizer`.
    """

    def __init__(self, fmt: str | FormatSpec, backend: str):
        self.spec = _required(activation_spec(fmt), "act_quant")
        self.fmt = self.spec.name
        self.backend = backend
        self._quantize = activation_quantizer(self.spec, backend)
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, module: nn.Module, args: tuple) -> tuple | None:
        if not args:
            return None
        x = args[0]
        last = self._last
        if last is not None and last[0] is x:
            return (last[1], *args[1:])
        out = self._quantize(x)
        self._last = (x, out)
        return (out, *args[1:])

    def clear(self) -> None:
        self._last = None


@dataclass
class Emulation:
    """What was applied to a model; `describe()` is what run.json records."""

    act_quant: str
    weight_quant: str
    backend: str
    targets: tuple[str, ...]
    ignore: tuple[str, ...]
    wrapped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # Linear layers left in the model's precision
    unreached: list[str] = field(default_factory=list)  # targeted modules with 3-D weights that cannot be emulated
    unreached_reasons: dict[str, str] = field(default_factory=dict)  # name -> why
    wrapped_experts: list[str] = field(default_factory=list)  # fused MoE experts modules emulated per expert
    kept_experts: list[str] = field(default_factory=list)  # experts modules left in the model's precision
    hook: ActivationFakeQuant | None = None
    handles: list[Any] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        act, weight = activation_spec(self.act_quant), weight_spec(self.weight_quant)
        return {
            "act_quant": self.act_quant,
            "act_scheme": act.activation if act else None,
            "weight_quant": self.weight_quant,
            "weight_scheme": weight.description if weight else None,
            "backend": self.backend,
            "quant_targets": list(self.targets),
            "quant_ignore": list(self.ignore),
            "wrapped_count": len(self.wrapped),
            "wrapped": layer_patterns(self.wrapped),
            "kept_linear": layer_patterns(self.kept),
            "unreached_fused_experts": layer_patterns(self.unreached),
            "unreached_reasons": {re.sub(r"\.\d+(?=\.|$)", ".*", name): reason
                                  for name, reason in self.unreached_reasons.items()},
            "wrapped_experts_count": len(self.wrapped_experts),
            "wrapped_experts": layer_patterns(self.wrapped_experts),
            "kept_experts": layer_patterns(self.kept_experts),
            "experts_scheme": fake_quant_experts.EXPERTS_SCHEME if self.wrapped_experts else None,
        }

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        if self.hook is not None:
            self.hook.clear()


def layer_patterns(names: Iterable[str]) -> dict[str, int]:
    """{"model.layers.*.mlp.down_proj": 28, ...}: module names with every index replaced by *, counted."""
    return dict(sorted(Counter(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in names).items()))


class Selection(NamedTuple):
    linears: list[str]  # selected nn.Linear layers
    kept: list[str]  # other nn.Linear layers
    experts: list[str]  # selected fused MoE experts modules that fake_quant_experts can run
    kept_experts: list[str]  # experts modules not selected
    unreached: dict[str, str]  # selected modules holding 3-D weights that cannot be emulated -> why


def select_linears(model: nn.Module, targets: Sequence[str], ignore: Sequence[str]) -> Selection:
    """The Linear layers and fused experts modules to emulate, and those left alone.

    A module is selected when some `targets` regex matches its name (re.search) and no `ignore` regex does.
    A non-Linear module with a parameter of 3 or more dims is an experts module; one that is selected but not
    a transformers experts module in float weights is reported as unreached, with the reason.
    """
    wanted, unwanted = compile_patterns(targets, "quant_targets"), compile_patterns(ignore, "quant_ignore")

    def chosen(name: str) -> bool:
        return any(p.search(name) for p in wanted) and not any(p.search(name) for p in unwanted)

    selection = Selection([], [], [], [], {})
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            (selection.linears if chosen(name) else selection.kept).append(name)
        elif any(p.ndim >= 3 for p in module.parameters(recurse=False)):
            if not chosen(name):
                selection.kept_experts.append(name)
                continue
            try:
                fake_quant_experts.experts_layout(module)
                selection.experts.append(name)
            except fake_quant_experts.UnsupportedExperts as why:
                selection.unreached[name] = str(why)
    return selection


def resolve_backend(backend: str, device: torch.device) -> str:
    """"auto": the Triton kernels on CUDA, the torch references elsewhere."""
    if backend == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "ref"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be auto or one of {BACKENDS}, got {backend!r}")
    return check_backend(backend, torch.empty(0, device=device))  # the hooks do not check at every call


def apply_fake_quant(
    model: nn.Module,
    *,
    act_quant: str = "none",
    weight_quant: str = "none",
    targets: Sequence[str] = DEFAULT_TARGETS,
    ignore: Sequence[str] = DEFAULT_IGNORE,
    backend: str = "auto",
) -> Emulation:
    """Fake-quantize the selected Linear layers' and fused MoE experts' weights now (in place) and their inputs
    at every call.

    Formats are named as the registry spells them (aliases accepted; the emulation records the canonical
    name). Raises ValueError (naming the layer and the fix) before changing anything when a format cannot apply.
    """
    act, weight = activation_spec(act_quant), weight_spec(weight_quant)
    act_quant, weight_quant = (act.name if act else "none"), (weight.name if weight else "none")
    selection = select_linears(model, targets, ignore)
    selected, experts = selection.linears, selection.experts
    emulation = Emulation(act_quant, weight_quant, "none", tuple(targets), tuple(ignore), kept=selection.kept,
                          unreached=list(selection.unreached), unreached_reasons=selection.unreached,
                          kept_experts=selection.kept_experts)
    if act_quant == "none" and weight_quant == "none":
        return emulation
    if not selected and not experts:
        raise ValueError(f"quant_targets {list(targets)} (minus quant_ignore) match no nn.Linear layer or MoE "
                         "experts module; check the module names (model.named_modules())")
    modules = dict(model.named_modules())
    for name in selected:
        _check_block_fit(name, modules[name], act, "act_quant")
        _check_block_fit(name, modules[name], weight, "weight_quant")
    for name in experts:
        fake_quant_experts.check_block_fit(name, modules[name], act, "act_quant")
        fake_quant_experts.check_block_fit(name, modules[name], weight, "weight_quant")
    first = modules[selected[0] if selected else experts[0]]
    emulation.backend = resolve_backend(backend, next(iter(first.parameters())).device)
    emulation.wrapped, emulation.wrapped_experts = selected, experts
    if weight is not None:
        _fake_quantize_weights(modules, selected, weight, emulation.backend)
        for name in experts:
            fake_quant_experts.fake_quantize_weights(modules[name], weight, emulation.backend)
    if act is not None:
        emulation.hook = ActivationFakeQuant(act, emulation.backend)
        emulation.handles = [modules[n].register_forward_pre_hook(emulation.hook) for n in selected]
        emulation.handles += [fake_quant_experts.install(modules[n], act, emulation.backend) for n in experts]
    return emulation


def _check_block_fit(name: str, module: nn.Linear, spec: FormatSpec | None, key: str) -> None:
    block = spec.block_size if spec else None
    if block and module.in_features % block:
        raise ValueError(f"{key}={spec.name} needs in_features divisible by {block}, but {name} has "
                         f"{module.in_features}; add it to quant_ignore")


@torch.no_grad()
def _fake_quantize_weights(modules: dict[str, nn.Module], selected: list[str], spec: FormatSpec,
                           backend: str) -> None:
    global_scales: dict[str, torch.Tensor] = {}
    if spec.shared_global_scale is not None:
        for group in _sibling_groups(selected):
            shared = spec.shared_global_scale(*(modules[n].weight for n in group))
            global_scales.update({n: shared for n in group})
    for name in selected:
        weight = modules[name].weight
        weight.copy_(spec.fake_quantize_weight(weight.data, backend, global_scales.get(name)))


def _sibling_groups(names: list[str]) -> list[list[str]]:
    """Groups of selected layers that vLLM fuses into one matrix (q/k/v, gate/up of one parent)."""
    present = set(names)
    groups = []
    for name in names:
        parent, _, leaf = name.rpartition(".")
        for family in FUSED_SIBLINGS:
            if leaf == family[0]:
                group = [f"{parent}.{member}" for member in family]
                if all(member in present for member in group):
                    groups.append(group)
    return groups
