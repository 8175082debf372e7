"""Named step boundaries of our multi-step changes on Ceph.

Each transaction (upload, delete, create, purge) calls ``reached(name)`` after every
step that changed the cluster. Nothing in the product listens: tests register an
observer (``observe``) to crash or fail the process at a boundary and prove that what is
left is finished, rolled back or reclaimed. The names, in the order they are reached:
"""

UPLOAD_CLONE = (
    "clone.recovered",
    "clone.journaled",             # the intent journal's record is written
    "clone.volume_snapshot_created",
    "clone.volume_snapshot_protected",
    "clone.cloned",
    "clone.volume_snapshot_removed",
    "clone.image_snapshot_created",
    "clone.image_snapshot_protected",
    "clone.location_requested",
    "clone.active",
)

# an independent upload's, between the clone and its image snapshot
UPLOAD_INDEPENDENT = (
    "independent.marked",
    "independent.flattened",
    "independent.volume_snapshot_removed",
)

DELETE = (
    "delete.inspected",            # dependents listed, nothing changed yet
    "delete.stale_snaps_removed",  # snapshots no clone needs any more are gone
    "delete.marked",               # deferred: the volume carries the purge mark
    "delete.trashed",              # deferred: the volume is in the trash
    "delete.flattened",            # flatten: one dependent no longer needs the volume
    "delete.removed",
)

CREATE = (
    "create.cloned",
    "create.resized",
    "create.flattened",
    "create.copy_created",
    "create.copy_written",
)

PURGE = (
    "purge.snap_removed",          # a trashed snapshot without clones is gone
    "purge.removed",               # a trash entry is gone
)

_observers = []


def observe(fn):
    """Call fn(name) at every boundary from now on; returns a function that stops it."""
    _observers.append(fn)
    return lambda: _observers.remove(fn)


def reached(name):
    for fn in tuple(_observers):
        fn(name)
