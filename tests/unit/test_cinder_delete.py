"""cinder_ext.delete and cinder_ext.create without a cluster: names, deferment, the
flatten concurrency bound, the CLI surface. The behaviour on Ceph is in
tests/functional/test_delete_volume.py and test_create_volume.py."""

import datetime
import threading
import time

import pytest

from cinder_ext import cli, delete, faults
from cinder_ext import exceptions as exc


def test_upload_snapshots_are_recognised_by_name():
    assert delete.is_upload_snap("image-0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1")
    assert not delete.is_upload_snap("image-not-a-uuid")
    assert not delete.is_upload_snap("volume-0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1.clone_snap")
    assert not delete.is_upload_snap(None)


def test_deferment_compares_in_utc_whatever_the_binding_returns():
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    past, future = now - datetime.timedelta(seconds=1), now + datetime.timedelta(hours=1)
    assert delete._expired({"deferment_end_time": past}, now)
    assert not delete._expired({"deferment_end_time": future}, now)
    aware = future.replace(tzinfo=datetime.timezone.utc)
    assert not delete._expired({"deferment_end_time": aware}, now)
    assert delete._expired({}, now)


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
    points = faults.DELETE_POINTS + faults.CREATE_POINTS + faults.PURGE_POINTS
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
