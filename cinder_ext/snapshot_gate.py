"""Uploads of one process ask the monitor for their volume snapshots together.

A snapshot's id is a monitor commit. The monitor batches what is pending into one commit,
at once when it was idle, else one ``paxos_propose_interval`` (1 s) after its last commit.
In a burst of uploads (cinder-volume runs them side by side) the first to reach its
snapshot is committed at once; one that reaches it 50 ms later has missed that commit and
waits for the next, a whole second. So an upload that reaches its snapshot while others of
this process are still on their way (fetching the image and the stores detail, taking
their locks) waits for them, for ``MAX_WAIT`` at most, and they ask together: they share
one commit, and their image snapshots the next. A lone upload never waits.

    with snapshot_gate.gate().on_the_way() as ticket:   # from the start of an upload
        ...
        ticket.arrive()      # just before its volume snapshot
        ticket.leave()       # or: it will not snapshot (a copy)
"""

import contextlib
import threading
import time

# at most this long for the uploads still on their way (well under the second that a
# missed commit costs)
MAX_WAIT = 0.4


class SnapshotGate:
    def __init__(self, max_wait=MAX_WAIT):
        self.max_wait = max_wait
        # created here, not at import: under cinder-volume's eventlet monkey patching the
        # gate is made after the patch, so its waits yield to the hub
        self._cond = threading.Condition()
        self._on_the_way = 0
        self._deadline = None  # of the group waiting now; None when nobody waits
        self._group = 0        # bumped each time a waiting group is let through

    @contextlib.contextmanager
    def on_the_way(self):
        """An upload heading for its snapshot until it arrives or ends (copy, failure)."""
        ticket = _Ticket(self)
        with self._cond:
            self._on_the_way += 1
        try:
            yield ticket
        finally:
            ticket.leave()

    def _let_through(self):  # with self._cond held
        self._group += 1
        self._deadline = None
        self._cond.notify_all()


class _Ticket:
    def __init__(self, gate):
        self.gate = gate
        self.counted = True

    def leave(self):
        gate = self.gate
        with gate._cond:
            self._uncount()

    def _uncount(self):  # with gate._cond held
        gate = self.gate
        if not self.counted:
            return
        self.counted = False
        gate._on_the_way -= 1
        if gate._on_the_way == 0 and gate._deadline is not None:
            gate._let_through()

    def arrive(self):
        """Wait for the uploads still on their way (MAX_WAIT at most); seconds waited."""
        gate = self.gate
        start = time.monotonic()
        with gate._cond:
            self._uncount()
            if gate._on_the_way == 0:
                return 0.0
            if gate._deadline is None:
                gate._deadline = start + gate.max_wait
            group = gate._group
            while gate._group == group:
                left = gate._deadline - time.monotonic()
                if left <= 0:
                    gate._let_through()
                    break
                gate._cond.wait(left)
        return time.monotonic() - start


_GATE = None
_MAKING = threading.Lock()  # held for two statements, never across a wait


def gate():
    """This process's gate (made on first use)."""
    global _GATE
    with _MAKING:
        if _GATE is None:
            _GATE = SnapshotGate()
        return _GATE
