"""TensorBoard event files read without TensorBoard's reader (TFRecord framing: u64 length,
u32 masked CRC32C of the length, data, u32 masked CRC32C of the data).

Built for logs of real runs: an event file that is still being written ends in a half
record, a crashed job leaves a truncated file, a disk error leaves garbage. Such files are
read up to the damage and the damage is reported in ``problems``; only input that yields
nothing at all raises :class:`~lightning_scaling.errors.InvalidInputError`.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import InvalidInputError

EVENT_FILE_MARK = "tfevents"


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
    from tensorboard.compat.proto import (
        event_pb2,  # protobuf classes only: no TensorFlow
    )

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
