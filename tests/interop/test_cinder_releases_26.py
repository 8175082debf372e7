"""The driver's release checks (test_cinder_releases.py) inside Cinder 26 (2025.1, Epoxy)."""

from tests.interop.test_cinder_releases import *  # noqa: F401,F403  (the checks, their fixtures)

RELEASE = "26.3.0"
