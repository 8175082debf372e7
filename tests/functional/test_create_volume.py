"""Create a volume from a Glance image (issue 7): a clone when cloneable, else a copy;
clone chains bounded by rbd_max_clone_depth counting hops through the Glance pool;
a create killed at each step is finished by running it again."""

import json
import os
import uuid

import pytest

from tests import fault_injection
from cinder_ext.depth import clone_depth
from cinder_ext.upload import connect
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _ceph(env, conf):
    _, backend = env.load(conf)
    return connect(backend)


@pytest.fixture
def created(cinder_env):
    """Volumes created from images: removed before cinder_env's cleanup, which deletes
    the images first (Glance would move an image with clones to its pool's trash)."""
    names = []
    yield names
    with _ceph(cinder_env, cinder_env.conf()) as c:
        for name in reversed(names):
            try:
                c.remove(cinder_env.vpool, name)
            except Exception:  # whatever is left, cinder_env's cleanup reports
                pass


def _new_volume(env, created):
    name = f"volume-{uuid.uuid4()}"
    env.volumes.append(name)
    created.append(name)
    return name


def _create(env, conf, image_id, size_gb, created, **kw):
    name = _new_volume(env, created)
    out = _json(env.cli("--config-file", conf, "create-volume", image_id, name, "--size", str(size_gb), **kw))
    return name, out


def _clone_upload(env, conf, vol):
    image_id = env.image()
    assert env.upload(conf, vol, image_id)["method"] == "clone"
    return image_id


def test_clone_of_a_clone_uploaded_image_grown_to_the_requested_size(cinder_env, created):
    env = cinder_env
    conf = env.conf()
    vol = env.volume(64 * MiB)
    sha = env.volume_sha(vol)
    image_id = _clone_upload(env, conf, vol)
    new, out = _create(env, conf, image_id, 0.125, created)
    assert out["method"] == "clone" and out["reason"] is None and out["depth"] == 2
    assert out["size"] == 128 * MiB and not out["flattened"]
    with _ceph(env, conf) as c:
        info = c.info(env.vpool, new)
        assert info["size"] == 128 * MiB
        assert (info["parent"]["pool"], info["parent"]["image"], info["parent"]["snap"]) == (
            env.ipool, image_id, "snap")
        assert c.metadata_get(env.vpool, "cinder-rbd-clone.creating-from-image", name=new) is None
    # the first 64 MiB are the image's, the rest reads as zeros
    with _ceph(env, conf) as c:
        assert c.head(env.vpool, new, 4096) == c.head(env.vpool, vol, 4096)
    env.write(new, 0, os.urandom(MiB))  # the volume is writable and the image unchanged
    assert env.image_sha(image_id) == sha


def test_clone_of_an_image_glance_wrote(cinder_env, created):
    env = cinder_env
    conf = env.conf()
    data = os.urandom(3 * MiB) + bytes(5 * MiB)
    image_id = env.image()
    env.glance().upload(image_id, iter([data]))
    new, out = _create(env, conf, image_id, 8 / 1024, created)
    assert out["method"] == "clone" and out["depth"] == 1
    assert env.volume_sha(new) == env.image_sha(image_id)


def test_copy_when_the_image_is_not_in_rbd(cinder_env, created):
    env = cinder_env
    conf = env.conf()
    data = os.urandom(2 * MiB) + bytes(6 * MiB)
    image_id = env.image()
    env.glance().upload(image_id, iter([data]), store="fast")
    new, out = _create(env, conf, image_id, 16 / 1024, created)
    assert out["method"] == "copy" and "no rbd:// location" in out["reason"]
    assert out["bytes"] == 8 * MiB and out["size"] == 16 * MiB
    with _ceph(env, conf) as c:
        assert c.info(env.vpool, new)["parent"] is None
        assert c.head(env.vpool, new, 2 * MiB) == data[:2 * MiB]


def test_cloning_disabled_copies(cinder_env, created):
    env = cinder_env
    conf = env.conf(extra="rbd_max_clone_depth = 0\n")
    vol = env.volume(16 * MiB)
    image_id = _clone_upload(env, env.conf(), vol)
    new, out = _create(env, conf, image_id, 16 / 1024, created)
    assert out["method"] == "copy" and "rbd_max_clone_depth = 0" in out["reason"]
    assert env.volume_sha(new) == env.volume_sha(vol)


def test_chain_deeper_than_rbd_max_clone_depth_is_bounded(cinder_env, created, glance_peer):
    """volume -> image -> volume -> image -> volume -> image -> volume with
    rbd_max_clone_depth = 2: every hop counts, the Glance pool's too, on both paths. The
    upload that would make an image 3 deep makes it independent (clone-chain-too-deep:
    flattened inside Ceph before Glance has it); the create
    that would make a volume 3 deep flattens it. Nothing anywhere is deeper than 2."""
    env = cinder_env
    conf = env.conf(extra="rbd_max_clone_depth = 2\n")
    v0 = env.volume(32 * MiB)
    sha = env.volume_sha(v0)
    i1 = _clone_upload(env, conf, v0)                          # depth 1
    v1, out = _create(env, conf, i1, 32 / 1024, created)       # depth 2 = the bound: a clone
    assert out["method"] == "clone" and out["depth"] == 2 and not out["flattened"]
    i2 = env.image()
    out = env.upload(conf, v1, i2)                             # would be 3: independent
    assert out["method"] == "independent" and out["reason"] == "clone-chain-too-deep", out
    assert "3 deep" in out["detail"] and "rbd_max_clone_depth 2" in out["detail"]
    v2, out = _create(env, conf, i2, 32 / 1024, created)       # an independent image starts anew
    assert out["method"] == "clone" and out["depth"] == 1 and not out["flattened"]
    i3 = _clone_upload(env, conf, v2)                          # depth 2 = the bound: a clone
    v3, out = _create(env, conf, i3, 32 / 1024, created)       # would be 3: flattened
    assert out["method"] == "clone" and out["flattened"] and out["depth"] == 0
    with _ceph(env, conf) as c:
        depths = {what: clone_depth(c, pool, what) for pool, what in
                  [(env.ipool, i1), (env.vpool, v1), (env.ipool, i2), (env.vpool, v2),
                   (env.ipool, i3), (env.vpool, v3)]}
        assert depths == {i1: 1, v1: 2, i2: 0, v2: 1, i3: 2, v3: 0}
    for image_id in (i1, i2, i3):
        assert env.image_sha(image_id) == sha
    assert env.volume_sha(v1) == env.volume_sha(v2) == env.volume_sha(v3) == sha

    # take it all down in any order the dependencies allow; purge reclaims the rest
    actions = {vol: _json(env.cli("--config-file", conf, "delete-volume", vol))["action"]
               for vol in (v3, v2, v1, v0)}
    assert actions == {v3: "removed", v2: "trashed", v1: "removed", v0: "trashed"}
    # i2 is still needed by v2 (in the trash, needed by i3): Glance deletes it all the
    # same (issue 16: images and volumes are independent) into its pool's trash
    assert glance_peer.request("DELETE", f"/v2/images/{i2}").status == 204
    assert env.new_state(env.baseline)[env.ipool]["trash"] == [i2]
    assert glance_peer.request("DELETE", f"/v2/images/{i3}").status == 204
    assert glance_peer.request("DELETE", f"/v2/images/{i1}").status == 204
    removed = _json(env.cli("--config-file", conf, "purge"))["removed"]
    assert sorted(removed) == sorted([f"{env.vpool}/{v2}", f"{env.vpool}/{v0}", f"{env.ipool}/{i2}"])
    assert env.pool_state() == env.baseline


@pytest.mark.parametrize("point", ["create.cloned", "create.resized", "create.flattened"])
def test_create_killed_at_each_step_is_finished_by_a_retry(cinder_env, created, point):
    env = cinder_env
    conf = env.conf(extra="rbd_max_clone_depth = 1\n")  # a clone of a clone upload flattens
    vol = env.volume(16 * MiB)
    sha = env.volume_sha(vol)
    image_id = _clone_upload(env, conf, vol)
    name = _new_volume(env, created)
    args = ("--config-file", conf, "create-volume", image_id, name, "--size", str(32 / 1024))
    crashed = env.cli(*args, env={fault_injection.ENV_POINT: point})
    assert crashed.returncode == -9, crashed.stderr
    out = _json(env.cli(*args))
    assert out["method"] == "clone" and out["resumed"] and out["flattened"]
    with _ceph(env, conf) as c:
        info = c.info(env.vpool, name)
        assert info["size"] == 32 * MiB and info["parent"] is None
        assert c.metadata_get(env.vpool, "cinder-rbd-clone.creating-from-image", name=name) is None
        assert c.head(env.vpool, name, 16 * MiB) == c.head(env.vpool, vol, 16 * MiB)
    assert env.image_sha(image_id) == sha


@pytest.mark.parametrize("point", ["create.copy_created", "create.copy_written"])
def test_copy_killed_at_each_step_is_redone_by_a_retry(cinder_env, created, point):
    env = cinder_env
    conf = env.conf()
    data = os.urandom(MiB)
    image_id = env.image()
    env.glance().upload(image_id, iter([data]), store="fast")
    name = _new_volume(env, created)
    args = ("--config-file", conf, "create-volume", image_id, name, "--size", str(1 / 1024))
    assert env.cli(*args, env={fault_injection.ENV_POINT: point}).returncode == -9
    out = _json(env.cli(*args))
    assert out["method"] == "copy" and out["resumed"]
    with _ceph(env, conf) as c:
        assert c.head(env.vpool, name, MiB) == data


def test_create_refuses_an_existing_volume(cinder_env, created):
    env = cinder_env
    conf = env.conf()
    vol = env.volume(16 * MiB)
    image_id = _clone_upload(env, conf, env.volume(16 * MiB))
    proc = env.cli("--config-file", conf, "create-volume", image_id, vol)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "already exists and is not being created from image" in proc.stderr
