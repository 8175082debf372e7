"""The driver between and around requests, inside real Cinder 29 (tests/cinder_peer_day2.py).

What cinder-volume does besides serving a request: start its periodic tasks and run them
for months through Ceph and Glance outages, delete volumes in states a request path never
sees (a snapshot an admin unmanaged, a volume in use), and, with the option off, behave
exactly as upstream's driver.
"""

import os

import pytest

from tests.cinder_peer import (  # noqa: F401  (fixtures)
    DAY2_RUNNER, cinder29, cinder_glance, run_cinder)

# Cinder's own options, as an operator sets them: a purge every 2 s (default 60), short
# RADOS connect timeouts and retries (defaults: wait forever; 3 tries 5 s apart): a tick fails within the outage
DAY2_CONF = """\
deferred_deletion_purge_interval = 2
rados_connect_timeout = 5
rados_connection_interval = 1
rados_connection_retries = 1
"""
PURGE_INTERVAL = 2


UPSTREAM = "cinder.volume.drivers.rbd.RBDDriver"
OURS = "cinder_ext.driver.RBDCloneUploadDriver"
DEFERRED = "enable_deferred_deletion = true\ndeferred_deletion_purge_interval = 3600\n"


def _calls(run_cinder, glance, enable, upload=True):
    return {label: run_cinder(glance.url, enable_clone_optimization=enable, mode="calls",
                              runner=DAY2_RUNNER, extra_conf=DEFERRED,
                              spec_extra={"driver_class": cls, "upload": upload}).result
            for label, cls in (("upstream", UPSTREAM), ("ours", OURS))}


def test_option_off_makes_the_same_calls_as_upstreams_driver(run_cinder, cinder_glance):
    """Set-up, periodic-task start and one tick, create, upload (copy) and delete, through
    upstream's RBDDriver and through ours with enable_clone_optimization off: the same
    RADOS connections, RBD opens, HTTP requests and looping calls, phase by phase."""
    runs = _calls(run_cinder, cinder_glance, False)
    up, ours = runs["upstream"], runs["ours"]
    for phase in ("setup", "periodic", "create", "upload", "delete"):
        print(f"{phase}: upstream {up[phase]}\n{' ' * len(phase)}  ours     {ours[phase]}")
        assert ours[phase] == up[phase], phase
    assert up["upload"].get("rados_connect") and up["delete"].get("rbd_open")  # it counts
    assert ours["periodic_tasks"] == up["periodic_tasks"] == ["_trash_purge"]


def test_option_on_deletes_open_the_volume_once_when_nothing_depends_on_it(run_cinder,
                                                                           cinder_glance):
    """With the option on, a volume without an upload of ours deletes through upstream's
    code alone: the RADOS connection and the one open upstream's makes (no lock, no second
    connection, no second look for backup snapshots)."""
    runs = _calls(run_cinder, cinder_glance, True, upload=False)
    up, ours = runs["upstream"]["delete"], runs["ours"]["delete"]
    print(f"delete: upstream {up}, ours {ours}")
    assert ours == up
    assert ours["rbd_open"] == 1


MON_OUTAGE = 60  # seconds the monitor answers nothing (the bound)


@pytest.fixture
def day2(run_cinder, cinder_glance, ceph_cluster):
    run = run_cinder(cinder_glance.url, enable_clone_optimization=True, mode="day2",
                     runner=DAY2_RUNNER, extra_conf=DAY2_CONF,
                     spec_extra={"purge_wait": 10 * PURGE_INTERVAL, "mon_outage": MON_OUTAGE,
                                 "mon_pid_file": os.path.join(ceph_cluster.dir, "run", "mon.a.pid")})
    print(run.result)
    return run


def test_day2(day2):
    r, log = day2.result, day2.log
    # the periodic purge reclaims the upload snapshot Glance's user could not drop
    left = r["snapshots_after_image_delete"]
    assert len(left) == 1 and left[0].startswith("trash:image-"), left  # the leak, as it was
    assert r["snapshots_after_purge"] == [], r
    assert r["snapshot_reclaimed_after"] <= 3 * PURGE_INTERVAL + 5, r

    # a volume whose snapshot was unmanaged deletes as upstream's does (to the trash)
    assert r["unmanaged_upstream"]["outcome"] == "ok", r
    for label in ("ours", "ours-uploaded"):
        got = r[f"unmanaged_{label}"]
        assert got["outcome"] == "ok", (label, got)
        assert not got["in_pool"], (label, got)
    assert r["unmanaged_ours"]["in_trash"] == r["unmanaged_upstream"]["in_trash"]

    # in use: VolumeIsBusy (the volume goes back to available), not error_deleting
    assert r["busy"]["outcome"] == "VolumeIsBusy", r["busy"]
    assert r["busy"]["in_pool_after"]

    # the periodic purge outlives a monitor outage and purges after it
    assert r["mon_outage_trashed"]
    assert r["mon_outage"]["purged"], r["mon_outage"]
    start, end = r["mon_outage"]["window"]
    during = [line for line in log.splitlines() if start <= line[:19] <= end]
    # a tick failed during the outage, and was logged
    assert any("Purge of backend" in line for line in during), "\n".join(during)

    # an image Glance deleted for a volume cloned from it (glance_store trashed it), the
    # volume deleted before any purge tick saw them: reclaimed all the same (CI found it
    # left in the Glance pool's trash for ever)
    got = r["glance_parent"]
    assert got["cloned"] and got["trashed"], got
    assert got["purged"], got

    # a clone of a Cinder clone whose parent our delete trashed: created (the soak saw
    # upstream's walk up the chain raise ImageNotFound, and the new volume go to error)
    got = r["clone_of_trashed_parents_clone"]
    assert got["trashed"], got
    assert got["outcome"] == "ok", got
