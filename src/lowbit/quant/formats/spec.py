"""`FormatSpec`: everything lowbit knows about one quantization format, in one record.

Each format module (integer, fp8, mx, nvfp4) declares the specs of its formats in `SPECS`; `registry.py`
collects them. Whatever names, validates, describes, stores, emulates or counts the bits of a format reads
its spec: checkpoint schemes (quant/schemes.py), GPTQ recipes (quant/gptq.py), fake quantization
(quant/fake_quant*.py), `lowbit quantize` help and the report's bits per weight (report/bits.py).

Bits per weight are the element bits plus the scale bits amortised over the weights sharing a scale: NVFP4
4 + 8/16 = 4.5 (a global fp32 scale per tensor is negligible), MXFP4 4 + 8/32 = 4.25; a per-channel scale
is shared by one row of in_features weights, taken as REFERENCE_ROW.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # this module stays importable without torch (the report reads REFERENCE_ROW)
    import torch

REFERENCE_ROW = 4096  # in_features assumed for per-channel scales

# (weight (N, K), group_size, backend, global_scale) -> {suffix: tensor} stored under the module's name
Encoder = Callable[..., "dict[str, torch.Tensor]"]
# ({suffix: tensor} of one module, out_dtype, backend) -> the dense (N, K) weight
Decoder = Callable[..., "torch.Tensor"]
# (weight (N, K), backend, global_scale) -> its dequantized values in weight's dtype
WeightFakeQuant = Callable[..., "torch.Tensor"]
# x (..., K) -> its quantized-dequantized copy in x's dtype (torch reference)
ActivationFakeQuant = Callable[..., "torch.Tensor"]


@dataclass(frozen=True)
class FormatSpec:
    """One quantization format: its encodings, block structure, storage, and entry points.

    Entry points take `backend="ref"|"triton"` where a Triton kernel exists; a format without
    `fake_quantize_weight` is not offered as `weight_quant`, one without `fake_quantize_activation` not as
    `act_quant`.
    """

    name: str  # canonical spelling, recorded wherever the format is named
    description: str  # of the weights, as run.json's `weight_scheme` records it
    element: str  # element encoding: "E2M1", "E4M3", "INT8", "INT4"
    element_bits: int
    numeric_type: str  # "float" | "int" (compressed-tensors QuantizationArgs.type)
    scale: str  # scale encoding: "E4M3", "E8M0", "float32", "16-bit" (the weight's own 16-bit dtype)
    scale_bits: int
    block_size: int | None  # consecutive elements of a row sharing a scale; None: the whole row (per channel)
    block_rows: int = 1  # rows sharing a scale (128 for 128x128 blocks)
    pack: int = 1  # elements per stored word along a row (E2M1: 2 per byte, INT4: 8 per int32)
    # (*weights) -> the per-tensor fp32 scale above the block scales, one for tensors vLLM fuses (q/k/v, gate/up)
    shared_global_scale: Callable[..., Any] | None = None
    aliases: tuple[str, ...] = ()  # other spellings accepted wherever the format is named
    labels: tuple[str, ...] = ()  # further precision labels whose weights are in this format (report bits)
    checkpoint_format: str | None = None  # compressed-tensors CompressionFormat value
    checkpoint_scale_dtype: str | None = None  # QuantizationArgs.scale_dtype written to config.json
    stored: Mapping[str, torch.dtype | None] | None = None  # the tensors (suffix -> dtype, None: any) that
    # identify a stored module in this format; the format with most matching entries decodes it
    encode: Encoder | None = None
    decode: Decoder | None = None
    fake_quantize_weight: WeightFakeQuant | None = None
    activation: str | None = None  # dynamic activation fake-quant, as run.json's `act_scheme` records it
    fake_quantize_activation: ActivationFakeQuant | None = None
    row_local: bool = False  # activation rows are quantized independently of each other

    @property
    def bits_per_weight(self) -> float:
        """Element bits + scale bits / weights per scale (per-channel: rows of REFERENCE_ROW)."""
        return self.element_bits + self.scale_bits / ((self.block_size or REFERENCE_ROW) * self.block_rows)

    @property
    def tile(self) -> tuple[int, int]:
        """(rows, columns) a weight's shape must be a multiple of."""
        return self.block_rows, max(self.pack, self.block_size or 1)

    def identifies(self, tensors: Mapping[str, torch.Tensor]) -> int:
        """How many of the `stored` entries `tensors` match (0 when one is missing or of another dtype)."""
        if not self.stored:
            return 0
        for suffix, dtype in self.stored.items():
            tensor = tensors.get(suffix)
            if tensor is None or (dtype is not None and tensor.dtype != dtype):
                return 0
        return len(self.stored)
