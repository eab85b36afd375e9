"""Old home of the agent definitions, now :mod:`sidecar.domain`; kept only for ``runner.py``."""

from __future__ import annotations

from sidecar.domain import Agent, agent_from_json, validate_agent

__all__ = ["Agent", "agent_from_json", "validate_agent"]
