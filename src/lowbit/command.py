"""How a `lowbit` subcommand is declared: its name, help, key=value options, switches and handler.

Every command takes key=value options (parsed by lowbit.overrides) in any order relative to its switches;
switches are flags without values (`--dry-run`), except `-c RUN_DIR` of `lowbit score`. A module declares

    COMMAND = Command("dequantize", "write a BF16 checkpoint", run="lowbit.quant.dequantize_cli:run",
                      options="in=<dir> out=<dir> [device=cpu|cuda ...]")

and lowbit.cli registers it in COMMANDS with one line. The handler, imported only when the command runs, gets
the parsed arguments: `overrides` (the key=value items in the order given) and one attribute per switch.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from lowbit.errors import UsageError


@dataclass(frozen=True)
class Switch:
    flags: tuple[str, ...]  # e.g. ("--dry-run",) or ("-c", "--run-dir")
    help: str
    metavar: str | None = None  # a switch that names something takes one value (score's -c RUN_DIR)
    required: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: str = ""  # "module:function" taking the parsed arguments, returning the exit status
    options: str = ""  # the key=value options, shown under `lowbit <name> --help`
    switches: tuple[Switch, ...] = ()
    items_help: str = "key=value options"
    items_metavar: str = "key=value"
    actions: tuple[Command, ...] = ()  # sub-actions, e.g. `lowbit ruler prepare`
    retired: dict[str, str] = field(default_factory=dict)  # a flag users typed before -> its key=value spelling

    def add_to(self, subparsers, prefix: str = "") -> None:
        parser = subparsers.add_parser(self.name, help=self.help, description=self.help,
                                       epilog=self.options or None,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        if self.actions:
            actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
            for action in self.actions:
                action.add_to(actions, prefix=f"{prefix}{self.name} ")
            return
        for switch in self.switches:
            if switch.metavar:
                parser.add_argument(*switch.flags, metavar=switch.metavar, required=switch.required, help=switch.help)
            else:
                parser.add_argument(*switch.flags, action="store_true", help=switch.help)
        parser.add_argument("overrides", nargs="*", metavar=self.items_metavar, help=self.items_help)
        parser.set_defaults(command_spec=self, command_path=f"lowbit {prefix}{self.name}")

    def take_extra(self, args: argparse.Namespace, extra: list[str]) -> None:
        """Append key=value items that came after a switch to `args.overrides`; refuse unknown flags, naming the
        key=value spelling of a retired one."""
        for item in extra:
            if item.startswith("-") and not _is_number(item):
                flag = item.partition("=")[0]
                if flag in self.retired:
                    raise UsageError(f"{args.command_path} takes {self.retired[flag]} instead of {flag} "
                                     f"(options are key=value; see {args.command_path} --help)")
                raise UsageError(f"unknown switch {flag} for {args.command_path}: options are key=value, "
                                 f"switches are {', '.join(self.switch_names()) or 'none'}")
            args.overrides.append(item)

    def switch_names(self) -> list[str]:
        return [switch.flags[-1] for switch in self.switches]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
