"""S3 store properties, named as upstream Glance names them (s3_store_*), sizes in bytes."""

from oslo_utils import units

from glance_store_ext.provider import Provider

__all__ = ["S3Provider"]


class S3Provider(Provider):
    store_type = "s3"

    def properties(self):
        # glance_store's s3 driver: sizes are options in MiB times units.Mi
        return {
            "s3_store_large_object_size": self.option("s3_store_large_object_size") * units.Mi,
            "s3_store_large_object_chunk_size": self.option("s3_store_large_object_chunk_size") * units.Mi,
            "s3_store_thread_pools": self.option("s3_store_thread_pools"),
        }
