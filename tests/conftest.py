"""Shared pytest configuration: debug checks on, and a fixed hypothesis profile so property tests are deterministic.

NBDIFF_DEBUG=1 makes every nd.function in the tests run the graph verifier after each rewrite pass and check each
interpreter result against its node's static type. NBDIFF_COMPILE=0 keeps backend="auto" on the interpreter (most
tests are about graphs; the backend's tests ask for backend="cpu"), and NBDIFF_CACHE_DIR keeps compiled kernels
out of the user's cache. They must be set before nbdiff is imported.
"""

import os
import tempfile

os.environ.setdefault("NBDIFF_DEBUG", "1")
os.environ.setdefault("NBDIFF_COMPILE", "0")
os.environ.setdefault("NBDIFF_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"nbdiff-test-cache-{os.getuid()}"))

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")
