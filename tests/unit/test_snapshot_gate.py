"""cinder_ext.snapshot_gate: uploads of one process ask for their snapshots together; a
lone upload never waits, a straggler costs the others max_wait at most, an upload that
leaves (a copy, a failure) lets the others through.

Real threads, no clock: each upload says when it arrives, waits or returns in one
shared log, and the tests assert the order of those events (an upload released before
another arrived was not held for it), with events instead of sleeps to say when an
upload moves on. max_wait is generous except where the deadline is the subject, so a
loaded machine cannot make a test pass or fail. With the gate disabled (arrive() returning
at once) every test but the lone upload's fails.
"""

import threading

from cinder_ext.snapshot_gate import SnapshotGate

GENEROUS = 60.0  # seconds: never reached unless the gate is broken


class Burst:
    """Uploads on their way through one gate, each released to arrive by an event."""

    def __init__(self, gate, n):
        self.gate, self.log, self.lock = gate, [], threading.Lock()
        self.go = [threading.Event() for _ in range(n)]
        self.waited = {}
        self.on_the_way = threading.Barrier(n + 1)
        self.threads = [threading.Thread(target=self._upload, args=(i,), daemon=True)
                        for i in range(n)]
        self.how = {}
        for t in self.threads:
            t.start()
        self.on_the_way.wait(10)  # every upload counted before any arrives

    def note(self, what):
        with self.lock:
            self.log.append(what)

    def _upload(self, i):
        try:
            with self.gate.on_the_way() as ticket:
                self.on_the_way.wait(10)
                self.go[i].wait(GENEROUS)
                how = self.how.get(i, "arrive")
                if how == "fail":
                    self.note(f"{i} failed")
                    raise RuntimeError("fetch failed")
                if how == "leave":
                    self.note(f"{i} left")
                    ticket.leave()
                    return
                self.note(f"{i} arrives")
                self.waited[i] = ticket.arrive()
                self.note(f"{i} released")
        except RuntimeError:
            pass

    def release(self, i, how="arrive"):
        self.how[i] = how
        self.go[i].set()

    def wait_for(self, entry, timeout=10):
        deadline = threading.Event()
        for _ in range(int(timeout / 0.01)):
            with self.lock:
                if entry in self.log:
                    return True
            deadline.wait(0.01)
        return False

    def join(self):
        for t in self.threads:
            t.join(GENEROUS)
        assert not any(t.is_alive() for t in self.threads)


def test_a_lone_upload_never_waits():
    burst = Burst(SnapshotGate(max_wait=GENEROUS), 1)
    burst.release(0)
    burst.join()
    assert burst.waited[0] == 0.0


def test_uploads_on_their_way_snapshot_together():
    burst = Burst(SnapshotGate(max_wait=GENEROUS), 3)
    burst.release(0)
    assert burst.wait_for("0 arrives")
    burst.release(1)
    assert burst.wait_for("1 arrives")
    assert "0 released" not in burst.log and "1 released" not in burst.log  # held for 2
    burst.release(2)
    burst.join()
    log = burst.log
    # nobody was released before the last of them arrived; the last did not wait
    assert log.index("2 arrives") < min(log.index(f"{i} released") for i in range(3)), log
    assert burst.waited[2] == 0.0


def test_a_straggler_costs_the_others_max_wait_at_most():
    burst = Burst(SnapshotGate(max_wait=0.2), 3)
    burst.release(0)
    burst.release(1)
    # the straggler (2) has not arrived, and will not until they are through
    assert burst.wait_for("0 released", timeout=30) and burst.wait_for("1 released", timeout=30)
    assert "2 arrives" not in burst.log
    # held until the group's deadline (max_wait from the first to arrive), not for 2
    assert max(burst.waited[0], burst.waited[1]) >= 0.2, burst.waited
    burst.release(2)
    burst.join()
    assert burst.waited[2] == 0.0  # nobody else on the way when it came: went at once


def test_an_upload_that_copies_lets_the_others_through():
    _one_that_will_not_snapshot("leave")


def test_an_upload_that_fails_lets_the_others_through():
    _one_that_will_not_snapshot("fail")


def _one_that_will_not_snapshot(how):
    gate = SnapshotGate(max_wait=GENEROUS)
    burst = Burst(gate, 2)
    burst.release(0)
    assert burst.wait_for("0 arrives")
    assert not burst.wait_for("0 released", timeout=0.3)  # held for 1
    burst.release(1, how)
    burst.join()
    log = burst.log
    word = "left" if how == "leave" else "failed"
    assert log.index(f"1 {word}") < log.index("0 released"), log
    assert gate._on_the_way == 0 and gate._deadline is None


def test_groups_follow_each_other():
    gate = SnapshotGate(max_wait=GENEROUS)
    for _ in range(3):
        burst = Burst(gate, 2)
        burst.release(0)
        assert burst.wait_for("0 arrives")
        burst.release(1)
        burst.join()
        assert burst.log.index("1 arrives") < burst.log.index("0 released"), burst.log
    assert gate._on_the_way == 0 and gate._deadline is None
