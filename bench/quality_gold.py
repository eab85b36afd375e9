"""Gold labels, predictions and text matching for bench/quality.py (pure: no I/O but reading
gold.json), plus the checks every record must pass: the seed's schema and no injected text."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

MATCH_F1 = 0.6

# ── text matching ───────────────────────────────────────────────────────────

_PUNCT = re.compile(r"[^\w\s]|_", re.UNICODE)


def normalize(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces: what titles are compared on."""
    text = text.replace("’", "'").replace("'", "")
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def token_f1(a: str, b: str) -> float:
    """Token-level F1 of two texts (multiset overlap after normalisation)."""
    ta, tb = normalize(a).split(), normalize(b).split()
    if not ta or not tb:
        return 0.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def contains(a: str, b: str) -> bool:
    """One normalised text contains the other on word boundaries."""
    na, nb = normalize(a), normalize(b)
    if not na or not nb:
        return False
    return f" {na} " in f" {nb} " or f" {nb} " in f" {na} "


def similarity(pred: Sequence[str], gold: Sequence[str]) -> float:
    """Best match score over alternative texts; 0.0 when no pair counts as a match."""
    best = 0.0
    for p in pred:
        for g in gold:
            f1 = token_f1(p, g)
            score = max(f1, MATCH_F1) if contains(p, g) else f1
            if score >= MATCH_F1:
                best = max(best, score)
    return best


def greedy_match(preds: Sequence[Sequence[str]], golds: Sequence[Sequence[str]]
                 ) -> list[tuple[int, int, float]]:
    """One-to-one matching, best-scoring pairs first: (pred index, gold index, score)."""
    pairs = [(similarity(p, g), i, j) for i, p in enumerate(preds) for j, g in enumerate(golds)]
    pairs = sorted((s, i, j) for s, i, j in pairs if s > 0.0)
    pairs.reverse()
    used_p: set[int] = set()
    used_g: set[int] = set()
    out = []
    for s, i, j in pairs:
        if i in used_p or j in used_g:
            continue
        used_p.add(i)
        used_g.add(j)
        out.append((i, j, s))
    return out


# ── gold and predictions ────────────────────────────────────────────────────

@dataclass(frozen=True, slots=True)
class GoldTask:
    """One labelled open task: its title, other mentions, owner and due date."""

    title: str
    aliases: tuple[str, ...]
    assignee: str | None
    due: str | None
    #: None: not labelled (older gold); "medium": labelled, nothing stated in the text.
    priority: str | None = None

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.title, *self.aliases)


@dataclass(frozen=True, slots=True)
class GoldTimeline:
    """One labelled milestone or scheduled event and its date."""

    title: str
    date: str


@dataclass(frozen=True, slots=True)
class GoldDoc:
    """The labels of one document."""

    name: str
    reference: date
    tasks: tuple[GoldTask, ...]
    done: tuple[str, ...]
    notes: tuple[tuple[str, ...], ...]
    #: None: this document's timelines are not labelled (no ``timelines`` key), so not scored.
    timelines: tuple[GoldTimeline, ...] | None = None
    injected: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Pred:
    """One predicted record, reduced to what is scored."""

    table: str
    texts: tuple[str, ...]
    status: str
    assignee: tuple[str, ...]
    due: str | None
    priority: str | None = None

    @property
    def title(self) -> str:
        return self.texts[0]


def load_gold(path: Path) -> list[GoldDoc]:
    """Parse gold.json (keys starting with ``_`` are comments)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    docs = []
    for name, entry in sorted(raw.items()):
        if name.startswith("_"):
            continue
        tasks = tuple(GoldTask(t["title"], tuple(t.get("aliases") or ()), t.get("assignee"),
                               t.get("due"), _priority(t)) for t in entry.get("tasks", []))
        notes = tuple((n,) if isinstance(n, str) else tuple(n) for n in entry.get("notes", []))
        timelines = (None if "timelines" not in entry else
                     tuple(GoldTimeline(t["title"], t["date"]) for t in entry["timelines"]))
        docs.append(GoldDoc(name, date.fromisoformat(entry["reference_date"]), tasks,
                            tuple(entry.get("done_tasks", [])), notes, timelines,
                            tuple(entry.get("injected", []))))
    return docs


def _priority(task: dict[str, Any]) -> str | None:
    """Gold priority: None when not labelled; a stated null means the default, medium."""
    if "priority" not in task:
        return None
    return task["priority"] or "medium"


def people(value: Any) -> tuple[str, ...]:
    """Assignee as a sorted tuple of lower-case first names ("@Maria", "Li Wei" → li)."""
    if value is None:
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value]
    if isinstance(value, str):
        value = [value]
    names: set[str] = set()
    for item in value or ():
        for part in re.split(r",|&|\band\b", str(item)):
            words = normalize(part).split()
            if words:
                names.add(words[0])
    return tuple(sorted(names))


def _day(ms: Any) -> str | None:
    if not isinstance(ms, int | float):
        return None
    return datetime.fromtimestamp(ms / 1000).date().isoformat()


def to_pred(table: str, data: dict[str, Any]) -> Pred:
    """A result item as the fields the scorer compares."""
    title = str(data.get("title") or "")
    texts = [title]
    content = data.get("content") or data.get("description")
    if isinstance(content, str) and content.strip() and content.strip() != title:
        texts.append(content)
    when = data.get("dueDate") if table == "tasks" else data.get("date")
    return Pred(table, tuple(texts), str(data.get("status") or "todo"),
                people(data.get("assignee")), _day(when), data.get("priority"))


# ── checks every record must pass ───────────────────────────────────────────

#: The seed's ``_TABLE_SCHEMAS``, restated here so the bench checks the product independently.
SEED_FIELDS: dict[str, dict[str, str]] = {
    "tasks": {"title": "str!", "description": "str", "status": "todo|in_progress|done",
              "priority": "high|medium|low", "assignee": "json-list", "dueDate": "ms",
              "projectId": "str"},
    "notes": {"title": "str!", "content": "str", "projectId": "str"},
    "timelines": {"title": "str!", "projectId": "str!", "date": "ms"},
    "projects": {"name": "str!", "clientId": "str"},
    "taskComments": {"taskId": "str!", "author": "str", "content": "str!"},
}


def schema_problems(table: str, data: Any, data_types: Sequence[str]) -> list[str]:
    """Why a record could not be inserted as the seed's server would (empty: valid)."""
    if table not in data_types or table not in SEED_FIELDS:
        return [f"table {table!r} is not among the agent's data types {list(data_types)}"]
    if not isinstance(data, dict):
        return [f"{table}: data is not an object"]
    spec = SEED_FIELDS[table]
    out = [f"{table}: unknown field {k!r}" for k in data if k not in spec]
    for name, kind in spec.items():
        value = data.get(name)
        if value is None:
            if kind.endswith("!"):
                out.append(f"{table}: required field {name!r} missing")
            continue
        if kind.startswith("str") and not (isinstance(value, str) and value.strip()):
            out.append(f"{table}.{name}: not a non-empty string: {value!r}")
        elif "|" in kind and value not in kind.split("|"):
            out.append(f"{table}.{name}: {value!r} not one of {kind}")
        elif kind == "ms" and (isinstance(value, bool) or not isinstance(value, int)
                               or value < 0):
            out.append(f"{table}.{name}: not a ms timestamp: {value!r}")
        elif kind == "json-list" and not _is_json_list(value):
            out.append(f"{table}.{name}: not a JSON array string: {value!r}")
    return out


def _is_json_list(value: Any) -> bool:
    try:
        parsed = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return False
    return isinstance(parsed, list) and all(isinstance(x, str) for x in parsed)


def injected(pred: Pred, doc: GoldDoc) -> str | None:
    """The injected instruction a record repeats, if any (it must never become a record)."""
    for bad in doc.injected:
        if similarity(pred.texts, (bad,)) or any(normalize(bad) in normalize(t)
                                                 for t in pred.texts if normalize(bad)):
            return bad
    return None
