"""What training runs leave behind: run summaries, CSV tables, TensorBoard event files, runs.

numpy and the standard library only (no torch, no Lightning), so the command line starts fast.
"""

from .events import (
    EVENT_FILE_MARK,
    Scalars,
    event_files,
    iter_event_records,
    read_scalars,
)
from .runs import DEFAULT_LOSS_TAGS, RunFiles, RunRecord, find_runs, load_run
from .summary import (
    SUMMARY_FILENAME,
    SUMMARY_FORMAT,
    SUMMARY_VERSION,
    read_summary,
    write_summary,
)
from .tables import read_csv

__all__ = [
    "DEFAULT_LOSS_TAGS", "EVENT_FILE_MARK", "RunFiles", "RunRecord", "SUMMARY_FILENAME", "SUMMARY_FORMAT",
    "SUMMARY_VERSION", "Scalars", "event_files", "find_runs", "iter_event_records", "load_run", "read_csv",
    "read_scalars", "read_summary", "write_summary",
]
