"""The vLLM backend's engine arguments (lowbit.divergence.vllm_backend.engine_args): the vLLM predictor's defaults
and option keys, with what prompt log-probabilities need."""

import pytest

from lowbit.divergence.vllm_backend import engine_args
from lowbit.errors import UsageError
from lowbit.predictors.options import defaults


def test_defaults_are_the_vllm_predictors_plus_what_prompt_logprobs_need():
    args = engine_args({}, "float32", longest=300, max_logprobs=64)
    predictor = defaults("vllm")
    assert args["gpu_memory_utilization"] == predictor["gpu_memory_utilization"]
    assert args["tensor_parallel_size"] == predictor["tensor_parallel_size"]
    assert args["max_model_len"] == 301  # the longest sequence and the one token generated
    assert args["dtype"] == "float32" and args["max_logprobs"] == 64 and args["logprobs_mode"] == "raw_logprobs"
    assert "chunk_size" not in args and "show_progress" not in args  # the predictor's own options stay out


def test_given_options_replace_the_defaults():
    args = engine_args({"gpu_memory_utilization": 0.25, "max_model_len": 4096, "enforce_eager": True}, "auto", 300,
                       16)
    assert (args["gpu_memory_utilization"], args["max_model_len"], args["enforce_eager"]) == (0.25, 4096, True)


def test_a_context_shorter_than_a_sequence_is_refused():
    with pytest.raises(UsageError, match=r"max_model_len=300 is shorter than the longest sequence plus one \(301"):
        engine_args({"max_model_len": 300}, "auto", 300, 16)


def test_a_wrongly_typed_option_names_its_key():
    with pytest.raises(UsageError, match="predictor_conf.gpu_memory_utilization"):
        engine_args({"gpu_memory_utilization": "most"}, "auto", 10, 16)
