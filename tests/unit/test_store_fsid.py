"""The cached fsid reader without a cluster (no Ceph bindings needed: a read that fails is enough)."""

import os
import time

import pytest

from glance_store_ext import cluster_fsid
from glance_store_ext.cluster_fsid import ClusterFsid, connect_bound


@pytest.mark.parametrize("timeout, bound", [(-1, 5.0), (0, 5.0), (None, 5.0), (3, 3.0), (30, 30.0)])
def test_connect_bound(timeout, bound):
    assert connect_bound(timeout) == bound


@pytest.fixture
def reader(tmp_path):
    made = []

    def factory(**kw):
        r = ClusterFsid("ceph", str(tmp_path / "hidden" / "ceph.conf"), "glance", **kw)
        made.append(r)
        return r
    yield factory
    for r in made:
        r.close()


def ours(caplog):
    return [r for r in caplog.records if r.name.startswith("glance_store_ext")]


def test_first_call_waits_only_for_the_first_read(reader):
    r = reader(bound=2)
    started = time.monotonic()
    r.get()
    # the read fails at once (no conf): no reason to sit out the 2 s cold window
    assert time.monotonic() - started < 1


def test_refresh_now_reads_in_the_callers_thread(reader):
    r = reader(refresh_interval=3600, retry_interval=3600)
    r.get()
    reads = r.reads
    assert r.refresh_now() is None
    assert r.reads == reads + 1


def test_close_stops_the_thread_and_get_still_answers(reader):
    r = reader(retry_interval=0.01)
    r.get()
    r.close()
    assert not r._thread.is_alive()
    reads = r.reads
    time.sleep(0.1)
    assert r.reads == reads and r.get() is None


def test_defaults(reader):
    r = reader()
    assert (r.bound, r.cold_wait) == (cluster_fsid.DEFAULT_CONNECT_BOUND, 5.0)
    assert r.retry_interval <= r.refresh_interval
    assert reader(bound=2).cold_wait == 2
    assert reader(bound=30).cold_wait == cluster_fsid.MAX_COLD_WAIT


def test_a_forked_child_gets_its_own_refresher(reader):
    r = reader(retry_interval=0.05)
    r.get()
    pid = os.fork()
    if pid == 0:  # child: threads do not survive a fork; the first get() restarts one
        code = 1
        try:
            r.get()
            code = 0 if r._thread.is_alive() and r._pid == os.getpid() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert r._pid == os.getpid()
