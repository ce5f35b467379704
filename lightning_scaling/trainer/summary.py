"""The run summary's content, built from a monitor (its format, reading and writing are
``lightning_scaling.io.summary``'s), and where it goes."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np

from ..core.plain import plain
from ..errors import ScalingWarning
from ..io.summary import SUMMARY_FILENAME, SUMMARY_FORMAT, SUMMARY_VERSION, write_summary

log = logging.getLogger(__name__)


FINAL_WINDOW_FRACTION = 0.025
"""``final_loss`` is the mean observed loss over the last 2.5% of the run's steps."""


def final_window(history, steps: int, fraction: float = FINAL_WINDOW_FRACTION) -> list[tuple]:
    """The observations of the last ``fraction`` of ``steps`` optimizer steps (at least the
    newest 5, at most the history's raw window), as (step, key, tokens, flops, loss) tuples."""
    recent = history.last(history.recent)
    if not recent:
        return []
    start = recent[-1][0] - fraction * max(int(steps), 0)
    inside = [r for r in recent if r[0] > start]
    return inside if len(inside) >= 5 else recent[-5:]


def build_summary(monitor, trainer=None) -> dict[str, Any]:
    """The run summary of ``monitor`` (the schema of ``lightning_scaling.io.summary``), strict JSON."""
    a = monitor.history.arrays()
    latest = monitor.forecast
    totals = monitor.compute
    recent = final_window(monitor.history, monitor.seen_step)
    refits = monitor.refit_scheduler

    def column(values):
        v = np.asarray(values, dtype=float)
        return None if not np.isfinite(v).any() else [None if not math.isfinite(x) else float(x) for x in v]

    return plain(strict=True, value={
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "run": run_name(trainer),
        "n_params": None if totals.n_params_non_embedding is None else float(totals.n_params_non_embedding),
        "tokens": totals.tokens if math.isfinite(totals.tokens) else None,
        "flops": totals.flops if math.isfinite(totals.flops) else None,
        "steps": int(monitor.seen_step),
        "final_loss": float(np.mean([r[4] for r in recent])) if recent else None,
        "loss_name": monitor.loss_name,
        "x_axis": monitor.x_axis,
        "curve": {
            "step": [float(s) for s in a["step"]],
            "tokens": column(a["tokens"]),
            "flops": column(a["flops"]),
            "loss": [float(v) for v in a["loss"]],
        },
        "fit": None if latest is None or latest.fit is None else latest.fit.to_dict(),
        "forecast": None if latest is None else latest.to_dict(),
        "forecasts": [f.to_dict(diagnostics=False) for f in monitor.forecasts],
        "schedule": None if monitor.schedule_lr is None else {"lr": [float(v) for v in monitor.schedule_lr]},
        "warnings": list(monitor.warnings_emitted),
        "stopped_reason": monitor.stopped_reason,
        # extra keys (readers accept unknown keys)
        "stopped_step": monitor.stopped_step,
        "planned_steps": monitor.planned_steps,
        "n_params_total": None if totals.n_params is None else float(totals.n_params),
        "samples": totals.samples,
        "compute_sources": {"flops": totals.flops_source, "tokens": totals.tokens_source},
        "schedule_source": monitor.schedule_reason,
        "history": {"stored_points": len(monitor.history), "observations": monitor.history.n_observed},
        "refits": refits.refits,
        "refit_failures": refits.failures,
        # each episode once: [since step, reported step, ended step (None: still going on)]
        "episodes": {kind: {"count": len(items), "steps": items}
                     for kind, items in monitor.report.episodes.items()},
    })


def save_summary(monitor, trainer, after_exception: bool = False) -> None:
    """Write ``monitor``'s run summary into the log dir (``monitor.summary_path`` says where).

    The log dir is the first logger's; without a logger, the trainer's ``default_root_dir``
    when one was chosen. A run with neither writes no file (it would land, unasked, in the
    working directory, and the next such run would overwrite it): a notice says so, and
    ``monitor.summary()`` still has it. A file that cannot be written is a warning; after an
    exception, only a debug message (the user's exception is the one to see).
    """
    folder = log_dir(trainer)
    if folder is None:
        if not after_exception:
            monitor.report.info(trainer, "ScalingLawMonitor: no logger and no default_root_dir, so no "
                                f"{SUMMARY_FILENAME} was written (pass a logger or Trainer(default_root_dir=...), "
                                "or read monitor.summary())")
        return
    try:
        monitor.summary_path = write_summary(folder, monitor.summary(trainer))
    except Exception as exc:
        if after_exception:
            log.debug("could not write the run summary after an exception", exc_info=True)
        elif isinstance(exc, OSError):
            monitor.report.warn(trainer, f"ScalingLawMonitor: could not write {SUMMARY_FILENAME}: {exc}",
                                ScalingWarning)
        else:
            raise


def log_dir(trainer) -> str | None:
    """The first logger's directory, else ``default_root_dir`` when it is not just the working
    directory Lightning falls back to; else None (no collective call, unlike trainer.log_dir)."""
    loggers = getattr(trainer, "loggers", None) or []
    if loggers:
        for attr in ("log_dir", "save_dir"):
            try:
                d = getattr(loggers[0], attr)
            except Exception:
                d = None
            if d:
                return str(d)
    root = str(trainer.default_root_dir)
    return None if os.path.abspath(root) == os.path.abspath(os.getcwd()) else root


def run_name(trainer) -> str:
    """``name/version`` of the first logger, else the root directory's name."""
    if trainer is None:
        return "run"
    loggers = getattr(trainer, "loggers", None) or []
    if loggers:
        try:
            name, version = loggers[0].name, loggers[0].version
            if name is not None:
                return f"{name}/{version}" if version is not None and version != "" else str(name)
        except Exception:
            pass
    return os.path.basename(os.path.abspath(str(trainer.default_root_dir))) or "run"
