"""Behind the trend: is the run's loss falling behind the forecast made before it?

Pure parts over explicit state, composed by the thin stateful ``TrendDetector``:

- ``selection``: which fit a check compares with. A reference fit's data must have ended at
  least ``lag`` optimizer steps before the observation (a fit made just before would
  already have bent towards a slow drift) and at least ``lag`` past the LR warm-up; a law is
  not extrapolated across an LR change it cannot follow, a fit made just after an abrupt LR
  drop is never a reference, and neither is one whose band is too wide to test against.
  Each reference is *anchored*: scaled to pass through the (robustly) smoothed loss seen
  just before its data ended, by as much as that level is known beyond its own noise.
- ``window``: each observation is clipped to a few noise scales around the median of its
  neighbours (one bad batch cannot move the smoothed loss much; a shift that lasts passes
  whole). The statistic is the relative excess of the mean of the last ``window`` clipped
  losses over the mean of their expected losses; a check is positive when it exceeds the
  larger of the band (the fit's ``level`` upper end, relative to the expected loss) plus
  ``min_excess``, and ``z`` times the statistic's measured spread.
- ``noise``: that spread is measured, not assumed: the noise of one observation (the sd of
  successive differences, clipped like the observations) gives the part a window mean has
  from noise alone (``sigma / sqrt(window)``); the rest, the reference's misfit, is the
  robust spread (MAD) of past negative checks' statistics, each less (in quadrature) the
  noise part, over the last ``max(64, 3 * window)`` checks (each admitted only after
  ``window + patience`` later checks passed without an episode, so the onset of a shift
  cannot widen the threshold meant to catch it). No check fires before
  ``max(min_calibration, 2 * window)`` such samples exist.
- ``drift``: a one-sided CUSUM of the per-observation (clipped) relative excess over a held
  fit catches slow drifts and, on noisy per-step losses, shifts that a window mean cannot
  see through the noise; its allowance comes from the measured misfit and its threshold
  from the measured noise (a false alarm from noise rarer than once in 50 runs).

Episodes are reported once when they start (``TrendEvent``: how much, since when, against
what) and once when they end (``TrendEnd``).

>>> import numpy as np
>>> from lightning_scaling import fit_curve
>>> rng = np.random.default_rng(0)
>>> steps = np.arange(1, 1201)
>>> loss = (2.0 + 8.0 * steps ** -0.35) * (1 + 0.002 * rng.standard_normal(1200))
>>> loss[steps > 900] *= 1.03                              # a fault: +3% from step 901
>>> detector = TrendDetector(patience=3, window=5, lag=100)
>>> events = []
>>> for s in steps[200:]:
...     if s % 100 == 0:
...         _ = detector.offer_fit(fit_curve(steps[:s], loss[:s]), int(s))
...     events.append(detector.observe(int(s), float(s), float(loss[s - 1])))
>>> [(type(e).__name__, e.step, e.since_step) for e in events if e is not None]
[('TrendEvent', 904, 903), ('TrendEnd', 1102, 903)]
"""

from .detector import TrendDetector
from .drift import DriftCusum
from .noise import DISTANCE_MIN, NoiseCalibration, log_distance
from .selection import abrupt_drops, choose_reference, lr_changed, settled, tabulate
from .window import Clipper, TrendEnd, TrendEvent, Window, WindowStatistic, threshold

__all__ = [
    "Clipper",
    "DISTANCE_MIN",
    "DriftCusum",
    "NoiseCalibration",
    "TrendDetector",
    "TrendEnd",
    "TrendEvent",
    "Window",
    "WindowStatistic",
    "abrupt_drops",
    "choose_reference",
    "log_distance",
    "lr_changed",
    "settled",
    "tabulate",
    "threshold",
]
