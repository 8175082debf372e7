"""A single-store Glance, reported as the one store it writes images to.

Glance without ``[DEFAULT] enabled_backends`` runs single-store: ``[glance_store] stores``
and ``default_store``, the store's options in ``[glance_store]`` itself. Upstream Glance
then answers /v2/info/stores with 404 ("Multi backend is not supported at this site."):
nothing tells a client where its images live, and a Cinder that clones into Glance's
pool (cinder_ext) copies every upload. glance-info-api exists to report stores, so for
such a Glance it reports the default store, exactly as Glance would if it were
multi-store with that one store: it reads the file as this multi-store file

    [DEFAULT]      enabled_backends = rbd:rbd
    [glance_store] default_backend = rbd
    [rbd]          every option of the rbd driver = its value in [glance_store]

and answers from the multi-store code, unchanged (one store, ``default: true``, its
type and properties, the same policy).

The store id is the store's type, ``rbd`` for rbd: the name glance_store loads a
single-store driver by (the ``stores`` entry, its ``glance_store.drivers`` entry point),
and the scheme of every location the store writes (rbd://...). It is the same on every
host and does not change when the store's options change (a pool, a user), so a volume
type's ``image_service:store_id`` or a log line stays valid.

Only the default store is reported: it is the only one a single-store Glance writes
to; the other ``stores`` entries (http, typically) only read locations.
"""

import importlib.metadata
import logging

from glance_store import backend as gs_backend
from oslo_config import cfg
from stevedore import driver as sv_driver

LOG = logging.getLogger(__name__)

GROUP = "glance_store"

# [glance_store] default_store's choices (schemes, glance_store 5.x) -> the store type:
# the driver's entry point name, what a multi-store enabled_backends names
SCHEME_TYPES = {
    "file": "file", "filesystem": "file",
    "http": "http", "https": "http",
    "swift": "swift", "swift+http": "swift", "swift+https": "swift", "swift+config": "swift",
    "rbd": "rbd",
    "cinder": "cinder",
    "vsphere": "vmware",
    "s3": "s3",
}


class Invalid(ValueError):
    """A single-store setting Glance itself would not start with: (group, option, reason)."""

    def __init__(self, group, option, reason):
        super().__init__(reason)
        self.group, self.option, self.reason = group, option, reason


def applies(conf):
    """True for a single-store file (no enabled_backends): then [glance_store] stores and
    default_store are registered, to be read by prepare()."""
    if conf.enabled_backends:
        return False
    if GROUP not in conf or "stores" not in conf[GROUP]:
        conf.register_opts(gs_backend._STORE_OPTS, group=GROUP)
    return True


def prepare(conf):
    """Before the store groups are registered: read a single-store file as its multi-store
    equivalent (enabled_backends overridden). Returns the store id. Raises Invalid."""
    scheme = conf[GROUP].default_store
    store_type = SCHEME_TYPES.get(scheme)
    if store_type is None:  # a glance_store with a scheme this table does not know yet
        raise Invalid(GROUP, "default_store", f"{scheme!r} is not a store type glance-info-api "
                                              f"knows ({', '.join(sorted(SCHEME_TYPES))})")
    loaded = _types_of(conf[GROUP].stores)
    if store_type not in loaded:
        # glance_store.verify_default_store: Glance does not start with this either
        raise Invalid(GROUP, "default_store",
                      f"{scheme!r} is not served by a store of [{GROUP}] stores "
                      f"({', '.join(conf[GROUP].stores) or 'none'}): Glance does not start "
                      "with this either")
    for opt in driver_options(store_type):
        if opt.dest not in conf[GROUP]:
            conf.register_opt(opt, group=GROUP)
    conf.set_override("enabled_backends", {store_type: store_type})
    LOG.info("Glance is single-store ([%s] default_store = %s, no [DEFAULT] enabled_backends): "
             "reporting its store as %r, the default, with the options of [%s]",
             GROUP, scheme, store_type, GROUP)
    return store_type


def finish(conf, store_id):
    """After the store groups are registered: the store's group takes [glance_store]'s
    values, and the store is the default."""
    for opt in driver_options(store_id):
        conf.set_override(opt.dest, conf[GROUP][opt.dest], group=store_id)
    conf.set_override("default_backend", store_id, group=GROUP)


def glance_is_multi_store(conf):
    """Whether Glance itself runs multi-store with this file: enabled_backends as the file
    sets it, not as read here. Glance's version document and version negotiation depend on
    it (a single-store Glance 33 lists v2.9 alone of v2.8-v2.13), and stay Glance's."""
    where = conf.get_location("enabled_backends")
    ours = where is not None and where.location == cfg.Locations.set_override
    return bool(conf.enabled_backends) and not ours


def driver_options(store_type):
    """The options of glance_store's driver for store_type ([] if it cannot be imported
    here: the store is then reported without properties, as a multi-store one is)."""
    try:
        cls = sv_driver.DriverManager("glance_store.drivers", store_type,
                                      invoke_on_load=False).driver
    except Exception as exc:  # e.g. the cinder driver without os-brick
        LOG.warning("store %r: glance_store's %s driver cannot be loaded (%s: %s); "
                    "reporting no properties", store_type, store_type, type(exc).__name__, exc)
        return []
    return list(getattr(cls, "OPTIONS", None) or [])


def _types_of(entries):
    """Store types of [glance_store] stores entries ('rbd', 'glance.store.rbd.Store', ...):
    the short entry point name of the same driver. Unknown entries are left out, as
    glance_store disables them with a warning."""
    eps = importlib.metadata.entry_points(group="glance_store.drivers")
    by_name = {ep.name: ep.value for ep in eps}
    short = {ep.value: ep.name for ep in eps if "." not in ep.name}
    return {short[by_name[e]] for e in entries if e in by_name and by_name[e] in short}
