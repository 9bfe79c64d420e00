"""The transformers predictor on tiny random Qwen3 checkpoints (real tokenizer, real generate())."""

import pytest
import torch

from lowbit.predictors.transformers import PresencePenalty, TransformersPredictor
from lowbit.sampling import Sampling

QUESTIONS = [
    "What is the capital of France?",
    "Name three prime numbers.",
    "Explain photosynthesis in one sentence, please, for a ten-year-old who likes plants.",
    "2+2=?",
    "Which planet is the largest in the solar system, and why is it so large compared to the others?",
    "Translate 'good morning' to German.",
    "What does DNA stand for?",
    "Give a synonym for 'happy'.",
]
NEAR_TIE = 1e-4


def prompts_for(predictor, thinking=False):
    return [predictor.render([{"role": "user", "content": q}], {"enable_thinking": thinking}) for q in QUESTIONS]


def generate(predictor, prompts, sampling, seed=0):
    results = {}
    for chunk in predictor.generate(prompts, sampling, seed=seed):
        results.update(chunk)
    return [results[i] for i in range(len(prompts))]


@pytest.fixture(scope="module")
def predictor(tiny_model):
    return TransformersPredictor(str(tiny_model), batch_size=8, show_progress=False)


@pytest.fixture(scope="module")
def stopping_predictor(tiny_model_stopping):
    return TransformersPredictor(str(tiny_model_stopping), batch_size=4, show_progress=False)


def greedy_tokens(predictor, prompt, budget):
    sampling = Sampling(template="qwen3", max_sequence_length=len(predictor.encode(prompt)) + budget, do_sample=False)
    generation = generate(predictor, [prompt], sampling)[0][0]
    return predictor.tokenizer(generation.text, add_special_tokens=False)["input_ids"], generation


def test_greedy_batch_of_one_and_batch_of_eight_agree_up_to_near_ties(tiny_model):
    single = TransformersPredictor(str(tiny_model), batch_size=1, show_progress=False)
    batched = TransformersPredictor(str(tiny_model), batch_size=8, show_progress=False)
    prompts = prompts_for(single)
    sampling = Sampling(template="qwen3", max_sequence_length=64, do_sample=False)
    one = generate(single, prompts, sampling)
    eight = generate(batched, prompts, sampling)
    for prompt, a, b in zip(prompts, one, eight):
        ids_a = single.tokenizer(a[0].text, add_special_tokens=False)["input_ids"]
        ids_b = single.tokenizer(b[0].text, add_special_tokens=False)["input_ids"]
        if ids_a == ids_b:
            continue
        k = next(i for i, (x, y) in enumerate(zip(ids_a, ids_b)) if x != y)
        prefix = torch.tensor([single.encode(prompt) + ids_a[:k]])
        with torch.no_grad():
            logprobs = torch.log_softmax(single.model(prefix).logits[0, -1].float(), -1)
        top2 = torch.topk(logprobs, 2)
        assert {ids_a[k], ids_b[k]} == set(top2.indices.tolist()), "diverged on a token that was not a top-2 candidate"
        assert top2.values[0] - top2.values[1] < NEAR_TIE, f"diverged at a gap of {top2.values[0] - top2.values[1]}"


def test_each_prompt_gets_its_own_budget(predictor):
    prompts = prompts_for(predictor)
    lengths = [len(predictor.encode(p)) for p in prompts]
    limit = max(lengths) + 5
    results = generate(predictor, prompts, Sampling(template="qwen3", max_sequence_length=limit, do_sample=False))
    for length, (generation,) in zip(lengths, results):
        assert generation.prompt_tokens == length
        assert generation.finish_reason == "length"  # the random model never says <|im_end|> this early
        assert generation.prompt_tokens + generation.completion_tokens == limit


def test_prompts_over_the_limit_get_empty_length_completions(predictor):
    prompts = prompts_for(predictor)
    limit = sorted(len(predictor.encode(p)) for p in prompts)[3]  # the four longest have no room left
    before = predictor.stats.prompts_over_limit
    results = generate(predictor, prompts, Sampling(template="qwen3", max_sequence_length=limit, do_sample=False))
    empty = [g for (g,) in results if g.completion_tokens == 0]
    assert len(empty) == predictor.stats.prompts_over_limit - before >= 4
    assert all(g.text == "" and g.finish_reason == "length" for g in empty)


def test_stop_tokens_end_completions_and_are_counted_but_not_shown(stopping_predictor):
    limit = 100
    sampling = Sampling(template="qwen3", max_sequence_length=limit, temperature=1.0, num_return_sequences=3)
    results = generate(stopping_predictor, prompts_for(stopping_predictor)[:4], sampling, seed=3)
    generations = [g for gens in results for g in gens]
    assert all(len(gens) == 3 for gens in results)
    stopped = [g for g in generations if g.finish_reason == "stop"]
    assert 0 < len(stopped) < len(generations), "seed 3 gives a mix of stopped and cut-off completions"
    for g in stopped:
        assert "<|im_end|>" not in g.text and "<|endoftext|>" not in g.text
        assert g.prompt_tokens + g.completion_tokens <= limit
    for g in generations:
        if g.finish_reason == "length":
            assert g.prompt_tokens + g.completion_tokens == limit


def test_seeded_sampling_is_reproducible_and_seeds_matter(predictor):
    sampling = Sampling(template="qwen3", max_sequence_length=48, temperature=0.8, top_p=0.9, top_k=50,
                        presence_penalty=1.0, num_return_sequences=2)
    prompts = prompts_for(predictor)[:4]
    first = generate(predictor, prompts, sampling, seed=11)
    again = generate(predictor, prompts, sampling, seed=11)
    other = generate(predictor, prompts, sampling, seed=12)
    assert [g.text for gens in first for g in gens] == [g.text for gens in again for g in gens]
    assert [g.text for gens in first for g in gens] != [g.text for gens in other for g in gens]


def test_checkpoint_sampling_defaults_do_not_leak_into_generation(predictor):
    # The tiny checkpoint ships Qwen3's defaults (temperature 0.6, top_k 20, top_p 0.95); lowbit's must win.
    config = predictor._generation_config(Sampling(template="qwen3", max_sequence_length=10, temperature=0.7), 5)
    prepared, _ = predictor.model._prepare_generation_config(config)
    assert (prepared.temperature, prepared.top_k, prepared.top_p) == (1.0, 0, 1.0)


def test_presence_penalty_hits_each_generated_token_once():
    penalty = PresencePenalty(1.5, prompt_width=3)
    input_ids = torch.tensor([[7, 8, 9, 1, 1, 2], [9, 9, 9, 3, 0, 0]])  # prompt tokens 7, 8, 9 are not penalized
    scores = torch.zeros(2, 10)
    out = penalty(input_ids, scores)
    assert out[0].tolist() == [0, -1.5, -1.5, 0, 0, 0, 0, 0, 0, 0]
    assert out[1].tolist() == [-1.5, 0, 0, -1.5, 0, 0, 0, 0, 0, 0]
    assert torch.equal(penalty(input_ids[:, :3], scores), scores)


def test_render_applies_enable_thinking(predictor):
    assert prompts_for(predictor, thinking=False)[0].endswith("<think>\n\n</think>\n\n")
    assert prompts_for(predictor, thinking=True)[0].endswith("<|im_start|>assistant\n")
