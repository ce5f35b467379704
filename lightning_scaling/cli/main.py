"""The ``lightning-scaling`` command: extrapolate, fit-law, report.

Every subcommand turns bad input into one line on stderr and exit status 2 (``CliError``);
nothing else escapes as a traceback.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import InvalidInputError
from . import extrapolate, fitlaw, report
from .common import CliError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightning-scaling",
        description="Fit scaling laws to training curves and forecast where runs end.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extrapolate", help="fit one loss curve (CSV) and forecast it at --at X")
    p.add_argument("file", help="CSV file with a header row")
    p.add_argument("--x", default="step", help="column of the x axis (default: step)")
    p.add_argument("--loss", default="loss", help="column of the loss (default: loss)")
    p.add_argument("--lr", default=None, help="column of the learning rate at every step")
    p.add_argument("--at", type=float, action="append", required=True,
                   help="x at which to forecast (repeatable)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a log-log figure")
    p.set_defaults(func=extrapolate.run)

    # report (issue 5)
    p = sub.add_parser("report", help="one row per run found under a log directory")
    p.add_argument("logdir", help="directory holding run summaries and/or TensorBoard event files")
    p.add_argument("--tag", action="append", default=None,
                   help="loss tag for runs without a summary (repeatable, tried in order; "
                        "default: train_loss, loss, train/loss, val_loss, ...)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write every run's curve and forecast on one log-log figure")
    p.set_defaults(func=report.run)

    # fit-law (issue 7)
    p = sub.add_parser("fit-law", help="fit L(N, D) = E + A/N^alpha + B/D^beta across runs")
    p.add_argument("source", metavar="FILE|LOGDIR",
                   help="CSV with one row per run, or a folder of scaling_summary.json files")
    p.add_argument("--n", default=None, help="column of N, parameters (default: N, n_params, N_params)")
    p.add_argument("--d", default=None, help="column of D, tokens (default: D, tokens, D_tokens)")
    p.add_argument("--loss", default=None, help="column of the final loss, nats (default: loss)")
    p.add_argument("--budget", type=float, action="append", default=None, metavar="C",
                   help="compute budget in FLOPs (C = 6 N D): print the compute-optimal N, D "
                        "and predicted loss (repeatable)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="K",
                   help="bootstrap resamples for the intervals (default 200; 0: none)")
    p.add_argument("--level", type=float, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="write IsoFLOP curves and the compute-optimal frontier (needs matplotlib)")
    p.set_defaults(func=fitlaw.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, InvalidInputError, OSError) as exc:
        print(f"lightning-scaling {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
