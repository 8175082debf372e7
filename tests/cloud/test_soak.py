"""A short soak (tools/soak.py, `tools/cloud soak`) on a cloud of its own, shaped as most Ceph
deployments of Cinder are: two cinder-volume services in one active-active Cinder cluster
(`[DEFAULT] cluster`) over a Ceph cluster of 3 OSDs with pools of size 3. Users of two
projects and an admin act at random, with faults (either cinder-volume killed, mid-upload
too; glance-api; an OSD killed and restarted; the monitor; Keystone stopped; RabbitMQ
restarted), from a fixed seed. It must end with 0 invariant violations and 0 leftovers,
and leave that cloud as it found it: every service, both cinder-volume hosts up.

Its own cloud (conftest's active_active_cloud), not the session's: the session's has one
OSD and one cinder-volume (the crash-recovery test kills "the" cinder-volume).
"""

import glob
import os
import re
import subprocess

import cloudlib as cloud_tool

SEED = 22
MINUTES = 3
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def services_said(d, summary):
    """What cinder-volume logged: warnings about the ids the summary names, and every error
    (a service that stops its heartbeats says so without an id). The cloud is gone after
    the module, so a failure carries its own evidence."""
    ids = set(UUID.findall(summary[summary.find("violations:"):]))
    out = []
    for log in sorted(glob.glob(os.path.join(d, "cinder", "cinder-volume*.log"))):
        with open(log, errors="replace") as f:
            for line in f:
                if " ERROR " in line or (" WARNING " in line and any(i in line for i in ids)):
                    out.append(f"{os.path.basename(log)}: {line.rstrip()[:600]}")
    return "\n== cinder-volume's errors, and its warnings about them ==\n" + "\n".join(out[-60:])


def test_the_cloud_is_active_active_on_three_replicas(active_active_cloud):
    c = cloud_tool.Cloud(active_active_cloud)
    # the official client, which asks for the microversion that shows clusters
    volume = [s for s in c.openstack("volume", "service", "list", user="admin") if s["Binary"] == "cinder-volume"]
    assert sorted(s["Host"] for s in volume) == ["cloud-2@ceph", "cloud@ceph"], volume
    assert {s.get("Cluster") for s in volume} == {"cloud-cluster@ceph"}, volume
    assert {s["State"] for s in volume} == {"up"}, volume
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
    assert re.search(r"^violations: 0$", summary, re.M), summary + services_said(d, summary)
    assert re.search(r"^leftovers: 0$", summary, re.M), summary + services_said(d, summary)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # faults happened, not only load
    assert re.search(r"^faults: [1-9]", summary, re.M), summary

    # the cloud as the soak found it: every process and both cinder-volume hosts up
    status = subprocess.run([cloud_tool.CLOUD, "status", d], capture_output=True, text=True, cwd="/")
    assert status.returncode == 0, status.stdout
    c = cloud_tool.Cloud(d)
    assert sorted(s["host"] for s in c.services() if s["binary"] == "cinder-volume" and s["state"] == "up") \
        == ["cloud-2@ceph", "cloud@ceph"]
