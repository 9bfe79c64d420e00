"""Record types that flow through an evaluation, and crash-safe JSON / JSON-lines I/O.

A `Sample` is one benchmark item ready to prompt; a predictor turns its prompt into `Generation`s; the chat
format splits each generation into reasoning and answer, giving a `Completion`; a `Prediction` is one line of a
run's predictions file (`lowbit.rundir`). Writers never leave a half-written file behind: whole files go through
a temp file and a rename, and append-only files are flushed and fsynced per chunk, with a torn last line repaired
on reopen.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lowbit.errors import UsageError

FinishReason = Literal["stop", "length"]


@dataclass
class Sample:
    """One benchmark item: a stable id, the chat messages to send, and the source record scoring reads."""

    id: str
    messages: list[dict[str, str]]
    item: dict[str, Any]


@dataclass
class Generation:
    """One raw completion from a predictor."""

    text: str
    finish_reason: FinishReason  # "stop": an end-of-turn/EOS token or stop string; "length": the budget ran out
    prompt_tokens: int
    completion_tokens: int
    reasoning: str | None = None  # reasoning the server already split from `text` (OpenAI `reasoning_content`)


@dataclass
class Completion:
    """A generation after the reasoning split: `answer` is what gets scored, `reasoning` never is."""

    text: str
    answer: str
    reasoning: str | None
    finish_reason: FinishReason | None  # None only for legacy predictions that did not record it
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ended_in_reasoning: bool = False  # stopped inside <think>…: no answer, counted as truncated
    reasoning_tokens: int | None = None  # tokens of the reasoning text (None: no tokenizer to count them)

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length" or self.ended_in_reasoning


@dataclass
class Prediction:
    """One sample's prompt, source record and completions: a line of the run's predictions file."""

    id: str
    prompt: str
    item: dict[str, Any]
    completions: list[Completion] = field(default_factory=list)
    messages: list[dict[str, str]] | None = None

    @property
    def preds(self) -> list[str]:
        return [c.answer for c in self.completions]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "messages": self.messages,
            "item": self.item,
            "preds": self.preds,
            "completions": [asdict(c) for c in self.completions],
        }

    @classmethod
    def from_json(cls, row: dict[str, Any], line_number: int = 0) -> Prediction:
        """Read a current line, or a legacy `{prompt, item, preds}` line (answers only, no generation metadata)."""
        if "completions" in row:
            completions = [Completion(**c) for c in row["completions"]]
        elif "preds" in row:
            preds = row["preds"] if isinstance(row["preds"], list) else [row["preds"]]
            completions = [Completion(text=p, answer=p, reasoning=None, finish_reason=None) for p in preds]
        else:
            raise ValueError(f"line {line_number} has neither 'completions' nor 'preds'")
        item = row.get("item") or {}
        return cls(
            id=str(row["id"]) if "id" in row else legacy_id(item, row.get("prompt", "")),
            prompt=row.get("prompt", ""),
            item=item,
            completions=completions,
            messages=row.get("messages"),
        )


def legacy_id(item: dict[str, Any], prompt: str) -> str:
    """A stable id for legacy lines that carry none: a hash of the source record (same item, same id)."""
    payload = json.dumps(item, sort_keys=True, ensure_ascii=False) if item else prompt
    return "legacy-" + hashlib.sha1(payload.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- file I/O


def process_umask() -> int:
    """The process's file-mode creation mask, read without changing it where the platform allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file(directory: Path, prefix: str, suffix: str = ".tmp") -> tuple[int, str]:
    """`tempfile.mkstemp`, with the mode an ordinary `open` would give (0666 less the umask) instead of 0600,
    since the file is renamed into place as an output others may need to read."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=suffix)
    os.fchmod(fd, 0o666 & ~process_umask())
    return fd, tmp


def temp_dir(directory: Path, prefix: str) -> Path:
    """`tempfile.mkdtemp`, with the mode an ordinary `mkdir` would give (0777 less the umask) instead of 0700."""
    path = Path(tempfile.mkdtemp(dir=directory, prefix=prefix))
    path.chmod(0o777 & ~process_umask())
    return path


TEMP_SUFFIX = ".tmp"


def temp_name_pattern(path: Path) -> str:
    """The glob matching the temp files `write_text_atomic` stages for `path` (left behind by a kill)."""
    return f".{Path(path).name}.*{TEMP_SUFFIX}"


def write_text_atomic(path: Path, text: str) -> None:
    """Write a whole file so that readers see the old content or the new one, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in OUT_OF_SPACE:
            raise out_of_space(path, e) from e
        raise


# A write that failed for lack of room: the device or quota is full, or the file outgrew RLIMIT_FSIZE.
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def out_of_space(path: Path, error: OSError) -> UsageError:
    """The one-line error of a write that ran out of room; files already complete on disk are intact."""
    return UsageError(f"no room to write {path} ({os.strerror(error.errno)}): free space on its file system and "
                      "rerun the same command; what was written before is intact and is kept")


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(_line(r) for r in rows))


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, default=str) + "\n"


class CorruptLineError(ValueError):
    """A line of a JSON-lines file that does not parse, other than a torn last line."""

    def __init__(self, path: Path, line: int, reason: str):
        super().__init__(f"{path}: line {line} is not valid JSON ({reason})")
        self.path, self.line, self.reason = Path(path), line, reason


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a JSON-lines file. A torn last line (a crash mid-write) is skipped; a bad line
    anywhere else is an error, since it means the file was edited or corrupted."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as e:
            if number == len(lines) and not line.endswith("\n"):
                return
            raise CorruptLineError(path, number, e.msg) from e


def repair_torn_tail(path: Path) -> None:
    """Cut a trailing partial line left by a crash, so that appending continues on a line boundary."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        f.truncate(data.rfind(b"\n") + 1)


class JsonlAppender:
    """Append-only JSON-lines writer: each `append` call is flushed and fsynced before it returns."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write, flush and fsync the rows; on a full disk the partial chunk is cut off again (as a torn tail
        would be on the next open) and the error is one line."""
        text = "".join(_line(r) for r in rows)
        end = os.fstat(self._file.fileno()).st_size  # every earlier chunk was flushed
        try:
            self._file.write(text)
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as e:
            if e.errno not in OUT_OF_SPACE:
                raise
            self._discard_from(end)
            raise out_of_space(self.path, e) from e

    def _discard_from(self, end: int) -> None:
        try:
            self._file.close()  # its buffer may still hold part of the chunk, which cannot be written either
        except OSError:
            pass
        with open(self.path, "rb+") as f:
            f.truncate(end)
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
