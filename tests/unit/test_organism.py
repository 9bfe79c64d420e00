"""The model organism's data, split, tokenizer and shipped checkpoint (lowbit.organism)."""

import hashlib
import json
import random
import re

import pytest

from lowbit.organism import MODEL_DIR, arithmetic, facts
from lowbit.organism.data import EVAL_SIZE, held_out_examples, is_held_out, training_examples
from lowbit.organism.tokenizer import render
from lowbit.tasks.registry import make_task

GENERATORS = (arithmetic, facts)


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.NAME)
def test_held_out_prompts_never_occur_in_training(generator):
    held_out = {e.prompt for e in held_out_examples(generator.generate)}
    assert len(held_out) == EVAL_SIZE and all(is_held_out(p) for p in held_out)
    stream = training_examples(generator.generate, random.Random(0))
    trained = [next(stream).prompt for _ in range(3000)]
    assert not any(is_held_out(p) for p in trained)
    assert not held_out & set(trained)


def test_training_streams_do_meet_held_out_prompts_before_filtering():
    """The split is not vacuous: the raw generator does produce held-out prompts, which training drops."""
    rng = random.Random(0)
    raw = [arithmetic.generate(rng).prompt for _ in range(2000)]
    assert 150 < sum(map(is_held_out, raw)) < 350  # about 1 in 8


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.NAME)
def test_evaluation_sets_are_fixed(generator):
    assert held_out_examples(generator.generate, 20) == held_out_examples(generator.generate, 20)
    assert held_out_examples(generator.generate, 20) == held_out_examples(generator.generate, 50)[:20]


def test_arithmetic_reasoning_and_answer_are_right():
    for example in held_out_examples(arithmetic.generate):
        a, op, b = re.match(r"What is (\d+) ([+-]) (\d+)\?", example.prompt).groups()
        result = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert example.gold == str(result) >= "0"
        assert example.completion.endswith(f"</think>\n\n\\boxed{{{result}}}")
        for line in re.findall(r"^\w[\w-]*: (\d) ([+-]) (\d) ([+-]) (\d) = (-?\d+), write (\d)", example.completion, re.M):
            x, o1, y, _, c, total, written = line
            assert int(total) == (int(x) + int(y) + int(c) if o1 == "+" else int(x) - int(y) - int(c))
            assert int(written) == int(total) % 10


def test_facts_questions_ask_the_world():
    world = facts.world()
    assert len(world) == facts.PEOPLE
    for example in held_out_examples(facts.generate, 100):
        item = example.item
        right = world[item["person"]][item["attribute"]]
        assert item["choices"][facts.LETTERS.index(example.gold)] == right
        assert len(set(item["choices"])) == 4 and example.completion == f"ANSWER: {example.gold}"


def test_prompts_are_those_of_the_benchmarks_whose_scorers_grade_them():
    from lowbit.tasks.math500 import lowbit_math_messages
    from lowbit.tasks.mmlu_redux import lowbit_messages

    sum_example, fact_example = arithmetic.generate(random.Random(1)), facts.generate(random.Random(1))
    question = sum_example.prompt.splitlines()[0]
    assert lowbit_math_messages({"problem": question})[0]["content"] == sum_example.prompt
    question = re.search(r"\n\n(.*\?)\n\n", fact_example.prompt).group(1)
    assert lowbit_messages({"question": question, "choices": fact_example.item["choices"]})[0]["content"] \
        == fact_example.prompt


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: g.NAME)
def test_training_text_is_what_the_chat_template_renders(tokenizer, generator):
    example = generator.generate(random.Random(3))
    prompt, reply = render(example)
    assert prompt == tokenizer.apply_chat_template([{"role": "user", "content": example.prompt}], tokenize=False,
                                                   add_generation_prompt=True, enable_thinking=example.thinking)
    ids = tokenizer(prompt + reply, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == prompt + reply
    assert tokenizer.decode(ids, skip_special_tokens=True).count("<think>") == 1  # added tokens survive decoding
    assert ids[-1] == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_shipped_checkpoint_matches_its_manifest_and_every_scheme_divides_it():
    config = json.loads((MODEL_DIR / "config.json").read_text())
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    weights = (MODEL_DIR / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == manifest["weights_sha256"]
    assert len(weights) <= 20e6 and config["dtype"] == "bfloat16"
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["head_dim"] == 64
    for key in ("hidden_size", "intermediate_size", "vocab_size"):
        assert config[key] % 128 == 0
    assert (config["num_attention_heads"] * config["head_dim"]) % 128 == 0
    assert (config["num_key_value_heads"] * config["head_dim"]) % 128 == 0
    assert manifest["held_out_accuracy"]["arithmetic"] >= 0.9 and manifest["held_out_accuracy"]["facts"] >= 0.9
    assert "not a language model" in (MODEL_DIR / "README.md").read_text()


def test_tasks_load_the_held_out_sets():
    for name, generator in (("organism-arithmetic", arithmetic), ("organism-facts", facts)):
        samples = make_task(name, {"samples": 30}).load(None)
        expected = held_out_examples(generator.generate, 30)
        assert [s.id for s in samples] == [f"{name}/{i}" for i in range(30)]
        assert [s.messages[0]["content"] for s in samples] == [e.prompt for e in expected]
        assert [s.item["answer"] for s in samples] == [e.gold for e in expected]


def test_tasks_refuse_a_data_dir_and_bad_sizes():
    from lowbit.errors import UsageError

    with pytest.raises(UsageError, match="drop data_dir"):
        make_task("organism-facts").load("/data")
    with pytest.raises(UsageError, match="dataset.samples"):
        make_task("organism-arithmetic", {"samples": 0})
