"""The extractive pipeline on a worker thread, its model judge still awaited on the event loop.

Candidate finding, evidence, date resolution and validation are CPU work proportional to the
document (a 178 KB export takes hundreds of milliseconds); on the event loop that would stall
every WebSocket frame and agent. The pipeline is async only because it awaits the judge, so
it runs on its own loop in a thread while each judge call is handed back to the daemon's loop,
where the model runtime lives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sidecar.extractors.base import ExtractedRecord, ExtractionProblem, ExtractionRequest
from sidecar.extractors.candidates import Candidate
from sidecar.extractors.dates import find_date_expressions, resolve_date
from sidecar.extractors.extractive import Judge, Tuning, extract_extractive
from sidecar.extractors.postprocess import finalize

T = TypeVar("T")

#: Parsing, grounding and validation of generated records: one thread, so chunks finishing
#: together queue here instead of crowding the event loop's thread off the GIL.
_CPU = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-cpu")


async def on_cpu_thread(fn: Callable[[], T]) -> T:
    """``fn()`` on the extraction CPU thread."""
    return await asyncio.get_running_loop().run_in_executor(_CPU, fn)


def run_extractive(request: ExtractionRequest, reference: datetime, tuning: Tuning,
                   judge: Judge | None) -> list[ExtractedRecord]:
    """The extractive pipeline over a whole request (text, types, project, sender), in the
    calling thread: the one call every engine built on the rules makes, so none drops a field."""
    return asyncio.run(extract_extractive(
        request.text, request.data_types, reference=reference, judge=judge, tuning=tuning,
        resolve_date=resolve_date, find_dates=find_date_expressions,
        project_id=request.project_id, sender=request.sender))


async def extractive_off_loop(request: ExtractionRequest, reference: datetime, tuning: Tuning,
                              judge: Judge | None, problems: list[ExtractionProblem]
                              ) -> list[ExtractedRecord]:
    """``extract_extractive`` + ``finalize`` off the loop; cancelling stops the judge calls."""
    loop = asyncio.get_running_loop()
    cancelled = threading.Event()
    pending: set[concurrent.futures.Future[list[float]]] = set()

    async def on_loop(table: str, cands: Sequence[Candidate], context: str) -> list[float]:
        if cancelled.is_set() or judge is None:
            raise asyncio.CancelledError
        fut = asyncio.run_coroutine_threadsafe(judge(table, cands, context), loop)
        pending.add(fut)
        try:
            return await asyncio.wrap_future(fut)
        finally:
            pending.discard(fut)

    def work() -> list[ExtractedRecord]:
        raw = run_extractive(request, reference, tuning,
                             on_loop if judge is not None else None)
        return finalize(raw, request, reference, problems)

    try:
        return await asyncio.to_thread(work)
    except asyncio.CancelledError:
        cancelled.set()
        for fut in list(pending):
            fut.cancel()
        raise
