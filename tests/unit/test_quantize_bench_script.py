"""perf/quantize_checkpoint_bench.py, which the GPU runs record streaming-quantize figures with: a one-layer run on
the CPU, and its refusal of a workdir without room for the source."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "perf" / "quantize_checkpoint_bench.py"
SRC = Path(__file__).resolve().parents[2] / "src"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(SRC), "PATH": ""})


def test_a_one_layer_run_times_the_copy_and_a_scheme_and_leaves_nothing(tmp_path):
    work, out, results = tmp_path / "work", tmp_path / "elsewhere" / "out", tmp_path / "results.json"
    result = _run("--layers", "1", "--schemes", "int8", "--workdir", str(work), "--out-dir", str(out),
                  "--json", str(results))
    assert result.returncode == 0, result.stderr[-2000:]
    runs = json.loads(results.read_text())["runs"]
    assert set(runs) == {"copy", "int8"}
    assert "scaled_from_bytes" not in runs["copy"]  # a whole copy is not scaled from a part
    assert runs["copy"]["bytes_written"] > runs["int8"]["bytes_written"] > 0
    assert runs["int8"]["seconds"] > 0 and runs["int8"]["shards"] >= 1
    assert not work.exists() and not out.exists()


def test_a_workdir_without_room_for_the_source_is_refused_before_anything_is_written(tmp_path):
    work = tmp_path / "work"
    result = _run("--layers", "100000", "--schemes", "int8", "--workdir", str(work))
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"--workdir {work} has ")
    assert result.stderr.strip().endswith("choose a larger file system or fewer --layers")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not work.exists()
