"""The run summary ``scaling_summary.json``: its format, and the one place it is read and written.

Schema (``ScalingLawMonitor`` writes it at the end of training into the logger's directory)::

    {"format": "lightning-scaling/run-summary", "version": 1,
     "run": str, "n_params": float|null (non-embedding params N), "tokens": float|null (D),
     "flops": float|null (C), "steps": int, "final_loss": float|null, "loss_name": str,
     "x_axis": "step"|"tokens"|"flops",
     "curve": {"step": [...], "tokens": [...|null], "flops": [...|null], "loss": [...]},
     "fit": CurveFit.to_dict() | null,
     "forecast": {"final_loss", "lower", "upper", "level", "step", "law", "target_step", ...} | null,
     "forecasts": [same dicts, oldest first],
     "schedule": {"lr": [...]} | null, "warnings": [str, ...], "stopped_reason": str|null, ...}

``final_loss`` is the mean observed loss over the last 2.5% of the steps run (at least the last
5 observations), in the monitored metric's units. Readers accept unknown extra keys and refuse
a higher "version" with a clear message.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import InvalidInputError

SUMMARY_FILENAME = "scaling_summary.json"
SUMMARY_FORMAT = "lightning-scaling/run-summary"
#: The run-summary version this package writes, and the highest it reads.
SUMMARY_VERSION = 1


def read_summary(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a run summary written by ``ScalingLawMonitor`` (schema: docs/dev/TEAM.md).

    Unknown extra keys are kept. Raises InvalidInputError, with a message that says what to
    do, for a file that is not JSON, is not a run summary, or comes from a newer version.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != SUMMARY_FORMAT:
        raise InvalidInputError(f"{path}: not a lightning-scaling run summary (no format {SUMMARY_FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InvalidInputError(f"{path}: run summary has an invalid version {version!r}")
    if version > SUMMARY_VERSION:
        raise InvalidInputError(
            f"{path}: run summary version {version} is newer than this lightning-scaling reads "
            f"(up to {SUMMARY_VERSION}); upgrade lightning-scaling to read it"
        )
    return data


def write_summary(directory: str | os.PathLike, summary: dict[str, Any]) -> str:
    """Write ``summary`` (strict JSON: no NaN) as ``directory/scaling_summary.json``, atomically.

    Returns the path written. OSError propagates (the caller decides whether it matters).
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SUMMARY_FILENAME)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(summary, fh, allow_nan=False)
    os.replace(tmp, path)
    return path
