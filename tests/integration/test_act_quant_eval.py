"""`lowbit eval ... predictor=transformers predictor_conf.act_quant=...` end to end on the tiny Qwen3, and the
predictor's validation of the emulation options (UsageError: one line, exit 2, nothing written)."""

import json
import re

import pytest
from support import read_jsonl, run_lowbit, write_mmlu_redux

pytestmark = pytest.mark.slow
SUBJECT = "anatomy"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_mmlu_redux(tmp_path_factory.mktemp("mmlu"), [SUBJECT], 3)


def eval_args(model, data_dir, output_dir, *extra):
    return ["eval", "model=qwen3_4B", f"model_name={model}", "precision=w8a8_fp8_emulated",
            "eval_dataset=mmlu-redux", f"data_dir={data_dir}", f"dataset.subjects=[{SUBJECT}]",
            f"output_dir={output_dir}", "predictor=transformers", "predictor_conf.show_progress=false",
            "sampling.max_sequence_length=96", "predictor_conf.prompt_overflow=left_truncate",
            "predictor_conf.overflow_reserve_tokens=16", "sampling.do_sample=false", *extra]


def test_eval_records_the_emulation_in_run_json(tiny_model, data_dir, tmp_path):
    output_dir = tmp_path / "run"
    result = run_lowbit(*eval_args(tiny_model, data_dir, output_dir, "predictor_conf.act_quant=fp8",
                                   "predictor_conf.weight_quant=fp8", "predictor_conf.quant_ignore=[lm_head,o_proj]"))
    assert result.returncode == 0, result.stderr
    predictions = read_jsonl(output_dir / "predictions.jsonl")
    assert len(predictions) == 3 and all(p["completions"][0]["completion_tokens"] > 0 for p in predictions)
    emulation = json.loads((output_dir / "run.json").read_text())["sessions"][-1]["predictor"]["emulation"]
    assert emulation["act_quant"] == "fp8" and emulation["weight_quant"] == "fp8"
    assert emulation["act_scheme"].startswith("FP8 E4M3, dynamic per token")
    assert emulation["backend"] == "ref" and emulation["quant_ignore"] == ["lm_head", "o_proj"]
    assert emulation["wrapped_count"] == 2 * 6  # two decoder layers, o_proj kept
    assert "model.layers.*.self_attn.o_proj" not in emulation["wrapped"]
    assert emulation["kept_linear"] == {"lm_head": 1, "model.layers.*.self_attn.o_proj": 2}


@pytest.mark.parametrize("options, message", [
    ({"act_quant": "fp4"}, "predictor_conf.act_quant 'fp4' is unknown: choose one of none, int8, fp8"),
    ({"weight_quant": "int3"}, "predictor_conf.weight_quant 'int3' is unknown"),
    ({"quant_ignore": ["(lm_head"]}, "predictor_conf.quant_ignore entry '(lm_head' is not a valid regular expression"),
    ({"act_quant": "fp8", "quant_targets": ["nothing"]},
     "cannot emulate act_quant=fp8 weight_quant=none: quant_targets"),
])
def test_bad_emulation_options_are_usage_errors(tiny_model, options, message):
    from lowbit.errors import UsageError
    from lowbit.predictors.transformers import TransformersPredictor

    with pytest.raises(UsageError, match=re.escape(message)) as error:
        TransformersPredictor(str(tiny_model), show_progress=False, **options)
    assert "\n" not in str(error.value)
