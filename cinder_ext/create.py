"""Create a volume from a Glance image: copy-on-write clone when cloneable, else a copy.

Cloneable (as upstream Cinder's ``_is_cloneable``, plus our depth rule): an rbd://
location in this cluster (same fsid) with a snapshot, disk_format raw, the snapshot
readable by our Ceph user, and ``rbd_max_clone_depth`` > 0. The clone:

1. clone ``<pool>/<image id>@snap`` to ``volume-<id>`` in the cluster's default clone
   format (clone v2 on mimic and later), as upstream Cinder's clone_image does. So the
   image and the volume are independent (OpenStack's dependency contract): Glance 33
   deletes the image (204; glance_store moves it to its pool's trash while the volume
   reads through its snapshot), and ``purge.purge()`` reclaims that trash entry once
   the last such volume is gone. The source image is recorded in our journal
   (cinder_ext.journal's SourceRecord, written before the clone) so that purge knows
   the trash entry Glance leaves is an image our volumes read, not another tool's;
2. mark the volume ``CREATE_MARK = clone:<image id>`` until done (a retry resumes);
3. grow it to the requested size;
4. flatten it when the chain above it would exceed ``rbd_max_clone_depth``, counting
   every hop (volume -> image -> volume ...), whatever pool each link is in.

A failure undoes what this attempt made; a crash leaves a marked volume (or an unmarked
clone of the same snapshot) that the same call, run again, finishes.
The copy streams the image from Glance into a new volume, zeros left as holes.
"""

import logging
import time

from glance_store_ext.contract import ContractError, RBDLocation

from cinder_ext import exceptions as exc
from cinder_ext import journal, steps
from cinder_ext.ceph import USER_NAMESPACE
from cinder_ext.clone import Timer, clone_order
from cinder_ext.footprint import CREATE_MARK
from cinder_ext.depth import clone_depth
from cinder_ext.glance import Glance
from cinder_ext.upload import connect, volume_name

LOG = logging.getLogger(__name__)

GiB = 1 << 30


def _rbd_location(glance, image_id):
    for url in glance.image_locations(image_id):
        if not (url or "").startswith("rbd://"):
            continue
        try:
            loc = RBDLocation.parse(url)
        except ContractError:
            continue
        if loc.fsid and loc.snapshot:
            return loc
    return None


def cloneable(cluster, backend, glance, image):
    """(RBDLocation, None) when the image can be cloned, else (None, reason)."""
    if backend.rbd_max_clone_depth <= 0:
        return None, "cloning disabled (rbd_max_clone_depth = 0)"
    if image.get("disk_format") != "raw":
        return None, f"disk_format is {image.get('disk_format')}, not raw"
    loc = _rbd_location(glance, image["id"])
    if loc is None:
        return None, "no rbd:// location with a snapshot (Glance shows none, or not RBD)"
    fsid = cluster.fsid()
    if loc.fsid != fsid:
        return None, f"the image is in another Ceph cluster ({loc.fsid}, ours {fsid})"
    try:
        cluster.info(loc.pool, loc.image)
        if not any(s["name"] == loc.snapshot and s["namespace"] == USER_NAMESPACE
                   for s in cluster.snaps(loc.pool, loc.image)):
            return None, f"{loc.pool}/{loc.image}@{loc.snapshot} does not exist"
    except exc.CephError as e:
        return None, f"cannot read the image's snapshot: {e}"
    return loc, None


def create_volume_from_image(conf, backend, image_id, volume, size_gb=None, glance=None,
                             cluster=None):
    """Create the backend's volume from Glance image image_id; returns a result dict."""
    timer, started = Timer(), time.monotonic()
    name, pool = volume_name(volume), backend.rbd_pool
    glance = glance or Glance(conf)
    own = cluster is None
    cluster = cluster or connect(backend)
    try:
        with timer.step("connect"):
            if cluster.client is None:
                cluster.connect()
        with timer.step("fetch"):
            image = glance.get_image(image_id)
            if image.get("status") != "active":
                raise exc.CreateFailed(f"image {image_id} is {image.get('status')}, not active: "
                                       "nothing to create a volume from")
            isize = int(image.get("size") or 0)
            size = int(size_gb * GiB) if size_gb else -(-isize // GiB) * GiB
            if size < isize:
                raise exc.CreateFailed(f"requested size {size_gb} GB is smaller than image "
                                       f"{image_id} ({isize} bytes)")
            loc, reason = cloneable(cluster, backend, glance, image)
        result = {"volume": f"{pool}/{name}", "image_id": image_id, "size": size}
        if loc is not None:
            out = _clone(cluster, backend, pool, name, image_id, loc, size, timer)
            result.update(method="clone", reason=None, location=loc.url, **out)
        else:
            LOG.info("volume %s/%s from image %s: copying, %s", pool, name, image_id, reason)
            out = _copy(cluster, glance, pool, name, image_id, size, timer)
            result.update(method="copy", reason=reason, **out)
        result["seconds"] = dict(timer.steps, total=round(time.monotonic() - started, 4))
        return result
    finally:
        if own:
            cluster.close()


def _mark(method, image_id):
    return f"{method}:{image_id}"


def _existing(cluster, pool, name, image_id, loc=None):
    """What an earlier attempt left at pool/name: None, 'clone' or 'copy' (its mark), or
    'clone-unmarked' (a clone of the same snapshot: crashed before the mark, or a volume
    already complete, which a failure must then not remove); raise if foreign."""
    try:
        info = cluster.info(pool, name)
    except exc.CephNotFound:
        return None
    mark = cluster.metadata_get(pool, CREATE_MARK, name=name)
    for method in ("clone", "copy"):
        if mark == _mark(method, image_id):
            return method
    parent = info["parent"]
    if mark is None and loc is not None and parent and (
            parent["pool"], parent["image"], parent["snap"]) == (loc.pool, loc.image, loc.snapshot):
        return "clone-unmarked"
    raise exc.CreateFailed(f"volume {pool}/{name} already exists and is not being created "
                           f"from image {image_id}; left untouched")


def _record_source(cluster, pool, loc):
    """Record, in our pool's journal, that the Glance image is a parent of our volumes:
    once Glance deletes it, purge reclaims its trash entry when no clone needs it."""
    journal.Journal(cluster, pool).claim_source(loc.pool, loc.image, "create-volume cloned it")


def _undo(cluster, pool, name, error):
    try:
        cluster.remove(pool, name)
    except exc.CephError as e:
        raise exc.CreateFailed(f"{error}; removing the half-made {pool}/{name} failed too "
                               f"({e}): run the same command again", cleaned=False) from None
    raise exc.CreateFailed(f"{error}; {pool}/{name} was removed", cleaned=True) from None


def _clone(cluster, backend, pool, name, image_id, loc, size, timer):
    resumed = _existing(cluster, pool, name, image_id, loc)
    if resumed == "copy":  # a copy interrupted half-way (the image was not cloneable then)
        cluster.remove(pool, name)
    removable = resumed == "clone"  # a marked leftover is ours to undo; a complete volume is not
    resumed = resumed in ("clone", "clone-unmarked")
    # depth of the new volume: one more than its parent's
    depth = clone_depth(cluster, loc.pool, loc.image) + 1
    made = False
    try:
        if not resumed:
            with timer.step("clone"):
                src = cluster.info(loc.pool, loc.image)
                order = clone_order(src["stripe_unit"], backend.rbd_store_chunk_size << 20)
                _record_source(cluster, pool, loc)
                cluster.clone(loc.pool, loc.image, loc.snapshot, pool, name, order=order,
                              features=cluster.default_features())
                made = True
                steps.reached("create.cloned")
        with timer.step("mark"):
            cluster.metadata_set(pool, name, CREATE_MARK, _mark("clone", image_id))
        with timer.step("resize"):
            if cluster.info(pool, name)["size"] < size:
                cluster.resize(pool, name, size)
            steps.reached("create.resized")
        flatten = depth > backend.rbd_max_clone_depth
        if flatten and cluster.info(pool, name)["parent"]:
            with timer.step("flatten"):
                LOG.info("volume %s/%s would be clone %d deep (rbd_max_clone_depth %d): "
                         "flattening it", pool, name, depth, backend.rbd_max_clone_depth)
                cluster.flatten(pool, name)
                steps.reached("create.flattened")
        with timer.step("mark"):
            cluster.metadata_remove(pool, name, CREATE_MARK)
    except exc.CinderExtError as e:
        if made or removable:
            _undo(cluster, pool, name, e)
        raise
    return {"depth": 0 if flatten else depth, "flattened": flatten, "resumed": resumed}


def _copy(cluster, glance, pool, name, image_id, size, timer):
    resumed = _existing(cluster, pool, name, image_id)
    if resumed:  # interrupted half-way (a copy, or a clone the image no longer allows): redo
        cluster.remove(pool, name)
    made = False
    try:
        with timer.step("create"):
            cluster.create(pool, name, size)
            made = True
            cluster.metadata_set(pool, name, CREATE_MARK, _mark("copy", image_id))
            steps.reached("create.copy_created")
        with timer.step("copy"):
            written = cluster.write_stream(pool, name, glance.download(image_id, 4 << 20))
            steps.reached("create.copy_written")
        with timer.step("mark"):
            cluster.metadata_remove(pool, name, CREATE_MARK)
    except exc.CinderExtError as e:
        if made:
            _undo(cluster, pool, name, e)
        raise
    return {"bytes": written, "resumed": bool(resumed), "depth": 0, "flattened": False}
