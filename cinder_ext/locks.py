"""Locks between uploads, deletes and purges, as librbd's exclusive lock does them.

Each lock is a cls_lock on an object of its own, ``rbd_clone_lock.<what>``, in the pool
it guards and in the RADOS namespace ``LOCK_NAMESPACE`` (so reaping lists the lock
objects, not every ``rbd_data.*`` object of the pool, and ``rbd_directory`` is never
involved). The first holder creates the object, the last one to leave removes it.

A holder watches its lock object before it takes the lock and keeps the watch while it
holds it: the watch is its lease, renewed by librados' own pings (not by a Python thread,
so a busy or eventlet-blocked process keeps it), and dropped by the OSD
``osd_client_watch_timeout`` s (30 by default) after its client stops pinging. As
librbd's BreakRequest judges a lock owner: a holder is alive while the OSD keeps its
watch, answering or not (a paused process is alive); only a holder without a watch is
dead, and only if the lock, read again, still shows it is it blocklisted (the OSDs then
refuse its every op) and its lock broken.

* ``ImageLock``: one upload per image id (two would each "recover" the other's clone).
* ``VolumeLock``: an upload holds it shared while it snapshots and clones (or copies)
  the volume; a delete holds it exclusively from inspecting the volume to trashing it.
"""

import json
import logging
import os
import socket
import time

from cinder_ext import exceptions as exc

LOG = logging.getLogger(__name__)

LOCK_NAMESPACE = "cinder-rbd-clone.locks"
# Releases up to 0.2 kept their lock objects in the pool's default namespace. Uploads and
# purges hold their lock there too, so that during a rolling upgrade (old and new
# cinder-volume services of one cluster at once) each release sees the other's uploads
# in flight (tests/functional/test_mixed_versions.py). To be dropped once no supported
# upgrade starts from 0.2.
LEGACY_NAMESPACE = ""
LOCK_PREFIX = "rbd_clone_lock."
LOCK_NAME = "rbd_clone_lock"   # the one cls_lock on each lock object
BLOCKLIST_EXPIRE = 3600        # a fenced client instance never comes back anyway
VOLUME_LOCK_WAIT = 10.0        # seconds: the snapshot + clone window is far shorter

UploadInProgress = exc.UploadInProgress
VolumeLocked = exc.VolumeLocked


def lock_object(what):
    """The lock object for `what` (an image id, or a volume name)."""
    return LOCK_PREFIX + what


def _who(holder):
    """A holder in words: client.N at addr, and what its description says (for people)."""
    try:
        d = json.loads(holder.get("desc") or "{}")
    except ValueError:
        d = {}
    detail = ", ".join(f"{k} {d[k]}" for k in ("op", "host", "pid") if d.get(k) is not None)
    return f"client.{holder['gid']} at {holder.get('addr') or '?'}" + (f" ({detail})" if detail else "")


class ObjectLock:
    """One holder's hold on pool/rbd_clone_lock.<what>; shared or exclusive."""

    def __init__(self, ceph, pool, what, shared=False, op="upload", namespace=LOCK_NAMESPACE):
        self.ceph, self.pool, self.obj = ceph, pool, lock_object(what)
        self.shared, self.op, self.ns = shared, op, namespace
        self.watch = self.cookie = None

    @property
    def held(self):
        return self.watch is not None

    @property
    def where(self):
        """pool[/namespace]/object, as rbd spells an image in a namespace: the legacy and
        the current lock of one upload have the same object name."""
        return "/".join(filter(None, (self.pool, self.ns, self.obj)))

    def _desc(self):
        # for error messages only: liveness is the watch
        return json.dumps({"op": self.op, "host": socket.gethostname(), "pid": os.getpid()})

    def attempt(self):
        """Take it: True; else the live holders ([] when the lock just went free or a dead
        holder was broken: try again)."""
        ns = self.ns
        for _ in range(5):
            self.ceph.create_object(self.pool, self.obj, namespace=ns)
            try:
                # watch first: from the moment we hold the lock, we answer for it; no
                # timeout of ours: the OSD's osd_client_watch_timeout, as librbd's
                watch = self.ceph.watch(self.pool, self.obj, namespace=ns)
            except exc.CephNotFound:
                continue  # the last holder removed it between our create and our watch
            cookie = f"{self.ceph.instance_id}.{watch.get_id()}.{os.urandom(4).hex()}"
            try:
                taken = self.ceph.try_lock(self.pool, self.obj, LOCK_NAME, cookie,
                                           desc=self._desc(), shared=self.shared, namespace=ns)
            except BaseException:
                self.ceph.unwatch(watch)
                raise
            if taken and self.ceph.watch_ok(watch):
                self.watch, self.cookie = watch, cookie
                return True
            if taken:
                # the last holder removed the object between our watch and our lock (our
                # lock made it anew): without the watch we would look dead; start over
                self.ceph.unlock(self.pool, self.obj, LOCK_NAME, cookie, namespace=ns)
                self.ceph.unwatch(watch)
                self._tidy()
                continue
            self.ceph.unwatch(watch)
            return self._live_holders()
        return []

    def _live_holders(self):
        ns = self.ns
        holders, _ = self.ceph.lock_info(self.pool, self.obj, LOCK_NAME, namespace=ns)
        if not holders:
            return []
        try:
            watching = self.ceph.list_watchers(self.pool, self.obj, namespace=ns)
        except exc.CephError as e:
            # unknown is never dead: every holder counts as live, nobody is blocklisted
            LOG.warning("%s: cannot tell whether its holders live (%s); leaving their "
                        "lock", self.where, e)
            return holders
        live = [h for h in holders if h["gid"] in watching]
        unwatched = [h for h in holders if h["gid"] not in watching]
        if not unwatched:
            return live
        # read again: a holder that released (unlock, then unwatch) since is not dead
        still, _ = self.ceph.lock_info(self.pool, self.obj, LOCK_NAME, namespace=ns)
        still = {(h["gid"], h["cookie"]) for h in still}
        for h in unwatched:
            if (h["gid"], h["cookie"]) not in still:
                continue
            if not h.get("addr"):
                LOG.warning("%s: holder %s has no watch but no address to blocklist "
                            "either; leaving its lock", self.where, _who(h))
                live.append(h)
                continue
            try:
                # fence first: a holder that comes back must not act after we break in
                self.ceph.blocklist(h["addr"], BLOCKLIST_EXPIRE)
            except exc.CephError as e:
                LOG.warning("%s: cannot blocklist holder %s (%s); leaving its lock",
                            self.where, _who(h), e)
                live.append(h)
                continue
            LOG.warning("%s: breaking the lock of %s: the OSD no longer keeps its watch "
                        "(its client stopped pinging); blocklisted", self.where, _who(h))
            self.ceph.break_lock(self.pool, self.obj, LOCK_NAME,
                                 (h["entity"][0], h["entity"][1], h["cookie"]), namespace=ns)
        return live

    def _tidy(self):
        """Remove the lock object if nobody holds it (the last one out removes it)."""
        try:
            self.ceph.remove_if_unlocked(self.pool, self.obj, LOCK_NAME, namespace=self.ns)
        except exc.CinderExtError as e:
            LOG.warning("%s: removing the free lock object failed: %s", self.where, e)

    def release(self):
        if self.watch is None:
            return
        watch, self.watch = self.watch, None
        try:
            self.ceph.unlock(self.pool, self.obj, LOCK_NAME, self.cookie, namespace=self.ns)
        except exc.CinderExtError as e:
            # fenced, or Ceph away: without our watch the lock is a dead holder's, which the
            # next taker (or purge's reap_lock_objects) breaks; no more calls to wait on
            LOG.warning("%s: releasing the lock failed: %s", self.where, e)
            self.ceph.unwatch(watch)
            return
        self.ceph.unwatch(watch)
        self._tidy()


class UpgradeSafeLock:
    """The same lock in the legacy namespace, then in ours (always in that order: two
    takers never each hold one half); released in reverse. An ObjectLock's interface."""

    def __init__(self, ceph, pool, what, shared=False, op="upload"):
        self.parts = [ObjectLock(ceph, pool, what, shared=shared, op=op, namespace=ns)
                      for ns in (LEGACY_NAMESPACE, LOCK_NAMESPACE)]

    @property
    def held(self):
        return all(p.held for p in self.parts)

    def attempt(self):
        taken = []
        for part in self.parts:
            got = part.attempt()
            if got is not True:
                for t in reversed(taken):
                    t.release()
                return got
            taken.append(part)
        return True

    def release(self):
        for part in reversed(self.parts):
            part.release()


def reap_lock_objects(ceph, pool, namespace=LOCK_NAMESPACE):
    """Remove the lock objects of pool that dead holders left (a holder killed while it held
    a lock that nobody takes again: an upload to an image Cinder then deleted): each is
    taken and released, which breaks (after blocklisting) a silent holder's lock and removes
    the object. Live holders keep theirs. Returns the objects removed.

    namespace "": the objects of releases that kept locks in the pool's default namespace
    (listing it lists every object of the pool: for the full purge only)."""
    removed = []
    for obj in ceph.list_objects(pool, LOCK_PREFIX, namespace=namespace):
        lock = ObjectLock(ceph, pool, obj[len(LOCK_PREFIX):], shared=False, op="purge",
                          namespace=namespace)
        try:
            for _ in range(3):  # [] : a dead holder was just broken, take it now
                got = lock.attempt()
                if got is True:
                    lock.release()
                    removed.append(f"{pool}/{obj}")
                if got:
                    break
        except exc.CinderExtError as e:
            LOG.warning("%s/%s: %s", pool, obj, e)
    return removed


class ImageLock:
    """Exclusive: one upload per image id at a time, in the Glance pool."""

    def __init__(self, ceph, pool, image_id):
        self.ceph, self.pool, self.image_id = ceph, pool, image_id
        self.lock = UpgradeSafeLock(ceph, pool, image_id, shared=False, op="upload")

    def __enter__(self):
        for _ in range(3):  # a broken dead lock can be retaken by a racer: then it is theirs
            got = self.lock.attempt()
            if got is True:
                return self
            if got:
                raise UploadInProgress(
                    f"image {self.image_id}: another upload to it is in progress "
                    f"({_who(got[0])}); not touching it")
        raise UploadInProgress(f"image {self.image_id}: could not take the upload lock")

    def __exit__(self, *a):
        self.lock.release()


class VolumeLock:
    """Shared for uploads, exclusive for a delete: a delete never takes an upload's
    snapshot for a stale one nor removes a volume being read, and an upload never starts
    on a volume a delete has taken. Once its clone exists the upload lets go: a delete
    then finds a dependent and trashes the volume in constant time."""

    def __init__(self, ceph, pool, volume, shared, wait=VOLUME_LOCK_WAIT):
        self.ceph, self.pool, self.volume = ceph, pool, volume
        self.shared, self.wait = shared, wait
        self.lock = UpgradeSafeLock(ceph, pool, volume, shared=shared,
                                    op="upload" if shared else "delete")

    @property
    def held(self):
        return self.lock.held

    def __enter__(self):
        if self.held:  # volume_lock_for_upload() took it; `with` enters it again
            return self
        deadline = time.monotonic() + self.wait
        while True:
            got = self.lock.attempt()
            if got is True:
                return self
            if got and time.monotonic() >= deadline:
                what = json.loads(got[0].get("desc") or "{}").get("op", "an operation")
                raise VolumeLocked(f"volume {self.pool}/{self.volume}: {what} of it is in "
                                   f"progress ({_who(got[0])})")
            if got:
                time.sleep(0.1)

    def __exit__(self, *a):
        self.lock.release()


def volume_lock_for_upload(ceph, pool, volume):
    """Take the shared lock, then make sure the volume is still there (a delete may have won)."""
    lock = VolumeLock(ceph, pool, volume, shared=True)
    try:
        lock.__enter__()
    except VolumeLocked as e:
        raise VolumeLocked(f"{e}; nothing was uploaded") from None
    try:
        ceph.info(pool, volume)
    except exc.CephNotFound:
        lock.__exit__()
        raise VolumeLocked(f"volume {pool}/{volume} was deleted; nothing was uploaded") from None
    except BaseException:
        lock.__exit__()
        raise
    return lock
