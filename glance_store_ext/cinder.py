"""Cinder store properties: volume_type, use_multipath."""

from glance_store_ext.provider import Provider

__all__ = ["CinderProvider"]


class CinderProvider(Provider):
    store_type = "cinder"

    def properties(self):
        return {
            "volume_type": self.option("cinder_volume_type"),
            "use_multipath": self.option("cinder_use_multipath"),
        }
