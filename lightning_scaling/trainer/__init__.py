"""The Lightning layer: the only code that knows a Trainer.

``ScalingLawMonitor`` (the callback; its ``lightning.pytorch`` twin is in
``lightning_scaling.lightning``), the trainer's LR schedule (``scheduler``), FLOP and token
counting (``compute``), Optuna pruning (``pruning``) and replaying recorded curves (``replay``).
"""
