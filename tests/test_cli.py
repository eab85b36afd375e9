"""The command line as a user types it (a real subprocess, real store)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from sidecar import __version__
from sidecar.settings import SETTINGS


def sidecar(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "sidecar", *args]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_version_and_help() -> None:
    r = sidecar("--version")
    assert r.returncode == 0 and __version__ in r.stdout
    for sub in (["serve"], ["agents"], ["agents", "add"], ["runs"], ["settings"]):
        h = sidecar(*sub, "--help")
        assert h.returncode == 0 and "usage: sidecar" in h.stdout, sub
    assert sidecar().returncode == 2
    assert sidecar("frobnicate").returncode == 2


def test_agents_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = tmp_path / "notes"
    folder.mkdir()
    add = sidecar("agents", "add", "--name", "Notes", "--dir", str(folder), "--ext", "md",
                  "--types", "tasks,notes", "--cron", "0 9 * * 1-5", data_dir=data)
    assert add.returncode == 0, add.stderr
    agent = json.loads(add.stdout)
    assert agent["extensions"] == [".md"] and agent["schedule_cron"] == "0 9 * * 1-5"
    listed = sidecar("agents", "list", "--json", data_dir=data)
    assert [a["id"] for a in json.loads(listed.stdout)] == [agent["id"]]
    text = sidecar("agents", "list", data_dir=data)
    assert agent["id"] in text.stdout and "Notes" in text.stdout
    assert sidecar("agents", "remove", agent["id"], data_dir=data).returncode == 0
    assert sidecar("agents", "remove", agent["id"], data_dir=data).returncode == 1
    assert json.loads(sidecar("agents", "list", "--json", data_dir=data).stdout) == []


def test_invalid_agent_exits_5_with_the_field_named(tmp_path: Path) -> None:
    r = sidecar("agents", "add", "--name", "x", "--dir", str(tmp_path), "--cron", "every day",
                data_dir=tmp_path / "d")
    assert r.returncode == 5
    assert "agent.schedule_cron" in r.stderr and "Traceback" not in r.stderr


def test_runs_on_empty_store(tmp_path: Path) -> None:
    r = sidecar("runs", "--json", data_dir=tmp_path / "d")
    assert r.returncode == 0 and json.loads(r.stdout) == []


def test_corrupt_store_exits_4(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "sidecar.sqlite3").write_bytes(b"nope" * 500)
    r = sidecar("agents", "list", data_dir=d)
    assert r.returncode == 4 and "not a valid SQLite" in r.stderr


def test_settings_table_drives_flags_and_docs() -> None:
    help_text = sidecar("serve", "--help").stdout
    md = sidecar("settings", "--markdown").stdout
    for s in SETTINGS:
        assert s.flag in help_text and s.env in help_text, s.name
        assert f"`{s.name}`" in md
    docs = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
    assert md in docs.read_text(), "docs/settings.md is stale: run python scripts/gen_docs.py"


def test_config_has_one_typed_field_per_setting() -> None:
    """The typed Config and the settings table agree: every setting is a declared field (no
    ``__getattr__`` lookup) holding the parsed type; an unknown name is refused."""
    import dataclasses
    import typing

    import pytest

    from sidecar.settings import Config

    assert [f.name for f in dataclasses.fields(Config)] == [s.name for s in SETTINGS]
    config = Config.load({"port": "8123", "allowed_roots": ["/srv/a", "/srv/b"]},
                         env={"SIDECAR_DEFER_ON_BATTERY": "off"})
    assert config.port == 8123 and config.defer_on_battery is False
    assert config.allowed_roots == (Path("/srv/a"), Path("/srv/b"))
    hints = typing.get_type_hints(Config)
    for s in SETTINGS:
        value = getattr(config, s.name)
        if value is not None and s.type is not list:
            assert isinstance(value, s.type), (s.name, value)
            assert s.type in typing.get_args(hints[s.name]) or hints[s.name] is s.type, s.name
    with pytest.raises(AttributeError):
        config.no_such_setting  # noqa: B018
    with pytest.raises(TypeError):
        config.replace(no_such_setting=1)
