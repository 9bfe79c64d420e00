"""The tiny test model builds without the shared data too (a fallback tokenizer with the same chat format)."""

from transformers import AutoTokenizer

from lowbit.testing.tiny import save_qwen3_tokenizer


def test_fallback_tokenizer_has_the_qwen3_chat_format(tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_SHARED_DATA", str(tmp_path / "absent"))
    assert save_qwen3_tokenizer(tmp_path / "tok") == "fallback"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "tok")
    messages = [{"role": "user", "content": "Which is correct? A) one B) two"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                           enable_thinking=False)
    assert prompt == "<|im_start|>user\nWhich is correct? A) one B) two<|im_end|>\n<|im_start|>assistant\n" \
                     "<think>\n\n</think>\n\n"
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"):
        assert len(tokenizer.encode(special, add_special_tokens=False)) == 1
    ids = tokenizer.encode("The answer is C.", add_special_tokens=False)
    assert tokenizer.decode(ids) == "The answer is C."
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
