"""The driver's release checks (test_cinder_releases.py) inside Cinder 29 (2026.2), so that
the matrix has every release; test_cinder_driver.py and _day2.py go through it in depth."""

from tests.interop.test_cinder_releases import *  # noqa: F401,F403  (the checks, their fixtures)

RELEASE = "29.0.0"
