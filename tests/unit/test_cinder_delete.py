"""cinder_ext.delete and cinder_ext.create without a cluster: names, deferment, the
flatten concurrency bound, the CLI surface. The behaviour on Ceph is in
tests/functional/test_delete_volume.py and test_create_volume.py."""

import datetime
import threading
import time

import pytest

from cinder_ext import cli, delete, steps
from cinder_ext import purge as purge_mod
from cinder_ext import purge_plan
from cinder_ext import footprint
from cinder_ext import glance as glance_mod
from cinder_ext import exceptions as exc


def test_upload_snapshots_are_recognised_by_name():
    assert footprint.is_upload_snap("image-0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1")
    assert not footprint.is_upload_snap("image-not-a-uuid")
    assert not footprint.is_upload_snap("volume-0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1.clone_snap")
    assert not footprint.is_upload_snap(None)


def test_deferment_compares_in_utc_whatever_the_binding_returns():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    past, future = now - datetime.timedelta(seconds=1), now + datetime.timedelta(hours=1)
    assert purge_plan.expired(past, now)
    assert not purge_plan.expired(future, now)
    aware = future.replace(tzinfo=datetime.timezone.utc)
    assert not purge_plan.expired(aware, now)
    assert purge_plan.expired(None, now)


def test_an_unknown_mode_is_refused_before_anything_is_touched():
    with pytest.raises(exc.ConfigError, match="expected one of deferred, flatten"):
        delete.delete_volume(None, "volumes", "volume-x", mode="shred")


class _Flattener:
    """Counts flattens in flight (the scheduling under test, not Ceph's behaviour)."""

    def __init__(self, fail=None):
        self.lock, self.now, self.peak, self.done, self.fail = threading.Lock(), 0, 0, [], fail

    def ioctx(self, pool):
        return pool

    def flatten(self, pool, name=None, image_id=None):
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.1)
        with self.lock:
            self.now -= 1
            self.done.append(name or image_id)
        if self.fail and name == self.fail:
            raise exc.CephError(f"flatten {pool}/{name} failed: injected")


def _deps(n):
    return [{"pool": "images", "image": f"i{k}", "id": f"id{k}", "trash": k == 0} for k in range(n)]


@pytest.mark.parametrize("concurrency,expected", [(1, 1), (3, 3), (0, 8)])
def test_flatten_concurrency_is_bounded_by_rbd_concurrent_flatten_operations(concurrency, expected):
    cluster = _Flattener()
    delete.flatten_all(cluster, _deps(8), concurrency)
    # never past the bound; overlapping at all (a loaded machine may start threads late)
    assert min(expected, 2) <= cluster.peak <= expected
    assert sorted(cluster.done) == sorted(["id0"] + [f"i{k}" for k in range(1, 8)])  # trashed by id


def test_a_failed_flatten_lets_the_others_finish_then_raises():
    cluster = _Flattener(fail="i3")
    with pytest.raises(exc.CephError, match="images/i3"):
        delete.flatten_all(cluster, _deps(6), 2)
    assert len(cluster.done) == 6


def test_fault_points_are_unique():
    points = steps.DELETE + steps.CREATE + steps.PURGE
    assert len(set(points)) == len(points)


def test_cli_subcommands_and_choices():
    p = cli._parser()
    a = p.parse_args(["--config-file", "c", "create-volume", "IMG", "VOL", "--size", "10"])
    assert (a.command, a.image_id, a.volume, a.size) == ("create-volume", "IMG", "VOL", 10.0)
    a = p.parse_args(["--config-file", "c", "delete-volume", "VOL"])
    assert a.mode == "deferred"
    assert p.parse_args(["--config-file", "c", "delete-volume", "V", "--mode", "flatten"]).mode == "flatten"
    with pytest.raises(SystemExit):
        p.parse_args(["--config-file", "c", "delete-volume", "V", "--mode", "shred"])
    assert p.parse_args(["--config-file", "c", "purge"]).image_pool is None


def test_cli_error_is_one_line(tmp_path, capsys):
    conf = tmp_path / "cinder.conf"
    conf.write_text("[DEFAULT]\nenabled_backends = ceph\n[ceph]\nrbd_ceph_conf = /nonexistent\n"
                    "rados_connection_retries = 0\n[glance]\nauth_strategy = noauth\n"
                    "api_servers = http://127.0.0.1:9\n")
    assert cli.main(["--config-file", str(conf), "delete-volume", "v"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cinder-rbd-clone: error:")


def test_purge_takes_only_the_glance_pools_of_this_cluster():
    ours, other = "0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1", "11111111-6c43-4c1a-9d3e-3f0e7ad7c5a1"
    detail = {"stores": [
        {"id": "a", "type": "rbd", "properties": {"pool": "images", "fsid": ours}},
        {"id": "b", "type": "rbd", "properties": {"pool": "far", "fsid": other}},
        {"id": "c", "type": "rbd", "properties": {"pool": "unknown", "fsid": None}},
        {"id": "d", "type": "rbd", "properties": {"pool": "nofsid"}},
        {"id": "e", "type": "file", "properties": {"pool": "images2", "fsid": ours}},
        {"id": "f", "type": "rbd", "properties": {"pool": "images", "fsid": ours}}]}
    assert purge_mod.image_pools(detail, ours) == ["images"]
    assert purge_mod.image_pools(detail, None) == []
    assert purge_mod.image_pools({"stores": "junk"}, ours) == []


def test_purge_cli_has_a_dry_run():
    p = cli._parser()
    assert p.parse_args(["--config-file", "c", "purge", "--dry-run"]).dry_run
    a = p.parse_args(["--config-file", "c", "purge", "--image-pool", "a", "--image-pool", "b"])
    assert (a.dry_run, a.image_pool) == (False, ["a", "b"])


@pytest.mark.parametrize("source,ours", [("USER", True), (0, True), ("MIRRORING", False),
                                         ("MIGRATION", False), ("REMOVING", False),
                                         ("USER_PARENT", False), (1, False), (None, False)])
def test_purge_touches_only_trash_entries_of_a_users_delete(source, ours):
    assert purge_mod.is_user_trash({"source": source}) is ours


class _Glance:
    """get_image / image_tasks_strict as cinder_ext.glance.Glance answers them."""

    def __init__(self, image=None, tasks=(), tasks_fail=False):
        self.image, self.tasks, self.tasks_fail = image, list(tasks), tasks_fail

    def get_image(self, image_id):
        if self.image is None:
            raise exc.GlanceNotFound("get image: Glance answered 404", status=404)
        if self.image == "error":
            raise exc.GlanceError("get image: Glance answered 503", status=503)
        return self.image

    def image_tasks_strict(self, image_id):
        if self.tasks_fail:
            raise exc.GlanceError("list tasks: Glance answered 500", status=500)
        return self.tasks


@pytest.mark.parametrize("glance,orphan", [
    (_Glance(None), True),
    (_Glance({"status": "deleted"}), True),
    (_Glance({"status": "queued"}), True),
    (_Glance({"status": "killed"}), True),
    (_Glance("error"), False),                                        # unknown is unsafe
    (_Glance({"status": "active"}), False),
    (_Glance({"status": "importing"}), False),
    (_Glance({"status": "saving"}), False),
    (_Glance({"status": "queued", "os_glance_import_task": "t1"}), False),
    (_Glance({"status": "queued", "locations": [{"url": "rbd://f/images/i/snap"}]}), False),
    (_Glance({"status": "queued"}, tasks_fail=True), False),          # a failed listing
    (_Glance({"status": "queued"}, [{"type": "location_import", "status": "processing"}]), False),
    (_Glance({"status": "queued"}, [{"type": "location_import", "status": "failure"}]), True),
])
def test_an_orphan_is_only_what_glance_will_never_reference(glance, orphan):
    assert glance_mod.location_state(glance, "0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1").orphaned is orphan


@pytest.mark.parametrize("source,name", [(0, "USER"), (1, "MIRRORING"), (2, "MIGRATION"),
                                         (4, "USER_PARENT")])
def test_trash_entries_are_read_as_librbd_writes_them(source, name):
    """Pacific's binding cannot name migration/user_parent sources (IndexError): the
    fallback decodes librbd's rbd_trash value (bytes as a real cluster stored them)."""
    from cinder_ext import ceph
    value = bytearray(b"\x02\x01\x1a\x00\x00\x00\x00\x04\x00\x00\x00img1\x92\x91\tkU\x9d\x0f\x1a"
                      b"\x92\x91\tkU\x9d\x0f\x1a\x00")
    value[6] = source
    entry = ceph._decode_trash_spec("103217104b0d", bytes(value))
    assert (entry["id"], entry["name"], entry["source"]) == ("103217104b0d", "img1", name)
    assert entry["deletion_time"] == datetime.datetime(2026, 11, 27, 14, 20, 2)
    assert purge_mod.is_user_trash(entry) is (name == "USER")
    assert ceph._decode_trash_spec("x", b"\x02\x01") is None


@pytest.mark.parametrize("glance,sees_all,state", [
    (_Glance(None), True, glance_mod.GONE),
    (_Glance(None), False, glance_mod.UNKNOWN),         # a 404 to one who cannot see all
    (_Glance({"status": "deleted"}), False, glance_mod.GONE),  # Glance said so, whoever asks
    (_Glance({"status": "queued"}), False, glance_mod.IDLE),
])
def test_a_404_is_gone_only_to_an_identity_that_sees_every_image(glance, sees_all, state):
    run = purge_mod._Purge(None, "volumes", ["images"], False, False, glance, False, None,
                           glance_sees_all=sees_all)
    got = run.location_state("0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1")
    assert got.state == state and got.orphaned is (state in (glance_mod.GONE, glance_mod.IDLE))


def test_before_the_registration_step_a_queued_image_is_idle_without_its_tasks():
    glance = _Glance({"status": "queued"}, [{"type": "location_import", "status": "processing"}])
    assert glance_mod.location_state(glance, "i", tasks=False).state == glance_mod.IDLE
    assert glance_mod.location_state(glance, "i").state == glance_mod.REGISTERING
