"""The overlapped quantize pipeline: the same bytes as a one-tensor-at-a-time conversion, bounded read-ahead and
write-behind, errors of the reader and writer threads raised as themselves with no output left behind."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from lowbit.quant import pipeline, quantize_plan
from lowbit.quant import safetensors_io as ckpt_files
from lowbit.quant.checkpoint import QuantizeRequest, quantize_checkpoint
from lowbit.quant.safetensors_io import CheckpointReader, ShardWriter
from lowbit.quant.schemes import fused_group, get_scheme

from test_checkpoint import layer_tensors, leaves_nothing, write_checkpoint


def sequential_quantize(source: Path, out: Path, scheme_name: str, max_shard_bytes: int, device: str = "cpu",
                        backend: str = "ref") -> None:
    """Shards and index as a strictly sequential conversion writes them: each tensor read, quantized and added in
    source order, fused siblings' NVFP4 scales from a first pass."""
    scheme = get_scheme(scheme_name)
    group_size = scheme.resolve_group_size(None)
    reader = CheckpointReader(source)
    plan, _ = quantize_plan.plan_quantization(reader, QuantizeRequest(model=str(source), out=out, scheme=scheme_name))
    amax: dict[str, torch.Tensor] = {}
    for module, name in plan.items():
        if scheme.shared_global_scale and (group := fused_group(module)) is not None:
            value = reader.get(name).to(device).float().abs().max()
            amax[group] = torch.maximum(amax[group], value) if group in amax else value
    scales = {group: scheme.shared_global_scale(a.reshape(1)) for group, a in amax.items()}
    out.mkdir()
    writer = ShardWriter(out, max_shard_bytes)
    modules = {name: module for module, name in plan.items()}
    for name in reader.names():
        if name not in modules:
            writer.add(name, reader.get(name))
            continue
        shared = scales.get(fused_group(modules[name]) or "")
        encoded = scheme.encode(reader.get(name).to(device), group_size, backend,
                                None if shared is None else shared.clone())
        for suffix, value in encoded.items():
            writer.add(f"{modules[name]}.{suffix}", value)
    writer.finish()


def weight_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())
            if p.name.endswith(".safetensors") or p.name == ckpt_files.INDEX}


def model(tmp_path: Path, layers: int, shards: int, seed: int = 0) -> Path:
    generator = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(512, 256, generator=generator).to(torch.bfloat16),
               "model.norm.weight": torch.ones(256, dtype=torch.bfloat16)}
    for layer in range(layers):
        tensors.update(layer_tensors(layer, generator))
    return write_checkpoint(tmp_path / f"src-{shards}", tensors, shards=shards)


# shards=1: each layer's siblings sit together and are read together; shards=3: the source's files take every
# third tensor, siblings land in different files and their NVFP4 scale comes from a first pass.
@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp4", "fp8", "w4a16"])
def test_pipelined_output_is_byte_identical_to_a_sequential_conversion(tmp_path, scheme, shards):
    source = model(tmp_path, layers=3, shards=shards)
    shard_bytes = 400_000  # several output shards, so their boundaries are compared too
    quantize_checkpoint(QuantizeRequest(model=str(source), out=tmp_path / "q", scheme=scheme,
                                        max_shard_bytes=shard_bytes))
    sequential_quantize(source, tmp_path / "seq", scheme, shard_bytes)
    pipelined, expected = weight_files(tmp_path / "q"), weight_files(tmp_path / "seq")
    assert len(expected) > 2 and list(pipelined) == list(expected)
    for file in expected:
        assert pipelined[file] == expected[file], file


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["ref", "triton"])
@pytest.mark.parametrize("scheme", ["nvfp4", "mxfp4", "fp8", "w4a16"])
def test_pipelined_output_on_the_gpu_is_byte_identical_to_a_sequential_conversion(tmp_path, scheme, backend):
    source = model(tmp_path, layers=3, shards=1)
    quantize_checkpoint(QuantizeRequest(model=str(source), out=tmp_path / "q", scheme=scheme, device="cuda",
                                        backend=backend, max_shard_bytes=400_000))
    sequential_quantize(source, tmp_path / "seq", scheme, 400_000, "cuda", backend)
    assert weight_files(tmp_path / "q") == weight_files(tmp_path / "seq")


def mapped_files(directory: Path) -> set[str]:
    """Files under `directory` that this process has memory-mapped now (Linux's /proc/self/maps)."""
    prefix = str(directory.resolve())
    fields = (line.split(maxsplit=5) for line in Path("/proc/self/maps").read_text().splitlines())
    return {f[5].strip() for f in fields if len(f) == 6 and f[5].startswith(prefix)}


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="needs Linux's /proc/self/maps")
def test_the_reader_keeps_only_its_most_recent_files_mapped(tmp_path):
    """A tensor read is a view of its file's mapping, and the pages read stay resident while the file is mapped:
    a reader that kept every file open would hold a whole checkpoint in its resident set by the end."""
    source = model(tmp_path, layers=3, shards=5)
    reader = CheckpointReader(source)
    seen: set[str] = set()
    for name in reader.names():
        tensor = reader.get(name)
        assert tensor.float().abs().sum() >= 0  # the pages are touched
        del tensor
        now = mapped_files(source)
        assert len(now) <= CheckpointReader.OPEN_FILES, now
        seen |= now
    assert len(seen) == 5  # every file was read, each mapped in its turn
    kept = reader.get(reader.names()[0])  # a tensor keeps its file's mapping alive after the handle goes
    reader.close()
    assert len(mapped_files(source)) == 1
    del kept
    assert mapped_files(source) == set()


def test_fused_siblings_close_together_are_read_once_and_far_apart_in_a_first_pass(tmp_path, monkeypatch):
    reads: list[str] = []
    original = CheckpointReader.get

    def counting_get(self, name):
        reads.append(name)
        return original(self, name)

    monkeypatch.setattr(CheckpointReader, "get", counting_get)
    for shards, read_twice in ((1, 0), (3, 15)):  # 3 layers of q/k/v and gate/up: 15 siblings
        reads.clear()
        source = model(tmp_path, layers=3, shards=shards)
        quantize_checkpoint(QuantizeRequest(model=str(source), out=tmp_path / f"q{shards}", scheme="nvfp4"))
        assert len(reads) - len(set(reads)) == read_twice


@pytest.mark.parametrize("scheme", ["fp8", "nvfp4"])  # nvfp4 reads fused siblings together
def test_read_ahead_and_write_behind_stay_within_the_pipeline_depth(tmp_path, monkeypatch, scheme):
    source = model(tmp_path, layers=6, shards=1, seed=1)
    slow_add = ShardWriter.add

    def add_slowly(self, name, tensor):  # a slow disk: the reader and the quantizer run as far ahead as allowed
        time.sleep(0.002)
        slow_add(self, name, tensor)

    monkeypatch.setattr(ShardWriter, "add", add_slowly)
    limit = 300_000
    result = quantize_checkpoint(QuantizeRequest(model=str(source), out=tmp_path / "q", scheme=scheme,
                                                 max_shard_bytes=limit))
    depth = pipeline.DEFAULT_DEPTH
    largest_unit = 2 * result.largest_tensor_bytes  # gate/up, read together for nvfp4
    assert 0 < result.peak_prefetched_bytes <= (depth + 1) * largest_unit
    # queued chunks plus those finished early, while the few tensors between fused siblings are quantized
    largest_output = result.largest_tensor_bytes // 2 + 4 * 512  # an FP8 gate/up weight and its scales, or more
    assert 0 < result.peak_unwritten_bytes <= (depth + quantize_plan.GROUP_READ_SPAN) * largest_output
    assert result.peak_pending_bytes <= limit
    assert result.bytes_written > 6 * limit  # while many shards are written


def test_prefetcher_reads_at_most_depth_units_ahead_of_its_consumer():
    events: list[tuple[str, int]] = []
    units = [pipeline.ReadUnit((str(i),), False) for i in range(12)]

    def read(name):
        events.append(("read", int(name)))
        return torch.zeros(4)

    with pipeline.Prefetcher(read, units, torch.device("cpu"), depth=2) as arriving:
        for unit, tensors in arriving:
            time.sleep(0.01)
            events.append(("used", int(unit.names[0])))
            assert list(tensors) == list(unit.names)
    assert [i for kind, i in events if kind == "used"] == list(range(12))
    used = -1
    for kind, i in events:
        if kind == "used":
            used = i
        else:
            assert i <= used + 1 + 2 + 1  # the one being handed over, two queued, one waiting for room


def test_ordered_writer_writes_chunks_in_number_order_whatever_order_they_arrive(tmp_path):
    shard_writer = ShardWriter(tmp_path, 10**6)
    with pipeline.OrderedWriter(shard_writer, depth=2) as output:
        for number in (1, 0, 3, 2):
            output.put(number, [(f"t{number}.a", torch.full((2,), number)), (f"t{number}.b", torch.zeros(1))])
        output.put(4, [])
        output.finish(5)
    assert shard_writer._shards[0][1] == [f"t{n}.{p}" for n in range(4) for p in "ab"]


class Broken(OSError):
    pass


def no_pipeline_threads() -> bool:
    return not [t for t in threading.enumerate() if t.name.startswith("checkpoint-")]


@pytest.mark.parametrize("where", ["reader", "writer", "quantizer"])
def test_errors_in_any_thread_are_raised_as_themselves_and_leave_no_output(tmp_path, monkeypatch, where):
    source = model(tmp_path, layers=4, shards=2)
    failure = Broken(f"{where} failed")
    if where == "reader":
        original = CheckpointReader.get
        monkeypatch.setattr(CheckpointReader, "get", lambda self, name: (
            (_ for _ in ()).throw(failure) if name.startswith("model.layers.2.") else original(self, name)))
    elif where == "writer":
        monkeypatch.setattr(ckpt_files.ShardWriter, "flush", lambda self: (_ for _ in ()).throw(failure))
    else:
        def fail(*args, **kwargs):
            raise failure
        monkeypatch.setattr(type(get_scheme("fp8")), "encode", fail)
    out = tmp_path / "q"
    with pytest.raises(Broken) as raised:
        quantize_checkpoint(QuantizeRequest(model=str(source), out=out, scheme="fp8", max_shard_bytes=200_000))
    assert raised.value is failure
    assert leaves_nothing(tmp_path, out)
    assert no_pipeline_threads()
