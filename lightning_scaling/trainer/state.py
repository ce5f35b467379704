"""A monitor's checkpoint state: plain Python floats, ints, strings and lists only (torch >= 2.6
loads checkpoints with ``weights_only=True``, which refuses numpy objects)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.curve import CurveFit
from ..core.plain import plain
from ..errors import InvalidInputError
from ..monitor.forecast import Forecast

STATE_FORMAT = "lightning-scaling/monitor"
STATE_VERSION = 1
KEEP_FORECASTS = 256
"""Forecasts kept in a checkpoint (older ones thinned)."""


def thin(items: list, keep: int) -> list:
    """At most ``keep`` items: the newest half as they are, the older ones evenly thinned."""
    if len(items) <= keep:
        return list(items)
    half = keep // 2
    old, new = items[:-half], items[-half:]
    idx = np.linspace(0, len(old) - 1, keep - half).round().astype(int)
    return [old[i] for i in sorted(set(idx.tolist()))] + new


def monitor_state(monitor, forecasts: list[Forecast]) -> dict[str, Any]:
    """The state of ``monitor`` (``forecasts``: its forecasts, oldest first)."""
    kept = thin(forecasts, KEEP_FORECASTS)
    latest = forecasts[-1] if forecasts else None
    reader = monitor.losses.state_dict()
    return {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "history": monitor.history.state_dict(),
        "compute": monitor.compute.state_dict(),
        "trend": monitor.trend.state_dict(),
        "divergence": monitor.divergence.state_dict(),
        "forecasts": [f.to_dict(diagnostics=f is latest) for f in kept],
        "fit": None if latest is None or latest.fit is None else plain(latest.fit.to_dict()),
        "stopped_reason": monitor.stopped_reason,
        "stop_reason": monitor.stop_reason.name,
        "stopped_step": monitor.stopped_step,
        "warnings": list(monitor.warnings_emitted[-100:]),
        "episodes": {k: [list(e) for e in v[-100:]] for k, v in monitor.report.episodes.items()},
        "seen_step": int(monitor.seen_step),
        "loss_name": reader["loss_name"],
        "followed": reader["followed"],
        "refits": int(monitor.refit_scheduler.refits),
        "pending": reader["pending"],
    }


def restore_monitor(monitor, state: dict[str, Any]) -> list[Forecast]:
    """Load ``state`` into ``monitor``'s parts; returns the restored forecasts, oldest first."""
    if state.get("format") != STATE_FORMAT:
        raise InvalidInputError("not a ScalingLawMonitor state (missing or wrong 'format')")
    if int(state.get("version", 0)) > STATE_VERSION:
        raise InvalidInputError(
            f"ScalingLawMonitor state version {state['version']} is newer than this "
            f"lightning-scaling understands ({STATE_VERSION}); upgrade to resume this run"
        )
    monitor.history.load_state_dict(state["history"])
    monitor.compute.load_state_dict(state["compute"])
    monitor.trend.load_state_dict(state["trend"], CurveFit.from_dict)
    monitor.divergence.load_state_dict(state["divergence"])
    fit = None if state.get("fit") is None else CurveFit.from_dict(state["fit"])
    dicts = state.get("forecasts", [])
    monitor.stops.restore(state.get("stopped_reason"), state.get("stopped_step"), state.get("stop_reason"))
    monitor.report.warnings_emitted = list(state.get("warnings", []))
    episodes = state.get("episodes") or {}
    monitor.report.episodes = {k: [list(e) for e in episodes.get(k, [])] for k in ("behind_trend", "divergence")}
    monitor.seen_step = int(state.get("seen_step", 0))
    monitor.losses.load_state_dict(state, observed=monitor.history.n_observed)
    monitor.refit_scheduler.refits = int(state.get("refits", 0))
    return [Forecast.from_dict(d, fit if i == len(dicts) - 1 else None) for i, d in enumerate(dicts)]
