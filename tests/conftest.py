"""Shared test settings.

In CI (``CI`` set, as ``.ci/run`` runs) hypothesis is derandomized: every run draws the
same examples, so a green build stays green and a red one can be reproduced. Locally it
explores new examples on every run.
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
