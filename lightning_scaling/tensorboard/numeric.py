"""Numbers as the panels test and print them."""

from __future__ import annotations

import math


def finite(value) -> bool:
    """True for a number (or numeric string) that is finite; False for None, NaN, inf, text.

    >>> finite(2.5), finite(None), finite(float("nan")), finite("x")
    (True, False, False, False)
    """
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def format_number(value, unit: str = "", digits: int = 4) -> str:
    """``value`` with ``digits`` significant digits and its unit; "n/a" for None/NaN.

    >>> format_number(1.2e18, "FLOPs"), format_number(2.31456), format_number(None, "nats")
    ('1.2e+18 FLOPs', '2.315', 'n/a')
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    if not math.isfinite(v):
        return "n/a"
    text = f"{v:.{digits}g}"
    return f"{text} {unit}".rstrip()
