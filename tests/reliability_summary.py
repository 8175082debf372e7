"""Pytest plugin: what the reliability tests did, printed at the end of the session.

Tests record through the `reliability` fixture (session-wide recorder); the figures
are what they actually did, never written down in advance:

    reliability.crash(step, survived)            a process SIGKILLed at a step, and whether
                                                 the retry completed or cleaned
    reliability.fault(name, survived, seconds)   a fault injected (real or through a proxy),
                                                 and whether the upload ended bounded and clean
    reliability.requests(sent, errors)           load sent to a service
    reliability.fuzz(cases, fives)               fuzz cases and 5xx answers
    reliability.uploads(run, completed, refused, checked, corrupt)
                                                 concurrent uploads: finished, refused with a
                                                 clear error, images whose bytes were read back
    reliability.pool_check(leaked)               a before/after check of both pools

The crash-at-each-step tests of tests/functional/test_upload_clone.py predate this
plugin: each of their runs is counted from its outcome (it SIGKILLs one step; it
passes only if the retry left exactly the registered clone), and every test that used
`cinder_env` counts as one pool check, a leak when its teardown check failed.
"""

import threading

import pytest

# the parametrized test of test_upload_clone.py that kills the upload at one step
_CRASH_TEST = "test_retry_after_a_crash_at_each_step_finishes_cleanly"


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.steps_crashed = self.steps_survived = 0
        self.faults_injected = self.faults_survived = 0
        self.fault_lines = []
        self.requests_sent = self.request_errors = 0
        self.fuzz_cases = self.fuzz_5xx = 0
        self.pool_checks = self.leaks = 0
        self.uploads_run = self.uploads_completed = self.uploads_refused = 0
        self.images_checked = self.images_corrupt = 0

    def crash(self, step, survived):
        with self.lock:
            self.steps_crashed += 1
            self.steps_survived += bool(survived)

    def fault(self, name, survived, seconds=None, outcome=""):
        with self.lock:
            self.faults_injected += 1
            self.faults_survived += bool(survived)
            when = f" {seconds:.1f} s" if seconds is not None else ""
            self.fault_lines.append(f"{name}: {outcome or ('survived' if survived else 'FAILED')}{when}")

    def requests(self, sent, errors):
        with self.lock:
            self.requests_sent += sent
            self.request_errors += errors

    def fuzz(self, cases, fives):
        with self.lock:
            self.fuzz_cases += cases
            self.fuzz_5xx += fives

    def uploads(self, run, completed, refused, checked, corrupt):
        with self.lock:
            self.uploads_run += run
            self.uploads_completed += completed
            self.uploads_refused += refused
            self.images_checked += checked
            self.images_corrupt += corrupt

    def pool_check(self, leaked):
        with self.lock:
            self.pool_checks += 1
            self.leaks += bool(leaked)

    def as_dict(self):
        return {k: v for k, v in vars(self).items() if k != "lock"}

    def merge(self, other):
        """Add another process's figures (an xdist worker's) to these."""
        with self.lock:
            for k, v in other.items():
                setattr(self, k, getattr(self, k) + v)

    def anything(self):
        return any((self.steps_crashed, self.faults_injected, self.requests_sent, self.fuzz_cases,
                    self.pool_checks, self.uploads_run))


RECORDER = Recorder()


@pytest.fixture(scope="session")
def reliability():
    return RECORDER


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    name = getattr(item, "originalname", item.name)
    if name == _CRASH_TEST and item.module.__name__.endswith("test_upload_clone"):
        if report.when == "call" and not report.skipped:
            RECORDER.crash(item.callspec.params.get("point"), report.passed)
        elif report.when == "teardown" and report.failed:
            RECORDER.steps_survived -= 1  # the retry left something behind after all
    if "cinder_env" in getattr(item, "fixturenames", ()) and report.when == "teardown":
        # cinder_env's teardown asserts both pools are back to their baseline
        leaked = report.failed and "pool_state() == env.baseline" in str(report.longrepr)
        RECORDER.pool_check(leaked)


def pytest_sessionfinish(session):
    # an xdist worker hands its figures to the controller, which prints the summary
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["reliability"] = RECORDER.as_dict()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    RECORDER.merge(getattr(node, "workeroutput", {}).get("reliability", {}))


def pytest_terminal_summary(terminalreporter):
    r = RECORDER
    if not r.anything():
        return
    tr = terminalreporter
    tr.section("reliability summary")
    tr.write_line(f"steps crashed / survived:   {r.steps_crashed} / {r.steps_survived}")
    tr.write_line(f"faults injected / survived: {r.faults_injected} / {r.faults_survived}")
    for line in r.fault_lines:
        tr.write_line(f"    {line}")
    tr.write_line(f"requests sent / errors:     {r.requests_sent} / {r.request_errors}")
    tr.write_line(f"fuzz cases / 5xx:           {r.fuzz_cases} / {r.fuzz_5xx}")
    tr.write_line(f"concurrent uploads run / completed / refused (one clear line): "
                  f"{r.uploads_run} / {r.uploads_completed} / {r.uploads_refused}; "
                  f"images read back / corrupt: {r.images_checked} / {r.images_corrupt}")
    tr.write_line(f"leaks found:                {r.leaks} (pool checks: {r.pool_checks})"
                  + ("" if r.leaks == 0 else "   <-- must be 0"))
