"""Calibrated quantization (GPTQ, optionally after SmoothQuant) and its RTN twin through llm-compressor.

`quantize_calibrated` loads a Hugging Face checkpoint, runs `llmcompressor.oneshot` with a recipe built from a
scheme name, and saves a compressed-tensors checkpoint (the format lowbit's RTN path writes and vLLM loads).
Its quantization_config carries a "lowbit" entry: scheme, method, recipe, calibration set (name, sha256 of
the token ids, count), library versions, and for MoE models the experts that the model's own routing sent no
calibration token (oneshot runs with `moe_calibrate_all_experts=True`, which sends every token through every
expert of the MoE blocks llm-compressor knows how to unfuse) and any fused experts module left as it was.
GPT-OSS experts are unfused by `lowbit.quant.gpt_oss_experts` (per-expert gate/up/down Linear modules, gate and
up de-interleaved); the checkpoint then names each expert's projections. A source that is already quantized
(GPT-OSS's native MXFP4 included) is refused: `lowbit dequantize` it first.

Schemes (weights symmetric; activations dynamic per token, nothing static):
    w4a16_g128 / w4a16_g32   INT4 weights in groups of 128 / 32
    w4a8, w4a8_no_attn       INT4 per-channel weights, INT8 per-token activations (attention kept in 16 bit)
    w8a16_g128               INT8 weights in groups of 128
    w8a8, w8a8_no_attn       INT8 per-channel weights, INT8 per-token activations (smoothquant=true usual)
    nvfp4a16                 NVFP4 weights (E4M3 scales per 16, global scale), 16-bit activations
Router gates and shared-expert gates are never quantized (DEFAULT_IGNORE), nor lm_head.

Tested with llmcompressor 0.12.0.2 installed with --no-deps beside torch 2.13, transformers 5.19 and
compressed-tensors 0.17.0 (its pins ask for torch<=2.12, transformers<=5.10.1, compressed-tensors==0.17.1).
One incompatibility is real: its MoE registry imports `GraniteMoeParallelExperts`, which transformers 5.19
no longer has, on every oneshot call; `_load_llmcompressor` registers an empty stand-in module for that one
import (GraniteMoE expert linearisation is then unavailable; no target model uses it).
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lowbit.errors import UsageError
from lowbit.quant.calibration import (
    DEFAULT_MAX_LENGTH,
    DEFAULT_NUM_SAMPLES,
    load_calibration,
)
from lowbit.quant.formats import registry
from lowbit.quant.formats.spec import FormatSpec
from lowbit.quant.module_patterns import NEVER_QUANTIZED

METHODS = ("rtn", "gptq")
DEFAULT_IGNORE = tuple(f"re:{pattern}" for pattern in NEVER_QUANTIZED)  # llm-compressor's "re:" selectors
ATTENTION = r"re:.*self_attn\..*"


@dataclass(frozen=True)
class Recipe:
    """A calibrated scheme: weights with the element of a registered format at a granularity of the recipe's
    own, activations dynamic per token in an activation format, or a compressed-tensors preset as it is."""

    weights: FormatSpec
    group_size: int | None  # None: one scale per output channel
    activations: FormatSpec | None = None
    skip_attention: bool = False  # attention projections kept in 16 bit
    preset: str | None = None
    commands: tuple[str, ...] = ()  # `lowbit quantize scheme=` names that select it; without group_size a name
    # selects the first recipe listing it


_fmt = registry.get_format
SCHEMES: dict[str, Recipe] = {
    "w4a16_g128": Recipe(_fmt("int4_g128"), 128, commands=("w4a16",)),
    "w4a16_g32": Recipe(_fmt("int4_g32"), 32, commands=("w4a16",)),
    "w4a8": Recipe(_fmt("int4_channel"), None, _fmt("int8"), commands=("w4a8",)),
    "w4a8_no_attn": Recipe(_fmt("int4_channel"), None, _fmt("int8"), True, commands=("w4a8-no-attn",)),
    "w8a16_g128": Recipe(_fmt("int8"), 128, commands=("w8a16",)),
    "w8a8": Recipe(_fmt("int8"), None, _fmt("int8"), commands=("int8", "w8a8")),
    "w8a8_no_attn": Recipe(_fmt("int8"), None, _fmt("int8"), True, commands=("w8a8-no-attn",)),
    "nvfp4a16": Recipe(_fmt("nvfp4"), _fmt("nvfp4").block_size, preset="NVFP4A16", commands=("nvfp4", "nvfp4a16")),
}
SMOOTHQUANT_STRENGTH = 0.8
COMMAND_NAMES = tuple(dict.fromkeys(name for recipe in SCHEMES.values() for name in recipe.commands))


def _load_llmcompressor():
    try:
        from transformers.models.granitemoe import modeling_granitemoe
    except ImportError:
        modeling_granitemoe = None
    if modeling_granitemoe is not None and not hasattr(modeling_granitemoe, "GraniteMoeParallelExperts"):
        stand_in = types.ModuleType("llmcompressor.modeling.moe.granitemoe")
        stand_in.GraniteMoeLinearExperts = None
        sys.modules.setdefault(stand_in.__name__, stand_in)
    try:
        import llmcompressor
    except ImportError as e:
        raise UsageError("calibrated quantization needs llm-compressor: pip install --no-deps "
                         "'llmcompressor==0.12.0.2' (see docs/emulation.md for the tested versions)") from e
    return llmcompressor


def scheme_config(scheme: str, targets: list[str]):
    """The compressed-tensors QuantizationScheme of a lowbit scheme name."""
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationScheme,
        preset_name_to_scheme,
    )

    if scheme not in SCHEMES:
        raise UsageError(f"unknown scheme '{scheme}' for calibrated quantization: choose one of {', '.join(SCHEMES)}")
    recipe = SCHEMES[scheme]
    if recipe.preset:
        return preset_name_to_scheme(recipe.preset, targets)
    weights = recipe.weights
    weight_args = QuantizationArgs(num_bits=weights.element_bits, type=weights.numeric_type,
                                   strategy="channel" if recipe.group_size is None else "group",
                                   group_size=recipe.group_size, symmetric=True)
    input_args = None
    if recipe.activations:
        activations = recipe.activations
        input_args = QuantizationArgs(num_bits=activations.element_bits, type=activations.numeric_type,
                                      strategy="token", symmetric=True, dynamic=True)
    return QuantizationScheme(targets=targets, weights=weight_args, input_activations=input_args)


def build_recipe(scheme: str, method: str, smoothquant: bool, targets: list[str], ignore: list[str]) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    if method not in METHODS:
        raise UsageError(f"unknown method '{method}': choose one of {', '.join(METHODS)}")
    config = scheme_config(scheme, targets)
    if smoothquant and config.input_activations is None:
        raise UsageError(f"smoothquant=true needs a scheme that quantizes activations (w4a8*, w8a8*), not {scheme}")
    ignore = list(ignore) + ([ATTENTION] if SCHEMES[scheme].skip_attention else [])
    modifier = GPTQModifier if method == "gptq" else QuantizationModifier
    recipe = [modifier(config_groups={"group_0": config}, ignore=ignore)]
    if smoothquant:
        recipe.insert(0, SmoothQuantModifier(smoothing_strength=SMOOTHQUANT_STRENGTH, ignore=ignore))
    return recipe


def count_routed_tokens(model: torch.nn.Module, dataset, device: str) -> dict[str, list[int]]:
    """Tokens each expert receives under the model's own routing, per router module (empty for dense models).

    A router is a module whose forward returns a tuple ending with integer expert indices (transformers'
    *TopKRouter), or a Linear named like a gate whose logits pick `num_experts_per_tok` experts.
    """
    top_k = getattr(model.config, "num_experts_per_tok", None)
    counts: dict[str, torch.Tensor] = {}
    handles = []

    def hook_for(name: str):
        def count(module, args, output):
            if isinstance(output, tuple) and output[-1].dtype in (torch.int32, torch.int64):
                indices, experts = output[-1], output[0].shape[-1]
            else:
                indices, experts = torch.topk(output, top_k, dim=-1).indices, output.shape[-1]
            hits = torch.bincount(indices.reshape(-1).cpu(), minlength=experts)
            counts[name] = counts.get(name, torch.zeros_like(hits)) + hits
        return count

    for name, module in model.named_modules():
        is_router = type(module).__name__.endswith("Router") or (
            top_k and isinstance(module, torch.nn.Linear) and name.endswith((".gate", ".router")))
        if is_router:
            handles.append(module.register_forward_hook(hook_for(name)))
    if handles:
        with torch.no_grad():
            for row in dataset:
                model(input_ids=torch.tensor([row["input_ids"]], device=device))
    for handle in handles:
        handle.remove()
    return {name: hits.tolist() for name, hits in counts.items()}


def uncalibrated_experts(routed: dict[str, list[int]]) -> dict[str, list[int]]:
    return {name: [i for i, n in enumerate(hits) if n == 0] for name, hits in routed.items() if 0 in hits}


def moe_record(model: torch.nn.Module, routed: dict[str, list[int]]) -> dict[str, Any]:
    """What calibration reached in an MoE model after oneshot: routers (kept unquantized), the per-expert
    modules each experts block was unfused into, experts the model's own routing sent no token, and fused
    experts blocks llm-compressor could not unfuse (their experts are neither calibrated nor quantized)."""
    from llmcompressor.modeling.moe.linear_experts import LinearExperts2D

    unfused = {name: module.num_experts for name, module in model.named_modules()
               if isinstance(module, LinearExperts2D)}
    fused = sorted(name for name, module in model.named_modules()
                   if isinstance(getattr(module, "down_proj", None), torch.nn.Parameter)
                   and module.down_proj.dim() == 3)
    return {"routers": sorted(routed), "experts_without_routed_tokens": uncalibrated_experts(routed),
            "moe_calibrate_all_experts": True, "experts_per_block": sorted(set(unfused.values())),
            "unfused_expert_blocks": len(unfused), "experts_not_quantized": fused}


def _refuse_quantized_source(model_dir, config) -> None:
    quantization = getattr(config, "quantization_config", None)
    if quantization:
        method = quantization.get("quant_method") if isinstance(quantization, dict) else \
            getattr(quantization, "quant_method", "?")
        raise UsageError(f"model '{model_dir}' is already quantized (quant_method={method}): run "
                         f"`lowbit dequantize in={model_dir} out=<dir>` and calibrate the BF16 checkpoint in <dir>")


def _versions() -> dict[str, str]:
    import compressed_tensors
    import transformers

    import lowbit

    llmcompressor = _load_llmcompressor()
    return {"lowbit": lowbit.__version__, "llmcompressor": llmcompressor.__version__,
            "compressed_tensors": compressed_tensors.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__}


def quantize_calibrated(
    model_dir: str | Path, out_dir: str | Path, *, scheme: str, method: str = "gptq", smoothquant: bool = False,
    calibration: str | None = None, num_samples: int = DEFAULT_NUM_SAMPLES, max_length: int = DEFAULT_MAX_LENGTH,
    seed: int = 42, targets: list[str] | None = None, ignore: list[str] | None = None, device: str = "auto",
) -> dict[str, Any]:
    """Quantize `model_dir` into a compressed-tensors checkpoint in `out_dir`; returns the "lowbit" record.

    `targets` / `ignore` are llm-compressor module selectors (class names like "Linear", module names, or
    "re:<regex>"); `ignore` replaces DEFAULT_IGNORE. `out_dir` must not exist (nothing partial is left on error).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise UsageError(f"output directory {out_dir} exists: remove it or choose another")
    targets = list(targets or ["Linear"])
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    _load_llmcompressor()
    recipe = build_recipe(scheme, method, smoothquant, targets, ignore)  # validates before loading anything

    from llmcompressor import oneshot
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lowbit.quant import gpt_oss_experts

    gpt_oss_experts.register()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        _refuse_quantized_source(model_dir, AutoConfig.from_pretrained(model_dir))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto", device_map=device)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load model '{model_dir}': {str(e).splitlines()[0]}") from e
    calibration_set = load_calibration(calibration, tokenizer, num_samples=num_samples, max_length=max_length,
                                       seed=seed)
    dataset = calibration_set.to_dataset()
    routed = count_routed_tokens(model, dataset, device)
    oneshot(model=model, dataset=dataset, recipe=recipe, max_seq_length=max_length,
            num_calibration_samples=len(dataset), shuffle_calibration_samples=False, moe_calibrate_all_experts=True)

    record = {"scheme": scheme, "method": method, "smoothquant": smoothquant, "source_model": str(model_dir),
              "targets": targets, "ignore": ignore, "recipe": [repr(m) for m in recipe],
              "calibration": calibration_set.info, "versions": _versions(),
              "moe": moe_record(model, routed) if routed else None}
    staging = out_dir.with_name(out_dir.name + ".partial")
    try:
        model.save_pretrained(staging, save_compressed=True)
        tokenizer.save_pretrained(staging)
        config_path = staging / "config.json"
        config = json.loads(config_path.read_text())
        config["quantization_config"]["lowbit"] = record
        config_path.write_text(json.dumps(config, indent=2) + "\n")
        from lowbit.quant.safetensors_io import honour_umask

        honour_umask(staging)  # transformers and safetensors write 0600 files
        staging.rename(out_dir)
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    return record


def calibrated_scheme(scheme: str, group_size: int | None) -> str:
    """The calibrated scheme a `lowbit quantize scheme= group_size=` pair names (UsageError if none): the
    recipe listing `scheme` with that group size, or without one the first recipe listing it."""
    for name, recipe in SCHEMES.items():
        if scheme in recipe.commands and group_size in (None, recipe.group_size):
            return name
    choices = ", ".join(f"{command}" + (f" group_size={recipe.group_size}" if recipe.group_size else "")
                        for recipe in SCHEMES.values() for command in recipe.commands)
    raise UsageError(f"scheme={scheme}" + (f" group_size={group_size}" if group_size else "") +
                     f" has no calibrated (llm-compressor) recipe: choose one of {choices}")


def quantize_request(request):
    """`lowbit quantize` through llm-compressor: method=gptq, smoothquant=true, or a scheme that quantizes
    activations statically in its config (w4a8, w8a8): a QuantizeRequest in, a ConversionResult out."""
    import shutil
    import time

    from lowbit.quant.checkpoint import ConversionResult

    scheme = calibrated_scheme(request.scheme, request.group_size)
    out = Path(request.out)
    if out.exists() and any(out.iterdir()) and not request.overwrite:
        raise UsageError(f"{out} is not empty: choose another out= or pass overwrite=true")
    target = out.with_name(out.name + ".new") if out.exists() else out
    started = time.perf_counter()
    quantize_calibrated(
        request.model, target, scheme=scheme, method=request.method, smoothquant=request.smoothquant,
        calibration=request.calibration, num_samples=request.num_calibration_samples,
        max_length=request.calibration_max_length, seed=request.seed,
        targets=[f"re:{t}" for t in request.targets] if request.targets else None,
        ignore=[f"re:{i}" for i in request.ignore] if request.ignore is not None else None,
        device=request.device,
    )
    if target != out:
        shutil.rmtree(out)
        target.rename(out)
    index = out / "model.safetensors.index.json"
    names = json.loads(index.read_text())["weight_map"] if index.exists() else _single_file_names(out)
    quantized = sorted({n.rsplit(".", 1)[0] for n in names if n.endswith((".weight_scale", ".weight_packed"))})
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    return ConversionResult(out=out, quantized=quantized, shards=shards, seconds=time.perf_counter() - started,
                            bytes_written=sum((out / s).stat().st_size for s in shards))


def _single_file_names(out: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", framework="pt") as f:
        return list(f.keys())
