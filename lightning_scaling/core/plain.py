"""The one JSON sanitiser: any result of the package as plain Python.

Checkpoints load with ``weights_only=True`` (torch >= 2.6), which refuses numpy objects, and
strict JSON has no NaN or infinity: everything that crosses a checkpoint, a run summary or
``--json`` output goes through :func:`plain`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

_MAX_DEPTH = 20


def plain(value: Any, *, strict: bool = False, _depth: int = 0) -> Any:
    """``value`` as plain Python: dict (str keys), list, str, int, float, bool or None.

    numpy scalars and arrays, tuples, sets, deques and anything with ``tolist()`` (torch
    tensors, without importing torch) are converted; any other object becomes its ``str``.
    ``strict``: NaN and infinities become None (strict JSON has neither).

    >>> plain({"a": np.float64(1.5), "b": (np.int64(2), math.nan)})
    {'a': 1.5, 'b': [2, nan]}
    >>> plain([math.inf, np.array([1.0, math.nan])], strict=True)
    [None, [1.0, None]]
    """
    if _depth > _MAX_DEPTH:
        return str(value)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if strict and not math.isfinite(value) else value
    if isinstance(value, dict):
        return {str(k): plain(v, strict=strict, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, deque)):
        return [plain(v, strict=strict, _depth=_depth + 1) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        try:
            return plain(value.tolist(), strict=strict, _depth=_depth + 1)
        except Exception:
            pass
    return str(value)


def nan_for_none(value: Any) -> Any:
    """The inverse of ``plain(..., strict=True)`` for numbers: None becomes NaN, in nested dicts and lists."""
    if isinstance(value, dict):
        return {k: nan_for_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_for_none(v) for v in value]
    return math.nan if value is None else value
