"""Session fixtures: one real dev Ceph cluster per test session, torn down even on failure."""

import atexit
import os
import shutil
import tempfile

import pytest

from tests.devcluster import DevCluster

SESSION_WATCH_TIMEOUT = 10

pytest_plugins = ["tests.peers", "tests.info_api", "tests.keystone", "tests.reliability_summary",
                  "tests.durations"]


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


def pytest_collection_modifyitems(config, items):
    # folders are the markers: tests/functional needs Ceph, tests/interop needs peers too
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}functional{os.sep}" in path:
            item.add_marker(pytest.mark.functional)
        elif f"{os.sep}interop{os.sep}" in path:
            item.add_marker(pytest.mark.interop)



@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist a module runs whole on one worker (its module fixtures are made
    once), and every tests/cloud module on the same one, which boots the one cloud;
    except the modules that boot clouds of their own only (OWN_CLOUDS), which run beside
    that chain. (xdist's loadgroup marks would say the same, but pytest 9 no longer
    reports the group in the node ids they rely on.)"""
    from xdist.scheduler import LoadScopeScheduling
    own_clouds = ("tests/cloud/test_releases.py",)  # the SLURP series' clouds

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            module = nodeid.split("::", 1)[0]
            return "tests/cloud" if module.startswith("tests/cloud/") and module not in own_clouds else module
    return ModuleScheduling(config, log)


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
