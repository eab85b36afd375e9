"""The app's own projects (``projects_sync``) and which one a document clearly belongs to.

Pure functions: a record is linked only when exactly one project's name, alias or client
appears, looked for in the record's and the document's title (an email's subject), then in
the folder names of its path, then in its body; the first place with any match decides, and
two projects there mean no link.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.errors import ConfigError

#: Shorter names ("UX", "HR") match too much text to say a document belongs to a project.
MIN_TERM = 3
MAX_PROJECTS = 5000


@dataclass(frozen=True, slots=True)
class Project:
    id: str
    name: str
    client: str | None = None
    aliases: tuple[str, ...] = ()

    def terms(self) -> list[tuple[str, str]]:
        """(how, text) pairs that name this project."""
        out = [("name", self.name), *(("alias", a) for a in self.aliases)]
        if self.client:
            out.append(("client", self.client))
        return [(how, t.strip()) for how, t in out if len(t.strip()) >= MIN_TERM]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "client": self.client,
                "aliases": list(self.aliases)}


def _text(raw: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ConfigError(f"{where}.{key} must be a non-empty string", field=f"{where}.{key}")
    return value


def parse_projects(raw: Sequence[Any]) -> list[Project]:
    """Validate a ``projects_sync`` list; the error names the first bad field."""
    if len(raw) > MAX_PROJECTS:
        raise ConfigError(f"projects: at most {MAX_PROJECTS} projects", field="projects")
    out: list[Project] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"projects[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be an object", field=where)
        pid = _text(item, "id", where, required=True)
        name = _text(item, "name", where, required=True)
        client = _text(item, "client", where, required=False)
        aliases = item.get("aliases") or []
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise ConfigError(f"{where}.aliases must be an array of strings",
                              field=f"{where}.aliases")
        assert pid is not None and name is not None
        if pid in seen:
            raise ConfigError(f"{where}.id {pid!r} appears twice", field=f"{where}.id")
        seen.add(pid)
        out.append(Project(pid, name, client, tuple(aliases)))
    return out


@functools.lru_cache(maxsize=8)
def _pattern(projects: tuple[Project, ...]) -> re.Pattern[str] | None:
    terms = sorted({t.casefold() for p in projects for _, t in p.terms()}, key=len,
                   reverse=True)
    if not terms:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(t) for t in terms) + r")(?!\w)",
                      re.IGNORECASE)


def _found(projects: Sequence[Project], pattern: re.Pattern[str], text: str
           ) -> dict[str, tuple[str, str]]:
    """project id → (how, term) for every project named in ``text``."""
    hits = {m.group(1).casefold() for m in pattern.finditer(text)}
    out: dict[str, tuple[str, str]] = {}
    for p in projects:
        for how, term in p.terms():
            if term.casefold() in hits:
                out.setdefault(p.id, (how, term))
    return out


def named(projects: Sequence[Project], text: str) -> dict[str, tuple[str, str]]:
    """Every project ``text`` names: id → (how, term)."""
    pattern = _pattern(tuple(projects))
    return {} if pattern is None or not text else _found(projects, pattern, text)


def match_project(projects: Sequence[Project], places: Iterable[tuple[str, str]]
                  ) -> dict[str, Any] | None:
    """``places``: (where, text) in order of trust. The one project named in the first place
    that names any, with why; None if none is named, or two are in that place."""
    pattern = _pattern(tuple(projects))
    if pattern is None:
        return None
    for where, text in places:
        if not text:
            continue
        found = _found(projects, pattern, text)
        if not found:
            continue
        if len(found) > 1:
            return None
        (pid, (how, term)), = found.items()
        return {"id": pid, "by": how, "term": term, "in": where}
    return None
