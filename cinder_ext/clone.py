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
is reported as done. One upload per image id runs at a time (ImageLock): a second one
would take the first's clone for such a leftover.
"""

import logging
import os
import socket
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


# -- one upload per image id at a time ---------------------------------------------------
# Two uploads to the same image id would each "recover" (remove) the other's clone.
# A cls_lock named after the image id, on the Glance pool's rbd_directory object (so
# nothing new is created in the pool, and a lock is one xattr, gone when released),
# serialises them. The cookie names the holder (host, pid, process start time): a
# holder on this host that is dead (a crash) has its lock broken at once; one on another
# host that died loses it when the lease runs out.
LOCK_OBJECT = "rbd_directory"
LOCK_LEASE = 3600


class UploadInProgress(exc.CinderExtError):
    """Another live upload holds the image id."""


def _proc_start(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_cookie():
    pid = os.getpid()
    return f"host={socket.gethostname()};pid={pid};start={_proc_start(pid)};nonce={os.urandom(4).hex()}"


def _holder_dead(cookie):
    fields = dict(kv.split("=", 1) for kv in cookie.split(";") if "=" in kv)
    if fields.get("host") != socket.gethostname() or not fields.get("pid", "").isdigit():
        return False  # another host's: only its lease can tell
    return _proc_start(int(fields["pid"])) != fields.get("start")


class ImageLock:
    def __init__(self, ceph, pool, image_id, lease=LOCK_LEASE):
        self.ceph, self.pool, self.image_id, self.lease = ceph, pool, image_id, lease
        self.name = f"cinder-rbd-clone.upload.{image_id}"
        self.cookie = _holder_cookie()

    def __enter__(self):
        for _ in range(3):  # a broken stale lock can be retaken by a racer: then it is theirs
            if self.ceph.try_lock(self.pool, LOCK_OBJECT, self.name, self.cookie,
                                  desc="upload volume to image", duration=self.lease):
                return self
            holders = self.ceph.lock_holders(self.pool, LOCK_OBJECT, self.name)
            live = [h for h in holders if not _holder_dead(h[2])]
            if live:
                who = dict(kv.split("=", 1) for kv in live[0][2].split(";") if "=" in kv)
                raise UploadInProgress(
                    f"image {self.image_id}: another upload to it is in progress (pid "
                    f"{who.get('pid', '?')} on {who.get('host', '?')}); not touching it")
            for h in holders:
                LOG.warning("image %s: breaking the upload lock of a dead process (%s)",
                            self.image_id, h[2])
                self.ceph.break_lock(self.pool, LOCK_OBJECT, self.name, h)
        raise UploadInProgress(f"image {self.image_id}: could not take the upload lock")

    def __exit__(self, *a):
        try:
            self.ceph.unlock(self.pool, LOCK_OBJECT, self.name, self.cookie)
        except exc.CinderExtError as e:  # the lease ends it; the result stands
            LOG.warning("image %s: releasing the upload lock failed: %s", self.image_id, e)


# -- an upload and a delete of the same volume ---------------------------------------------
# An upload holds a shared lock on the volume while it snapshots and clones it (and while
# a copy reads it); a delete holds it exclusively from inspecting the volume to trashing
# or removing it. So a delete never takes an upload's snapshot for a stale one nor removes
# a volume being read, and an upload never starts on a volume a delete has taken. Once
# the clone exists the upload lets go: a delete then finds a dependent and trashes the
# volume in constant time. Same object and dead-holder handling as ImageLock.
VOLUME_LOCK_WAIT = 10.0  # seconds: the snapshot + clone window is far shorter


class VolumeLocked(exc.CinderExtError):
    """An upload (shared) or a delete (exclusive) of the volume did not let go in time."""


def _who(cookie):
    fields = dict(kv.split("=", 1) for kv in cookie.split(";") if "=" in kv)
    return (f"{fields.get('op', 'an operation')} (pid {fields.get('pid', '?')} on "
            f"{fields.get('host', '?')})")


class VolumeLock:
    def __init__(self, ceph, pool, volume, shared, wait=VOLUME_LOCK_WAIT, lease=LOCK_LEASE):
        self.ceph, self.pool, self.volume = ceph, pool, volume
        self.shared, self.wait, self.lease = shared, wait, lease
        self.name = f"cinder-rbd-clone.volume.{volume}"
        self.cookie = _holder_cookie() + (";op=upload" if shared else ";op=delete")
        self.held = False

    def __enter__(self):
        if self.held:  # volume_lock_for_upload() took it; `with` enters it again
            return self
        deadline = time.monotonic() + self.wait
        while True:
            if self.ceph.try_lock(self.pool, LOCK_OBJECT, self.name, self.cookie,
                                  desc="upload" if self.shared else "delete",
                                  duration=self.lease, shared=self.shared):
                self.held = True
                return self
            holders = self.ceph.lock_holders(self.pool, LOCK_OBJECT, self.name)
            live = [h for h in holders if not _holder_dead(h[2])]
            for h in holders:
                if h not in live:
                    LOG.warning("volume %s/%s: breaking the lock of a dead process (%s)",
                                self.pool, self.volume, h[2])
                    self.ceph.break_lock(self.pool, LOCK_OBJECT, self.name, h)
            if live and time.monotonic() >= deadline:
                raise VolumeLocked(f"volume {self.pool}/{self.volume}: {_who(live[0][2])} of it "
                                   f"is in progress")
            if live:
                time.sleep(0.1)

    def __exit__(self, *a):
        if not self.held:
            return
        self.held = False
        try:
            self.ceph.unlock(self.pool, LOCK_OBJECT, self.name, self.cookie)
        except exc.CinderExtError as e:  # the lease ends it; the result stands
            LOG.warning("volume %s/%s: releasing the lock failed: %s", self.pool, self.volume, e)


def volume_lock_for_upload(ceph, pool, volume):
    """Take the shared lock, then make sure the volume is still there (a delete may have won)."""
    lock = VolumeLock(ceph, pool, volume, shared=True)
    try:
        lock.__enter__()
    except VolumeLocked as e:
        raise VolumeLocked(f"{e}; nothing was uploaded") from None
    try:
        ceph.info(pool, volume)
    except exc.CephNotFound:
        lock.__exit__()
        raise VolumeLocked(f"volume {pool}/{volume} was deleted; nothing was uploaded") from None
    except BaseException:
        lock.__exit__()
        raise
    return lock


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
                 active_timeout=60, timer=None, locked=False):
        """locked: the caller holds the image id's ImageLock already; else run() takes it."""
        self.locked = locked
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
        if self.locked:
            return self._run()
        try:
            lock = ImageLock(self.ceph, self.ipool, self.image_id).__enter__()
        except exc.CephError as e:  # e.g. no write caps on the Glance pool: nothing done yet
            raise exc.CloneFailed(str(e), reason=str(e), cleaned=True, cause=e) from None
        try:
            return self._run()
        finally:
            lock.__exit__()

    def _run(self):
        try:
            vlock = volume_lock_for_upload(self.ceph, self.vpool, self.volume)
        except VolumeLocked:
            raise  # nothing done yet, and a copy would not fare better
        except exc.CephError as e:
            raise exc.CloneFailed(str(e), reason=str(e), cleaned=True, cause=e) from None
        try:
            return self._run_locked(vlock)
        finally:
            vlock.__exit__()

    def _run_locked(self, vlock):
        undo = []
        registered = False
        api = None
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
            # the clone depends on the volume now: a delete will see it and trash the volume
            vlock.__exit__()
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
                self._wait_active(tasks_before)
                faults.point("clone.active")
            return self.result(api=api)
        except Exception as e:
            # the request may have reached Glance although we saw an error (a timeout, a
            # 5xx from a proxy in front of it): let its task finish, and keep a success
            if registered and self._registered_after_all():
                LOG.warning("image %s: Glance registered %s despite an error (%s)",
                            self.image_id, self.location.url, e)
                return self.result(api=api or "task")
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

    def _wait_active(self, tasks_before):
        """wait_active, retried over transient errors (no answer, 5xx) within the same bound."""
        deadline = time.monotonic() + self.active_timeout
        while True:
            try:
                return self.glance.wait_active(self.image_id, max(1, deadline - time.monotonic()),
                                               self.location.url, tasks_before)
            except exc.GlanceError as e:
                transient = e.op != "wait for active" and (e.status is None or e.status >= 500)
                if not transient or time.monotonic() >= deadline:
                    raise
                LOG.warning("image %s: %s; polling again", self.image_id, e)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _registered_after_all(self):
        try:
            self.glance.wait_location_tasks(self.image_id, self.active_timeout)
            image = self.glance.get_image(self.image_id)
        except exc.GlanceError:
            return False
        urls = {loc.get("url") for loc in image.get("locations") or []}
        return image.get("status") == "active" and (
            self.location.url in urls or image.get("direct_url") == self.location.url)

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
