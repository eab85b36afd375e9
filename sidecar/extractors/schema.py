"""The seed's table schemas as data: one source for the prompt, the JSON Schema and validation.

Electron's tables are the contract (``_TABLE_SCHEMAS`` in the old server). Whatever an engine
produces passes :func:`normalize_item` before it can reach the outbox: unknown and forbidden
fields are stripped, enums defaulted and canonicalised, dates turned into ms timestamps,
required fields enforced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sidecar.extractors.base import ALLOWED_TABLES

#: Server-generated or review fields a model must never set (the seed strips these).
FORBIDDEN_FIELDS: tuple[str, ...] = ("id", "createdAt", "updatedAt", "isAiSuggested",
                                     "isApproved")


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    kind: str  # str | text | enum | date | people
    required: bool = False
    choices: tuple[str, ...] = ()
    default: str | None = None
    max_len: int = 500


#: Field order follows the seed's ``_TABLE_SCHEMAS``.
TABLES: dict[str, tuple[Field, ...]] = {
    "tasks": (
        Field("title", "str", required=True),
        Field("description", "text", max_len=4000),
        Field("status", "enum", choices=("todo", "in_progress", "done"), default="todo"),
        Field("priority", "enum", choices=("high", "medium", "low"), default="medium"),
        Field("assignee", "people"),
        Field("dueDate", "date"),
        Field("projectId", "str"),
    ),
    "notes": (
        Field("title", "str", required=True),
        Field("content", "text", max_len=20000),
        Field("projectId", "str"),
    ),
    "timelines": (
        Field("title", "str", required=True),
        Field("projectId", "str", required=True),
        Field("date", "date"),
    ),
    "projects": (
        Field("name", "str", required=True),
        Field("clientId", "str"),
    ),
    "taskComments": (
        Field("taskId", "str", required=True),
        Field("author", "str"),
        Field("content", "text", required=True, max_len=4000),
    ),
}

_SYNONYMS: dict[str, str] = {
    "to do": "todo", "to-do": "todo", "open": "todo", "new": "todo", "pending": "todo",
    "in progress": "in_progress", "in-progress": "in_progress", "inprogress": "in_progress",
    "doing": "in_progress", "started": "in_progress", "wip": "in_progress",
    "completed": "done", "complete": "done", "finished": "done", "closed": "done",
    "urgent": "high", "critical": "high", "asap": "high", "important": "high",
    "normal": "medium", "med": "medium", "minor": "low",
}


class InvalidItem(ValueError):
    """An item that cannot be inserted; the message says which field is wrong."""


def allowed_tables(data_types: Sequence[str]) -> list[str]:
    """The agent's data types that are real tables, in the seed's order."""
    return [t for t in TABLES if t in data_types and t in ALLOWED_TABLES]


def schema_text(data_types: Sequence[str], *, require_project: bool = False) -> str:
    """The prompt's description of the tables, rendered from :func:`json_schema_for`."""
    return describe_schema(json_schema_for(data_types, require_project=require_project))


def schema_tables(schema: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Each table of a records schema (:func:`json_schema_for`) and its ``data`` object schema,
    in the schema's order."""
    item = schema["properties"]["items"]["items"]
    return {v["properties"]["table"]["enum"][0]: v["properties"]["data"]
            for v in item.get("anyOf", [item])}


def describe_schema(schema: Mapping[str, Any]) -> str:
    """The tables of a records schema in words, one line per table.

    The grammar and the prompt come from one schema, so they cannot disagree (the seed's text
    said ``dueDate`` was an "ms timestamp int" while the grammar wanted a date string)."""
    lines = []
    for table, data in schema_tables(schema).items():
        fields = [describe_field(name, prop, name in data.get("required", ()))
                  for name, prop in data["properties"].items()]
        lines.append(f"  {table}: {', '.join(fields)}")
    return "\n".join(lines)


def describe_field(name: str, prop: Mapping[str, Any], required: bool) -> str:
    """One property of the JSON Schema in words: ``status (todo|in_progress|done, default
    todo)``, ``dueDate (date YYYY-MM-DD)``, ``assignee (array of names)``."""
    if "enum" in prop:
        values = [str(v) for v in prop["enum"]]
        kind = "|".join(values) if len(values) <= 6 else "one of the document's own lines"
    elif prop.get("type") == "array":
        kind = "array of names"
    elif "pattern" in prop:
        kind = "date YYYY-MM-DD"
    else:
        kind = "str"
    extra = [", required" if required else "",
             f", default {prop['default']}" if "default" in prop else ""]
    return f"{name} ({kind}{''.join(extra)})"


def _people(value: Any) -> str | None:
    """The seed stores assignees as a JSON array string."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = [p.strip() for p in text.replace(" and ", ",").split(",")]
        value = parsed
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    names = [str(v).strip() for v in value if isinstance(v, str | int) and str(v).strip()]
    return json.dumps(names, ensure_ascii=False) if names else None


def _coerce(f: Field, value: Any, reference: datetime) -> Any:
    if value is None:
        return None
    if f.kind in ("str", "text"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return None
        text = str(value).strip()
        return text[: f.max_len] if text else None
    if f.kind == "enum":
        text = str(value).strip().lower().replace("_", " ")
        text = _SYNONYMS.get(text, text).replace(" ", "_")
        return text if text in f.choices else None
    if f.kind == "people":
        return _people(value)
    if f.kind == "date":
        from sidecar.extractors.date_values import to_epoch_ms

        return to_epoch_ms(value, reference)
    raise AssertionError(f.kind)


def normalize_item(table: str, data: Mapping[str, Any], *, reference: datetime,
                   project_id: str | None = None) -> dict[str, Any]:
    """``data`` made insertable into ``table``, or :class:`InvalidItem` saying why not."""
    fields = TABLES.get(table)
    if fields is None or table not in ALLOWED_TABLES:
        raise InvalidItem(f"table {table!r} is not allowed")
    if not isinstance(data, Mapping):
        raise InvalidItem(f"{table}: data is not an object")
    out: dict[str, Any] = {}
    for f in fields:
        value = _coerce(f, data.get(f.name), reference)
        if value is None and f.name == "projectId" and project_id:
            value = project_id
        if value is None and f.default is not None:
            value = f.default
        if value is None:
            if f.required:
                raise InvalidItem(f"{table}: required field {f.name!r} is missing or invalid")
            continue
        out[f.name] = value
    return out


def json_schema_for(data_types: Sequence[str], *, require_project: bool = False
                    ) -> dict[str, Any]:
    """JSON Schema for ``{"items": [{"table": …, "data": {…}}]}`` limited to ``data_types``.

    Dates are asked for as ``YYYY-MM-DD`` strings (models write those reliably; ms timestamps
    they invent) and converted by :func:`normalize_item`. Used as the llama.cpp grammar and
    as a remote ``response_format``.
    """
    variants = []
    for table in allowed_tables(data_types):
        props: dict[str, Any] = {}
        required = []
        for f in TABLES[table]:
            if f.name == "projectId" and not require_project:
                continue
            if f.kind == "enum":
                props[f.name] = {"type": "string", "enum": list(f.choices)}
                if f.default is not None:
                    props[f.name]["default"] = f.default
            elif f.kind == "date":
                props[f.name] = {"type": "string",
                                 "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
            elif f.kind == "people":
                props[f.name] = {"type": "array", "items": {"type": "string"}, "maxItems": 5}
            else:
                props[f.name] = {"type": "string", "maxLength": min(f.max_len, 400)}
            if f.required:
                required.append(f.name)
        variants.append({
            "type": "object",
            "properties": {"table": {"type": "string", "enum": [table]},
                           "data": {"type": "object", "properties": props,
                                    "required": required, "additionalProperties": False}},
            "required": ["table", "data"], "additionalProperties": False})
    item: dict[str, Any] = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"type": "object",
            "properties": {"items": {"type": "array", "items": item, "maxItems": 40}},
            "required": ["items"], "additionalProperties": False}
