"""Classified errors and the one place that retries: callers raise, ``retry`` decides."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
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


class NotFound(PermanentError):
    """The remote resource is gone (a message deleted, a history id too old)."""

    code = "not_found"


#: HTTP statuses worth retrying, for cloud APIs and model servers alike: a request timeout,
#: rate limited, or the server's (or a proxy's) passing trouble. Other 5xx (501 not
#: implemented, 505 …) do not pass by themselves.
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: Google says "rate limited" with a 403 and one of these reasons.
RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After in seconds, never negative: a number of seconds or an HTTP date; None when
    absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def http_error(status: int, body: object, *, what: str,
               retry_after: str | None = None) -> SidecarError:
    """The one classification of a failed HTTP call to a cloud API: rate limits and server
    trouble are transient (with the server's Retry-After), a 401 means reconnect, 404 is
    :class:`NotFound`, anything else is permanent (code ``forbidden`` for 403)."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    reasons = {e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)}
    label = next((str(error[k]) for k in ("code", "status") if isinstance(error.get(k), str)),
                 "")
    detail = " ".join(x for x in (f"{what}: HTTP {status}", label,
                                  str(error.get("message") or "")) if x).strip()
    if status in TRANSIENT_STATUSES or (status == 403 and reasons & RATE_LIMIT_REASONS):
        return TransientError(detail, retry_after=parse_retry_after(retry_after))
    if status == 401:
        return NeedsReauth(f"{detail}; a fresh token was refused too: reconnect the account")
    if status == 404:
        return NotFound(detail)
    return PermanentError(detail, code="forbidden" if status == 403 else "bad_request")


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
