"""The purge deletes only what the intent journal proves is ours, and keeps on every
unknown (issue 32). Real dev cluster, real Glance 33, the real CLI:

- Nova's direct snapshot of a disk booted from an independent upload carries our mark
  twice (librbd copies image-meta into clones) and sits queued, flattened, with `snap`,
  before Nova registers it: no purge touches it;
- a purge whose Glance identity cannot see every image removes nothing a 404 alone would
  justify (the clone under an active image stays);
- with the `rados` command absent or failing, nothing is removed under a live lock and
  nobody is blocklisted;
- one image the purge cannot open does not stop the rest of the run;
- every upload is journaled, and its record goes once its clone is gone.
"""

import json
import uuid

import pytest
import rbd

from cinder_ext import delete, footprint, journal
from cinder_ext.create import create_volume_from_image
from cinder_ext.locks import ImageLock
from cinder_ext.upload import connect
from tests import fault_injection
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB, lock_holders
from tests.functional.test_upload_clone import _wait_hashed

NOVA_POOL = "nova-vms"


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _records(env):
    """{image id: record} of the volume pool's journal, read as raw omap (no cinder_ext)."""
    import rados
    io = env.io[env.vpool]
    io.set_namespace(journal.JOURNAL_NAMESPACE)
    try:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, "", journal.UPLOAD_PREFIX, 10000)
            try:
                io.operate_read_op(op, journal.JOURNAL_OBJECT)
            except rados.ObjectNotFound:
                return {}
            return {k[len(journal.UPLOAD_PREFIX):]: json.loads(v) for k, v in it}
    finally:
        io.set_namespace("")


def _crashed_upload(env, conf_file, point, size=16 * MiB):
    vol = env.volume(size)
    image_id = env.image()
    proc = env.cli("--config-file", conf_file, "upload", vol, image_id,
                   env={fault_injection.ENV_POINT: point})
    assert proc.returncode == -9, proc.stderr
    return vol, image_id


@pytest.fixture
def nova_io(cinder_env):
    """Nova's ephemeral pool, which Cinder's Ceph user cannot read (as in a real cloud)."""
    env = cinder_env
    if NOVA_POOL not in env.cluster.admin("ceph", "osd", "pool", "ls").split():
        env.cluster.admin("ceph", "osd", "pool", "create", NOVA_POOL, "8", "8")
        env.cluster.admin("rbd", "pool", "init", NOVA_POOL)
    io = env.admin.open_ioctx(NOVA_POOL)
    yield io
    for name in rbd.RBD().list(io):  # what a test left of Nova's, removed as Nova would
        _remove_image(io, name)
    io.close()


def _remove_image(io, name):
    with rbd.Image(io, name) as img:
        for s in img.list_snaps():
            if img.is_protected_snap(s["name"]):
                img.unprotect_snap(s["name"])
            img.remove_snap(s["name"])
    rbd.RBD().remove(io, name)


def test_novas_direct_snapshot_of_a_disk_booted_from_an_independent_upload_is_untouched(
        cinder_env, nova_io):
    env = cinder_env
    conf_file = env.conf(extra="rbd_flatten_volume_to_image = true\n")
    vol = env.volume(16 * MiB)
    upload = env.image()
    assert env.upload(conf_file, vol, upload)["method"] == "independent"
    _wait_hashed(env, upload)
    ipool_io = env.io[env.ipool]
    # Nova boots an instance from the image: its disk, a clone in Nova's pool
    disk = f"{uuid.uuid4()}_disk"
    rbd.RBD().clone(ipool_io, upload, "snap", nova_io, disk)
    # ... then snapshots it with libvirt's direct_snapshot: a snapshot of the disk, a
    # clone into Glance's pool named after the new image, flatten, `snap`, protect; the
    # location is registered last, so the image stays queued meanwhile
    nova_snapshot = env.image()
    with rbd.Image(nova_io, disk) as d:
        d.create_snap("nova-snap")
        d.protect_snap("nova-snap")
    rbd.RBD().clone(nova_io, disk, "nova-snap", ipool_io, nova_snapshot)
    with rbd.Image(ipool_io, nova_snapshot) as img:
        img.flatten()
        img.create_snap("snap")
        img.protect_snap("snap")
        inherited = dict(img.metadata_list())
    assert footprint.INDEPENDENT_MARK in inherited  # our mark, copied twice by librbd
    assert env.get_image(nova_snapshot)["status"] == "queued"
    plan = env.cli("--config-file", conf_file, "purge", "--dry-run")
    assert nova_snapshot not in plan.stdout + plan.stderr, plan.stderr
    out = _json(env.cli("--config-file", conf_file, "purge"))
    assert nova_snapshot not in json.dumps(out), out
    with rbd.Image(ipool_io, nova_snapshot, read_only=True) as img:
        assert [s["name"] for s in img.list_snaps()] == ["snap"]
    assert nova_snapshot not in _records(env)
    # Nova's own clean-up, then ours
    _remove_image(ipool_io, nova_snapshot)
    _remove_image(nova_io, disk)


@pytest.mark.parametrize("point", ["clone.image_snapshot_protected", "clone.active"])
def test_a_purge_that_cannot_see_every_image_removes_nothing_a_404_alone_justifies(
        cinder_env, point):
    """The upload was killed once its clone was complete ("clone.active": after Glance
    made the image active, before the record was closed). To a service identity of
    another project without admin, the member's private image is a 404: the purge keeps
    the clone and says why. An admin's purge then settles it (finished or closed)."""
    env = cinder_env
    conf_file = env.conf()
    vol, image_id = _crashed_upload(env, conf_file, point)
    sha = env.volume_sha(vol)
    assert _records(env)[image_id]["state"] == journal.OPEN
    blind = env.conf(roles=("service",), glance_extra="noauth_project_id = another-project\n")
    proc = env.cli("--config-file", blind, "purge")
    out = _json(proc)
    assert out["removed"] == [] and out["snapshots_removed"] == [], out
    kept = {k["image"]: k["reason"] for k in out["kept"]}
    assert "404" in kept[f"{env.ipool}/{image_id}"], out
    assert "does not see every image" in proc.stderr
    with rbd.Image(env.io[env.ipool], image_id, read_only=True) as img:
        assert [s["name"] for s in img.list_snaps()] == ["snap"]
    # an identity that sees every image settles it: an active image's record is closed,
    # and the command (no finish: the driver's periodic purge finishes) rolls back a
    # queued one
    out = _json(env.cli("--config-file", conf_file, "purge"))
    if point == "clone.active":
        assert out["removed"] == [], out
        assert env.get_image(image_id)["status"] == "active"
        assert env.image_sha(image_id) == sha
        assert _records(env)[image_id]["state"] == journal.COMPLETE
        _wait_hashed(env, image_id)
    else:
        assert out["removed"] == [f"{env.ipool}/{image_id}"], out
        assert env.get_image(image_id)["status"] == "queued"
        assert image_id not in _records(env)


def _fake_rados(tmp_path, kind):
    """A PATH without `rados` (absent), or with one that fails the way a missing keyring
    does: the real command cannot be made to fail so on demand without breaking the
    cluster for every other client, so a stand-in prints librados' own message."""
    d = tmp_path / f"path-{kind}"
    d.mkdir()
    if kind == "failing":
        script = d / "rados"
        script.write_text("#!/bin/sh\necho 'failed to fetch mon config (--no-mon-config to skip)'"
                          " >&2\necho 'unable to get monitor info from DNS SRV: (2) No such file "
                          "or directory' >&2\nexit 2\n")
        script.chmod(0o755)
    return str(d)


@pytest.mark.parametrize("kind", ["absent", "failing"])
def test_without_a_working_rados_command_nothing_goes_under_a_live_lock_and_nobody_is_blocklisted(
        cinder_env, tmp_path, kind):
    env = cinder_env
    conf_file = env.conf()
    vol, image_id = _crashed_upload(env, conf_file, "clone.cloned")
    env.wait_for_leases_to_end()
    conf, backend = env.load(conf_file)
    with connect(backend) as holder:
        lock = ImageLock(holder, env.ipool, image_id).__enter__()  # a live upload's lock
        try:
            blocklist_before = env.cluster.admin("ceph", "osd", "blocklist", "ls")
            proc = env.cli("--config-file", conf_file, "purge",
                           env={"PATH": _fake_rados(tmp_path, kind)})
            out = _json(proc)
            assert f"{env.ipool}/{image_id}" not in out["removed"], out
            kept = {k["image"]: k["reason"] for k in out["kept"]}
            assert "upload" in kept[f"{env.ipool}/{image_id}"], out
            assert "cannot tell whether its holders live" in proc.stderr, proc.stderr
            assert env.cluster.admin("ceph", "osd", "blocklist", "ls") == blocklist_before
            assert holder.instance_id in {h["gid"] for h in lock_holders(
                env.io[env.ipool], "rbd_clone_lock." + image_id)}
            with rbd.Image(env.io[env.ipool], image_id, read_only=True):
                pass  # the clone is still there
        finally:
            lock.__exit__()
    out = _json(env.cli("--config-file", conf_file, "purge"))  # the lock free: it goes
    assert f"{env.ipool}/{image_id}" in out["removed"], out
    assert image_id not in _records(env)


def test_one_image_the_purge_cannot_open_does_not_stop_the_run(cinder_env, nova_io):
    """Two uploads whose images Glance deleted while volumes were cloned from them: one's
    clone is a Nova disk in a pool Cinder's user cannot read (its children cannot be
    listed), the other's a Cinder volume, since deleted. The first is kept with the
    reason; the second is reclaimed in the same run, whatever their order."""
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    ipool_io = env.io[env.ipool]
    uploads = []
    for _ in range(2):
        vol = env.volume(16 * MiB)
        image_id = env.image()
        assert env.upload(conf_file, vol, image_id)["method"] == "clone"
        _wait_hashed(env, image_id)
        uploads.append(image_id)
    unreadable, reclaimable = uploads
    disk = f"{uuid.uuid4()}_disk"
    rbd.RBD().clone(ipool_io, unreadable, "snap", nova_io, disk)
    cinder_clone = f"volume-{uuid.uuid4()}"
    create_volume_from_image(conf, backend, reclaimable, cinder_clone)
    for image_id in uploads:  # glance_store trashes each: a clone depends on it
        env.glance().delete_image(image_id)
        env.images.remove(image_id)
    with connect(backend) as cluster:
        delete.delete_volume(cluster, env.vpool, cinder_clone)
    out = _json(env.cli("--config-file", conf_file, "purge"))
    kept = {k["image"]: k["reason"] for k in out["kept"]}
    assert "could not be handled" in kept[f"{env.ipool}/{unreadable}"], out
    assert f"{env.ipool}/{reclaimable}" in out["removed"], out
    # Nova's disk goes; the next run reclaims the other
    _remove_image(nova_io, disk)
    out = _json(env.cli("--config-file", conf_file, "purge"))
    assert f"{env.ipool}/{unreadable}" in out["removed"], out


def test_every_upload_is_journaled_and_its_record_goes_with_its_clone(cinder_env):
    env = cinder_env
    conf_file = env.conf()
    vol = env.volume(16 * MiB)
    image_id = env.image()
    assert env.upload(conf_file, vol, image_id)["method"] == "clone"
    record = _records(env)[image_id]
    assert record["state"] == journal.COMPLETE and record["image_pool"] == env.ipool
    with rbd.Image(env.io[env.vpool], vol, read_only=True) as img:
        assert record["volume_id"] == img.id() and record["volume"] == vol
    _wait_hashed(env, image_id)
    out = _json(env.cli("--config-file", conf_file, "purge"))
    assert image_id in _records(env), out  # the clone exists: the record stays
    env.glance().delete_image(image_id)
    env.images.remove(image_id)
    out = _json(env.cli("--config-file", conf_file, "purge"))
    assert f"{env.ipool}/{image_id}" in out["records_forgotten"], out
    assert image_id not in _records(env)


def test_a_purge_out_of_time_leaves_the_rest_to_the_next_run(cinder_env):
    """--budget: once spent, no failed upload is started (counted in `unfinished`, its
    record and clone untouched); the next run takes them. A budget that is no number of
    seconds is refused in one line."""
    env = cinder_env
    conf = env.conf()
    failed = [_crashed_upload(env, conf, "clone.cloned")[1] for _ in range(2)]
    spent = _json(env.cli("--config-file", conf, "purge", "--budget", "0"))
    assert spent["removed"] == [] and spent["unfinished"].get("open_uploads") == 2, spent
    assert set(failed) <= set(_records(env))
    assert set(failed) <= set(env.pool_state()[env.ipool]["images"])
    out = _json(env.cli("--config-file", conf, "purge", "--budget", "600"))
    assert sorted(out["removed"]) == sorted(f"{env.ipool}/{i}" for i in failed), out
    assert out["unfinished"] == {}, out
    assert not set(failed) & set(_records(env))
    bad = env.cli("--config-file", conf, "purge", "--budget", "soon")
    assert bad.returncode == 2 and "'soon' is not a number of seconds" in bad.stderr, bad.stderr
