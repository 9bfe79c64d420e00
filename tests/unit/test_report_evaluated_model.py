"""The model a run evaluated, as `lowbit compare` groups runs by it (lowbit.report.evaluated_model)."""

from __future__ import annotations

import pytest

from lowbit.report.evaluated_model import evaluated_model, model_name
from lowbit.rundir import RunConfig

QUANTIZED = {"quant_method": "compressed-tensors", "lowbit": {"scheme": "nvfp4", "source_model": "/tmp/tiny"}}
THIRD_PARTY = {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"}


@pytest.mark.parametrize("name, expected", [
    ("Qwen/Qwen3-4B", "Qwen3-4B"), ("/models/Qwen3-4B", "Qwen3-4B"), ("/tmp/tiny/", "tiny"),
    ("ckpts/tiny/.", "tiny"), ("./tiny", "tiny"), ("tiny", "tiny"),
    ("src/lowbit/organism/model", "organism/model"), ("/runs/qwen3-4b-ft/checkpoint/", "qwen3-4b-ft/checkpoint"),
])
def test_a_hub_id_and_a_directory_are_named_by_their_last_part(name, expected):
    assert model_name(name) == expected


def config(**resolved) -> RunConfig:
    return RunConfig.from_json({"eval_dataset": "mmlu-redux", "model": {"model_name": "Qwen/Qwen3-4B"}, **resolved})


def test_a_quantize_checkpoint_is_its_source_model_and_an_unquantized_model_itself():
    assert evaluated_model(config(model_name="/ckpts/tiny-nvfp4"), QUANTIZED) == "tiny"
    assert evaluated_model(config(model_name="/tmp/tiny"), None) == "tiny"
    assert evaluated_model(config(model_name="Qwen/Qwen3-4B"), None) == "Qwen3-4B"


def test_another_tools_checkpoint_is_the_model_its_model_config_names():
    assert evaluated_model(config(model_name="/ckpts/vendor-nvfp4"), THIRD_PARTY) == "Qwen3-4B"


def test_a_run_without_model_name_is_its_model_configs_hub_id():
    assert evaluated_model(config(), None) == "Qwen3-4B"
