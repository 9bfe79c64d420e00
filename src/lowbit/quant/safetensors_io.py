"""Checkpoint files, streamed: read tensor by tensor, write bounded shards, publish atomically.

    CheckpointReader   config.json + the weight files of a Hugging Face checkpoint directory (an index, or a
                       single model.safetensors); tensors are read one at a time with safetensors' safe_open
    ShardWriter        buffers output tensors up to `max_shard_bytes`, writes numbered shards and
                       model.safetensors.index.json
    staged_output      writes into a temporary directory beside `out` and renames it into place only when
                       everything succeeded, so a failed run leaves no partial output
    copy_side_files    tokenizer, chat template, generation config and other top-level non-weight files
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch

from lowbit.errors import UsageError
from lowbit.records import OUT_OF_SPACE, out_of_space, process_umask, temp_dir

log = logging.getLogger(__name__)

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
FLOAT_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
DEFAULT_MAX_SHARD_BYTES = 2 * 2**30


# --- reading ---------------------------------------------------------------------------------------------------

class CheckpointReader:
    """A checkpoint directory's config.json and tensors, read one tensor at a time.

    safe_open maps a whole file, and the tensors it returns are views of that mapping: every page read stays in
    the process's resident set until the file's handle and all its tensors are gone. So only the OPEN_FILES
    most recently read files keep a handle (readers go file by file, `names()`' order); a file read again is
    opened again (its header only). Without that, quantizing a 61 GB checkpoint peaks at 59 GiB of RSS (mapped
    source pages) while the memory it actually holds is a few tensors and one output shard.
    """

    OPEN_FILES = 2

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UsageError(f"{self.path} is not a directory: give a Hugging Face checkpoint directory")
        config = self.path / CONFIG
        if not config.is_file():
            raise UsageError(f"{self.path} has no config.json: give a Hugging Face checkpoint directory")
        self.config: dict[str, Any] = json.loads(config.read_text())
        self.file_of = self._weight_map()
        self._handles: OrderedDict[str, Any] = OrderedDict()  # least recently read first
        self._handles_lock = threading.Lock()  # prefetching threads read concurrently

    def _weight_map(self) -> dict[str, str]:
        index = self.path / INDEX
        if index.is_file():
            weight_map = json.loads(index.read_text()).get("weight_map") or {}
            missing = sorted({f for f in weight_map.values() if not (self.path / f).is_file()})
            if missing:
                raise UsageError(f"{index} names missing shard(s) {', '.join(missing)}: the download is incomplete")
            if not weight_map:
                raise UsageError(f"{index} has an empty weight_map")
            for file in sorted(set(weight_map.values())):
                safetensors_names(self.path / file)
            return dict(weight_map)
        if (self.path / SINGLE_FILE).is_file():
            return {name: SINGLE_FILE for name in safetensors_names(self.path / SINGLE_FILE)}
        shards = sorted(p.name for p in self.path.glob("*.safetensors"))
        if shards:
            raise UsageError(f"{self.path} has {len(shards)} safetensors shards but no {INDEX}: restore the index")
        raise UsageError(f"{self.path} has no safetensors weights ({SINGLE_FILE} or {INDEX}); "
                         "convert the checkpoint to safetensors first")

    def names(self) -> list[str]:
        """Tensor names, grouped by file (files in name order) and in each file's own order."""
        by_file: dict[str, list[str]] = {}
        for name, file in self.file_of.items():
            by_file.setdefault(file, []).append(name)
        return [name for file in sorted(by_file) for name in sorted(by_file[file])]

    def _handle(self, file: str):
        with self._handles_lock:
            if file in self._handles:
                self._handles.move_to_end(file)
                return self._handles[file]
            from safetensors import safe_open

            handle = self._handles[file] = safe_open(self.path / file, framework="pt")
            while len(self._handles) > self.OPEN_FILES:
                self._handles.popitem(last=False)  # its mapping goes once the tensors read from it are freed
            return handle

    def info(self, name: str) -> tuple[str, tuple[int, ...]]:
        """(safetensors dtype string, shape) without reading the data."""
        tensor_slice = self._handle(self.file_of[name]).get_slice(name)
        return tensor_slice.get_dtype(), tuple(tensor_slice.get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._handle(self.file_of[name]).get_tensor(name)

    def close(self) -> None:
        with self._handles_lock:
            self._handles.clear()


def safetensors_names(path: Path) -> list[str]:
    """The tensor names of a safetensors file, after checking that its header parses and that the file is as
    long as the header says (a truncated or damaged download is one line naming the file)."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except Exception as e:  # safetensors raises its own SafetensorError, or OSError for unreadable files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"{path} is not a readable safetensors file ({reason}): the file is truncated or damaged; "
                         "download or write it again") from e


def check_checkpoint_files(path: Path) -> None:
    """Check every safetensors file of a local checkpoint directory before a model is loaded from it."""
    for file in sorted(Path(path).glob("*.safetensors")):
        safetensors_names(file)


def resolve_model(model: str) -> tuple[Path, str]:
    """(local checkpoint directory, how the user named it): a directory as is, a hub id via snapshot_download."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path, model
    if model.startswith(("/", ".", "~")) or model.count("/") != 1:
        raise UsageError(f"model '{model}' is not a directory or a hub id (org/name): give a checkpoint directory")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model",
                                                         "*.tiktoken"])
    except Exception as e:  # offline, unknown repo, gated repo: all end the same way for the user
        raise UsageError(f"cannot download '{model}' from the Hugging Face hub ({type(e).__name__}); "
                         "download it first and give its local directory as model=") from e
    return Path(local), model


# --- writing ---------------------------------------------------------------------------------------------------

class ShardWriter:
    """Collects output tensors and writes a shard whenever the next tensor would pass `max_shard_bytes`."""

    def __init__(self, directory: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
        self.directory = Path(directory)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_storages: set[int] = set()
        self._pending_bytes = 0
        self._names: set[str] = set()
        self._shards: list[tuple[str, list[str]]] = []  # (temporary file name, tensor names)
        self.total_bytes = 0
        self.peak_pending_bytes = 0  # the most tensor bytes this writer ever held: the shard-memory bound

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._names:
            raise ValueError(f"tensor {name} written twice")
        self._names.add(name)
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.untyped_storage().nbytes() != tensor.nbytes \
                or tensor.untyped_storage().data_ptr() in self._pending_storages:
            tensor = tensor.clone()  # safetensors refuses views and tensors sharing memory
        size = tensor.nbytes
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self.flush()
        self._pending[name] = tensor
        self._pending_storages.add(tensor.untyped_storage().data_ptr())
        self._pending_bytes += size
        self.total_bytes += size
        self.peak_pending_bytes = max(self.peak_pending_bytes, self._pending_bytes)

    def flush(self) -> None:
        if not self._pending:
            return
        from safetensors.torch import save_file

        file = f"shard-{len(self._shards):05d}.tmp"
        save_file(self._pending, self.directory / file, metadata={"format": "pt"})
        self._shards.append((file, list(self._pending)))
        self._pending, self._pending_storages, self._pending_bytes = {}, set(), 0

    def finish(self) -> list[str]:
        """Write the last shard, name the shards model-0000i-of-0000N.safetensors, write the index."""
        self.flush()
        count = len(self._shards)
        weight_map = {}
        for i, (file, names) in enumerate(self._shards, start=1):
            final = f"model-{i:05d}-of-{count:05d}.safetensors"
            os.replace(self.directory / file, self.directory / final)
            weight_map.update({name: final for name in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return sorted(set(weight_map.values()))


@contextmanager
def staged_output(out: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary directory beside `out` that becomes `out` when the block succeeds (and vanishes if not)."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={out} exists and is not a directory: choose another out=")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UsageError(f"out={out} exists and is not empty: choose another out= or pass overwrite=true")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(out.parent, prefix=f".{out.name}.partial-")  # the mode a plain mkdir gives
    try:
        yield staging
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in OUT_OF_SPACE:
            raise out_of_space(out, e) from e
        raise
    honour_umask(staging)
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def honour_umask(directory: Path) -> None:
    """Give a finished checkpoint's folder, and every file and folder in it, the mode a plain open/mkdir gives
    (safetensors writes its files 0600, whatever the umask)."""
    mask = process_umask()
    for path in (directory, *directory.rglob("*")):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def copy_side_files(source: Path, target: Path) -> list[str]:
    """Copy top-level non-weight files (tokenizer, chat template, generation config, ...) except config.json."""
    copied = []
    for path in sorted(Path(source).iterdir()):
        if path.is_file() and path.name not in (CONFIG, INDEX) and not path.name.endswith(WEIGHT_SUFFIXES) \
                and not path.name.endswith(".index.json"):
            shutil.copy2(path, target / path.name)
            copied.append(path.name)
    return copied


def write_config(target: Path, config: dict[str, Any]) -> None:
    (target / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def parse_size(text: str | int) -> int:
    """Bytes from 2000000, '500MB', '2GB' or '1GiB'."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise UsageError(f"max_shard_size must be a size like 500MB or 2GB, got '{text}'")
    units = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
    return int(float(match.group(1)) * units[(match.group(2) or "B").lower()])
