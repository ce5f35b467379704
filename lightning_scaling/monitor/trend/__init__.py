"""Behind the trend: is the run's loss falling behind the forecast made before it?

Four pure parts over explicit state, composed by the thin stateful ``TrendDetector``:

- ``selection``: which fit a check compares with. A reference fit's data must have ended at
  least ``lag`` optimizer steps before the observation (a fit made just before would
  already have bent towards a slow drift); a law is not extrapolated across an LR change,
  and a fit made just after an abrupt LR drop is never a reference. Fits are tabulated so a
  check costs an interpolation.
- ``window``: the window test. The statistic is the relative excess of the mean of the last
  ``window`` losses over the mean of their expected losses; a check is positive when it
  exceeds the larger of the band (the fit's ``level`` upper end, relative to the expected
  loss) plus ``min_excess``, and ``z`` noise scales.
- ``noise``: the noise scale is measured, not assumed: the robust spread (MAD) of the same
  statistic over the last ``max(64, 3 * window)`` checks that were not positive (each
  admitted only after ``window + patience`` later checks passed without an episode, so the
  onset of a shift cannot widen the threshold meant to catch it), so correlated noise and
  the law's short-range misfit count in it; no check fires before
  ``max(min_calibration, 2 * window)`` such samples exist. Each sample is stored per unit of
  extrapolation distance ``log(step / reference_step)`` (at the window's middle) and the
  scale is applied at the current distance.
- ``drift``: a one-sided CUSUM of the per-observation relative excess over a held fit
  catches slow drifts, which the lagged references partly absorb before the window test
  sees them.

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
>>> [(e.step, e.since_step) for e in events if e is not None]
[(904, 901)]
"""

from .detector import TrendDetector
from .drift import DriftCusum
from .noise import DISTANCE_MIN, NoiseCalibration, log_distance
from .selection import abrupt_drops, choose_reference, lr_changed, settled, tabulate
from .window import TrendEvent, Window, WindowStatistic, threshold

__all__ = [
    "DISTANCE_MIN",
    "DriftCusum",
    "NoiseCalibration",
    "TrendDetector",
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
