"""The future LR of a live torch scheduler, evaluated without stepping (or touching) it.

``future_lrs(trainer, last_step)`` and ``simulate_scheduler(scheduler, num_calls)``: the LR
a ``torch.optim.lr_scheduler`` will produce at every optimizer step, for the schedule-aware
fits of ``lightning_scaling.core``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch.optim import lr_scheduler as sched_mod

from ..errors import InvalidInputError

# Every built-in torch scheduler changes a param group's LR, on each call of step(), by an
# affine map lr <- a[e] * lr + b[e] whose coefficients depend only on the scheduler's own
# epoch counter e and its configuration: a chainable scheduler multiplies the current LR
# (b = 0; CosineAnnealingLR adds an eta_min term), a closed-form one (LambdaLR, OneCycleLR)
# sets it (a = 0). So the LR after every call of a fresh scheduler is the solution of a
# first-order linear recurrence, computed here with numpy (a cumulative product when b = 0,
# the values themselves when a = 0) instead of stepping a copy a million times. Composite
# schedulers compose the maps (ChainedScheduler) or switch between them at milestones
# (SequentialLR). The result is checked against the live scheduler's current LR before it
# is trusted, so a scheduler that behaves differently (an older torch, a subclass, an LR
# changed by hand) is reported as unknown instead of being forecast wrongly.


class UnknownSchedule(Exception):
    """Internal: the scheduler cannot be simulated; the message says why."""


@dataclass
class _Maps:
    """Affine maps of one scheduler: init (constructor's step), restart (SequentialLR
    milestone, ``_update_lr(0)``) and a[e], b[e] for the calls e = 1..n (index 0 unused)."""

    init: tuple[float, float]
    restart: tuple[float, float] | None
    a: np.ndarray
    b: np.ndarray


def _epochs(n: int) -> np.ndarray:
    return np.arange(n + 1, dtype=np.int64)


def _eval_lambda(fn: Callable[[int], float], n: int, name: str) -> np.ndarray:
    # A user function: called once per epoch, exactly as torch calls it (an int argument).
    try:
        return np.fromiter(map(fn, range(n + 1)), dtype=float, count=n + 1)
    except Exception as exc:  # noqa: BLE001 - any failure of user code means "unknown"
        raise UnknownSchedule(f"{name}'s lr_lambda raised {type(exc).__name__}: {exc}") from None


def _maps(s, group: int, n: int, sched_mod) -> _Maps:
    """Affine maps of a non-composite scheduler ``s`` for param group ``group``."""
    kind = type(s)
    name = kind.__name__
    base = float(s.base_lrs[group])
    e = _epochs(n)
    ones = np.ones(n + 1)
    zeros = np.zeros(n + 1)
    if kind is sched_mod.LambdaLR:
        vals = base * _eval_lambda(s.lr_lambdas[group], n, name)
        return _Maps((0.0, vals[0]), (0.0, vals[0]), zeros, vals)
    if kind is sched_mod.MultiplicativeLR:
        fac = _eval_lambda(s.lr_lambdas[group], n, name)
        return _Maps((1.0, 0.0), (fac[0], 0.0), fac, zeros)
    if kind is sched_mod.StepLR:
        a = np.where((e > 0) & (e % s.step_size == 0), float(s.gamma), 1.0)
        return _Maps((1.0, 0.0), (0.0, base), a, zeros)
    if kind is sched_mod.MultiStepLR:
        a = ones.copy()
        for m, count in s.milestones.items():
            if 0 <= m <= n:
                a[m] = float(s.gamma) ** count
        init = float(s.gamma) ** s.milestones[0] if 0 in s.milestones else 1.0
        first = float(s.gamma) ** bisect.bisect_right(sorted(s.milestones.elements()), 0)
        return _Maps((init, 0.0), (0.0, base * first), a, zeros)
    if kind is sched_mod.ConstantLR:
        a = ones.copy()
        if 0 < s.total_iters <= n:
            a[s.total_iters] = 1.0 / s.factor
        restart = base * (s.factor + (0 >= s.total_iters) * (1 - s.factor))
        return _Maps((float(s.factor), 0.0), (0.0, restart), a, zeros)
    if kind is sched_mod.LinearLR:
        sf, ef, total = float(s.start_factor), float(s.end_factor), s.total_iters
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = 1.0 + (ef - sf) / (total * sf + (e - 1) * (ef - sf))
        a = np.where((e >= 1) & (e <= total), ratio, 1.0)
        return _Maps((sf, 0.0), (0.0, base * sf), a, zeros)
    if kind is sched_mod.ExponentialLR:
        return _Maps((1.0, 0.0), (0.0, base), np.full(n + 1, float(s.gamma)), zeros)
    if kind is sched_mod.PolynomialLR:
        total, power = s.total_iters, float(s.power)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ((1.0 - e / total) / (1.0 - (e - 1) / total)) ** power
        a = np.where((e >= 1) & (e <= total), ratio, 1.0)
        return _Maps((1.0, 0.0), (0.0, base), a, zeros)
    if kind is sched_mod.CosineAnnealingLR:
        T, em = s.T_max, float(s.eta_min)
        jump = (e >= 1) & ((e - 1 - T) % (2 * T) == 0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ratio = (1 + np.cos(np.pi * e / T)) / (1 + np.cos(np.pi * (e - 1) / T))
            a = np.where(jump, 1.0, ratio)
            b = np.where(jump, (base - em) * (1 - math.cos(math.pi / T)) / 2, em * (1 - ratio))
        a[0], b[0] = 1.0, 0.0
        return _Maps((1.0, 0.0), (0.0, base), a, b)
    if kind is sched_mod.OneCycleLR:
        if n > s.total_steps:
            raise UnknownSchedule(
                f"OneCycleLR was built for total_steps={s.total_steps} scheduler calls but the "
                f"run plans {n}; torch raises past total_steps"
            )
        vals = _one_cycle(s, s.optimizer.param_groups[group], e)
        return _Maps((0.0, vals[0]), (0.0, vals[0]), zeros, vals)
    if kind is sched_mod.CosineAnnealingWarmRestarts:
        vals = _warm_restarts(s, base, e)
        return _Maps((0.0, vals[0]), None, zeros, vals)
    raise UnknownSchedule(f"{name} is not a scheduler this version can simulate")


def _one_cycle(s, group: dict, e: np.ndarray) -> np.ndarray:
    start = 0.0
    out = np.empty(e.size)
    done = np.zeros(e.size, dtype=bool)
    phases = s._schedule_phases
    for i, phase in enumerate(phases):
        end = phase["end_step"]
        sel = ~done & ((e <= end) | (i == len(phases) - 1))
        pct = (e[sel] - start) / (end - start)
        lo, hi = float(group[phase["start_lr"]]), float(group[phase["end_lr"]])
        if getattr(s, "_anneal_func_type", "cos") == "linear":
            out[sel] = (hi - lo) * pct + lo
        else:
            out[sel] = hi + (lo - hi) / 2.0 * (np.cos(np.pi * pct) + 1)
        done |= sel
        start = end
    return out


def _warm_restarts(s, base: float, e: np.ndarray) -> np.ndarray:
    T0, mult, em = s.T_0, s.T_mult, float(s.eta_min)
    if mult == 1:
        t_cur, t_i = e % T0, np.full(e.size, T0)
    else:
        k = 0
        bounds = [0]
        while bounds[-1] <= e[-1]:
            bounds.append(bounds[-1] + T0 * mult**k)
            k += 1
        bounds_arr = np.array(bounds, dtype=np.int64)
        cycle = np.searchsorted(bounds_arr, e, side="right") - 1
        t_cur = e - bounds_arr[cycle]
        t_i = T0 * np.power(float(mult), cycle)
    return em + (base - em) * (1 + np.cos(np.pi * t_cur / t_i)) / 2


def _compose(first: tuple[np.ndarray, np.ndarray], then: tuple[np.ndarray, np.ndarray]):
    """The map 'first, then then' (both applied to the LR in that order)."""
    a1, b1 = first
    a2, b2 = then
    return a2 * a1, a2 * b1 + b2


def _solve(x0: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x[e] = a[e] * x[e-1] + b[e] for e = 0..len-1, with x[-1] = x0."""
    if not np.any(b):
        out = np.empty(a.size + 1)
        out[0] = x0
        out[1:] = a
        return np.cumprod(out)[1:]
    if not np.any(a):
        return b.copy()
    jumps = np.flatnonzero(b)
    if jumps.size * 50 < b.size:
        # few additive terms (cosine restarts): cumulative products between them
        out = np.empty(a.size)
        x = float(x0)
        edges = np.append(jumps, a.size)
        if edges[0] > 0:
            out[: edges[0]] = x * np.cumprod(a[: edges[0]])
            x = out[edges[0] - 1]
        for lo, hi in zip(edges[:-1], edges[1:]):
            x = a[lo] * x + b[lo]
            out[lo] = x
            if hi > lo + 1:
                out[lo + 1 : hi] = x * np.cumprod(a[lo + 1 : hi])
                x = out[hi - 1]
        return out
    # general affine steps (e.g. cosine with eta_min): blocks of a closed-form scan,
    # x[j] = P[j] * (x_in + sum_{i<=j} b[i] / P[i]) with P the running product of a,
    # stepped one by one only where P vanishes or underflows inside a block.
    out = np.empty(a.size)
    x = float(x0)
    block = 512
    for lo in range(0, a.size, block):
        ab, bb = a[lo : lo + block], b[lo : lo + block]
        P = np.cumprod(ab)
        if np.all(np.abs(P) > 1e-250):
            seg = P * (x + np.cumsum(bb / P))
        else:
            seg = np.empty(ab.size)
            for i, (ai, bi) in enumerate(zip(ab.tolist(), bb.tolist())):
                x = ai * x + bi
                seg[i] = x
        out[lo : lo + ab.size] = seg
        x = float(seg[-1])
    return out


def _composite_maps(s, group: int, n: int, sched_mod) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) over e = 0..n, e = 0 being the construction, of any supported scheduler."""
    if type(s) is sched_mod.ChainedScheduler:
        a, b = np.ones(n + 1), np.zeros(n + 1)
        for sub in s._schedulers:
            if type(sub) in (sched_mod.ChainedScheduler, sched_mod.SequentialLR):
                raise UnknownSchedule("a ChainedScheduler nesting another composite scheduler")
            m = _maps(sub, group, n, sched_mod)
            sa, sb = m.a.copy(), m.b.copy()
            sa[0], sb[0] = m.init
            a, b = _compose((a, b), (sa, sb))
        return a, b
    if type(s) is sched_mod.SequentialLR:
        subs, milestones = s._schedulers, list(s._milestones)
        if any(type(sub) in (sched_mod.ChainedScheduler, sched_mod.SequentialLR) for sub in subs):
            raise UnknownSchedule("a SequentialLR nesting another composite scheduler")
        if any(m2 <= m1 for m1, m2 in zip(milestones, milestones[1:])) or (milestones and milestones[0] <= 0):
            raise UnknownSchedule(f"SequentialLR milestones {milestones} are not increasing and positive")
        a, b = np.empty(n + 1), np.empty(n + 1)
        starts = [0] + milestones
        for j, sub in enumerate(subs):
            lo = starts[j]
            if lo > n:
                break
            hi = min(starts[j + 1] - 1 if j + 1 < len(starts) else n, n)
            m = _maps(sub, group, hi - lo, sched_mod)
            a[lo : hi + 1], b[lo : hi + 1] = m.a, m.b
            if j == 0:
                a[0], b[0] = m.init
            else:
                if m.restart is None:
                    raise UnknownSchedule(f"{type(sub).__name__} inside SequentialLR")
                a[lo], b[lo] = m.restart
        return a, b
    m = _maps(s, group, n, sched_mod)
    a, b = m.a.copy(), m.b.copy()
    a[0], b[0] = m.init
    return a, b


def _calls_so_far(s, sched_mod) -> int:
    if type(s) is sched_mod.ChainedScheduler:
        return int(s._schedulers[0].last_epoch)
    return int(s.last_epoch)


def _group_lr(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item() if hasattr(lr, "item") else lr)


def simulate_scheduler(scheduler, num_calls: int, *, group: int = 0,
                       check_live: bool = True) -> tuple[np.ndarray | None, str]:
    """The LR a torch scheduler gives param group ``group`` after 0..num_calls step() calls.

    Counted from the scheduler's construction (as in a fresh run): element 0 is the LR the
    first optimizer step uses, element e the LR after e calls of ``scheduler.step()``. The
    live scheduler and its optimizer are only read, never stepped or modified; a user's
    ``lr_lambda`` is called once per epoch.

    Supported: LambdaLR, MultiplicativeLR, StepLR, MultiStepLR, ConstantLR, LinearLR,
    ExponentialLR, PolynomialLR, CosineAnnealingLR, OneCycleLR, CosineAnnealingWarmRestarts,
    and SequentialLR / ChainedScheduler of those (e.g. linear warm-up then cosine).

    Args:
        scheduler: a ``torch.optim.lr_scheduler`` instance.
        num_calls: how many step() calls to simulate (>= 0).
        group: param group index.
        check_live: verify that the simulation reproduces the scheduler's current LR
            (at its current epoch) before returning it.

    Returns:
        (lr array of length num_calls + 1, "") or (None, "schedule unknown: <why>"); never
        raises for an unsupported or misbehaving scheduler.
    """
    num_calls = int(num_calls)
    if num_calls < 0:
        raise InvalidInputError(f"num_calls must be >= 0, got {num_calls}")
    name = type(scheduler).__name__
    if isinstance(scheduler, sched_mod.ReduceLROnPlateau):
        return None, "schedule unknown: ReduceLROnPlateau changes the LR in response to a metric"
    optimizer = getattr(scheduler, "optimizer", None)
    if optimizer is None or not hasattr(optimizer, "param_groups"):
        return None, f"schedule unknown: {name} has no optimizer"
    if not 0 <= group < len(optimizer.param_groups):
        raise InvalidInputError(f"group {group} out of range ({len(optimizer.param_groups)} groups)")
    try:
        live_calls = _calls_so_far(scheduler, sched_mod)
        n = max(num_calls, live_calls) if check_live else num_calls
        a, b = _composite_maps(scheduler, group, n, sched_mod)
        start = float(optimizer.param_groups[group]["initial_lr"])
        lrs = _solve(start, a, b)
        if not np.all(np.isfinite(lrs)):
            raise UnknownSchedule(f"{name} simulation produced a non-finite LR")
        if check_live and live_calls >= 0:
            live = _group_lr(optimizer.param_groups[group])
            sim = lrs[live_calls]
            if not math.isclose(sim, live, rel_tol=1e-6, abs_tol=1e-12 * max(abs(start), 1e-300)):
                raise UnknownSchedule(
                    f"simulated {name} gives LR {sim:.6g} after {live_calls} calls but the "
                    f"optimizer holds {live:.6g} (changed by hand, a subclass, or another torch "
                    f"version)"
                )
    except UnknownSchedule as why:
        return None, f"schedule unknown: {why}"
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        return None, f"schedule unknown: cannot read {name} ({type(exc).__name__}: {exc})"
    return lrs[: num_calls + 1], ""


def scheduler_calls_before_step(last_step: int, *, interval: str = "step", frequency: int = 1,
                                batches_per_epoch: float = math.inf,
                                accumulate_grad_batches: int = 1) -> np.ndarray:
    """How many times Lightning has stepped the scheduler before optimizer step s, s = 0..last_step.

    Mirrors Lightning's training loop: an optimizer step happens on every
    ``accumulate_grad_batches``-th batch of an epoch and on its last batch; a scheduler with
    ``interval="step"`` is stepped after an optimizer step taken on batch b (index within the
    epoch) when ``(b + 1) % frequency == 0``; one with ``interval="epoch"`` after epochs e
    with ``(e + 1) % frequency == 0``. ``batches_per_epoch`` inf means an endless loader.
    """
    if interval not in ("step", "epoch"):
        raise InvalidInputError(f"interval must be 'step' or 'epoch', got {interval!r}")
    n = int(last_step) + 1
    if n <= 0:
        raise InvalidInputError(f"last_step must be >= 0, got {last_step}")
    f = max(int(frequency), 1)
    k = max(int(accumulate_grad_batches), 1)
    s = np.arange(n, dtype=np.int64)
    if not math.isfinite(batches_per_epoch) or batches_per_epoch <= 0:
        if interval == "epoch":
            return np.zeros(n, dtype=np.int64)
        # optimizer step j happens on batch (j + 1) * k - 1
        fires = ((s + 1) * k) % f == 0
        return np.concatenate([[0], np.cumsum(fires)[:-1]])
    nb = int(batches_per_epoch)
    b = np.arange(nb)
    opt_batches = b[((b + 1) % k == 0) | (b == nb - 1)]
    per_epoch = opt_batches.size
    epoch, i = s // per_epoch, s % per_epoch
    if interval == "epoch":
        return epoch // f
    fires = ((opt_batches + 1) % f == 0).astype(np.int64)
    before = np.concatenate([[0], np.cumsum(fires)])
    return epoch * before[-1] + before[i]


def future_lrs(trainer, last_step: int) -> tuple[np.ndarray | None, str]:
    """The LR at every optimizer step 0..last_step of the trainer's first optimizer.

    Simulates the first scheduler that drives ``trainer.optimizers[0]`` (Lightning's
    ``lr_scheduler_configs``: interval "step" or "epoch", frequency, gradient accumulation)
    from the start of training, without stepping or modifying it; param group 0.

    Returns:
        (lr, reason): lr is a float array of length last_step + 1, or None when the
        schedule cannot be known in advance; reason is "" or says why (e.g. "schedule
        unknown: ReduceLROnPlateau changes the LR in response to a metric"). A trainer
        without a scheduler gives a constant LR and the reason "no LR scheduler: constant
        LR". Never raises for an unsupported setup.
    """
    last_step = int(last_step)
    if last_step < 0:
        raise InvalidInputError(f"last_step must be >= 0, got {last_step}")
    optimizers = list(getattr(trainer, "optimizers", None) or [])
    if not optimizers:
        return None, "schedule unknown: the trainer has no optimizer (yet)"
    optimizer = optimizers[0]
    configs = [c for c in (getattr(trainer, "lr_scheduler_configs", None) or [])
               if getattr(c.scheduler, "optimizer", None) is optimizer]
    module = getattr(trainer, "lightning_module", None)
    automatic = bool(getattr(module, "automatic_optimization", True))
    if not configs:
        lr = _group_lr(optimizer.param_groups[0])
        return np.full(last_step + 1, lr), "no LR scheduler: constant LR"
    config = configs[0]
    if config.reduce_on_plateau:
        return None, "schedule unknown: ReduceLROnPlateau changes the LR in response to a metric"
    if not automatic:
        return None, "schedule unknown: manual optimization steps the scheduler in user code"
    try:
        calls = scheduler_calls_before_step(
            last_step,
            interval=config.interval,
            frequency=config.frequency,
            batches_per_epoch=float(getattr(trainer, "num_training_batches", math.inf) or math.inf),
            accumulate_grad_batches=int(getattr(trainer, "accumulate_grad_batches", 1) or 1),
        )
    except InvalidInputError as exc:
        return None, f"schedule unknown: {exc}"
    values, why = simulate_scheduler(config.scheduler, int(calls[-1]))
    if values is None:
        return None, why
    return values[calls], ""
