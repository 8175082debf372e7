"""Upload a volume to a Glance image: fetch, decide, clone or copy, fall back with a reason.

The result is a plain dict (the CLI prints it as JSON):
method ('clone' | 'copy'), reason (None for a clone, else one of decision.REASONS),
detail, location (the rbd:// URL of a clone), bytes, seconds per step.
"""

import logging
import re
import time

from cinder_ext import ceph as ceph_mod
from cinder_ext import clone as clone_mod
from cinder_ext import copy as copy_mod
from cinder_ext import decision
from cinder_ext import exceptions as exc
from cinder_ext.depth import clone_depth
from cinder_ext.glance import Glance

LOG = logging.getLogger(__name__)

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def volume_name(volume):
    """Cinder's naming: a volume id becomes 'volume-<id>'; a name is used as given."""
    return f"volume-{volume}" if _UUID.match(volume) else volume


def connect(backend):
    """A Cluster for the backend's rbd_* options (not yet connected)."""
    return ceph_mod.Cluster(backend.rbd_ceph_conf, backend.rbd_user, backend.rbd_cluster_name,
                            backend.rados_connect_timeout, backend.rados_connection_retries,
                            backend.rados_connection_interval)


def _locations(image):
    urls = {loc.get("url") for loc in image.get("locations") or []}
    if image.get("direct_url"):
        urls.add(image["direct_url"])
    return urls


def upload_volume(conf, backend, volume, image_id, store_id=None, encrypted=None,
                  progress=None, glance=None, cluster=None):
    """Upload the backend's volume to the queued Glance image image_id.

    encrypted: None to detect (a LUKS header at offset 0), or the volume's known state.
    Returns the result dict; raises CinderExtError when neither path can complete.
    """
    timer = clone_mod.Timer()
    started = time.monotonic()
    name = volume_name(volume)
    pool = backend.rbd_pool
    glance = glance or Glance(conf)
    own_cluster = cluster is None
    cluster = cluster or connect(backend)
    try:
        with timer.step("connect"):
            if cluster.client is None:
                cluster.connect()
        with timer.step("fetch"):
            vinfo = cluster.info(pool, name)
            if encrypted is None:
                encrypted = cluster.head(pool, name, 6).startswith(ceph_mod.LUKS_MAGIC)
            fsid = cluster.fsid()
            image = glance.get_image(image_id)
            stores, stores_error, depth = None, None, None
            if backend.enable_clone_optimization:
                try:
                    stores = glance.stores_detail()
                except exc.GlanceError as e:
                    stores_error = str(e)
                # hops above the volume, through the Glance pool too (issue 7: chains)
                depth = clone_depth(cluster, pool, name)
        vol = decision.Volume(name, encrypted=encrypted)
        bound = dict(volume_depth=depth, max_clone_depth=backend.rbd_max_clone_depth)
        choice = decision.decide(backend.enable_clone_optimization, stores, vol, image, fsid,
                                 store_id, stores_error, **bound)
        result = {"volume": f"{pool}/{name}", "image_id": image_id, "size": vinfo["size"]}

        lock = None
        if isinstance(choice, decision.Clone):
            # one upload per image id: a second one would remove this one's clone as
            # the leftover of an earlier attempt (clone.ImageLock)
            lock = clone_mod.ImageLock(cluster, choice.pool, image_id)
            try:
                lock.__enter__()  # UploadInProgress (a live holder) goes to the caller
            except exc.CephError as e:  # e.g. no write caps on the Glance pool
                lock = None
                choice = decision.Copy(decision.CLONE_FAILED, str(e))
        try:
            # a retry after a crash that happened once the location was requested: let
            # Glance's task of the earlier attempt finish before judging the image
            if isinstance(choice, decision.Clone):
                with timer.step("fetch"):
                    glance.wait_location_tasks(image_id, backend.clone_active_timeout)
                    image = glance.get_image(image_id)
                choice = decision.decide(backend.enable_clone_optimization, stores, vol, image, fsid,
                                         store_id, stores_error, **bound)
            if isinstance(choice, decision.Copy) and choice.reason == decision.IMAGE_NOT_QUEUED:
                again = decision.decide(True, stores, vol, dict(image, status="queued"), fsid,
                                        store_id, stores_error, **bound)
                if isinstance(again, decision.Clone):
                    url = clone_mod.image_location(again, image_id).url
                    if image.get("status") == "importing" or (image.get("status") == "active"
                                                               and url in _locations(image)):
                        # finished by an earlier attempt, of this volume: not another's
                        parent = cluster.info(again.pool, image_id)["parent"]
                        if not parent or (parent["pool"], parent["image"]) != (pool, name):
                            raise exc.CinderExtError(
                                f"image {image_id} is already {image.get('status')} and holds "
                                + (f"a clone of {parent['pool']}/{parent['image']}" if parent
                                   else "another image")
                                + f", not of {pool}/{name}; not uploading over it")
                        with timer.step("active"):
                            glance.wait_active(image_id, backend.clone_active_timeout, url)
                        LOG.info("upload of %s/%s to image %s: finished by an earlier attempt",
                                 pool, name, image_id)
                        return _done(result, "clone", None, "", url, vinfo["size"], timer, started,
                                     resumed=True)

            if isinstance(choice, decision.Clone):
                tx = clone_mod.CloneUpload(cluster, glance, pool, name, image_id, choice,
                                           backend.clone_active_timeout, timer, locked=True)
                try:
                    out = tx.run()
                    LOG.info("upload of %s/%s to image %s: cloned as %s", pool, name, image_id,
                             out["location"])
                    return _done(result, "clone", None, "", out["location"], vinfo["size"], timer,
                                 started, recovered=out["recovered"], location_api=out["location_api"])
                except exc.CloneFailed as e:
                    choice = decision.Copy(decision.CLONE_FAILED, e.reason if e.cleaned else str(e))
                    LOG.warning("upload of %s/%s to image %s: clone failed and was rolled back%s: %s",
                                pool, name, image_id, "" if e.cleaned else " (incompletely)", e.reason)
                    if not e.cleaned:
                        result["leftovers"] = True
        finally:
            if lock is not None:
                lock.__exit__()

        LOG.info("upload of %s/%s to image %s: copying, %s", pool, name, image_id, choice)
        # a delete waits while the copy reads the volume (clone.VolumeLock)
        with timer.step("copy"), clone_mod.volume_lock_for_upload(cluster, pool, name):
            if image.get("disk_format") in copy_mod.QEMU_FORMATS:
                sent = copy_mod.convert_volume_to_image(
                    cluster, glance, pool, name, image_id, vinfo["size"], image["disk_format"],
                    read_size=backend.image_upload_read_size << 20, progress=progress,
                    store=store_id)
            else:
                sent = copy_mod.copy_volume_to_image(
                    cluster, glance, pool, name, image_id, vinfo["size"],
                    read_size=backend.image_upload_read_size << 20,
                    depth=backend.image_upload_read_ahead, progress=progress, store=store_id)
        return _done(result, "copy", choice.reason, choice.detail, None, sent, timer, started)
    finally:
        if own_cluster:
            cluster.close()


def _done(result, method, reason, detail, location, nbytes, timer, started, **extra):
    result.update(method=method, reason=reason, detail=detail, location=location, bytes=nbytes,
                  seconds=dict(timer.steps, total=round(time.monotonic() - started, 4)), **extra)
    return result
