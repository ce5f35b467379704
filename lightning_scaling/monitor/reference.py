"""Cross-run decisions: is this run headed for a worse end than a reference? (pure, numpy only)

A *reference* says what loss a run like this one should reach. It is one of:

- a number: a loss (in the monitored metric's units, nats for a cross-entropy);
- a ``ScalingLawFit`` (or its ``to_dict()``): the law's prediction L(N, D) for this run's own
  N (non-embedding parameters, from the monitor's compute accounting) and D (the tokens the
  run will have seen at its planned last step, projected from its measured tokens per step);
- a run summary (the ``scaling_summary.json`` dict of another run, or the path of that file
  or of the folder holding it): that run's final loss, the mean of its last observations,
  when it reached its planned end; its end-of-run forecast when it stopped early.

A run is *worse than the reference* when, in ``patience`` forecasts in a row, its whole
forecast interval at the planned end lies above the reference loss: even the optimistic
(lower) end misses it. ``ReferenceCheck`` turns that into a flag (once per episode) and, when
asked, a stop decision that respects ``min_fraction``; the callback reduces the decision
across ranks and stops through its common stop path.

Nothing here knows Lightning or torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

from ..core.scaling import FORMAT as LAW_FORMAT
from ..core.scaling import ScalingLawFit
from ..errors import InvalidInputError, WorseThanReferenceWarning
from ..io.summary import SUMMARY_FILENAME, SUMMARY_FORMAT, SUMMARY_VERSION

__all__ = [
    "Reference",
    "ReferenceCheck",
    "ReferenceVerdict",
    "WorseThanReferenceWarning",
    "as_reference",
    "forecast_above_reference",
    "summary_reference_loss",
]

def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _si(value: float) -> str:
    """3.2e+07 -> '32.0M' (counts of parameters and tokens)."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Reference:
    """What loss a run should reach: a fixed number or a scaling law L(N, D).

    Build one with :func:`as_reference`.

    Attributes:
        kind: "number", "law" or "summary".
        value: the reference loss for "number" and "summary" (loss units); None for "law".
        law: the ``ScalingLawFit`` for "law".
        source: one line saying where the reference came from (for messages).
        loss_name: the metric the reference loss measures, when known (a run summary's).
        n_params: N (non-embedding parameters) to evaluate the law at instead of the
            monitor's count (a module whose parameters are not the model's, e.g. a replay).
        tokens: D (tokens) to evaluate the law at instead of the run's projected tokens.
    """

    kind: str
    value: float | None = None
    law: Any = field(default=None, repr=False)
    source: str = ""
    loss_name: str | None = None
    n_params: float | None = None
    tokens: float | None = None

    def loss_at(self, n_params: float | None, tokens: float | None) -> tuple[float, str | None]:
        """The reference loss for a run of ``n_params`` parameters trained on ``tokens`` tokens.

        Returns ``(loss, None)``, or ``(nan, why)`` when the law cannot be evaluated (N or D
        unknown). The overrides ``self.n_params`` / ``self.tokens`` win over the arguments.
        """
        if self.kind != "law":
            return float(self.value), None
        n = self.n_params if self.n_params is not None else n_params
        d = self.tokens if self.tokens is not None else tokens
        if not (_finite(n) and n > 0):
            return math.nan, ("the reference law needs the run's non-embedding parameter count N, which is "
                              f"unknown ({n!r}); pass as_reference(law, n_params=...)")
        if not (_finite(d) and d > 0):
            return math.nan, ("the reference law needs the tokens D the run will have seen at its planned end, "
                              "which are unknown (no token count: pass tokens_per_batch= to the monitor, or "
                              "as_reference(law, tokens=...))")
        loss = float(self.law.predict(float(n), float(d)))
        return loss, None

    def describe(self, n_params: float | None = None, tokens: float | None = None) -> str:
        """e.g. 'L(N=25M non-embedding params, D=4.9B tokens) of the reference ScalingLawFit'."""
        if self.kind == "number":
            return "the reference loss"
        if self.kind != "law":
            return f"the reference ({self.source})"
        n = self.n_params if self.n_params is not None else n_params
        d = self.tokens if self.tokens is not None else tokens
        n_txt = _si(float(n)) if _finite(n) else "?"
        d_txt = _si(float(d)) if _finite(d) else "?"
        return f"the reference L(N={n_txt} non-embedding params, D={d_txt} tokens) of {self.source}"


def summary_reference_loss(summary: dict[str, Any], name: str = "run summary") -> tuple[float, str]:
    """The loss a run summary stands for, and one line saying which number it is.

    A run that reached its planned end (not stopped, ``steps`` at least ``planned_steps`` when
    that is recorded) stands for its ``final_loss`` (the mean of its last observations). A run
    that stopped early stands for its newest end-of-run forecast (``forecast.final_loss``),
    else its ``final_loss``. Raises InvalidInputError when the summary holds neither.
    """
    final = summary.get("final_loss")
    forecast = summary.get("forecast") or {}
    forecast_loss = forecast.get("final_loss") if isinstance(forecast, dict) else None
    planned = summary.get("planned_steps")
    steps = summary.get("steps")
    stopped = summary.get("stopped_reason") is not None or (
        _finite(planned) and _finite(steps) and steps < planned
    )
    run = summary.get("run") or name
    if not stopped and _finite(final):
        return float(final), f"final loss of run {run!r} at step {int(steps or 0):,}"
    if _finite(forecast_loss):
        target = forecast.get("target_step")
        at = f" at step {int(target):,}" if _finite(target) else ""
        return float(forecast_loss), (f"forecast final loss{at} of run {run!r}, which stopped at step "
                                      f"{int(steps or 0):,}")
    if _finite(final):
        return float(final), f"last loss of run {run!r} at step {int(steps or 0):,} (it stopped early, no forecast)"
    raise InvalidInputError(f"{name}: the run summary holds neither a final loss nor a forecast final loss")


def _from_mapping(d: dict[str, Any], name: str) -> Reference:
    fmt = d.get("format")
    if fmt == SUMMARY_FORMAT:
        version = d.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidInputError(f"{name}: run summary has an invalid version {version!r}")
        if version > SUMMARY_VERSION:
            raise InvalidInputError(f"{name}: run summary version {version} is newer than this lightning-scaling "
                                    f"reads (up to {SUMMARY_VERSION}); upgrade lightning-scaling to read it")
        value, what = summary_reference_loss(d, name)
        return Reference("summary", value=value, source=what, loss_name=d.get("loss_name"))
    if fmt == LAW_FORMAT:
        return Reference("law", law=ScalingLawFit.from_dict(d), source=f"the ScalingLawFit in {name}")
    raise InvalidInputError(f"{name}: neither a run summary (format {SUMMARY_FORMAT!r}) nor a ScalingLawFit "
                            f"(format {LAW_FORMAT!r}); got format {fmt!r}")


def as_reference(reference: Any, *, n_params: float | None = None, tokens: float | None = None) -> Reference:
    """A :class:`Reference` from a number, a ``ScalingLawFit``, a run summary or a path.

    Args:
        reference: a finite loss (number); a ``ScalingLawFit`` or its ``to_dict()``; a run
            summary dict; the path of a ``scaling_summary.json`` (or of its folder) or of a
            JSON file holding a ``ScalingLawFit.to_dict()``; or a ``Reference``.
        n_params, tokens: evaluate a law at this N (parameters) / D (tokens) instead of the
            run's own (only with a law).

    Raises InvalidInputError for anything else, with what was expected.
    """
    for label, v in (("n_params", n_params), ("tokens", tokens)):
        if v is not None and not (_finite(v) and v > 0):
            raise InvalidInputError(f"{label} must be a positive number, got {v!r}")
    ref = _parse(reference)
    if (n_params is not None or tokens is not None) and ref.kind != "law":
        raise InvalidInputError("n_params= and tokens= apply to a scaling-law reference only; "
                                f"this reference is a {ref.kind} ({ref.source})")
    if n_params is not None or tokens is not None:
        ref = replace(ref, n_params=n_params if n_params is not None else ref.n_params,
                      tokens=tokens if tokens is not None else ref.tokens)
    return ref


def _parse(reference: Any) -> Reference:
    if isinstance(reference, Reference):
        return reference
    if isinstance(reference, bool):
        raise InvalidInputError(f"reference must be a loss, a ScalingLawFit or a run summary, got {reference!r}")
    if isinstance(reference, (int, float)):
        if not math.isfinite(reference):
            raise InvalidInputError(f"a reference loss must be finite, got {reference!r}")
        return Reference("number", value=float(reference), source="a fixed loss")
    if hasattr(reference, "predict") and isinstance(getattr(reference, "params", None), dict) and {
        "E", "A", "B", "alpha", "beta"} <= set(reference.params):
        return Reference("law", law=reference, source="the reference ScalingLawFit")
    if isinstance(reference, dict):
        return _from_mapping(reference, "reference")
    if isinstance(reference, (str, os.PathLike)):
        path = os.fspath(reference)
        if os.path.isdir(path):
            path = os.path.join(path, SUMMARY_FILENAME)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            raise InvalidInputError(f"reference {path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"reference {path}: cannot read: {exc}") from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"reference {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"reference {path}: expected a JSON object")
        return _from_mapping(data, path)
    raise InvalidInputError(
        "reference must be a loss (number), a ScalingLawFit (or its to_dict()), a run summary dict, or the path "
        f"of a scaling_summary.json / ScalingLawFit JSON file; got {type(reference).__name__}"
    )


def forecast_above_reference(lower: float, reference_loss: float) -> bool:
    """True when a forecast interval whose lower end is ``lower`` lies entirely above the reference."""
    return _finite(lower) and _finite(reference_loss) and lower > reference_loss


@dataclass
class ReferenceVerdict:
    """One evaluation of a run against its reference (all losses in the monitored metric's units).

    Attributes:
        worse: the newest ``patience`` forecasts all lie entirely above the reference.
        flag: ``worse`` became true at this evaluation (warn once per episode).
        stop: stop now (asked for, ``worse``, and past ``min_fraction`` of the planned steps).
        reference_loss: the reference loss for the newest forecast's (N, D) (NaN if unknown).
        n_params, tokens: the N (parameters) and D (tokens at the planned end) used.
        message: what was compared, with numbers and units (when ``worse``).
        unavailable: why the reference could not be evaluated, the first time only.
    """

    worse: bool = False
    flag: bool = False
    stop: bool = False
    reference_loss: float = math.nan
    n_params: float | None = None
    tokens: float | None = None
    message: str | None = None
    unavailable: str | None = None


class ReferenceCheck:
    """Compare each forecast with the reference; flag once per episode; decide a stop if asked.

    Args:
        reference: anything :func:`as_reference` takes.
        patience: forecasts in a row whose whole interval lies above the reference before the
            run counts as worse (the monitor's ``forecast_patience``).
        stop: turn a standing verdict into a stop decision (after ``min_fraction``).
    """

    def __init__(self, reference: Any, *, patience: int = 2, stop: bool = False):
        self.reference = as_reference(reference)
        if not (isinstance(patience, int) and patience >= 1):
            raise InvalidInputError(f"patience must be a positive int, got {patience!r}")
        self.patience = patience
        self.stop = bool(stop)
        self.worse = False
        self.flags = 0
        self._told_unavailable = False

    def evaluate(
        self,
        *,
        step: int,
        planned_steps: float | None,
        min_fraction: float,
        n_params: float | None,
        forecasts: list,
    ) -> ReferenceVerdict:
        """Judge the newest forecasts (objects with ``lower``, ``upper``, ``final_loss``,
        ``level``, ``target_step``, ``target_tokens``; oldest first) at optimizer step ``step``."""
        usable = [f for f in forecasts if _finite(getattr(f, "lower", math.nan))]
        recent = usable[-self.patience:]
        verdict = ReferenceVerdict(n_params=n_params)
        if not recent:
            self.worse = False
            return verdict
        above = []
        for f in recent:
            ref_loss, why = self.reference.loss_at(n_params, getattr(f, "target_tokens", math.nan))
            if why is not None:
                if not self._told_unavailable:
                    self._told_unavailable = True
                    verdict.unavailable = f"ScalingLawMonitor: no comparison with the reference: {why}"
                self.worse = False
                return verdict
            above.append((f, ref_loss, forecast_above_reference(f.lower, ref_loss)))
        newest, ref_loss, _ = above[-1]
        verdict.reference_loss = ref_loss
        verdict.tokens = getattr(newest, "target_tokens", None)
        worse = len(above) >= self.patience and all(a for _, _, a in above)
        verdict.worse = worse
        verdict.flag = worse and not self.worse
        self.worse = worse
        if not worse:
            return verdict
        self.flags += verdict.flag
        target = f"step {int(newest.target_step):,}" if _finite(newest.target_step) else "the planned end"
        tokens = verdict.tokens
        at_tokens = f" ({_si(float(tokens))} tokens)" if _finite(tokens) else ""
        verdict.message = (
            f"worse than reference: at step {int(step):,} the forecast final loss at {target}{at_tokens} is "
            f"{newest.final_loss:.4g}, {100 * newest.level:.0f}% interval [{newest.lower:.4g}, {newest.upper:.4g}], "
            f"entirely above {self.reference.describe(n_params, tokens)}: {ref_loss:.4g} "
            f"(losses in the monitored metric's units; {len(above)} forecasts in a row)"
        )
        known_end = _finite(planned_steps) and planned_steps > 0
        verdict.stop = self.stop and not (known_end and step < min_fraction * planned_steps)
        return verdict
