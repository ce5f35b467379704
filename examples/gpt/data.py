"""Byte-level text data with nothing to download.

The default corpus is the Python standard library's own source files, found from the
running interpreter (``sysconfig.get_paths()["stdlib"]``). ``"python"`` adds the
interpreter's site-packages (several times larger, for the GPU preset). Any folder or text
file works too. Tokens are raw bytes (vocabulary 256), so there is no tokenizer to fetch.

Train and validation are split *by file*, deterministically: a file goes to validation when
a CRC-32 of its path relative to the corpus root falls in the validation fraction. The same
corpus gives the same split on every machine and in every process (no random seed involved),
and adding a file never moves another one across the split.
"""

from __future__ import annotations

import functools
import os
import sysconfig
import zlib
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

# File types read when the corpus is a folder; binary files would only add noise.
TEXT_SUFFIXES = frozenset(
    {".py", ".pyi", ".txt", ".md", ".rst", ".c", ".h", ".cpp", ".json", ".toml", ".cfg", ".ini",
     ".html", ".css", ".js", ".sh", ".tex", ".csv", ".yaml", ".yml"}
)
# Between two files, so the model sees where one ends (a byte that does not occur in text).
FILE_SEPARATOR = 0
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", ".git"})


class CorpusError(ValueError):
    """The corpus path is missing, empty, or too small to split."""


def stdlib_files() -> list[tuple[Path, str]]:
    """(path, key) for every ``.py`` file of the running interpreter's standard library.

    ``key`` is the path relative to the stdlib folder (what the split hashes). Installed
    third-party packages (site-packages) are left out.
    """
    return _walk(Path(sysconfig.get_paths()["stdlib"]), suffixes={".py"})


def python_files() -> list[tuple[Path, str]]:
    """The standard library plus the ``.py`` files of the interpreter's site-packages."""
    files = stdlib_files()
    seen = set()
    for name in ("purelib", "platlib"):
        root = Path(sysconfig.get_paths()[name])
        if root in seen or not root.is_dir():
            continue
        seen.add(root)
        files += [(p, f"site-packages/{k}") for p, k in _walk(root, {".py"}, skip=("__pycache__",))]
    return files


def _walk(root: Path, suffixes, skip=tuple(_SKIP_DIRS)) -> list[tuple[Path, str]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.suffix in suffixes and path.is_file():
                found.append((path, path.relative_to(root).as_posix()))
    return found


def corpus_files(source: str | os.PathLike = "stdlib") -> list[tuple[Path, str]]:
    """Resolve a corpus: ``"stdlib"``, ``"python"``, a folder (text files in it), or a file."""
    if str(source) == "stdlib":
        files = stdlib_files()
    elif str(source) == "python":
        files = python_files()
    else:
        path = Path(source).expanduser()
        if path.is_file():
            files = [(path, path.name)]
        elif path.is_dir():
            files = _walk(path, TEXT_SUFFIXES, skip=("__pycache__", ".git"))
        else:
            raise CorpusError(f"--data {source}: no such file or folder")
    if not files:
        raise CorpusError(f"--data {source}: no text files found (looked for {sorted(TEXT_SUFFIXES)})")
    return files


def is_validation(key: str, val_fraction: float) -> bool:
    """Deterministic by-file split: True when the file belongs to the validation set."""
    return (zlib.crc32(key.encode("utf-8")) % 10_000) < val_fraction * 10_000


def load_split(source="stdlib", val_fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(train_bytes, val_bytes) as uint8 arrays, files joined by ``FILE_SEPARATOR``.

    Read once per process and corpus (a sweep trains many models on the same bytes); the
    arrays are shared, so treat them as read-only.

    A single file cannot be split by file; it is split by position instead (the last
    ``val_fraction`` of its bytes go to validation).
    """
    if not 0.0 < val_fraction < 1.0:
        raise CorpusError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    return _load_split(str(source), float(val_fraction))


@functools.lru_cache(maxsize=2)
def _load_split(source: str, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    files = corpus_files(source)
    if len(files) == 1:
        data = np.frombuffer(bytearray(files[0][0].read_bytes()), dtype=np.uint8)
        cut = int(len(data) * (1.0 - val_fraction))
        return data[:cut], data[cut:]
    parts: dict[bool, list[bytes]] = {False: [], True: []}
    for path, key in files:
        parts[is_validation(key, val_fraction)].append(path.read_bytes())
    if not parts[True]:  # a handful of files can all hash to train: keep one for validation
        parts[True].append(parts[False].pop())
    sep = bytes([FILE_SEPARATOR])
    # bytearray: a writable buffer, so torch.from_numpy shares it without a warning or a copy
    return tuple(np.frombuffer(bytearray(sep.join(parts[v])), dtype=np.uint8) for v in (False, True))


class ByteWindows(Dataset):
    """Windows of ``seq_len + 1`` bytes from one array: (input, next-byte target) pairs.

    ``stride`` is the distance between window starts. With ``max_windows`` the windows are
    spread evenly over the whole array (a validation set that covers every file, not just
    the first ones).
    """

    def __init__(self, data: np.ndarray, seq_len: int, stride: int | None = None,
                 max_windows: int | None = None):
        if len(data) < seq_len + 1:
            raise CorpusError(f"corpus part has {len(data)} bytes, fewer than seq_len + 1 = {seq_len + 1}")
        self.data = torch.from_numpy(np.ascontiguousarray(data))
        self.seq_len = seq_len
        n_starts = (len(data) - seq_len - 1) // (stride or seq_len) + 1
        starts = torch.arange(n_starts, dtype=torch.long) * (stride or seq_len)
        if max_windows is not None and n_starts > max_windows:
            starts = starts[torch.linspace(0, n_starts - 1, max_windows).long()]
        self.starts = starts

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = int(self.starts[i])
        window = self.data[s : s + self.seq_len + 1].long()
        return window[:-1], window[1:]


class ByteDataModule(pl.LightningDataModule):
    """Byte-level language-modelling data: shuffled training windows, fixed validation windows.

    Args:
        source: ``"stdlib"`` (default), ``"python"``, or a path to a folder or text file.
        seq_len: tokens (bytes) per example.
        batch_size: examples per batch per device.
        val_fraction: share of files held out for validation.
        val_windows: number of validation examples, spread evenly over the held-out bytes.
        num_workers: DataLoader worker processes (0 on a small CPU machine: the training
            itself needs the cores).
        seed: shuffling seed of the training windows.
    """

    def __init__(self, source="stdlib", seq_len: int = 128, batch_size: int = 32,
                 val_fraction: float = 0.05, val_windows: int = 512, num_workers: int = 0,
                 pin_memory: bool = False, seed: int = 0):
        super().__init__()
        self.source = source
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.val_windows = val_windows
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.train_bytes: np.ndarray | None = None
        self.val_bytes: np.ndarray | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_bytes is None:
            self.train_bytes, self.val_bytes = load_split(self.source, self.val_fraction)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            ByteWindows(self.train_bytes, self.seq_len), batch_size=self.batch_size, shuffle=True,
            drop_last=True, generator=generator, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        windows = ByteWindows(self.val_bytes, self.seq_len, max_windows=self.val_windows)
        return DataLoader(windows, batch_size=self.batch_size, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)
