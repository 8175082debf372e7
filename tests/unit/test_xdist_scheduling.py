"""How the suite spreads over pytest-xdist workers (tests/conftest.py): the cloud chain
first, and a crashed worker's processes stopped."""

import os
import subprocess
import sys
import types

from tests import conftest


def _scheduler():
    tx = ["popen"] * 3
    config = types.SimpleNamespace(option=types.SimpleNamespace(loadscopereorder=False, tx=tx),
                                   getvalue={"tx": tx, "numprocesses": 3}.get)
    return conftest.pytest_xdist_make_scheduler(config, None)


def test_the_cloud_chain_is_given_out_first_and_again_first_after_a_crash():
    sched = _scheduler()
    nodeids = ["tests/functional/test_a.py::t", "tests/cloud/test_x.py::t", "tests/cloud/test_y.py::t",
               "tests/cloud/test_releases.py::t", "tests/unit/test_b.py::t"]
    for nodeid in nodeids:
        sched.workqueue.setdefault(sched._split_scope(nodeid), {})[nodeid] = False
    assert list(sched.workqueue) == ["tests/cloud", "tests/functional/test_a.py",
                                     "tests/cloud/test_releases.py", "tests/unit/test_b.py"]
    cloud = sched.workqueue.popitem(last=False)
    sched.workqueue.popitem(last=False)
    sched.workqueue.update([cloud])  # what remove_node does with a crashed worker's units
    assert next(iter(sched.workqueue)) == "tests/cloud"


def test_a_crashed_workers_processes_are_stopped_and_no_others():
    env = dict(os.environ)
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                            env=dict(env, PYTEST_XDIST_WORKER="gw97"))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                             env=dict(env, PYTEST_XDIST_WORKER="gw98"))
    try:
        node = types.SimpleNamespace(gateway=types.SimpleNamespace(id="gw97"))
        conftest.pytest_testnodedown(node, None)  # a worker that finished: nothing stopped
        assert ours.poll() is None
        conftest.pytest_testnodedown(node, "Not properly terminated")
        assert ours.wait(timeout=10) == -9
        assert other.poll() is None
    finally:
        for p in (ours, other):
            p.kill()
            p.wait()
