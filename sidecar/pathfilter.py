"""Decides which files and folders under an agent's roots it reads."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import PurePath

__all__ = ["included"]


def included(rel: PurePath | tuple[str, ...], *, extensions: Sequence[str],
             include_globs: Sequence[str], exclude: Sequence[str], is_dir: bool) -> bool:
    """Does the entry at ``rel`` (relative to the agent's folder root) belong to the agent?

    Directories are only tested against ``exclude``; files also against ``extensions`` (a
    file with one of them is in) or ``include_globs`` (a file matching one is in). With both
    empty every file that is not excluded is in.

    Patterns are gitignore-like and case-insensitive (users' file systems usually are):

    * ending in ``/`` (``.git/``, ``node_modules/``): directories only;
    * without ``/`` (``*.tmp``, ``~$*``, ``.*``, ``desktop.ini``): the entry's name;
    * with ``/`` (``notes/**/*.md``, ``build/out``): the path from the root; ``*`` and ``?``
      stay within one segment, ``**/`` means any depth.

    A file under an excluded folder is excluded too, so a watcher event for
    ``node_modules/x/readme.md`` is refused though the walker never enters ``node_modules``.
    """
    raw = rel if isinstance(rel, tuple) else PurePath(rel).parts
    parts = tuple(p for p in raw if p not in ("", ".", "/"))
    if not parts:
        return True  # the root itself
    patterns = _compile_all(tuple(exclude))
    if is_dir:
        return not _dir_excluded(parts, patterns)
    if len(parts) > 1 and _under_excluded(parts[:-1], patterns):
        return False
    if patterns.matches(parts, is_dir=False):
        return False
    exts = _normalise_extensions(tuple(extensions))
    globs = _compile_all(tuple(include_globs))
    if not exts and not globs.patterns:
        return True
    if exts and os.path.splitext(parts[-1])[1].lower() in exts:
        return True
    return globs.matches(parts, is_dir=False)


@lru_cache(maxsize=8192)
def _dir_excluded(parts: tuple[str, ...], patterns: _PatternSet) -> bool:
    return patterns.matches(parts, is_dir=True)


@lru_cache(maxsize=8192)
def _under_excluded(parts: tuple[str, ...], patterns: _PatternSet) -> bool:
    """Is this folder, or one above it, excluded? Memoised: siblings share their parents.

    A loop, not recursion: a file 2,000 folders down must not raise RecursionError."""
    return any(_dir_excluded(parts[:i], patterns) for i in range(1, len(parts) + 1))


class _Pattern:
    """One compiled pattern: which entries it may match and the regex it tests."""

    __slots__ = ("dir_only", "on_path", "regex", "source")

    def __init__(self, raw: str) -> None:
        pattern = raw.strip().replace("\\", "/")
        self.dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        self.on_path = "/" in pattern
        pattern = pattern.lstrip("/")
        self.source = _glob_to_regex(pattern.lower())
        self.regex = re.compile(self.source, re.DOTALL)

    def matches(self, parts: tuple[str, ...], *, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.on_path:
            return self.regex.fullmatch("/".join(parts).lower()) is not None
        return self.regex.fullmatch(parts[-1].lower()) is not None


class _PatternSet:
    """Patterns merged into one regex per kind (name/path × any/dir-only): one match per test.

    Hashed by identity, so memoised folder checks are per compiled set.
    """

    __slots__ = ("name_any", "name_dir", "path_any", "path_dir", "patterns")

    def __init__(self, patterns: tuple[_Pattern, ...]) -> None:
        self.patterns = patterns

        def union(on_path: bool, dir_only: bool) -> re.Pattern[str] | None:
            parts = [p.source for p in patterns if p.on_path == on_path
                     and p.dir_only == dir_only]
            return re.compile("|".join(f"(?:{x})" for x in parts), re.DOTALL) if parts else None

        self.name_any, self.name_dir = union(False, False), union(False, True)
        self.path_any, self.path_dir = union(True, False), union(True, True)

    def matches(self, parts: tuple[str, ...], *, is_dir: bool) -> bool:
        name = parts[-1].lower()
        if self.name_any is not None and self.name_any.fullmatch(name):
            return True
        if is_dir and self.name_dir is not None and self.name_dir.fullmatch(name):
            return True
        if self.path_any is None and (not is_dir or self.path_dir is None):
            return False
        path = "/".join(parts).lower()
        if self.path_any is not None and self.path_any.fullmatch(path):
            return True
        return bool(is_dir and self.path_dir is not None and self.path_dir.fullmatch(path))


@lru_cache(maxsize=256)
def _compile_all(raw: tuple[str, ...]) -> _PatternSet:
    return _PatternSet(tuple(_Pattern(p) for p in raw if p.strip().strip("/")))


@lru_cache(maxsize=256)
def _normalise_extensions(raw: tuple[str, ...]) -> frozenset[str]:
    """Same normalisation as :func:`sidecar.domain._extensions`: lower case, leading dot."""
    out: set[str] = set()
    for e in raw:
        e = e.strip().lower()
        if e and e != ".":
            out.add(e if e.startswith(".") else "." + e)
    return frozenset(out)


def _glob_to_regex(pattern: str) -> str:
    """Translate a glob to a regex: ``*``/``?`` stay in a segment, ``**`` crosses them."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                j = i + 2
                while j < n and pattern[j] == "*":
                    j += 1
                at_start = i == 0 or pattern[i - 1] == "/"
                if at_start and j < n and pattern[j] == "/":
                    out.append("(?:.*/)?")  # "**/" : zero or more whole segments
                    j += 1
                elif at_start and j == n and i > 0:
                    out[-1:] = ["(?:/.*)?"]  # "a/**" : a itself or anything below it
                else:
                    out.append(".*")
                i = j
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern[i + 1:i + 2] in ("!", "^", "]") else i + 1)
            if j == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\").replace("[", "\\[")
                out.append(f"[{'^/' if negate else ''}{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)
