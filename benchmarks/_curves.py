"""Load the development curves of ../shared/data for benchmarks (shared by every benchmark).

Layout (see ../shared/data/README.md): ``curves/<set>/<run>.csv`` with columns
``step, tokens, loss, lr`` (loss blank on unmeasured steps; lr blank when unknown) and
``curves/<set>/index.csv`` with one row per run.

    from _curves import load_sets, split_case
    for curve in load_sets(data_dir):          # every run of every set
        case = split_case(curve, 0.25)         # the points seen at 25% and the truth
"""

from __future__ import annotations

import csv
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

    @property
    def x_axis(self) -> str:
        return X_AXIS.get(self.set, "step")

    def x(self) -> np.ndarray:
        return self.tokens if self.x_axis == "tokens" else self.step

    @property
    def has_schedule(self) -> bool:
        """True when lr is known at every step 0..T (one row per step)."""
        return bool(np.isfinite(self.lr).all() and self.step.size == int(self.final_step) + 1)


@dataclass
class Case:
    """The points seen at fraction f of a curve, and the truth to score against.

    Attributes:
        x, loss: measured points with step <= f*T (x on the set's axis).
        x_final: x at the final step T; truth: mean measured loss over the last 1% of steps.
        step, lr: for schedule-aware methods: every CSV step and its LR (None when unknown).
    """

    curve: Curve
    fraction: float
    x: np.ndarray
    loss: np.ndarray
    x_final: float
    truth: float
    seen_step: np.ndarray
    lr: np.ndarray | None


def _floats(rows, col):
    out = np.empty(len(rows))
    for i, r in enumerate(rows):
        v = r.get(col, "")
        out[i] = float(v) if v not in ("", None) else math.nan
    return out


def load_curve(path: os.PathLike, set_name: str, info: dict) -> Curve:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    step = _floats(rows, "step")
    final = float(info.get("final_step") or np.nanmax(step))
    return Curve(set_name, Path(path).stem, step, _floats(rows, "tokens"), _floats(rows, "loss"),
                 _floats(rows, "lr"), final, info)


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
        for csv_path in sorted(set_dir.glob("*.csv")):
            if csv_path.name == "index.csv":
                continue
            curves.append(load_curve(csv_path, set_dir.name, index.get(csv_path.stem, {})))
    return curves


def split_case(curve: Curve, fraction: float) -> Case:
    """The scoring protocol of ../shared/data/README.md for one curve and one fraction."""
    T = curve.final_step
    x_all = curve.x()
    measured = np.isfinite(curve.loss) & np.isfinite(x_all)
    seen = measured & (curve.step <= fraction * T)
    last = measured & (curve.step >= 0.99 * T)
    if not last.any():  # sparse logging: the last measured point
        last = measured & (curve.step == curve.step[measured].max())
    truth = float(np.mean(curve.loss[last]))
    at_T = np.flatnonzero(curve.step == T)
    if at_T.size and np.isfinite(x_all[at_T[0]]):
        x_final = float(x_all[at_T[0]])
    else:
        x_final = float(np.nanmax(x_all[measured]))
    lr = curve.lr if curve.has_schedule else None
    return Case(curve, fraction, x_all[seen], curve.loss[seen], x_final, truth,
                curve.step[seen], lr)
