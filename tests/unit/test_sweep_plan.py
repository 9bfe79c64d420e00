"""Sweep files: their expansion into dependent jobs, and the one-line refusals of bad files before anything is
written (through lowbit's own eval and quantize validators, on a real tiny checkpoint directory)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lowbit.errors import UsageError
from lowbit.overrides import parse
from lowbit.sweep.jobs import EVAL, QUANTIZE
from lowbit.sweep.plan import build_plan, format_override
from lowbit.sweep.spec import load_sweep
from lowbit.sweep.submit import jobs_to_submit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A checkpoint directory the validators accept as a model (only its existence is checked before a run)."""
    path = tmp_path_factory.mktemp("source")
    (path / "config.json").write_text("{}")
    return path


def sweep_file(tmp_path: Path, source: Path, **changes) -> Path:
    data = {
        "name": "t",
        "output_dir": str(tmp_path / "out"),
        "overrides": ["predictor=transformers", "limit=2"],
        "models": {"tiny": {"model": "qwen3_4B", "source": str(source), "precisions": ["bf16", "int8", "w4a4"]},
                   "big": {"model": "qwen3_30B_A3B_instruct", "source": str(source), "precisions": ["bf16"],
                           "tasks": ["mmlu-redux"]}},
        "precisions": {"bf16": {"checkpoint": "source"}, "int8": {"recipe": {"scheme": "int8"}},
                       "w4a4": {"emulate": {"act_quant": "nvfp4", "weight_quant": "nvfp4"}}},
        "tasks": {"mmlu-redux": {"overrides": ["dataset.subset=seed30"]},
                  "math500-nonthinking": {"eval_dataset": "math500", "eval_dataset_config": "math500-nonthinking",
                                          "seeds": [1, 2]}},
        "cells": [{"model": "big", "overrides": ["predictor=vllm", "predictor_conf.tensor_parallel_size=2"]}],
    }
    for key, value in changes.items():
        node, *path = key.split("__")
        target = data
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def values(job) -> dict:
    return {o.key: o.value for o in parse(list(job.argv[1:]))}


def test_the_matrix_expands_into_one_quantize_job_per_recipe_and_dependent_evals(tmp_path, source):
    plan = build_plan(load_sweep(sweep_file(tmp_path, source)))
    out = tmp_path / "out"
    assert [job.name for job in plan.quantize_jobs] == ["quantize/tiny/int8"]
    quantize = plan.quantize_jobs[0]
    assert quantize.kind == QUANTIZE and quantize.output_dir == str(out / "checkpoints" / "tiny" / "int8")
    assert values(quantize) == {"scheme": "int8", "model": str(source), "out": quantize.output_dir}
    names = [cell.job.name for cell in plan.cells]
    assert names == [f"eval/tiny/{p}/{t}" for p in ("bf16", "int8", "w4a4")
                     for t in ("mmlu-redux", "math500-nonthinking-seed1", "math500-nonthinking-seed2")] \
        + ["eval/big/bf16/mmlu-redux"]
    by_name = {cell.job.name: cell.job for cell in plan.cells}
    int8 = by_name["eval/tiny/int8/math500-nonthinking-seed2"]
    assert int8.kind == EVAL and int8.depends_on == ("quantize/tiny/int8",)
    assert int8.output_dir == str(out / "tiny" / "int8" / "math500-nonthinking-seed2")
    v = values(int8)
    assert v["model_name"] == quantize.output_dir and v["precision"] == "int8" and v["seed"] == 2
    assert v["eval_dataset"] == "math500" and v["eval_dataset_config"] == "math500-nonthinking"
    assert v["output_dir"] == int8.output_dir and v["limit"] == 2
    emulated = values(by_name["eval/tiny/w4a4/mmlu-redux"])
    assert emulated["model_name"] == str(source) and emulated["predictor_conf.act_quant"] == "nvfp4"
    assert emulated["dataset.subset"] == "seed30"
    big = by_name["eval/big/bf16/mmlu-redux"]
    assert values(big)["predictor"] == "vllm"  # the cell's override wins over the shared one
    assert big.resources.gpus == 2 and by_name["eval/tiny/bf16/mmlu-redux"].resources.gpus == 0
    assert not (tmp_path / "out").exists()  # planning writes nothing


def test_command_line_items_override_the_file(tmp_path, source):
    spec = load_sweep(sweep_file(tmp_path, source), ["launcher=slurm", "launcher.slurm.partition=gpu",
                                                     f"output_dir={tmp_path / 'elsewhere'}", "overrides=['limit=3']"])
    assert spec.launcher == "slurm" and spec.launcher_options == {"slurm": {"partition": "gpu"}}
    plan = build_plan(spec)
    assert plan.sweep_dir == tmp_path / "elsewhere" and values(plan.cells[0].job)["limit"] == 3


@pytest.mark.parametrize("change, message", [
    ({"models__tiny__model": "qwen3_5B"}, "unknown model config 'qwen3_5B'. Did you mean"),
    ({"tasks__mmlu-redux__eval_dataset": "mmlu_redux"}, "unknown eval_dataset 'mmlu_redux'. Did you mean 'mmlu-redux'"),
    ({"precisions__int8__recipe": {"scheme": "int9"}}, "precisions.int8.recipe: unknown scheme 'int9'"),
    ({"overrides": ["predictor=transformers", "sampling.temprature=0.5"]}, "unknown config key 'sampling.temprature'"),
    ({"overrides": ["output_dir=/tmp/x"]}, "output_dir= cannot be overridden in a sweep"),
    ({"precisions__bf16": {}}, "precision 'bf16' has neither checkpoint nor recipe"),
    ({"precisions__bf16": {"checkpoint": "source", "recipe": {"scheme": "int8"}}}, "gives both checkpoint and recipe"),
    ({"models__tiny__precisions": ["bf16", "fp6"]}, "unknown precision 'fp6'"),
    ({"models__tiny__color": "red"}, "unknown model key 'color'"),
    ({"tasks__math500-nonthinking__eval_dataset_config": "math-nothink"}, "has no sampling config 'math-nothink'"),
    ({"cells": [{"model": "tiny", "task": "gsm8k"}]}, "cells[0]: unknown task 'gsm8k'"),
    ({"tasks__aime25-seed1": {"eval_dataset": "aime25"}, "tasks__aime25": {"seeds": [1]}},
     "would both write"),
])
def test_bad_sweep_files_fail_in_one_line_before_anything_is_written(tmp_path, source, change, message):
    with pytest.raises(UsageError) as error:
        build_plan(load_sweep(sweep_file(tmp_path, source, **change)))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_an_unwritable_output_root_is_refused(tmp_path, source):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="cannot be written"):
            build_plan(load_sweep(sweep_file(tmp_path, source, output_dir=str(locked / "sweep"))))
    finally:
        locked.chmod(0o700)


def test_an_output_root_below_a_file_is_refused(tmp_path, source):
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="cannot be written"):
        build_plan(load_sweep(sweep_file(tmp_path, source, output_dir=str(tmp_path / "file" / "sweep"))))


def test_a_missing_sweep_file_and_unknown_keys_are_named(tmp_path, source):
    with pytest.raises(UsageError, match="does not exist"):
        load_sweep(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="unknown sweep key 'modles'. Did you mean 'models'"):
        load_sweep(sweep_file(tmp_path, source), ["modles.x=1"])


@pytest.mark.parametrize("value", ["plain", "a b", "it's", r"re:.*mlp\.gate$", 3, 0.5, True, None, ["x", "y z"]])
def test_recipe_values_reach_the_command_line_unchanged(value):
    (override,) = parse([format_override("key", value)])
    assert override.value == value


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "reference-core.yaml", "reference-ruler32k.yaml"])
def test_the_shipped_sweep_files_load_and_plan(name, tmp_path, source):
    spec = load_sweep(REPO / "sweeps" / name, [f"output_dir={tmp_path / 'out'}"]
                      + ([f"models.tiny.source={source}"] if name == "tiny-cpu.yaml" else []))
    plan = build_plan(spec, validate=name == "tiny-cpu.yaml")
    assert plan.cells and len({cell.job.output_dir for cell in plan.cells}) == len(plan.cells)


def test_a_checkpoint_made_by_another_recipe_is_refused_not_reused(tmp_path, source):
    made = tmp_path / "out" / "checkpoints" / "tiny" / "int8"
    made.mkdir(parents=True)
    (made / "config.json").write_text(json.dumps({"quantization_config": {"lowbit": {"scheme": "fp8",
                                                                                     "method": "rtn"}}}))
    with pytest.raises(UsageError, match=f"{made} was made with scheme=fp8 but precisions.int8.recipe asks for "
                                         "scheme=int8"):
        build_plan(load_sweep(sweep_file(tmp_path, source)))
    (made / "config.json").write_text(json.dumps({"quantization_config": {"lowbit": {"scheme": "int8",
                                                                                     "method": "rtn"}}}))
    plan = build_plan(load_sweep(sweep_file(tmp_path, source)))
    todo, done, in_flight = jobs_to_submit(plan)
    assert done == ["quantize/tiny/int8"] and not in_flight
    assert all("quantize/tiny/int8" not in job.depends_on for job in todo)
