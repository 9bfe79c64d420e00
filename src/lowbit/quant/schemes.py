"""Checkpoint schemes: what `lowbit quantize scheme=<name>` writes, in one table.

Each scheme names a compressed-tensors format, the `config_groups` entry vLLM and transformers read (the
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

"16-bit": group-wise integer scales are stored in the source weight's dtype (bf16 or fp16; f32 for an f32
weight), as compressed-tensors stores them and vLLM's WNA16 kernels and transformers use them; the weights
args leave `scale_dtype` null, as compressed-tensors' presets (and so llm-compressor's checkpoints) do.

Activations: NVFP4 W4A4 needs a calibrated input_global_scale, so round-to-nearest `nvfp4` is weight-only
(vLLM runs it as NVFP4A16); the other schemes with activation quantization use dynamic scales, which need
no calibration. `decode` is the inverse for every format above, whoever wrote the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from lowbit.errors import UsageError
from lowbit.quant.formats import fp8, integer, mx, nvfp4

FUSED_SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # vLLM's qkv_proj, gate_up_proj


def _args(num_bits: int, type_: str, strategy: str, *, group_size: int | None = None, dynamic: bool = False,
          block_structure: list[int] | None = None, scale_dtype: str | None = None) -> dict[str, Any]:
    """A compressed-tensors QuantizationArgs as config.json holds it (symmetric, no activation ordering)."""
    return {
        "num_bits": num_bits, "type": type_, "symmetric": True, "group_size": group_size, "strategy": strategy,
        "block_structure": block_structure, "dynamic": dynamic, "actorder": None, "scale_dtype": scale_dtype,
        "zp_dtype": None, "observer": None if dynamic else "memoryless_minmax", "observer_kwargs": {},
    }


Encoder = Callable[[torch.Tensor, int | None, str, torch.Tensor | None], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Scheme:
    name: str
    format: str  # compressed-tensors CompressionFormat value
    weight_args: Callable[[int | None], dict[str, Any]]  # group_size -> QuantizationArgs of the weights
    input_args: dict[str, Any] | None  # QuantizationArgs of the input activations (None: weight-only)
    encode: Encoder  # (weight (N, K), group_size, backend, global_scale) -> {suffix: tensor}
    group_sizes: tuple[int | None, ...] = (None,)  # allowed group_size values; the first is the default
    block: tuple[int, int] = (1, 1)  # (rows, columns) a weight's shape must be a multiple of
    shared_global_scale: bool = False  # vLLM-fused siblings must share one per-tensor scale
    description: str = field(default="", compare=False)

    def resolve_group_size(self, group_size: int | None) -> int | None:
        if group_size is None:
            return self.group_sizes[0]
        if group_size not in self.group_sizes:
            allowed = ", ".join("per-channel (omit it)" if g is None else str(g) for g in self.group_sizes)
            raise UsageError(f"scheme {self.name} takes group_size {allowed}, got {group_size}")
        return group_size

    def block_shape(self, group_size: int | None) -> tuple[int, int]:
        rows, cols = self.block
        return rows, max(cols, group_size or 1)

    def fits(self, shape: tuple[int, ...], group_size: int | None) -> bool:
        rows, cols = self.block_shape(group_size)
        return len(shape) == 2 and shape[0] % rows == 0 and shape[1] % cols == 0

    def config_group(self, group_size: int | None, targets: list[str]) -> dict[str, Any]:
        return {"targets": targets, "weights": self.weight_args(group_size), "input_activations": self.input_args,
                "output_activations": None, "format": self.format}


def _nvfp4(weight, group_size, backend, global_scale):
    q = nvfp4.quantize(weight, global_scale, backend=backend)
    return {"weight_packed": q.weight_packed, "weight_scale": q.weight_scale,
            "weight_global_scale": q.weight_global_scale}


def _mx(element: str) -> Encoder:
    def encode(weight, group_size, backend, global_scale):
        if not bool(torch.isfinite(weight).all()):  # mx marks such blocks NaN; a checkpoint must not hold them
            raise ValueError("weight contains NaN or Inf; fix the checkpoint (or ignore this layer) before quantizing")
        q = mx.quantize(weight, element, mx.CHECKPOINT_SCALE_RULE, backend=backend)
        return {"weight_packed" if element == "fp4" else "weight": q.data, "weight_scale": q.scale}
    return encode


def _fp8(granularity: str) -> Encoder:
    def encode(weight, group_size, backend, global_scale):
        q = fp8.quantize(weight, granularity, backend=backend)
        return {"weight": q.weight, "weight_scale": q.weight_scale}
    return encode


def _int8(weight, group_size, backend, global_scale):
    q = integer.quantize_int8(weight, group_size, backend=backend)
    return {"weight": q.data, "weight_scale": q.weight_scale}


def _int4(weight, group_size, backend, global_scale):
    q = integer.quantize_int4(weight, group_size, backend=backend)
    return {"weight_packed": q.data, "weight_scale": q.weight_scale,
            "weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64)}


_E4M3, _U8 = "torch.float8_e4m3fn", "torch.uint8"
SCHEMES: dict[str, Scheme] = {s.name: s for s in (
    Scheme("nvfp4", "nvfp4-pack-quantized", lambda g: _args(4, "float", "tensor_group", group_size=16,
                                                             scale_dtype=_E4M3),
           None, _nvfp4, group_sizes=(16,), block=(1, 16), shared_global_scale=True,
           description="FP4 E2M1 weights, E4M3 scales per 16, FP32 global scale; 16-bit activations"),
    Scheme("mxfp4", "mxfp4-pack-quantized", lambda g: _args(4, "float", "group", group_size=32, scale_dtype=_U8),
           _args(4, "float", "group", group_size=32, dynamic=True, scale_dtype=_U8), _mx("fp4"),
           group_sizes=(32,), block=(1, 32), description="OCP MXFP4 weights and dynamic MXFP4 activations"),
    Scheme("mxfp8", "mxfp8-quantized", lambda g: _args(8, "float", "group", group_size=32, scale_dtype=_U8),
           _args(8, "float", "group", group_size=32, dynamic=True, scale_dtype=_U8), _mx("fp8"),
           group_sizes=(32,), block=(1, 32), description="OCP MXFP8 weights and dynamic MXFP8 activations"),
    Scheme("fp8", "float-quantized", lambda g: _args(8, "float", "channel"),
           _args(8, "float", "token", dynamic=True), _fp8("channel"),
           description="FP8 E4M3 per-channel weights, dynamic per-token FP8 activations"),
    Scheme("fp8-block", "float-quantized", lambda g: _args(8, "float", "block", block_structure=[128, 128]),
           _args(8, "float", "group", group_size=128, dynamic=True), _fp8("block"), block=fp8.BLOCK_SHAPE,
           description="FP8 E4M3 weights in 128x128 blocks, dynamic per-token-group (128) FP8 activations"),
    Scheme("int8", "int-quantized",
           lambda g: _args(8, "int", "channel") if g is None else _args(8, "int", "group", group_size=g),
           _args(8, "int", "token", dynamic=True), _int8, group_sizes=(None, 32, 64, 128),
           description="INT8 per-channel (or per-group) weights, dynamic per-token INT8 activations"),
    Scheme("w4a16", "pack-quantized", lambda g: _args(4, "int", "group", group_size=g), None, _int4,
           group_sizes=(128, 32), block=(1, integer.INT4_PER_INT32),
           description="INT4 per-group weights (offset 8, eight per int32), 16-bit activations"),
)}


def get_scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise UsageError(f"unknown scheme '{name}': choose one of {', '.join(SCHEMES)}")
    return SCHEMES[name]


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

    The format follows from the tensors' names and dtypes; `pack_bits` is the num_bits of pack-quantized
    weights (from the checkpoint's config_groups).
    """
    for suffix, what in UNSUPPORTED_SUFFIXES.items():
        if suffix in tensors:
            raise UsageError(f"{module} uses {what}, which lowbit dequantize does not support")
    scale = tensors.get("weight_scale")
    if scale is None:
        raise UsageError(f"{module} has no weight_scale: the checkpoint is incomplete")
    if "weight_packed" in tensors:
        packed = tensors["weight_packed"]
        if packed.dtype == torch.uint8 and "weight_global_scale" in tensors:
            q = nvfp4.NVFP4Weight(packed, scale, tensors["weight_global_scale"])
            return nvfp4.dequantize(q, out_dtype, backend=backend)
        if packed.dtype == torch.uint8:
            return mx.dequantize(mx.MXWeight(packed, scale.to(torch.uint8)), "fp4", out_dtype, backend=backend)
        if packed.dtype == torch.int32:
            if pack_bits != 4:
                raise UsageError(f"{module} is pack-quantized with {pack_bits} bits; lowbit dequantizes 4-bit only")
            weight = integer.dequantize_int4(integer.IntWeight(packed, scale.to(torch.float32)), out_dtype,
                                             backend=backend)
            shape = tensors.get("weight_shape")
            if shape is not None and tuple(int(s) for s in shape) != tuple(weight.shape):
                weight = weight[: int(shape[0]), : int(shape[1])]
            return weight
    weight = tensors.get("weight")
    if weight is not None and weight.dtype == torch.float8_e4m3fn and scale.dtype == torch.uint8:
        return mx.dequantize(mx.MXWeight(weight, scale), "fp8", out_dtype, backend=backend)
    if weight is not None and weight.dtype == torch.float8_e4m3fn:
        scale = scale.to(torch.float32)
        if scale.numel() == 1:
            scale = scale.reshape(1)
        return fp8.dequantize(fp8.FP8Weight(weight, scale), out_dtype, backend=backend)
    if weight is not None and weight.dtype == torch.int8:
        q = integer.IntWeight(weight, scale.to(torch.float32).reshape(weight.shape[0], -1))
        return integer.dequantize_int8(q, out_dtype, backend=backend)
    found = ", ".join(f"{k} {v.dtype}" for k, v in sorted(tensors.items()))
    raise UsageError(f"{module} holds tensors of no format lowbit knows ({found})")
