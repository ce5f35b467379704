"""Read what training runs leave behind: CSV tables, TensorBoard event files, run summaries.

Everything here is numpy plus the standard library (and TensorBoard's protobuf classes for
event files): no torch, no Lightning, so ``lightning-scaling report`` starts fast.

Readers are built for logs of real runs: an event file that is still being written ends in a
half record, a crashed job leaves a truncated file, a disk error leaves garbage. Such files are
read up to the damage and the damage is reported in ``problems``; only input that yields
nothing at all raises :class:`~lightning_scaling.errors.InvalidInputError`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from .errors import InvalidInputError

SUMMARY_FILENAME = "scaling_summary.json"
SUMMARY_FORMAT = "lightning-scaling/run-summary"
#: The highest run-summary version this package reads.
SUMMARY_VERSION = 1
EVENT_FILE_MARK = "tfevents"

#: Loss tags tried, in this order, for runs without a summary when no ``tag`` is given.
DEFAULT_LOSS_TAGS = (
    "train_loss",
    "train_loss_step",
    "loss",
    "train/loss",
    "train/loss_step",
    "training_loss",
    "val_loss",
    "val/loss",
    "validation_loss",
)


# --------------------------------------------------------------------------------------
# CSV


def read_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a CSV file with a header row into float columns (blank cells become NaN).

    Raises InvalidInputError for a missing or empty file, a file without data rows, or a
    cell that is neither blank nor a number (the message names row and column).
    """
    path = os.fspath(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = [r for r in reader if any(c.strip() for c in r)]
    except FileNotFoundError:
        raise InvalidInputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInputError(f"{path}: cannot read CSV: {exc}") from None
    if not header:
        raise InvalidInputError(f"{path}: empty file (no header row)")
    if not rows:
        raise InvalidInputError(f"{path}: no data rows")
    names = [h.strip() for h in header]
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        values = np.empty(len(rows))
        for i, row in enumerate(rows):
            cell = row[j].strip() if j < len(row) else ""
            if not cell:
                values[i] = math.nan
                continue
            try:
                values[i] = float(cell)
            except ValueError:
                raise InvalidInputError(
                    f"{path}: row {i + 2}, column {name!r}: {cell!r} is not a number"
                ) from None
        columns[name] = values
    return columns


# --------------------------------------------------------------------------------------
# Run summaries


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


# --------------------------------------------------------------------------------------
# TensorBoard event files (TFRecord framing: u64 length, u32 masked CRC32C of the length,
# data, u32 masked CRC32C of the data)


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


_MAX_RECORD_BYTES = 1 << 30


def iter_event_records(path: str | os.PathLike, problems: list[str] | None = None) -> Iterator[bytes]:
    """Yield the raw records of one event file, stopping cleanly at damage.

    The length header of every record is checked against its CRC (a cheap 8-byte check);
    a record whose data fails to parse is skipped by the caller. What stopped the reading
    early is appended to ``problems`` (a truncated last record is what a file that is still
    being written looks like, and is not reported).
    """
    path = os.fspath(path)
    with open(path, "rb") as fh:
        offset = 0
        while True:
            header = fh.read(12)
            if len(header) < 12:
                return  # end of file or a header still being written
            length, length_crc = struct.unpack("<QI", header)
            if length_crc != _masked_crc32c(header[:8]) or length > _MAX_RECORD_BYTES:
                if problems is not None:
                    problems.append(f"{path}: corrupt record at byte {offset}; read up to there")
                return
            body = fh.read(length + 4)
            if len(body) < length + 4:
                return
            yield body[:length]
            offset += 12 + length + 4


@dataclass
class Scalars:
    """Scalar series of one run: ``series[tag] = (steps int64, values float64)``, sorted by step."""

    series: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    n_records: int = 0

    def tags(self) -> list[str]:
        return sorted(self.series)


_DT_FLOAT, _DT_DOUBLE, _DT_HALF = 1, 2, 19
_TENSOR_FORMATS = {_DT_FLOAT: "<f4", _DT_DOUBLE: "<f8", _DT_HALF: "<f2"}


def _tensor_scalar(tensor) -> float | None:
    if tensor.dtype not in _TENSOR_FORMATS or len(tensor.tensor_shape.dim) != 0:
        return None
    if tensor.tensor_content:
        return float(np.frombuffer(tensor.tensor_content, dtype=_TENSOR_FORMATS[tensor.dtype])[0])
    if tensor.dtype == _DT_FLOAT and tensor.float_val:
        return float(tensor.float_val[0])
    if tensor.dtype == _DT_DOUBLE and tensor.double_val:
        return float(tensor.double_val[0])
    if tensor.dtype == _DT_HALF and tensor.half_val:
        return float(np.array([tensor.half_val[0]], dtype=np.uint16).view(np.float16)[0])
    return None


def event_files(directory: str | os.PathLike) -> list[str]:
    """The event files directly inside ``directory``, oldest first.

    Names are ``events.out.tfevents.<unix time>.<host>.<pid>.<counter><suffix>``; they are
    compared with their numbers as numbers, so writer 10 of a process sorts after writer 9.
    """
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise InvalidInputError(f"{directory}: cannot list directory: {exc.strerror or exc}") from None
    names = sorted((n for n in names if EVENT_FILE_MARK in n), key=_natural_key)
    return [os.path.join(directory, n) for n in names]


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


def read_scalars(paths, tags=None) -> Scalars:
    """Read scalar series from event files (a file, a directory, or a list of files).

    Args:
        paths: one event file, a directory (its own event files, not subdirectories), or a
            list of event files; several files of one run are merged by step.
        tags: keep only these tags (a collection of names); None keeps every scalar tag.

    Both TensorBoard scalar encodings are read: ``simple_value`` (torch's and tensorboardX's
    SummaryWriter, Lightning's TensorBoardLogger) and rank-0 float tensors (TF2 summaries).
    When a step was written twice (a resumed run), the later write wins.
    """
    from tensorboard.compat.proto import event_pb2  # protobuf classes only: no TensorFlow

    if isinstance(paths, (str, os.PathLike)):
        p = os.fspath(paths)
        files = event_files(p) if os.path.isdir(p) else [p]
    else:
        files = [os.fspath(p) for p in paths]
    wanted = None if tags is None else set(tags)
    out = Scalars()
    raw: dict[str, tuple[list[int], list[float]]] = {}
    for path in files:
        try:
            records = iter_event_records(path, out.problems)
            for record in records:
                out.n_records += 1
                try:
                    event = event_pb2.Event.FromString(record)
                except Exception:  # protobuf raises its own DecodeError subclasses
                    out.problems.append(f"{path}: skipped an unparseable record")
                    continue
                if not event.HasField("summary"):
                    continue
                for value in event.summary.value:
                    if wanted is not None and value.tag not in wanted:
                        continue
                    kind = value.WhichOneof("value")
                    if kind == "simple_value":
                        number = float(value.simple_value)
                    elif kind == "tensor":
                        number = _tensor_scalar(value.tensor)
                        if number is None:
                            continue
                    else:
                        continue
                    steps, values = raw.setdefault(value.tag, ([], []))
                    steps.append(int(event.step))
                    values.append(number)
        except OSError as exc:
            out.problems.append(f"{path}: cannot read: {exc.strerror or exc}")
    for tag, (steps, values) in raw.items():
        s = np.asarray(steps, dtype=np.int64)
        v = np.asarray(values, dtype=float)
        # stable sort, then keep the last write of each step
        order = np.argsort(s, kind="stable")
        s, v = s[order], v[order]
        last = np.ones(s.size, dtype=bool)
        last[:-1] = s[1:] != s[:-1]
        out.series[tag] = (s[last], v[last])
    return out


# --------------------------------------------------------------------------------------
# Runs under a log directory


@dataclass
class RunFiles:
    """One run found under a log directory: its directory, summary file and event files."""

    directory: str
    name: str
    summary: str | None = None
    events: list[str] = field(default_factory=list)


def find_runs(logdir: str | os.PathLike) -> tuple[list[RunFiles], list[str]]:
    """Find runs under ``logdir``: every directory holding a run summary or event files.

    Returns (runs sorted by name, problems met while walking). Hidden directories (".x") are
    skipped. Raises InvalidInputError when ``logdir`` is missing, not a directory or
    unreadable.
    """
    logdir = os.fspath(logdir)
    if not os.path.exists(logdir):
        raise InvalidInputError(f"{logdir}: no such directory")
    if not os.path.isdir(logdir):
        raise InvalidInputError(f"{logdir}: not a directory")
    try:
        os.listdir(logdir)
    except OSError as exc:
        raise InvalidInputError(f"{logdir}: cannot read directory: {exc.strerror or exc}") from None
    problems: list[str] = []

    def onerror(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot read directory: {exc.strerror or exc}")

    runs = []
    for directory, subdirs, files in os.walk(logdir, onerror=onerror):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        summary = SUMMARY_FILENAME in files
        events = sorted(f for f in files if EVENT_FILE_MARK in f)
        if not summary and not events:
            continue
        rel = os.path.relpath(directory, logdir)
        runs.append(
            RunFiles(
                directory=directory,
                name=os.path.basename(os.path.abspath(logdir)) if rel == "." else rel,
                summary=os.path.join(directory, SUMMARY_FILENAME) if summary else None,
                events=[os.path.join(directory, f) for f in events],
            )
        )
    runs.sort(key=lambda r: r.name)
    return runs, problems


@dataclass
class RunRecord:
    """What is known of one run, from its summary or else from its TensorBoard scalars.

    Units: ``step`` optimizer steps; ``tokens`` tokens seen; ``flops`` floating-point
    operations (cumulative); ``loss`` in the logged loss's units (nats for cross-entropy).
    """

    name: str
    directory: str
    source: str  # "summary" or "events"
    loss_name: str
    x_axis: str
    step: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray | None = None
    flops: np.ndarray | None = None
    steps: int | None = None
    final_loss: float | None = None
    n_params: float | None = None
    tokens_total: float | None = None
    flops_total: float | None = None
    forecast: dict[str, Any] | None = None
    fit: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    stopped_reason: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def law(self) -> str | None:
        if self.forecast and self.forecast.get("law"):
            return str(self.forecast["law"])
        if self.fit and self.fit.get("law"):
            return str(self.fit["law"])
        return None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None)."""

        def num(v):
            if v is None:
                return None
            v = float(v)
            return v if math.isfinite(v) else None

        def arr(a):
            return None if a is None else [num(v) for v in a]

        return {
            "run": self.name,
            "directory": self.directory,
            "source": self.source,
            "loss_name": self.loss_name,
            "x_axis": self.x_axis,
            "steps": self.steps,
            "final_loss": num(self.final_loss),
            "n_params": num(self.n_params),
            "tokens": num(self.tokens_total),
            "flops": num(self.flops_total),
            "law": self.law,
            "forecast": _json_safe(self.forecast),
            "warnings": list(self.warnings),
            "stopped_reason": self.stopped_reason,
            "problems": list(self.problems),
            "curve": {
                "step": [int(s) for s in self.step],
                "tokens": arr(self.tokens),
                "flops": arr(self.flops),
                "loss": arr(self.loss),
            },
        }


def _json_safe(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _float_or_none(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _curve_array(values, n: int) -> np.ndarray | None:
    if not isinstance(values, list) or len(values) != n or all(v is None for v in values):
        return None
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def run_from_summary(data: dict[str, Any], name: str, directory: str) -> RunRecord:
    """A RunRecord from a checked summary dict (see :func:`read_summary`)."""
    curve = data.get("curve") or {}
    try:
        loss = np.array([math.nan if v is None else float(v) for v in curve.get("loss") or []])
        step = np.array(curve.get("step") or [], dtype=float)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: run summary has a non-numeric curve") from None
    if step.size != loss.size:
        raise InvalidInputError(f"{name}: run summary curve has {step.size} steps but {loss.size} losses")
    forecast = data.get("forecast") if isinstance(data.get("forecast"), dict) else None
    fit = data.get("fit") if isinstance(data.get("fit"), dict) else None
    steps = data.get("steps")
    return RunRecord(
        name=name,
        directory=directory,
        source="summary",
        loss_name=str(data.get("loss_name") or "loss"),
        x_axis=str(data.get("x_axis") or "step"),
        step=step,
        loss=loss,
        tokens=_curve_array(curve.get("tokens"), step.size),
        flops=_curve_array(curve.get("flops"), step.size),
        steps=int(steps) if isinstance(steps, (int, float)) and math.isfinite(steps) else None,
        final_loss=_float_or_none(data.get("final_loss")),
        n_params=_float_or_none(data.get("n_params")),
        tokens_total=_float_or_none(data.get("tokens")),
        flops_total=_float_or_none(data.get("flops")),
        forecast=forecast,
        fit=fit,
        warnings=[str(w) for w in data.get("warnings") or []],
        stopped_reason=data.get("stopped_reason"),
    )


def _find_tag(available, name: str) -> str | None:
    """``name`` itself, or ``name`` under a logger prefix ("prefix-name", Lightning's join)."""
    if name in available:
        return name
    for tag in sorted(available):
        if tag.endswith("-" + name):
            return tag
    return None


def final_value(steps: np.ndarray, values: np.ndarray) -> float | None:
    """Mean of the finite values in the last 1% of the step range (at least the last point)."""
    good = np.isfinite(values)
    if not good.any():
        return None
    s, v = steps[good], values[good]
    span = float(s[-1] - s[0])
    keep = s >= s[-1] - 0.01 * span
    return float(v[keep].mean())


def run_from_events(files: list[str], name: str, directory: str, tags=None) -> RunRecord:
    """A RunRecord from a run's TensorBoard scalars.

    ``tags``: loss tags to try in order (default :data:`DEFAULT_LOSS_TAGS`). The callback's
    own scalars (``scaling/forecast_final_loss``, ``scaling/flops``, ...) are used when present.
    Raises InvalidInputError when no loss tag is found.
    """
    scalars = read_scalars(files)
    candidates = list(tags) if tags else list(DEFAULT_LOSS_TAGS)
    tag = None
    for cand in candidates:
        tag = _find_tag(scalars.series, cand)
        if tag is not None:
            break
    if tag is None and scalars.n_records == 0 and scalars.problems:
        raise InvalidInputError(f"{name}: no readable TensorBoard data ({'; '.join(scalars.problems)})")
    if tag is None:
        found = ", ".join(scalars.tags()[:12]) or "none"
        problems = f" ({'; '.join(scalars.problems)})" if scalars.problems else ""
        raise InvalidInputError(
            f"{name}: no loss tag among {', '.join(candidates)} (scalar tags found: {found}); "
            f"pass --tag{problems}"
        )
    steps, loss = scalars.series[tag]

    def last(key: str) -> float | None:
        t = _find_tag(scalars.series, key)
        if t is None:
            return None
        return _float_or_none(scalars.series[t][1][-1])

    def aligned(key: str) -> np.ndarray | None:
        t = _find_tag(scalars.series, key)
        if t is None:
            return None
        s, v = scalars.series[t]
        if s.size < 2:
            return None
        return np.interp(steps, s, v, left=math.nan, right=math.nan)

    forecast = None
    final_fc = last("scaling/forecast_final_loss")
    if final_fc is not None:
        forecast = {
            "final_loss": final_fc,
            "lower": last("scaling/forecast_lower"),
            "upper": last("scaling/forecast_upper"),
            "level": None,
            "step": int(scalars.series[_find_tag(scalars.series, "scaling/forecast_final_loss")][0][-1]),
            "law": None,
            "target_step": None,
        }
    flops = aligned("scaling/flops")
    tokens = aligned("scaling/tokens")
    return RunRecord(
        name=name,
        directory=directory,
        source="events",
        loss_name=tag,
        x_axis="step",
        step=steps.astype(float),
        loss=loss,
        tokens=tokens,
        flops=flops,
        steps=int(steps[-1]) + 1 if steps.size else None,
        final_loss=final_value(steps, loss),
        tokens_total=last("scaling/tokens"),
        flops_total=last("scaling/flops"),
        forecast=forecast,
        problems=list(scalars.problems),
    )


def load_run(run: RunFiles, tags=None) -> RunRecord:
    """Read one run: its summary when there is a readable one, else its event files.

    A summary that cannot be used (corrupt, newer version) is reported in ``problems`` of
    the record read from the event files; with no event files to fall back on, the
    summary's error is raised (InvalidInputError).
    """
    summary_error = None
    if run.summary is not None:
        try:
            return run_from_summary(read_summary(run.summary), run.name, run.directory)
        except InvalidInputError as exc:
            summary_error = str(exc).replace(run.summary, f"{run.name}: {SUMMARY_FILENAME}", 1)
            if not run.events:
                raise InvalidInputError(summary_error) from None
    try:
        record = run_from_events(run.events, run.name, run.directory, tags)
    except InvalidInputError as exc:
        if summary_error:
            raise InvalidInputError(f"{summary_error}; and from its event files: {exc}") from None
        raise
    if summary_error:
        record.problems.insert(0, summary_error + "; read the TensorBoard scalars instead")
    return record
