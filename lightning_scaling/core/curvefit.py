"""``CurveFit``: a fitted single-run loss curve, its forecasts, intervals and JSON form.

Two kinds, told apart by ``table``:

* fits of the forecaster (``core.forecaster``, what ``fit_curve`` runs by default): ``predict``
  is the main law (``law``, ``params``) times the stored ratio to the posterior median, and
  ``interval`` reads its sds, both from the forecast table (``forecast_table.py``);
* mixtures of named laws (``agnostic.py``, ``fit_curve(..., laws=[...])``) and fits saved by
  version 0.1 (format version 1, including its schedule-aware laws): ``predict`` is the
  weighted mean of the mixture members (``components``), ``interval`` widens it by the stored
  interval model (``uncertainty``, see ``intervals.py``).

``to_dict``/``from_dict`` round-trip both through JSON (and ``torch.load(weights_only=True)``);
``from_dict`` reads format versions 1 and 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import special

from ..errors import InvalidInputError
from .forecast_table import table_at
from .intervals import uncertainty_sd
from .laws import LAWS, Law, get_law
from .plain import nan_for_none, plain
from .points import as_float_array, check_level

FORMAT = "lightning-scaling/curve-fit"
VERSION = 2
"""Format version written by ``to_dict`` (2 added ``table``); ``from_dict`` reads 1 and 2."""


@dataclass
class CurveFit:
    """A fitted single-run loss curve.

    Attributes:
        law: name of the main law (a key of ``laws.LAWS``), or "none" when no fit was
            possible (then ``ok`` is False and every forecast is NaN).
        params: the main law's fitted parameters, in the caller's x units.
        diagnostics: JSON-safe dict: points used/dropped and why, warm-up cut, law weights,
            residual scale, ``reason`` when the fit is not ok, ``flags`` (list of str).
        components: the forecast mixture ``[{"law", "params", "weight"}]`` (weights sum to 1);
            ``predict`` is the weighted mean. Empty means "the main law alone".
        uncertainty: the interval model (JSON-safe), see :meth:`interval`.
        context: side information the laws read (e.g. ``{"lr": [...]}``), JSON-safe, or None.
        x_first, x_last: range of x the fit saw (caller units).
        table: the forecast table of a forecaster fit (``forecast_table.py``), or None.

    Usually made by ``fit_curve``; built by hand it forecasts all the same:

    >>> fit = CurveFit("saturating_power", {"E": 2.0, "A": 8.0, "alpha": 0.5}, x_first=1.0, x_last=100.0)
    >>> round(fit.predict(400.0), 6)  # 2 + 8 / sqrt(400)
    2.4
    >>> round(fit.x_at(2.8), 3)
    100.0
    >>> CurveFit.from_dict(fit.to_dict()) == fit
    True
    """

    law: str
    params: dict[str, float]
    diagnostics: dict[str, Any] = field(default_factory=dict)
    components: list[dict[str, Any]] = field(default_factory=list)
    uncertainty: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] | None = None
    x_first: float = math.nan
    x_last: float = math.nan
    table: dict[str, Any] | None = None

    # ------------------------------------------------------------------ forecasts
    @property
    def ok(self) -> bool:
        """True when the fit can forecast (otherwise every forecast is NaN)."""
        return self.law in LAWS and bool(self.params)

    def members(self) -> list[tuple[Law, dict[str, float], float]]:
        """The forecast mixture as (law, params, weight) triples (the main law alone when
        ``components`` is empty)."""
        if self.components:
            return [(get_law(c["law"]), c["params"], float(c["weight"])) for c in self.components]
        return [(get_law(self.law), self.params, 1.0)]

    def evaluation_context(self):
        """The stored ``context`` with its lists as float arrays (what the laws read), or None."""
        if self.context is None:
            return None
        return context_arrays(self.context)

    def predict(self, x):
        """Expected loss at x (caller units; scalar or array); NaN when the fit is not ok."""
        x_arr = as_float_array(x, "x")
        if not self.ok:
            out = np.full(x_arr.shape, np.nan)
        else:
            ctx = self.evaluation_context()
            out = np.zeros(x_arr.shape)
            for law, params, weight in self.members():
                out = out + weight * law.evaluate(x_arr, params, ctx)
            if self.table is not None:
                with np.errstate(invalid="ignore", over="ignore"):
                    out = out * np.exp(table_at(self.table, x_arr, out)[0])
                out = np.where(out > 0, out, np.nan)
            out = np.where(np.isfinite(out), out, np.nan)
        return float(out) if out.ndim == 0 else out

    def interval_sd(self, x):
        """(below, above): standard deviations of log(expected loss) at x under and over the
        forecast that :meth:`interval` uses (NaN when the fit is not ok)."""
        x_arr = as_float_array(x, "x")
        if not self.ok:
            lo = hi = np.full(x_arr.shape, np.nan)
        elif self.table is not None:
            ctx = self.evaluation_context()
            law_values = sum(w * law.evaluate(x_arr, p, ctx) for law, p, w in self.members())
            _, lo, hi = table_at(self.table, x_arr, np.asarray(law_values, dtype=float))
        else:
            lo, hi = uncertainty_sd(self, x_arr)
        if lo.ndim == 0:
            return float(lo), float(hi)
        return lo, hi

    def interval(self, x, level: float = 0.9):
        """(lower, upper) prediction interval for the expected loss at x (NaN if not ok).

        Log-normal on each side of ``predict(x)``: ``predict * exp(-z sd_below)`` to
        ``predict * exp(z sd_above)`` with z the normal quantile of ``level`` and the sds of
        :meth:`interval_sd`. A forecaster fit's sds combine the posterior's spread, a
        backtest of the law on the run's own earlier prefixes and the drift of its forecasts
        (``core.forecaster.fit``); a named-law mixture's combine the residual noise, the
        spread of its laws and its held-out error (``intervals.py``).
        """
        level = check_level(level)
        mean = np.asarray(self.predict(x), dtype=float)
        sd_lo, sd_hi = (np.asarray(v, dtype=float) for v in self.interval_sd(x))
        z = special.ndtri(0.5 + level / 2.0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            lo = mean * np.exp(-z * sd_lo)
            hi = mean * np.exp(z * sd_hi)
        if lo.ndim == 0:
            return float(lo), float(hi)
        return lo, hi

    def x_at(self, target_loss: float) -> float:
        """x where the expected loss first reaches ``target_loss``.

        inf when the forecast never gets there (target at or below the asymptote, or beyond
        the schedule's horizon); NaN when the fit is not ok. x_first when the target is
        above the loss at the first fitted x.
        """
        target = as_float_array(target_loss, "target_loss")
        if target.ndim != 0:
            raise InvalidInputError("target_loss must be a single number")
        target = float(target)
        if not self.ok or not math.isfinite(target):
            return math.nan
        lo = self.x_first
        if self.predict(lo) <= target:
            return float(lo)
        hi_limit = self._x_limit()
        hi = lo
        while True:
            nxt = hi * 4.0
            if nxt > hi_limit:
                nxt = hi_limit
            val = self.predict(nxt)
            if math.isfinite(val) and val <= target:
                hi = nxt
                break
            if nxt >= hi_limit:
                return math.inf
            lo, hi = nxt, nxt
        # bisection on log x
        a, b = math.log(lo), math.log(hi)
        for _ in range(80):
            m = 0.5 * (a + b)
            if self.predict(math.exp(m)) <= target:
                b = m
            else:
                a = m
        return float(math.exp(b))

    def _x_limit(self) -> float:
        ctx = self.context
        if ctx and ctx.get("horizon") is not None:  # schedule-aware fits: the last scheduled step
            return float(ctx["horizon"])
        if ctx and ctx.get("lr") is not None:
            return float(len(ctx["lr"]) - 1)
        return float(self.x_first) * 1e30 if self.x_first > 0 else 1e300

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of plain floats, ints, str, lists, dicts and None (NaN -> None).

        Survives ``json.dumps(..., allow_nan=False)`` and ``torch.load(weights_only=True)``.
        """
        return plain(
            {
                "format": FORMAT,
                "version": VERSION,
                "law": self.law,
                "params": self.params,
                "components": self.components,
                "uncertainty": self.uncertainty,
                "context": self.context,
                "x_first": self.x_first,
                "x_last": self.x_last,
                "table": self.table,
                "diagnostics": self.diagnostics,
            },
            strict=True,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CurveFit:
        """Inverse of :meth:`to_dict`; unknown extra keys are ignored. Reads format versions 1
        (version 0.1: named-law mixtures and its schedule-aware laws convex_bound, tissue,
        multipower, which still forecast as they did) and 2."""
        if not isinstance(d, dict):
            raise InvalidInputError("CurveFit.from_dict needs a dict")
        version = d.get("version", VERSION)
        if not isinstance(version, int) or version > VERSION:
            raise InvalidInputError(
                f"curve fit format version {version!r} is newer than this lightning-scaling "
                f"understands ({VERSION}); upgrade the package"
            )
        law = d.get("law", "none")
        if law != "none" and law not in LAWS:
            raise InvalidInputError(f"unknown law {law!r} in curve fit dict")

        def num(v):
            return math.nan if v is None else float(v)

        params = {k: num(v) for k, v in (d.get("params") or {}).items()}
        components = [
            {"law": c["law"], "params": {k: num(v) for k, v in c["params"].items()},
             "weight": num(c["weight"])}
            for c in (d.get("components") or [])
        ]
        for c in components:
            get_law(c["law"])
        return cls(
            law=law,
            params=params,
            diagnostics=dict(d.get("diagnostics") or {}),
            components=components,
            uncertainty=nan_for_none(d.get("uncertainty") or {}),
            context=d.get("context"),
            x_first=num(d.get("x_first")),
            x_last=num(d.get("x_last")),
            table=_table_of(d.get("table")),
        )

    def __repr__(self) -> str:
        if not self.ok:
            return f"CurveFit(ok=False, reason={self.diagnostics.get('reason')!r})"
        ps = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"CurveFit(law={self.law!r}, {ps}, x_last={self.x_last:.4g})"


def failed_fit(reason: str, diagnostics: dict[str, Any] | None = None, detail: str | None = None,
               **kw) -> CurveFit:
    """A fit that cannot forecast: ``ok`` False, NaN forecasts, ``diagnostics["reason"]``.

    ``reason`` is a short stable phrase ("too few points", "no downward trend", ...);
    ``detail`` (``diagnostics["reason_detail"]``) says more for people.
    """
    diag = dict(diagnostics or {})
    diag["reason"] = reason
    if detail:
        diag["reason_detail"] = detail
    diag.setdefault("law", "none")
    return CurveFit("none", {}, diag, **kw)


def _table_of(table) -> dict[str, Any] | None:
    """A stored forecast table, checked (InvalidInputError when malformed)."""
    if table is None:
        return None
    keys = ("x", "log_ratio", "sd_below", "sd_above")
    if not isinstance(table, dict) or any(not isinstance(table.get(k), list) for k in keys):
        raise InvalidInputError("malformed forecast table in curve fit dict")
    if len({len(table[k]) for k in keys}) != 1 or not table["x"]:
        raise InvalidInputError("forecast table columns differ in length")
    return nan_for_none(dict(table))


def context_arrays(context: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe context with its lists turned into float arrays (other values as they are)."""
    out = {}
    for k, v in context.items():
        out[k] = np.asarray(v, dtype=float) if isinstance(v, list) else v
    return out
