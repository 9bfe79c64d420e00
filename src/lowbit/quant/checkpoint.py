"""The two flows of `lowbit quantize` / `lowbit dequantize` over streamed checkpoints (files: safetensors_io).

`quantize_checkpoint` (round-to-nearest, `method=rtn`) and `dequantize_checkpoint` are the two flows of
`lowbit quantize` / `lowbit dequantize`. Dequantize holds at most one module's tensors plus one output shard (a
GPT-OSS experts block counts as one module: its experts are fused into, or dequantized from, one tensor per
projection); quantize overlaps reading, quantizing and writing (lowbit.quant.pipeline) and holds a few units of
tensors more: pipeline.DEFAULT_DEPTH read ahead, as many quantized and waiting for the writer. What quantize
reads, writes and declares is planned beforehand, from the source's metadata (lowbit.quant.quantize_plan).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lowbit.errors import UsageError
from lowbit.quant import gpt_oss_experts, gpt_oss_mxfp4
from lowbit.quant.safetensors_io import (
    DEFAULT_MAX_SHARD_BYTES,
    FLOAT_DTYPES,
    CheckpointReader,
    ShardWriter,
    copy_side_files,
    resolve_model,
    staged_output,
    write_config,
)
from lowbit.quant.pipeline import OrderedWriter, Prefetcher, to_host
from lowbit.quant.quantize_plan import QUANT_METHOD, Step, plan_quantization, quantization_config, quantize_steps
from lowbit.quant.schemes import (
    QUANTIZATION_ONLY_SUFFIXES,
    decode,
    fused_group,
    get_scheme,
)


# --- quantize --------------------------------------------------------------------------------------------------

@dataclass
class QuantizeRequest:
    """Everything `lowbit quantize` was asked to do; each method (rtn, ...) takes one."""

    model: str
    out: Path
    scheme: str
    group_size: int | None = None
    targets: list[str] | None = None  # regexes over module names; None: every 2-D `.weight` not ignored
    ignore: list[str] | None = None  # regexes over module names; None: quantize_plan.DEFAULT_IGNORE
    device: str = "cpu"
    backend: str = "ref"
    overwrite: bool = False
    method: str = "rtn"
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES
    allow_partial: bool = False  # write targeted modules whose shape misfits the block unquantized, not refuse
    # calibrated methods (lowbit.quant.gptq): SmoothQuant first, the calibration set (None: the default hub set)
    smoothquant: bool = False
    calibration: str | None = None
    num_calibration_samples: int = 512
    calibration_max_length: int = 2048
    seed: int = 42


@dataclass
class ConversionResult:
    out: Path
    quantized: list[str] = field(default_factory=list)  # module names written quantized
    unquantized: list[str] = field(default_factory=list)  # targeted modules left as they were (shape misfit)
    shards: list[str] = field(default_factory=list)
    bytes_read: int = 0
    bytes_written: int = 0
    peak_pending_bytes: int = 0
    peak_prefetched_bytes: int = 0  # quantize: source bytes read ahead of quantization (DEFAULT_DEPTH + 1 units)
    peak_unwritten_bytes: int = 0  # quantize: output bytes quantized but not yet handed to the shard writer
    largest_tensor_bytes: int = 0
    seconds: float = 0.0
    fused_experts: list[str] = field(default_factory=list)  # GPT-OSS experts blocks written fused (dequantize)


def _check_device(device: str, backend: str) -> torch.device:
    from lowbit.quant.formats.backend import check_backend

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"device must be cpu or cuda[:N], got '{device}'") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device=cuda but no CUDA GPU is visible: use device=cpu")
    try:
        check_backend(backend, torch.empty(1, device=dev))
    except ValueError as e:
        raise UsageError(f"backend={backend}: {e}") from e
    return dev


def _checked_amax(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """The largest magnitude over `weights` ({name: tensor}), as float32 on their device; NaN or Inf in any of
    them is a UsageError naming the first such tensor."""
    values = [torch.linalg.vector_norm(w, ord=float("inf")).to(torch.float32) for w in weights.values()]
    for name, finite in zip(weights, torch.isfinite(torch.stack(values)).tolist()):
        if not finite:
            raise UsageError(f"{name} contains NaN or Inf; fix the checkpoint or ignore= this module")
    return functools.reduce(torch.maximum, values)


def _shared_global_scales(reader: CheckpointReader, plan: dict[str, str], groups: set[str], device: torch.device,
                          shared_global_scale) -> dict[str, torch.Tensor]:
    """NVFP4: one global scale for each of the vLLM-fused `groups`, from a first pass that reads each member once."""
    amax: dict[str, torch.Tensor] = {}
    for module, name in plan.items():
        if (group := fused_group(module)) in groups:
            value = _checked_amax({name: reader.get(name).to(device)})
            amax[group] = torch.maximum(amax[group], value) if group in amax else value
    # The scale of a one-element tensor holding the group's amax is the scale of the group's tensors together.
    return {group: shared_global_scale(a.reshape(1)) for group, a in amax.items()}


def quantize_checkpoint(request: QuantizeRequest) -> ConversionResult:
    """Round-to-nearest quantization of every targeted Linear weight, streamed tensor by tensor: a reader thread
    reads ahead (onto the device, on CUDA), this thread quantizes, a writer thread writes the shards."""
    start = time.perf_counter()
    scheme = get_scheme(request.scheme)
    group_size = scheme.resolve_group_size(request.group_size)
    device = _check_device(request.device, request.backend)
    src, source = resolve_model(request.model)
    if Path(request.out).expanduser().absolute() == src.absolute():
        raise UsageError("out= is the source checkpoint: choose another directory")
    reader = CheckpointReader(src)
    source_quant = reader.config.get("quantization_config")
    native_mxfp4 = gpt_oss_mxfp4.is_native_mxfp4(reader.config)
    if source_quant and not native_mxfp4:
        raise UsageError(f"{src} is already quantized (quant_method {source_quant.get('quant_method')}): "
                         "run lowbit dequantize on it first")
    plan, unquantized = plan_quantization(reader, request)
    result = ConversionResult(out=Path(request.out), quantized=sorted(plan), unquantized=unquantized)
    quantize_names = {name: module for module, name in plan.items()}
    steps, chunks, scattered_groups = quantize_steps(reader, quantize_names, native_mxfp4,
                                                      scheme.shared_global_scale is not None)
    with staged_output(Path(request.out), request.overwrite) as staging:
        global_scales = (_shared_global_scales(reader, plan, scattered_groups, device, scheme.shared_global_scale)
                         if scattered_groups else {})
        writer = ShardWriter(staging, request.max_shard_bytes)
        scale_dtypes: set[torch.dtype] = set()
        with Prefetcher(reader.get, steps, device) as arriving, OrderedWriter(writer) as output:
            for step, tensors in arriving:
                result.bytes_read += sum(t.nbytes for t in tensors.values())
                measured = [tensors[step.names[0]]] if step.kind == "experts" else tensors.values()
                result.largest_tensor_bytes = max(result.largest_tensor_bytes, *(t.nbytes for t in measured))
                if step.kind == "copy":
                    output.put(step.chunks[0], list(tensors.items()))
                elif step.kind == "experts":
                    parameter = gpt_oss_mxfp4.expert_parameter(step.names[0])
                    dense = _dequantize_native(parameter, *tensors.values(), device, request.backend)
                    output.put(step.chunks[0], *to_host([(parameter, dense)]))
                else:
                    shared = _step_global_scale(step, tensors, quantize_names, global_scales, scheme, device)
                    for name, chunk in zip(step.names, step.chunks):
                        module = quantize_names[name]
                        try:
                            encoded = scheme.encode(tensors[name].to(device), group_size, request.backend,
                                                    None if shared is None else shared.clone())
                        except ValueError as e:
                            raise UsageError(f"{name}: {e}") from e
                        scale_dtypes.add(encoded["weight_scale"].dtype)
                        output.put(chunk, *to_host([(f"{module}.{suffix}", v) for suffix, v in encoded.items()]))
                        del encoded
                del tensors
            result.shards = output.finish(chunks)
        result.peak_prefetched_bytes = arriving.peak_prefetched_bytes
        result.peak_unwritten_bytes = output.peak_unwritten_bytes
        reader.close()
        config = dict(reader.config)
        config["quantization_config"] = quantization_config(request, unquantized, source, scale_dtypes)
        write_config(staging, config)
        copy_side_files(src, staging)
        result.bytes_written, result.peak_pending_bytes = writer.total_bytes, writer.peak_pending_bytes
    result.seconds = time.perf_counter() - start
    return result


def _step_global_scale(step: Step, tensors: dict[str, torch.Tensor], quantize_names: dict[str, str],
                       first_pass_scales: dict[str, torch.Tensor], scheme, device: torch.device) -> torch.Tensor | None:
    """The global scale a quantize step's modules share: a fused group's (from its members, which the step
    holds, or from the first pass), or None where each module takes its own (no group, or no such scale)."""
    group = fused_group(quantize_names[step.names[0]])
    if not scheme.shared_global_scale or group is None:
        return None
    if group in first_pass_scales:
        return first_pass_scales[group]
    amax = _checked_amax({name: tensors[name].to(device) for name in step.names})
    return scheme.shared_global_scale(amax.reshape(1))


def _native_experts(reader: CheckpointReader, parameter: str, device: torch.device, backend: str,
                    result: ConversionResult) -> torch.Tensor:
    blocks_name, scales_name = parameter + gpt_oss_mxfp4.BLOCKS_SUFFIX, parameter + gpt_oss_mxfp4.SCALES_SUFFIX
    if scales_name not in reader.file_of:
        raise UsageError(f"{blocks_name} has no {scales_name}: the GPT-OSS checkpoint is incomplete")
    blocks, scales = reader.get(blocks_name), reader.get(scales_name)
    result.bytes_read += blocks.nbytes + scales.nbytes
    result.largest_tensor_bytes = max(result.largest_tensor_bytes, blocks.nbytes)
    return _dequantize_native(parameter, blocks, scales, device, backend)


def _dequantize_native(parameter: str, blocks: torch.Tensor, scales: torch.Tensor, device: torch.device,
                       backend: str) -> torch.Tensor:
    try:
        return gpt_oss_mxfp4.dequantize_experts(blocks.to(device), scales.to(device), backend=backend)
    except ValueError as e:
        raise UsageError(f"{parameter}: {e}") from e


# --- dequantize ------------------------------------------------------------------------------------------------

def _pack_bits(quant_config: dict[str, Any]) -> int | None:
    bits = {(group.get("weights") or {}).get("num_bits") for group in (quant_config.get("config_groups") or {}).values()
            if isinstance(group, dict) and (group.get("format") or quant_config.get("format")) == "pack-quantized"}
    if len(bits) > 1:
        raise UsageError(f"pack-quantized config groups with different bit widths {sorted(bits)} are not supported")
    return bits.pop() if bits else None


WEIGHT_ENCODING_SUFFIXES = ("weight_scale", "weight_global_scale", "weight_shape", "weight_zero_point", "weight_g_idx")


def _is_quantized(members: dict[str, str]) -> bool:
    """Whether a module's stored tensors ({suffix: name}) hold a compressed weight."""
    return "weight_packed" in members or ("weight" in members and "weight_scale" in members)


def dense_dtype(config: dict[str, Any]) -> torch.dtype:
    """The dtype compressed weights are decoded to: float16 for a float16 model (config.json's `dtype`, or
    `torch_dtype` as older transformers wrote it), whose group-wise integer scales are float16 too, so decoding
    to bfloat16 would round away bits a float16 runtime keeps; bfloat16 for every other model."""
    return torch.float16 if config.get("dtype", config.get("torch_dtype")) == "float16" else torch.bfloat16


def _dense_weight(reader: CheckpointReader, module: str, members: dict[str, str], pack_bits: int | None,
                  device: torch.device, backend: str, result: ConversionResult) -> torch.Tensor:
    """A module's weight: decoded to dense_dtype when stored compressed, else as stored."""
    if not _is_quantized(members):
        weight = reader.get(members["weight"])
        result.bytes_read += weight.nbytes
        return weight
    tensors = {s: reader.get(n).to(device) for s, n in members.items() if s.startswith("weight")}
    result.bytes_read += sum(t.nbytes for t in tensors.values())
    try:
        weight = decode(module, tensors, pack_bits, dense_dtype(reader.config), backend=backend)
    except ValueError as e:
        raise UsageError(f"{module}: {e}") from e
    result.quantized.append(module)
    return weight


def _stored_float_dtype(reader: CheckpointReader, name: str) -> torch.dtype:
    dtype = reader.info(name)[0]
    if dtype not in FLOAT_DTYPES:
        raise UsageError(f"{name} has dtype {dtype}, not BF16/F16/F32: it cannot join GPT-OSS's fused experts")
    return FLOAT_DTYPES[dtype]


def _fused_experts(reader: CheckpointReader, block: str, experts: dict[int, dict[str, dict[str, str]]],
                   pack_bits: int | None, device: torch.device, backend: str,
                   result: ConversionResult) -> gpt_oss_experts.FusedExperts:
    """One GPT-OSS experts block in transformers' fused layout, from its per-expert projections (decoded one
    expert at a time into the preallocated fused tensors: memory is the block's output plus one expert)."""
    expected = reader.config.get("num_local_experts", len(experts))
    if missing := sorted(set(range(expected)) - set(experts)):
        raise UsageError(f"{block} lacks experts {missing} (config.json's num_local_experts is {expected}): the "
                         "checkpoint is incomplete")
    if extra := sorted(set(experts) - set(range(expected))):
        raise UsageError(f"{block} stores experts {extra} beyond config.json's num_local_experts {expected}: the "
                         "checkpoint does not match its config")
    weight_dtypes, bias_dtypes = [], []
    for index, projections in sorted(experts.items()):
        for projection in gpt_oss_experts.PROJECTIONS:
            members = projections.get(projection, {})
            for part, present in (("weight", "weight" in members or _is_quantized(members)),
                                  ("bias", "bias" in members)):
                if not present:
                    raise UsageError(f"{block}.{index}.{projection} has no {part}: the checkpoint is incomplete")
            weight_dtypes.append(dense_dtype(reader.config) if _is_quantized(members)
                                 else _stored_float_dtype(reader, members["weight"]))
            bias_dtypes.append(_stored_float_dtype(reader, members["bias"]))
    hidden, intermediate = reader.config.get("hidden_size"), reader.config.get("intermediate_size")
    fused = None
    for index in range(expected):
        weights, biases = {}, {}
        for projection in gpt_oss_experts.PROJECTIONS:
            members = experts[index][projection]
            module = f"{block}.{index}.{projection}"
            weights[projection] = _dense_weight(reader, module, members, pack_bits, device, backend, result).cpu()
            biases[projection] = reader.get(members["bias"])
            result.bytes_read += biases[projection].nbytes
        if fused is None:
            rows, columns = weights["gate_proj"].shape  # (I, H)
            if (hidden, intermediate) != (columns, rows) and None not in (hidden, intermediate):
                raise UsageError(f"{block}.0.gate_proj is ({rows}, {columns}) but config.json has intermediate_size "
                                 f"{intermediate} and hidden_size {hidden}: the checkpoint does not match its config")
            fused = gpt_oss_experts.FusedExperts.empty(
                expected, columns, rows, functools.reduce(torch.promote_types, weight_dtypes),
                functools.reduce(torch.promote_types, bias_dtypes))
        try:
            fused.set_expert(index, weights, biases)
        except ValueError as e:
            raise UsageError(f"{block}: {e}: the checkpoint is inconsistent") from e
        del weights, biases
    return fused


def dequantize_checkpoint(source: str, out: Path, *, overwrite: bool = False, device: str = "cpu",
                          backend: str = "ref", max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> ConversionResult:
    """A BF16 checkpoint from a compressed-tensors one (any of lowbit's formats) or GPT-OSS's native MXFP4;
    FP16 from a float16 model (`dense_dtype`).

    GPT-OSS experts stored per expert (`model.layers.L.mlp.experts.E.{gate,up,down}_proj`, as GPTQ writes them)
    are written in transformers' fused layout (`mlp.experts.gate_up_proj`, gate/up interleaved, ...)."""
    start = time.perf_counter()
    dev = _check_device(device, backend)
    src = Path(source).expanduser()
    reader = CheckpointReader(src)
    quant_config = reader.config.get("quantization_config") or {}
    method = quant_config.get("quant_method")
    if method not in (QUANT_METHOD, gpt_oss_mxfp4.QUANT_METHOD):
        what = "has no quantization_config" if not method else f"uses quant_method {method}"
        raise UsageError(f"{src} {what}; lowbit dequantize reads compressed-tensors and GPT-OSS MXFP4 checkpoints")
    if method == QUANT_METHOD and quant_config.get("quantization_status", "compressed") != "compressed":
        raise UsageError(f"{src} is not stored compressed (quantization_status "
                         f"{quant_config.get('quantization_status')}): its weights are already dense")
    pack_bits = _pack_bits(quant_config) if method == QUANT_METHOD else None
    result = ConversionResult(out=Path(out))
    modules: dict[str, dict[str, str]] = {}
    for name in reader.names():
        module, _, suffix = name.rpartition(".")
        modules.setdefault(module, {})[suffix] = name
    # GPT-OSS experts stored per expert (GPTQ's layout) are written back in the fused layout transformers loads
    per_expert = (gpt_oss_experts.per_expert_blocks(reader.names())
                  if method == QUANT_METHOD and gpt_oss_experts.is_gpt_oss(reader.config) else {})
    with staged_output(Path(out), overwrite) as staging:
        writer = ShardWriter(staging, max_shard_bytes)
        for name in reader.names():
            module, _, suffix = name.rpartition(".")
            members = modules[module]
            if method == gpt_oss_mxfp4.QUANT_METHOD:
                if (parameter := gpt_oss_mxfp4.expert_parameter(name)) is not None:
                    if name.endswith(gpt_oss_mxfp4.BLOCKS_SUFFIX):
                        writer.add(parameter, _native_experts(reader, parameter, dev, backend, result))
                        result.quantized.append(parameter)
                    continue
            elif per_expert and (parsed := gpt_oss_experts.per_expert_tensor(name)) is not None:
                block = parsed[0]
                if block not in result.fused_experts:  # the block's first tensor: the whole block, once
                    fused = _fused_experts(reader, block, per_expert[block], pack_bits, dev, backend, result)
                    for fused_name, tensor in fused.named_tensors(block).items():
                        writer.add(fused_name, tensor)
                    result.fused_experts.append(block)
                    del fused
                continue
            elif _is_quantized(members):
                if suffix in ("weight", "weight_packed"):
                    writer.add(f"{module}.weight", _dense_weight(reader, module, members, pack_bits, dev, backend,
                                                                 result))
                    continue
                if suffix in WEIGHT_ENCODING_SUFFIXES:
                    continue
            if suffix in QUANTIZATION_ONLY_SUFFIXES:
                continue
            tensor = reader.get(name)
            result.bytes_read += tensor.nbytes
            writer.add(name, tensor)
        result.shards = writer.finish()
        reader.close()
        config = {k: v for k, v in reader.config.items() if k != "quantization_config"}
        write_config(staging, config)
        copy_side_files(src, staging)
        result.bytes_written, result.peak_pending_bytes = writer.total_bytes, writer.peak_pending_bytes
    result.seconds = time.perf_counter() - start
    return result
