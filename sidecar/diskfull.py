"""Tell a full disk apart from other failures: it heals by itself once space is freed.

SQLite reports ENOSPC as ``SQLITE_FULL`` ("database or disk is full"); file writes raise
``OSError`` with ``ENOSPC`` (or ``EDQUOT``, a quota used up). Either way nothing is wrong with
the data: the write is retried later, and the user is told to free space.
"""

from __future__ import annotations

import errno
import sqlite3

#: The reason a run ends with, in its errors and its run_finished frame.
DISK_FULL = "disk full"
SQLITE_FULL = 13
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_disk_full(exc: BaseException | None) -> bool:
    """True if ``exc`` (or what it was raised from) is a write refused for lack of space."""
    seen = 0
    while exc is not None and seen < 8:
        if getattr(exc, "code", None) == "disk_full":  # already classified (store_error)
            return True
        if isinstance(exc, sqlite3.Error):
            code = getattr(exc, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == SQLITE_FULL:
                return True
            if "database or disk is full" in str(exc):
                return True
        elif isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def disk_full_message(where: str) -> str:
    """The one line a user reads: what happened and what to do."""
    return (f"{DISK_FULL}: the disk holding {where} has no space left; free some space and "
            "the sidecar carries on where it stopped (nothing queued is lost)")
