"""Upload a volume to an image by copy-on-write clone: one transaction.

Steps (each followed by a named fault point, see cinder_ext.faults):

1. snapshot the volume as ``image-<image id>`` (clone v1: protect it);
2. clone it into the Glance store's pool as ``<image id>``, object size = the store's
   chunk size raised to the volume's stripe unit (Cinder's ``_get_stripe_unit`` rule);
3. clone v2: remove the volume snapshot at once; Ceph keeps it in the trash namespace
   only while the clone depends on it, and drops it when the clone goes;
4. snapshot ``snap`` on the clone and protect it (what glance_store writes, and what
   its delete unprotects);
5. register ``rbd://<fsid>/<pool>/<image id>/snap`` in Glance and wait, bounded, for
   the image to go active.

Any failure undoes, in reverse, every step this attempt performed, then raises
CloneFailed (the caller falls back to the copy). Every name derives from the image id,
so a retry after a crash finds the leftovers of the earlier attempt: ``recover()``
removes them when Glance does not reference them, and a registration that completed
is reported as done.
"""

import logging
import time

from glance_store_ext.contract import RBDLocation

from cinder_ext import exceptions as exc
from cinder_ext import faults
from cinder_ext.ceph import USER_NAMESPACE, order_for

LOG = logging.getLogger(__name__)

IMAGE_SNAP = "snap"          # glance_store's DEFAULT_SNAPNAME
VOLUME_SNAP_PREFIX = "image-"


def volume_snapshot_name(image_id):
    """The volume snapshot an upload to image_id creates (and a retry looks for)."""
    return VOLUME_SNAP_PREFIX + image_id


def image_location(target, image_id):
    return RBDLocation(target.fsid, target.pool, image_id, IMAGE_SNAP)


def clone_order(volume_stripe_unit, store_chunk_size):
    """Cinder's stripe rule: at least the source's stripe unit, else the store's chunk size."""
    size = max(volume_stripe_unit, store_chunk_size or 0)
    return order_for(size)


class Timer:
    """Seconds per named step, in the order they ran."""

    def __init__(self):
        self.steps = {}

    def step(self, name):
        timer = self

        class _Step:
            def __enter__(self):
                self.t0 = time.monotonic()

            def __exit__(self, *a):
                timer.steps[name] = round(timer.steps.get(name, 0) + time.monotonic() - self.t0, 4)
        return _Step()


class CloneUpload:
    def __init__(self, ceph, glance, volume_pool, volume_name, image_id, target,
                 active_timeout=60, timer=None):
        self.ceph, self.glance = ceph, glance
        self.vpool, self.volume, self.image_id = volume_pool, volume_name, image_id
        self.target = target
        self.ipool = target.pool
        self.vsnap = volume_snapshot_name(image_id)
        self.location = image_location(target, image_id)
        self.active_timeout = active_timeout
        self.timer = timer or Timer()
        self.recovered = []

    # -- leftovers ----------------------------------------------------------------------
    def _clone_is_ours(self):
        """True if <pool>/<image id> exists and is a clone of our volume; raise if foreign."""
        try:
            info = self.ceph.info(self.ipool, self.image_id)
        except exc.CephNotFound:
            return False
        parent = info["parent"]
        if not parent or (parent["pool"], parent["image"]) != (self.vpool, self.volume):
            raise exc.CloneFailed(
                f"{self.ipool}/{self.image_id} already exists and is not a clone of "
                f"{self.vpool}/{self.volume}; left untouched", reason="target-exists")
        return True

    def _remove_clone(self):
        # the snapshot glance_store would unprotect on delete, then the clone;
        # with clone v2, Ceph then drops our trashed volume snapshot by itself
        for snap in self.ceph.snaps(self.ipool, self.image_id):
            if snap["namespace"] == USER_NAMESPACE:
                self.ceph.remove_snap(self.ipool, self.image_id, snap["name"])
        self.ceph.remove(self.ipool, self.image_id)

    def _volume_snap_exists(self):
        return any(s["name"] == self.vsnap and s["namespace"] == USER_NAMESPACE
                   for s in self.ceph.snaps(self.vpool, self.volume))

    def recover(self):
        """Remove what an earlier, interrupted attempt left (Glance does not reference it)."""
        if self._clone_is_ours():
            self._remove_clone()
            self.recovered.append(f"{self.ipool}/{self.image_id}")
        if self._volume_snap_exists():
            self.ceph.remove_snap(self.vpool, self.volume, self.vsnap)
            self.recovered.append(f"{self.vpool}/{self.volume}@{self.vsnap}")
        if self.recovered:
            LOG.info("removed leftovers of an interrupted upload to image %s: %s",
                     self.image_id, ", ".join(self.recovered))

    # -- the transaction ----------------------------------------------------------------
    def run(self):
        undo = []
        registered = False
        try:
            with self.timer.step("recover"):
                self.recover()
            faults.point("clone.recovered")
            fmt = self.ceph.clone_format()
            with self.timer.step("volume_snapshot"):
                vinfo = self.ceph.info(self.vpool, self.volume)
                self.ceph.create_snap(self.vpool, self.volume, self.vsnap)
                undo.append(("remove volume snapshot",
                             lambda: self.ceph.remove_snap(self.vpool, self.volume, self.vsnap)))
                faults.point("clone.volume_snapshot_created")
                if fmt == 1:
                    self.ceph.protect_snap(self.vpool, self.volume, self.vsnap)
                    faults.point("clone.volume_snapshot_protected")
            with self.timer.step("clone"):
                order = clone_order(vinfo["stripe_unit"], self.target.chunk_size)
                self.ceph.clone(self.vpool, self.volume, self.vsnap, self.ipool, self.image_id,
                                order=order, features=self.ceph.default_features())
                # removing the clone must precede the volume snapshot's removal
                undo.append(("remove clone", self._remove_clone))
                faults.point("clone.cloned")
            if fmt == 2:
                with self.timer.step("volume_snapshot_remove"):
                    self.ceph.remove_snap(self.vpool, self.volume, self.vsnap, unprotect=False)
                    faults.point("clone.volume_snapshot_removed")
            with self.timer.step("image_snapshot"):
                self.ceph.create_snap(self.ipool, self.image_id, IMAGE_SNAP)
                faults.point("clone.image_snapshot_created")
                self.ceph.protect_snap(self.ipool, self.image_id, IMAGE_SNAP)
                faults.point("clone.image_snapshot_protected")
            with self.timer.step("register"):
                registered = True
                api, tasks_before = self.glance.add_location(self.image_id, self.location.url)
                faults.point("clone.location_requested")
            with self.timer.step("active"):
                self.glance.wait_active(self.image_id, self.active_timeout, self.location.url,
                                        tasks_before)
                faults.point("clone.active")
            return self.result(api=api)
        except Exception as e:
            if registered and not self._safe_to_roll_back(e):
                raise exc.CloneIncomplete(
                    f"clone of {self.vpool}/{self.volume} registered as {self.location.url} but "
                    f"image {self.image_id} did not go active ({e}); the clone is kept because "
                    "Glance may reference it: run the upload again to finish or clean up") from None
            with self.timer.step("rollback"):
                failures = self._undo(undo)
            reason = self._reason(e)
            if failures:
                raise exc.CloneFailed(f"{reason}; rollback incomplete: {'; '.join(failures)}",
                                      reason=reason, cleaned=False, cause=e) from None
            raise exc.CloneFailed(reason, reason=reason, cleaned=True, cause=e) from None

    def _safe_to_roll_back(self, error):
        """After a registration attempt: roll back only if Glance does not hold our location."""
        try:
            image = self.glance.get_image(self.image_id)
        except exc.GlanceNotFound:
            return True
        except exc.GlanceError:
            return False
        if image.get("status") != "queued":
            return False
        urls = {loc.get("url") for loc in image.get("locations") or []}
        return self.location.url not in urls and image.get("direct_url") != self.location.url

    @staticmethod
    def _undo(undo):
        failures = []
        for what, action in reversed(undo):
            try:
                action()
            except Exception as e:  # keep undoing: every step gets its chance
                LOG.error("rollback: %s failed: %s", what, e)
                failures.append(f"{what}: {e}")
        return failures

    @staticmethod
    def _reason(error):
        if isinstance(error, (exc.CinderExtError,)):
            return str(error)
        return f"{type(error).__name__}: {error}"

    def result(self, api=None):
        """api: 'task' (POST /locations) or 'legacy' (PATCH /locations/-)."""
        return {"location": self.location.url, "location_api": api,
                "recovered": list(self.recovered)}
