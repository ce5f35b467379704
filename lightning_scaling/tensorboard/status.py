"""The run's status in words: on its trend or not (since when, by how much), and the final
verdict; for the text summary (markdown) and the figures' titles (plain)."""

from __future__ import annotations

from typing import Any

from .numeric import finite, format_number
from .state import PanelState, Point
from .verdict import Verdict, final_verdict


def trend_sentence(state: PanelState, point: Point | None, markdown: bool = True) -> str:
    """Whether the smoothed loss at ``point`` (the newest written) is on its trend; when the
    run is behind it, since when and by how much; the episodes that ended."""
    b = "**" if markdown else ""
    episode = state.open_episode
    ended = [e for e in state.episodes if e.end is not None]
    history = "; ".join(f"behind from step {e.since:,} to {e.end:,} (peak +{e.peak:.1f}%)" for e in ended[-3:])
    history = f" Earlier: {history}." if history else ""
    if episode is not None:
        held = episode.held
        against = (f"the trend of the forecast made at step {int(held.step):,}, held since"
                   if held is not None else "the trend")
        now = f"{episode.excess:+.1f}%" if finite(episode.excess) else "above"
        return (f"{b}Behind trend since step {episode.since:,}{b}: the smoothed loss is {now} against {against} "
                f"(peak +{episode.peak:.1f}%; warned at step {episode.start:,}).{history}")
    if point is None or not finite(point.trend):
        return f"{b}Trend:{b} not judged yet (it needs a fit made at least 5% of the run earlier).{history}"
    band = f"[{format_number(point.lower)}, {format_number(point.upper)}]"
    made = f" of the fit made at step {point.trend_step:,}" if point.trend_step is not None else ""
    loss = format_number(point.loss)
    if finite(point.upper) and point.loss > point.upper:
        off = 100 * (point.loss / point.trend - 1)
        return (f"{b}Above its trend band{b} (no warning yet): the smoothed loss {loss} is {off:+.1f}% against the "
                f"trend, above the band {band}{made}.{history}")
    if finite(point.lower) and point.loss < point.lower:
        return f"{b}Ahead of its trend{b}: the smoothed loss {loss} is below the band {band}{made}.{history}"
    return f"{b}On trend{b}: the smoothed loss {loss} is inside the trend band {band}{made}.{history}"


def verdict_of(state: PanelState, point: Point | None) -> tuple[Verdict | None, str]:
    """The final verdict on the newest written point (the last step of the run)."""
    if point is None:
        return None, "no observed loss"
    return final_verdict(point.loss, point.step, state.all_forecasts, state.open_episode)


def panel_status(state: PanelState, point: Point | None, *, finished: bool, loss_unit: str = "") -> dict[str, Any]:
    """What ``text.summary_markdown`` takes as ``status``."""
    status: dict[str, Any] = {
        "step": None if point is None else point.step,
        "planned": state.planned_steps,
        "finished": finished,
        "observed": None if point is None else point.loss,
        "smoothing_steps": None if point is None else point.n,
        "trend_line": trend_sentence(state, point),
        "verdict_line": None,
    }
    if finished:
        verdict, why = verdict_of(state, point)
        status["verdict"] = verdict
        status["verdict_line"] = (verdict.sentence(loss_unit) if verdict is not None
                                  else f"**Final verdict:** none ({why}).")
    return status


def headline(state: PanelState, point: Point | None, forecast: Any, *, finished: bool) -> str:
    """One line for a figure's title: the verdict at the end, else where the run is heading,
    then whether it is on its trend."""
    parts = []
    if finished:
        verdict, _ = verdict_of(state, point)
        if verdict is not None:
            parts.append(f"final verdict: {verdict.word} (against the forecast made at step "
                         f"{int(verdict.forecast.step):,})")
    if forecast is not None and finite(getattr(forecast, "final_loss", None)):
        parts.append(f"heading for {format_number(forecast.final_loss)} "
                     f"[{format_number(forecast.lower)}, {format_number(forecast.upper)}]")
    episode = state.open_episode
    if episode is not None:
        parts.append(f"BEHIND TREND since step {episode.since:,}"
                     + (f" ({episode.excess:+.0f}%)" if finite(episode.excess) else ""))
    elif point is not None and finite(point.trend):
        parts.append("on trend" if not (finite(point.upper) and point.loss > point.upper) else "above trend band")
    return "; ".join(parts)
