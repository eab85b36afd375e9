"""Frames for connecting accounts and storing secrets: the sidecar holds them, Electron never."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from sidecar.protocol.base import Frame, Reply, Request


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthStart(Request):
    """Connect a Gmail / Microsoft account: the reply carries the URL to open in a browser.

    ``client`` holds the OAuth client settings (Google: an installed-app ``client_config``;
    Microsoft: ``client_id`` and ``authority``). ``flow`` is ``browser`` (loopback redirect)
    or ``device_code`` (Microsoft only: the user types a code on another page).
    """

    TYPE: ClassVar[str] = "oauth_start"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "oauth_start", "request_id": "r20", "provider": "gmail",
        "client": {"client_config": {"installed": {
            "client_id": "123.apps.googleusercontent.com", "client_secret": "…",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.googleapis.com/token"}}},
        "account_hint": "me@example.com"}
    provider: str
    client: dict[str, Any]
    account_hint: str | None = None
    flow: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthStartResult(Reply):
    TYPE: ClassVar[str] = "oauth_start_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "oauth_start_result", "request_id": "r20", "flow_id": "f_1c9a",
        "url": "https://accounts.google.com/o/oauth2/auth?…"}
    flow_id: str
    url: str
    user_code: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthStatus(Frame):
    """Pushed when a connect flow ends: ``connected`` (with the account), ``failed``,
    ``cancelled`` or ``timeout``."""

    TYPE: ClassVar[str] = "oauth_status"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "oauth_status", "flow_id": "f_1c9a", "provider": "gmail",
        "status": "connected", "account": "me@example.com"}
    flow_id: str
    provider: str
    status: str
    account: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthCancel(Request):
    TYPE: ClassVar[str] = "oauth_cancel"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "oauth_cancel", "request_id": "r21",
                                         "flow_id": "f_1c9a"}
    flow_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OAuthCancelResult(Reply):
    TYPE: ClassVar[str] = "oauth_cancel_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "oauth_cancel_result", "request_id": "r21",
                                         "flow_id": "f_1c9a", "cancelled": True}
    flow_id: str
    cancelled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSet(Request):
    """Store a secret in the OS keyring (e.g. a remote engine's API key for a base URL).

    ``value`` null deletes it. The value is never echoed, logged or written to SQLite.
    """

    TYPE: ClassVar[str] = "secret_set"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "secret_set", "request_id": "r22", "kind": "remote_api_key",
        "account": "https://api.openai.com/v1", "value": "sk-…"}
    kind: str
    account: str
    value: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretSetResult(Reply):
    TYPE: ClassVar[str] = "secret_set_result"
    EXAMPLE: ClassVar[dict[str, Any]] = {"type": "secret_set_result", "request_id": "r22",
                                         "kind": "remote_api_key", "stored": True}
    kind: str
    stored: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentNeedsReauth(Frame):
    """Pushed when an account's grant was revoked or expired: ask the user to reconnect."""

    TYPE: ClassVar[str] = "agent_needs_reauth"
    DIRECTION: ClassVar[str] = "sidecar"
    EXAMPLE: ClassVar[dict[str, Any]] = {
        "type": "agent_needs_reauth", "agent_id": "a_9d1e", "provider": "gmail",
        "account": "me@example.com", "message": "Google refused the saved sign-in "
        "(invalid_grant); reconnect the account"}
    agent_id: str
    provider: str | None = None
    account: str | None = None
    message: str = ""
