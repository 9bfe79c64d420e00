"""Reading benchmark records: a local JSON-lines file (offline copies) or a Hugging Face hub dataset."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError

# Seconds the hub gets to answer one request before a dataset load is given up as offline.
HUB_PROBE_TIMEOUT_S = 5.0


def read_local_jsonl(path: Path, expected: str) -> list[dict[str, Any]]:
    """All records of `path`; `expected` describes the file for the error when it is missing."""
    if not path.is_file():
        raise UsageError(f"{path} not found: data_dir must hold {path.name} with {expected}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_hub(hub_id: str, *, split: str, config: str | None = None, local_file: str) -> list[dict[str, Any]]:
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
        return list(datasets.load_dataset(hub_id, config, split=split))
    except Exception as e:  # network, auth or schema problems all end the same way for the user
        raise UsageError(f"could not load {where} from the Hugging Face hub ({type(e).__name__}); "
                         f"pass data_dir=<folder with {local_file}> when offline") from e


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
