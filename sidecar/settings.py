"""The one table of settings: defaults and help here drive the CLI flags, env vars and docs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError


def _physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:  # pragma: no cover - psutil missing or restricted
        return os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class Setting:
    """One tunable: its type, default, help and the environment variable that overrides it."""

    name: str
    type: type
    default: Any
    help: str
    #: Computed default (e.g. core count) shown in docs as ``default_text``.
    default_factory: Callable[[], Any] | None = None
    default_text: str | None = None
    #: Allowed values for a string setting (empty: any).
    choices: tuple[str, ...] = ()
    #: The flag's name when it differs from the setting's (a repeatable ``--allowed-root``).
    flag_name: str | None = None

    @property
    def env(self) -> str:
        return "SIDECAR_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.name.replace("_", "-"))

    def resolve_default(self) -> Any:
        return self.default_factory() if self.default_factory else self.default


SETTINGS: tuple[Setting, ...] = (
    Setting("port", int, 0, "TCP port on 127.0.0.1; 0 picks a free port."),
    Setting("data_dir", Path, None, "Directory for the SQLite store, lock and token file.",
            default_text="platform user data dir"),
    Setting("log_dir", Path, None, "Directory for the rotating log file.",
            default_text="platform user log dir"),
    Setting("model_dir", Path, None, "Directory that holds downloaded GGUF models.",
            default_text="<platform user data dir>/models"),
    Setting("log_level", str, "info", "Log level for stderr and the log file."),
    Setting("max_frame_bytes", int, 1024 * 1024,
            "Largest WebSocket text frame accepted; larger ones get an error frame."),
    Setting("heartbeat_seconds", float, 20.0,
            "WebSocket ping interval; a peer silent for 2 intervals is dropped."),
    Setting("insert_timeout_seconds", float, 30.0,
            "Seconds to wait for a tool_result before the same tool_call goes to another "
            "writer (or again to the same one, if it is the only writer)."),
    Setting("delivery_window", int, 64, "tool_call frames in flight per client before waiting."),
    Setting("handshake_timeout_seconds", float, 5.0,
            "A connection that has not shown the token within this many seconds (sent "
            "nothing, half a request, an idle /health keep-alive) is closed (at least 1)."),
    Setting("max_unauthenticated_connections", int, 64,
            "Connections without the token held at once; beyond this the oldest are closed."),
    Setting("reserved_descriptors", int, 512,
            "File descriptors kept free for the real client and the store (at most half the "
            "open-files limit): when fewer are left, connections without the token are "
            "closed, oldest first. Covers the accept bursts (128 at a time) that land before "
            "they can be counted."),
    Setting("model", str, "smollm2-135m-instruct-q4_1",
            "Local model: a manifest name or a path to any GGUF file."),
    Setting("model_threads", int, None, "Threads for llama.cpp inference.",
            default_factory=_physical_cores, default_text="physical cores"),
    Setting("model_context", int, 2048, "llama.cpp context size in tokens."),
    Setting("model_idle_unload_seconds", float, 300.0,
            "Unload the local model after this many idle seconds to free memory."),
    Setting("extraction_strategy", str, "auto",
            "Local engine strategy: extractive (the model judges document spans), generative "
            "(grammar-constrained JSON), hybrid (the rules plus one reading of each document "
            "by the model) or auto (what the model catalogue measured for this "
            "model, if this machine has its RAM and cores; the rules alone for any other "
            "GGUF).",
            choices=("auto", "extractive", "generative", "hybrid")),
    Setting("judge_weight", float, None,
            "Extractive strategy: weight of the model's yes/no against the evidence prior; 0 "
            "never asks the model.", default_text="the model manifest's measured value; for "
            "other GGUFs 0 under auto, 0.6 when extraction_strategy=extractive"),
    Setting("remote_base_url", str, "", "Default OpenAI-compatible base URL for remote agents."),
    Setting("remote_model", str, "", "Default model name for the remote engine."),
    Setting("remote_concurrency", int, 4, "Concurrent requests to the remote engine."),
    Setting("remote_timeout_seconds", float, 120.0, "Timeout for one remote completion."),
    Setting("initial_lookback_days", int, 30,
            "An agent's first run: documents whose reference date (the date they state, an "
            "email's Date, else the file's mtime) is older than this many days are indexed "
            "but give no tasks or timelines (their summary notes still come), and tasks due "
            "before then are dropped; a later edit of such a file is extracted as usual. 0 "
            "turns it off."),
    Setting("watch_quiet_seconds", float, 2.0,
            "Folder watching: wait this long after the last change before a run."),
    Setting("watch_poll_seconds", float, 5.0,
            "Folder watching: polling interval for agents with poll on (network folders)."),
    Setting("gmail_api_base", str, "https://gmail.googleapis.com",
            "Gmail API root (change only for a proxy or a test server)."),
    Setting("graph_api_base", str, "https://graph.microsoft.com/v1.0",
            "Microsoft Graph API root (change only for a proxy, sovereign cloud or test)."),
    Setting("defer_on_battery", bool, True,
            "Hold scheduled (not manual) runs while on battery below the threshold."),
    Setting("battery_threshold_percent", int, 30, "Battery level under which runs are deferred."),
    Setting("allowed_roots", list, None,
            "Folders local agents may read: an agent's directory must be one of them or below "
            "one (symlinks resolved first), when it is saved and again at every scan. Electron "
            "should pass the roots the user allowed (repeat the flag; in the environment "
            "variable separate them with os.pathsep, ':' or ';' on Windows).",
            default_factory=lambda: (Path.home(),), default_text="the user's home directory",
            flag_name="allowed-root"),
)

_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def parse_value(setting: Setting, raw: Any) -> Any:
    """Turn a CLI/env string (or an already-typed value) into the setting's type."""
    value = _parse(setting, raw)
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"setting {setting.name} ({setting.env}) must be one of "
                          f"{', '.join(setting.choices)}, got {value!r}", field=setting.name)
    return value


def _parse(setting: Setting, raw: Any) -> Any:
    if setting.type is list and raw is not None:
        return _path_list(setting, raw)
    if raw is None or isinstance(raw, setting.type):
        return raw
    text = str(raw).strip()
    try:
        if setting.type is bool:
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if setting.type is Path:
            return Path(text).expanduser()
        return setting.type(text)
    except ValueError:
        raise ConfigError(
            f"setting {setting.name} ({setting.env}) expects {setting.type.__name__}, got {text!r}",
            field=setting.name,
        ) from None


def _path_list(setting: Setting, raw: Any) -> tuple[Path, ...]:
    """Absolute paths from repeated flags, a list, or one ``os.pathsep``-separated string."""
    items = raw if isinstance(raw, list | tuple) else [raw]
    out: list[Path] = []
    for item in items:
        parts = [item] if isinstance(item, Path) else str(item).split(os.pathsep)
        for part in parts:
            text = str(part).strip()
            if not text:
                continue
            path = Path(text).expanduser()
            if not path.is_absolute():
                raise ConfigError(f"setting {setting.name} ({setting.env}) needs absolute "
                                  f"paths, got {text!r}", field=setting.name)
            if path not in out:
                out.append(path)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Config:
    """Resolved settings for one process: explicit values > environment > defaults.

    One typed field per entry of :data:`SETTINGS` (the table holds defaults, help, flags and
    environment names; ``tests/test_cli.py`` checks the two agree). Build it with
    :meth:`load`.
    """

    port: int
    data_dir: Path | None
    log_dir: Path | None
    model_dir: Path | None
    log_level: str
    max_frame_bytes: int
    heartbeat_seconds: float
    insert_timeout_seconds: float
    delivery_window: int
    handshake_timeout_seconds: float
    max_unauthenticated_connections: int
    reserved_descriptors: int
    model: str
    model_threads: int | None
    model_context: int
    model_idle_unload_seconds: float
    extraction_strategy: str
    judge_weight: float | None
    remote_base_url: str
    remote_model: str
    remote_concurrency: int
    remote_timeout_seconds: float
    initial_lookback_days: int
    watch_quiet_seconds: float
    watch_poll_seconds: float
    gmail_api_base: str
    graph_api_base: str
    defer_on_battery: bool
    battery_threshold_percent: int
    allowed_roots: tuple[Path, ...]

    @classmethod
    def load(
        cls, explicit: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
    ) -> Config:
        env = os.environ if env is None else env
        explicit = explicit or {}
        out: dict[str, Any] = {}
        for s in SETTINGS:
            if explicit.get(s.name) is not None:
                out[s.name] = parse_value(s, explicit[s.name])
            elif env.get(s.env, "") != "":
                out[s.name] = parse_value(s, env[s.env])
            else:
                out[s.name] = s.resolve_default()
        missing = set(out) - set(cls.__dataclass_fields__)
        if missing:  # a setting added to the table needs its typed field here too
            raise TypeError(f"Config has no field for setting(s) {sorted(missing)}")
        return cls(**out)

    @property
    def values(self) -> dict[str, Any]:
        """Every setting by name, in the table's order (``sidecar settings``)."""
        return {s.name: getattr(self, s.name) for s in SETTINGS}

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def markdown_table() -> str:
    """Render the settings table for docs/settings.md."""
    rows = ["| setting | flag | env | default | help |", "|---|---|---|---|---|"]
    for s in SETTINGS:
        default = s.default_text or ("" if s.default is None else repr(s.default))
        rows.append(f"| `{s.name}` | `{s.flag}` | `{s.env}` | {default} | {s.help} |")
    return "\n".join(rows) + "\n"


__all__ = ["SETTINGS", "Config", "Setting", "markdown_table", "parse_value", "setting"]
