"""The ``lightning.pytorch`` twins of ``ScalingLawMonitor``, ``ReplayModule`` and ``ForecastPruning``.

``lightning_scaling.ScalingLawMonitor`` is a ``pytorch_lightning`` Callback (the declared
dependency). Users of the ``lightning`` package import the same code from here::

    from lightning.pytorch import Trainer
    from lightning_scaling.lightning import ScalingLawMonitor

This module imports only where ``lightning.pytorch`` does.
"""

from __future__ import annotations

import logging

try:
    import lightning.pytorch as _lp
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "lightning_scaling.lightning needs the `lightning` package (pip install lightning); "
        "with pytorch_lightning use `from lightning_scaling import ScalingLawMonitor`"
    ) from exc

from .trainer.callback import _MonitorLogic
from .trainer.pruning import _ForecastPruningLogic
from .trainer.replay import _ReplayLogic

__all__ = ["ForecastPruning", "ReplayModule", "ScalingLawMonitor"]


class ScalingLawMonitor(_MonitorLogic, _lp.Callback):
    __doc__ = _MonitorLogic.__doc__
    _logger = logging.getLogger("lightning.pytorch.callbacks.scaling_law_monitor")


class ReplayModule(_ReplayLogic, _lp.LightningModule):
    __doc__ = _ReplayLogic.__doc__


class ForecastPruning(_ForecastPruningLogic, _lp.Callback):
    __doc__ = _ForecastPruningLogic.__doc__
