"""Careless input through the real command line: each is one line naming the problem and the fix, exit 2, and
nothing written; checks that need no model run before one loads."""

import base64
import json
import os
import pickle
import subprocess
import zlib

import pytest
import torch
from safetensors.torch import save_file
from support import mmlu_redux_rows

from lowbit.cli import main

SUBJECT = "anatomy"


def write_data(folder, rows_or_lines) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows_or_lines]
    (folder / f"{SUBJECT}.jsonl").write_text("".join(line + "\n" for line in lines))


def eval_args(model, data_dir, output_dir, *extra) -> list[str]:
    return ["eval", "model=qwen3_4B", f"model_name={model}", "eval_dataset=mmlu-redux", f"data_dir={data_dir}",
            f"dataset.subjects=[{SUBJECT}]", f"output_dir={output_dir}", "predictor=transformers",
            "predictor_conf.show_progress=false", "sampling.max_sequence_length=320", *extra]


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 with exactly one error line, and return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lowbit: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def test_a_malformed_data_line_names_its_file_and_line(tiny_model, tmp_path, capsys):
    rows = [json.dumps(r) for r in mmlu_redux_rows(4)]
    rows[2] = rows[2][:25]
    write_data(tmp_path / "data", rows)
    err = one_line_error(capsys, eval_args(tiny_model, tmp_path / "data", tmp_path / "run"))
    assert f"{tmp_path / 'data' / SUBJECT}.jsonl:3 is not valid JSON" in err and "fix or remove that line" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, message", [
    (lambda row: row.pop("choices"), "the record has no 'choices' field"),
    (lambda row: row.update(answer="B"), "field 'answer' is a str, expected int"),
])
def test_a_data_row_missing_or_mistyping_a_field_is_one_line(change, message, tiny_model, tmp_path, capsys):
    rows = mmlu_redux_rows(4)
    change(rows[1])
    write_data(tmp_path / "data", rows)
    err = one_line_error(capsys, eval_args(tiny_model, tmp_path / "data", tmp_path / "run"))
    assert f"{SUBJECT}.jsonl:2: {message}" in err
    assert not (tmp_path / "run").exists()


def test_an_output_dir_that_is_a_file_or_read_only_is_refused_before_the_model_loads(tiny_model, tmp_path, capsys):
    write_data(tmp_path / "data", mmlu_redux_rows(4))
    a_file = tmp_path / "taken"
    a_file.write_text("not a directory")
    err = one_line_error(capsys, eval_args(tiny_model, tmp_path / "data", a_file))
    assert f"output_dir {a_file} is a file" in err
    under_file = a_file / "run"
    assert f"lies under the file {a_file}" in one_line_error(capsys, eval_args(tiny_model, tmp_path / "data",
                                                                               under_file))


def test_an_output_dir_on_a_read_only_file_system_is_refused_before_the_model_loads(tiny_model, tmp_path, capsys):
    write_data(tmp_path / "data", mmlu_redux_rows(4))
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)  # enough for a user other than root
    else:  # root writes into any directory; a read-only mount refuses even root
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)],
                                 capture_output=True, text=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        err = one_line_error(capsys, eval_args(tiny_model, tmp_path / "data", locked / "run"))
        assert f"output_dir {locked / 'run'} cannot be written ({locked} is not writable" in err
        assert not (locked / "run").exists()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", "-l", str(locked)], check=False)


def truncated_copy(model, target):
    """A copy of the checkpoint whose weights file lost its last kilobyte (an interrupted download)."""
    target.mkdir()
    for path in model.iterdir():
        if path.is_file():
            data = path.read_bytes()
            (target / path.name).write_bytes(data[:-1024] if path.suffix == ".safetensors" else data)
    return target


def test_a_truncated_checkpoint_is_one_line_in_eval_and_quantize(tiny_model, tmp_path, capsys):
    broken = truncated_copy(tiny_model, tmp_path / "broken")
    write_data(tmp_path / "data", mmlu_redux_rows(4))
    err = one_line_error(capsys, eval_args(broken, tmp_path / "data", tmp_path / "run"))
    assert "is not a readable safetensors file" in err and "truncated or damaged" in err
    assert not (tmp_path / "run").exists()
    err = one_line_error(capsys, ["quantize", f"model={broken}", "scheme=fp8", f"out={tmp_path / 'q'}"])
    assert "model.safetensors is not a readable safetensors file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "data"]


def test_a_torn_line_inside_predictions_is_refused_with_its_repair(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    item = {**mmlu_redux_rows(1)[0], "subject": SUBJECT, "index": 0}
    good = json.dumps({"id": "anatomy/0", "prompt": "p", "item": item, "preds": ["ANSWER: A"]})
    (run / "predictions.jsonl").write_text(good + "\n" + good[:40] + "\n" + good.replace("/0", "/1") + "\n")
    err = one_line_error(capsys, ["score", "-c", str(run), "task=mmlu-redux"])
    assert f"{run / 'predictions.jsonl'} line 2 is not valid JSON" in err
    assert f"sed -i '2d' {run / 'predictions.jsonl'}" in err and "rerun the same command" in err
    assert sorted(p.name for p in run.iterdir()) == ["predictions.jsonl"]


def lcb_record(private: str) -> dict:
    return {"question_title": "t", "question_content": "Print 1.", "platform": "atcoder", "question_id": "abc001_a",
            "contest_id": "abc001", "contest_date": "2024-11-02T00:00:00", "starter_code": "", "difficulty": "easy",
            "public_test_cases": json.dumps([{"input": "", "output": "1\n", "testtype": "stdin"}]),
            "private_test_cases": private, "metadata": "{}"}


class Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lowbit-pwned",))


def test_a_livecodebench_row_with_a_malicious_pickle_is_refused_by_dry_run(tiny_model, tmp_path, capsys):
    private = base64.b64encode(zlib.compress(pickle.dumps(Payload()))).decode()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "test.jsonl").write_text(json.dumps(lcb_record(private)) + "\n")
    err = one_line_error(capsys, ["eval", "model=qwen3_4B", f"model_name={tiny_model}", "eval_dataset=livecode_v5",
                                  f"data_dir={tmp_path / 'data'}", f"output_dir={tmp_path / 'run'}",
                                  "predictor=transformers", "--dry-run"])
    assert "LiveCodeBench problem abc001_a private tests" in err and "plain data" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("options, message", [
    (["max_seq_length=100000k"], "above the maximum of 1024k"),
    (["max_seq_length=128k", "num_samples=10000000"], "of memory per task while generating"),
])
def test_ruler_prepare_refuses_what_would_exhaust_the_host(options, message, tmp_path, capsys):
    err = one_line_error(capsys, ["ruler", "prepare", "tokenizer=/nonexistent/tokenizer", *options,
                                  f"out={tmp_path / 'r'}"])
    assert message in err and not (tmp_path / "r").exists()


def test_ruler_prepare_refuses_a_length_beyond_the_tokenizer(tmp_path, capsys):
    from lowbit.testing.data import shared_path

    tokenizers = shared_path("tokenizers")
    if tokenizers is None:
        pytest.skip("shared/data/tokenizers is absent (the Qwen3 tokenizer)")
    err = one_line_error(capsys, ["ruler", "prepare", f"tokenizer={tokenizers / 'qwen3'}", "max_seq_length=256k",
                                  f"out={tmp_path / 'r'}"])
    assert "model_max_length 131072" in err and "max_seq_length=131072" in err
    assert not (tmp_path / "r").exists()


def test_a_weight_off_the_block_is_refused_unless_partial_is_allowed(tiny_model, tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    for path in tiny_model.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            (source / path.name).write_bytes(path.read_bytes())
    from safetensors.torch import load_file

    tensors = load_file(tiny_model / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"
    tensors[name] = torch.zeros(tensors[name].shape[0], tensors[name].shape[1] - 8, dtype=torch.bfloat16)
    save_file(tensors, source / "model.safetensors")
    err = one_line_error(capsys, ["quantize", f"model={source}", "scheme=nvfp4", f"out={tmp_path / 'q'}"])
    assert "model.layers.0.mlp.down_proj" in err and "allow_partial=true" in err
    assert not (tmp_path / "q").exists()
    assert main(["quantize", f"model={source}", "scheme=nvfp4", f"out={tmp_path / 'q'}", "allow_partial=true"]) == 0
    out = capsys.readouterr().out
    assert "left unquantized (1 modules" in out and "model.layers.0.mlp.down_proj" in out


def test_ruler_generated_on_the_fly_is_refused_before_it_outgrows_memory(tiny_model, tmp_path, capsys):
    err = one_line_error(capsys, ["eval", "model=qwen3_4B", f"model_name={tiny_model}", "eval_dataset=ruler-vt-128k",
                                  "dataset.num_samples=10000000", f"dataset.cache_dir={tmp_path / 'cache'}",
                                  "sampling.max_sequence_length=131200", f"output_dir={tmp_path / 'run'}",
                                  "predictor=transformers"])
    assert "131072 tokens x num_samples=10000000 needs about" in err and "lower num_samples" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_prediction_line_of_another_shape_is_refused_with_its_repair(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "predictions.jsonl").write_text(json.dumps({"id": "anatomy/0", "completions": [{"txt": "A"}]}) + "\n")
    err = one_line_error(capsys, ["score", "-c", str(run), "task=mmlu-redux"])
    assert f"{run / 'predictions.jsonl'} line 1 is not a prediction (TypeError" in err and "sed -i '1d'" in err
