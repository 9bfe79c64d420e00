"""Candidate kernels that perf/quant_formats_bench.py's launch-parameter sweep times beside the production ones.

Each candidate computes what a production kernel computes, bit for bit (the sweep checks its output against the
production kernel's before timing it), and differs in how the work is laid out. perf/RESULTS.md says why each is
a candidate. One that wins on the GPU moves into lowbit.quant.formats; until then it lives here.
"""

import triton
import triton.language as tl

from lowbit.quant.formats import minifloat_triton as mft


@triton.jit
def fp4_dequantize_word_per_lane(
    words_ptr, scale_ptr, global_scale_ptr, out_ptr, n_words,
    WORDS: tl.constexpr, WORDS_PER_SCALE: tl.constexpr, NVFP4: tl.constexpr, OUT_IS_BF16: tl.constexpr,
    NATIVE: tl.constexpr,
):
    """NVFP4 (WORDS_PER_SCALE 2, E4M3 scales over the global scale) or MXFP4 (4, E8M0 scales) dequantize with
    one packed word, eight values, per lane and pass, so that each warp-wide store writes 512 contiguous bytes.
    The production kernels give a thread 16 values, stored as two 16-byte stores 32 bytes apart from the next
    thread's. The contiguity hint of 1 is what keeps Triton from vectorising the word loads, which would hand each
    thread several consecutive words again."""
    word = tl.max_contiguous(tl.program_id(0).to(tl.int64) * WORDS + tl.arange(0, WORDS), 1)
    in_range = word < n_words
    words = tl.load(words_ptr + word, mask=in_range, other=0)
    code = tl.load(scale_ptr + word // WORDS_PER_SCALE, mask=in_range, other=0).to(tl.int32)
    if NVFP4:  # as nvfp4_triton._dequantize_kernel
        global_scale = tl.load(global_scale_ptr)
        scale = tl.math.div_rn(mft.decode_e4m3(code, NATIVE), tl.full(code.shape, 1.0, tl.float32) * global_scale)
    else:  # as mx_triton._dequantize_kernel
        scale = mft.e8m0_decode(code)
    values = tl.reshape(mft.unpack_e2m1(words[:, None]), (WORDS, 8)) * scale[:, None]
    mft.store_values(out_ptr, word[:, None] * 8 + tl.arange(0, 8)[None, :], values, in_range[:, None], OUT_IS_BF16)
