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

import json
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


# -- locks, as librbd's exclusive lock does them ---------------------------------------------
# Each lock is a cls_lock on a dedicated object of its own, rbd_clone_lock.<what>, in the
# pool it guards: created by the first holder, removed by the last one to leave, so the
# pool's rbd_directory (touched by every create, remove and `rbd ls`) is never involved.
# A holder watches its lock object before it takes the lock, and keeps the watch while it
# holds it: the watch is its lease, renewed by librados' own pings (not by a Python thread,
# so a busy or eventlet-blocked process keeps it), and dropped by the OSD
# osd_client_watch_timeout s (30 by default) after its client stops pinging.
# As librbd's BreakRequest judges a lock owner: a holder is alive while the OSD keeps its
# watch (list_watchers), answering or not (a paused process is alive); only a holder
# without a watch is dead, and only after the lock is read again and still shows it (a
# holder that released meanwhile is not dead) is it blocklisted (fenced: the OSDs refuse
# its every op) and its lock broken. Nothing here looks at host names, pids or /proc.
ADD_LOCATION_TRIES = 3          # a 5xx that changed nothing is sent again, at most twice

LOCK_PREFIX = "rbd_clone_lock."
LOCK_NAME = "rbd_clone_lock"   # the one cls_lock on each lock object
BLOCKLIST_EXPIRE = 3600        # a fenced client instance never comes back anyway


def lock_object(what):
    """The lock object for `what` (an image id, or 'volume-<name>')."""
    return LOCK_PREFIX + what


UploadInProgress = exc.UploadInProgress
VolumeLocked = exc.VolumeLocked


def _who(holder):
    """A holder in words: client.N at addr, and what its description says (for people)."""
    try:
        d = json.loads(holder.get("desc") or "{}")
    except ValueError:
        d = {}
    detail = ", ".join(f"{k} {d[k]}" for k in ("op", "host", "pid") if d.get(k) is not None)
    return f"client.{holder['gid']} at {holder.get('addr') or '?'}" + (f" ({detail})" if detail else "")


class ObjectLock:
    """One holder's hold on pool/rbd_clone_lock.<what>; shared or exclusive."""

    def __init__(self, ceph, pool, what, shared=False, op="upload"):
        self.ceph, self.pool, self.obj = ceph, pool, lock_object(what)
        self.shared, self.op = shared, op
        self.watch = self.cookie = None

    @property
    def held(self):
        return self.watch is not None

    def _desc(self):
        # for error messages only: liveness is the watch
        return json.dumps({"op": self.op, "host": socket.gethostname(), "pid": os.getpid()})

    def attempt(self):
        """Take it: True; else the live holders ([] when the lock just went free or a dead
        holder was broken: try again)."""
        for _ in range(5):
            self.ceph.create_object(self.pool, self.obj)
            try:
                # watch first: from the moment we hold the lock, we answer for it
                # no timeout of ours: the OSD's osd_client_watch_timeout, as librbd's
                watch = self.ceph.watch(self.pool, self.obj)
            except exc.CephNotFound:
                continue  # the last holder removed it between our create and our watch
            cookie = f"{self.ceph.instance_id}.{watch.get_id()}.{os.urandom(4).hex()}"
            try:
                taken = self.ceph.try_lock(self.pool, self.obj, LOCK_NAME, cookie,
                                           desc=self._desc(), shared=self.shared)
            except BaseException:
                self.ceph.unwatch(watch)
                raise
            if taken and self.ceph.watch_ok(watch):
                self.watch, self.cookie = watch, cookie
                return True
            if taken:
                # the last holder removed the object between our watch and our lock (our
                # lock made it anew): without the watch we would look dead; start over
                self.ceph.unlock(self.pool, self.obj, LOCK_NAME, cookie)
                self.ceph.unwatch(watch)
                self._tidy()
                continue
            self.ceph.unwatch(watch)
            return self._live_holders()
        return []

    def _live_holders(self):
        holders, _ = self.ceph.lock_info(self.pool, self.obj, LOCK_NAME)
        if not holders:
            return []
        watching = self.ceph.list_watchers(self.pool, self.obj)
        live = [h for h in holders if h["gid"] in watching]
        unwatched = [h for h in holders if h["gid"] not in watching]
        if not unwatched:
            return live
        # read again: a holder that released (unlock, then unwatch) since is not dead
        still, _ = self.ceph.lock_info(self.pool, self.obj, LOCK_NAME)
        still = {(h["gid"], h["cookie"]) for h in still}
        for h in unwatched:
            if (h["gid"], h["cookie"]) not in still:
                continue
            if not h.get("addr"):
                LOG.warning("%s/%s: holder %s has no watch but no address to blocklist "
                            "either; leaving its lock", self.pool, self.obj, _who(h))
                live.append(h)
                continue
            try:
                # fence first: a holder that comes back must not act after we break in
                self.ceph.blocklist(h["addr"], BLOCKLIST_EXPIRE)
            except exc.CephError as e:
                LOG.warning("%s/%s: cannot blocklist holder %s (%s); leaving its lock",
                            self.pool, self.obj, _who(h), e)
                live.append(h)
                continue
            LOG.warning("%s/%s: breaking the lock of %s: the OSD no longer keeps its watch "
                        "(its client stopped pinging); blocklisted", self.pool, self.obj, _who(h))
            self.ceph.break_lock(self.pool, self.obj, LOCK_NAME,
                                 (h["entity"][0], h["entity"][1], h["cookie"]))
        return live

    def _tidy(self):
        """Remove the lock object if nobody holds it (the last one out removes it)."""
        try:
            self.ceph.remove_if_unlocked(self.pool, self.obj, LOCK_NAME)
        except exc.CinderExtError as e:
            LOG.warning("%s/%s: removing the free lock object failed: %s", self.pool, self.obj, e)

    def release(self):
        if self.watch is None:
            return
        watch, self.watch = self.watch, None
        try:
            self.ceph.unlock(self.pool, self.obj, LOCK_NAME, self.cookie)
        except exc.CinderExtError as e:
            # fenced, or Ceph away: without our watch the lock is a dead holder's, which the
            # next taker (or purge's reap_lock_objects) breaks; no more calls to wait on
            LOG.warning("%s/%s: releasing the lock failed: %s", self.pool, self.obj, e)
            self.ceph.unwatch(watch)
            return
        self.ceph.unwatch(watch)
        self._tidy()


def reap_lock_objects(ceph, pool):
    """Remove the lock objects of pool that dead holders left (a holder killed while it held
    a lock that nobody takes again: an upload to an image Cinder then deleted): each is
    taken and released, which breaks (after blocklisting) a silent holder's lock and removes
    the object. Live holders keep theirs. Returns the objects removed. Lists the whole pool:
    for purge, not for an upload."""
    removed = []
    for obj in ceph.list_objects(pool, LOCK_PREFIX):
        lock = ObjectLock(ceph, pool, obj[len(LOCK_PREFIX):], shared=False, op="purge")
        try:
            for _ in range(3):  # [] : a dead holder was just broken, take it now
                got = lock.attempt()
                if got is True:
                    lock.release()
                    removed.append(f"{pool}/{obj}")
                if got:
                    break
        except exc.CinderExtError as e:
            LOG.warning("%s/%s: %s", pool, obj, e)
    return removed


# -- one upload per image id at a time ---------------------------------------------------
# Two uploads to the same image id would each "recover" (remove) the other's clone: an
# exclusive lock on rbd_clone_lock.<image id> in the Glance pool serialises them.
class ImageLock:
    def __init__(self, ceph, pool, image_id):
        self.ceph, self.pool, self.image_id = ceph, pool, image_id
        self.lock = ObjectLock(ceph, pool, image_id, shared=False, op="upload")

    def __enter__(self):
        for _ in range(3):  # a broken dead lock can be retaken by a racer: then it is theirs
            got = self.lock.attempt()
            if got is True:
                return self
            if got:
                raise UploadInProgress(
                    f"image {self.image_id}: another upload to it is in progress "
                    f"({_who(got[0])}); not touching it")
        raise UploadInProgress(f"image {self.image_id}: could not take the upload lock")

    def __exit__(self, *a):
        self.lock.release()


# -- an upload and a delete of the same volume ---------------------------------------------
# An upload holds a shared lock on the volume while it snapshots and clones it (and while
# a copy reads it); a delete holds it exclusively from inspecting the volume to trashing
# or removing it. So a delete never takes an upload's snapshot for a stale one nor removes
# a volume being read, and an upload never starts on a volume a delete has taken. Once
# the clone exists the upload lets go: a delete then finds a dependent and trashes the
# volume in constant time. The lock object is rbd_clone_lock.<volume name> in the volume's
# pool (volume-<uuid>: no clash with an image id).
VOLUME_LOCK_WAIT = 10.0  # seconds: the snapshot + clone window is far shorter


class VolumeLock:
    def __init__(self, ceph, pool, volume, shared, wait=VOLUME_LOCK_WAIT):
        self.ceph, self.pool, self.volume = ceph, pool, volume
        self.shared, self.wait = shared, wait
        self.lock = ObjectLock(ceph, pool, volume, shared=shared,
                               op="upload" if shared else "delete")

    @property
    def held(self):
        return self.lock.held

    def __enter__(self):
        if self.held:  # volume_lock_for_upload() took it; `with` enters it again
            return self
        deadline = time.monotonic() + self.wait
        while True:
            got = self.lock.attempt()
            if got is True:
                return self
            if got and time.monotonic() >= deadline:
                what = json.loads(got[0].get("desc") or "{}").get("op", "an operation")
                raise VolumeLocked(f"volume {self.pool}/{self.volume}: {what} of it is in "
                                   f"progress ({_who(got[0])})")
            if got:
                time.sleep(0.1)

    def __exit__(self, *a):
        self.lock.release()


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
                timer.add(name, time.monotonic() - self.t0)
        return _Step()

    def add(self, name, seconds):
        self.steps[name] = round(self.steps.get(name, 0) + seconds, 4)


class CloneUpload:
    def __init__(self, ceph, glance, volume_pool, volume_name, image_id, target,
                 active_timeout=60, timer=None, locked=False, gate_ticket=None):
        """locked: the caller holds the image id's ImageLock already; else run() takes it.
        gate_ticket: the upload's cinder_ext.snapshot_gate ticket, to snapshot together
        with the other uploads of this process."""
        self.locked = locked
        self.gate_ticket = gate_ticket
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
        if not parent and self._half_made():
            LOG.warning("%s/%s: the remains of a clone interrupted inside librbd (no parent, no "
                        "snapshot, no data, image queued): removing them", self.ipool, self.image_id)
            return True
        if not parent or (parent["pool"], parent["image"]) != (self.vpool, self.volume):
            raise exc.CloneFailed(
                f"{self.ipool}/{self.image_id} already exists and is not a clone of "
                f"{self.vpool}/{self.volume}; left untouched", reason="target-exists")
        return True

    def _half_made(self):
        """librbd's clone creates the child, then attaches its parent: an upload killed in
        between leaves <image id> with no parent. Ours (we hold the image id's lock) when
        nothing was written to it and Glance still has the image queued with no location
        (Glance's own upload marks it saving before it creates the RBD image)."""
        if self.ceph.snaps(self.ipool, self.image_id) or self.ceph.has_data(self.ipool, self.image_id):
            return False
        try:
            image = self.glance.get_image(self.image_id)
        except exc.GlanceError:
            return False
        return (image.get("status") == "queued" and not image.get("locations")
                and not image.get("direct_url"))

    def _half_made_name(self):
        try:
            image = self.glance.get_image(self.image_id)
        except exc.GlanceError:
            return False
        return image.get("status") == "queued" and not image.get("locations")

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
            if self.gate_ticket is not None:
                waited = self.gate_ticket.arrive()
                if waited:
                    self.timer.add("gather", waited)
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
                try:
                    self.ceph.clone(self.vpool, self.volume, self.vsnap, self.ipool, self.image_id,
                                    order=order, features=self.ceph.default_features())
                except exc.CephExists:
                    # an upload killed while librbd created the name left remains that do
                    # not even open (recover() saw no image): remove them, clone once more
                    if self.ceph.exists(self.ipool, self.image_id) or not self._half_made_name():
                        raise
                    LOG.warning("%s/%s: removing the remains of an interrupted clone",
                                self.ipool, self.image_id)
                    self.ceph.remove(self.ipool, self.image_id)
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
            self._before_image_snapshot(undo)
            with self.timer.step("image_snapshot"):
                self.ceph.create_snap(self.ipool, self.image_id, IMAGE_SNAP)
                faults.point("clone.image_snapshot_created")
                self.ceph.protect_snap(self.ipool, self.image_id, IMAGE_SNAP)
                faults.point("clone.image_snapshot_protected")
            with self.timer.step("register"):
                registered = True
                api, tasks_before = self._add_location()
                faults.point("clone.location_requested")
            with self.timer.step("active"):
                self._wait_active(tasks_before)
                faults.point("clone.active")
            return self.result(api=api)
        except Exception as e:
            # the request may have reached Glance although we saw an error (a timeout, a
            # 5xx from a proxy in front of it): let its task finish, and keep a success
            if registered and not self._refused(e) and self._registered_after_all():
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

    def _before_image_snapshot(self, undo):
        """Between the clone (the volume lock released) and its snapshot `snap`: nothing
        here; cinder_ext.independent flattens the clone at this point."""

    def _add_location(self):
        """Glance's add-location call, sent again after a 5xx that provably changed nothing
        (the image still queued, without our location, no import task on it, no location
        task running): Glance 33 answers 500 when its database reports a deadlock between
        concurrent location requests (MariaDB 1213, seen with 8 uploads at once), and
        rolls the request back. Anything less certain is left to the caller's rules."""
        for attempt in range(1, ADD_LOCATION_TRIES + 1):
            try:
                return self.glance.add_location(self.image_id, self.location.url)
            except exc.GlanceError as e:
                if (attempt == ADD_LOCATION_TRIES or e.status is None or e.status < 500
                        or not self._safe_to_roll_back(e)):
                    raise
                LOG.warning("image %s: %s; Glance did not act on it: sending it again (%d of %d)",
                            self.image_id, e, attempt + 1, ADD_LOCATION_TRIES)
                time.sleep(0.2 * attempt)

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
        except exc.GlanceError as e:
            # the tasks could not be listed (or Glance is away): our request may still run
            # there, so watch the image itself, within the same bound
            LOG.warning("image %s: %s; watching the image instead", self.image_id, e)
            image = self._poll_image()
            if image is None:
                return False
        return image.get("status") == "active" and self._holds_our_location(image)

    def _poll_image(self):
        """The image once it is active or can no longer become so, else (bound passed) its
        last state; None when Glance does not answer (each call is bounded by its request
        timeout: a Glance that is down costs one call, not the whole bound)."""
        deadline = time.monotonic() + self.active_timeout
        while True:
            try:
                image = self.glance.get_image(self.image_id)
            except exc.GlanceError as e:
                LOG.warning("image %s: %s", self.image_id, e)
                return None
            if image.get("status") not in ("queued", "importing", "saving"):
                return image
            if time.monotonic() >= deadline:
                return image
            time.sleep(min(getattr(self.glance, "poll_interval", 1.0) or 1.0,
                           max(0.0, deadline - time.monotonic())))

    def _holds_our_location(self, image):
        urls = {loc.get("url") for loc in image.get("locations") or []}
        return self.location.url in urls or image.get("direct_url") == self.location.url

    @staticmethod
    def _refused(error):
        """A definite no from Glance to this attempt's location: its location task failed,
        or the add-location request was answered 4xx (processed and refused; unlike a
        timeout or a 5xx, after which it may still run)."""
        if isinstance(error, exc.LocationRefused):
            return True
        return (isinstance(error, exc.GlanceError) and error.status is not None
                and 400 <= error.status < 500 and (error.op or "").startswith("add location"))

    def _safe_to_roll_back(self, error):
        """After a registration attempt: roll back only if Glance is known not to hold, nor
        to be registering, our location. Anything unknown keeps the clone (a retry, or the
        reconciler, settles it): removing a clone Glance then registers would leave an
        active image without its data."""
        try:
            image = self.glance.get_image(self.image_id)
        except exc.GlanceNotFound:
            return True
        except exc.GlanceError:
            return False
        if image.get("status") != "queued":
            return False
        if self._holds_our_location(image):
            return False
        if self._refused(error):
            return True  # Glance said no to this attempt: nothing will register it
        if image.get("os_glance_import_task"):
            # Glance's import lock: a location (or data) import holds the image
            LOG.warning("image %s: import task %s holds it; keeping the clone", self.image_id,
                        image["os_glance_import_task"])
            return False
        try:
            tasks = self.glance.image_tasks_strict(self.image_id)
        except AttributeError:  # a Glance client without it cannot tell: unknown
            LOG.warning("image %s: cannot list its tasks; keeping the clone", self.image_id)
            return False
        except exc.GlanceError as e:
            LOG.warning("image %s: %s; keeping the clone (a location task may be running)",
                        self.image_id, e)
            return False
        running = [t for t in tasks if t.get("type") == "location_import"
                   and t.get("status") in ("pending", "processing")]
        return not running

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
