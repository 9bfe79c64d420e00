"""Output files as colleagues and crashes see them: modes follow the umask, a killed write leaves no temp file
behind once the run starts again, and a full disk is one line with the data on disk intact."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lowbit.cli import main
from lowbit.divergence.kl import TopK
from lowbit.divergence.reference import write as write_reference
from lowbit.errors import UsageError
from lowbit.quant.safetensors_io import staged_output
from lowbit.records import JsonlAppender, iter_jsonl, write_json_atomic
from lowbit.rundir import RunDir

ITEM = {"question": "q?", "choices": ["w", "x", "y", "z"], "answer": 1, "error_type": "ok", "source": None,
        "correct_answer": None, "potential_reason": None, "subject": "anatomy"}


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def legacy_run(path: Path, count: int = 6) -> Path:
    """A run directory of legacy prediction lines, scored by `lowbit score` without a model."""
    path.mkdir(parents=True, exist_ok=True)
    lines = [{"id": f"anatomy/{i}", "prompt": "p", "item": {**ITEM, "index": i}, "preds": [f"ANSWER: {'ABCD'[i % 4]}"]}
             for i in range(count)]
    (path / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_honour_the_umask(mask, file_mode, dir_mode, tmp_path, capsys):
    with umask(mask):
        run = legacy_run(tmp_path / "run")
        assert main(["score", "-c", str(run), "task=mmlu-redux"]) == 0
        for name in ("scores.jsonl", "metrics.json"):
            assert mode(run / name) == file_mode, name
        write_json_atomic(tmp_path / "report" / "comparison.json", {"rows": []})
        assert mode(tmp_path / "report" / "comparison.json") == file_mode
        with staged_output(tmp_path / "ckpt", overwrite=False) as staging:
            save_file({"w": torch.zeros(2)}, staging / "model.safetensors")
        assert mode(tmp_path / "ckpt") == dir_mode and mode(tmp_path / "ckpt" / "model.safetensors") == file_mode
        reference = tmp_path / "reference.safetensors"  # a divergence run's stored top-k reference
        write_reference(reference, TopK(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2), torch.zeros(3),
                                         torch.zeros(3)), {"k": 2})
        assert mode(reference) == file_mode


def test_temp_files_of_a_killed_scoring_are_removed_when_the_run_is_scored_again(tmp_path, capsys):
    run = legacy_run(tmp_path / "run")
    stale = [run / ".scores.jsonl.k1ll3d.tmp", run / ".metrics.json.x7q2.tmp", run / ".run.json.a1b2.tmp"]
    for path in stale:
        path.write_text("half")
    other = run / ".notes.tmp"  # not a run file's temp file: left alone
    other.write_text("mine")
    assert main(["score", "-c", str(run), "task=mmlu-redux"]) == 0
    assert not any(path.exists() for path in stale) and other.exists()
    assert sorted(p.name for p in run.iterdir()) == [".notes.tmp", "metrics.json", "predictions.jsonl",
                                                     "scores.jsonl"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (root only), unmounted afterwards."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(directory: Path, leave: int) -> Path:
    """Fill the file system of `directory` until about `leave` bytes remain; returns the filler file."""
    filler = directory / "filler"
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    filler.write_bytes(b"\0" * max(free - leave, 0))
    return filler


def test_a_full_disk_while_scoring_is_one_line_and_the_run_is_intact(small_tmpfs, capsys):
    run = legacy_run(small_tmpfs / "run", count=40)
    predictions = (run / "predictions.jsonl").read_bytes()
    filler = fill(small_tmpfs, leave=2048)
    assert main(["score", "-c", str(run), "task=mmlu-redux"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lowbit: error: no room to write") and "\n" not in err and "rerun the same command" in err
    assert (run / "predictions.jsonl").read_bytes() == predictions
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []  # no temp file left behind
    filler.unlink()
    assert main(["score", "-c", str(run), "task=mmlu-redux"]) == 0
    assert len(list(iter_jsonl(run / "scores.jsonl"))) == 40


def test_a_full_disk_while_predicting_keeps_every_whole_line(small_tmpfs):
    path = small_tmpfs / "run" / "predictions.jsonl"
    rows = [{"id": f"s/{i}", "text": "x" * 3000} for i in range(4)]
    with JsonlAppender(path) as writer:
        writer.append(rows[:2])
        fill(small_tmpfs, leave=4096)
        with pytest.raises(UsageError, match=r"^no room to write .*predictions\.jsonl .*rerun the same command"):
            writer.append(rows[2:] * 4)
    assert [row["id"] for row in iter_jsonl(path)] == ["s/0", "s/1"]
    assert path.read_bytes().endswith(b"\n")
    (small_tmpfs / "filler").unlink()
    with JsonlAppender(path) as writer:  # the same command resumes after the last whole line
        writer.append(rows[2:])
    assert [row["id"] for row in RunDir(path.parent)._prediction_rows()] == ["s/0", "s/1", "s/2", "s/3"]
