"""The comparison as terminal tables that stay readable at any width.

Every value keeps its full text: a table that would not fit is never cut (no ellipsis, no dropped column) but laid
out again, in the first of these that fits the width:

1. one table per group with every column (the run directory folded over several lines if need be);
2. the same columns spread over up to `MAX_STACKED` stacked tables, each led by the precision column, filled in
   the columns' order (scores and the paired statistics first, then the verdict, the generation changes,
   throughput, divergence figures and the run directory);
3. one block per run: its precision, then each column's header and value (where it has one) on a line.

A value is never split inside a number: numeric cells and verdicts do not wrap in tables, and in blocks a line
breaks only at spaces (between an estimate and its interval), down to widths narrower than any value. Titles,
notes and the legend wrap at spaces. The width is `COLUMNS` when set, else the terminal's, else (a file, a pipe,
a CI log) `PIPED_WIDTH`.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from typing import Any

from lowbit.report.comparison import Comparison, ComparisonRow, GroupComparison
from lowbit.report.render import columns, group_cells, group_title, legend, row_notes

PIPED_WIDTH = 240  # columns of the output when stdout is not a terminal and COLUMNS is not set
MAX_STACKED = 4  # more tables than this per group read worse than one block per run
RUN_MIN_WIDTH = 24  # the narrowest the run directory's column is folded to (else it moves to a table of its own)
KEY, RUN, VERDICT = "precision", "run", "verdict"
LEFT_ALIGNED = (KEY, RUN, VERDICT)


def output_width(file: Any) -> int:
    """COLUMNS when set, else the terminal's width, else PIPED_WIDTH for a file or a pipe."""
    columns_env = os.environ.get("COLUMNS", "")
    if columns_env.isdigit() and int(columns_env) > 0:
        return int(columns_env)
    if hasattr(file, "isatty") and file.isatty():
        return shutil.get_terminal_size((PIPED_WIDTH, 24)).columns
    return PIPED_WIDTH


def print_text(comparison: Comparison, file: Any = None, width: int | None = None) -> None:
    """The tables, notes and legend at `width` (default: output_width): colour on a terminal, plain text with no
    trailing spaces otherwise."""
    from rich.console import Console

    file = sys.stdout if file is None else file
    width = output_width(file) if width is None else width
    if hasattr(file, "isatty") and file.isatty():
        console = Console(file=file, width=width, highlight=False)
        for renderable in _blocks(comparison, console):
            console.print(renderable)
        return
    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, highlight=False)
    for renderable in _blocks(comparison, console):
        console.print(renderable)
    file.write("\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n")


def render_text(comparison: Comparison, width: int = PIPED_WIDTH) -> str:
    """The terminal output as plain text (no colour) at `width`."""
    buffer = io.StringIO()
    print_text(comparison, buffer, width)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- layout


def _blocks(comparison: Comparison, console: Any) -> list[Any]:
    from rich.text import Text

    blocks: list[Any] = []
    for group in comparison.groups:
        blocks.append(Text(group_title(group), style="bold", overflow="fold"))
        for part in _group_layout(group, console):  # tables or per-run blocks, each after a blank line
            blocks += [Text(""), part]
        blocks.append(Text(""))
        notes = [Text(f"  note: {note}", overflow="fold") for note in row_notes(group)]
        blocks += [*notes, Text("")] if notes else []
    blocks.extend(Text(line, overflow="fold") for line in legend(comparison))
    return blocks


def _group_layout(group: GroupComparison, console: Any) -> list[Any]:
    """The group's rows as one table, as stacked tables, or as one block per run: the first that fits."""
    headers = columns(group)
    values = [dict(zip(headers, group_cells(group, row))) for row in group.rows]
    width = console.width
    whole = _table(group, values, list(headers), width, console)
    if whole is not None:
        return [whole]
    stacked = _stacked_tables(group, values, headers, width, console)
    if stacked is not None:
        return stacked
    return _run_blocks(group, values, headers)


def _stacked_tables(group: GroupComparison, values: list[dict[str, str]], headers: tuple[str, ...], width: int,
                    console: Any) -> list[Any] | None:
    """Columns packed in order into tables led by the precision; None when more than MAX_STACKED are needed or a
    column does not fit beside the precision."""
    order = [h for h in headers if h not in (KEY, RUN)] + [RUN]
    sets: list[list[str]] = []
    current = [KEY]
    for header in order:
        if _table(group, values, current + [header], width, console) is not None:
            current.append(header)
            continue
        if len(current) == 1 or _table(group, values, [KEY, header], width, console) is None:
            return None
        sets.append(current)
        current = [KEY, header]
    sets.append(current)
    if len(sets) > MAX_STACKED:
        return None
    return [_table(group, values, chosen, width, console) for chosen in sets]


def _table(group: GroupComparison, values: list[dict[str, str]], chosen: list[str], width: int,
           console: Any) -> Any | None:
    """A rich table of the chosen columns at its natural width; None when it is wider than `width` (the run
    directory's column counts at its folded width)."""
    from rich import box
    from rich.cells import cell_len
    from rich.measure import Measurement
    from rich.table import Table

    def build(run_width: int | None) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
        for header in chosen:
            table.add_column(header, no_wrap=header != RUN, overflow="fold", max_width=run_width if header == RUN
                             else None, justify="left" if header in LEFT_ALIGNED else "right")
        for row, cells in zip(group.rows, values):
            table.add_row(*(_styled(row, header, _fold_path(cells[header], run_width) if header == RUN
                                    else cells[header]) for header in chosen))
        return table

    table = build(None)
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    if natural <= width:
        return table
    if RUN not in chosen:
        return None
    run_width = max(cell_len(cells[RUN]) for cells in values)
    room = width - (natural - run_width)
    return build(room) if room >= min(run_width, RUN_MIN_WIDTH) else None


def _fold_path(path: str, width: int | None) -> str:
    """A path in lines of at most `width` characters, broken after a "/" where one falls in the line."""
    from rich.cells import cell_len

    if width is None:
        return path
    lines, rest = [], path
    while cell_len(rest) > width:
        cut = rest.rfind("/", 0, width) + 1 or width
        lines.append(rest[:cut])
        rest = rest[cut:]
    return "\n".join([*lines, rest])


def _run_blocks(group: GroupComparison, values: list[dict[str, str]], headers: tuple[str, ...]) -> list[Any]:
    """One block per run: its precision, then a line per column that has a value, the value beside its header
    (wrapped at spaces)."""
    from rich.table import Table
    from rich.text import Text

    blocks: list[Any] = []
    for row, cells in zip(group.rows, values):
        grid = Table.grid(padding=(0, 0, 0, 2))
        grid.title, grid.title_justify = Text(cells[KEY], style="bold"), "left"
        grid.add_column(no_wrap=True, min_width=max(len(header) for header in headers))
        grid.add_column(overflow="fold")
        for header in headers:
            if header != KEY and cells[header] != "-":
                grid.add_row(Text(header, style="dim"), _styled(row, header, cells[header]))
        blocks.append(grid)
    return blocks


def _styled(row: ComparisonRow, header: str, value: str) -> Any:
    from rich.text import Text

    if header == VERDICT and row.paired is not None:
        style = "dim" if row.paired.at_floor else "green" if row.paired.non_inferior else "bold red"
    else:
        style = "dim" if row.is_baseline else ""
    return Text(value, style=style, overflow="fold")

