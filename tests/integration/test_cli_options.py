"""One command-line dialect through the real entry point (lowbit.cli.main, in process): key=value options in
any order relative to switches, wrong types refused with one line before anything is written, compare's
key=value options, retired flags named with their key=value spelling, and "did you mean" for unknown names."""

from __future__ import annotations

import json

import pytest
from report_support import planted, write_run
from support import write_mmlu_redux

from lowbit.cli import main


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("lowbit: error:")]


@pytest.fixture
def mmlu_dir(tmp_path):
    """Two subjects in the MMLU-Redux schema (the dry run reads the data, never a model)."""
    folder = tmp_path / "mmlu"
    return write_mmlu_redux(folder, ("anatomy", "virology"), 4, subject_prefix=True)


def test_overrides_are_read_before_and_after_switches(mmlu_dir, tmp_path, capsys):
    status = main(["eval", "eval_dataset=mmlu-redux", "--dry-run", f"data_dir={mmlu_dir}", "-v",
                   "dataset.subjects=[virology]", f"output_dir={tmp_path / 'run'}", "seed=7"])
    out = capsys.readouterr().out
    assert status == 0
    assert f"data_dir: {mmlu_dir}" in out and "seed: 7" in out
    assert "# first sample: virology/0" in out  # dataset.subjects, given after two switches, took effect
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["eval", "predictor=transformers", "predictor_conf.batch_size=abc"],
     "predictor_conf.batch_size must be an integer, got 'abc'"),
    (["eval", "sampling.temperature=hot"], "sampling.temperature must be a number or null, got 'hot'"),
    (["eval", "debug=maybe"], "debug must be true or false, got 'maybe'"),
    (["eval", "eval_dataset=math500", "dataset.time_limit_seconds=soon"],
     "dataset.time_limit_seconds must be a number, got 'soon'"),
    (["eval", "predictor=openai", "predictor_conf.backoff.max_s=soon"],
     "predictor_conf.backoff.max_s must be a number, got 'soon'"),
    (["eval", "--dry-run", "limit=[3]"], "limit must be an integer or null, got [3]"),
    (["quantize", "model=m", "scheme=fp8", "out=out", "seed=abc"], "seed must be an integer, got 'abc'"),
    (["dequantize", "in=a", "out=out", "overwrite=maybe"], "overwrite must be true or false, got 'maybe'"),
    (["ruler", "prepare", "tokenizer=t", "max_seq_length=4k", "out=out", "num_samples=many"],
     "num_samples must be an integer, got 'many'"),
    (["compare", "runs/*", "out=out", "margin=wide"], "margin must be a number, got 'wide'"),
])
def test_wrong_types_are_refused_with_one_line_before_anything_is_written(args, message, tmp_path, capsys,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*args, "output_dir=out"] if args[0] == "eval" else args) == 2
    (line,) = error_lines(capsys)
    assert message in line
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    baseline, candidate = planted(140, right_to_wrong=15, wrong_to_right=5, n=200)
    write_run(root / "qwen3_4B_bf16", "bf16", baseline)
    write_run(root / "qwen3_4B_nvfp4", "nvfp4", candidate)
    return root


def test_compare_takes_key_value_options(two_runs, tmp_path, capsys):
    out = tmp_path / "report"
    status = main(["compare", f"out={out}", str(two_runs / "*"), "baseline=bf16", "margin=2.5",
                   "format=[json,markdown]"])
    assert status == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "comparison.md"]
    assert json.loads((out / "comparison.json").read_text())["settings"]["margin_points"] == 2.5


@pytest.mark.parametrize("flag, spelling", [
    (["--out", "reports"], "out=<dir>"), (["--baseline", "bf16"], "baseline=<precision or run dir>"),
    (["--margin=2"], "margin=<points>"), (["--format", "html"], "format=<markdown|csv|json|html>"),
])
def test_retired_compare_flags_name_their_key_value_spelling(flag, spelling, two_runs, tmp_path, capsys):
    assert main(["compare", str(two_runs / "*"), *flag]) == 2
    (line,) = error_lines(capsys)
    assert f"lowbit compare takes {spelling} instead of {flag[0].partition('=')[0]}" in line
    assert capsys.readouterr().out == ""


def test_score_names_its_task_as_key_value(tmp_path, capsys):
    (tmp_path / "predictions.jsonl").write_text('{"prompt": "p", "item": {}, "preds": ["A"]}\n')
    assert main(["score", "--task", "mmlu-redux", "-c", str(tmp_path)]) == 2
    (line,) = error_lines(capsys)
    assert "lowbit score takes task=<benchmark> instead of --task" in line


@pytest.mark.parametrize("args, message", [
    (["eval", "eval_dataset=mmlu_redux"], "unknown eval_dataset 'mmlu_redux'. Did you mean 'mmlu-redux'? Available: "),
    (["eval", "sampling.template=qwen"], "unknown chat template 'qwen'. Did you mean 'qwen3'? Available: gpt_oss, qwen3"),
    (["eval", "predictor=transformers", "predictor_conf.batchsize=2"],
     "unknown config key 'predictor_conf.batchsize'"),
    (["quantize", "model=m", "scheme=fp8", "out=o", "method=gptqq"],
     "unknown method 'gptqq'. Did you mean 'gptq'? Available: gptq, rtn"),
    (["quantize", "model=m", "scheme=fp8", "out=o", "group=32"],
     "unknown quantize option 'group'. Did you mean 'group_size'?"),
    (["ruler", "prepare", "tokeniser=t"], "unknown ruler prepare option 'tokeniser'. Did you mean 'tokenizer'?"),
    (["compare", "runs/*", "marginn=1"], "unknown compare option 'marginn'. Did you mean 'margin'?"),
])
def test_unknown_names_suggest_the_closest(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    (line,) = error_lines(capsys)
    assert message in line
    if "batchsize" in message:
        assert line.endswith("Did you mean 'predictor_conf.batch_size'?")
    assert list(tmp_path.iterdir()) == []


def test_the_reference_studys_spellings_are_read_as_lowbits(mmlu_dir, tmp_path, capsys):
    # eval_predictor= and predictor_conf.vllm.* mean lowbit's predictor= and predictor_conf.*; config.yaml records
    # lowbit's spelling
    assert main(["eval", f"data_dir={mmlu_dir}", "dataset.subjects=[anatomy]", f"output_dir={tmp_path / 'never'}",
                 "--dry-run", "eval_predictor=vllm", "predictor_conf.vllm.gpu_memory_utilization=0.8"]) == 0
    printed = capsys.readouterr().out
    assert "gpu_memory_utilization: 0.8" in printed and "name: vllm" in printed and "eval_predictor" not in printed


@pytest.mark.parametrize("args, message", [
    (["model_config=qwen3_4B_int4.yaml"], "lowbit names a model config with model=<name>"),
    (["quant_type=nvfp4"], "lowbit quantizes with `lowbit quantize scheme=<scheme>`"),
    (["--config-name=quant"], "lowbit eval takes model=<config>"),
])
def test_the_reference_studys_other_spellings_name_lowbits_in_one_line(args, message, tmp_path, capsys):
    assert main(["eval", f"output_dir={tmp_path / 'never'}", *args]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lowbit: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "never").exists()
