"""Classified errors and the one place that retries: callers raise, ``retry`` decides."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class SidecarError(Exception):
    """Base of every error the sidecar reports to a user; ``code`` is stable, message is human."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class PermanentError(SidecarError):
    """Retrying cannot help (bad input, 400/401/403, corrupt file, missing model)."""

    code = "permanent"


class TransientError(SidecarError):
    """Retrying later may help (429, 5xx, timeouts, connection resets)."""

    code = "transient"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ConfigError(PermanentError):
    """The user's configuration is invalid; ``field`` names what to fix."""

    code = "invalid_config"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.field = field


class StoreError(PermanentError):
    """The SQLite store cannot be used (corrupt file, newer schema, locked)."""

    code = "store_error"


class ModelError(PermanentError):
    """A model file is missing, corrupt or cannot be loaded."""

    code = "model_error"


class NeedsReauth(PermanentError):
    """An OAuth grant was revoked or expired; the user must connect the account again."""

    code = "needs_reauth"


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    attempts: int = 5,
    base_delay: float = 0.5,
    max_delay: float = 30.0,
    what: str = "operation",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``op``, retrying only ``TransientError`` with jittered backoff or its ``retry_after``."""
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except TransientError as exc:
            if attempt == attempts:
                raise
            if exc.retry_after is not None:
                delay = min(max(exc.retry_after, 0.0), max_delay)
            else:
                delay = min(max_delay, base_delay * 2 ** (attempt - 1))
                delay *= 0.5 + random.random() / 2
            log.info("%s failed (%s), retry %d/%d in %.2fs", what, exc, attempt, attempts, delay)
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
