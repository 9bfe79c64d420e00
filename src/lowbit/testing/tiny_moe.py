"""Tiny random-weight Qwen3-MoE checkpoints, for checkpoint (quantize / dequantize) tests.

transformers keeps Qwen3-MoE experts fused in memory but saves them per expert, as the real
Qwen3-30B-A3B checkpoints are stored: `model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight` plus the
router `model.layers.N.mlp.gate.weight`. The tokenizer is the one `lowbit.testing.tiny` writes.
"""

from __future__ import annotations

import math
from pathlib import Path

from lowbit.testing.tiny import END_OF_TEXT, END_OF_TURN, save_qwen3_tokenizer


def build_tiny_qwen3_moe(out_dir: Path, *, seed: int = 0, num_experts: int = 4, hidden_size: int = 128,
                         moe_intermediate_size: int = 128, num_hidden_layers: int = 2) -> Path:
    """Save a random-weight Qwen3-MoE model (float32, top-2 of `num_experts`) with a tokenizer; returns out_dir."""
    import torch
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    out_dir = Path(out_dir)
    save_qwen3_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    config = Qwen3MoeConfig(
        vocab_size=math.ceil(len(tokenizer) / 128) * 128,
        hidden_size=hidden_size,
        intermediate_size=2 * moe_intermediate_size,
        moe_intermediate_size=moe_intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        num_experts=num_experts,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        eos_token_id=tokenizer.convert_tokens_to_ids(END_OF_TURN),
        pad_token_id=tokenizer.convert_tokens_to_ids(END_OF_TEXT),
        dtype="float32",
    )
    torch.manual_seed(seed)
    Qwen3MoeForCausalLM(config).eval().save_pretrained(out_dir)
    return out_dir
