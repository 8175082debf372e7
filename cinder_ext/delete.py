"""Delete volumes that clones depend on, and purge what they leave: one place for both.

A volume uploaded by clone is the parent of a Glance image (clone v2: through a
snapshot ``image-<image id>`` kept in Ceph's trash namespace); a volume created from
an image is the child of the image's ``snap``. Deleting a volume that has clones:

* ``deferred`` (default): mark the volume (image metadata ``TRASH_MARK``) and move it to
  the RBD trash. Constant time; the clones keep reading through it. ``purge()`` removes
  it once no clone depends on it any more.
* ``flatten``: flatten every direct clone (O(size) inside Ceph, at most
  ``rbd_concurrent_flatten_operations`` at a time), then remove the volume.

Upstream Cinder 29 tries ``remove``, flattens every child on failure (the Glance image
included) and, when the remove still fails on a trashed snapshot, moves the volume to
the trash with that snapshot, where its trash purge cannot remove it. Here nothing is
flattened unless asked, and every trash entry we make carries the mark ``purge()``
looks for.

Each step leaves a state a retry or ``purge()`` finishes: the mark alone is harmless
(the volume is whole), a trashed volume is purged, a half-flattened set of clones is
still a set of whole images. Step boundaries are fault points (cinder_ext.faults).
"""

import concurrent.futures
import datetime
import logging
import re
import time

from cinder_ext import exceptions as exc
from cinder_ext import faults
from cinder_ext.ceph import TRASH_NAMESPACE, USER_NAMESPACE
from cinder_ext.clone import VOLUME_SNAP_PREFIX, Timer, VolumeLock, VolumeLocked
from cinder_ext.independent import made_from

LOG = logging.getLogger(__name__)

DEFERRED, FLATTEN = "deferred", "flatten"
MODES = (DEFERRED, FLATTEN)

# RBD image metadata on a volume moved to the trash because clones still depend on it:
# marks it for purge() (metadata survives the move); the value lists the dependents
TRASH_MARK = "cinder-rbd-clone.parent-of-images"

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UPLOAD_SNAP = re.compile(re.escape(VOLUME_SNAP_PREFIX) + f"({_UUID})$")
_IMAGE_NAME = re.compile(f"^{_UUID}$")


def is_upload_snap(name):
    """True for the volume snapshot a clone upload makes (``image-<image id>``)."""
    return bool(_UPLOAD_SNAP.match(name or ""))


def _where(dep):
    return f"{dep['pool']}/{dep['image']}" + (" (in trash)" if dep.get("trash") else "")


REFUSE, KEEP = "refuse", "keep"


def delete_volume(cluster, pool, name, mode=DEFERRED, delay=0, concurrency=3, leaf_remove=None,
                  foreign_snapshots=REFUSE):
    """Delete pool/name; returns a result dict (action: removed | trashed | flattened | ...).

    leaf_remove: how to remove a volume nothing depends on (default: librbd's remove;
    Cinder's driver passes upstream's own, which also tidies Cinder's clone chains).
    foreign_snapshots: what snapshots that are not ours (a user's, or one Cinder forgot
    when an admin unmanaged it) do: REFUSE raises VolumeBusy (nothing changed: the CLI);
    KEEP deletes as upstream's driver does (the volume goes to the trash with them, or
    leaf_remove handles them), which is what Cinder's callers expect.
    """
    if mode not in MODES:
        raise exc.ConfigError(f"delete mode {mode!r}: expected one of {', '.join(MODES)}")
    # exclusive against uploads of the volume: none is between its snapshot and its clone
    # (whose snapshot would look stale) or reading it while we run (clone.VolumeLock)
    try:
        lock = VolumeLock(cluster, pool, name, shared=False).__enter__()
    except VolumeLocked as e:
        raise exc.VolumeBusy(f"{e}; nothing was changed, delete it again") from None
    try:
        return _delete_volume(cluster, pool, name, mode, delay, concurrency, leaf_remove,
                              foreign_snapshots)
    finally:
        lock.__exit__()


def _delete_volume(cluster, pool, name, mode, delay, concurrency, leaf_remove,
                   foreign_snapshots):
    timer, started = Timer(), time.monotonic()
    result = {"volume": f"{pool}/{name}", "mode": mode, "dependents": []}
    with timer.step("inspect"):
        try:
            snaps = cluster.snaps(pool, name)
        except exc.CephNotFound:
            # already gone, or trashed by an earlier (possibly interrupted) attempt
            entry = next((e for e in cluster.trash_list_all(pool) if e["name"] == name), None)
            result["action"] = "already-trashed" if entry else "absent"
            return _done(result, timer, started)
        blocking = [s["name"] for s in snaps
                    if s["namespace"] == USER_NAMESPACE and not is_upload_snap(s["name"])]
        if blocking and foreign_snapshots == REFUSE:
            raise exc.VolumeBusy(f"volume {pool}/{name} has snapshots ({', '.join(blocking)}): "
                                 "delete them first; nothing was changed")
        deps = cluster.children(pool, name)
    result["dependents"] = [_where(d) for d in deps]
    faults.point("delete.inspected")

    # snapshots of ours no clone needs: a clone v1 upload's snapshot after Glance deleted
    # the image, or a trashed one Glance's user (read-only on this pool) could not drop
    with timer.step("stale_snapshots"):
        needed = {d["snap_id"] for d in deps}
        stale = [s for s in snaps if is_upload_snap(s["original"]) and s["id"] not in needed]
        for s in stale:
            cluster.remove_snap_by_id(pool, s["id"], name=name)
        if stale:
            faults.point("delete.stale_snaps_removed")
    result["stale_snapshots_removed"] = [s["original"] for s in stale]

    if not deps:
        with timer.step("remove"):
            (leaf_remove or (lambda: cluster.remove(pool, name)))()
            faults.point("delete.removed")
        result["action"] = "removed"
    elif mode == DEFERRED:
        with timer.step("trash"):
            cluster.metadata_set(pool, name, TRASH_MARK, ",".join(_where(d) for d in deps))
            faults.point("delete.marked")
            cluster.trash_move(pool, name, max(0, int(delay)))
            faults.point("delete.trashed")
        result["action"] = "trashed"
        result["delay"] = max(0, int(delay))
        LOG.info("volume %s/%s moved to the trash: %s depend on it; purge removes it once "
                 "they are gone", pool, name, ", ".join(result["dependents"]))
    else:
        with timer.step("flatten"):
            flatten_all(cluster, deps, concurrency)
        with timer.step("remove"):
            # a clone made while we flattened would lose its parent: look again
            left = cluster.children(pool, name)
            if left:
                raise exc.VolumeBusy(f"volume {pool}/{name}: new clones appeared while its "
                                     f"dependents were flattened ({', '.join(map(_where, left))}); "
                                     "the volume is intact, delete it again")
            # a trashed snapshot goes with its last clone (we may write this pool);
            # a clone v1 upload's protected snapshot does not
            for s in cluster.snaps(pool, name):
                if is_upload_snap(s["original"]):
                    cluster.remove_snap_by_id(pool, s["id"], name=name)
            cluster.remove(pool, name)
            faults.point("delete.removed")
        result["action"] = "flattened"
    return _done(result, timer, started)


def flatten_all(cluster, deps, concurrency):
    """Flatten every clone in deps, at most `concurrency` at a time (0: all at once)."""
    if not deps:
        return
    for pool in {d["pool"] for d in deps}:
        cluster.ioctx(pool)  # open once, before the threads share the connection
    workers = len(deps) if concurrency <= 0 else min(concurrency, len(deps))

    def one(dep):
        if dep.get("trash"):
            cluster.flatten(dep["pool"], image_id=dep["id"])
        else:
            cluster.flatten(dep["pool"], dep["image"])
        faults.point("delete.flattened")
        LOG.info("flattened %s", _where(dep))

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [f.exception() for f in [pool.submit(one, d) for d in deps]]
    errors = [e for e in errors if e is not None]
    if errors:
        raise errors[0]


# -- purge --------------------------------------------------------------------------------
#
# Who reclaims what (least privilege: Glance's Ceph user only reads the Cinder pool):
#   a volume trashed because images depend on it        -> purge, once they are gone
#   an image Glance trashed because volumes depend on it -> purge, once they are gone
#   an upload snapshot in the trash namespace            -> Ceph when Cinder removes the
#       clone; purge when Glance did (Glance's user may not write the Cinder pool)
#   <volume>.deleted (upstream's .clone_snap path)       -> purge, once nothing needs it
#   a clone + upload snapshot of a failed upload         -> purge (orphans, with Glance)
# Only trash entries with source USER are ever touched (never mirroring, migration,
# removing, user_parent: rbd-mirror, live migration and librbd itself own those).

TRASH_SOURCE_USER = "USER"  # the binding reports names; older ones the enum value 0

# RBD image metadata on a Glance image in the trash that purge knows is a Glance image
# (glance_store's delete left its snapshot 'snap' in the trash namespace) or on one that
# create-volume cloned (cinder_ext.create.CLONED_MARK): either makes it ours to reclaim
GLANCE_TRASH_MARK = "cinder-rbd-clone.glance-trashed"
CLONED_MARK = "cinder-rbd-clone.volumes-cloned-from-it"  # set by cinder_ext.create
GLANCE_SNAP = "snap"  # glance_store's snapshot name

DELETED_SUFFIX = ".deleted"        # upstream Cinder's name for a deleted volume with clones
CLONE_SNAP_SUFFIX = ".clone_snap"  # upstream Cinder's snapshot for a cloned volume

# Glance image states in which the image may still get our clone as its location
_IN_FLIGHT = ("saving", "importing", "uploading")


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


def _orphan_state(glance, image_id):
    """(True, why) when Glance will never reference a clone named image_id, else (False, why).

    Unknown is unsafe: an error from Glance, a task listing that fails, or an import task
    property all count as "in flight" (issue 15)."""
    try:
        image = glance.get_image(image_id)
    except exc.GlanceNotFound:
        return True, "its Glance image is gone (404)"
    except exc.CinderExtError as e:
        return False, f"Glance did not tell about image {image_id} ({e})"
    status = image.get("status")
    if status == "deleted":
        return True, "its Glance image is deleted"
    if status == "active":
        return False, "its Glance image is active"
    if status in _IN_FLIGHT:
        return False, f"its Glance image is {status}"
    if image.get("os_glance_import_task"):
        return False, "its Glance image has an import task in flight"
    if image.get("direct_url") or any(loc.get("url") for loc in image.get("locations") or []):
        return False, f"its Glance image ({status}) has a location"
    try:
        tasks = _location_tasks(glance, image_id)
    except exc.CinderExtError as e:
        return False, f"listing the tasks of image {image_id} failed ({e}): may be in flight"
    running = [t for t in tasks if t.get("type") == "location_import"
               and t.get("status") in ("pending", "processing")]
    if running:
        return False, f"Glance's location task {running[0].get('id')} is {running[0].get('status')}"
    return True, f"its Glance image is {status} with no location and no task in flight"


def _location_tasks(glance, image_id):
    """The image's tasks; raises when Glance does not tell (glance.image_tasks says [])."""
    strict = getattr(glance, "image_tasks_strict", None)
    if strict is not None:
        return strict(image_id)
    if getattr(glance, "session", None) is None:
        raise exc.GlanceError("this Glance client cannot tell task listing errors apart")
    return glance.request("GET", f"/v2/images/{image_id}/tasks",
                          f"list tasks of image {image_id}").json().get("tasks", [])


class _Purge:
    """One purge run: every removal goes through act() (logged with its reason; a dry
    run records it and removes nothing)."""

    def __init__(self, cluster, volume_pool, image_pools, include_unmarked, scan_volumes,
                 glance, dry_run, timer, scan_limit=None, scan_after=None):
        self.c, self.vpool, self.ipools = cluster, volume_pool, list(image_pools)
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
            return "clones depend on it: " + ", ".join(map(_where, deps))
        snaps = self.c.snaps(pool, None, image_id=tid)
        others = [s["original"] for s in snaps if not removable_snap(s)]
        if others:
            return "it has snapshots that are not ours: " + ", ".join(others)
        what = f"{pool}/{entry['name']}"

        def remove():
            for s in snaps:
                self.c.remove_snap_by_id(pool, s["id"], image_id=tid)
                faults.point("purge.snap_removed")
            try:
                self.c.trash_remove(pool, tid, name=entry["name"])
            except exc.CephPermissionDenied:  # librbd's answer while the deferment runs
                raise _Kept("deferment not over") from None
            faults.point("purge.removed")
        try:
            self.act(what, reason, remove)
        except _Kept as k:
            return str(k)
        return None

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
                kept = self.trash_entry(
                    self.vpool, entry,
                    lambda s: s["namespace"] == TRASH_NAMESPACE or is_upload_snap(s["original"]),
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
                        faults.point("purge.snap_removed")
                    if s["namespace"] == TRASH_NAMESPACE:
                        self.act(what, "upload snapshot in the trash namespace; its clone is "
                                 "gone", remove, snapshot=True)
                    elif s["namespace"] == USER_NAMESPACE and self.glance is not None:
                        # a failed upload's, made before its clone (or the clone is gone)
                        image_id = s["original"][len(VOLUME_SNAP_PREFIX):]
                        orphan, why = _orphan_state(self.glance, image_id)
                        if orphan:
                            self._locked_act(image_id, what, "upload snapshot of a failed "
                                             f"upload: {why}", remove, snapshot=True)
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
                    self.keep(what, "clones depend on it: " + ", ".join(map(_where, deps)))
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
                for s in snaps:
                    self.c.remove_snap_by_id(self.vpool, s["id"], name=name)
                    faults.point("purge.snap_removed")
                self.c.remove(self.vpool, name)
                faults.point("purge.removed")
            try:
                self.act(what, "Cinder deleted it (.deleted) and nothing depends on it any more",
                         remove)
            except exc.CephNotFound:
                continue

    # -- the Glance pools ---------------------------------------------------------------
    def _our_upload_parent(self, pool, name=None, image_id=None, expect_id=None):
        """The parent spec if the image is a clone of our upload snapshot
        (image-<expect_id> in the Cinder pool), else None."""
        try:
            parent = self.c.parent_snap(pool, name, image_id=image_id)
        except exc.CephNotFound:
            return None
        if (parent and parent["pool"] == self.vpool and is_upload_snap(parent["original"])
                and parent["original"] == VOLUME_SNAP_PREFIX + expect_id):
            return parent
        return None

    def image_trash(self, pool):
        for entry in self.c.trash_list_all(pool):
            name, tid = entry["name"], entry["id"]
            if not is_user_trash(entry) or not _IMAGE_NAME.match(name):
                continue  # not a Glance delete's
            what = f"{pool}/{name}"
            try:
                ours = self._glance_trash_is_ours(pool, entry)
            except exc.CephNotFound:
                continue
            if not ours:
                continue  # another tool's image that merely has a UUID name
            if self.glance is not None:
                gone, why = _orphan_state(self.glance, name)
                if not gone and "is active" in why:
                    self.keep(what, f"Glance still shows it: {why}", tid)
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
        or None. Marks it while glance_store's signature is visible, since that goes
        with the last clone."""
        tid, name = entry["id"], entry["name"]
        if self._our_upload_parent(pool, image_id=tid, expect_id=name):
            return "a clone upload of ours"
        if self.c.metadata_get(pool, GLANCE_TRASH_MARK, image_id=tid) is not None:
            return "marked by an earlier purge"
        if self.c.metadata_get(pool, CLONED_MARK, image_id=tid) is not None:
            return "create-volume cloned it"
        # glance_store's delete: unprotect + remove 'snap' (to the trash namespace while
        # clones need it), then trash the image
        if any(s["namespace"] == TRASH_NAMESPACE and s["original"] == GLANCE_SNAP
               for s in self.c.snaps(pool, None, image_id=tid)):
            if not self.dry_run:
                self.c.metadata_set_by_id(pool, tid, GLANCE_TRASH_MARK, "1")
            return "glance_store trashed it"
        return None

    def _upload_locks(self, image_id, what):
        """Take image_id's upload lock in every image pool, so that no upload to it starts
        while we remove its leftovers: the held locks, or None (kept) when an upload runs."""
        from cinder_ext.clone import ImageLock, UploadInProgress
        held = []
        if self.dry_run:
            return held
        for pool in self.ipools:
            lock = ImageLock(self.c, pool, image_id)
            try:
                held.append(lock.__enter__())
            except UploadInProgress as e:
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
            orphan, why = _orphan_state(self.glance, image_id)
            if not orphan:
                self.keep(what, why)
                return False
            return self.act(what, reason, fn, snapshot=snapshot)
        finally:
            self._release(held)

    def _our_independent_upload(self, pool, name):
        """An independent upload's image (cinder_ext.independent: flattened, so without
        a parent, and ours by its mark naming a volume of our pool), described as the
        parent its clone had ({'pool', 'image', 'original'}); else None."""
        marked = made_from(self.c, pool, name)
        if marked is None or marked[0] != self.vpool:
            return None
        return {"pool": marked[0], "image": marked[1], "original": VOLUME_SNAP_PREFIX + name}

    def _half_made_clone(self, pool, name, upload_snaps):
        """librbd's clone creates the child, then attaches its parent: an upload killed in
        between leaves <image id> with no parent, no snapshot and no data (what a retry's
        CloneUpload._half_made removes), next to its upload snapshot image-<image id> on
        the volume. Ours only with that snapshot (a plain image of another tool looks the
        same): described as the parent it was to have, else None. upload_snaps: a
        callable giving {upload snapshot name: volume} of the Cinder pool."""
        if self.c.snaps(pool, name):
            return None  # every image Glance wrote has its 'snap': no listing for those
        volume = upload_snaps().get(VOLUME_SNAP_PREFIX + name)
        if volume is None or self.c.has_data(pool, name):
            return None
        return {"pool": self.vpool, "image": volume, "original": VOLUME_SNAP_PREFIX + name,
                "half_made": True}

    def _upload_snaps(self):
        """{upload snapshot name (original, any namespace): volume} of the Cinder pool."""
        out = {}
        for vol in self.c.list_images(self.vpool):
            try:
                for s in self.c.snaps(self.vpool, vol):
                    if is_upload_snap(s["original"]):
                        out[s["original"]] = vol
            except exc.CephNotFound:
                continue
        return out

    def orphans(self, pool):
        """Clones of a failed upload: <image id> in a Glance pool, a clone of our upload
        snapshot image-<image id> (or, flattened by an independent upload, marked as
        one), whose Glance image is gone or will never reference it."""
        snaps = {}

        def upload_snaps():  # listed once, and only if a parentless candidate needs it
            if "all" not in snaps:
                snaps["all"] = self._upload_snaps()
            return snaps["all"]
        for name in self.c.list_images(pool):
            if not _IMAGE_NAME.match(name):
                continue
            what = f"{pool}/{name}"
            try:
                parent = (self._our_upload_parent(pool, name, expect_id=name)
                          or self._our_independent_upload(pool, name)
                          or self._half_made_clone(pool, name, upload_snaps))
            except exc.CephNotFound:
                continue
            if parent is None:
                continue  # not a clone of ours: an image Glance wrote, or another tool's
            orphan, why = _orphan_state(self.glance, name)
            if not orphan:
                continue
            if self.c.children(pool, name):
                self.keep(what, f"orphan ({why}) but clones depend on it")
                continue

            def remove(name=name, parent=parent):
                for s in self.c.snaps(pool, name):
                    self.c.remove_snap_by_id(pool, s["id"], name=name)
                self.c.remove(pool, name)  # Ceph drops a trash-namespace parent snapshot
                faults.point("purge.removed")
                # a user-namespace one (the upload died before removing it) is ours too
                vol = parent["image"]
                for s in self.c.snaps(self.vpool, vol) if vol else ():
                    if s["original"] == parent["original"] and not self.c.snap_has_children(
                            self.vpool, s["id"], name=vol):
                        self.c.remove_snap_by_id(self.vpool, s["id"], name=vol)
                        self.snaps_removed.append(f"{self.vpool}/{vol}@{s['original']}")
            kind = (" killed inside librbd's clone (no parent, no snapshot, no data)"
                    if parent.get("half_made") else "")
            reason = (f"clone of a failed upload{kind}: {why}; with its upload snapshot "
                      f"{self.vpool}/{parent['image']}@{parent['original']}")
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
          scan_after=None):
    """Reclaim what deletions left once nothing depends on it. Idempotent, any order.

    volume_pool: Cinder's pool; image_pools: the Glance rbd pools of this cluster.
    1. volume-pool trash entries (source user) with our mark (and, with
       include_unmarked, Cinder's deferred deletions) that nothing needs;
    2. with glance (a cinder_ext.glance.Glance): clones of failed uploads in the image
       pools (named <image id>, parent our image-<image id>) whose image Glance will
       never reference, with their upload snapshots;
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
    (cinder_ext.clone.reap_lock_objects; it lists every object of each pool, so the
    cheap periodic run leaves it to the full one).
    """
    timer, started = Timer(), time.monotonic()
    run = _Purge(cluster, volume_pool, image_pools, include_unmarked, scan_volumes, glance,
                 dry_run, timer, scan_limit, scan_after)
    for _ in range(1 if dry_run else max_rounds):
        run.kept = []
        if not run.round():
            break
    locks = []
    if (scan_volumes if reap_locks is None else reap_locks) and not dry_run:
        from cinder_ext import clone
        reap = getattr(clone, "reap_lock_objects", None)
        with timer.step("lock_objects"):
            for pool in [volume_pool, *run.ipools] if reap else ():
                # twice: a pass that breaks a dead holder's lock (after blocklisting it)
                # leaves its object to the next attempt
                for obj in reap(cluster, pool) + reap(cluster, pool):
                    LOG.info("purge: removed %s: a lock object its dead holder left", obj)
                    locks.append(obj)
    out = {"pools": [volume_pool, *run.ipools], "removed": run.removed, "kept": run.kept,
           "snapshots_removed": run.snaps_removed, "lock_objects_removed": locks,
           "dry_run": dry_run, "scan_next": run.scan_next}
    if dry_run:
        out["would_remove"] = run.plan
    else:
        out["reasons"] = {p["what"]: p["reason"] for p in run.plan}
    return _done(out, timer, started)


def _done(result, timer, started):
    result["seconds"] = dict(timer.steps, total=round(time.monotonic() - started, 4))
    return result
