"""TEST HOOKS: named crash points, so a test can SIGKILL the daemon at an exact place in its
write path. Compiled into the daemon, inert unless a test sets the variables below.

``SIDECAR_FAILPOINT="delivery.sent:7"`` (comma-separated ``name:N`` pairs) makes the process
SIGKILL itself on the 7th pass through ``hit("delivery.sent")``: no cleanup, no flush, as a
power cut or a task-manager kill would. The variable is read once, at import; unarmed (the
shipped case), :func:`hit` costs one check of an empty dict. Only tests/reliability arms it.

Points (where the durable state differs on either side):

``extract``                 a document's records are extracted, nothing of them written yet
``outbox.enqueue``          records inserted in the outbox, their transaction not committed
``outbox.queued``           records and file state committed, delivery not yet woken
``delivery.sent``           a tool_call written to the socket and counted in flight
``delivery.ack_received``   a tool_result taken in, its settle not yet committed
``outbox.settle``           a settle batch's UPDATEs executed, its COMMIT not yet run
``outbox.settled``          a settle batch committed, delivery not yet told

Delay points stretch a window instead of ending the process: ``SIDECAR_FAILDELAY=
"store.begin:0.5"`` (comma-separated ``name:seconds``) makes every pass through
``delay("store.begin")`` take half a second longer, announced first with a log line naming
the point and the asyncio task, so a test can land a cancel exactly there. The store holds
its transaction statements on its worker thread (the statement is in flight, as a slow disk
or a busy lock would leave it): ``store.begin``, ``store.body`` (a statement inside the
transaction), ``store.commit``, ``store.rollback``.
"""

from __future__ import annotations

import os
import signal

ENV = "SIDECAR_FAILPOINT"
DELAY_ENV = "SIDECAR_FAILDELAY"


def parse(spec: str) -> dict[str, int]:
    """``"a:3,b"`` → ``{"a": 3, "b": 1}``; a bad count fails loudly at start, not silently."""
    armed: dict[str, int] = {}
    for part in spec.split(","):
        name, _, count = part.strip().partition(":")
        if name:
            n = int(count or 1)
            if n < 1:
                raise ValueError(f"{ENV}: hit count for {name!r} must be >= 1, got {n}")
            armed[name] = n
    return armed


def parse_delays(spec: str) -> dict[str, float]:
    """``"a:0.5,b:1"`` → ``{"a": 0.5, "b": 1.0}``; a bad delay fails loudly at start."""
    armed: dict[str, float] = {}
    for part in spec.split(","):
        name, _, seconds = part.strip().partition(":")
        if name:
            d = float(seconds or 0)
            if not 0 < d <= 60:
                raise ValueError(f"{DELAY_ENV}: delay for {name!r} must be in (0, 60] s, got {d}")
            armed[name] = d
    return armed


_ARMED: dict[str, int] = parse(os.environ.get(ENV, ""))
_DELAYS: dict[str, float] = parse_delays(os.environ.get(DELAY_ENV, ""))
_hits: dict[str, int] = {}


def delay(name: str) -> float:
    """Seconds a pass through delay point ``name`` must take longer (0.0 when unarmed)."""
    return _DELAYS.get(name, 0.0) if _DELAYS else 0.0


def hit(name: str) -> None:
    """Count one pass through ``name``; on its armed count, SIGKILL this process."""
    if not _ARMED:
        return
    target = _ARMED.get(name)
    if target is None:
        return
    _hits[name] = seen = _hits.get(name, 0) + 1
    if seen == target:
        os.kill(os.getpid(), signal.SIGKILL)
