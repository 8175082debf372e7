"""Fixtures for the Cinder-side tests: cinder.conf files, volumes of real data, Glance images,
and a check that each test leaves both pools exactly as it found them.

Import with ``from tests.cinder_fixtures import *`` (the fixtures are module level).
"""

import contextlib
import hashlib
import http.client
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import uuid

import pytest
import rados
import rbd

from cinder_ext import clone
from cinder_ext import journal
from cinder_ext import locks
from cinder_ext import opts
from cinder_ext.glance import Glance
from cinder_ext.upload import upload_volume

__all__ = ["cinder_env", "glance_proxy", "legacy_glance_peer", "CinderEnv", "MiB", "GiB"]

MiB = 1 << 20
GiB = 1 << 30


@contextlib.contextmanager
def _in_lock_namespace(io):
    io.set_namespace(locks.LOCK_NAMESPACE)
    try:
        yield io
    finally:
        io.set_namespace("")


def lock_objects(io):
    """The lock objects (cinder_ext.locks) of a raw rados ioctx's pool."""
    with _in_lock_namespace(io):
        return sorted(o.key for o in io.list_objects() if o.key.startswith(locks.LOCK_PREFIX))


def lock_holders(io, obj):
    """The holders of a lock object, read with the raw cls call (no cinder_ext.ceph)."""
    from cinder_ext.ceph import _cls_header, _cls_string, _decode_lock_info
    with _in_lock_namespace(io):
        try:
            ret, out = io.execute(obj, "lock", "get_info",
                                  _cls_header(_cls_string(locks.LOCK_NAME)), length=65536)
        except rados.ObjectNotFound:
            return []
    return _decode_lock_info(out[:ret] if ret and ret > 0 else out)


def _sha(chunks):
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


class CinderEnv:
    """One test's view of the dev cluster and the Glance peer; remembers what it made."""

    def __init__(self, cluster, glance_url, tmpdir):
        self.cluster, self.glance_url, self.dir = cluster, glance_url, str(tmpdir)
        self.volumes, self.images, self.users = [], [], []
        self.admin = rados.Rados(conffile=cluster.conf, conf={"keyring": cluster.admin_keyring})
        self.admin.connect(timeout=30)
        self.io = {p: self.admin.open_ioctx(p) for p in (cluster.cinder_pool, cluster.glance_pool)}
        self.vpool, self.ipool = cluster.cinder_pool, cluster.glance_pool

    def wait_for_leases_to_end(self, *names, timeout=None):
        """Wait until no client watches the lock objects of `names` (image ids, volume
        names; none: every lock object) in either pool: a killed holder keeps its lease (its watch, the lock's
        liveness) until the OSD drops it, osd_client_watch_timeout after its last ping,
        as librbd's lock owners do. What a caller finds before then is an upload in
        progress. Returns the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + (timeout or self.cluster.watch_timeout + 15)
        if names:
            objects = [(pool, locks.lock_object(n)) for n in names for pool in (self.vpool, self.ipool)]
        else:  # every lock object of both pools
            objects = [(pool, o) for pool in (self.vpool, self.ipool)
                       for o in lock_objects(self.io[pool])]
        while True:  # each lock is held in both namespaces (locks.UpgradeSafeLock)
            watched = [f"{pool}/{ns}/{obj}" for pool, obj in objects
                       for ns in (locks.LEGACY_NAMESPACE, locks.LOCK_NAMESPACE)
                       if self.cluster.admin("rados", "-p", pool, "-N", ns,
                                             "listwatchers", obj, check=False).strip()]
            if not watched:
                return time.monotonic() - t0
            assert time.monotonic() < deadline, f"leases never ended: {watched}"
            time.sleep(0.5)

    # -- configuration ------------------------------------------------------------------
    def conf(self, enable=True, ceph_conf=None, user=None, glance_url=None,
             roles=("admin", "service"), extra="", glance_extra=""):
        client = self.cluster.client("cinder")
        text = f"""[DEFAULT]
enabled_backends = ceph

[ceph]
rbd_pool = {self.vpool}
rbd_user = {user or self.cluster.cinder_user}
rbd_ceph_conf = {ceph_conf or client['conf']}
rados_connect_timeout = 20
rados_connection_retries = 0
enable_clone_optimization = {str(enable).lower()}
clone_active_timeout = 30
{extra}
[glance]
api_servers = {glance_url or self.glance_url}
auth_strategy = noauth
noauth_roles = {','.join(roles)}
request_timeout = 60
{glance_extra}
"""
        path = os.path.join(self.dir, f"cinder-{uuid.uuid4().hex[:8]}.conf")
        with open(path, "w") as f:
            f.write(text)
        return path

    def load(self, conf_file):
        return opts.load([conf_file])

    def glance(self, conf_file=None):
        conf, _ = self.load(conf_file or self.conf())
        return Glance(conf)

    # -- volumes ------------------------------------------------------------------------------
    def volume(self, size=64 * MiB, data_at=None, data_len=1 * MiB, name=None, head=None):
        """A sparse volume with random data at a few offsets; returns its name."""
        name = name or f"volume-{uuid.uuid4()}"
        rbd.RBD().create(self.io[self.vpool], name, size, old_format=False)
        self.volumes.append(name)
        if data_at is None:
            data_at = (0, size // 3, size - data_len)
        with rbd.Image(self.io[self.vpool], name) as img:
            for off in data_at:
                img.write(os.urandom(data_len), off)
            if head is not None:
                img.write(head, 0)
        return name

    def write(self, name, offset, data):
        with rbd.Image(self.io[self.vpool], name) as img:
            img.write(data, offset)

    def volume_sha(self, name, pool=None, snapshot=None):
        with rbd.Image(self.io[pool or self.vpool], name, snapshot=snapshot, read_only=True) as img:
            size = img.size()
            return _sha(img.read(off, min(4 * MiB, size - off)) for off in range(0, size, 4 * MiB))

    def journal_open(self, volume, image_id, step):
        """The intent record an upload of volume to image_id writes before its first step
        (cinder_ext.journal), as an upload killed at `step` leaves it: written raw, as
        librados sees it."""
        with rbd.Image(self.io[self.vpool], volume, read_only=True) as img:
            volume_id = img.id()
        record = journal.UploadRecord(image_id, self.ipool, self.vpool, volume, volume_id,
                                      step=step)
        io = self.io[self.vpool]
        io.set_namespace(journal.JOURNAL_NAMESPACE)
        try:
            with rados.WriteOpCtx() as op:
                io.set_omap(op, (record.key,), (record.encode(),))
                io.operate_write_op(op, journal.JOURNAL_OBJECT)
        finally:
            io.set_namespace("")

    # -- Glance ---------------------------------------------------------------------------------
    def image(self, disk_format="raw", container_format="bare"):
        image = self.glance().create_image(f"t-{uuid.uuid4().hex[:6]}", disk_format, container_format)
        self.images.append(image["id"])
        return image["id"]

    def get_image(self, image_id):
        return self.glance().get_image(image_id)

    def image_sha(self, image_id):
        return _sha(self.glance().download(image_id, 4 * MiB))

    def upload(self, conf_file, volume, image_id, **kw):
        conf, backend = self.load(conf_file)
        return upload_volume(conf, backend, volume, image_id, **kw)

    def cli(self, *args, env=None, timeout=300):
        e = dict(os.environ)
        e.update(env or {})
        proc = subprocess.run([sys.executable, "-m", "tests.fault_injection", "cinder_ext.cli", *args],
                              capture_output=True, text=True, env=e, timeout=timeout)
        if proc.returncode == -9:  # killed: what comes next finds it dead once its leases end
            self.wait_for_leases_to_end()
        return proc

    # -- Ceph users -----------------------------------------------------------------------------
    def ceph_user(self, name, osd_caps, mon_caps="profile rbd"):
        """A Ceph user with the given caps and its own ceph.conf; removed at cleanup."""
        d = os.path.join(self.dir, f"client.{name}")
        os.makedirs(d, exist_ok=True)
        keyring = os.path.join(d, f"ceph.client.{name}.keyring")
        self.cluster.admin("ceph", "auth", "get-or-create", f"client.{name}", "mon", mon_caps,
                           "osd", osd_caps, "-o", keyring)
        self.users.append(name)
        with open(self.cluster.client("cinder")["conf"]) as f:
            base = f.read().split("[client.")[0]
        conf = os.path.join(d, "ceph.conf")
        with open(conf, "w") as f:
            f.write(base + f"\n[client.{name}]\nkeyring = {keyring}\n")
        return conf

    # -- pool state ---------------------------------------------------------------------------
    def _rbd_json(self, *args):
        out = self.cluster.admin("rbd", *args, "--format", "json")
        return json.loads(out or "[]")

    def _journal_io(self):
        io = self.io[self.vpool]
        io.set_namespace(journal.JOURNAL_NAMESPACE)
        return io

    def open_records(self):
        """The image ids of the journal's open upload records, as librados sees them."""
        io = self._journal_io()
        try:
            with rados.ReadOpCtx() as op:
                it, _ = io.get_omap_vals(op, "", journal.UPLOAD_PREFIX, -1)
                io.operate_read_op(op, journal.JOURNAL_OBJECT)
                pairs = list(it)
        except rados.ObjectNotFound:
            pairs = []
        finally:
            io.set_namespace("")
        return sorted(k[len(journal.UPLOAD_PREFIX):] for k, v in pairs
                      if json.loads(v).get("state") == journal.OPEN)

    def _journal_remove(self, keys):
        io = self._journal_io()
        try:
            with rados.WriteOpCtx() as op:
                io.remove_omap_keys(op, tuple(keys))
                io.operate_write_op(op, journal.JOURNAL_OBJECT)
        except rados.ObjectNotFound:
            pass
        finally:
            io.set_namespace("")

    def pool_state(self):
        """{pool: {'images': {name: sorted snapshots (every namespace)}, 'trash': [names]}}."""
        state = {}
        for pool in (self.vpool, self.ipool):
            images = {}
            for name in self._rbd_json("ls", "-p", pool):
                snaps = self._rbd_json("snap", "ls", "--all", f"{pool}/{name}")
                images[name] = sorted(
                    (s["namespace"]["type"] if isinstance(s.get("namespace"), dict) else s.get("namespace", "user"),
                     s["namespace"].get("original_name", s["name"]) if isinstance(s.get("namespace"), dict)
                     else s["name"], s.get("protected") == "true")
                    for s in snaps)
            trash = sorted(t["name"] for t in self._rbd_json("trash", "ls", "-a", "-p", pool))
            state[pool] = {"images": images, "trash": trash}
        return state

    def new_state(self, before):
        """What appeared since `before` (images with their snapshots, trash entries)."""
        now = self.pool_state()
        out = {}
        for pool, st in now.items():
            imgs = {k: v for k, v in st["images"].items()
                    if before[pool]["images"].get(k) != v}
            trash = sorted(set(st["trash"]) - set(before[pool]["trash"]))
            out[pool] = {"images": imgs, "trash": trash}
        return out

    # -- cleanup ---------------------------------------------------------------------------------
    def _force_remove(self, pool, name):
        io = self.io[pool]
        try:
            with rbd.Image(io, name) as img:
                for s in list(img.list_snaps()):
                    if s.get("namespace", 0) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER:
                        if img.is_protected_snap(s["name"]):
                            img.unprotect_snap(s["name"])
                        img.remove_snap(s["name"])
        except rbd.ImageNotFound:
            return
        for attempt in range(20):
            try:
                rbd.RBD().remove(io, name)
                return
            except rbd.ImageNotFound:
                return
            except (rbd.ImageHasSnapshots, rbd.ImageBusy):
                # trash-namespace snapshots go when their clones do
                with rbd.Image(io, name) as img:
                    for s in img.list_snaps():
                        with contextlib.suppress(rbd.Error):
                            img.remove_snap_by_id(s["id"])
                time.sleep(0.2)

    def cleanup(self):
        # clones first (admin): Glance 33, as a user that may only read the Cinder
        # pool, cannot detach a clone v2 from its parent (issue 7's business)
        for image_id in self.images:
            with contextlib.suppress(rbd.ImageNotFound):
                with rbd.Image(self.io[self.ipool], image_id, read_only=True) as img:
                    has_parent = True
                    try:
                        img.parent_id()
                    except rbd.ImageNotFound:
                        has_parent = False
                if has_parent:
                    self._force_remove(self.ipool, image_id)
            with contextlib.suppress(Exception):
                self.glance().delete_image(image_id)
        for name in self.volumes:
            self._force_remove(self.vpool, name)
        # the images' journal records go with them: an open one (an upload the test
        # killed) would be a later test's purge's business
        self._journal_remove([journal.UPLOAD_PREFIX + i for i in self.images])
        self.open_after = self.open_records()
        for user in self.users:
            self.cluster.admin("ceph", "auth", "del", f"client.{user}")
        for io in self.io.values():
            io.close()
        self.admin.shutdown()


@pytest.fixture
def cinder_env(ceph_cluster, glance_peer, tmp_path):
    env = CinderEnv(ceph_cluster, glance_peer.url, tmp_path)
    env.baseline, open_before = env.pool_state(), env.open_records()
    try:
        yield env
    finally:
        env.cleanup()
    # whatever the test did, both pools are back to what they held before it, and it left
    # no open journal record (a later test's purge would act on it)
    assert env.pool_state() == env.baseline
    assert env.open_after == open_before


# -- a proxy in front of Glance, for answers a real Glance does not give ---------------------

class _Proxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class GlanceProxy:
    """Forwards to Glance; `rewrite[path] = fn(status, body_bytes) -> (status, body_bytes)`
    edits an answer, `intercept(method, path) -> None | (status, body_bytes)` answers in
    Glance's place (the request never reaches it)."""

    def __init__(self, upstream):
        self.upstream = upstream.split("://", 1)[1]
        self.rewrite = {}
        self.intercept = None
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = bytearray()
                    while True:
                        size = int(self.rfile.readline().strip().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return bytes(out)
                        out += self.rfile.read(size)
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else None

            def _reply(self, status, data, rhead=()):
                self.send_response(status)
                for k, v in rhead:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _any(self):
                body = self._body()
                answer = proxy.intercept and proxy.intercept(self.command, self.path)
                if answer:
                    return self._reply(*answer)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "transfer-encoding", "content-length", "connection")}
                conn = http.client.HTTPConnection(proxy.upstream, timeout=120)
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                status, data = resp.status, resp.read()
                rhead = [(k, v) for k, v in resp.getheaders()
                         if k.lower() not in ("content-length", "transfer-encoding", "connection")]
                conn.close()
                fn = proxy.rewrite.get(self.path)
                if fn:
                    status, data = fn(status, data)
                self._reply(status, data, rhead)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        self.server = _Proxy(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def glance_proxy(glance_peer):
    proxy = GlanceProxy(glance_peer.url)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def legacy_glance_peer(glance_peers):
    """A Glance 33 that shows locations, so the legacy PATCH add of /locations/- works."""
    return glance_peers.start(settings=("DEFAULT.show_multiple_locations=true",))
