"""The command line: parse, resolve settings, call one function; no logic lives here."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence

from sidecar import __version__
from sidecar.errors import ConfigError, SidecarError, StoreError
from sidecar.settings import SETTINGS, Config, Setting

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
EXIT_STORE = 4
EXIT_CONFIG = 5
EXIT_STORE_LOCKED = 6
EXIT_CANNOT_WRITE = 7

#: Every exit code and what it means (``sidecar --help``, docs/packaging.md, README).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "ok (a clean stop)"),
    (EXIT_ERROR, "failure (e.g. the parent process is already gone, the port is taken)"),
    (EXIT_USAGE, "usage"),
    (EXIT_ALREADY_RUNNING, "another instance holds the data dir"),
    (EXIT_STORE, "the database is unusable (damaged, from a newer version, read-only, or a "
                 "folder in its place)"),
    (EXIT_CONFIG, "invalid configuration"),
    (EXIT_STORE_LOCKED, "the database is locked by another program (the file is fine: retry "
                        "once that program is closed)"),
    (EXIT_CANNOT_WRITE, "the data or log directory cannot be written (permissions, a "
                        "read-only or full disk)"),
)
#: Stable error codes with an exit code of their own; other errors go by class.
_EXIT_BY_CODE = {
    "already_running": EXIT_ALREADY_RUNNING, "weak_token": EXIT_CONFIG,
    "database_locked": EXIT_STORE_LOCKED, "data_dir_unwritable": EXIT_CANNOT_WRITE,
    "log_dir_unwritable": EXIT_CANNOT_WRITE, "disk_full": EXIT_CANNOT_WRITE,
}


#: OS errors that mean "cannot write there" (exit 7): permissions, read-only or full disk,
#: a file where a directory should be.
CANNOT_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                       getattr(errno, "EDQUOT", errno.ENOSPC), errno.EEXIST, errno.ENOTDIR}


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an error that ends a command."""
    by_code = _EXIT_BY_CODE.get(getattr(exc, "code", None) or "")
    if by_code is not None:
        return by_code
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, StoreError):
        return EXIT_STORE
    return EXIT_ERROR


def exit_codes_text() -> str:
    return "exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES)

#: Settings every subcommand accepts (where state lives and how loud to be).
COMMON_SETTINGS = ("data_dir", "log_dir", "model_dir", "log_level")

log = logging.getLogger("sidecar.cli")


def add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """Flags generated from the settings table (``None`` = every setting)."""
    group = parser.add_argument_group("settings (flag > environment > default)")
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        _add_flag(group, s)


def _add_flag(group: argparse._ArgumentGroup, s: Setting) -> None:
    default = s.default_text or s.default
    help_text = f"{s.help} [env {s.env}; default {default}]"
    if s.type is bool:
        group.add_argument(s.flag, dest=s.name, default=None,
                           action=argparse.BooleanOptionalAction, help=help_text)
    elif s.type is list:
        group.add_argument(s.flag, dest=s.name, default=None, action="append", metavar="DIR",
                           help=help_text)
    else:
        group.add_argument(s.flag, dest=s.name, default=None, metavar=s.type.__name__.upper(),
                           help=help_text)


def config_from_args(args: argparse.Namespace) -> Config:
    return Config.load({s.name: getattr(args, s.name, None) for s in SETTINGS})


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
