"""Turning the driver on over upstream's work, and going back to upstream's driver, on a real
cloud (issue 23: "turning it on or off loses nothing").

Both switches are an operator's: `volume_driver` in cinder.conf and a restart of
cinder-volume (`tools/cloud driver ours|upstream DIR`). Users act through the APIs as the
demo project's member. The cloud is back on our driver, clone on, at the end of each test.
"""

import hashlib
import json
import os
import subprocess
import time

import pytest

import cloudlib as cloud_tool
import demo_openstack as flow_mod
from tests.cloud.conftest import wait_baseline

MiB = 1 << 20

# {pool: {name: {snaps, parent, size, head}}} of the images and trash entries whose names
# contain one of the ids given on stdin, as Ceph's admin sees them; head: sha256 of the
# first MiB. The session's cloud is shared: other modules' leftovers come and go meanwhile
VIEW = r"""
import hashlib, json, sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect()
ids = json.loads(sys.stdin.read())
out = {}
for pool in ("volumes", "images"):
    io = c.open_ioctx(pool); r = rbd.RBD(); out[pool] = {}
    live = [(n, {"name": n}) for n in r.list(io)]
    trash = [(e["name"] + " (trash)", {"image_id": e["id"]}) for e in r.trash_list(io)]
    for key, how in live + trash:
        if not any(i in key for i in ids):
            continue
        with rbd.Image(io, read_only=True, **how) as im:
            try:
                p = im.get_parent_image_spec()
                parent = f"{p['pool_name']}/{p['image_name']}@{p['snap_name']}"
            except rbd.ImageNotFound:
                parent = None
            snaps = sorted(s["name"] for s in im.list_snaps())
            out[pool][key] = {"snaps": snaps, "parent": parent, "size": im.size(),
                              "head": hashlib.sha256(im.read(0, min(im.size(), 1 << 20))).hexdigest()}
    io.close()
c.shutdown()
print(json.dumps(out))
"""


def ceph_view(cloud, ids):
    proc = subprocess.run(["/usr/bin/python3", "-c", VIEW, cloud.env["CEPH_CONF"]], input=json.dumps(list(ids)),
                          capture_output=True, text=True, check=True, timeout=300, cwd=cloud.dir,
                          env={"PATH": "/usr/bin:/bin", "HOME": os.path.join(cloud.dir, "home")})
    return json.loads(proc.stdout)


def head(data):
    return hashlib.sha256(data[:MiB] + b"\0" * (MiB - len(data[:MiB]))).hexdigest()


def new_volume(cloud, name, data=None, **extra):
    args = ["volume", "create", "--size", str(extra.pop("size", 1))]
    for k, v in extra.items():
        args += [f"--{k}", v]
    vid = cloud.openstack(*args, name)["id"]
    cloud.wait("volume", vid, "available")
    if data:
        cloud.write_volume(vid, data)
    return vid


def delete(cloud, kind, ident):
    cloud.openstack(kind, "delete", ident)
    cloud.wait_gone(kind, ident, timeout=300)


@pytest.fixture
def ours_again(cloud):
    yield
    cloud.set_driver("ours")
    with open(os.path.join(cloud.dir, "cinder", "cinder.conf")) as f:
        assert "\nvolume_driver = cinder_ext.driver.RBDCloneUploadDriver\n" in f.read()


def test_turned_on_over_upstreams_work_it_changes_nothing_of_theirs_and_everything_keeps_working(
        cloud, ours_again):
    before = cloud.rbd_names()
    cloud.set_driver("upstream")
    data = os.urandom(MiB)
    vol = new_volume(cloud, "onoff-up-vol", data)
    snap = cloud.openstack("volume", "snapshot", "create", "--volume", vol, "onoff-up-snap")["id"]
    wait_snapshot(cloud, snap)
    clone = new_volume(cloud, "onoff-up-clone", source=vol)
    image, _ = flow_mod.upload(cloud, vol, "onoff-up-img")  # upstream's copy
    assert cloud.method_of(image) is None  # no line of ours: upstream's driver ran it
    from_image = new_volume(cloud, "onoff-up-from-img", image=image)
    ids = (vol, snap, clone, image, from_image)
    theirs = ceph_view(cloud, ids)
    assert len(theirs["volumes"]) == 3 and len(theirs["images"]) == 1, theirs

    cloud.set_driver("ours")  # the option is on in this cloud's cinder.conf
    assert ceph_view(cloud, ids) == theirs, "turning our driver on changed upstream's images or snapshots"
    assert cloud.image_bytes(image)[:MiB] == data

    # every operation on their volumes, snapshot, clone and image, with ours
    image2, _ = flow_mod.upload(cloud, vol, "onoff-up-img2")
    assert cloud.method_of(image2) == "clone"
    assert cloud.image_bytes(image2)[:MiB] == data
    from_snap = new_volume(cloud, "onoff-up-from-snap", snapshot=snap)
    from_image2 = new_volume(cloud, "onoff-up-from-img2", image=image)
    cloud.openstack("volume", "set", "--size", "2", from_image)
    cloud.wait("volume", from_image, "available")
    view = ceph_view(cloud, (from_snap, from_image2, clone, from_image))
    for name in (f"volume-{from_snap}", f"volume-{from_image2}", f"volume-{clone}"):
        assert view["volumes"][name]["head"] == head(data), name
    assert view["volumes"][f"volume-{from_image}"]["size"] == 2 << 30

    # and every one of them deletes, in an order that leaves dependents behind each time:
    # their image before the volumes made from it, their volume before its clone and the
    # image cloned from it (a snapshot goes only after the volume made from it: Cinder's
    # SnapshotIsBusy, either driver)
    delete(cloud, "image", image)
    delete(cloud, "volume", from_snap)
    delete_snapshot(cloud, snap)
    delete(cloud, "volume", vol)
    for kind, ident in (("image", image2), ("volume", from_image2), ("volume", from_image), ("volume", clone)):
        delete(cloud, kind, ident)
    print(f"pools at the baseline {wait_baseline(cloud, before):.1f} s after the last delete")


def wait_snapshot(cloud, snap, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        code, body = cloud.rest("volume", f"/snapshots/{snap}")
        assert code == 200, code
        if body["snapshot"]["status"] == "available":
            return
        assert body["snapshot"]["status"] not in ("error",) and time.monotonic() < deadline, body
        time.sleep(0.3)


def delete_snapshot(cloud, snap, timeout=300):
    code, body = cloud.post("volume", f"/snapshots/{snap}", None, method="DELETE")
    assert code == 202, (code, body)
    deadline = time.monotonic() + timeout
    while cloud.rest("volume", f"/snapshots/{snap}")[0] != 404:
        assert time.monotonic() < deadline, f"snapshot {snap} still there"
        time.sleep(0.3)


def test_back_to_upstreams_driver_images_keep_their_bytes_volumes_delete_and_flatten_makes_them_independent(
        cloud, ours_again):
    before = cloud.rbd_names()
    datas, vols, images = [], [], []
    for k in range(3):
        datas.append(os.urandom(MiB))
        vols.append(new_volume(cloud, f"onoff-back-vol{k}", datas[-1]))
        image, _ = flow_mod.upload(cloud, vols[-1], f"onoff-back-img{k}")
        assert cloud.method_of(image) == "clone"
        images.append(image)
    from_image = new_volume(cloud, "onoff-back-from-img", image=images[0])

    cloud.set_driver("upstream")
    for image, data in zip(images, datas):
        assert cloud.image_bytes(image)[:MiB] == data
    # upstream's delete of a volume whose snapshot has a clone child in the Glance pool
    delete(cloud, "volume", vols[0])
    assert ceph_view(cloud, images[:1])["images"][images[0]]["head"] == head(datas[0])

    cli = [os.path.join(cloud_tool.VENVS["cinder"], "bin", "cinder-rbd-clone"), "--config-file",
           os.path.join(cloud.dir, "cinder", "cinder.conf"), "flatten-uploads"]

    def flatten(*extra):
        proc = subprocess.run(cli + list(extra), capture_output=True, text=True, timeout=600, cwd=cloud.dir,
                              env=dict(os.environ, HOME=os.path.join(cloud.dir, "home")))
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    def ours(report):  # the session's cloud may hold earlier modules' clone uploads too
        listed = [i.split("/")[1].split()[0] for i in report["images"]]
        assert report["count"] == len(listed), report
        return sorted(i for i in listed if i in images)
    # the operator's count, then the flatten (doc/source/admin/deletion.rst): the two images
    # whose volumes live (upstream's delete already flattened the first one's)
    dry = flatten("--dry-run")
    assert ours(dry) == sorted(images[1:]) and dry["flattened"] == 0, dry
    done = flatten()
    assert ours(done) == sorted(images[1:]) and done["flattened"] == done["count"], done
    assert flatten("--dry-run")["count"] == 0
    view = ceph_view(cloud, images)
    for image, data in zip(images, datas):
        assert view["images"][image]["parent"] is None, (image, view["images"][image])
        assert view["images"][image]["head"] == head(data)
    for ident in (vols[1], vols[2], from_image):
        delete(cloud, "volume", ident)
    for image, data in zip(images, datas):
        assert cloud.image_bytes(image)[:MiB] == data
        delete(cloud, "image", image)
    print(f"pools at the baseline {wait_baseline(cloud, before):.1f} s after the last delete")
