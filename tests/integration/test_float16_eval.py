"""float16 end to end through the real command line (GPUs without bfloat16): a float16 model quantized by
`lowbit quantize` and evaluated by `lowbit eval predictor=transformers predictor_conf.dtype=float16`, and the
same model evaluated with W4A4 emulation in float16."""

import json
import shutil

import pytest
import torch
from support import read_jsonl, run_lowbit, write_mmlu_redux

pytestmark = pytest.mark.slow
SUBJECT = "anatomy"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mmlu_redux(tmp_path_factory.mktemp("mmlu"), [SUBJECT], 3)


@pytest.fixture(scope="module")
def float16_model(tiny_model, tmp_path_factory):
    """The tiny Qwen3 (tokenizer and generation config included) saved in float16."""
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-qwen3-fp16") / "model"
    shutil.copytree(tiny_model, out)
    AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float16).save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    return out


def evaluate(model, data_dir, output_dir, *extra) -> dict:
    """run.json's last predictor session of a limit=2 greedy MMLU-Redux run in float16 (two predictions checked)."""
    result = run_lowbit("eval", "model=qwen3_4B", f"model_name={model}", "eval_dataset=mmlu-redux",
                        f"data_dir={data_dir}", f"dataset.subjects=[{SUBJECT}]", "limit=2",
                        f"output_dir={output_dir}", "predictor=transformers", "predictor_conf.dtype=float16",
                        "predictor_conf.show_progress=false", "sampling.max_sequence_length=64",
                        "predictor_conf.prompt_overflow=left_truncate", "predictor_conf.overflow_reserve_tokens=8",
                        "sampling.do_sample=false", *extra)
    assert result.returncode == 0, result.stderr
    predictions = read_jsonl(output_dir / "predictions.jsonl")
    assert len(predictions) == 2 and all(p["completions"][0]["completion_tokens"] > 0 for p in predictions)
    predictor = json.loads((output_dir / "run.json").read_text())["sessions"][-1]["predictor"]
    assert predictor["dtype"] == "float16"
    return predictor


def test_a_float16_nvfp4_checkpoint_evaluates_in_float16(float16_model, data_dir, tmp_path):
    quantized = tmp_path / "nvfp4"
    done = run_lowbit("quantize", f"model={float16_model}", "scheme=nvfp4", f"out={quantized}")
    assert done.returncode == 0, done.stderr
    predictor = evaluate(quantized, data_dir, tmp_path / "run", "precision=nvfp4")
    # compressed-tensors decompresses NVFP4 to bfloat16: every quantized Linear is cast to the model's float16
    assert predictor["weights_cast_to_model_dtype"] == {
        f"model.layers.*.{name}": 2 for name in ("mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj",
                                                 "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj")}


def test_w4a4_emulation_evaluates_in_float16(float16_model, data_dir, tmp_path):
    predictor = evaluate(float16_model, data_dir, tmp_path / "run", "precision=w4a4_nvfp4_emulated",
                         "predictor_conf.act_quant=nvfp4", "predictor_conf.weight_quant=nvfp4")
    emulation = predictor["emulation"]
    assert (emulation["act_quant"], emulation["weight_quant"], emulation["backend"]) == ("nvfp4", "nvfp4", "ref")
    assert emulation["wrapped_count"] == 2 * 7 and predictor["weights_cast_to_model_dtype"] == {}
