"""Tables that fit a terminal of any width without cutting a value (`lowbit compare`, `lowbit sweep report`).

A table that would not fit is never cut (no ellipsis, no dropped column) but laid out again, in the first of
these that fits the width:

1. one table with every column (the folded column, a path, broken over several lines after its "/" if need be);
2. the columns spread over up to `MAX_STACKED` stacked tables, each led by the key columns (the precision; the
   model and precision), filled in the columns' order with the folded column last;
3. one block per row: the row's keys, then each column's header and value (where it has one) on a line.

Cells never wrap in tables (a cell may hold several lines of its own), so a number is never split; in blocks a
value breaks only at its spaces. The width is `COLUMNS` when set, else the terminal's, else (a file, a pipe, a
CI log) `PIPED_WIDTH`.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PIPED_WIDTH = 240  # columns of the output when stdout is not a terminal and COLUMNS is not set
MAX_STACKED = 4  # more tables than this read worse than one block per row
FOLD_MIN_WIDTH = 24  # the narrowest the folded column is folded to (else it moves to a table of its own)


@dataclass
class Cells:
    """A table's text by header, and how to lay it out."""

    headers: list[str]  # every column, in order
    keys: list[str]  # the columns that lead every stacked table and name every block
    rows: list[dict[str, str]]  # header -> text (a cell may hold several lines)
    styles: list[dict[str, str]] = field(default_factory=list)  # per row: header -> rich style, where styled
    left: frozenset[str] = frozenset()  # left-aligned headers (the others are right-aligned)
    folded: str | None = None  # the column whose long values (paths) may be broken over lines
    spaced: bool = False  # a blank line between rows (for cells of several lines)

    def style(self, index: int, header: str) -> str:
        return self.styles[index].get(header, "") if self.styles else ""


def output_width(file: Any) -> int:
    """COLUMNS when set, else the terminal's width, else PIPED_WIDTH for a file or a pipe."""
    columns_env = os.environ.get("COLUMNS", "")
    if columns_env.isdigit() and int(columns_env) > 0:
        return int(columns_env)
    if _is_terminal(file):
        return shutil.get_terminal_size((PIPED_WIDTH, 24)).columns
    return PIPED_WIDTH


def print_blocks(blocks_for: Callable[[Any], list[Any]], file: Any = None, width: int | None = None) -> None:
    """Print what `blocks_for(console)` returns at `width` (default: output_width): colour on a terminal, plain
    text without trailing spaces otherwise."""
    from rich.console import Console

    file = sys.stdout if file is None else file
    width = output_width(file) if width is None else width
    terminal = _is_terminal(file)
    target = file if terminal else io.StringIO()
    console = Console(file=target, width=width, highlight=False, **({} if terminal else {"color_system": None}))
    for block in blocks_for(console):
        console.print(block)
    if not terminal:
        file.write("\n".join(line.rstrip() for line in target.getvalue().splitlines()) + "\n")


def _is_terminal(file: Any) -> bool:
    return hasattr(file, "isatty") and file.isatty()


def fit(cells: Cells, console: Any) -> list[Any]:
    """The cells as one table, as stacked tables, or as one block per row: the first that fits the console."""
    whole = _table(cells, cells.headers, console)
    if whole is not None:
        return [whole]
    stacked = _stacked(cells, console)
    return stacked if stacked is not None else _blocks(cells)


def _stacked(cells: Cells, console: Any) -> list[Any] | None:
    """Columns packed in order into tables led by the keys; None when more than MAX_STACKED are needed or a
    column does not fit beside the keys."""
    order = [h for h in cells.headers if h not in cells.keys and h != cells.folded]
    order += [cells.folded] if cells.folded in cells.headers else []
    sets: list[list[str]] = []
    current = list(cells.keys)
    for header in order:
        if _table(cells, current + [header], console) is not None:
            current.append(header)
            continue
        if current == cells.keys or _table(cells, cells.keys + [header], console) is None:
            return None
        sets.append(current)
        current = cells.keys + [header]
    sets.append(current)
    if len(sets) > MAX_STACKED:
        return None
    return [_table(cells, chosen, console) for chosen in sets]


def _table(cells: Cells, chosen: list[str], console: Any) -> Any | None:
    """A rich table of the chosen columns at its natural width; None when it is wider than the console (the
    folded column counts at its folded width, no narrower than FOLD_MIN_WIDTH)."""
    from rich import box
    from rich.cells import cell_len
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    def build(fold_width: int | None) -> Table:
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, show_lines=cells.spaced)
        for header in chosen:
            table.add_column(header, no_wrap=header != cells.folded, overflow="fold",
                             max_width=fold_width if header == cells.folded else None,
                             justify="left" if header in cells.left else "right")
        for index, row in enumerate(cells.rows):
            table.add_row(*(Text(fold_path(row[h], fold_width) if h == cells.folded else row[h],
                                 style=cells.style(index, h), overflow="fold") for h in chosen))
        return table

    table = build(None)
    natural = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    if natural <= console.width:
        return table
    if cells.folded not in chosen:
        return None
    longest = max(cell_len(row[cells.folded]) for row in cells.rows)
    room = console.width - (natural - longest)
    return build(room) if room >= min(longest, FOLD_MIN_WIDTH) else None


def fold_path(path: str, width: int | None) -> str:
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


def _blocks(cells: Cells) -> list[Any]:
    """One block per row: its keys, then a line per column that has a value, the value beside its header
    (wrapped at spaces)."""
    from rich.table import Table
    from rich.text import Text

    others = [h for h in cells.headers if h not in cells.keys]
    blocks: list[Any] = []
    for index, row in enumerate(cells.rows):
        grid = Table.grid(padding=(0, 0, 0, 2))
        grid.title = Text("  ".join(row[k] for k in cells.keys), style="bold")
        grid.title_justify = "left"
        grid.add_column(no_wrap=True, min_width=max(len(header) for header in others))
        grid.add_column(overflow="fold")
        for header in others:
            if row[header] not in ("", "-"):
                grid.add_row(Text(header, style="dim"), Text(row[header], style=cells.style(index, header)))
        blocks.append(grid)
    return blocks
