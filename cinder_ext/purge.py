"""Purge: what does it remove, and why. Every removal is logged with its reason.

Deletions leave things that something still needs at the time: a volume whose
clone-uploaded images still read through it, a Glance image that volumes were cloned
from, an upload snapshot that Glance's user could not drop. ``purge()`` removes each once
nothing depends on it, in any order, idempotently, and only what is ours
(cinder_ext.footprint) or what a user's delete put in the trash:

==========================================================  ===================================
what                                                        removed when
==========================================================  ===================================
a volume trashed for its images (``TRASH_MARK``), with its   no clone depends on it
upload and upstream ``.clone_snap`` snapshots
a Cinder deferred deletion (with ``include_unmarked``)      expired, nothing depends on it
an upload snapshot in the trash namespace                   its clone is gone (Glance deleted it:
                                                            Glance's user only reads this pool)
a failed upload's clone and its upload snapshot             Glance will never reference it
                                                            (``glance.location_state``: gone, or
                                                            queued/killed with nothing in flight)
upstream Cinder's ``<volume>.deleted``                      nothing depends on it
a Glance image in the trash that we made, or that Cinder    no clone depends on it, and Glance
volumes (only) were cloned from                             does not show it any more
a lock object whose holder died (cinder_ext.locks)          its holder's watch is gone
==========================================================  ===================================

With ``finish`` (the driver's periodic purge, which runs when cinder-volume starts), an
upload killed after its clone was complete is finished rather than rolled back: its
location is registered, and the image goes active with the volume's bytes.

Only trash entries whose source is a user's delete are touched, never rbd-mirror's,
a live migration's or librbd's own. Unknown is never read as "gone": when Glance does
not answer, the thing stays until a later run.
"""

import datetime
import logging
import time

from cinder_ext import exceptions as exc
from cinder_ext import footprint, locks, steps
from cinder_ext import glance as glance_mod
from cinder_ext.ceph import TRASH_NAMESPACE, USER_NAMESPACE
from cinder_ext.clone import Timer, clone_location
from cinder_ext.delete import where
from cinder_ext.footprint import (CLONE_SNAP_SUFFIX, CLONED_MARK, DELETED_SUFFIX,
                                  GLANCE_TRASH_MARK, TRASH_MARK, is_upload_snap)

LOG = logging.getLogger(__name__)

TRASH_SOURCE_USER = "USER"  # the binding reports names; older ones the enum value 0
FINISH_TIMEOUT = 60         # seconds for Glance to activate an image whose upload we finish


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _expired(entry, now):
    end = entry.get("deferment_end_time")
    if end is None:
        return True
    if end.tzinfo is not None:
        end = end.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return end <= now


def is_user_trash(entry):
    """True for a trash entry a user's delete made (rbd trash mv, glance_store, Cinder)."""
    return entry.get("source") in (TRASH_SOURCE_USER, 0)


def image_pools(stores_detail, fsid):
    """Pools to purge from a stores detail: those of the rbd stores whose fsid is `fsid`
    (this cluster's); a store whose fsid is unknown (null, missing) or another
    cluster's is not ours."""
    stores = stores_detail.get("stores", []) if isinstance(stores_detail, dict) else []
    return sorted({s["properties"]["pool"] for s in stores
                   if isinstance(s, dict) and s.get("type") == "rbd"
                   and isinstance(s.get("properties"), dict) and s["properties"].get("pool")
                   and fsid and s["properties"].get("fsid") == fsid})


class _Purge:
    """One purge run: every removal goes through act() (logged with its reason; a dry
    run records it and removes nothing)."""

    def __init__(self, cluster, volume_pool, image_pools, include_unmarked, scan_volumes,
                 glance, dry_run, timer, scan_limit=None, scan_after=None, finish=False):
        self.c, self.vpool, self.ipools = cluster, volume_pool, list(image_pools)
        self.finish, self.finished = finish, []
        self.include_unmarked, self.scan_volumes = include_unmarked, scan_volumes
        self.glance, self.dry_run, self.timer = glance, dry_run, timer
        self.now = _utcnow()
        self.removed, self.snaps_removed, self.plan, self.kept = [], [], [], []
        self.planned = set()
        self.scan_limit, self.scan_next = scan_limit, scan_after

    def act(self, what, reason, fn, snapshot=False):
        if what in self.planned:
            return False
        if self.dry_run:
            self.planned.add(what)
            self.plan.append({"what": what, "reason": reason})
            LOG.info("purge (dry run): would remove %s: %s", what, reason)
            return False
        fn()
        self.planned.add(what)
        self.plan.append({"what": what, "reason": reason})
        LOG.info("purge: removed %s: %s", what, reason)
        (self.snaps_removed if snapshot else self.removed).append(what)
        return True

    def keep(self, what, reason, trash_id=None):
        self.kept.append({"image": what, "trash_id": trash_id, "reason": reason})

    # -- one trash entry --------------------------------------------------------------
    def trash_entry(self, pool, entry, removable_snap, reason):
        """Remove one trash entry if nothing depends on it; returns None or why it stays."""
        if not _expired(entry, self.now):
            return f"deferred until {entry['deferment_end_time'].isoformat()}Z"
        tid = entry["id"]
        deps = self.c.children(pool, image_id=tid)
        if deps:
            if pool == self.vpool:
                self._unneeded_upload_snaps(pool, entry, deps)
            return "clones depend on it: " + ", ".join(map(where, deps))
        snaps = self.c.snaps(pool, None, image_id=tid)
        others = [s["original"] for s in snaps if not removable_snap(s)]
        if others:
            if pool == self.vpool:  # kept for the admin: not our upload snapshots with it
                self._unneeded_upload_snaps(pool, entry, [])
            return "it has snapshots that are not ours: " + ", ".join(others)
        what = f"{pool}/{entry['name']}"

        def remove():
            parent = self.c.parent_snap(pool, image_id=tid)
            if pool == self.vpool:  # its Glance parent, if Glance deleted it, stays ours
                footprint.claim_glance_parent(self.c, pool, image_id=tid, parent=parent)
            for s in snaps:
                self.c.remove_snap_by_id(pool, s["id"], image_id=tid)
                steps.reached("purge.snap_removed")
            try:
                self.c.trash_remove(pool, tid, name=entry["name"])
            except exc.CephPermissionDenied:  # librbd's answer while the deferment runs
                raise _Kept("deferment not over") from None
            except exc.CephBusy:  # a client has it open (a watch): the next run retries,
                # and the rest of this run goes on (the soak saw one end a whole run)
                raise _Kept("busy: a client has it open") from None
            steps.reached("purge.removed")
            self._drop_clone_snap(entry["name"], parent)
        try:
            self.act(what, reason, remove)
        except _Kept as k:
            return str(k)
        return None

    def _unneeded_upload_snaps(self, pool, entry, deps):
        """A trashed volume kept by clones (or by a snapshot not ours, the admin's to
        remove) keeps only what they need: an upload snapshot whose clone Glance deleted
        goes now, not with the entry (it holds the blocks the volume had at that upload,
        which no clone reads any more). Nothing clones a trashed volume, so no clone can
        appear meanwhile."""
        needed = {d["snap_id"] for d in deps}
        for s in self.c.snaps(pool, None, image_id=entry["id"], protected=False):
            if s["namespace"] != TRASH_NAMESPACE or not is_upload_snap(s["original"]) or s["id"] in needed:
                continue

            def remove(s=s):
                self.c.remove_snap_by_id(pool, s["id"], image_id=entry["id"])
                steps.reached("purge.snap_removed")
            self.act(f"{pool}/{entry['name']}@{s['original']}",
                     "upload snapshot of a trashed volume; its clone is gone", remove, snapshot=True)

    def _drop_clone_snap(self, name, parent):
        """A Cinder clone gone from the trash: its parent's <name>.clone_snap, which
        upstream's delete drops when it removes the clone itself, goes too once no clone
        needs it (else it pins the parent's overwritten data for the parent's life)."""
        if not parent or parent["pool"] != self.vpool or parent["snap"] != name + CLONE_SNAP_SUFFIX:
            return
        try:
            for s in self.c.snaps(self.vpool, parent["image"]):
                if s["name"] == parent["snap"] and not self.c.snap_has_children(
                        self.vpool, s["id"], name=parent["image"]):
                    self.c.remove_snap(self.vpool, parent["image"], parent["snap"])
                    self.snaps_removed.append(f"{self.vpool}/{parent['image']}@{parent['snap']}")
        except exc.CephError as e:  # the parent went meanwhile, or is busy: its own delete handles it
            LOG.warning("purge: %s/%s@%s stays: %s", self.vpool, parent["image"], parent["snap"], e)

    # -- the Cinder pool ----------------------------------------------------------------
    def volume_trash(self):
        for entry in self.c.trash_list_all(self.vpool):
            if not is_user_trash(entry):
                continue  # rbd-mirror's, a live migration's, librbd's own: never ours
            try:
                marked = self.c.metadata_get(self.vpool, TRASH_MARK, image_id=entry["id"])
            except exc.CephNotFound:
                continue  # removed meanwhile
            if marked is None and not self.include_unmarked:
                continue
            why = "trashed by delete-volume; no clone depends on it any more" if marked else \
                "Cinder's deferred deletion; nothing depends on it"
            try:
                # with nothing depending on it any more, upstream's clone snapshot of a
                # Cinder clone is ours to drop too: upstream's delete of that clone looks for
                # this volume by name, misses it in the trash, and leaves the snapshot
                kept = self.trash_entry(
                    self.vpool, entry,
                    lambda s: (s["namespace"] == TRASH_NAMESPACE or is_upload_snap(s["original"])
                               or s["original"].endswith(CLONE_SNAP_SUFFIX)),
                    why)
            except exc.CephNotFound:
                continue  # another purge took it meanwhile
            if kept:
                self.keep(f"{self.vpool}/{entry['name']}", kept, entry["id"])

    def _volumes_to_scan(self):
        """The volumes this run scans: all, or (scan_limit) the next scan_limit after the
        scan_after cursor, wrapping around, so that a periodic purge's cost per run stays
        bounded however many volumes the pool holds; scan_next is where the next run
        goes on."""
        names = sorted(n for n in self.c.list_images(self.vpool) if not n.endswith(DELETED_SUFFIX))
        if not self.scan_limit or len(names) <= self.scan_limit:
            return names
        after = self.scan_next or ""
        batch = [n for n in names if n > after][:self.scan_limit]
        if len(batch) < self.scan_limit:  # wrap around
            batch += names[:self.scan_limit - len(batch)]
        self.scan_next = batch[-1]
        return batch

    def volume_snapshots(self):
        """Upload snapshots in the trash namespace that no clone needs (Glance's user
        deleted the clone and could not drop them); with Glance, also an upload snapshot
        left in the user namespace by a failed upload whose image is an orphan."""
        for name in self._volumes_to_scan():
            try:
                for s in self.c.snaps(self.vpool, name):
                    if not is_upload_snap(s["original"]):
                        continue
                    if self.c.snap_has_children(self.vpool, s["id"], name=name):
                        continue
                    what = f"{self.vpool}/{name}@{s['original']}"

                    def remove(s=s, name=name):
                        self.c.remove_snap_by_id(self.vpool, s["id"], name=name)
                        steps.reached("purge.snap_removed")
                    if s["namespace"] == TRASH_NAMESPACE:
                        self.act(what, "upload snapshot in the trash namespace; its clone is "
                                 "gone", remove, snapshot=True)
                    elif s["namespace"] == USER_NAMESPACE and self.glance is not None:
                        # a failed upload's, made before its clone (or the clone is gone)
                        image_id = footprint.upload_snap_image_id(s["original"])
                        state = glance_mod.location_state(self.glance, image_id)
                        if state.orphaned:
                            self._locked_act(image_id, what, "upload snapshot of a failed "
                                             f"upload: {state.why}", remove, snapshot=True)
            except exc.CephNotFound:
                continue  # deleted meanwhile

    def deleted_volumes(self):
        """Upstream Cinder's <volume>.deleted: removed by upstream when its last Cinder
        clone goes, unless an upload snapshot (trash namespace, which Glance's user could
        not drop) held it then. Ours to finish once nothing depends on it."""
        for name in self.c.list_images(self.vpool):
            if not (name.endswith(DELETED_SUFFIX) and name.startswith("volume-")):
                continue
            what = f"{self.vpool}/{name}"
            try:
                deps = self.c.children(self.vpool, name)
                if deps:
                    self.keep(what, "clones depend on it: " + ", ".join(map(where, deps)))
                    continue
                snaps = self.c.snaps(self.vpool, name)
            except exc.CephNotFound:
                continue
            # no snapshot has clones: trash-namespace ones, our upload snapshots and
            # upstream's clone snapshots are leftovers; any other is someone's: keep
            others = [s["original"] for s in snaps if not (
                s["namespace"] == TRASH_NAMESPACE or is_upload_snap(s["original"])
                or s["original"].endswith(CLONE_SNAP_SUFFIX))]
            if others:
                self.keep(what, "it has snapshots that are not ours: " + ", ".join(others))
                continue

            def remove(name=name, snaps=snaps):
                footprint.claim_glance_parent(self.c, self.vpool, name)
                for s in snaps:
                    self.c.remove_snap_by_id(self.vpool, s["id"], name=name)
                    steps.reached("purge.snap_removed")
                self.c.remove(self.vpool, name)
                steps.reached("purge.removed")
            try:
                self.act(what, "Cinder deleted it (.deleted) and nothing depends on it any more",
                         remove)
            except exc.CephNotFound:
                continue

    # -- the Glance pools ---------------------------------------------------------------
    def image_trash(self, pool):
        for entry in self.c.trash_list_all(pool):
            name, tid = entry["name"], entry["id"]
            if not is_user_trash(entry) or not footprint.is_image_name(name):
                continue  # not a Glance delete's
            what = f"{pool}/{name}"
            try:
                ours = self._glance_trash_is_ours(pool, entry)
            except exc.CephNotFound:
                continue
            if not ours:
                continue  # Nova's, another tool's, or an image that merely has a UUID name
            if self.glance is not None:
                state = glance_mod.location_state(self.glance, name)
                if not state.orphaned:
                    self.keep(what, f"Glance may still use it: {state.why}", tid)
                    continue
            try:
                kept = self.trash_entry(pool, entry, lambda s: s["namespace"] == TRASH_NAMESPACE,
                                        f"Glance deleted it ({ours}) and no clone needs it")
            except exc.CephNotFound:
                continue
            if kept:
                self.keep(what, kept, tid)

    def _glance_trash_is_ours(self, pool, entry):
        """Why a UUID-named trash entry in a Glance pool is a Glance image we may reclaim,
        or None: an upload of ours, or an image that only volumes of our pool were cloned
        from. glance_store's delete moves an image with clones to the trash (its 'snap'
        goes to the trash namespace); whose clones they were is seen only while they
        exist, so the first purge that sees them, or the delete of the last one
        (footprint.claim_glance_parent), marks the entry. An image that Nova's disks
        (another pool) were cloned from is not ours to reclaim."""
        tid, name = entry["id"], entry["name"]
        if footprint.upload_of(self.c, self.vpool, pool, name, trash_id=tid) is not None:
            return "an upload of ours"
        if self.c.metadata_get(pool, GLANCE_TRASH_MARK, image_id=tid) is not None:
            return "marked by an earlier purge, or by the delete of its last clone"
        if self.c.metadata_get(pool, CLONED_MARK, image_id=tid) is not None:
            return "create-volume cloned it"
        if footprint.glance_trashed_for_our_volumes(self.c, self.vpool, pool, tid,
                                                    mark=not self.dry_run):
            return "glance_store trashed it; volumes of our pool were cloned from it"
        return None

    def _upload_locks(self, image_id, what):
        """Take image_id's upload lock in every image pool, so that no upload to it starts
        while we remove its leftovers: the held locks, or None (kept) when an upload runs."""
        held = []
        if self.dry_run:
            return held
        for pool in self.ipools:
            lock = locks.ImageLock(self.c, pool, image_id)
            try:
                held.append(lock.__enter__())
            except exc.UploadInProgress as e:
                self._release(held)
                self.keep(what, str(e))
                return None
            except exc.CephError as e:  # no write access to that pool: no upload there either
                LOG.debug("upload lock of %s in %s: %s", image_id, pool, e)
        return held

    @staticmethod
    def _release(held):
        for lock in reversed(held):
            lock.__exit__(None, None, None)

    def _locked_act(self, image_id, what, reason, fn, snapshot=False):
        held = self._upload_locks(image_id, what)
        if held is None:
            return False
        try:
            # an upload may have run and finished between our look and our lock: look again
            state = glance_mod.location_state(self.glance, image_id)
            if not state.orphaned:
                self.keep(what, state.why)
                return False
            return self.act(what, reason, fn, snapshot=snapshot)
        finally:
            self._release(held)

    def _locked_finish(self, pool, image_id, what):
        """Register the location of an upload that was killed once its clone was complete
        (its `snap` made) and before Glance had it: the image goes active with the bytes
        the volume had when the upload began, as the upload would have left it. True when
        done; False when it must be rolled back (Glance refused it) or left for later."""
        held = self._upload_locks(image_id, what)
        if held is None:
            return True  # an upload runs: it is the upload's to finish
        try:
            state = glance_mod.location_state(self.glance, image_id)
            if state.state != glance_mod.IDLE:
                self.keep(what, state.why)
                return True
            url = clone_location(self.c.fsid(), pool, image_id)
            if self.dry_run:
                self.plan.append({"what": what, "reason": f"would register {url}"})
                return True
            try:
                _, before = self.glance.add_location(image_id, url)
                glance_mod.wait_active(self.glance, image_id, FINISH_TIMEOUT, url, before)
            except exc.GlanceError as e:
                if isinstance(e, exc.LocationRefused) or (e.status is not None and 400 <= e.status < 500):
                    LOG.warning("purge: Glance refused %s for %s (%s): rolling it back", url,
                                what, e)
                    return False
                self.keep(what, f"registering {url} did not finish ({e}): next run")
                return True
            LOG.info("purge: finished %s: registered %s (its upload was interrupted after "
                     "its clone was complete)", what, url)
            self.finished.append(what)
            return True
        finally:
            self._release(held)

    def orphans(self, pool):
        """Clones of a failed upload: <image id> in a Glance pool that an upload of ours
        made (footprint.upload_of), whose Glance image is gone or will never reference
        it, with their upload snapshots."""
        snaps = {}

        def upload_snaps():  # listed once, and only if a parentless candidate needs it
            if "all" not in snaps:
                snaps["all"] = footprint.upload_snaps_of_pool(self.c, self.vpool)
            return snaps["all"]
        for name in self.c.list_images(pool):
            if not footprint.is_image_name(name):
                continue
            what = f"{pool}/{name}"
            try:
                found = footprint.upload_of(self.c, self.vpool, pool, name,
                                            upload_snaps=upload_snaps)
            except exc.CephNotFound:
                continue
            if found is None:
                continue  # not ours: an image Glance wrote, or another tool's
            state = glance_mod.location_state(self.glance, name)
            if not state.orphaned:
                continue
            if self.finish and found.complete and state.state == glance_mod.IDLE:
                if self._locked_finish(pool, name, what):
                    continue  # registered: the image is active with its clone
            if self.c.children(pool, name):
                self.keep(what, f"orphan ({state.why}) but clones depend on it")
                continue

            def remove(name=name, found=found):
                for s in self.c.snaps(pool, name):
                    self.c.remove_snap_by_id(pool, s["id"], name=name)
                self.c.remove(pool, name)  # Ceph drops a trash-namespace parent snapshot
                steps.reached("purge.removed")
                # a user-namespace one (the upload died before removing it) is ours too
                try:
                    vsnaps = self.c.snaps(self.vpool, found.volume)
                except exc.CephNotFound:
                    return  # the volume is gone, and its snapshots with it
                for s in vsnaps:
                    if s["original"] == found.upload_snap and not self.c.snap_has_children(
                            self.vpool, s["id"], name=found.volume):
                        self.c.remove_snap_by_id(self.vpool, s["id"], name=found.volume)
                        self.snaps_removed.append(f"{self.vpool}/{found.volume}@{s['original']}")
            kind = (" killed inside librbd's clone (no parent, no snapshot, no data)"
                    if found.kind == footprint.HALF_MADE else "")
            reason = (f"clone of a failed upload{kind}: {state.why}; with its upload snapshot "
                      f"{self.vpool}/{found.volume}@{found.upload_snap}")
            try:
                self._locked_act(name, what, reason, remove)
            except exc.CephNotFound:
                continue

    def round(self):
        count = len(self.removed) + len(self.snaps_removed)
        with self.timer.step("volume_trash"):
            self.volume_trash()
        if self.glance is not None:
            with self.timer.step("orphans"):
                for pool in self.ipools:
                    self.orphans(pool)
        with self.timer.step("volume_snapshots"):
            if self.scan_volumes:
                self.volume_snapshots()
        with self.timer.step("deleted_volumes"):
            self.deleted_volumes()
        with self.timer.step("image_trash"):
            for pool in self.ipools:
                self.image_trash(pool)
        return len(self.removed) + len(self.snaps_removed) > count


class _Kept(Exception):
    pass


def purge(cluster, volume_pool, image_pools=(), include_unmarked=False, scan_volumes=True,
          max_rounds=10, glance=None, dry_run=False, reap_locks=None, scan_limit=None,
          scan_after=None, finish=False):
    """Reclaim what deletions left once nothing depends on it. Idempotent, any order.

    volume_pool: Cinder's pool; image_pools: the Glance rbd pools of this cluster.
    1. volume-pool trash entries (source user) with our mark (and, with
       include_unmarked, Cinder's deferred deletions) that nothing needs;
    2. with glance (a cinder_ext.glance.Glance): clones of failed uploads in the image
       pools (named <image id>, parent our image-<image id>) whose image Glance will
       never reference, with their upload snapshots; with finish, one whose clone was
       complete (its `snap` made) and whose image is queued is registered instead;
    3. (scan_volumes) upload snapshots of live volumes no clone needs: trash namespace
       (Glance's user could not drop them), or user namespace of a failed upload (glance);
    4. upstream Cinder's <volume>.deleted that nothing needs any more;
    5. image-pool trash entries (source user, UUID name) Glance's delete left, ours by
       parent or mark, once no clone needs them.
    Removing one can free another (chains through both pools): rounds repeat while they
    remove something, so one purge reclaims a whole chain. dry_run: one round, nothing
    removed, result["would_remove"] lists what would go (later rounds may add more).
    scan_limit, scan_after: step 3 looks at scan_limit volumes after the scan_after
    cursor (a periodic run's bounded share); result["scan_next"] is the next cursor.
    reap_locks (default: scan_volumes): remove the lock objects dead holders left
    (cinder_ext.locks.reap_lock_objects).
    """
    timer, started = Timer(), time.monotonic()
    run = _Purge(cluster, volume_pool, image_pools, include_unmarked, scan_volumes, glance,
                 dry_run, timer, scan_limit, scan_after, finish)
    for _ in range(1 if dry_run else max_rounds):
        run.kept = []
        if not run.round():
            break
    reaped = []
    if (scan_volumes if reap_locks is None else reap_locks) and not dry_run:
        # the full purge also reaps the objects of releases that kept their locks in the
        # pools' default namespace (a listing of every object there)
        namespaces = [locks.LOCK_NAMESPACE, *([""] if scan_volumes else [])]
        with timer.step("lock_objects"):
            for pool in [volume_pool, *run.ipools]:
                for ns in namespaces:
                    # twice: a pass that breaks a dead holder's lock (after blocklisting
                    # it) leaves its object to the next attempt
                    for obj in (locks.reap_lock_objects(cluster, pool, ns)
                                + locks.reap_lock_objects(cluster, pool, ns)):
                        LOG.info("purge: removed %s: a lock object its dead holder left", obj)
                        reaped.append(obj)
    out = {"pools": [volume_pool, *run.ipools], "removed": run.removed, "kept": run.kept,
           "snapshots_removed": run.snaps_removed, "lock_objects_removed": reaped,
           "dry_run": dry_run, "scan_next": run.scan_next, "finished": run.finished}
    if dry_run:
        out["would_remove"] = run.plan
    else:
        out["reasons"] = {p["what"]: p["reason"] for p in run.plan}
    out["seconds"] = timer.report(started)
    return out
