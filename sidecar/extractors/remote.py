"""The remote engine: any OpenAI-compatible chat API (OpenAI, Ollama, LM Studio, vLLM, llama.cpp).

Servers differ in what ``response_format`` they accept, so the engine tries a JSON Schema
first, then ``json_object``, then plain text, and remembers per endpoint what worked; the
output is validated the same way whichever path produced it. HTTP failures are classified
once here (429/5xx/timeouts transient, honouring Retry-After; 4xx permanent) and retried by
:func:`sidecar.errors.retry`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

import aiohttp

from sidecar.errors import ConfigError, PermanentError, TransientError, retry
from sidecar.extractors.base import (
    ExtractionRequest,
    ExtractionResult,
    Extractor,
)
from sidecar.extractors.generative import extract_generative
from sidecar.extractors.postprocess import finalize, reference_date
from sidecar.settings import Config

log = logging.getLogger(__name__)

#: response_format styles, most to least constrained.
FORMATS = ("json_schema", "json_object", "none")
KEY_KIND = "remote-api-key"


def api_key_for(base_url: str) -> str | None:
    """The key from the OS keyring (per base URL), else ``SIDECAR_REMOTE_API_KEY``; optional."""
    env = os.environ.get("SIDECAR_REMOTE_API_KEY")
    if env:
        from sidecar.logging_setup import register_secret

        register_secret(env)
        return env
    from sidecar.secrets import NoKeyring, get_secret

    try:
        return get_secret(KEY_KIND, base_url)
    except NoKeyring:
        return None  # local servers (Ollama, llama.cpp) need no key


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class RemoteExtractor(Extractor):
    """Extraction through an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "remote"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 120.0, concurrency: int = 4, n_ctx: int = 8192,
                 attempts: int = 4) -> None:
        if not base_url:
            raise ConfigError("the remote engine needs a base URL (agent remote.base_url or "
                              "setting remote_base_url)", field="remote_base_url")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.n_ctx = n_ctx
        self.attempts = attempts
        self.format = FORMATS[0]
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(self.concurrency)
        self.requests = 0

    @classmethod
    def from_config(cls, config: Config, *, base_url: str, model: str) -> RemoteExtractor:
        return cls(base_url, model, api_key=api_key_for(base_url),
                   timeout=config.remote_timeout_seconds,
                   concurrency=config.remote_concurrency)

    def fingerprint(self) -> str:
        return f"remote:{self.base_url}:{self.model}:generative-1"

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        reference = reference_date(request)
        raw, problems, chunks = await extract_generative(
            self, request, reference, n_ctx=self.n_ctx,
            max_output_tokens=min(1500, self.n_ctx // 4),
            concurrency=self.concurrency)
        items = finalize(raw, request, reference, problems)
        return ExtractionResult(items=tuple(items), problems=tuple(problems), chunks=chunks,
                                stats={"strategy": "generative", "format": self.format})

    # -- Completer ---------------------------------------------------------------------------

    async def complete(self, messages: list[dict[str, str]], schema: dict[str, Any],
                       max_tokens: int) -> str:
        async with self._sem:
            return await retry(lambda: self._complete_any_format(messages, schema, max_tokens),
                               attempts=self.attempts, what=f"POST {self.base_url}")

    async def _complete_any_format(self, messages: list[dict[str, str]],
                                   schema: dict[str, Any], max_tokens: int) -> str:
        while True:
            fmt = self.format
            try:
                return await self._post(messages, schema, max_tokens, fmt)
            except _FormatRejected:
                nxt = FORMATS.index(fmt) + 1
                if nxt >= len(FORMATS):
                    raise PermanentError(
                        f"{self.base_url} rejects every request format") from None
                if self.format == fmt:
                    log.info("%s does not accept response_format %s; trying %s",
                             self.base_url, fmt, FORMATS[nxt])
                    self.format = FORMATS[nxt]

    def _body(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int,
              fmt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0,
                                "max_tokens": max_tokens, "stream": False}
        if fmt == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "records", "schema": schema, "strict": False}}
        elif fmt == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def _post(self, messages: list[dict[str, str]], schema: dict[str, Any],
                    max_tokens: int, fmt: str) -> str:
        session = self._session_now()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        self.requests += 1
        try:
            async with session.post(url, json=self._body(messages, schema, max_tokens, fmt),
                                    headers=headers) as resp:
                text = await resp.text()
                if resp.status == 200:
                    return _content(text, url)
                _classify(resp.status, text, resp.headers, url, fmt)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise TransientError(f"{url} unreachable: {exc.__class__.__name__} {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _FormatRejected(Exception):
    """The server refused our response_format (try a weaker one)."""


def _content(text: str, url: str) -> str:
    try:
        body = json.loads(text)
        choice = body["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise TransientError(f"{url} answered 200 without a chat completion: "
                             f"{text[:200]!r}") from None
    if choice.get("finish_reason") == "length":
        log.info("%s: answer hit max_tokens; parsing what arrived", url)
    return content or ""


def _classify(status: int, text: str, headers: Any, url: str, fmt: str) -> None:
    snippet = text[:300].replace("\n", " ")
    if status in (400, 422) and fmt != "none" and (
            "response_format" in text or "json_schema" in text or "schema" in text.lower()):
        raise _FormatRejected(snippet)
    if status == 429 or status >= 500 or status == 408:
        raise TransientError(f"{url} answered {status}: {snippet}",
                             retry_after=_retry_after(headers))
    if status in (401, 403):
        raise PermanentError(f"{url} refused the API key ({status}): {snippet}",
                             code="auth_failed")
    if status == 404:
        raise PermanentError(f"{url} not found (404): is the base URL right (…/v1)? {snippet}")
    raise PermanentError(f"{url} answered {status}: {snippet}")
