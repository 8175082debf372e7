"""A volume uploaded again and again keeps at most rbd_max_upload_snapshots upload
snapshots: past the bound its uploads become independent images (flattened inside
Ceph), so the volume's snapshot count, which every write to it carries and which the
kernel RBD client caps at 510, stays bounded; every image reads back its own bytes.
Real dev cluster, real Glance 33, the upload as the CLI and the driver run it.
"""

import os

import rbd

from cinder_ext import decision, footprint
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from tests.functional.test_upload_clone import _wait_hashed

# the acceptance run: GRC_SNAPSHOT_BOUND=100 (the default) GRC_SNAPSHOT_BOUND_UPLOADS=600
BOUND = int(os.environ.get("GRC_SNAPSHOT_BOUND", "3"))
UPLOADS = int(os.environ.get("GRC_SNAPSHOT_BOUND_UPLOADS", "6"))
SIZE = int(os.environ.get("GRC_SNAPSHOT_BOUND_MIB", "16")) * MiB


def _upload_snaps(env, vol):
    with rbd.Image(env.io[env.vpool], vol, read_only=True) as img:
        names = []
        for s in img.list_snaps():
            name = s["name"]
            if s.get("namespace") == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH:
                name = img.snap_get_trash_namespace(s["id"])["original_name"]
            names.append(name)
    return [n for n in names if footprint.is_upload_snap(n)]


def test_past_the_bound_uploads_are_independent_and_the_count_stays_bounded(cinder_env):
    env = cinder_env
    conf = env.conf(extra=f"rbd_max_upload_snapshots = {BOUND}\n")
    vol = env.volume(SIZE)
    results = []
    for i in range(UPLOADS):
        # a new version of the golden volume each time
        with rbd.Image(env.io[env.vpool], vol) as img:
            img.write(os.urandom(4096), (i * MiB) % SIZE)
        sha, image_id = env.volume_sha(vol), env.image()
        out = env.upload(conf, vol, image_id)
        _wait_hashed(env, image_id)
        results.append((image_id, sha, out))
        assert len(_upload_snaps(env, vol)) <= BOUND
    methods = [out["method"] for _, _, out in results]
    assert methods == ["clone"] * BOUND + ["independent"] * (UPLOADS - BOUND), methods
    assert all(out["reason"] == decision.UPLOAD_SNAPSHOTS_AT_LIMIT
               for _, _, out in results[BOUND:])
    for image_id, sha, _ in results:
        assert env.image_sha(image_id) == sha
    print(f"{UPLOADS} uploads, bound {BOUND}: {methods.count('clone')} clones, "
          f"{methods.count('independent')} independent, every image read back its bytes; "
          f"upload snapshots on the volume: {len(_upload_snaps(env, vol))}")
    # an image deleted makes room: the next upload is a clone again
    first = results[0][0]
    env.glance().delete_image(first)
    env.images.remove(first)
    out = env.cli("--config-file", conf, "purge")  # Glance's user could not drop the snapshot
    assert out.returncode == 0, out.stderr
    assert len(_upload_snaps(env, vol)) == BOUND - 1
    again = env.image()
    assert env.upload(conf, vol, again)["method"] == "clone"
    assert len(_upload_snaps(env, vol)) == BOUND
