import pytest

from lowbit.config import compose_config, group_choices, resolve_eval
from lowbit.errors import UsageError

BASE = ["output_dir=/tmp/lowbit-test-run"]


def sampling_of(*overrides):
    return resolve_eval([*BASE, *overrides]).sampling


# (enable_thinking, temperature, top_p, top_k, presence_penalty, max_sequence_length) of the reference runs
QWEN3_4B = {
    "mmlu-redux": (False, 0.1, 0.8, 20, 1.0, 4096),
    "ifeval": (False, 0.1, 0.8, 20, 1.0, 8192),
    "ruler-32k": (False, 0.1, 0.8, 20, 1.0, 32768),
    "math500": (True, 0.6, 0.95, 20, 1.0, 32768),
    "math500-nonthinking": (False, 0.7, 0.8, 20, 1.5, 32768),
    "livecode_v5": (False, 0.7, 0.8, 20, 1.5, 32768),
    "livecode_v5-thinking": (True, 0.6, 0.95, 20, 1.0, 32768),
    "aime25": (True, 0.6, 0.95, 20, 1.0, 32768),
}


@pytest.mark.parametrize("block", QWEN3_4B)
def test_qwen3_4b_sampling_blocks(block):
    s = sampling_of("model=qwen3_4B", f"eval_dataset_config={block}")
    assert (s.enable_thinking, s.temperature, s.top_p, s.top_k, s.presence_penalty, s.max_sequence_length) == \
        QWEN3_4B[block]
    assert s.template == "qwen3" and s.do_sample and s.num_return_sequences == 1


def test_gpt_oss_sampling_blocks():
    for block, length in [("mmlu-redux", 16384), ("ruler-32k", 32768), ("ifeval", 4096)]:
        s = sampling_of("model=gpt_oss_20B", f"eval_dataset_config={block}")
        assert (s.temperature, s.top_p, s.top_k, s.max_sequence_length) == (1.0, 1.0, 100, length)
        assert s.template == "gpt_oss" and s.reasoning_effort == "medium"
    assert sampling_of("model=gpt_oss_20B", "eval_dataset_config=aime25").num_return_sequences == 8


def test_every_model_config_resolves_for_every_block():
    assert {"gpt_oss_20B", "qwen3_1.7B", "qwen3_30B_A3B_instruct", "qwen3_4B"} <= set(group_choices("model"))
    for model in group_choices("model"):
        for block in compose_config([f"model={model}"]).model.dataset_configs:
            sampling_of(f"model={model}", f"eval_dataset_config={block}")
    assert not any(sampling_of("model=qwen3_30B_A3B_instruct", f"eval_dataset_config={b}").enable_thinking
                   for b in ("mmlu-redux", "math500", "aime25"))
    assert resolve_eval([*BASE, "model=qwen3_30B_A3B_instruct"]).resolved["model_name"] == \
        "Qwen/Qwen3-30B-A3B-Instruct-2507"


def test_overrides_reach_the_resolved_config():
    cfg = resolve_eval([*BASE, "model_name=acme/Qwen3-4B-NVFP4", "precision=nvfp4", "sampling.temperature=0",
                        "predictor=transformers", "predictor_conf.batch_size=3", "dataset.subset=seed30", "limit=5", "seed=7"])
    r = cfg.resolved
    assert r["model_name"] == "acme/Qwen3-4B-NVFP4" and r["precision"] == "nvfp4"
    assert r["sampling"]["temperature"] == 0 and not cfg.sampling.is_random
    assert r["predictor_conf"]["batch_size"] == 3 and r["dataset"]["subset"] == "seed30"
    assert (r["limit"], r["seed"], r["eval_dataset_config"]) == (5, 7, "mmlu-redux")
    assert len(cfg.task.subjects) == 30


def test_vllm_is_the_default_predictor():
    options = resolve_eval(BASE).predictor_options
    assert options["name"] == "vllm" and options["enable_prefix_caching"] and not options["enforce_eager"]


def test_default_output_dir_names_model_precision_and_config():
    cfg = resolve_eval(["model=qwen3_1.7B", "precision=int4"])
    assert cfg.resolved["output_dir"] == "outputs/Qwen3-1.7B_int4_mmlu-redux"


def test_default_output_dirs_differ_per_benchmark_and_length(tiny_model):
    # RULER tasks share the ruler-32k sampling block: the directory names the task and its length
    paths = {resolve_eval([f"model_name={tiny_model}", f"eval_dataset={name}"]).resolved["output_dir"]
             for name in ("ruler-vt-4k", "ruler-vt-8k", "ruler-cwe-4k")}
    assert {path.rsplit("_", 1)[-1] for path in paths} == {"ruler-vt-4k", "ruler-vt-8k", "ruler-cwe-4k"}
    nonthinking = resolve_eval(["eval_dataset=math500", "eval_dataset_config=math500-nonthinking"])
    assert nonthinking.resolved["output_dir"] == "outputs/Qwen3-4B_bf16_math500-nonthinking"


@pytest.mark.parametrize("overrides, message", [
    (["eval_dataset=mmlu_redux"], "unknown eval_dataset 'mmlu_redux'. Did you mean 'mmlu-redux'? Available: "),
    (["model=qwen3_8B"], "unknown model 'qwen3_8B': choose one of gpt_oss_20B, "),
    (["predictor=sglang"], "unknown predictor 'sglang': choose one of "),
    (["eval_dataset_config=math"], "has no sampling config 'math': set eval_dataset_config= to one of mmlu-redux"),
    (["temprature=0.5"], "unknown config key 'temprature': valid keys at the top level are data_dir"),
    (["predictor_conf.batchsize=4"], "unknown config key 'predictor_conf.batchsize': valid keys under predictor_conf"),
    (["sampling.min_p=0"], "unknown config key 'sampling.min_p'"),
    (["dataset.subjet=anatomy"], "unknown dataset option(s) subjet for mmlu-redux; valid: subset, subjects"),
    (["dataset.subjects=[anatomy,astrology]"], "unknown MMLU-Redux subject(s) astrology"),
    (["dataset.answer_key=strict"], "unknown dataset.answer_key 'strict'; choose one of corrected, ok_only, original"),
    (["sampling.top_p=0"], "top_p must be in (0, 1]"),
    (["sampling.num_return_sequences=4", "sampling.do_sample=false"], "num_return_sequences > 1 needs sampling"),
    (["limit=0"], "limit must be a positive integer"),
    (["sampling.template=llama"], "unknown chat template 'llama'"),
    (["seed=abc"], "seed must be an integer"),
    (["model_name"], "cannot parse overrides"),
])
def test_bad_overrides_fail_with_one_line_naming_the_fix(overrides, message):
    with pytest.raises(UsageError) as error:
        resolve_eval([*BASE, *overrides])
    assert message in str(error.value)
    assert "\n" not in str(error.value)
