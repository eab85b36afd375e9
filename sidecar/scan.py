"""Walk an agent's folders with ``stat`` only: what exists, what changed, what must be refused.

Blocking by nature (run it with ``asyncio.to_thread``). Symlinks are resolved and anything
whose target leaves the configured folders is refused; directory loops are detected by
(device, inode); FIFOs, devices and sockets are never opened; names that are not UTF-8 are
refused (the store, the protocol and the app all need text).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.domain import inside, resolve_roots
from sidecar.protocol.codec import is_utf8

__all__ = ["Accept", "Refused", "ScanResult", "inside", "resolve_roots", "scan_paths", "scan_tree"]

#: ``accept(relative_parts, is_dir)``: does this entry belong to the agent? ``relative_parts``
#: is the path below the root as a tuple of names (cheap to build for 20k files).
Accept = Callable[[tuple[str, ...], bool], bool]


@dataclass(frozen=True, slots=True)
class Refused:
    """An entry the scan will not read, and why (``reason`` is a stable code)."""

    path: str
    reason: str
    message: str
    size: int = 0
    mtime_ns: int = 0


@dataclass(slots=True)
class ScanResult:
    """Accepted regular files by resolved path → (size, mtime_ns), plus refusals."""

    files: dict[str, tuple[int, int]] = field(default_factory=dict)
    refused: list[Refused] = field(default_factory=list)


def scan_tree(roots: Iterable[str | Path], accept: Accept) -> ScanResult:
    result = ScanResult()
    resolved = resolve_roots(roots)
    visited: set[tuple[int, int]] = set()
    for root in resolved:
        _walk(str(root), (), resolved, accept, visited, result)
    return result


def _walk(directory: str, rel: tuple[str, ...], roots: list[Path], accept: Accept,
          visited: set[tuple[int, int]], result: ScanResult) -> None:
    """Walk below ``directory`` with a stack, not recursion: a tree's depth must not matter
    (a 2,000-level tree raised RecursionError and failed every run of its agent)."""
    stack: list[tuple[str, tuple[str, ...]]] = [(directory, rel)]
    while stack:
        directory, rel = stack.pop()
        entries = _list_dir(directory, visited, result)
        subdirs: list[tuple[str, tuple[str, ...]]] = []
        for entry in entries:
            try:
                is_link = entry.is_symlink()
            except OSError:
                continue  # vanished between listing and looking
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                if not is_link:
                    continue
                is_dir = False  # ELOOP: a symlink loop, which _classify names, not drops
            sub = _classify(entry.path, (*rel, entry.name), is_link, is_dir, roots, accept,
                            result, entry)
            if sub is not None:
                subdirs.append(sub)
        stack.extend(reversed(subdirs))  # depth first, in name order


def _list_dir(directory: str, visited: set[tuple[int, int]], result: ScanResult
              ) -> list[os.DirEntry[str]]:
    """The folder's entries sorted by name, or [] with the refusal noted."""
    try:
        st = os.stat(directory)
    except OSError as exc:
        result.refused.append(_os_refusal(directory, exc))
        return []
    ident = (st.st_dev, st.st_ino)
    if ident in visited:
        result.refused.append(Refused(directory, "symlink_loop",
                                      f"{directory}: folder reached twice (symlink loop)"))
        return []
    visited.add(ident)
    try:
        with os.scandir(directory) as it:
            entries = list(it)
    except OSError as exc:
        result.refused.append(_os_refusal(directory, exc))
        return []
    entries.sort(key=lambda e: e.name)
    return entries


def _os_refusal(directory: str, exc: OSError) -> Refused:
    if isinstance(exc, PermissionError):
        return Refused(directory, "permission_denied", f"{directory}: permission denied")
    if exc.errno == errno.ENAMETOOLONG:
        return Refused(directory, "path_too_long",
                       f"{directory}: path longer than the system allows; not read")
    return Refused(directory, "unreadable", f"{directory}: {exc}")


def scan_paths(paths: Iterable[str | Path], roots: Iterable[str | Path],
               accept: Accept) -> ScanResult:
    """Classify just these paths (a watcher's batch) with exactly the full scan's rules."""
    result = ScanResult()
    resolved = resolve_roots(roots)
    visited: set[tuple[int, int]] = set()
    for raw in paths:
        path = Path(raw)
        root = next((r for r in resolved if path == r or path.is_relative_to(r)), None)
        if root is None:
            continue
        try:
            is_link = path.is_symlink()
            is_dir = path.is_dir()
        except OSError:
            continue
        if not (is_link or is_dir or path.exists()):
            continue
        rel = path.relative_to(root).parts
        if not all(accept(rel[:i], True) for i in range(1, len(rel))):
            continue  # inside an excluded folder
        sub = _classify(str(path), rel, is_link, is_dir, resolved, accept, result)
        if sub is not None:
            _walk(sub[0], sub[1], resolved, accept, visited, result)
    return result


def _classify(path: str, rel: tuple[str, ...], is_link: bool, is_dir: bool, roots: list[Path],
              accept: Accept, result: ScanResult, entry: os.DirEntry[str] | None = None
              ) -> tuple[str, tuple[str, ...]] | None:
    """Note a file or refusal in ``result``; a folder to walk is returned, not walked."""
    if not accept(rel, is_dir):
        return None
    if not is_utf8(path):  # nothing downstream can store, send or show such a name
        result.refused.append(_bad_name(path))
        return None
    target = path
    if is_link:
        try:
            resolved = Path(path).resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == 40
            reason = "symlink_loop" if loop else "broken_symlink"
            result.refused.append(Refused(path, reason, f"{path}: {reason.replace('_', ' ')}"))
            return None
        if not inside(resolved, roots):
            lst = os.lstat(path)
            result.refused.append(Refused(
                path, "outside_folder",
                f"{path}: links to {resolved}, outside the agent's folders; not read",
                size=lst.st_size, mtime_ns=lst.st_mtime_ns))
            return None
        target = str(resolved)
        if not is_utf8(target):
            result.refused.append(_bad_name(target))
            return None
    if is_dir:
        return target, rel
    try:
        # a DirEntry caches the stat on most platforms: no extra system call
        st = entry.stat() if entry is not None and not is_link else os.stat(target)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        result.refused.append(Refused(path, "not_regular_file",
                                      f"{path}: not a regular file (FIFO, device or socket)",
                                      size=0, mtime_ns=st.st_mtime_ns))
        return None
    result.files.setdefault(target, (st.st_size, st.st_mtime_ns))
    return None


def _bad_name(path: str) -> Refused:
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")
    return Refused(shown, "bad_name", f"{shown}: name is not valid UTF-8; rename it to have "
                   "it read")

