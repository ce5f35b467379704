"""Runs under a log directory: find them, and read each from its summary or its event files.

Everything here is numpy plus the standard library (and TensorBoard's protobuf classes for
event files): no torch, no Lightning, so ``lightning-scaling report`` starts fast. A run
whose files are damaged is read up to the damage; the damage is reported in ``problems``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core.plain import plain
from ..errors import InvalidInputError
from .events import EVENT_FILE_MARK, read_scalars
from .summary import SUMMARY_FILENAME, read_summary

#: Loss tags tried, in this order, for runs without a summary when no ``tag`` is given.
DEFAULT_LOSS_TAGS = (
    "train_loss",
    "train_loss_step",
    "loss",
    "train/loss",
    "train/loss_step",
    "training_loss",
    "val_loss",
    "val/loss",
    "validation_loss",
)

#: Sub-directories the TensorBoard panels write their series into, one run per series so that
#: TensorBoard colours them apart (``lightning_scaling.tensorboard.layout.SERIES_RUNS``): parts
#: of the run whose directory holds them, never runs of their own.
SERIES_RUN_NAMES = frozenset({"scaling_forecast", "scaling_observed", "scaling_trend", "scaling_band_upper",
                              "scaling_band_lower", "scaling_target"})


@dataclass
class RunFiles:
    """One run found under a log directory: its directory, summary file and event files."""

    directory: str
    name: str
    summary: str | None = None
    events: list[str] = field(default_factory=list)


def find_runs(logdir: str | os.PathLike) -> tuple[list[RunFiles], list[str]]:
    """Find runs under ``logdir``: every directory holding a run summary or event files.

    Returns (runs sorted by name, problems met while walking). Symbolic links to directories
    are followed (each directory is read once, whatever links lead to it: a link back up
    cannot loop). Hidden directories (".x") are skipped, and so are the panels' series
    directories (``SERIES_RUN_NAMES``) inside a run. Raises InvalidInputError when ``logdir``
    is missing, not a directory or unreadable.
    """
    logdir = os.fspath(logdir)
    if not os.path.exists(logdir):
        raise InvalidInputError(f"{logdir}: no such directory")
    if not os.path.isdir(logdir):
        raise InvalidInputError(f"{logdir}: not a directory")
    try:
        os.listdir(logdir)
    except OSError as exc:
        raise InvalidInputError(f"{logdir}: cannot read directory: {exc.strerror or exc}") from None
    problems: list[str] = []

    def onerror(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot read directory: {exc.strerror or exc}")

    runs = []
    visited: set[str] = set()
    for directory, subdirs, files in os.walk(logdir, onerror=onerror, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:  # reached again through a link
            subdirs[:] = []
            continue
        visited.add(real)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        summary = SUMMARY_FILENAME in files
        events = sorted(f for f in files if EVENT_FILE_MARK in f)
        if not summary and not events:
            continue
        subdirs[:] = [d for d in subdirs if d not in SERIES_RUN_NAMES]
        rel = os.path.relpath(directory, logdir)
        runs.append(
            RunFiles(
                directory=directory,
                name=os.path.basename(os.path.abspath(logdir)) if rel == "." else rel,
                summary=os.path.join(directory, SUMMARY_FILENAME) if summary else None,
                events=[os.path.join(directory, f) for f in events],
            )
        )
    runs.sort(key=lambda r: r.name)
    return runs, problems


@dataclass
class RunRecord:
    """What is known of one run, from its summary or else from its TensorBoard scalars.

    Units: ``step`` optimizer steps; ``tokens`` tokens seen; ``flops`` floating-point
    operations (cumulative); ``loss`` in the logged loss's units (nats for cross-entropy).
    """

    name: str
    directory: str
    source: str  # "summary" or "events"
    loss_name: str
    x_axis: str
    step: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray | None = None
    flops: np.ndarray | None = None
    steps: int | None = None
    final_loss: float | None = None
    n_params: float | None = None
    tokens_total: float | None = None
    flops_total: float | None = None
    forecast: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    stopped_reason: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def law(self) -> str | None:
        if self.forecast and self.forecast.get("law"):
            return str(self.forecast["law"])
        if self.fit and self.fit.get("law"):
            return str(self.fit["law"])
        return None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""

        def num(v):
            if v is None:
                return None
            v = float(v)
            return v if math.isfinite(v) else None

        def arr(a):
            return None if a is None else [num(v) for v in a]

        return {
            "run": self.name,
            "directory": self.directory,
            "source": self.source,
            "loss_name": self.loss_name,
            "x_axis": self.x_axis,
            "steps": self.steps,
            "final_loss": num(self.final_loss),
            "n_params": num(self.n_params),
            "tokens": num(self.tokens_total),
            "flops": num(self.flops_total),
            "law": self.law,
            "forecast": plain(self.forecast, strict=True),
            "warnings": list(self.warnings),
            "stopped_reason": self.stopped_reason,
            "problems": list(self.problems),
            "curve": {
                "step": [int(s) for s in self.step],
                "tokens": arr(self.tokens),
                "flops": arr(self.flops),
                "loss": arr(self.loss),
            },
        }



def _float_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _curve_array(values, n: int) -> np.ndarray | None:
    if not isinstance(values, list) or len(values) != n or all(v is None for v in values):
        return None
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def run_from_summary(data: dict[str, Any], name: str, directory: str) -> RunRecord:
    """A RunRecord from a checked summary dict (see :func:`read_summary`)."""
    curve = data.get("curve") or {}
    try:
        loss = np.array([math.nan if v is None else float(v) for v in curve.get("loss") or []])
        step = np.array(curve.get("step") or [], dtype=float)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: run summary has a non-numeric curve") from None
    if step.size != loss.size:
        raise InvalidInputError(f"{name}: run summary curve has {step.size} steps but {loss.size} losses")
    forecast = data.get("forecast") if isinstance(data.get("forecast"), dict) else None
    fit = data.get("fit") if isinstance(data.get("fit"), dict) else None
    steps = data.get("steps")
    return RunRecord(
        name=name,
        directory=directory,
        source="summary",
        loss_name=str(data.get("loss_name") or "loss"),
        x_axis=str(data.get("x_axis") or "step"),
        step=step,
        loss=loss,
        tokens=_curve_array(curve.get("tokens"), step.size),
        flops=_curve_array(curve.get("flops"), step.size),
        steps=int(steps) if isinstance(steps, (int, float)) and math.isfinite(steps) else None,
        final_loss=_float_or_none(data.get("final_loss")),
        n_params=_float_or_none(data.get("n_params")),
        tokens_total=_float_or_none(data.get("tokens")),
        flops_total=_float_or_none(data.get("flops")),
        forecast=forecast,
        fit=fit,
        warnings=[str(w) for w in data.get("warnings") or []],
        stopped_reason=data.get("stopped_reason"),
    )


def _find_tag(available, name: str) -> str | None:
    """``name`` itself, or ``name`` under a logger prefix ("prefix-name", Lightning's join)."""
    if name in available:
        return name
    for tag in sorted(available):
        if tag.endswith("-" + name):
            return tag
    return None


def final_value(steps: np.ndarray, values: np.ndarray) -> float | None:
    """Mean of the finite values in the last 1% of the step range (at least the last point)."""
    good = np.isfinite(values)
    if not good.any():
        return None
    s, v = steps[good], values[good]
    span = float(s[-1] - s[0])
    keep = s >= s[-1] - 0.01 * span
    return float(v[keep].mean())


def run_from_events(files: list[str], name: str, directory: str, tags=None) -> RunRecord:
    """A RunRecord from a run's TensorBoard scalars.

    ``tags``: loss tags to try in order (default :data:`DEFAULT_LOSS_TAGS`). The callback's
    own scalars (``scaling/forecast_final_loss``, ``scaling/flops``, ...) are used when present.
    Raises InvalidInputError when no loss tag is found.
    """
    scalars = read_scalars(files)
    candidates = list(tags) if tags else list(DEFAULT_LOSS_TAGS)
    tag = None
    for cand in candidates:
        tag = _find_tag(scalars.series, cand)
        if tag is not None:
            break
    if tag is None and scalars.n_records == 0 and scalars.problems:
        raise InvalidInputError(f"{name}: no readable TensorBoard data ({'; '.join(scalars.problems)})")
    if tag is None:
        found = ", ".join(scalars.tags()[:12]) or "none"
        problems = f" ({'; '.join(scalars.problems)})" if scalars.problems else ""
        raise InvalidInputError(
            f"{name}: no loss tag among {', '.join(candidates)} (scalar tags found: {found}); "
            f"pass --tag{problems}"
        )
    steps, loss = scalars.series[tag]

    def last(key: str) -> float | None:
        t = _find_tag(scalars.series, key)
        if t is None:
            return None
        return _float_or_none(scalars.series[t][1][-1])

    def aligned(key: str) -> np.ndarray | None:
        t = _find_tag(scalars.series, key)
        if t is None:
            return None
        s, v = scalars.series[t]
        if s.size < 2:
            return None
        return np.interp(steps, s, v, left=math.nan, right=math.nan)

    forecast = None
    final_fc = last("scaling/forecast_final_loss")
    if final_fc is not None:
        forecast = {
            "final_loss": final_fc,
            "lower": last("scaling/forecast_lower"),
            "upper": last("scaling/forecast_upper"),
            "level": None,
            "step": int(scalars.series[_find_tag(scalars.series, "scaling/forecast_final_loss")][0][-1]),
            "law": None,
            "target_step": None,
        }
    flops = aligned("scaling/flops")
    tokens = aligned("scaling/tokens")
    return RunRecord(
        name=name,
        directory=directory,
        source="events",
        loss_name=tag,
        x_axis="step",
        step=steps.astype(float),
        loss=loss,
        tokens=tokens,
        flops=flops,
        steps=int(steps[-1]) + 1 if steps.size else None,
        final_loss=final_value(steps, loss),
        tokens_total=last("scaling/tokens"),
        flops_total=last("scaling/flops"),
        forecast=forecast,
        problems=list(scalars.problems),
    )


def load_run(run: RunFiles, tags=None) -> RunRecord:
    """Read one run: its summary when there is a readable one, else its event files.

    A summary that cannot be used (corrupt, newer version) is reported in ``problems`` of
    the record read from the event files; with no event files to fall back on, the
    summary's error is raised (InvalidInputError).
    """
    summary_error = None
    if run.summary is not None:
        try:
            return run_from_summary(read_summary(run.summary), run.name, run.directory)
        except InvalidInputError as exc:
            summary_error = str(exc).replace(run.summary, f"{run.name}: {SUMMARY_FILENAME}", 1)
            if not run.events:
                raise InvalidInputError(summary_error) from None
    try:
        record = run_from_events(run.events, run.name, run.directory, tags)
    except InvalidInputError as exc:
        if summary_error:
            raise InvalidInputError(f"{summary_error}; and from its event files: {exc}") from None
        raise
    if summary_error:
        record.problems.insert(0, summary_error + "; read the TensorBoard scalars instead")
    return record
