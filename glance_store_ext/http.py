"""HTTP store properties: none (upstream Glance reports an empty object)."""

from glance_store_ext.provider import Provider

__all__ = ["HTTPProvider"]


class HTTPProvider(Provider):
    store_type = "http"

    def properties(self):
        return {}
