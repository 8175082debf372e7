"""cinder_ext.snapshot_gate: uploads of one process ask for their snapshots together; a
lone upload never waits, a straggler costs the others MAX_WAIT at most, an upload that
leaves (a copy, a failure) lets the others through. Real threads, real clocks."""

import threading
import time

import pytest

from cinder_ext.snapshot_gate import SnapshotGate


def _upload(gate, started, arrive_after, out, key, leave_instead=False, fail=False):
    try:
        with gate.on_the_way() as ticket:
            started.wait()  # a burst: every upload on its way before any arrives
            time.sleep(arrive_after)  # fetching, locking ...
            if fail:
                raise RuntimeError("fetch failed")
            if leave_instead:
                ticket.leave()
                out[key] = ("left", time.monotonic())
                time.sleep(0.5)  # the copy goes on: nobody waits for it
                return
            waited = ticket.arrive()
            out[key] = (waited, time.monotonic())
    except RuntimeError:
        out[key] = ("failed", time.monotonic())


def _together(gate, *specs):
    out = {}
    started = threading.Barrier(len(specs))
    threads = [threading.Thread(target=_upload, args=(gate, started, after, out, i), kwargs=kw)
               for i, (after, kw) in enumerate(specs)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return t0, out


def test_a_lone_upload_never_waits():
    gate = SnapshotGate(max_wait=5)
    t0, out = _together(gate, (0.0, {}))
    waited, at = out[0]
    assert waited == 0.0 and at - t0 < 0.1


def test_uploads_on_their_way_snapshot_together():
    gate = SnapshotGate(max_wait=5)
    t0, out = _together(gate, (0.0, {}), (0.15, {}), (0.3, {}))
    released = [out[i][1] - t0 for i in range(3)]
    # the first two waited for the last: all three asked at the same moment
    assert max(released) - min(released) < 0.05, released
    assert 0.28 < min(released) < 0.5, released
    assert out[2][0] == 0.0 and out[0][0] > 0.25


def test_a_straggler_costs_the_others_max_wait_at_most():
    gate = SnapshotGate(max_wait=0.2)
    t0, out = _together(gate, (0.0, {}), (0.05, {}), (1.0, {}))
    first, second, straggler = (out[i][1] - t0 for i in range(3))
    assert 0.18 < first < 0.35 and abs(first - second) < 0.05, (first, second)
    # nobody else was on the way when it came: it went at once
    assert out[2][0] == 0.0 and straggler > 0.95


@pytest.mark.parametrize("how", ["leave", "fail"])
def test_an_upload_that_will_not_snapshot_lets_the_others_through(how):
    gate = SnapshotGate(max_wait=5)
    kw = {"leave_instead": True} if how == "leave" else {"fail": True}
    t0, out = _together(gate, (0.0, {}), (0.2, kw))
    assert out[1][0] == ("left" if how == "leave" else "failed")
    assert abs(out[0][1] - out[1][1]) < 0.05 and out[0][1] - t0 < 0.4
    assert gate._on_the_way == 0 and gate._deadline is None


def test_groups_follow_each_other():
    gate = SnapshotGate(max_wait=5)
    for _ in range(3):
        t0, out = _together(gate, (0.0, {}), (0.1, {}))
        assert abs(out[0][1] - out[1][1]) < 0.05
    assert gate._on_the_way == 0 and gate._deadline is None
