"""cinder-volume killed (SIGKILL) in the middle of a member's upload, then restarted as
tools/cloud restarts it. Cinder itself cleans up nothing of an interrupted upload (the
volume stays `uploading`, the image `queued`, whatever the driver); ours, once the
predecessor's locks have lapsed (osd_client_watch_timeout), finishes the upload (the
image goes active with the volume's bytes) or rolls back what it left in Ceph. Then the
operator resets the volume and the user deletes both: nothing of ours remains.
"""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

import cloudlib as cloud_tool

DATA = os.urandom(1 << 20)
WATCH_TIMEOUT = 30  # the cloud's Ceph: osd_client_watch_timeout (tools/ceph-dev-cluster's default)
BOUND = WATCH_TIMEOUT + 2 * cloud_tool.PURGE_INTERVAL + 20


def _new(before, after):
    return {pool: sorted(set(after[pool]) - set(before[pool])) for pool in after}


def _image_snap(cloud, image_id):
    """True if the clone images/<image id> has glance_store's `snap` (the upload got past
    its image snapshot: its clone is complete)."""
    proc = subprocess.run(["rbd", "--conf", cloud.env["CEPH_CONF"], "snap", "ls",
                           f"images/{image_id}", "--format", "json"],
                          capture_output=True, text=True, cwd=cloud.dir)
    return any(s["name"] == "snap" for s in json.loads(proc.stdout or "[]"))


def _ours(cloud, volume_id, image_id):
    """What of the upload is in Ceph: the clone images/<image id>, the upload snapshot."""
    out = [f"images/{image_id}"] if image_id in cloud.rbd_names()["images"] else []
    proc = subprocess.run(["rbd", "--conf", cloud.env["CEPH_CONF"], "snap", "ls", "--all",
                           f"volumes/volume-{volume_id}", "--format", "json"],
                          capture_output=True, text=True, cwd=cloud.dir)
    for snap in json.loads(proc.stdout or "[]"):
        original = (snap.get("namespace") or {}).get("original_name") or snap["name"]
        if original == f"image-{image_id}":
            out.append(f"volumes/volume-{volume_id}@{original}")
    return out


@pytest.mark.parametrize("kill_after", [1.0, 1.8])
def test_a_restarted_cinder_volume_finishes_or_rolls_back_what_its_predecessor_left(
        cloud, kill_after):
    baseline = cloud.rbd_names()
    vol = cloud.openstack("volume", "create", "--size", "1", f"crash-{kill_after}")["id"]
    cloud.wait("volume", vol, "available")
    cloud.write_volume(vol, DATA)
    image = cloud.openstack("image", "create", "--volume", vol, "--disk-format", "raw",
                            "--container-format", "bare", f"crash-{kill_after}")["image_id"]
    t0 = time.monotonic()  # Cinder accepted the upload: cinder-volume has it now
    time.sleep(max(0.0, t0 + kill_after - time.monotonic()))
    os.killpg(cloud_tool.read_state(cloud.dir)["pgids"]["cinder_volume"], signal.SIGKILL)
    killed_at = {"image": cloud.status("image", image), "ours": _ours(cloud, vol, image),
                 "complete": _image_snap(cloud, image)}
    cloud.set_clone(True)  # tools/cloud's restart of cinder-volume

    # the new cinder-volume settles it: active with the volume's bytes, or queued with
    # nothing of ours left in Ceph
    t1 = time.monotonic()
    while True:
        status, ours = cloud.status("image", image), _ours(cloud, vol, image)
        if status == "active" or (status == "queued" and not ours):
            break
        assert time.monotonic() - t1 < BOUND, (
            f"{BOUND} s after the restart: image {status}, ours in Ceph {ours} "
            f"(at the kill: {killed_at})")
        time.sleep(1)
    outcome = "finished" if status == "active" else "rolled back"
    print(f"killed {kill_after} s into the upload (image {killed_at['image']}, in Ceph "
          f"{killed_at['ours'] or 'nothing yet'}): {outcome} {time.monotonic() - t1:.1f} s "
          "after the restart")
    if killed_at["complete"]:
        # its clone was complete: the restarted service's purge must finish it, with the
        # [glance] credentials (the purge acts for no user, so no token of one)
        assert status == "active", f"killed with its clone complete, then {outcome} ({killed_at})"
    if status == "active":
        want = hashlib.sha256(DATA + b"\0" * ((1 << 30) - len(DATA))).hexdigest()
        assert hashlib.sha256(cloud.image_bytes(image)).hexdigest() == want

    # the operator resets the volume (Cinder left it uploading); the user deletes both
    if cloud.status("volume", vol) != "available":
        cloud.openstack("volume", "set", "--state", "available", vol, user="admin")
    for kind, ident in (("image", image), ("volume", vol)):
        proc = cloud.openstack(kind, "delete", ident, check=False)
        assert proc.returncode == 0, proc.stderr
        cloud.wait_gone(kind, ident)
    # nothing new is left (what earlier tests left for the purge may go meanwhile)
    t2 = time.monotonic()
    while _new(baseline, cloud.rbd_names()) != {"volumes": [], "images": []}:
        assert time.monotonic() - t2 < BOUND, f"left: {_new(baseline, cloud.rbd_names())}"
        time.sleep(1)
