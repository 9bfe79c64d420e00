"""The token sequences of lowbit.divergence: a run's prompt + completion with reasoning / answer labels, corpus
chunks, and their one-line errors."""

import pytest

from lowbit.divergence import sequences
from lowbit.errors import UsageError
from lowbit.records import Completion, Prediction


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from lowbit.testing.tiny import save_qwen3_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    save_qwen3_tokenizer(folder)
    return AutoTokenizer.from_pretrained(folder)


def prediction(text: str, reasoning: str | None, answer: str, sample_id: str = "q1") -> Prediction:
    return Prediction(id=sample_id, prompt="<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
                      item={}, completions=[Completion(text=text, answer=answer, reasoning=reasoning,
                                                       finish_reason="stop")])


def test_run_sequences_are_prompt_then_completion_with_regions(tokenizer):
    text = "<think>\nTwo and two make four.\n</think>\n\nThe answer is 4."
    (sequence,) = sequences.from_run([prediction(text, "Two and two make four.", "The answer is 4.")], tokenizer,
                                     "run")
    prompt_ids = tokenizer(prediction(text, None, "").prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert sequence.token_ids == prompt_ids + completion_ids and sequence.first_scored == len(prompt_ids)
    assert len(sequence.regions) == len(completion_ids)
    answer_tokens = len(tokenizer("The answer is 4.", add_special_tokens=False)["input_ids"])
    assert sequence.regions == ["reasoning"] * (len(completion_ids) - answer_tokens) + ["answer"] * answer_tokens


def test_completions_without_reasoning_are_all_answer_and_cut_ones_all_reasoning(tokenizer):
    plain, cut = sequences.from_run([prediction("ANSWER: B", None, "ANSWER: B", "a"),
                                     prediction("<think>\nstill thinking", "still thinking", "", "b")],
                                    tokenizer, "run")
    assert set(plain.regions) == {"answer"} and set(cut.regions) == {"reasoning"}


def test_a_run_without_completion_text_is_refused(tokenizer):
    with pytest.raises(UsageError, match="has no completion text to score"):
        sequences.from_run([prediction("", None, "")], tokenizer, "outputs/empty")


def test_corpus_chunks(tokenizer, tmp_path):
    text = " ".join(f"sentence number {i} of the corpus." for i in range(200))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    chunks = sequences.from_corpus([text], tokenizer, 64, "corpus")
    assert len(chunks) == len(ids) // 64 and chunks[1].token_ids == ids[64:128]
    assert all(c.first_scored == 1 and len(c.regions) == 63 for c in chunks)
    assert len(sequences.from_corpus([text], tokenizer, 64, "corpus", limit=2)) == 2
    with pytest.raises(UsageError, match=r"fewer than one chunk \(chunk_tokens=100000\)"):
        sequences.from_corpus([text], tokenizer, 100_000, "corpus")
    lines = tmp_path / "responses.jsonl"
    lines.write_text('{"prompt": "p", "response": "first"}\n{"prompt": "p", "response": "second"}\n')
    assert sequences.corpus_texts(str(lines), None) == ["first", "second"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "p"}\n')
    with pytest.raises(UsageError, match="line 1 has no text field"):
        sequences.corpus_texts(str(tmp_path / "bad.jsonl"), None)
    with pytest.raises(UsageError, match="is neither math500 nor a file"):
        sequences.corpus_texts(str(tmp_path / "missing.txt"), None)
