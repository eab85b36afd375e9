"""Who may open the WebSocket: the holder of the launch token, from Electron or loopback only.

(Connection access, not account sign-in: that lives with each source, ``sources/*/signin.py``.)
"""

from __future__ import annotations

import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

ALLOWED_SCHEMES_ANY_HOST = ("file", "app")


def presented_token(request: web.Request) -> str | None:
    """Bearer header first; the ``token`` query parameter for browsers' WebSocket API."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token") or None


def token_ok(request: web.Request, expected: str) -> bool:
    given = presented_token(request)
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _is_loopback_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def origin_allowed(origin: str | None) -> bool:
    """Absent (native clients), ``file://``, ``app://`` or a loopback http(s) origin."""
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip())
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme in ALLOWED_SCHEMES_ANY_HOST:
        return True
    if scheme in ("http", "https"):
        try:
            host = parts.hostname
        except ValueError:
            return False
        return bool(host) and _is_loopback_host(host.lower())
    return False
