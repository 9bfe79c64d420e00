"""Tiny random-weight Qwen3 checkpoints, saved with a real tokenizer, for tests and the offline demo.

The model has the Qwen3 architecture (head_dim 64, as vLLM's CPU attention needs) with random weights, so its
text is gibberish but every code path - chat template, tokenization, batching, stop tokens - is the real one.
The tokenizer is the real Qwen3 one when the shared data has it, else a small byte-level BPE built on the fly
with the same special tokens and an equivalent chat template.

`eos_logit` raises the end-of-turn token's logit to about that value at every step (by giving all embeddings a
constant feature that only the end-of-turn row reads out), so sampled completions stop at varied lengths
instead of always running out of budget. Leave it None for greedy-decoding comparisons.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from lowbit.testing.data import shared_path

END_OF_TURN = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT, "<|im_start|>", END_OF_TURN]
PLAIN_ADDED_TOKENS = ["<think>", "</think>"]

# A Qwen3-style chat template: ChatML turns; with enable_thinking=false the assistant turn starts with an empty
# think block, as Qwen3's own template does.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def save_qwen3_tokenizer(out_dir: Path) -> str:
    """Write a Qwen3 tokenizer into out_dir; returns "qwen3" (the real one) or "fallback"."""
    out_dir.mkdir(parents=True, exist_ok=True)
    real = shared_path("tokenizers", "qwen3")
    if real is not None:
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            shutil.copyfile(real / name, out_dir / name)
        return "qwen3"
    _build_fallback_tokenizer().save_pretrained(out_dir)
    return "fallback"


def _build_fallback_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "Answer the following multiple choice question. The last line of your response should be of the "
        "following format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of ABCD.",
        "Which of the following is correct? A) one B) two C) three D) four. The answer is C.",
        "Please reason step by step, and put your final answer within \\boxed{}.",
        " ".join(str(i) for i in range(1000)),
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TURN, pad_token=END_OF_TEXT)
    fast.add_tokens(PLAIN_ADDED_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_qwen3(out_dir: Path, *, eos_logit: float | None = None, seed: int = 0,
                     num_hidden_layers: int = 2) -> Path:
    """Save a random-weight Qwen3 model with its tokenizer to out_dir (float32) and return out_dir."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out_dir = Path(out_dir)
    save_qwen3_tokenizer(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = Qwen3Config(
        vocab_size=math.ceil(len(tokenizer) / 128) * 128,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=end_of_text,
        eos_token_id=end_of_turn,
        pad_token_id=end_of_text,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).eval()
    if eos_logit is not None:
        _raise_end_of_turn(model, end_of_turn, eos_logit)
    model.save_pretrained(out_dir)
    # Sampling defaults as Qwen3 checkpoints ship them; lowbit must apply its own config, not these.
    GenerationConfig(
        bos_token_id=end_of_text, eos_token_id=[end_of_turn, end_of_text], pad_token_id=end_of_text,
        do_sample=True, temperature=0.6, top_p=0.95, top_k=20,
    ).save_pretrained(out_dir)
    (out_dir / "lowbit_tiny.json").write_text(json.dumps({"seed": seed, "eos_logit": eos_logit}) + "\n")
    return out_dir


def _raise_end_of_turn(model, end_of_turn: int, eos_logit: float) -> None:
    """Feature 0 of every embedding becomes a constant that dominates the residual stream; with tied
    embeddings it shifts all logits equally except the end-of-turn row, which reads it out ~eos_logit higher."""
    import torch

    embedding = model.get_input_embeddings().weight
    hidden = embedding.shape[1]
    with torch.no_grad():
        embedding[:, 0] = 1.0
        # After RMSNorm the constant feature is about sqrt(hidden), since the other features are ~0.02.
        embedding[end_of_turn, 0] = 1.0 + eos_logit / math.sqrt(hidden)
