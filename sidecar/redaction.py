"""Known secrets, and text with them masked: what logs, the run log and frames may carry.

At the bottom of the package (no imports from it) so the store can redact what it writes to
SQLite without importing the logging set-up.
"""

from __future__ import annotations

import threading

_SECRETS: set[str] = set()
_LOCK = threading.Lock()


def register_secret(value: str | None) -> None:
    """Make ``value`` unloggable from now on (tokens, API keys, refresh tokens)."""
    if value and len(value) >= 6:
        with _LOCK:
            _SECRETS.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret replaced by ``***`` (longest first)."""
    with _LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        if s in text:
            text = text.replace(s, "***")
    return text
