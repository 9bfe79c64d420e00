"""Frozen RULER datasets: generating every sample of a task, and the prepared folder that holds them.

    <folder>/
      manifest.json     tokenizer (name, fingerprint, chat-template arguments), prompt (the frame the prompts are
                        fitted in: profile, family, the messages before the prompt), max_seq_length, seed, samples
                        per task, generator version, essay hash, per task: file, sha256, answer budget, prompt
                        lengths; content_hash: one digest over the task files' hashes
      <task>.jsonl      one record per sample: index, task, input (the user message), outputs (expected strings),
                        length (exact prompt tokens: the chat template with the frame's messages), max_seq_length,
                        tokens_to_generate, meta

A folder is written as a whole (a temporary sibling renamed into place), so an interrupted run leaves nothing;
the eval cache (`ensure_cached`) adds task files one at a time, each written atomically. Data is read only by
the generator version that wrote it and only under the prompt frame it was fitted in.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.records import temp_dir, temp_file
from lowbit.tasks.ruler.messages import PromptFrame, check_frame
from lowbit.tasks.ruler.names import NIAH_TASKS, length_label
from lowbit.tasks.ruler.templates import NIAH_CONFIGS, TOKENS_TO_GENERATE
from lowbit.tasks.ruler.tokens import PromptTokens

MANIFEST = "manifest.json"
FORMAT = "lowbit-ruler-1"
GENERATOR_VERSION = "2"  # changes whenever generated prompts or answers change (2: fitted with the preamble)


def needs_essay(tasks: tuple[str, ...]) -> bool:
    return any(task in NIAH_TASKS and NIAH_CONFIGS[task].haystack == "essay" for task in tasks)


def make_generator(task: str, tokens: PromptTokens, max_seq_length: int, seed: int, essay: Any):
    from lowbit.tasks.ruler.common_words import CommonWordsGenerator
    from lowbit.tasks.ruler.frequent_words import FrequentWordsGenerator
    from lowbit.tasks.ruler.niah import NiahGenerator
    from lowbit.tasks.ruler.variable_tracking import VariableTrackingGenerator

    cls = {"vt": VariableTrackingGenerator, "cwe": CommonWordsGenerator, "fwe": FrequentWordsGenerator}.get(
        task, NiahGenerator)
    return cls(task, tokens, max_seq_length, seed, essay)


def generate_records(task: str, tokens: PromptTokens, max_seq_length: int, seed: int, num_samples: int,
                     essay: Any = None, progress: Callable[[str, int], None] | None = None) -> list[dict[str, Any]]:
    generator = make_generator(task, tokens, max_seq_length, seed, essay)
    records = []
    for index in range(num_samples):
        sample = generator.sample(index)
        records.append({"index": index, "task": task, "input": sample["input"], "outputs": sample["outputs"],
                        "length": sample["length"], "max_seq_length": max_seq_length,
                        "tokens_to_generate": TOKENS_TO_GENERATE[task], "meta": sample["meta"]})
        if progress:
            progress(task, index + 1)
    return records


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def content_hash(file_hashes: dict[str, str]) -> str:
    """One digest over the task files' sha256, independent of file order."""
    return hashlib.sha256(json.dumps(dict(sorted(file_hashes.items()))).encode()).hexdigest()


def _task_entry(task: str, data: bytes, records: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    lengths = [r["length"] for r in records]
    return {"file": f"{task}.jsonl", "sha256": hashlib.sha256(data).hexdigest(), "samples": len(records),
            "tokens_to_generate": TOKENS_TO_GENERATE[task],
            "prompt_tokens": {"min": min(lengths), "max": max(lengths), "mean": round(statistics.fmean(lengths), 1)},
            "seconds": round(seconds, 2)}


def new_manifest(tokens: PromptTokens, max_seq_length: int, seed: int, num_samples: int,
                 essay_sha256: str | None) -> dict[str, Any]:
    return {"format": FORMAT, "generator_version": GENERATOR_VERSION, "tokenizer": tokens.name,
            "tokenizer_fingerprint": tokens.fingerprint, "chat_template_kwargs": tokens.template_kwargs,
            "prompt": tokens.frame.to_json(), "max_seq_length": max_seq_length,
            "length_label": length_label(max_seq_length), "seed": seed, "num_samples": num_samples,
            "essay_sha256": essay_sha256, "tasks": {}, "content_hash": None}


def _seal(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest["tasks"] = dict(sorted(manifest["tasks"].items()))
    manifest["content_hash"] = content_hash({t: e["sha256"] for t, e in manifest["tasks"].items()})
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = temp_file(path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Measured with Qwen3's tokenizer: a prompt takes about 3.8 bytes of JSON per token. While a task is generated
# its records, their JSON text and its encoding are held at once (3 copies); each sample's haystack is tokenized
# piece by piece, with Python lists of costs and offsets per token.
FILE_BYTES_PER_TOKEN = 4
HELD_BYTES_PER_TOKEN = 3 * FILE_BYTES_PER_TOKEN
WORKSPACE_BYTES_PER_TOKEN = 256


def resource_estimate(tasks: tuple[str, ...], max_seq_length: int, num_samples: int) -> dict[str, int]:
    """Bytes of memory the largest task needs while it is generated, and of disk all task files take."""
    tokens = max_seq_length * num_samples
    return {"memory": tokens * HELD_BYTES_PER_TOKEN + max_seq_length * WORKSPACE_BYTES_PER_TOKEN,
            "disk": len(tasks) * tokens * FILE_BYTES_PER_TOKEN}


def check_resources(out: Path, tasks: tuple[str, ...], max_seq_length: int, num_samples: int,
                    available_memory: int | None) -> None:
    """Refuse, before generating anything, a request whose data would not fit in memory or on disk."""
    need = resource_estimate(tasks, max_seq_length, num_samples)
    if available_memory is not None and need["memory"] > available_memory:
        raise UsageError(f"{max_seq_length} tokens x num_samples={num_samples} needs about "
                         f"{_gib(need['memory'])} of memory per task while generating, and {_gib(available_memory)} "
                         "is available: lower num_samples or max_seq_length")
    existing = next(p for p in (out, *out.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if need["disk"] > free:
        raise UsageError(f"{len(tasks)} task(s) of {num_samples} samples at {max_seq_length} tokens take about "
                         f"{_gib(need['disk'])} on disk, and {existing} has {_gib(free)} free: lower num_samples, "
                         "choose fewer tasks= or another out=")


def available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (None where the platform does not say)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def write_prepared(out: Path, tasks: tuple[str, ...], tokens: PromptTokens, max_seq_length: int, seed: int,
                   num_samples: int, essay: Any, progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Generate `tasks` into a new folder `out` (refused when it exists and is not empty)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty: choose a new out= folder")
    manifest = new_manifest(tokens, max_seq_length, seed, num_samples, essay.sha256 if essay else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(out.parent, prefix=f".{out.name}.partial-")
    try:
        for task in tasks:
            clock = time.perf_counter()
            records = generate_records(task, tokens, max_seq_length, seed, num_samples, essay, progress)
            data = _jsonl(records)
            (staging / f"{task}.jsonl").write_bytes(data)
            manifest["tasks"][task] = _task_entry(task, data, records, time.perf_counter() - clock)
        (staging / MANIFEST).write_text(json.dumps(_seal(manifest), indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def ensure_cached(folder: Path, tasks: tuple[str, ...], tokens: PromptTokens, max_seq_length: int, seed: int,
                  num_samples: int, essay_loader: Callable[[], Any]) -> dict[str, Any]:
    """The cache folder's manifest after generating whichever of `tasks` it lacks."""
    path = folder / MANIFEST
    manifest = json.loads(path.read_text()) if path.is_file() else None
    if (manifest is None or manifest.get("generator_version") != GENERATOR_VERSION
            or not tokens.frame.fits(PromptFrame.from_json(manifest["prompt"]))):
        manifest = new_manifest(tokens, max_seq_length, seed, num_samples, None)  # every task generated again
    missing = [t for t in tasks if t not in manifest["tasks"] or not (folder / f"{t}.jsonl").is_file()]
    if not missing:
        return manifest
    check_resources(folder, tuple(missing), max_seq_length, num_samples, available_memory_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    essay = essay_loader() if needs_essay(tuple(missing)) else None
    if essay is not None:
        manifest["essay_sha256"] = essay.sha256
    for task in missing:
        clock = time.perf_counter()
        records = generate_records(task, tokens, max_seq_length, seed, num_samples, essay)
        data = _jsonl(records)
        _write_atomic(folder / f"{task}.jsonl", data)
        manifest["tasks"][task] = _task_entry(task, data, records, time.perf_counter() - clock)
    _write_atomic(path, (json.dumps(_seal(manifest), indent=2) + "\n").encode())
    return manifest


def read_prepared(folder: Path, tasks: tuple[str, ...], max_seq_length: int,
                  frame: PromptFrame) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(manifest, task -> records) of a prepared folder, checked against the manifest, its length and the prompt
    frame the run sends."""
    path = folder / MANIFEST
    if not path.is_file():
        raise UsageError(f"{folder} has no {MANIFEST}: data_dir must be a folder made by `lowbit ruler prepare`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise UsageError(f"{path} is not a lowbit RULER manifest (format {manifest.get('format')!r})")
    if manifest.get("generator_version") != GENERATOR_VERSION:
        raise UsageError(f"{folder} holds RULER data of generator version {manifest.get('generator_version')} and "
                         f"this lowbit generates version {GENERATOR_VERSION}: prepare the folder again with "
                         "`lowbit ruler prepare`")
    if manifest["max_seq_length"] != max_seq_length:
        raise UsageError(f"{folder} holds {manifest['max_seq_length']}-token prompts but this task is "
                         f"{max_seq_length} tokens: use the task of length {length_label(manifest['max_seq_length'])} "
                         "or prepare another folder")
    check_frame(frame, PromptFrame.from_json(manifest["prompt"]), str(folder))
    records = {}
    for task in tasks:
        entry = manifest["tasks"].get(task)
        if entry is None:
            raise UsageError(f"{folder} has no {task} data: prepare it with `lowbit ruler prepare ... tasks={task}`")
        data = (folder / entry["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise UsageError(f"{folder / entry['file']} does not match its manifest hash: the file was changed; "
                             "prepare the data again")
        records[task] = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return manifest, records
