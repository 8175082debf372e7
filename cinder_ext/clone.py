"""Upload a volume to an image by copy-on-write clone: one transaction.

Steps (each boundary is a cinder_ext.steps name):

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
is reported as done. One upload per image id runs at a time (locks.ImageLock): a second
one would take the first's clone for such a leftover.
"""

import logging
import time

from glance_store_ext.contract import RBDLocation

from cinder_ext import exceptions as exc
from cinder_ext import footprint, journal, locks, steps
from cinder_ext import glance as glance_mod
from cinder_ext.ceph import USER_NAMESPACE, order_for
from cinder_ext.footprint import IMAGE_SNAP

LOG = logging.getLogger(__name__)


def image_location(target, image_id):
    return RBDLocation(target.fsid, target.pool, image_id, IMAGE_SNAP)


def clone_location(fsid, pool, image_id):
    """The rbd:// URL an upload registers for image_id in pool."""
    return RBDLocation(fsid, pool, image_id, IMAGE_SNAP).url


def clone_order(volume_stripe_unit, store_chunk_size):
    """Cinder's stripe rule: at least the source's stripe unit, else the store's chunk size."""
    size = max(volume_stripe_unit, store_chunk_size or 0)
    return order_for(size)


ADD_LOCATION_TRIES = 3          # a 5xx that changed nothing is sent again, at most twice


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

    def report(self, started):
        """Seconds per step, and the total since `started` (time.monotonic())."""
        return dict(self.steps, total=round(time.monotonic() - started, 4))


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
        self.vsnap = footprint.upload_snap_name(image_id)
        self.location = image_location(target, image_id)
        self.active_timeout = active_timeout
        self.timer = timer or Timer()
        self.recovered = []
        self.volume_id = None  # the volume's RBD image id, once read
        self.journal = journal.Journal(ceph, volume_pool)
        self.record = None     # this attempt's journal record, once written
        self.earlier_open = False  # an interrupted earlier attempt of ours left a record

    # -- leftovers ----------------------------------------------------------------------
    def _volume_id(self):
        if self.volume_id is None:
            self.volume_id = self.ceph.info(self.vpool, self.volume)["id"]
        return self.volume_id

    def _earlier_attempt_is_ours(self):
        """True if the journal holds an open record of an upload of our volume to this
        image id: an earlier attempt, interrupted, whose leftovers are ours to remove.
        Only a record makes them ours: never a name, a parent or a metadata key (librbd
        copies those into the clones Nova and others make)."""
        record = self.journal.get(self.image_id)
        return (record is not None and record.open and record.image_pool == self.ipool
                and record.volume_pool == self.vpool and record.volume_id == self._volume_id())

    def _clone_is_ours(self):
        """True if <pool>/<image id> exists and an earlier attempt of ours made it; raise
        if it exists and is anything else."""
        if not self.ceph.exists(self.ipool, self.image_id):
            return False
        if not self.earlier_open:
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
        self.earlier_open = self._earlier_attempt_is_ours()
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
            lock = locks.ImageLock(self.ceph, self.ipool, self.image_id).__enter__()
        except exc.CephError as e:  # e.g. no write caps on the Glance pool: nothing done yet
            raise exc.CloneFailed(str(e), reason=str(e), cleaned=True, cause=e) from None
        try:
            return self._run()
        finally:
            lock.__exit__()

    def _run(self):
        try:
            vlock = locks.volume_lock_for_upload(self.ceph, self.vpool, self.volume)
        except exc.VolumeLocked:
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
            steps.reached("clone.recovered")
            fmt = self.ceph.clone_format()
            vinfo = self.ceph.info(self.vpool, self.volume)
            self.volume_id = vinfo["id"]
            # written down before anything is created: the record is what makes it ours
            self.record = self.journal.open(journal.UploadRecord(
                self.image_id, self.ipool, self.vpool, self.volume, self.volume_id,
                kind=self.kind, step=journal.VOLUME_SNAPSHOT))
            steps.reached("clone.journaled")
            if self.gate_ticket is not None:
                waited = self.gate_ticket.arrive()
                if waited:
                    self.timer.add("gather", waited)
            with self.timer.step("volume_snapshot"):
                self.ceph.create_snap(self.vpool, self.volume, self.vsnap)
                undo.append(("remove volume snapshot",
                             lambda: self.ceph.remove_snap(self.vpool, self.volume, self.vsnap)))
                steps.reached("clone.volume_snapshot_created")
                if fmt == 1:
                    self.ceph.protect_snap(self.vpool, self.volume, self.vsnap)
                    steps.reached("clone.volume_snapshot_protected")
            with self.timer.step("clone"):
                order = clone_order(vinfo["stripe_unit"], self.target.chunk_size)
                self._journal_step(journal.CLONED)
                try:
                    self.ceph.clone(self.vpool, self.volume, self.vsnap, self.ipool, self.image_id,
                                    order=order, features=self.ceph.default_features())
                except exc.CephExists:
                    # an upload killed while librbd created the name left remains that do
                    # not even open (recover() saw no image): remove them, clone once more
                    if (self.ceph.exists(self.ipool, self.image_id) or not self.earlier_open
                            or not glance_mod.location_state(self.glance, self.image_id).queued_empty):
                        raise
                    LOG.warning("%s/%s: removing the remains of an interrupted clone",
                                self.ipool, self.image_id)
                    self.ceph.remove(self.ipool, self.image_id)
                    self.ceph.clone(self.vpool, self.volume, self.vsnap, self.ipool, self.image_id,
                                    order=order, features=self.ceph.default_features())
                # removing the clone must precede the volume snapshot's removal
                undo.append(("remove clone", self._remove_clone))
                steps.reached("clone.cloned")
            if fmt == 2:
                with self.timer.step("volume_snapshot_remove"):
                    self.ceph.remove_snap(self.vpool, self.volume, self.vsnap, unprotect=False)
                    steps.reached("clone.volume_snapshot_removed")
            # the clone depends on the volume now: a delete will see it and trash the volume
            vlock.__exit__()
            self._before_image_snapshot(undo)
            with self.timer.step("image_snapshot"):
                self._journal_step(journal.IMAGE_SNAPSHOT)
                self.ceph.create_snap(self.ipool, self.image_id, IMAGE_SNAP)
                steps.reached("clone.image_snapshot_created")
                self.ceph.protect_snap(self.ipool, self.image_id, IMAGE_SNAP)
                steps.reached("clone.image_snapshot_protected")
            with self.timer.step("register"):
                self._journal_step(journal.REGISTERING)
                registered = True
                api, tasks_before = self._add_location()
                steps.reached("clone.location_requested")
            with self.timer.step("active"):
                self._wait_active(tasks_before)
                steps.reached("clone.active")
            self._journal_complete()
            return self.result(api=api)
        except Exception as e:
            # the request may have reached Glance although we saw an error (a timeout, a
            # 5xx from a proxy in front of it): let its task finish, and keep a success
            if registered and not self._refused(e) and self._registered_after_all():
                LOG.warning("image %s: Glance registered %s despite an error (%s)",
                            self.image_id, self.location.url, e)
                self._journal_complete()
                return self.result(api=api or "task")
            if registered and not self._safe_to_roll_back(e):
                raise exc.CloneIncomplete(
                    f"clone of {self.vpool}/{self.volume} registered as {self.location.url} but "
                    f"image {self.image_id} did not go active ({e}); the clone is kept because "
                    "Glance may reference it: run the upload again to finish or clean up") from None
            with self.timer.step("rollback"):
                failures = self._undo(undo)
                self._journal_rolled_back(failures)
            reason = self._reason(e)
            if failures:
                raise exc.CloneFailed(f"{reason}; rollback incomplete: {'; '.join(failures)}",
                                      reason=reason, cleaned=False, cause=e) from None
            raise exc.CloneFailed(reason, reason=reason, cleaned=True, cause=e) from None

    # -- the journal ----------------------------------------------------------------------
    kind = journal.CLONE

    def _journal_step(self, step):
        self.record = self.journal.step(self.record, step)

    def _journal_complete(self):
        """The image is active with our clone: the record stays, closed (purge reads it
        once Glance deletes the image). A failure to write it is logged: the open record
        then names an upload whose image is active, which purge closes."""
        try:
            self.record = self.journal.complete(self.record)
        except exc.CephError as e:
            LOG.warning("image %s: closing its journal record failed (%s); purge closes it",
                        self.image_id, e)

    def _journal_rolled_back(self, failures):
        """Nothing left: forget the record. Something left: keep it open, for purge."""
        if self.record is None:
            return
        try:
            if failures:
                self.record = self.journal.step(self.record, journal.ROLLBACK_INCOMPLETE)
            else:
                self.journal.forget(self.record)
                self.record = None
        except exc.CephError as e:
            LOG.warning("image %s: updating its journal record after the rollback failed "
                        "(%s); purge settles it", self.image_id, e)

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
                return glance_mod.wait_active(self.glance, self.image_id,
                                              max(1, deadline - time.monotonic()),
                                              self.location.url, tasks_before)
            except exc.GlanceError as e:
                transient = e.op != "wait for active" and (e.status is None or e.status >= 500)
                if not transient or time.monotonic() >= deadline:
                    raise
                LOG.warning("image %s: %s; polling again", self.image_id, e)
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    def _registered_after_all(self):
        try:
            glance_mod.wait_location_tasks(self.glance, self.image_id, self.active_timeout)
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
            time.sleep(min(self.glance.poll_interval or 1.0,
                           max(0.0, deadline - time.monotonic())))

    def _holds_our_location(self, image):
        return self.location.url in glance_mod.urls_of(image)

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
        state = glance_mod.location_state(self.glance, self.image_id)
        if state.state == glance_mod.GONE:
            return True
        if state.image is None or state.image.get("status") != "queued" or state.state in (
                glance_mod.ACTIVE, glance_mod.LOCATED):
            return False
        if self._refused(error):
            return True  # Glance said no to this attempt: nothing will register it
        if state.state != glance_mod.IDLE:
            LOG.warning("image %s: keeping the clone: %s", self.image_id, state.why)
            return False
        return True

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
