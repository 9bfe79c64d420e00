"""What a run's info records about the machine and software an evaluation ran on."""

from __future__ import annotations

import importlib.metadata
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("lowbit", "torch", "transformers", "vllm", "datasets", "hydra-core", "accelerate", "triton",
            "compressed-tensors", "llmcompressor")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_sha() -> str | None:
    """The commit of the lowbit checkout this code runs from (None for an installed wheel)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"host": platform.node(), "cuda_available": torch.cuda.is_available(),
                            "cpu_count": _cpu_count()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["cuda"] = torch.version.cuda
    return info


def _cpu_count() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def environment() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "git_sha": git_sha(),
        "device": device_info(),
    }


def peak_memory() -> dict[str, float | None]:
    """Peak GPU memory allocated by torch (GiB; None without CUDA) and peak resident memory of this process."""
    import torch

    gpu = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB
    return {"gpu_peak_gib": round(gpu, 3) if gpu is not None else None, "rss_peak_gib": round(rss, 3)}


def quantization_metadata(model_name: str) -> dict[str, Any] | None:
    """The checkpoint's quantization_config (local checkpoints only; nothing is fetched)."""
    import json

    config = Path(model_name) / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("quantization_config")
