"""The copy path's reader thread never outlives the call that started it.

copy_volume_to_image reads the volume in a thread of its own; its caller closes the Ceph
connection as soon as the call returns. A reader still inside librbd then (an OSD that
stalls, Glance that fails meanwhile) would go on with a connection already shut down:
its next librbd call hangs for good or uses freed memory.
"""

import os
import signal
import threading
import time

import rbd

from cinder_ext import exceptions as exc
from cinder_ext.ceph import Cluster
from cinder_ext import copy

MiB = 1 << 20
OSD_STALL = 8  # longer than the copy used to wait for its reader (5 s)


class RefusingGlance:
    """Glance refusing the upload at once (a 5xx): the copy ends while its reader is
    still opening the volume. Only the Ceph side is under test here."""

    def upload(self, image_id, body, size, store=None):
        raise exc.GlanceError(f"image {image_id}: 503 Service Unavailable")


def test_a_failed_copy_returns_only_after_its_reader_has_left_librbd(ceph_cluster):
    pool, name = ceph_cluster.cinder_pool, "volume-copy-reader"
    with open(os.path.join(ceph_cluster.dir, "run", "osd.0.pid")) as f:
        osd = int(f.read())
    cluster = Cluster(ceph_cluster.client("cinder")["conf"], ceph_cluster.cinder_user).connect()
    resume = threading.Timer(OSD_STALL, os.kill, (osd, signal.SIGCONT))
    try:
        rbd.RBD().create(cluster.ioctx(pool), name, 4 * MiB)
        with cluster.image(pool, name) as img:
            img.write(b"x" * MiB, 0)
        os.kill(osd, signal.SIGSTOP)  # a stalled OSD: the reader's open waits for it
        resume.start()
        started = time.monotonic()
        try:
            copy.copy_volume_to_image(cluster, RefusingGlance(), pool, name, "an-image",
                                      4 * MiB, read_size=MiB, depth=1)
        except exc.GlanceError:
            pass
        returned = time.monotonic() - started
        readers = [t.name for t in threading.enumerate() if t.name == f"read {pool}/{name}"]
        assert not readers, (f"copy_volume_to_image returned after {returned:.1f} s with its "
                             f"reader still inside librbd (the OSD stalls {OSD_STALL} s)")
    finally:
        resume.cancel()
        os.kill(osd, signal.SIGCONT)
        for t in threading.enumerate():  # never close the connection under a reader
            if t.name == f"read {pool}/{name}":
                t.join()
        rbd.RBD().remove(cluster.ioctx(pool), name)
        cluster.close()
