"""The organism's one training command (lowbit.organism.train) and its recipe (lowbit.organism.recipe)."""

import hashlib
import json
import shlex
from pathlib import Path

import pytest

from lowbit.errors import UsageError
from lowbit.organism import MODEL_DIR
from lowbit.organism.recipe import RECIPE
from lowbit.organism.train import DEFAULTS, command, main, parse, steps_within_budget


def command_values(manifest: dict) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in shlex.split(manifest["command"])[3:])


def test_shipped_manifest_records_the_recipe_the_command_runs_by_default():
    manifest = json.loads((MODEL_DIR / "manifest.json").read_text())
    recorded = command_values(manifest)
    assert (manifest["seed"], manifest["steps"]) == (RECIPE.seed, RECIPE.steps)
    assert (int(recorded["seed"]), int(recorded["steps"])) == (0, RECIPE.steps)
    assert (manifest["lr"], manifest["warmup"]) == (RECIPE.lr, RECIPE.warmup)
    assert {name: (b["examples"], b["tokens_per_row"]) for name, b in manifest["batches"].items()} == RECIPE.batches
    assert int(recorded["workers"]) == DEFAULTS["workers"]
    assert manifest["held_out_samples_per_task"] == int(recorded["eval_samples"]) == DEFAULTS["eval_samples"]
    assert float(recorded["scale"]) == DEFAULTS["scale"] and recorded["compile"] == str(DEFAULTS["compile"]).lower()
    assert "init" not in recorded and "init" not in manifest
    assert parse(["out=organism"])["steps"] == RECIPE.steps


def test_the_tokenizer_rebuilds_as_shipped():
    """build_tokenizer trains on a fixed corpus of the tasks' texts, so a retrained organism numbers its tokens as
    the shipped one does (with this version of `tokenizers`)."""
    from lowbit.organism.tokenizer import build_tokenizer

    built = json.loads(build_tokenizer().backend_tokenizer.to_str())
    shipped = json.loads((MODEL_DIR / "tokenizer.json").read_text())
    assert built["model"] == shipped["model"]


@pytest.mark.parametrize("argv", [
    ["out=organism"],
    ["out=o", "steps=40", "seed=3", "scale=0.5", "compile=false", "workers=0", "eval_samples=0"],
    ["out=o", "steps=7", "init=" + str(MODEL_DIR)],
    ["out=o", "steps=10", "time_budget_s=60"],
])
def test_recorded_command_parses_back_to_the_same_options(argv):
    options = parse(argv)
    again = parse(shlex.split(command(options, options["steps"]))[3:])
    assert again == {**options, "time_budget_s": 0.0}


@pytest.mark.parametrize("argv, message", [
    (["steps=5"], "out= is required"),
    (["out=o", "steps=0"], "steps=0: must be at least 1"),
    (["out=o", "stages=2"], "unknown organism.train option 'stages'"),
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


def test_a_time_budget_lowers_the_steps_to_what_fits():
    # 0.1 s per step, 5 s of setup (elapsed after 32 steps: setup + 32 steps): 95 s leave room for 950 steps
    assert steps_within_budget(1000, 100, per_step=0.1, elapsed=5 + 0.1 * 32, step=31) == 950
    assert steps_within_budget(1000, 1000, per_step=0.1, elapsed=8.2, step=31) == 1000
    assert steps_within_budget(1000, 4, per_step=0.1, elapsed=8.2, step=31) == 32  # never below the steps run


@pytest.mark.slow
def test_one_command_trains_a_loadable_checkpoint_and_continues_from_it(tmp_path):
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    shipped = json.loads((MODEL_DIR / "manifest.json").read_text())
    first, second = tmp_path / "organism", tmp_path / "continued"
    argv = [f"out={first}", "steps=1", "scale=0.01", "eval_samples=0", "workers=0"]
    assert main(argv) == 0
    assert main([f"out={second}", f"init={first}", "steps=1", "scale=0.01", "eval_samples=0", "workers=0"]) == 0
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["init"] == json.loads((first / "manifest.json").read_text())
    for record, directory in ((manifest["init"], first), (manifest, second)):
        assert set(shipped) <= set(record) and record["steps"] == 1
        assert list(record["batches"]) == list(RECIPE.batches)
        weights = (directory / "model.safetensors").read_bytes()
        assert hashlib.sha256(weights).hexdigest() == record["weights_sha256"]
        model = Qwen3ForCausalLM.from_pretrained(directory)
        assert sum(p.numel() for p in model.parameters()) == record["parameters"] == shipped["parameters"]
        assert AutoTokenizer.from_pretrained(directory).eos_token == "<|im_end|>"
    assert parse(shlex.split(manifest["init"]["command"])[3:]) == parse(argv)
    assert Path(command_values(manifest)["out"]) == second and Path(command_values(manifest)["init"]) == first
