"""The purge's decisions (cinder_ext.purge_plan), table by table, without Ceph or Glance:
each row an inventory and the action (and a word of its reason) it must give."""

import dataclasses
import datetime

import pytest

from cinder_ext import glance as glance_mod
from cinder_ext import journal
from cinder_ext import purge_plan as plan
from cinder_ext.ceph import TRASH_NAMESPACE, USER_NAMESPACE

IMG = "0b3cf9a4-6c43-4c1a-9d3e-3f0e7ad7c5a1"
URL = f"rbd://fsid/images/{IMG}/snap"
NOW = datetime.datetime(2026, 1, 1, 12, 0, 0)
POOLS = ["images"]


def _record(step=journal.CLONED, state=journal.OPEN, pool="images"):
    return journal.UploadRecord(IMG, pool, "volumes", "volume-v", "1234abcd", state=state,
                                step=step)


def _image(status, urls=()):
    return {"id": IMG, "status": status, "locations": [{"url": u, "metadata": {}} for u in urls]}


GONE_404 = glance_mod.LocationState(glance_mod.GONE, "its Glance image is gone (404)")
DELETED = glance_mod.LocationState(glance_mod.GONE, "its Glance image is deleted",
                                   _image("deleted"))
IDLE = glance_mod.LocationState(glance_mod.IDLE, "its Glance image is queued", _image("queued"))
ACTIVE_OURS = glance_mod.LocationState(glance_mod.ACTIVE, "its Glance image is active",
                                       _image("active", [URL]))
ACTIVE_OTHER = glance_mod.LocationState(glance_mod.ACTIVE, "its Glance image is active",
                                        _image("active", ["rbd://fsid/images/other/snap"]))
LOCATED_OURS = glance_mod.LocationState(glance_mod.LOCATED, "it has a location",
                                        _image("importing", [URL]))
REGISTERING = glance_mod.LocationState(glance_mod.REGISTERING, "its Glance image is saving",
                                       _image("saving"))
UNKNOWN = glance_mod.LocationState(glance_mod.UNKNOWN, "Glance did not tell (503)")

HELD = plan.UploadLock(plan.HELD)
BUSY = plan.UploadLock(plan.IN_FLIGHT, "images", "an upload of image x is in progress")
LOCK_ERR = plan.UploadLock(plan.LOCK_UNKNOWN, "images", "rados timed out")


def _act(action):
    return action.kind, action.field if action.kind == plan.READ else action.reason


@pytest.mark.parametrize("inventory,finish,kind,word", [
    # nothing read yet: the lock first, never Glance first
    (plan.OpenUpload(_record()), False, plan.READ, "lock"),
    (plan.OpenUpload(_record(state=journal.COMPLETE)), False, plan.IGNORE, "completed"),
    (plan.OpenUpload(_record(pool="other")), False, plan.IGNORE, "pool"),
    # an upload in flight (its lock held), or a lock that could not be taken: kept
    (plan.OpenUpload(_record(), BUSY), False, plan.KEEP, "in progress"),
    (plan.OpenUpload(_record(), LOCK_ERR, IDLE, URL), True, plan.KEEP, "could not be taken"),
    # the lock held: Glance next, then our location's url
    (plan.OpenUpload(_record(), HELD), False, plan.READ, "glance"),
    (plan.OpenUpload(_record(), HELD, IDLE), False, plan.READ, "url"),
    # Glance holds our location: active completes the record, located leaves it be
    (plan.OpenUpload(_record(journal.REGISTERING), HELD, ACTIVE_OURS, URL), True,
     plan.COMPLETE, "active"),
    (plan.OpenUpload(_record(journal.REGISTERING), HELD, LOCATED_OURS, URL), True,
     plan.LEAVE, "holds our location"),
    # in flight or unknown: kept
    (plan.OpenUpload(_record(), HELD, REGISTERING, URL), False, plan.KEEP, "saving"),
    (plan.OpenUpload(_record(), HELD, UNKNOWN, URL), False, plan.KEEP, "did not tell"),
    (plan.OpenUpload(_record(), HELD, ACTIVE_OTHER, URL), False, plan.KEEP, "active"),
    (plan.OpenUpload(_record(), HELD, plan.trusted(GONE_404, False), URL), False,
     plan.KEEP, "does not see every image"),
    # Glance will never reference it: removed (or finished, when its clone was complete)
    (plan.OpenUpload(_record(), HELD, plan.trusted(GONE_404, True), URL), False,
     plan.REMOVE, "gone (404)"),
    (plan.OpenUpload(_record(), HELD, DELETED, URL), True, plan.REMOVE, "deleted"),
    (plan.OpenUpload(_record(), HELD, IDLE, URL), True, plan.REMOVE, "step cloned"),
    (plan.OpenUpload(_record(journal.IMAGE_SNAPSHOT), HELD, IDLE, URL), True,
     plan.FINISH, "volumes/volume-v@image-" + IMG),
    (plan.OpenUpload(_record(journal.REGISTERING), HELD, IDLE, URL), True, plan.FINISH, "queued"),
    (plan.OpenUpload(_record(journal.IMAGE_SNAPSHOT), HELD, IDLE, URL), False,
     plan.REMOVE, "failed upload"),
    (plan.OpenUpload(_record(journal.IMAGE_SNAPSHOT), HELD, DELETED, URL), True,
     plan.REMOVE, "deleted"),
])
def test_an_open_record(inventory, finish, kind, word):
    got = plan.open_upload(inventory, POOLS, finish)
    assert got.kind == kind, got
    assert word in _act(got)[1]


@pytest.mark.parametrize("step,tasks", [
    (journal.CLONED, False), (journal.IMAGE_SNAPSHOT, False), (journal.REGISTERING, True)])
def test_glance_is_asked_for_tasks_only_once_the_registration_began(step, tasks):
    assert plan.open_upload(plan.OpenUpload(_record(step), HELD), POOLS).tasks is tasks


@pytest.mark.parametrize("state,sees_all,expected", [
    (GONE_404, True, glance_mod.GONE),
    (GONE_404, False, glance_mod.UNKNOWN),       # a 404 to one who cannot see every image
    (DELETED, False, glance_mod.GONE),           # Glance said so, whoever asks
    (IDLE, False, glance_mod.IDLE),
])
def test_a_404_is_gone_only_to_an_identity_that_sees_every_image(state, sees_all, expected):
    assert plan.trusted(state, sees_all).state == expected


@pytest.mark.parametrize("step,children,kind,word", [
    (journal.BEGUN, None, plan.IGNORE, "never began"),
    (journal.VOLUME_SNAPSHOT, None, plan.IGNORE, "never began"),
    (journal.VOLUME_SNAPSHOT, [], plan.IGNORE, "never began"),
    (journal.CLONED, None, plan.READ, "children"),
    (journal.ROLLBACK_INCOMPLETE, None, plan.READ, "children"),
    (journal.IMAGE_SNAPSHOT, [{"pool": "volumes", "image": "volume-c"}], plan.KEEP,
     "cloned from it"),
    (journal.REGISTERING, [], plan.REMOVE, "clone"),
])
def test_a_clone_is_removed_only_once_the_clone_step_began(step, children, kind, word):
    got = plan.upload_clone(_record(step), children)
    assert (got.kind, word in _act(got)[1]) == (kind, True), got


def _snap(name, namespace=USER_NAMESPACE, sid=1):
    return {"id": sid, "name": name, "original": name, "namespace": namespace}


UPLOAD_SNAP = "image-" + IMG
CHILD = {"pool": "volumes", "image": "volume-c", "snap_id": 7}
LATER = NOW + datetime.timedelta(hours=1)


def _vol(**kw):
    return plan.TrashEntry(plan.VOLUME, "volumes", "volume-v", **kw)


def _img(**kw):
    return plan.TrashEntry(plan.IMAGE, "images", IMG, **kw)


OURS = _record(state=journal.COMPLETE)
SOURCE = journal.SourceRecord(IMG, "images", why="create-volume cloned it")


@pytest.mark.parametrize("entry,kw,kind,word", [
    # volume pool: a user's delete only, ours by our mark (or include_unmarked)
    (_vol(source="MIRRORING"), {}, plan.IGNORE, "user"),
    (_vol(source=2), {}, plan.IGNORE, "user"),
    (_vol(), {}, plan.READ, "mark"),
    (_vol(source=0), {}, plan.READ, "mark"),
    (_vol(mark=None), {}, plan.IGNORE, "unmarked"),
    (_vol(mark=None), {"include_unmarked": True}, plan.READ, "children"),
    (_vol(mark="1"), {}, plan.READ, "children"),
    (_vol(mark="1", deferment_end=LATER), {}, plan.KEEP, "deferred until"),
    (_vol(mark="1", deferment_end=LATER.replace(tzinfo=datetime.timezone.utc)), {}, plan.KEEP,
     "deferred"),
    (_vol(mark="1", deferment_end=NOW), {}, plan.READ, "children"),
    (_vol(mark="1", children=[CHILD]), {}, plan.KEEP, "clones depend on it: volumes/volume-c"),
    (_vol(mark="1", children=[]), {}, plan.READ, "snapshots"),
    (_vol(mark="1", children=[], snapshots=[_snap("backup")]), {}, plan.KEEP, "not ours: backup"),
    (_vol(mark="1", children=[], snapshots=[
        _snap(UPLOAD_SNAP), _snap("x", TRASH_NAMESPACE), _snap("volume-c.clone_snap")]), {},
     plan.REMOVE, "trashed by delete-volume"),
    (_vol(mark=None, children=[], snapshots=[]), {"include_unmarked": True}, plan.REMOVE,
     "deferred deletion"),
    # image pools: a Glance image's name, ours by a journal record or claimed
    (_img(source="MIGRATION", record=OURS), {}, plan.IGNORE, "user"),
    (plan.TrashEntry(plan.IMAGE, "images", "nova-disk", record=OURS), {}, plan.IGNORE, "name"),
    (_img(), {}, plan.READ, "claimed"),
    (_img(record=_record(pool="other")), {}, plan.READ, "claimed"),
    (_img(claimed=False), {}, plan.IGNORE, "not ours"),
    (_img(record=OURS), {}, plan.READ, "children"),
    (_img(record=OURS), {"ask_glance": True}, plan.READ, "glance"),
    (_img(record=OURS, glance=ACTIVE_OTHER), {"ask_glance": True}, plan.KEEP, "may still use it"),
    (_img(record=OURS, glance=UNKNOWN), {"ask_glance": True}, plan.KEEP, "did not tell"),
    (_img(record=OURS, glance=GONE_404), {"ask_glance": True}, plan.READ, "children"),
    (_img(record=OURS, children=[CHILD]), {}, plan.KEEP, "clones depend on it"),
    # an image's own snapshots go with it only from the trash namespace
    (_img(record=OURS, children=[], snapshots=[_snap(UPLOAD_SNAP)]), {}, plan.KEEP, "not ours"),
    (_img(record=OURS, children=[], snapshots=[_snap("snap", TRASH_NAMESPACE)]), {},
     plan.REMOVE, "Glance deleted it (an upload of ours (journaled))"),
    (_img(source_record=SOURCE, children=[], snapshots=[]), {}, plan.REMOVE,
     "journaled: create-volume cloned it"),
    (_img(claimed=True, children=[], snapshots=[]), {}, plan.REMOVE, "glance_store trashed it"),
    (_img(record=OURS, deferment_end=LATER), {}, plan.KEEP, "deferred"),
])
def test_a_trash_entry(entry, kw, kind, word):
    got = plan.trash_entry(entry, NOW, **kw)
    assert got.kind == kind, got
    assert word in _act(got)[1], got


@pytest.mark.parametrize("entry,drop", [
    (_vol(mark="1", children=[CHILD]), True),
    (_vol(mark="1", children=[], snapshots=[_snap("backup")]), True),
    (_vol(mark="1", deferment_end=LATER), False),
    (_img(record=OURS, children=[CHILD]), False),
])
def test_a_kept_volume_drops_the_upload_snapshots_no_clone_needs(entry, drop):
    assert plan.trash_entry(entry, NOW).drop_unneeded_snaps is drop


@pytest.mark.parametrize("snaps,children,expected", [
    ([_snap(UPLOAD_SNAP, TRASH_NAMESPACE, 7)], [CHILD], []),         # a clone reads it
    ([_snap(UPLOAD_SNAP, TRASH_NAMESPACE, 8)], [CHILD], [8]),
    ([_snap(UPLOAD_SNAP, USER_NAMESPACE, 8)], [], []),               # the journal's to judge
    ([_snap("backup", TRASH_NAMESPACE, 9)], [], []),                 # not an upload snapshot
])
def test_unneeded_upload_snapshots(snaps, children, expected):
    assert [s["id"] for s in plan.unneeded_upload_snaps(snaps, children)] == expected


@pytest.mark.parametrize("inventory,kind,word", [
    (plan.DeletedVolume("volume-v"), plan.IGNORE, "deleted"),
    (plan.DeletedVolume("other.deleted"), plan.IGNORE, "deleted"),
    (plan.DeletedVolume("volume-v.deleted"), plan.READ, "children"),
    (plan.DeletedVolume("volume-v.deleted", [CHILD]), plan.KEEP, "clones depend on it"),
    (plan.DeletedVolume("volume-v.deleted", [], [_snap("backup")]), plan.KEEP, "not ours"),
    (plan.DeletedVolume("volume-v.deleted", [], [_snap(UPLOAD_SNAP), _snap("v.clone_snap")]),
     plan.REMOVE, "Cinder deleted it"),
])
def test_a_deleted_volume(inventory, kind, word):
    got = plan.deleted_volume(inventory)
    assert (got.kind, word in _act(got)[1]) == (kind, True), got


def _done(image_id, pool="images", state=journal.COMPLETE):
    return dataclasses.replace(_record(state=state, pool=pool), image_id=image_id)


@pytest.mark.parametrize("records,sources,trashed,live,expected", [
    # a completed record whose clone is gone: forgotten; one whose clone lives: kept
    ([_done("a"), _done("b")], [], set(), {"b"}, [(plan.FORGET, "a")]),
    # an open record is the journaled uploads' to judge; another pool's is not looked up
    ([_done("a", state=journal.OPEN), _done("c", pool="other")], [], set(), set(), []),
    # one in the trash is image_trash's to judge
    ([_done("a")], [], {"a"}, set(), []),
    # a SourceRecord whose image Glance removed: forgotten
    ([], [journal.SourceRecord("s", "images"), journal.SourceRecord("t", "images")], set(),
     {"t"}, [(plan.FORGET_SOURCE, "s")]),
])
def test_completed_records(records, sources, trashed, live, expected):
    done, srcs = plan.completed_to_look_up("images", trashed, records, sources)
    got = plan.completed_records(done, srcs, live)
    assert [(a.kind, a.what) for a in got] == expected
    assert all("gone" in a.reason or "removed" in a.reason for a in got)


@pytest.mark.parametrize("source,user", [("USER", True), (0, True), ("MIRRORING", False),
                                         (1, False), (None, False)])
def test_only_a_users_delete_is_ours_to_judge(source, user):
    assert plan.is_user_trash(source) is user


@pytest.mark.parametrize("lock,finish,reads,kind", [
    (BUSY, True, ["lock"], plan.KEEP),                        # no Glance request at all
    (LOCK_ERR, True, ["lock"], plan.KEEP),
    (HELD, True, ["lock", "glance", "url"], plan.FINISH),     # one look at Glance, after the lock
])
def test_the_executor_reads_in_the_order_the_plan_asks(lock, finish, reads, kind):
    from cinder_ext import purge
    seen = []

    def reader(field, value):
        return lambda action: seen.append(field) or value
    readers = {"lock": reader("lock", lock), "glance": reader("glance", IDLE),
               "url": reader("url", URL)}
    action, _ = purge._decide(lambda u: plan.open_upload(u, POOLS, finish),
                              plan.OpenUpload(_record(journal.IMAGE_SNAPSHOT)), readers)
    assert (seen, action.kind) == (reads, kind)
