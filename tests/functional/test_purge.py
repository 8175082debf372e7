"""purge is conservative and reconciles failed uploads (issue 16 item 3, issue 15 finding 2).

- trash entries of rbd-mirror (source mirroring) and of a live migration (source
  migration) survive every purge, even when they carry our marks and names;
- images named by a UUID that no upload of ours made survive every purge;
- the orphan of a failed upload (its clone and upload snapshot, the Glance image deleted
  or left queued with nothing in flight) is removed by one purge; one whose upload is
  still running is not;
- `purge --dry-run` prints the plan and removes nothing.
Real dev cluster and real Glance 33.
"""

import json
import subprocess
import uuid

import pytest
import rados
import rbd

from cinder_ext import delete
from cinder_ext import purge as purge_mod
from cinder_ext import footprint
from tests import fault_injection
from cinder_ext.locks import ImageLock
from cinder_ext.footprint import CLONED_MARK
from cinder_ext.glance import Glance
from cinder_ext.ceph import snapshots_of
from cinder_ext.upload import connect
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB, lock_holders, lock_objects
from tests.functional.test_upload_clone import _wait_hashed


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _purge(env, conf_file, **kw):
    conf, backend = env.load(conf_file)
    with connect(backend) as cluster:
        return purge_mod.purge(cluster, env.vpool, [env.ipool], glance=Glance(conf), **kw)


def _set_trash_source(io, image_id, source):
    """Rewrite the source of a trash entry in the pool's rbd_trash directory.

    Why a construction: mirroring entries are made only by rbd-mirror deleting a
    non-primary image, and the dev cluster runs no rbd-mirror (nor the mgr). librbd
    keeps a trash entry as one omap value of rbd_trash, key id_<image id>, encoded
    cls::rbd::TrashImageSpec: ENCODE_START header (version, compat, u32 length: 6
    bytes), then the source as one byte (0 user, 1 mirroring, 2 migration, 3 removing,
    4 user_parent), then the name and times. Changing that byte makes exactly the entry
    rbd-mirror would leave; librbd's own trash_list then reports it (checked below)."""
    key = f"id_{image_id}"
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals_by_keys(op, (key,))
        io.operate_read_op(op, "rbd_trash")
        value = dict(it)[key]
    assert value[0] >= 1 and len(value) > 7
    value = value[:6] + bytes([source]) + value[7:]
    with rados.WriteOpCtx() as op:
        io.set_omap(op, (key,), (value,))
        io.operate_write_op(op, "rbd_trash")


MIRRORING, USER = 1, 0


def _trash_entry(ceph_cluster, io, name):
    # rbd's CLI, not the binding: pacific's trash_list raises IndexError on a migration
    # entry (cinder_ext.ceph.Cluster.trash_list_all works around it)
    out = ceph_cluster.admin("rbd", "trash", "ls", "-a", "-l", "-p", io.get_pool_name(),
                             "--format", "json")
    return next(e for e in json.loads(out or "[]") if e["name"] == name)


def test_mirroring_and_migration_entries_and_foreign_uuid_images_survive_every_purge(
        cinder_env, ceph_cluster):
    env = cinder_env
    conf_file = env.conf()
    vio, iio = env.io[env.vpool], env.io[env.ipool]
    A = ("--conf", ceph_cluster.conf, "--keyring", ceph_cluster.admin_keyring)
    made = []  # (pool io, trash id) to restore to user and remove at the end
    migrating = None
    try:
        # 1. mirroring: a Glance-pool image with every mark of ours, and a marked volume
        mirrored_image = str(uuid.uuid4())
        rbd.RBD().create(iio, mirrored_image, 4 * MiB)
        with rbd.Image(iio, mirrored_image) as img:
            img.metadata_set(CLONED_MARK, "1")
            img.metadata_set(footprint.GLANCE_TRASH_MARK, "1")
        rbd.RBD().trash_move(iio, mirrored_image)
        tid = _trash_entry(ceph_cluster, iio, mirrored_image)["id"]
        _set_trash_source(iio, tid, MIRRORING)
        made.append((iio, tid))
        mirrored_volume = f"volume-{uuid.uuid4()}"
        rbd.RBD().create(vio, mirrored_volume, 4 * MiB)
        with rbd.Image(vio, mirrored_volume) as img:
            img.metadata_set(footprint.TRASH_MARK, "images/x")
        rbd.RBD().trash_move(vio, mirrored_volume)
        vtid = _trash_entry(ceph_cluster, vio, mirrored_volume)["id"]
        _set_trash_source(vio, vtid, MIRRORING)
        made.append((vio, vtid))
        assert _trash_entry(ceph_cluster, iio, mirrored_image)["source"] == "MIRRORING"
        assert _trash_entry(ceph_cluster, vio, mirrored_volume)["source"] == "MIRRORING"

        # 2. migration, for real: `rbd migration prepare` trashes the source (migration)
        migrating = str(uuid.uuid4())
        rbd.RBD().create(iio, migrating, 4 * MiB)
        with rbd.Image(iio, migrating) as img:
            img.metadata_set(CLONED_MARK, "1")
        subprocess.run(["rbd", *A, "migration", "prepare", f"{env.ipool}/{migrating}",
                        f"{env.ipool}/{migrating}-target"], check=True, capture_output=True)
        assert _trash_entry(ceph_cluster, iio, migrating)["source"] == "MIGRATION"

        # 3. images named by a UUID that no upload of ours made: a clone of another tool's
        # snapshot, a clone of an upload snapshot named for another image, a plain image,
        # and a trashed one (source user) with no mark and no parent of ours
        base = env.volume(4 * MiB)
        with rbd.Image(vio, base) as img:
            img.create_snap("backup-1")
            img.create_snap(f"image-{uuid.uuid4()}")
            other_upload = [s["name"] for s in img.list_snaps() if s["name"].startswith("image-")][0]
        foreign = [str(uuid.uuid4()) for _ in range(4)]
        rbd.RBD().clone(vio, base, "backup-1", iio, foreign[0])
        rbd.RBD().clone(vio, base, other_upload, iio, foreign[1])
        rbd.RBD().create(iio, foreign[2], 4 * MiB)
        rbd.RBD().create(iio, foreign[3], 4 * MiB)
        rbd.RBD().trash_move(iio, foreign[3])
        made.append((iio, _trash_entry(ceph_cluster, iio, foreign[3])["id"]))

        before = env.pool_state()
        dry = _json(env.cli("--config-file", conf_file, "purge", "--dry-run"))
        assert dry["would_remove"] == [] and dry["dry_run"]
        for _ in range(2):  # every purge: CLI (stores detail) and in-process
            out = _json(env.cli("--config-file", conf_file, "purge"))
            assert out["removed"] == [] and out["snapshots_removed"] == [], out
            assert env.ipool in out["pools"]
            out = _purge(env, conf_file, include_unmarked=True)
            assert out["removed"] == [] and out["snapshots_removed"] == [], out
        assert env.pool_state() == before

        subprocess.run(["rbd", *A, "migration", "abort", f"{env.ipool}/{migrating}-target"],
                       check=True, capture_output=True)
        rbd.RBD().remove(iio, migrating)
        for name in foreign[:3]:
            rbd.RBD().remove(iio, name)
        with rbd.Image(vio, base) as img:
            for s in list(img.list_snaps()):
                img.remove_snap(s["name"])
    finally:
        if migrating and migrating in [e["name"] for e in json.loads(ceph_cluster.admin(
                "rbd", "trash", "ls", "-a", "-p", env.ipool, "--format", "json") or "[]")]:
            subprocess.run(["rbd", *A, "migration", "abort", f"{env.ipool}/{migrating}-target"],
                           capture_output=True)
            subprocess.run(["rbd", *A, "rm", f"{env.ipool}/{migrating}"], capture_output=True)
        for io, tid in made:
            try:
                _set_trash_source(io, tid, USER)
                rbd.RBD().trash_remove(io, tid, force=True)
            except (rados.Error, rbd.Error, StopIteration, KeyError):
                pass


def _lock_objects(env):
    return {p: lock_objects(env.io[p]) for p in (env.vpool, env.ipool)}


def _clone_uploaded(env, conf_file):
    """A volume uploaded by clone to a new image, Glance's hashing done: (volume, image id)."""
    vol = env.volume(16 * MiB)
    image_id = env.image()
    assert env.upload(conf_file, vol, image_id)["method"] == "clone"
    _wait_hashed(env, image_id)
    return vol, image_id


def _trash(env, backend, vol):
    """vol deleted as the driver deletes it (Cinder's own snapshots kept): to the trash,
    since something still needs it."""
    with connect(backend) as cluster:
        out = delete.delete_volume(cluster, env.vpool, vol, foreign_snapshots=delete.KEEP)
    assert out["action"] == "trashed", out


def _glance_deletes(env, glance_peer, image_id):
    assert glance_peer.request("DELETE", f"/v2/images/{image_id}").status == 204
    env.images.remove(image_id)


def _upstream_clone(env, vol):
    """A Cinder clone of vol as upstream's create_cloned_volume makes it: (clone, snapshot)."""
    import rbd
    clone = f"volume-{uuid.uuid4()}"
    clone_snap = f"{clone}.clone_snap"
    with rbd.Image(env.io[env.vpool], vol) as v:
        v.create_snap(clone_snap)
        v.protect_snap(clone_snap)
    rbd.RBD().clone(env.io[env.vpool], vol, clone_snap, env.io[env.vpool], clone)
    return clone, clone_snap


def _crashed_upload(env, conf_file, point):
    vol = env.volume(16 * MiB)
    image_id = env.image()
    proc = env.cli("--config-file", conf_file, "upload", vol, image_id,
                   env={fault_injection.ENV_POINT: point})
    assert proc.returncode == -9, proc.stderr
    return vol, image_id


@pytest.mark.parametrize("point", ["clone.volume_snapshot_created", "clone.cloned",
                                   "clone.image_snapshot_protected"])
@pytest.mark.parametrize("glance_state", ["deleted", "queued"])
def test_the_orphans_of_a_failed_upload_are_removed_by_one_purge(
        cinder_env, glance_peer, point, glance_state):
    """Cinder gave up on the upload (a crash; the volume manager then deletes the queued
    image, or leaves it queued) and never retries with that image id: one purge removes
    the clone and the upload snapshot; the volume is whole."""
    env = cinder_env
    conf_file = env.conf()
    vol, image_id = _crashed_upload(env, conf_file, point)
    sha = env.volume_sha(vol)
    left = env.new_state(env.baseline)
    assert left[env.vpool]["images"][vol] != [] or image_id in left[env.ipool]["images"]
    if glance_state == "deleted":
        assert glance_peer.request("DELETE", f"/v2/images/{image_id}").status == 204
    else:
        assert env.get_image(image_id)["status"] == "queued"
    out = _json(env.cli("--config-file", conf_file, "purge"))
    state = env.new_state(env.baseline)
    assert _lock_objects(env) == {env.vpool: [], env.ipool: []}, out  # the dead holder's too
    assert state[env.ipool] == {"images": {}, "trash": []}, (state, out)
    assert state[env.vpool] == {"images": {vol: []}, "trash": []}, (state, out)
    assert env.volume_sha(vol) == sha
    if point != "clone.volume_snapshot_created":
        assert f"{env.ipool}/{image_id}" in out["removed"]
        assert "clone of a failed upload" in out["reasons"][f"{env.ipool}/{image_id}"]
    # the volume uploads again, by clone, to a new image
    again = env.image()
    assert env.upload(conf_file, vol, again)["method"] == "clone"
    _wait_hashed(env, again)


def test_an_upload_in_flight_is_not_an_orphan(cinder_env, glance_peer):
    """A clone whose queued image has no location yet is left alone while its upload
    holds the image's upload lock (a live upload between clone and registration)."""
    env = cinder_env
    conf_file = env.conf()
    vol, image_id = _crashed_upload(env, conf_file, "clone.image_snapshot_protected")
    before = env.pool_state()
    _, backend = env.load(conf_file)
    with connect(backend) as cluster:
        lock = ImageLock(cluster, env.ipool, image_id).__enter__()  # a live holder: us
        try:
            out = _purge(env, conf_file)
            assert out["removed"] == [] and env.pool_state() == before, out
            assert any(k["image"] == f"{env.ipool}/{image_id}" and "in progress" in k["reason"]
                       for k in out["kept"]), out
        finally:
            lock.__exit__()
    # Glance's import task property counts as in flight too: set it, purge keeps the clone
    assert glance_peer.request(
        "PATCH", f"/v2/images/{image_id}",
        body=[{"op": "add", "path": "/os_glance_import_task", "value": str(uuid.uuid4())}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"}).status in (200, 403)
    if env.get_image(image_id).get("os_glance_import_task"):
        assert _purge(env, conf_file)["removed"] == []
        assert env.pool_state() == before
    assert glance_peer.request("DELETE", f"/v2/images/{image_id}").status == 204
    _purge(env, conf_file)
    assert env.new_state(env.baseline)[env.ipool] == {"images": {}, "trash": []}


def test_dry_run_prints_the_plan_and_removes_nothing(cinder_env, glance_peer):
    env = cinder_env
    conf_file = env.conf()
    # a trashed source volume whose image Glance deleted, and a failed upload's orphan
    vol, image_id = _clone_uploaded(env, conf_file)
    assert _json(env.cli("--config-file", conf_file, "delete-volume", vol))["action"] == "trashed"
    assert glance_peer.request("DELETE", f"/v2/images/{image_id}").status == 204
    vol2, orphan = _crashed_upload(env, conf_file, "clone.image_snapshot_protected")
    assert glance_peer.request("DELETE", f"/v2/images/{orphan}").status == 204

    before = env.pool_state()
    proc = env.cli("--config-file", conf_file, "purge", "--dry-run")
    out = _json(proc)
    assert env.pool_state() == before
    plan = {p["what"]: p["reason"] for p in out["would_remove"]}
    assert f"{env.vpool}/{vol}" in plan and f"{env.ipool}/{orphan}" in plan, out
    assert out["removed"] == [] and out["dry_run"] is True
    assert f"would remove {env.ipool}/{orphan}: clone of a failed upload" in proc.stderr
    print("purge --dry-run:\n" + "\n".join(f"  {w}: {r}" for w, r in plan.items()))

    proc = env.cli("--config-file", conf_file, "purge")
    out = _json(proc)
    assert f"removed {env.vpool}/{vol}: " in proc.stderr  # every removal logged with why
    assert sorted(out["removed"]) == sorted([f"{env.vpool}/{vol}", f"{env.ipool}/{orphan}"])
    assert env.new_state(env.baseline) == {env.vpool: {"images": {vol2: []}, "trash": []},
                                           env.ipool: {"images": {}, "trash": []}}


@pytest.mark.parametrize("point, finished", [("clone.cloned", False),
                                             ("clone.image_snapshot_protected", True),
                                             ("independent.flattened", False)])
def test_with_finish_an_upload_killed_once_its_clone_was_complete_goes_active(
        cinder_env, point, finished):
    """cinder-volume killed mid-upload, then its periodic purge (finish=True) after the
    restart: an upload whose clone was complete (snap made, image queued, nothing in
    flight) is finished, its image active with the volume's bytes; one killed earlier is
    rolled back. Either way the user's deletes then leave both pools at the baseline."""
    env = cinder_env
    conf_file = env.conf(extra="rbd_flatten_volume_to_image = true\n"
                         if point.startswith("independent") else "")
    vol, image_id = _crashed_upload(env, conf_file, point)
    sha = env.volume_sha(vol)
    out = _purge(env, conf_file, finish=True)
    image = env.get_image(image_id)
    if finished:
        assert out["finished"] == [f"{env.ipool}/{image_id}"], out
        assert image["status"] == "active" and env.image_sha(image_id) == sha
        _wait_hashed(env, image_id)
    else:
        assert out["finished"] == [] and f"{env.ipool}/{image_id}" in out["removed"], out
        assert image["status"] == "queued"
    # the user's deletes (Cinder deletes the image; the volume goes with the operator's reset)
    env.glance().delete_image(image_id)
    env.images.remove(image_id)
    conf, backend = env.load(conf_file)
    with connect(backend) as cluster:
        delete.delete_volume(cluster, env.vpool, vol)
    _purge(env, conf_file)
    assert env.new_state(env.baseline) == {env.vpool: {"images": {}, "trash": []},
                                           env.ipool: {"images": {}, "trash": []}}


def test_a_trashed_volume_with_upstreams_clone_snapshot_is_purged_once_its_clone_is_gone(
        cinder_env, glance_peer):
    """Found by the soak: V has a clone-uploaded image and a Cinder clone W (upstream's
    snapshot V@W.clone_snap). Deleting V trashes it (clones need it); upstream's delete of W
    then looks for V by name, misses it in the trash, and leaves V@W.clone_snap. Once
    Glance deletes the image, purge removes V with that snapshot (it kept V for ever)."""
    env = cinder_env
    conf_file = env.conf()
    vol, image_id = _clone_uploaded(env, conf_file)
    clone, clone_snap = _upstream_clone(env, vol)
    conf, backend = env.load(conf_file)
    _trash(env, backend, vol)  # Cinder's own snapshots are kept, as upstream's delete keeps them
    rbd.RBD().remove(env.io[env.vpool], clone)  # upstream's delete of W: V@W.clone_snap stays
    _glance_deletes(env, glance_peer, image_id)
    out = _purge(env, conf_file)
    assert f"{env.vpool}/{vol}" in out["removed"], out
    assert env.new_state(env.baseline) == {env.vpool: {"images": {}, "trash": []},
                                           env.ipool: {"images": {}, "trash": []}}


def test_a_cinder_clone_purged_from_the_trash_takes_its_parents_clone_snapshot(cinder_env):
    """Found by the soak: a Cinder clone W of V (V@W.clone_snap) deleted to the trash (Cinder's
    deferred deletion) and purged left V@W.clone_snap behind for V's whole life (upstream's
    own delete of W drops it). Purge drops it with W once nothing else needs it."""
    import rbd
    env = cinder_env
    conf_file = env.conf()
    vol = env.volume(16 * MiB)
    clone, clone_snap = _upstream_clone(env, vol)
    rbd.RBD().trash_move(env.io[env.vpool], clone, 0)  # Cinder's deferred deletion of W
    out = _purge(env, conf_file, include_unmarked=True)
    assert f"{env.vpool}/{clone}" in out["removed"], out
    assert f"{env.vpool}/{vol}@{clone_snap}" in out["snapshots_removed"], out
    with rbd.Image(env.io[env.vpool], vol, read_only=True) as v:
        assert list(v.list_snaps()) == []


def test_a_trashed_volume_loses_the_upload_snapshots_no_clone_needs_while_others_do(
        cinder_env, glance_peer, ceph_cluster):
    """Found by the 30-minute soak: V uploaded to I1 and I2, then deleted (trashed: both
    clones need it). Glance deletes I2; V's snapshot for I2 stayed until I1 went too, holding
    the blocks V had at I2's upload that no clone needs (for as long as I1 lives). The
    purge removes it at once and keeps V, and I1's snapshot, for I1."""
    import rbd
    env = cinder_env
    conf_file = env.conf()
    vol, first = _clone_uploaded(env, conf_file)
    env.write(vol, 0, b"\x5a" * MiB)  # I2 differs from I1: its snapshot pins blocks of its own
    second = env.image()
    assert env.upload(conf_file, vol, second)["method"] == "clone"
    _wait_hashed(env, second)
    conf, backend = env.load(conf_file)
    _trash(env, backend, vol)
    _glance_deletes(env, glance_peer, second)
    out = _purge(env, conf_file)
    assert f"{env.vpool}/{vol}@image-{second}" in out["snapshots_removed"], out
    assert f"{env.vpool}/{vol}" not in out["removed"], out
    tid = _trash_entry(ceph_cluster, env.io[env.vpool], vol)["id"]
    with rbd.Image(env.io[env.vpool], image_id=tid, read_only=True) as v:
        assert [s["original"] for s in snapshots_of(v, protected=False)] == [f"image-{first}"]
    # I1 still reads from it; once I1 goes, V goes with its last snapshot
    _glance_deletes(env, glance_peer, first)
    out = _purge(env, conf_file)
    assert f"{env.vpool}/{vol}" in out["removed"], out
    assert env.new_state(env.baseline) == {env.vpool: {"images": {}, "trash": []},
                                           env.ipool: {"images": {}, "trash": []}}


def test_a_trashed_volume_kept_by_a_snapshot_not_ours_loses_its_upload_snapshots_once_their_clones_go(
        cinder_env, glance_peer, ceph_cluster):
    """Found by the soak: V has a snapshot Cinder no longer knows (unmanaged), V uploaded to
    I, then deleted (trashed, as upstream's driver trashes it). Glance deletes I. The
    purge keeps V for that snapshot (the admin's to remove) but V's upload snapshot for I
    stayed with it, pinning V's blocks at I's upload for as long as the admin took; it
    goes at once now, and the unmanaged snapshot stays."""
    env = cinder_env
    conf_file = env.conf()
    vol, image = _clone_uploaded(env, conf_file)
    unmanaged = f"snapshot-{uuid.uuid4()}"
    with rbd.Image(env.io[env.vpool], vol) as v:
        v.create_snap(unmanaged)
    conf, backend = env.load(conf_file)
    _trash(env, backend, vol)
    _glance_deletes(env, glance_peer, image)
    out = _purge(env, conf_file)
    assert f"{env.vpool}/{vol}@image-{image}" in out["snapshots_removed"], out
    assert f"{env.vpool}/{vol}" not in out["removed"], out
    tid = _trash_entry(ceph_cluster, env.io[env.vpool], vol)["id"]
    with rbd.Image(env.io[env.vpool], image_id=tid, read_only=True) as v:
        assert [s["name"] for s in v.list_snaps()] == [unmanaged]
    # the admin removes the snapshot: the next purge removes V
    with rbd.Image(env.io[env.vpool], image_id=tid) as v:
        v.remove_snap(unmanaged)
    out = _purge(env, conf_file)
    assert f"{env.vpool}/{vol}" in out["removed"], out
    assert env.new_state(env.baseline) == {env.vpool: {"images": {}, "trash": []},
                                           env.ipool: {"images": {}, "trash": []}}


def test_a_trash_entry_a_client_holds_open_is_kept_and_the_run_goes_on(cinder_env, glance_peer, ceph_cluster):
    """Found by CI's soak: one trash entry that a client held open (librbd's EBUSY on
    trash remove) ended the driver's whole purge run. It is kept for the next run, and
    the run removes the others."""
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    vols = [_clone_uploaded(env, conf_file) for _ in range(2)]
    for vol, _ in vols:
        _trash(env, backend, vol)
    for _, image in vols:
        _glance_deletes(env, glance_peer, image)
    held, free = vols[0][0], vols[1][0]
    tid = _trash_entry(ceph_cluster, env.io[env.vpool], held)["id"]
    with rbd.Image(env.io[env.vpool], image_id=tid):  # read-write: a watch on its header
        out = _purge(env, conf_file)
    assert f"{env.vpool}/{free}" in out["removed"], out
    assert f"{env.vpool}/{held}" not in out["removed"], out
    assert any(k["image"] == f"{env.vpool}/{held}" and "busy" in k["reason"] for k in out["kept"]), out
    out = _purge(env, conf_file)
    assert f"{env.vpool}/{held}" in out["removed"], out


def _glance_written(env, glance_peer):
    """An image Glance wrote itself (a copy upload: nothing of ours on it) and a volume
    cloned from its snap as upstream's clone_image clones it (no mark of ours either):
    (image id, volume name)."""
    image = env.image()
    assert env.upload(env.conf(enable=False), env.volume(16 * MiB), image)["method"] == "copy"
    _wait_hashed(env, image)
    child = f"volume-{uuid.uuid4()}"
    env.volumes.append(child)
    rbd.RBD().clone(env.io[env.ipool], image, "snap", env.io[env.vpool], child)
    return image, child


def test_a_glance_image_trashed_for_a_volume_is_reclaimed_when_the_volume_goes_before_any_purge(
        cinder_env, glance_peer):
    """Found by CI (test_on_off): Glance deletes an image a volume was cloned from
    (glance_store trashes it), and the volume is deleted before a purge run has seen the
    two together. Purge knew that trash entry from Nova's only by its clones, so it
    stayed in the Glance pool's trash for ever. The delete of its last clone marks it."""
    env = cinder_env
    conf_file = env.conf()
    image, child = _glance_written(env, glance_peer)
    _glance_deletes(env, glance_peer, image)
    assert env.new_state(env.baseline)[env.ipool]["trash"] == [image]
    assert _json(env.cli("--config-file", conf_file, "delete-volume", child))["action"] == "removed"
    out = _purge(env, conf_file)
    assert f"{env.ipool}/{image}" in out["removed"], out
    assert env.new_state(env.baseline)[env.ipool] == {"images": {}, "trash": []}, out


def test_one_purge_reclaims_a_glance_image_whose_last_clone_it_removes_itself(cinder_env, glance_peer):
    """The same chain, reclaimed by the purge alone: volume V cloned from Glance's image I,
    V uploaded to I2 (V's clone), V deleted (trashed: I2 reads through it), then Glance
    deletes I and I2. One purge removes V (nothing needs it now), and I with it."""
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    image, child = _glance_written(env, glance_peer)
    second = env.image()
    assert env.upload(conf_file, child, second)["method"] == "clone"
    _wait_hashed(env, second)
    _trash(env, backend, child)
    _glance_deletes(env, glance_peer, image)
    _glance_deletes(env, glance_peer, second)
    out = _purge(env, conf_file)
    assert {f"{env.vpool}/{child}", f"{env.ipool}/{image}"} <= set(out["removed"]), out
    state = env.new_state(env.baseline)  # left: the volume the copy upload read
    assert state[env.ipool] == {"images": {}, "trash": []}, out
    assert state[env.vpool]["trash"] == [] and child not in state[env.vpool]["images"], out
