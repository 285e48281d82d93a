"""Shared test settings.

In CI (``CI`` set, as ``.ci/run`` runs) hypothesis is derandomized: every run draws the
same examples, so a green build stays green and a red one can be reproduced. Locally it
explores new examples on every run.
"""
import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="module")
def one_thread():
    """For modules of small models, where one thread is fastest: torch runs on one
    thread for the module, and the count is restored afterwards. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
