"""Upload a volume to an image that depends on nothing (issue 18, part 2): clone, flatten
inside Ceph, snapshot, register. Dev cluster and upstream Glance 33.

IndependentUpload is driven directly (the upload service picks it when
rbd_flatten_volume_to_image is on, or when the clone would exceed rbd_max_clone_depth).
Checked: the image has no parent and the volume's bytes, the volume keeps no snapshot,
a sparse volume stays sparse, a failure at each step leaves nothing (no image, no
snapshot, no lock object), and a crash at each step is finished by a retry or
reconciled by purge. The fixture checks both pools are back to their baseline.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from cinder_ext import decision, delete, steps
from cinder_ext import purge as purge_mod
from tests import fault_injection
from cinder_ext import exceptions as exc
from cinder_ext.footprint import upload_snap_name as volume_snapshot_name
from cinder_ext.locks import LOCK_PREFIX
from cinder_ext.glance import Glance
from cinder_ext.footprint import INDEPENDENT_MARK
from cinder_ext.independent import IndependentUpload
from cinder_ext.upload import connect
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB, lock_holders, lock_objects

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The upload, as a crash would interrupt it: a process of its own (SIGKILLed at a fault point)
RUNNER = r"""
import json, sys
from tests import fault_injection
from tests.functional.test_upload_independent import independent_upload
fault_injection.install()
print(json.dumps(independent_upload(*sys.argv[1:4])))
"""


def target(conf, backend, cluster, image_id):
    """Where the upload service would put the image (decision.decide's Clone)."""
    glance = Glance(conf)
    choice = decision.decide(True, glance.stores_detail(), decision.Volume("v"),
                             glance.get_image(image_id), cluster.fsid())
    assert isinstance(choice, decision.Clone), choice
    return choice


def independent_upload(conf_file, volume, image_id, timer=None):
    """IndependentUpload.run() with the conf file's backend, taking the image lock itself."""
    from cinder_ext import opts
    conf, backend = opts.load([conf_file])
    with connect(backend) as cluster:
        tx = IndependentUpload(cluster, Glance(conf), backend.rbd_pool, volume, image_id,
                               target(conf, backend, cluster, image_id),
                               backend.clone_active_timeout, timer, locked=False)
        return tx.run()


def _info(env, pool, name):
    return json.loads(env.cluster.admin("rbd", "info", f"{pool}/{name}", "--format", "json"))


def _du(env, pool, name):
    """Bytes rbd du counts as used by the image's head (its snapshots not counted)."""
    out = json.loads(env.cluster.admin("rbd", "du", f"{pool}/{name}", "--format", "json"))
    return sum(i["used_size"] for i in out["images"] if not i.get("snapshot"))


def _lock_objects(env):
    return {p: lock_objects(env.io[p]) for p in (env.vpool, env.ipool)}


def _expect_independent_state(env, volume, image_id, before):
    """images: <id>@snap protected, no parent, our mark; the volume keeps no snapshot."""
    new = env.new_state(before)
    assert new[env.ipool] == {"images": {image_id: [("user", "snap", True)]}, "trash": []}
    assert new[env.vpool] == {"images": {}, "trash": []}
    assert env.pool_state()[env.vpool]["images"][volume] == []
    assert "parent" not in _info(env, env.ipool, image_id)
    assert _lock_objects(env) == {env.vpool: [], env.ipool: []}


def test_independent_image_has_no_parent_and_the_volumes_bytes(cinder_env, ceph_cluster):
    env = cinder_env
    # sparse: 3 MiB of data in 256 MiB
    vol = env.volume(256 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()

    result = independent_upload(env.conf(), vol, image_id)

    url = f"rbd://{ceph_cluster.fsid}/{env.ipool}/{image_id}/snap"
    assert result["location"] == url and result["independent"] is True
    assert result["location_api"] in ("task", "legacy") and result["recovered"] == []
    image = env.get_image(image_id)
    assert image["status"] == "active" and image["direct_url"] == url
    assert image["size"] == 256 * MiB
    assert env.image_sha(image_id) == sha
    _expect_independent_state(env, vol, image_id, before)
    import rbd
    with rbd.Image(env.io[env.vpool], vol, read_only=True) as v:
        volume_id = v.id()
    with rbd.Image(env.io[env.ipool], image_id, read_only=True) as img:
        # the volume by name and by RBD image id (a rename cannot fool it)
        assert img.metadata_get(INDEPENDENT_MARK) == f"{env.vpool}/{vol}#{volume_id}"
    # unallocated extents were not written: 3 pieces of 1 MiB, one object each at most
    obj = 1 << _info(env, env.ipool, image_id)["order"]
    assert _du(env, env.ipool, image_id) <= 3 * obj < 256 * MiB

    # independent: later writes to the volume do not reach it, and the volume goes at once
    env.write(vol, 0, os.urandom(MiB))
    assert env.image_sha(image_id) == sha
    rbd.RBD().remove(env.io[env.vpool], vol)  # no clone depends on it: plain librbd remove
    env.volumes.remove(vol)
    assert env.image_sha(image_id) == sha


def test_timer_names_the_flatten(cinder_env):
    from cinder_ext.clone import Timer
    env = cinder_env
    vol = env.volume(16 * MiB)
    image_id, timer = env.image(), Timer()
    independent_upload(env.conf(), vol, image_id, timer=timer)
    assert list(timer.steps)[:7] == ["recover", "volume_snapshot", "clone",
                                     "volume_snapshot_remove", "flatten", "image_snapshot",
                                     "register"]


# the dev cluster has clone v2: the volume snapshot is never protected; after the location
# was requested the clone's own rules (kept while Glance may register it) apply
FAILURE_POINTS = [p for p in steps.UPLOAD_CLONE
                  if p not in ("clone.volume_snapshot_protected", "clone.location_requested",
                               "clone.active")] + list(steps.UPLOAD_INDEPENDENT)


@pytest.mark.parametrize("point", FAILURE_POINTS)
def test_failure_at_each_step_leaves_nothing(cinder_env, monkeypatch, point):
    env = cinder_env
    vol = env.volume(16 * MiB)
    image_id, before = env.image(), env.pool_state()
    # what killed holders of other tests left for purge to reap is not this test's
    locks_before = _lock_objects(env)
    monkeypatch.setenv(fault_injection.ENV_POINT, point)
    monkeypatch.setenv(fault_injection.ENV_ACTION, "raise")
    with pytest.raises(exc.CloneFailed) as failed:
        independent_upload(env.conf(), vol, image_id)
    assert failed.value.cleaned is True and point in failed.value.reason
    assert env.new_state(before) == {p: {"images": {}, "trash": []} for p in (env.vpool, env.ipool)}
    assert _lock_objects(env) == locks_before
    image = env.get_image(image_id)
    assert image["status"] == "queued" and not image.get("locations")


def _crash(env, conf, vol, image_id, point):
    proc = subprocess.run([sys.executable, "-c", RUNNER, conf, vol, image_id], cwd=ROOT,
                          env=dict(os.environ, **{fault_injection.ENV_POINT: point}),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    env.wait_for_leases_to_end(vol, image_id)


@pytest.mark.parametrize("point", ["clone.cloned", *steps.UPLOAD_INDEPENDENT, "clone.image_snapshot_protected"])
def test_retry_after_a_crash_at_each_step_finishes_cleanly(cinder_env, point):
    """SIGKILL at a step boundary, run again: the earlier attempt's image (a clone, or
    flattened and known by its mark) is removed and the upload done once."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before, conf = env.volume_sha(vol), env.image(), env.pool_state(), env.conf()
    _crash(env, conf, vol, image_id, point)
    result = independent_upload(conf, vol, image_id)
    assert f"{env.ipool}/{image_id}" in result["recovered"]
    # a process killed while it held the volume's shared lock leaves the lock object to
    # purge (a shared taker does not break it): reaped as purge does
    from cinder_ext.locks import reap_lock_objects
    _, backend = env.load(conf)
    with connect(backend) as cluster:
        for pool in (env.vpool, env.ipool):
            reap_lock_objects(cluster, pool) + reap_lock_objects(cluster, pool)
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
    _expect_independent_state(env, vol, image_id, before)


@pytest.mark.parametrize("point", steps.UPLOAD_INDEPENDENT)
def test_purge_reconciles_a_crashed_independent_upload(cinder_env, point):
    """Flattened, the image has no parent: purge knows it by its mark, and removes it (with
    the lock objects the dead upload left) once Glance will never reference it."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    image_id, before, conf = env.image(), env.pool_state(), env.conf()
    _crash(env, conf, vol, image_id, point)
    if point != "independent.marked":
        assert "parent" not in _info(env, env.ipool, image_id)
    conf_obj, backend = env.load(conf)
    with connect(backend) as cluster:
        out = purge_mod.purge(cluster, env.vpool, [env.ipool], glance=Glance(conf_obj))
    assert f"{env.ipool}/{image_id}" in out["removed"], out
    assert env.new_state(before) == {p: {"images": {}, "trash": []} for p in (env.vpool, env.ipool)}
    assert _lock_objects(env) == {env.vpool: [], env.ipool: []}


def test_purge_keeps_a_finished_independent_image_and_foreign_marks(cinder_env):
    """Active in Glance: kept. A UUID-named image with a mark naming another pool: not ours."""
    import rbd
    env = cinder_env
    vol = env.volume(16 * MiB)
    image_id, conf = env.image(), env.conf()
    independent_upload(conf, vol, image_id)
    stranger = str(uuid.uuid4())
    rbd.RBD().create(env.io[env.ipool], stranger, MiB, old_format=False)
    try:
        with rbd.Image(env.io[env.ipool], stranger) as img:
            img.metadata_set(INDEPENDENT_MARK, f"elsewhere/{vol}")
        conf_obj, backend = env.load(conf)
        with connect(backend) as cluster:
            out = purge_mod.purge(cluster, env.vpool, [env.ipool], glance=Glance(conf_obj))
        assert out["removed"] == [] and out["snapshots_removed"] == [], out
        assert env.get_image(image_id)["status"] == "active"
        assert stranger in env.pool_state()[env.ipool]["images"]
    finally:
        rbd.RBD().remove(env.io[env.ipool], stranger)


def test_a_volume_snapshot_made_by_clone_v1_is_removed_too(cinder_env, monkeypatch):
    """Clone v1 (a cluster older than mimic clients): the upload snapshot is protected and
    stays until removed; after the flatten nothing needs it and it goes."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    conf = env.conf()
    ceph_conf = env.cluster.client("cinder")["conf"]
    v1 = os.path.join(env.dir, "ceph-v1.conf")
    with open(ceph_conf) as f:
        text = f.read()
    with open(v1, "w") as f:
        f.write(text.replace("[global]", "[global]\nrbd_default_clone_format = 1", 1))
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace(f"rbd_ceph_conf = {ceph_conf}", f"rbd_ceph_conf = {v1}"))
    # the clone v1 path runs (its own step fails here, and is rolled back)...
    monkeypatch.setenv(fault_injection.ENV_POINT, "clone.volume_snapshot_protected")
    monkeypatch.setenv(fault_injection.ENV_ACTION, "raise")
    with pytest.raises(exc.CloneFailed, match="volume_snapshot_protected"):
        independent_upload(conf, vol, image_id)
    assert env.new_state(before) == {p: {"images": {}, "trash": []} for p in (env.vpool, env.ipool)}
    monkeypatch.delenv(fault_injection.ENV_POINT)
    # ...and, unhindered, leaves no snapshot on the volume
    independent_upload(conf, vol, image_id)
    assert env.image_sha(image_id) == sha
    _expect_independent_state(env, vol, image_id, before)
    assert volume_snapshot_name(image_id) not in env.cluster.admin(
        "rbd", "snap", "ls", "--all", f"{env.vpool}/{vol}")


# -- through the upload service and its CLI (decision.Clone.flatten picks the path) ---------
def _cli_upload(env, conf, vol, image_id, fault=None):
    proc = env.cli("--config-file", conf, "upload", vol, image_id,
                   env={fault_injection.ENV_POINT: fault} if fault else None)
    if fault:
        assert proc.returncode == -9, proc.stderr
        return None
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_cli_upload_with_the_option_makes_an_independent_image(cinder_env):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    out = _cli_upload(env, env.conf(extra="rbd_flatten_volume_to_image = true"), vol, image_id)
    assert out["method"] == "independent", out
    assert out["reason"] == decision.FLATTEN_REQUESTED and out["bytes"] == 32 * MiB
    assert "flatten" in out["seconds"]
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
    _expect_independent_state(env, vol, image_id, before)


def test_cli_upload_over_the_depth_bound_makes_an_independent_image(cinder_env):
    """The option off; the volume is a clone (depth 1) and rbd_max_clone_depth = 1: a
    clone of it would be 2 deep, so the image is flattened instead of copied."""
    import rbd
    env = cinder_env
    parent = env.volume(32 * MiB)
    with rbd.Image(env.io[env.vpool], parent) as img:
        img.create_snap("base")
    vol = f"volume-{uuid.uuid4()}"
    rbd.RBD().clone(env.io[env.vpool], parent, "base", env.io[env.vpool], vol)
    env.volumes.insert(0, vol)  # removed before its parent
    env.write(vol, 0, os.urandom(MiB))
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    out = _cli_upload(env, env.conf(extra="rbd_max_clone_depth = 1"), vol, image_id)
    assert out["method"] == "independent", out
    assert out["reason"] == decision.CLONE_CHAIN_TOO_DEEP
    assert env.image_sha(image_id) == sha
    _expect_independent_state(env, vol, image_id, before)
    # the volume's own parent is untouched; the image depends on neither
    assert _info(env, env.vpool, vol)["parent"]["image"] == parent


@pytest.mark.parametrize("point", ["independent.flattened", "clone.location_requested", "clone.active"])
def test_cli_retry_after_a_crash_finishes_the_independent_upload(cinder_env, point):
    """SIGKILL at a step boundary, run again: before the registration the flattened image is
    removed and made again; after it, the earlier attempt's image is kept (known by its mark)."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    conf = env.conf(extra="rbd_flatten_volume_to_image = true")
    _cli_upload(env, conf, vol, image_id, fault=point)
    out = _cli_upload(env, conf, vol, image_id)
    assert out["method"] == "independent", out
    assert bool(out.get("resumed")) == point.startswith("clone.")
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
    from cinder_ext.locks import reap_lock_objects
    _, backend = env.load(conf)
    with connect(backend) as cluster:
        for pool in (env.vpool, env.ipool):
            reap_lock_objects(cluster, pool) + reap_lock_objects(cluster, pool)
    _expect_independent_state(env, vol, image_id, before)
