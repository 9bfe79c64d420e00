"""MXFP4 and MXFP8 (OCP Microscaling Formats v1.0): 32-element blocks along the last dim, E8M0 scales.

Layout (compressed-tensors `mxfp4-pack-quantized`, vLLM `CompressedTensorsW4A4MxFp4.create_weights`):
    MXFP4 data   uint8          (N, K/2)   E2M1 codes, element 2i in the low nibble (as NVFP4)
    MXFP8 data   float8_e4m3fn  (N, K)
    scale        uint8          (N, K/32)  E8M0 code c means 2**(c - 127)

Quantization of one block: code = rule(amax of the block), element = cast(x * 2**(127 - code)) with round
half to even and saturation at the element max (6 for E2M1, 448 for E4M3).

The shared-exponent rule is an explicit option (`scale_rule`):
    "floor"  OCP MX v1.0: 2**(floor(log2 amax) - emax_elem); values in the top binade saturate.
    "even"   round amax up to the next power of two when its significand is >= 1.75, then as floor.
    "rceil"  2**ceil(log2(amax / elem_max)): Triton `downcast_to_mxfp` default, Blackwell `cvt.rp` scales.
CHECKPOINT_SCALE_RULE = "even". Finding (2026-11-26): vLLM's MXFP4 loader
(`compressed_tensors_w4a4_mxfp4.py`) reads the stored E8M0 codes as they are, so any rule loads; the rule
vLLM itself uses when it quantizes MXFP4 is "even": `vllm/model_executor/layers/quantization/utils/
mxfp4_utils.py::_quant_dequant_mxfp4(x, scale_calculation_mode="even")` and the reference
`tests/quantization/reference_mxfp4.py::qdq_mxfp4_torch` (add 1 << (mbits - 2) to amax's bits, keep the
exponent, subtract 2, clamp to [0, 254]). compressed-tensors' `generate_mx_scales` (utils/mxfp_utils.py)
does the same for MXFP4 and MXFP8 (the 1.75 threshold uses E2M1's mantissa width for both; offset
floor(log2(elem_max)) = 2 or 8), so llm-compressor checkpoints use "even" too.

Special values (OCP leaves the conversion of NaN/Inf implementation-defined; lowbit's choice):
- A block holding any NaN or +-Inf gets scale code 0xFF (E8M0 NaN) and all-zero element codes, so it
  dequantizes to NaN everywhere: a corrupt weight stays visible instead of being saturated to +-max.
- An all-zero block gets scale code 0 (2**-127) under every rule, and zero elements.
- Codes are clamped to [0, 254]; 0xFF is never produced from finite data.
"""

from collections.abc import Mapping

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_backend, check_out_dtype
from lowbit.quant.formats.mx_layout import (
    BLOCK_SIZE,
    CHECKPOINT_SCALE_RULE,
    ELEMENT_EMAX,
    ELEMENT_MAX,
    ELEMENTS,
    SCALE_RULES,
    MXWeight,
    check_options,
    check_quantized,
    check_weight,
)
from lowbit.quant.formats.spec import FormatSpec

__all__ = ["BLOCK_SIZE", "CHECKPOINT_SCALE_RULE", "ELEMENT_EMAX", "ELEMENT_MAX", "ELEMENTS", "SCALE_RULES",
           "MXWeight", "SPECS", "quantize_ref", "dequantize_ref", "quantize", "dequantize",
           "fake_quantize_activation_ref"]


def quantize_ref(weight: torch.Tensor, element: str = "fp4", scale_rule: str = CHECKPOINT_SCALE_RULE) -> MXWeight:
    """Pure-torch MX quantization of weight (..., K), K % 32 == 0."""
    check_options(element, scale_rule)
    check_weight(weight)
    blocks = weight.to(torch.float32).reshape(-1, BLOCK_SIZE)  # (num_blocks, 32)
    finite = torch.isfinite(blocks)
    poisoned = ~finite.all(dim=1)  # (num_blocks,)
    blocks = torch.where(finite, blocks, torch.zeros_like(blocks))
    code = mf.e8m0_code_from_amax(blocks.abs().amax(dim=1), ELEMENT_EMAX[element], ELEMENT_MAX[element], scale_rule)
    first, second = mf.inverse_e8m0_factors(code)
    scaled = (blocks * first[:, None]) * second[:, None]
    elements = mf.quantize_e2m1(scaled) if element == "fp4" else mf.quantize_e4m3(scaled)
    elements = torch.where(poisoned[:, None], torch.zeros_like(elements), elements)
    code = torch.where(poisoned, torch.full_like(code, mf.E8M0_NAN), code).to(torch.uint8)
    scale = code.reshape(*weight.shape[:-1], weight.shape[-1] // BLOCK_SIZE)
    if element == "fp4":
        data = mf.pack_fp4(elements).reshape(*weight.shape[:-1], weight.shape[-1] // 2)
    else:
        data = elements.reshape(weight.shape).view(torch.float8_e4m3fn)
    return MXWeight(data, scale)


def dequantize_ref(q: MXWeight, element: str = "fp4", out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Pure-torch inverse of quantize_ref; blocks with scale 0xFF come back as NaN."""
    check_options(element, CHECKPOINT_SCALE_RULE)
    columns = check_quantized(q, element)
    check_out_dtype(out_dtype)
    if element == "fp4":
        values = mf.e2m1_decode(mf.unpack_fp4(q.data))
    else:
        values = q.data.to(torch.float32)
    values = values.reshape(-1, BLOCK_SIZE) * mf.e8m0_decode(q.scale.reshape(-1))[:, None]
    return mf.to_output_dtype(values.reshape(*q.data.shape[:-1], columns), out_dtype)


def quantize(
    weight: torch.Tensor, element: str = "fp4", scale_rule: str = CHECKPOINT_SCALE_RULE, *, backend: str = "ref"
) -> MXWeight:
    check_backend(backend, weight)
    if backend == "triton":
        from lowbit.quant.formats import mx_triton

        return mx_triton.quantize_triton(weight, element, scale_rule)
    return quantize_ref(weight, element, scale_rule)


def dequantize(
    q: MXWeight, element: str = "fp4", out_dtype: torch.dtype = torch.bfloat16, *, backend: str = "ref"
) -> torch.Tensor:
    check_backend(backend, q.data)
    if backend == "triton":
        from lowbit.quant.formats import mx_triton

        return mx_triton.dequantize_triton(q, element, out_dtype)
    return dequantize_ref(q, element, out_dtype)


# -- fake quantization and checkpoint tensors (the entry points of the specs) ---------------------------------


def fake_quantize_activation_ref(x: torch.Tensor, element: str) -> torch.Tensor:
    """x (..., K) quantized in 32-blocks with CHECKPOINT_SCALE_RULE and dequantized; NaN/Inf blocks give NaN."""
    return dequantize_ref(quantize_ref(x, element, CHECKPOINT_SCALE_RULE), element, x.dtype)


def _spec(element: str, name: str, element_encoding: str, bits: int, checkpoint_format: str) -> FormatSpec:
    packed = element == "fp4"
    data = "weight_packed" if packed else "weight"

    def fake_quantize_weight(weight, backend, global_scale):
        return dequantize(quantize(weight, element, backend=backend), element, weight.dtype, backend=backend)

    def encode(weight, group_size, backend, global_scale):
        if not bool(torch.isfinite(weight).all()):  # NaN blocks dequantize to NaN; a checkpoint must not hold them
            raise ValueError("weight contains NaN or Inf; fix the checkpoint (or ignore this layer) before quantizing")
        q = quantize(weight, element, CHECKPOINT_SCALE_RULE, backend=backend)
        return {data: q.data, "weight_scale": q.scale}

    def decode(tensors: Mapping[str, torch.Tensor], out_dtype, backend):
        q = MXWeight(tensors[data], tensors["weight_scale"].to(torch.uint8))
        return dequantize(q, element, out_dtype, backend=backend)

    rule = f"E8M0 scales ({CHECKPOINT_SCALE_RULE} rule)"
    return FormatSpec(
        name, f"{name.upper()} 32-blocks, {rule}", element=element_encoding, element_bits=bits,
        numeric_type="float", scale="E8M0", scale_bits=8, block_size=BLOCK_SIZE, pack=2 if packed else 1,
        labels=(f"{name}a16",) if packed else (), checkpoint_format=checkpoint_format,
        checkpoint_scale_dtype="torch.uint8",
        stored={"weight_packed": torch.uint8} if packed else {"weight": torch.float8_e4m3fn,
                                                               "weight_scale": torch.uint8},
        encode=encode, decode=decode, fake_quantize_weight=fake_quantize_weight,
        activation=f"{name.upper()} {element_encoding}, dynamic 32-blocks along the input dim, {rule}",
        fake_quantize_activation=lambda x: fake_quantize_activation_ref(x, element), row_local=True,
    )


SPECS = (
    _spec("fp8", "mxfp8", "E4M3", 8, "mxfp8-quantized"),
    _spec("fp4", "mxfp4", "E2M1", 4, "mxfp4-pack-quantized"),
)
