"""`lowbit compare` on synthetic run directories whose truth is known (written by `report_support.write_run`
through the real eval and scoring code; only the completions are made up)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from report_support import N_SAMPLES, planted, write_run

from lowbit.errors import UsageError
from lowbit.report import compare_main, compare_runs, split_compare_arguments
from lowbit.rundir import RunDir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    baseline, dropped = planted(1400, right_to_wrong=150, wrong_to_right=50)  # a 5-point drop
    _, noisy = planted(1400, right_to_wrong=30, wrong_to_right=30)  # the same accuracy, 60 flips
    return {
        "bf16": write_run(root / "qwen3_4B_bf16", "bf16", baseline, reasoning_tokens=100),
        "nvfp4": write_run(root / "qwen3_4B_nvfp4", "nvfp4", dropped, truncated_share=0.1, reasoning_tokens=130,
                           tokens_per_second=1500.0),
        "fp8": write_run(root / "qwen3_4B_fp8", "fp8", noisy, reasoning_tokens=100, drop_ids=10),
        "hot": write_run(root / "qwen3_4B_hot", "int8", noisy[:200], overrides=("sampling.temperature=0.6",)),
    }


def test_planted_drop_is_flagged_and_noise_is_not(runs, tmp_path, capsys):
    status = compare_main([str(runs["bf16"]), str(runs["nvfp4"]), str(runs["fp8"])], None, 1.0,
                          str(tmp_path / "report"), [])
    assert status == 0
    (group,) = compare_runs([str(runs["bf16"]), str(runs["nvfp4"]), str(runs["fp8"])]).groups
    assert (group.family, group.task, group.metric) == ("Qwen3-4B", "mmlu-redux", "accuracy")
    base, fp8, nvfp4 = group.rows
    assert base.is_baseline and base.metric["value"] == pytest.approx(0.7)

    drop = nvfp4.paired
    assert drop.difference == pytest.approx(-0.05) and (drop.right_to_wrong, drop.wrong_to_right) == (150, 50)
    assert drop.test == "mcnemar_exact" and drop.significant and not drop.non_inferior
    assert drop.difference_high < -0.03 and drop.recovery == pytest.approx(1300 / 1400)
    assert nvfp4.verdict == "not shown within 1 point of bf16"
    assert nvfp4.truncation_change_points == pytest.approx(10, abs=2.5)  # about 10% of completions hit the limit
    assert nvfp4.reasoning_mean_drift_percent == pytest.approx(30.0)
    assert nvfp4.throughput_ratio == pytest.approx(1.5, rel=1e-3)

    noise = fp8.paired
    assert noise.n == N_SAMPLES - 10 and fp8.only_in_baseline == 10 and fp8.only_in_candidate == 0
    assert not noise.significant and noise.difference_low < 0 < noise.difference_high
    assert fp8.verdict == "within 1 point of bf16 at 95% confidence"
    assert any("10 id(s) only in baseline" in note for note in fp8.notes)

    printed = capsys.readouterr().out
    assert "Qwen3-4B - mmlu-redux (prompt=reference) - accuracy" in printed and "-5.00 [" in printed and "150/50" in printed
    report = json.loads((tmp_path / "report" / "comparison.json").read_text())
    assert report["settings"]["margin_points"] == 1.0 and report["not_compared"] == []
    assert report["groups"][0]["rows"][2]["paired"]["p_value"] < 1e-11
    rows = list(csv.DictReader((tmp_path / "report" / "comparison.csv").open()))
    assert [r["precision"] for r in rows] == ["bf16", "fp8", "nvfp4"]
    assert rows[2]["non_inferior"] == "False" and float(rows[2]["difference"]) == pytest.approx(-0.05)
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "| nvfp4 |" in markdown and "not shown within 1 point of bf16" in markdown


def test_sampling_mismatch_is_refused_with_what_differs(runs, capsys):
    with pytest.raises(UsageError, match=r"sampling \(temperature: 0.1 vs 0.6\)"):
        compare_runs([str(runs["bf16"]), str(runs["hot"])])
    # with something else to compare, the refused run is listed and the exit status says so
    assert compare_main([str(runs["bf16"]), str(runs["hot"]), str(runs["fp8"])], None, 1.0, None, []) == 1
    assert "not compared:" in capsys.readouterr().err


def test_task_version_mismatch_is_refused(runs, tmp_path, monkeypatch):
    from lowbit.tasks.mmlu_redux import MMLURedux

    current = MMLURedux.version
    monkeypatch.setattr(MMLURedux, "version", current + "-next")
    baseline, _ = planted(1400, 0, 0, n=200)
    newer = write_run(tmp_path / "newer", "nvfp4", baseline)
    differ = f"{current} vs {current}-next"
    with pytest.raises(UsageError, match=rf"task version \(run.json\) {differ}; scorer version \(metrics.json\) {differ}"):
        compare_runs([str(runs["bf16"]), str(newer)])


def test_different_questions_are_refused(tmp_path):
    baseline, _ = planted(100, 0, 0, n=200)
    first = write_run(tmp_path / "a", "bf16", baseline)
    second = write_run(tmp_path / "b", "nvfp4", baseline, question_suffix=" (revised)")
    with pytest.raises(UsageError, match=r"chat messages of 1 shared id\(s\), e.g. virology/199"):
        compare_runs([str(first), str(second)])


def test_a_different_chat_template_is_refused(tmp_path):
    baseline, _ = planted(100, 0, 0, n=200)
    first = write_run(tmp_path / "a", "bf16", baseline)
    second = write_run(tmp_path / "b", "nvfp4", baseline, system_line="<|im_start|>system\nBe brief.<|im_end|>\n")
    with pytest.raises(UsageError, match=r"rendered prompts \(chat template\) of 200 shared id\(s\)"):
        compare_runs([str(first), str(second)])


def test_prompt_options_split_groups_and_scoring_options_are_noted(tmp_path, capsys):
    baseline, candidate = planted(100, 5, 5, n=200)
    write_run(tmp_path / "run_bf16", "bf16", baseline)
    write_run(tmp_path / "run_nvfp4", "nvfp4", candidate, overrides=("dataset.answer_key=original",))
    write_run(tmp_path / "run_fork", "mxfp4", candidate, overrides=("dataset.hub_id=someone/mmlu-redux-fork",))
    comparison = compare_runs([str(tmp_path / "run_*")])
    (group,) = comparison.groups
    assert [row.precision for row in group.rows] == ["bf16", "nvfp4"]
    assert group.rows[1].notes == ["scored with different dataset options (answer_key: 'corrected' vs 'original')"]
    ((run, reason),) = comparison.refused
    assert run.endswith("run_fork") and "dataset options that change prompts (hub_id: " in reason
    assert compare_main([str(tmp_path / "run_*"), "baseline=bf16", "margin=5"], None, None, None, None) == 1
    captured = capsys.readouterr()
    assert "within 5 points of bf16 at 95% confidence" in captured.out and "run_fork" in captured.err


def test_partial_credit_scores_use_the_permutation_test(tmp_path):
    rng = np.random.default_rng(5)
    rates = rng.uniform(0.2, 0.9, size=300)
    overrides = ("sampling.num_return_sequences=4",)
    base = write_run(tmp_path / "aime_bf16", "bf16", rng.random((300, 4)) < rates[:, None], overrides=overrides,
                     eval_dataset="aime25")
    write_run(tmp_path / "aime_mxfp4", "mxfp4", rng.random((300, 4)) < rates[:, None] - 0.15,
                     overrides=overrides, eval_dataset="aime25")
    (group,) = compare_runs([str(tmp_path / "aime_*")], baseline=str(base)).groups
    row = group.rows[1]
    assert row.run.endswith("aime_mxfp4") and row.paired.test == "sign_flip_permutation"
    assert row.paired.significant and row.paired.difference == pytest.approx(-0.15, abs=0.05)
    assert group.baseline.startswith("bf16")


def test_bad_input_fails_with_one_line(runs, tmp_path):
    two = [str(runs["bf16"]), str(runs["nvfp4"])]
    for kwargs, message in [
        ({"baseline": "fp16"}, "no run has precision 'fp16' (precisions: bf16, nvfp4)"),
        ({"margin": 0}, "margin is in percentage points"),
    ]:
        with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
            compare_runs(two, **kwargs)
    with pytest.raises(UsageError, match="has no config.yaml"):
        compare_runs([str(runs["bf16"]), str(tmp_path)])
    with pytest.raises(UsageError, match="matches no run directory"):
        compare_runs([str(tmp_path / "nothing_*")])
    with pytest.raises(UsageError, match="unknown format"):
        compare_main(two, None, 1.0, str(tmp_path), ["pdf"])
    with pytest.raises(UsageError, match="2 runs of Qwen3-4B mmlu-redux have precision bf16"):
        compare_runs(two + [str(write_run(tmp_path / "bf16_again", "bf16", planted(10, 0, 0, n=20)[0]))])
    paths, options = split_compare_arguments([str(runs["bf16"]), "baseline=fp8", "margin=0.5"])
    assert paths == [str(runs["bf16"])] and options == {"baseline": "fp8", "margin": 0.5}
    with pytest.raises(UsageError, match="unknown compare option 'margn'"):
        split_compare_arguments(["margn=2"])
    with pytest.raises(UsageError, match="margin must be a number"):
        compare_main([*two, "margin=one"])
    with pytest.raises(UsageError, match=r"baseline given twice \(fp8 and bf16\)"):
        compare_main([*two, "baseline=fp8"], baseline="bf16")
    with pytest.raises(UsageError, match="neither a run directory nor a precision label"):
        compare_runs(two, baseline=str(tmp_path / "missing"))


def test_the_command_line_compares_globbed_runs(runs, tmp_path):
    from support import run_lowbit

    pattern = str(runs["bf16"].parent / "*")
    result = run_lowbit("compare", pattern, "baseline=bf16", "margin=1", f"out={tmp_path / 'cli'}",
                        "format=json")
    assert result.returncode in (0, 1), result.stderr  # 1: a run that could not be paired is listed
    assert "mmlu-redux" in result.stdout and (tmp_path / "cli" / "comparison.json").is_file()


def test_breakdowns_locate_a_drop_in_one_subject(tmp_path):
    n = 400
    baseline = np.arange(n) % 4 != 0  # 75% right in both subjects (even ids: anatomy, odd: virology)
    candidate = baseline.copy()
    virology_right = np.flatnonzero(baseline & (np.arange(n) % 2 == 1))
    candidate[virology_right[:40]] = False  # 40 of the 200 virology questions turn wrong: -20 points there
    write_run(tmp_path / "sub_bf16", "bf16", baseline)
    write_run(tmp_path / "sub_nvfp4", "nvfp4", candidate)
    (group,) = compare_runs([str(tmp_path / "sub_*")]).groups
    row = group.rows[1]
    anatomy, virology = row.breakdowns["subject"]
    assert (anatomy.value, anatomy.n, virology.value, virology.n) == ("anatomy", 200, "virology", 200)
    assert anatomy.difference == 0 and anatomy.p_value == 1 and anatomy.difference_low <= 0 <= anatomy.difference_high
    assert virology.difference == pytest.approx(-0.2) and virology.difference_high < -0.1 and virology.p_value < 1e-9
    # the groups partition the paired samples: their size-weighted differences add up to the whole difference
    weighted = (anatomy.n * anatomy.difference + virology.n * virology.difference) / n
    assert weighted == pytest.approx(row.paired.difference)
    assert group.rows[0].breakdowns == {}  # the baseline has nothing to differ from


def test_json_keeps_breakdowns_and_bits(runs, tmp_path):
    compare_main([str(runs["bf16"]), str(runs["nvfp4"])], None, 1.0, str(tmp_path), ["json"])
    rows = json.loads((tmp_path / "comparison.json").read_text())["groups"][0]["rows"]
    assert [(r["precision"], r["bits_per_weight"], r["bits_source"]) for r in rows] == [
        ("bf16", 16, "precision label"), ("nvfp4", 4.5, "precision label")]
    subjects = rows[1]["breakdowns"]["subject"]
    assert [s["value"] for s in subjects] == ["anatomy", "virology"] and sum(s["n"] for s in subjects) == N_SAMPLES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.json"]


def test_terminal_table_is_rich_and_plain_when_piped(runs):
    import io

    from lowbit.report.terminal import print_text

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    comparison = compare_runs([str(runs["bf16"]), str(runs["nvfp4"])])
    piped, terminal = io.StringIO(), Terminal()
    print_text(comparison, piped)
    print_text(comparison, terminal)
    lines = piped.getvalue().splitlines()
    assert "\x1b[" not in piped.getvalue() and all(line == line.rstrip() for line in lines)
    (header,) = [line for line in lines if line.lstrip().startswith("precision")]
    assert header.split() == ["precision", "run", "score", "[95%", "CI]", "recovery", "diff", "pts", "[95%", "CI]", "p",
                              "(test)", "flips", "-/+", "verdict", "trunc", "chg", "reasoning", "chg", "tok/s"]
    assert "\x1b[" in terminal.getvalue()  # colour on a terminal (the verdict)


def test_an_emulated_precision_says_what_was_fake_quantized(tmp_path):
    base, candidate = planted(base_correct=300, right_to_wrong=10, wrong_to_right=5, n=400)
    emulation = {"act_quant": "nvfp4", "weight_quant": "nvfp4", "wrapped_count": 196,
                 "kept_linear": {"lm_head": 1}, "backend": "triton"}
    write_run(tmp_path / "bf16", "bf16", base)
    write_run(tmp_path / "w4a4", "nvfp4-w4a4-emulated", candidate, emulation=emulation)
    comparison = compare_runs([str(tmp_path / "bf16"), str(tmp_path / "w4a4")])
    baseline_row, row = comparison.groups[0].rows
    assert baseline_row.emulation == "" and not baseline_row.notes
    assert row.emulation.startswith("weights nvfp4, activations nvfp4 emulated (fake-quant) on 196 Linear layers")
    assert "lm_head" in row.emulation and row.emulation in row.notes
    compare_main([str(tmp_path / "bf16"), str(tmp_path / "w4a4")], None, None, str(tmp_path / "report"), ["markdown"])
    assert "activations nvfp4 emulated" in (tmp_path / "report" / "comparison.md").read_text()


def test_two_runs_at_chance_get_no_verdict(tmp_path):
    # four-choice questions: 25% is what a model that knows nothing scores; 8 agreeing pairs prove nothing either
    baseline, candidate = planted(2, right_to_wrong=0, wrong_to_right=0, n=8)
    write_run(tmp_path / "bf16", "bf16", baseline)
    write_run(tmp_path / "nvfp4", "nvfp4", candidate)
    (group,) = compare_runs([str(tmp_path / "bf16"), str(tmp_path / "nvfp4")]).groups
    row = group.rows[1]
    assert row.paired.at_floor and row.paired.chance == 0.25
    assert row.verdict == "no verdict: both at or below chance (25%)"
    assert row.paired.difference_low < -0.3 and row.paired.difference_high > 0.3  # +-32 points, not +-0


def _move_run(path: Path, *, host: str | None = None, started: str | None = None) -> None:
    """Record the run as made on another host and/or at another time."""
    run = RunDir(path)
    info = run.run_info()
    if host is not None:
        info.environment.setdefault("device", {})["host"] = host
    if started is not None:
        info.sessions[0].started = started
    run.write_run_info(info)


def test_throughput_ratios_only_on_the_same_machine_and_say_when_runs_are_apart(tmp_path):
    baseline, candidate = planted(600, right_to_wrong=5, wrong_to_right=5)
    write_run(tmp_path / "bf16", "bf16", baseline, tokens_per_second=1000.0)
    write_run(tmp_path / "int8", "int8", candidate, tokens_per_second=4210.0)
    write_run(tmp_path / "fp8", "fp8", candidate, tokens_per_second=1200.0)
    for name in ("bf16", "int8", "fp8"):
        _move_run(tmp_path / name, host="node-a", started="2026-12-01T08:00:00+00:00")
    _move_run(tmp_path / "int8", host="node-b")
    _move_run(tmp_path / "fp8", started="2026-12-01T14:30:00+00:00")
    (group,) = compare_runs([str(tmp_path / name) for name in ("bf16", "int8", "fp8")]).groups
    rows = {row.precision: row for row in group.rows}
    assert rows["int8"].throughput_ratio is None and rows["int8"].tokens_per_second == pytest.approx(4210.0)
    assert any("another machine" in note and "no speed ratio" in note for note in rows["int8"].notes)
    assert rows["fp8"].throughput_ratio == pytest.approx(1.2)
    assert any("6.5 h apart" in note for note in rows["fp8"].notes)
