"""A Cinder volume clone deleted: its parent's <clone>.clone_snap goes with it (issue 22:
"look for every other way the delete path differs from upstream's"; found by the soak).

Upstream's RBDDriver (Cinder 26 to 29) creates a volume clone as a snapshot
<parent>@volume-<clone>.clone_snap and a COW clone of it. Deleting the clone, its
_delete_volume returns from the fast path (the clone removed at once) before it walks up
to the parent: the snapshot stays, pinning the parent's data as it was for the parent's
whole life, and once Cinder deletes the parent it is kept as <parent>.deleted. Measured
here on the same cloud with upstream's driver (the baseline) and with ours, which
finishes that walk with upstream's own _delete_clone_parent_refs.
"""

import json
import os
import subprocess

from tests.cloud.conftest import wait_baseline

MiB = 1 << 20


def snaps_of(cloud, name):
    out = subprocess.run(["rbd", "--conf", cloud.env["CEPH_CONF"], "snap", "ls", "--all", "--format", "json",
                          f"volumes/{name}"], capture_output=True, text=True, check=True, cwd=cloud.dir)
    return sorted(s["name"] for s in json.loads(out.stdout or "[]"))


def clone_then_delete_it(cloud, tag):
    parent = cloud.openstack("volume", "create", "--size", "1", f"{tag}-parent")["id"]
    cloud.wait("volume", parent, "available")
    cloud.write_volume(parent, os.urandom(MiB))
    clone = cloud.openstack("volume", "create", "--size", "1", "--source", parent, f"{tag}-clone")["id"]
    cloud.wait("volume", clone, "available")
    assert snaps_of(cloud, f"volume-{parent}") == [f"volume-{clone}.clone_snap"]
    cloud.openstack("volume", "delete", clone)
    cloud.wait_gone("volume", clone)
    return parent, clone


def test_deleting_a_clone_drops_its_parents_clone_snap_where_upstream_leaves_it(cloud):
    before = cloud.rbd_names()
    try:
        cloud.set_driver("upstream")
        parent, clone = clone_then_delete_it(cloud, "clonedel-upstream")
        # the baseline: upstream leaves the snapshot of a clone that no longer exists
        assert snaps_of(cloud, f"volume-{parent}") == [f"volume-{clone}.clone_snap"]
        up_parent = parent
    finally:
        cloud.set_driver("ours")

    parent, clone = clone_then_delete_it(cloud, "clonedel-ours")
    assert snaps_of(cloud, f"volume-{parent}") == []
    assert any(f"volume-{parent}@volume-{clone}.clone_snap: its clone" in line
               for line in cloud.volume_log_lines())

    # both parents delete; upstream's leftover goes with its parent (Cinder's rename to
    # .deleted, then our purge: nothing depends on it)
    for p in (parent, up_parent):
        cloud.openstack("volume", "delete", p)
        cloud.wait_gone("volume", p)
    wait_baseline(cloud, before)
