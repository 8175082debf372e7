"""The fsid of a Ceph cluster, read with rados in the background and cached.

Callers never wait on Ceph, except the very first call of a reader, which
waits up to `cold_wait` seconds (default: the connect bound, at most 5 s) for
the first read. A daemon thread re-reads the fsid every `refresh_interval`
seconds (every `retry_interval` while failing), with one rados connection per
read, never one per call.

When a read fails:
* the cluster cannot be reached (timeout, refused): the last fsid read is kept;
* the store's user, keyring or ceph.conf is wrong: the fsid becomes None.
Either way one warning names the store and what failed; it is not repeated
while the failure stays the same, and recovery is logged once.

Nothing secret (ceph.conf path, keyring path, key) is put in a log line.
"""

import atexit
import logging
import math
import os
import threading
import time
import weakref

try:
    import rados
except ImportError:  # the store then reports fsid null with a warning
    rados = None

__all__ = ["ClusterFsid", "DEFAULT_CONNECT_BOUND", "connect_bound"]

LOG = logging.getLogger(__name__)

# used when rados_connect_timeout is -1 or 0 (librados would wait 300 s)
DEFAULT_CONNECT_BOUND = 5.0
MAX_COLD_WAIT = 5.0
DEFAULT_REFRESH_INTERVAL = float(os.environ.get("GLANCE_STORE_EXT_FSID_REFRESH", 300))
DEFAULT_RETRY_INTERVAL = float(os.environ.get("GLANCE_STORE_EXT_FSID_RETRY", 10))

_LIVE = weakref.WeakSet()


def connect_bound(rados_connect_timeout):
    """Seconds a read may take: rados_connect_timeout, or DEFAULT_CONNECT_BOUND when it is <= 0."""
    if rados_connect_timeout is None or rados_connect_timeout <= 0:
        return DEFAULT_CONNECT_BOUND
    return float(rados_connect_timeout)


class _ReadFailed(Exception):
    def __init__(self, reason, misconfigured):
        super().__init__(reason)
        self.reason = reason
        self.misconfigured = misconfigured


class ClusterFsid:
    """The cached fsid of the cluster a store connects to, kept fresh by a daemon thread."""

    def __init__(self, store_id, conffile, user, bound=DEFAULT_CONNECT_BOUND,
                 refresh_interval=None, retry_interval=None, cold_wait=None):
        self.store_id = store_id
        self._conffile = conffile
        self._user = user
        self.bound = float(bound)
        self.refresh_interval = float(refresh_interval if refresh_interval is not None
                                      else DEFAULT_REFRESH_INTERVAL)
        self.retry_interval = min(float(retry_interval if retry_interval is not None
                                        else DEFAULT_RETRY_INTERVAL), self.refresh_interval)
        self.cold_wait = float(cold_wait if cold_wait is not None else min(self.bound, MAX_COLD_WAIT))
        self._fsid = None
        self._failure = None  # reason of the failure being reported, None when healthy
        self._first_read = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = None
        self._pid = None
        self._cold_deadline = None
        self.reads = 0  # completed read attempts, for tests and the benchmark
        _LIVE.add(self)
        self.start()

    def start(self):
        """Start the refresher (again after a fork: threads do not survive one)."""
        with self._lock:
            me = os.getpid()
            if self._stop.is_set() or (self._thread is not None and self._pid == me):
                self._pid = me  # closed: answer with the last value, in this process too
                return
            self._pid = me
            self._first_read.clear()
            self._cold_deadline = time.monotonic() + self.cold_wait
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"fsid-refresher-{self.store_id}")
            self._thread.start()

    def get(self):
        """The last fsid read, or None; never blocks, except during the cold window."""
        if self._pid != os.getpid():
            self._after_fork()
        if not self._first_read.is_set():
            left = self._cold_deadline - time.monotonic()
            if left > 0:
                self._first_read.wait(left)
        return self._fsid

    def _after_fork(self):
        # only this thread exists in a forked child: locks held by the parent's
        # refresher at fork time would never be released, so start afresh
        self._lock = threading.Lock()
        self._first_read = threading.Event()
        self._thread = None
        self.start()
        if self.reads:
            self._first_read.set()  # the parent's value is there: no cold wait in the child

    def refresh_now(self):
        """Read once more, in the caller's thread (tests, operators' tools); returns the fsid."""
        self._read_and_record()
        return self._fsid

    def close(self, timeout=1.0):
        """Stop the refresher; get() keeps answering with the last value."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self):
        while not self._stop.is_set():
            healthy = self._read_and_record()
            self._first_read.set()
            self._stop.wait(self.refresh_interval if healthy else self.retry_interval)

    def _read_and_record(self):
        try:
            fsid = self._read()
        except _ReadFailed as failed:
            with self._lock:
                self.reads += 1
                if failed.misconfigured:
                    self._fsid = None
                repeated = failed.reason == self._failure
                self._failure = failed.reason
            kept = "" if failed.misconfigured or self._fsid is None else ", reporting the last fsid read"
            if not repeated:
                LOG.warning("store %r: cannot read the Ceph cluster fsid: %s%s; "
                            "retrying every %gs", self.store_id, failed.reason, kept, self.retry_interval)
            else:
                LOG.debug("store %r: fsid read failed again: %s", self.store_id, failed.reason)
            return False
        with self._lock:
            self.reads += 1
            recovered = self._failure is not None
            changed = self._fsid is not None and self._fsid != fsid
            self._fsid = fsid
            self._failure = None
        if recovered:
            LOG.info("store %r: Ceph cluster fsid read again: %s", self.store_id, fsid)
        if changed:
            LOG.warning("store %r: the Ceph cluster fsid changed to %s", self.store_id, fsid)
        return True

    def _read(self):
        if rados is None:
            raise _ReadFailed("the python rados module is not installed", misconfigured=True)
        who = f"client.{self._user}" if self._user else "the default Ceph user"
        try:
            # as glance_store's rbd driver: same conf file argument, same user
            client = rados.Rados(conffile=self._conffile, rados_id=self._user or None,
                                 # librados would print keyring paths to stderr
                                 conf={"log_to_stderr": "false", "err_to_stderr": "false"})
        except rados.Error as exc:
            what = ("the file named by rbd_store_ceph_conf cannot be read" if self._conffile else
                    "rbd_store_ceph_conf is empty and librados found no ceph.conf in its default places")
            raise _ReadFailed(f"{what} ({_errname(exc)})", misconfigured=True) from None
        try:
            bound = str(max(1, math.ceil(self.bound)))  # these options take whole seconds
            for option in ("client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout"):
                client.conf_set(option, bound)
            client.connect()
            return client.get_fsid()
        except rados.TimedOut:
            raise _ReadFailed(f"the cluster did not answer within {self.bound:g}s (monitors down "
                              "or unreachable)", misconfigured=False) from None
        except (rados.PermissionDeniedError, rados.PermissionError):
            raise _ReadFailed(f"authentication as {who} was rejected (wrong key in its keyring?)",
                              misconfigured=True) from None
        except rados.ObjectNotFound:
            raise _ReadFailed(f"no key for {who} (check rbd_store_user and the keyring named in "
                              "rbd_store_ceph_conf)", misconfigured=True) from None
        except rados.InvalidArgumentError:
            raise _ReadFailed(f"the Ceph configuration for {who} is invalid", misconfigured=True) from None
        except rados.Error as exc:
            raise _ReadFailed(f"connecting as {who} failed ({_errname(exc)})", misconfigured=False) from None
        finally:
            client.shutdown()

    def __repr__(self):
        return f"<ClusterFsid store={self.store_id!r} fsid={self._fsid!r}>"


def _errname(exc):
    # the class name only: rados messages may carry paths
    return type(exc).__name__


@atexit.register
def _stop_all():
    # a daemon thread inside librados while the interpreter tears down can crash it
    for reader in list(_LIVE):
        reader.close(timeout=0.2)
