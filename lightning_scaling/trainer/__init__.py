"""The Lightning layer: the only code that knows a Trainer.

``callback``: ``ScalingLawMonitor`` (its ``lightning.pytorch`` twin is in
``lightning_scaling.lightning``), which delegates to ``losses`` (reading each step's loss),
``refits`` (pacing the refits), ``stops`` (the stop decision across processes),
``reporting`` (warnings, ``scaling/*`` logs, sinks), ``summary`` and ``state``; ``plan``
and ``scheduler`` (the trainer's planned length and LR schedule), ``compute`` (FLOP and
token counting), ``pruning`` (Optuna) and ``replay`` (recorded curves through a Trainer).
"""
