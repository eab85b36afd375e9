"""One llama.cpp model in memory, used from one worker thread, loaded late and unloaded when idle.

A llama context is not thread-safe and inference is CPU-bound, so every call runs on a
single-thread executor: calls are serialized, the event loop never waits on the model, and
loading, scoring, generating and unloading cannot interleave. ``llama_cpp`` is imported the
first time a model is needed, so the daemon starts without it. Prompts that share a prefix
(same agent, same system prompt and examples) reuse the evaluated KV state: only the new
tokens are evaluated.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sidecar.errors import ModelError
from sidecar.model_files import ModelFile, check

log = logging.getLogger(__name__)
T = TypeVar("T")

_silenced = False
_silence_lock = threading.Lock()
_callback_ref: Any = None


def silence_llama() -> None:
    """Route llama.cpp's C-level log lines to our logger at debug level (never stdout)."""
    global _silenced, _callback_ref
    with _silence_lock:
        if _silenced:
            return
        import llama_cpp

        clog = logging.getLogger("llama_cpp")

        @llama_cpp.llama_log_callback
        def _to_logger(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            if clog.isEnabledFor(logging.DEBUG):
                clog.debug("%s", text.decode("utf-8", "replace").rstrip())

        _callback_ref = _to_logger  # ctypes callbacks must outlive their registration
        llama_cpp.llama_log_set(_to_logger, ctypes.c_void_p(0))
        _silenced = True


def _logsumexp(values: Sequence[float]) -> float:
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


class LlamaRuntime:
    """Owns the ``Llama`` object; every method that touches it runs on the worker thread."""

    def __init__(self, model: ModelFile, *, threads: int, n_ctx: int = 2048,
                 idle_unload_seconds: float = 300.0) -> None:
        self.model = model
        self.threads = max(1, threads)
        self.n_ctx = n_ctx
        self.idle_unload_seconds = idle_unload_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._llm: Any = None
        self._last_used = time.monotonic()
        self._in_flight = 0
        self._reaper: asyncio.Task[None] | None = None
        self._closed = False
        self.loads = 0
        #: Seconds the last load took (reading the GGUF, building the context).
        self.load_seconds = 0.0
        self.tokens_evaluated = 0
        self.tokens_reused = 0
        #: Tokens sampled by generations that ask :meth:`should_stop`.
        self.tokens_sampled = 0
        self._cancelled: threading.Event | None = None

    # -- public, event-loop side -----------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    async def call(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(llm)`` on the worker thread, loading the model first if needed.

        Cancelling the caller abandons the call: a generation that asks :meth:`should_stop`
        stops at its next token, so the thread is free for the next run (and for shutdown) at
        once instead of writing an answer nobody waits for."""
        if self._closed:
            raise ModelError("the model runtime is closed")
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        cancelled = threading.Event()
        try:
            return await loop.run_in_executor(self._executor, self._with_model, fn, cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            self._in_flight -= 1
            self._last_used = time.monotonic()
            self._ensure_reaper()

    async def unload(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._unload_sync)

    async def close(self) -> None:
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        await asyncio.get_running_loop().run_in_executor(self._executor, self._unload_sync)
        self._executor.shutdown(wait=True)

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="llama-idle")

    async def _reap(self) -> None:
        """Unload after ``idle_unload_seconds`` without calls (laptop memory)."""
        while self.loaded and not self._closed:
            idle = time.monotonic() - self._last_used
            if self._in_flight == 0 and idle >= self.idle_unload_seconds:
                log.info("unloading model %s after %.0f s idle", self.model.name, idle)
                await self.unload()
                return
            await asyncio.sleep(max(0.05, min(30.0, self.idle_unload_seconds - idle)))

    # -- worker-thread side ----------------------------------------------------------------

    def should_stop(self) -> bool:
        """Asked once per sampled token by a generation (a stopping criterion, or its stream
        loop): counts the token, and says stop once the current call's caller is cancelled."""
        self.tokens_sampled += 1
        return self._cancelled is not None and self._cancelled.is_set()

    def _with_model(self, fn: Callable[[Any], T], cancelled: threading.Event) -> T | None:
        if cancelled.is_set():
            return None  # abandoned before it started: nobody waits for it
        if self._llm is None:
            self._load_sync()
        self._cancelled = cancelled
        try:
            return fn(self._llm)
        finally:
            self._cancelled = None

    def _load_sync(self) -> None:
        path = check(self.model)
        started = time.perf_counter()
        try:
            silence_llama()
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(f"llama-cpp-python is not installed: {exc}") from None
        try:
            self._llm = Llama(model_path=str(path), n_ctx=self.n_ctx, n_threads=self.threads,
                              n_threads_batch=self.threads, n_batch=512, seed=0,
                              verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"llama.cpp cannot load {path}: {exc}") from None
        self.loads += 1
        self.load_seconds = time.perf_counter() - started
        log.info("loaded model %s in %.2f s (%d threads, n_ctx %d)", path.name,
                 self.load_seconds, self.threads, self.n_ctx)

    def _unload_sync(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None:
            with contextlib.suppress(Exception):
                llm.close()


# -- helpers used inside ``call`` (worker thread) ---------------------------------------------


def eval_prompt(llm: Any, tokens: Sequence[int], runtime: LlamaRuntime | None = None) -> Any:
    """Evaluate ``tokens``, reusing the longest prefix already in the KV cache; last logits."""
    n_ctx = llm.n_ctx()
    if len(tokens) >= n_ctx:
        raise ValueError(f"prompt of {len(tokens)} tokens does not fit n_ctx {n_ctx}")
    common = reusable_prefix(llm, tokens)
    llm.n_tokens = common
    llm.eval(list(tokens[common:]))
    if runtime is not None:
        runtime.tokens_reused += common
        runtime.tokens_evaluated += len(tokens) - common
    # llama-cpp-python keeps ``scores`` only with logits_all=True (costly: a row per token);
    # the context still holds the last token's logits, so read those
    import numpy as np

    ptr = llm._ctx.get_logits_ith(-1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),))


def reusable_prefix(llm: Any, tokens: Sequence[int]) -> int:
    """How many leading ``tokens`` the KV cache already holds, less at least one (the last
    token is always re-evaluated, for fresh logits)."""
    cached = llm.input_ids[: llm.n_tokens]
    common = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        common += 1
    return min(common, len(tokens) - 1)


def token_ids(llm: Any, words: Sequence[str]) -> list[int]:
    """First token of each word as the model spells it after a space or at a turn start."""
    ids: set[int] = set()
    for w in words:
        for form in (w, " " + w):
            toks = llm.tokenize(form.encode("utf-8"), add_bos=False, special=False)
            if toks:
                ids.add(toks[0])
    return sorted(ids)


def yes_no_logodds(logits: Any, yes_ids: Sequence[int], no_ids: Sequence[int]) -> float:
    """log P(yes) − log P(no), restricted to the two answers."""
    return (_logsumexp([float(logits[i]) for i in yes_ids])
            - _logsumexp([float(logits[i]) for i in no_ids]))
