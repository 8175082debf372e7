"""The maintained OpenStack series this project runs on, one table for every tool.

Per series: its release day (the day its upper-constraints froze: what
tools/peers/freeze-release-constraints resolves against) and the services `tools/cloud start
--release SERIES` runs, each at the series' newest stable release on PyPI. Peer venvs are
named after the service's major (keystone27, glance30, cinder26, ...).
"""

from collections import namedtuple

Series = namedtuple("Series", "day keystone glance cinder")

SERIES = {
    "2025.1": Series("2025-04-02", keystone="27.1.0", glance="30.2.0", cinder="26.3.0"),  # SLURP
    "2025.2": Series("2025-10-01", keystone="28.1.0", glance="31.1.0", cinder="27.0.0"),
    "2026.1": Series("2026-04-01", keystone="29.1.0", glance="32.0.0", cinder="28.0.0"),  # SLURP
    "2026.2": Series("2026-09-30", keystone="30.0.0", glance="33.0.0", cinder="29.0.0"),
}
NEWEST = "2026.2"


def major(version):
    return version.split(".")[0]


def peer(service, series):
    """The peer venv's name of a service in a series: peer("glance", "2025.1") == "glance30"."""
    return f"{service}{major(getattr(SERIES[series], service))}"
