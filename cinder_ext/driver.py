"""A drop-in RBD volume driver for real Cinder (29, 2025.2) that uploads by clone.

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

Only this module imports cinder: ``import cinder_ext`` works without Cinder.
"""

import copy
import errno

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
from cinder import utils
from cinder.volume import configuration

from cinder_ext import delete as delete_mod
from cinder_ext import exceptions as exc
from cinder_ext import glance as glance_mod
from cinder_ext import opts as ext_opts
from cinder_ext import upload as upload_mod
from cinder_ext.ceph import Cluster

LOG = logging.getLogger(__name__)

# Declared once in cinder_ext.opts; the copy-path tuning options there belong to our
# own copy, not to upstream's, so the driver registers only these.
DRIVER_OPTS = [o for o in ext_opts.CLONE_OPTS
               if o.dest in ("enable_clone_optimization", "rbd_flatten_volume_to_image",
                             "clone_active_timeout")]

CONF = cfg.CONF
CONF.register_opts(DRIVER_OPTS, group=configuration.SHARED_CONF_GROUP)

# the purge mark on volumes trashed for their images (cinder_ext.delete owns it)
TRASH_MARK = delete_mod.TRASH_MARK
POLL_INTERVAL = 0.1  # seconds between polls of an image Glance is activating


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
    """The [glance] service credentials' auth plugin, loaded once; None when unset."""
    global _GLANCE_AUTH
    if _GLANCE_AUTH is None and cfg.CONF[cinder_glance.GLANCE_GROUP].auth_type:
        _GLANCE_AUTH = ks_loading.load_auth_from_conf_options(cfg.CONF, cinder_glance.GLANCE_GROUP)
    return _GLANCE_AUTH


class CinderGlance(glance_mod.Glance):
    """The calls the clone transaction makes, through Cinder's own Glance client.

    Same interface as cinder_ext.glance.Glance (whose wait_active is reused), but every
    call goes through cinder.image.glance: ``glance_api_servers`` or the catalog,
    Cinder's retries and TLS options, and whose credentials:

    * the image calls (get, tasks, add location) carry the **user's** token plus
      Cinder's service token (``[service_user] send_service_user_token``): the user owns
      a private image that Cinder's service user cannot even see (Glance answers 404),
      and Glance 33 accepts an rbd location from a project member whose request carries
      the ``service`` role in its service token (``service_roles``);
    * the stores detail is not the user's business: Cinder's ``[glance]`` service
      credentials (``privileged_user``), which the ``admin or service`` policy admits.
    """

    # no HTTP plumbing of our own: the parent's __init__ (keystoneauth from our options)
    # is replaced by Cinder's client
    # privileged: every call with Cinder's [glance] service credentials (the periodic
    # purge, which acts for no user)
    def __init__(self, context, image_service, privileged=False):  # pylint: disable=super-init-not-called
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
        try:
            return _unwrap(self.client.call(context, method, *args,
                                            privileged_user=privileged, **kwargs))
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
        try:
            body = self._call(f"list tasks of image {image_id}", "get_associated_image_tasks",
                              image_id, privileged=self.privileged)
        except exc.GlanceNotFound:
            return []
        return list(dict(body).get("tasks", []))

    def image_tasks(self, image_id):
        try:
            return self.image_tasks_strict(image_id)
        except exc.GlanceError:
            return []  # only to tell our task from older ones, never to decide

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
        before = {t.get("id") for t in self.image_tasks(image_id)}
        # Glance's add-location API (2.17) as the image's owner with Cinder's service
        # token, not Cinder's image_service.add_location: that one authenticates as the
        # [glance] service user alone, to whom a member's private image does not exist.
        # validation_data {}: Glance 33 validates it (a 'store' key there is a 400); Glance
        # finds the store from the rbd URL
        self._call(op, "add_image_location", image_id, url, {})
        return "cinder", before


class _NativeThreadCeph:
    """Our Ceph adapter with every call run in a native thread (eventlet's tpool), as
    upstream's driver runs librbd (tpool.Proxy): cinder-volume is one eventlet hub, and a
    librbd/librados call made on it blocks every other request, RPC and heartbeat of the
    service for as long as it takes (a clone's image snapshot waits ~1 s for the monitor).
    Measured on tools/cloud with 8 clone uploads at once (tests/cloud/test_concurrency.py):
    without this each upload took ~20 s (serialized on the hub) and a volume create+delete
    up to 12.5x its idle time; with it ~8 s and ~2.3x. Under threading (no eventlet) the
    calls run as they are."""

    def __init__(self, cluster, execute):
        self._cluster = cluster
        self._execute = execute

    def __getattr__(self, name):
        attr = getattr(self._cluster, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            return self._execute(attr, *args, **kwargs)
        return call


def _native_executor():
    if utils.concurrency_mode_threading():
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

    @classmethod
    def get_driver_options(cls):
        return super().get_driver_options() + DRIVER_OPTS

    # -- upload ---------------------------------------------------------------------
    def copy_volume_to_image(self, context, volume, image_service, image_meta):
        """cinder_ext.upload's orchestrator (the CLI's too), with Cinder's pieces: Glance as
        the user with Cinder's service token, Ceph calls in native threads, upstream's copy."""
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
                    _NativeThreadCeph(cluster, execute), CinderGlance(context, image_service),
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

    # -- delete ---------------------------------------------------------------------
    def _cluster(self):
        """Our Ceph adapter for this backend's rbd_* options, as the backend's user (not yet
        connected)."""
        name, conf, user, _secret = self._get_config_tuple()
        return Cluster(conf, user, name, self.configuration.rados_connect_timeout,
                       self.configuration.rados_connection_retries,
                       self.configuration.rados_connection_interval)

    def _ceph(self, fn, *args, **kwargs):
        """fn(cluster, *args) on our Ceph adapter, connected as the backend's user; under
        eventlet in a native thread, as upstream runs its librbd calls."""
        def run():
            with self._cluster() as cluster:
                return fn(cluster, *args, **kwargs)
        if utils.concurrency_mode_threading():
            return run()
        from eventlet import tpool
        return tpool.execute(run)

    def delete_volume(self, volume):
        with upstream.RADOSClient(self) as client:
            try:
                with upstream.RBDVolumeProxy(self, volume.name, ioctx=client.ioctx,
                                             client=client.cluster) as rbd_image:
                    clone_snap = self._find_clone_snap(rbd_image)
                    if clone_snap is None:
                        self._delete_backup_snaps(rbd_image)
            except self.rbd.ImageNotFound:
                clone_snap = None
            if clone_snap is not None:
                # upstream keeps it as <name>.deleted for its own clones: constant time
                self._delete_volume(volume, client)
                return
            leaf = []
            delay = (self.configuration.deferred_deletion_delay
                     if self.configuration.enable_deferred_deletion else 0)
            try:
                out = self._ceph(delete_mod.delete_volume, self.configuration.rbd_pool,
                                 volume.name, delete_mod.DEFERRED, delay,
                                 self.configuration.rbd_concurrent_flatten_operations,
                                 leaf_remove=lambda: leaf.append(True))
            except exc.VolumeBusy as e:  # VolumeLocked too: the volume goes back to available
                raise exception.VolumeIsBusy(str(e), volume_name=volume.name) from None
            except exc.CinderExtError as e:
                raise exception.VolumeBackendAPIException(data=str(e)) from None
            if leaf:  # nothing depends on it: upstream's removal, in this thread
                self._delete_volume(volume, client)
            elif out["action"] == "trashed":
                LOG.info("Volume %(vol)s moved to the RBD trash instead of flattening the "
                         "images cloned from it (%(deps)s); it is purged once they are "
                         "deleted", {"vol": volume.name, "deps": ", ".join(out["dependents"])})

    def purge_trashed_parents(self, client=None):
        """Reclaim what deletions left once nothing needs it (cinder_ext.delete.purge), in
        the backend's pool and in every Glance rbd pool of this cluster (from the stores
        detail): trashed volumes, Glance's trashed images, upload snapshots, upstream's
        <volume>.deleted.

        Failed uploads' clones are reconciled only when Glance's answers can be trusted
        for every image (Cinder's [glance] user is an admin): to anyone else a member's
        private image looks gone (404), and its clone would be taken for an orphan.
        Returns the trash ids of our entries that stay (images still depend on them).
        """
        ctx = cinder_context.get_admin_context()
        glance = CinderGlance(ctx, None, privileged=True)
        pools = ()
        if self.configuration.enable_clone_optimization:
            try:
                pools = delete_mod.image_pools(glance.stores_detail(), self._get_fsid())
            except exc.GlanceError as e:
                LOG.debug("Purge: no stores detail (%s): the backend's pool only", e)
        trusted = glance if pools and self._glance_sees_every_image(glance) else None
        if trusted is None:
            out = self._ceph(delete_mod.purge, self.configuration.rbd_pool, pools,
                             scan_volumes=False)
        else:
            # Glance's calls (green sockets) stay on the hub, the Ceph calls go to native
            # threads, as in the upload
            execute = _native_executor()
            cluster = self._cluster()
            execute(cluster.connect)
            try:
                out = delete_mod.purge(_NativeThreadCeph(cluster, execute),
                                       self.configuration.rbd_pool, pools, scan_volumes=False,
                                       glance=trusted)
            finally:
                execute(cluster.close)
        for what in out["removed"]:
            LOG.info("Purged %s from the trash: no image depends on it any more", what)
        for kept in out["kept"]:
            LOG.debug("%s stays in the trash: %s", kept["image"], kept["reason"])
        return {kept["trash_id"] for kept in out["kept"]}

    def _glance_sees_every_image(self, glance):
        # asked of Keystone until it answers, then once per service start (the roles of a
        # service user rarely change)
        if getattr(self, "_glance_admin", None) is None:
            self._glance_admin = glance.sees_every_image()
        return bool(self._glance_admin)

    def _trash_purge(self):
        # upstream's periodic purge, but our entries are handled quietly: a volume that
        # images still depend on is expected to stay, not an error to log every minute
        with upstream.RADOSClient(self) as client:
            ours = self.purge_trashed_parents(client)
            for vol in self.RBDProxy().trash_list(client.ioctx):
                if vol.get("id") in ours:
                    continue
                try:
                    self.RBDProxy().trash_remove(client.ioctx, vol.get("id"))
                except (OSError, self.rbd.OSError) as e:
                    if e.errno == errno.EPERM:
                        LOG.debug("%s has not expired yet on backend '%s'",
                                  vol.get("name"), self._backend_name)
                    else:
                        LOG.exception("Error deleting %s from trash backend '%s'",
                                      vol.get("name"), self._backend_name)
                except Exception:
                    LOG.exception("Error deleting %s from trash backend '%s'",
                                  vol.get("name"), self._backend_name)
                else:
                    LOG.info("Deleted %s from trash for backend '%s'",
                             vol.get("name"), self._backend_name)

    def _start_periodic_tasks(self):
        super()._start_periodic_tasks()
        if not self.configuration.enable_deferred_deletion:
            # upstream runs no purge then; ours still removes the volumes we trashed
            self._purge_task = loopingcall.FixedIntervalLoopingCall(self._purge_quietly)
            self._purge_task.start(
                interval=self.configuration.deferred_deletion_purge_interval)

    def _purge_quietly(self):
        try:
            self.purge_trashed_parents()
        except Exception:  # the next run retries; a periodic task must not die
            LOG.exception("Purging volumes trashed for clone-uploaded images failed")
