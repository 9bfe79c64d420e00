"""The comparison as one self-contained HTML file: tables, verdicts, notes, bits per weight and the plots.

The file has no scripts and fetches nothing: styles are inline and the plots are PNGs embedded as base64 data
URIs, so it opens offline and can be mailed or archived as it is. A print stylesheet lays it out on A4
landscape pages with tables and figures kept whole, and nothing in it depends on colour alone (verdicts are
words, plot series have distinct markers, line styles and hatching).
"""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from lowbit.report.comparison import Comparison, GroupComparison
from lowbit.report.paired_stats import CONFIDENCE, RESAMPLES, SEED
from lowbit.report.plots import Plot, comparison_plots
from lowbit.report.render import columns, group_cells, group_title, legend, row_notes
from lowbit.rundir import RUN_INFO

STYLE = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 2em auto;
       max-width: 1400px; padding: 0 1em; color: #111; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #999; }
.settings, .legend, figcaption, .source { color: #333; font-size: 0.9em; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.8em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.35em; text-align: left; vertical-align: top; }
th { background: #eee; font-weight: 600; overflow-wrap: break-word; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
td > span { white-space: nowrap; }
td.text { overflow-wrap: break-word; }
td[class^="verdict"] { min-width: 9em; }
tr.baseline td { background: #f5f5f5; font-style: italic; }
.verdict-pass { font-weight: 600; }
.verdict-floor { font-style: italic; }
.verdict-fail { font-weight: 700; text-decoration: underline; }
.plots { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
@page { size: A4 landscape; margin: 12mm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9pt; }
  h2 { break-after: avoid; }
  table, figure, .notes { break-inside: avoid; }
  table { font-size: 7.5pt; }
  .table-wrap { overflow: visible; }
  th { background: #eee; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  figure img { max-height: 170mm; border: none; }
}
"""
NUMBER_COLUMNS = {"score [95% CI]", "recovery", "diff pts [95% CI]", "p (test)", "flips -/+", "trunc chg",
                  "reasoning chg", "tok/s", "bits/weight", "KL nats [95% CI]", "same top", "PPL ratio"}


def render_html(comparison: Comparison, plots: list[Plot] | None = None) -> str:
    """The report; `plots` default to every plot the comparison supports."""
    if plots is None:
        plots = comparison_plots(comparison)
    body = [
        "<h1>Precision comparison</h1>",
        f'<p class="settings">{CONFIDENCE:.0%} intervals (Tango score interval for 0/1 scores, adjusted normal '
        f"interval otherwise); permutation tests with {RESAMPLES:,} sign flips (seed {SEED}); non-inferiority "
        f"margin {comparison.margin_points:g} point(s).</p>",
        *(f'<p class="legend">{escape(line)}</p>' for line in legend(comparison)),
    ]
    for group in comparison.groups:
        body += [f"<section><h2>{escape(group_title(group))}</h2>", _table(group)]
        notes = row_notes(group)
        if notes:
            body.append('<ul class="notes">' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>")
        body.append("</section>")
    if comparison.refused:
        body += ["<section><h2>Not compared</h2><ul>",
                 *(f"<li><code>{escape(run)}</code>: {escape(reason)}</li>" for run, reason in comparison.refused),
                 "</ul></section>"]
    body += _bits_section(comparison)
    body += _plot_sections(plots)
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>Precision comparison</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _table(group: GroupComparison) -> str:
    headers, rows = [*columns(group), "bits/weight"], group.rows
    lines = ['<div class="table-wrap"><table>', "<thead><tr>" + "".join(f"<th>{_breakable(h)}</th>" for h in headers)
             + "</tr></thead><tbody>"]
    for row in rows:
        values = [*group_cells(group, row), "-" if row.bits_per_weight is None else f"{row.bits_per_weight:g}"]
        tds = []
        for header, value in zip(headers, values):
            if header == "run":  # the directory's name, breakable after _ - /; the path as given on hover
                tds.append(f'<td class="text" title="{escape(value)}">{_breakable(Path(value).name or value)}</td>')
            elif header == "verdict":
                kind = ("baseline" if row.is_baseline else "floor" if row.paired and row.paired.at_floor
                        else "pass" if row.paired and row.paired.non_inferior else "fail")
                tds.append(f'<td class="verdict-{kind}">{escape(value)}</td>')
            elif header in NUMBER_COLUMNS:
                tds.append(f'<td class="number">{number_html(value)}</td>')
            else:
                tds.append(f'<td class="text">{escape(value)}</td>')
        lines.append(f'<tr class="{"baseline" if row.is_baseline else "candidate"}">' + "".join(tds) + "</tr>")
    lines.append("</tbody></table></div>")
    return "\n".join(lines)


def _breakable(text: str) -> str:
    """Escaped text that may break after a "_", "-" or "/" (run directories, headers such as bits/weight)."""
    return re.sub(r"([_/-])", r"\1<wbr>", escape(text))


def number_html(text: str) -> str:
    """Escaped cell text that wraps at its spaces but never inside an interval or a parenthesis ("[57.66, 67.10]",
    "(McNemar)"): numbers hold no spaces, so tables narrow to fit the window without splitting one."""
    return re.sub(r"\[[^\]]*\]|\([^)]*\)", lambda group: f"<span>{group[0]}</span>", escape(text))


def _bits_section(comparison: Comparison) -> list[str]:
    precisions = {r.precision: r for g in comparison.groups for r in g.rows}
    known = sorted((p for p, r in precisions.items() if r.bits_per_weight is not None),
                   key=lambda p: (-precisions[p].bits_per_weight, p))
    unknown = sorted(p for p, r in precisions.items() if r.bits_per_weight is None)
    lines = ["<section><h2>Bits per weight</h2>",
             '<p class="source">Storage of one quantized linear-layer weight, its share of the scales included '
             "(embeddings, norms and unquantized layers are not counted). From the checkpoint's quantization "
             f"metadata in {RUN_INFO} where recorded, else from the precision label.</p>"]
    if known:
        lines.append("<table><thead><tr><th>precision</th><th>bits per weight</th><th>from</th></tr></thead><tbody>")
        lines += [f'<tr><td>{escape(p)}</td><td class="number">{precisions[p].bits_per_weight:g}</td>'
                  f"<td>{escape(precisions[p].bits_source)}</td></tr>" for p in known]
        lines.append("</tbody></table>")
    if unknown:
        reason = precisions[unknown[0]].bits_source
        lines.append(f"<p><strong>Unknown bits per weight</strong> ({escape(reason)}; left out of the score plots): "
                     + ", ".join(f"<code>{escape(p)}</code>" for p in unknown) + "</p>")
    lines.append("</section>")
    return lines


def _plot_sections(plots: list[Plot]) -> list[str]:
    titles = {"score_vs_bits": "Score against bits per weight",
              "kl_vs_bits": "Token-level divergence against bits per weight", "recovery_heatmap": "Recovery",
              "group_deltas": "Differences per subject, level and other groups",
              "reasoning_lengths": "Reasoning length"}
    lines = []
    for kind, heading in titles.items():
        chosen = [p for p in plots if p.kind == kind]
        if not chosen:
            continue
        lines += [f"<section><h2>{heading}</h2>", '<div class="plots">']
        for plot in chosen:
            data = base64.b64encode(plot.png).decode("ascii")
            lines.append(f'<figure><img src="data:image/png;base64,{data}" alt="{escape(plot.title)}">'
                         f"<figcaption><strong>{escape(plot.title)}.</strong> {escape(plot.caption)}</figcaption>"
                         "</figure>")
        lines += ["</div>", "</section>"]
    return lines
