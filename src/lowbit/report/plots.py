"""The report's plots, as PNG images (matplotlib's Agg canvas; pyplot and its global state are not used).

    score_vs_bits        per task: the headline score (95% interval) against bits per weight, one series per model
    kl_vs_bits           mean KL divergence from the baseline (95% interval) against bits per weight, one series per
                         model, for precisions with a `lowbit divergence` run among the inputs
    recovery_heatmap     precision x (model, task): recovery in % of the baseline, * where the difference is
                         significant
    group_deltas         per comparison group and grouping (subject, level, ...): each precision's paired
                         difference from the baseline with its 95% interval, and the non-inferiority margin
    reasoning_lengths    per comparison group: the distribution of reasoning tokens per completion, per precision

Every plot reads in grayscale and on paper: series differ by marker, line style or hatching as well as colour;
the heatmap's colormap (cividis) grows monotonically in lightness and every cell is written out as a number;
missing cells are hatched, not just left blank.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

from lowbit.errors import UsageError
from lowbit.report.comparison import Comparison, ComparisonRow, GroupComparison
from lowbit.rundir import RUN_INFO

DPI = 110
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*", "h", "<", ">")
LINE_STYLES = ("-", "--", ":", "-.")
HATCHES = ("", "//", "..", "xx", "\\\\", "oo", "++", "--")
COLOURS = ("#1f4e79", "#c55a11", "#548235", "#7030a0", "#bf9000", "#2e75b6", "#843c0c", "#404040")
HEATMAP_COLORMAP = "cividis"
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3, "savefig.bbox": "tight",
         "legend.fontsize": 8, "legend.framealpha": 0.9}


@dataclass(frozen=True)
class Plot:
    kind: str  # score_vs_bits | recovery_heatmap | group_deltas | reasoning_lengths
    title: str
    caption: str
    png: bytes


def comparison_plots(comparison: Comparison) -> list[Plot]:
    """Every plot the comparison supports, in report order."""
    try:
        import matplotlib
    except ModuleNotFoundError as e:
        raise UsageError("the HTML report draws its plots with matplotlib, which is not installed: "
                         "pip install matplotlib, or choose --format markdown, csv or json") from e

    with matplotlib.rc_context(STYLE):
        plots = [*score_vs_bits(comparison), *kl_vs_bits(comparison), recovery_heatmap(comparison)]
        for group in comparison.groups:
            plots += group_deltas(group, comparison.margin_points)
        for group in comparison.groups:
            plot = reasoning_lengths(group, comparison.reasoning_tokens)
            if plot is not None:
                plots.append(plot)
    return plots


def group_label(group: GroupComparison) -> str:
    options = ", ".join(f"{k}={v}" for k, v in group.prompt_options.items() if k != "hub_id")
    return f"{group.family} {group.task}" + (f" ({options})" if options else "")


# ------------------------------------------------------------------------------------------- plots


def score_vs_bits(comparison: Comparison) -> list[Plot]:
    """One plot per task; precisions without known bits per weight are left out (the report lists them)."""
    plots = []
    tasks = list(dict.fromkeys(group.task for group in comparison.groups))
    for task in tasks:
        groups = [g for g in comparison.groups if g.task == task]
        series = [(g, sorted((r for r in g.rows if r.bits_per_weight is not None), key=lambda r: r.bits_per_weight))
                  for g in groups]
        series = [(g, rows) for g, rows in series if rows]
        if not series:
            continue
        figure, axes = _figure(6.4, 3.6)
        ticks: set[float] = set()
        for index, (group, rows) in enumerate(series):
            bits = [r.bits_per_weight for r in rows]
            scores = [100 * r.metric["value"] for r in rows]
            # a bootstrap percentile interval need not contain its point: no negative error bars
            low = [max(0.0, s - 100 * r.metric.get("ci_low", r.metric["value"])) for s, r in zip(scores, rows)]
            high = [max(0.0, 100 * r.metric.get("ci_high", r.metric["value"]) - s) for s, r in zip(scores, rows)]
            axes.errorbar(bits, scores, yerr=[low, high], marker=MARKERS[index % len(MARKERS)],
                          linestyle=LINE_STYLES[index % len(LINE_STYLES)], color=_colour(index), capsize=3,
                          markersize=6, markerfacecolor="white", label=group_label(group))
            for x, y, row in zip(bits, scores, rows):
                axes.annotate(row.precision, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
            ticks.update(bits)
        axes.set_xscale("log", base=2)
        axes.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)], rotation=45)
        axes.minorticks_off()
        axes.set_xlabel("bits per weight (log scale)")
        axes.set_ylabel(f"{series[0][0].metric} (%)")
        axes.set_title(f"{task}: score against bits per weight")
        axes.legend(loc="lower right")
        plots.append(Plot("score_vs_bits", f"{task}: score against bits per weight",
                          "Headline score with its 95% interval; one line per model; bits per weight from "
                          f"{RUN_INFO} or the precision label (see the table below).", _png(figure)))
    return plots


def kl_vs_bits(comparison: Comparison) -> list[Plot]:
    """Mean KL (log scale) against bits per weight; none when no precision has both."""
    series: dict[str, dict[str, ComparisonRow]] = {}
    for group in comparison.groups:
        for row in group.rows:
            kl = (row.divergence or {}).get("kl_mean") or {}
            if row.bits_per_weight is not None and kl.get("value"):
                series.setdefault(group.family, {}).setdefault(row.precision, row)
    if not series:
        return []
    figure, axes = _figure(6.4, 3.6)
    ticks: set[float] = set()
    for index, (family, by_precision) in enumerate(series.items()):
        rows = sorted(by_precision.values(), key=lambda r: r.bits_per_weight)
        bits = [r.bits_per_weight for r in rows]
        kl = [r.divergence["kl_mean"] for r in rows]
        values = [k["value"] for k in kl]
        low = [v - (k.get("ci_low") or v) for v, k in zip(values, kl)]
        high = [(k.get("ci_high") or v) - v for v, k in zip(values, kl)]
        axes.errorbar(bits, values, yerr=[low, high], marker=MARKERS[index % len(MARKERS)],
                      linestyle=LINE_STYLES[index % len(LINE_STYLES)], color=_colour(index), capsize=3,
                      markersize=6, markerfacecolor="white", label=family)
        for x, y, row in zip(bits, values, rows):
            axes.annotate(row.precision, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ticks.update(bits)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(sorted(ticks), [f"{t:g}" for t in sorted(ticks)], rotation=45)
    axes.minorticks_off()
    axes.set_xlabel("bits per weight (log scale)")
    axes.set_ylabel("mean KL from the baseline (nats, log scale)")
    axes.set_title("token-level divergence against bits per weight")
    axes.legend(loc="upper right")
    return [Plot("kl_vs_bits", "KL divergence against bits per weight",
                 "Mean next-token KL divergence from the baseline over the divergence run's tokens, with its 95% "
                 "sequence-bootstrap interval; one line per model.", _png(figure))]


def recovery_heatmap(comparison: Comparison) -> Plot:
    """Rows: precisions (most bits first); columns: comparison groups. Missing combinations are hatched."""
    import numpy as np

    columns = comparison.groups
    bits = {r.precision: r.bits_per_weight for g in columns for r in g.rows}
    precisions = sorted(bits, key=lambda p: (-(bits[p] if bits[p] is not None else -1.0), p))
    values = np.full((len(precisions), len(columns)), np.nan)
    marks = np.full(values.shape, "", dtype=object)
    for column, group in enumerate(columns):
        for row in group.rows:
            line = precisions.index(row.precision)
            if row.is_baseline:
                values[line, column], marks[line, column] = 100.0, " (base)"
            elif row.paired is not None and row.paired.recovery is not None:
                values[line, column] = 100 * row.paired.recovery
                marks[line, column] = " *" if row.paired.significant else ""
    figure, axes = _figure(1.6 + 1.5 * len(columns), 1.0 + 0.45 * len(precisions))
    axes.grid(False)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (99.0, 100.0)
    if high - low < 1e-9:
        low, high = low - 1, high + 1
    image = axes.imshow(np.ma.masked_invalid(values), cmap=HEATMAP_COLORMAP, vmin=low, vmax=high, aspect="auto")
    colormap = image.get_cmap()
    for (line, column), value in np.ndenumerate(values):
        if math.isnan(value):
            axes.add_patch(_hatched_cell(column, line))
            axes.text(column, line, "n/a", ha="center", va="center", fontsize=8)
            continue
        red, green, blue, _ = colormap((value - low) / (high - low))
        ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
        axes.text(column, line, f"{value:.1f}{marks[line, column]}", ha="center", va="center", color=ink,
                  fontsize=8)
    axes.set_xticks(range(len(columns)), [group_label(g).replace(" ", "\n", 1) for g in columns])
    axes.set_yticks(range(len(precisions)), precisions)
    axes.set_title("Recovery (% of the baseline's score)")
    figure.colorbar(image, ax=axes, label="recovery (%)", shrink=0.8)
    return Plot("recovery_heatmap", "Recovery heatmap (precision x task)",
                "Each cell is the candidate's score as a % of its baseline on the paired samples; * marks a "
                "significant difference (p < 0.05); n/a: no run of that precision for that model and task.",
                _png(figure))


def group_deltas(group: GroupComparison, margin_points: float) -> list[Plot]:
    """A forest plot per grouping (subject, level, ...): each group's paired difference with its 95% interval."""
    candidates = [r for r in group.rows if r.breakdowns]
    groupings = list(dict.fromkeys(key for r in candidates for key in r.breakdowns))
    plots = []
    for grouping in groupings:
        values = list(dict.fromkeys(d.value for r in candidates for d in r.breakdowns.get(grouping, [])))
        spread = 0.7 / max(len(candidates), 1)
        figure, axes = _figure(6.4, max(2.4, 0.8 + 0.22 * len(values) * max(1, len(candidates) / 2)))
        for index, row in enumerate(candidates):
            deltas = {d.value: d for d in row.breakdowns.get(grouping, [])}
            shown = [v for v in values if v in deltas]
            ys = [values.index(v) + (index - (len(candidates) - 1) / 2) * spread for v in shown]
            xs = [100 * deltas[v].difference for v in shown]
            left = [x - 100 * deltas[v].difference_low for x, v in zip(xs, shown)]
            right = [100 * deltas[v].difference_high - x for x, v in zip(xs, shown)]
            axes.errorbar(xs, ys, xerr=[left, right], fmt=MARKERS[index % len(MARKERS)], color=_colour(index),
                          markerfacecolor="white" if index % 2 else _colour(index), capsize=2, markersize=5,
                          linestyle="none", elinewidth=1, label=row.precision)
        axes.axvline(0, color="black", linewidth=1)
        axes.axvline(-margin_points, color="black", linewidth=1, linestyle="--", label=f"-{margin_points:g} pt margin")
        axes.set_yticks(range(len(values)), values)
        axes.set_ylim(len(values) - 0.5, -0.5)
        axes.set_xlabel(f"difference from {group.baseline.split(' ')[0]} (points, 95% paired interval)")
        axes.set_title(f"{group_label(group)}: difference per {grouping}")
        axes.legend(loc="best")
        plots.append(Plot("group_deltas", f"{group_label(group)}: per-{grouping} differences",
                          f"Paired difference (candidate - baseline) within each {grouping}, with its 95% interval; "
                          "groups are small, so intervals are wide and p-values are not adjusted for the number of "
                          "groups.", _png(figure)))
    return plots


def reasoning_lengths(group: GroupComparison, reasoning_tokens: dict[str, list[int]]) -> Plot | None:
    """Box plots of reasoning tokens per completion, one per run of the group; None when no run reasoned."""
    rows = [r for r in group.rows if any(reasoning_tokens.get(r.run, []))]
    if not rows:
        return None
    figure, axes = _figure(6.4, 1.0 + 0.5 * len(rows))
    boxes = axes.boxplot([reasoning_tokens[r.run] for r in rows], orientation="horizontal", patch_artist=True,
                         showmeans=True, tick_labels=[_row_label(r) for r in rows],
                         meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
                         medianprops={"color": "black", "linewidth": 1.5},
                         flierprops={"marker": ".", "markersize": 3})
    for index, patch in enumerate(boxes["boxes"]):
        patch.set(facecolor=_colour(index), alpha=0.45, hatch=HATCHES[index % len(HATCHES)], edgecolor="black")
    axes.invert_yaxis()
    axes.set_xlabel("reasoning tokens per completion (box: quartiles; line: median; diamond: mean)")
    axes.set_title(f"{group_label(group)}: reasoning length")
    return Plot("reasoning_lengths", f"{group_label(group)}: reasoning length per precision",
                "Distribution of reasoning tokens per completion; a precision that reasons longer may hit the token "
                "limit more often (see the truncation change in the table).", _png(figure))


# ------------------------------------------------------------------------------------------- helpers


def _row_label(row: ComparisonRow) -> str:
    return f"{row.precision} (baseline)" if row.is_baseline else row.precision


def _colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _hatched_cell(column: int, line: int):
    from matplotlib.patches import Rectangle

    return Rectangle((column - 0.5, line - 0.5), 1, 1, facecolor="white", edgecolor="gray", hatch="///",
                     linewidth=0)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()
