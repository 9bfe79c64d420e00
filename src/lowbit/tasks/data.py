"""Reading benchmark records: a local JSON-lines file (offline copies) or a Hugging Face hub dataset."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError

# Seconds the hub gets to answer one request before a dataset load is given up as offline.
HUB_PROBE_TIMEOUT_S = 5.0


Fields = dict[str, "type | tuple[type, ...]"]


def read_local_jsonl(path: Path, expected: str, fields: Fields | None = None) -> list[dict[str, Any]]:
    """All records of `path`; `expected` describes the file for the error when it is missing; each record must
    hold `fields` (name -> type), checked line by line."""
    if not path.is_file():
        raise UsageError(f"{path} not found: data_dir must hold {path.name} with {expected}")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"{path}:{number} is not valid JSON ({e.msg}): fix or remove that line; "
                                 f"each line must be one record with {expected}") from e
            if not isinstance(row, dict):
                raise UsageError(f"{path}:{number} is a JSON {type(row).__name__}, not an object: each line must be "
                                 f"one record with {expected}")
            require_fields(row, fields or {}, f"{path}:{number}")
            rows.append(row)
    return rows


def require_fields(row: dict[str, Any], fields: dict[str, type | tuple[type, ...]], where: str) -> None:
    """Refuse a record missing a field its task reads, or holding one of the wrong type, naming `where` (file and
    line, or hub dataset and row) and the field."""
    for name, kind in fields.items():
        if name not in row:
            raise UsageError(f"{where}: the record has no '{name}' field: every record needs "
                             f"{', '.join(repr(f) for f in fields)}")
        if not isinstance(row[name], kind) or (isinstance(row[name], bool) and bool not in _types(kind)):
            raise UsageError(f"{where}: field '{name}' is a {type(row[name]).__name__}, expected "
                             f"{' or '.join(t.__name__ for t in _types(kind))}: fix the record")


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def read_hub(hub_id: str, *, split: str, config: str | None = None, local_file: str,
             fields: Fields | None = None) -> list[dict[str, Any]]:
    """All records of a hub dataset split; any failure (offline, auth, schema) names the offline alternative.

    An unreachable hub fails at once instead of after the hub client's retries; with HF_HUB_OFFLINE set, the
    datasets cache is tried (it answers in about a second)."""
    import datasets
    from huggingface_hub import constants

    where = f"{hub_id}/{config}" if config else hub_id
    if not constants.HF_HUB_OFFLINE and not hub_reachable(constants.ENDPOINT):
        raise UsageError(f"could not load {where}: the Hugging Face hub ({constants.ENDPOINT}) cannot be reached; "
                         f"pass data_dir=<folder with {local_file}>, or set HF_HUB_OFFLINE=1 to use a cached copy")
    try:
        rows = list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as e:  # network, auth or schema problems all end the same way for the user
        raise UsageError(f"could not load {where} from the Hugging Face hub ({type(e).__name__}); "
                         f"pass data_dir=<folder with {local_file}> when offline") from e
    for index, row in enumerate(rows):
        require_fields(row, fields or {}, f"{where} ({split} split) row {index}")
    return rows


@functools.cache
def hub_reachable(endpoint: str, timeout_s: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether an HTTP request to the hub endpoint gets any answer (proxy settings apply)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout_s):
            return True
    except urllib.error.HTTPError:  # an answer, even an error status, means the hub is there
        return True
    except (OSError, ValueError):  # refused, unresolvable, timed out, or not a URL
        return False
