"""Pacing for fault loops: capped exponential backoff, and log lines that cannot flood the log.

A fault that repeats (a full disk failing every commit, a flood of refused handshakes) must
neither spin the CPU nor rotate the useful history out of the log file: the retry waits
longer each time (up to a cap), and each kind of line is written at most once per interval,
the next one saying how many were held back.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


class Backoff:
    """Delays ``base * factor**n`` capped at ``cap``, with up to ``jitter`` of it taken off."""

    def __init__(self, base: float = 0.05, cap: float = 5.0, factor: float = 2.0,
                 jitter: float = 0.2, rng: Callable[[], float] = random.random) -> None:
        if base <= 0 or cap < base or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("backoff needs 0 < base <= cap, factor >= 1, 0 <= jitter < 1")
        self.base, self.cap, self.factor, self.jitter = base, cap, factor, jitter
        self._rng = rng
        self.failures = 0

    def next_delay(self) -> float:
        """Count one failure; how long to wait before the next try."""
        raw = min(self.cap, self.base * self.factor ** min(self.failures, 64))
        self.failures += 1
        return raw * (1.0 - self.jitter * self._rng())

    def reset(self) -> None:
        """A try succeeded: the next failure starts from ``base`` again."""
        self.failures = 0


@dataclass(slots=True)
class _Slot:
    last: float
    held: int = 0


class _Window:
    """Per key: admitted at most once per ``interval``; counts what it turned away."""

    def __init__(self, interval: float, max_keys: int, clock: Callable[[], float]) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._slots: OrderedDict[str, _Slot] = OrderedDict()

    def admit(self, key: str) -> int | None:
        """None if ``key`` is turned away; else how many were turned away since the last."""
        now = self._clock()
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
        if slot is not None and now - slot.last < self.interval:
            slot.held += 1
            return None
        self._slots[key] = _Slot(now)
        while len(self._slots) > self.max_keys:
            self._slots.popitem(last=False)
        return slot.held if slot is not None else 0

    def held(self, key: str) -> int:
        slot = self._slots.get(key)
        return slot.held if slot is not None else 0

    def note(self, held: int) -> str:
        return f" [{held} more like this in the last {self.interval:.0f}s not logged]"


class RateLimitedLog:
    """Writes a line of a given ``key`` at most once per ``interval`` seconds.

    Held-back lines are counted; the next line of that key written says how many there were,
    so the log still tells how often a fault happened without one line per occurrence.
    Keys are the caller's kinds of event (never raw peer input); at most ``max_keys`` are
    remembered, the least recently used forgotten first.
    """

    def __init__(self, logger: logging.Logger, interval: float = 60.0, *,
                 max_keys: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._window = _Window(interval, max_keys, clock)

    def log(self, level: int, key: str, msg: str, *args: object,
            exc_info: BaseException | bool | None = None) -> bool:
        """Write the line unless one of ``key`` was written within the interval."""
        held = self._window.admit(key)
        if held is None:
            return False
        if held:
            msg += self._window.note(held)
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: str, msg: str, *args: object, **kw: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args, **kw)  # type: ignore[arg-type]

    def info(self, key: str, msg: str, *args: object, **kw: object) -> bool:
        return self.log(logging.INFO, key, msg, *args, **kw)  # type: ignore[arg-type]

    def error(self, key: str, msg: str, *args: object, **kw: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args, **kw)  # type: ignore[arg-type]

    def held(self, key: str) -> int:
        """Lines of ``key`` held back since the last one written."""
        return self._window.held(key)


class RateLimitFilter(logging.Filter):
    """A :class:`RateLimitedLog` for records others emit (a library's logger): one record per
    message template and level per ``interval``; the next one says how many were dropped.

    Records whose exception is one of ``peer_faults`` (what a remote peer caused, not a bug)
    lose their traceback and keep one line naming the exception.
    """

    def __init__(self, interval: float = 60.0, *,
                 peer_faults: tuple[type[BaseException], ...] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.peer_faults = peer_faults
        self._window = _Window(interval, 256, clock)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self._window.admit(f"{record.levelno}:{record.name}:{record.msg}")
        if held is None:
            return False
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if exc is not None and isinstance(exc, self.peer_faults):
            text = " ".join(str(exc).split()).replace("%", "%%")  # one line, as promised
            record.msg = f"{record.msg}: {type(exc).__name__}: {text}"
            record.exc_info, record.exc_text = None, None
        if held:
            record.msg = f"{record.msg}{self._window.note(held)}"
        return True
