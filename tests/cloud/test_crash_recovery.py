"""cinder-volume killed (SIGKILL, the whole service) in the middle of a member's upload, then
restarted as tools/cloud restarts it. Cinder itself cleans up nothing of an interrupted
upload (the volume stays `uploading`, the image `queued`, whatever the driver); ours, once
the predecessor's locks have lapsed (osd_client_watch_timeout), finishes the upload (the
image goes active with the volume's bytes) or rolls back what it left in Ceph. Then the
operator resets the volume and the user deletes both: nothing of ours remains.

The gate's case kills at a named step boundary (cinder_ext/steps.py): cinder-volume runs
with tests/fault_injection.py's observer (`tools/cloud restart-volume --fault-point`) and
dies once the image snapshot is protected; its successor must finish the upload. The full
tier's kills at a time (1.0 s into the upload), wherever that falls.
"""

import hashlib
import json
import os
import signal
import subprocess
import time

import cloudlib as cloud_tool
from peerlib import group_members

DATA = os.urandom(1 << 20)
POINT = "clone.image_snapshot_protected"  # the clone is complete; Glance has no location yet
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


def _upload(cloud, name):
    """A member's volume with DATA, and `openstack image create --volume` of it: (volume, image)."""
    vol = cloud.openstack("volume", "create", "--size", "1", name)["id"]
    cloud.wait("volume", vol, "available")
    cloud.write_volume(vol, DATA)
    image = cloud.openstack("image", "create", "--volume", vol, "--disk-format", "raw",
                            "--container-format", "bare", name)["image_id"]
    return vol, image


def _settled(cloud, vol, image, killed_at, finish):
    """After the restart, until the new cinder-volume has settled the upload: active, or
    (unless `finish`) queued with nothing of ours left in Ceph. The outcome; active
    means the volume's bytes."""
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
    print(f"at the kill: image {killed_at['image']}, in Ceph {killed_at['ours'] or 'nothing yet'}; "
          f"{outcome} {time.monotonic() - t1:.1f} s after the restart")
    if finish:
        # its clone was complete: the restarted service's purge must finish it, with the
        # [glance] credentials (the purge acts for no user, so no token of one)
        assert status == "active", f"killed with its clone complete, then {outcome} ({killed_at})"
    if status == "active":
        want = hashlib.sha256(DATA + b"\0" * ((1 << 30) - len(DATA))).hexdigest()
        assert hashlib.sha256(cloud.image_bytes(image)).hexdigest() == want
    return outcome


def _deleted_leaves_nothing(cloud, baseline, vol, image):
    """The operator resets the volume (Cinder left it uploading); the user deletes both:
    nothing new is left (what earlier tests left for the purge may go meanwhile)."""
    if cloud.status("volume", vol) != "available":
        cloud.openstack("volume", "set", "--state", "available", vol, user="admin")
    for kind, ident in (("image", image), ("volume", vol)):
        proc = cloud.openstack(kind, "delete", ident, check=False)
        assert proc.returncode == 0, proc.stderr
        cloud.wait_gone(kind, ident)
    t2 = time.monotonic()
    while _new(baseline, cloud.rbd_names()) != {"volumes": [], "images": []}:
        assert time.monotonic() - t2 < BOUND, f"left: {_new(baseline, cloud.rbd_names())}"
        time.sleep(1)


def test_killed_once_the_image_snapshot_is_protected_the_restarted_cinder_volume_finishes_the_upload(cloud):
    baseline = cloud.rbd_names()
    cloud.restart_volume(fault_point=POINT)
    pgid = cloud_tool.read_state(cloud.dir)["pgids"]["cinder_volume"]
    try:
        vol, image = _upload(cloud, "crash-at-point")
        t0 = time.monotonic()
        while group_members(pgid):  # the observer SIGKILLs the whole service at POINT
            assert time.monotonic() - t0 < 120, (
                f"cinder-volume still running 120 s into the upload (image "
                f"{cloud.status('image', image)}, ours in Ceph {_ours(cloud, vol, image)})")
            time.sleep(0.5)
        with open(os.path.join(cloud.dir, "cinder", "volume.out"), errors="replace") as f:  # its stderr
            assert f"process group {pgid} at {POINT}" in f.read(), f"cinder-volume died, not at {POINT}"
        killed_at = {"image": cloud.status("image", image), "ours": _ours(cloud, vol, image)}
        print(f"cinder-volume killed at {POINT} {time.monotonic() - t0:.1f} s into the upload")
        assert killed_at["image"] != "active" and _image_snap(cloud, image), killed_at
    finally:
        cloud.restart_volume()  # tools/cloud's restart of cinder-volume, without the observer
    _settled(cloud, vol, image, killed_at, finish=True)
    _deleted_leaves_nothing(cloud, baseline, vol, image)


def test_a_restarted_cinder_volume_finishes_or_rolls_back_what_its_predecessor_left(cloud):
    kill_after = 1.0
    baseline = cloud.rbd_names()
    vol, image = _upload(cloud, f"crash-{kill_after}")
    t0 = time.monotonic()  # Cinder accepted the upload: cinder-volume has it now
    time.sleep(max(0.0, t0 + kill_after - time.monotonic()))
    os.killpg(cloud_tool.read_state(cloud.dir)["pgids"]["cinder_volume"], signal.SIGKILL)
    killed_at = {"image": cloud.status("image", image), "ours": _ours(cloud, vol, image),
                 "complete": _image_snap(cloud, image)}
    cloud.set_clone(True)  # tools/cloud's restart of cinder-volume
    # the new cinder-volume settles it: active with the volume's bytes, or queued with
    # nothing of ours left in Ceph
    print(f"killed {kill_after} s into the upload")
    _settled(cloud, vol, image, killed_at, finish=killed_at["complete"])
    _deleted_leaves_nothing(cloud, baseline, vol, image)
