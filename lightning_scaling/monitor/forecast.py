"""One forecast of a run's loss: ``make_forecast`` refits the bounded history and forecasts the
loss at the planned last step, with an interval; ``Forecast`` holds the answer.

Losses are in the units of the monitored metric (nats for a cross-entropy); steps are
optimizer steps; tokens and FLOPs are cumulative over all processes.

>>> import numpy as np
>>> from lightning_scaling import fit_curve
>>> steps = np.arange(1.0, 201.0)
>>> arrays = {"step": steps, "tokens": 1000 * steps, "flops": np.full(200, np.nan),
...           "loss": 2.0 + 8.0 * steps ** -0.35}
>>> f = make_forecast(arrays, fit_fn=fit_curve, target_step=1000)
>>> f.step, f.target_step, f.target_tokens
(200, 1000, 1000000.0)
>>> bool(f.lower <= f.final_loss <= f.upper)
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.compute import project_compute, step_at_compute
from ..core.plain import plain
from ..errors import InvalidInputError

AXES = ("step", "tokens", "flops")
"""The compute axes a fit can run on."""


def _f(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


@dataclass
class Forecast:
    """One forecast of the run's loss, made from the observations up to ``step``.

    Attributes:
        step: optimizer step of the newest observation the fit used.
        final_loss: expected loss at ``target_step`` (loss units; NaN when the planned end is
            unknown or the fit failed).
        lower, upper: the ``level`` prediction interval at ``target_step``.
        level: the interval's probability content.
        law: name of the fitted law ("none" when no fit was possible).
        target_step: the planned last optimizer step, or None when unknown.
        x_axis: the axis the fit ran on ("step", "tokens" or "flops").
        tokens, flops: cumulative tokens / FLOPs at ``step`` (NaN when unknown).
        target_tokens, target_flops: the same projected to ``target_step``.
        target_loss: the loss the ``*_to_target`` numbers aim at (None when not asked).
        steps_to_target, tokens_to_target, flops_to_target: cumulative optimizer steps,
            tokens and FLOPs at which the expected loss reaches ``target_loss`` (inf: never
            on this law; NaN: unknown).
        diagnostics: the fit's diagnostics plus the monitor's (points used, schedule, timing).
        fit: the ``CurveFit`` itself (not part of ``to_dict``).
        band: ``(x, expected, upper)`` arrays tabulating the fit and its ``level`` band upper
            end from the last fitted x to the planned end (at least twice the last x);
            computed with the fit, off the training thread (not part of ``to_dict``).
    """

    step: int
    final_loss: float
    lower: float
    upper: float
    level: float
    law: str
    target_step: int | None
    x_axis: str = "step"
    tokens: float = math.nan
    flops: float = math.nan
    target_tokens: float = math.nan
    target_flops: float = math.nan
    target_loss: float | None = None
    steps_to_target: float = math.nan
    tokens_to_target: float = math.nan
    flops_to_target: float = math.nan
    diagnostics: dict = field(default_factory=dict)
    fit: Any = field(default=None, repr=False, compare=False)
    band: Any = field(default=None, repr=False, compare=False)

    def to_dict(self, diagnostics: bool = True) -> dict[str, Any]:
        """Plain-Python dict (the run summary's forecast entry plus the extra keys above)."""
        d = {f: getattr(self, f) for f in self.__dataclass_fields__ if f not in ("fit", "diagnostics", "band")}
        d = plain(d)
        if diagnostics:
            d["diagnostics"] = plain(self.diagnostics)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], fit: Any = None) -> "Forecast":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k not in ("fit", "band")}
        out = cls(**known)
        out.fit = fit
        return out


BAND_BACK = 512
"""``Forecast.band`` starts at the newest this-many fitted points (the trend check anchors a fit
to at most 400 observations before its data end)."""


def make_forecast(
    arrays: dict[str, np.ndarray],
    *,
    fit_fn: Callable[..., Any],
    x_axis: str = "step",
    target_step: float | None = None,
    lr: np.ndarray | None = None,
    level: float = 0.9,
    target_loss: float | None = None,
    extra_diagnostics: dict | None = None,
    band_level: float | None = None,
) -> Forecast:
    """Refit the history and forecast the loss at ``target_step``.

    Args:
        arrays: ``LossHistory.arrays()`` (step, tokens, flops, loss, ...).
        fit_fn: ``lightning_scaling.fit_curve`` (passed in so this stays testable).
        x_axis: the axis to fit on. With ``lr`` given the fit always runs on the optimizer
            step (a schedule is defined per step) and compute is converted through the
            recorded compute per step.
        target_step: the planned last optimizer step, or None (no end-of-run forecast).
        lr: the LR at every optimizer step 0..target_step, or None.
        level: the interval level.
        target_loss: also say the compute at which the expected loss reaches this.
        band_level: the level of the tabulated band (``Forecast.band``; default ``level``).
    """
    steps = arrays["step"]

    def points(axis: str, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
        x = arrays[axis] if axis != "step" else (np.rint(steps) if rounded else steps)
        good = np.isfinite(x) & np.isfinite(arrays["loss"])
        return x[good], arrays["loss"][good]

    t0 = time.perf_counter()
    fallback = None
    fit = None
    if lr is not None:
        fit_axis = "step"
        x_fit, y_fit = points("step", rounded=True)
        try:
            fit = fit_fn(x_fit, y_fit, lr=lr)
        except InvalidInputError as exc:
            fallback = f"schedule-aware fit refused the data ({exc}); fitted without the schedule"
        else:
            if not getattr(fit, "ok", False):
                reason = (getattr(fit, "diagnostics", {}) or {}).get("reason", "not ok")
                fallback = f"schedule-aware fit failed ({reason}); fitted without the schedule"
    if fit is None or fallback is not None:
        fit_axis = x_axis
        x_fit, y_fit = points(x_axis, rounded=False)
        fit = fit_fn(x_fit, y_fit)
    fit_seconds = time.perf_counter() - t0

    step_now = int(round(float(steps[-1]))) if steps.size else 0
    tokens_now = float(arrays["tokens"][-1]) if steps.size else math.nan
    flops_now = float(arrays["flops"][-1]) if steps.size else math.nan

    def to_axis(step_value: float) -> float:
        if fit_axis == "step":
            return step_value
        return project_compute(steps, arrays[fit_axis], step_value)

    final = lower = upper = math.nan
    target_tokens = target_flops = math.nan
    if target_step is not None and math.isfinite(target_step):
        x_end = to_axis(float(target_step))
        if math.isfinite(x_end) and fit.ok:
            final = _f(fit.predict(x_end))
            lo, hi = fit.interval(x_end, level=level)
            lower, upper = _f(lo), _f(hi)
        target_tokens = project_compute(steps, arrays["tokens"], float(target_step))
        target_flops = project_compute(steps, arrays["flops"], float(target_step))

    steps_to = tokens_to = flops_to = math.nan
    if target_loss is not None and fit.ok:
        x_target = _f(fit.x_at(float(target_loss)))
        if math.isinf(x_target):
            steps_to = tokens_to = flops_to = math.inf
        elif math.isfinite(x_target):
            steps_to = x_target if fit_axis == "step" else step_at_compute(steps, arrays[fit_axis], x_target)
            tokens_to = project_compute(steps, arrays["tokens"], steps_to) if math.isfinite(steps_to) else math.nan
            flops_to = project_compute(steps, arrays["flops"], steps_to) if math.isfinite(steps_to) else math.nan

    band = None
    if fit.ok and x_fit.size:
        x_last = float(np.max(x_fit))
        x_far = 2.0 * x_last
        if target_step is not None and math.isfinite(target_step):
            x_end = to_axis(float(target_step))
            if math.isfinite(x_end):
                x_far = max(x_far, 1.01 * x_end)
        if x_last > 0:
            # from the newest BAND_BACK points on, so the trend check anchors a fit to the loss
            # before its data end from this table, not by evaluating the fit on the training thread
            x_back = float(np.min(np.sort(x_fit)[-BAND_BACK:]))
            back = np.geomspace(x_back, x_last, 129)[:-1] if 0 < x_back < x_last else np.zeros(0)
            xs = np.concatenate([back, np.geomspace(x_last, x_far, 513)])
            _lo, hi = fit.interval(xs, level=band_level or level)
            band = (xs, np.asarray(fit.predict(xs), dtype=float), np.asarray(hi, dtype=float))

    diagnostics = dict(plain(getattr(fit, "diagnostics", {}) or {}))
    diagnostics.update(
        {
            "monitor_points": int(x_fit.size),
            "monitor_fit_axis": fit_axis,
            "monitor_fit_seconds": round(fit_seconds, 6),
        }
    )
    if fallback:
        diagnostics["monitor_schedule_fallback"] = fallback
    if extra_diagnostics:
        diagnostics.update(plain(extra_diagnostics))
    return Forecast(
        step=step_now,
        final_loss=final,
        lower=lower,
        upper=upper,
        level=float(level),
        law=str(getattr(fit, "law", "none")),
        target_step=None if target_step is None or not math.isfinite(target_step) else int(target_step),
        x_axis=fit_axis,
        tokens=tokens_now,
        flops=flops_now,
        target_tokens=target_tokens,
        target_flops=target_flops,
        target_loss=None if target_loss is None else float(target_loss),
        steps_to_target=float(steps_to),
        tokens_to_target=float(tokens_to),
        flops_to_target=float(flops_to),
        diagnostics=diagnostics,
        fit=fit,
        band=band,
    )
