"""The options of each predictor (`predictor_conf.*`): their types here, their defaults in one place,
conf/predictor/<name>.yaml, which `lowbit eval` composes and every predictor constructor reads.

    TransformersPredictor("ckpts/qwen3", batch_size=4)  # every other option: conf/predictor/transformers.yaml
"""

from __future__ import annotations

import functools
import importlib.resources
import typing
from dataclasses import dataclass, fields
from typing import Any

from lowbit.errors import UsageError
from lowbit.overrides import check_type


@dataclass(frozen=True)
class VLLMOptions:
    tensor_parallel_size: int
    pipeline_parallel_size: int
    data_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int | None
    max_num_batched_tokens: int | None
    max_num_seqs: int | None
    enable_prefix_caching: bool
    quantization: str | None
    enforce_eager: bool
    cpu_offload_gb: float
    dtype: str
    kv_cache_dtype: str
    trust_remote_code: bool
    chunk_size: int
    show_progress: bool
    prompt_overflow: str
    overflow_reserve_tokens: int


@dataclass(frozen=True)
class TransformersOptions:
    batch_size: int
    dtype: str
    device_map: str
    attn_implementation: str | None
    trust_remote_code: bool
    show_progress: bool
    prompt_overflow: str
    overflow_reserve_tokens: int
    act_quant: str
    weight_quant: str
    quant_targets: list[str] | None
    quant_ignore: list[str] | None


@dataclass(frozen=True)
class OpenAIOptions:
    base_url: str
    model: str | None
    api_key_env: str | None
    max_concurrency: int
    timeout_s: float
    max_retries: int
    backoff: dict[str, float]
    extra_body: dict[str, Any] | None
    tokenizer: str
    sampling_extensions: bool
    show_progress: bool


OPTIONS: dict[str, type] = {"vllm": VLLMOptions, "transformers": TransformersOptions, "openai": OpenAIOptions}


@functools.cache
def _defaults(predictor: str) -> dict[str, Any]:
    import yaml

    text = (importlib.resources.files("lowbit.conf") / "predictor" / f"{predictor}.yaml").read_text()
    return yaml.safe_load(text)


def defaults(predictor: str) -> dict[str, Any]:
    """conf/predictor/<predictor>.yaml without its `name`."""
    values = dict(_defaults(predictor))
    values.pop("name", None)
    return values


def option_type(predictor: str, key: str) -> Any:
    """The type of `predictor_conf.<key>` (dotted for nested keys, e.g. backoff.initial_s); KeyError if none."""
    first, _, rest = key.partition(".")
    annotation = typing.get_type_hints(OPTIONS[predictor])[first]
    for _part in filter(None, rest.split(".")):
        if typing.get_origin(annotation) is not dict:
            raise KeyError(key)
        annotation = typing.get_args(annotation)[1]
    return annotation


def predictor_options(predictor: str, given: dict[str, Any]) -> Any:
    """The predictor's options: the YAML defaults replaced by `given`, each checked against its type."""
    cls = OPTIONS[predictor]
    values = {**defaults(predictor), **given}
    values.pop("name", None)
    valid = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise UsageError(f"unknown predictor_conf key(s) {', '.join(unknown)} for {predictor}; "
                         f"valid: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: check_type(f"predictor_conf.{key}", value, hints[key]) for key, value in values.items()})
