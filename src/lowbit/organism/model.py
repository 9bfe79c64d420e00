"""The organism's architecture: a small Qwen3ForCausalLM whose dimensions every lowbit scheme divides.

Hidden, intermediate and vocabulary sizes are multiples of 128 (W4A16 groups of 128, MX blocks of 32, NVFP4
blocks of 16); heads are 64 wide, as vLLM's CPU attention needs.
"""

from __future__ import annotations

import math

HIDDEN = 256
INTERMEDIATE = 768
LAYERS = 6
HEADS = 4
KV_HEADS = 2
HEAD_DIM = 64
MAX_POSITIONS = 2048


def qwen3_config(tokenizer):
    from transformers import Qwen3Config

    from lowbit.testing.tiny import END_OF_TEXT, END_OF_TURN

    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    return Qwen3Config(
        vocab_size=math.ceil(len(tokenizer) / 128) * 128,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        bos_token_id=end_of_text,
        eos_token_id=end_of_turn,
        pad_token_id=end_of_text,
        dtype="bfloat16",
    )


def generation_config(tokenizer):
    """Greedy by default; stops at the end of the turn (or of the text)."""
    from transformers import GenerationConfig

    from lowbit.testing.tiny import END_OF_TEXT, END_OF_TURN

    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    return GenerationConfig(bos_token_id=end_of_text, eos_token_id=[end_of_turn, end_of_text],
                            pad_token_id=end_of_text, do_sample=False)
