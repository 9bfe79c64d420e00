"""What a `lowbit quantize` run will do, decided from the source's metadata before any weight is read: which
modules it quantizes (`plan_quantization`), the pipeline steps that read, quantize and write them in order
(`quantize_steps`), and the compressed-tensors quantization_config the output declares (`quantization_config`).
lowbit.quant.checkpoint runs the plan."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from lowbit.errors import UsageError
from lowbit.quant import gpt_oss_mxfp4
from lowbit.quant.module_patterns import NEVER_QUANTIZED, compile_patterns
from lowbit.quant.pipeline import ReadUnit
from lowbit.quant.safetensors_io import FLOAT_DTYPES, CheckpointReader
from lowbit.quant.schemes import fused_group, get_scheme

if TYPE_CHECKING:
    from lowbit.quant.checkpoint import QuantizeRequest

log = logging.getLogger(__name__)

# Regexes over module names, matched from the start as compressed-tensors and vLLM match "re:" patterns.
DEFAULT_IGNORE = (*NEVER_QUANTIZED, r".*embed", r".*norm$")
QUANT_METHOD = "compressed-tensors"


def _compile(patterns: list[str], key: str) -> list[re.Pattern]:
    try:
        return compile_patterns(patterns, key)
    except ValueError as e:
        raise UsageError(str(e)) from e


def _matches(name: str, patterns: list[re.Pattern]) -> bool:
    return any(p.match(name) for p in patterns)


def plan_quantization(reader: CheckpointReader, request: QuantizeRequest) -> tuple[dict[str, str], list[str]]:
    """({module: its .weight tensor} to quantize, [targeted modules left unquantized because of their shape])."""
    scheme = get_scheme(request.scheme)
    group_size = scheme.resolve_group_size(request.group_size)
    targets = _compile(request.targets or [], "targets")
    ignore = _compile(list(DEFAULT_IGNORE if request.ignore is None else request.ignore), "ignore")
    selected: dict[str, str] = {}
    for name in reader.names():
        if not name.endswith(".weight"):
            continue
        module = name.removesuffix(".weight")
        dtype, shape = reader.info(name)
        if len(shape) != 2 or _matches(module, ignore) or (targets and not _matches(module, targets)):
            continue
        if dtype not in FLOAT_DTYPES:
            raise UsageError(f"{name} has dtype {dtype}; lowbit quantizes BF16/F16/F32 weights (ignore= this "
                             "module, or dequantize the checkpoint first)")
        selected[module] = name
    if not selected:
        what = f"targets {request.targets}" if request.targets else "the default targets (2-D Linear weights)"
        raise UsageError(f"{what} match no weight of {reader.path} that ignore= leaves: check the patterns "
                         "(regexes matched from the start of module names, e.g. '.*mlp\\.down_proj')")
    groups: dict[str, list[str]] = {}
    for module in selected:
        if (group := fused_group(module)) is not None:
            groups.setdefault(group, []).append(module)
    siblings_present = {}
    for name in reader.names():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and (group := fused_group(module)) in groups:
            siblings_present.setdefault(group, set()).add(module)
    for group, members in groups.items():
        left_out = sorted(siblings_present[group] - set(members))
        if left_out:
            raise UsageError(f"targets/ignore select {', '.join(sorted(members))} but not {', '.join(left_out)}: "
                             "vLLM fuses them into one layer, so quantize all of them or none")
    misfits = {m for m, name in selected.items() if not scheme.fits(reader.info(name)[1], group_size)}
    for members in groups.values():  # a fused layer is quantized whole or not at all
        if misfits & set(members):
            misfits |= set(members)
    if misfits and not request.allow_partial:
        first = min(misfits)
        raise UsageError(f"{len(misfits)} of {len(selected)} targeted modules have shapes that are not a multiple of "
                         f"the {scheme.name} block {scheme.block_shape(group_size)} (e.g. {first}: "
                         f"{reader.info(selected[first])[1]}): pass allow_partial=true to keep them unquantized, or "
                         "choose a scheme whose block divides them")
    for module in sorted(misfits):
        log.warning("leaving %s unquantized: shape %s is not a multiple of the %s block %s", module,
                    reader.info(selected[module])[1], scheme.name, scheme.block_shape(group_size))
    return {m: n for m, n in selected.items() if m not in misfits}, sorted(misfits)


def quantization_config(request: QuantizeRequest, unquantized: list[str], source: str,
                        weight_scale_dtypes: set[torch.dtype] | None = None) -> dict[str, Any]:
    """The compressed-tensors quantization_config, plus lowbit's record of how it was made. The record's
    `weight_scale_dtype` is the dtype the `weight_scale` tensors were written in (a sorted list if they differ),
    which the weights args leave null where compressed-tensors' presets do (group-wise integer scales)."""
    import lowbit

    scale_dtypes = sorted(str(d) for d in weight_scale_dtypes or ())

    scheme = get_scheme(request.scheme)
    group_size = scheme.resolve_group_size(request.group_size)
    targets = [f"re:{p}" for p in request.targets] if request.targets else ["Linear"]
    ignore = [f"re:{p}" for p in (DEFAULT_IGNORE if request.ignore is None else request.ignore)] + unquantized
    return {
        "quant_method": QUANT_METHOD,
        "format": scheme.format,
        "quantization_status": "compressed",
        "config_groups": {"config_group_0": scheme.config_group(group_size, targets)},
        "ignore": ignore,
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "sparsity_config": {},
        "transform_config": {},
        "lowbit": {"version": lowbit.__version__, "scheme": scheme.name, "method": request.method,
                   "source_model": source, "group_size": group_size, "backend": request.backend,
                   "unquantized_modules": unquantized,
                   "weight_scale_dtype": scale_dtypes[0] if len(scale_dtypes) == 1 else scale_dtypes or None},
    }


# Fused siblings (q/k/v, gate/up) at most this many tensors apart in the source are read together, and their
# shared NVFP4 scale taken from them as they arrive; siblings further apart get it from a first pass of their own.
GROUP_READ_SPAN = 8


@dataclass(frozen=True)
class Step(ReadUnit):
    """One unit of the quantize pipeline: the tensors it reads and the output chunks its results fill."""

    kind: str  # "copy": written as read; "quantize": each name is a module's weight; "experts": GPT-OSS MXFP4
    chunks: tuple[int, ...]  # copy, quantize: the output chunk of each name read; experts: the block's one chunk


def quantize_steps(reader: CheckpointReader, quantize_names: dict[str, str], native_mxfp4: bool,
                   shared_scales: bool) -> tuple[list[Step], int, set[str]]:
    """(the pipeline's steps in source order, how many output chunks they fill, the fused groups whose members
    are too far apart to be read together). Fused siblings are read together only where they share a global
    scale (`shared_scales`); otherwise each weight is a step of its own.

    Output chunk i holds what the i-th written source tensor becomes, so writing chunks in number order writes
    the tensors in source order, whatever order the steps finish them in."""
    names = reader.names()
    chunk_of: dict[str, int] = {}
    for name in names:
        if native_mxfp4 and gpt_oss_mxfp4.expert_parameter(name) is not None \
                and not name.endswith(gpt_oss_mxfp4.BLOCKS_SUFFIX):
            continue  # an experts block's scales: read with its blocks
        chunk_of[name] = len(chunk_of)
    position = {name: i for i, name in enumerate(names)}
    members: dict[str, list[str]] = {}
    for name in names:
        if shared_scales and name in quantize_names and (group := fused_group(quantize_names[name])) is not None:
            members.setdefault(group, []).append(name)
    together = {group: group_names for group, group_names in members.items()
                if position[group_names[-1]] - position[group_names[0]] <= GROUP_READ_SPAN}
    steps, taken = [], set()
    for name in names:
        if name in taken or name not in chunk_of:
            continue
        if native_mxfp4 and (parameter := gpt_oss_mxfp4.expert_parameter(name)) is not None:
            scales = parameter + gpt_oss_mxfp4.SCALES_SUFFIX
            if scales not in reader.file_of:
                raise UsageError(f"{name} has no {scales}: the GPT-OSS checkpoint is incomplete")
            steps.append(Step((name, scales), True, "experts", (chunk_of[name],)))
        elif name not in quantize_names:
            steps.append(Step((name,), False, "copy", (chunk_of[name],)))
        else:
            read = together.get(fused_group(quantize_names[name]) or "", [name])
            taken.update(read)
            steps.append(Step(tuple(read), True, "quantize", tuple(chunk_of[n] for n in read)))
    return steps, len(chunk_of), set(members) - set(together)
