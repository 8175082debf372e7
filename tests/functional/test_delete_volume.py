"""Delete volumes and images that clones depend on, then purge: issue 7's acceptance.

Spec test plan (a): upload by clone, delete the volume (constant time), the image lives
on; (b): an image a volume was created from is deleted all the same (204, issue 16: images
and volumes are independent), the volume reads on and purge reclaims the image's data. Both in the deferred mode (RBD trash + purge) and the flatten
mode; every step of a delete and of a purge SIGKILLed and finished by a retry or purge.
The cinder_env fixture checks both pools (trash included) are back to their baseline.
"""

import hashlib
import json
import statistics
import time
import uuid

import pytest
import rados
import rbd

from cinder_ext import delete, steps
from cinder_ext import purge as purge_mod
from tests import fault_injection
from cinder_ext.upload import connect
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import GiB, MiB


def _ceph(env):
    """Our Ceph adapter as Cinder's user (the one the CLI uses)."""
    _, backend = env.load(env.conf())
    return connect(backend)


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" or "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def _clone_upload(env, conf, size=64 * MiB):
    vol = env.volume(size)
    image_id = env.image()
    assert env.upload(conf, vol, image_id)["method"] == "clone"
    return vol, image_id


def _glance_user_sha(ceph_cluster, pool, image_id):
    """The image's bytes as Glance's Ceph user reads them."""
    client = ceph_cluster.client("glance")
    conn = rados.Rados(rados_id=ceph_cluster.glance_user, conffile=client["conf"])
    conn.connect(timeout=30)
    try:
        with conn.open_ioctx(pool) as io, rbd.Image(io, image_id, snapshot="snap", read_only=True) as img:
            h, size = hashlib.sha256(), img.size()
            for off in range(0, size, 4 * MiB):
                h.update(img.read(off, min(4 * MiB, size - off)))
            return h.hexdigest()
    finally:
        conn.shutdown()


def _delete_image(glance_peer, image_id):
    return glance_peer.request("DELETE", f"/v2/images/{image_id}", timeout=120)


def _wait_hashed(env, image_id):
    from tests.functional.test_upload_clone import _wait_hashed as wait
    wait(env, image_id)


def _trash_names(env, pool):
    return env.pool_state()[pool]["trash"]


@pytest.mark.parametrize("mode", ["deferred", "flatten"])
def test_a_delete_the_source_volume_then_the_image(cinder_env, ceph_cluster, glance_peer, mode):
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf)
    sha = env.volume_sha(vol)

    out = _json(env.cli("--config-file", conf, "delete-volume", vol, "--mode", mode))
    assert out["dependents"] == [f"{env.ipool}/{image_id}"]
    state = env.pool_state()
    assert vol not in state[env.vpool]["images"]
    if mode == "deferred":
        assert out["action"] == "trashed"
        assert state[env.vpool]["trash"] == [vol]  # the image still reads through it
    else:
        assert out["action"] == "flattened"
        assert state[env.vpool]["trash"] == []
        with _ceph(env) as c:
            assert c.info(env.ipool, image_id)["parent"] is None

    # the image lives on: active, same bytes through Glance and as Glance's Ceph user
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
    assert _glance_user_sha(ceph_cluster, env.ipool, image_id) == sha

    # a new volume from it has the same bytes, and is deleted as any leaf volume
    new = f"volume-{uuid.uuid4()}"
    env.volumes.append(new)
    made = _json(env.cli("--config-file", conf, "create-volume", image_id, new, "--size", "0.0625"))
    assert made["method"] == "clone" and made["size"] == 64 * MiB
    assert env.volume_sha(new) == sha
    assert _json(env.cli("--config-file", conf, "delete-volume", new))["action"] == "removed"

    # purge keeps what the image needs
    kept = _json(env.cli("--config-file", conf, "purge"))
    assert kept["removed"] == []
    if mode == "deferred":
        assert [k["image"] for k in kept["kept"]] == [f"{env.vpool}/{vol}"]

    _wait_hashed(env, image_id)
    resp = _delete_image(glance_peer, image_id)
    assert resp.status == 204, resp
    out = _json(env.cli("--config-file", conf, "purge"))
    if mode == "deferred":
        assert out["removed"] == [f"{env.vpool}/{vol}"]
    assert env.pool_state() == env.baseline


def test_a_delete_is_constant_time(cinder_env):
    """1 GiB and 4 GiB sparse volumes with real data: the delete takes the same time."""
    env = cinder_env
    conf = env.conf()
    cfg, backend = env.load(conf)
    times = {GiB: [], 4 * GiB: []}
    images = []
    with connect(backend) as cluster:
        for size in (GiB, 4 * GiB) * 3:  # interleaved: drift hits both sizes
            vol, image_id = _clone_upload(env, conf, size)
            images.append(image_id)
            out = delete.delete_volume(cluster, env.vpool, vol)
            assert out["action"] == "trashed"
            times[size].append(out["seconds"]["total"])
    one, four = statistics.median(times[GiB]), statistics.median(times[4 * GiB])
    print(f"delete_volume seconds (median of 3): 1 GiB {one:.3f}, 4 GiB {four:.3f}")
    assert max(one, four) < 1.0 and abs(four - one) < 0.5
    for image_id in images:
        _wait_hashed(env, image_id)
        assert env.glance().delete_image(image_id) is None
    with connect(backend) as cluster:
        out = purge_mod.purge(cluster, env.vpool, [env.ipool])
    assert len(out["removed"]) == 6 and out["kept"] == []
    assert env.pool_state() == env.baseline


@pytest.mark.parametrize("mode", ["deferred", "flatten"])
def test_b_image_with_a_volume_cloned_from_it_is_deleted_and_the_volume_reads_on(
        cinder_env, glance_peer, mode):
    """Issue 16 (cinder-tempest-plugin's test_image_volume_dependencies_3): Glance deletes
    an image that a volume was created from (204, into its pool's trash), the volume keeps
    its bytes; both source volume deletes work after it; one purge reclaims the rest."""
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf)
    new = f"volume-{uuid.uuid4()}"
    env.volumes.append(new)
    made = _json(env.cli("--config-file", conf, "create-volume", image_id, new, "--size", "0.125"))
    assert made["method"] == "clone" and made["size"] == 128 * MiB
    _wait_hashed(env, image_id)

    resp = _delete_image(glance_peer, image_id)
    assert resp.status == 204, resp
    assert env.new_state(env.baseline)[env.ipool] == {"images": {}, "trash": [image_id]}
    assert _delete_image(glance_peer, image_id).status == 404
    with _ceph(env) as c:
        data = c.head(env.vpool, vol, 64 * MiB)
        assert c.head(env.vpool, new, 64 * MiB) == data

    # the source volume goes (trash or flatten: the trashed image is flattened then)
    out = _json(env.cli("--config-file", conf, "delete-volume", vol, "--mode", mode))
    assert out["action"] == {"deferred": "trashed", "flatten": "flattened"}[mode]
    with _ceph(env) as c:
        assert c.head(env.vpool, new, 64 * MiB) == data
    kept = _json(env.cli("--config-file", conf, "purge"))
    assert kept["removed"] == []  # the new volume still reads through both

    out = _json(env.cli("--config-file", conf, "delete-volume", new, "--mode", mode))
    assert out["action"] == "removed"
    out = _json(env.cli("--config-file", conf, "purge"))
    expected = [f"{env.ipool}/{image_id}"] + ([f"{env.vpool}/{vol}"] if mode == "deferred" else [])
    assert sorted(out["removed"]) == sorted(expected), out
    assert env.pool_state() == env.baseline


DEFERRED_KILLS = ["delete.inspected", "delete.marked", "delete.trashed"]
FLATTEN_KILLS = ["delete.inspected", "delete.flattened", "delete.removed"]


@pytest.mark.parametrize("mode,point", [("deferred", p) for p in DEFERRED_KILLS]
                         + [("flatten", p) for p in FLATTEN_KILLS])
def test_a_delete_killed_at_each_step_is_finished_by_a_retry(cinder_env, glance_peer, mode, point):
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf)
    sha = env.volume_sha(vol)
    crashed = env.cli("--config-file", conf, "delete-volume", vol, "--mode", mode,
                      env={fault_injection.ENV_POINT: point})
    assert crashed.returncode == -9, crashed.stderr
    # never half gone: whole under its name, or whole in the trash
    state = env.pool_state()[env.vpool]
    if vol in state["images"]:
        assert env.volume_sha(vol) == sha and state["trash"] == []
    else:
        assert state["trash"] == [vol] or mode == "flatten"
    assert env.image_sha(image_id) == sha

    again = _json(env.cli("--config-file", conf, "delete-volume", vol, "--mode", mode))
    assert again["action"] in ("trashed", "already-trashed", "flattened", "removed", "absent")
    assert vol not in env.pool_state()[env.vpool]["images"]
    assert env.image_sha(image_id) == sha
    _wait_hashed(env, image_id)
    assert _delete_image(glance_peer, image_id).status == 204
    _json(env.cli("--config-file", conf, "purge"))
    assert env.pool_state() == env.baseline


@pytest.mark.parametrize("point", steps.PURGE)
def test_a_purge_killed_at_each_step_is_finished_by_the_next(cinder_env, glance_peer, point):
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf)
    assert _json(env.cli("--config-file", conf, "delete-volume", vol))["action"] == "trashed"
    _wait_hashed(env, image_id)
    assert _delete_image(glance_peer, image_id).status == 204
    crashed = env.cli("--config-file", conf, "purge", env={fault_injection.ENV_POINT: point})
    assert crashed.returncode == -9, crashed.stderr
    _json(env.cli("--config-file", conf, "purge"))
    assert env.pool_state() == env.baseline


def test_glance_deletes_an_image_whose_source_is_live_and_purge_drops_the_snapshot(
        cinder_env, glance_peer):
    """Glance's user may only read the volume pool: the volume keeps a trashed snapshot
    after Glance deletes the clone; purge (as Cinder) drops it, the volume stays whole."""
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf)
    sha = env.volume_sha(vol)
    _wait_hashed(env, image_id)
    assert _delete_image(glance_peer, image_id).status == 204
    left = env.new_state(env.baseline)
    assert left[env.vpool]["images"] == {vol: [("trash", f"image-{image_id}", False)]}
    out = _json(env.cli("--config-file", conf, "purge"))
    assert out["snapshots_removed"] == [f"{env.vpool}/{vol}@image-{image_id}"]
    assert env.new_state(env.baseline)[env.vpool]["images"] == {vol: []}
    assert env.volume_sha(vol) == sha
    assert _json(env.cli("--config-file", conf, "delete-volume", vol))["action"] == "removed"


def test_deferred_deletion_delay_is_respected(cinder_env, glance_peer):
    env = cinder_env
    conf = env.conf(extra="enable_deferred_deletion = true\ndeferred_deletion_delay = 3600\n")
    vol, image_id = _clone_upload(env, conf)
    assert _json(env.cli("--config-file", conf, "delete-volume", vol))["delay"] == 3600
    _wait_hashed(env, image_id)
    assert _delete_image(glance_peer, image_id).status == 204
    out = _json(env.cli("--config-file", conf, "purge"))
    assert out["removed"] == [] and out["kept"][0]["reason"].startswith("deferred until")
    # the operator's way out: rbd trash restore/rm; here the plain purge with no delay
    with _ceph(env) as c:
        entry = next(e for e in c.trash_list(env.vpool) if e["name"] == vol)
        c.trash_restore(env.vpool, entry["id"], vol)
    assert _json(env.cli("--config-file", env.conf(), "delete-volume", vol))["action"] == "removed"
    assert env.pool_state() == env.baseline


def test_cli_errors_are_one_line(cinder_env):
    env = cinder_env
    conf = env.conf()
    out = _json(env.cli("--config-file", conf, "delete-volume", "volume-missing"))
    assert out["action"] == "absent"
    proc = env.cli("--config-file", conf, "create-volume", "00000000-0000-0000-0000-000000000000",
                   "volume-x")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "404" in proc.stderr
    vol = env.volume(16 * MiB)
    with _ceph(env) as c:
        c.create_snap(env.vpool, vol, "snapshot-1")
    proc = env.cli("--config-file", conf, "delete-volume", vol)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "has snapshots (snapshot-1)" in proc.stderr
    with _ceph(env) as c:
        c.remove_snap(env.vpool, vol, "snapshot-1")


def test_glance_deletes_a_clone_while_it_hashes_it(cinder_env, glance_peer):
    """No waiting for Glance's background hash: the delete cancels or outruns it (Glance 33
    answers 204 in about a second), and purge drops the snapshot Glance's user could not."""
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf, 4 * GiB)
    assert not env.get_image(image_id).get("os_hash_value")  # still hashing 4 GiB
    t0 = time.monotonic()
    resp = _delete_image(glance_peer, image_id)
    assert resp.status == 204 and time.monotonic() - t0 < 10, resp
    assert env.new_state(env.baseline)[env.ipool] == {"images": {}, "trash": []}
    _json(env.cli("--config-file", conf, "purge"))
    assert _json(env.cli("--config-file", conf, "delete-volume", vol))["action"] == "removed"


def test_glance33_trashes_an_image_whose_clone_is_v2_and_purge_reclaims_it(cinder_env, glance_peer):
    """With a clone v2 child (create-volume's and upstream Cinder's clone_image), Glance 33
    answers 204: librbd lets it unprotect the snapshot, the snapshot goes to the trash
    namespace, and glance_store moves the image to the rbd trash: the image is gone from
    Glance, its data stays in the Glance pool's trash and nothing upstream removes it.
    Our purge does, once the clone is gone."""
    env = cinder_env
    conf = env.conf()
    vol, image_id = _clone_upload(env, conf)
    child = f"volume-{uuid.uuid4()}"
    env.volumes.append(child)
    with _ceph(env) as c:
        c.clone(env.ipool, image_id, "snap", env.vpool, child, clone_format=2)
    resp = _delete_image(glance_peer, image_id)
    assert resp.status == 204, resp
    assert env.new_state(env.baseline)[env.ipool]["trash"] == [image_id]
    out = _json(env.cli("--config-file", conf, "purge"))
    assert out["kept"][0]["image"] == f"{env.ipool}/{image_id}"
    assert "clones depend on it" in out["kept"][0]["reason"]
    assert _json(env.cli("--config-file", conf, "delete-volume", child))["action"] == "removed"
    # the trashed image still reads through the source volume
    assert _json(env.cli("--config-file", conf, "delete-volume", vol))["action"] == "trashed"
    out = _json(env.cli("--config-file", conf, "purge"))
    assert sorted(out["removed"]) == sorted([f"{env.ipool}/{image_id}", f"{env.vpool}/{vol}"])
    assert env.pool_state() == env.baseline
