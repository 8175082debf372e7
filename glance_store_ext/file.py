"""Filesystem store properties: data_dir, chunk_size, thin_provisioning.

As glance_store's filesystem driver sets `datadir`, `chunk_size` and
`thin_provisioning` in configure_add.
"""

from glance_store_ext.provider import Provider

__all__ = ["FileProvider"]


class FileProvider(Provider):
    store_type = "file"

    def properties(self):
        datadir = self.option("filesystem_store_datadir")
        datadirs = self.option("filesystem_store_datadirs")
        return {
            # glance_store sets datadir only with a single directory (upstream
            # answers 500 for filesystem_store_datadirs); null then
            "data_dir": datadir if datadir and not datadirs else None,
            "chunk_size": self.option("filesystem_store_chunk_size"),
            "thin_provisioning": self.option("filesystem_thin_provisioning"),
        }
