"""The remote engine's failure handling, against a scripted OpenAI-compatible fake on loopback.

The happy path runs against a real llama.cpp server in the contract suite and end to end in
test_remote_cli.py; here the fake plays the servers that misbehave: 429 with Retry-After,
500s, a bad key, garbage JSON, servers that reject ``json_schema`` (with the answers the real
ones give), model lists, and it records every chunk it is sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from sidecar.errors import ConfigError, PermanentError, TransientError
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
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each request
    reject_json_schema: bool = False
    #: response_format type (or "json_object+schema") -> (status, body) the server refuses with
    reject: dict[str, tuple[int, Any]] = field(default_factory=dict)
    #: what GET /v1/models lists; None: the server has no such route (404)
    models: list[str] | None = None
    #: refuse a model the list does not name, as Ollama does (llama.cpp servers ignore it)
    strict_models: bool = True
    model_probes: int = 0
    #: refuse prompts longer than this many characters, as a server with a small context
    max_prompt_chars: int | None = None
    #: how it says so: (status, error object); OpenAI's wire shape unless a test sets another
    context_error: tuple[int, dict[str, Any]] = (400, {
        "message": "This model's maximum context length is 2048 tokens. However, you "
                   "requested more tokens.", "code": "context_length_exceeded",
        "type": "invalid_request_error"})
    content: str = json.dumps({"items": [{"table": "tasks", "data": {
        "title": "Send the signed contract to Maria", "dueDate": "2026-11-27",
        "assignee": ["Maria"], "priority": "high"}}]})

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.monotonic())
        body = await request.json()
        self.requests.append(body)
        self.auth.append(request.headers.get("Authorization"))
        model = body.get("model")
        if self.models is not None and self.strict_models and \
                model not in self.models and f"{model}:latest" not in self.models:
            return web.json_response({"error": {"message": f"model \"{body.get('model')}\" "
                                                "not found, try pulling it first"}}, status=404)
        prompt = sum(len(m["content"]) for m in body["messages"])
        if self.max_prompt_chars is not None and prompt > self.max_prompt_chars:
            status, error = self.context_error
            return web.json_response({"error": error}, status=status)
        rf = body.get("response_format") or {}
        fmt = rf.get("type")
        key = "json_object+schema" if fmt == "json_object" and "schema" in rf else fmt
        for k in (key, fmt):
            if k in self.reject:
                status, reply = self.reject[k]
                return web.json_response(reply, status=status)
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

    async def list_models(self, request: web.Request) -> web.Response:
        self.model_probes += 1
        if self.models is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model"} for m in self.models]})


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    state = Fake()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", state.handle)
    app.router.add_get("/v1/models", state.list_models)
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


@pytest.mark.parametrize(("status", "retried"), [(408, True), (502, True), (503, True),
                                               (501, False), (505, False)])
async def test_the_model_server_status_is_classified_as_for_the_cloud_apis(
        fake: tuple[Fake, str], status: int, retried: bool) -> None:
    """One set of retryable statuses (sidecar.errors.TRANSIENT_STATUSES) for every HTTP API:
    a 501 (the server lacks the route's feature) does not pass by waiting."""
    state, url = fake
    state.script = [(status, {"error": {"message": "trouble"}}, {})]
    async with RemoteExtractor(url, "m") as engine:
        if retried:
            assert len((await engine.extract(request())).items) == 1
        else:
            with pytest.raises(PermanentError, match=f"answered {status}"):
                await engine.extract(request())
    assert len(state.requests) == (2 if retried else 1)


async def test_a_retry_after_given_as_an_http_date_is_honoured(fake: tuple[Fake, str]
                                                               ) -> None:
    """RFC 9110 allows an HTTP date as well as seconds (proxies and some APIs send one): the
    engine waits until then, through the one Retry-After parser, not its own backoff."""
    state, url = fake
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    state.script = [(429, {"error": {"message": "slow down"}}, {"Retry-After": when})]
    async with RemoteExtractor(url, "m") as engine:
        result = await engine.extract(request())
    arrivals = state.arrivals
    assert len(result.items) == 1 and len(arrivals) == 2
    # the date is 1-2 s ahead (HTTP dates have whole seconds); a backoff waits 0.25-0.5 s
    assert arrivals[1] - arrivals[0] >= 0.9, arrivals


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
    assert all("schema" in r["response_format"] for r in state.requests[1:])


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


def formats_sent(state: Fake) -> list[str]:
    out = []
    for r in state.requests:
        rf = r.get("response_format") or {}
        fmt = rf.get("type", "none")
        out.append("json_object+schema" if fmt == "json_object" and "schema" in rf else fmt)
    return out


#: What llama-cpp-python 0.3's server answers to response_format json_schema (measured).
LLAMA_CPP_PYTHON_500 = {"error": {"message": "1 validation error:\n  {'type': 'literal_error', "
                                  "'loc': ('body', 'response_format', 'type'), 'msg': \"Input "
                                  "should be 'text' or 'json_object'\"}",
                                  "type": "internal_server_error"}}


async def test_a_500_naming_response_format_falls_back_and_says_so_once(
        fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.reject = {"json_schema": (500, LLAMA_CPP_PYTHON_500)}
    async with RemoteExtractor(url, "m") as engine:
        first = await engine.extract(request())
        second = await engine.extract(request())
    assert formats_sent(state) == ["json_schema", "json_object+schema", "json_object+schema"]
    assert len(first.items) == len(second.items) == 1
    assert first.stats["notices"] == [f"the remote server at {url} does not accept "
                                      "response_format json_schema: using json_object+schema"]
    assert second.stats["notices"] == []  # said once per endpoint, not per document
    assert first.problems == second.problems == ()


async def test_servers_that_refuse_every_json_format_get_plain_requests(
        fake: tuple[Fake, str]) -> None:
    state, url = fake
    refusal = (400, {"error": {"message": "'response_format.type' must be 'json_schema' or "
                               "'text'"}})
    state.reject = {"json_schema": (422, {"detail": "json_schema unsupported"}),
                    "json_object": refusal}
    async with RemoteExtractor(url, "m") as engine:
        result = await engine.extract(request())
    assert formats_sent(state) == ["json_schema", "json_object+schema", "json_object", "none"]
    assert len(result.items) == 1 and engine.format == "none"
    assert "response_format" not in state.requests[-1]
    # the worked example is shown with a grammar and without (issue 15: several records of
    # every table teach a model to list them all)
    assert "Garden club" in state.requests[-1]["messages"][1]["content"]
    assert "Garden club" in state.requests[0]["messages"][1]["content"]


async def test_concurrent_chunks_step_down_once(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.reject = {"json_schema": (500, LLAMA_CPP_PYTHON_500)}
    text = "\n".join(f"Paragraph {i}: background about the market." for i in range(900))
    async with RemoteExtractor(url, "m", n_ctx=4096, concurrency=3) as engine:
        result = await engine.extract(request(text))
    sent = formats_sent(state)
    assert result.chunks > 5 and sent.count("json_schema") <= 3, sent
    assert sent.count("json_object+schema") == result.chunks
    assert len(result.stats["notices"]) == 1 and result.problems == ()


async def test_a_model_the_server_does_not_serve_is_named_with_those_it_does(
        fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.models = ["default", "qwen2.5-7b-instruct"]
    async with RemoteExtractor(url, "smol") as engine:
        with pytest.raises(ConfigError) as err:
            await engine.extract(request())
    msg = err.value.message
    assert "'smol'" in msg and "default, qwen2.5-7b-instruct" in msg and url in msg
    assert "remote_model" in msg and err.value.field == "remote_model"
    assert len(state.requests) == 1  # refused at once, not retried


async def test_a_server_that_ignores_the_model_name_answers_and_is_named(
        fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.models, state.strict_models = ["/models/SmolLM2.gguf"], False  # llama-cpp-python
    async with RemoteExtractor(url, "smol") as engine:
        first = await engine.extract(request())
        second = await engine.extract(request())
    assert len(first.items) == 1 and first.problems == ()
    (notice,) = first.stats["notices"]
    assert "'smol'" in notice and "/models/SmolLM2.gguf" in notice and "ignores" in notice
    assert second.stats["notices"] == []


async def test_models_are_asked_once_and_ollama_tags_match(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.models = ["llama3.2:latest", "qwen2.5:7b"]
    async with RemoteExtractor(url, "llama3.2") as engine:
        await engine.extract(request())
        await engine.extract(request())
    assert state.model_probes == 1 and len(state.requests) == 2


async def test_no_model_name_uses_the_only_one_served(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.models = ["SmolLM2-135M-Instruct.Q4_1.gguf"]
    async with RemoteExtractor(url, "") as engine:
        result = await engine.extract(request())
    assert result.items and state.requests[0]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    state.models = ["a", "b"]
    async with RemoteExtractor(url, "") as engine:
        with pytest.raises(ConfigError, match=r"serves several models.*a, b"):
            await engine.extract(request())


async def test_a_server_without_a_model_list_is_used_as_is(fake: tuple[Fake, str]) -> None:
    state, url = fake
    state.models = None
    async with RemoteExtractor(url, "whatever") as engine:
        result = await engine.extract(request())
    assert state.model_probes == 1 and len(result.items) == 1


async def test_errors_name_the_server_and_what_to_do(fake: tuple[Fake, str]) -> None:
    import socket

    state, url = fake
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    async with RemoteExtractor(dead, "m", attempts=1) as engine:
        with pytest.raises(TransientError) as err:
            await engine.extract(request())
    assert dead in err.value.message and "is the server running" in err.value.message
    state.script = [(401, {"error": {"message": "invalid api key"}}, {})]
    async with RemoteExtractor(url, "m", api_key="wrong-key-000") as engine:
        with pytest.raises(PermanentError) as err:
            await engine.extract(request())
    assert url in err.value.message and "SIDECAR_REMOTE_API_KEY" in err.value.message
    async with RemoteExtractor(url.removesuffix("/v1"), "m") as engine:
        with pytest.raises(PermanentError) as err:
            await engine.extract(request())
    assert "ends in /v1" in err.value.message
    state.script = [(404, {"error": {"message": "The model `m` does not exist."}}, {})]
    async with RemoteExtractor(url, "m") as engine:  # vLLM, no /models answer
        with pytest.raises(ConfigError, match="does not serve the model 'm'"):
            await engine.extract(request())


async def test_an_answer_cut_at_max_tokens_keeps_its_complete_items(fake: tuple[Fake, str]
                                                                    ) -> None:
    state, url = fake
    whole = {"table": "tasks", "data": {"title": "Send the signed contract to Maria"}}
    state.content = json.dumps({"items": [whole, whole]})[:-30]  # cut inside the second
    async with RemoteExtractor(url, "m") as engine:
        result = await engine.extract(request())
    assert [i.data["title"] for i in result.items] == ["Send the signed contract to Maria"]
    assert result.problems == ()


async def test_min_confidence_cuts_by_grounding(fake: tuple[Fake, str]) -> None:
    state, url = fake
    doc = "Call notes\n- Send the signed contract to Maria by Friday\n- Order new toner\n"
    state.content = json.dumps({"items": [
        {"table": "tasks", "data": {"title": "Send the signed contract to Maria"}},  # exact
        {"table": "tasks", "data": {"title": "Order the new toner"}},  # a paraphrase
        {"table": "tasks", "data": {"title": "Renew the office lease"}}]})  # not in the text
    titles = {}
    for cut in (0.0, 0.5, 0.8, 0.95):
        async with RemoteExtractor(url, "m") as engine:
            result = await engine.extract(ExtractionRequest(
                text=doc, data_types=("tasks",), document_date=REF, min_confidence=cut))
        titles[cut] = [i.data["title"] for i in result.items]
    assert titles == {
        0.0: ["Send the signed contract to Maria", "Order the new toner",
              "Renew the office lease"],
        0.5: ["Send the signed contract to Maria", "Order the new toner"],
        0.8: ["Send the signed contract to Maria"],
        0.95: []}


#: How servers say a prompt is longer than their context, as they send it: llama.cpp's
#: server answers 500 in some versions (a status otherwise retried as passing trouble).
CONTEXT_ERRORS = {
    "openai": Fake.context_error,
    "llama.cpp 500": (500, {"code": 500, "message": "the request exceeds the available context "
                            "size. try increasing the context size or enable context shift",
                            "type": "exceed_context_size_error", "n_prompt_tokens": 2600,
                            "n_ctx": 2048}),
    "llama.cpp 400": (400, {"code": 400, "message": "request (2600 tokens) exceeds the available "
                            "context size (2048 tokens), try increasing it",
                            "type": "exceed_context_size_error", "n_prompt_tokens": 2600,
                            "n_ctx": 2048}),
}


@pytest.mark.parametrize("shape", sorted(CONTEXT_ERRORS))
async def test_a_server_with_a_smaller_context_gets_smaller_chunks(fake: tuple[Fake, str],
                                                                  shape: str) -> None:
    state, url = fake
    state.max_prompt_chars = 7000  # llama_cpp.server's default 2,048 tokens
    state.context_error = CONTEXT_ERRORS[shape]
    lines = [f"Paragraph {i}: background about the project and the market." for i in range(400)]
    text = "\n".join(lines) + "\n- Send the signed contract to Maria by Friday\n"
    def refused() -> int:
        return sum(sum(len(m["content"]) for m in r["messages"]) > 7000
                   for r in state.requests)

    async with RemoteExtractor(url, "m", n_ctx=8192) as engine:
        first = await engine.extract(request(text))
        after_first = refused()
        second = await engine.extract(request(text))
    assert engine.n_ctx == 2048 and first.problems == ()
    assert [i.data["title"] for i in first.items] == ["Send the signed contract to Maria"]
    (notice,) = first.stats["notices"]
    assert url in notice and "2048 tokens, not 8192" in notice
    # learned once: at most the chunks already in flight, then never again
    assert 1 <= after_first <= engine.concurrency and refused() == after_first
    assert second.chunks == first.chunks > 5 and second.stats["notices"] == []


async def test_a_context_too_small_for_any_chunk_says_what_to_do(fake: tuple[Fake, str]
                                                                 ) -> None:
    state, url = fake
    state.max_prompt_chars = 10
    async with RemoteExtractor(url, "m", n_ctx=8192) as engine:
        with pytest.raises(PermanentError) as err:
            await engine.extract(request())
    assert url in err.value.message and "--n_ctx" in err.value.message
    assert len(state.requests) <= 2
