"""A short soak (tools/soak.py, `tools/cloud soak`) on a cloud of its own, shaped as most Ceph
deployments of Cinder are: two cinder-volume services in one active-active Cinder cluster
(`[DEFAULT] cluster`) over a Ceph cluster of 3 OSDs with pools of size 3. Users of two
projects and an admin act at random, with faults (either cinder-volume killed, mid-upload
too; glance-api; an OSD killed and restarted; the monitor; Keystone stopped; RabbitMQ
restarted), from a fixed seed. It must end with 0 invariant violations and 0 leftovers,
and leave that cloud as it found it: every service, both cinder-volume hosts up.

Its own cloud, not the session's: the session's has one OSD and one cinder-volume (the
crash-recovery test kills "the" cinder-volume). It boots in about 30 s here.
"""

import os
import re
import subprocess
import tempfile

import pytest

import cloudlib as cloud_tool
from tests.cloud.conftest import processes_under

SEED = 22
MINUTES = 3


@pytest.fixture(scope="module")
def active_active_cloud():
    d = tempfile.mkdtemp(prefix="soak-cloud-")
    os.rmdir(d)
    proc = subprocess.run([cloud_tool.CLOUD, "start", d, "--osds", "3", "--volume-services", "2"],
                          capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        pytest.fail(f"tools/cloud start --osds 3 --volume-services 2: {proc.stderr.strip()}")
    yield d
    stop = subprocess.run([cloud_tool.CLOUD, "stop", d], capture_output=True, text=True, cwd="/")
    assert stop.returncode == 0, stop.stderr
    assert not processes_under(d)
    subprocess.run(["rm", "-rf", d])


def test_the_cloud_is_active_active_on_three_replicas(active_active_cloud):
    c = cloud_tool.Cloud(active_active_cloud)
    volume = [s for s in c.services() if s["binary"] == "cinder-volume"]
    assert sorted(s["host"] for s in volume) == ["cloud-2@ceph", "cloud@ceph"]
    assert {s["cluster"] for s in volume} == {"cloud-cluster@ceph"}
    assert {s["state"] for s in volume} == {"up"}
    pools = subprocess.run(["ceph", "--conf", c.env["CEPH_CONF"], "osd", "pool", "ls", "detail"],
                           capture_output=True, text=True, timeout=60).stdout
    assert len(re.findall(r"replicated size 3 min_size 2", pools)) == 2, pools
    osds = subprocess.run(["ceph", "--conf", c.env["CEPH_CONF"], "osd", "stat"], capture_output=True,
                          text=True, timeout=60).stdout
    assert "3 osds: 3 up" in osds, osds


def test_a_short_soak_leaves_no_violation_and_nothing_behind(active_active_cloud):
    d = active_active_cloud
    print(f"\nsoak seed {SEED}, {MINUTES} min")
    proc = subprocess.run([cloud_tool.CLOUD, "soak", d, "--minutes", str(MINUTES), "--seed", str(SEED)],
                          capture_output=True, text=True, cwd="/", timeout=MINUTES * 60 + 1800)
    summary = proc.stdout[proc.stdout.find("== soak summary =="):]
    print(summary or proc.stdout[-3000:], proc.stderr[-2000:])
    assert re.search(r"^violations: 0$", summary, re.M), summary
    assert re.search(r"^leftovers: 0$", summary, re.M), summary
    assert proc.returncode == 0, proc.stderr[-2000:]
    # it ran what it claims: both cinder-volume services were killed at least once over the
    # seed's faults, or the soak's summary says which
    assert re.search(r"^faults: [1-9]", summary, re.M), summary

    # the cloud as the soak found it: every process and both cinder-volume hosts up
    status = subprocess.run([cloud_tool.CLOUD, "status", d], capture_output=True, text=True, cwd="/")
    assert status.returncode == 0, status.stdout
    c = cloud_tool.Cloud(d)
    assert sorted(s["host"] for s in c.services() if s["binary"] == "cinder-volume" and s["state"] == "up") \
        == ["cloud-2@ceph", "cloud@ceph"]
