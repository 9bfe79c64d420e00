"""RULER generation with the real Qwen3 tokenizer and essay haystack: prompts, with the messages the prompt profile
sends before them, fill their token budget and leave the answer budget free; answers sit in the haystack where each
task puts them; the same seed gives the same data; data fitted under one profile is never used under another."""

import collections
import json
import re

import pytest

from support import require_shared, run_lowbit
from lowbit.errors import UsageError
from lowbit.predictors.base import GenerationStats, budget_prompts
from lowbit.tasks import make_task
from lowbit.tasks.prompts import HELPFUL_ASSISTANT, LOWBIT, REFERENCE, PromptContext
from lowbit.tasks.ruler.dataset import generate_records
from lowbit.tasks.ruler.haystacks import load_essay
from lowbit.tasks.ruler.messages import DEFAULT_CONFIG, PromptFrame
from lowbit.tasks.ruler.names import NIAH_TASKS, TASKS
from lowbit.tasks.ruler.templates import CWE_TEMPLATE, NIAH_CONFIGS, NOISE, TOKENS_TO_GENERATE
from lowbit.tasks.ruler.tokens import PromptTokens

LENGTH = 1024
SAMPLES = 2
# The most tokens a prompt may fall short of its budget: the fitting's slack (8) plus a token or two at the seams,
# or one haystack unit where units are larger (a distractor needle of two UUIDs is the largest, about 60 tokens;
# an uncommon word's three list entries about 20; a noise line or a distractor needle of numbers about 22).
TOLERANCE = {"niah_multikey_3": 80, "cwe": 40, "vt": 24, "niah_single_1": 24, "niah_multikey_2": 24}
# The default evaluation's messages: the reference profile for Qwen3, its system message before each prompt.
QWEN3_REFERENCE = PromptFrame.of(REFERENCE, PromptContext("qwen3", DEFAULT_CONFIG))
SYSTEM_PREFIX = f"<|im_start|>system\n{HELPFUL_ASSISTANT}<|im_end|>\n<|im_start|>user\n"


@pytest.fixture(scope="module")
def tokenizer_dir():
    return require_shared("tokenizers/qwen3", "the real Qwen3 tokenizer")


@pytest.fixture(scope="module")
def tokens(tokenizer_dir):
    return PromptTokens.load(str(tokenizer_dir), {"enable_thinking": False}, QWEN3_REFERENCE)


@pytest.fixture(scope="module")
def essay():
    return load_essay(require_shared("ruler", "the RULER essay haystack") / "PaulGrahamEssays.json")


@pytest.fixture(scope="module")
def generated(tokens, essay):
    return {task: generate_records(task, tokens, LENGTH, 42, SAMPLES, essay) for task in TASKS}


@pytest.mark.parametrize("task", TASKS)
def test_prompts_fill_their_budget_in_chat_templated_tokens(generated, tokens, task):
    budget = LENGTH - TOKENS_TO_GENERATE[task]
    for record in generated[task]:
        assert record["length"] == tokens.prompt_length(record["input"])  # recorded length is exact
        assert budget - TOLERANCE.get(task, 16) <= record["length"] <= budget, record["length"]
        prompt = tokens.render(record["input"])
        assert prompt.startswith(SYSTEM_PREFIX) and prompt.endswith("<think>\n\n</think>\n\n")


def _needles(text):
    return re.findall(r"One of the special magic (\w+) for (\S+) is: (\S+)\.", text)


@pytest.mark.parametrize("task", NIAH_TASKS)
def test_niah_needles_hold_the_answers_for_the_queried_keys(generated, task):
    config = NIAH_CONFIGS[task]
    for record in generated[task]:
        text, keys = record["input"], record["meta"]["keys"]
        needles = _needles(text)
        by_key = collections.defaultdict(list)
        for kind, key, value in needles:
            assert kind == config.value_kind
            by_key[key].append(value)
        assert len(keys) == config.num_queries
        # the expected values are exactly those of the queried keys' needles (needle order is shuffled)
        assert sorted(v for key in keys for v in by_key[key]) == sorted(record["outputs"])
        assert all(len(by_key[key]) == config.num_values for key in keys)
        question = text[text.rindex("\n") + 1:]
        assert all(key in question for key in keys) and not any(v in question for v in record["outputs"])
        if config.haystack == "needle":
            assert len(needles) == record["meta"]["haystack_units"] + config.num_values * max(config.num_keys, 1)
        else:
            assert len(needles) == max(config.num_keys, config.num_queries) * config.num_values
        if config.value_kind == "numbers":
            assert all(re.fullmatch(r"\d{7}", v) for v in record["outputs"])
        if config.value_kind == "uuids":
            assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", v)
                       for v in record["outputs"])


def test_essay_needles_sit_between_sentences_at_their_depths(generated, essay):
    for task in ("niah_single_2", "niah_multikey_1", "niah_multiquery"):
        for record in generated[task]:
            text = record["input"]
            context = text[text.index("afterwards.\n") + len("afterwards.\n"):text.rindex("\n")]
            assert context.startswith(" ".join(essay.words[:5]))
            for needle in re.findall(r"One of the special magic \w+ for \S+ is: \S+\.", context):
                before = context[:context.index(needle)].rstrip()
                assert before == "" or re.search(r"[.!?][\"'”’)\]]*$", before) or before.endswith(".")
            assert all(0 <= d <= 100 for d in record["meta"]["depths"])


def test_noise_haystack_lines(generated):
    for record in generated["niah_single_1"]:
        lines = record["input"].split("\n")[1:-1]
        assert sum(line == NOISE for line in lines) == record["meta"]["haystack_units"]
        assert len(lines) == record["meta"]["haystack_units"] + 1


def test_variable_tracking_chain_is_present_in_order(generated):
    for record in generated["vt"]:
        text = record["input"]
        question_start = text.index("Memorize and track", 1)  # the sample's question follows the one-shot example
        context = text[question_start:]
        names, value = record["outputs"], record["meta"]["value"]
        lines = context.split("\n")
        chain = [f"VAR {names[0]} = {value}"] + [f"VAR {names[i + 1]} = VAR {names[i]}" for i in range(4)]
        positions = [lines.index(line) for line in chain]
        assert positions == sorted(positions)
        assert sum(line.startswith("VAR ") for line in lines) == 5
        assert f"assigned the value {value} in the text above" in context
        assert len(set(names)) == 5 and all(re.fullmatch(r"[A-Z]{5}", n) for n in names)


def test_common_words_are_the_true_top_ten(generated):
    for record in generated["cwe"]:
        text = record["input"]
        head = CWE_TEMPLATE.split("{context}")[0]
        listing = text[text.rindex(head) + len(head):text.rindex("\nQuestion:")]
        entries = re.findall(r"(\d+)\. (\S+)", listing)
        assert [int(i) for i, _ in entries] == list(range(1, len(entries) + 1))
        counts = collections.Counter(word for _, word in entries)
        common_repeats, uncommon_repeats = record["meta"]["repeats"]
        assert {w for w, c in counts.items() if c == common_repeats} == set(record["outputs"])
        assert all(c == uncommon_repeats for w, c in counts.items() if w not in record["outputs"])
        example = text[:text.rindex(head)]
        assert not set(record["outputs"]) & set(re.findall(r"\d+\. (\S+)", example))


def test_frequent_words_are_the_true_top_three(generated):
    for record in generated["fwe"]:
        text = record["input"]
        context = text[text.index("coded words. ") + len("coded words. "):text.rindex("\nQuestion:")]
        counts = collections.Counter(context.split(" "))
        ranked = [w for w, _ in counts.most_common() if w != "..."]
        assert counts.most_common(1)[0][0] == "..."
        assert ranked[:3] == record["outputs"]
        assert counts[ranked[2]] > counts[ranked[3]]  # no tie at the cut
        assert [counts[w] for w in record["outputs"]] == record["meta"]["answer_counts"]


def test_generation_is_deterministic_from_the_seed(generated, tokens, essay):
    for task in ("niah_single_2", "niah_multikey_2", "vt", "cwe", "fwe"):
        again = generate_records(task, tokens, LENGTH, 42, SAMPLES, essay)
        assert again == generated[task]
        other = generate_records(task, tokens, LENGTH, 43, 1, essay)
        assert other[0]["input"] != generated[task][0]["input"]


def test_long_prompts_fill_their_budget(tokens, essay):
    """At 4K the common-words task switches to its long form (30 / 3 repeats)."""
    for task in ("niah_single_3", "cwe", "vt"):
        record = generate_records(task, tokens, 4096, 42, 1, essay)[0]
        budget = 4096 - TOKENS_TO_GENERATE[task]
        assert budget - TOLERANCE.get(task, 16) <= record["length"] <= budget
        if task == "cwe":
            assert record["meta"]["repeats"] == [30, 3]


def test_prepare_writes_a_frozen_folder_with_a_manifest(tmp_path, tokens, generated, capsys):
    from lowbit.tasks.ruler.cli import parse_options, prepare

    tokenizer = require_shared("tokenizers/qwen3", "the real Qwen3 tokenizer")
    out = tmp_path / "ruler-1k"  # the default prompt frame: the reference profile for qwen3
    assert prepare(parse_options([f"tokenizer={tokenizer}", "max_seq_length=1k", f"num_samples={SAMPLES}",
                                  "seed=42", f"out={out}", "tasks=vt,fwe"])) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["fwe.jsonl", "manifest.json", "vt.jsonl"]
    assert (manifest["max_seq_length"], manifest["seed"], manifest["num_samples"]) == (1024, 42, SAMPLES)
    assert manifest["tokenizer_fingerprint"] == tokens.fingerprint
    assert manifest["chat_template_kwargs"] == {"enable_thinking": False} and manifest["essay_sha256"] is None
    assert manifest["prompt"] == {"profile": "reference", "family": "qwen3",
                                  "preamble": [{"role": "system", "content": HELPFUL_ASSISTANT}]}
    assert len(manifest["content_hash"]) == 64 and manifest["content_hash"][:16] in capsys.readouterr().out
    for task in ("vt", "fwe"):
        rows = [json.loads(line) for line in (out / f"{task}.jsonl").read_text().splitlines()]
        assert rows == generated[task]  # the command writes exactly what the generator makes
        assert manifest["tasks"][task]["samples"] == SAMPLES


@pytest.mark.parametrize("args, message", [
    (["max_seq_length=1k", "out={out}"], "needs tokenizer="),
    (["tokenizer={tok}", "max_seq_length=1q", "out={out}"], "bad length '1q'"),
    (["tokenizer={tok}", "max_seq_length=1k", "out={out}", "tasks=vt,qa_1"], "unknown RULER task"),
    (["tokenizer=/nonexistent/tokenizer", "max_seq_length=1k", "out={out}"], "cannot load tokenizer"),
    (["tokenizer={tok}", "max_seq_length=1k", "out={out}", "num_samples=0"], "num_samples must be a positive"),
    (["tokenizer={tok}", "max_seq_length=1k", "out={out}", "samples=3"], "unknown ruler prepare option 'samples'. Did you mean 'num_samples'?"),
    (["tokenizer={tok}", "max_seq_length=1k", "out={out}", "prompt=study"], "unknown prompt 'study'; choose one of"),
    (["tokenizer={tok}", "max_seq_length=1k", "out={out}", "family=llama"], "unknown family 'llama'; choose one of"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    tokenizer = require_shared("tokenizers/qwen3", "the real Qwen3 tokenizer")
    out = tmp_path / "out"
    result = run_lowbit("ruler", "prepare", *[a.format(out=out, tok=tokenizer) for a in args])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowbit: error:") and message in lines[0], result.stderr
    assert not out.exists()


# -- the prompt frame: what the model reads before the prompt counts, and data serves its own frame only --------

FIT_LENGTH = 4096
FIT_SAMPLES = 2


def _task(name, tokenizer_dir, cache, prompt=REFERENCE, family="qwen3", **options):
    task = make_task(name, {"tokenizer": str(tokenizer_dir), "num_samples": FIT_SAMPLES, "cache_dir": str(cache),
                            "haystack_dir": str(require_shared("ruler", "the RULER essay haystack")), "prompt": prompt,
                            **options})
    task.bind_model("unused-model", {"enable_thinking": False}, PromptContext(family, DEFAULT_CONFIG))
    return task


@pytest.mark.parametrize("name", ["ruler-niah-4k", "ruler-vt-4k", "ruler-cwe-4k", "ruler-fwe-4k"])
def test_reference_prompts_leave_every_task_its_whole_answer_budget(tokenizer_dir, tmp_path, name):
    """The messages as the predictors render and budget them: Qwen3's system message, the prompt and the task's
    answer budget fit the length, within one haystack unit of it (variable tracking keeps its 30 new tokens)."""
    samples = _task(name, tokenizer_dir, tmp_path).load(None)
    tokenizer = PromptTokens.load(str(tokenizer_dir), {}, QWEN3_REFERENCE).tokenizer
    encoded = [tokenizer.encode(tokenizer.apply_chat_template(s.messages, tokenize=False, add_generation_prompt=True,
                                                              enable_thinking=False), add_special_tokens=False)
               for s in samples]
    planned = budget_prompts(encoded, FIT_LENGTH, overflow="skip", reserve=0, stats=GenerationStats())
    assert len(samples) == FIT_SAMPLES * len({s.item["task"] for s in samples})
    for sample, ids, plan in zip(samples, encoded, planned):
        task = sample.item["task"]
        assert sample.messages[0] == {"role": "system", "content": HELPFUL_ASSISTANT}
        assert len(ids) == sample.item["length"]  # the recorded length is what the model reads
        assert TOKENS_TO_GENERATE[task] <= plan.budget <= TOKENS_TO_GENERATE[task] + TOLERANCE.get(task, 16), (
            sample.id, plan.budget)


def test_each_profile_is_fitted_and_cached_on_its_own(tokenizer_dir, tmp_path):
    reference = _task("ruler-vt-4k", tokenizer_dir, tmp_path).load(None)
    lowbit = _task("ruler-vt-4k", tokenizer_dir, tmp_path, prompt=LOWBIT).load(None)
    folders = sorted(p.name.split("-", 1)[1] for p in tmp_path.iterdir())
    assert folders == ["lowbit-4096-42-2", "reference-qwen3-4096-42-2"]
    for r, w in zip(reference, lowbit):
        assert r.item["outputs"] == w.item["outputs"]  # the same chain, in a shorter haystack
        assert r.item["meta"]["haystack_units"] < w.item["meta"]["haystack_units"]
        assert r.item["length"] <= FIT_LENGTH - TOKENS_TO_GENERATE["vt"] >= w.item["length"]


def test_a_cache_folder_fitted_in_another_frame_is_generated_again(tokenizer_dir, tmp_path):
    task = _task("ruler-fwe-4k", tokenizer_dir, tmp_path)
    first = task.load(None)
    [folder] = tmp_path.iterdir()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["prompt"] = PromptFrame.of(LOWBIT, PromptContext("qwen3", DEFAULT_CONFIG)).to_json()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "fwe.jsonl").write_text("")
    again = _task("ruler-fwe-4k", tokenizer_dir, tmp_path).load(None)
    assert [s.item for s in again] == [s.item for s in first]
    assert json.loads((folder / "manifest.json").read_text())["prompt"] == QWEN3_REFERENCE.to_json()


@pytest.mark.parametrize("prepared_with, evaluated_with, message", [
    (["prompt=lowbit"], {"prompt": REFERENCE},
     "holds prompts fitted for dataset.prompt=lowbit (no system message), but this run sends dataset.prompt=reference "
     "for qwen3 (system message 'You are a helpful assistant.'): prepare data with prompt=reference family=qwen3, "
     "or pass dataset.prompt=lowbit"),
    ([], {"prompt": LOWBIT}, "pass dataset.prompt=reference"),
    ([], {"prompt": REFERENCE, "family": "gpt_oss"},
     "but this run sends dataset.prompt=reference for gpt_oss (no system message): prepare data with "
     "prompt=reference family=gpt_oss"),
])
def test_a_prepared_folder_serves_its_own_frame_only(tokenizer_dir, tmp_path, prepared_with, evaluated_with, message):
    from lowbit.tasks.ruler.cli import parse_options, prepare

    out = tmp_path / "vt-1k"
    assert prepare(parse_options([f"tokenizer={tokenizer_dir}", "max_seq_length=1k", "num_samples=1", f"out={out}",
                                  "tasks=vt", *prepared_with])) == 0
    with pytest.raises(UsageError) as error:
        _task("ruler-vt-1k", tokenizer_dir, tmp_path / "cache", **evaluated_with).load(str(out))
    assert str(out) in str(error.value) and message in str(error.value) and "\n" not in str(error.value)
    matching = {"prompt": json.loads((out / "manifest.json").read_text())["prompt"]["profile"]}
    assert len(_task("ruler-vt-1k", tokenizer_dir, tmp_path / "cache", **matching).load(str(out))) == 1
