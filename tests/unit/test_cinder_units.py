"""Options, names, the location codec as the clone uses it, Glance error messages."""

import subprocess
import sys
import urllib.parse

import pytest
from oslo_config import cfg

from cinder_ext import clone, footprint, opts, steps, upload
from tests import fault_injection
from cinder_ext import exceptions as exc
from cinder_ext.decision import Clone
from cinder_ext.glance import _glance_message
from glance_store_ext.contract import RBDLocation

# upstream Cinder 29 (cinder/volume/drivers/rbd.py): name -> (type, default)
UPSTREAM = {
    "rbd_cluster_name": (cfg.StrOpt, "ceph"), "rbd_pool": (cfg.StrOpt, "rbd"),
    "rbd_user": (cfg.StrOpt, None), "rbd_ceph_conf": (cfg.StrOpt, ""),
    "rbd_flatten_volume_from_snapshot": (cfg.BoolOpt, False), "rbd_secret_uuid": (cfg.StrOpt, None),
    "rbd_max_clone_depth": (cfg.IntOpt, 5), "rbd_store_chunk_size": (cfg.IntOpt, 4),
    "rados_connect_timeout": (cfg.IntOpt, -1), "rados_connection_retries": (cfg.IntOpt, 3),
    "rados_connection_interval": (cfg.IntOpt, 5), "enable_deferred_deletion": (cfg.BoolOpt, False),
    "deferred_deletion_delay": (cfg.IntOpt, 0), "deferred_deletion_purge_interval": (cfg.IntOpt, 60),
    "rbd_concurrent_flatten_operations": (cfg.IntOpt, 3),
}


def test_backend_options_keep_cinder_names_types_defaults():
    declared = {o.dest: o for o in opts.RBD_OPTS}
    for name, (kind, default) in UPSTREAM.items():
        assert isinstance(declared[name], kind), name
        assert declared[name].default == default, name
        assert declared[name].help


def test_clone_optimization_is_off_and_says_the_trade_off():
    opt = next(o for o in opts.CLONE_OPTS if o.dest == "enable_clone_optimization")
    assert isinstance(opt, cfg.BoolOpt) and opt.default is False
    assert "checksum" in opt.help and "hash" in opt.help


def test_list_opts_for_the_generator():
    groups = dict(opts.list_opts())
    names = {o.dest for o in groups["backend_defaults"]}
    assert {"rbd_pool", "rbd_user", "rbd_ceph_conf", "enable_clone_optimization"} <= names
    glance = [o.dest for o in groups["glance"]]
    assert {"api_servers", "auth_strategy", "auth_type", "cafile", "timeout"} <= set(glance)
    assert len(glance) == len(set(glance))


def _write(tmp_path, text):
    p = tmp_path / "cinder.conf"
    p.write_text(text)
    return str(p)


def test_backend_section_falls_back_to_backend_defaults(tmp_path):
    conf, backend = opts.load([_write(tmp_path, """[DEFAULT]
enabled_backends = ceph, other
[backend_defaults]
rbd_pool = shared
rbd_user = shared-user
[ceph]
rbd_user = cinder
enable_clone_optimization = true
[glance]
api_servers = glance:9292
auth_strategy = noauth
""")])
    assert backend.backend == "ceph"
    assert (backend.rbd_pool, backend.rbd_user, backend.enable_clone_optimization) == ("shared", "cinder", True)
    assert backend.rbd_store_chunk_size == 4
    assert conf.glance.api_servers == ["glance:9292"]


def test_glance_client_noauth_headers_and_endpoint(tmp_path):
    from cinder_ext.glance import Glance
    conf, _ = opts.load([_write(tmp_path, "[glance]\napi_servers = glance:9292/v2\nauth_strategy = noauth\n")])
    g = Glance(conf)
    assert g.endpoints == ["http://glance:9292"]
    assert g.headers["X-Identity-Status"] == "Confirmed"
    assert "service" in g.headers["X-Roles"].split(",")


class _DroppingServer:
    """A real socket that closes the first `drops` connections without answering (what a
    client meets when the server closes a keep-alive connection as it sends), then answers
    every request 200 and counts the requests by method."""

    def __init__(self, drops):
        import socket
        import threading
        self.drops, self.seen = drops, []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                head = conn.recv(65536).split(b" ", 1)[0].decode()
                self.seen.append(head)
                if self.drops > 0:
                    self.drops -= 1
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")


@pytest.mark.parametrize("method, drops, answered", [("GET", 2, True), ("GET", 3, False),
                                                     ("POST", 1, False)])
def test_glance_client_repeats_only_a_get_whose_connection_broke(tmp_path, method, drops, answered):
    from cinder_ext.glance import Glance
    server = _DroppingServer(drops)
    try:
        conf, _ = opts.load([_write(tmp_path, f"[glance]\napi_servers = 127.0.0.1:{server.port}\n"
                                              "auth_strategy = noauth\n")])
        g = Glance(conf)
        if answered:
            assert g.request(method, "/v2/images/x", "show image x").status_code == 200
        else:
            with pytest.raises(exc.GlanceError, match="cannot reach Glance"):
                g.request(method, "/v2/images/x", "show image x", json={})
        # a GET: the first try and two more at most; a POST may have been acted upon: once
        assert server.seen == [method] * (min(drops + 1, 3) if method == "GET" else 1)
    finally:
        server.sock.close()


def test_glance_client_keystone_needs_auth_type(tmp_path):
    from cinder_ext.glance import Glance
    conf, _ = opts.load([_write(tmp_path, "[glance]\napi_servers = glance:9292\n")])
    with pytest.raises(exc.ConfigError, match="auth_type"):
        Glance(conf)


@pytest.mark.parametrize("pool", ["images", "my pool/x", "ünï"])
def test_location_is_the_contract_url(pool):
    target = Clone(store_id="ceph", pool=pool, fsid="f", chunk_size=8 << 20)
    loc = clone.image_location(target, "1234")
    assert loc == RBDLocation("f", pool, "1234", "snap")
    assert RBDLocation.parse(loc.url) == loc
    # each part quoted with safe='' as glance_store's StoreLocation.get_uri does
    assert loc.url.split("/")[3] == urllib.parse.quote(pool, "")


def test_names_derive_from_ids():
    assert footprint.upload_snap_name("abc") == "image-abc"
    assert footprint.upload_snap_image_id("image-abc") is None  # not an image id
    assert upload.volume_name("0f1e2d3c-0000-4000-8000-000000000000") == \
        "volume-0f1e2d3c-0000-4000-8000-000000000000"
    assert upload.volume_name("volume-x") == "volume-x"


def test_clone_order_follows_cinder_stripe_rule():
    assert clone.clone_order(4 << 20, 8 << 20) == 23      # store chunk size wins when larger
    assert clone.clone_order(16 << 20, 8 << 20) == 24     # never below the source stripe unit
    assert clone.clone_order(4 << 20, None) == 22


def test_glance_messages_are_one_line():
    class R:
        def __init__(self, text, reason="Forbidden"):
            self.text, self.reason = text, reason
    html = ("<html><head><title>403 Forbidden</title></head><body><h1>403 Forbidden</h1>"
            "You are not authorized to complete get_stores_detail action.<br /><br /></body></html>")
    assert _glance_message(R(html)).startswith("You are not authorized")
    assert _glance_message(R('{"message": "nope"}')) == "nope"
    assert _glance_message(R("")) == "Forbidden"


def test_fault_point_is_inert_unless_selected(monkeypatch):
    fault_injection.install()
    monkeypatch.delenv(fault_injection.ENV_POINT, raising=False)
    steps.reached("clone.cloned")
    monkeypatch.setenv(fault_injection.ENV_POINT, "clone.cloned,clone.active")
    monkeypatch.setenv(fault_injection.ENV_ACTION, "raise")
    steps.reached("clone.recovered")
    with pytest.raises(fault_injection.FaultInjected, match="clone.active"):
        steps.reached("clone.active")


def test_the_product_observes_no_step_and_reads_no_fault_variable():
    # the only observers are the tests' (tests/fault_injection.py)
    import pathlib
    root = pathlib.Path(steps.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "SIGKILL" not in text and "os.kill" not in text, path
        assert "steps.observe" not in text, path


def test_cli_errors_are_one_line(capsys, tmp_path):
    from cinder_ext import cli
    assert cli.main(["--config-file", str(tmp_path / "missing.conf"), "upload", "v", "i"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "missing.conf" in err


def test_progress_bar_only_on_a_tty():
    import io
    from cinder_ext.cli import _Progress

    class TTY(io.StringIO):
        def isatty(self):
            return True
    tty, pipe = TTY(), io.StringIO()
    for stream in (tty, pipe):
        bar = _Progress(stream)
        bar(50, 100)
        bar(100, 100)
    assert pipe.getvalue() == ""
    assert "100.0%" in tty.getvalue() and tty.getvalue().endswith("\n")



def test_cinder_side_imports_without_the_ceph_bindings():
    # a host without Debian's python3-rados/-rbd (a unit-test runner, a build host) imports
    # every module; only connecting says what is missing
    code = ("import sys; sys.modules['rados'] = sys.modules['rbd'] = None\n"
            "import cinder_ext.ceph, cinder_ext.cli, cinder_ext.delete, cinder_ext.upload\n"
            "from cinder_ext import exceptions as exc\n"
            "try:\n"
            "    cinder_ext.ceph.Cluster('/nonexistent.conf', 'cinder').connect()\n"
            "except exc.CephError as e:\n"
            "    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "python3-rados" in proc.stdout


class _MonClient:
    """librados' Rados as clone_format uses it; counts mon commands."""

    def __init__(self, fsid, release="mimic"):
        self.fsid, self.release, self.mon_commands = fsid, release, 0

    def conf_get(self, key):
        return "auto"

    def get_fsid(self):
        return self.fsid

    def mon_command(self, cmd, inbuf):
        self.mon_commands += 1
        return 0, ('{"require_min_compat_client": "%s"}' % self.release).encode(), ""


def test_clone_format_asks_the_monitor_once_per_cluster(monkeypatch):
    # every mon command is a monitor commit (its audit-log entry) that the next snapshot
    # waits behind: one per upload cost a burst a second (cinder_ext.ceph._CLONE_FORMATS)
    from cinder_ext import ceph
    monkeypatch.setattr(ceph, "_CLONE_FORMATS", {})
    one, other = ceph.Cluster(None), ceph.Cluster(None)
    one.client, other.client = _MonClient("fsid-a"), _MonClient("fsid-a")
    assert [one.clone_format(), other.clone_format(), one.clone_format()] == [2, 2, 2]
    assert one.client.mon_commands + other.client.mon_commands == 1
    luminous = ceph.Cluster(None)
    luminous.client = _MonClient("fsid-b", release="luminous")
    assert luminous.clone_format() == 1 and luminous.client.mon_commands == 1
    monkeypatch.setattr(ceph, "CLONE_FORMAT_TTL", 0.0)
    assert one.clone_format() == 2 and one.client.mon_commands == 2
