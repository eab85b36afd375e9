"""Connected accounts: the sign-in flows Electron starts, whatever the provider.

Each provider's sign-in lives in its plug-in (``sidecar/sources/<provider>/``, found through
:mod:`sidecar.sources.registry`); this module keeps the flows under way, reports each end
with a pushed ``oauth_status`` frame, and makes agents of that account that were waiting
for a reconnect usable again. Tokens only ever live in the OS keyring.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from sidecar import protocol as p
from sidecar.errors import SidecarError
from sidecar.hub import Hub
from sidecar.settings import Config
from sidecar.sources.provider import Wiring
from sidecar.store import Store

log = logging.getLogger(__name__)

FLOW_TIMEOUT = 600.0


@dataclass
class _Pending:
    flow_id: str
    provider: str
    flow: Any
    task: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Accounts:
    """Runs connect flows: started by a provider's plug-in, awaited and reported here."""

    def __init__(self, store: Store, hub: Hub, config: Config) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        self.pending: dict[str, _Pending] = {}

    # -- connecting --------------------------------------------------------------------------

    async def start(self, provider: str, client: dict[str, Any], account_hint: str | None,
                    flow_kind: str | None) -> tuple[str, str, str | None, str | None]:
        """Begin a sign-in; returns (flow_id, url, user_code, message)."""
        from sidecar.secrets import require_keyring
        from sidecar.sources.registry import provider as plugin

        source_plugin = plugin(provider)  # an unknown provider is refused here, by name
        require_keyring()  # tokens can only go to the OS keyring
        flow_id = "f_" + secrets.token_hex(6)
        started = await source_plugin.sign_in(client, account_hint, flow_kind,
                                              Wiring(self.store, self.config))
        flow, url, user_code, message = (started.flow, started.url, started.user_code,
                                         started.message)
        pending = _Pending(flow_id, provider, flow)
        pending.task = asyncio.create_task(self._finish(pending), name=f"oauth-{flow_id}")
        self.pending[flow_id] = pending
        return flow_id, url, user_code, message

    async def _finish(self, pending: _Pending) -> None:
        status, account, message = "failed", None, None
        try:
            account = await pending.flow.wait(FLOW_TIMEOUT)
            status = "connected"
            await self._reconnected(pending.provider, account)
        except asyncio.CancelledError:
            status, message = "cancelled", "sign-in cancelled"
        except SidecarError as exc:
            status = {"oauth_cancelled": "cancelled", "oauth_timeout": "timeout",
                      "auth_timeout": "timeout"}.get(exc.code, "failed")
            message = exc.message
        except Exception as exc:  # a library error must still reach the user
            log.exception("%s sign-in failed", pending.provider)
            message = f"sign-in failed: {exc}"
        finally:
            self.pending.pop(pending.flow_id, None)
            with contextlib.suppress(Exception):
                close = getattr(pending.flow, "close", None)
                if close is not None:
                    await close()
        log.info("%s sign-in %s: %s", pending.provider, pending.flow_id, status)
        await self.hub.broadcast(p.OAuthStatus(flow_id=pending.flow_id, provider=pending.provider,
                                               status=status, account=account, message=message))

    async def _reconnected(self, provider: str, account: str) -> None:
        for record in await self.store.agents.records(kind="cloud"):
            if record.get("provider") == provider and record.get("account") == account \
                    and record.get("state") == "needs_reauth":
                await self.store.agents.set_state(record["id"], "ok")

    async def cancel(self, flow_id: str) -> bool:
        pending = self.pending.get(flow_id)
        if pending is None:
            return False
        cancel = getattr(pending.flow, "cancel", None)
        if cancel is not None:
            await cancel()
        elif pending.task is not None:
            pending.task.cancel()
        return True

    async def close(self) -> None:
        for flow_id in list(self.pending):
            await self.cancel(flow_id)
