"""Calibration sets: local jsonl / text files, chat templating, seeded shuffling, hashing, offline hub errors."""

import json
import os
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

from lowbit.errors import UsageError
from lowbit.quant.calibration import load_calibration


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_chats_are_templated_and_text_is_kept(tokenizer, tmp_path):
    chat = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]
    path = write_jsonl(tmp_path / "c.jsonl", [{"messages": chat}, {"text": "plain words"}])
    calibration = load_calibration(str(path), tokenizer, num_samples=2, max_length=512, seed=0)
    decoded = sorted(tokenizer.decode(ids) for ids in calibration.token_ids)
    assert decoded == sorted([tokenizer.apply_chat_template(chat, tokenize=False), "plain words"])
    assert calibration.info["samples"] == 2 and calibration.info["name"] == str(path.resolve())


def test_shuffle_is_seeded_and_the_hash_follows_the_tokens(tokenizer, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(f"paragraph number {i} with some words" for i in range(20)))
    first = load_calibration(str(path), tokenizer, num_samples=5, max_length=4, seed=1)
    again = load_calibration(str(path), tokenizer, num_samples=5, max_length=4, seed=1)
    other = load_calibration(str(path), tokenizer, num_samples=5, max_length=4, seed=2)
    assert first.token_ids == again.token_ids and first.info["sha256"] == again.info["sha256"]
    assert first.token_ids != other.token_ids and first.info["sha256"] != other.info["sha256"]
    assert all(len(ids) == 4 for ids in first.token_ids)  # cut to max_length
    assert len(first.to_dataset()) == 5


@pytest.mark.parametrize("content, message", [
    ("not json\n", "is not valid JSON"),
    ('{"prompt": "x"}\n', "has neither 'messages' nor 'text'"),
])
def test_malformed_jsonl_is_a_usage_error(tokenizer, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_calibration(str(path), tokenizer, num_samples=1)


def test_missing_file_is_a_usage_error(tokenizer, tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_calibration(str(tmp_path / "missing.jsonl"), tokenizer)


def test_default_set_offline_is_a_usage_error_naming_the_fix(tiny_model, tmp_path):
    # a fresh interpreter: the hub libraries read the offline switches when they are imported
    script = ("from transformers import AutoTokenizer\n"
              "from lowbit.errors import UsageError\n"
              "from lowbit.quant.calibration import load_calibration\n"
              f"tokenizer = AutoTokenizer.from_pretrained({str(tiny_model)!r})\n"
              "try:\n    load_calibration(None, tokenizer, num_samples=1)\n"
              "except UsageError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cannot load calibration set HuggingFaceH4/ultrachat_200k (train_sft)")
    assert "offline? pass calibration=<local .jsonl or text file>" in result.stdout
