"""The comparison in a terminal of any width: per group its title, its rows laid out by `fit.py` (one table;
stacked tables led by the precision, with scores and the paired statistics first, then the verdict, the
generation changes, throughput, divergence figures and the run directory; or one block per run), its notes, and
the legend. No number, precision label or verdict is cut or split; titles, notes and the legend wrap at spaces.
"""

from __future__ import annotations

import io
from typing import Any

from lowbit.report.comparison import Comparison, GroupComparison
from lowbit.report.fit import PIPED_WIDTH, Cells, fit, print_blocks
from lowbit.report.render import columns, group_cells, group_title, legend, row_notes

KEY, RUN, VERDICT = "precision", "run", "verdict"


def print_text(comparison: Comparison, file: Any = None, width: int | None = None) -> None:
    """The terminal output at `width` (default: COLUMNS, the terminal's width, or PIPED_WIDTH when piped)."""
    print_blocks(lambda console: _blocks(comparison, console), file, width)


def render_text(comparison: Comparison, width: int = PIPED_WIDTH) -> str:
    """The terminal output as plain text (no colour) at `width`."""
    buffer = io.StringIO()
    print_text(comparison, buffer, width)
    return buffer.getvalue()


def _blocks(comparison: Comparison, console: Any) -> list[Any]:
    from rich.text import Text

    blocks: list[Any] = []
    for group in comparison.groups:
        blocks.append(Text(group_title(group), style="bold", overflow="fold"))
        for part in fit(group_cells_of(group), console):  # tables or per-run blocks, each after a blank line
            blocks += [Text(""), part]
        blocks.append(Text(""))
        notes = [Text(f"  note: {note}", overflow="fold") for note in row_notes(group)]
        blocks += [*notes, Text("")] if notes else []
    blocks.extend(Text(line, overflow="fold") for line in legend(comparison))
    return blocks


def group_cells_of(group: GroupComparison) -> Cells:
    """The group's cells: the baseline row dimmed, verdicts coloured by what they say."""
    headers = list(columns(group))
    rows, styles = [], []
    for row in group.rows:
        rows.append(dict(zip(headers, group_cells(group, row))))
        style = {header: "dim" for header in headers} if row.is_baseline else {}
        if row.paired is not None:
            style[VERDICT] = ("dim" if row.paired.at_floor else "green" if row.paired.non_inferior
                              else "bold red")
        styles.append(style)
    return Cells(headers=headers, keys=[KEY], rows=rows, styles=styles, left=frozenset((KEY, RUN, VERDICT)),
                 folded=RUN)
