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


def delete_volume(cluster, pool, name, mode=DEFERRED, delay=0, concurrency=3, leaf_remove=None):
    """Delete pool/name; returns a result dict (action: removed | trashed | flattened | ...).

    leaf_remove: how to remove a volume nothing depends on (default: librbd's remove;
    Cinder's driver passes upstream's own, which also tidies Cinder's clone chains).
    Raises VolumeBusy when Cinder snapshots block the delete (nothing changed).
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
        return _delete_volume(cluster, pool, name, mode, delay, concurrency, leaf_remove)
    finally:
        lock.__exit__()


def _delete_volume(cluster, pool, name, mode, delay, concurrency, leaf_remove):
    timer, started = Timer(), time.monotonic()
    result = {"volume": f"{pool}/{name}", "mode": mode, "dependents": []}
    with timer.step("inspect"):
        try:
            snaps = cluster.snaps(pool, name)
        except exc.CephNotFound:
            # already gone, or trashed by an earlier (possibly interrupted) attempt
            entry = next((e for e in cluster.trash_list(pool) if e["name"] == name), None)
            result["action"] = "already-trashed" if entry else "absent"
            return _done(result, timer, started)
        blocking = [s["name"] for s in snaps
                    if s["namespace"] == USER_NAMESPACE and not is_upload_snap(s["name"])]
        if blocking:
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

def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def _expired(entry, now):
    end = entry.get("deferment_end_time")
    if end is None:
        return True
    if end.tzinfo is not None:
        end = end.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return end <= now


def _purge_entry(cluster, pool, entry, now, removable_snap):
    """Remove one trash entry if nothing depends on it; returns None or why it stays."""
    if not _expired(entry, now):
        return f"deferred until {entry['deferment_end_time'].isoformat()}Z"
    tid = entry["id"]
    deps = cluster.children(pool, image_id=tid)
    if deps:
        return "clones depend on it: " + ", ".join(map(_where, deps))
    snaps = cluster.snaps(pool, None, image_id=tid)
    others = [s["original"] for s in snaps if not removable_snap(s)]
    if others:
        return "it has snapshots that are not ours: " + ", ".join(others)
    for s in snaps:
        cluster.remove_snap_by_id(pool, s["id"], image_id=tid)
        faults.point("purge.snap_removed")
    try:
        cluster.trash_remove(pool, tid, name=entry["name"])
    except exc.CephPermissionDenied:  # librbd's answer while the deferment runs
        return "deferment not over"
    faults.point("purge.removed")
    return None


def purge(cluster, volume_pool, image_pools=(), include_unmarked=False, scan_volumes=True,
          max_rounds=10):
    """Reclaim what deletions left once nothing depends on it. Idempotent, any order.

    1. volume-pool trash entries with our mark (and, with include_unmarked, Cinder's
       deferred deletions) whose deferment is over and that no clone needs;
    2. upload snapshots in the trash namespace of live volumes whose image is gone
       (Glance's user may not write the volume pool, so Ceph could not drop them);
    3. image-pool trash entries glance_store made (it trashes an image whose snapshot
       still had clones) once those clones are gone.
    Removing one entry can free another (a chain through both pools): rounds repeat
    while they remove something. scan_volumes=False skips step 2 (it opens every volume;
    librbd's remove drops such a snapshot anyway when the volume is deleted).
    """
    timer, started = Timer(), time.monotonic()
    now = _utcnow()
    removed, snaps_removed = [], []
    for _ in range(max_rounds):
        kept = []
        progress = _purge_round(cluster, volume_pool, image_pools, include_unmarked,
                                scan_volumes, now, timer, removed, kept, snaps_removed)
        if not progress:
            break
    return _done({"pools": [volume_pool, *image_pools], "removed": removed, "kept": kept,
                  "snapshots_removed": snaps_removed}, timer, started)


def _purge_round(cluster, volume_pool, image_pools, include_unmarked, scan_volumes, now, timer,
                 removed, kept, snaps_removed):
    count = len(removed) + len(snaps_removed)
    with timer.step("volume_trash"):
        for entry in cluster.trash_list(volume_pool):
            try:
                marked = cluster.metadata_get(volume_pool, TRASH_MARK, image_id=entry["id"])
            except exc.CephNotFound:
                continue  # removed meanwhile
            if marked is None and not include_unmarked:
                continue
            try:
                why = _purge_entry(
                    cluster, volume_pool, entry, now,
                    lambda s: s["namespace"] == TRASH_NAMESPACE or is_upload_snap(s["original"]))
            except exc.CephNotFound:
                continue  # another purge took it meanwhile
            what = f"{volume_pool}/{entry['name']}"
            if why:
                kept.append({"image": what, "trash_id": entry["id"], "reason": why})
            else:
                removed.append(what)
                LOG.info("purged %s from the trash: nothing depends on it any more", what)

    with timer.step("volume_snapshots"):
        for name in cluster.list_images(volume_pool) if scan_volumes else ():
            try:
                for s in cluster.snaps(volume_pool, name):
                    if (s["namespace"] == TRASH_NAMESPACE and is_upload_snap(s["original"])
                            and not cluster.snap_has_children(volume_pool, s["id"], name=name)):
                        cluster.remove_snap_by_id(volume_pool, s["id"], name=name)
                        faults.point("purge.snap_removed")
                        snaps_removed.append(f"{volume_pool}/{name}@{s['original']}")
            except exc.CephNotFound:
                continue  # deleted meanwhile

    with timer.step("image_trash"):
        for image_pool in image_pools:
            for entry in cluster.trash_list(image_pool):
                if not _IMAGE_NAME.match(entry["name"]):
                    continue  # not a Glance image
                try:
                    why = _purge_entry(cluster, image_pool, entry, now,
                                       lambda s: s["namespace"] == TRASH_NAMESPACE)
                except exc.CephNotFound:
                    continue
                what = f"{image_pool}/{entry['name']}"
                if why:
                    kept.append({"image": what, "trash_id": entry["id"], "reason": why})
                else:
                    removed.append(what)
                    LOG.info("purged %s from the trash: Glance deleted it and its last "
                             "clone is gone", what)
    return len(removed) + len(snaps_removed) > count


def _done(result, timer, started):
    result["seconds"] = dict(timer.steps, total=round(time.monotonic() - started, 4))
    return result
