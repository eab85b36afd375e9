"""The one HTTP client of the cloud sources: bearer token, one fresh token after a 401, every
failure classified by :func:`sidecar.errors.http_error`, retried only by :func:`retry`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
from yarl import URL

from sidecar.errors import TransientError, http_error, retry

#: ``tokens(force_refresh=False)``: a valid access token; ``True`` after the API refused one.
TokenProvider = Callable[..., Awaitable[str]]
Params = Mapping[str, Any] | Sequence[tuple[str, str]] | None


class ApiClient:
    """GETs JSON from one API (Gmail, Microsoft Graph) as one signed-in account."""

    def __init__(self, tokens: TokenProvider, *, service: str,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 timeout: float = 60.0) -> None:
        self.tokens = tokens
        self.service = service
        self.sleep = sleep
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._token: str | None = None

    def session(self) -> aiohttp.ClientSession:
        """A session for one listing or one read (closed by the caller's ``async with``)."""
        return aiohttp.ClientSession(timeout=self.timeout)

    async def get(self, session: aiohttp.ClientSession, url: str | URL, params: Params = None,
                  *, what: str) -> dict[str, Any]:
        """The JSON body of a 2xx answer; transient failures retried with backoff (or the
        server's Retry-After); anything else raised as classified."""
        return await retry(lambda: self._once(session, url, params, what), what=what,
                           sleep=self.sleep)

    async def _once(self, session: aiohttp.ClientSession, url: str | URL, params: Params,
                    what: str) -> dict[str, Any]:
        for fresh in (False, True):
            if self._token is None or fresh:
                self._token = await self.tokens(force_refresh=fresh)
            headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
            try:
                async with session.get(url, params=params, headers=headers) as resp:
                    if resp.status == 401 and not fresh:
                        continue
                    if 200 <= resp.status < 300:
                        return dict(await resp.json(content_type=None))
                    raise http_error(resp.status, await _error_body(resp), what=what,
                                     retry_after=resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise TransientError(f"{what}: {self.service} unreachable "
                                     f"({type(exc).__name__})") from None
        raise AssertionError("unreachable")  # pragma: no cover


async def _error_body(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {}
