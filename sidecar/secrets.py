"""Secrets live in the OS keyring only: never SQLite, never logs, never frames.

Every secret read or written is registered with the log redactor. A machine without a usable
keyring backend (a headless Linux box) gets a clear error instead of a silent plaintext file.
"""

from __future__ import annotations

import logging

from sidecar.errors import PermanentError
from sidecar.redaction import register_secret

log = logging.getLogger(__name__)

SERVICE = "sidecar"


class NoKeyring(PermanentError):
    """No OS keyring backend is available to hold tokens."""

    code = "no_keyring"


def _keyring():  # type: ignore[no-untyped-def]
    import keyring
    from keyring.backends import fail

    backend = keyring.get_keyring()
    chain = getattr(backend, "backends", None)
    usable = [b for b in chain] if chain is not None else [backend]
    if not usable or all(isinstance(b, fail.Keyring) for b in usable):
        raise NoKeyring(
            "no OS keyring is available to store secrets: on Linux install and unlock a Secret "
            "Service (GNOME Keyring or KWallet), or configure a keyring backend "
            "(PYTHON_KEYRING_BACKEND); macOS Keychain and Windows Credential Locker work as is")
    return keyring


def require_keyring() -> None:
    """Fail now, with the reason, rather than after the user has signed in."""
    _keyring()


def _name(kind: str, account: str) -> str:
    return f"{kind}:{account}"


def get_secret(kind: str, account: str) -> str | None:
    """The stored secret or ``None``; raises :class:`NoKeyring` when there is no keyring."""
    keyring = _keyring()
    try:
        value = keyring.get_password(SERVICE, _name(kind, account))
    except Exception as exc:  # keyring.errors.KeyringError and backend-specific errors
        raise NoKeyring(f"the OS keyring refused to read {kind} for {account}: {exc}") from None
    if value:
        register_secret(value)
    return value


def set_secret(kind: str, account: str, value: str) -> None:
    keyring = _keyring()
    register_secret(value)
    try:
        keyring.set_password(SERVICE, _name(kind, account), value)
    except Exception as exc:
        raise NoKeyring(f"the OS keyring refused to store {kind} for {account}: {exc}") from None


def delete_secret(kind: str, account: str) -> None:
    keyring = _keyring()
    try:
        keyring.delete_password(SERVICE, _name(kind, account))
    except Exception:  # already absent is fine
        log.debug("no %s secret to delete for %s", kind, account)
