"""Upload a volume to an image that depends on nothing: clone, flatten inside Ceph, register.

For operators who will not accept an image that depends on its volume
(``rbd_flatten_volume_to_image``), and for every upload whose clone would exceed
``rbd_max_clone_depth``. The bytes never pass through Cinder or Glance: Ceph copies them
from the volume's snapshot into the image, as Nova's libvirt driver does for instance
snapshots (clone into the Glance pool, flatten, snapshot, register).

The transaction is CloneUpload's (cinder_ext.clone), one implementation of each step; this
class adds, between the clone and its snapshot ``snap``:

1. mark the clone (RBD image metadata ``footprint.INDEPENDENT_MARK``: the volume's pool,
   name and RBD image id):
   once flattened it has no parent, and the mark is what tells a retry's ``recover()``
   and ``purge`` that it is ours (before, its parent does);
2. flatten it: librbd copies up each object of the clone from the volume's snapshot,
   ``rbd_concurrent_management_ops`` at a time (Ceph's option, from the Cinder user's
   ceph.conf, default 10, as ``rbd deep cp`` uses), and writes nothing for an object the
   snapshot does not hold (a sparse volume stays sparse);
3. drop the volume's upload snapshot: clone v2 has it in the trash namespace already and
   Ceph removes it when flatten detaches the clone; clone v1's protected one is removed
   here.

Then, as for a clone: snapshot ``snap`` (protected), register the location, wait, bounded
by ``clone_active_timeout`` from the registration on (the flatten happens before it, while
the Glance image is still queued: its time is not counted against that bound).

Any failure removes what the attempt made (the flattened image included) and raises
CloneFailed: the caller streams. A crash leaves a marked image (or, before the mark, a
clone of our upload snapshot) that a retry removes and ``purge`` reconciles. The
image-id upload lock is held throughout (by the caller, as upload.upload_volume does, or
by run() with ``locked=False``), so neither removes the image of a flatten in progress.
"""

import logging

from cinder_ext import clone as clone_mod
from cinder_ext import exceptions as exc
from cinder_ext import footprint, journal, steps
from cinder_ext.ceph import USER_NAMESPACE

LOG = logging.getLogger(__name__)


class IndependentUpload(clone_mod.CloneUpload):
    """CloneUpload whose image is flattened before it is snapshotted and registered.

    Same constructor as CloneUpload; ``locked`` defaults to True here (the caller holds
    the image id's ImageLock, as upload.upload_volume does). run() returns CloneUpload's
    result dict with ``independent: True``, and raises what CloneUpload raises.
    """

    kind = journal.INDEPENDENT

    def __init__(self, ceph, glance, volume_pool, volume_name, image_id, target,
                 active_timeout=60, timer=None, locked=True, gate_ticket=None):
        super().__init__(ceph, glance, volume_pool, volume_name, image_id, target,
                         active_timeout=active_timeout, timer=timer, locked=locked,
                         gate_ticket=gate_ticket)

    # -- the steps between the clone and its snapshot ------------------------------------
    def _before_image_snapshot(self, undo):
        with self.timer.step("flatten"):
            mark = footprint.independent_mark(self.vpool, self.volume, self._volume_id())
            self.ceph.metadata_set(self.ipool, self.image_id, footprint.INDEPENDENT_MARK, mark)
            steps.reached("independent.marked")
            try:
                self.ceph.flatten(self.ipool, self.image_id)
            except exc.CephError:
                # a delete of the volume in flatten mode (cinder_ext.delete) flattens its
                # dependents, ours among them: if that one finished first, so did we
                if self.ceph.info(self.ipool, self.image_id)["parent"]:
                    raise
                LOG.info("%s/%s: flattened by another client meanwhile", self.ipool, self.image_id)
            steps.reached("independent.flattened")
        with self.timer.step("volume_snapshot_remove"):
            # clone v2: Ceph dropped the trashed snapshot when flatten detached its last
            # clone; clone v1: it is a protected user snapshot, nothing depends on it now
            for s in self.ceph.snaps(self.vpool, self.volume):
                if s["original"] != self.vsnap:
                    continue
                if s["namespace"] == USER_NAMESPACE:
                    self.ceph.remove_snap(self.vpool, self.volume, self.vsnap)
                elif not self.ceph.snap_has_children(self.vpool, s["id"], name=self.volume):
                    self.ceph.remove_snap_by_id(self.vpool, s["id"], name=self.volume)
            steps.reached("independent.volume_snapshot_removed")

    def result(self, api=None):
        return dict(super().result(api=api), independent=True)


def flatten_uploads(cluster, volume_pool, image_pools, concurrency=3, dry_run=False):
    """Make every clone-uploaded image independent of its volume (flatten inside Ceph,
    at most `concurrency` at a time), as an operator does before going back to
    upstream's driver or removing this package. Idempotent; an upload in flight is left
    to finish. Returns {'images': [...], 'count', 'flattened'} (dry_run: nothing done)."""
    found = footprint.clone_uploads(cluster, volume_pool, image_pools)
    images = [f"{d['pool']}/{d['image']}" + (" (in trash)" if d["trash"] else "")
              + f" <- {d['volume']}" for d in found]
    if not dry_run:
        from cinder_ext.delete import flatten_all
        flatten_all(cluster, found, concurrency)
    return {"images": images, "count": len(found), "flattened": 0 if dry_run else len(found),
            "dry_run": dry_run}
