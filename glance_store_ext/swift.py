"""Swift store properties: container, large_object_size, large_object_chunk_size.

Sizes as glance_store's swift driver computes them: the option (in "MB")
times ONE_MB, which glance_store defines as 1000 * 1024 bytes.
"""

from oslo_utils import units

from glance_store_ext.provider import Provider

__all__ = ["SwiftProvider", "ONE_MB"]

ONE_MB = units.k * units.Ki  # glance_store/_drivers/swift/store.py: "the mixed meaning of MB"


class SwiftProvider(Provider):
    store_type = "swift"

    def properties(self):
        return {
            # upstream: swift_store_container; a multi-tenant store sets it only on
            # its first upload (null before), we report the configured value throughout
            "container": self.option("swift_store_container"),
            "large_object_size": self.option("swift_store_large_object_size") * ONE_MB,
            "large_object_chunk_size": self.option("swift_store_large_object_chunk_size") * ONE_MB,
        }
