"""The driver's release checks (test_cinder_releases.py) inside Cinder 28 (2026.1, the
SLURP release operators upgrade to from 2025.1)."""

from tests.interop.test_cinder_releases import *  # noqa: F401,F403  (the checks, their fixtures)

RELEASE = "28.0.0"
