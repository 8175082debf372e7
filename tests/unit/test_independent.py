"""The independent upload (issue 18, part 2): its option, its mark, its steps, in order,
and purge's rule for a flattened image; fakes record the Ceph calls (the real cluster is
tests/functional/test_upload_independent.py's)."""

import dataclasses

import pytest
from oslo_config import cfg

from cinder_ext import clone, footprint, independent, journal, opts
from cinder_ext import exceptions as exc
from cinder_ext.ceph import TRASH_NAMESPACE, USER_NAMESPACE
from cinder_ext.decision import Clone

TARGET = Clone(store_id="ceph", pool="images", fsid="f", chunk_size=8 << 20)
IMAGE = "0f0e0d0c-0b0a-4908-8706-050403020100"


def test_option_is_cinder_style_off_by_default_and_says_when_it_applies():
    opt = next(o for o in opts.CLONE_OPTS if o.dest == "rbd_flatten_volume_to_image")
    assert isinstance(opt, cfg.BoolOpt) and opt.default is False
    assert opt.help.startswith("Flatten images uploaded from volumes to remove dependency")
    for word in ("enable_clone_optimization", "rbd_max_clone_depth", "rbd_concurrent_management_ops"):
        assert word in opt.help
    names = {o.dest for o in dict(opts.list_opts())["backend_defaults"]}
    assert "rbd_flatten_volume_to_image" in names


def test_backend_section_reads_the_option(tmp_path):
    path = tmp_path / "cinder.conf"
    path.write_text("[DEFAULT]\nenabled_backends = ceph\n[ceph]\nrbd_flatten_volume_to_image = true\n")
    _, backend = opts.load([str(path)])
    assert backend.rbd_flatten_volume_to_image is True


@pytest.mark.parametrize("value, parsed", [
    ("volumes/volume-1#10f2a3", ("volumes", "volume-1", "10f2a3")),
    ("volumes/volume-1", ("volumes", "volume-1", None)),   # written before ids were recorded
    ("volumes/", None), ("/volume-1", None), ("volume-1", None), (None, None), ("a/b/c", None),
])
def test_mark_round_trip(value, parsed):
    assert footprint.parse_independent_mark(value) == parsed
    if parsed and parsed[2]:
        assert footprint.independent_mark(*parsed) == value


class FakeCeph:
    """Records calls; images: {(pool, name): {'parent', 'meta', 'snaps'}}."""

    def __init__(self, images=None, fail=None):
        self.images = images or {}
        self.calls, self.fail = [], fail or {}
        self.omap = {}  # the volume pool's journal object

    def _rec(self, op, *args):
        self.calls.append((op, *args))
        if op in self.fail:
            raise self.fail[op]

    def exists(self, pool, name):
        return (pool, name) in self.images

    def omap_get(self, pool, obj, prefix="", after="", limit=None, namespace=""):
        assert (pool, obj, namespace) == ("volumes", journal.JOURNAL_OBJECT, journal.JOURNAL_NAMESPACE)
        return sorted((k, v) for k, v in self.omap.items() if k.startswith(prefix) and k > after)[:limit]

    def metadata_get(self, pool, key, name=None, image_id=None):
        if (pool, name) not in self.images:
            raise exc.CephNotFound("no such image")
        return self.images[(pool, name)].get("meta", {}).get(key)

    def metadata_set(self, pool, name, key, value):
        self._rec("metadata_set", pool, name, key, value)
        self.images[(pool, name)].setdefault("meta", {})[key] = value

    def info(self, pool, name, image_id=None):
        return {"parent": self.images.get((pool, name), {}).get("parent"), "id": "id-" + name}

    def parent_snap(self, pool, name=None, image_id=None):
        if (pool, name) not in self.images:
            raise exc.CephNotFound("no such image")
        return self.images[(pool, name)].get("parent")

    def flatten(self, pool, name=None, image_id=None):
        self._rec("flatten", pool, name)
        self.images[(pool, name)]["parent"] = None

    def snaps(self, pool, name, image_id=None):
        return list(self.images.get((pool, name), {}).get("snaps", []))

    def snap_has_children(self, pool, snap_id, name=None, image_id=None):
        return False

    def remove_snap(self, pool, name, snap, unprotect=True):
        self._rec("remove_snap", pool, name, snap)

    def remove_snap_by_id(self, pool, snap_id, name=None, image_id=None):
        self._rec("remove_snap_by_id", pool, name, snap_id)


def _tx(ceph, timer=None):
    return independent.IndependentUpload(ceph, None, "volumes", "volume-1", IMAGE, TARGET,
                                         active_timeout=1, timer=timer)


def _snap(name, namespace, sid=7):
    return {"name": name, "original": name, "namespace": namespace, "id": sid, "protected": False}


def test_marks_then_flattens_then_drops_the_volume_snapshot_in_that_order():
    vsnap = footprint.upload_snap_name(IMAGE)
    ceph = FakeCeph({("images", IMAGE): {"parent": {"pool": "volumes", "image": "volume-1"}},
                     ("volumes", "volume-1"): {"snaps": [_snap(vsnap, USER_NAMESPACE)]}})
    timer = clone.Timer()
    _tx(ceph, timer)._before_image_snapshot([])
    assert ceph.calls == [
        ("metadata_set", "images", IMAGE, footprint.INDEPENDENT_MARK, "volumes/volume-1#id-volume-1"),
        ("flatten", "images", IMAGE),
        ("remove_snap", "volumes", "volume-1", vsnap)]
    assert list(timer.steps) == ["flatten", "volume_snapshot_remove"]


def test_a_trashed_volume_snapshot_left_after_the_flatten_is_removed_by_id():
    vsnap = footprint.upload_snap_name(IMAGE)
    trashed = dict(_snap("abc", TRASH_NAMESPACE, sid=9), original=vsnap)
    ceph = FakeCeph({("images", IMAGE): {"parent": {}},
                     ("volumes", "volume-1"): {"snaps": [trashed, _snap("other", USER_NAMESPACE)]}})
    _tx(ceph)._before_image_snapshot([])
    assert ceph.calls[-1] == ("remove_snap_by_id", "volumes", "volume-1", 9)
    assert not any(c[0] == "remove_snap" for c in ceph.calls)  # not another snapshot


def test_a_flatten_failure_propagates_to_the_transactions_rollback():
    ceph = FakeCeph({("images", IMAGE): {"parent": {"pool": "volumes"}}},
                    fail={"flatten": exc.CephError("flatten images/x failed: EIO")})
    with pytest.raises(exc.CephError, match="flatten"):
        _tx(ceph)._before_image_snapshot([])


def test_a_flatten_another_client_finished_first_is_a_success():
    # a delete of the volume in flatten mode flattened our image meanwhile: no parent left
    ceph = FakeCeph({("images", IMAGE): {"parent": None}},
                    fail={"flatten": exc.CephError("flatten images/x failed: EINVAL")})
    _tx(ceph)._before_image_snapshot([])
    assert [c[0] for c in ceph.calls] == ["metadata_set", "flatten"]


def _journaled(ceph, **fields):
    record = journal.UploadRecord(IMAGE, "images", "volumes", "volume-1", "id-volume-1")
    record = dataclasses.replace(record, **fields)
    ceph.omap[record.key] = record.encode()
    return ceph


def _is_ours(ceph):
    tx = _tx(ceph)
    tx.earlier_open = tx._earlier_attempt_is_ours()
    return tx._clone_is_ours()


def test_an_image_is_an_earlier_attempts_only_by_an_open_journal_record():
    marked = {("images", IMAGE): {"meta": {footprint.INDEPENDENT_MARK: "volumes/volume-1#id-volume-1"}}}
    # our mark alone proves nothing: librbd copies it into Nova's clones and snapshots
    with pytest.raises(exc.CloneFailed) as e:
        _is_ours(FakeCeph(dict(marked)))
    assert e.value.reason == "target-exists"
    assert _is_ours(_journaled(FakeCeph(dict(marked)))) is True
    # a record of another volume (or of our volume's name, renamed: another RBD id)
    with pytest.raises(exc.CloneFailed):
        _is_ours(_journaled(FakeCeph(dict(marked)), volume_id="id-of-another"))
    # a completed upload is Glance's image now, never an earlier attempt's leftover
    with pytest.raises(exc.CloneFailed):
        _is_ours(_journaled(FakeCeph(dict(marked)), state=journal.COMPLETE))
    assert _is_ours(_journaled(FakeCeph())) is False  # nothing there: nothing to recover


def test_result_says_independent_and_keeps_the_clone_shape():
    tx = _tx(FakeCeph())
    base = clone.CloneUpload.result(tx, api="task")
    assert tx.result(api="task") == dict(base, independent=True)
    assert {"location", "location_api", "recovered"} <= set(base)


@pytest.mark.parametrize("meta, parent, expected", [
    ({footprint.INDEPENDENT_MARK: "volumes/volume-1#id-volume-1"}, None,
     footprint.Upload(footprint.INDEPENDENT, IMAGE, "volumes", "volume-1", "id-volume-1", False)),
    ({footprint.INDEPENDENT_MARK: "other-pool/volume-1"}, None, None),
    ({footprint.INDEPENDENT_MARK: "garbage"}, None, None),
    ({}, None, None),
    ({footprint.INDEPENDENT_MARK: "volumes/volume-1"}, {"pool": "x", "image": "y", "original": "s"},
     None),
], ids=["ours", "another-pool", "bad-mark", "unmarked", "has-another-parent"])
def test_the_footprint_knows_a_flattened_upload_by_its_mark(meta, parent, expected):
    ceph = FakeCeph({("images", IMAGE): {"meta": meta, "parent": parent}})
    assert footprint.upload_of(ceph, "volumes", "images", IMAGE) == expected
