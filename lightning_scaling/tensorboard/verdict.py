"""The panels' judgements: which forecasts are drawn, and the final verdict.

The final verdict compares the observed final loss (the smoothed loss at the last step, the
number the panels show) with the interval of one forecast, chosen so that the comparison is a
test (:func:`judged_forecast`): not the last forecast, which has seen the whole run, but the
newest made before the last ``1 - JUDGED_BEFORE`` of the planned run; and when the run ended
behind its trend, the forecast it fell behind (made before the episode), since every forecast
made after a fault has already absorbed it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .numeric import finite, format_number

#: The judged forecast is made before this share of the planned run.
JUDGED_BEFORE = 0.9
#: A forecast whose interval spans more than this factor (upper / lower) is not drawn in the
#: forecast chart: early forecasts' intervals (0.1 to 9 nats) would flatten its axis. The
#: text and the figures still show it.
MAX_INTERVAL_RATIO = 2.0
#: The run counts as ended at the planned step when its last step is this close to it (share).
END_TOLERANCE = 0.01


def informative(forecast) -> bool:
    """Whether a forecast is drawn in the forecast chart: finite, a positive lower end, and an
    interval no wider than ``MAX_INTERVAL_RATIO`` (upper / lower).

    >>> from types import SimpleNamespace as F
    >>> informative(F(final_loss=2.0, lower=1.8, upper=2.3)), informative(F(final_loss=2.0, lower=0.1, upper=9.0))
    (True, False)
    """
    final, lo, hi = (getattr(forecast, k, None) for k in ("final_loss", "lower", "upper"))
    return (finite(final) and finite(lo) and finite(hi) and lo > 0
            and hi / lo <= MAX_INTERVAL_RATIO)


def _usable(forecast) -> bool:
    return all(finite(getattr(forecast, k, None)) for k in ("final_loss", "lower", "upper"))


def judged_forecast(forecasts: Sequence[Any], episode=None) -> tuple[Any, str]:
    """(the forecast the final loss is judged against, why that one), or (None, why none).

    ``episode``: the behind-trend episode still open at the end (``state.Episode``), if any.

    >>> from types import SimpleNamespace as F
    >>> fs = [F(step=s, final_loss=2.0, lower=1.9, upper=2.1, target_step=100) for s in (50, 90, 100)]
    >>> f, why = judged_forecast(fs)
    >>> f.step, why
    (90, 'the newest made before the last 10% of the run (at 90%)')
    """
    held = getattr(episode, "held", None)
    if held is not None and _usable(held):
        return held, (f"made before the run fell behind its trend (behind since step {episode.since:,}); "
                      "later forecasts have absorbed the shift")
    usable = [f for f in forecasts if _usable(f) and finite(getattr(f, "target_step", None))]
    if not usable:
        return None, "no forecast of the final loss was made"
    early = [f for f in usable if f.step <= JUDGED_BEFORE * f.target_step]
    if early:
        f = early[-1]
        return f, (f"the newest made before the last {100 * (1 - JUDGED_BEFORE):.0f}% of the run "
                   f"(at {100 * f.step / f.target_step:.0f}%)")
    return usable[-1], "the newest (none was made before the last 10% of the run: a weak test)"


@dataclass
class Verdict:
    """The final verdict: ``word`` is "inside", "missed (above)" or "missed (below)"."""

    word: str
    observed: float  #: the observed final loss (smoothed)
    forecast: Any  #: the judged forecast
    why: str  #: why that forecast (:func:`judged_forecast`)
    off: float  #: % outside the interval (0 inside), relative to the nearer end

    @property
    def missed(self) -> bool:
        return self.word != "inside"

    def sentence(self, loss_unit: str = "", markdown: bool = True) -> str:
        """One sentence, e.g. "Final verdict: missed (above): the observed final loss 1.65 is
        10% above the 90% interval [1.39, 1.50] of the forecast made at step 352 (...)"."""
        f = self.forecast
        b = "**" if markdown else ""
        level = f"{100 * f.level:.0f}% " if finite(getattr(f, "level", None)) else ""
        where = "inside" if not self.missed else f"{self.off:.1f}% {'above' if 'above' in self.word else 'below'}"
        return (f"{b}Final verdict: {self.word}{b}: the observed final loss {format_number(self.observed, loss_unit)} "
                f"is {where} "
                f"the {level}interval [{format_number(f.lower)}, {format_number(f.upper)}] of the forecast made "
                f"at step {int(f.step):,} ({format_number(f.final_loss)}; {self.why})")


def final_verdict(observed: float, last_step: int | None, forecasts: Sequence[Any],
                  episode=None) -> tuple[Verdict | None, str]:
    """(the verdict, "") once the run has reached the planned step of the judged forecast, else
    (None, why there is none).

    >>> from types import SimpleNamespace as F
    >>> fs = [F(step=80, final_loss=2.0, lower=1.9, upper=2.1, target_step=100, level=0.9)]
    >>> v, _ = final_verdict(2.2, 100, fs)
    >>> v.word, round(v.off, 2)
    ('missed (above)', 4.76)
    >>> final_verdict(2.2, 60, fs)[1]
    'the run ended at step 60, before the planned step 100'
    """
    forecast, why = judged_forecast(forecasts, episode)
    if forecast is None:
        return None, why
    if not finite(observed):
        return None, "no observed loss"
    target = float(forecast.target_step)
    if last_step is None or last_step < target * (1 - END_TOLERANCE):
        return None, f"the run ended at step {last_step}, before the planned step {int(target):,}"
    lo, hi = float(forecast.lower), float(forecast.upper)
    if observed > hi:
        word, off = "missed (above)", 100 * (observed / hi - 1) if hi > 0 else math.inf
    elif observed < lo:
        word, off = "missed (below)", 100 * (1 - observed / lo) if lo > 0 else math.inf
    else:
        word, off = "inside", 0.0
    return Verdict(word, float(observed), forecast, why, off), ""
