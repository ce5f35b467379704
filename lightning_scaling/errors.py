"""The exception and warning types users can catch or filter."""

from __future__ import annotations


class InvalidInputError(ValueError):
    """Raised for arguments that cannot be interpreted at all.

    This is the only exception the fitting core raises on purpose: wrong shapes, arrays of
    different lengths, a non-numeric value where a number is required, an unknown law name,
    a level outside (0, 1). Data that is merely too short, noisy or trendless is *not* an
    error: the fit comes back with NaN forecasts and a diagnostic that says why.
    """


class ScalingWarning(UserWarning):
    """Base class of every warning lightning-scaling emits."""


class BehindTrendWarning(ScalingWarning):
    """The run's smoothed loss has stayed above the band forecast before it was observed."""


class DivergenceWarning(ScalingWarning):
    """The loss became NaN/inf or spiked far above its recent level."""


class WorseThanReferenceWarning(ScalingWarning):
    """The run's forecast interval at its planned end lies entirely above the reference loss."""


class FitFailedWarning(ScalingWarning):
    """An online refit raised; training goes on and the previous forecast stays."""
