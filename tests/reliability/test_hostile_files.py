"""Hostile files in an agent's folder: each is skipped with a reason, the rest still arrives.

One folder holds a catalog of files built to hurt a reader (zip and PDF bombs, a 2 GB sparse
file, FIFOs, devices, symlink loops, names that are not UTF-8, files swapped mid-run) next to
good documents. The real daemon runs the agent; the extraction engine is a remote fake on
loopback because it is a gate: the daemon waits on the first extraction while the test
swaps files it has already scanned, so the mid-run cases happen exactly between scan and
read, every time. The daemon's RSS is sampled throughout.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil
import pytest
from aiohttp import web

import sidecar.readers as readers
import sidecar.readers.pdf as pdf_reader
from sidecar.client import DaemonProcess, SidecarClient
from sidecar.readers import SkipFile, read_bytes, read_document
from sidecar.scan import scan_tree
from tests.reliability import hostile_files as h
from tests.reliability.conftest import Record
from tests.test_local_agent import collect_until_finished, make_agent

MAX_FILE_BYTES = 25 * 1024 * 1024  # the agent default
#: Peak RSS growth allowed over the run. Measured 22 MB (mostly the 16 MB growing file, read
#: whole). Each bomb in the catalog inflates to ≥ 1 GB: with only the lying-size check
#: removed the daemon grew 2,050 MB. 200 MB is 9× the measure and 10× under a bomb.
RSS_BOUND_MB = 200
_TASK = re.compile(r"^- \[ \] (.+)$", re.M)


class GateEngine:
    """An OpenAI-compatible fake that answers each "- [ ] …" line as a task; its first request
    runs ``on_first`` before it is answered (the daemon is provably between scan and reads)."""

    def __init__(self, on_first: Callable[[], None]) -> None:
        self.on_first: Callable[[], None] | None = on_first
        self.requests = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> GateEngine:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        if self.on_first is not None:
            gate, self.on_first = self.on_first, None
            gate()
        document = body["messages"][-1]["content"].split("\nDocument", 1)[1]
        items = [{"table": "tasks", "data": {"title": t.strip()}}
                 for t in _TASK.findall(document)]
        return web.json_response({"id": "x", "object": "chat.completion", "choices": [{
            "index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": json.dumps({"items": items})}}]})


class GrowWhenOpened(threading.Thread):
    """Appends to a file as soon as someone opens it (inotify IN_OPEN), so the read sees it
    grow: the daemon's stat-read-stat of 16 MB takes milliseconds, waking up here far less."""

    def __init__(self, path: Path, *, until: int) -> None:
        super().__init__(daemon=True)
        import ctypes

        self.path, self.until = path, until
        self.out = os.open(path, os.O_WRONLY | os.O_APPEND)  # before the watch: not an event
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, os.fsencode(path), 0x20) < 0:
            raise OSError(ctypes.get_errno(), "inotify")  # 0x20: IN_OPEN
        self.opened = False
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set() and not select.select([self.fd], [], [], 0.1)[0]:
                pass
            if self.stop.is_set():
                return
            self.opened = True
            chunk = b"another line of the live log\n" * 2048
            while not self.stop.is_set() and os.fstat(self.out).st_size < self.until:
                os.write(self.out, chunk)
                time.sleep(0.001)
        finally:
            os.close(self.out)
            os.close(self.fd)


class RssSampler(threading.Thread):
    """The daemon's RSS every 10 ms; ``peak`` also reads the kernel's high-water mark."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.pid = pid
        self.baseline = self.proc.memory_info().rss
        self.sampled = self.baseline
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.sampled = max(self.sampled, self.proc.memory_info().rss)

    def reset_high_water_mark(self) -> None:
        try:  # "5" resets VmHWM (Linux ≥ 4.0); sampling alone is the fallback
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            pass

    def peak(self) -> int:
        try:
            found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
        except OSError:
            found = None
        return max(self.sampled, int(found.group(1)) * 1024 if found else 0)


@pytest.fixture
async def engine_gate() -> AsyncIterator[GateEngine]:
    gate = await GateEngine(lambda: None).start()
    try:
        yield gate
    finally:
        await gate.close()


@pytest.fixture
async def daemon_r(data_dir: Path, token: str, model_dir: Path) -> AsyncIterator[DaemonProcess]:
    d = await DaemonProcess.start(data_dir, token=token, extra_args=["--model-dir", str(model_dir)],
                                  env={"SIDECAR_REMOTE_API_KEY": "not-a-secret"})
    try:
        yield d
    finally:
        await d.stop()


async def status_latency(c: SidecarClient, done: asyncio.Event) -> float:
    """The slowest ``status`` round trip while the run goes on: readers stay off the loop."""
    worst = 0.0
    while not done.is_set():
        t0 = time.monotonic()
        await c.request({"type": "status"}, timeout=30)
        worst = max(worst, time.monotonic() - t0)
        await asyncio.sleep(0.05)
    return worst


async def test_hostile_catalog_is_skipped_with_reasons_and_the_good_documents_arrive(
        daemon_r: DaemonProcess, engine_gate: GateEngine, tmp_path: Path,
        figure: Record) -> None:
    c = await daemon_r.connect()
    try:
        await _catalog_run(c, daemon_r, engine_gate, tmp_path, figure)
    finally:
        await c.close()


async def _catalog_run(c: SidecarClient, daemon_r: DaemonProcess, engine_gate: GateEngine,
                       tmp_path: Path, figure: Record) -> None:
    await c.hello()
    remote = {"engine": "remote", "remote": {"base_url": engine_gate.url, "model": "fake"}}

    # warm up: the readers' libraries are imported once, so the baseline is the steady state
    warm = tmp_path / "warm"
    h.write_good(warm)
    warm_agent = await make_agent(c, warm, **remote)
    started = await c.request({"type": "run_agent", "agent_id": warm_agent["id"]})
    warm_run, _ = await collect_until_finished(c, started["run_id"], timeout=60)
    assert warm_run["status"] == "success", warm_run

    folder = tmp_path / "docs"
    catalog, expected_titles = h.build_catalog(folder)
    grower = GrowWhenOpened(folder / "zz-growing.txt", until=MAX_FILE_BYTES - 1024 * 1024)
    engine_gate.on_first = lambda: h.swap_mid_run(folder)
    agent = await make_agent(c, folder, **remote)

    sampler = RssSampler(daemon_r.ready.pid)
    sampler.reset_high_water_mark()
    sampler.start()
    grower.start()
    done = asyncio.Event()
    t0 = time.monotonic()
    started = await c.request({"type": "run_agent", "agent_id": agent["id"]})
    latency = asyncio.create_task(status_latency(c, done))
    try:
        run, calls = await collect_until_finished(c, started["run_id"], timeout=45)
    finally:
        wall = time.monotonic() - t0
        done.set()
        sampler.stop.set()
        grower.stop.set()
    worst_latency = await latency
    sampler.join()
    grower.join()
    growth_mb = (sampler.peak() - sampler.baseline) / 1024 / 1024

    errors = run["errors"]
    log = "\n".join(errors)
    assert engine_gate.on_first is None, f"no document reached the engine (no gate):\n{log}"
    assert grower.opened, f"the growing file was never opened:\n{log}"
    skipped = 0
    for case in catalog:
        lines = [e for e in errors if case.match in e]
        if case.reasons:
            assert lines, f"{case.match!r} is missing from the run log:\n{log}"
            assert any(f"(skipped: {r})" in lines[0] for r in case.reasons), (case, lines)
            skipped += 1
        else:
            assert not lines, f"{case.match!r} should have been read: {lines}"
    assert len(errors) == skipped, f"errors beyond the catalog:\n{log}"
    got = {f["data"]["title"] for f in calls}
    assert got == expected_titles, got ^ expected_titles
    newline = next(f for f in calls if f["data"]["title"] == h.NEWLINE_TASK)
    assert newline["source"]["path"] == str((folder / h.NEWLINE_NAME).resolve())
    assert run["status"] == "partial" and run["items_created"] == len(calls), run

    status = await c.request({"type": "status"})  # alive and answering after all that
    assert status["type"] == "status_result" and daemon_r.proc.returncode is None
    assert growth_mb < RSS_BOUND_MB, f"daemon RSS grew {growth_mb:.0f} MB during the run"
    assert worst_latency < 5.0, f"status took {worst_latency:.1f} s during the run"

    figure("hostile files", "files in catalog", len(catalog))
    figure("hostile files", "skipped with a reason", skipped)
    figure("hostile files", "peak RSS growth MB", growth_mb)
    figure("hostile files", "run wall time s", wall)
    figure("hostile files", "slowest status reply during the run ms", worst_latency * 1000)


# -- the readers directly: each case fails on its own, with the reader's own message --------


@pytest.mark.parametrize(("build", "name", "reason"), [
    (h.docx_honest_bomb, "honest.docx", "too_large"),
    (h.docx_lying_bomb, "lying.docx", "corrupt"),
    (h.docx_bzip2_bomb, "bzip2.docx", "unsupported"),
    (h.docx_many_entries, "many.docx", "too_large"),
    (lambda: h.docx_many_entries(20_000), "many20k.docx", "too_large"),
    (h.docx_deep_nesting, "deep.docx", "corrupt"),
    (h.docx_billion_laughs, "laughs.docx", "corrupt"),
    (h.pdf_many_pages, "pages.pdf", "too_large"),
    (h.pdf_tree_loop, "loop.pdf", "corrupt"),
    (h.pdf_flate_bomb, "flate.pdf", "too_large"),
    (h.docx_honest_bomb, "docx-inside.txt", "too_large"),  # content beats the extension
])
def test_reader_refuses_without_inflating(build: Callable[[], bytes], name: str,
                                          reason: str) -> None:
    """Each refusal is decided from headers and bounded reads: well under a second."""
    data = build()
    t0 = time.monotonic()
    with pytest.raises(SkipFile) as info:
        read_bytes(data, name=name, max_bytes=MAX_FILE_BYTES)
    assert info.value.reason == reason, info.value
    assert name in info.value.message
    assert time.monotonic() - t0 < 2.0, "the reader did the work it should have refused"


def test_pdf_reading_stops_at_its_time_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forty pages sharing one 32 MB stream: each page re-inflates it (~0.15 s a page)."""
    monkeypatch.setattr(pdf_reader, "READ_SECONDS", 0.3)
    data = h.pdf_shared_stream(pages=40, n_bytes=32 * 1024 * 1024)
    t0 = time.monotonic()
    with pytest.raises(SkipFile) as info:
        read_bytes(data, name="slow.pdf", max_bytes=MAX_FILE_BYTES)
    assert info.value.reason == "too_large" and "took over" in info.value.message
    assert time.monotonic() - t0 < 3.0


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_file_swapped_in_after_the_stat_does_not_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The reader stats, then opens: a FIFO or device put there in between must not be read."""
    regular = tmp_path / "was-regular.md"
    regular.write_text("- [ ] a note\n")
    if kind == "fifo":
        path = tmp_path / "now-a-fifo.md"
        os.mkfifo(path)
    else:  # the reader is handed a .md that now leads to /dev/zero
        path = tmp_path / "now-a-device.md"
        path.symlink_to("/dev/zero")
    monkeypatch.setattr(readers, "_stat", lambda p, name, when: regular.stat())
    outcome: list[BaseException | object] = []
    reader = threading.Thread(target=lambda: outcome.append(_attempt(path)), daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive() and kind == "fifo":  # unblock the open so the thread can end
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    assert outcome, f"reading a {kind} swapped in after the stat blocked"
    assert isinstance(outcome[0], SkipFile) and outcome[0].reason == "unsupported", outcome
    assert "not a regular file" in outcome[0].message


def test_scan_names_symlink_loops_and_names_that_are_not_utf8(tmp_path: Path) -> None:
    """Both used to vanish from the run log (a loop) or end the whole run (a Latin-1 name)."""
    os.symlink("b.md", tmp_path / "a.md")
    os.symlink("a.md", tmp_path / "b.md")
    (tmp_path / "ok.md").write_text("fine")
    with open(os.fsencode(tmp_path) + b"/caf\xe9.md", "wb") as out:
        out.write(b"latin-1 name")
    result = scan_tree([tmp_path], lambda rel, is_dir: is_dir or rel[-1].endswith(".md"))
    assert set(result.files) == {str((tmp_path / "ok.md").resolve())}
    reasons = {Path(r.path).name: r.reason for r in result.refused}
    assert reasons == {"a.md": "symlink_loop", "b.md": "symlink_loop",
                       "caf\\xe9.md": "bad_name"}, reasons
    for r in result.refused:  # what the store and the protocol get is plain text
        r.path.encode("utf-8")
        r.message.encode("utf-8")


def _attempt(path: Path) -> BaseException | object:
    try:
        return read_document(path, max_bytes=MAX_FILE_BYTES)
    except Exception as exc:
        return exc

