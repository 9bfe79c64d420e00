"""`lowbit compare` in terminals of every width: no line is wider than the terminal, and every number, precision
label and verdict of the comparison is printed whole (never cut, dropped or split across lines)."""

from __future__ import annotations

import re

import pytest
from report_support import planted, write_run
from test_divergence_compare import write_divergence_run

from lowbit.cli import main
from lowbit.report.compare import compare_runs
from lowbit.report.render import columns, group_cells

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs of one model: a drop, a precision within the margin, an emulated one (a note) and a divergence run
    (three more columns), in directories with long names."""
    root = tmp_path_factory.mktemp("widths") / "outputs" / "qwen3_4B_mmlu_redux_reference_prompts"
    baseline, dropped = planted(280, right_to_wrong=40, wrong_to_right=10, n=400)
    _, close = planted(280, right_to_wrong=0, wrong_to_right=0, n=400)
    emulation = {"act_quant": "nvfp4", "weight_quant": "nvfp4", "wrapped_count": 196, "kept_linear": {"lm_head": 1}}
    write_run(root / "bf16", "bf16", baseline, reasoning_tokens=100)
    write_run(root / "nvfp4", "nvfp4", dropped, reasoning_tokens=130, truncated_share=0.1, tokens_per_second=1500.0)
    write_run(root / "fp8", "fp8", close, reasoning_tokens=100)
    write_run(root / "w4a4-nvfp4-emulated", "w4a4-nvfp4", dropped, emulation=emulation)
    write_divergence_run(root / "divergence-nvfp4", "nvfp4", 0.01)
    return str(root / "*")


def expected_cells(pattern: str) -> tuple[list[str], list[str], list[str]]:
    """The comparison's numbers, precision labels and verdicts, as its cells hold them."""
    (group,) = compare_runs([pattern]).groups
    headers = columns(group)
    numbers, precisions, verdicts = [], [], []
    for row in group.rows:
        cells = dict(zip(headers, group_cells(group, row)))
        precisions.append(cells.pop("precision"))
        verdicts.append(cells.pop("verdict"))
        cells.pop("run")
        numbers += [number for cell in cells.values() for number in NUMBER.findall(cell)]
    return numbers, precisions, verdicts


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_every_value_is_printed_whole_within_the_width(runs, width, monkeypatch, capsys):
    numbers, precisions, verdicts = expected_cells(runs)
    assert len(numbers) > 50 and "within 1 point of bf16 at 95% confidence" in verdicts
    monkeypatch.setenv("COLUMNS", str(width))
    assert main(["compare", runs]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in printed and "..." not in printed
    for number in numbers:  # the whole number, not a piece of a longer one or one cut short
        assert re.search(rf"(?<![\d.]){re.escape(number)}(?![\d.])", printed), number
    for label in precisions:
        assert re.search(rf"^ *{re.escape(label)}\b", printed, re.MULTILINE), label
    for verdict in verdicts:
        assert verdict in printed, verdict
    assert "activations nvfp4 emulated" in " ".join(printed.split())  # the note, wrapped at spaces
    assert "KL nats [95% CI]" in printed


def test_a_wide_terminal_gets_one_table_and_a_narrow_one_a_block_per_run(runs, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")
    main(["compare", runs])
    (header,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("precision")]
    assert header.split()[:3] == ["precision", "run", "score"] and header.split()[-2:] == ["PPL", "ratio"]
    monkeypatch.setenv("COLUMNS", "60")
    main(["compare", runs])
    printed = capsys.readouterr().out
    assert not [line for line in printed.splitlines() if line.startswith("precision")]
    assert re.search(r"^verdict +not shown within 1 point of bf16$", printed, re.MULTILINE)
