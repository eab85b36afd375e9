"""Logs go to stderr and a rotating file; known secrets are redacted before anything is written."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import IO, Any

from sidecar.redaction import redact, register_secret

__all__ = ["FILE_ONLY", "redact", "register_secret", "setup_logging"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Redacts the fully formatted record, tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


#: ``log.error(..., extra=FILE_ONLY)``: the record goes to the log file, not to stderr (where
#: the same fact is already said once, in the caller's own words).
FILE_ONLY = {"file_only": True}


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Creates the log (and each new one after a rotation) with mode 0600: logs name files."""

    _failing = False  # the last write failed (and stderr was told)
    _failed_now = False

    def emit(self, record: logging.LogRecord) -> None:
        self._failed_now = False
        super().emit(record)
        if not self._failed_now:
            self._failing = False

    def handleError(self, record: logging.LogRecord) -> None:
        """A full or read-only disk: say so once on stderr, not a traceback per record."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._failed_now = True
        if not self._failing:
            self._failing = True
            sys.stderr.write(f"sidecar: cannot write the log file {self.baseFilename} "
                             f"({exc.strerror or exc}); logging to stderr only meanwhile\n")

    def _open(self) -> IO[Any]:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)


def setup_logging(level: str = "info", log_file: Path | None = None) -> None:
    """stderr plus, if given, a rotating ``log_file``; raises ``OSError`` if it cannot be opened."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    fmt = RedactingFormatter(FORMAT)
    err = logging.StreamHandler()  # stderr
    err.setFormatter(fmt)
    err.addFilter(_not_file_only)
    root.addHandler(err)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fh = PrivateRotatingFileHandler(
            log_file, maxBytes=5 * 1024 * 1024, backupCount=3, encoding="utf-8"
        )
        fh.setFormatter(fmt)
        root.addHandler(fh)
    for noisy in ("aiohttp.access", "asyncio", "watchdog", "apscheduler"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.WARNING))
