"""Pytest plugin: where a run's time went, printed at the end of every run.

* per module: the wall time of its tests, set-up and tear-down included (module and
  session fixtures are paid by the test that first needs them, and torn down after the
  last), and how many tests it had;
* per expensive fixture: the set-up of every session- or module-scoped fixture that took
  over a second (dev clusters, Glance and Keystone peers, the real cloud, venvs), with
  how many times it was set up (once per xdist worker that needed it).

Both come from the test reports, which xdist forwards to the controller: one table for
the whole run, however many workers ran it. The contributor docs keep a copy
(doc/source/contributor/durations.rst). The tables name the tier that ran (tools/test sets
GRC_TEST_TIER: gate, full, or selection for tests named on the command line).
"""

import collections
import os
import time

import pytest

_KEY = "fixture_setup_seconds"


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    t0 = time.monotonic()
    yield
    took = time.monotonic() - t0
    if fixturedef.scope in ("session", "module", "package") and took >= 1.0:
        item = getattr(request, "_pyfuncitem", None)
        if item is not None:
            item.user_properties.append((_KEY, (fixturedef.argname, fixturedef.scope, took)))


class Durations:
    def __init__(self, tier=""):
        self.tier = f" ({tier})" if tier else ""
        self.modules = collections.defaultdict(float)
        self.tests = collections.Counter()
        self.fixtures = collections.defaultdict(list)
        self.started = time.monotonic()

    def pytest_runtest_logreport(self, report):
        module = report.nodeid.split("::")[0]
        self.modules[module] += report.duration
        if report.when == "call" or (report.when == "setup" and report.skipped):
            self.tests[module] += 1
        if report.when == "setup":
            for key, value in report.user_properties:
                if key == _KEY:
                    name, scope, took = value
                    self.fixtures[(name, scope)].append(took)

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        tr.section(f"durations{self.tier}: per module (set-up and tear-down included)")
        wall = time.monotonic() - self.started
        total = sum(self.modules.values())
        tr.write_line(f"{'seconds':>8}  {'share':>5}  {'tests':>5}  module")
        for module, secs in sorted(self.modules.items(), key=lambda kv: -kv[1]):
            tr.write_line(f"{secs:8.1f}  {secs / total:5.0%}  {self.tests[module]:5d}  {module}")
        tr.write_line(f"{total:8.1f}  summed over modules; {wall:.1f} s of wall time "
                      f"({total / wall:.2f} modules at a time)")
        if self.fixtures:
            tr.section(f"durations{self.tier}: fixtures that took over a second to set up")
            tr.write_line(f"{'seconds':>8}  {'times':>5}  fixture (scope)")
            for (name, scope), runs in sorted(self.fixtures.items(), key=lambda kv: -sum(kv[1])):
                tr.write_line(f"{sum(runs):8.1f}  {len(runs):5d}  {name} ({scope})")


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        tier = os.environ.get("GRC_TEST_TIER", "")
        tier = {"gate": "the gate", "full": "the full tier", "selection": "the tests named"}.get(tier, tier)
        config.pluginmanager.register(Durations(tier), "durations-table")
