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


def pytest_unconfigure(config):
    home = getattr(config, "test_home", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    # folders are the markers: tests/functional needs Ceph, tests/interop needs peers too
    for item in items:
        path = str(item.fspath)
        if f"{os.sep}functional{os.sep}" in path:
            item.add_marker(pytest.mark.functional)
        elif f"{os.sep}interop{os.sep}" in path:
            item.add_marker(pytest.mark.interop)
        # under xdist (--dist loadgroup) a module runs on one worker, so its module
        # fixtures are made once; every tests/cloud module shares that worker's one cloud
        group = "cloud" if f"{os.sep}cloud{os.sep}" in path else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))


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
