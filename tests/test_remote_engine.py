"""The remote engine's failure handling, against a scripted OpenAI-compatible fake on loopback.

The happy path runs against a real llama.cpp server in the contract suite; here the fake
plays the servers that misbehave: 429 with Retry-After, 500s, a bad key, garbage JSON,
servers that reject ``json_schema``, and it records every chunk it is sent.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from sidecar.errors import PermanentError
from sidecar.extractors.base import ExtractionRequest
from sidecar.extractors.remote import RemoteExtractor

REF = datetime(2026, 11, 25, 9, 0, tzinfo=ZoneInfo("Europe/Berlin"))
DOC = "Call notes\n- Send the signed contract to Maria by Friday\n"


@dataclass
class Fake:
    """Replies are popped from ``script``; when empty, a valid completion is returned."""

    script: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)
    reject_json_schema: bool = False
    content: str = json.dumps({"items": [{"table": "tasks", "data": {
        "title": "Send the signed contract to Maria", "dueDate": "2026-11-27",
        "assignee": ["Maria"], "priority": "high"}}]})

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        fmt = (body.get("response_format") or {}).get("type")
        if self.reject_json_schema and fmt == "json_schema":
            return web.json_response({"error": {"message": "response_format json_schema is "
                                                "not supported", "type": "invalid_request"}},
                                     status=400)
        if self.script:
            status, payload, headers = self.script.pop(0)
            if isinstance(payload, str):
                return web.Response(status=status, text=payload, headers=headers)
            return web.json_response(payload, status=status, headers=headers)
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": self.content}}]})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    state = Fake()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


def request(text: str = DOC) -> ExtractionRequest:
    return ExtractionRequest(text=text, data_types=("tasks",), document_date=REF)


async def test_items_are_normalized_and_grounded(fake: tuple[Fake, str]) -> None:
    state, url = fake
    async with RemoteExtractor(url, "m", api_key="sk-test-123456") as engine:
        result = await engine.extract(request())
    (item,) = result.items
    assert item.data["title"] == "Send the signed contract to Maria"
    assert item.data["assignee"] == '["Maria"]' and item.data["status"] == "todo"
    assert item.data["dueDate"] == int(datetime(2026, 11, 27, tzinfo=REF.tzinfo).timestamp()
                                       * 1000)
    assert item.source.exact and item.source.span is not None
    body = state.requests[0]
    assert body["response_format"]["type"] == "json_schema" and body["temperature"] == 0
    assert state.auth[0] == "Bearer sk-test-123456"


async def test_429_retry_after_and_500_are_retried(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.2"}),
                    (500, "upstream exploded", {})]
    async with RemoteExtractor(url, "m") as engine:
        result = await engine.extract(request())
    assert len(result.items) == 1 and len(state.requests) == 3


async def test_bad_key_is_permanent_and_not_retried(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.script = [(401, {"error": {"message": "invalid api key"}}, {})]
    async with RemoteExtractor(url, "m", api_key="wrong-key-000") as engine:
        with pytest.raises(PermanentError, match="refused the API key"):
            await engine.extract(request())
    assert len(state.requests) == 1


async def test_garbage_json_is_a_problem_not_a_crash(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.content = '{"items": [{"table": "tasks", "data": {"title": "Send'
    async with RemoteExtractor(url, "m") as engine:
        result = await engine.extract(request())
    assert result.items == ()
    assert "invalid JSON" in result.problems[0].message


async def test_200_without_a_completion_is_retried_then_reported(fake: tuple[Fake, str]
                                                                 ) -> None:
    state, url = fake
    state.script = [(200, "<html>proxy login</html>", {})] * 4
    async with RemoteExtractor(url, "m", attempts=4) as engine:
        result = await engine.extract(request())
    assert result.items == () and "without a chat completion" in result.problems[0].message


async def test_server_without_json_schema_falls_back_once(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.reject_json_schema = True
    async with RemoteExtractor(url, "m") as engine:
        first = await engine.extract(request())
        second = await engine.extract(request())
    assert len(first.items) == len(second.items) == 1
    formats = [(r.get("response_format") or {}).get("type") for r in state.requests]
    assert formats == ["json_schema", "json_object", "json_object"]


async def test_every_chunk_of_a_long_document_is_sent(fake: tuple[Fake, str]) -> None:
    state, url = fake
    lines = [f"Paragraph {i}: background about the project and the market." for i in range(900)]
    text = "\n".join(lines) + "\n- Send the signed contract to Maria by Friday\n"
    async with RemoteExtractor(url, "m", n_ctx=4096, concurrency=3) as engine:
        result = await engine.extract(request(text))
    sent = "".join(r["messages"][-1]["content"].split("Document", 1)[1] for r in state.requests)
    assert result.chunks == len(state.requests) > 5
    assert "Paragraph 0:" in sent and "Paragraph 899:" in sent and "signed contract" in sent
    # the same item found in several chunks is reported once, grounded in the full text
    assert len(result.items) == 1
    s, e = result.items[0].source.span  # type: ignore[misc]
    assert text[s:e] == "Send the signed contract to Maria"
