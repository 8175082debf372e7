"""A drop-in RBD volume driver for real Cinder (26 to 29, 2025.1 to 2026.2) that uploads by clone.

In cinder.conf, the backend section changes one line and adds one::

    volume_driver = cinder_ext.driver.RBDCloneUploadDriver
    enable_clone_optimization = true

Everything else is upstream's ``cinder.volume.drivers.rbd.RBDDriver``, except:

* ``copy_volume_to_image``: cinder_ext.upload's orchestrator, the CLI's own: reads
  Glance's stores detail with Cinder's privileged ``[glance]`` access, decides, and when
  it says Clone runs the clone transaction (cinder_ext.clone.CloneUpload), registering
  the location with Glance's add-location API as the user, with Cinder's service token
  (see CinderGlance). Otherwise, and after a clone that failed and was rolled back,
  upstream's own copy. One log line says which method ran and why.
* ``delete_volume``: a volume that is the parent of clone-uploaded images moves to
  the RBD trash in constant time (upstream would flatten every such image: O(size)),
  the images keep working, and a periodic purge removes it once the images are gone.
  The logic is cinder_ext.delete's (the CLI's too); a volume nothing depends on is
  removed by upstream's own code.

With ``enable_clone_optimization`` off (the default) every method is upstream's and
nothing of ours runs: no Ceph connection, lock, Glance request or purge of our own.

Only this module imports cinder: ``import cinder_ext`` works without Cinder.
"""

import copy
import time

# upstream's driver first: it imports cinder.image.image_utils before cinder.image.glance,
# the one order in which those two modules (which import each other) load
try:
    from cinder.volume.drivers import rbd as upstream  # isort: skip
except ImportError as e:  # say what is missing, not which line noticed
    raise ImportError(f"cinder_ext.driver is loaded by Cinder's volume service and needs "
                      f"Cinder installed: {e}", name=e.name) from None

from glanceclient import exc as glance_exc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging
from oslo_service import loopingcall

from cinder import context as cinder_context
from cinder import exception
from cinder.image import glance as cinder_glance
from cinder import interface
from cinder.volume import configuration

from cinder_ext import delete as delete_mod
from cinder_ext import footprint
from cinder_ext import exceptions as exc
from cinder_ext import glance as glance_mod
from cinder_ext import opts as ext_opts
from cinder_ext import purge as purge_mod
from cinder_ext import upload as upload_mod
from cinder_ext.ceph import Cluster, snapshots_of

LOG = logging.getLogger(__name__)

# Declared once in cinder_ext.opts; the copy-path tuning options there belong to our
# own copy, not to upstream's, so the driver registers only these.
DRIVER_OPTS = [o for o in ext_opts.CLONE_OPTS
               if o.dest in ("enable_clone_optimization", "rbd_flatten_volume_to_image",
                             "rbd_max_upload_snapshots", "clone_active_timeout")]

CONF = cfg.CONF
CONF.register_opts(DRIVER_OPTS, group=configuration.SHARED_CONF_GROUP)

POLL_INTERVAL = 0.1  # seconds between polls of an image Glance is activating
LOCK_REAP_INTERVAL = 3600  # seconds between the purge's sweeps for dead lock objects
PURGE_BUDGET = 120  # seconds one periodic purge starts new work for; the next goes on


def _unwrap(obj):
    """glanceclient answers wrap bodies in a RequestIdProxy; the decision wants plain data."""
    return getattr(obj, "__wrapped__", obj)


# Cinder's privileged Glance calls load the [glance] auth plugin anew for every client:
# a Keystone password login per call (a bcrypt check on Keystone's CPU). 16 uploads at
# once on tools/cloud each logged in for the stores detail, and their fetches took 1.5-4 s.
# One plugin per process, as Cinder keeps its [service_user] one: keystoneauth reuses its
# token and logs in again when it nears expiry or is refused.
_GLANCE_AUTH = None


def _glance_service_auth():
    """Cinder's own credentials for Glance, as an auth plugin loaded once: the [glance]
    service credentials; where there are none (Cinder 26 has no such options, 27+ may
    leave them unset), the [service_user] ones that Cinder sends its service token with:
    the same service identity, which the stores detail's `admin or service` policy
    admits. None when neither is set."""
    global _GLANCE_AUTH
    if _GLANCE_AUTH is None:
        group = getattr(cinder_glance, "GLANCE_GROUP", None)  # absent on Cinder 26
        if group and cfg.CONF[group].auth_type:
            _GLANCE_AUTH = ks_loading.load_auth_from_conf_options(cfg.CONF, group)
        elif cfg.CONF.service_user.send_service_user_token and cfg.CONF.service_user.auth_type:
            _GLANCE_AUTH = ks_loading.load_auth_from_conf_options(cfg.CONF, "service_user")
    return _GLANCE_AUTH


class CinderGlance:
    """The calls the clone transaction makes, through Cinder's own Glance client.

    A cinder_ext.interfaces.GlanceClient, as cinder_ext.glance.Glance is, but every
    call goes through cinder.image.glance: ``glance_api_servers`` or the catalog,
    Cinder's retries and TLS options, and whose credentials:

    * the image calls (get, tasks, add location) carry the **user's** token plus
      Cinder's service token (``[service_user] send_service_user_token``): the user owns
      a private image that Cinder's service user cannot even see (Glance answers 404),
      and Glance 33 accepts an rbd location from a project member whose request carries
      the ``service`` role in its service token (``service_roles``);
    * the stores detail is not the user's business: Cinder's ``[glance]`` service
      credentials, else its ``[service_user]`` ones (``_glance_service_auth``), which the
      ``admin or service`` policy admits.
    """

    # privileged: every call with Cinder's [glance] service credentials (the periodic
    # purge, which acts for no user)
    def __init__(self, context, image_service, privileged=False):
        self.context = context
        self.image_service = image_service
        self.client = cinder_glance.GlanceClientWrapper()
        self.poll_interval = POLL_INTERVAL
        self.privileged = privileged

    def _call(self, op, method, *args, privileged=False, **kwargs):
        context = self.context
        if privileged:
            auth = _glance_service_auth()
            if auth is not None:
                # Cinder's own client, with the [glance] credentials as the caller's auth
                # plugin (what its privileged path does, less the login per call)
                context = copy.copy(self.context)
                context.user_auth_plugin = auth
                privileged = False
        if privileged and hasattr(cinder_glance, "GLANCE_GROUP"):  # none on Cinder 26
            kwargs["privileged_user"] = True
        try:
            return _unwrap(self.client.call(context, method, *args, **kwargs))
        except Exception as e:  # glanceclient and Cinder errors: one family for the caller
            raise self._translate(op, e) from None

    @staticmethod
    def _translate(op, e):
        # Cinder re-raises glanceclient's error as its own (ImageNotAuthorized, ...) and
        # drops Glance's explanation from the message: find the HTTP error it came from
        http, seen = e, set()
        while http is not None and id(http) not in seen and not isinstance(
                http, glance_exc.HTTPException):
            seen.add(id(http))
            http = http.__cause__ or http.__context__
        status = http.code if http is not None else None
        said = f"Glance answered {http}" if http is not None else f"{type(e).__name__}: {e}"
        msg = f"{op}: {said}"
        if status in (401, 403) or isinstance(e, (exception.NotAuthorized,
                                                  exception.ImageNotAuthorized)):
            return exc.GlanceForbidden(msg, status=status or 403, op=op)
        if status == 404 or isinstance(e, exception.NotFound):
            return exc.GlanceNotFound(msg, status=404, op=op)
        if status == 409:
            return exc.GlanceConflict(msg, status=409, op=op)
        return exc.GlanceError(msg, status=status, op=op)

    def stores_detail(self):
        return dict(self._call("get stores detail", "get_stores_info_detail", privileged=True))

    def get_image(self, image_id):
        return dict(self._call(f"get image {image_id}", "get", image_id, privileged=self.privileged))

    def image_tasks_strict(self, image_id):
        """The image's tasks, as the image's owner (Glance lists them to whoever may get
        the image); [] when the image is gone. Any other failure raises: "could not tell"
        must never read as "nothing running" (a rollback would remove a clone Glance is
        registering)."""
        op = f"list tasks of image {image_id}"
        try:
            body = self._call(op, "get_associated_image_tasks", image_id,
                              privileged=self.privileged)
        except exc.GlanceNotFound:
            return []
        except exc.GlanceError as e:
            if e.status != 501:
                raise
            # glanceclient refuses the call, without sending it, unless Glance's version
            # document lists v2.12, which a single-store Glance never does: the route
            # itself is served, so ask it directly
            try:
                _resp, body = self._call(op, "get", f"/v2/images/{image_id}/tasks",
                                         controller="http_client", privileged=self.privileged)
            except exc.GlanceNotFound:
                return []
        return list(dict(body).get("tasks", []))

    def sees_every_image(self):
        """True when Cinder's [glance] user has Glance's admin role (every image visible),
        False when it has not, None when Keystone could not tell (ask again later)."""
        try:
            auth = _glance_service_auth()
            if auth is None:
                return False
            return "admin" in auth.get_access(ks_session.Session()).role_names
        except Exception as e:  # unknown is not yes
            LOG.debug("Cannot tell the [glance] user's roles: %s", e)
            return None

    def add_location(self, image_id, url):
        op = f"add location {url} to image {image_id}"
        before = {t.get("id") for t in glance_mod.tasks_if_known(self, image_id)}
        # Glance's add-location API (2.17) as the image's owner with Cinder's service
        # token, not Cinder's image_service.add_location: that one authenticates as the
        # [glance] service user alone, to whom a member's private image does not exist.
        # validation_data {}: Glance 33 validates it (a 'store' key there is a 400); Glance
        # finds the store from the rbd URL
        # privileged (the purge finishing an interrupted upload, for no user): Cinder's
        # own credentials; an admin context alone carries no token (Glance: 401)
        self._call(op, "add_image_location", image_id, url, {}, privileged=self.privileged)
        return "cinder", before


class _NativeThreadCeph:
    """Our Ceph adapter with every call run in a native thread (eventlet's tpool), as
    upstream's driver runs librbd (tpool.Proxy): cinder-volume is one eventlet hub, and a
    librbd/librados call made on it blocks every other request, RPC and heartbeat of the
    service for as long as it takes (a clone's image snapshot waits ~1 s for the monitor),
    and concurrent uploads would run one after another. Under threading (no eventlet)
    the calls run as they are."""

    def __init__(self, cluster, execute, flatten_limit=None):
        self._cluster = cluster
        self._execute = execute
        # upstream's own bound on flattens (rbd_concurrent_flatten_operations), taken on
        # the hub before the native thread, as upstream's limit_operations does
        self._flatten_limit = flatten_limit

    def __getattr__(self, name):
        attr = getattr(self._cluster, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            return self._execute(attr, *args, **kwargs)
        if name == "flatten" and self._flatten_limit is not None:
            def bounded(*args, **kwargs):
                with self._flatten_limit:
                    return call(*args, **kwargs)
            return bounded
        return call


def _on_eventlet_hub():
    """True when this process runs on eventlet's hub. Cinder 26-28 always do; Cinder 29
    does unless OS_CINDER_DISABLE_EVENTLET_PATCHING is set. Asked of eventlet itself, so
    that no Cinder release's helper (utils.concurrency_mode_threading is 29's) is needed."""
    try:
        from eventlet import patcher
    except ImportError:  # a Cinder without eventlet runs native threads
        return False
    return patcher.is_monkey_patched("thread")


def _native_executor():
    if not _on_eventlet_hub():
        return lambda fn, *a, **kw: fn(*a, **kw)
    from eventlet import tpool
    return tpool.execute


@interface.volumedriver
class RBDCloneUploadDriver(upstream.RBDDriver):
    """Upstream's RBD driver; uploads to a same-cluster Glance RBD store by clone."""

    VERSION = upstream.RBDDriver.VERSION + "-clone-upload"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.configuration.append_config_values(DRIVER_OPTS)
        self._purge_task = None
        self._glance_admin = None
        self._next_lock_reap = 0.0
        # volumes whose delete runs our path: upstream's removal of them is not redirected
        self._deleting_ours = set()
        # volume name -> its clone parent, as upstream's delete found it (_get_clone_info)
        self._parents_seen = {}

    @classmethod
    def get_driver_options(cls):
        return super().get_driver_options() + DRIVER_OPTS

    @property
    def _clone_on(self):
        return bool(self.configuration.enable_clone_optimization)

    # -- upload ---------------------------------------------------------------------
    def copy_volume_to_image(self, context, volume, image_service, image_meta):
        """cinder_ext.upload's orchestrator (the CLI's too), with Cinder's pieces: Glance as
        the user with Cinder's service token, Ceph calls in native threads, upstream's copy."""
        if not self._clone_on:
            return super().copy_volume_to_image(context, volume, image_service, image_meta)
        image_id = image_meta["id"]
        execute = _native_executor()
        cluster = self._cluster()

        def copy(image, size):
            super(RBDCloneUploadDriver, self).copy_volume_to_image(
                context, volume, image_service, image_meta)
            return size

        try:
            execute(cluster.connect)
            try:
                upload_mod.run_upload(
                    self._native(cluster, execute), CinderGlance(context, image_service),
                    self.configuration, volume.name, image_id, copy, copier="upstream",
                    store_id=self._requested_store(volume),
                    encrypted=bool(volume.encryption_key_id), image_meta=image_meta)
            finally:
                execute(cluster.close)
        except exc.CinderExtError as e:
            # ours (a clone that could not be rolled back, an upload already running, a
            # delete holding the volume, Ceph unreachable) as a Cinder exception: the
            # manager deletes the image, puts the volume back and reports this message
            raise exception.VolumeBackendAPIException(
                data=f"upload of {volume.name} to image {image_id}: {e}") from None

    @staticmethod
    def _requested_store(volume):
        # the store a volume type names for uploads, read as upstream's copy path reads it
        if not volume.volume_type_id:
            return None
        return (volume.volume_type.extra_specs or {}).get("image_service:store_id")

    # -- Ceph -----------------------------------------------------------------------
    def _cluster(self):
        """Our Ceph adapter for this backend's rbd_* options, as the backend's user (not yet
        connected)."""
        name, conf, user, _secret = self._get_config_tuple()
        return Cluster(conf, user, name, self.configuration.rados_connect_timeout,
                       self.configuration.rados_connection_retries,
                       self.configuration.rados_connection_interval)

    def _native(self, cluster, execute):
        # flattens share upstream's semaphore (rbd_concurrent_flatten_operations)
        return _NativeThreadCeph(cluster, execute, getattr(self, "_semaphore", None))

    def _ceph(self, fn, *args, **kwargs):
        """fn(ceph, *args) on our Ceph adapter, connected as the backend's user, each Ceph
        call in a native thread under eventlet (as upstream runs librbd)."""
        execute = _native_executor()
        cluster = self._cluster()
        execute(cluster.connect)
        try:
            return fn(self._native(cluster, execute), *args, **kwargs)
        finally:
            execute(cluster.close)

    # -- delete ---------------------------------------------------------------------
    # Upstream's delete runs unchanged for every volume without an upload snapshot of
    # ours. It opens the volume once and asks _find_clone_snap about its snapshots; that
    # look, on the same open image, is where an upload snapshot is noticed and the delete
    # handed to cinder_ext.delete (the volume's clone-uploaded images keep their parent).
    class _UploadSnapshotsFound(Exception):
        pass

    def _find_clone_snap(self, rbd_image):
        if self._clone_on:
            if (rbd_image.get_name() not in self._deleting_ours
                    and self._has_upload_snapshot(rbd_image)):
                raise self._UploadSnapshotsFound()
        return super()._find_clone_snap(rbd_image)

    @staticmethod
    def _has_upload_snapshot(rbd_image):
        return any(footprint.is_upload_snap(s["original"]) for s in snapshots_of(rbd_image, protected=False))

    # Upstream's _delete_volume returns from its fast path (the volume removed at once)
    # before it walks up a clone's chain, so the parent keeps <volume>.clone_snap, pinning
    # the parent's old data for its life (and, once Cinder deleted the parent, keeping it
    # as <parent>.deleted). With the option on, the walk is finished with upstream's own
    # _delete_clone_parent_refs, only where that snapshot is still there and has no clone.
    def _get_clone_info(self, volume, volume_name, snap=None):
        asked = volume_name in self._parents_seen  # by our _delete_volume, before it removes
        if asked:
            self._claim_glance_parent(volume, volume_name)
        info = super()._get_clone_info(volume, volume_name, snap)
        if asked:
            self._parents_seen[volume_name] = info
        return info

    def _claim_glance_parent(self, rbd_image, volume_name):
        """A volume cloned from a Glance image (another pool): footprint.claim_glance_parent
        before it goes. Read on upstream's open image; our connection only for such a
        volume."""
        try:
            spec = rbd_image.get_parent_image_spec()
        except self.rbd.ImageNotFound:
            return  # no clone
        if spec["pool_name"] == self.configuration.rbd_pool or not footprint.is_image_name(
                spec["image_name"]):
            return
        try:
            self._ceph(footprint.claim_glance_parent, self.configuration.rbd_pool, volume_name)
        except exc.CephError as e:  # as claim_glance_parent's own failures: the delete goes on
            LOG.warning("%s: its Glance parent could not be looked at: %s", volume_name, e)

    def _delete_volume(self, volume, client):
        if not self._clone_on:
            return super()._delete_volume(volume, client)
        self._parents_seen[volume.name] = None
        try:
            super()._delete_volume(volume, client)
            parent = self._parents_seen[volume.name]
        finally:
            self._parents_seen.pop(volume.name, None)
        if not (parent and parent[1]):
            return
        native = _native_executor()  # librbd (unprotect, remove_snap) never on the hub
        try:
            if not native(self._snapshot_has_clones, client, parent[1], parent[2]):
                LOG.info("Dropping %(parent)s@%(snap)s: its clone %(vol)s is deleted",
                         {"parent": parent[1], "snap": parent[2], "vol": volume.name})
                native(self._delete_clone_parent_refs, client, parent[1], parent[2])
        except Exception as e:
            # the volume's RBD image is gone: its delete succeeded, whatever this tidy-up
            # of its parent does (the parent's own delete walks it again)
            LOG.warning("Volume %(vol)s is deleted; dropping its parent's %(parent)s@%(snap)s "
                        "failed (%(err)s): it stays until %(parent)s is deleted",
                        {"vol": volume.name, "parent": parent[1], "snap": parent[2], "err": e})

    # Upstream's create_cloned_volume measures the source's clone chain by opening each
    # parent by name (_get_clone_depth). A parent our delete moved to the trash (images or
    # Cinder clones still read through it) has no name there: upstream's walk raised
    # ImageNotFound, the new volume went to error, and the source's open handle (with
    # its exclusive lock) was never closed. Such a parent is opened by its trash id.
    def _get_clone_depth(self, client, volume_name, depth=0):
        try:
            return super()._get_clone_depth(client, volume_name, depth)
        except self.rbd.ImageNotFound:
            trashed = self._trash_id(client, volume_name) if self._clone_on and depth else None
            if trashed is None:
                raise  # the source itself is gone (upstream's answer), or not ours to find
        image = self._native_image(client, trashed)
        try:
            _pool, parent, _snap = self._get_clone_info(image, volume_name)
        finally:
            image.close()
        return self._get_clone_depth(client, parent, depth + 1) if parent else depth

    def _trash_id(self, client, name):
        """The id of the one trash entry named name, else None."""
        try:
            ids = [e["id"] for e in self.RBDProxy().trash_list(client.ioctx) if e["name"] == name]
        except IndexError:  # pacific's binding on an entry it cannot name (a migration's)
            return None
        return ids[0] if len(ids) == 1 else None

    def _native_image(self, client, image_id):
        """An image opened read-only by id, its calls in native threads (as upstream's
        RBDVolumeProxy makes them)."""
        image = _native_executor()(self.rbd.Image, client.ioctx, image_id=image_id, read_only=True)
        if not _on_eventlet_hub():
            return image
        from eventlet import tpool
        return tpool.Proxy(image)

    def _snapshot_has_clones(self, client, name, snap):
        """True also when the snapshot is gone (upstream's slow path dropped it). librbd
        throughout: called in a native thread (an OSD that holds the parent's objects while
        it recovers would otherwise stop the hub, heartbeats included)."""
        try:
            with self.rbd.Image(client.ioctx, name, read_only=True) as image:
                if snap not in {s["name"] for s in image.list_snaps()}:
                    return True
                image.set_snap(snap)
                return bool(list(image.list_children2()))
        except self.rbd.ImageNotFound:
            return True

    def delete_volume(self, volume):
        try:
            return super().delete_volume(volume)
        except self._UploadSnapshotsFound:  # only with the option on: ours to delete
            pass
        # a volume uploaded by clone: moved to the trash in constant time while its images
        # need it (upstream would flatten each one: O(size)), purged once they are gone
        self._deleting_ours.add(volume.name)
        try:
            out = self._delete_ours(volume)
        finally:
            self._deleting_ours.discard(volume.name)
        if out["action"] == "trashed":
            LOG.info("Volume %(vol)s moved to the RBD trash instead of flattening the "
                     "images cloned from it (%(deps)s); it is purged once they are "
                     "deleted", {"vol": volume.name, "deps": ", ".join(out["dependents"])})

    def _delete_ours(self, volume):
        delay = (self.configuration.deferred_deletion_delay
                 if self.configuration.enable_deferred_deletion else 0)

        def upstream_remove():  # nothing depends on it any more: upstream's removal
            with upstream.RADOSClient(self) as client:
                self._delete_volume(volume, client)
        try:
            return self._ceph(delete_mod.delete_volume, self.configuration.rbd_pool,
                              volume.name, delete_mod.DEFERRED, delay,
                              self.configuration.rbd_concurrent_flatten_operations,
                              leaf_remove=upstream_remove, foreign_snapshots="keep")
        except (exc.VolumeBusy, exc.CephBusy) as e:
            # VolumeLocked too: as upstream's ImageBusy, the volume goes back to available
            raise exception.VolumeIsBusy(str(e), volume_name=volume.name) from None
        except exc.CinderExtError as e:
            raise exception.VolumeBackendAPIException(data=str(e)) from None

    # -- periodic purge ---------------------------------------------------------------
    def _purge_context(self):
        """An admin context that can reach Glance: get_admin_context() has no service
        catalog, so with glance_api_servers unset (Cinder's default) Cinder's client would
        find no Glance. The image endpoint is looked up in the catalog of the token of
        Cinder's own credentials (_glance_service_auth), as glance_catalog_info and [glance]
        region_name say."""
        ctx = cinder_context.get_admin_context()
        if CONF.glance_api_servers:
            return ctx
        auth = _glance_service_auth()
        if auth is None:
            raise exc.ConfigError("no Glance to ask: glance_api_servers is unset and neither "
                                  "[glance] nor [service_user] has credentials to read the catalog")
        service_type, service_name, endpoint_type = CONF.glance_catalog_info.split(":")
        group = getattr(cinder_glance, "GLANCE_GROUP", None)  # absent on Cinder 26
        region = getattr(cfg.CONF[group], "region_name", None) if group else None  # Cinder 28+
        url = auth.get_endpoint(ks_session.Session(), service_type=service_type,
                                service_name=service_name or None,
                                interface=endpoint_type.replace("URL", ""),
                                region_name=region)
        if not url:
            raise exc.ConfigError(f"the catalog has no {service_type} endpoint "
                                  f"({CONF.glance_catalog_info}, region {region})")
        ctx.service_catalog = [{"type": service_type, "name": service_name,
                                "endpoints": [{endpoint_type: url, "region": region}]}]
        return ctx

    def purge(self):
        """One run of cinder_ext.purge.purge for this backend: in its pool and in every
        Glance rbd pool of this cluster (from the stores detail), what deletions left once
        nothing needs it: volumes trashed for their images, Glance's trashed images,
        upload snapshots no clone needs, upstream's <volume>.deleted, and, with deferred
        deletion on, the expired entries of Cinder's own deferred deletions (as upstream's
        trash purge, but only those a user's delete made: rbd-mirror, live migration and
        librbd own the others).

        Failed uploads are the intent journal's open records. A 404 from Glance counts as
        "gone" only when Cinder's [glance] user is an admin (sees every image): to anyone
        else a member's private image looks gone too, and is kept.
        """
        # lock objects dead holders left: a listing of every object of the pools, so at
        # most once per LOCK_REAP_INTERVAL (the next taker of such a lock breaks it anyway)
        reap = time.monotonic() >= self._next_lock_reap

        def run(ceph):  # connected first: with Ceph away there is nothing to ask Glance
            glance, stores = None, None
            try:
                glance = CinderGlance(self._purge_context(), None, privileged=True)
                stores = glance.stores_detail()
            except Exception as e:  # Keystone or Glance away, or not configured: next run
                LOG.warning("Purge: cannot read Glance's stores detail (%s); this run "
                            "purges the backend's pool only", e)
            pools = purge_mod.image_pools(stores, ceph.fsid()) if stores else ()
            glance = glance if pools else None
            sees_all = self._glance_sees_every_image(glance) if glance is not None else False
            return purge_mod.purge(ceph, self.configuration.rbd_pool, pools,
                                   include_unmarked=self.configuration.enable_deferred_deletion,
                                   glance=glance, glance_sees_all=sees_all, reap_locks=reap,
                                   finish=glance is not None, scan_volumes=False,
                                   budget=PURGE_BUDGET)
        out = self._ceph(run)
        if reap:
            self._next_lock_reap = time.monotonic() + LOCK_REAP_INTERVAL
        for what in out["removed"] + out["snapshots_removed"]:
            LOG.info("Purged %s: nothing depends on it any more", what)
        for kept in out["kept"]:
            LOG.debug("%s stays: %s", kept["image"], kept["reason"])
        return out

    def _glance_sees_every_image(self, glance):
        # asked of Keystone until it answers, then once per service start (the roles of a
        # service user rarely change)
        if self._glance_admin is None:
            self._glance_admin = glance.sees_every_image()
        return bool(self._glance_admin)

    def _trash_purge(self):
        """The periodic task. Never raises: the loop that runs it lives as long as the
        service, and a failed run (Ceph or Glance away) is retried by the next one."""
        if not self._clone_on:
            return super()._trash_purge()
        try:
            self.purge()
        except Exception:
            LOG.exception("Purge of backend '%s' failed; the next run retries",
                          self._backend_name)

    def _start_periodic_tasks(self):
        if not self._clone_on:
            return super()._start_periodic_tasks()
        # one loop, whether or not deferred deletion is on: volumes we trashed for their
        # images are purged either way; an error in one tick never ends it
        self._purge_task = loopingcall.FixedIntervalLoopingCall(self._trash_purge)
        self._purge_task.start(interval=self.configuration.deferred_deletion_purge_interval,
                               stop_on_exception=False)
