"""Typed keys for what the aiohttp application holds (wiring, not logic)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from sidecar.accounts import Accounts
from sidecar.delivery import Delivery
from sidecar.hub import Hub
from sidecar.runner import Runner
from sidecar.scheduler import Scheduler
from sidecar.settings import Config
from sidecar.store import Store
from sidecar.watcher import WatchManager

CONFIG = web.AppKey("config", Config)
TOKEN = web.AppKey("token", str)
STORE = web.AppKey("store", Store)
HUB = web.AppKey("hub", Hub)
DELIVERY = web.AppKey("delivery", Delivery)
RUNNER = web.AppKey("runner", Runner)
STARTED_AT = web.AppKey("started_at", float)
#: Called with an agent id after it was created, changed or deleted (scheduler, watchers).
AGENT_LISTENERS = web.AppKey("agent_listeners", list[Callable[[str], Awaitable[None]]])
WATCHERS = web.AppKey("watchers", WatchManager)
SCHEDULER = web.AppKey("scheduler", Scheduler)
ACCOUNTS = web.AppKey("accounts", Accounts)
