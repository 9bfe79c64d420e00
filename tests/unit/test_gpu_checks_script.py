"""perf/gpu_checks.sh refuses what it cannot run with one line and exit status 2, before writing anything."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "perf" / "gpu_checks.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("args", [(), ("kernels",), ("everything", "/tmp/out")])
def test_a_missing_or_unknown_part_prints_the_usage(args):
    result = _run(*args)
    assert result.returncode == 2
    assert result.stderr.strip() == "usage: bash perf/gpu_checks.sh kernels|pipelines OUT_DIR [STEP ...]"


def test_a_step_the_part_lacks_is_named_with_the_part_s_steps(tmp_path):
    result = _run("kernels", str(tmp_path / "out"), "formats-bench", "act-quant-dense")
    assert result.returncode == 2
    assert result.stderr.strip() == ("perf/gpu_checks.sh: no step 'act-quant-dense' in kernels; its steps are: "
                                     "tests-native tests-bit-casts kernel-instructions formats-bench")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(subprocess.run([sys.executable, "-c", "import torch, sys; sys.exit(torch.cuda.is_available())"])
                    .returncode != 0, reason="a CUDA GPU is visible: the script would run")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path):
    result = _run("kernels", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == "perf/gpu_checks.sh: no CUDA GPU visible to torch; run it on a GPU machine"
    assert not (tmp_path / "out").exists()


def test_every_step_the_script_runs_is_one_its_parts_list():
    """A step missing from STEPS would never run, since only listed steps are selected."""
    text = SCRIPT.read_text()
    run = set(re.findall(r"^\s+step ([\w-]+) \d+ ", text, flags=re.MULTILINE))
    listed = set(" ".join(re.findall(r'\[(?:kernels|pipelines)\]="([^"]+)"', text)).split())
    assert run == listed and len(run) == 8
