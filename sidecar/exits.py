"""Exit codes every command documents, and which error ends with which (no I/O)."""

from __future__ import annotations

import errno

from sidecar.errors import ConfigError, StoreError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_ALREADY_RUNNING = 3
EXIT_STORE = 4
EXIT_CONFIG = 5
EXIT_STORE_LOCKED = 6
EXIT_CANNOT_WRITE = 7

#: Every exit code and what it means (``sidecar --help``, docs/packaging.md, README).
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "ok (a clean stop)"),
    (EXIT_ERROR, "failure (e.g. the parent process is already gone, the port is taken)"),
    (EXIT_USAGE, "usage"),
    (EXIT_ALREADY_RUNNING, "another instance holds the data dir"),
    (EXIT_STORE, "the database is unusable (damaged, from a newer version, read-only, or a "
                 "folder in its place)"),
    (EXIT_CONFIG, "invalid configuration"),
    (EXIT_STORE_LOCKED, "the database is locked by another program (the file is fine: retry "
                        "once that program is closed)"),
    (EXIT_CANNOT_WRITE, "the data or log directory cannot be written (permissions, a "
                        "read-only or full disk)"),
)
#: Stable error codes with an exit code of their own; other errors go by class.
_EXIT_BY_CODE = {
    "already_running": EXIT_ALREADY_RUNNING, "weak_token": EXIT_CONFIG,
    "database_locked": EXIT_STORE_LOCKED, "data_dir_unwritable": EXIT_CANNOT_WRITE,
    "log_dir_unwritable": EXIT_CANNOT_WRITE, "disk_full": EXIT_CANNOT_WRITE,
}


#: OS errors that mean "cannot write there" (exit 7): permissions, read-only or full disk,
#: a file where a directory should be.
CANNOT_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                       getattr(errno, "EDQUOT", errno.ENOSPC), errno.EEXIST, errno.ENOTDIR}


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an error that ends a command."""
    by_code = _EXIT_BY_CODE.get(getattr(exc, "code", None) or "")
    if by_code is not None:
        return by_code
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, StoreError):
        return EXIT_STORE
    return EXIT_ERROR


def exit_codes_text() -> str:
    return "exit codes: " + ", ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES)
