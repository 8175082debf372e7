"""The native crashes CI saw inside librbd (issue 35): SIGABRT in rbd_open_by_id_read_only
and a SIGSEGV in a peer cinder-volume run (exit -11). Each suspect is driven here, over
and over, in a child process (a crash must not take pytest with it), on real Ceph:

1. a client shut down while another thread is inside librbd (an image counted open
   only once its constructor returned; a process ending under a running periodic
   purge). cinder_ext.ceph.Cluster's close() and the process's exit now refuse new
   calls and wait for those in flight (ceph.wait_native_calls at exit): the same race
   through our adapter must never crash.
2. one process removing trash entries (purge) while another opens them by id (an
   upload's or a delete's look at a trashed parent).

Full tier: about a minute each, most of it the children's starts.
"""

import json
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROUNDS = int(os.environ.get("GRC_NATIVE_STRESS_ROUNDS", "20"))
# the children's cinder_ext: this tree's, or (to reproduce the crash) a checkout of a
# commit before the fix, e.g. `git worktree add /tmp/before bd29448`
CODE = os.environ.get("GRC_NATIVE_STRESS_CODE", ROOT)

_CHILD_HEAD = """
import os, random, sys, threading, time
sys.path.insert(0, {root!r})
import rados, rbd
conf, pool = {conf!r}, {pool!r}
"""


def _child(cluster, pool, body, timeout=120):
    script = _CHILD_HEAD.format(root=CODE, conf=cluster.conf, pool=pool) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    return proc


def _signals(codes):
    return sorted({-c for c in codes if c < 0})


# -- suspect 1: a client shut down under a thread inside librbd ------------------------

_AN_IMAGE = """
client = rados.Rados(conffile=conf, rados_id="admin")
client.connect()
io = client.open_ioctx(pool)
name = "stress-" + str(os.getpid())
rbd.RBD().create(io, name, 1 << 20)
"""

_RAW_SHUTDOWN = _AN_IMAGE + """
def opener():
    try:
        while True:
            with rbd.Image(io, name, read_only=True) as img:
                img.size()
    except Exception:
        pass  # an error after the shutdown is fine; a crash is not
t = threading.Thread(target=opener, daemon=True)
t.start()
time.sleep(random.uniform(0.05, 0.3))
client.shutdown()  # the raw race: librados' client gone under the opener
time.sleep(0.2)
os._exit(0)
"""

_THROUGH_CLUSTER = _AN_IMAGE + """
io.close(); client.shutdown()
from cinder_ext.ceph import Cluster
cluster = Cluster(conf, "admin")
cluster.connect()
def prober():
    try:
        while True:
            cluster.snaps(pool, name)
    except Exception:
        pass  # refused once the connection closes: fine; a crash is not
threading.Thread(target=prober, daemon=True).start()
time.sleep(random.uniform(0.05, 0.3))
if {how!r} == "close":
    cluster.close()  # as the driver's _ceph closes its connection
    time.sleep(0.2)
    os._exit(0)
sys.exit(0)  # the interpreter ends under the prober, as a process ends under a purge
"""


def test_a_client_shut_down_under_a_thread_in_librbd(ceph_cluster):
    """The raw race crashes librados (the reproduction, reported); through
    cinder_ext.ceph.Cluster, neither its close() nor the process's exit under a thread in
    librbd ever does (close and exit refuse new calls and wait for those in flight)."""
    pool = ceph_cluster.cinder_pool
    raw = [_child(ceph_cluster, pool, _RAW_SHUTDOWN).returncode for _ in range(ROUNDS)]
    ours = {how: [_child(ceph_cluster, pool, _THROUGH_CLUSTER.format(how=how))
                  for _ in range(ROUNDS)] for how in ("close", "exit")}
    codes = {how: [p.returncode for p in procs] for how, procs in ours.items()}
    print(f"client shut down under a thread in librbd, {ROUNDS} rounds each: raw librados "
          f"exits {json.dumps(raw)} (signals {_signals(raw)}); through Cluster, close() "
          f"{json.dumps(codes['close'])}, the process's exit {json.dumps(codes['exit'])}")
    _remove_stress_images(ceph_cluster)
    crashed = [p for procs in ours.values() for p in procs if p.returncode != 0]
    assert not crashed, crashed[0].stderr[-2000:]


# -- suspect 2: trash removal in one process, open by id in another ---------------------

_TRASHER = """
client = rados.Rados(conffile=conf, rados_id="admin")
client.connect()
io = client.open_ioctx(pool)
ids = []
for i in range(int(sys.argv[1]) if len(sys.argv) > 1 else 30):
    name = f"stress-trash-{os.getpid()}-{i}"
    rbd.RBD().create(io, name, 1 << 20)
    with rbd.Image(io, name) as img:
        ids.append(img.id())
    rbd.RBD().trash_move(io, name)
    print(ids[-1], flush=True)
    rbd.RBD().trash_remove(io, ids[-1])
io.close(); client.shutdown()
"""

_ID_OPENER = """
client = rados.Rados(conffile=conf, rados_id="admin")
client.connect()
io = client.open_ioctx(pool)
deadline = time.monotonic() + 20
opened = 0
while time.monotonic() < deadline:
    for entry in rbd.RBD().trash_list(io):
        try:
            with rbd.Image(io, image_id=entry["id"], read_only=True) as img:
                img.size()
                opened += 1
        except rbd.ImageNotFound:
            pass
        except rbd.Error:
            pass
print(opened)
io.close(); client.shutdown()
"""


def test_trash_removal_racing_an_open_by_id(ceph_cluster):
    """A purge removing trash entries while another client opens them by id: errors
    (ImageNotFound) are expected; a crash of either is what CI saw."""
    codes = []
    for _ in range(max(1, ROUNDS // 4)):
        pool = ceph_cluster.cinder_pool
        opener = subprocess.Popen(
            [sys.executable, "-c", _CHILD_HEAD.format(root=ROOT, conf=ceph_cluster.conf, pool=pool)
             + textwrap.dedent(_ID_OPENER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, cwd=ROOT)
        trasher = _child(ceph_cluster, pool, _TRASHER)
        out, err = opener.communicate(timeout=120)
        codes.append((trasher.returncode, opener.returncode))
        assert trasher.returncode == 0 and opener.returncode == 0, (trasher.stderr[-2000:], err[-2000:])
    print(f"trash removal vs open by id: {codes}")


def _remove_stress_images(cluster):
    """The images the children of suspect 1 leave (they end under their threads)."""
    for name in cluster.rbd_ls(cluster.cinder_pool):
        if name.startswith("stress-"):
            cluster.admin("rbd", "rm", f"{cluster.cinder_pool}/{name}", check=False)
