"""LiveCodeBench records: reading the release files, filtering by contest date, decoding the test cases.

The hub dataset `livecodebench/code_generation_lite` keeps each release's new problems in its own JSON-lines file
(release_v1 = test.jsonl, v2 adds test2.jsonl, ... v5 adds test5.jsonl). They are downloaded with huggingface_hub
and read directly: recent `datasets` releases no longer run the dataset's loading script.

Record fields (all strings): question_title, question_content, platform, question_id, contest_id, contest_date
(ISO, e.g. 2024-10-05T00:00:00), starter_code, difficulty, public_test_cases (JSON list of {input, output,
testtype}), private_test_cases (the same JSON, or base64 of zlib of a pickle of that JSON string), metadata (JSON;
func_name for functional problems).

Unpickling downloaded data is code execution, so private tests are unpickled by `PlainDataUnpickler`, which builds
only str, bytes, int, float, bool, None, list, tuple and dict and refuses every global lookup (the opcodes a
malicious pickle needs to reach os.system and the like) with `UnsafePickleError`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import pickle
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.tasks.data import read_local_jsonl

HUB_ID = "livecodebench/code_generation_lite"
RELEASE_FILES = {f"release_v{n}": [f"test{'' if i == 1 else i}.jsonl" for i in range(1, n + 1)] for n in range(1, 7)}
FIELDS = ("question_title", "question_content", "platform", "question_id", "contest_date", "starter_code",
          "difficulty", "public_test_cases", "private_test_cases", "metadata")


class UnsafePickleError(ValueError):
    """A pickle asked for something other than plain data."""


class PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only: any opcode that looks up a class or function (GLOBAL, STACK_GLOBAL, and through
    them REDUCE, BUILD, NEWOBJ, INST, OBJ) fails here, and persistent ids and extension codes are refused too."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(f"refusing to unpickle {module}.{name}: test cases must be plain data "
                                "(str, list, dict, int, float, bool, None)")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing to unpickle a persistent id: test cases must be plain data")


_PLAIN = (str, bytes, int, float, bool, type(None))


def safe_unpickle(data: bytes) -> Any:
    """The plain-data value of a pickle; UnsafePickleError for anything else."""
    value = PlainDataUnpickler(io.BytesIO(data)).load()
    _check_plain(value)
    return value


def _check_plain(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif not isinstance(item, _PLAIN):
            raise UnsafePickleError(f"refusing unpickled {type(item).__name__}: test cases must be plain data")


@dataclass(frozen=True)
class TestCase:
    input: str
    output: str
    testtype: str  # "stdin" or "functional"


def decode_tests(field: str | list, where: str) -> list[TestCase]:
    """A public or private test-case field: JSON text (or an already decoded list), or base64 -> zlib -> pickle
    -> JSON. `where` names the record in errors."""
    if isinstance(field, list):
        raw: Any = field
    else:
        try:
            raw = json.loads(field)
        except json.JSONDecodeError:
            raw = json.loads(_decode_compressed(field, where))
    if not isinstance(raw, list):
        raise UsageError(f"{where}: test cases must be a list, got {type(raw).__name__}")
    tests = []
    for number, case in enumerate(raw, start=1):
        if not isinstance(case, dict) or not {"input", "output"} <= case.keys():
            raise UsageError(f"{where}: test case {number} lacks input/output")
        tests.append(TestCase(str(case["input"]), str(case["output"]), str(case.get("testtype", "stdin"))))
    return tests


def _decode_compressed(field: str, where: str) -> str:
    try:
        value = safe_unpickle(zlib.decompress(base64.b64decode(field, validate=False)))
    except UnsafePickleError as e:
        raise UsageError(f"{where}: private test cases: {e}") from e
    except (binascii.Error, zlib.error, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise UsageError(f"{where}: private test cases are neither JSON nor base64/zlib/pickle "
                         f"({type(e).__name__}: {e})") from e
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise UsageError(f"{where}: the unpickled private test cases are a {type(value).__name__}, not JSON text")
    return value


def func_name(record: dict[str, Any]) -> str | None:
    """The method a functional problem's tests call, from the metadata JSON; None for stdin problems."""
    metadata = record.get("metadata") or "{}"
    if isinstance(metadata, str):
        metadata = json.loads(metadata)
    return metadata.get("func_name") or None


def contest_day(record: dict[str, Any]) -> date:
    return datetime.fromisoformat(str(record["contest_date"])).date()


def check_record(record: dict[str, Any], where: str) -> None:
    missing = [f for f in FIELDS if f not in record]
    if missing:
        raise UsageError(f"{where} lacks {', '.join(missing)} (schema of {HUB_ID})")


def in_window(records: list[dict[str, Any]], start: str | None, end: str | None) -> list[dict[str, Any]]:
    """Records whose contest date lies in [start, end] (inclusive days; None: unbounded)."""
    first = date.fromisoformat(start) if start else date.min
    last = date.fromisoformat(end) if end else date.max
    return [r for r in records if first <= contest_day(r) <= last]


def read_jsonl_files(paths: list[Path]) -> list[dict[str, Any]]:
    records = []
    for path in paths:
        records.extend(read_local_jsonl(path, f"LiveCodeBench records (schema of {HUB_ID})"))
    return records


def read_local(data_dir: Path) -> list[dict[str, Any]]:
    """Every *.jsonl of `data_dir` in name order (the release files, or one file of records in their schema)."""
    paths = sorted(data_dir.glob("*.jsonl"))
    if not paths:
        raise UsageError(f"{data_dir} holds no .jsonl files: data_dir must hold LiveCodeBench records "
                         f"(the files of {HUB_ID}, e.g. test.jsonl ... test5.jsonl)")
    return read_jsonl_files(paths)


def read_release(release: str, hub_id: str = HUB_ID) -> list[dict[str, Any]]:
    """The records of a release, downloaded file by file from the hub (cached by huggingface_hub)."""
    if release not in RELEASE_FILES:
        raise UsageError(f"unknown LiveCodeBench release '{release}'; valid: {', '.join(RELEASE_FILES)}")
    from huggingface_hub import hf_hub_download

    paths = []
    for filename in RELEASE_FILES[release]:
        try:
            paths.append(Path(hf_hub_download(hub_id, filename, repo_type="dataset")))
        except Exception as e:  # network, auth or a missing file all end the same way for the user
            raise UsageError(f"could not download {hub_id}/{filename} from the Hugging Face hub "
                             f"({type(e).__name__}); pass data_dir=<folder with the release's jsonl files> "
                             "when offline") from e
    return read_jsonl_files(paths)
