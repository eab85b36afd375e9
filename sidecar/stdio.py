"""Keep stdout for the protocol: libraries that print (llama.cpp, grammar builders) go to stderr."""

from __future__ import annotations

import os
import sys
from typing import TextIO

_claimed: TextIO | None = None


def claim_stdout() -> TextIO:
    """Return a private writer on the real stdout and point fd 1 (and ``sys.stdout``) at stderr.

    Works at the file-descriptor level, so C code that writes to fd 1 cannot reach the
    parent process's pipe either. Idempotent.
    """
    global _claimed
    if _claimed is not None:
        return _claimed
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    private_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _claimed = os.fdopen(private_fd, "w", encoding="utf-8", buffering=1, newline="\n")
    return _claimed


def write_line(stream: TextIO, line: str) -> None:
    """One line, flushed at once (the parent reads it as soon as it exists)."""
    stream.write(line + "\n")
    stream.flush()
