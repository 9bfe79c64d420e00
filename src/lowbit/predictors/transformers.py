"""Hugging Face transformers backend: batched `generate()` with left padding.

- Prompts are sorted by token length (longest first, so memory problems show up at once) and batched, which
  keeps padding small; results are yielded per batch.
- Each prompt gets its own budget `max_sequence_length - prompt_tokens` new tokens, enforced per row by a
  stopping criterion; the batch runs until every row has stopped or spent its budget. Prompts with no room
  left follow `prompt_overflow` (see predictors.base.budget_prompts).
- Sampling follows vLLM/OpenAI semantics: presence penalty on the raw logits (a token already generated in
  this completion loses `presence_penalty` once), then temperature, top-k, top-p, in that order.
  transformers has no presence penalty, and would apply a custom processor after its own temperature and
  top-k/top-p, so all four are applied here and generate() itself runs with neutral sampling settings.
- finish_reason is "stop" when a stop token (the model's EOS / end-of-turn ids) ended the completion,
  "length" when the budget ran out; token counts include the stop token, the text does not.
- Sampling is seeded per batch from the run seed and the batch's prompts (transformers draws all rows from one
  generator), so a rerun with the same batching reproduces the same completions.
- `act_quant` / `weight_quant` emulate low-precision activations / weights on the selected Linear layers
  (lowbit.quant.fake_quant); describe() records exactly which layers, formats and kernels were used.
- A GPT-OSS checkpoint with per-expert experts (GPTQ's layout) loads with one Linear module per expert
  projection (lowbit.quant.gpt_oss_experts), which emulation then treats as any other Linear layer.
- A compressed-tensors checkpoint run in float16 or float32 is decompressed at load, and Linear weights that
  decompression left in another dtype (compressed-tensors decompresses NVFP4, MXFP4 and MXFP8 to bfloat16
  whatever the model's dtype) are cast to the model's; describe() lists them.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from lowbit.errors import UsageError
from lowbit.predictors.base import (BudgetedPrompt, LocalTokenizerPredictor, budget_prompts, progress_bar,
                                   request_seed)
from lowbit.predictors.options import predictor_options
from lowbit.records import Generation
from lowbit.sampling import Sampling

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class TransformersPredictor(LocalTokenizerPredictor):
    name = "transformers"
    # A compressed checkpoint's weights are decompressed as it loads, not in a hook of the whole model's first
    # forward pass: set by callers that run parts of the model alone (`lowbit divergence` runs the decoder).
    decompress_at_load = False

    def __init__(self, model_name: str, **options: Any):
        """`options`: predictor_conf keys (lowbit.predictors.options.TransformersOptions); the rest from
        conf/predictor/transformers.yaml."""
        super().__init__()
        from transformers import AutoTokenizer

        o = predictor_options("transformers", options)
        if o.batch_size < 1:
            raise UsageError(f"predictor_conf.batch_size must be >= 1, got {o.batch_size}")
        if o.dtype != "auto" and o.dtype not in DTYPES:
            raise UsageError(f"predictor_conf.dtype '{o.dtype}' unknown: choose auto, {', '.join(DTYPES)}")
        self.batch_size = o.batch_size
        self.show_progress = o.show_progress
        self.prompt_overflow = o.prompt_overflow
        self.overflow_reserve_tokens = o.overflow_reserve_tokens
        self.device_map = _resolve_device_map(o.device_map)
        quant_options = _check_quant_options(o.act_quant, o.weight_quant, o.quant_targets, o.quant_ignore)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=o.trust_remote_code)
            self.model = _load_model(
                model_name,
                decompress=self.decompress_at_load,
                dtype=DTYPES.get(o.dtype, "auto"),
                device_map=self.device_map,
                attn_implementation=o.attn_implementation,
                trust_remote_code=o.trust_remote_code,
            )
        except (OSError, ValueError) as e:  # missing files, unknown hub id, malformed repo id
            raise UsageError(f"cannot load model '{model_name}': {str(e).splitlines()[0]} "
                             "(give a local directory, or check the hub id and your network)") from e
        self.model.eval()
        self.cast_to_model_dtype = _cast_linear_weights_to_model_dtype(self.model)
        self.emulation = _apply_emulation(self.model, quant_options)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = _stop_token_ids(self.model.generation_config, self.tokenizer)
        # Checkpoints ship sampling defaults (Qwen3: temperature 0.6, top_k 20, ...) that generate() would merge
        # into every call; lowbit's sampling config is the only source of sampling settings.
        self.model.generation_config = _neutral_generation_config(self.stop_ids, self.tokenizer.pad_token_id)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def describe(self) -> dict[str, Any]:
        import transformers

        from lowbit.quant.fake_quant import layer_patterns

        return {
            "name": self.name,
            "transformers": transformers.__version__,
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "device": str(self.device),
            "batch_size": self.batch_size,
            "stop_token_ids": sorted(self.stop_ids),
            "weights_cast_to_model_dtype": layer_patterns(self.cast_to_model_dtype),
            "emulation": self.emulation.describe(),
        }

    def generate(
        self, prompts: list[str], sampling: Sampling, *, seed: int, keep_special_tokens: bool = False
    ) -> Iterator[list[tuple[int, list[Generation]]]]:
        planned = budget_prompts([self.encode(p) for p in prompts], sampling.max_sequence_length,
                                 overflow=self.prompt_overflow, reserve=self.overflow_reserve_tokens, stats=self.stats)
        order = sorted(range(len(prompts)), key=lambda i: -len(planned[i].token_ids))
        progress = progress_bar(len(prompts), self.show_progress)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            began = time.perf_counter()
            results = self._generate_batch([planned[i] for i in batch], sampling, seed, keep_special_tokens)
            elapsed = time.perf_counter() - began
            self.stats.seconds += elapsed
            new_tokens = sum(g.completion_tokens for gens in results for g in gens)
            progress.update(len(batch))
            progress.set_postfix(tok_s=f"{new_tokens / max(elapsed, 1e-9):.1f}")
            yield list(zip(batch, results))
        progress.close()

    @torch.inference_mode()
    def _generate_batch(
        self, batch: list[BudgetedPrompt], sampling: Sampling, seed: int, keep_special_tokens: bool
    ) -> list[list[Generation]]:
        n = sampling.num_return_sequences
        self.stats.prompts += len(batch)
        self.stats.prompt_tokens += sum(len(p.token_ids) for p in batch)
        runnable = [i for i, p in enumerate(batch) if p.budget > 0]
        results: list[list[Generation]] = [
            [Generation("", "length", len(p.token_ids), 0) for _ in range(n)] for p in batch
        ]
        if not runnable:
            return results

        prompts = [batch[i].token_ids for i in runnable]
        width = max(len(ids) for ids in prompts)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids in prompts])
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompts])
        row_budgets = torch.tensor([batch[i].budget for i in runnable]).repeat_interleave(n)
        torch.manual_seed(request_seed(seed, prompts))
        output = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=self._generation_config(sampling, int(row_budgets.max())),
            logits_processor=_sampling_processors(sampling, width),
            stopping_criteria=_stopping_criteria(width, row_budgets.to(self.device)),
        )
        generated = output[:, width:].tolist()
        for row, tokens in enumerate(generated):
            prompt_index = runnable[row // n]
            tokens = tokens[: int(row_budgets[row])]
            stop_at = next((k for k, t in enumerate(tokens) if t in self.stop_ids), None)
            kept = tokens if stop_at is None else tokens[:stop_at]
            results[prompt_index][row % n] = Generation(
                text=self.tokenizer.decode(kept, skip_special_tokens=not keep_special_tokens),
                finish_reason="length" if stop_at is None else "stop",
                prompt_tokens=len(batch[prompt_index].token_ids),
                completion_tokens=len(tokens) if stop_at is None else stop_at + 1,
            )
        self.stats.completion_tokens += sum(g.completion_tokens for gens in results for g in gens)
        return results

    def _generation_config(self, sampling: Sampling, max_new_tokens: int):
        # Temperature, top-k and top-p come from _sampling_processors, in vLLM's order.
        config = _neutral_generation_config(self.stop_ids, self.tokenizer.pad_token_id, do_sample=sampling.is_random)
        config.max_new_tokens = max_new_tokens
        config.num_return_sequences = sampling.num_return_sequences
        return config

    def close(self) -> None:
        self.emulation.remove()
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _load_model(model_name: str, decompress: bool = False, **kwargs: Any):
    """`AutoModelForCausalLM.from_pretrained`. A GPT-OSS checkpoint whose experts are stored per expert (what
    `lowbit quantize method=gptq` writes) has no fused `gate_up_proj`/`down_proj` for transformers' GPT-OSS to
    load: it is built with per-expert Linear experts (lowbit.quant.gpt_oss_experts) and, when compressed,
    decompressed at load rather than at the first forward pass, so weight emulation finds dense weights.
    A compressed checkpoint run in another dtype than bfloat16 is decompressed at load too, so that
    `_cast_linear_weights_to_model_dtype` finds the weights decompression left in bfloat16, and so is any
    compressed checkpoint when `decompress` asks for it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from lowbit.quant import gpt_oss_experts

    per_expert = gpt_oss_experts.stores_experts_per_expert(model_name)
    config = AutoConfig.from_pretrained(model_name, trust_remote_code=kwargs.get("trust_remote_code", False))
    quantization = getattr(config, "quantization_config", None) or {}
    dtype = getattr(config, "dtype", None) if kwargs.get("dtype", "auto") == "auto" else kwargs["dtype"]
    dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype  # a config may spell it
    decompress_at_load = quantization.get("quant_method") == "compressed-tensors" and (
        decompress or per_expert or dtype not in (torch.bfloat16, None))
    experts = gpt_oss_experts.linearized_gpt_oss_experts() if per_expert else contextlib.nullcontext()
    with experts, warnings.catch_warnings():
        if decompress_at_load:
            from transformers import CompressedTensorsConfig

            # overrides only the loading attribute `dequantize`; transformers warns that it merges the two
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")
            kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=True)
        return AutoModelForCausalLM.from_pretrained(model_name, **kwargs)


def _cast_linear_weights_to_model_dtype(model: Any) -> list[str]:
    """Cast the float weights (and biases) of Linear layers held in another float dtype than the model's
    (config.dtype) to it; returns those layers' names. compressed-tensors decompresses NVFP4, MXFP4 and MXFP8
    weights to bfloat16 whatever the model's dtype, which a float16 or float32 model cannot multiply with."""
    target = getattr(model.config, "dtype", None)
    if not isinstance(target, torch.dtype) or not target.is_floating_point:
        return []
    cast = []
    for name, module in model.named_modules():
        # a compressed layer still awaiting decompression holds packed tensors, not `weight`
        weight = getattr(module, "weight", None) if isinstance(module, torch.nn.Linear) else None
        if weight is not None and weight.dtype in DTYPES.values() and weight.dtype != target:
            module.weight.data = module.weight.data.to(target)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(target)
            cast.append(name)
    return cast


def _check_quant_options(act_quant: str, weight_quant: str, targets: list[str] | None,
                         ignore: list[str] | None) -> dict[str, Any]:
    """The fake-quant options, validated before the model is loaded (UsageError naming the key and the fix),
    formats by their canonical names."""
    from lowbit.quant import fake_quant
    from lowbit.quant.module_patterns import compile_patterns

    options = {"act_quant": act_quant, "weight_quant": weight_quant,
               "targets": list(fake_quant.DEFAULT_TARGETS if targets is None else targets),
               "ignore": list(fake_quant.DEFAULT_IGNORE if ignore is None else ignore)}
    try:
        options["act_quant"], options["weight_quant"] = fake_quant.check_formats(act_quant, weight_quant)
        compile_patterns(options["targets"], "quant_targets")
        compile_patterns(options["ignore"], "quant_ignore")
    except ValueError as e:
        raise UsageError(f"predictor_conf.{e}") from e
    return options


def _apply_emulation(model: Any, options: dict[str, Any]):
    from lowbit.quant import fake_quant

    try:
        return fake_quant.apply_fake_quant(model, **options)
    except ValueError as e:
        raise UsageError(f"cannot emulate act_quant={options['act_quant']} weight_quant={options['weight_quant']}: "
                         f"{e}") from e


def _resolve_device_map(device_map: str) -> str:
    if device_map != "auto":
        return device_map
    if not torch.cuda.is_available():
        return "cpu"
    return "auto" if torch.cuda.device_count() > 1 else "cuda"  # "auto": accelerate shards over the GPUs


def _stop_token_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    ids = generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise UsageError("the model defines no EOS token (generation_config.json or tokenizer): cannot tell when "
                         "a completion stops")
    return ids


def _neutral_generation_config(stop_ids: set[int], pad_token_id: int, do_sample: bool = False):
    """A generation config that adds no logits processor of its own. When sampling, top_k=0 and top_p=1.0 are
    explicit, since None would be filled with transformers' defaults (top_k=50)."""
    from transformers import GenerationConfig

    neutral = {"temperature": 1.0, "top_k": 0, "top_p": 1.0} if do_sample else {}
    return GenerationConfig(do_sample=do_sample, eos_token_id=sorted(stop_ids), pad_token_id=pad_token_id, **neutral)


class PresencePenalty:
    """Subtract `penalty` once from the logit of every token already present in this completion."""

    def __init__(self, penalty: float, prompt_width: int):
        self.penalty = penalty
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.prompt_width:]
        if generated.shape[1] == 0:
            return scores
        seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, generated, True)
        return scores - self.penalty * seen.to(scores.dtype)


def _sampling_processors(sampling: Sampling, prompt_width: int):
    from transformers import LogitsProcessorList
    from transformers.generation import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    processors: list[Any] = []
    if sampling.presence_penalty:
        processors.append(PresencePenalty(sampling.presence_penalty, prompt_width))
    if sampling.is_random:
        if sampling.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
        if sampling.top_k > 0:
            processors.append(TopKLogitsWarper(sampling.top_k))
        if sampling.top_p < 1.0:
            processors.append(TopPLogitsWarper(sampling.top_p))
    return LogitsProcessorList(processors)


def _stopping_criteria(prompt_width: int, row_budgets: torch.Tensor):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class RowBudget(StoppingCriteria):
        """Stops each row once it has generated its own budget of new tokens."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            return (input_ids.shape[1] - prompt_width) >= row_budgets

    return StoppingCriteriaList([RowBudget()])

