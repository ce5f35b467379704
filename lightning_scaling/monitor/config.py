"""The monitor's rules as small frozen configurations, each checked when it is made.

``TrendConfig`` sizes the behind-trend check, ``StopConfig`` says which stop rules apply,
``RefitConfig`` paces the refits. ``ScalingLawMonitor(trend=..., stop=..., refit=...)`` takes
them; its older flat keyword arguments map onto them through :func:`apply_legacy_options`.

>>> StopConfig(behind_trend=True).any_rule
True
>>> TrendConfig(patience=0)
Traceback (most recent call last):
...
lightning_scaling.errors.InvalidInputError: patience must be a positive int or None, got 0
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError


def _positive_int_or_none(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise InvalidInputError(f"{name} must be a positive int or None, got {value!r}")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class TrendConfig:
    """The behind-trend check (window test and drift CUSUM; ``lightning_scaling.monitor.trend``).

    Args:
        smoothing: observations averaged into the smoothed loss of a check (default: 2.5% of
            the planned steps, at least 5 and at most 200; 5 for a metric given by
            ``monitor=`` or when the end is unknown). Window and patience were chosen on the
            replayed development curves (benchmarks/replay.py): shorter ones let the short
            bumps of clean per-step curves through.
        patience: positive checks in a row before the warning (default: 1% of the planned
            steps, at least 3 and at most 50; a quarter of the window when the end is unknown).
        min_excess: relative margin above the band before a check counts (0.015: 1.5%).
        lag: checks compare with a fit whose data ended at least this fraction of the planned
            run earlier (of the steps so far when the end is unknown), so a slow drift is not
            absorbed by the fit it is tested against.
        start: no check before this fraction of the planned run.
        level: the level of the band checks compare with (0.5: the central half; the margin,
            the measured noise and ``patience`` guard against false alarms, and a wide band
            would hide a shift of a few percent).
    """

    smoothing: int | None = None
    patience: int | None = None
    min_excess: float = 0.015
    lag: float = 0.05
    start: float = 0.05
    level: float = 0.5

    def __post_init__(self) -> None:
        _positive_int_or_none("smoothing", self.smoothing)
        _positive_int_or_none("patience", self.patience)
        if not (_number(self.min_excess) and self.min_excess >= 0):
            raise InvalidInputError(f"min_excess must be a finite number >= 0, got {self.min_excess!r}")
        if not (_number(self.lag) and _number(self.start) and 0 <= self.lag < 1 and 0 <= self.start < 1):
            raise InvalidInputError(f"lag and start must be in [0, 1), got {self.lag!r}, {self.start!r}")
        if not (_number(self.level) and 0 < self.level < 1):
            raise InvalidInputError(f"level must be in (0, 1), got {self.level!r}")

    def size(self, detector: Any, planned_steps: float | None, per_step: bool) -> None:
        """Size a ``TrendDetector``'s window and patience once the run's length is known (the
        automatic ones where ``smoothing`` / ``patience`` are None); ``per_step``: one
        observation per optimizer step (not a metric logged now and then)."""
        if self.smoothing is None:
            detector.set_window(self.auto_window(planned_steps, per_step))
        if self.patience is None:
            detector.patience = self.auto_patience(planned_steps, per_step, detector.window)

    def auto_window(self, planned_steps: float | None, per_step: bool) -> int:
        """The smoothing window when ``smoothing`` is None (``per_step``: one observation per step)."""
        auto = round(0.025 * planned_steps) if per_step and planned_steps is not None else 5
        return min(200, max(5, auto))

    def auto_patience(self, planned_steps: float | None, per_step: bool, window: int) -> int:
        """The patience when ``patience`` is None, for a window of ``window`` observations."""
        auto = round(0.01 * planned_steps) if per_step and planned_steps is not None else window // 4
        return min(50, max(3, auto))


@dataclass(frozen=True)
class StopConfig:
    """The stop rules, each off unless asked for; decided at the refit candidate steps.

    Args:
        forecast_above: stop when, in ``forecast_patience`` forecasts in a row, even the
            optimistic (lower) end of the interval at the planned end is above this loss.
        behind_trend: stop while a behind-trend warning stands.
        divergence: stop when the loss is NaN/inf or spiked for several steps.
        worse_than_reference: stop when the run is worse than its ``reference=`` (needs one).
        min_fraction: no stop before this fraction of the planned steps.
        forecast_patience: forecasts in a row that must agree before a forecast or reference stop.
    """

    forecast_above: float | None = None
    behind_trend: bool = False
    divergence: bool = False
    worse_than_reference: bool = False
    min_fraction: float = 0.2
    forecast_patience: int = 2

    def __post_init__(self) -> None:
        if self.forecast_above is not None and not (_number(self.forecast_above) and self.forecast_above > 0):
            raise InvalidInputError(f"forecast_above (stop_if_forecast_above) must be a positive loss or None, "
                                    f"got {self.forecast_above!r}")
        for name in ("behind_trend", "divergence", "worse_than_reference"):
            _flag(name, getattr(self, name))
        if not (_number(self.min_fraction) and 0 <= self.min_fraction <= 1):
            raise InvalidInputError(f"min_fraction must be in [0, 1], got {self.min_fraction!r}")
        if self.forecast_patience is None:
            raise InvalidInputError("forecast_patience must be a positive int, got None")
        _positive_int_or_none("forecast_patience", self.forecast_patience)

    @property
    def any_rule(self) -> bool:
        """Is any stop rule on?"""
        return self.forecast_above is not None or self.behind_trend or self.divergence or self.worse_than_reference


@dataclass(frozen=True)
class RefitConfig:
    """When the history is refit.

    Args:
        every: refit every this many optimizer steps. None (default): a candidate every 1/200
            of the planned run (at least 4 steps; when the end is unknown, a cadence that
            doubles as the run does); after the first refit a candidate is skipped while the
            monitor (refits' CPU time plus its per-step hook) has used more than
            ``max_overhead`` of the training time, unless the last refit is 5% of the run old.
            Candidates are also the steps at which stop decisions are reduced across
            processes: a function of the step only, the same on every rank.
        max_overhead: share of the training time the monitor may spend (0.01).
        background: refit off the training thread (default: in a helper Python process at nice 10,
            or a daemon thread where no process can start) or inline (deterministic; for tests).
    """

    every: int | None = None
    max_overhead: float = 0.01
    background: bool = True

    def __post_init__(self) -> None:
        if self.every is not None and not (isinstance(self.every, int) and not isinstance(self.every, bool)
                                           and self.every > 0):
            raise InvalidInputError(f"refit_every must be a positive int or None, got {self.every!r}")
        if not (_number(self.max_overhead) and 0 < self.max_overhead <= 1):
            raise InvalidInputError(f"max_overhead must be in (0, 1], got {self.max_overhead!r}")
        _flag("background", self.background)


# old flat keyword argument -> (configuration, field); each use warns with the new spelling
LEGACY_OPTIONS: dict[str, tuple[str, str]] = {
    "smoothing": ("trend", "smoothing"),
    "patience": ("trend", "patience"),
    "min_excess": ("trend", "min_excess"),
    "trend_lag": ("trend", "lag"),
    "trend_after": ("trend", "start"),
    "trend_level": ("trend", "level"),
    "stop_when_behind_trend": ("stop", "behind_trend"),
    "stop_on_divergence": ("stop", "divergence"),
    "stop_if_worse_than_reference": ("stop", "worse_than_reference"),
    "min_fraction": ("stop", "min_fraction"),
    "forecast_patience": ("stop", "forecast_patience"),
    "max_overhead": ("refit", "max_overhead"),
    "background": ("refit", "background"),
}
_CLASSES = {"trend": TrendConfig, "stop": StopConfig, "refit": RefitConfig}
_BOOLS = {"behind_trend", "divergence", "worse_than_reference", "background"}  # coerced with bool(), as before


def apply_legacy_options(
    options: dict[str, Any],
    *,
    trend: TrendConfig | None,
    stop: StopConfig | None,
    refit: RefitConfig | None,
    stop_if_forecast_above: float | None = None,
    refit_every: int | None = None,
) -> tuple[TrendConfig, StopConfig, RefitConfig]:
    """The three configurations, with the older keyword arguments mapped onto them.

    ``options``: the flat keyword arguments of ``LEGACY_OPTIONS`` (each warns with a
    ``DeprecationWarning`` naming its new spelling). ``stop_if_forecast_above`` and
    ``refit_every`` are kept shorthands for ``StopConfig.forecast_above`` and
    ``RefitConfig.every`` (no warning). A setting given twice (old and new spelling, or a
    shorthand and its configuration field) is an InvalidInputError; an unknown name a TypeError.
    """
    unknown = sorted(set(options) - set(LEGACY_OPTIONS))
    if unknown:  # as Python itself says it
        raise TypeError(f"ScalingLawMonitor.__init__() got an unexpected keyword argument {unknown[0]!r}")
    given = {"trend": trend, "stop": stop, "refit": refit}
    changes: dict[str, dict[str, Any]] = {"trend": {}, "stop": {}, "refit": {}}
    for name, value in options.items():
        group, field = LEGACY_OPTIONS[name]
        spelling = f"{group}={_CLASSES[group].__name__}({field}=...)"
        if given[group] is not None:
            raise InvalidInputError(f"{name}= and {group}= both given: set {spelling} only")
        warnings.warn(f"ScalingLawMonitor({name}=...) is deprecated; use {spelling}", DeprecationWarning,
                      stacklevel=3)
        changes[group][field] = bool(value) if field in _BOOLS else value
    for value, group, field, name in ((stop_if_forecast_above, "stop", "forecast_above", "stop_if_forecast_above"),
                                      (refit_every, "refit", "every", "refit_every")):
        if value is not None:
            if given[group] is not None and getattr(given[group], field) is not None:
                raise InvalidInputError(f"{name}= and {group}={_CLASSES[group].__name__}({field}=...) both given")
            changes[group][field] = value
    out = []
    for group, cls in _CLASSES.items():
        base = given[group] if given[group] is not None else cls()
        if not isinstance(base, cls):
            raise InvalidInputError(f"{group}= must be a {cls.__name__}, got {type(base).__name__}")
        out.append(dataclasses.replace(base, **changes[group]) if changes[group] else base)
    return out[0], out[1], out[2]
