"""Images and volumes are independent (issue 16): every order of deleting a source
volume, its clone-uploaded image, a volume created from that image and a snapshot of
that volume succeeds, the survivors keep reading their data at every step, and one
purge then leaves both pools and their trash exactly as they were. Real dev cluster,
real Glance 33 (deleting as Glance's own Ceph user, read-only on the Cinder pool).
"""

import itertools
import os
import time
import uuid

import rados
import rbd

from cinder_ext import delete
from cinder_ext import purge as purge_mod
from cinder_ext.create import create_volume_from_image
from cinder_ext.glance import Glance
from cinder_ext.upload import connect
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from tests.functional.test_upload_clone import _wait_hashed

ITEMS = ("source-volume", "image", "volume-from-image", "snapshot")


class _Chain:
    """V (volume) -> I (clone-uploaded image of V) -> W (volume created from I) -> S
    (a Cinder snapshot of W, protected as upstream's create_snapshot does)."""

    def __init__(self, env, glance_peer, cluster, conf_file):
        self.env, self.glance_peer, self.c = env, glance_peer, cluster
        self.conf, self.backend = env.load(conf_file)
        env_ = env
        self.v = env_.volume(16 * MiB)
        self.sha = env_.volume_sha(self.v)
        self.i = env_.image()
        assert env_.upload(conf_file, self.v, self.i)["method"] == "clone"
        _wait_hashed(env_, self.i)
        self.w = f"volume-{uuid.uuid4()}"
        env_.volumes.append(self.w)
        out = create_volume_from_image(self.conf, self.backend, self.i, self.w, 16 / 1024,
                                       cluster=cluster)
        assert out["method"] == "clone", out
        self.s = f"snapshot-{uuid.uuid4()}"
        cluster.create_snap(env_.vpool, self.w, self.s)
        cluster.protect_snap(env_.vpool, self.w, self.s)
        self.alive = set(ITEMS)

    def delete(self, item):
        env, c = self.env, self.c
        if item == "source-volume":
            out = delete.delete_volume(c, env.vpool, self.v)
            assert out["action"] in ("removed", "trashed"), out
        elif item == "image":
            resp = self.glance_peer.request("DELETE", f"/v2/images/{self.i}", timeout=120)
            assert resp.status == 204, resp  # never 409: volumes do not pin images
        elif item == "volume-from-image":
            if "snapshot" in self.alive:
                # Cinder's API refuses to delete a volume with snapshots; its cascade
                # delete removes them first, as here
                self.delete("snapshot")
            out = delete.delete_volume(c, env.vpool, self.w)
            assert out["action"] in ("removed", "trashed"), out
        else:
            c.remove_snap(env.vpool, self.w, self.s)
        self.alive.discard(item)

    def check_survivors(self):
        """Whatever is not deleted still reads the source volume's bytes."""
        env = self.env
        if "image" in self.alive:
            assert env.get_image(self.i)["status"] == "active"
            assert env.image_sha(self.i) == self.sha
        if "volume-from-image" in self.alive:
            assert env.volume_sha(self.w) == self.sha
        if "snapshot" in self.alive and "volume-from-image" in self.alive:
            assert env.volume_sha(self.w, snapshot=self.s) == self.sha


def test_every_deletion_order_succeeds_and_one_purge_leaves_nothing(cinder_env, glance_peer):
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    glance = Glance(conf)
    orders = list(itertools.permutations(ITEMS))
    leftovers, purge_seconds = [], []
    with connect(backend) as cluster:
        for order in orders:
            before = env.pool_state()
            chain = _Chain(env, glance_peer, cluster, conf_file)
            for item in order:
                chain.delete(item)
                chain.check_survivors()
            out = purge_mod.purge(cluster, env.vpool, [env.ipool], glance=glance)
            purge_seconds.append(out["seconds"])
            after = env.pool_state()
            if after != before:
                leftovers.append((order, env.new_state(before), out))
    totals = sorted(p["total"] for p in purge_seconds)
    print(f"{len(orders)} orders, {len(leftovers)} leftovers; one purge each: median "
          f"{totals[len(totals) // 2]:.3f} s, max {totals[-1]:.3f} s "
          f"(slowest by step: {max(purge_seconds, key=lambda p: p['total'])})")
    assert len(orders) == 24
    assert leftovers == []


def test_glance_cannot_finish_what_cinders_purge_does(cinder_env, glance_peer, ceph_cluster):
    """Least privilege: Glance's user (read-only on the Cinder pool) deletes the image
    (204) but cannot drop the volume's upload snapshot; Glance's user cannot remove a
    trash entry it left either way while a volume reads through it. Cinder's purge
    finishes both once nothing needs them."""
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    with connect(backend) as cluster:
        chain = _Chain(env, glance_peer, cluster, conf_file)
        chain.delete("image")  # W still reads through I: I goes to the Glance pool's trash
        state = env.new_state(env.baseline)
        assert state[env.ipool]["trash"] == [chain.i]
        # Glance's Ceph user may not write the Cinder pool: it cannot drop an upload snapshot
        client = ceph_cluster.client("glance")
        g = rados.Rados(rados_id=ceph_cluster.glance_user, conffile=client["conf"])
        g.connect(timeout=30)
        try:
            with g.open_ioctx(env.vpool) as io:
                with rbd.Image(io, chain.v, read_only=True) as img:  # it reads the parent
                    assert any(s.get("namespace") == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH
                               for s in img.list_snaps())
                try:  # but may not open it for writing, let alone drop its snapshot
                    with rbd.Image(io, chain.v):
                        raise AssertionError("Glance's user opened a Cinder volume read-write")
                except rbd.PermissionError:
                    pass
        finally:
            g.shutdown()
        chain.delete("volume-from-image")
        # the image left by Glance in its trash is now needed by nothing: Cinder's purge
        out = purge_mod.purge(cluster, env.vpool, [env.ipool], glance=Glance(conf))
        assert out["removed"] == [f"{env.ipool}/{chain.i}"], out
        assert out["reasons"][f"{env.ipool}/{chain.i}"].startswith("Glance deleted it")
        # the source volume lost its only dependent: a plain remove now
        assert delete.delete_volume(cluster, env.vpool, chain.v)["action"] == "removed"
    assert env.pool_state() == env.baseline


def _upstream_delete_with_clones(io, name):
    """What upstream Cinder's delete_volume does to a volume that has Cinder clones
    (its ``.clone_snap`` snapshots): rename it ``<name>.deleted`` and keep it."""
    rbd.RBD().rename(io, name, name + ".deleted")
    return name + ".deleted"


def _upstream_delete_clone(io, clone, parent, snap):
    """Upstream's delete of a Cinder clone: remove it, then its parent's clone snapshot,
    then the parent itself if it is a .deleted one with no snapshots left (it is not
    when an upload snapshot sits in the trash namespace: the leak of issue 16 item 4)."""
    rbd.RBD().remove(io, clone)
    with rbd.Image(io, parent) as img:
        img.unprotect_snap(snap)
        img.remove_snap(snap)
        left = list(img.list_snaps())
    if not left:
        rbd.RBD().remove(io, parent)
    return left


def test_a_deleted_volume_with_clones_and_images_is_gone_after_one_purge(cinder_env, glance_peer):
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    io = env.io[env.vpool]
    vol = env.volume(16 * MiB)
    image_id = env.image()
    assert env.upload(conf_file, vol, image_id)["method"] == "clone"
    _wait_hashed(env, image_id)
    # a Cinder clone of the volume, as upstream's create_cloned_volume makes it
    clone = f"volume-{uuid.uuid4()}"
    snap = f"{clone}.clone_snap"
    env.volumes.append(clone)
    with rbd.Image(io, vol) as img:
        img.create_snap(snap)
        img.protect_snap(snap)
    rbd.RBD().clone(io, vol, snap, io, clone)
    deleted = _upstream_delete_with_clones(io, vol)
    env.volumes.append(deleted)
    assert _delete_image(glance_peer, image_id).status == 204
    left = _upstream_delete_clone(io, clone, deleted, snap)
    # the upload snapshot Glance's user could not drop keeps <vol>.deleted for ever upstream
    assert [s.get("namespace") for s in left] == [rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH]
    assert deleted in env.pool_state()[env.vpool]["images"]
    with connect(backend) as cluster:
        # the driver's call (no volume scan) reclaims it too
        out = purge_mod.purge(cluster, env.vpool, [env.ipool], scan_volumes=False, glance=Glance(conf))
    assert out["removed"] == [f"{env.vpool}/{deleted}"], out
    assert env.pool_state() == env.baseline


def _delete_image(glance_peer, image_id):
    return glance_peer.request("DELETE", f"/v2/images/{image_id}", timeout=120)


def test_deleting_the_image_first_then_purge_with_the_volume_kept(cinder_env, glance_peer):
    """Glance deletes an image a volume was created from (204, cinder-tempest-plugin's
    test_image_volume_dependencies_3); the volume keeps reading, purge keeps what it needs
    and reclaims it right after the volume goes: the space comes back in one purge."""
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    with connect(backend) as cluster:
        chain = _Chain(env, glance_peer, cluster, conf_file)
        chain.delete("image")
        chain.delete("source-volume")
        chain.check_survivors()
        out = purge_mod.purge(cluster, env.vpool, [env.ipool], glance=Glance(conf))
        assert out["removed"] == []
        kept = {k["image"]: k["reason"] for k in out["kept"]}
        assert "clones depend on it" in kept[f"{env.ipool}/{chain.i}"]
        assert "clones depend on it" in kept[f"{env.vpool}/{chain.v}"]
        chain.delete("volume-from-image")
        t0 = time.monotonic()
        out = purge_mod.purge(cluster, env.vpool, [env.ipool], glance=Glance(conf))
        print(f"purge after the last dependent went: {time.monotonic() - t0:.3f} s, "
              f"removed {out['removed']}")
        assert sorted(out["removed"]) == sorted([f"{env.ipool}/{chain.i}", f"{env.vpool}/{chain.v}"])
    assert env.pool_state() == env.baseline


LONG_ITEMS = ("image", "volume", "snapshot", "volume-from-snapshot", "image-of-that-volume")


class _LongChain:
    """I0 (an image Glance wrote) -> V1 (volume created from it) -> S (snapshot of V1)
    -> V2 (volume created from S, as upstream Cinder's create_volume_from_snapshot clones
    it) -> I2 (clone-uploaded image of V2)."""

    def __init__(self, env, glance_peer, cluster, conf_file, data):
        self.env, self.glance_peer, self.c = env, glance_peer, cluster
        conf, backend = env.load(conf_file)
        self.i0 = env.image()
        env.glance().upload(self.i0, iter([data]))
        _wait_hashed(env, self.i0)
        self.v1 = f"volume-{uuid.uuid4()}"
        self.v2 = f"volume-{uuid.uuid4()}"
        env.volumes += [self.v1, self.v2]
        out = create_volume_from_image(conf, backend, self.i0, self.v1, len(data) / (1 << 30),
                                       cluster=cluster)
        assert out["method"] == "clone", out
        self.s = f"snapshot-{uuid.uuid4()}"
        cluster.create_snap(env.vpool, self.v1, self.s)
        cluster.protect_snap(env.vpool, self.v1, self.s)
        cluster.clone(env.vpool, self.v1, self.s, env.vpool, self.v2)
        self.i2 = env.image()
        assert env.upload(conf_file, self.v2, self.i2)["method"] == "clone"
        _wait_hashed(env, self.i2)
        self.sha = env.volume_sha(self.v1)
        self.alive = set(LONG_ITEMS)

    def delete(self, item):
        env, c = self.env, self.c
        if item in ("image", "image-of-that-volume"):
            image_id = self.i0 if item == "image" else self.i2
            resp = self.glance_peer.request("DELETE", f"/v2/images/{image_id}", timeout=120)
            assert resp.status == 204, resp
        elif item == "snapshot":
            c.remove_snap(env.vpool, self.v1, self.s)  # to the trash namespace while V2 needs it
        else:
            name = self.v1 if item == "volume" else self.v2
            if item == "volume" and "snapshot" in self.alive:
                self.delete("snapshot")  # Cinder's cascade delete: its snapshots first
            out = delete.delete_volume(c, env.vpool, name)
            assert out["action"] in ("removed", "trashed"), out
        self.alive.discard(item)

    def check_survivors(self):
        env = self.env
        for item, image_id in (("image", self.i0), ("image-of-that-volume", self.i2)):
            if item in self.alive:
                assert env.image_sha(image_id) == self.sha
        for item, name in (("volume", self.v1), ("volume-from-snapshot", self.v2)):
            if item in self.alive:
                assert env.volume_sha(name) == self.sha


def test_image_volume_snapshot_volume_image_chains_in_many_orders(cinder_env, glance_peer):
    """The chain image -> volume -> snapshot -> volume -> image: every 10th of its 120
    deletion orders (first and last included), each followed by one purge."""
    env = cinder_env
    conf_file = env.conf()
    conf, backend = env.load(conf_file)
    glance = Glance(conf)
    data = os.urandom(MiB) + bytes(7 * MiB)
    orders = list(itertools.permutations(LONG_ITEMS))[::10] + [tuple(reversed(LONG_ITEMS))]
    leftovers = []
    with connect(backend) as cluster:
        for order in orders:
            before = env.pool_state()
            chain = _LongChain(env, glance_peer, cluster, conf_file, data)
            for item in order:
                chain.delete(item)
                chain.check_survivors()
            purge_mod.purge(cluster, env.vpool, [env.ipool], glance=glance)
            if env.pool_state() != before:
                leftovers.append((order, env.new_state(before)))
    print(f"{len(orders)} orders of the 5-link chain, {len(leftovers)} leftovers")
    assert leftovers == []
