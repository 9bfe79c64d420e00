"""Reading benchmark records: a local JSON-lines file (offline copies) or a Hugging Face hub dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError


def read_local_jsonl(path: Path, expected: str) -> list[dict[str, Any]]:
    """All records of `path`; `expected` describes the file for the error when it is missing."""
    if not path.is_file():
        raise UsageError(f"{path} not found: data_dir must hold {path.name} with {expected}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_hub(hub_id: str, *, split: str, config: str | None = None, local_file: str) -> list[dict[str, Any]]:
    """All records of a hub dataset split; any failure (offline, auth, schema) names the offline alternative."""
    import datasets

    try:
        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as e:  # network, auth or schema problems all end the same way for the user
        where = f"{hub_id}/{config}" if config else hub_id
        raise UsageError(f"could not load {where} from the Hugging Face hub ({type(e).__name__}); "
                         f"pass data_dir=<folder with {local_file}> when offline") from e
