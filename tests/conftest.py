"""Session fixtures: one real dev Ceph cluster per test session, torn down even on failure."""

import atexit
import collections
import os
import shutil
import signal
import tempfile

import pytest

from tests.devcluster import DevCluster

SESSION_WATCH_TIMEOUT = 10
CLOUD_SCOPE = "tests/cloud"  # every module there shares one cloud, on one worker

pytest_plugins = ["tests.peers", "tests.info_api", "tests.keystone", "tests.reliability_summary",
                  "tests.durations", "tests.crash_report"]


def pytest_configure(config):
    # A fresh machine every run: the clients' caches (~/.glanceclient, ~/.config/openstack,
    # ...) and the services' dotfiles go to a HOME that lives and dies with this session,
    # never into the real one, and nothing an earlier run left there is read.
    home = tempfile.mkdtemp(prefix="tests-home-")
    config.real_home = os.environ.get("HOME")
    config.test_home = home
    os.environ.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                      XDG_CACHE_HOME=os.path.join(home, ".cache"),
                      XDG_DATA_HOME=os.path.join(home, ".local", "share"))
    # the step boundaries of cinder_ext crash or fail where a test selects one
    from tests import fault_injection
    fault_injection.install()


def pytest_unconfigure(config):
    home = getattr(config, "test_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


# -- the two tiers (issue 35) ------------------------------------------------------------------
# The gate (`tools/test`, what .ci/run runs) keeps one of each kind of proof; the full tier
# (`tools/test --full`) runs everything. What only the full tier runs is named here, never in
# the test files: a module, a test (all its parameters) or one parametrized node id, each
# with why. The gate deselects them (`-m "not full"`): deselected, never skipped-as-passed.
FULL_TIER = {
    # tests/cloud: one cloud boot stays (test_user_flow, test_crash_recovery, test_tempest,
    # test_cloud_tool) and one release cell (2025.1)
    "tests/cloud/test_soak.py": "the 3-minute soak, on an active-active cloud of its own",
    "tests/cloud/test_rolling_upgrade.py": "the rolling upgrade, on an active-active cloud of its own",
    "tests/cloud/test_tempest_ab.py::test_ours_and_upstreams_driver_agree_on_tempest":
        "the Tempest comparison: two Tempest runs, two cinder-volume restarts (~5 min)",
    "tests/cloud/test_on_off.py": "on/off over upstream's work: two cinder-volume restarts",
    "tests/cloud/test_concurrency.py": "cinder-volume's responsiveness under 8 uploads: a load measurement",
    "tests/cloud/test_purge.py": "the periodic purge alone (the gate's release cell waits on it too)",
    "tests/cloud/test_clone_delete.py": "upstream's driver, then ours: two cinder-volume restarts",
    "tests/cloud/test_single_store.py": "a single-store Glance: a cloud of its own (--single-store)",
    "tests/cloud/test_releases.py::test_the_cloud_runs_that_series_services[2026.1]":
        "the second release cloud (the gate boots 2025.1's)",
    "tests/cloud/test_releases.py::test_cinder_conf_has_the_glance_options_of_that_release[2026.1]":
        "the second release cloud (the gate boots 2025.1's)",
    "tests/cloud/test_releases.py::test_member_upload_clones_and_reads_back_on_that_release[2026.1]":
        "the second release cloud (the gate boots 2025.1's)",
    "tests/cloud/test_user_flow.py::test_deletes_in_every_order":
        "five more delete orders on the cloud (test_delete_orders has every order, on Ceph)",
    "tests/cloud/test_crash_recovery.py::test_a_restarted_cinder_volume_finishes_or_rolls_back_what_its_predecessor_left":
        "a kill at a time, wherever it falls (the gate kills at a named step; each waits out the 30 s watch timeout)",
    # tests/interop: one release cell (Cinder 26) besides Cinder 29 in depth
    "tests/interop/test_cinder_releases_27.py": "a release cell: Cinder 27 (2025.2)",
    "tests/interop/test_cinder_releases_28.py": "a release cell: Cinder 28 (2026.1)",
    "tests/interop/test_cinder_releases_29.py": "a release cell: Cinder 29, in depth in test_cinder_driver*.py",
    # tests/functional: the dense kill and failure sweeps (one step of each stays), Ceph faults
    "tests/functional/test_upload_kill_sweep.py::test_kill_sweep": "the dense kill sweep (~10 kill points)",
    "tests/functional/test_native_stress.py": "librbd's native crashes, driven over and over (~5 min)",
    "tests/functional/test_delete_orders.py::test_every_deletion_order_succeeds_and_one_purge_leaves_nothing":
        "all 24 delete orders of a 4-item chain, each waiting on Glance's hashing (~2 min)",
    "tests/functional/test_delete_orders.py::test_image_volume_snapshot_volume_image_chains_in_many_orders":
        "13 delete orders of a 5-item chain (~2 min)",
    "tests/functional/test_upload_clone.py::test_retry_after_a_crash_at_each_step_finishes_cleanly":
        "a kill at every clone step",
    "tests/functional/test_upload_independent.py::test_failure_at_each_step_leaves_nothing":
        "a failure at every independent-upload step",
    "tests/functional/test_upload_independent.py::test_retry_after_a_crash_at_each_step_finishes_cleanly":
        "a kill at every independent-upload step",
    "tests/functional/test_upload_independent.py::test_purge_reconciles_a_crashed_independent_upload":
        "a kill at every independent step, then the purge",
    "tests/functional/test_upload_independent.py::test_cli_retry_after_a_crash_finishes_the_independent_upload":
        "a kill at every CLI independent step",
    "tests/functional/test_upload_fallback.py::test_failure_at_each_step_rolls_back_and_copies":
        "a failure at every clone step",
    "tests/functional/test_delete_volume.py::test_a_delete_killed_at_each_step_is_finished_by_a_retry":
        "a kill at every delete step",
    "tests/functional/test_delete_volume.py::test_a_purge_killed_at_each_step_is_finished_by_the_next":
        "a kill at every purge step",
    "tests/functional/test_create_volume.py::test_create_killed_at_each_step_is_finished_by_a_retry":
        "a kill at every create step",
    "tests/functional/test_create_volume.py::test_copy_killed_at_each_step_is_redone_by_a_retry":
        "a kill at every copy step",
    "tests/functional/test_purge.py::test_the_orphans_of_a_failed_upload_are_removed_by_one_purge":
        "a failure at every step, two Glance states",
    "tests/functional/test_purge.py::test_with_finish_an_upload_killed_once_its_clone_was_complete_goes_active":
        "a kill at more steps",
    "tests/functional/test_mixed_versions.py::test_an_upload_in_flight_survives_the_other_releases_purge":
        "every in-flight step, both directions",
    "tests/functional/test_upload_faults.py::test_ceph_daemon_killed_mid_clone_then_retry_finishes":
        "Ceph's daemons killed, on a bluestore cluster of its own",
    "tests/functional/test_upload_faults.py::test_glance_down_before_registration_then_retry_finishes":
        "Glance down, the second way",
    "tests/functional/test_upload_concurrency.py::test_a_killed_holder_of_the_volume_lock_blocks_nothing":
        "a killed lock holder, the second operation",
    "tests/functional/test_upload_concurrency.py::test_many_volumes_at_once":
        "a burst of uploads of many volumes (test_upload_burst stays)",
    "tests/functional/test_upload_concurrency.py::test_same_volume_to_many_images_at_once":
        "a burst of uploads of one volume (test_upload_burst stays)",
    "tests/functional/test_locks.py::test_a_killed_holder_stops_blocking_within_the_lease":
        "a killed holder, in another pid namespace",
    "tests/functional/test_dev_cluster.py::test_three_osds_keep_three_replicas_and_a_killed_osd_recovers_from_its_peers":
        "a 3-OSD cluster and an OSD's recovery (the Ceph matrix)",
}

# Of the families named above, the parameters the gate keeps: one of each kind of proof.
GATE_KEEPS = {
    "tests/cloud/test_user_flow.py::test_deletes_in_every_order[volume-image-volume_from_image]":
        "the source volume first, under its image and the image's volume",
    "tests/functional/test_upload_clone.py::test_retry_after_a_crash_at_each_step_finishes_cleanly[clone.location_requested]":
        "a kill once Glance may have the location",
    "tests/functional/test_upload_independent.py::test_failure_at_each_step_leaves_nothing[independent.flattened]":
        "a failure after the flatten",
    "tests/functional/test_upload_independent.py::test_retry_after_a_crash_at_each_step_finishes_cleanly[independent.flattened]":
        "a kill after the flatten",
    "tests/functional/test_upload_independent.py::test_purge_reconciles_a_crashed_independent_upload[independent.flattened]":
        "the purge after a kill after the flatten",
    "tests/functional/test_upload_independent.py::test_cli_retry_after_a_crash_finishes_the_independent_upload[clone.location_requested]":
        "the CLI's retry once Glance may have the location",
    "tests/functional/test_upload_fallback.py::test_failure_at_each_step_rolls_back_and_copies[clone.cloned]":
        "a failure once the clone exists",
    "tests/functional/test_delete_volume.py::test_a_delete_killed_at_each_step_is_finished_by_a_retry[deferred-delete.trashed]":
        "a killed deferred delete",
    "tests/functional/test_delete_volume.py::test_a_delete_killed_at_each_step_is_finished_by_a_retry[flatten-delete.flattened]":
        "a killed flatten delete",
    "tests/functional/test_delete_volume.py::test_a_purge_killed_at_each_step_is_finished_by_the_next[purge.snap_removed]":
        "a killed purge",
    "tests/functional/test_create_volume.py::test_create_killed_at_each_step_is_finished_by_a_retry[create.cloned]":
        "a killed create",
    "tests/functional/test_create_volume.py::test_copy_killed_at_each_step_is_redone_by_a_retry[create.copy_written]":
        "a killed copy",
    "tests/functional/test_purge.py::test_the_orphans_of_a_failed_upload_are_removed_by_one_purge[queued-clone.cloned]":
        "the orphans of a failed upload",
    "tests/functional/test_purge.py::test_with_finish_an_upload_killed_once_its_clone_was_complete_goes_active[clone.image_snapshot_protected-True]":
        "the purge finishing an upload",
    "tests/functional/test_mixed_versions.py::test_an_upload_in_flight_survives_the_other_releases_purge[new-old-clone.location_requested]":
        "the previous release's purge beside this one's upload",
    "tests/functional/test_mixed_versions.py::test_an_upload_in_flight_survives_the_other_releases_purge[old-new-clone.location_requested]":
        "this release's purge beside the previous one's upload",
    "tests/functional/test_upload_faults.py::test_glance_down_before_registration_then_retry_finishes[stopped]":
        "Glance down before the registration",
    "tests/functional/test_upload_concurrency.py::test_a_killed_holder_of_the_volume_lock_blocks_nothing[upload]":
        "a killed lock holder",
    "tests/functional/test_locks.py::test_a_killed_holder_stops_blocking_within_the_lease[same-namespace]":
        "a killed holder",
}


def _names(entry, nodeid):
    """Whether a FULL_TIER entry (a module, a test, or one node id) names this node id."""
    return nodeid == entry or nodeid.startswith((entry + "::", entry + "["))


def tier_of(nodeid):
    """"full" for a node id only the full tier runs, "gate" for one the gate runs too."""
    if nodeid in GATE_KEEPS:
        return "gate"
    return "full" if any(_names(entry, nodeid) for entry in FULL_TIER) else "gate"


def pytest_collection_modifyitems(config, items):
    # folders are the markers: tests/functional needs Ceph, tests/interop needs peers too
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}functional{os.sep}" in path:
            item.add_marker(pytest.mark.functional)
        elif f"{os.sep}interop{os.sep}" in path:
            item.add_marker(pytest.mark.interop)
        if tier_of(item.nodeid) == "full":
            item.add_marker(pytest.mark.full)



@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist a module runs whole on one worker (its module fixtures are made
    once), and every tests/cloud module on the same one, which boots the one cloud;
    except the modules that boot clouds of their own only (OWN_CLOUDS), which run beside
    that chain. (xdist's loadgroup marks would say the same, but pytest 9 no longer
    reports the group in the node ids they rely on.)"""
    from xdist.scheduler import LoadScopeScheduling
    # the SLURP series' clouds, and the single-store cloud: each boots a cloud of its own
    own_clouds = ("tests/cloud/test_releases.py", "tests/cloud/test_single_store.py")

    class CloudFirst(collections.OrderedDict):
        """The cloud chain is the longest unit (~26 of ~31 minutes), and its tests load no
        librbd in-process: given out first, it starts at once, on a worker that no
        in-process librbd crash can take down midway (CI lost a worker to an abort in
        librbd twice in one run; a crashed unit is given out again, from its start)."""
        def __setitem__(self, scope, work):
            super().__setitem__(scope, work)
            if scope == CLOUD_SCOPE:
                self.move_to_end(scope, last=False)

    class ModuleScheduling(LoadScopeScheduling):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.workqueue = CloudFirst()

        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return CLOUD_SCOPE if module.startswith("tests/cloud/") and module not in own_clouds else module
    return ModuleScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """A worker that crashed (an abort inside librbd) never ran its teardown: its dev
    cluster, peers and cloud would run on, taking CPU from the rest of the run. Every
    process it started carries its worker id in its environment."""
    if not error:
        return
    mark = f"PYTEST_XDIST_WORKER={node.gateway.id}".encode()
    killed = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark not in f.read().split(b"\0"):
                    continue
            os.kill(int(pid), signal.SIGKILL)
            killed += 1
        except OSError:  # gone meanwhile, or not ours to read
            continue
    print(f"\ntests: worker {node.gateway.id} went down ({error}); stopped the {killed} "
          "processes it had started", flush=True)


@pytest.fixture(scope="session")
def ceph_cluster(tmp_path_factory):
    """A real single-node Ceph cluster on loopback, memstore OSD, for the whole session."""
    directory = str(tmp_path_factory.mktemp("ceph") / "cluster")
    # a killed lock holder's lease: 10 s instead of Ceph's 30, so that the many tests that
    # kill holders (kill sweeps, crash recovery) do not each wait half a minute
    cluster = DevCluster.start(directory, "--osd-size", os.environ.get("CEPH_DEV_OSD_SIZE", "3G"),
                               "--watch-timeout", str(SESSION_WATCH_TIMEOUT))
    atexit.register(cluster.stop, remove=False)  # a killed session still stops its daemons
    try:
        yield cluster
    finally:
        cluster.stop(remove=False)
