"""RULER task names, registry resolution, prompt frames, the prebuilt-dataset parser and string_match_all scoring."""

import json

import pytest

from support import answered
from lowbit.errors import UsageError
from lowbit.records import Sample
from lowbit.tasks import get_task_class, make_task, task_names
from lowbit.tasks.prompts import HELPFUL_ASSISTANT, PromptContext
from lowbit.tasks.ruler import names
from lowbit.tasks.ruler.dataset import FORMAT, GENERATOR_VERSION, read_prepared
from lowbit.tasks.ruler.messages import PromptFrame, check_frame
from lowbit.tasks.ruler.scoring import clean_answer, string_match_all
from lowbit.tasks.ruler.task import _parse_records


@pytest.mark.parametrize("text, tokens", [("4k", 4096), ("32k", 32768), ("128K", 131072), ("32768", 32768),
                                          (" 8k ", 8192), (1000, 1000)])
def test_lengths_accept_k_suffixes_and_token_counts(text, tokens):
    assert names.parse_length(text) == tokens


@pytest.mark.parametrize("text", ["32m", "k", "-4k", "4.5k", "", "100"])
def test_bad_lengths_are_refused(text):
    with pytest.raises(ValueError):
        names.parse_length(text)


def test_every_listed_name_resolves_to_its_tasks_and_length():
    listed = [n for n in task_names() if n.startswith("ruler-")]
    assert len(listed) == len(names.STEMS) == 12
    niah = get_task_class("ruler-niah-32k")
    assert niah.subtasks == names.NIAH_TASKS and niah.max_seq_length == 32768
    assert get_task_class("ruler-niah-single-1-32k").subtasks == ("niah_single_1",)
    assert get_task_class("ruler-niah-multiquery-32k").subtasks == ("niah_multiquery",)
    vt8 = get_task_class("ruler-vt-8k")
    assert (vt8.name, vt8.subtasks, vt8.max_seq_length) == ("ruler-vt-8k", ("vt",), 8192)
    assert get_task_class("ruler-vt-8k") is vt8  # one class per name
    assert get_task_class("ruler-cwe-131072").max_seq_length == 131072


@pytest.mark.parametrize("name, message", [
    ("ruler-foo-32k", "unknown eval_dataset 'ruler-foo-32k'"),
    ("ruler-vt-32q", "bad length '32q'"),
    ("ruler-vt", "unknown eval_dataset 'ruler-vt'"),
])
def test_bad_ruler_names_get_one_line_errors(name, message):
    with pytest.raises(UsageError, match=message) as error:
        get_task_class(name)
    assert "\n" not in str(error.value)


def test_options_are_validated():
    with pytest.raises(UsageError, match="dataset.source"):
        make_task("ruler-vt-32k", {"source": "web"})
    with pytest.raises(UsageError, match="32768-token prompts only"):
        make_task("ruler-vt-8k", {"source": "hf"})
    with pytest.raises(UsageError, match="unknown dataset option"):
        make_task("ruler-vt-32k", {"samples": 3})
    task = make_task("ruler-vt-8k", {"num_samples": 7, "seed": 3})
    assert (task.options.num_samples, task.options.seed, task.headline_metric) == (7, 3, "score")


def test_generating_without_a_tokenizer_names_the_fix(tmp_path):
    task = make_task("ruler-vt-4k", {"cache_dir": str(tmp_path)})
    with pytest.raises(UsageError, match="data_dir=.*dataset.tokenizer="):
        task.load(None)
    assert not any(tmp_path.iterdir())


def test_parse_tasks():
    assert names.parse_tasks(None) == names.TASKS
    assert names.parse_tasks("fwe,vt") == ("vt", "fwe")  # canonical order
    assert names.parse_tasks("niah") == names.NIAH_TASKS
    with pytest.raises(UsageError, match="unknown RULER task"):
        names.parse_tasks("vt,qa_1")


# -- prompt frames: the messages sent before a prompt, which its fitting counts ---------------------------------


def _frame(profile, family="qwen3"):
    return PromptFrame.of(profile, PromptContext(family, "ruler-32k"))


def test_frames_hold_the_messages_each_profile_sends_before_the_prompt():
    assert _frame("reference").preamble_messages() == [{"role": "system", "content": HELPFUL_ASSISTANT}]
    assert _frame("reference", "gpt_oss").preamble == () and _frame("lowbit").preamble == ()
    assert [_frame("reference").key, _frame("lowbit", "gpt_oss").key] == ["reference-qwen3", "lowbit"]
    assert PromptFrame.from_json(json.loads(json.dumps(_frame("reference").to_json()))) == _frame("reference")
    assert _frame("lowbit").fits(_frame("lowbit", "gpt_oss"))  # lowbit's messages are every family's
    assert not _frame("reference").fits(_frame("lowbit"))
    assert not _frame("reference").fits(_frame("reference", "gpt_oss"))
    assert not _frame("lowbit").fits(_frame("reference", "gpt_oss"))  # the same messages under another profile
    with pytest.raises(UsageError, match="dataset.prompt=lowbit"):
        _frame("reference", "llama")


def test_the_task_sends_the_frame_it_fits_in():
    task = make_task("ruler-vt-4k")
    task.bind_model("unused-model", {}, PromptContext("qwen3", "ruler-32k"))
    assert task.messages({"input": "prompt"}) == [*task.prompt_frame.preamble_messages(),
                                                  {"role": "user", "content": "prompt"}]
    assert task.prompt_frame == _frame("reference")


def test_data_of_another_frame_is_refused_in_one_line():
    with pytest.raises(UsageError) as error:
        check_frame(_frame("reference", "gpt_oss"), _frame("reference"), "data/ruler-4k")
    assert str(error.value) == (
        "data/ruler-4k holds prompts fitted for dataset.prompt=reference for qwen3 (system message 'You are a "
        "helpful assistant.'), but this run sends dataset.prompt=reference for gpt_oss (no system message): prepare "
        "data with prompt=reference family=gpt_oss")
    check_frame(_frame("lowbit", "gpt_oss"), _frame("lowbit"), "data/ruler-4k")


def test_a_folder_of_another_generator_version_is_refused(tmp_path):
    manifest = {"format": FORMAT, "generator_version": "1", "max_seq_length": 4096, "tasks": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=rf"generator version 1 and this lowbit generates version "
                                         rf"{GENERATOR_VERSION}: prepare the folder again"):
        read_prepared(tmp_path, ("vt",), 4096, _frame("reference"))


# -- scoring ----------------------------------------------------------------------------------------------------


def _sample(task="niah_multivalue", outputs=("1234567", "7654321")):
    return Sample(id=f"{task}/0", messages=[], item={"task": task, "outputs": list(outputs), "index": 0})


def test_string_match_all_is_the_share_of_expected_strings_found_case_insensitively():
    assert string_match_all("The values are 1234567 and 7654321.", ["1234567", "7654321"]) == 1.0
    assert string_match_all("Only 1234567.", ["1234567", "7654321"]) == 0.5
    assert string_match_all("", ["1234567"]) == 0.0
    assert string_match_all("They are: KGOJH, eirex", ["KGOJH", "EIREX", "SOCLC", "GIZSG"]) == 0.5
    assert clean_answer("\t 12\x0034 \n") == "12\n34"


def test_score_rows_and_metrics_for_perfect_partial_and_empty_answers():
    task = make_task("ruler-niah-32k")
    rows = [task.score(answered(_sample(), "1234567, 7654321")),
            task.score(answered(_sample(), "1234567")),
            task.score(answered(_sample(), "  ")),
            task.score(answered(_sample("vt", ["AAAAA"]), "aaaaa"))]
    assert [r["score"] for r in rows] == [1.0, 0.5, 0.0, 1.0]
    assert [r["null"] for r in rows] == [[False], [False], [True], [False]]
    result = task.aggregate(rows)
    metrics = result["metrics"]
    assert metrics["score"]["value"] == pytest.approx(0.625) and metrics["score"]["n"] == 4
    assert metrics["score"]["method"] == "normal" and metrics["score"]["ci_low"] < 0.625 < metrics["score"]["ci_high"]
    assert (metrics["nulls"], metrics["samples"], metrics["completions"]) == (1, 4, 4)
    assert metrics["nulls_by_task"] == {"niah_multivalue": 1, "vt": 0}
    assert result["groups"]["task"]["niah_multivalue"]["value"] == pytest.approx(0.5)
    assert result["groups"]["task"]["vt"]["value"] == 1.0


def test_all_or_nothing_scores_get_a_wilson_interval():
    task = make_task("ruler-vt-32k")
    rows = [task.score(answered(_sample("vt", ["AB"]), a)) for a in ("AB", "AB", "no")]
    score = task.aggregate(rows)["metrics"]["score"]
    assert score["method"] == "wilson" and score["value"] == pytest.approx(2 / 3)
    assert task.aggregate(rows)["groups"] == {}


# -- the prebuilt hub dataset's records -------------------------------------------------------------------------


def test_prebuilt_records_parse_from_a_local_file_in_the_hub_schema(tmp_path):
    """lighteval/RULER-32768-Qwen-3 has one split per task with records {index, input, outputs, length}."""
    import datasets

    rows = [{"index": 0, "input": "Some special magic numbers ... are", "outputs": ["1234567"], "length": 32000},
            {"index": 1, "input": "Memorize and track ...", "outputs": ["AB", "CD"], "length": 31000,
             "answer_prefix": " Answer: they are: "}]
    path = tmp_path / "niah_single_1.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = list(datasets.load_dataset("json", data_files=str(path), split="train"))
    records = _parse_records(loaded, "local")
    assert [r["index"] for r in records] == [0, 1]
    assert records[0]["input"] == rows[0]["input"] and records[0]["outputs"] == ["1234567"]
    assert records[1]["input"].endswith(" Answer: they are: ")
    with pytest.raises(UsageError, match="record 0 lacks"):
        _parse_records([{"index": 0, "input": "x", "outputs": []}], "local")
    with pytest.raises(UsageError, match="repeated record indexes"):
        _parse_records([rows[0], rows[0]], "local")


def test_eval_uses_the_ruler_sampling_block_and_refuses_a_budget_below_the_length():
    from lowbit.config import resolve_eval

    cfg = resolve_eval(["model=qwen3_4B", "eval_dataset=ruler-vt-8k"])
    assert cfg.resolved["eval_dataset_config"] == "ruler-32k"
    with pytest.raises(UsageError, match=r"pass sampling.max_sequence_length=131072"):
        resolve_eval(["model=qwen3_4B", "eval_dataset=ruler-vt-128k"])
    cfg = resolve_eval(["model=qwen3_4B", "eval_dataset=ruler-vt-128k", "sampling.max_sequence_length=131072"])
    assert cfg.sampling.max_sequence_length == 131072
