"""Each prompt profile's chat messages for real benchmark rows, read through the task loaders from shared/data and
compared byte for byte with the reference study's protocol, written out here: its system messages, the
"A. choice" options, the space (Qwen3) or newline (GPT-OSS) before "Please", the LiveCodeBench variants."""

import json
from pathlib import Path

import pytest

from lowbit.tasks import make_task
from lowbit.tasks.prompts import PromptContext
from support import require_shared

HELPFUL = "You are a helpful assistant."
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
LIGHTEVAL_HEAD = ("You will be given a question (problem specification) and will generate a correct Python program "
                  "that matches the specification and passes all tests.\n\nQuestion: ")
LIGHTEVAL_STDIN = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test "
                   "on the sample inputs). Enclose your code within delimiters as follows. Ensure that when the python "
                   "program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.\n"
                   "```python\n# YOUR CODE HERE\n```\n\n")
LIGHTEVAL_STARTER = ("You will use the following starter code to write the solution to the problem and enclose your "
                     "code within delimiters.\n")


def load(name, family, config, data_dir, prompt="reference", **options):
    task = make_task(name, {"prompt": prompt, **options})
    task.bind_model("unused-model", {}, PromptContext(family, config))
    return task.load(str(data_dir))


def system_user(system, user):
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def user(text):
    return [{"role": "user", "content": text}]


# -- MMLU-Redux ---------------------------------------------------------------------------------------------------

ANATOMY_0 = ("There is a single choice question about anatomy. Answer the question by replying A, B, C or D in the "
             "last line of your response following format: 'ANSWER: $LETTER'\n"
             "Question: Which of the following is a disorder characterized by uncontrollable episodes of falling "
             "asleep during the day?\nOptions:\nA. Dyslexia\nB. Epilepsy\nC. Hydrocephalus\nD. Narcolepsy\n")


@pytest.fixture(scope="module")
def mmlu_dir():
    return require_shared("mmlu_redux", "real MMLU-Redux files")


def test_mmlu_redux_reference_messages(mmlu_dir):
    subjects = ["anatomy", "high_school_biology"]
    qwen3 = load("mmlu-redux", "qwen3", "mmlu-redux", mmlu_dir, subjects=subjects)
    assert qwen3[0].id == "anatomy/0" and qwen3[0].messages == system_user(HELPFUL, ANATOMY_0)
    assert qwen3[100].messages[1]["content"].startswith(
        "There is a single choice question about high_school_biology. Answer")  # the config name, underscores kept
    gpt_oss = load("mmlu-redux", "gpt_oss", "mmlu-redux", mmlu_dir, subjects=subjects)
    assert gpt_oss[0].messages == user(ANATOMY_0)


def test_mmlu_redux_lowbit_messages(mmlu_dir):
    (sample, *_) = load("mmlu-redux", "gpt_oss", "mmlu-redux", mmlu_dir, prompt="lowbit", subjects=["anatomy"])
    assert sample.messages == user(
        "Answer the following multiple choice question. The last line of your response should be of the following "
        "format: 'ANSWER: $LETTER' (without quotes) where LETTER is one of ABCD.\n\n"
        "Which of the following is a disorder characterized by uncontrollable episodes of falling asleep during the "
        "day?\n\nA) Dyslexia\nB) Epilepsy\nC) Hydrocephalus\nD) Narcolepsy")


# -- MATH-500 and AIME 2025 ----------------------------------------------------------------------------------------

MATH_0 = ("Convert the point $(0,3)$ in rectangular coordinates to polar coordinates.  Enter your answer in the form "
          "$(r,\\theta),$ where $r > 0$ and $0 \\le \\theta < 2 \\pi.$")
AIME_0 = "Find the sum of all integer bases $b>9$ for which $17_b$ is a divisor of $97_b.$"


@pytest.mark.parametrize("family, config, prompt, expected", [
    ("qwen3", "math500", "reference", user(f"{MATH_0} {MATH_INSTRUCTION}")),
    ("qwen3", "math500-nonthinking", "reference", user(f"{MATH_0} {MATH_INSTRUCTION}")),
    ("gpt_oss", "math500", "reference", user(f"{MATH_0}\n{MATH_INSTRUCTION}")),
    ("qwen3", "math500", "lowbit", user(f"{MATH_0}\n{MATH_INSTRUCTION}")),
])
def test_math500_messages(family, config, prompt, expected):
    samples = load("math500", family, config, require_shared("math500", "real MATH-500 file"), prompt=prompt)
    assert samples[0].messages == expected


@pytest.mark.parametrize("family, prompt, expected", [
    ("qwen3", "reference", system_user(
        "You are an expert mathematician.",
        "This is an AIME problem. The answer must be an integer from 0 to 999.\n\n"
        f"Problem: {AIME_0}\n\nSolve step by step and put your final answer in \\boxed{{}}.")),
    ("gpt_oss", "reference", user(f"{AIME_0}\n{MATH_INSTRUCTION}")),
    ("qwen3", "lowbit", user(f"{AIME_0}\n{MATH_INSTRUCTION}")),
])
def test_aime25_messages(family, prompt, expected):
    samples = load("aime25", family, "aime25", require_shared("aime25", "real AIME 2025 file"), prompt=prompt)
    assert samples[0].id == "2025-I-1" and samples[0].messages == expected


# -- IFEval ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, prompt, with_system", [
    ("qwen3", "reference", True), ("gpt_oss", "reference", False), ("qwen3", "lowbit", False)])
def test_ifeval_messages(family, prompt, with_system):
    nltk = require_shared("nltk", "NLTK punkt_tab data")
    samples = load("ifeval", family, "ifeval", require_shared("ifeval", "real IFEval file"), prompt=prompt,
                   nltk_data=str(nltk))
    text = samples[0].item["prompt"]
    assert samples[0].id == "1000" and text.startswith("Write a 300+ word summary of the wikipedia page")
    assert samples[0].messages == (system_user(HELPFUL, text) if with_system else user(text))


# -- LiveCodeBench -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lcb_official(tmp_path_factory):
    source = require_shared("livecodebench", "real LiveCodeBench records") / "official_format_sample.jsonl"
    folder = tmp_path_factory.mktemp("lcb-official")
    (folder / "test.jsonl").write_text(source.read_text())
    return folder


def test_livecodebench_messages_without_starter_code(lcb_official):
    record = json.loads((lcb_official / "test.jsonl").read_text().splitlines()[0])
    title, content = record["question_title"], record["question_content"]
    assert title == "A. Short Sort" and record["starter_code"] == ""
    lighteval = f"{LIGHTEVAL_HEAD}{content}\n\n{LIGHTEVAL_STDIN}"
    window = {"start_date": None, "end_date": None}
    expected = {
        ("qwen3", "livecode_v5", "reference"): user(
            f"{title}\n\n{content}\n\nProvide only the complete Python code solution."),
        ("qwen3", "livecode_v5-thinking", "reference"): system_user("You are a helpful assistant", lighteval),
        ("gpt_oss", "livecode_v5", "reference"): user(lighteval),
        ("qwen3", "livecode_v5", "lowbit"): user(lighteval),
    }
    for (family, config, prompt), messages in expected.items():
        (sample,) = load("livecode_v5", family, config, lcb_official, prompt=prompt, **window)
        assert sample.messages == messages, (family, config, prompt)


def test_livecodebench_messages_with_starter_code():
    """A functional (LeetCode-style) record of lowbit's fixtures: the starter-code branches of both prompts."""
    fixtures = Path(__file__).parents[1] / "fixtures" / "livecodebench"
    window = {"start_date": None, "end_date": None}
    qwen3 = {s.id: s for s in load("livecode_v5", "qwen3", "livecode_v5", fixtures, **window)}["9001"]
    title, content, starter = (qwen3.item[k] for k in ("question_title", "question_content", "starter_code"))
    assert starter.startswith("class Solution:")
    assert qwen3.messages == user(f"{title}\n\n{content}\n\nStarter Code:\n```python\n{starter}\n```\n\n"
                                  "Provide only the complete Python code solution.")
    gpt_oss = {s.id: s for s in load("livecode_v5", "gpt_oss", "livecode_v5", fixtures, **window)}["9001"]
    assert gpt_oss.messages == user(f"{LIGHTEVAL_HEAD}{content}\n\n{LIGHTEVAL_STARTER}```python\n{starter}\n```\n\n")


# -- RULER -------------------------------------------------------------------------------------------------------


def test_ruler_messages(tmp_path):
    tokenizer = require_shared("tokenizers/qwen3", "the real Qwen3 tokenizer")
    options = {"tokenizer": str(tokenizer), "num_samples": 1, "cache_dir": str(tmp_path),
               "haystack_dir": str(require_shared("ruler", "the RULER essay haystack"))}
    by_profile = {}
    for family, prompt in (("qwen3", "reference"), ("gpt_oss", "reference"), ("qwen3", "lowbit")):
        task = make_task("ruler-vt-1k", {**options, "prompt": prompt})
        task.bind_model("unused-model", {"enable_thinking": False}, PromptContext(family, "ruler-32k"))
        (sample,) = task.load(None)
        by_profile[family, prompt] = sample
    # each profile's prompt is fitted with the messages before it counted, so each has its own input text
    text = {key: sample.item["input"] for key, sample in by_profile.items()}
    assert "variables" in text["qwen3", "reference"].lower()
    assert by_profile["qwen3", "reference"].messages == system_user(HELPFUL, text["qwen3", "reference"])
    assert by_profile["gpt_oss", "reference"].messages == user(text["gpt_oss", "reference"])
    assert by_profile["qwen3", "lowbit"].messages == user(text["qwen3", "lowbit"])
