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
