"""glance-info-api with several worker processes on one port ([glance_info_api] workers)."""

import http.client
import json
import os
import signal
import time

from tests.info_api import InfoAPI


def children_of(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_workers_share_the_port_and_stop_together(ceph_cluster, glance_conf, tmp_path):
    api = InfoAPI(glance_conf(ceph_cluster), workdir=str(tmp_path),
                  extra_conf={"glance_info_api": {"workers": 3}})
    port = api.port  # a fixed port, as workers need
    try:
        workers = children_of(api.proc.pid)
        assert len(workers) == 3
        # every answer is whole and carries the live fsid, whichever worker took the connection
        for _ in range(30):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/v2/info/stores/detail", headers={"X-Roles": "service"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            conn.close()
            assert resp.status == 200
            rbd = next(s for s in body["stores"] if s["type"] == "rbd")
            assert rbd["properties"]["fsid"] == ceph_cluster.fsid
    finally:
        api.stop()
    assert api.proc.returncode == 0
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)


def test_a_dying_worker_stops_the_set(ceph_cluster, glance_conf, tmp_path):
    api = InfoAPI(glance_conf(ceph_cluster), workdir=str(tmp_path),
                  # the name before 0.2 is still read
                  extra_conf={"DEFAULT": {"info_api_workers": 2}})
    try:
        workers = children_of(api.proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        api.proc.wait(timeout=20)  # no half-serving set left behind a health check
        assert api.proc.returncode == 1
        deadline = time.monotonic() + 10
        while alive(workers[1]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(workers[1])
    finally:
        api.stop()
