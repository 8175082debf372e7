"""Our store properties, field by field, against upstream Glance 33 run on the same glance-api.conf.

Upstream runs in its own venv (tools/peers/upstream-stores-detail: glance-api's
store set-up, then InfoController.get_stores_detail), against the session Ceph
cluster. Upstream's `_get_<type>_properties` produce the `properties` compared
here; ours add `user` for rbd. swift and s3 too: the glance33 peer venv has
glance_store's swift and s3 extras (python-swiftclient, boto3), so upstream
configures a single-tenant swift store (accounts in a swift_store_config_file),
a multi-tenant one and an s3 one. Their auth address and s3 host point at a
loopback listener that must see no connection: neither upstream nor ours
contacts the services to compute these properties. cinder is not compared
(os-brick is not in the peer venv).

One documented difference (glance_store_ext/swift.py): a multi-tenant swift
store's `container` is null in upstream until its first upload; ours reports
the configured swift_store_container throughout.
"""

import json
import os
import socket
import subprocess
import threading

import pytest
from oslo_config import cfg

from glance_store_ext import config, registry
from glance_store_ext.contract import validate_stores_detail
from tests.peers import PeerVenv

FRAGMENTS = {
    "defaults": """
        [fast]
        filesystem_store_datadir = {tmp}/images
        [ceph]
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        """,
    "set values": """
        [fast]
        filesystem_store_datadir = {tmp}/fast
        filesystem_store_chunk_size = 1048576
        filesystem_thin_provisioning = true
        [ceph]
        rbd_store_pool = {pool}
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        rbd_store_chunk_size = 16
        rbd_thin_provisioning = true
        rados_connect_timeout = 10
        """,
    "backend_defaults fallback": """
        [backend_defaults]
        rbd_store_chunk_size = 4
        rbd_thin_provisioning = true
        filesystem_store_chunk_size = 4096
        [fast]
        filesystem_store_datadir = {tmp}/fast
        [ceph]
        rbd_store_pool = {pool}
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        rbd_thin_provisioning = false
        [other]
        rbd_store_pool = {other_pool}
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        """,
    "swift and s3 defaults": """
        [ceph]
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        [sw]
        swift_store_config_file = {swift_conf}
        [mt]
        swift_store_multi_tenant = true
        [s]
        s3_store_host = {service}
        s3_store_access_key = access
        s3_store_secret_key = secret
        s3_store_bucket = images
        """,
    "swift and s3 set values": """
        [backend_defaults]
        swift_store_large_object_chunk_size = 50
        s3_store_thread_pools = 3
        [ceph]
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        [sw]
        swift_store_config_file = {swift_conf}
        default_swift_reference = ref2
        swift_store_container = imgs
        swift_store_large_object_size = 1024
        swift_store_large_object_chunk_size = 100
        [mt]
        swift_store_multi_tenant = true
        swift_store_container = tenant
        swift_store_large_object_size = 2048
        [s]
        s3_store_host = {service}
        s3_store_access_key = access
        s3_store_secret_key = secret
        s3_store_bucket = images
        s3_store_large_object_size = 200
        s3_store_large_object_chunk_size = 20
        [s2]
        s3_store_host = {service}
        s3_store_access_key = access
        s3_store_secret_key = secret
        s3_store_bucket = images2
        s3_store_thread_pools = 7
        """,
}
BACKENDS = {
    "defaults": "fast:file, ceph:rbd, web:http",
    "set values": "fast:file, ceph:rbd, web:http",
    "backend_defaults fallback": "fast:file, ceph:rbd, other:rbd",
    "swift and s3 defaults": "ceph:rbd, sw:swift, mt:swift, s:s3",
    "swift and s3 set values": "ceph:rbd, sw:swift, mt:swift, s:s3, s2:s3",
}
# swift_store_config_file: the accounts of single-tenant stores (glance_store's
# swift/utils.py SwiftParams), authenticating at the loopback listener
SWIFT_ACCOUNTS = """\
[ref1]
user = tenant:glance
key = swift-secret-1
auth_address = {service}/v3
[ref2]
user = tenant2:glance
key = swift-secret-2
auth_address = {service}/v3
"""


class Listener:
    """A loopback TCP port that counts the connections it is offered (and closes them)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    def seen(self):
        """Connections so far, counting those still waiting in the backlog."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.accept()[0].close()
                self.connections += 1
        except (BlockingIOError, OSError):
            pass
        finally:
            self.sock.settimeout(0.2)
        return self.connections

    def close(self):
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def service():
    listener = Listener()
    yield listener
    listener.close()


def write_conf(tmp_path, cluster, name, service_url):
    client = cluster.client("glance")
    swift_conf = tmp_path / "glance-swift.conf"
    swift_conf.write_text(SWIFT_ACCOUNTS.format(service=service_url))
    body = FRAGMENTS[name].format(tmp=tmp_path, user=cluster.glance_user, ceph_conf=client["conf"],
                                  pool=cluster.glance_pool, other_pool=cluster.cinder_pool,
                                  swift_conf=swift_conf, service=service_url)
    body = "\n".join(line.strip() for line in body.splitlines())
    path = tmp_path / "glance-api.conf"
    path.write_text(f"[DEFAULT]\nenabled_backends = {BACKENDS[name]}\n"
                    f"[glance_store]\ndefault_backend = ceph\n"
                    f"[os_glance_staging_store]\nfilesystem_store_datadir = {tmp_path}/staging\n"
                    f"[os_glance_tasks_store]\nfilesystem_store_datadir = {tmp_path}/tasks\n{body}\n")
    return str(path)


def ours(config_file, store_ids):
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], project="glance", default_config_files=[config_file])
    config.register_store_opts(conf)
    details = registry.StoreDetails(conf)
    try:
        return {sid: details.properties(sid) for sid in store_ids}
    finally:
        details.close()


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_properties_equal_upstream_glance_33(tmp_path, ceph_cluster, upstream_stores_detail, service, name):
    config_file = write_conf(tmp_path, ceph_cluster, name, service.url)
    upstream = validate_stores_detail(upstream_stores_detail(config_file))  # also: upstream meets our contract
    theirs = {s["id"]: s["properties"] for s in upstream["stores"]}
    types = {s["id"]: s["type"] for s in upstream["stores"]}
    mine = ours(config_file, list(theirs))
    assert set(theirs) == {b.split(":")[0].strip() for b in BACKENDS[name].split(",")}
    for store_id, props in theirs.items():
        got = dict(mine[store_id])
        if types[store_id] == "rbd":
            assert got.pop("user") == ceph_cluster.glance_user
            assert props["fsid"] == ceph_cluster.fsid  # upstream read it at start-up: a real comparison
        if types[store_id] == "swift" and store_id == "mt":
            # the documented difference: upstream sets a multi-tenant container on first upload
            assert props["container"] is None
            assert got["container"] == SWIFT_MT_CONTAINER[name]
            props = dict(props, container=SWIFT_MT_CONTAINER[name])
        for key, value in props.items():
            assert key in got, f"{name}: store {store_id!r}: {key!r} missing from ours"
            assert (got[key], type(got[key])) == (value, type(value)), \
                f"{name}: store {store_id!r}: {key}: ours {got[key]!r}, upstream {value!r}"
        assert set(got) == set(props), f"{name}: store {store_id!r}: extra keys {set(got) - set(props)}"
    assert service.seen() == 0, "a swift auth address or s3 host was contacted"
    if name in SWIFT_S3_EXPECTED:  # upstream really configured them (not values left by a failed set-up)
        assert {sid: theirs[sid] for sid in SWIFT_S3_EXPECTED[name]} == SWIFT_S3_EXPECTED[name]
        assert upstream_add_enabled(config_file, list(SWIFT_S3_EXPECTED[name])) == \
            dict.fromkeys(SWIFT_S3_EXPECTED[name], True)
        assert service.seen() == 0, "a swift auth address or s3 host was contacted"


# glance_store disables a store's add method (and only logs) when its
# configure_add fails: each swift/s3 store must come out writable
ADD_ENABLED = """
import json, logging, sys, warnings
logging.disable(logging.CRITICAL); warnings.filterwarnings("ignore")
import glance_store
from glance_store import capabilities
from oslo_config import cfg
from glance.common import config, wsgi_app
config.set_config_defaults()
cfg.CONF(["--config-file", sys.argv[1]], project="glance", prog="glance-api")
glance_store.register_store_opts(cfg.CONF, reserved_stores=wsgi_app.RESERVED_STORES)
glance_store.create_multi_stores(cfg.CONF, reserved_stores=wsgi_app.RESERVED_STORES)
print(json.dumps({sid: glance_store.get_store_from_store_identifier(sid).is_capable(
    capabilities.BitMasks.WRITE_ACCESS) for sid in sys.argv[2:]}))
"""


def upstream_add_enabled(config_file, store_ids):
    # cwd away from the repo: `-c` puts it first on sys.path, and our `glance` would shadow upstream's
    proc = subprocess.run([PeerVenv("glance33").python, "-c", ADD_ENABLED, config_file, *store_ids],
                          capture_output=True, text=True, timeout=300, cwd=os.path.dirname(config_file))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


SWIFT_MT_CONTAINER = {"swift and s3 defaults": "glance", "swift and s3 set values": "tenant"}
ONE_MB = 1000 * 1024  # glance_store swift's "MB"
MiB = 1024 * 1024
SWIFT_S3_EXPECTED = {
    "swift and s3 defaults": {
        "sw": {"container": "glance", "large_object_size": 5120 * ONE_MB,
               "large_object_chunk_size": 200 * ONE_MB},
        "mt": {"container": None, "large_object_size": 5120 * ONE_MB,
               "large_object_chunk_size": 200 * ONE_MB},
        "s": {"s3_store_large_object_size": 100 * MiB, "s3_store_large_object_chunk_size": 10 * MiB,
              "s3_store_thread_pools": 10},
    },
    "swift and s3 set values": {
        "sw": {"container": "imgs", "large_object_size": 1024 * ONE_MB,
               "large_object_chunk_size": 100 * ONE_MB},
        "mt": {"container": None, "large_object_size": 2048 * ONE_MB,
               "large_object_chunk_size": 50 * ONE_MB},
        "s": {"s3_store_large_object_size": 200 * MiB, "s3_store_large_object_chunk_size": 20 * MiB,
              "s3_store_thread_pools": 3},
        "s2": {"s3_store_large_object_size": 100 * MiB, "s3_store_large_object_chunk_size": 10 * MiB,
               "s3_store_thread_pools": 7},
    },
}
