"""Is the metric ``monitor=`` names being logged? Said at the first training step whose logged
metrics are known, not after training.

>>> early_verdict("train_los", ["train_loss", "lr"], validating=False)[0].split(". ")[-2:]
["Logged metrics: 'lr', 'train_loss'", "Did you mean 'train_loss'?"]
>>> early_verdict("does_not_exist", ["train_loss"], validating=False, step=1)[1].split(", and")[0]
"ScalingLawMonitor(monitor='does_not_exist'): no metric named 'does_not_exist' has been logged by step 1"
>>> early_verdict("val_loss", ["train_loss"], validating=True)
(None, None)
>>> early_verdict("train_loss_epoch", ["train_loss_step"], validating=False)
(None, None)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from .losses import missing_metric_message

CLOSE = 0.85
"""Similarity (difflib's ratio) above which an absent name is taken for a misspelling of a logged one."""

LATER_SUFFIXES = ("_epoch",)
"""A name ending so is logged at the end of an epoch (``on_epoch=True``), not at each step."""


def early_verdict(name: str, logged: Iterable[str], validating: bool, step: int | None = None
                  ) -> tuple[str | None, str | None]:
    """(error, warning) for ``name`` absent from the ``logged`` metric names at a training step.

    - a logged name within ``CLOSE`` of it: a misspelling, an error (with the suggestion);
    - else, when validation runs during this fit, or the name is an epoch-end metric: wait
      (the first validation end, or the first epoch end, decides);
    - else a warning: nothing it could be has been logged (an epoch-level metric logged
      under another name would make it early).
    """
    names = sorted(str(n) for n in logged if not str(n).startswith("scaling/"))
    if not names or name in names:
        return None, None
    base = name[: -len("_epoch")] if name.endswith("_epoch") else name
    candidates = [n for n in names if not (n.startswith(base) and n != name and name.endswith(LATER_SUFFIXES))]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=CLOSE)
    if close:
        return f"{missing_metric_message(name, {n: None for n in names})} Did you mean {close[0]!r}?", None
    if validating or name.endswith(LATER_SUFFIXES):
        return None, None
    when = "" if step is None else f" by step {step:,}"
    return None, (f"ScalingLawMonitor(monitor={name!r}): no metric named {name!r} has been logged{when}, and "
                  f"this fit runs no validation; it follows nothing until one is. Logged metrics: "
                  f"{', '.join(repr(n) for n in names)}.")
