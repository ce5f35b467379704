"""Hypothesis profiles: CI draws the same examples on every run (a fresh machine has no example
database, and a submission must not pass or fail by the luck of the draw); set
``HYPOTHESIS_PROFILE=explore`` to draw new ones."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
