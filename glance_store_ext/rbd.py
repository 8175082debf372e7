"""RBD store properties: pool, chunk_size, thin_provisioning, fsid, and user.

Values are derived from glance_store's options exactly as its rbd driver's
configure_add does (chunk size in MiB -> bytes, pool as str). The fsid is read
from the live cluster as the store's own user (see cluster_fsid); upstream
Glance reads it once at start-up instead.
"""

import threading

from oslo_utils import units

from glance_store_ext import cluster_fsid
from glance_store_ext.provider import Provider

__all__ = ["RBDProvider"]


class RBDProvider(Provider):
    store_type = "rbd"

    def __init__(self, conf, store_id, refresh_interval=None, retry_interval=None, cold_wait=None):
        super().__init__(conf, store_id)
        self._reader_args = {"refresh_interval": refresh_interval, "retry_interval": retry_interval,
                             "cold_wait": cold_wait}
        self._reader = None
        self._reader_key = None
        self._lock = threading.Lock()
        self._closed = False
        self.fsid_reader()  # start reading now: the first request then rarely waits

    def fsid_reader(self):
        """The ClusterFsid of the store's current (conf file, user, bound); replaced when those change."""
        key = (str(self.option("rbd_store_ceph_conf")), self.option("rbd_store_user"),
               cluster_fsid.connect_bound(self.option("rados_connect_timeout")))
        reader = self._reader
        if key == self._reader_key and reader is not None:
            return reader
        with self._lock:
            if key != self._reader_key or self._reader is None:
                old, self._reader = self._reader, cluster_fsid.ClusterFsid(
                    self.store_id, key[0], key[1], bound=key[2], **self._reader_args)
                self._reader_key = key
                if self._closed:
                    self._reader.close()
                if old is not None:
                    old.close(timeout=0)
            return self._reader

    def warm(self):
        # the first read started at construction; wait for it, at most its cold window
        self.fsid_reader().get()

    def properties(self):
        pool = str(self.option("rbd_store_pool"))
        fsid = self.fsid_reader().get()
        return {
            "chunk_size": self.option("rbd_store_chunk_size") * units.Mi,
            "pool": pool,
            "thin_provisioning": self.option("rbd_thin_provisioning"),
            # upstream derives fsid from url_prefix, which carries none without a pool
            "fsid": fsid if pool else None,
            "user": self.option("rbd_store_user") or None,  # None: librados default user
        }

    def close(self):
        with self._lock:
            self._closed = True
            reader = self._reader
        if reader is not None:
            reader.close()
