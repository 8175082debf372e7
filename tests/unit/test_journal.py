"""The intent journal's records (cinder_ext.journal): what is written, and what a
record that cannot be trusted becomes (nothing)."""

import json

from cinder_ext import journal

IMAGE = "5d2f1c0e-1b7a-4c8e-9f00-0123456789ab"


class OmapCeph:
    """One omap object, as the journal uses it (namespace and object checked)."""

    instance_id = 4242

    def __init__(self):
        self.omap = {}

    def _check(self, pool, obj, namespace):
        assert (pool, obj, namespace) == ("volumes", journal.JOURNAL_OBJECT, journal.JOURNAL_NAMESPACE)

    def omap_set(self, pool, obj, values, namespace=""):
        self._check(pool, obj, namespace)
        self.omap.update(values)

    def omap_remove(self, pool, obj, keys, namespace=""):
        self._check(pool, obj, namespace)
        for k in keys:
            self.omap.pop(k, None)

    def omap_get(self, pool, obj, prefix="", after="", limit=None, namespace=""):
        self._check(pool, obj, namespace)
        return sorted((k, v) for k, v in self.omap.items() if k.startswith(prefix) and k > after)[:limit]


def _record(**kw):
    return journal.UploadRecord(IMAGE, "images", "volumes", "volume-1", "abc123", **kw)


def test_a_record_lives_open_then_steps_then_completes_then_is_forgotten():
    ceph = OmapCeph()
    j = journal.Journal(ceph, "volumes")
    r = j.open(_record(step=journal.VOLUME_SNAPSHOT))
    assert list(ceph.omap) == ["upload." + IMAGE]
    assert r.open and r.holder == "client.4242" and r.time.endswith("Z")
    assert j.get(IMAGE) == r
    r = j.step(r, journal.CLONED)
    assert j.get(IMAGE).step == journal.CLONED and j.get(IMAGE).open
    j.complete(r)
    assert j.get(IMAGE).state == journal.COMPLETE and not j.get(IMAGE).open
    assert [x.image_id for x in j.records()] == [IMAGE]
    j.forget(IMAGE)
    assert j.get(IMAGE) is None and j.records() == []


def test_get_finds_only_its_own_key_not_a_longer_one_with_the_same_prefix():
    ceph = OmapCeph()
    j = journal.Journal(ceph, "volumes")
    longer = journal.UploadRecord(IMAGE + "x", "images", "volumes", "v", "id")
    ceph.omap[longer.key] = longer.encode()
    assert j.get(IMAGE) is None


def test_a_record_that_cannot_be_read_or_names_another_image_proves_nothing():
    ceph = OmapCeph()
    ceph.omap["upload." + IMAGE] = b"not json"
    ceph.omap["upload.other"] = _record().encode()  # its key names another image
    ceph.omap["upload.missing-fields"] = json.dumps({"image_id": "missing-fields"}).encode()
    good = journal.UploadRecord("0" * 8 + IMAGE[8:], "images", "volumes", "volume-1", "abc123")
    ceph.omap[good.key] = good.encode()
    assert journal.Journal(ceph, "volumes").records() == [good]


def test_unknown_fields_from_a_newer_release_are_ignored_not_fatal():
    fields = json.loads(_record().encode())
    fields["written_by_a_newer_release"] = 1
    assert journal.UploadRecord.decode("upload." + IMAGE, json.dumps(fields)) == _record()
