"""Does a document introduce a project (a kickoff, a brief, a new client)? Pure functions.

Evidence, strictest first, so that an ordinary document never creates a project:

* its title, subject or first heading says so: ``Kickoff — Nova Dental rebrand``,
  ``Nova Dental kickoff call``, ``Project brief: Summer menu``, ``Summer menu — creative
  brief``, ``New client: Nova Dental``, ``New project – Summer menu``;
* or a header field in its first lines (``Project: …``, ``Project name: …``, ``Client: …``)
  together with a kickoff, brief, onboarding or "new client/project" word in its title, or
  opening one of its first lines ("New client: …"); a field alone is what ordinary meeting
  notes have too, and "the new brief" in a sentence is no introduction.

A reply or a forward (``Re:``, ``Fwd:``) introduces nothing. A name made only of generic
words ("Weekly", "Q3", "Team") is no project. The name is the ``Project:`` field, else the
title's, else the client's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.threads import HEADERS, REPLY_PREFIX

_SEP = r"\s*(?:[-—–:|]|\s-\s)\s*"
_KICKOFF = r"(?:project\s+)?kick[\s-]?off(?:\s+(?:meeting|call|notes|session))?"
_BRIEF = r"(?:project|creative|client|design|campaign)\s+brief"
_I = re.IGNORECASE
#: (how, pattern) over a title line; ``name`` is the project named there.
TITLE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kickoff", re.compile(rf"^{_KICKOFF}{_SEP}(?P<name>.+)$", _I)),
    ("kickoff", re.compile(rf"^(?P<name>.+?)(?:{_SEP}|\s+){_KICKOFF}$", _I)),
    ("brief", re.compile(rf"^(?:{_BRIEF}|brief){_SEP}(?P<name>.+)$", _I)),
    ("brief", re.compile(rf"^(?P<name>.+?){_SEP}(?:{_BRIEF}|brief)$", _I)),
    ("brief", re.compile(rf"^(?P<name>.+?)\s+{_BRIEF}$", _I)),
    ("new client", re.compile(rf"^new\s+client{_SEP}(?P<name>.+)$", _I)),
    ("new project", re.compile(rf"^new\s+project{_SEP}(?P<name>.+)$", _I)),
)
_FIELD = re.compile(r"^\s*(?:[-*]\s+)?(?:\*\*|__)?(?P<key>project(?:\s+name)?|client(?:\s+name)?)"
                    r"(?:\*\*|__)?\s*:\s*(?:\*\*|__)?\s*(?P<value>\S.*?)\s*$", _I)
_MARKER = re.compile(r"\b(?:kick[\s-]?off|brief|onboarding|project charter|new client|"
                     r"new project)\b", _I)
#: In the body, only a line that opens with it ("New client: …", "Kick-off meeting") counts.
_BODY_MARKER = re.compile(r"^\W*(?:new client|new project|kick[\s-]?off|project charter|"
                          r"onboarding)\b", _I)
#: Words that name no project on their own ("Weekly kickoff", "Q3 kickoff", "Team brief").
GENERIC = frozenset("""
    a an the our my your this that new next weekly daily monthly quarterly annual yearly team
    internal all hands staff sprint project projects client clients meeting call notes
    session kickoff kick off brief update status sync general misc q1 q2 q3 q4 h1 h2 year
    season monday tuesday wednesday thursday friday saturday sunday january february march
    april may june july august september october november december spring summer autumn
    fall winter week month today tomorrow draft final v1 v2 and for of with
""".split())
#: Header fields are looked for in this many non-empty lines after the title.
HEADER_LINES = 15


@dataclass(frozen=True, slots=True)
class Introduction:
    """A project a document introduces, and the evidence (``by``: kickoff, brief, new
    client, new project or project field; ``line``: the text that said it)."""

    name: str
    client: str | None
    by: str
    line: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "client": self.client, "by": self.by,
                "line": self.line[:200]}


def clean_name(text: str) -> str | None:
    """A project name as written, without markdown, quotes, a trailing parenthesis or
    punctuation; None if it is no name (too short or long, or only generic words)."""
    text = re.sub(r"[*_`#>]+", " ", text)
    text = re.sub(r"\s*\([^)]*\)\s*$", "", text)
    text = " ".join(text.split()).strip(" \"'“”‘’.,;:!?-–—|")
    words = re.findall(r"[^\W_]+", text.casefold())
    if not 3 <= len(text) <= 80 or not words or len(words) > 8:
        return None
    if all(w in GENERIC or w.isdigit() for w in words):
        return None
    return text


def _fields(lines: Sequence[str]) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for line in lines:
        m = _FIELD.match(line)
        if m:
            key = "project" if m.group("key").lower().startswith("project") else "client"
            value = clean_name(m.group("value"))
            if value:
                out.setdefault(key, (value, line.strip()))
    return out


def _marked(heads: Sequence[str], lines: Sequence[str], only: re.Pattern[str] | None = None
            ) -> bool:
    """A kickoff, brief or new-client word in a title, or opening one of the first lines."""
    body = [ln for ln in lines[:HEADER_LINES] if _BODY_MARKER.match(ln)]
    return any((only or _MARKER).search(t) for t in [*heads, *body])


def introduction(titles: Sequence[str | None], text: str) -> Introduction | None:
    """The project ``text`` introduces (``titles``: its subject, title or file name, most
    trusted first), or None; see the module docstring for the evidence."""
    heads = [t.strip() for t in titles if t and t.strip()]
    if heads and REPLY_PREFIX.match(heads[0]):
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    first = next((ln for ln in lines if not ln.lower().startswith(HEADERS)), "")
    if first.lstrip().startswith("#"):
        heads.append(first.strip(" #\t"))
    found: tuple[str, str, str] | None = None  # (how, name, line)
    for head in heads:
        for how, pattern in TITLE_PATTERNS:
            m = pattern.match(head.strip(" #\t"))
            name = clean_name(m.group("name")) if m else None
            if name:
                found = (how, name, head)
                break
        if found:
            break
    fields = _fields(lines[:HEADER_LINES + 1])
    client = fields.get("client", (None, ""))[0]
    if "project" in fields:
        if found is None and not _marked(heads, lines):
            return None  # a Project: field alone is what ordinary notes have too
        name, line = fields["project"]
        return Introduction(name, client, found[0] if found else "project field",
                            found[2] if found else line)
    if found is None:
        if client and _marked(heads, lines, only=re.compile(r"\bnew client\b", _I)):
            return Introduction(client, client, "new client", fields["client"][1])
        return None
    how, name, line = found
    return Introduction(name, client, how, line)
