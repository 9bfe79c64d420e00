"""Where the shared benchmark data and tokenizers are (`shared/data` beside the checkout, or $LOWBIT_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when this machine has none."""
    env = os.environ.get("LOWBIT_SHARED_DATA")
    if env:
        return Path(env) if Path(env).is_dir() else None
    for start in (Path.cwd(), Path(__file__).resolve()):
        for folder in (start, *start.parents):
            candidate = folder / "shared" / "data"
            if candidate.is_dir():
                return candidate
    return None


def shared_path(*parts: str) -> Path | None:
    """A path under the shared data folder, or None when it does not exist."""
    root = shared_data_dir()
    path = root.joinpath(*parts) if root else None
    return path if path is not None and path.exists() else None
