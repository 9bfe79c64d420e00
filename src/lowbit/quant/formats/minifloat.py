"""Bit-level numerics shared by every format: FP4 E2M1, FP8 E4M3 (e4m3fn), E8M0, and the fp32 fields.

Each bit constant is defined here once; `minifloat_triton.py` wraps the same names as `tl.constexpr`.

E2M1 rounding counts the grid midpoints a magnitude passes (exact comparisons, ties to the even code).
E4M3 rounding is done with exact fp32 arithmetic and integer bit fields, so the torch reference and the
Triton kernels produce identical bits on any device (on a GPU the kernels may use the hardware
`cvt.rn.satfinite` conversion instead, which rounds the same way; see minifloat_triton.py):

1. saturate: the magnitude is clamped to the format's largest finite value;
2. pick the grid step `2**(max(floor(log2 a), emin) - mbits)` from the fp32 exponent field;
3. multiply by the inverse step (a power of two, exact), round half to even by adding and subtracting
   1.5 * 2**23 (exact for |y| < 2**22), multiply by the step again (exact).

Signs are handled apart from magnitudes, so a negative value that rounds to zero keeps its sign bit
(E2M1 code 0x8, E4M3 0x80), as torch's float8 cast does.

E2M1 (OCP Microscaling Formats v1.0): 1 sign, 2 exponent (bias 1), 1 mantissa bit; no Inf/NaN.
    codes 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6; code | 0x8 is the negative value.
E4M3 (`torch.float8_e4m3fn`): 1 sign, 4 exponent (bias 7), 3 mantissa; no Inf; 0x7F / 0xFF are NaN;
    largest finite 448 (0x7E), smallest normal 2**-6 (0x08), smallest subnormal 2**-9 (0x01).
E8M0 (OCP MX scale): 8 exponent bits, bias 127, no sign, no mantissa; code c is 2**(c - 127);
    0xFF is NaN; code 0 is 2**-127.

Dequantized values are computed in fp32 and rounded once to the output dtype (`to_output_dtype`). A float16
output saturates at +-65504: a block scale rounded up (an MX scale under the "even" rule, INT8's -128 * amax /
127.5) can give a float16 weight near 65504 a dequantized value beyond float16's range, which would otherwise
become Inf. NaN stays NaN.
"""

import torch

# fp32 bit fields
F32_MBITS = 23
F32_BIAS = 127
F32_EXP_FIELD_MASK = 0xFF
F32_INF_BITS = 0x7F800000  # exponent all ones: Inf or NaN
F32_MANTISSA_MASK = 0x7FFFFF
F32_QUIET_NAN_BITS = 0x7FC00000
F32_HALF_MIN_NORMAL_BITS = 0x00400000  # 2**-127, the one subnormal an E8M0 scale can be
F32_MANTISSA_HALF = 1 << (F32_MBITS - 1)  # a subnormal mantissa above this is > 2**-127
# Adding then subtracting 1.5 * 2**23 rounds an fp32 |y| < 2**22 to an integer, half to even.
ROUND_HALF_EVEN_MAGIC = 12582912.0

# FP4 E2M1
E2M1_MBITS = 1
E2M1_EMAX = 2  # exponent of the largest normal, 4.0 (= floor(log2(6)))
E2M1_MAX = 6.0
E2M1_SIGN_BIT = 0x8
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)  # index = 3-bit magnitude code
# Midpoints between consecutive E2M1 values. Rounding half to even = counting the midpoints passed, where a
# magnitude equal to a midpoint passes it only when the code above it is even (0.75 -> 1.0, 1.25 -> 1.0).
E2M1_MIDPOINTS = tuple((lo + hi) / 2 for lo, hi in zip(E2M1_VALUES, E2M1_VALUES[1:]))
E2M1_TIE_ROUNDS_UP = tuple((code + 1) % 2 == 0 for code in range(len(E2M1_MIDPOINTS)))

# FP8 E4M3 (fn variant)
E4M3_MBITS = 3
E4M3_EMIN = -6
E4M3_EMAX = 8  # floor(log2(448))
E4M3_BIAS = 7
E4M3_MAX = 448.0
E4M3_SIGN_BIT = 0x80
E4M3_NAN_CODE = 0x7F
E4M3_SUBNORMAL_STEP = 2.0**-9  # subnormal value = code * 2**-9
E4M3_SUBNORMAL_STEPS_PER_UNIT = 512.0  # subnormal code = value * 512

# E8M0
E8M0_BIAS = 127
E8M0_NAN = 0xFF
E8M0_MAX_FINITE_CODE = 254

# float16's largest finite value: float16 outputs saturate here (to_output_dtype)
F16_MAX = 65504.0

# Rounding the E8M0 exponent of a block scale: the three rules lowbit offers (see mx.py).
# "even": add this to the fp32 bits of amax before truncating the mantissa, i.e. round amax up to the
# next power of two when its significand is >= 1.75. It is compressed-tensors' and vLLM's constant
# 1 << (mantissa_bits - E2M1_MBITS - 1), written for fp32.
EVEN_RULE_BIAS = 1 << (F32_MBITS - E2M1_MBITS - 1)


def float_bits(x: torch.Tensor) -> torch.Tensor:
    """The int32 bit pattern of an fp32 tensor."""
    return x.to(torch.float32).contiguous().view(torch.int32)


def bits_to_float(bits: torch.Tensor) -> torch.Tensor:
    """The fp32 values of an int32 bit pattern."""
    return bits.to(torch.int32).contiguous().view(torch.float32)


def true_divide(numerator: torch.Tensor, denominator: float) -> torch.Tensor:
    """numerator / denominator with IEEE division on every device. Dividing a CUDA tensor by a Python
    scalar makes torch multiply by the rounded reciprocal instead, which can be one ulp off."""
    numerator = numerator.to(torch.float32)
    return numerator / torch.full_like(numerator, denominator)


def pow2(exponent: torch.Tensor) -> torch.Tensor:
    """2**exponent in fp32 for integer exponents in [-126, 127] (always a normal number)."""
    return bits_to_float((exponent.to(torch.int32) + F32_BIAS) << F32_MBITS)


def round_magnitude(a: torch.Tensor, mbits: int, emin: int, max_value: float) -> torch.Tensor:
    """Round non-negative fp32 magnitudes onto a float grid, half to even, saturating at max_value."""
    a = torch.clamp(a.to(torch.float32), max=max_value)
    exponent = torch.clamp(((float_bits(a) >> F32_MBITS) & F32_EXP_FIELD_MASK) - F32_BIAS, min=emin)
    step_exponent = exponent - mbits
    steps = a * pow2(-step_exponent)
    steps = (steps + ROUND_HALF_EVEN_MAGIC) - ROUND_HALF_EVEN_MAGIC
    return steps * pow2(step_exponent)


def e2m1_decode(code: torch.Tensor) -> torch.Tensor:
    """fp32 value of 4-bit E2M1 codes (any integer dtype), sign bit included."""
    code = code.to(torch.int32)
    exponent_field = (code >> 1) & 0x3
    mantissa = code & 1
    normal = bits_to_float(((exponent_field - 1 + F32_BIAS) << F32_MBITS) | (mantissa << (F32_MBITS - 1)))
    magnitude = torch.where(exponent_field == 0, mantissa.to(torch.float32) * 0.5, normal)
    return torch.where((code & E2M1_SIGN_BIT) != 0, -magnitude, magnitude)


def quantize_e2m1(x: torch.Tensor) -> torch.Tensor:
    """4-bit E2M1 codes (uint8) of finite fp32 values: round half to even, saturate at +-6, keep the sign."""
    x = x.to(torch.float32)
    magnitude = x.abs()
    code = torch.zeros(x.shape, dtype=torch.int32, device=x.device)
    for midpoint, tie_rounds_up in zip(E2M1_MIDPOINTS, E2M1_TIE_ROUNDS_UP):
        code += (magnitude >= midpoint if tie_rounds_up else magnitude > midpoint).to(torch.int32)
    return torch.where(float_bits(x) < 0, code | E2M1_SIGN_BIT, code).to(torch.uint8)


def e4m3_code(magnitude: torch.Tensor) -> torch.Tensor:
    """7-bit code (int32) of an E4M3 magnitude already on the grid."""
    bits = float_bits(magnitude)
    exponent = (bits >> F32_MBITS) - F32_BIAS
    normal = ((exponent + E4M3_BIAS) << E4M3_MBITS) | ((bits >> (F32_MBITS - E4M3_MBITS)) & 0x7)
    subnormal = (magnitude * E4M3_SUBNORMAL_STEPS_PER_UNIT).to(torch.int32)
    return torch.where(exponent >= E4M3_EMIN, normal, subnormal)


def quantize_e4m3(x: torch.Tensor) -> torch.Tensor:
    """E4M3 bytes (uint8) of finite fp32 values: round half to even, saturate at +-448, keep the sign."""
    x = x.to(torch.float32)
    negative = float_bits(x) < 0
    code = e4m3_code(round_magnitude(x.abs(), E4M3_MBITS, E4M3_EMIN, E4M3_MAX))
    return torch.where(negative, code | E4M3_SIGN_BIT, code).to(torch.uint8)


def e8m0_decode(code: torch.Tensor) -> torch.Tensor:
    """fp32 value 2**(code - 127) of E8M0 codes; 0xFF decodes to NaN."""
    code = code.to(torch.int32)
    bits = torch.where(code == 0, torch.full_like(code, F32_HALF_MIN_NORMAL_BITS), code << F32_MBITS)
    bits = torch.where(code == E8M0_NAN, torch.full_like(code, F32_QUIET_NAN_BITS), bits)
    return bits_to_float(bits)


def e8m0_code_from_amax(amax: torch.Tensor, element_emax: int, element_max: float, rule: str) -> torch.Tensor:
    """E8M0 code (int32, 0..254) of the shared scale for blocks of finite absolute maximum `amax`.

    floor: 2**(floor(log2 amax) - element_emax)             (OCP MX v1.0 conversion algorithm)
    even:  as floor, after rounding amax up to the next power of two when its significand is >= 1.75
           (compressed-tensors `generate_mx_scales`, vLLM `reference_mxfp4.py`, AMD Quark "even")
    rceil: 2**ceil(log2(amax / element_max))                (Triton `downcast_to_mxfp`, Blackwell cvt.rp)
    """
    amax = amax.to(torch.float32)
    if rule == "floor":
        code = ((float_bits(amax) >> F32_MBITS) & F32_EXP_FIELD_MASK) - element_emax
    elif rule == "even":
        code = (((float_bits(amax) + EVEN_RULE_BIAS) >> F32_MBITS) & F32_EXP_FIELD_MASK) - element_emax
    elif rule == "rceil":
        bits = float_bits(true_divide(amax, element_max))
        exponent_field = (bits >> F32_MBITS) & F32_EXP_FIELD_MASK
        mantissa = bits & F32_MANTISSA_MASK
        subnormal_code = (mantissa > F32_MANTISSA_HALF).to(torch.int32)
        code = torch.where(exponent_field == 0, subnormal_code, exponent_field + (mantissa != 0).to(torch.int32))
    else:
        raise ValueError(f"scale rule must be one of 'floor', 'even', 'rceil', got {rule!r}")
    return torch.clamp(code, 0, E8M0_MAX_FINITE_CODE)


def inverse_e8m0_factors(code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two normal powers of two whose product is 2**(127 - code): x * first * second is exact whenever the
    result is a normal number, with no subnormal factor (2**-127) that a flush-to-zero device would drop."""
    exponent = E8M0_BIAS - code.to(torch.int32)
    first = torch.div(exponent, 2, rounding_mode="floor")
    return pow2(first), pow2(exponent - first)


def to_output_dtype(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 values rounded to `dtype` (half to even); float16 saturates at +-F16_MAX, NaN stays NaN."""
    if dtype == torch.float16:
        values = torch.clamp(values, -F16_MAX, F16_MAX)  # clamp keeps NaN
    return values.to(dtype)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes two per byte along the last dim: element 2i in the low nibble, 2i+1 in the high."""
    codes = codes.to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_fp4: (..., n) bytes -> (..., 2n) 4-bit codes as uint8."""
    low = packed & 0xF
    high = packed >> 4
    return torch.stack((low, high), dim=-1).flatten(-2)
