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


def test_children_are_those_librbds_list_children2_reports(ceph_cluster):
    """Cluster.children reads the child lists itself and looks each name up by id (not
    list_children2, whose name lookup lists the whole child pool): the same clones, v1
    and v2, live and in the trash, in another pool and in its own."""
    import rados
    vpool, ipool = ceph_cluster.cinder_pool, ceph_cluster.glance_pool
    admin = rados.Rados(conffile=ceph_cluster.conf, rados_id="admin")
    admin.connect()
    vio, iio = admin.open_ioctx(vpool), admin.open_ioctx(ipool)
    parent, made = "children-parent", []
    try:
        rbd.RBD().create(vio, parent, 1 << 20)
        with rbd.Image(vio, parent) as img:
            img.create_snap("v2")
            img.create_snap("v1")
            img.protect_snap("v1")
        for snap, child_io, child, fmt in (("v2", iio, "children-v2", 2),
                                           ("v2", vio, "children-v2-here", 2),
                                           ("v1", iio, "children-v1", 1),
                                           ("v2", iio, "children-v2-trashed", 2)):
            admin.conf_set("rbd_default_clone_format", str(fmt))  # the binding has no option
            rbd.RBD().clone(vio, parent, snap, child_io, child)
            made.append((child_io, child))
        rbd.RBD().trash_move(iio, "children-v2-trashed")
        with rbd.Image(vio, parent, read_only=True) as img:
            want = []
            for s in img.list_snaps():
                img.set_snap_by_id(s["id"])
                want += [(c["pool"], c["image"], c["id"], bool(c["trash"]), s["name"])
                         for c in img.list_children2()]
            img.set_snap(None)
        with ceph.Cluster(ceph_cluster.conf, "admin") as cluster:
            got = [(c["pool"], c["image"], c["id"], c["trash"], c["snap"])
                   for c in cluster.children(vpool, parent)]
        assert sorted(got) == sorted(want) and len(want) == 4, (got, want)
        assert (ipool, "children-v2-trashed") in {(p, n) for p, n, _, t, _ in got if t}
    finally:
        for entry in rbd.RBD().trash_list(iio):
            if entry["name"] == "children-v2-trashed":
                rbd.RBD().trash_remove(iio, entry["id"])
        for io, name in made:
            if name != "children-v2-trashed":
                rbd.RBD().remove(io, name)
        with rbd.Image(vio, parent) as img:
            img.unprotect_snap("v1")
            img.remove_snap("v1")
            img.remove_snap("v2")
        rbd.RBD().remove(vio, parent)
        vio.close()
        iio.close()
        admin.shutdown()
