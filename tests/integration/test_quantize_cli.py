"""`lowbit quantize` / `lowbit dequantize` through the real command line, as a user runs them."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file
from support import run_lowbit


def test_quantize_then_dequantize_from_the_command_line(tiny_model, tmp_path):
    out, dense = tmp_path / "nvfp4", tmp_path / "bf16"
    done = run_lowbit("quantize", f"model={tiny_model}", "scheme=nvfp4", f"out={out}", "max_shard_size=1MB")
    assert done.returncode == 0, done.stderr
    assert f"checkpoint: {out}" in done.stdout and "quantized 14 modules to nvfp4 (rtn)" in done.stdout
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["format"] == "nvfp4-pack-quantized" and config["lowbit"]["source_model"] == str(tiny_model)
    assert len(list(out.glob("model-*-of-*.safetensors"))) > 1  # 1 MB shards
    assert (out / "tokenizer_config.json").is_file() and (out / "generation_config.json").is_file()

    done = run_lowbit("dequantize", f"in={out}", f"out={dense}")
    assert done.returncode == 0, done.stderr
    index = json.loads((dense / "model.safetensors.index.json").read_text())["weight_map"]
    weight = load_file(dense / index["model.layers.0.mlp.down_proj.weight"])["model.layers.0.mlp.down_proj.weight"]
    assert weight.dtype == torch.bfloat16 and weight.shape == (128, 256)


def test_bad_input_fails_with_one_line_and_leaves_no_output(tiny_model, tmp_path, capsys):
    # in-process through the same entry point (lowbit.cli.main): an interpreter start per case costs seconds
    from lowbit.cli import main

    cases = [
        (["quantize", f"model={tiny_model}", "scheme=nvfp5", f"out={tmp_path / 'a'}"], "unknown scheme 'nvfp5'"),
        (["quantize", f"model={tiny_model}", "scheme=fp8", f"out={tmp_path / 'b'}", "targets=[.*nothing]"],
         "match no weight"),
        (["quantize", f"model={tiny_model}", "scheme=fp8", f"out={tmp_path / 'c'}", "colour=red"],
         "unknown quantize option 'colour'"),
        (["quantize", f"model={tmp_path / 'missing'}", "scheme=fp8", f"out={tmp_path / 'd'}"], "is not a directory"),
        (["quantize", f"model={tiny_model}", "scheme=fp8", f"out={tiny_model}"], "out= is the source checkpoint"),
        (["quantize", f"model={tiny_model}", "scheme=w4a16", "group_size=64", f"out={tmp_path / 'f'}"],
         "takes group_size 128, 32"),
        (["dequantize", f"in={tiny_model}", f"out={tmp_path / 'g'}"], "has no quantization_config"),
        (["quantize", f"model={tiny_model}", "scheme=fp8"], "out= is required"),
    ]
    for args, message in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("lowbit: error:")]
        assert len(lines) == 1 and message in lines[0], (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_hub_id_that_cannot_be_downloaded_is_one_line(tmp_path):
    done = run_lowbit("quantize", "model=no-such-org/no-such-model", "scheme=fp8", f"out={tmp_path / 'out'}")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("lowbit: error: cannot download 'no-such-org/no-such-model'")
    assert list(tmp_path.iterdir()) == []
