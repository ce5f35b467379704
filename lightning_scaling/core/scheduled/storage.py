"""How a schedule-aware fit stores its schedule, and the caches of schedule-derived arrays.

``CurveFit.context`` keeps the schedule as piecewise-linear knots (``compress_schedule``:
exact for piecewise-linear schedules, within ``SCHEDULE_TOLERANCE`` of the peak LR
elsewhere), and the fit itself runs on the expansion of those knots, so a fit forecasts the
same before and after a JSON round trip. Expanded schedules and their features are cached by
content digest (never by object id), a few per kind.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from ...errors import InvalidInputError

SCHEDULE_TOLERANCE = 1e-6
"""Largest error of the stored (piecewise-linear) schedule, as a share of the peak LR."""

_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_SIZE = {"features": 4, "compress": 8, "expand": 8}
"""Schedules kept per kind (a million-step schedule's features take ~80 MB)."""


def cached(key: tuple, make):
    """make() cached under key (key[0]: the kind); keyed by content digests, never by id."""
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    value = make()
    _CACHE[key] = value
    kind = [k for k in _CACHE if k[0] == key[0]]
    for old in kind[: max(len(kind) - _CACHE_SIZE[key[0]], 0)]:
        del _CACHE[old]
    return value


def content_digest(*arrays: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=float)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.digest()


MAX_KNOTS = 20000
"""A schedule that needs more knots than this (noise on the LR, thousands of restarts) is
stored as it is, one LR per step."""


def compress_schedule(lr, tolerance: float = SCHEDULE_TOLERANCE) -> tuple[np.ndarray, np.ndarray] | None:
    """Knots (steps, LRs) whose linear interpolation stays within ``tolerance * peak`` of
    ``lr`` at every step, or None when that needs more than ``MAX_KNOTS``: the corners of a
    piecewise-linear schedule, a few hundred for a cosine of any length. Douglas-Peucker
    splitting, every segment of a level at once: O(T) per level, ~log2(knots) levels."""
    lr = np.asarray(lr, dtype=float)
    n = lr.size
    tol = tolerance * float(np.max(np.abs(lr)) or 1.0)
    idx = np.arange(n, dtype=float)
    knots = np.array([0, n - 1], dtype=np.int64)
    while True:
        err = np.abs(lr - np.interp(idx, knots, lr[knots]))
        seg_max = np.maximum.reduceat(err, knots[:-1])
        bad = np.flatnonzero(seg_max > tol)
        if bad.size == 0:
            return knots, lr[knots]
        if knots.size + bad.size > MAX_KNOTS:
            return None
        new = [knots[i] + int(np.argmax(err[knots[i]:knots[i + 1]])) for i in bad]
        knots = np.union1d(knots, np.asarray(new, dtype=np.int64))


def expand_schedule(steps, values, horizon: int) -> np.ndarray:
    """The LR at every step 0..horizon from knots (inverse of ``compress_schedule``)."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    return np.interp(np.arange(int(horizon) + 1, dtype=float), steps, values)


def schedule_context(lr_arr: np.ndarray) -> tuple[dict, np.ndarray]:
    """(context to store, the schedule the fit runs on): knots, and their expansion."""
    def make():
        knots = compress_schedule(lr_arr)
        if knots is None:
            return None, None, lr_arr
        return knots[0], knots[1], expand_schedule(knots[0], knots[1], lr_arr.size - 1)

    steps, values, used = cached(("compress", content_digest(lr_arr)), make)
    if steps is None:
        return {"horizon": int(lr_arr.size - 1), "lr": lr_arr.tolist()}, used
    context = {"horizon": int(lr_arr.size - 1), "lr_knots": {"step": steps.tolist(), "lr": values.tolist()},
               "lr_tolerance": SCHEDULE_TOLERANCE}
    # what a forecast from this context will look up: the schedule the fit ran on
    cached(("expand", content_digest(steps, values), int(lr_arr.size - 1)), lambda: (used, content_digest(used)))
    return context, used


def context_lr(context) -> tuple[np.ndarray, bytes]:
    """The LR at every step 0..horizon stored in a fit's context (knots or, older, a list),
    and its content digest (computed once per stored schedule, not per evaluation)."""
    if context:
        if context.get("lr") is not None:
            lr = np.asarray(context["lr"], dtype=float)
            return lr, content_digest(lr)
        knots = context.get("lr_knots")
        if knots is not None:
            steps = np.asarray(knots["step"], dtype=float)
            values = np.asarray(knots["lr"], dtype=float)
            horizon = int(context.get("horizon", steps[-1]))

            def make():
                lr = expand_schedule(steps, values, horizon)
                return lr, content_digest(lr)

            return cached(("expand", content_digest(steps, values), horizon), make)
    raise InvalidInputError("schedule-aware laws need the schedule in context (lr_knots or lr)")
