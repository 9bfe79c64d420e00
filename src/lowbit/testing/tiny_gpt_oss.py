"""A tiny random-weight GPT-OSS checkpoint with the real o200k-harmony tokenizer and chat template, for tests.

The model has the GPT-OSS architecture (MoE with 4 experts, top-2 routing, attention sinks, alternating sliding
and full attention, head_dim 64) in float32: transformers runs unquantized GPT-OSS experts as they are, and
MXFP4 applies only when a checkpoint's config carries a quantization_config. Its vocabulary has the padded
harmony size (201,088 rows), as the real model's embedding does.

The tokenizer is built offline from the shared data: the o200k_base BPE ranks (`o200k_base.tiktoken`, read
directly: one "base64-token rank" pair per line) go through transformers' `TikTokenConverter` with the o200k
split pattern (every pair of tokens that concatenates to a token becomes a merge, ranked by that token, so the
BPE reproduces tiktoken's), then the harmony special tokens take ids 199,998..200,018 as in openai-harmony's
o200k_harmony encoding and the Hugging Face gpt-oss tokenizer, which also stops at 200,018 and keeps
o200k_base's name `<|endofprompt|>` there; the model's rows above it are padding that decodes to nothing. The
chat template is the real GPT-OSS one. The generation config stops at `<|return|>`, `<|call|>` and
`<|endoftext|>`, as openai/gpt-oss-20b ships it.

With `harmony_grammar=True` the model writes harmony-shaped completions: a handful of weights make it a bigram
model over the message structure (`HARMONY_BIGRAMS`: after `<|start|>` comes `assistant`, then `<|channel|>`,
then `analysis` or `final` (even odds), then `<|message|>`), while message content is random tokens that end
with `<|end|>` (a new message follows) or `<|return|>` (the turn is over) about once in `MEAN_CONTENT_TOKENS`
tokens. Sampled completions then reach a final message, stop inside their analysis, or run out of budget in
either, as a real model's do. Without it the weights are plain random ones.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

from lowbit.testing.data import shared_path

VOCAB_SIZE = 201_088  # the model's rows: o200k_harmony padded (199,998 BPE ranks + 1,090 special ids)
FIRST_SPECIAL_ID = 199_998
TOKENIZER_SIZE = 200_019  # the tokens the gpt-oss tokenizer names: BPE ranks + 199,998..200,018
NAMED_SPECIAL_TOKENS = {
    199_998: "<|startoftext|>",
    199_999: "<|endoftext|>",
    200_002: "<|return|>",
    200_003: "<|constrain|>",
    200_005: "<|channel|>",
    200_006: "<|start|>",
    200_007: "<|end|>",
    200_008: "<|message|>",
    200_012: "<|call|>",
    200_018: "<|endofprompt|>",
}
RETURN_ID, CALL_ID, END_OF_TEXT_ID, START_OF_TEXT_ID = 200_002, 200_012, 199_999, 199_998
# The stop tokens of openai/gpt-oss-20b's generation_config.json (there in the order 200002, 199999, 200012).
STOP_TOKEN_IDS = [RETURN_ID, CALL_ID, END_OF_TEXT_ID]
# The split pattern of o200k_base (and so of o200k_harmony), as tiktoken defines it.
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
# Which tokens follow which in harmony_grammar mode; content tokens are followed by `CONTENT_ENDINGS` now and then.
HARMONY_BIGRAMS = {
    "<|start|>": ["assistant"],
    "assistant": ["<|channel|>"],
    "<|channel|>": ["analysis", "final"],
    "analysis": ["<|message|>"],
    "final": ["<|message|>"],
    "<|end|>": ["<|start|>"],
}
CONTENT_ENDINGS = {"<|end|>": 2 / 3, "<|return|>": 1 / 3}  # shares of the content tokens' ending probability
MEAN_CONTENT_TOKENS = 8
GRAMMAR_LOGIT = 20.0  # how far a grammar successor stands above every other token: a sure choice
MISSING_DATA = ("the tiny GPT-OSS model needs shared/data/tokenizers/o200k_base.tiktoken and "
                "shared/data/tokenizers/gpt_oss/chat_template.jinja (see shared/data/SOURCES.md); set "
                "LOWBIT_SHARED_DATA to the folder that holds them")


def harmony_tokenizer_files() -> tuple[Path, Path] | None:
    """(o200k_base.tiktoken, GPT-OSS chat_template.jinja) from the shared data, or None when either is absent."""
    ranks = shared_path("tokenizers", "o200k_base.tiktoken")
    template = shared_path("tokenizers", "gpt_oss", "chat_template.jinja")
    return (ranks, template) if ranks is not None and template is not None else None


def special_token_names() -> list[str]:
    """The harmony special tokens in id order, from 199,998 to 200,018."""
    return [NAMED_SPECIAL_TOKENS.get(i, f"<|reserved_{i}|>") for i in range(FIRST_SPECIAL_ID, TOKENIZER_SIZE)]


def read_tiktoken_ranks(path: Path) -> dict[bytes, int]:
    """The BPE ranks of a .tiktoken file."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def build_harmony_tokenizer():
    """The o200k-harmony tokenizer as a transformers fast tokenizer, with the GPT-OSS chat template."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    files = harmony_tokenizer_files()
    if files is None:
        raise FileNotFoundError(MISSING_DATA)
    ranks_file, template_file = files

    class LocalRanksConverter(TikTokenConverter):
        """TikTokenConverter reads ranks through the tiktoken package; the file format is simple enough to read
        here, which keeps tiktoken out of lowbit's dependencies."""

        @staticmethod
        def load_tiktoken_bpe(path: str) -> dict[bytes, int]:
            return read_tiktoken_ranks(Path(path))

    backend = LocalRanksConverter(vocab_file=str(ranks_file), pattern=O200K_PATTERN,
                                  extra_special_tokens=special_token_names()).converted()
    if backend.get_vocab_size(with_added_tokens=True) != TOKENIZER_SIZE:
        raise ValueError(f"{ranks_file} does not hold the 199,998 o200k_base ranks")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|startoftext|>",
                                        eos_token="<|return|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = template_file.read_text(encoding="utf-8")
    return tokenizer


def build_tiny_gpt_oss(out_dir: Path, seed: int = 0, *, harmony_grammar: bool = False) -> Path:
    """Save a random-weight GPT-OSS model (float32) with the o200k-harmony tokenizer to out_dir; returns out_dir.
    Raises FileNotFoundError naming the missing files when the shared tokenizer data is absent."""
    import torch
    from transformers import GenerationConfig, GptOssConfig, GptOssForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_harmony_tokenizer()
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out_dir)
    config = GptOssConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=64,
        num_hidden_layers=2,  # one sliding-window layer, one full-attention layer
        num_local_experts=4,
        num_experts_per_tok=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        sliding_window=128,
        max_position_embeddings=131072,
        bos_token_id=START_OF_TEXT_ID,
        eos_token_id=STOP_TOKEN_IDS,
        pad_token_id=END_OF_TEXT_ID,
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = GptOssForCausalLM(config).eval()
    if harmony_grammar:
        _write_harmony_grammar(model, tokenizer)
    model.save_pretrained(out_dir)
    # As openai/gpt-oss-20b ships it (its sampling defaults included); lowbit must apply its own sampling.
    GenerationConfig(bos_token_id=START_OF_TEXT_ID, eos_token_id=STOP_TOKEN_IDS, pad_token_id=END_OF_TEXT_ID,
                     do_sample=True).save_pretrained(out_dir)
    (out_dir / "lowbit_tiny.json").write_text(json.dumps({"seed": seed, "harmony_grammar": harmony_grammar}) + "\n")
    return out_dir


def _write_harmony_grammar(model, tokenizer) -> None:
    """Feature 0 of every embedding becomes a constant that dominates the residual stream, and feature k the
    marker of the k-th token of HARMONY_BIGRAMS; the output rows read them: the constant raises the content
    endings at every position, a marker raises that token's successors far above everything else. With random
    weights of ~0.02 elsewhere, the rest of the vocabulary stays about uniform."""
    import torch

    def token_id(text: str) -> int:
        if text.startswith("<|"):
            return tokenizer.convert_tokens_to_ids(text)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"'{text}' is {len(ids)} o200k tokens, expected one")
        return ids[0]

    embedding, output = model.get_input_embeddings().weight, model.lm_head.weight
    hidden = embedding.shape[1]
    ending_probability = 1 / MEAN_CONTENT_TOKENS
    with torch.no_grad():
        embedding[:, 0] = 1.0
        # After the final RMSNorm a content token's constant feature is about sqrt(hidden); a marked token's
        # constant and marker features are about sqrt(hidden / 2) each.
        plain, marked = math.sqrt(hidden), math.sqrt(hidden / 2)
        for ending, share in CONTENT_ENDINGS.items():
            odds = ending_probability * share * VOCAB_SIZE / (1 - ending_probability)
            output[token_id(ending), 0] = math.log(odds) / plain
        for feature, (token, successors) in enumerate(HARMONY_BIGRAMS.items(), start=1):
            embedding[token_id(token), feature] = 1.0
            for successor in successors:
                output[token_id(successor), feature] = GRAMMAR_LOGIT / marked
