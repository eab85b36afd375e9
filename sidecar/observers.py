"""watchdog observers as the watcher needs them: why a native one cannot start, and a polling
one whose snapshot walks folders from a stack (depth never matters)."""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Any

#: What each native observer class is called in ``status``.
NATIVE_NAMES = {"InotifyObserver": "inotify", "FSEventsObserver": "fsevents",
                 "WindowsApiObserver": "windows", "KqueueObserver": "kqueue"}


def why_not_native(exc: BaseException, poll_interval: float) -> str:
    """One line for the log and ``status``: why this agent polls instead."""
    code = getattr(exc, "errno", None)
    if code == errno.EMFILE:
        # EMFILE also means the process's open-file limit: both are named
        what = ("no inotify instance is left (fs.inotify.max_user_instances is used up; "
                "editors and IDEs take many), or the open-file limit is reached")
    elif code == errno.ENOSPC:
        what = "the inotify watch limit is used up (fs.inotify.max_user_watches)"
    elif isinstance(exc, RecursionError):
        what = "the folder tree is too deep for the native watcher"
    else:
        what = f"the native watcher could not start ({type(exc).__name__}: {exc})"
    return f"{what}; polling every {poll_interval:g} s instead"


def polling_observer(interval: float) -> Any:
    """watchdog's polling observer, taking its snapshots with :class:`_StackSnapshot` (its
    own walk recurses once per folder and dies in a tree a few hundred levels deep)."""
    import stat as stat_mod

    from watchdog.observers.polling import PollingEmitter, PollingObserver
    from watchdog.utils.dirsnapshot import DirectorySnapshot

    class _StackSnapshot(DirectorySnapshot):
        def walk(self, root: str) -> Any:
            seen: set[tuple[int, int]] = set()
            with contextlib.suppress(OSError):
                top = self.stat(root)
                seen.add((top.st_dev, top.st_ino))
            stack = [root]
            while stack:
                folder = stack.pop()
                try:
                    names = [e.name for e in self.listdir(folder)]
                except OSError as exc:
                    if folder == root and exc.errno not in (errno.ENOENT, errno.ENOTDIR,
                                                            errno.EINVAL):
                        raise  # the emitter keeps its last snapshot and polls again
                    continue
                for name in names:
                    path = os.path.join(folder, name)
                    try:
                        st = self.stat(path)
                    except OSError:
                        continue
                    yield path, st
                    if (self.recursive and stat_mod.S_ISDIR(st.st_mode)
                            and (st.st_dev, st.st_ino) not in seen):
                        seen.add((st.st_dev, st.st_ino))  # a symlink loop is walked once
                        stack.append(path)

    class _StackEmitter(PollingEmitter):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            watch = self.watch
            self._take_snapshot = lambda: _StackSnapshot(watch.path,
                                                         recursive=watch.is_recursive)

    observer = PollingObserver(timeout=interval)
    if hasattr(observer, "_emitter_class"):
        observer._emitter_class = _StackEmitter
    return observer
