"""The command line: parse, resolve settings, call one function; no logic lives here."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from sidecar import __version__
from sidecar.commands.flags import COMMON_SETTINGS, add_setting_flags
from sidecar.errors import SidecarError
from sidecar.exits import (
    CANNOT_WRITE_ERRNOS,
    EXIT_CANNOT_WRITE,
    EXIT_ERROR,
    EXIT_USAGE,
    exit_code,
    exit_codes_text,
)

log = logging.getLogger("sidecar.cli")


def build_parser() -> argparse.ArgumentParser:
    from sidecar.commands import agents, extract, models, run, runs, serve, settings, status

    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="Local extraction sidecar: turns files and mail into suggested records.",
        epilog=exit_codes_text(),
    )
    parser.add_argument("--version", action="version", version=f"sidecar {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (serve, run, status, agents, runs, extract, models, settings):
        module.register(sub)
    for choice in sub.choices.values():
        _ensure_common_flags(choice)
    return parser


def _ensure_common_flags(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command understands where the data lives and the log level."""
    existing = {a.dest for a in parser._actions}
    missing = [n for n in COMMON_SETTINGS if n not in existing]
    if missing:
        add_setting_flags(parser, missing)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _ensure_common_flags(child)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except SidecarError as exc:
        print(f"sidecar: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    except OSError as exc:  # the data or log directory, mostly: one line, not a traceback
        print(f"sidecar: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""),
              file=sys.stderr)
        return EXIT_CANNOT_WRITE if exc.errno in CANNOT_WRITE_ERRNOS else EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
