"""Checkpoint schemes: what `lowbit quantize scheme=<name>` writes, in one table built on the format registry.

Each scheme names its weight format and its dynamic activation format (quant/formats/registry.py); from
their specs follow the compressed-tensors format, the `config_groups` entry vLLM and transformers read (the
QuantizationArgs of compressed-tensors' preset of the same meaning, field for field), and how one Linear
weight (N, K) becomes the tensors stored under its module name:

    scheme     format                 preset       tensors per Linear module
    nvfp4      nvfp4-pack-quantized   NVFP4A16     weight_packed u8 (N,K/2), weight_scale e4m3 (N,K/16),
                                                   weight_global_scale f32 (1,)
    mxfp4      mxfp4-pack-quantized   MXFP4        weight_packed u8 (N,K/2), weight_scale u8 E8M0 (N,K/32)
    mxfp8      mxfp8-quantized        MXFP8        weight e4m3 (N,K), weight_scale u8 E8M0 (N,K/32)
    fp8        float-quantized        FP8_DYNAMIC  weight e4m3 (N,K), weight_scale f32 (N,1)
    fp8-block  float-quantized        FP8_BLOCK    weight e4m3 (N,K), weight_scale f32 (N/128,K/128)
    int8       int-quantized          INT8 (W8A8)  weight i8 (N,K), weight_scale f32 (N,1) or 16-bit (N,K/G)
    w4a16      pack-quantized         W4A16        weight_packed i32 (N,K/8), weight_scale 16-bit (N,K/G),
                                                   weight_shape i64 (2,)

A scheme is also named by its weight formats' names and aliases: `int4_g32` / `w4a16_g32` are w4a16 with
group_size 32 (`resolve_scheme`); the scheme name and group size are recorded.

"16-bit": group-wise integer scales are stored in the source weight's dtype (bf16 or fp16; f32 for an f32
weight), as compressed-tensors stores them and vLLM's WNA16 kernels and transformers use them; the weights
args leave `scale_dtype` null, as compressed-tensors' presets (and so llm-compressor's checkpoints) do.

Activations: NVFP4 W4A4 needs a calibrated input_global_scale, so round-to-nearest `nvfp4` is weight-only
(vLLM runs it as NVFP4A16); the other schemes with activation quantization use dynamic scales, which need
no calibration. `decode` is the inverse for every format above, whoever wrote the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lowbit.errors import UsageError
from lowbit.quant.formats import registry
from lowbit.quant.formats.spec import FormatSpec

FUSED_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # vLLM's qkv_proj, gate_up_proj


def _args(num_bits: int, type_: str, strategy: str, *, group_size: int | None = None, dynamic: bool = False,
          block_structure: list[int] | None = None, scale_dtype: str | None = None) -> dict[str, Any]:
    """A compressed-tensors QuantizationArgs as config.json holds it (symmetric, no activation ordering)."""
    return {
        "num_bits": num_bits, "type": type_, "symmetric": True, "group_size": group_size, "strategy": strategy,
        "block_structure": block_structure, "dynamic": dynamic, "actorder": None, "scale_dtype": scale_dtype,
        "zp_dtype": None, "observer": None if dynamic else "memoryless_minmax", "observer_kwargs": {},
    }


def weight_args(spec: FormatSpec, group_size: int | None) -> dict[str, Any]:
    """The QuantizationArgs of weights stored in `spec` with `group_size` (None: per output channel)."""
    if spec.block_rows > 1:
        return _args(spec.element_bits, spec.numeric_type, "block", block_structure=list(spec.tile),
                     scale_dtype=spec.checkpoint_scale_dtype)
    if group_size is None:
        return _args(spec.element_bits, spec.numeric_type, "channel", scale_dtype=spec.checkpoint_scale_dtype)
    strategy = "tensor_group" if spec.shared_global_scale is not None else "group"
    return _args(spec.element_bits, spec.numeric_type, strategy, group_size=group_size,
                 scale_dtype=spec.checkpoint_scale_dtype)


def activation_args(spec: FormatSpec, group_size: int | None = None) -> dict[str, Any]:
    """The QuantizationArgs of dynamic activations in `spec`: per token, or in groups (the format's blocks, or
    `group_size` elements)."""
    group_size = group_size or spec.block_size
    if group_size is None:
        return _args(spec.element_bits, spec.numeric_type, "token", dynamic=True)
    return _args(spec.element_bits, spec.numeric_type, "group", group_size=group_size, dynamic=True,
                 scale_dtype=spec.checkpoint_scale_dtype)


@dataclass(frozen=True)
class Scheme:
    """A checkpoint scheme: weights in one format (per group size), activations quantized dynamically by the
    runtime in another (or kept in 16 bits)."""

    name: str
    weights: FormatSpec  # the weight format at the default group size
    activations: FormatSpec | None  # dynamic activation format (None: 16-bit activations)
    description: str = field(default="", compare=False)
    group_sizes: tuple[int | None, ...] = ()  # group sizes taken, the first the default; () = the format's
    # block along a row (None for per-channel and 2-D block formats, which take no group_size)
    activation_group: int | None = None  # activations in groups of this many (else the format's own)

    @property
    def allowed_group_sizes(self) -> tuple[int | None, ...]:
        return self.group_sizes or (self.weights.block_size if self.weights.block_rows == 1 else None,)

    @property
    def format(self) -> str:
        return self.weights.checkpoint_format

    @property
    def shared_global_scale(self):
        """(*weights) -> the global scale vLLM-fused siblings must share, or None for formats without one."""
        return self.weights.shared_global_scale

    def weight_format(self, group_size: int | None) -> FormatSpec:
        """The registered format of this scheme's weights in groups of `group_size` (the default one's layout
        with another group size where none is registered, as INT8 per group)."""
        if group_size == self.allowed_group_sizes[0]:
            return self.weights
        for spec in registry.formats():
            if (spec.checkpoint_format, spec.element, spec.block_size) == (self.format, self.weights.element,
                                                                              group_size):
                return spec
        return self.weights

    def resolve_group_size(self, group_size: int | None) -> int | None:
        if group_size is None:
            return self.allowed_group_sizes[0]
        if group_size not in self.allowed_group_sizes:
            allowed = ", ".join("per-channel (omit it)" if g is None else str(g) for g in self.allowed_group_sizes)
            raise UsageError(f"scheme {self.name} takes group_size {allowed}, got {group_size}")
        return group_size

    def block_shape(self, group_size: int | None) -> tuple[int, int]:
        rows, cols = self.weight_format(group_size).tile
        return rows, max(cols, group_size or 1)

    def fits(self, shape: tuple[int, ...], group_size: int | None) -> bool:
        rows, cols = self.block_shape(group_size)
        return len(shape) == 2 and shape[0] % rows == 0 and shape[1] % cols == 0

    def encode(self, weight: torch.Tensor, group_size: int | None, backend: str,
               global_scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Weight (N, K) -> the tensors stored under its module name ({suffix: tensor})."""
        return self.weight_format(group_size).encode(weight, group_size, backend, global_scale)

    def weight_args(self, group_size: int | None) -> dict[str, Any]:
        return weight_args(self.weight_format(group_size), group_size)

    @property
    def input_args(self) -> dict[str, Any] | None:
        return None if self.activations is None else activation_args(self.activations, self.activation_group)

    def config_group(self, group_size: int | None, targets: list[str]) -> dict[str, Any]:
        return {"targets": targets, "weights": self.weight_args(group_size), "input_activations": self.input_args,
                "output_activations": None, "format": self.format}


_fmt = registry.get_format
SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("nvfp4", _fmt("nvfp4"), None, "FP4 E2M1 weights, E4M3 scales per 16, FP32 global scale; 16-bit activations"),
    Scheme("mxfp4", _fmt("mxfp4"), _fmt("mxfp4"), "OCP MXFP4 weights and dynamic MXFP4 activations"),
    Scheme("mxfp8", _fmt("mxfp8"), _fmt("mxfp8"), "OCP MXFP8 weights and dynamic MXFP8 activations"),
    Scheme("fp8", _fmt("fp8"), _fmt("fp8"), "FP8 E4M3 per-channel weights, dynamic per-token FP8 activations"),
    Scheme("fp8-block", _fmt("fp8-block"), _fmt("fp8"), "FP8 E4M3 weights in 128x128 blocks, dynamic "
           "per-token-group (128) FP8 activations", activation_group=_fmt("fp8-block").block_size),
    Scheme("int8", _fmt("int8"), _fmt("int8"), "INT8 per-channel (or per-group) weights, dynamic per-token INT8 "
           "activations", group_sizes=(None, 32, 64, 128)),
    Scheme("w4a16", _fmt("int4_g128"), None, "INT4 per-group weights (offset 8, eight per int32), 16-bit "
           "activations", group_sizes=(128, 32)),
)}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise UsageError(f"unknown scheme '{name}': choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


def resolve_scheme(name: str, group_size: int | None) -> tuple[Scheme, int | None] | None:
    """The scheme `scheme=name` names and the group size it implies (None: whatever group_size says, checked by
    the scheme later), or None when `name` names no scheme.

    A scheme is named by its own name or by one of its weight formats' names and aliases (`int4_g32` and
    `w4a16_g32` are w4a16 with groups of 32); the scheme's name and the group size are what gets recorded.
    A format's group size that contradicts `group_size` is a UsageError.
    """
    if name in SCHEMES:
        return SCHEMES[name], group_size
    try:
        spec = registry.get_format(name)
    except ValueError:
        return None
    for scheme in SCHEMES.values():
        for allowed in scheme.allowed_group_sizes:
            if scheme.weight_format(allowed) is spec:
                if None not in (group_size, allowed) and group_size != allowed:
                    raise UsageError(f"scheme {name} is {scheme.name} with group_size {allowed}, got group_size "
                                     f"{group_size}: omit group_size or write scheme={scheme.name}")
                return scheme, allowed if allowed is not None else group_size
    return None


def fused_group(module: str) -> str | None:
    """The name vLLM gives the fused layer `module` belongs to (q/k/v -> one, gate/up -> one), else None."""
    parent, _, leaf = module.rpartition(".")
    for siblings in FUSED_SIBLINGS:
        if leaf in siblings:
            return f"{parent}.{'+'.join(siblings)}"
    return None


# --- decoding: compressed-tensors module tensors -> a dense weight -------------------------------------------

QUANTIZATION_ONLY_SUFFIXES = ("input_scale", "input_global_scale", "input_zero_point", "output_scale",
                              "output_zero_point", "k_scale", "v_scale", "q_scale")
UNSUPPORTED_SUFFIXES = {"weight_zero_point": "asymmetric (zero-point) weights", "weight_g_idx": "activation ordering"}


def decode(module: str, tensors: dict[str, torch.Tensor], pack_bits: int | None,
           out_dtype: torch.dtype = torch.bfloat16, backend: str = "ref") -> torch.Tensor:
    """The dense weight of one compressed-tensors module from its stored tensors ({suffix: tensor}).

    The format follows from the tensors' names and dtypes (the formats' `stored` entries); `pack_bits` is the
    num_bits of pack-quantized weights (from the checkpoint's config_groups).
    """
    for suffix, what in UNSUPPORTED_SUFFIXES.items():
        if suffix in tensors:
            raise UsageError(f"{module} uses {what}, which lowbit dequantize does not support")
    if tensors.get("weight_scale") is None:
        raise UsageError(f"{module} has no weight_scale: the checkpoint is incomplete")
    spec = registry.stored_format(tensors)
    if spec is not None and "weight_packed" in tensors and spec.numeric_type == "int" \
            and pack_bits != spec.element_bits:
        raise UsageError(f"{module} is pack-quantized with {pack_bits} bits; lowbit dequantizes 4-bit only")
    if spec is not None:
        return spec.decode(tensors, out_dtype, backend)
    found = ", ".join(f"{k} {v.dtype}" for k, v in sorted(tensors.items()))
    raise UsageError(f"{module} holds tensors of no format lowbit knows ({found})")
