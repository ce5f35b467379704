"""Divergence: non-finite losses and sudden spikes, as episodes (pure; the callback turns the
events into warnings and notices and, when asked, a stop).

A loss is *spiked* when it lies above the median of the recent (unspiked) losses by more
than both ``spike_ratio`` of that median and ``spike_sigma`` noise scales. An episode begins
at the first spiked or non-finite loss and ends after ``quiet`` losses in a row that are
neither; it is reported once when it is recognised (``DivergenceEvent``) and once when it
ends (``DivergenceEnd``), never once per step:

- a non-finite loss is reported at once;
- spiked losses are reported when the loss comes back under the limit (a spike of one or a
  few batches), or once they have lasted ``patience`` losses in a row (the loss jumped and
  stays up: ``diverged``);
- a jump that lasts ``relevel`` losses is a new level, not a spike: the recent losses are
  replaced by it, and later spikes compare with it. Every message compares with the median
  of the losses just before the episode.

>>> d = DivergenceDetector()
>>> [d.observe(s, 3.0) for s in range(1, 20)].count(None)
19
>>> d.observe(20, 9.0) is None, d.observe(21, 3.0).message()
(True, 'the loss spiked to 9 at step 20 (1 step), 200% above its recent median 3')
>>> d.diverged, d.observe(22, float("nan")).message(), d.diverged
(False, 'the loss is nan at step 22 (recent median 3)', True)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.stats import difference_noise


@dataclass
class DivergenceEvent:
    """A divergence episode was recognised: a non-finite loss, a spike, or a jump that stays
    (losses in loss units; ``baseline``: the median of the finite losses before it began)."""

    step: int  # the step the episode began
    kind: str  # "non-finite", "spike" or "jump"
    loss: float  # the first non-finite loss, or the highest spiked loss so far
    baseline: float
    steps: int = 1  # spiked losses so far
    reported_step: int | None = None  # the step of the report (None: ``step``)

    def message(self) -> str:
        if self.kind == "non-finite":
            return f"the loss is {self.loss} at step {self.step:,} (recent median {self.baseline:.4g})"
        above = f"{100 * (self.loss / self.baseline - 1):.0f}% above its recent median {self.baseline:.4g}"
        if self.kind == "jump":
            return (f"the loss jumped at step {self.step:,} and has stayed up for {self.steps} steps, to "
                    f"{self.loss:.4g} at the highest, {above}")
        return (f"the loss spiked to {self.loss:.4g} at step {self.step:,} ({self.steps} step"
                f"{'s' if self.steps != 1 else ''}), {above}")


@dataclass
class DivergenceEnd:
    """A divergence episode ended at ``step`` (it began at ``since_step``)."""

    step: int
    since_step: int
    kind: str  # the episode's kind when it was reported
    spikes: int  # spiked or non-finite losses in the episode
    peak: float  # the highest finite loss of the episode (NaN when none)
    baseline: float  # the median before the episode
    new_level: float | None = None  # the median the loss settled at (a jump that became the level)

    def message(self) -> str:
        if self.new_level is not None:
            return (f"the loss settled at a new level from step {self.since_step:,}: median {self.new_level:.4g}, "
                    f"{100 * (self.new_level / self.baseline - 1):.0f}% above the {self.baseline:.4g} before; "
                    f"spikes now compare with it")
        return (f"the loss is back under its spike limit at step {self.step:,} (the episode from step "
                f"{self.since_step:,}: {self.spikes} spiked or non-finite losses, the highest {self.peak:.4g}; "
                f"recent median {self.baseline:.4g})")


class DivergenceDetector:
    """Non-finite losses and sudden spikes, as episodes (see the module docstring).

    Args:
        spike_ratio, spike_sigma: a spike is above the recent median by more than this share
            of it and this many noise scales (the robust spread of successive differences).
            Half again the median: one batch's loss has a heavy upper tail (a batch of hard
            text, 20-30% above the median on a small byte-level GPT), which is not divergence;
            a divergence spike doubles the loss or more.
        window: recent unspiked losses the median and the noise are taken over.
        patience: spiked losses in a row that make ``diverged`` true (and a "jump" report).
        quiet: unspiked finite losses in a row that end an episode (default: ``patience``).
        relevel: spiked losses in a row after which they are the new level (default: ``window // 2``).
    """

    def __init__(self, spike_ratio: float = 0.5, spike_sigma: float = 8.0, window: int = 32, patience: int = 3,
                 quiet: int | None = None, relevel: int | None = None):
        self.spike_ratio = float(spike_ratio)
        self.spike_sigma = float(spike_sigma)
        self.window = int(window)
        self.patience = int(patience)
        self.quiet = int(quiet if quiet is not None else max(1, patience))
        self.relevel = int(relevel if relevel is not None else max(self.patience + 1, self.window // 2))
        self._recent: deque[float] = deque(maxlen=self.window)
        self.nonfinite = False
        self.spikes_in_row = 0
        self._run: list[float] = []  # the spiked losses in a row
        self.episode: DivergenceEvent | None = None  # the episode going on (reported or not)
        self.reported = False
        self.calm = 0  # unspiked finite losses in a row, during an episode
        self.episodes = 0  # episodes reported
        self.jumped = False  # a jump was reported and the loss has not come back under its old limit
        self.last_event: DivergenceEvent | None = None
        self._stats: tuple[float, float] | None = None  # (median, noise) of the recent losses
        self._stats_age = 0

    @property
    def in_episode(self) -> bool:
        return self.episode is not None

    @property
    def diverged(self) -> bool:
        """The newest loss is non-finite, or the loss jumped and has not come back under its
        old limit (spiked ``patience`` times in a row; a jump that became the new level counts)."""
        return self.nonfinite or self.spikes_in_row >= self.patience or self.jumped

    def _baseline(self) -> tuple[float, float]:
        if self._stats is None or self._stats_age >= 8:  # refreshed every 8 losses
            r = np.asarray(self._recent) if self._recent else np.zeros(0)
            self._stats = (float(np.median(r)) if r.size else math.nan, difference_noise(r))
            self._stats_age = 0
        return self._stats

    def limit(self) -> float:
        """The loss above which a loss is spiked now (NaN while fewer than 8 losses are known)."""
        baseline, sigma = self._baseline()
        if len(self._recent) < 8 or not math.isfinite(baseline):
            return math.nan
        return baseline + max(self.spike_ratio * abs(baseline), self.spike_sigma * sigma)

    def observe(self, step: int, loss: float) -> DivergenceEvent | DivergenceEnd | None:
        """Take one loss; returns an episode's report or its end, else None."""
        if not math.isfinite(loss):
            return self._nonfinite(int(step), float(loss))
        self.nonfinite = False
        limit = self.limit()
        if math.isfinite(limit) and loss > limit:
            return self._spiked(int(step), float(loss))
        return self._calm(int(step), float(loss))

    def _begin(self, step: int, kind: str, loss: float) -> DivergenceEvent:
        self.episode = DivergenceEvent(step, kind, loss, self._baseline()[0], steps=0)
        self.reported, self.calm = False, 0
        return self.episode

    def _report(self, step: int, kind: str) -> DivergenceEvent:
        ep = self.episode
        ep.kind, ep.reported_step = kind, step
        self.reported = True
        self.jumped = self.jumped or kind == "jump"
        self.episodes += 1
        self.last_event = DivergenceEvent(ep.step, kind, ep.loss, ep.baseline, ep.steps, step)
        return self.last_event

    def _nonfinite(self, step: int, loss: float) -> DivergenceEvent | None:
        self.nonfinite = True
        ep = self.episode or self._begin(step, "non-finite", loss)
        ep.steps += 1
        self.calm = 0
        if self.reported and ep.kind == "non-finite":
            return None
        ep.step = step if ep.kind != "non-finite" else ep.step
        ep.loss = loss
        return self._report(step, "non-finite")

    def _spiked(self, step: int, loss: float) -> DivergenceEvent | DivergenceEnd | None:
        ep = self.episode or self._begin(step, "spike", loss)
        ep.steps += 1
        ep.loss = loss if not math.isfinite(ep.loss) else max(ep.loss, loss)
        self.calm = 0
        self.spikes_in_row += 1
        self._run.append(loss)
        if self.spikes_in_row >= self.relevel:  # a new level, not a spike: follow it
            return self._new_level(step)
        if not self.reported and self.spikes_in_row >= self.patience:
            return self._report(step, "jump")
        return None

    def _calm(self, step: int, loss: float) -> DivergenceEvent | DivergenceEnd | None:
        self.spikes_in_row = 0
        self._run = []
        self._recent.append(loss)
        self._stats_age += 1
        if self.episode is None:
            return None
        if not self.reported and self.episode.kind != "non-finite" and self.episode.steps > 0:
            return self._report(self.episode.step + self.episode.steps - 1, "spike")
        self.calm += 1
        if self.calm < self.quiet:
            return None
        self.jumped = False
        return self._end(step, None)

    def _new_level(self, step: int) -> DivergenceEnd | None:
        level = float(np.median(self._run))
        self._recent = deque(self._run[-self.window:], maxlen=self.window)
        self._stats = None
        self.spikes_in_row = 0
        self._run = []
        return self._end(step, level)

    def _end(self, step: int, new_level: float | None) -> DivergenceEnd | None:
        ep, reported = self.episode, self.reported
        self.episode, self.reported, self.calm = None, False, 0
        if not reported and new_level is None:
            return None
        peak = ep.loss if math.isfinite(ep.loss) else math.nan
        return DivergenceEnd(step=step, since_step=ep.step, kind=ep.kind, spikes=ep.steps, peak=peak,
                             baseline=ep.baseline, new_level=new_level)

    def state_dict(self) -> dict[str, Any]:
        ep = self.episode
        return {
            "recent": [float(v) for v in self._recent],
            "nonfinite": bool(self.nonfinite),
            "spikes_in_row": int(self.spikes_in_row),
            "run": [float(v) for v in self._run],
            "episode": None if ep is None else [int(ep.step), ep.kind, float(ep.loss), float(ep.baseline),
                                                int(ep.steps)],
            "reported": bool(self.reported),
            "calm": int(self.calm),
            "episodes": int(self.episodes),
            "jumped": bool(self.jumped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._recent = deque((float(v) for v in state.get("recent", [])), maxlen=self.window)
        self.nonfinite = bool(state.get("nonfinite", False))
        self.spikes_in_row = int(state.get("spikes_in_row", 0))
        self._run = [float(v) for v in state.get("run", [])]
        ep = state.get("episode")
        self.episode = None if ep is None else DivergenceEvent(int(ep[0]), str(ep[1]), float(ep[2]), float(ep[3]),
                                                               int(ep[4]))
        self.reported = bool(state.get("reported", False))
        self.calm = int(state.get("calm", 0))
        self.episodes = int(state.get("episodes", 0))
        self.jumped = bool(state.get("jumped", False))
        self._stats = None
