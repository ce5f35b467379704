"""Bounded loss history: log-spaced buckets in compute plus a window of recent raw points.

A run of a million optimizer steps must not keep a million points in memory, in a
checkpoint or in a refit. ``LossHistory`` keeps the newest ``recent`` observations as they
came, and folds older ones into buckets whose edges are log-spaced along the key axis (the
fit's x: optimizer steps, tokens or FLOPs). A bucket stores sums, so its point is the mean
step, key, tokens, FLOPs and loss of the observations it holds, and its count.

With the default ``bucket_ratio=1.01`` a bucket spans 1% of its key, so 10^6 steps need
about 1,390 buckets; when the buckets outnumber ``max_buckets`` their ratio is squared and
neighbours merge, which bounds the stored points by ``max_buckets + recent`` (4,096 by
default) however long the run. Pure Python and numpy; the state is plain floats and lists,
so it can go into a checkpoint loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from ..errors import InvalidInputError

_STATE_FORMAT = "lightning-scaling/loss-history"
_STATE_VERSION = 1

# Per-bucket sums, in this order, after the bucket index.
_SUMS = ("n", "step", "key", "tokens", "flops", "loss", "loss2")


class LossHistory:
    """Bounded record of (optimizer step, key, tokens, FLOPs, loss) observations.

    Args:
        recent: how many of the newest observations are kept raw.
        bucket_ratio: the ratio between a bucket's upper and lower key edge (> 1).
        max_buckets: the most buckets kept; beyond it the ratio is squared and neighbours
            merge. ``recent + max_buckets`` bounds the stored points.

    Example::

        >>> h = LossHistory()
        >>> for s in range(1, 1001):
        ...     h.append(step=s, key=s, loss=3.0 + 10.0 / s)
        >>> len(h) < 1000, h.n_observed
        (True, 1000)
    """

    def __init__(self, recent: int = 512, bucket_ratio: float = 1.01, max_buckets: int = 3584):
        if int(recent) < 1:
            raise InvalidInputError(f"recent must be >= 1, got {recent!r}")
        if not (isinstance(bucket_ratio, (int, float)) and bucket_ratio > 1.0):
            raise InvalidInputError(f"bucket_ratio must be a number > 1, got {bucket_ratio!r}")
        if int(max_buckets) < 2:
            raise InvalidInputError(f"max_buckets must be >= 2, got {max_buckets!r}")
        self.recent = int(recent)
        self.max_buckets = int(max_buckets)
        self._log_ratio = math.log(float(bucket_ratio))
        self._key0: float | None = None  # the first positive key: bucket edges are key0 * ratio**i
        self._recent: deque[tuple[float, float, float, float, float]] = deque()
        self._buckets: dict[int, list[float]] = {}
        self.n_observed = 0
        self.n_dropped = 0

    # -- writing ---------------------------------------------------------------------------
    def append(
        self,
        step: float,
        key: float,
        loss: float,
        tokens: float | None = None,
        flops: float | None = None,
    ) -> None:
        """Record one observation. Non-finite losses and keys <= 0 are counted and dropped."""
        loss = float(loss)
        key = float(key)
        if not math.isfinite(loss) or not math.isfinite(key) or key <= 0:
            self.n_dropped += 1
            return
        if self._key0 is None:
            self._key0 = key
        tok = math.nan if tokens is None else float(tokens)
        fl = math.nan if flops is None else float(flops)
        self._recent.append((float(step), key, tok, fl, loss))
        self.n_observed += 1
        while len(self._recent) > self.recent:
            self._fold(self._recent.popleft())

    def _bucket_index(self, key: float) -> int:
        assert self._key0 is not None
        # Keys below the first one (possible only with unusual callers) share bucket 0's left side.
        return int(math.floor(math.log(max(key, self._key0 * 1e-12) / self._key0) / self._log_ratio))

    def _fold(self, point: tuple[float, float, float, float, float]) -> None:
        step, key, tok, fl, loss = point
        idx = self._bucket_index(key)
        b = self._buckets.get(idx)
        if b is None:
            self._buckets[idx] = [1.0, step, key, tok, fl, loss, loss * loss]
            if len(self._buckets) > self.max_buckets:
                self._coarsen()
        else:
            b[0] += 1.0
            b[1] += step
            b[2] += key
            b[3] += tok
            b[4] += fl
            b[5] += loss
            b[6] += loss * loss

    def _coarsen(self) -> None:
        """Square the bucket ratio: floor(i / 2) is the merged index of bucket i."""
        self._log_ratio *= 2.0
        merged: dict[int, list[float]] = {}
        for idx in sorted(self._buckets):
            b = self._buckets[idx]
            m = merged.get(idx // 2)
            if m is None:
                merged[idx // 2] = list(b)
            else:
                for j in range(len(_SUMS)):
                    m[j] += b[j]
        self._buckets = merged

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Stored points (buckets plus raw recent points), not observations."""
        return len(self._buckets) + len(self._recent)

    @property
    def bucket_ratio(self) -> float:
        return math.exp(self._log_ratio)

    def arrays(self) -> dict[str, np.ndarray]:
        """The stored points, oldest first, as float arrays.

        Keys: ``step`` (mean optimizer step), ``key`` (the bucketing axis), ``tokens`` and
        ``flops`` (cumulative; NaN where unknown), ``loss`` (mean), ``count`` (observations
        behind each point), ``spread`` (standard deviation of the loss inside a bucket; 0 for
        raw points).
        """
        rows = [self._buckets[i] for i in sorted(self._buckets)]
        nb, nr = len(rows), len(self._recent)
        out = {k: np.empty(nb + nr) for k in ("step", "key", "tokens", "flops", "loss", "count", "spread")}
        if nb:
            b = np.asarray(rows, dtype=float)
            n = b[:, 0]
            for j, name in enumerate(("step", "key", "tokens", "flops", "loss"), start=1):
                out[name][:nb] = b[:, j] / n
            out["count"][:nb] = n
            var = np.maximum(b[:, 6] / n - (b[:, 5] / n) ** 2, 0.0)
            out["spread"][:nb] = np.sqrt(var)
        if nr:
            r = np.asarray(self._recent, dtype=float)
            for j, name in enumerate(("step", "key", "tokens", "flops", "loss")):
                out[name][nb:] = r[:, j]
            out["count"][nb:] = 1.0
            out["spread"][nb:] = 0.0
        return out

    def last(self, n: int) -> list[tuple[float, float, float, float, float]]:
        """The newest ``n`` raw observations as (step, key, tokens, flops, loss) tuples."""
        n = max(0, min(int(n), len(self._recent)))
        return list(self._recent)[len(self._recent) - n :]

    @property
    def last_step(self) -> float | None:
        return self._recent[-1][0] if self._recent else None

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Plain Python state (floats, ints, lists, None): safe for ``weights_only=True``."""
        return {
            "format": _STATE_FORMAT,
            "version": _STATE_VERSION,
            "recent_size": self.recent,
            "max_buckets": self.max_buckets,
            "log_ratio": float(self._log_ratio),
            "key0": None if self._key0 is None else float(self._key0),
            "n_observed": int(self.n_observed),
            "n_dropped": int(self.n_dropped),
            "recent": [[float(v) for v in p] for p in self._recent],
            "buckets": [[int(i)] + [float(v) for v in self._buckets[i]] for i in sorted(self._buckets)],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (refuses a newer format version)."""
        if state.get("format") != _STATE_FORMAT:
            raise InvalidInputError("not a LossHistory state (missing or wrong 'format')")
        if int(state.get("version", 0)) > _STATE_VERSION:
            raise InvalidInputError(
                f"LossHistory state version {state['version']} is newer than this lightning-scaling "
                f"understands ({_STATE_VERSION}); upgrade lightning-scaling to resume this run"
            )
        self.recent = int(state["recent_size"])
        self.max_buckets = int(state["max_buckets"])
        self._log_ratio = float(state["log_ratio"])
        self._key0 = None if state["key0"] is None else float(state["key0"])
        self.n_observed = int(state["n_observed"])
        self.n_dropped = int(state["n_dropped"])
        self._recent = deque(tuple(float(v) for v in p) for p in state["recent"])
        self._buckets = {int(b[0]): [float(v) for v in b[1:]] for b in state["buckets"]}
