"""Our footprint on Ceph: every name, mark and snapshot cinder_ext leaves, and what a
thing found there is.

What makes an upload's objects ours is its record in the intent journal
(cinder_ext.journal), never what is found here: librbd copies image metadata into every
clone, and a parent snapshot's name can be anyone's. ``upload_of()`` infers from Ceph
alone, for what has no record yet: adopting 0.2's uploads (``journal.adopt``) and
``flatten-uploads``.

What we leave:

* on a volume: the upload snapshot ``image-<image id>`` (user namespace while the
  upload runs; with clone v2 Ceph's trash namespace once its clone exists, until the
  clone goes);
* in a Glance pool: the image ``<image id>``, a clone of that snapshot (or, for an
  independent upload, flattened and marked ``INDEPENDENT_MARK``), with glance_store's
  snapshot ``snap``;
* RBD image metadata marks: ``TRASH_MARK`` on a volume trashed because clones need it,
  ``CREATE_MARK`` on a volume being created (0.2 also left ``CLONED_MARK`` on Glance
  images volumes were cloned from, which nothing reads any more, and
  ``GLANCE_TRASH_MARK`` on Glance trash entries, which ``journal.adopt`` reads once);
* records in the intent journal (cinder_ext.journal);
* lock objects, in their own RADOS namespace (``cinder_ext.locks``).
"""

import dataclasses
import logging
import re

from cinder_ext import exceptions as exc
from cinder_ext.ceph import TRASH_NAMESPACE

LOG = logging.getLogger(__name__)

# -- names ----------------------------------------------------------------------------------
IMAGE_SNAP = "snap"           # glance_store's DEFAULT_SNAPNAME, on every image its rbd store holds
UPLOAD_SNAP_PREFIX = "image-"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UPLOAD_SNAP = re.compile(re.escape(UPLOAD_SNAP_PREFIX) + f"({_UUID})$")
_IMAGE_NAME = re.compile(f"^{_UUID}$")

# upstream Cinder's names, which purge finishes for it
DELETED_SUFFIX = ".deleted"        # a deleted volume that clones still needed
CLONE_SNAP_SUFFIX = ".clone_snap"  # the snapshot of a cloned volume


def upload_snap_name(image_id):
    """The volume snapshot an upload to image_id creates (and a retry looks for)."""
    return UPLOAD_SNAP_PREFIX + image_id


def upload_snap_image_id(name):
    """The image id of an upload snapshot's name, else None."""
    m = _UPLOAD_SNAP.match(name or "")
    return m.group(1) if m else None


def is_upload_snap(name):
    return upload_snap_image_id(name) is not None


def is_image_name(name):
    """True for a name Glance's rbd store gives an image (its id)."""
    return bool(_IMAGE_NAME.match(name or ""))


# -- marks (RBD image metadata keys) ----------------------------------------------------------
TRASH_MARK = "cinder-rbd-clone.parent-of-images"
INDEPENDENT_MARK = "cinder-rbd-clone.independent-upload-of"
CLONED_MARK = "cinder-rbd-clone.volumes-cloned-from-it"  # 0.2's; travels into clones: unread
GLANCE_TRASH_MARK = "cinder-rbd-clone.glance-trashed"     # 0.2's; read by journal.adopt only
CREATE_MARK = "cinder-rbd-clone.creating-from-image"


def independent_mark(volume_pool, volume_name, volume_id):
    """<volume pool>/<volume name>#<volume's RBD image id>: the id survives a rename."""
    return f"{volume_pool}/{volume_name}#{volume_id}"


def parse_independent_mark(value):
    """(volume pool, volume name, volume id or None) of a mark, else None. Marks written
    before the id was recorded are <pool>/<name>."""
    pool, sep, rest = (value or "").partition("/")
    name, _, volume_id = rest.partition("#")
    if not (sep and pool and name) or "/" in name:
        return None
    return pool, name, volume_id or None


# -- what a Glance-pool image is ------------------------------------------------------------------
CLONE = "clone"                # a clone of our upload snapshot image-<image id>
INDEPENDENT = "independent"    # an independent upload's image: flattened, with our mark
HALF_MADE = "half-made"        # killed inside librbd's clone: no parent, snapshot or data yet


@dataclasses.dataclass(frozen=True)
class Upload:
    """Ours: the image <image_id> in a Glance pool that an upload of a volume made.

    kind: CLONE, INDEPENDENT or HALF_MADE. complete: it has glance_store's ``snap``
    (the upload got as far as registering it). The volume is named as Ceph knows it now
    and by its RBD image id (None for a mark made before ids were recorded)."""

    kind: str
    image_id: str
    volume_pool: str
    volume: str
    volume_id: str
    complete: bool

    @property
    def upload_snap(self):
        return upload_snap_name(self.image_id)

    def is_of(self, volume_pool, volume, volume_id=None):
        """True if this upload is of that volume: by RBD image id where both are known."""
        if volume_pool != self.volume_pool:
            return False
        if volume_id and self.volume_id:
            return volume_id == self.volume_id
        return volume == self.volume


def upload_of(cluster, volume_pool, pool, image_id, trash_id=None, upload_snaps=None):
    """The Upload that made pool/<image_id> (or the trash entry trash_id), if ours; else None.

    Ours, from Ceph alone:
    * CLONE: its parent is image-<image_id> (any namespace) of a volume in volume_pool;
    * INDEPENDENT: no parent, and our mark naming a volume of volume_pool;
    * HALF_MADE (live images only): no parent, no snapshot, nothing written, and a volume
      of volume_pool carries image-<image_id>. librbd's clone creates the child, then
      attaches its parent: an upload killed between the two leaves this. upload_snaps, a
      callable giving {upload snapshot name: volume}, is asked only then.
    A plain image of another tool can look half made, but it has no upload snapshot on a
    volume of ours. Raises CephNotFound when there is no such image.
    """
    where = {"image_id": trash_id} if trash_id else {"name": image_id}

    def complete():
        snaps = cluster.snaps(pool, None if trash_id else image_id, image_id=trash_id)
        return any(s["original"] == IMAGE_SNAP for s in snaps)
    parent = cluster.parent_snap(pool, **where)
    if parent:
        if parent["pool"] != volume_pool or parent["original"] != upload_snap_name(image_id):
            return None
        return Upload(CLONE, image_id, volume_pool, parent["image"], parent.get("image_id"),
                      complete())
    marked = parse_independent_mark(cluster.metadata_get(pool, INDEPENDENT_MARK, **where))
    if marked is not None:
        if marked[0] != volume_pool:
            return None
        return Upload(INDEPENDENT, image_id, *marked, complete=complete())
    if trash_id or upload_snaps is None:
        return None
    if cluster.snaps(pool, image_id):
        return None  # every image Glance wrote has its 'snap'
    volume = upload_snaps().get(upload_snap_name(image_id))
    if volume is None or cluster.has_data(pool, image_id):
        return None
    return Upload(HALF_MADE, image_id, volume_pool, volume, None, False)


def upload_snaps_of_pool(cluster, volume_pool):
    """{upload snapshot name (any namespace): volume} of every volume of the pool."""
    out = {}
    for vol in cluster.list_images(volume_pool):
        try:
            for s in cluster.snaps(volume_pool, vol):
                if is_upload_snap(s["original"]):
                    out[s["original"]] = vol
        except exc.CephNotFound:
            continue
    return out


def clone_uploads(cluster, volume_pool, image_pools):
    """Every image in image_pools (live, or in the trash after Glance deleted it) that a
    clone upload of a volume of volume_pool made and that still reads through it:
    [{'pool', 'image', 'id', 'trash', 'volume'}], what flattening would make independent.
    Uploads still in flight (no ``snap`` yet) are not listed: they are the upload's."""
    out = []
    for pool in image_pools:
        candidates = [(name, None) for name in cluster.list_images(pool)]
        candidates += [(e["name"], e["id"]) for e in cluster.trash_list_all(pool)]
        for name, trash_id in candidates:
            if not is_image_name(name):
                continue
            try:
                found = upload_of(cluster, volume_pool, pool, name, trash_id=trash_id)
            except exc.CephNotFound:
                continue  # removed meanwhile
            if found is None or found.kind != CLONE or not found.complete:
                continue
            out.append({"pool": pool, "image": name, "id": trash_id, "trash": bool(trash_id),
                        "volume": f"{volume_pool}/{found.volume}"})
    return out


# -- a Glance image that Glance deleted while our volumes read through it ---------------------------
def glance_trashed_for_our_volumes(cluster, volume_pool, pool, name, image_id, claim=True):
    """True if pool's image `name` (RBD id image_id: in the trash, or on its way there) is
    one Glance deleted while volumes of volume_pool were cloned from it: glance_store's
    ``snap`` is in Ceph's trash namespace and every clone is in volume_pool (an image that
    Nova's disks, in another pool, were cloned from is not ours). Whose clones they are is
    seen only while they exist: with claim, a journal record (cinder_ext.journal's
    SourceRecord) keeps it for later."""
    if not any(s["namespace"] == TRASH_NAMESPACE and s["original"] == IMAGE_SNAP
               for s in cluster.snaps(pool, None, image_id=image_id)):
        return False
    deps = cluster.children(pool, image_id=image_id)
    if not deps or any(d["pool"] != volume_pool for d in deps):
        return False
    if claim:
        from cinder_ext import journal  # journal imports nothing of ours but exceptions
        journal.Journal(cluster, volume_pool).claim_source(
            pool, name, "glance_store trashed it; only volumes of our pool were cloned from it")
    return True


def claim_glance_parent(cluster, volume_pool, name=None, image_id=None, parent=None):
    """Call before volume_pool's volume (name, or image_id in the trash) is removed: when
    it is a clone of a Glance image that Glance has deleted, record that image
    (glance_trashed_for_our_volumes). Once its last clone is gone nothing else tells purge
    it is ours, and a volume deleted before a purge run had looked left it in the Glance
    pool's trash for ever. parent: the volume's Cluster.parent_snap(), if already read.
    True when recorded. A failure is logged, never raised: the delete goes on (without
    write access to that pool, purge could not remove the entry either)."""
    try:
        if parent is None:
            parent = cluster.parent_snap(volume_pool, name, image_id=image_id)
        if (not parent or parent["pool"] == volume_pool or not is_image_name(parent["image"])
                or parent["namespace"] != TRASH_NAMESPACE or parent["original"] != IMAGE_SNAP):
            return False
        return glance_trashed_for_our_volumes(cluster, volume_pool, parent["pool"],
                                              parent["image"], parent["image_id"])
    except exc.CephError as e:
        LOG.warning("%s/%s: its Glance parent, deleted by Glance, could not be marked for "
                    "purge: %s", volume_pool, name or f"id:{image_id}", e)
        return False
