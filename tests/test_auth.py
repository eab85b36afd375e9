"""Origin rules: Electron's own origins and loopback pages only."""

from __future__ import annotations

import pytest

from sidecar.access import origin_allowed


@pytest.mark.parametrize("origin", [
    None, "file://", "app://.", "app://sidecar", "http://localhost", "http://localhost:5173",
    "https://127.0.0.1:8443", "http://127.9.9.9", "http://[::1]:3000", "http://app.localhost",
])
def test_allowed(origin: str | None) -> None:
    assert origin_allowed(origin)


@pytest.mark.parametrize("origin", [
    "https://evil.example", "http://localhost.evil.example", "http://10.0.0.2", "null", "",
    "chrome-extension://abc", "http://[::ffff:8.8.8.8]", "ws://localhost", "http://",
    "http://127.0.0.1.nip.io",
])
def test_refused(origin: str) -> None:
    assert not origin_allowed(origin)
