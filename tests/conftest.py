"""Shared fixtures: a real daemon process in tmp_path and a real WebSocket client."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar.client import DaemonProcess, SidecarClient


@pytest.fixture
def token() -> str:
    return "tok-" + secrets.token_urlsafe(24)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
async def daemon(data_dir: Path, token: str) -> AsyncIterator[DaemonProcess]:
    proc = await DaemonProcess.start(data_dir, token=token)
    try:
        yield proc
    finally:
        await proc.stop()


@pytest.fixture
async def client(daemon: DaemonProcess) -> AsyncIterator[SidecarClient]:
    c = await daemon.connect()
    try:
        yield c
    finally:
        await c.close()
