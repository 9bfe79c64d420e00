"""Numerics of lowbit's quantization formats: one module per family, each with a pure-torch reference
(`*_ref`) and a bit-identical Triton kernel (`*_triton.py`), chosen with `backend="ref"|"triton"`.

    spec       FormatSpec: one format's encodings, block, bits per weight and entry points
    registry   every family's SPECS in one table, and the lookups by name, alias or precision label
    minifloat  E2M1 / E4M3 / E8M0 bit constants and rounding (shared by every family)
    nvfp4      NVFP4: E2M1 in 16-blocks, E4M3 block scales, fp32 global scale (compressed-tensors)
    mx         MXFP4 / MXFP8: 32-blocks, E8M0 scales, scale rule floor | even | rceil (OCP MX v1.0)
    fp8        FP8 E4M3 per-tensor / per-channel / 128x128 block; per-token activation fake-quant
    integer    INT8 per-channel / per-group, INT4 per-group packed eight per int32

`<family>_layout.py` holds what a family's reference and its Triton kernels share (stored tensors, constants,
checks), so the kernel module imports the layout and never the reference.
"""
