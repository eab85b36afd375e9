"""``sidecar serve``: the daemon Electron spawns."""

from __future__ import annotations

import argparse

from sidecar.commands.flags import add_setting_flags, config_from_args
from sidecar.exits import exit_codes_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="run the daemon (prints one JSON ready line on stdout)",
        description="Run the daemon: bind 127.0.0.1, print one JSON ready line on stdout, serve "
        "the WebSocket /ws (token from SIDECAR_TOKEN, or generated into <data-dir>/token). If "
        "it cannot start, it prints one JSON fatal line instead "
        '({"event":"fatal","code":N,"error":"...","message":"..."}), one line on stderr, and '
        "exits with code N within 2 s.",
        epilog=exit_codes_text(),
    )
    p.add_argument("--parent-pid", type=int, default=None,
                   help="exit cleanly within ~1 s after this process (Electron) is gone")
    p.add_argument("--watch-stdin", action="store_true",
                   help="exit cleanly when stdin reaches EOF (the parent closed its pipe)")
    add_setting_flags(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from sidecar import daemon
    from sidecar.logging_setup import setup_logging
    from sidecar.paths import Paths
    from sidecar.stdio import claim_stdout

    ready = claim_stdout()  # before anything can print
    paths: Paths | None = None
    try:
        config = config_from_args(args)
        paths = Paths.from_config(config)
        paths.ensure()
        setup_logging(config.log_level, paths.log_file)
    except Exception as exc:  # no ready line will come: say why on stdout, stderr, exit code
        return daemon.fatal(ready, exc, paths)
    return daemon.run(config, paths, ready, parent_pid=args.parent_pid,
                      watch_stdin=args.watch_stdin)
