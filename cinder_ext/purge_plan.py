"""The purge's decisions: pure functions from what a run read (its inventory) to actions
with reasons. No I/O here: cinder_ext.purge reads, asks these, and acts under the locks.

An inventory field left None (``UNREAD`` for a mark) was not read yet: a decision that
needs it returns ``Action(READ, field=...)``; the executor reads that field and asks
again. A run so reads only what its decisions need, in the order they need it.
"""

import dataclasses
import datetime

from cinder_ext import glance as glance_mod  # its state names and LocationState: data only
from cinder_ext import journal
from cinder_ext.ceph import TRASH_NAMESPACE
from cinder_ext.delete import where
from cinder_ext.footprint import CLONE_SNAP_SUFFIX, DELETED_SUFFIX, is_image_name, is_upload_snap, \
    upload_snap_name

TRASH_SOURCE_USER = "USER"  # the binding reports names; older ones the enum value 0

# what an action says to do
READ = "read"          # read inventory field `field`, then ask again
IGNORE = "ignore"      # not ours to judge: nothing done, nothing reported
KEEP = "keep"          # it stays (reported under "kept" with the reason)
REMOVE = "remove"
COMPLETE = "complete"  # close the record: its image is active with our location
LEAVE = "leave"        # nothing to do: its image holds our location, not active yet
FINISH = "finish"      # register its location; where that cannot be done, REMOVE
FORGET = "forget"      # a completed record whose clone is gone: its leftovers, the record
FORGET_SOURCE = "forget_source"  # a SourceRecord whose image Glance removed

# trash kinds
VOLUME, IMAGE = "volume", "image"

# the upload lock of an open record
HELD = "held"            # taken (or not needed: a dry run takes none)
IN_FLIGHT = "in_flight"  # an upload holds it
LOCK_UNKNOWN = "unknown"  # could not be taken (a Ceph error): an upload may run


class _Unread:
    def __repr__(self):
        return "UNREAD"


UNREAD = _Unread()  # a field whose None means something (a mark's absence)


@dataclasses.dataclass(frozen=True)
class Action:
    kind: str
    reason: str = ""
    field: str = ""              # READ: the inventory field to read
    tasks: bool = True           # READ glance: whether its location tasks count
    what: str = ""               # FORGET, FORGET_SOURCE: the image id
    drop_unneeded_snaps: bool = False  # KEEP of a volume trash entry: its unneeded upload snapshots go


@dataclasses.dataclass(frozen=True)
class UploadLock:
    state: str
    pool: str = ""
    error: str = ""


@dataclasses.dataclass(frozen=True)
class OpenUpload:
    """An open journal record, and what the run learnt of it."""
    record: journal.UploadRecord
    lock: UploadLock = None
    glance: glance_mod.LocationState = None  # after trusted()
    url: str = None                          # our location for its clone


@dataclasses.dataclass(frozen=True)
class TrashEntry:
    """A user's trash entry in the volume pool (VOLUME) or a Glance pool (IMAGE)."""
    kind: str
    pool: str
    name: str
    source: object = TRASH_SOURCE_USER
    deferment_end: datetime.datetime = None
    mark: object = UNREAD        # VOLUME: footprint.TRASH_MARK's value (None: unmarked)
    record: journal.UploadRecord = None   # IMAGE: the journal's record of that name
    source_record: journal.SourceRecord = None
    claimed: bool = None         # IMAGE: footprint.glance_trashed_for_our_volumes
    glance: glance_mod.LocationState = None
    children: list = None        # its clones (Cluster.children)
    snapshots: list = None       # its snapshots (Cluster.snaps)


@dataclasses.dataclass(frozen=True)
class DeletedVolume:
    """An image of the volume pool (a candidate: upstream Cinder's <volume>.deleted)."""
    name: str
    children: list = None
    snapshots: list = None


def is_user_trash(source):
    """True for the source of a trash entry a user's delete made (rbd trash mv,
    glance_store, Cinder): never rbd-mirror's, a live migration's or librbd's own."""
    return source in (TRASH_SOURCE_USER, 0)


def expired(deferment_end, now):
    if deferment_end is None:
        return True
    if deferment_end.tzinfo is not None:
        deferment_end = deferment_end.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return deferment_end <= now


def trusted(state, sees_all):
    """Glance's word as the purge may read it: a bare 404 is gone only to an identity
    that sees every image; to another a member's private image is a 404 too: unknown."""
    if state.state == glance_mod.GONE and state.image is None and not sees_all:
        return glance_mod.LocationState(
            glance_mod.UNKNOWN, "Glance answers 404 to an identity that does not see every "
            "image: kept")
    return state


# -- open journal records -----------------------------------------------------------------
def open_upload(u, image_pools, finish=False):
    """An open record: kept while its upload may run (lock first: an upload in flight
    costs no Glance request), then by what Glance says of its image."""
    r = u.record
    if not r.open or r.image_pool not in image_pools:
        return Action(IGNORE, "completed, or in a pool this purge does not purge")
    if u.lock is None:
        return Action(READ, field="lock")
    if u.lock.state == IN_FLIGHT:
        return Action(KEEP, u.lock.error)
    if u.lock.state != HELD:
        return Action(KEEP, f"its upload lock in {u.lock.pool} could not be taken ({u.lock.error})")
    if u.glance is None:
        # before the registration step no location task of ours can exist: the image
        # alone tells (one request); from it on, its tasks too
        return Action(READ, field="glance", tasks=r.step == journal.REGISTERING)
    if u.url is None:
        return Action(READ, field="url")
    s = u.glance
    if s.state in (glance_mod.ACTIVE, glance_mod.LOCATED) and s.holds(u.url):
        if s.state == glance_mod.ACTIVE:
            return Action(COMPLETE, "its Glance image is active with our location")
        return Action(LEAVE, "its Glance image holds our location")
    if not s.orphaned:
        return Action(KEEP, f"journaled upload: {s.why}")
    why = (f"clone of a failed upload (journaled, step {r.step}): {s.why}; with its upload "
           f"snapshot {r.volume_pool}/{r.volume}@{upload_snap_name(r.image_id)}")
    if finish and s.state == glance_mod.IDLE and r.step in (journal.IMAGE_SNAPSHOT,
                                                           journal.REGISTERING):
        return Action(FINISH, why)
    return Action(REMOVE, why)


def upload_clone(record, children=None):
    """The clone a record names: ours only once the record says the clone step began
    (before it, an image of that name is not ours); kept while volumes are cloned from it."""
    if record.step in (journal.BEGUN, journal.VOLUME_SNAPSHOT):
        return Action(IGNORE, f"step {record.step}: the clone step never began")
    if children is None:
        return Action(READ, field="children")
    if children:
        return Action(KEEP, "volumes were cloned from it")
    return Action(REMOVE, "the clone of the record")


def completed_to_look_up(pool, trashed, records, sources):
    """The image ids of pool whose existence decides completed_records: completed
    records and SourceRecords of that pool whose image is not in its trash."""
    done = [r.image_id for r in records if not r.open and r.image_pool == pool
            and r.image_id not in trashed]
    srcs = [r.image_id for r in sources if r.image_pool == pool and r.image_id not in trashed]
    return done, srcs


def completed_records(done, sources, live):
    """Completed records whose clone is gone (Glance deleted the image, or the purge
    removed its trash entry): FORGET; SourceRecords whose image is gone: FORGET_SOURCE."""
    return ([Action(FORGET, "its clone is gone", what=i) for i in sorted(set(done) - set(live))]
            + [Action(FORGET_SOURCE, "Glance removed it", what=i)
               for i in sorted(set(sources) - set(live))])


# -- trash entries and .deleted volumes ---------------------------------------------------
def _ours_to_drop(snap, kind):
    """A snapshot that goes with its image: trash-namespace ones; on a volume also our
    upload snapshots and upstream's clone snapshots (no snapshot here has clones)."""
    return snap["namespace"] == TRASH_NAMESPACE or kind == VOLUME and (
        is_upload_snap(snap["original"]) or snap["original"].endswith(CLONE_SNAP_SUFFIX))


def _nothing_depends(kind, children, snapshots, reason, drop=False):
    """The tail every leftover shares: no clone, no snapshot not ours, then REMOVE."""
    if children is None:
        return Action(READ, field="children")
    if children:
        return Action(KEEP, "clones depend on it: " + ", ".join(map(where, children)),
                      drop_unneeded_snaps=drop)
    if snapshots is None:
        return Action(READ, field="snapshots")
    others = [s["original"] for s in snapshots if not _ours_to_drop(s, kind)]
    if others:  # kept for the admin
        return Action(KEEP, "it has snapshots that are not ours: " + ", ".join(others),
                      drop_unneeded_snaps=drop)
    return Action(REMOVE, reason)


def image_owner(e):
    """Why an image-pool trash entry is a Glance image we may reclaim, "" if not ours, or
    None until `claimed` is read: an upload of ours (its journal record), an image only
    volumes of our pool were cloned from (a SourceRecord, or claimed now). Never a
    metadata mark: librbd copies those into every clone."""
    if e.record is not None and e.record.image_pool == e.pool:
        return "an upload of ours (journaled)"
    if e.source_record is not None and e.source_record.image_pool == e.pool:
        return f"journaled: {e.source_record.why}"
    if e.claimed is None:
        return None
    return "glance_store trashed it; volumes of our pool were cloned from it" if e.claimed else ""


def trash_entry(e, now, include_unmarked=False, ask_glance=False):
    """One trash entry. VOLUME: ours by TRASH_MARK (or, with include_unmarked, Cinder's
    deferred deletion). IMAGE: a Glance image's (UUID name) that image_owner() calls
    ours, which Glance (asked only by an identity that sees every image) will never use."""
    if not is_user_trash(e.source):
        return Action(IGNORE, "not a user's delete (rbd-mirror's, a migration's, librbd's)")
    if e.kind == IMAGE:
        if not is_image_name(e.name):
            return Action(IGNORE, "not a Glance image's name")
        owner = image_owner(e)
        if owner is None:
            return Action(READ, field="claimed")
        if not owner:
            return Action(IGNORE, "not ours: Nova's, another tool's, or merely a UUID name")
        # glance_store trashes an image only when Glance deletes it: Glance's word counts
        # only where a 404 means something; to another identity it would keep it for ever
        if ask_glance:
            if e.glance is None:
                return Action(READ, field="glance")
            if not e.glance.orphaned:
                return Action(KEEP, f"Glance may still use it: {e.glance.why}")
        reason = f"Glance deleted it ({owner}) and no clone needs it"
    else:
        if e.mark is UNREAD:
            return Action(READ, field="mark")
        if e.mark is None and not include_unmarked:
            return Action(IGNORE, "unmarked: Cinder's deferred deletion (include_unmarked off)")
        reason = "trashed by delete-volume; no clone depends on it any more" if e.mark else \
            "Cinder's deferred deletion; nothing depends on it"
    if not expired(e.deferment_end, now):
        return Action(KEEP, f"deferred until {e.deferment_end.isoformat()}Z")
    return _nothing_depends(e.kind, e.children, e.snapshots, reason, drop=e.kind == VOLUME)


def deleted_volume(d):
    """Upstream Cinder's <volume>.deleted: ours to finish once nothing depends on it."""
    if not (d.name.endswith(DELETED_SUFFIX) and d.name.startswith("volume-")):
        return Action(IGNORE, "not upstream Cinder's <volume>.deleted")
    return _nothing_depends(VOLUME, d.children, d.snapshots,
                            "Cinder deleted it (.deleted) and nothing depends on it any more")


def trashed_upload_snap(snap):
    """An upload snapshot in the trash namespace: Glance deleted its clone, and Glance's
    user (it only reads the volume pool) could not drop it."""
    return snap["namespace"] == TRASH_NAMESPACE and is_upload_snap(snap["original"])


def unneeded_upload_snaps(snaps, children):
    """Of a kept volume trash entry's unprotected snapshots, the trash-namespace upload
    snapshots no clone reads (nothing clones a trashed volume: none can appear)."""
    needed = {d["snap_id"] for d in children}
    return [s for s in snaps if trashed_upload_snap(s) and s["id"] not in needed]
