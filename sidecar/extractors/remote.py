"""The remote engine: any OpenAI-compatible chat API (OpenAI, Ollama, LM Studio, vLLM, llama.cpp).

Servers differ in what ``response_format`` they accept (see docs/remote-servers.md), so the
engine tries a JSON Schema first, then ``json_object`` carrying the schema (llama.cpp's
extension), then bare ``json_object``, then none. A refusal is recognised by its body naming
``response_format``/``json_schema``/``json_object`` whatever the status (llama-cpp-python
answers 500); the engine steps down once per endpoint and remembers it. ``/v1/models`` is
asked once, so a model name the server does not serve is reported with the names it does.
HTTP failures are classified here with the statuses every HTTP API in the sidecar retries
(:data:`sidecar.errors.TRANSIENT_STATUSES`, honouring Retry-After; a context overflow is
recognised first, whatever its status), and retried by :func:`sidecar.errors.retry`; every
message names the server and what to do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from typing import Any

import aiohttp

from sidecar.errors import (
    TRANSIENT_STATUSES,
    ConfigError,
    PermanentError,
    TransientError,
    parse_retry_after,
    retry,
)
from sidecar.extractors.base import (
    ExtractionRequest,
    ExtractionResult,
    Extractor,
)
from sidecar.extractors.generative import Answer, Prompt, extract_generative
from sidecar.extractors.postprocess import reference_date
from sidecar.settings import Config

log = logging.getLogger(__name__)

#: response_format styles, most to least constrained; ``json_object+schema`` is llama.cpp's
#: ``{"type": "json_object", "schema": …}`` (llama-server, llama-cpp-python's server).
FORMATS = ("json_schema", "json_object+schema", "json_object", "none")
#: Formats under which the server decodes against our schema (no worked example needed).
ENFORCING = frozenset({"json_schema", "json_object+schema"})
KEY_KIND = "remote-api-key"
#: Words in an error body that mean "this response_format is not accepted".
_FORMAT_WORDS = ("response_format", "json_schema", "json_object")
#: A prompt longer than the server's context (OpenAI, llama-cpp-python, vLLM, llama-server).
_CONTEXT = re.compile(r"context[_ ]length[_ ]exceeded|maximum context length|exceeds? the "
                      r"(?:available )?context|context (?:window|size)", re.I)
_CONTEXT_LIMIT = re.compile(r"(?:maximum context length is|context (?:window|size) of|"
                            r"context size \(|\"n_ctx\"\s*:)\s*(\d+)", re.I)
#: Below this the prompt's instructions alone do not leave room for a document.
MIN_CONTEXT = 1536


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


def serves(model: str, served: list[str]) -> bool:
    """``model`` is one of ``served`` (Ollama lists ``name:latest`` and accepts ``name``)."""
    return model in served or f"{model}:latest" in served


class RemoteExtractor(Extractor):
    """Extraction through an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "remote"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 120.0, concurrency: int = 4, n_ctx: int = 8192,
                 attempts: int = 4) -> None:
        if not base_url:
            raise ConfigError("the remote engine needs a base URL (agent remote.base_url, "
                              "setting remote_base_url or --remote-base-url), e.g. "
                              "http://127.0.0.1:11434/v1 for Ollama", field="remote_base_url")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.n_ctx = n_ctx
        self.attempts = attempts
        self.format = FORMATS[0]
        #: What the user should know about this endpoint (format fallbacks), said once: in
        #: the next result's ``stats["notices"]`` (not a problem: nothing was lost).
        self.notices: list[str] = []
        self._reported = 0
        self._served: list[str] | None = None
        self._unlisted = False  # /models does not list self.model
        self._probe_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._sem = asyncio.Semaphore(self.concurrency)
        self.requests = 0

    @classmethod
    def from_config(cls, config: Config, *, base_url: str, model: str) -> RemoteExtractor:
        return cls(base_url, model, api_key=api_key_for(base_url),
                   timeout=config.remote_timeout_seconds,
                   concurrency=config.remote_concurrency)

    @property
    def server(self) -> str:
        """How messages name this endpoint."""
        return f"the remote server at {self.base_url}"

    def fingerprint(self) -> str:
        return f"remote:{self.base_url}:{self.model}:generative-3"

    async def extract(self, request: ExtractionRequest) -> ExtractionResult:
        await self.check_model()
        reference = reference_date(request)
        while True:
            n_ctx = self.n_ctx
            try:
                items, problems, chunks = await extract_generative(
                    self, request, reference, n_ctx=n_ctx,
                    max_output_tokens=min(1500, n_ctx // 4), concurrency=self.concurrency)
                break
            except ContextTooSmall as exc:
                self._shrink_context(n_ctx, exc)
        notices = self.notices[self._reported:]
        self._reported = len(self.notices)
        return ExtractionResult(items=tuple(items), problems=tuple(problems), chunks=chunks,
                                stats={"strategy": "generative", "format": self.format,
                                       "requests": self.requests, "notices": notices})

    def _shrink_context(self, tried: int, exc: ContextTooSmall) -> None:
        """Chunk for the context the server has (its error says how much, else halve)."""
        if self.n_ctx < tried:
            return  # a concurrent chunk already learned it
        smaller = exc.limit if exc.limit and exc.limit < tried else tried // 2
        if smaller < MIN_CONTEXT:
            raise PermanentError(
                f"{self.server} has a context of {exc.limit or smaller} tokens: too small for "
                f"the instructions and a page of document ({MIN_CONTEXT}+ needed). Start it "
                "with a larger context (llama.cpp: -c/--n_ctx; Ollama: num_ctx).",
                code="context_too_small") from None
        self.n_ctx = smaller
        self._notice(f"{self.server} has a context of {smaller} tokens, not {tried}: sending "
                     "smaller chunks (a larger server context means fewer requests)")

    # -- /v1/models ------------------------------------------------------------------------

    async def check_model(self) -> None:
        """Ask ``/models`` once; a model it does not list is named with those it does.

        Servers that serve one model whatever the name (llama-cpp-python, llama-server) still
        answer; those that do not (Ollama, vLLM, OpenAI) refuse, and the refusal says which
        names would work.
        """
        if self._served is not None:
            return
        async with self._probe_lock:
            if self._served is not None:
                return
            served = await retry(self._list_models, attempts=self.attempts,
                                 what=f"GET {self.base_url}/models")
            if served and not self.model:
                if len(served) > 1:
                    raise ConfigError(
                        f"{self.server} serves several models and none was chosen; it "
                        f"serves: {_names(served)}. Set remote_model (--remote-model, or the "
                        "agent's remote.model) to one of them.", field="remote_model")
                self.model = served[0]
                log.info("%s serves one model, %s: using it", self.server, self.model)
            self._served = served
            self._unlisted = bool(served) and not serves(self.model, served)

    async def _list_models(self) -> list[str]:
        url = f"{self.base_url}/models"
        try:
            async with self._session_now().get(url, headers=self._headers()) as resp:
                text = await resp.text()
                if resp.status in (404, 405, 501):
                    log.info("%s has no /models (%d): not checking the model name",
                             self.server, resp.status)
                    return []
                if resp.status != 200:
                    self._classify(resp.status, text, resp.headers, url, "none")
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise self._unreachable(url, exc) from None
        try:
            data = json.loads(text)["data"]
            return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]
        except (ValueError, KeyError, TypeError):
            log.info("%s answered /models without a model list: %.200r", self.server, text)
            return []

    # -- Completer ---------------------------------------------------------------------------

    async def complete(self, prompt: Prompt, max_tokens: int) -> Answer:
        async with self._sem:
            return await retry(lambda: self._complete_any_format(prompt, max_tokens),
                               attempts=self.attempts, what=f"POST {self.base_url}")

    async def _complete_any_format(self, prompt: Prompt, max_tokens: int) -> Answer:
        while True:
            fmt = self.format
            messages, schema = prompt(fmt in ENFORCING)
            try:
                return await self._post(messages, schema, max_tokens, fmt)
            except _FormatRejected as exc:
                nxt = FORMATS.index(fmt) + 1
                if self.format == fmt:  # the first request to learn it says so, once
                    if nxt >= len(FORMATS):
                        raise PermanentError(
                            f"{self.server} refuses even a request without response_format: "
                            f"{exc}. Check the server's log and its OpenAI compatibility.",
                            code="remote_rejected") from None
                    self._notice(f"{self.server} does not accept response_format {fmt}: "
                                 f"using {FORMATS[nxt]}")
                    self.format = FORMATS[nxt]

    def _notice(self, text: str) -> None:
        log.warning("%s", text)
        self.notices.append(text)

    def _body(self, messages: list[dict[str, str]], schema: dict[str, Any], max_tokens: int,
              fmt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0,
                                "max_tokens": max_tokens, "stream": False}
        if fmt == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "records", "schema": schema, "strict": False}}
        elif fmt == "json_object+schema":
            body["response_format"] = {"type": "json_object", "schema": schema}
        elif fmt == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    async def _post(self, messages: list[dict[str, str]], schema: dict[str, Any],
                    max_tokens: int, fmt: str) -> Answer:
        session = self._session_now()
        url = f"{self.base_url}/chat/completions"
        self.requests += 1
        try:
            async with session.post(url, json=self._body(messages, schema, max_tokens, fmt),
                                    headers=self._headers()) as resp:
                text = await resp.text()
                if resp.status == 200:
                    content = self._content(text, url)
                    if self._unlisted:
                        self._unlisted = False
                        self._notice(f"{self.server} does not list the model {self.model!r} "
                                     f"(it serves: {_names(self._served or [])}) but answered: "
                                     "it ignores the name. Set remote_model to one of those "
                                     "to be explicit")
                    return content
                self._classify(resp.status, text, resp.headers, url, fmt)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise self._unreachable(url, exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, url: str, exc: BaseException) -> TransientError:
        if isinstance(exc, TimeoutError):
            return TransientError(
                f"{self.server} did not answer within {self.timeout:g} s ({url}): raise "
                "remote_timeout_seconds, or use a smaller model or a faster server")
        return TransientError(
            f"cannot reach {self.server} ({exc.__class__.__name__}: {exc}): is the server "
            "running, and is remote_base_url right (it ends in /v1)?")

    def _content(self, text: str, url: str) -> Answer:
        try:
            body = json.loads(text)
            choice = body["choices"][0]
            content = choice["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise TransientError(
                f"{self.server} answered 200 without a chat completion ({url}): "
                f"{text[:200]!r}. Is remote_base_url the API's /v1 URL and not a web page "
                "or a proxy login?") from None
        cut = choice.get("finish_reason") == "length"
        if cut:
            log.info("%s: answer hit max_tokens; keeping its complete records, asking again "
                     "about the rest", self.server)
        return Answer(content or "", truncated=cut)

    def _classify(self, status: int, text: str, headers: Any, url: str, fmt: str) -> None:
        snippet = text[:300].replace("\n", " ")
        if fmt != "none" and status != 429 and any(w in text for w in _FORMAT_WORDS):
            raise _FormatRejected(f"{status} {snippet}")
        # before the transient statuses: llama.cpp's server says it with a 500 in some versions
        if status in (400, 413, 422, 500) and _CONTEXT.search(text):
            m = _CONTEXT_LIMIT.search(text)
            raise ContextTooSmall(f"{self.server}: prompt longer than its context: {snippet}",
                                  limit=int(m.group(1)) if m else None)
        if status in TRANSIENT_STATUSES:
            advice = ("it is rate-limiting; retrying" if status == 429
                      else "retrying; if this persists, check the server's log")
            raise TransientError(f"{self.server} answered {status} ({url}): {snippet} "
                                 f"({advice})",
                                 retry_after=parse_retry_after(headers.get("Retry-After")))
        if status in (401, 403):
            raise PermanentError(
                f"{self.server} refused the API key ({status}): {snippet}. Set the key for "
                f"{self.base_url} in the app (secret remote_api_key) or in "
                "SIDECAR_REMOTE_API_KEY.", code="auth_failed")
        if status in (400, 404) and "model" in text.lower() and (
                self._unlisted or status == 404):
            served = (f"it serves: {_names(self._served)}" if self._served
                      else "see its model list")
            raise ConfigError(f"{self.server} does not serve the model {self.model!r} "
                              f"({status}: {snippet}); {served}. Set remote_model "
                              "(--remote-model, or the agent's remote.model) to one of them.",
                              field="remote_model")
        if status == 404:
            raise PermanentError(f"{self.server} has no {url} (404): {snippet}. Is "
                                 "remote_base_url right? It usually ends in /v1.")
        raise PermanentError(f"{self.server} answered {status} ({url}): {snippet}")

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _names(served: list[str]) -> str:
    return ", ".join(served[:20]) + (" …" if len(served) > 20 else "")


class ContextTooSmall(PermanentError):
    """The prompt did not fit the server's context; ``limit`` when its answer says it."""

    def __init__(self, message: str, *, limit: int | None) -> None:
        super().__init__(message, code="context_too_small")
        self.limit = limit


class _FormatRejected(Exception):
    """The server refused our response_format (try a weaker one)."""
