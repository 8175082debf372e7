"""The intent journal: what an upload is about to create on Ceph, written down first.

As ceph-csi journals what it provisions, every upload (clone or independent) writes a
record before it creates anything, updates it at each step and closes it at commit. The
record, and nothing a clone inherits (names, image metadata), is what makes an object
ours: the purge (cinder_ext.purge) and a retry's recovery (cinder_ext.clone) read it,
never the pools.

Where: one RADOS object, ``JOURNAL_OBJECT``, in the volume pool's namespace
``JOURNAL_NAMESPACE``; one omap key per upload, ``upload.<image id>``, whose value is the
record as JSON. A Glance image that volumes of the pool were cloned from has a
``source.<image id>`` record (SourceRecord): written by create-volume before it clones,
or by the purge and the delete of its last clone once Glance trashed it with only our
volumes depending on it; it lets the purge reclaim the image's trash entry. Writes of different keys are atomic per op and never conflict; a reader
gets every record of the pool in one omap read, whatever the pools hold.

A record's life:

* ``OPEN``: written before the volume snapshot; ``step`` says how far the upload got.
  Open with no live upload (its image-id lock free) means interrupted: the purge
  finishes or removes what it names, then forgets it.
* ``COMPLETE``: the image is active with our location. Kept while the clone exists, so
  that the purge knows the image Glance trashes for its volumes is an upload of ours;
  forgotten once the clone and its upload snapshot are gone.
* a rollback that removed everything forgets the record at once.
"""

import dataclasses
import datetime
import json
import logging

from cinder_ext import exceptions as exc

LOG = logging.getLogger(__name__)

JOURNAL_NAMESPACE = "cinder-rbd-clone.journal"
JOURNAL_OBJECT = "rbd_clone_journal"
UPLOAD_PREFIX = "upload."
SOURCE_PREFIX = "source."
CURSOR_PREFIX = "cursor."  # where a purge whose time budget ran out stopped, per phase

OPEN = "open"
COMPLETE = "complete"

# kinds of upload
CLONE = "clone"
INDEPENDENT = "independent"

# steps, in order: what exists once the step is recorded (each written before it runs)
BEGUN = "begun"                      # nothing yet; the volume snapshot is next
VOLUME_SNAPSHOT = "volume_snapshot"  # image-<id> on the volume (maybe)
CLONED = "cloned"                    # <image pool>/<image id> (maybe half made)
IMAGE_SNAPSHOT = "image_snapshot"    # its `snap` (maybe)
REGISTERING = "registering"          # the location request is sent (maybe)
ROLLBACK_INCOMPLETE = "rollback_incomplete"


def _now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class UploadRecord:
    """One upload's intent: the clone <image_pool>/<image_id> of the volume snapshot
    <volume_pool>/<volume>@image-<image_id>, the volume known by its RBD image id too."""

    image_id: str
    image_pool: str
    volume_pool: str
    volume: str
    volume_id: str
    kind: str = CLONE
    state: str = OPEN
    step: str = BEGUN
    holder: str = ""        # client.<gid> of the service that wrote it (for people)
    time: str = ""          # when it was last written (UTC)

    @property
    def key(self):
        return UPLOAD_PREFIX + self.image_id

    @property
    def open(self):
        return self.state == OPEN

    def encode(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, key, value):
        return _decode(cls, key, value)


@dataclasses.dataclass(frozen=True)
class SourceRecord:
    """<image_pool>/<image_id>, a Glance image that volumes of our pool were cloned from:
    once Glance deletes it (its trash entry), it is ours to reclaim when no clone needs
    it. why: who recorded it, for people."""

    image_id: str
    image_pool: str
    why: str = ""
    time: str = ""

    @property
    def key(self):
        return SOURCE_PREFIX + self.image_id

    def encode(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True).encode()


def _decode(cls, key, value):
    """The record stored under key, or None (logged) if it cannot be read: a record we
    cannot read proves nothing, so nothing is done about it."""
    try:
        fields = json.loads(value)
        names = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in fields.items() if k in names})
    except (ValueError, TypeError) as e:
        LOG.warning("journal: record %s cannot be read (%s); ignored", key, e)
        return None
    if record.key != key:
        LOG.warning("journal: record %s names image %s; ignored", key, record.image_id)
        return None
    return record


class Journal:
    """The upload records of one volume pool, through a Ceph adapter."""

    def __init__(self, ceph, volume_pool):
        self.ceph, self.pool = ceph, volume_pool

    def _write(self, record):
        self.ceph.omap_set(self.pool, JOURNAL_OBJECT, {record.key: record.encode()},
                           namespace=JOURNAL_NAMESPACE)
        return record

    def open(self, record):
        """Write record (state OPEN) before its first step runs."""
        return self._write(dataclasses.replace(record, state=OPEN, time=_now(),
                                               holder=self._holder()))

    def step(self, record, step):
        """Record that `step` is about to run (what it creates may exist from now on)."""
        return self._write(dataclasses.replace(record, step=step, time=_now()))

    def complete(self, record):
        return self._write(dataclasses.replace(record, state=COMPLETE, time=_now()))

    def forget(self, record_or_image_id):
        image_id = getattr(record_or_image_id, "image_id", record_or_image_id)
        self.ceph.omap_remove(self.pool, JOURNAL_OBJECT, [UPLOAD_PREFIX + image_id],
                              namespace=JOURNAL_NAMESPACE)

    def get(self, image_id):
        """The record of an upload to image_id, or None."""
        for key, value in self.ceph.omap_get(self.pool, JOURNAL_OBJECT,
                                             prefix=UPLOAD_PREFIX + image_id, limit=1,
                                             namespace=JOURNAL_NAMESPACE):
            if key == UPLOAD_PREFIX + image_id:
                return UploadRecord.decode(key, value)
        return None

    def records(self, cls=UploadRecord):
        """Every readable record of the pool of a kind (UploadRecord, SourceRecord), in
        image id order."""
        prefix = UPLOAD_PREFIX if cls is UploadRecord else SOURCE_PREFIX
        out = []
        for key, value in self.ceph.omap_get(self.pool, JOURNAL_OBJECT, prefix=prefix,
                                             namespace=JOURNAL_NAMESPACE):
            record = _decode(cls, key, value)
            if record is not None:
                out.append(record)
        return out

    def claim_source(self, image_pool, image_id, why):
        """Record that volumes of our pool were cloned from Glance's image_pool/image_id."""
        return self._write(SourceRecord(image_id, image_pool, why, _now()))

    def forget_source(self, image_id):
        self.ceph.omap_remove(self.pool, JOURNAL_OBJECT, [SOURCE_PREFIX + image_id],
                              namespace=JOURNAL_NAMESPACE)

    def cursor(self, name):
        """The image id a purge phase stopped after when its time ran out, or ""."""
        key = CURSOR_PREFIX + name
        for k, value in self.ceph.omap_get(self.pool, JOURNAL_OBJECT, prefix=key, limit=1,
                                           namespace=JOURNAL_NAMESPACE):
            if k == key:
                return value.decode() if isinstance(value, bytes) else value
        return ""

    def set_cursor(self, name, image_id):
        key = CURSOR_PREFIX + name
        if image_id:
            self.ceph.omap_set(self.pool, JOURNAL_OBJECT, {key: image_id.encode()},
                               namespace=JOURNAL_NAMESPACE)
        else:
            self.ceph.omap_remove(self.pool, JOURNAL_OBJECT, [key], namespace=JOURNAL_NAMESPACE)

    def _holder(self):
        try:
            return f"client.{self.ceph.instance_id}"
        except (exc.CinderExtError, AttributeError):
            return ""


def adopt(ceph, volume_pool, image_pools, dry_run=False):
    """Journal the clone uploads an earlier release made (it kept no journal), once, as
    an operator's explicit step (``cinder-rbd-clone adopt``, dry run first). Adopted: an
    image of image_pools (live, or in the trash after Glance deleted it) named
    <image id> whose parent is the upload snapshot image-<image id> of a volume of
    volume_pool, and nothing else: an independent upload (flattened) has no parent
    chain that proves it ours, and a mark proves nothing. An image with glance_store's
    `snap` is adopted as complete, one without as open (an upload that did not finish:
    the purge then asks Glance about it). Images already journaled are left as they are.
    Trash entries 0.2 marked itself (``footprint.GLANCE_TRASH_MARK``: Glance's delete of
    an image only our volumes were cloned from; a mark made on a trash entry, which no
    clone inherits) become SourceRecords. Returns {'adopted': [...], 'count', 'dry_run'}."""
    from cinder_ext import footprint  # the inference adoption relies on (journal is below it)
    journal = Journal(ceph, volume_pool)
    known = {r.image_id for r in journal.records()}
    sources = {r.image_id for r in journal.records(SourceRecord)}
    adopted = []
    for pool in image_pools:
        for entry in ceph.trash_list_all(pool):
            name = entry["name"]
            if not footprint.is_image_name(name) or name in sources or name in known:
                continue
            try:
                marked = ceph.metadata_get(pool, footprint.GLANCE_TRASH_MARK, image_id=entry["id"])
            except exc.CephError as e:
                LOG.warning("adopt: %s/%s left as it is: %s", pool, name, e)
                continue
            if marked is None:
                continue
            adopted.append(f"{pool}/{name} (in the trash): Glance deleted it; our volumes "
                           "were cloned from it")
            if not dry_run:
                journal.claim_source(pool, name, "adopted: 0.2 marked it in the trash")
            sources.add(name)
        candidates = [(name, None) for name in ceph.list_images(pool)]
        candidates += [(e["name"], e["id"]) for e in ceph.trash_list_all(pool)]
        for name, trash_id in candidates:
            if not footprint.is_image_name(name) or name in known:
                continue
            try:
                found = footprint.upload_of(ceph, volume_pool, pool, name, trash_id=trash_id)
                if found is None or found.kind != footprint.CLONE:
                    continue
                volume_id = found.volume_id or ceph.info(volume_pool, found.volume)["id"]
            except exc.CephError as e:  # removed meanwhile, or unreadable: not adopted
                LOG.warning("adopt: %s/%s left as it is: %s", pool, name, e)
                continue
            record = UploadRecord(name, pool, volume_pool, found.volume, volume_id,
                                  state=COMPLETE if found.complete else OPEN,
                                  step=REGISTERING if found.complete else CLONED)
            where = f"{pool}/{name}" + (" (in the trash)" if trash_id else "")
            adopted.append(f"{where} <- {volume_pool}/{found.volume} ({record.state})")
            if not dry_run:
                journal._write(dataclasses.replace(record, time=_now(),
                                                   holder=journal._holder()))
            known.add(name)
    return {"adopted": adopted, "count": len(adopted), "dry_run": dry_run}
