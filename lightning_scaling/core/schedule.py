"""Learning-rate schedule features (numpy only).

Pure numpy features of a schedule ``lr[s]`` (the LR used by optimizer step s, for every
step 0..horizon) that schedule-aware loss laws need, all O(T) in the horizon T: the LR
area S1 (Tissue et al. 2024, Luo et al. 2025), the momentum-weighted annealing area S2
(Tissue et al. 2024), the loss-drop sum LD of the multi-power law (Luo et al. 2025) and the
sums of the convex last-iterate bound (Schaipp et al. 2025). The LR is divided by its peak
first, so every fitted coefficient is "per unit of peak LR" and transfers between runs whose
peak LR differs. The LR a live torch scheduler will produce is read by
``lightning_scaling.trainer.scheduler``.

Step convention used throughout: the loss logged at step t was computed after the updates
of steps 0..t-1, so it has "seen" ``lr[0..t-1]``: ``S1[t] = sum(lr[:t])``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

# Tissue et al. 2024 use a decay factor of 0.999 for the momentum of LR drops: a drop keeps
# lowering the loss for roughly 1 / (1 - 0.999) = 1000 steps after it happened.
DEFAULT_ANNEAL_MOMENTUM = 0.999


def as_schedule(lr) -> np.ndarray:
    """Validate an LR schedule: 1-D, finite, >= 0, positive somewhere. Returns float64."""
    try:
        arr = np.asarray(lr, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"lr must be a numeric array: {exc}") from None
    if arr.ndim != 1 or arr.size < 2:
        raise InvalidInputError(f"lr must be a 1-D array with one LR per step, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InvalidInputError(f"lr must be finite at every step; lr[{bad}] = {arr[bad]!r}")
    if np.any(arr < 0):
        bad = int(np.flatnonzero(arr < 0)[0])
        raise InvalidInputError(f"lr must be >= 0; lr[{bad}] = {arr[bad]!r}")
    if not np.any(arr > 0):
        raise InvalidInputError("lr is zero at every step")
    return arr


def peak_normalized(lr) -> tuple[np.ndarray, float]:
    """(lr / peak, peak): the schedule as a multiplier of its peak LR."""
    arr = as_schedule(lr)
    peak = float(arr.max())
    return arr / peak, peak


def warmup_end(lr) -> int:
    """Index of the first step at the peak LR: steps before it are warm-up."""
    arr = np.asarray(lr, dtype=float)
    return int(np.argmax(arr >= arr.max() * (1 - 1e-9)))


def lr_area(u) -> np.ndarray:
    """S1[t] = sum(u[:t]) for t = 0..len(u): the LR area before the loss at step t."""
    u = np.asarray(u, dtype=float)
    out = np.empty(u.size + 1)
    out[0] = 0.0
    np.cumsum(u, out=out[1:])
    return out


def lr_drops(u) -> np.ndarray:
    """d[s] = u[s-1] - u[s] after warm-up (0 during warm-up and at s = 0).

    Rises during warm-up are not annealing; a rise after the peak (re-warming) stays as a
    negative drop, which both laws treat as undoing part of an earlier anneal.
    """
    u = np.asarray(u, dtype=float)
    d = np.zeros_like(u)
    d[1:] = u[:-1] - u[1:]
    d[: warmup_end(u) + 1] = 0.0
    return d


def annealing_area(u, momentum: float = DEFAULT_ANNEAL_MOMENTUM) -> np.ndarray:
    """Tissue et al.'s S2[t] for t = 0..len(u): sum over s < t of m[s], m[s] = mom*m[s-1] + d[s].

    Units: steps x (fraction of peak LR). A drop of size d long ago contributes
    d / (1 - momentum); a fresh one grows towards that over ~1 / (1 - momentum) steps.
    """
    if not 0.0 <= momentum < 1.0:
        raise InvalidInputError(f"momentum must be in [0, 1), got {momentum!r}")
    return lr_area(_decayed_sum(lr_drops(u), momentum))


def _decayed_sum(d: np.ndarray, lam: float) -> np.ndarray:
    """m[s] = lam * m[s-1] + d[s] (m[-1] = 0), vectorised in blocks (O(T), no overflow).

    Inside a block starting at b: m[b+j] = lam**j * (lam * m[b-1] + sum_{i<=j} d[b+i] lam**-i);
    blocks are short enough that lam**-j stays far from overflow.
    """
    n = d.size
    out = np.empty(n)
    if lam == 0.0:
        out[:] = d
        return out
    block = int(max(1, min(4096, math.floor(300.0 / -math.log(lam))))) if lam < 1 else 4096
    powers = lam ** np.arange(block, dtype=float)
    carry = 0.0
    for b in range(0, n, block):
        seg = d[b : b + block]
        p = powers[: seg.size]
        m = p * (lam * carry + np.cumsum(seg / p))
        out[b : b + seg.size] = m
        carry = float(m[-1])
    return out


@dataclass(frozen=True)
class DropChunks:
    """The post-warm-up LR drops of a schedule, grouped for the multi-power law's sum.

    The multi-power law's loss drop at step t is a sum over every earlier step k:
    LD(t) = sum_k d[k] * G(u[k]**-gamma * (S1[t] - S1[k])). Evaluated directly that is
    O(T) per t. Here consecutive drops are grouped into at most ``max_chunks`` chunks of
    equal drop mass (and bounded length); within a chunk the drop-weighted means of S1[k]
    and u[k]**-gamma stand in for each k. G is linear for small arguments, so the chunk
    that contains t (cut at t, exactly, from prefix sums) is nearly exact, and old chunks
    see G where it is flat. Cost per evaluation: O(points x chunks); set-up O(T).
    """

    starts: np.ndarray  # first step of each chunk
    ends: np.ndarray  # one past the last step
    cum_d: np.ndarray  # prefix sums over steps (length T+1) of d, d*S1, |d|-weighted terms
    cum_dS: np.ndarray
    u: np.ndarray
    d: np.ndarray
    S1: np.ndarray


def drop_chunks(u, max_chunks: int = 96, power: float = 1.0) -> DropChunks:
    """Group the drops of the peak-normalised schedule u (see DropChunks).

    With ``power`` p != 1 the drops are those of u**p (``d[s] = u[s-1]**p - u[s]**p``): the
    multi-power sum of a noise floor that is concave in the LR (``forecaster`` uses it);
    chunks are cut where u's own drops are, so the kernel's u**-gamma is unchanged.
    """
    u = np.asarray(u, dtype=float)
    d = lr_drops(u) if power == 1.0 else lr_drops(np.power(np.maximum(u, 0.0), power))
    S1 = lr_area(u)
    T = u.size
    cum_d = np.concatenate([[0.0], np.cumsum(d)])
    cum_dS = np.concatenate([[0.0], np.cumsum(d * S1[:T])])
    nz = np.flatnonzero(d) if power == 1.0 else np.flatnonzero(lr_drops(u))
    if nz.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return DropChunks(empty, empty, cum_d, cum_dS, u, d, S1)
    d_u = d if power == 1.0 else lr_drops(u)
    mass = np.cumsum(np.abs(d_u[nz]))
    total = mass[-1]
    # Boundaries: equal shares of drop mass, no chunk longer than T / max_chunks steps,
    # and a new chunk wherever the drop changes sign (weighted means need one sign).
    label = np.floor(mass / total * max_chunks * (1 - 1e-12)).astype(np.int64)
    span = max(1, int(math.ceil(T / max_chunks)))
    label = label * (T // span + 2) + nz // span
    # and a new chunk whenever u changes by 10%: u**-gamma varies fast where u nears 0
    level = np.floor(np.log(np.maximum(u[nz], 1e-6)) / math.log(1.1)).astype(np.int64)
    sign = np.sign(d_u[nz])
    new = np.ones(nz.size, dtype=bool)
    new[1:] = ((label[1:] != label[:-1]) | (sign[1:] != sign[:-1]) | (nz[1:] - nz[:-1] > span)
               | (level[1:] != level[:-1]))
    first = np.flatnonzero(new)
    starts = nz[first]
    last = np.append(first[1:] - 1, nz.size - 1)
    ends = nz[last] + 1
    return DropChunks(starts, ends, cum_d, cum_dS, u, d, S1)


def multipower_drop(chunks: DropChunks, t, C: float, beta: float, gamma: float) -> np.ndarray:
    """Unit-amplitude multi-power loss drop LD(t)/B at steps t (array of ints).

    LD(t)/B = sum_{k < t} d[k] * (1 - (1 + C * u[k]**-gamma * (S1[t] - S1[k]))**-beta),
    with the chunked approximation of ``DropChunks``; u is the peak-normalised LR.
    """
    t = np.asarray(t, dtype=np.int64)
    if chunks.starts.size == 0:
        return np.zeros(t.shape)
    # drop-weighted mean of u[k]**-gamma inside each (possibly cut) chunk
    ug = np.where(chunks.d != 0, np.power(np.maximum(chunks.u, 1e-12), -gamma), 0.0)
    cum_dg = np.concatenate([[0.0], np.cumsum(chunks.d * ug)])
    flat_t = t.ravel()
    out = np.empty(flat_t.size)
    a = chunks.starts[None, :]
    rows = max(1, 2_000_000 // max(chunks.starts.size, 1))  # bounded memory per batch
    for lo in range(0, flat_t.size, rows):
        tt = flat_t[lo : lo + rows]
        b = np.minimum(chunks.ends[None, :], tt[:, None])
        live = b > a
        b = np.where(live, b, a)
        D = chunks.cum_d[b] - chunks.cum_d[a]
        safe = np.where(D != 0, D, 1.0)
        S_bar = (chunks.cum_dS[b] - chunks.cum_dS[a]) / safe
        g_bar = (cum_dg[b] - cum_dg[a]) / safe
        x = C * g_bar * np.maximum(chunks.S1[tt][:, None] - S_bar, 0.0)
        G = -np.expm1(-beta * np.log1p(x))
        out[lo : lo + tt.size] = np.sum(np.where(live & (D != 0), D * G, 0.0), axis=1)
    return out.reshape(t.shape)


@dataclass(frozen=True)
class BoundSums:
    """Prefix sums of a schedule's positive steps, for ``convex_bound`` (set-up O(T)).

    Steps with a zero LR do not move the iterate, so the bound after them equals the bound
    before them: they are dropped (``count[t]`` positive steps precede the loss at step t).
    """

    P: np.ndarray  # P[j] = sum of the first j positive LRs
    P2: np.ndarray  # same for their squares
    count: np.ndarray  # count[t] = positive LRs among u[0..t-1], t = 0..len(u)


def bound_sums(u) -> BoundSums:
    """Set up ``convex_bound`` for the peak-normalised schedule u."""
    u = np.asarray(u, dtype=float)
    pos = u[u > 0]
    P = np.concatenate([[0.0], np.cumsum(pos)])
    P2 = np.concatenate([[0.0], np.cumsum(pos * pos)])
    count = np.concatenate([[0], np.cumsum(u > 0)])
    return BoundSums(P, P2, count)


BOUND_TAIL = 64
"""convex_bound sums the last this many terms exactly; older ones in geometric buckets."""

BOUND_RATIO = 1.05
"""Each older bucket reaches this factor further back than the one after it."""


def convex_bound(sums: BoundSums, t) -> tuple[np.ndarray, np.ndarray]:
    """The two schedule terms of the last-iterate bound of SGD at steps t: (bias, variance).

    Schaipp et al. 2025 (Thm. 1, after Defazio et al. 2023) bound the suboptimality of the
    last iterate of SGD with step sizes eta_1..eta_n on a convex G-Lipschitz problem by
    ``D**2 * bias + G**2 * variance`` with (E_k = sum_{j>=k} eta_j, Q_k = sum_{j>=k} eta_j**2)

        bias = 1 / (2 E_1),
        variance = Q_1 / (2 E_1) + 1/2 sum_{k<n} eta_k / E_{k+1} * Q_k / E_k.

    Here eta are the positive LRs of u[0..t-1] (the loss at step t has seen those). Using
    eta_k / (E_{k+1} E_k) = 1/E_{k+1} - 1/E_k, the last ``BOUND_TAIL`` terms are summed
    exactly and older ones in buckets (each ``BOUND_RATIO`` times further back), with Q
    linear in E inside a bucket (exact for a constant LR, where the sum is harmonic): cost
    O(len(t) * log T), relative error below 1e-3 (largest just after an abrupt LR drop). Units: 1 / (steps x peak LR)
    and peak LR.
    """
    t = np.asarray(t, dtype=np.int64)
    m = sums.count[np.clip(t.ravel(), 0, sums.count.size - 1)]
    P, P2 = sums.P, sums.P2
    Pm, P2m = P[m][:, None], P2[m][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        E0 = P[m]
        bias = np.where(m > 0, 0.5 / E0, np.inf)
        head = np.where(m > 0, 0.5 * P2[m] / E0, 0.0)
        # exact: k = m-2 .. m-1-BOUND_TAIL (the last positive step m-1 has no term)
        k = m[:, None] - 2 - np.arange(BOUND_TAIL)[None, :]
        live = k >= 0
        kk = np.maximum(k, 0)
        Ek, Ek1, Qk = Pm - P[kk], Pm - P[kk + 1], P2m - P2[kk]
        exact = np.where(live & (Ek1 > 0), (1.0 / Ek1 - 1.0 / Ek) * Qk, 0.0).sum(axis=1)
        # buckets [a, b): b from m-1-BOUND_TAIL back to 0, each BOUND_RATIO times further
        top = int(max(m.max(initial=0), 1))
        n_b = int(math.ceil(math.log(max(top / BOUND_TAIL, 1.0) + 1.0) / math.log(BOUND_RATIO))) + 2
        off = np.unique(np.ceil((BOUND_TAIL + 1) * BOUND_RATIO ** np.arange(n_b)).astype(np.int64))
        off = np.concatenate([[BOUND_TAIL + 1], off[off > BOUND_TAIL + 1]])
        bnd = np.maximum(m[:, None] - off[None, :], 0)
        b, a = bnd[:, :-1], bnd[:, 1:]
        Ea, Eb = Pm - P[a], Pm - P[b]
        Qa, Qb = P2m - P2[a], P2m - P2[b]
        width = b - a
        ok = (width > 0) & (Ea > Eb) & (Eb > 0)
        s = np.where(ok, (Qa - Qb) / (Ea - Eb), 0.0)
        h = np.where(ok, (Ea - Eb) / np.maximum(width, 1), 0.0)
        logs = np.log(np.where(ok, (Ea - 0.5 * h) / (Eb - 0.5 * h), 1.0))
        older = np.where(ok, (Qb - s * Eb) * (1.0 / Eb - 1.0 / Ea) + s * logs, 0.0).sum(axis=1)
    variance = head + 0.5 * (exact + older)
    return bias.reshape(t.shape), variance.reshape(t.shape)


def convex_bound_exact(u, t) -> tuple[np.ndarray, np.ndarray]:
    """Reference O(T) per point evaluation of ``convex_bound`` (for tests)."""
    u = np.asarray(u, dtype=float)
    bias, var = [], []
    for ti in np.atleast_1d(t):
        eta = u[: int(ti)]
        eta = eta[eta > 0]
        E = np.cumsum(eta[::-1])[::-1]
        Q = np.cumsum((eta * eta)[::-1])[::-1]
        terms = eta[:-1] / E[1:] * Q[:-1] / E[:-1]
        bias.append(0.5 / E[0])
        var.append(0.5 * Q[0] / E[0] + 0.5 * float(np.sum(terms)))
    return np.array(bias), np.array(var)


def multipower_drop_exact(u, t, C: float, beta: float, gamma: float, power: float = 1.0) -> np.ndarray:
    """Reference O(T) per point evaluation of ``multipower_drop`` (for tests); ``power`` as in
    ``drop_chunks``."""
    u = np.asarray(u, dtype=float)
    d = lr_drops(np.power(u, power)) if power != 1.0 else lr_drops(u)
    S1 = lr_area(u)
    out = []
    for ti in np.atleast_1d(t):
        k = np.arange(int(ti))
        k = k[d[k] != 0]
        x = C * np.power(u[k], -gamma) * (S1[int(ti)] - S1[k])
        out.append(float(np.sum(d[k] * (1 - (1 + x) ** -beta))))
    return np.array(out)
