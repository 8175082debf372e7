"""Upload a volume to a Glance image: the one orchestrator of the CLI and the driver.

fetch -> decide -> clone transaction (or an independent image: clone, flatten in Ceph)
-> else copy, with the reason. ``run_upload`` takes
the Ceph adapter, the Glance client and the copy as arguments:

* the CLI (``upload_volume``): cinder_ext.ceph.Cluster, cinder_ext.glance.Glance and
  cinder_ext.copy, under the volume's shared lock (nothing else stops a delete);
* the driver (cinder_ext.driver): the same Cluster with its calls in native threads,
  Cinder's Glance client (the user's token with Cinder's service token) and upstream's
  own copy_volume_to_image (Cinder's volume states stop a delete meanwhile).

The result is a plain dict (the CLI prints it as JSON):
method ('clone' | 'independent' | 'copy'), reason (None for a clone; for an independent
image why it was flattened; for a copy one of decision.REASONS), detail, location (the
rbd:// URL of a clone or independent image), bytes, size, seconds per step.
"""

import dataclasses
import logging
import re
import time

from cinder_ext import ceph as ceph_mod
from cinder_ext import clone as clone_mod
from cinder_ext import copy as copy_mod
from cinder_ext import decision
from cinder_ext import exceptions as exc
from cinder_ext import footprint
from cinder_ext import glance as glance_mod
from cinder_ext import independent
from cinder_ext import journal
from cinder_ext import locks
from cinder_ext import snapshot_gate
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


def upload_volume(conf, backend, volume, image_id, store_id=None, encrypted=None,
                  progress=None, glance=None, cluster=None):
    """The CLI's upload: the backend's volume to the queued Glance image image_id.

    encrypted: None to detect (a LUKS header at offset 0), or the volume's known state.
    Returns the result dict; raises CinderExtError when neither path can complete.
    """
    timer = clone_mod.Timer()
    started = time.monotonic()
    name, pool = volume_name(volume), backend.rbd_pool
    glance = glance or Glance(conf)
    own_cluster = cluster is None
    cluster = cluster or connect(backend)

    def copy(image, size):
        # a delete waits while the copy reads the volume (locks.VolumeLock)
        with locks.volume_lock_for_upload(cluster, pool, name):
            read_size = backend.image_upload_read_size << 20
            if image.get("disk_format") in copy_mod.QEMU_FORMATS:
                return copy_mod.convert_volume_to_image(
                    cluster, glance, pool, name, image_id, size, image["disk_format"],
                    read_size=read_size, progress=progress, store=store_id)
            return copy_mod.copy_volume_to_image(
                cluster, glance, pool, name, image_id, size, read_size=read_size,
                depth=backend.image_upload_read_ahead, progress=progress, store=store_id)

    try:
        with timer.step("connect"):
            if cluster.client is None:
                cluster.connect()
        return run_upload(cluster, glance, backend, name, image_id, copy, copier="ours",
                          store_id=store_id, encrypted=encrypted, timer=timer, started=started)
    finally:
        if own_cluster:
            cluster.close()


def run_upload(ceph, glance, options, name, image_id, copy, copier, store_id=None,
               encrypted=None, image_meta=None, timer=None, started=None):
    """Upload volume ``name`` of ``options.rbd_pool`` to the queued image ``image_id``.

    ceph:       a connected Ceph adapter (cinder_ext.ceph.Cluster's methods)
    glance:     a Glance client (cinder_ext.glance.Glance's methods)
    options:    enable_clone_optimization, rbd_flatten_volume_to_image, rbd_pool,
                rbd_max_clone_depth, rbd_max_upload_snapshots, clone_active_timeout
    copy:       copy(image, size) -> bytes sent; the streaming upload, called once at most
    copier:     names the copy in the log line ('ours' | 'upstream')
    encrypted:  the volume's known state, or None to look for a LUKS header
    image_meta: the image as the caller was handed it, used if Glance cannot show it
    Raises CinderExtError when neither path can complete (nothing half-done is left that
    purge does not reconcile).
    """
    with snapshot_gate.gate().on_the_way() as ticket:
        return _run_upload(ceph, glance, options, name, image_id, copy, copier, store_id,
                           encrypted, image_meta, timer, started, ticket)


def _run_upload(ceph, glance, options, name, image_id, copy, copier, store_id, encrypted,
                image_meta, timer, started, ticket):
    timer = timer or clone_mod.Timer()
    started = started or time.monotonic()
    pool = options.rbd_pool
    enabled = options.enable_clone_optimization
    with timer.step("fetch"):
        size = ceph.info(pool, name)["size"]
        image = _image(glance, image_id, image_meta)
        stores, stores_error, depth, fsid, upload_snaps = None, None, None, None, None
        if enabled:
            if encrypted is None:
                encrypted = ceph.head(pool, name, 6).startswith(ceph_mod.LUKS_MAGIC)
            fsid = ceph.fsid()
            try:
                stores = glance.stores_detail()
            except exc.GlanceError as e:
                stores_error = str(e)
            # hops above the volume, through the Glance pool too: volume -> image ->
            # volume chains stop at rbd_max_clone_depth
            try:
                depth = clone_depth(ceph, pool, name)
            except exc.CephError as e:
                LOG.warning("Upload of volume %s/%s: cannot count its clone depth (%s)",
                            pool, name, e)
            upload_snaps = sum(footprint.is_upload_snap(s["original"])
                               for s in ceph.snaps(pool, name, protected=False))
    vol = decision.Volume(name, encrypted=bool(encrypted))

    def decide(img):
        choice = decision.decide(enabled, stores, vol, img, fsid, store_id, stores_error,
                                 volume_depth=depth, max_clone_depth=options.rbd_max_clone_depth,
                                 flatten=options.rbd_flatten_volume_to_image,
                                 upload_snapshots=upload_snaps,
                                 max_upload_snapshots=options.rbd_max_upload_snapshots)
        if depth is None and isinstance(choice, decision.Clone) and not choice.flatten:
            # unknown depth is not a licence to deepen the chain: an independent image
            # has no chain at all
            return dataclasses.replace(choice, flatten=True, reason=decision.CLONE_CHAIN_TOO_DEEP,
                                       detail="the volume's clone depth is unknown")
        return choice

    result = {"volume": f"{pool}/{name}", "image_id": image_id, "size": size}
    choice = decide(image)
    lock = None
    if isinstance(choice, decision.Clone):
        # one upload per image id: a second one would remove this one's clone as
        # the leftover of an earlier attempt (locks.ImageLock)
        lock = locks.ImageLock(ceph, choice.pool, image_id)
        try:
            lock.__enter__()  # UploadInProgress (a live holder) goes to the caller
        except exc.CephError as e:  # e.g. no write caps on the Glance pool
            lock = None
            choice = decision.Copy(decision.CLONE_FAILED, str(e))
    try:
        if isinstance(choice, decision.Clone):
            # a retry after a crash that happened once the location was requested: let
            # Glance's task of the earlier attempt finish before judging the image
            with timer.step("fetch"):
                glance_mod.wait_location_tasks(glance, image_id, options.clone_active_timeout)
                image = _image(glance, image_id, image_meta)
            choice = decide(image)
        if isinstance(choice, decision.Copy) and choice.reason == decision.IMAGE_NOT_QUEUED:
            done = _finished_earlier(ceph, glance, options, pool, name, image_id, image, decide,
                                     timer)
            if done is not None:
                again, url = done
                return _done(result, "independent" if again.flatten else "clone", again.reason,
                             again.detail, url, size, timer, started, resumed=True)
        if isinstance(choice, decision.Clone):
            transaction = independent.IndependentUpload if choice.flatten else clone_mod.CloneUpload
            tx = transaction(ceph, glance, pool, name, image_id, choice,
                             options.clone_active_timeout, timer, locked=True,
                             gate_ticket=ticket)
            try:
                out = tx.run()
            except exc.CloneFailed as e:
                if not e.cleaned:
                    # leftovers named after the image would make the copy fail too; purge
                    # reconciles them once Cinder deletes the image
                    raise exc.CloneFailed(f"upload of {pool}/{name} to image {image_id}: {e}",
                                          reason=e.reason, cleaned=False, cause=e) from None
                choice = decision.Copy(decision.CLONE_FAILED, e.reason)
            else:
                method = "independent" if choice.flatten else "clone"
                result = _done(result, method, choice.reason, choice.detail, out["location"],
                               size, timer, started, recovered=out["recovered"],
                               location_api=out["location_api"])
                LOG.info("Upload of volume %s/%s to image %s: method=%s, %slocation=%s, "
                         "%.3f s (%s)", pool, name, image_id, method,
                         f"reason={choice.reason}: {choice.detail}, " if choice.flatten else "",
                         out["location"], result["seconds"]["total"],
                         ", ".join(f"{k} {v:.3f} s" for k, v in timer.steps.items()))
                return result
    finally:
        if lock is not None:
            lock.__exit__()

    # a clone that failed is worth an operator's look (caps, Glance roles); the rest are
    # ordinary choices
    ticket.leave()  # no snapshot of ours to wait for
    log = LOG.warning if choice.reason == decision.CLONE_FAILED else LOG.info
    log("Upload of volume %s/%s to image %s: method=copy (%s), reason=%s",
        pool, name, image_id, copier, choice)
    with timer.step("copy"):
        sent = copy(image, size)
    result = _done(result, "copy", choice.reason, choice.detail, None, sent, timer, started)
    LOG.info("Upload of volume %s/%s to image %s: copied in %.3f s", pool, name, image_id,
             result["seconds"]["total"])
    return result


def _image(glance, image_id, image_meta):
    try:
        return glance.get_image(image_id)
    except exc.GlanceError as e:
        if image_meta is None:
            raise
        # what the caller was handed is the next best account of the image
        LOG.warning("Upload to image %s: %s; deciding on the caller's copy of the image's "
                    "metadata", image_id, e)
        return image_meta


def _finished_earlier(ceph, glance, options, pool, name, image_id, image, decide, timer):
    """(Clone, location) if an earlier attempt of this volume's upload to image_id got as far as
    Glance importing or activating it (the CLI retries with the same id; Cinder never
    does, its images are always queued here); else None."""
    if image.get("status") not in ("importing", "active"):
        return None
    again = decide(dict(image, status="queued"))
    if not isinstance(again, decision.Clone):
        return None
    url = clone_mod.image_location(again, image_id).url
    if image.get("status") == "active" and url not in glance_mod.urls_of(image):
        return None
    record = journal.Journal(ceph, pool).get(image_id)
    if (record is None or record.image_pool != again.pool
            or record.volume_id != ceph.info(pool, name)["id"]):
        held = ("no upload of ours" if record is None else
                f"{'a clone' if record.kind == journal.CLONE else 'an image'} of "
                f"{record.volume_pool}/{record.volume}")
        raise exc.CinderExtError(f"image {image_id} is already {image.get('status')} and holds "
                                 f"{held}, not of {pool}/{name}; not uploading over it")
    with timer.step("active"):
        glance_mod.wait_active(glance, image_id, options.clone_active_timeout, url)
    if record.open:
        journal.Journal(ceph, pool).complete(record)
    LOG.info("Upload of volume %s/%s to image %s: finished by an earlier attempt",
             pool, name, image_id)
    return again, url


def _done(result, method, reason, detail, location, nbytes, timer, started, **extra):
    result.update(method=method, reason=reason, detail=detail, location=location, bytes=nbytes,
                  seconds=dict(timer.steps, total=round(time.monotonic() - started, 4)), **extra)
    return result
