"""GPT-OSS through the transformers predictor and `lowbit eval`, on a tiny random GPT-OSS model that has the real
o200k-harmony tokenizer and chat template (built from the shared data; skipped when it is absent).

The model follows the harmony message grammar (`harmony_grammar=True`) with random content, so its sampled
completions are real-shaped transcripts: some reach a final message, some stop inside their analysis, some run
out of budget. Prompts carry the current date (the chat template writes it), so sampled outcomes vary from day to
day: the assertions hold for every completion, or with near certainty. The 201k-token vocabulary makes each
sampling step slow on CPU, so prompts are few and budgets small.
"""

import json
import re

import pytest
import yaml

from support import read_jsonl, run_lowbit
from lowbit.chat import get_chat_format
from lowbit.chat.gpt_oss import parse_harmony
from lowbit.predictors.transformers import TransformersPredictor
from lowbit.records import Generation
from lowbit.sampling import Sampling
from lowbit.testing.data import shared_path
from lowbit.testing.tiny_gpt_oss import STOP_TOKEN_IDS, build_tiny_gpt_oss, harmony_tokenizer_files

QUESTIONS = ["Which chamber of the heart pumps blood into the aorta?", "What is 17 * 3?"]
HARMONY_SPECIAL = re.compile(r"<\|(?:start|channel|message|end|constrain|return|call|endoftext|startoftext)\|>")


@pytest.fixture(scope="module")
def tiny_gpt_oss(tmp_path_factory):
    if harmony_tokenizer_files() is None:
        pytest.skip("shared/data/tokenizers (o200k_base.tiktoken, gpt_oss/chat_template.jinja) is absent; "
                    "see shared/data/SOURCES.md")
    return build_tiny_gpt_oss(tmp_path_factory.mktemp("tiny-gpt-oss"), harmony_grammar=True)


@pytest.fixture(scope="module")
def predictor(tiny_gpt_oss):
    return TransformersPredictor(str(tiny_gpt_oss), batch_size=8, show_progress=False)


def render(predictor, effort, questions=QUESTIONS):
    kwargs = get_chat_format("gpt_oss").template_kwargs(Sampling(template="gpt_oss", max_sequence_length=1,
                                                                 reasoning_effort=effort))
    return [predictor.render([{"role": "user", "content": q}], kwargs) for q in questions]


def generate(predictor, prompts, sampling, seed, keep_special_tokens=True):
    results = {}
    for chunk in predictor.generate(prompts, sampling, seed=seed, keep_special_tokens=keep_special_tokens):
        results.update(chunk)
    return [results[i] for i in range(len(prompts))]


def sampling_for(predictor, prompts, new_tokens, n):
    limit = max(len(predictor.encode(p)) for p in prompts) + new_tokens
    return Sampling(template="gpt_oss", max_sequence_length=limit, temperature=1.0, top_k=-1, num_return_sequences=n)


@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_prompt_is_the_harmony_conversation_with_the_reasoning_effort(predictor, effort):
    prompt = render(predictor, effort)[0]
    system, user, generation_prompt = prompt.split("<|end|>")
    assert system.startswith("<|start|>system<|message|>You are ChatGPT") and f"\nReasoning: {effort}\n" in system
    assert "# Valid channels: analysis, commentary, final." in system
    assert user == f"<|start|>user<|message|>{QUESTIONS[0]}" and generation_prompt == "<|start|>assistant"
    ids = predictor.encode(prompt)
    start, message, end = 200006, 200008, 200007  # each harmony marker is one special token
    assert ids[:1] == [start] and ids[-2:] == [start, predictor.tokenizer.convert_tokens_to_ids("assistant")]
    assert ids.count(message) == 2 and ids.count(end) == 2


TOKENIZER_SAMPLES = [
    "Hello world",
    "We've got 12345 apples, they'll cost $3.50 each!\n\n\n   Indented\tand tabbed   ",
    "def f(x):\n    return {'a': [1, 2, 3]}  # 注释 with ümlauts, ÇA VA? 😀 Ελληνικά\r\nI'M LOUD",
    "<|start|>assistant<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>final"
    " <|constrain|>json<|message|>{\"k\": 2}<|return|>",
]


def test_tokenizer_matches_openai_harmony_token_for_token(predictor, monkeypatch):
    h = pytest.importorskip("openai_harmony", reason="openai-harmony (or its fork oss-harmony) is not installed")
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(harmony_tokenizer_files()[0].parent))  # offline o200k
    encoding = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
    prompt = render(predictor, "high")[0]
    for text in [*TOKENIZER_SAMPLES, prompt]:
        ids = predictor.encode(text)
        assert ids == encoding.encode(text, allowed_special="all"), text
        assert predictor.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_stop_tokens_are_the_harmony_ones(predictor):
    assert predictor.stop_ids == set(STOP_TOKEN_IDS) == {200002, 200012, 199999}
    assert predictor.describe()["stop_token_ids"] == [199999, 200002, 200012]


@pytest.fixture(scope="module")
def sampled(predictor):
    """Three sampled completions for each of two prompts (reasoning effort low and high), special tokens kept."""
    prompts = render(predictor, "low")[:1] + render(predictor, "high")[1:]
    sampling = sampling_for(predictor, prompts, new_tokens=24, n=3)
    return prompts, sampling, generate(predictor, prompts, sampling, seed=1)


def test_sampled_generations_are_consistent_and_split_without_crashing(predictor, sampled):
    prompts, sampling, results = sampled
    chat = get_chat_format("gpt_oss")
    completions = []
    for prompt, generations in zip(prompts, results):
        assert len(generations) == 3
        for g in generations:
            assert g.prompt_tokens == len(predictor.encode(prompt))
            if g.finish_reason == "length":
                assert g.prompt_tokens + g.completion_tokens == sampling.max_sequence_length
            else:
                assert g.finish_reason == "stop"
                assert g.prompt_tokens + g.completion_tokens < sampling.max_sequence_length
            assert not g.text.endswith(("<|return|>", "<|call|>", "<|endoftext|>"))  # the stop token is not text
            c = chat.split(prompt, g)
            finals = [m.content.strip() for m in parse_harmony(g.text) if m.channel == "final"]
            assert (c.answer, c.ended_in_reasoning) == ((finals[-1], False) if finals else ("", True))
            assert c.truncated == (g.finish_reason == "length" or c.ended_in_reasoning)
            completions.append(c)
    assert all(c.text.startswith("<|channel|>") for c in completions), "special tokens are kept in the text"
    assert any(not c.ended_in_reasoning for c in completions), "six completions without a final message"


def test_real_generations_split_like_openai_harmony(predictor, sampled, monkeypatch):
    h = pytest.importorskip("openai_harmony", reason="openai-harmony (or its fork oss-harmony) is not installed")
    monkeypatch.setenv("TIKTOKEN_ENCODINGS_BASE", str(harmony_tokenizer_files()[0].parent))  # offline o200k
    encoding = h.load_harmony_encoding(h.HarmonyEncodingName.HARMONY_GPT_OSS)
    prompts, _, results = sampled
    chat = get_chat_format("gpt_oss")
    for prompt, generations in zip(prompts, results):
        for g in generations:
            tokens = encoding.encode(g.text, allowed_special="all")
            try:
                reference = encoding.parse_messages_from_completion_tokens(tokens, h.Role.ASSISTANT, strict=True)
            except h.HarmonyError as e:  # cut by the length limit inside a header: the messages before it count
                assert g.finish_reason == "length" and "header" in str(e), (g.text, e)
                cut = g.text.rfind("<|start|>")
                complete = encoding.encode(g.text[:cut], allowed_special="all") if cut > 0 else []
                reference = encoding.parse_messages_from_completion_tokens(complete, h.Role.ASSISTANT, strict=True) \
                    if complete else []
            finals = ["".join(part.text for part in m.content) for m in reference if m.channel == "final"]
            assert chat.split(prompt, g).answer == (finals[-1].strip() if finals else ""), g.text


def test_keeping_special_tokens_only_adds_them_to_the_text(predictor):
    prompts = render(predictor, "medium")[:1]
    sampling = sampling_for(predictor, prompts, new_tokens=12, n=2)
    kept = generate(predictor, prompts, sampling, seed=7, keep_special_tokens=True)[0]
    skipped = generate(predictor, prompts, sampling, seed=7, keep_special_tokens=False)[0]
    for with_tokens, without in zip(kept, skipped):
        assert with_tokens.finish_reason == without.finish_reason
        assert with_tokens.completion_tokens == without.completion_tokens
        assert HARMONY_SPECIAL.sub("", with_tokens.text) == without.text
    assert any(HARMONY_SPECIAL.search(g.text) for g in kept)


def test_prompt_over_the_limit_gives_an_empty_truncated_completion(predictor):
    prompt = render(predictor, "low")[0]
    sampling = Sampling(template="gpt_oss", max_sequence_length=len(predictor.encode(prompt)), do_sample=False)
    (generation,) = generate(predictor, [prompt], sampling, seed=0)[0]
    assert (generation.text, generation.finish_reason, generation.completion_tokens) == ("", "length", 0)
    c = get_chat_format("gpt_oss").split(prompt, generation)
    assert c.answer == "" and c.truncated


# ------------------------------------------------------------------------------------------------- lowbit eval


# The first four anatomy prompts are 147, 217, 183 and 163 tokens: one is over the limit (an empty completion),
# the others get 17 to 53 new tokens.
MAX_SEQUENCE_LENGTH = 200


@pytest.fixture(scope="module")
def gpt_oss_run(tiny_gpt_oss, tmp_path_factory):
    data_dir = shared_path("mmlu_redux")
    if data_dir is None:
        pytest.skip("shared/data/mmlu_redux is absent (real MMLU-Redux files; see shared/data/SOURCES.md)")
    output_dir = tmp_path_factory.mktemp("runs") / "gpt_oss_tiny_mmlu_redux"
    result = run_lowbit(
        "eval", "model=gpt_oss_20B", f"model_name={tiny_gpt_oss}", "eval_dataset=mmlu-redux", f"data_dir={data_dir}",
        "dataset.subjects=[anatomy]", "limit=4", "predictor=transformers", "predictor_conf.batch_size=4",
        "predictor_conf.show_progress=false", f"sampling.max_sequence_length={MAX_SEQUENCE_LENGTH}",
        f"output_dir={output_dir}", timeout=300)
    assert result.returncode == 0, result.stderr
    return output_dir


@pytest.mark.slow
def test_lowbit_eval_with_the_gpt_oss_config(gpt_oss_run, tiny_gpt_oss):
    assert sorted(p.name for p in gpt_oss_run.iterdir()) == [
        "config.yaml", "metrics.json", "predictions.jsonl", "run.json", "scores.jsonl"]
    config = yaml.safe_load((gpt_oss_run / "config.yaml").read_text())
    assert config["model_name"] == str(tiny_gpt_oss)
    sampling = config["sampling"]
    assert (sampling["template"], sampling["reasoning_effort"], sampling["top_k"]) == ("gpt_oss", "medium", 100)
    assert sampling["max_sequence_length"] == MAX_SEQUENCE_LENGTH

    chat = get_chat_format("gpt_oss")
    predictions = read_jsonl(gpt_oss_run / "predictions.jsonl")
    assert sorted(p["id"] for p in predictions) == [f"anatomy/{i}" for i in range(4)]
    for p in predictions:
        prompt = p["prompt"]
        assert prompt.startswith("<|start|>system<|message|>") and "\nReasoning: medium\n" in prompt
        assert prompt.endswith("<|end|><|start|>assistant")
        (completion,) = p["completions"]
        if completion["prompt_tokens"] >= MAX_SEQUENCE_LENGTH:
            assert completion["text"] == "" and completion["finish_reason"] == "length"
            assert completion["completion_tokens"] == 0
            assert completion["answer"] == "" and completion["ended_in_reasoning"]
        elif completion["finish_reason"] == "length":
            assert completion["prompt_tokens"] + completion["completion_tokens"] == MAX_SEQUENCE_LENGTH
        else:
            assert completion["prompt_tokens"] + completion["completion_tokens"] < MAX_SEQUENCE_LENGTH
        generation = Generation(completion["text"], completion["finish_reason"], completion["prompt_tokens"],
                                completion["completion_tokens"])
        again = chat.split(prompt, generation)
        assert (again.answer, again.reasoning, again.ended_in_reasoning) == (
            completion["answer"], completion["reasoning"], completion["ended_in_reasoning"])
        assert p["preds"] == [completion["answer"]]

    by_id = {p["id"]: p["completions"][0] for p in predictions}
    for row in read_jsonl(gpt_oss_run / "scores.jsonl"):
        completion = by_id[row["id"]]
        assert row["truncated"] == [completion["finish_reason"] == "length" or completion["ended_in_reasoning"]]

    metrics = json.loads((gpt_oss_run / "metrics.json").read_text())
    assert metrics["metrics"]["accuracy"]["n"] + metrics["metrics"]["excluded"] == 4
    (session,) = json.loads((gpt_oss_run / "run.json").read_text())["sessions"]
    assert session["predictor"]["stop_token_ids"] == [199999, 200002, 200012]
    assert session["prompts_over_limit"] == sum(c["prompt_tokens"] >= MAX_SEQUENCE_LENGTH for c in by_id.values()) == 1
    assert session["completion_tokens"] == sum(c["completion_tokens"] for c in by_id.values())
