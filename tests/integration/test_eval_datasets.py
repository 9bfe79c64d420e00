"""`lowbit eval eval_dataset=[a,b]`: each benchmark into its own directory, every config checked before any runs;
what cannot be split is refused in one line that points at a sweep."""

from __future__ import annotations

import json

import pytest
from support import require_shared, run_lowbit

from lowbit.config import split_eval_datasets
from lowbit.errors import UsageError


def test_a_list_of_benchmarks_splits_into_one_override_list_each():
    split = split_eval_datasets(["model=qwen3_4B", "eval_dataset=[mmlu-redux,math500]", "output_dir=out/q",
                                 "data_dir={mmlu-redux:/d/m,math500:/d/x}", "limit=3"])
    assert split == [["model=qwen3_4B", "limit=3", "eval_dataset=mmlu-redux", "output_dir=out/q/mmlu-redux",
                      "data_dir=/d/m"],
                     ["model=qwen3_4B", "limit=3", "eval_dataset=math500", "output_dir=out/q/math500",
                      "data_dir=/d/x"]]
    assert split_eval_datasets(["eval_dataset=mmlu-redux,ifeval"])[1] == ["eval_dataset=ifeval"]
    single = ["eval_dataset=mmlu-redux", "output_dir=o"]
    assert split_eval_datasets(single) == [single]


@pytest.mark.parametrize("items, message", [
    (["eval_dataset=[mmlu-redux,mmlu-redux]"], "list each benchmark once"),
    (["eval_dataset=[mmlu-redux,math500]", "eval_dataset_config=math500"], "lowbit sweep run"),
    (["eval_dataset=[mmlu-redux,math500]", "data_dir=/d"], "give one data_dir each: data_dir={mmlu-redux:<dir>"),
    (["eval_dataset=[mmlu-redux,math500]", "data_dir={mmlu-redux:/d}"], "naming exactly mmlu-redux, math500"),
])
def test_what_cannot_be_split_is_refused_in_one_line(items, message):
    with pytest.raises(UsageError, match=message.replace("{", r"\{").replace("(", r"\(")):
        split_eval_datasets(items)


def test_the_command_refuses_before_running_anything(tmp_path):
    result = run_lowbit("eval", "eval_dataset=[mmlu-redux,math5000]", f"output_dir={tmp_path / 'o'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "unknown eval_dataset 'math5000'. Did you mean 'math500'" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_each_benchmark_of_the_list_runs_into_its_own_directory(tiny_model_stopping, tmp_path):
    data = {name: require_shared(folder, name) for name, folder in (("mmlu-redux", "mmlu_redux"),
                                                                      ("math500", "math500"))}
    result = run_lowbit("eval", "model=qwen3_4B", f"model_name={tiny_model_stopping}", "predictor=transformers",
                        "eval_dataset=[mmlu-redux,math500]", f"output_dir={tmp_path}", "limit=2",
                        "data_dir={" + ",".join(f"{k}:{v}" for k, v in data.items()) + "}",
                        "sampling.max_sequence_length=320")
    assert result.returncode == 0, result.stderr
    for name in data:
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert metrics["task"] == name
        assert len((tmp_path / name / "predictions.jsonl").read_text().splitlines()) == 2
