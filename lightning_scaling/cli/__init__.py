"""The ``lightning-scaling`` command: extrapolate, fit-law, report."""

from .main import main

__all__ = ["main"]
