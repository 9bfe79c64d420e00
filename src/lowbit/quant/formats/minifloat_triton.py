"""Triton device functions mirroring `minifloat.py` (same constants, same order of operations).

Only exact fp32 operations (comparisons, multiplication by powers of two, the round-half-even magic add)
and integer bit manipulation are used, so results do not depend on the device's division or FTZ settings.
Divisions by a per-group scale avoid a per-element IEEE division (`div.rn.f32` is a subroutine that cost
the quantize kernels 20-40% of their bandwidth on an H100) with `divide_exactly`: x * (1/d) in fp64,
rounded once to fp32, is the correctly rounded fp32 quotient x / d. Proof: with d = S*2^l and a rounding
boundary of fp32 (a midpoint between neighbours) m = M*2^k (S < 2^24 and M < 2^25, odd), x - m*d is a
nonzero multiple of 2^(k+l) or coarser, so x/d lies at least 2^-49 (relative) away from every midpoint,
while the fp64 product is within 2^-52 of x/d: both round to the same fp32 value.
E2M1 codes are computed by rounding on the grid (`encode_e2m1`, one fused multiply-add onto a power of two)
rather than by counting midpoints as the reference does; tests check the two agree on every tie and its
neighbours. Per-block maxima of 16-bit weights are taken two elements per instruction (`block_amax_bits`).
The quantize kernels are instruction-bound on an H200 (perf/RESULTS.md), so instructions per element are what
these helpers economise.

E4M3 encode/decode and the bfloat16 output cast have two bit-identical implementations, chosen per launch
by the constexpr NATIVE (see `native_casts(device)`): the hardware conversions on a GPU (`cvt.rn.satfinite` to
e4m3, exact e4m3 -> f32, `cvt.rn` to bf16; one instruction each), or integer bit arithmetic, which
Triton's CPU interpreter needs (its bf16 cast truncates) and which LOWBIT_TRITON_BIT_CASTS=1 forces on a
GPU to cross-check the two.
"""

import functools
import os
import struct

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import minifloat as mf

F32_MBITS = tl.constexpr(mf.F32_MBITS)
F32_BIAS = tl.constexpr(mf.F32_BIAS)
F32_EXP_FIELD_MASK = tl.constexpr(mf.F32_EXP_FIELD_MASK)
F32_INF_BITS = tl.constexpr(mf.F32_INF_BITS)
F32_MANTISSA_MASK = tl.constexpr(mf.F32_MANTISSA_MASK)
F32_MANTISSA_HALF = tl.constexpr(mf.F32_MANTISSA_HALF)
F32_QUIET_NAN_BITS = tl.constexpr(mf.F32_QUIET_NAN_BITS)
F32_HALF_MIN_NORMAL_BITS = tl.constexpr(mf.F32_HALF_MIN_NORMAL_BITS)
ROUND_HALF_EVEN_MAGIC = tl.constexpr(mf.ROUND_HALF_EVEN_MAGIC)
ROUND_HALF_EVEN_MAGIC_BITS = tl.constexpr(int.from_bytes(struct.pack("<f", mf.ROUND_HALF_EVEN_MAGIC), "little"))
E2M1_MAX = tl.constexpr(mf.E2M1_MAX)
E2M1_MBITS = tl.constexpr(mf.E2M1_MBITS)
E2M1_SIGN_BIT = tl.constexpr(mf.E2M1_SIGN_BIT)
E2M1_UNPACK_FACTOR = tl.constexpr(2.0 ** (F32_BIAS.value - 1))  # see unpack_e2m1
E2M1_ROUNDING_SCALE = tl.constexpr(2.0 ** (E2M1_MBITS.value - F32_MBITS.value))  # see _e2m1_rounded_magnitude
E2M1_UNROUNDING_SCALE = tl.constexpr(1.0 / E2M1_ROUNDING_SCALE.value)
E2M1_CODE_UNIT = tl.constexpr(2.0 ** (1 - F32_BIAS.value + F32_MBITS.value - E2M1_MBITS.value))  # 2**-104
F32_ONE_BITS = tl.constexpr(mf.F32_BIAS << mf.F32_MBITS)
F32_SIGN_BIT_MASK = tl.constexpr(-(2**31))  # bit 31 of an int32
E4M3_MBITS = tl.constexpr(mf.E4M3_MBITS)
E4M3_EMIN = tl.constexpr(mf.E4M3_EMIN)
E4M3_BIAS = tl.constexpr(mf.E4M3_BIAS)
E4M3_MAX = tl.constexpr(mf.E4M3_MAX)
E4M3_SIGN_BIT = tl.constexpr(mf.E4M3_SIGN_BIT)
E4M3_NAN_CODE = tl.constexpr(mf.E4M3_NAN_CODE)
E4M3_SUBNORMAL_STEP = tl.constexpr(mf.E4M3_SUBNORMAL_STEP)
E4M3_SUBNORMAL_STEPS_PER_UNIT = tl.constexpr(mf.E4M3_SUBNORMAL_STEPS_PER_UNIT)
E8M0_BIAS = tl.constexpr(mf.E8M0_BIAS)
E8M0_NAN = tl.constexpr(mf.E8M0_NAN)
E8M0_MAX_FINITE_CODE = tl.constexpr(mf.E8M0_MAX_FINITE_CODE)
EVEN_RULE_BIAS = tl.constexpr(mf.EVEN_RULE_BIAS)
F16_MAX = tl.constexpr(mf.F16_MAX)

# scale-rule ids passed to kernels as constexpr
RULE_FLOOR = tl.constexpr(0)
RULE_EVEN = tl.constexpr(1)
RULE_RCEIL = tl.constexpr(2)
RULE_IDS = {"floor": 0, "even": 1, "rceil": 2}


@triton.jit
def float_bits(x):
    return x.to(tl.int32, bitcast=True)


@triton.jit
def bits_to_float(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def pow2(exponent):
    return bits_to_float((exponent + F32_BIAS) << F32_MBITS)


@triton.jit
def is_negative(x):
    return float_bits(x) < 0


@triton.jit
def is_finite(x):
    return (float_bits(x) & F32_INF_BITS) != F32_INF_BITS


@triton.jit
def round_magnitude(a, MBITS: tl.constexpr, EMIN: tl.constexpr, MAX_VALUE: tl.constexpr):
    a = tl.minimum(a, MAX_VALUE)
    exponent = tl.maximum(((float_bits(a) >> F32_MBITS) & F32_EXP_FIELD_MASK) - F32_BIAS, EMIN)
    step_exponent = exponent - MBITS
    steps = a * pow2(-step_exponent)
    steps = (steps + ROUND_HALF_EVEN_MAGIC) - ROUND_HALF_EVEN_MAGIC
    return steps * pow2(step_exponent)


@triton.jit
def reciprocal64(divisor):
    """fp64 1 / divisor, correctly rounded (fp64 division is IEEE div.rn; one per group, so the
    per-element work is a multiply)."""
    return 1.0 / divisor.to(tl.float64)


@triton.jit
def divide_exactly(x, reciprocal):
    """fp32 x / d rounded to nearest, bit-identical to IEEE division, from reciprocal = reciprocal64(d)."""
    return (x.to(tl.float64) * reciprocal).to(tl.float32)


@triton.jit
def pack_nibbles(codes):
    """(A, B, 8) int32 4-bit codes -> (A, B) int32 words, element j in bits 4j..4j+3: in memory (little
    endian) element 2i in the low nibble of byte i, as compressed-tensors packs FP4."""
    shifts = (tl.arange(0, 8) * 4)[None, None, :]
    return tl.sum(codes << shifts, axis=2)  # disjoint bit fields: the sum is the bitwise or


@triton.jit
def pack_biased_nibbles(biased, BIAS: tl.constexpr):
    """pack_nibbles of biased - BIAS (each 0..15) with the subtraction done once per word instead of once per
    code: shifting and adding are exact modulo 2**32, so sum((c + BIAS) << 4j) - BIAS * 0x11111111 wraps to
    sum(c << 4j)."""
    return pack_nibbles(biased) - _wrapped_int32(BIAS * 0x11111111)


@triton.constexpr_function
def _wrapped_int32(value):
    """value modulo 2**32 as a signed int32 constant."""
    return (value + 2**31) % 2**32 - 2**31


@triton.jit
def _e2m1_rounded_magnitude(x):
    """|x| of finite fp32 x rounded half to even onto the E2M1 grid and saturated at 6, times 2**-22 (exact).

    The grid step is 2**(e - 1) for |x| in [2**e, 2**(e+1)) from 1 up, and 0.5 below 1 (e = 0). An fp32 number
    m = 2**max(e, 0) has ulp 2**(max(e, 0) - 23), so one fused multiply-add |x| * 2**-22 + m rounds |x| * 2**-22
    to that ulp once, half to even (E2M1's even codes are the sums' even significands), and subtracting m again
    is exact."""
    magnitude = tl.minimum(tl.abs(x), E2M1_MAX)
    binade = bits_to_float(tl.maximum(float_bits(magnitude) & F32_INF_BITS, F32_ONE_BITS))  # 2**max(e, 0)
    return tl.fma(magnitude, E2M1_ROUNDING_SCALE, binade) - binade


@triton.jit
def encode_e2m1(x):
    """int32 E2M1 codes of finite fp32 x, equal to quantize_e2m1 (round half to even, saturate, sign kept),
    by rounding on the grid (`_e2m1_rounded_magnitude`) instead of counting midpoints. The rounded magnitude
    (0, 0.5, ..., 6) times 2**-126 has its code in fp32 bits 22-24: unpack_e2m1 the other way round (0.5 becomes
    the subnormal 2**-127, 1 the smallest normal). Needs subnormals kept, as unpack_e2m1 does; seven
    instructions and the sign's two."""
    code = float_bits(_e2m1_rounded_magnitude(x) * E2M1_CODE_UNIT) >> (F32_MBITS - E2M1_MBITS)
    return code | ((float_bits(x) >> 28) & E2M1_SIGN_BIT)  # arithmetic shift: 0x8 for a negative x


@triton.jit
def round_to_e2m1(x):
    """Finite fp32 x rounded half to even onto the E2M1 grid, saturating at +-6, sign kept (-0.0 too): the value
    of encode_e2m1(x), without forming the code (fake quantization needs only the value)."""
    magnitude = _e2m1_rounded_magnitude(x) * E2M1_UNROUNDING_SCALE  # exact: a power of two
    return bits_to_float(float_bits(magnitude) | (float_bits(x) & F32_SIGN_BIT_MASK))


@triton.jit
def abs_bits(x):
    """int32 bits of |x|: ordered like the magnitudes, with every NaN above +Inf (F32_INF_BITS)."""
    return float_bits(x) & 0x7FFFFFFF


@triton.jit
def abs16_bits(x):
    """int16 bits of |x| for bfloat16 / float16 x: abs_bits of a 16-bit float (NaN's above Inf's)."""
    return x.to(tl.int16, bitcast=True) & 0x7FFF


@triton.jit
def block_amax_bits(x, NATIVE: tl.constexpr):
    """int32 bits of max |x| over each row of x (R, C, 8), as fp32 whatever x's dtype: ordered like the
    magnitudes, a row holding NaN or Inf giving bits >= F32_INF_BITS. A 16-bit x first has each run of 8 (one
    thread's 16-byte load) halved twice against itself, to 2 (`max_magnitudes`: on a GPU two elements per
    instruction); the rest compares |x|'s fp32 bits as integers (abs_bits), as float32 inputs do throughout."""
    if x.dtype != tl.float32:
        for _ in tl.static_range(2):  # 8 -> 4 -> 2: each register's pair against the other half's
            halves = tl.reshape(x, (x.shape[0], x.shape[1], 2, x.shape[2] // 2))
            first, second = tl.split(tl.permute(halves, (0, 1, 3, 2)))
            x = max_magnitudes(first, second, NATIVE)
        x = abs16_bits(x).to(x.dtype, bitcast=True)
    return tl.max(tl.max(abs_bits(x.to(tl.float32)), axis=2), axis=1)


@triton.jit
def max_magnitudes(a, b, NATIVE: tl.constexpr):
    """Per element of two bfloat16 / float16 / float32 tensors, a value of their dtype whose magnitude is the
    larger of |a| and |b| (its sign means nothing), NaN if either is NaN. On a GPU `max.NaN.xorsign.abs` on
    bf16x2 / f16x2 does two 16-bit elements per instruction; elsewhere, and for float32, the magnitudes' bits are
    compared as integers (NaN's above Inf's), which is what the interpreter tests check the reduction with."""
    if a.dtype == tl.float32:
        larger = tl.maximum(abs_bits(a), abs_bits(b)).to(tl.float32, bitcast=True)
    elif NATIVE and a.dtype == tl.bfloat16:
        larger = tl.inline_asm_elementwise("max.NaN.xorsign.abs.bf16x2 $0, $1, $2;", "=r,r,r", [a, b],
                                           dtype=tl.bfloat16, is_pure=True, pack=2)
    elif NATIVE:
        larger = tl.inline_asm_elementwise("max.NaN.xorsign.abs.f16x2 $0, $1, $2;", "=r,r,r", [a, b],
                                           dtype=tl.float16, is_pure=True, pack=2)
    else:
        larger = tl.maximum(abs16_bits(a), abs16_bits(b)).to(a.dtype, bitcast=True)
    return larger


@triton.jit
def unpack_e2m1(words):
    """fp32 values of the eight E2M1 codes in each int32 word of `words` (A, B): (A, B, 8), element j from bits
    4j..4j+3 (pack_nibbles' layout). The code's exponent and mantissa bits are placed at the fp32 exponent's
    lowest two bits and the mantissa's highest: that float is the E2M1 value times 2**-126 (code 1, 0.5, becomes
    the subnormal 2**-127), so one exact multiplication gives the value; the sign bit moves to bit 31. A few
    integer operations per element where decoding the fields one by one needs about fifteen. Needs subnormals
    kept: Triton flushes them only inside libdevice calls, and the interpreter computes in numpy."""
    codes = words[:, :, None] >> (tl.arange(0, 8) * 4)[None, None, :]
    bits = ((codes & 0x7) << (F32_MBITS - E2M1_MBITS)) | ((codes & E2M1_SIGN_BIT) << 28)
    return bits_to_float(bits) * E2M1_UNPACK_FACTOR


@triton.jit
def words_per_lane(first_word, WORDS: tl.constexpr, n_words):
    """(int64 indices, mask) of the WORDS packed int32 words from first_word, one word per lane: the contiguity
    hint of 1 keeps Triton from vectorising the word loads, which would hand a thread several consecutive words.
    So a warp's store of the eight values each word holds writes 32 x 8 contiguous values (16-byte stores,
    lane after lane) instead of two stores per thread 32 bytes apart, which cost twice the L2 write requests."""
    word = tl.max_contiguous(first_word + tl.arange(0, WORDS), 1)
    return word, word < n_words


@triton.jit
def dequantize_e2m1_words(words_ptr, out_ptr, word, in_range, scale, OUT_IS_BF16: tl.constexpr):
    """Dequantize packed words of eight E2M1 codes (`words_per_lane`): word i of words_ptr (the uint8 codes
    viewed as int32) times scale[i], stored at out_ptr[8i:8i + 8]."""
    words = tl.load(words_ptr + word, mask=in_range, other=0)
    values = tl.reshape(unpack_e2m1(words[:, None]), (word.shape[0], 8)) * scale[:, None]
    store_values(out_ptr, word[:, None] * 8 + tl.arange(0, 8)[None, :], values, in_range[:, None], OUT_IS_BF16)


@triton.jit
def quantize_e4m3(x):
    """int32 E4M3 bytes of fp32 x (finite): half to even, saturating at 448, sign kept."""
    magnitude = round_magnitude(tl.abs(x), E4M3_MBITS, E4M3_EMIN, E4M3_MAX)
    bits = float_bits(magnitude)
    exponent = (bits >> F32_MBITS) - F32_BIAS
    normal = ((exponent + E4M3_BIAS) << E4M3_MBITS) | ((bits >> (F32_MBITS - E4M3_MBITS)) & 0x7)
    subnormal = (magnitude * E4M3_SUBNORMAL_STEPS_PER_UNIT).to(tl.int32)
    code = tl.where(exponent >= E4M3_EMIN, normal, subnormal)
    return tl.where(is_negative(x), code | E4M3_SIGN_BIT, code)


@triton.jit
def e4m3_decode(code):
    """fp32 value of int32 E4M3 bytes (0x7F/0xFF decode to NaN)."""
    exponent_field = (code >> E4M3_MBITS) & 0xF
    mantissa = code & 0x7
    exponent_bits = (exponent_field - E4M3_BIAS + F32_BIAS) << F32_MBITS
    normal = bits_to_float(exponent_bits | (mantissa << (F32_MBITS - E4M3_MBITS)))
    magnitude = tl.where(exponent_field == 0, mantissa.to(tl.float32) * E4M3_SUBNORMAL_STEP, normal)
    nan = bits_to_float(tl.full(code.shape, F32_QUIET_NAN_BITS, tl.int32))
    magnitude = tl.where((code & 0x7F) == E4M3_NAN_CODE, nan, magnitude)
    return tl.where((code & E4M3_SIGN_BIT) != 0, -magnitude, magnitude)


@triton.jit
def encode_e4m3(x, NATIVE: tl.constexpr):
    """int32 E4M3 bytes of finite fp32 x, saturating at +-448: hardware cvt or quantize_e4m3.

    The hardware path converts pairs with `cvt.rn.satfinite.e4m3x2.f32` (saturating, so no clamp) in its own
    inline assembly, which widens both bytes to int32 itself. Through Triton's float8 cast, ptxas 12.8 took the
    pair's second byte from a register nothing wrote, in the NVFP4 quantize kernel on float32 weights (half of
    the block scales wrong on an H100); perf/kernel_instructions.py now checks every kernel for such reads."""
    if NATIVE:
        return tl.inline_asm_elementwise(
            "{ .reg .b16 pair; cvt.rn.satfinite.e4m3x2.f32 pair, $3, $2; cvt.u32.u16 $0, pair; "
            "shr.u32 $1, $0, 8; and.b32 $0, $0, 255; }",
            "=r,=r,r,r", [x], dtype=tl.int32, is_pure=True, pack=2)
    else:
        return quantize_e4m3(x)


@triton.jit
def decode_e4m3(code, NATIVE: tl.constexpr):
    """fp32 value of E4M3 bytes (int32): hardware conversion or e4m3_decode."""
    if NATIVE:
        return code.to(tl.uint8).to(tl.float8e4nv, bitcast=True).to(tl.float32)
    else:
        return e4m3_decode(code)


@triton.jit
def e8m0_decode(code):
    """fp32 2**(code - 127) of int32 E8M0 codes; 0xFF decodes to NaN."""
    bits = tl.where(code == 0, F32_HALF_MIN_NORMAL_BITS, code << F32_MBITS)
    bits = tl.where(code == E8M0_NAN, F32_QUIET_NAN_BITS, bits)
    return bits_to_float(bits)


@triton.jit
def e8m0_code_from_amax(amax, ELEMENT_EMAX: tl.constexpr, ELEMENT_MAX: tl.constexpr, RULE: tl.constexpr):
    """int32 E8M0 code (0..254) for finite block maxima; see minifloat.e8m0_code_from_amax."""
    if RULE == RULE_FLOOR:
        code = ((float_bits(amax) >> F32_MBITS) & F32_EXP_FIELD_MASK) - ELEMENT_EMAX
    elif RULE == RULE_EVEN:
        code = (((float_bits(amax) + EVEN_RULE_BIAS) >> F32_MBITS) & F32_EXP_FIELD_MASK) - ELEMENT_EMAX
    else:
        bits = float_bits(tl.math.div_rn(amax, tl.full(amax.shape, ELEMENT_MAX, tl.float32)))
        exponent_field = (bits >> F32_MBITS) & F32_EXP_FIELD_MASK
        mantissa = bits & F32_MANTISSA_MASK
        subnormal_code = (mantissa > F32_MANTISSA_HALF).to(tl.int32)
        code = tl.where(exponent_field == 0, subnormal_code, exponent_field + (mantissa != 0).to(tl.int32))
    return tl.minimum(tl.maximum(code, 0), E8M0_MAX_FINITE_CODE)


@triton.jit
def inverse_e8m0(code):
    """2**(127 - code) for E8M0 codes up to 253, where it is a normal number (one factor: see mx_triton)."""
    return pow2(-code + E8M0_BIAS)  # tensor first: the interpreter keeps constexpr - tensor a constexpr


@triton.jit
def inverse_e8m0_factors(code):
    """Two normal powers of two whose product is 2**(127 - code) (see minifloat.inverse_e8m0_factors)."""
    exponent = E8M0_BIAS - code
    first = exponent >> 1  # arithmetic shift: floor division by 2
    return pow2(first), pow2(exponent - first)


@triton.jit
def bfloat16_bits(x):
    """int16 bit pattern of fp32 x rounded to bfloat16, half to even (the interpreter's cast truncates)."""
    bits = float_bits(x)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    rounded = tl.where(x != x, bits >> 16, rounded)  # NaN: keep the payload's top half (quiet NaN stays NaN)
    return rounded.to(tl.int16)


@triton.jit
def store_values(out_ptr, offsets, values, mask, OUT_IS_BF16: tl.constexpr):
    """Store fp32 values into the output; bfloat16 outputs arrive as an int16 view and are rounded here, float16
    outputs saturate at +-65504 (minifloat.to_output_dtype). Comparisons, not min/max, so that NaN stays NaN
    on every backend."""
    if OUT_IS_BF16:
        tl.store(out_ptr + offsets, bfloat16_bits(values), mask=mask)
    else:
        if out_ptr.dtype.element_ty == tl.float16:
            values = tl.where(values > F16_MAX, F16_MAX, tl.where(values < -F16_MAX, -F16_MAX, values))
        tl.store(out_ptr + offsets, values.to(out_ptr.dtype.element_ty), mask=mask)


# Triton has E4M3 (float8e4nv) from compute capability 8.9 (Ada, Hopper, Blackwell), and max.xorsign.abs on
# bf16x2 / f16x2 exists from 8.6: the GPU paths of the kernels need 8.9; older GPUs run the bit-arithmetic twins
NATIVE_CAPABILITY = (8, 9)


def native_casts_allowed() -> bool:
    """Whether the environment lets kernels use GPU instructions: not in Triton's interpreter, and not with
    LOWBIT_TRITON_BIT_CASTS=1 (which forces the bit-arithmetic twins on a GPU, to cross-check them)."""
    return os.environ.get("TRITON_INTERPRET") != "1" and os.environ.get("LOWBIT_TRITON_BIT_CASTS") != "1"


def native_casts(device: torch.device) -> bool:
    """Whether kernels on `device` use the GPU's own conversion and paired-maximum instructions (the module
    docstring): where the environment allows it (native_casts_allowed) on a GPU of compute capability 8.9 and
    up. Elsewhere the kernels run the bit-arithmetic twins, bit-identical and slower."""
    return native_casts_allowed() and device.type == "cuda" and _capability(device.index) >= NATIVE_CAPABILITY


@functools.cache
def _capability(index: int | None) -> tuple[int, int]:
    return torch.cuda.get_device_capability(index)


def output_view(out: torch.Tensor, native: bool | None = None) -> tuple:
    """(tensor to pass to a kernel, OUT_IS_BF16) for an output allocated in its final dtype: bfloat16
    outputs go through the int16 bit path unless the native cast is used (`native`: native_casts(out.device))."""
    if native is None:
        native = native_casts(out.device)
    if out.dtype == torch.bfloat16 and not native:
        return out.view(torch.int16), True
    return out, False
