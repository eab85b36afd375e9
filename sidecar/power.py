"""Is this laptop on battery? Scheduled runs wait while it is low; manual runs never wait."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PowerState:
    on_battery: bool
    percent: float | None = None
    saver: bool = False


class PowerSource(Protocol):
    def read(self) -> PowerState: ...


class PsutilPower:
    """psutil's battery reading; no battery (desktops, CI) or no reading counts as AC power."""

    def read(self) -> PowerState:
        try:
            import psutil

            battery = psutil.sensors_battery()
        except Exception:  # unsupported platform or sensor failure
            battery = None
        if battery is None:
            return PowerState(on_battery=False)
        plugged = battery.power_plugged
        return PowerState(on_battery=plugged is False, percent=float(battery.percent))


def deferral_reason(state: PowerState, *, enabled: bool, threshold: float) -> str | None:
    """Why a scheduled run should wait now, or ``None`` to go ahead."""
    if not enabled or not state.on_battery:
        return None
    if state.saver:
        return "deferred: battery saver on"
    if state.percent is not None and state.percent < threshold:
        return f"deferred: on battery ({state.percent:.0f}% < {threshold:.0f}%)"
    return None
