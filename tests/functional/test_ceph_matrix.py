"""The RBD behaviour the driver depends on, on whichever Ceph release the session runs.

The Ceph matrix (tools/matrix --ceph) runs this module on Ceph 16.2 (the machine's
Debian 12), 18.2 and 20.2 (Debian 13's and unstable's, in trees that tools/ceph-tree
builds with debootstrap), with the client inside the tree: clone v2 (unprotected parent,
the parent snapshot kept in the trash namespace), protection, and the image trash (mv,
ls, restore, rm), through the rbd tool and through the Python bindings the driver uses.
"""

import json
import os
import re
import subprocess

import pytest
import rados
import rbd

from cinder_ext import ceph

# Full tier only: the matrix needs debootstrap trees (tools/ceph-tree), minutes to build;
# the gate runs the default 16.2 path (test_dev_cluster.py) instead.
pytestmark = pytest.mark.full

MiB = 1 << 20


def refused(cluster, *args):
    """True when the rbd tool refuses the command."""
    return subprocess.run([*cluster.tool_prefix, "rbd", "--conf", cluster.conf, "--keyring", cluster.admin_keyring, *args],
                          capture_output=True, timeout=60).returncode != 0


def rbd_json(cluster, *args):
    return json.loads(cluster.admin("rbd", *args, "--format", "json") or "null")


def _ours(names):
    """This module's images among names: in the full tier the session's cluster is shared
    with the tests that ran before on that worker, and their images are theirs."""
    return sorted(n for n in names if n.startswith("matrix-"))


def test_cluster_and_client_releases(ceph_cluster):
    """The daemons run the release asked for; the client's librados says its own."""
    reply = ceph_cluster.admin("ceph", "tell", "mon.a", "version", "-f", "json")
    version = re.search(r"\b(\d+\.\d+\.\d+)\b", reply).group(1)
    want = os.environ.get("CEPH_RELEASE") or ceph_cluster.ceph_release
    assert version.split(".")[0] == want, reply
    client = rados.Rados().version()
    print(f"cluster {version}, client librados {client}")
    assert client.major >= 2


def test_rbd_tool_clone_v2_protect_and_trash(ceph_cluster):
    pool = ceph_cluster.cinder_pool
    images = ceph_cluster.glance_pool
    adm = ceph_cluster.admin
    adm("rbd", "create", "--size", "64M", "--image-feature", "layering", f"{pool}/matrix-parent")
    adm("rbd", "snap", "create", f"{pool}/matrix-parent@prot")
    adm("rbd", "snap", "protect", f"{pool}/matrix-parent@prot")
    # a protected snapshot cannot be removed
    assert refused(ceph_cluster, "snap", "rm", f"{pool}/matrix-parent@prot")
    snaps = rbd_json(ceph_cluster, "snap", "ls", f"{pool}/matrix-parent")
    assert [s["protected"] for s in snaps] == ["true"]
    # v1-style clone of the protected snapshot, v2 clone of an unprotected one
    adm("rbd", "clone", "--rbd-default-clone-format", "1", f"{pool}/matrix-parent@prot", f"{images}/matrix-c1")
    adm("rbd", "snap", "create", f"{pool}/matrix-parent@open")
    adm("rbd", "clone", "--rbd-default-clone-format", "2", f"{pool}/matrix-parent@open", f"{images}/matrix-c2")
    info = rbd_json(ceph_cluster, "info", f"{images}/matrix-c2")
    assert info["parent"]["snapshot"] == "open"
    # v2: the parent snapshot goes to the trash namespace while the clone lives
    adm("rbd", "snap", "rm", f"{pool}/matrix-parent@open")
    every = rbd_json(ceph_cluster, "snap", "ls", "--all", f"{pool}/matrix-parent")
    assert [s["namespace"]["type"] for s in every if s["name"] != "prot"] == ["trash"], every
    # the image trash: mv, ls, restore, mv, rm
    adm("rbd", "trash", "mv", f"{images}/matrix-c2")
    trash = rbd_json(ceph_cluster, "trash", "ls", "-a", images)
    entry = [t for t in trash if t["name"] == "matrix-c2"]
    assert len(entry) == 1
    adm("rbd", "trash", "restore", f"{images}/{entry[0]['id']}")
    assert "matrix-c2" in rbd_json(ceph_cluster, "ls", images)
    adm("rbd", "trash", "mv", f"{images}/matrix-c2")
    adm("rbd", "trash", "rm", f"{images}/{entry[0]['id']}")
    assert _ours(t["name"] for t in rbd_json(ceph_cluster, "trash", "ls", "-a", images)) == []
    # the last clone gone, its trashed parent snapshot is removed with it
    every = rbd_json(ceph_cluster, "snap", "ls", "--all", f"{pool}/matrix-parent")
    assert [s["name"] for s in every] == ["prot"], every
    # a protected snapshot with a child cannot be unprotected; without one it can
    assert refused(ceph_cluster, "snap", "unprotect", f"{pool}/matrix-parent@prot")
    assert rbd_json(ceph_cluster, "snap", "ls", f"{pool}/matrix-parent")[0]["protected"] == "true"
    adm("rbd", "flatten", f"{images}/matrix-c1")
    adm("rbd", "snap", "unprotect", f"{pool}/matrix-parent@prot")
    adm("rbd", "snap", "rm", f"{pool}/matrix-parent@prot")
    adm("rbd", "rm", f"{images}/matrix-c1")
    adm("rbd", "rm", f"{pool}/matrix-parent")
    assert _ours(rbd_json(ceph_cluster, "ls", pool) + rbd_json(ceph_cluster, "ls", images)) == []


def test_bindings_clone_v2_trash_namespace(ceph_cluster):
    """What the driver does through Python: v2 clone, parent snapshot into the trash namespace."""
    client = ceph_cluster.client("cinder")
    conn = rados.Rados(conffile=client["conf"], rados_id=ceph_cluster.cinder_user)
    conn.conf_set("rbd_default_clone_format", "2")
    conn.connect(timeout=10)
    try:
        vols = conn.open_ioctx(ceph_cluster.cinder_pool)
        imgs = conn.open_ioctx(ceph_cluster.glance_pool)
        rbd.RBD().create(vols, "matrix-vol", 64 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(vols, "matrix-vol") as vol:
            vol.write(b"matrix" * 1000, 0)
            vol.create_snap("up")
        rbd.RBD().clone(vols, "matrix-vol", "up", imgs, "matrix-img", features=rbd.RBD_FEATURE_LAYERING)
        with rbd.Image(vols, "matrix-vol") as vol:
            vol.remove_snap("up")
            snaps = list(vol.list_snaps())
            assert [s["namespace"] for s in snaps] == [ceph.TRASH_NAMESPACE]
            assert vol.snap_get_trash_namespace(snaps[0]["id"])["original_name"] == "up"
        with rbd.Image(imgs, "matrix-img", read_only=True) as img:
            assert img.read(0, 6000) == b"matrix" * 1000
            assert img.parent_info()[:2] == (ceph_cluster.cinder_pool, "matrix-vol")
        rbd.RBD().trash_move(imgs, "matrix-img", 0)
        (entry,) = [t for t in rbd.RBD().trash_list(imgs) if t["name"] == "matrix-img"]
        rbd.RBD().trash_restore(imgs, entry["id"], "matrix-img")
        rbd.RBD().trash_move(imgs, "matrix-img", 0)
        rbd.RBD().trash_remove(imgs, entry["id"])
        with rbd.Image(vols, "matrix-vol") as vol:
            assert list(vol.list_snaps()) == []
        rbd.RBD().remove(vols, "matrix-vol")
    finally:
        conn.shutdown()
