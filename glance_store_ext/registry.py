"""One registry of store metadata providers, found through entry points.

A new store type is one module plus one line under ``glance_store_ext.providers``
in setup.cfg.
"""

import inspect
import logging
import threading

from stevedore import driver as sv_driver
from stevedore import exception as sv_exception

__all__ = ["NAMESPACE", "StoreDetails"]

NAMESPACE = "glance_store_ext.providers"

LOG = logging.getLogger(__name__)


# a missing provider is reported by us, once per store; stevedore's own log line
# is turned off with whichever argument this stevedore knows
_QUIET_WHEN_MISSING = (
    {"on_missing_entrypoints_callback": None}
    if "on_missing_entrypoints_callback" in inspect.signature(sv_driver.DriverManager).parameters
    else {"warn_on_missing_entrypoint": False})


def _reraise(manager, entrypoint, exc):
    # stevedore would log a traceback; we log one line instead
    raise exc


class StoreDetails:
    """Properties of the configured stores; one provider per store id, created lazily and kept.

    `conf` must already carry the store groups (config.register_store_opts).
    A store whose type has no provider, or whose provider fails, reports `{}`
    and logs one warning for that store: never an exception.
    `provider_args` maps a store type to keyword arguments for its providers
    (e.g. ``{"rbd": {"refresh_interval": 60}}``).
    """

    def __init__(self, conf, provider_args=None):
        self.conf = conf
        self._provider_args = dict(provider_args or {})
        self._providers = {}
        self._lock = threading.Lock()
        self._warned = set()
        self._closed = False

    def properties(self, store_id):
        """The properties of store `store_id` (a key of `enabled_backends`)."""
        provider = self._providers.get(store_id)
        if provider is None:
            provider = self._provider(store_id)
        if provider is False:
            return {}
        try:
            return provider.properties()
        except Exception as exc:  # a broken provider must not break the API
            self._warn_once(store_id, f"store {store_id!r}: its {provider.store_type} provider failed: "
                                      f"{type(exc).__name__}: {exc}")
            return {}

    def warm(self):
        """Create the providers of every enabled store and wait for their first reads.

        For service start-up, so that no request meets a cold cache: the RBD fsid
        reads run side by side in the background, and each wait is bounded by its
        store's connect timeout (at most 5 s). Never raises; returns the store ids.
        """
        ids = [sid for sid in (self.conf.enabled_backends or {}) if not sid.startswith("os_glance_")]
        providers = [self._provider(store_id) for store_id in ids]
        for store_id, provider in zip(ids, providers):
            if provider:
                try:
                    provider.warm()
                except Exception as exc:  # reported by properties() too; start-up goes on
                    self._warn_once(store_id, f"store {store_id!r}: warming its {provider.store_type} "
                                              f"provider failed: {type(exc).__name__}: {exc}")
        return ids

    def _provider(self, store_id):
        with self._lock:
            if store_id in self._providers:
                return self._providers[store_id]
            provider = False  # cached too: a missing provider is looked up once
            store_type = (self.conf.enabled_backends or {}).get(store_id)
            if store_type is None:
                self._warn_once(store_id, f"store {store_id!r} is not in [DEFAULT] enabled_backends; "
                                          "reporting no properties")
            else:
                provider = self._load(store_id, store_type)
            if self._closed and provider:
                provider.close()  # created after close(): no background work either
            self._providers[store_id] = provider
            return provider

    def _load(self, store_id, store_type):
        try:
            mgr = sv_driver.DriverManager(NAMESPACE, store_type, invoke_on_load=True,
                                          invoke_args=(self.conf, store_id),
                                          invoke_kwds=self._provider_args.get(store_type, {}),
                                          on_load_failure_callback=_reraise,
                                          **_QUIET_WHEN_MISSING)
        except sv_exception.NoMatches:
            self._warn_once(store_id, f"store {store_id!r}: no metadata provider for store type "
                                      f"{store_type!r}; reporting no properties")
            return False
        except Exception as exc:
            self._warn_once(store_id, f"store {store_id!r}: the provider for store type {store_type!r} "
                                      f"could not be loaded: {type(exc).__name__}: {exc}; "
                                      "reporting no properties")
            return False
        return mgr.driver

    def _warn_once(self, store_id, message):
        if store_id not in self._warned:
            self._warned.add(store_id)
            LOG.warning(message)

    def close(self):
        """Stop every provider's background work."""
        with self._lock:
            self._closed = True
            providers = [p for p in self._providers.values() if p]
        for provider in providers:
            provider.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
