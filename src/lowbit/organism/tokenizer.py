"""The organism's tokenizer: a small BPE over the words of its tasks, with Qwen3's special tokens and chat format.

Text is first split into runs of letters, single digits, single whitespace characters and single other
characters; BPE then merges letters within a word (the tasks' words become single tokens, other words fall back
to pieces down to single characters). Decoding concatenates the pieces, so text round-trips exactly (printable
ASCII). The special tokens, `<think>` / `</think>` and the ChatML template are lowbit's Qwen3-style ones
(lowbit.testing.tiny), with `<|im_end|>` as EOS.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

from lowbit.organism import arithmetic, facts
from lowbit.testing.tiny import CHAT_TEMPLATE, END_OF_TEXT, END_OF_TURN, PLAIN_ADDED_TOKENS, SPECIAL_TOKENS

VOCAB_SIZE = 1000
CORPUS_SEED = 0
CORPUS_GENERATORS = (arithmetic.generate, facts.generate)  # the tasks whose texts the tokenizer is trained on
PRETOKENIZE_PATTERN = r"[A-Za-z]+|\d|\s|[^A-Za-z\d\s]"


def build_tokenizer():
    """A PreTrainedTokenizerFast, the same on every machine (trained on a fixed corpus of the tasks' texts)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated")
    tokenizer.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=list(string.printable))
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TURN, pad_token=END_OF_TEXT,
                                   clean_up_tokenization_spaces=False, model_max_length=4096)
    fast.add_tokens(PLAIN_ADDED_TOKENS)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _corpus() -> list[str]:
    rng = random.Random(CORPUS_SEED)
    texts = [f"{example.prompt}\n{example.completion}"
             for generate in CORPUS_GENERATORS for example in (generate(rng) for _ in range(300))]
    # Every word of the fact world, so rare names are single tokens as often as the vocabulary allows.
    texts += [" ".join([person, *values.values()]) for person, values in facts.world().items()]
    return texts


def render(example) -> tuple[str, str]:
    """(prompt text, completion text) of an example as the chat template renders it; the completion ends with
    the end-of-turn token the organism stops on."""
    thinking = "" if example.thinking else "<think>\n\n</think>\n\n"
    prompt = f"<|im_start|>user\n{example.prompt}{END_OF_TURN}\n<|im_start|>assistant\n{thinking}"
    return prompt, f"{example.completion}{END_OF_TURN}"


def save_tokenizer(out_dir: Path) -> None:
    build_tokenizer().save_pretrained(out_dir)
