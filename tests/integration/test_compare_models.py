"""`lowbit compare` groups runs by the model they evaluated: a `lowbit quantize` checkpoint counts as its source
model, any other `model_name` as itself, whatever model config the runs were evaluated with."""

from __future__ import annotations

import json
import shutil

import pytest
from report_support import planted, write_run
from support import run_lowbit

N = 200


@pytest.fixture(scope="module")
def runs(tiny_model, tmp_path_factory):
    """BF16 runs of the tiny model, of the real Qwen3-4B and of a copy of the tiny model under another name, and
    quantized runs of each: the tiny model's from a checkpoint `lowbit quantize` made of it."""
    from lowbit.cli import main

    root = tmp_path_factory.mktemp("model_runs")
    quantized = root / "checkpoints" / "tiny-nvfp4"
    assert main(["quantize", f"model={tiny_model}", "scheme=nvfp4", f"out={quantized}"]) == 0
    other = shutil.copytree(tiny_model, root / "checkpoints" / "other-tiny")
    baseline, dropped = planted(140, right_to_wrong=12, wrong_to_right=2, n=N)
    return {
        "tiny_bf16": write_run(root / "tiny_bf16", "bf16", baseline, overrides=(f"model_name={tiny_model}",)),
        "tiny_nvfp4": write_run(root / "tiny_nvfp4", "nvfp4", dropped, overrides=(f"model_name={quantized}",)),
        "qwen_bf16": write_run(root / "qwen_bf16", "bf16", baseline),
        "qwen_int8": write_run(root / "qwen_int8", "int8", dropped),
        "other_nvfp4": write_run(root / "other_nvfp4", "nvfp4", dropped, overrides=(f"model_name={other}",)),
    }


@pytest.mark.slow
def test_runs_group_by_the_evaluated_model_not_the_model_config(runs, tiny_model, tmp_path):
    out = tmp_path / "report"
    result = run_lowbit("compare", *(str(path) for path in runs.values()), f"out={out}", "format=json")
    assert result.returncode == 1, result.stderr  # the other model's run has no BF16 baseline of its own
    groups = {group["family"]: group for group in json.loads((out / "comparison.json").read_text())["groups"]}
    assert set(groups) == {tiny_model.name, "Qwen3-4B"}
    assert [row["run"] for row in groups[tiny_model.name]["rows"]] == [str(runs["tiny_bf16"]),
                                                                        str(runs["tiny_nvfp4"])]
    assert [row["run"] for row in groups["Qwen3-4B"]["rows"]] == [str(runs["qwen_bf16"]), str(runs["qwen_int8"])]
    tiny_drop = groups[tiny_model.name]["rows"][1]["paired"]
    assert (tiny_drop["right_to_wrong"], tiny_drop["wrong_to_right"]) == (12, 2)
    assert f"{tiny_model.name} - mmlu-redux (prompt=reference) - accuracy, baseline bf16" in result.stdout
    assert (f"not compared: {runs['other_nvfp4']}: no bf16 baseline run for other-tiny mmlu-redux among the inputs"
            in result.stderr)
