"""Store configuration: `enabled_backends` and glance_store's own per-store groups.

Only `enabled_backends` is declared here (as upstream Glance 33 declares it in
glance/common/config.py). Every store option (`[<store id>] rbd_store_pool`, ...)
belongs to glance_store and is registered by glance_store's own code.
"""

import copy
import functools
import logging

from glance_store import driver as gs_driver
from glance_store import multi_backend
from oslo_config import cfg

__all__ = ["RESERVED_STORES", "StoreConfigError", "register_opts", "register_store_opts", "list_opts"]

# upstream glance/common/wsgi_app.py: internal stores, never reported by the API
RESERVED_STORES = {
    "os_glance_staging_store": "file",
    "os_glance_tasks_store": "file",
}
RESERVED_PREFIX = "os_glance_"

store_opts = [
    cfg.DictOpt('enabled_backends',
                help='Key:Value pair of store identifier and store type. '
                     'In case of multiple backends should be separated '
                     'using comma.'),
]


class StoreConfigError(RuntimeError):
    """The store configuration cannot be used; the message says which option and why."""


def register_opts(conf):
    """Declare `enabled_backends` in [DEFAULT], unless someone (our glance, upstream) already did."""
    if "enabled_backends" not in conf:
        conf.register_opts(store_opts)


def list_opts():
    """For oslo-config-generator."""
    return [(None, copy.deepcopy(store_opts))]


def register_store_opts(conf):
    """Register glance_store's per-store option groups; call after the config files are parsed.

    Does what upstream Glance's wsgi_app does before create_multi_stores:
    refuses `os_glance_` store ids, then calls glance_store's
    `register_store_opts` with the reserved stores. glance_store registers
    `store_description` and `weight` only when it instantiates a driver, which
    we avoid; so they are registered here from glance_store's own list.
    Without `enabled_backends` (single-store mode) this does nothing.
    """
    register_opts(conf)
    backends = conf.enabled_backends or {}
    if not backends:
        # single-store mode: nothing to register (upstream's API answers 404 then)
        return
    reserved = sorted(b for b in backends if b.startswith(RESERVED_PREFIX))
    if reserved:
        raise StoreConfigError(f"[DEFAULT] enabled_backends: store id(s) {', '.join(reserved)} use the "
                               f"'{RESERVED_PREFIX}' prefix, which is reserved for internal use")
    types = set(backends.values())
    quiet = _UnusedDriverErrors(types)
    stevedore_log = logging.getLogger("stevedore.extension")
    stevedore_log.addFilter(quiet)
    try:
        multi_backend.register_store_opts(conf, reserved_stores=dict(RESERVED_STORES))
        drivers = _driver_opts()
    finally:
        stevedore_log.removeFilter(quiet)
    for backend in backends:
        conf.register_opts(gs_driver.Store.MULTI_BACKEND_OPTIONS, group=backend)
    # a driver's Store.__init__ also registers its options in [backend_defaults],
    # the fallback of every store group; matched as glance_store matches them
    for entry, opts in drivers.items():
        if any(t in entry for t in types):
            _register_shared(conf, opts)


class _UnusedDriverErrors(logging.Filter):
    """Drop stevedore's "Could not load 'cinder'" for store types no store uses.

    glance_store imports every driver to list options; one that cannot be
    imported here (cinder without os-brick) matters only if a store uses it.
    """

    def __init__(self, used_types):
        super().__init__()
        self.used_types = used_types

    def filter(self, record):
        if str(record.msg).startswith("Could not load") and record.args:
            return record.args[0] in self.used_types
        return True


@functools.lru_cache(maxsize=1)
def _driver_opts():
    # loading every driver once is enough: each failed import logs an error
    return multi_backend._list_driver_opts()


def _register_shared(conf, opts):
    for opt in opts:
        try:
            conf.register_opt(opt, group=gs_driver.SHARED_CONF_GROUP)
        except cfg.DuplicateOptError:
            pass  # two drivers (file and a reserved-store template) may share a name
