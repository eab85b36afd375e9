"""Frames for the app's own projects: the sidecar links records to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sidecar.protocol.base import Reply, Request


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectsSync(Request):
    """The app's projects (each send replaces the list; kept across restarts): a record gets
    ``projectId`` when its document clearly names exactly one of them.

    Each project: ``id``, ``name``, optional ``client`` and ``aliases``. The match (name,
    alias or client, whole words, at least 3 characters) is looked for in the record's and
    document's title or subject, then the folder names, then the body; the first place that
    names any project decides, and two projects there mean no link. ``source.project`` in
    the tool_call says why. An agent's own ``project_id`` wins over any match.
    """

    TYPE: ClassVar[str] = "projects_sync"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "projects_sync", "request_id": "r30", "projects": [
            {"id": "p_12", "name": "Harbor Bakery website", "client": "Harbor Bakery",
             "aliases": ["HB site"]},
            {"id": "p_13", "name": "Spring campaign", "client": None, "aliases": []}]}
    projects: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectsSyncResult(Reply):
    TYPE: ClassVar[str] = "projects_sync_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "projects_sync_result", "request_id": "r30",
                                         "count": 2}
    count: int
