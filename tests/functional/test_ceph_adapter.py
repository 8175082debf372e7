"""cinder_ext.ceph against Debian's bindings themselves."""

import subprocess
import sys

import rbd

from cinder_ext import ceph


def test_ceph_adapter_constants_match_the_bindings():
    # cinder_ext.ceph imports without the bindings (unit tests, a host without them): its
    # copies of librbd's ABI constants must equal the bindings' own
    assert ceph.USER_NAMESPACE == rbd.RBD_SNAP_NAMESPACE_TYPE_USER
    assert ceph.TRASH_NAMESPACE == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH


# A caller that closes the connection while an image of it is still open, as a copy's
# reader thread in librbd had it; then the image is used and closed.
CLOSE_UNDER_IMAGE = r"""
import logging, sys
import rbd
from cinder_ext.ceph import Cluster
logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format="%(message)s")
conf, user, pool, name = sys.argv[1:5]
cluster = Cluster(conf, user).connect()
rbd.RBD().create(cluster.ioctx(pool), name, 1 << 20)
with cluster.image(pool, name, read_only=True) as img:
    cluster.close()
    print("connected" if cluster.client is not None else "shut down", flush=True)
    print("size", img.size(), flush=True)
rbd.RBD().remove(cluster.ioctx(pool), name)
cluster.close()
print("closed" if cluster.client is None else "left open", flush=True)
"""


def test_close_never_shuts_the_client_down_under_an_open_image(ceph_cluster, tmp_path):
    # a client shut down under an open image is a use after free: the image's next call,
    # its close included, hangs or takes the process down (a process of its own, then)
    script = tmp_path / "close_under_image.py"
    script.write_text(CLOSE_UNDER_IMAGE)
    client = ceph_cluster.client("cinder")
    try:
        proc = subprocess.run([sys.executable, str(script), client["conf"], ceph_cluster.cinder_user,
                               ceph_cluster.cinder_pool, "volume-open-at-close"],
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"hung after: {e.stdout!r}") from None
    assert proc.stdout.splitlines() == [
        "Ceph connection as client.cinder not closed: 1 image(s) still open through it",
        "connected", f"size {1 << 20}", "closed"], proc.stdout + proc.stderr[-2000:]
