"""Base class of a store metadata provider: one store id, its properties."""

from oslo_config import cfg

__all__ = ["Provider", "ProviderError", "SHARED_GROUP"]

# glance_store's shared fallback group (glance_store.driver.SHARED_CONF_GROUP)
SHARED_GROUP = "backend_defaults"

_DEFAULTED = (cfg.Locations.opt_default, cfg.Locations.set_default)


class ProviderError(RuntimeError):
    """A provider cannot produce properties; the message says why."""


class Provider:
    """Properties of one configured store, read from glance_store's options.

    Subclasses set `store_type` and implement `properties()`; those with
    background work also implement `close()`.
    """

    store_type = None

    def __init__(self, conf, store_id):
        self.conf = conf
        self.store_id = store_id

    def properties(self):
        """The store's properties, as upstream Glance's stores-detail API reports them."""
        raise NotImplementedError

    def warm(self):
        """Wait (bounded) until properties() can answer without waiting; for start-up."""

    def close(self):
        """Stop background work; properties() stays callable."""

    def option(self, name):
        """A store option as glance_store's BackendGroupConfiguration resolves it.

        glance_store resets every option of the store group to default None and
        falls back to [backend_defaults] when the store group leaves it unset;
        this reads the same value without mutating the conf.
        """
        try:
            where = self.conf.get_location(name, self.store_id)
            if where is not None and where.location not in _DEFAULTED:
                value = getattr(getattr(self.conf, self.store_id), name)
                if value is not None:
                    return value
            return getattr(getattr(self.conf, SHARED_GROUP), name)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            raise ProviderError(
                f"option [{self.store_id}] {name} is not registered: glance_store could not load "
                f"its {self.store_type!r} driver (missing dependency?), or "
                "glance_store_ext.config.register_store_opts(conf) was not called") from None

    def __repr__(self):
        return f"<{type(self).__name__} store={self.store_id!r}>"
