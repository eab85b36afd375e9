"""What the store-backed commands share: open the store at the configured data dir, print JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sidecar.commands.flags import config_from_args
from sidecar.paths import Paths
from sidecar.store import Store

T = TypeVar("T")


def with_store(args: argparse.Namespace, fn: Callable[[Store], Awaitable[T]]) -> T:
    """Open the store (creating/migrating it), run ``fn``, close it: ``asyncio.run`` at the edge."""
    config = config_from_args(args)
    quiet_logging(args, config)  # no "migrating store" lines around a command's answer
    paths = Paths.from_config(config).ensure()

    async def go() -> T:
        async with Store(paths.database) as store:
            return await fn(store)

    return asyncio.run(go())


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def quiet_logging(args: argparse.Namespace, config: Any) -> None:
    """One-shot commands print results; their logs stay at warnings unless asked for."""
    import os

    explicit = getattr(args, "log_level", None) or os.environ.get("SIDECAR_LOG_LEVEL")
    level = config.log_level if explicit else "warning"
    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
