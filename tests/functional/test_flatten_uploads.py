"""`cinder-rbd-clone flatten-uploads`: what an operator runs before going back to
upstream's driver or removing the package. It counts the clone-uploaded images that
still read through their volumes (live, and in the Glance pool's trash), and flattens
them inside Ceph: afterwards every image reads the same bytes and depends on nothing,
and every volume is a plain image that librbd's own remove deletes. Real dev cluster,
real Glance 33, the command as operators run it.
"""

import json
import uuid

import rbd

from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from tests.functional.test_upload_clone import _wait_hashed


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _parent(env, pool, name=None, image_id=None):
    ioctx = env.io[pool]
    img = rbd.Image(ioctx, name, image_id=image_id, read_only=True) if image_id else \
        rbd.Image(ioctx, name, read_only=True)
    with img:
        try:
            return img.get_parent_image_spec()["image_name"]
        except rbd.ImageNotFound:
            return None


def test_flatten_uploads_counts_then_makes_every_upload_independent(cinder_env, glance_peer):
    env = cinder_env
    conf = env.conf()
    vols, images, shas = [], [], {}
    for _ in range(3):
        vol, image_id = env.volume(16 * MiB), env.image()
        assert env.upload(conf, vol, image_id)["method"] == "clone"
        _wait_hashed(env, image_id)
        vols.append(vol)
        images.append(image_id)
        shas[image_id] = env.volume_sha(vol)
    # the third image: a volume was cloned from it, then Glance deleted it (to the trash)
    from_image = f"volume-{uuid.uuid4()}"
    env.volumes.append(from_image)
    _json(env.cli("--config-file", conf, "create-volume", images[2], from_image, "--size", "0.015625"))
    assert glance_peer.request("DELETE", f"/v2/images/{images[2]}").status == 204
    trashed = next(e for e in rbd.RBD().trash_list(env.io[env.ipool]) if e["name"] == images[2])

    before = env.pool_state()
    dry = _json(env.cli("--config-file", conf, "flatten-uploads", "--dry-run"))
    assert dry["count"] == 3 and dry["flattened"] == 0, dry
    assert f"{env.ipool}/{images[2]} (in trash) <- {env.vpool}/{vols[2]}" in dry["images"]
    assert env.pool_state() == before  # a dry run changes nothing

    done = _json(env.cli("--config-file", conf, "flatten-uploads"))
    assert done["count"] == 3 and done["flattened"] == 3, done
    for image_id in images[:2]:
        assert _parent(env, env.ipool, image_id) is None
        assert env.image_sha(image_id) == shas[image_id]
    assert _parent(env, env.ipool, image_id=trashed["id"]) is None
    assert env.volume_sha(from_image) == shas[images[2]]  # reads through the trashed image
    again = _json(env.cli("--config-file", conf, "flatten-uploads", "--dry-run"))
    assert again["count"] == 0, again
    # nothing reads through the volumes any more: librbd's plain remove deletes them
    for vol in vols:
        assert [s for s in rbd.Image(env.io[env.vpool], vol).list_snaps()] == []
        rbd.RBD().remove(env.io[env.vpool], vol)
    # and the trashed image goes with purge once its last volume is deleted
    assert _json(env.cli("--config-file", conf, "delete-volume", from_image))["action"] == "removed"
    _json(env.cli("--config-file", conf, "purge"))
    for image_id in images[:2]:
        assert glance_peer.request("DELETE", f"/v2/images/{image_id}").status == 204
    assert env.pool_state() == env.baseline
