"""Named step boundaries where tests can inject a crash or an error.

``CINDER_EXT_FAULT_POINT`` selects a point by name (comma-separated for several);
``CINDER_EXT_FAULT_ACTION`` is ``kill`` (SIGKILL this process, the default: a real
crash, nothing runs after it) or ``raise`` (FaultInjected, an error like any other at
that step: the transaction rolls back, to test rollback in-process).
Unset, ``point()`` costs one dict lookup.
"""

import os
import signal

from cinder_ext.exceptions import FaultInjected

ENV_POINT = "CINDER_EXT_FAULT_POINT"
ENV_ACTION = "CINDER_EXT_FAULT_ACTION"

# every point the code passes through, in order, so tests can iterate over them
UPLOAD_CLONE_POINTS = (
    "clone.recovered",
    "clone.volume_snapshot_created",
    "clone.volume_snapshot_protected",
    "clone.cloned",
    "clone.volume_snapshot_removed",
    "clone.image_snapshot_created",
    "clone.image_snapshot_protected",
    "clone.location_requested",
    "clone.active",
)

DELETE_POINTS = (
    "delete.inspected",          # dependents listed, nothing changed yet
    "delete.stale_snaps_removed",  # snapshots no clone needs any more are gone
    "delete.marked",             # deferred: the volume carries the purge mark
    "delete.trashed",            # deferred: the volume is in the trash
    "delete.flattened",          # flatten: one dependent no longer needs the volume
    "delete.removed",
)

CREATE_POINTS = (
    "create.cloned",
    "create.resized",
    "create.flattened",
    "create.copy_created",
    "create.copy_written",
)

PURGE_POINTS = (
    "purge.snap_removed",        # a trashed snapshot without clones is gone
    "purge.removed",             # a trash entry is gone
)


def point(name):
    selected = os.environ.get(ENV_POINT)
    if not selected or name not in selected.split(","):
        return
    if os.environ.get(ENV_ACTION, "kill") == "raise":
        raise FaultInjected(f"fault injected at {name}")
    os.kill(os.getpid(), signal.SIGKILL)
