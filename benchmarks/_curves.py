"""Load the development curves of ../shared/data for benchmarks (shared by every benchmark).

Layout (see ../shared/data/README.md): ``curves/<set>/<run>.csv`` with columns
``step, tokens, loss, lr`` (loss blank on unmeasured steps; lr blank when unknown) and
``curves/<set>/index.csv`` with one row per run. ``lr_schedules`` and ``algoperf`` log one row
per logged step and keep each run's exact schedule in ``schedules.json``: ``expand_schedule``
turns it into the LR of every step 0..T (``Curve.schedule``), checked against the logged lr
column by ``check_schedules`` (max error / peak about 4e-7).

Scoring (``split_case``): fit on the measured points with step <= f*T; the truth is the mean
measured loss over the last 1% of steps, forecast at T, except ``lr_schedules`` (validation
loss every 200 steps): the loss at its last measured row, forecast at that row's step.

    from _curves import load_sets, split_case
    for curve in load_sets(data_dir):          # every run of every set
        case = split_case(curve, 0.25)         # the points seen at 25% and the truth
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = next((p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()),
                    REPO.parent / "shared" / "data")
"""../shared/data next to the checkout, or next to a folder above it (a worktree in a subfolder)."""

X_AXIS = {"multipower": "step", "gemstones": "tokens", "modded_nanogpt": "step"}
"""The x axis each set is benchmarked on (gemstones: tokens; the others: optimizer step)."""

LAST_ROW_TRUTH = ("lr_schedules",)
"""Sets scored against the loss at their last measured row (validation loss every 200 steps)."""


def _one_cycle_cos(start: float, end: float, frac):
    return end + (start - end) / 2.0 * (np.cos(np.pi * frac) + 1.0)


def expand_schedule(spec: dict, logged_step=None, logged_lr=None) -> np.ndarray:
    """The LR of every optimizer step 0..total_steps from a schedules.json entry.

    Types: "constant", "wsd" (linear or sqrt cooldown from ``decay_start`` to
    ``final_lr_frac`` x peak at T), "cosine" (algoperf: linear warm-up from
    ``warmup_start_frac`` x peak, cosine to ``final_lr_frac`` x peak at T; lr_schedules with
    ``warmup_shape`` "cosine (OneCycleLR)": torch's OneCycleLR, whose warm-up ends at step
    ``warmup_steps - 1`` and whose anneal ends at T - 1), "logged" (the logged lr, linearly
    interpolated: two-stage runs).
    """
    T = int(spec["total_steps"])
    s = np.arange(T + 1, dtype=float)
    kind = spec["type"]
    if kind == "logged":
        return np.interp(s, np.asarray(logged_step, float), np.asarray(logged_lr, float))
    peak = float(spec["peak_lr"])
    W = int(spec.get("warmup_steps", 0))
    start = float(spec.get("warmup_start_frac", 0.0)) * peak
    final = float(spec.get("final_lr_frac") or 0.0) * peak
    lr = np.full(T + 1, peak)
    if kind == "cosine" and str(spec.get("warmup_shape", "")).startswith("cosine"):
        end_up = W - 1.0
        up = s <= end_up
        lr[up] = _one_cycle_cos(start, peak, s[up] / end_up)
        lr[~up] = _one_cycle_cos(peak, final, (s[~up] - end_up) / (T - 1 - end_up))
        lr[s > T - 1] = final
        return lr
    if W > 0:
        up = s < W
        lr[up] = start + (peak - start) * s[up] / W
    if kind == "constant":
        return lr
    if kind == "cosine":
        down = s >= W
        lr[down] = final + (peak - final) * 0.5 * (1 + np.cos(np.pi * (s[down] - W) / (T - W)))
        return lr
    if kind == "wsd":
        d0 = int(spec["decay_start"])
        down = s >= d0
        frac = (s[down] - d0) / (T - d0)
        shape = 1 - frac if spec["decay_type"] == "linear" else 1 - np.sqrt(frac)
        lr[down] = final + (peak - final) * shape
        return lr
    raise ValueError(f"unknown schedule type {kind!r}")


@dataclass
class Curve:
    """One run: every row of its CSV (NaN where blank) and its index entry.

    Attributes:
        set: set name (folder), run: run name.
        step, tokens, loss, lr: float arrays, one per CSV row (NaN where blank).
        final_step: T of the scoring protocol.
        info: the run's index.csv row.
    """

    set: str
    run: str
    step: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    lr: np.ndarray
    final_step: float
    info: dict = field(default_factory=dict)
    spec: dict | None = None  # the schedules.json entry, where the set has one
    lr_full: np.ndarray | None = field(default=None, repr=False)  # expanded from spec, once

    @property
    def x_axis(self) -> str:
        return X_AXIS.get(self.set, "step")

    def x(self) -> np.ndarray:
        return self.tokens if self.x_axis == "tokens" else self.step

    @property
    def has_schedule(self) -> bool:
        """True when the LR of every step 0..T is known (one row per step, or schedules.json)."""
        return self.spec is not None or bool(np.isfinite(self.lr).all() and self.step.size == int(self.final_step) + 1)

    def schedule(self) -> np.ndarray | None:
        """The LR of every step 0..T, or None when unknown."""
        if self.spec is not None:
            if self.lr_full is None:
                logged = (self.step > 0) & np.isfinite(self.lr)  # the step-0 row logs the first interval's LR
                self.lr_full = expand_schedule(self.spec, self.step[logged], self.lr[logged])
            return self.lr_full
        return self.lr if self.has_schedule else None


@dataclass
class Case:
    """The points seen at fraction f of a curve, and the truth to score against.

    Attributes:
        x, loss: measured points with step <= f*T (x on the set's axis).
        x_final: x to forecast (the final step T's; lr_schedules: its last measured row's);
            truth: the loss there (mean measured loss over the last 1% of steps; lr_schedules:
            the last measured row's).
        seen_step: the optimizer step of each seen point; lr: the LR of every step 0..T (None
            when unknown); target_step: the step to forecast (schedule-aware methods).
    """

    curve: Curve
    fraction: float
    x: np.ndarray
    loss: np.ndarray
    x_final: float
    truth: float
    seen_step: np.ndarray
    lr: np.ndarray | None
    target_step: float = math.nan


def _floats(rows, col):
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        v = r.get(col, "")
        out[i] = float(v) if v not in ("", None) else math.nan
    return out


def load_curve(path: os.PathLike, set_name: str, info: dict, spec: dict | None = None) -> Curve:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    step = _floats(rows, "step")
    final = float(info.get("final_step") or np.nanmax(step))
    return Curve(set_name, Path(path).stem, step, _floats(rows, "tokens"), _floats(rows, "loss"),
                 _floats(rows, "lr"), final, dict(info), spec)


def load_sets(data_dir: os.PathLike | None = None, sets: list[str] | None = None) -> list[Curve]:
    """Every curve of every set (or of ``sets``) under ``data_dir/curves``, sorted by name."""
    root = Path(data_dir or DEFAULT_DATA) / "curves"
    if not root.is_dir():
        raise SystemExit(f"no curves folder at {root} (pass --data)")
    curves = []
    for set_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if sets and set_dir.name not in sets:
            continue
        index = {}
        idx_path = set_dir / "index.csv"
        if idx_path.exists():
            with open(idx_path, newline="") as fh:
                index = {r["run"]: r for r in csv.DictReader(fh)}
        specs = {}
        if (set_dir / "schedules.json").exists():
            specs = json.loads((set_dir / "schedules.json").read_text())
        for csv_path in sorted(set_dir.glob("*.csv")):
            if csv_path.name == "index.csv":
                continue
            curves.append(load_curve(csv_path, set_dir.name, index.get(csv_path.stem, {}), specs.get(csv_path.stem)))
    return curves


def split_case(curve: Curve, fraction: float) -> Case:
    """The scoring protocol of ../shared/data/README.md for one curve and one fraction."""
    T = curve.final_step
    x_all = curve.x()
    measured = np.isfinite(curve.loss) & np.isfinite(x_all)
    seen = measured & (curve.step <= fraction * T)
    lr = curve.schedule()
    if curve.set in LAST_ROW_TRUTH:
        i = int(np.flatnonzero(measured)[np.argmax(curve.step[measured])])
        return Case(curve, fraction, x_all[seen], curve.loss[seen], float(x_all[i]), float(curve.loss[i]),
                    curve.step[seen], lr, float(curve.step[i]))
    last = measured & (curve.step >= 0.99 * T)
    if not last.any():  # sparse logging: the last measured point
        last = measured & (curve.step == curve.step[measured].max())
    truth = float(np.mean(curve.loss[last]))
    at_T = np.flatnonzero(curve.step == T)
    if at_T.size and np.isfinite(x_all[at_T[0]]):
        x_final = float(x_all[at_T[0]])
    else:
        x_final = float(np.nanmax(x_all[measured]))
    return Case(curve, fraction, x_all[seen], curve.loss[seen], x_final, truth, curve.step[seen], lr, float(T))


def check_schedules(curves) -> dict[str, float]:
    """Largest |expanded - logged| / peak LR per set over the logged rows (step 0 excluded)."""
    out: dict[str, float] = {}
    for c in curves:
        if c.spec is None:
            continue
        lr = c.schedule()
        rows = (c.step > 0) & np.isfinite(c.lr) & (c.step <= lr.size - 1)
        err = np.max(np.abs(lr[c.step[rows].astype(int)] - c.lr[rows])) / float(np.max(lr))
        out[c.set] = max(out.get(c.set, 0.0), float(err))
    return out
