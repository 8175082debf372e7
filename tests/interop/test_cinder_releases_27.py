"""The driver's release checks (test_cinder_releases.py) inside Cinder 27 (2025.2, Flamingo)."""

from tests.interop.test_cinder_releases import *  # noqa: F401,F403  (the checks, their fixtures)

RELEASE = "27.0.0"
