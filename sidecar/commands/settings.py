"""``sidecar settings``: the settings table, as text or as the Markdown in docs/settings.md."""

from __future__ import annotations

import argparse
import json
import os

from sidecar.commands.flags import add_setting_flags, config_from_args
from sidecar.settings import SETTINGS, markdown_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("settings", help="show every setting with its value, env var and help")
    p.add_argument("--markdown", action="store_true", help="print the docs table")
    p.add_argument("--json", action="store_true", help="print resolved values as JSON")
    add_setting_flags(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table(), end="")
        return 0
    config = config_from_args(args)
    if args.json:
        plain = (int, float, bool, str, type(None))
        values = {k: v if isinstance(v, plain) else [str(x) for x in v]
                  if isinstance(v, tuple) else str(v) for k, v in config.values.items()}
        print(json.dumps(values, indent=2))
        return 0
    for s in SETTINGS:
        value = config.values[s.name]
        shown = os.pathsep.join(map(str, value)) if isinstance(value, tuple) else value
        print(f"{s.name:28} {shown!s:30} {s.env}")
    return 0
