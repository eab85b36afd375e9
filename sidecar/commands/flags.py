"""Command-line flags generated from the settings table, and the config they resolve to."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sidecar.settings import SETTINGS, Config, Setting

#: Settings every subcommand accepts (where state lives and how loud to be).
COMMON_SETTINGS = ("data_dir", "log_dir", "model_dir", "log_level")


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
