"""How the suite spreads over pytest-xdist workers (tests/conftest.py): the cloud chain
first, and a crashed worker's processes stopped."""

import os
import subprocess
import sys
import types

from tests import conftest, crash_report


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


CRASHING = '''
import ctypes, threading, time

def test_fine():
    pass

def test_reads_address_zero():
    threading.Thread(target=time.sleep, args=(30,), daemon=True, name="bystander").start()
    ctypes.string_at(0)  # SIGSEGV, as a use after free inside librbd ends
'''


def test_a_crashed_workers_own_thread_is_named_in_a_few_lines(tmp_path):
    (tmp_path / "test_crashing.py").write_text(CRASHING)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k not in (crash_report.ENV, "PYTEST_XDIST_WORKER")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.crash_report",
                           "-n", "1", "--max-worker-restart", "0", "-q", str(tmp_path)],
                          cwd=tmp_path, env=dict(env, PYTHONPATH=root), capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout
    assert proc.returncode != 0, out
    report = out[out.index("tests: worker gw0's fault report:"):].splitlines()
    assert report[1] == "Fatal Python error: Segmentation fault", out
    assert report[2].startswith("Current thread"), out
    assert any("test_crashing.py" in line and "test_reads_address_zero" in line for line in report[3:5]), out
    # the Python report went to the file, not to the worker's stderr
    assert "Extension modules" not in proc.stderr + out, out
