"""The copy path: stream a volume into ``PUT /v2/images/{id}/file``.

A reader thread reads the volume (holes as zeros, without a read from the OSDs) into a
bounded queue while the main thread sends the chunks to Glance over one keep-alive
connection, chunked: reads overlap with the upload and memory stays bounded.
"""

import logging
import queue
import threading
import time

from cinder_ext import exceptions as exc

LOG = logging.getLogger(__name__)

_END = object()


class _Reader(threading.Thread):
    def __init__(self, ceph, pool, volume, read_size, depth):
        super().__init__(name=f"read {pool}/{volume}", daemon=True)
        self.ceph, self.pool, self.volume, self.read_size = ceph, pool, volume, read_size
        self.q = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            for _offset, data in self.ceph.read_extents(self.pool, self.volume, self.read_size):
                while not self.stop.is_set():
                    try:
                        self.q.put(data, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if self.stop.is_set():
                    return
        except Exception as e:  # handed to the sender, which raises it
            self.error = e
        finally:
            while True:
                try:
                    self.q.put(_END, timeout=0.2)
                    return
                except queue.Full:
                    if self.stop.is_set():
                        return


def copy_volume_to_image(ceph, glance, pool, volume, image_id, size, read_size=4 << 20,
                         depth=8, progress=None, log_every=5.0, store=None):
    """Upload every byte of pool/volume as image_id's data; returns bytes sent.

    progress(sent, size) is called after every chunk; a log line every log_every seconds.
    """
    reader = _Reader(ceph, pool, volume, read_size, depth)
    sent = 0
    started = time.monotonic()
    last_log = started

    def body():
        nonlocal sent, last_log
        while True:
            data = reader.q.get()
            if data is _END:
                if reader.error is not None:
                    # abort the chunked body: Glance must not see a short image as complete
                    raise reader.error
                return
            yield data
            sent += len(data)
            if progress:
                progress(sent, size)
            now = time.monotonic()
            if now - last_log >= log_every:
                last_log = now
                LOG.info("upload of %s/%s to image %s: %d of %d bytes (%.0f%%), %.1f MiB/s",
                         pool, volume, image_id, sent, size, 100.0 * sent / max(size, 1),
                         sent / (now - started) / 2**20)

    reader.start()
    try:
        glance.upload(image_id, body(), size, store=store)
    except exc.GlanceError:
        if reader.error is not None:
            raise reader.error from None
        raise
    finally:
        reader.stop.set()
        # until the reader has left librbd, however long a stalled OSD keeps it there: our
        # caller shuts the connection down next, and librbd under a shut-down connection
        # is a use after free
        reader.join()
    if reader.error is not None:
        raise reader.error
    if sent != size:
        raise exc.CinderExtError(f"upload of {pool}/{volume}: sent {sent} of {size} bytes")
    return sent


# Glance disk_format -> qemu-img output format, for images that are not raw: the
# bytes are converted first, as upstream Cinder does (Glance 33 rejects data that
# does not match the declared disk_format).
QEMU_FORMATS = {"qcow2": "qcow2", "vmdk": "vmdk", "vdi": "vdi", "vhd": "vpc", "vhdx": "vhdx"}


def convert_volume_to_image(ceph, glance, pool, volume, image_id, size, disk_format,
                            read_size=4 << 20, progress=None, tmp_dir=None, store=None):
    """Export the volume to a sparse temporary file, qemu-img convert it, upload the result."""
    import os
    import shutil
    import subprocess
    import tempfile

    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise exc.CinderExtError(f"uploading to disk_format {disk_format} converts the volume with "
                                 "qemu-img, which is not installed (Debian package qemu-utils)")
    with tempfile.TemporaryDirectory(prefix="cinder-rbd-clone-", dir=tmp_dir) as d:
        raw = os.path.join(d, "volume.raw")
        out = os.path.join(d, "image." + disk_format)
        zeros = bytes(read_size)
        with open(raw, "wb") as f:
            f.truncate(size)
            for offset, data in ceph.read_extents(pool, volume, read_size):
                if data != zeros[:len(data)]:  # holes stay holes in the temporary file
                    f.seek(offset)
                    f.write(data)
        proc = subprocess.run([qemu_img, "convert", "-f", "raw", "-O", QEMU_FORMATS[disk_format],
                               raw, out], capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            raise exc.CinderExtError(f"qemu-img convert of {pool}/{volume} to {disk_format}: {last}")
        os.unlink(raw)
        total = os.path.getsize(out)
        sent = 0

        def body():
            nonlocal sent
            with open(out, "rb") as f:
                while True:
                    data = f.read(read_size)
                    if not data:
                        return
                    yield data
                    sent += len(data)
                    if progress:
                        progress(sent, total)

        glance.upload(image_id, body(), total, store=store)
        return sent
