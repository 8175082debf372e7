"""A rolling upgrade of our package on an active-active cloud while members upload (issue 23).

Both cinder-volume services of one Cinder cluster start on the previous release's code
(OLD, from git, through PYTHONPATH ahead of the installed package, as a venv still holding
the old wheel would run it). Members upload volumes two at a time, without a pause, while
the operator upgrades the services one after the other (each restarted on the installed,
new code), and the periodic purges of both releases run every 10 s.

A restart ends the uploads that service was running (oslo.service's child exits on
SIGTERM; upstream's driver loses them the same way), and in an active-active cluster
Cinder does not reset them when the service comes back: the operator resets each such
volume to available and deletes its queued image, as after a crash. Every other upload
must end active, by clone, with its volume's bytes; afterwards everything deletes and
both pools are back at the baseline (the interrupted uploads' leftovers purged). tests/functional/test_mixed_versions.py pins the race this
guards (each release's purge against the other's upload in flight) deterministically.
"""

import hashlib
import json
import os
import re
import subprocess
import threading
import time

import cloud as cloud_services  # tools/cloud.py
import cloudlib as cloud_tool
from tests.cloud.conftest import wait_baseline
from tests.functional.test_mixed_versions import OLD

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MiB = 1 << 20
UPLOADS = 24

HEADS = r"""
import hashlib, json, sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect()
io = c.open_ioctx("images")
out = {}
for name in json.loads(sys.stdin.read()):
    with rbd.Image(io, name, read_only=True) as im:
        out[name] = hashlib.sha256(im.read(0, 1 << 20)).hexdigest()
print(json.dumps(out))
"""


def old_tree(directory):
    proc = subprocess.run(f"git -C {ROOT} archive {OLD} cinder_ext glance_store_ext | tar -x -C {directory}",
                          shell=True, capture_output=True, text=True)
    assert proc.returncode == 0, f"the old release ({OLD}) from git: {proc.stderr}"
    return directory


def methods(directory):
    """image id -> method, from both services' logs."""
    out = {}
    for log in ("cinder-volume.log", "cinder-volume-2.log"):
        with open(os.path.join(directory, "cinder", log), errors="replace") as f:
            for line in f:
                m = re.search(r"to image ([0-9a-f-]{36}): method=(\w+)", line)
                if m:
                    out[m.group(1)] = m.group(2)
    return out


def test_uploads_during_a_rolling_upgrade_all_clone_with_their_bytes(active_active_cloud, tmp_path):
    d = active_active_cloud
    c = cloud_tool.Cloud(d)
    services = cloud_services.Services(d)
    before = c.rbd_names()
    old = old_tree(str(tmp_path))
    services.restart_volume(services=[1, 2], extra_env={"PYTHONPATH": old})
    # the old code is what those processes imported (Python caches what it imports)
    assert os.path.exists(os.path.join(old, "cinder_ext", "__pycache__"))

    vols, data = [], {}
    for k in range(6):
        vid = c.openstack("volume", "create", "--size", "1", f"upgrade-{k}")["id"]
        c.wait("volume", vid, "available")
        data[vid] = os.urandom(MiB)
        c.write_volume(vid, data[vid])
        vols.append(vid)

    uploads, interrupted, errors = [], [], []

    def uploader(mine):
        for n in range(UPLOADS // 2):
            vid = mine[n % len(mine)]
            code, body = c.post("volume", f"/volumes/{vid}/action", {"os-volume_upload_image": {
                "image_name": "upgrade", "disk_format": "raw", "container_format": "bare"}})
            if code != 202:
                errors.append(f"upload of {vid}: HTTP {code} {body}")
                continue
            iid = body["os-volume_upload_image"]["image_id"]
            try:
                c.wait("image", iid, "active", timeout=90, bad=("killed", "deleted"))
                c.wait("volume", vid, "available", timeout=90)
                uploads.append((vid, iid))
            except cloud_tool.FlowError:
                # a restart ended it: the operator's reset, and the queued image deleted
                interrupted.append((vid, iid, c.status("volume", vid), c.status("image", iid)))
                c.post("volume", f"/volumes/{vid}/action", {"os-reset_status": {"status": "available"}},
                       user="admin")
                c.openstack("image", "delete", iid, check=False)
    threads = [threading.Thread(target=uploader, args=(vols[i::2],)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(8)
    services.restart_volume(services=[1])  # new code on cloud; cloud-2 still old: mixed
    time.sleep(2 * cloud_tool.PURGE_INTERVAL)  # both releases' periodic purges run
    services.restart_volume(services=[2])  # new code everywhere
    for t in threads:
        t.join(timeout=900)
    print(f"{len(uploads)} uploads active, {len(interrupted)} ended by a restart: {interrupted}")
    assert not errors, errors
    # at most the two in flight at each of the two restarts, and only as a restart leaves them
    assert len(interrupted) <= 4 and len(uploads) + len(interrupted) == UPLOADS
    # the volume left uploading; the image queued, or active when only Cinder's own last
    # step (the volume back to available) was cut off
    assert all(v == "uploading" and i in ("queued", "active") for _, _, v, i in interrupted), interrupted

    got = methods(d)
    assert {iid: got.get(iid) for _, iid in uploads} == {iid: "clone" for _, iid in uploads}
    proc = subprocess.run(["/usr/bin/python3", "-c", HEADS, c.env["CEPH_CONF"]],
                          input=json.dumps([iid for _, iid in uploads]), capture_output=True, text=True,
                          check=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": os.path.join(d, "home")})
    heads = json.loads(proc.stdout)
    assert {iid: heads[iid] for _, iid in uploads} == \
        {iid: hashlib.sha256(data[vid]).hexdigest() for vid, iid in uploads}

    for _, iid in uploads:
        c.openstack("image", "delete", iid)
    for vid in vols:
        c.openstack("volume", "delete", vid)
        c.wait_gone("volume", vid, timeout=300)
    wait_baseline(c, before)
