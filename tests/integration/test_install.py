"""`pip install .` (a built wheel, not an editable install) gives a working `lowbit` with its configs.

The fresh virtualenv borrows the test environment's third-party packages through a .pth line (a path line adds
the directory without running the .pth hooks inside it, so the editable install of the checkout stays invisible),
and lowbit itself is built and installed from the checkout as users install it.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("install") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "borrowed_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # The borrowed pip, run by the new interpreter, installs into the new environment; --ignore-installed keeps
    # it from uninstalling the test environment's own lowbit, which it can see through the borrowed path.
    build = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
         "--no-cache-dir", "-q", str(REPO)],
        capture_output=True, text=True, timeout=600, cwd=venv.parent)
    assert build.returncode == 0, build.stderr[-2000:]
    return venv


def _lowbit(venv: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(venv / "bin" / "lowbit"), *args], capture_output=True, text=True, timeout=300,
                          cwd=venv.parent, env=env)


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import lowbit; print(lowbit.__file__)"],
                           capture_output=True, text=True, cwd=installed.parent, check=True).stdout.strip()
    assert where.startswith(str(installed)) and "src/lowbit" not in where
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(installed), "platbase": str(installed)}))
    conf = purelib / "lowbit" / "conf"
    assert (conf / "config.yaml").is_file() and list((conf / "model").glob("*.yaml"))


def test_installed_lowbit_lists_and_resolves_configs(installed):
    listed = _lowbit(installed, "eval", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "mmlu-redux" in listed.stdout and "qwen3_4B" in listed.stdout and "transformers" in listed.stdout
    helped = _lowbit(installed, "--help")
    assert helped.returncode == 0 and "eval" in helped.stdout
