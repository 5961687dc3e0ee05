"""Shared pytest configuration: debug checks on, and a fixed hypothesis profile so property tests are deterministic.

NBDIFF_DEBUG=1 makes every nd.function in the tests run the graph verifier after each rewrite pass and check each
interpreter result against its node's static type. It must be set before nbdiff is imported.
"""

import os

os.environ.setdefault("NBDIFF_DEBUG", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("ci")
