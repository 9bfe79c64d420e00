"""IFEval's 25 instruction checkers on hand-written responses, strict and loose evaluation, the Task's score rows
and aggregate, and the errors users see. Sentence-based checks need the shared NLTK data and skip without it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.errors import UsageError
from lowbit.records import Completion, Prediction
from lowbit.tasks import make_task
from lowbit.tasks.ifeval.instructions import INSTRUCTION_TYPES, build_check, judge, loose_variants
from lowbit.tasks.ifeval.metrics import instruction_level_estimate
from lowbit.tasks.ifeval.text import TextAnalyzer, count_words, find_punkt_dir
from lowbit.testing.data import shared_path

NEEDS_PUNKT = {"length_constraints:number_sentences", "change_case:capital_word_frequency"}

# (instruction id, kwargs, response, followed under strict evaluation)
CASES = [
    # --- keywords
    ("keywords:existence", {"keywords": ["river", "Bridge"]}, "The bridge spans the River.", True),
    ("keywords:existence", {"keywords": ["art"]}, "Let us start.", True),  # substring, as the reference
    ("keywords:existence", {"keywords": ["river", "bridge"]}, "Only a river here.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "Cat, cat and CAT.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "A cat and a cat.", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "One cat.", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "less than"}, "cat cat", False),
    ("keywords:forbidden_words", {"forbidden_words": ["war", "peace"]}, "A software award.", True),  # whole words
    ("keywords:forbidden_words", {"forbidden_words": ["war", "peace"]}, "After the War ended.", False),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "Zoo zebra z", True),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 3, "let_relation": "at least"}, "zoo zebra", False),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 2, "let_relation": "less than"}, "hat", True),
    ("keywords:letter_frequency", {"letter": "e", "let_frequency": 2, "let_relation": "less than"}, "tree", False),
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"},
     "fun day #a #b #c #d", True),  # a non-letter is counted as given (key 1122)
    ("keywords:letter_frequency", {"letter": "#", "let_frequency": 4, "let_relation": "at least"}, "#a #b #c", False),
    # --- language
    ("language:response_language", {"language": "fr"}, "Bonjour, je m'appelle Marie et j'habite à Paris.", True),
    ("language:response_language", {"language": "fr"}, "Hello, my name is Mary and I live in London.", False),
    ("language:response_language", {"language": "de"}, "1234 !!", True),  # nothing to detect: followed
    # --- length constraints
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith arrived. He sat down.", True),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two! Three?", False),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}, "One. Two! Three?", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two-three four, five", True),
    ("length_constraints:number_words", {"num_words": 5, "relation": "at least"}, "one two three four", False),
    ("length_constraints:number_words", {"num_words": 5, "relation": "less than"}, "one two three four", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First part.\n***\nSecond part.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nFirst.\n***\nSecond.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\n***\nSecond.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\nTwo.\n***\nThree.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "Then"},
     "It began.\n\n\"Then, it ended.", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "It began.\n\nAfter that it ended.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "then"},
     "It began.\n\nThen it ended.", False),  # wrong paragraph count
    # --- change case
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "NASA and ESA launched it.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "Nasa launched it, with NASA-style care.", False),  # NASA-style is one token, and not all capitals
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "Only NASA here.", True),
    ("change_case:english_capital", {}, "THIS IS A RESPONSE WRITTEN ENTIRELY IN CAPITAL LETTERS.", True),
    ("change_case:english_capital", {}, "THIS IS A RESPONSE WITH ONE lowercase WORD.", False),
    ("change_case:english_capital", {}, "C'EST UNE RÉPONSE ÉCRITE ENTIÈREMENT EN FRANÇAIS.", False),
    ("change_case:english_lowercase", {}, "this response is written entirely in lowercase letters.", True),
    ("change_case:english_lowercase", {}, "this response has One capital letter.", False),
    # --- punctuation
    ("punctuation:no_comma", {}, "No commas here at all.", True),
    ("punctuation:no_comma", {}, "Well, one comma.", False),
    # --- detectable content
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at home.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nP.S. See you.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\np. s. see you.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\n\nPS see you.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. one\nP.P.S two", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. one", False),
    # --- detectable format
    ("detectable_format:constrained_response", {}, "My answer is maybe. It depends.", True),
    ("detectable_format:constrained_response", {}, "My answer is: yes.", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '  {"a": 1}  ', True),
    ("detectable_format:json_format", {}, 'Here is JSON: {"a": 1}', False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nIntro.\nSection 2\nEnd.", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "Section 1\nIntro.\nSection 2\nEnd.", False),  # the splitter is case-sensitive
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro:\n* one\n- two\n**bold** line", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and ** ** and *\nx*", False),
    ("detectable_format:title", {}, "<<My Poem>>\nRoses are red.", True),
    ("detectable_format:title", {}, "<< >>\nRoses are red.", False),
    ("detectable_format:title", {}, "<My Poem>\nRoses are red.", False),
    # --- combination
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.", True),
    ("combination:two_responses", {}, "Same.\n******\nSame.", False),
    ("combination:two_responses", {}, "One.\n******\n******\nTwo.", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "write a poem. Roses are red.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem."}, "Sure! Write a poem. Roses.", False),
    # --- start / end
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions?\"  ", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    ("startend:quotation", {}, '  "Wrapped in quotes."\n', True),
    ("startend:quotation", {}, '"Only opened.', False),
    ("startend:quotation", {}, '"', False),
]


@pytest.fixture(scope="module")
def punkt_dir() -> Path | None:
    root = shared_path("nltk")
    return find_punkt_dir(str(root)) if root else None


@pytest.fixture(scope="module")
def nltk_option(punkt_dir) -> str:
    if punkt_dir is None:
        pytest.skip("shared/data/nltk is absent (NLTK punkt_tab data; see shared/data/SOURCES.md)")
    return str(shared_path("nltk"))


def analyzer(punkt_dir: Path | None, instruction_id: str) -> TextAnalyzer:
    if instruction_id in NEEDS_PUNKT and punkt_dir is None:
        pytest.skip("shared/data/nltk is absent (NLTK punkt_tab data; see shared/data/SOURCES.md)")
    return TextAnalyzer(punkt_dir or Path("punkt-not-needed"))


def test_every_instruction_type_has_passing_and_failing_cases():
    assert len(INSTRUCTION_TYPES) == 25
    outcomes = {(i, expected) for i, _, _, expected in CASES}
    assert outcomes == {(i, e) for i in INSTRUCTION_TYPES for e in (True, False)}


@pytest.mark.parametrize("instruction_id, kwargs, response, expected", CASES,
                         ids=[f"{c[0]}-{n}" for n, c in enumerate(CASES)])
def test_instruction_checker(punkt_dir, instruction_id, kwargs, response, expected):
    check = build_check(instruction_id, kwargs, analyzer(punkt_dir, instruction_id))
    assert check(response) is expected
    assert judge([check], response).strict == [expected]


def test_hub_style_kwargs_padded_with_none_are_accepted():
    check = build_check("keywords:existence", {"keywords": ["a"], "num_words": None, "relation": None},
                        TextAnalyzer(Path("unused")))
    assert check("a")


@pytest.mark.parametrize("instruction_id, kwargs, message", [
    ("keywords:nonexistent", {}, "unknown IFEval instruction"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2}, "missing argument 'relation'"),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at most"}, "must be one of"),
    ("length_constraints:number_words", {"num_words": "ten", "relation": "at least"}, "must be an integer"),
    ("keywords:letter_frequency", {"letter": "ab", "let_frequency": 2, "let_relation": "at least"}, "one character"),
    ("keywords:existence", {"keywords": []}, "non-empty list"),
])
def test_bad_arguments_are_value_errors(instruction_id, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_check(instruction_id, kwargs, TextAnalyzer(Path("unused")))


def test_loose_variants_drop_first_and_last_lines_and_asterisks():
    variants = loose_variants("Sure, here it is:\n**Body** text\nHope this helps!")
    assert variants == ["Sure, here it is:\n**Body** text\nHope this helps!", "**Body** text\nHope this helps!",
                        "Sure, here it is:\n**Body** text", "**Body** text",
                        "Sure, here it is:\nBody text\nHope this helps!", "Body text\nHope this helps!",
                        "Sure, here it is:\nBody text", "Body text"]


def test_loose_evaluation_accepts_a_chatty_first_line_and_markdown():
    text = TextAnalyzer(Path("unused"))
    checks = [build_check("startend:quotation", {}, text), build_check("punctuation:no_comma", {}, text),
              build_check("detectable_format:title", {}, text)]
    judgement = judge(checks, 'Sure, here you go:\n"{\\"a\\": 1}"')
    assert judgement.strict == [False, False, False]
    assert judgement.loose == [True, True, False]
    bold_end = judge([build_check("startend:end_checker", {"end_phrase": "The end."}, text)], "Story. **The end.**")
    assert (bold_end.strict, bold_end.loose) == ([False], [True])


@pytest.mark.parametrize("response", ["", "   \n", "\n\n"])
def test_a_blank_response_follows_nothing(response):
    text = TextAnalyzer(Path("unused"))
    checks = [build_check("keywords:forbidden_words", {"forbidden_words": ["x"]}, text),
              build_check("punctuation:no_comma", {}, text),
              build_check("language:response_language", {"language": "en"}, text)]
    assert judge(checks, response) == judge(checks, "") and judge(checks, "").loose == [False, False, False]


def test_word_count_and_language_detection_are_deterministic():
    assert count_words("It's a well-known fact: 3.5 apples!") == 9  # It s a well known fact 3 5 apples
    text = "Ceci est une phrase en français, écrite pour vérifier la détection de la langue."
    assert {TextAnalyzer.language(text) for _ in range(5)} == {"fr"}


def test_missing_punkt_data_is_a_one_line_usage_error(tmp_path):
    with pytest.raises(UsageError, match="dataset.nltk_data=") as info:
        make_task("ifeval", {"nltk_data": str(tmp_path)})
    assert "\n" not in str(info.value) and "NLTK_DATA" in str(info.value)


def test_punkt_data_is_found_through_nltk_data_env(nltk_option, monkeypatch):
    monkeypatch.setenv("NLTK_DATA", nltk_option)
    assert make_task("ifeval").text.punkt_dir == Path(nltk_option) / "tokenizers" / "punkt_tab" / "english"


def test_local_data_dir_without_input_file_is_a_usage_error(nltk_option, tmp_path):
    with pytest.raises(UsageError, match="input_data.jsonl"):
        make_task("ifeval", {"nltk_data": nltk_option}).load(str(tmp_path))


def test_offline_hub_load_is_a_usage_error_naming_data_dir(nltk_option):
    code = ("from lowbit.tasks import make_task\n"
            f"make_task('ifeval', {{'nltk_data': {nltk_option!r}}}).load(None)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode != 0
    assert "UsageError: could not load google/IFEval" in result.stderr and "pass data_dir=" in result.stderr


def test_unknown_instruction_in_data_is_a_usage_error(nltk_option, tmp_path):
    (tmp_path / "input_data.jsonl").write_text(
        '{"key": 7, "prompt": "p", "instruction_id_list": ["keywords:telepathy"], "kwargs": [{}]}\n')
    with pytest.raises(UsageError, match="key 7: unknown instruction type"):
        make_task("ifeval", {"nltk_data": nltk_option}).load(str(tmp_path))


def _prediction(item: dict, *completions: tuple[str, bool]) -> Prediction:
    return Prediction(id=str(item["key"]), prompt=item["prompt"], item=item, completions=[
        Completion(text=a, answer="" if cut else a, reasoning=None, finish_reason="length" if cut else "stop",
                   ended_in_reasoning=cut) for a, cut in completions])


def test_score_rows_and_aggregate(nltk_option, tmp_path):
    (tmp_path / "input_data.jsonl").write_text(
        '{"key": 1, "prompt": "Say hi without commas, in lowercase.", '
        '"instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"], "kwargs": [{}, {}]}\n'
        '{"key": 2, "prompt": "Use the word cat twice.", "instruction_id_list": ["keywords:frequency"], '
        '"kwargs": [{"keyword": "cat", "frequency": 2, "relation": "at least", "num_words": null}]}\n')
    task = make_task("ifeval", {"nltk_data": nltk_option})
    first, second = task.load(str(tmp_path))
    assert (first.id, first.messages) == ("1", [{"role": "system", "content": "You are a helpful assistant."},
                                                {"role": "user", "content": "Say hi without commas, in lowercase."}])
    assert second.item["kwargs"] == [{"keyword": "cat", "frequency": 2, "relation": "at least"}]
    english = "this is a short answer written in plain english for you"
    rows = [task.score(_prediction(first.item, (f"hi there, my friend, {english}", False),
                                   (f"Hello!\n{english}", False))),
            task.score(_prediction(second.item, ("a cat and another cat", False), ("a cat and another cat", True)))]
    assert rows[0]["instructions_strict"] == [[False, True], [True, False]]
    assert rows[0]["scores"] == [0.0, 0.0] and rows[0]["loose_scores"] == [0.0, 1.0]  # loose drops "Hello!"
    assert rows[1]["scores"] == [1.0, 0.0] and rows[1]["score"] == 0.5 and rows[1]["truncated"] == [False, True]
    result = task.aggregate(rows)
    metrics = result["metrics"]
    assert metrics["prompt_strict"]["value"] == 0.25 and metrics["prompt_loose"]["value"] == 0.5
    assert metrics["instruction_strict"]["value"] == pytest.approx((1 + 0.5) / 3)
    assert metrics["instruction_strict"]["method"] == "cluster_bootstrap"
    assert (metrics["samples"], metrics["completions"], metrics["instructions"]) == (2, 4, 3)
    assert metrics["truncated_completions"] == 1
    assert metrics["passed"] == {"prompt_strict": 1, "prompt_loose": 2, "instruction_strict": 3, "instruction_loose": 4}
    assert result["groups"]["instruction_type"]["keywords:frequency"] == {"strict": 1, "loose": 1, "total": 2}
    assert result["groups"]["instruction_category"]["punctuation"] == {"strict": 1, "loose": 1, "total": 2}


def test_cluster_bootstrap_is_seeded_and_wider_than_a_binomial_interval():
    # 100 prompts x 3 instructions, followed all-or-nothing: effectively 100 independent outcomes, not 300.
    followed, counts = [3.0] * 60 + [0.0] * 40, [3] * 100
    estimate = instruction_level_estimate(followed, counts)
    assert estimate == instruction_level_estimate(followed, counts)
    assert estimate["value"] == 0.6 and estimate["n"] == 300 and estimate["prompts"] == 100
    assert estimate["ci_low"] < 0.6 < estimate["ci_high"]
    binomial_halfwidth = 1.96 * (0.6 * 0.4 / 300) ** 0.5
    assert estimate["ci_high"] - estimate["ci_low"] > 1.5 * 2 * binomial_halfwidth
    assert instruction_level_estimate([], [])["value"] is None
    # one instruction per prompt: the stderr is the usual s/sqrt(n) of 0/1 outcomes
    single = instruction_level_estimate([1.0] * 60 + [0.0] * 40, [1] * 100)
    assert single["stderr"] == pytest.approx((0.6 * 0.4 * 100 / 99 / 100) ** 0.5)
    with pytest.raises(ValueError, match="instruction counts"):
        instruction_level_estimate([1.0], [1, 2])
