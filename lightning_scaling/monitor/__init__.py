"""Pure online decisions over explicit state: loss history, forecasts, trend, divergence, stops.

Nothing here knows Lightning or torch: the Lightning layer (``lightning_scaling.trainer``)
feeds observations and fits in and turns the answers into logs, warnings and stops.

- ``history``: the bounded loss history; ``forecast``: one refit and its forecast;
- ``trend``: behind the trend (window test, drift CUSUM, noise calibration, reference selection);
- ``divergence``: non-finite losses and spikes; ``reference``: comparison with another run or a law;
- ``stopping``: the stop rules and ``StopReason``; ``refit``: the refit cadence and runner;
- ``config``: ``TrendConfig``, ``StopConfig``, ``RefitConfig``; ``observe``: routing observations.
"""

from .config import RefitConfig, StopConfig, TrendConfig
from .forecast import Forecast
from .stopping import StopReason

__all__ = ["Forecast", "RefitConfig", "StopConfig", "StopReason", "TrendConfig"]
