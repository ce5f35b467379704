"""Peak-normalised features of one LR schedule, as the schedule-aware laws read them.

The LR area S1, the annealing features (convex_bound's drop of the bound's variance term,
Tissue's annealing area S2, the multi-power loss drop LD) at any (fractional) steps, and the
convex bound's reading of the share of the loss a decay removes (``convex_ratio``). Built on
``core.schedule`` (O(T) prefix sums), cached per schedule (``storage.cached``) and memoised
per step inside the cached dict.
"""

from __future__ import annotations

import numpy as np

from .. import schedule as sch
from .storage import cached, content_digest


def schedule_features(lr: np.ndarray, digest: bytes | None = None) -> dict:
    """Peak-normalised schedule features of one LR array (cached: fits and forecasts reuse them)."""
    def make():
        u, peak = sch.peak_normalized(lr)
        return {"u": u, "peak": peak, "S1": sch.lr_area(u), "warmup_end": sch.warmup_end(u),
                "horizon": u.size - 1}

    return cached(("features", digest if digest is not None else content_digest(lr)), make)


def _s2(feat: dict, momentum: float) -> np.ndarray:
    key = ("S2", round(float(momentum), 12))
    if key not in feat:
        feat[key] = sch.annealing_area(feat["u"], momentum)
    return feat[key]


def _bound_sums(feat: dict, held: bool) -> sch.BoundSums:
    """Bound prefix sums of the schedule, or (held=True) of the schedule held at its peak
    after the warm-up: the reference the annealing is measured against."""
    key = "bsum_held" if held else "bsum"
    if key not in feat:
        u = feat["u"]
        if held:
            u = u.copy()
            u[feat["warmup_end"]:] = 1.0
        feat[key] = sch.bound_sums(u)
    return feat[key]


def at_steps(feat: dict, x, values_at) -> np.ndarray:
    """A feature defined at integer steps, at (possibly fractional) steps x: linear between
    neighbours, NaN beyond the schedule; evaluated only at the steps asked for."""
    x = np.asarray(x, dtype=float)
    inside = (x >= 0) & (x <= feat["horizon"])
    xc = np.where(inside, x, 0.0)
    lo = np.floor(xc).astype(np.int64)
    hi = np.minimum(lo + 1, feat["horizon"])
    steps, inv = np.unique(np.concatenate([lo.ravel(), hi.ravel()]), return_inverse=True)
    vals = values_at(steps)[inv]
    v_lo, v_hi = vals[: lo.size].reshape(x.shape), vals[lo.size:].reshape(x.shape)
    out = v_lo + (xc - lo) * (v_hi - v_lo)
    return np.where(inside, out, np.nan)


def _dv_at(feat: dict, x) -> np.ndarray:
    """convex_bound's annealing feature: variance term held at the peak minus the schedule's
    (zero during the warm-up; never negative: just after an abrupt drop the bound spikes, an
    artefact of the proof, not a loss that rises). Values are memoised per step: a forecast
    mixture evaluates every member at the same steps."""
    def compute(steps):
        s = np.maximum(steps, 1)
        _, v = sch.convex_bound(_bound_sums(feat, False), s)
        _, v_held = sch.convex_bound(_bound_sums(feat, True), s)
        return np.maximum(v_held - v, 0.0) * (steps > feat["warmup_end"])

    def values_at(steps):
        known_s, known_v = feat.get("dv_memo", (np.zeros(0, np.int64), np.zeros(0)))
        pos = np.minimum(np.searchsorted(known_s, steps), max(known_s.size - 1, 0))
        hit = (known_s.size > 0) & (known_s[pos] == steps) if known_s.size else np.zeros(steps.size, bool)
        out = np.empty(steps.size)
        out[hit] = known_v[pos[hit]]
        if (~hit).any():
            new_s = steps[~hit]
            out[~hit] = compute(new_s)
            all_s = np.concatenate([known_s, new_s])
            order = np.argsort(all_s, kind="stable")
            feat["dv_memo"] = (all_s[order], np.concatenate([known_v, out[~hit]])[order])
        return out

    return at_steps(feat, x, values_at)


def _ld_at(feat: dict, shape: dict, x) -> np.ndarray:
    """Unit multi-power drop at (possibly fractional) steps x; NaN beyond the schedule."""
    if "chunks" not in feat:
        feat["chunks"] = sch.drop_chunks(feat["u"])
    return at_steps(feat, x, lambda s: sch.multipower_drop(feat["chunks"], s, shape["C"], shape["beta"],
                                                            shape["gamma"]))


def interp_at(arr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Feature values at (possibly fractional) steps x; NaN beyond the schedule."""
    x = np.asarray(x, dtype=float)
    grid = np.arange(arr.size, dtype=float)
    out = np.interp(x, grid, arr)
    return np.where((x >= 0) & (x <= arr.size - 2), out, np.nan)


def convex_ratio(lr, alpha: float = 1.0) -> float:
    """Share of the excess loss at the horizon that the schedule's decay removes, by the
    convex bound: 1 - bound(schedule) / bound(peak held), with D/G set so that the peak LR is
    the schedule's optimal base LR and the bound's bias term falling as S1**-alpha (alpha = 1:
    the theorem itself). 0 for a schedule that never decays."""
    return convex_ratio_of(schedule_features(sch.as_schedule(lr)), alpha)


def convex_ratio_of(feat: dict, alpha: float = 1.0) -> float:
    T = feat["horizon"]
    if "cvxT" not in feat:
        steps = np.array([T])
        _, v = sch.convex_bound(_bound_sums(feat, False), steps)
        _, v_held = sch.convex_bound(_bound_sums(feat, True), steps)
        held = _bound_sums(feat, True)
        feat["cvxT"] = (float(v[0]), float(v_held[0]), float(feat["S1"][T]), float(held.P[held.count[T]]))
    v, v_held, S1, S1_held = feat["cvxT"]
    if not (v > 0 and S1 > 0 and S1_held > 0):
        return 0.0
    bound = v / alpha + v  # at the optimal base LR the bias term is variance / alpha
    bound_held = v / alpha * (S1_held / S1) ** -alpha + v_held
    return float(min(max(1.0 - bound / bound_held, 0.0), 1.0))


# ----------------------------------------------------------------------------- the laws
def powerlaw(S1x: np.ndarray, alpha) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return np.where(S1x > 0, np.exp(-alpha * np.log(np.maximum(S1x, 1e-300))), np.nan)


def anneal_at(law: str, feat: dict, params: dict, x) -> np.ndarray:
    if law == "convex_bound":
        return _dv_at(feat, x)
    if law == "tissue":
        return interp_at(_s2(feat, params.get("momentum", sch.DEFAULT_ANNEAL_MOMENTUM)), x)
    return _ld_at(feat, params, x)
