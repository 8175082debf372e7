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
a failed upload's clone and its upload snapshot, named by   Glance will never reference it
an open record of the intent journal (cinder_ext.journal)   (``glance.location_state``: gone, or
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
not answer, when it answers 404 to an identity that does not see every image, or when an
upload lock cannot be taken, the thing stays until a later run.

The decisions are cinder_ext.purge_plan's (pure, unit-tested table by table); this module
reads what they ask for, in the order they ask, and acts under the locks.
"""

import dataclasses
import datetime
import logging
import time

from cinder_ext import exceptions as exc
from cinder_ext import footprint, journal, locks, steps
from cinder_ext import glance as glance_mod
from cinder_ext import purge_plan as plan
from cinder_ext.clone import Timer, clone_location
from cinder_ext.footprint import CLONE_SNAP_SUFFIX, DELETED_SUFFIX, TRASH_MARK

LOG = logging.getLogger(__name__)

FINISH_TIMEOUT = 60         # seconds for Glance to activate an image whose upload we finish


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def is_user_trash(entry):
    """True for a trash entry a user's delete made (rbd trash mv, glance_store, Cinder)."""
    return plan.is_user_trash(entry.get("source"))


def _decide(decision, inventory, readers):
    """Ask decision(inventory) until it needs nothing more read: each READ reads the field
    it names (readers[field]()), in the order the decision asks. The action and the
    inventory as read."""
    read = set()
    while True:
        action = decision(inventory)
        if action.kind != plan.READ:
            return action, inventory
        if action.field in read:  # a reader that answered "not read": never loop
            raise RuntimeError(f"purge: {action.field} asked for twice")
        read.add(action.field)
        inventory = dataclasses.replace(inventory, **{action.field: readers[action.field](action)})


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
                 glance, dry_run, timer, finish=False, glance_sees_all=False, budget=None):
        self.c, self.vpool, self.ipools = cluster, volume_pool, list(image_pools)
        self.deadline = None if budget is None else time.monotonic() + budget
        self.unfinished = {}  # phase -> how many of its objects wait for the next run
        self.journal = journal.Journal(cluster, volume_pool)
        self.records = {}  # image id -> the journal's record, read once per round
        self.sources = {}  # image id -> the journal's SourceRecord, likewise
        self.trashed = {}  # image pool -> names in its trash, as image_trash listed them
        self.forgotten = []  # completed uploads whose records went with their clones
        self.glance_sees_all = glance_sees_all
        self.said_untrusted = False
        self.finish, self.finished = finish, []
        self.include_unmarked, self.scan_volumes = include_unmarked, scan_volumes
        self.glance, self.dry_run, self.timer = glance, dry_run, timer
        self.now = _utcnow()
        self.removed, self.snaps_removed, self.plan, self.kept = [], [], [], []
        self.planned = set()

    def act(self, what, reason, fn, snapshot=False):
        if what in self.planned:
            return False
        if self.dry_run:
            self.planned.add(what)
            self.plan.append({"what": what, "reason": reason})
            LOG.info("purge (dry run): would remove %s: %s", what, reason)
            return False
        made = fn()
        self.planned.add(what)
        self.plan.append({"what": what, "reason": reason})
        if made is False:  # fn found nothing of `what` itself (only its record): say so
            LOG.info("purge: forgot the record of %s (%s): it was never made, or is gone",
                     what, reason)
            self.forgotten.append(what)
            return True
        LOG.info("purge: removed %s: %s", what, reason)
        (self.snaps_removed if snapshot else self.removed).append(what)
        return True

    def keep(self, what, reason, trash_id=None):
        self.kept.append({"image": what, "trash_id": trash_id, "reason": reason})

    def skip(self, what, error):
        """One object the run cannot handle (cannot open it, no caps, an inactive PG):
        logged and kept; the run goes on with the next."""
        LOG.warning("purge: %s stays: %s", what, error)
        self.keep(what, f"could not be handled: {error}")

    def location_state(self, image_id, tasks=True):
        """glance.location_state, where a 404 counts as gone only if our Glance identity
        sees every image (admin): to anyone else a member's private image is a 404 too."""
        state = glance_mod.location_state(self.glance, image_id, tasks=tasks)
        trusted = plan.trusted(state, self.glance_sees_all)
        if trusted is not state and not self.said_untrusted:
            self.said_untrusted = True
            LOG.warning("purge: Glance answers 404 for image %s, but the identity it asks "
                        "with does not see every image (no admin role): what only a 404 "
                        "would let go is kept", image_id)
        return trusted

    # -- one trash entry --------------------------------------------------------------
    def trash_entry(self, pool, entry, inv, **kw):
        """Decide one trash entry (plan.trash_entry, reading what it asks) and act: the
        action, KEEP with why it stays, or REMOVE once removed (planned in a dry run)."""
        tid = entry["id"]
        readers = {
            "mark": lambda a: self.c.metadata_get(pool, TRASH_MARK, image_id=tid),
            "claimed": lambda a: bool(footprint.glance_trashed_for_our_volumes(
                self.c, self.vpool, pool, entry["name"], tid, claim=not self.dry_run)),
            "glance": lambda a: self.location_state(entry["name"]),
            "children": lambda a: self.c.children(pool, image_id=tid),
            "snapshots": lambda a: self.c.snaps(pool, None, image_id=tid),
        }
        action, inv = _decide(lambda i: plan.trash_entry(i, self.now, **kw), inv, readers)
        if action.drop_unneeded_snaps:
            self._unneeded_upload_snaps(pool, entry, inv.children or [])
        if action.kind != plan.REMOVE:
            return action
        snaps = inv.snapshots

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
            self.act(f"{pool}/{entry['name']}", action.reason, remove)
        except _Kept as k:
            return plan.Action(plan.KEEP, str(k))
        return action

    def _unneeded_upload_snaps(self, pool, entry, deps):
        """A trashed volume kept by clones (or by a snapshot not ours, the admin's to
        remove) keeps only what they need: an upload snapshot whose clone Glance deleted
        goes now, not with the entry (it holds the blocks the volume had at that upload,
        which no clone reads any more)."""
        snaps = self.c.snaps(pool, None, image_id=entry["id"], protected=False)
        for s in plan.unneeded_upload_snaps(snaps, deps):
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
            what = f"{self.vpool}/{entry['name']}"
            inv = plan.TrashEntry(plan.VOLUME, self.vpool, entry["name"], entry.get("source"),
                                  entry.get("deferment_end_time"))
            try:
                # with nothing depending on it any more, upstream's clone snapshot of a
                # Cinder clone is ours to drop too: upstream's delete of that clone looks for
                # this volume by name, misses it in the trash, and leaves the snapshot
                action = self.trash_entry(self.vpool, entry, inv,
                                          include_unmarked=self.include_unmarked)
            except exc.CephNotFound:
                continue  # removed meanwhile, or another purge took it
            except exc.CephError as e:
                self.skip(what, e)
                continue
            if action.kind == plan.KEEP:
                self.keep(what, action.reason, entry["id"])

    def volume_snapshots(self):
        """Upload snapshots in the trash namespace that no clone needs: Glance's user
        deleted the clone and could not drop them (it only reads this pool). A failed
        upload's user-namespace snapshot is the journal's (journaled_uploads)."""
        for name in self.c.list_images(self.vpool):
            if name.endswith(DELETED_SUFFIX):
                continue
            try:
                for s in self.c.snaps(self.vpool, name):
                    if not plan.trashed_upload_snap(s):
                        continue
                    if self.c.snap_has_children(self.vpool, s["id"], name=name):
                        continue

                    def remove(s=s, name=name):
                        self.c.remove_snap_by_id(self.vpool, s["id"], name=name)
                        steps.reached("purge.snap_removed")
                    self.act(f"{self.vpool}/{name}@{s['original']}", "upload snapshot in the "
                             "trash namespace; its clone is gone", remove, snapshot=True)
            except exc.CephNotFound:
                continue  # deleted meanwhile
            except exc.CephError as e:
                self.skip(f"{self.vpool}/{name}", e)

    def deleted_volumes(self):
        """Upstream Cinder's <volume>.deleted: removed by upstream when its last Cinder
        clone goes, unless an upload snapshot (trash namespace, which Glance's user could
        not drop) held it then. Ours to finish once nothing depends on it."""
        for name in self.c.list_images(self.vpool):
            what = f"{self.vpool}/{name}"
            readers = {"children": lambda a, name=name: self.c.children(self.vpool, name),
                       "snapshots": lambda a, name=name: self.c.snaps(self.vpool, name)}
            try:
                action, inv = _decide(plan.deleted_volume, plan.DeletedVolume(name), readers)
                if action.kind == plan.KEEP:
                    self.keep(what, action.reason)
                if action.kind != plan.REMOVE:
                    continue

                def remove(name=name, snaps=inv.snapshots):
                    footprint.claim_glance_parent(self.c, self.vpool, name)
                    for s in snaps:
                        self.c.remove_snap_by_id(self.vpool, s["id"], name=name)
                        steps.reached("purge.snap_removed")
                    self.c.remove(self.vpool, name)
                    steps.reached("purge.removed")
                self.act(what, action.reason, remove)
            except exc.CephNotFound:
                continue
            except exc.CephError as e:
                self.skip(what, e)

    # -- the Glance pools ---------------------------------------------------------------
    def image_trash(self, pool):
        """Glance's deletes' trash entries (plan.trash_entry, IMAGE): ours by a journal
        record (or claimed now: footprint.glance_trashed_for_our_volumes), Glance asked
        only by an identity that sees every image; a removed one's records go."""
        entries = self.c.trash_list_all(pool)
        self.trashed[pool] = {e["name"] for e in entries}
        ask_glance = self.glance is not None and self.glance_sees_all
        for entry in self._resumed(f"trash.{pool}", entries, lambda e: e["name"]):
            name = entry["name"]
            what = f"{pool}/{name}"
            inv = plan.TrashEntry(plan.IMAGE, pool, name, entry.get("source"),
                                  entry.get("deferment_end_time"), record=self.records.get(name),
                                  source_record=self.sources.get(name))
            try:
                action = self.trash_entry(pool, entry, inv, ask_glance=ask_glance)
                if action.kind == plan.REMOVE and not self.dry_run:
                    self._forget(name)
            except exc.CephNotFound:
                continue
            except exc.CephError as e:
                self.skip(what, e)
                continue
            if action.kind == plan.KEEP:
                self.keep(what, action.reason, entry["id"])

    def _upload_locks(self, image_id):
        """Take image_id's upload lock in every image pool, so that no upload to it starts
        while we remove its leftovers: the held locks, and the lock's state for the plan
        (unless HELD, none is held)."""
        held = []
        if self.dry_run:
            return held, plan.UploadLock(plan.HELD)
        for pool in self.ipools:
            lock = locks.ImageLock(self.c, pool, image_id)
            try:
                held.append(lock.__enter__())
            except exc.UploadInProgress as e:
                self._release(held)
                return [], plan.UploadLock(plan.IN_FLIGHT, pool, str(e))
            except exc.CephError as e:  # unknown: an upload may run there; keep
                self._release(held)
                return [], plan.UploadLock(plan.LOCK_UNKNOWN, pool, str(e))
        return held, plan.UploadLock(plan.HELD)

    @staticmethod
    def _release(held):
        for lock in reversed(held):
            lock.__exit__(None, None, None)

    def _finish(self, record, what, url):
        """Register the location of an upload that was killed once its clone was complete
        (its `snap` made) and before Glance had it (its image idle): the image goes active
        with the bytes the volume had when the upload began, as the upload would have left
        it. True when done or left for later; False when Glance refused it (roll back)."""
        if self.dry_run:
            self.plan.append({"what": what, "reason": f"would register {url}"})
            return True
        try:
            _, before = self.glance.add_location(record.image_id, url)
            glance_mod.wait_active(self.glance, record.image_id, FINISH_TIMEOUT, url, before)
        except exc.GlanceError as e:
            if isinstance(e, exc.LocationRefused) or (e.status is not None and 400 <= e.status < 500):
                LOG.warning("purge: Glance refused %s for %s (%s): rolling it back", url, what, e)
                return False
            self.keep(what, f"registering {url} did not finish ({e}): next run")
            return True
        LOG.info("purge: finished %s: registered %s (its upload was interrupted after its "
                 "clone was complete)", what, url)
        self.journal.complete(record)
        self.finished.append(what)
        return True

    def out_of_time(self):
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _resumed(self, phase, items, key):
        """items in key order from just after where the last run of `phase` ran out of
        time (its cursor in the journal), around to where it began, while the time
        budget lasts; when it runs out, the cursor says where the next run starts."""
        items = sorted(items, key=key)
        start = self.journal.cursor(phase) if self.deadline is not None else ""
        ordered = [i for i in items if key(i) > start] + [i for i in items if key(i) <= start]
        for n, item in enumerate(ordered):
            if self.out_of_time():
                self.unfinished[phase] = len(ordered) - n
                LOG.info("purge: out of time; %d of %s wait for the next run, which starts "
                         "there", len(ordered) - n, phase)
                if n and not self.dry_run:
                    self.journal.set_cursor(phase, key(ordered[n - 1]))
                return
            yield item
        if start and not self.dry_run:
            self.journal.set_cursor(phase, "")  # a whole pass: the next starts at the first

    def journaled_uploads(self):
        """The journal's open records whose upload no longer runs (its image-id lock is
        free): an upload interrupted, or whose rollback was incomplete
        (plan.open_upload). One Glance request (or two) per open record; none for a
        completed upload. With a time budget, each run goes on where the last stopped."""
        open_records = [r for r in self.records.values() if r.open]
        for record in self._resumed("open_uploads", open_records, lambda r: r.image_id):
            what = f"{record.image_pool}/{record.image_id}"
            try:
                self._journaled_upload(record, what)
            except exc.CephError as e:
                self.skip(what, e)

    def _journaled_upload(self, record, what):
        """One record: its upload lock taken first (an upload in flight costs no Glance
        request), then one look at its image, then what the plan says, under the lock."""
        held = []

        def lock(_):
            nonlocal held
            held, state = self._upload_locks(record.image_id)
            return state
        readers = {"lock": lock,
                   "glance": lambda a: self.location_state(record.image_id, tasks=a.tasks),
                   "url": lambda a: clone_location(self.c.fsid(), record.image_pool,
                                                   record.image_id)}
        try:
            action, u = _decide(lambda i: plan.open_upload(i, self.ipools, self.finish),
                                plan.OpenUpload(record), readers)
            if action.kind == plan.COMPLETE and not self.dry_run:
                self.journal.complete(record)  # it ended before it could say so
            elif action.kind == plan.KEEP:
                self.keep(what, action.reason)
            elif action.kind == plan.FINISH and self._has_image_snap(record) \
                    and self._finish(record, what, u.url):
                return
            elif action.kind in (plan.FINISH, plan.REMOVE):
                self.act(what, action.reason, lambda: self._remove_upload(record))
        except _Kept as k:
            self.keep(what, str(k))
        finally:
            self._release(held)

    def _forget(self, name):
        """The records of an image whose trash entry the purge removed."""
        if name in self.records:
            self.journal.forget(self.records.pop(name))
        if name in self.sources:
            self.sources.pop(name)
            self.journal.forget_source(name)

    def completed_uploads(self):
        """Completed records whose clone is gone (plan.completed_records): the upload
        snapshot Glance's user could not drop goes (unless clones need it), then the
        record. Which clones are gone is one read of each pool's directory for all
        records at once (and the trash listing image_trash made)."""
        gone = []
        for pool, trashed in self.trashed.items():  # pools whose trash we could read
            done, sources = plan.completed_to_look_up(pool, trashed, self.records.values(),
                                                      self.sources.values())
            try:
                live = self.c.existing_images(pool, done + sources)
            except exc.CephError as e:
                self.skip(f"the images of {pool}", e)
                continue
            for action in plan.completed_records(done, sources, live):
                if action.kind == plan.FORGET:
                    gone.append(action.what)
                elif not self.dry_run:  # FORGET_SOURCE: Glance removed it, nothing to do
                    self.journal.forget_source(action.what)
        for image_id in gone:
            record = self.records[image_id]
            what = f"{record.image_pool}/{image_id}"
            try:
                if self.dry_run:
                    LOG.info("purge (dry run): would forget the record of %s: its clone is "
                             "gone", what)
                    continue
                self._remove_upload(record)
                self.forgotten.append(what)
                LOG.info("purge: forgot the record of %s: its clone is gone", what)
            except exc.CephError as e:
                self.skip(what, e)
            except _Kept as k:
                self.keep(what, str(k))

    def _has_image_snap(self, record):
        """True if the clone has glance_store's `snap` (protected here if the upload died
        between its creation and its protection: glance_store's delete unprotects it)."""
        try:
            snap = next((s for s in self.c.snaps(record.image_pool, record.image_id)
                         if s["name"] == footprint.IMAGE_SNAP), None)
            if snap is not None and not snap["protected"] and not self.dry_run:
                self.c.protect_snap(record.image_pool, record.image_id, footprint.IMAGE_SNAP)
            return snap is not None
        except exc.CephNotFound:
            return False

    def _remove_upload(self, record):
        """Remove what the record names (plan.upload_clone), then the record; True if the
        clone was there to remove. The clone (unless volumes were cloned from it: then it
        stays, and so does the record), its upload snapshot on the volume (none left once
        Ceph dropped a trash-namespace one)."""
        pool, image_id = record.image_pool, record.image_id
        removed = False
        action = plan.upload_clone(record)
        if action.kind == plan.READ:
            try:
                action = plan.upload_clone(record, self.c.children(pool, image_id))
                if action.kind == plan.KEEP:
                    raise _Kept(action.reason)
                for s in self.c.snaps(pool, image_id):
                    self.c.remove_snap_by_id(pool, s["id"], name=image_id)
                self.c.remove(pool, image_id)  # Ceph drops a trash-namespace parent snapshot
                removed = True
                steps.reached("purge.removed")
            except exc.CephNotFound:
                pass  # never made, or removed already
        vsnap = footprint.upload_snap_name(image_id)
        try:
            for s in self.c.snaps(record.volume_pool, None, image_id=record.volume_id):
                if s["original"] == vsnap and not self.c.snap_has_children(
                        record.volume_pool, s["id"], image_id=record.volume_id):
                    self.c.remove_snap_by_id(record.volume_pool, s["id"],
                                             image_id=record.volume_id)
                    self.snaps_removed.append(f"{record.volume_pool}/{record.volume}@{vsnap}")
        except exc.CephNotFound:
            pass  # the volume is gone, and its snapshots with it
        self.journal.forget(record)
        return removed

    def round(self):
        count = len(self.removed) + len(self.snaps_removed)
        # every record of the pool in one read: a run costs O(records), not O(pools)
        self.records = {r.image_id: r for r in self.journal.records()}
        self.sources = {r.image_id: r for r in self.journal.records(journal.SourceRecord)}
        with self.timer.step("volume_trash"):
            self.volume_trash()
        if self.glance is not None:
            with self.timer.step("journaled_uploads"):
                self.journaled_uploads()
        with self.timer.step("volume_snapshots"):
            if self.scan_volumes:
                self.volume_snapshots()
        with self.timer.step("deleted_volumes"):
            self.deleted_volumes()
        with self.timer.step("image_trash"):
            for pool in self.ipools:
                try:
                    self.image_trash(pool)
                except exc.CephError as e:  # its trash unreadable: the other pools go on
                    self.skip(f"the trash of {pool}", e)
        with self.timer.step("completed_uploads"):
            self.completed_uploads()
        return len(self.removed) + len(self.snaps_removed) > count


class _Kept(Exception):
    pass


def purge(cluster, volume_pool, image_pools=(), include_unmarked=False, scan_volumes=True,
          max_rounds=10, glance=None, dry_run=False, reap_locks=None, finish=False,
          glance_sees_all=None, budget=None):
    """Reclaim what deletions left once nothing depends on it. Idempotent, any order.

    volume_pool: Cinder's pool; image_pools: the Glance rbd pools of this cluster.
    1. volume-pool trash entries (source user) with our mark (and, with
       include_unmarked, Cinder's deferred deletions) that nothing needs;
    2. with glance (a cinder_ext.glance.Glance): the uploads the intent journal
       (cinder_ext.journal) holds open and that no longer run, whose image Glance will
       never reference: what the record names (clone, upload snapshot), then the record;
       with finish, one whose clone was complete (its `snap` made) and whose image is
       queued with nothing in flight is registered instead. Nothing else in the image
       pools is looked at;
    3. (scan_volumes) upload snapshots of live volumes in the trash namespace that no
       clone needs (Glance's user could not drop them);
    4. upstream Cinder's <volume>.deleted that nothing needs any more;
    5. image-pool trash entries (source user, UUID name) Glance's delete left, ours by
       a journal record or mark, once no clone needs them.
    glance_sees_all: whether glance's identity sees every image (default: asked of it);
    if not, a 404 is "unknown", never "gone". One object that cannot be handled is
    logged and kept; the run goes on.
    Removing one can free another (chains through both pools): rounds repeat while they
    remove something, so one purge reclaims a whole chain. dry_run: one round, nothing
    removed, result["would_remove"] lists what would go (later rounds may add more).
    6. completed journal records whose clone is gone: the upload snapshot no clone
       needs, then the record (one directory read per pool for all of them).
    reap_locks (default: scan_volumes): remove the lock objects dead holders left
    (cinder_ext.locks.reap_lock_objects).
    budget: seconds; once spent, no new open record or Glance trash entry is started,
    result["unfinished"] counts what waits, and the next run starts where this one
    stopped (a cursor in the journal), so every entry is reached however many there are.
    """
    timer, started = Timer(), time.monotonic()
    if glance is not None and glance_sees_all is None:
        glance_sees_all = bool(glance.sees_every_image())
    run = _Purge(cluster, volume_pool, image_pools, include_unmarked, scan_volumes, glance,
                 dry_run, timer, finish, bool(glance_sees_all), budget)
    for _ in range(1 if dry_run else max_rounds):
        run.kept = []
        if not run.round() or run.out_of_time():
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
           "dry_run": dry_run, "records_forgotten": run.forgotten,
           "unfinished": run.unfinished,
           "finished": run.finished}
    if dry_run:
        out["would_remove"] = run.plan
    else:
        out["reasons"] = {p["what"]: p["reason"] for p in run.plan}
    out["seconds"] = timer.report(started)
    return out
