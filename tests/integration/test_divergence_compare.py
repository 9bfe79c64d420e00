"""`lowbit compare` with `lowbit divergence` runs among its inputs: divergence columns for the precisions that have
one, in every format, and the KL-against-bits plot in the HTML report."""

from __future__ import annotations

import numpy as np
from report_support import planted, write_run

from lowbit.divergence import summary
from lowbit.report.compare import compare_runs
from lowbit.report.html import render_html
from lowbit.report.plots import kl_vs_bits
from lowbit.report.render import render_csv, render_markdown
from lowbit.report.terminal import render_text
from lowbit.rundir import Metrics, RunConfig, RunDir


def write_divergence_run(path, precision: str, kl_scale: float):
    """A divergence run directory as `lowbit divergence` writes it, from per-token figures drawn here."""
    rng = np.random.default_rng(7)
    sequences = [{"kl": rng.exponential(kl_scale, 60), "same_top": rng.random(60) < 0.95,
                  "base_nll": rng.random(60), "cand_nll": rng.random(60) + kl_scale,
                  "top_prob_change": rng.normal(0, kl_scale, 60)} for _ in range(8)]
    metrics, groups = summary.summarize(sequences, [["text"] * 60] * 8, [np.arange(1, 61)] * 8)
    run = RunDir(path)
    run.write_config(RunConfig.from_json({"eval_dataset": "divergence", "precision": precision,
                                          "model_name": f"ckpts/qwen3-4b-{precision}",
                                          "model": {"model_name": "Qwen/Qwen3-4B"}}))
    run.write_divergence([summary.sequence_line(f"chunk-{i}", s, ["text"] * 60) for i, s in enumerate(sequences)],
                         Metrics(task="divergence", task_version="1", headline="kl_mean", metrics=metrics,
                                 groups=groups, extra={"divergence": {"source": "corpus"}}))
    return metrics


def test_compare_shows_divergence_beside_the_accuracy_rows(tmp_path):
    base, candidate = planted(70, 6, 3)
    write_run(tmp_path / "bf16", "bf16", base)
    write_run(tmp_path / "nvfp4", "nvfp4", candidate)
    write_run(tmp_path / "mxfp4", "mxfp4", candidate)
    nvfp4 = write_divergence_run(tmp_path / "div-nvfp4", "nvfp4", 0.01)
    write_divergence_run(tmp_path / "div-mxfp4", "mxfp4", 0.03)
    comparison = compare_runs([str(tmp_path / "*")])
    (group,) = comparison.groups
    by_precision = {row.precision: row for row in group.rows}
    assert set(by_precision) == {"bf16", "nvfp4", "mxfp4"} and not comparison.refused
    assert by_precision["bf16"].divergence is None
    assert by_precision["nvfp4"].divergence["kl_mean"]["value"] == nvfp4["kl_mean"]["value"]
    assert by_precision["mxfp4"].divergence["kl_mean"]["value"] > nvfp4["kl_mean"]["value"]
    markdown = render_markdown(comparison)
    assert "| KL nats [95% CI] | same top | PPL ratio |" in markdown
    assert f"{nvfp4['kl_mean']['value']:.4g} [" in markdown and "KL nats" in render_text(comparison)
    csv_lines = render_csv(comparison).splitlines()
    header = csv_lines[0].split(",")
    nvfp4_line = next(line.split(",") for line in csv_lines[1:] if ",nvfp4," in line)
    assert float(nvfp4_line[header.index("kl_mean")]) == nvfp4["kl_mean"]["value"]
    (plot,) = kl_vs_bits(comparison)
    assert plot.kind == "kl_vs_bits" and plot.png.startswith(b"\x89PNG")
    html = render_html(comparison)
    assert "<h2>Token-level divergence against bits per weight</h2>" in html and "KL nats [95% CI]" in html


def test_compare_without_divergence_runs_keeps_its_columns(tmp_path):
    base, candidate = planted(70, 6, 3)
    write_run(tmp_path / "bf16", "bf16", base)
    write_run(tmp_path / "nvfp4", "nvfp4", candidate)
    comparison = compare_runs([str(tmp_path / "*")])
    assert "KL nats" not in render_markdown(comparison) and kl_vs_bits(comparison) == []
