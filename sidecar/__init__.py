"""Local extraction sidecar: turns a user's files and mail into suggested records."""

from __future__ import annotations

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
