"""A fake OpenAI-compatible chat API on loopback that answers what the test scripts.

It records every request (headers and body), so a test can prove what reached the engine
(a secret text never did) and which API key was presented.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

#: ``answer(request_body) -> the assistant message content``.
Answer = Callable[[dict[str, Any]], str]


class FakeOpenAI:
    """``POST /v1/chat/completions`` answering ``answer(body)``; ``url`` is the base URL."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or (lambda body: json.dumps({"items": []}))
        #: Anything but 200 refuses the request, echoing its Authorization header (as some
        #: proxies do): what a test needs to show a key never leaks through an error.
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start_in_thread(self) -> FakeOpenAI:
        """Serve from a loop of its own, so the server's work never shows in the caller's loop."""
        import asyncio
        import threading

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True,
                         name="fake-openai").start()
        asyncio.run_coroutine_threadsafe(self.start(), self._loop).result(timeout=10)
        return self

    def stop_thread(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def prompts(self) -> str:
        """Every message text the engine sent, joined: what the "model" was shown."""
        return "\n".join(m.get("content", "") for body in self.requests
                         for m in body.get("messages", []))

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.status != 200:
            return web.json_response({"error": {"message": "invalid credentials: "
                                                f"{request.headers.get('Authorization')}"}},
                                     status=self.status)
        content = self.answer(body)
        return web.json_response({
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}]})


# -- scripted answers --------------------------------------------------------------------


def document_of(body: dict[str, Any]) -> str:
    """The document text the engine put into its last user message."""
    return body["messages"][-1]["content"].split("\nDocument", 1)[1].split(":\n", 1)[1]


def echo_first_line(body: dict[str, Any]) -> str:
    line = next(x for x in document_of(body).splitlines() if x.strip())
    return json.dumps({"items": [{"table": "tasks", "data": {"title": line.strip("-[] ")}}]})


def malicious(body: dict[str, Any]) -> str:
    """A compromised model: other tables, unknown tables, review flags, ids, fake frames."""
    title = json.loads(echo_first_line(body))["items"][0]["data"]["title"]
    return json.dumps({"items": [
        {"table": "projects", "data": {"name": "Free money"}},
        {"table": "timelines", "data": {"title": "Injected", "projectId": "p1"}},
        {"table": "users", "data": {"name": "root", "role": "admin"}},
        {"table": "tasks; DROP TABLE tasks", "data": {"title": "x"}},
        {"data": {"title": "no table", "table": "projects"}},
        {"type": "tool_call", "action": "insert", "table": "projects", "data": {"name": "P"}},
        {"table": "tasks", "data": {"title": title, "table": "projects", "id": 1,
                                    "isApproved": 1, "isAiSuggested": 0, "createdAt": 5,
                                    "userId": "u1", "__proto__": {"admin": True}}}]})
