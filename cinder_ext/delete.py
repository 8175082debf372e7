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
still a set of whole images. Step boundaries are cinder_ext.steps names. What a delete
leaves is reclaimed by cinder_ext.purge.
"""

import concurrent.futures
import logging
import time

from cinder_ext import exceptions as exc
from cinder_ext import footprint, steps
from cinder_ext.ceph import USER_NAMESPACE
from cinder_ext.clone import Timer
from cinder_ext.footprint import TRASH_MARK, is_upload_snap
from cinder_ext.locks import VolumeLock, VolumeLocked

LOG = logging.getLogger(__name__)

DEFERRED, FLATTEN = "deferred", "flatten"
MODES = (DEFERRED, FLATTEN)

def where(dep):
    return f"{dep['pool']}/{dep['image']}" + (" (in trash)" if dep.get("trash") else "")


REFUSE, KEEP = "refuse", "keep"


def delete_volume(cluster, pool, name, mode=DEFERRED, delay=0, concurrency=3, leaf_remove=None,
                  foreign_snapshots=REFUSE):
    """Delete pool/name; returns a result dict (action: removed | trashed | flattened | ...).

    leaf_remove: how to remove a volume nothing depends on (default: librbd's remove,
    after footprint.claim_glance_parent; Cinder's driver passes upstream's own, which also
    tidies Cinder's clone chains, and claims in its _get_clone_info).
    foreign_snapshots: what snapshots that are not ours (a user's, or one Cinder forgot
    when an admin unmanaged it) do: REFUSE raises VolumeBusy (nothing changed: the CLI);
    KEEP deletes as upstream's driver does (the volume goes to the trash with them, or
    leaf_remove handles them), which is what Cinder's callers expect.
    """
    if mode not in MODES:
        raise exc.ConfigError(f"delete mode {mode!r}: expected one of {', '.join(MODES)}")
    # exclusive against uploads of the volume: none is between its snapshot and its clone
    # (whose snapshot would look stale) or reading it while we run (locks.VolumeLock)
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
            result["seconds"] = timer.report(started)
            return result
        blocking = [s["name"] for s in snaps
                    if s["namespace"] == USER_NAMESPACE and not is_upload_snap(s["name"])]
        if blocking and foreign_snapshots == REFUSE:
            raise exc.VolumeBusy(f"volume {pool}/{name} has snapshots ({', '.join(blocking)}): "
                                 "delete them first; nothing was changed")
        deps = cluster.children(pool, name)
    result["dependents"] = [where(d) for d in deps]
    steps.reached("delete.inspected")

    # snapshots of ours no clone needs: a clone v1 upload's snapshot after Glance deleted
    # the image, or a trashed one Glance's user (read-only on this pool) could not drop
    with timer.step("stale_snapshots"):
        needed = {d["snap_id"] for d in deps}
        stale = [s for s in snaps if is_upload_snap(s["original"]) and s["id"] not in needed]
        for s in stale:
            cluster.remove_snap_by_id(pool, s["id"], name=name)
        if stale:
            steps.reached("delete.stale_snaps_removed")
    result["stale_snapshots_removed"] = [s["original"] for s in stale]

    if not deps:
        with timer.step("remove"):
            (leaf_remove or (lambda: _remove_leaf(cluster, pool, name)))()
            steps.reached("delete.removed")
        result["action"] = "removed"
    elif mode == DEFERRED:
        with timer.step("trash"):
            cluster.metadata_set(pool, name, TRASH_MARK, ",".join(where(d) for d in deps))
            steps.reached("delete.marked")
            cluster.trash_move(pool, name, max(0, int(delay)))
            steps.reached("delete.trashed")
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
                                     f"dependents were flattened ({', '.join(map(where, left))}); "
                                     "the volume is intact, delete it again")
            # a trashed snapshot goes with its last clone (we may write this pool);
            # a clone v1 upload's protected snapshot does not
            for s in cluster.snaps(pool, name):
                if is_upload_snap(s["original"]):
                    cluster.remove_snap_by_id(pool, s["id"], name=name)
            _remove_leaf(cluster, pool, name)
            steps.reached("delete.removed")
        result["action"] = "flattened"
    result["seconds"] = timer.report(started)
    return result


def _remove_leaf(cluster, pool, name):
    footprint.claim_glance_parent(cluster, pool, name)  # the Glance image Glance deleted
    cluster.remove(pool, name)


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
        steps.reached("delete.flattened")
        LOG.info("flattened %s", where(dep))

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        errors = [f.exception() for f in [pool.submit(one, d) for d in deps]]
    errors = [e for e in errors if e is not None]
    if errors:
        raise errors[0]



