"""The domain, below the store and the extractors: the record tables, agent definitions and their
validation (every refusal names the field and what to fix).

Imports nothing from the rest of the package but errors and (lazily) the cron parser, so the
store can keep agents and the extractors can name tables without either importing the other.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError

#: Tables an extraction may write; anything else is dropped by validation.
ALLOWED_TABLES: frozenset[str] = frozenset(
    {"tasks", "notes", "timelines", "projects", "taskComments"}
)

KINDS = ("local", "cloud")
PROVIDERS = ("gmail", "outlook", "teams")
ENGINES = ("local", "remote")
DEFAULT_EXTENSIONS = (".txt", ".md", ".csv", ".json", ".html", ".pdf", ".docx", ".eml")
DEFAULT_EXCLUDES = (
    ".git/", "node_modules/", ".*", "~$*", "*.swp", "*.tmp", "*.part", "*.crdownload",
    ".DS_Store", "desktop.ini", "Thumbs.db",
)
DEFAULT_MAX_FILE_BYTES = 25 * 1024 * 1024
DEFAULT_CRON = "0 * * * *"
_EXT_RE = re.compile(r"^\.[a-z0-9][a-z0-9_+-]{0,15}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

_COMMON = {"id", "kind", "name", "enabled", "schedule_cron", "prompt_template", "data_types",
           "engine", "min_confidence", "remote", "project_id"}
_LOCAL = {"directories", "extensions", "include_globs", "exclude", "max_file_bytes", "watch",
          "poll"}
_CLOUD = {"provider", "account", "filter_config"}
_REMOTE = {"base_url", "model"}


@dataclass(frozen=True, slots=True)
class Agent:
    """A validated agent; ``to_json`` is what the store keeps and the wire shows (no secrets)."""

    id: str
    kind: str
    name: str
    enabled: bool = True
    schedule_cron: str = DEFAULT_CRON
    prompt_template: str = ""
    data_types: tuple[str, ...] = ("tasks",)
    engine: str = "local"
    min_confidence: float = 0.0
    remote: Mapping[str, str] = field(default_factory=dict)
    #: The app's project these records belong to (required for timelines by the schema).
    project_id: str | None = None
    # local
    directories: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    include_globs: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    watch: bool = True
    poll: bool = False
    # cloud
    provider: str | None = None
    account: str | None = None
    filter_config: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        keep = _COMMON | (_LOCAL if self.kind == "local" else _CLOUD)
        out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in keep}
        out["remote"] = dict(self.remote)
        if self.kind == "cloud":
            out["filter_config"] = dict(self.filter_config)
        return out


def record_title(data: Mapping[str, Any]) -> str:
    """What a record is called: its title, a project's name, else a comment's content."""
    return str(data.get("title") or data.get("name") or data.get("content") or "")


def resolve_roots(roots: Iterable[str | Path]) -> list[Path]:
    """Each root with symlinks resolved; roots that do not exist (or loop) are left out."""
    out: list[Path] = []
    for r in roots:
        try:
            out.append(Path(r).resolve(strict=True))
        except (OSError, RuntimeError):
            continue
    return out


def inside(path: Path, roots: Iterable[Path]) -> bool:
    """Is the resolved ``path`` one of the roots or below one?"""
    return any(path == r or path.is_relative_to(r) for r in roots)


def new_agent_id() -> str:
    return "a_" + secrets.token_hex(6)


def _fail(name: str, message: str) -> ConfigError:
    return ConfigError(f"agent.{name}: {message}", field=f"agent.{name}")


def _str(raw: Mapping[str, Any], name: str, default: str | None, *, max_len: int = 10_000,
         required: bool = False) -> str | None:
    if name not in raw or raw[name] is None:
        if required:
            raise _fail(name, "is required")
        return default
    value = raw[name]
    if not isinstance(value, str):
        raise _fail(name, f"must be a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise _fail(name, "must not be empty")
    if len(value) > max_len:
        raise _fail(name, f"is {len(value)} characters; the limit is {max_len}")
    return value


def _bool(raw: Mapping[str, Any], name: str, default: bool) -> bool:
    value = raw.get(name, default)
    if not isinstance(value, bool):
        raise _fail(name, f"must be true or false, got {value!r}")
    return value


def _str_list(raw: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if name not in raw or raw[name] is None:
        return default
    value = raw[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(name, "must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def validate_cron(expr: str) -> str:
    """Refuse what the scheduler could not fire (the seed's fail-safe starts at the door)."""
    from sidecar.schedule import cron_error

    expr = " ".join(expr.split())
    why = cron_error(expr)
    if why is not None:
        raise _fail("schedule_cron", f"invalid cron expression {expr!r}: {why} "
                    "(five fields: minute hour day-of-month month day-of-week)")
    return expr


def roots_text(roots: Iterable[str | Path]) -> str:
    return ", ".join(str(r) for r in roots) or "none"


def _directories(raw: Mapping[str, Any],
                 allowed_roots: Sequence[str | Path] | None = None) -> tuple[str, ...]:
    dirs = _str_list(raw, "directories", ())
    if not dirs:
        raise _fail("directories", "a local agent needs at least one directory")
    # symlinks resolved on both sides, so a link cannot stand in for its target
    allowed = None if allowed_roots is None else resolve_roots(allowed_roots)
    out: list[str] = []
    for d in dirs:
        p = Path(d).expanduser()
        if not p.is_absolute():
            raise _fail("directories", f"{d!r} is not an absolute path")
        if not p.exists():
            raise _fail("directories", f"{d!r} does not exist")
        if not p.is_dir():
            raise _fail("directories", f"{d!r} is not a directory")
        if not os.access(p, os.R_OK | os.X_OK):
            raise _fail("directories", f"{d!r} is not readable")
        resolved = str(p.resolve())
        if allowed is not None and not inside(Path(resolved), allowed):
            really = f" (really {resolved})" if resolved != str(p) else ""
            raise _fail("directories", f"{d!r}{really} is outside the folders the user allowed "
                        f"({roots_text(allowed_roots)}); allow it in the app first "
                        "(setting allowed_roots)")
        if resolved not in out:
            out.append(resolved)
    return tuple(out)


def _extensions(raw: Mapping[str, Any]) -> tuple[str, ...]:
    out: list[str] = []
    for e in _str_list(raw, "extensions", DEFAULT_EXTENSIONS):
        ext = e.lower() if e.startswith(".") else "." + e.lower()
        if not _EXT_RE.match(ext):
            raise _fail("extensions", f"{e!r} is not a file extension like '.md'")
        if ext not in out:
            out.append(ext)
    return tuple(out)


def _data_types(raw: Mapping[str, Any]) -> tuple[str, ...]:
    types_ = _str_list(raw, "data_types", ("tasks",))
    bad = [t for t in types_ if t not in ALLOWED_TABLES]
    if bad:
        raise _fail("data_types", f"unknown type(s) {', '.join(map(repr, bad))}; "
                    f"allowed: {', '.join(sorted(ALLOWED_TABLES))}")
    if not types_:
        raise _fail("data_types", "must list at least one type")
    return tuple(dict.fromkeys(types_))


def _remote(raw: Mapping[str, Any]) -> dict[str, str]:
    value = raw.get("remote") or {}
    if not isinstance(value, dict):
        raise _fail("remote", "must be an object with base_url and model")
    unknown = set(value) - _REMOTE
    if unknown:
        raise _fail("remote", f"unknown field(s) {sorted(unknown)}; API keys go to the OS "
                    "keyring (`sidecar secrets set`), never into an agent")
    out: dict[str, str] = {}
    for k in sorted(_REMOTE & set(value)):
        if not isinstance(value[k], str):
            raise _fail(f"remote.{k}", "must be a string")
        out[k] = value[k].strip()
    if out.get("base_url") and not re.match(r"^https?://", out["base_url"]):
        raise _fail("remote.base_url", "must start with http:// or https://")
    return out


def validate_agent(raw: Mapping[str, Any], *, existing: Agent | None = None,
                   allowed_roots: Sequence[str | Path] | None = None) -> Agent:
    """Turn a client's agent object into an :class:`Agent` or raise ConfigError naming the field.

    ``allowed_roots`` (the setting): a local agent's directories must be inside one of them.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("agent must be an object", field="agent")
    if existing is not None:
        merged = {**existing.to_json(), **raw}
        raw = merged
    kind = raw.get("kind")
    if kind not in KINDS:
        raise _fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    allowed = _COMMON | (_LOCAL if kind == "local" else _CLOUD)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise _fail(unknown[0], f"unknown field for a {kind} agent (allowed: "
                    f"{', '.join(sorted(allowed))})")
    agent_id = _str(raw, "id", None, max_len=64) or new_agent_id()
    if not _ID_RE.match(agent_id):
        raise _fail("id", "may contain only letters, digits and _ . : - (at most 64)")
    engine = _str(raw, "engine", "local")
    if engine not in ENGINES:
        raise _fail("engine", f"must be one of {', '.join(ENGINES)}, got {engine!r}")
    min_conf = raw.get("min_confidence", 0.0)
    if isinstance(min_conf, bool) or not isinstance(min_conf, int | float) or not (
        0.0 <= float(min_conf) <= 1.0
    ):
        raise _fail("min_confidence", f"must be a number between 0 and 1, got {min_conf!r}")
    common: dict[str, Any] = dict(
        id=agent_id,
        kind=kind,
        name=_str(raw, "name", None, max_len=200, required=True),
        enabled=_bool(raw, "enabled", True),
        schedule_cron=validate_cron(_str(raw, "schedule_cron", DEFAULT_CRON) or DEFAULT_CRON),
        prompt_template=_str(raw, "prompt_template", "", max_len=20_000) or "",
        data_types=_data_types(raw),
        engine=engine,
        min_confidence=float(min_conf),
        remote=_remote(raw),
        project_id=_str(raw, "project_id", None, max_len=200) or None,
    )
    if kind == "local":
        max_bytes = raw.get("max_file_bytes", DEFAULT_MAX_FILE_BYTES)
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise _fail("max_file_bytes", f"must be a positive integer, got {max_bytes!r}")
        return Agent(
            **common,
            directories=_directories(raw, allowed_roots),
            extensions=_extensions(raw),
            include_globs=_str_list(raw, "include_globs", ()),
            exclude=_str_list(raw, "exclude", DEFAULT_EXCLUDES),
            max_file_bytes=max_bytes,
            watch=_bool(raw, "watch", True),
            poll=_bool(raw, "poll", False),
        )
    provider = raw.get("provider")
    if provider not in PROVIDERS:
        raise _fail("provider", f"must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    filter_config = raw.get("filter_config") or {}
    if not isinstance(filter_config, dict):
        raise _fail("filter_config", "must be an object")
    return Agent(
        **common,
        provider=provider,
        account=_str(raw, "account", None, max_len=320),
        filter_config=filter_config,
    )


def agent_from_json(obj: Mapping[str, Any]) -> Agent:
    """Rebuild a stored agent without re-checking the filesystem (folders may be offline)."""
    tuples = {"data_types", "directories", "extensions", "include_globs", "exclude"}
    kwargs = {k: (tuple(v) if k in tuples else v) for k, v in obj.items()
              if k in Agent.__dataclass_fields__}
    return Agent(**kwargs)
