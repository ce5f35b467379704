"""Scoring of forecasts on the development curves (shared by the accuracy benchmarks).

A ``Method`` forecasts a ``_curves.Case``: ``forecast(case, level) -> Forecast | None``;
``score`` runs methods over curves and fractions into ``Result`` rows; ``summarise`` gives,
per method, set and fraction: the median and 90th percentile of |forecast - truth| / truth,
how often the interval holds the truth (a missing interval counts as a miss), the median
width (hi - lo) / truth, the median signed error and the median time.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from _curves import Case, split_case

LM_SETS = ("gemstones", "lr_schedules", "modded_nanogpt", "multipower")


@dataclass
class Forecast:
    """A method's forecast of the loss at the final x: central value and interval."""

    loss: float
    lower: float = math.nan
    upper: float = math.nan


@dataclass
class Method:
    """A forecasting method: ``forecast(case, level)``; ``applies(case)`` may skip cases."""

    name: str
    forecast: Callable[[Case, float], Forecast | None]
    applies: Callable[[Case], bool] = lambda case: True


@dataclass
class Result:
    method: str
    set: str
    run: str
    fraction: float
    truth: float
    forecast: Forecast | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.forecast is not None and math.isfinite(self.forecast.loss)

    @property
    def rel_error(self) -> float:
        return abs(self.forecast.loss - self.truth) / self.truth if self.ok else math.nan

    @property
    def covered(self) -> float:
        if not self.ok:
            return math.nan
        lo, hi = self.forecast.lower, self.forecast.upper
        return float(math.isfinite(lo) and math.isfinite(hi) and lo <= self.truth <= hi)

    @property
    def rel_width(self) -> float:
        return (self.forecast.upper - self.forecast.lower) / self.truth if self.ok else math.nan


def score(curves, fractions, methods, level=0.9) -> list[Result]:
    out = []
    for curve in curves:
        for f in fractions:
            case = split_case(curve, f)
            for m in methods:
                if not m.applies(case):
                    continue
                t0 = time.perf_counter()
                try:
                    fc = m.forecast(case, level)
                except Exception as exc:  # a crash is a failed forecast, and is reported
                    print(f"  {m.name} crashed on {curve.set}/{curve.run} f={f}: {exc!r}", file=sys.stderr)
                    fc = None
                out.append(Result(m.name, curve.set, curve.run, f, case.truth, fc, time.perf_counter() - t0))
    return out


def summarise(results, method, set_name, fraction) -> dict:
    rows = [r for r in results if r.method == method and r.fraction == fraction
            and (set_name is None or r.set == set_name)]
    ok = [r for r in rows if r.ok]
    err = np.array([r.rel_error for r in ok])
    width = np.array([r.rel_width for r in ok])
    width = width[np.isfinite(width)]
    signed = np.array([(r.forecast.loss - r.truth) / r.truth for r in ok])
    return {"method": method, "set": set_name or "ALL", "fraction": fraction, "n": len(rows), "n_ok": len(ok),
            "median_rel_error": float(np.median(err)) if err.size else math.nan,
            "p90_rel_error": float(np.percentile(err, 90)) if err.size else math.nan,
            "coverage": float(np.mean([r.covered for r in ok])) if ok else math.nan,
            "median_rel_width": float(np.median(width)) if width.size else math.nan,
            "median_signed_error": float(np.median(signed)) if signed.size else math.nan,
            "median_seconds": float(np.median([r.seconds for r in rows])) if rows else math.nan}


def table(results, methods, fractions) -> str:
    head = (f"{'set':15s} {'f':>4s} {'method':28s} {'ok':>7s} {'median':>7s} {'p90':>7s} {'cover':>6s} "
            f"{'width':>7s} {'bias':>7s} {'ms':>6s}")
    lines = [head, "-" * len(head)]
    for s in sorted({r.set for r in results}):
        for f in fractions:
            for m in methods:
                d = summarise(results, m, s, f)
                if d["n"] == 0:
                    continue
                lines.append(f"{s:15s} {f:4.2f} {m:28s} {d['n_ok']:3d}/{d['n']:<3d} "
                             f"{100 * d['median_rel_error']:6.2f}% "
                             f"{100 * d['p90_rel_error']:6.2f}% {100 * d['coverage']:5.0f}% "
                             f"{100 * d['median_rel_width']:6.2f}% {100 * d['median_signed_error']:+6.2f}% "
                             f"{1e3 * d['median_seconds']:6.1f}")
        lines.append("")
    return "\n".join(lines)
