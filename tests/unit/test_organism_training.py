"""The organism's one training command (lowbit.organism.train) and its recipe (lowbit.organism.recipe)."""

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from lowbit.errors import UsageError
from lowbit.organism import MODEL_DIR, retrieval
from lowbit.organism.recipe import RECIPE, split_steps
from lowbit.organism.train import DEFAULTS, command, fit_time_budget, main, parse


def stage_records(manifest: dict) -> list[dict]:
    """A manifest's stage records, first stage first (each later stage nests the one it continued under init)."""
    return [*stage_records(manifest["init"]), manifest] if "init" in manifest else [manifest]


def command_values(record: dict) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in shlex.split(record["command"])[3:])


def test_shipped_manifest_records_the_recipe_the_command_runs_by_default():
    records = stage_records(json.loads((MODEL_DIR / "manifest.json").read_text()))
    assert len(records) == len(RECIPE)
    for record, stage in zip(records, RECIPE):
        recorded = command_values(record)
        assert (record["seed"], record["steps"]) == (stage.seed, stage.steps)
        assert (int(recorded["seed"]), int(recorded["steps"])) == (stage.seed, stage.steps)
        assert (float(recorded["lr"]), int(recorded["warmup"])) == (stage.lr, stage.warmup)
        assert {name: (b["examples"], b["tokens_per_row"]) for name, b in record["batches"].items()} == stage.batches
        assert int(recorded["workers"]) == DEFAULTS["workers"]
        assert record["held_out_samples_per_task"] == int(recorded["eval_samples"]) == DEFAULTS["eval_samples"]
        assert float(recorded["scale"]) == DEFAULTS["scale"] and recorded["compile"] == str(DEFAULTS["compile"])
    assert "init" not in command_values(records[0]) and command_values(records[1])["init"]
    assert parse(["out=organism"])["steps"] == [stage.steps for stage in RECIPE]


def test_the_first_stage_tokenizer_is_the_shipped_one():
    """build_tokenizer trains on the first stage's texts, so a retrained organism numbers its tokens as the
    shipped one does (with this version of `tokenizers`)."""
    from lowbit.organism.tokenizer import build_tokenizer

    built = json.loads(build_tokenizer().backend_tokenizer.to_str())
    shipped = json.loads((MODEL_DIR / "tokenizer.json").read_text())
    assert built["model"] == shipped["model"]


def test_retrieval_forms_differ_only_in_the_answer():
    import random

    value_only, line = (retrieval.generate(random.Random(5), value_only=v) for v in (True, False))
    assert value_only.completion == value_only.gold == line.gold and line.completion.endswith(f": {line.gold}")
    assert value_only.prompt.endswith("Answer with the value only.")
    assert value_only.prompt.split("?")[0] == line.prompt.split("?")[0]
    assert {stage.retrieval_form for stage in RECIPE} <= set(retrieval.TRAINING_FORMS)


@pytest.mark.parametrize("argv", [
    ["out=organism"],
    ["out=o", "stages=1", "steps=40", "seed=3", "scale=0.5", "compile=false", "workers=0", "eval_samples=0"],
    ["out=o", "stages=2", "steps=[7]", "init=" + str(MODEL_DIR)],
    ["out=o", "steps=10,20", "time_budget_s=60"],
])
def test_recorded_command_parses_back_to_the_same_options(argv):
    options = parse(argv)
    again = parse(shlex.split(command(options, options["out"], options["stages"], options["steps"]))[3:])
    assert again == {**options, "time_budget_s": 0.0}


def test_steps_are_shared_in_proportion_to_the_recipe():
    assert split_steps(sum(stage.steps for stage in RECIPE), [1, 2]) == [stage.steps for stage in RECIPE]
    assert split_steps(4, [1, 2]) == [3, 1] and split_steps(2, [1, 2]) == [1, 1] and split_steps(9, [2]) == [9]
    assert parse(["out=o", "steps=84"])["steps"] == [58, 26]


@pytest.mark.parametrize("argv, message", [
    (["steps=5"], "out= is required"),
    (["out=o", "stages=3"], "stages=3: name recipe stages 1 to 2"),
    (["out=o", "stages=[2,1]"], "in order"),
    (["out=o", "steps=1"], "at least one step per stage"),
    (["out=o", "steps=[1,2,3]"], "one positive number per stage run"),
    (["out=o", "lr=0.1"], "unknown organism.train option 'lr'"),
    (["out=o", "init=nowhere"], "init=nowhere: not a checkpoint"),
    (["out=o", "scale=0"], "scale must be above 0"),
])
def test_bad_options_fail_in_one_line_before_writing(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=message):
        parse(argv)
    assert main(argv) == 2
    assert message.split(":")[0] in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_a_time_budget_lowers_every_stage_in_one_proportion():
    options = parse(["out=o", "time_budget_s=100"])
    plan = [1000, 1000]
    # 0.1 s per stage-1 step, 5 s of setup: stage 2's steps cost more (twice the retrieval rows).
    fit_time_budget(plan, options, per_step=0.1, elapsed=5 + 0.1 * 32, step=31)
    assert plan[0] == plan[1] and 300 < plan[0] < 500
    generous = [1000, 1000]
    fit_time_budget(generous, parse(["out=o", "time_budget_s=1000"]), per_step=0.1, elapsed=8.2, step=31)
    assert generous == [1000, 1000]


@pytest.mark.slow
def test_one_command_trains_both_stages_into_loadable_checkpoints(tmp_path):
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    out = tmp_path / "organism"
    argv = [f"out={out}", "steps=2", "scale=0.01", "eval_samples=0", "workers=0"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    records = stage_records(manifest)
    assert [r["stage"] for r in records] == [1, 2] and [r["steps"] for r in records] == [1, 1]
    assert [r["retrieval_form"] for r in records] == [s.retrieval_form for s in RECIPE]
    assert [r["batches"]["retrieval"]["examples"] for r in records] == [1, 1]
    shipped = json.loads((MODEL_DIR / "manifest.json").read_text())
    for record, directory in zip(records, (out / "stage1", out)):
        assert set(shipped) - {"init"} <= set(record)
        weights = (directory / "model.safetensors").read_bytes()
        assert hashlib.sha256(weights).hexdigest() == record["weights_sha256"]
        model = Qwen3ForCausalLM.from_pretrained(directory)
        assert sum(p.numel() for p in model.parameters()) == record["parameters"] == shipped["parameters"]
        assert AutoTokenizer.from_pretrained(directory).eos_token == "<|im_end|>"
    assert parse(shlex.split(manifest["command"])[3:]) == parse(argv)
    assert parse(shlex.split(records[0]["command"])[3:]) == parse([f"out={out / 'stage1'}", "stages=1", "steps=1",
                                                                  "scale=0.01", "eval_samples=0", "workers=0"])
    assert json.loads((out / "stage1" / "manifest.json").read_text()) == records[0]
    assert Path(shlex.split(manifest["command"])[3].partition("=")[2]) == out
