"""Pytest plugin: real upstream peers (Glance 33, glanceclient, openstacksdk) in their own venvs.

The peers live in <repo>/.peers/, built by tools/peers/setup-peers (idempotent,
a stamp per peer; the fixtures run it every session, a few milliseconds when
nothing changed). A peer that cannot be built or started fails the test, never
skips it.

Fixtures
--------
glance_peer (session; needs ceph_cluster)
    Upstream Glance 33 served by gunicorn from tools/peers/glance-peer on the
    dev cluster: `.url`, `.config_file`, `.dir`, `.fsid`, `.pool`,
    `.headers(roles=("admin",), project_id=..., user_id=..., service_roles=(),
    implied_roles=True)` (adds Keystone's implied roles: admin > member > reader),
    `.request(method, path, body=None, headers=None, **identity) -> Response`,
    `.stop()`. Stores: `enabled_backends = fast:file, ceph:rbd, web:http`,
    `default_backend = ceph` (not listed first), rbd as the glance user with
    rbd_store_chunk_size 8, show_image_direct_url true, show_multiple_locations
    false, do_secure_hash default (true).
glance_peers (session; needs ceph_cluster)
    `.start(default_roles="admin", settings=("SECTION.OPTION=VALUE", ...),
    keystone_dir=None)` for a further peer with other settings (e.g.
    "DEFAULT.show_multiple_locations=true" for the legacy PATCH location
    path); with keystone_dir (a tools/peers/keystone-peer directory) the peer
    runs upstream's keystone pipeline against that Keystone (glance-peer
    --auth keystone; tests/keystone.py); every one is stopped at session end.
peer_clients (session)
    `.glance` (the glance CLI of the clients venv), `.python` (that venv's
    python, with openstacksdk), `.run_glance(*args, url, token="any")` and
    `.run_python(code, *args)`, both returning CompletedProcess (text).
peer_venv (session)
    `peer_venv("glance33")` -> `.dir`, `.python`, `.bin(tool)`.
upstream_stores_detail (session)
    `upstream_stores_detail(config_file) -> dict`: upstream Glance 33's own
    InfoController.get_stores_detail for that config, admin context.

Identity (how the peer authenticates)
-------------------------------------
Glance 33 has no `[DEFAULT] auth_strategy` for the API: auth is the paste
pipeline. The peer's pipeline is upstream's `default` one with
`unauthenticated-context` replaced by `peer-identity context`. Upstream's
`context` filter (glance.api.middleware.context.ContextMiddleware) builds the
request context from the headers keystonemiddleware would set and answers 401
unless X-Identity-Status is Confirmed; it reads X-Roles (lower-cased),
X-Project-Id (or X-Tenant-Id), X-User-Id, X-Service-Roles. glanceclient's CLI
sends only X-Auth-Token (its `identity_headers` are a library argument, not a
CLI option), so tools/peers/peer_identity.py fills in the headers a request
did not send: Confirmed, X-Roles `admin` (glance-peer --default-roles),
project and user `peer-admin`. The token is ignored. Headers a test sends win.

Adding an rbd location in Glance 33 (what Cinder uses)
------------------------------------------------------
`POST /v2/images/{id}/locations` (API v2.17, CURRENT in 33; glanceclient
`images.add_image_location`, CLI `glance add-location --url URL ID`), body
`{"url": "rbd://<fsid>/<pool>/<image id>/snap", "validation_data": {}}`
(validation_data optional: os_hash_algo + os_hash_value). Answers 202 with
an empty body and runs a `location_import` task; with do_secure_hash true
(default) and no validation_data the task sets the location, sets the image
active (size read from the rbd snapshot), then computes checksum and
os_hash_value in the background by reading the image.
Who may call it, checked in this order:
  * the image must be `queued` (else 409), and visible to the caller (a
    private/shared image of another project is 404 unless the caller is admin);
  * policy `add_image_location` = `rule:service_api or (role:member and
    project_id:%(project_id)s and project_id:%(owner)s)`, where `service_api`
    = `role:service or role:admin`;
  * then, in code: unless `service` is among X-Roles or X-Service-Roles, only
    an http-store URL is allowed: 403 "http store must be enabled to use
    location API by normal user." So admin alone gets 403 for an rbd URL.
Working header sets (each proven in tests/interop/test_peers.py):
  X-Roles: member,reader, X-Project-Id: <owner>, X-Service-Roles: service
  (a user token plus Cinder's service token, as keystonemiddleware passes them);
  X-Roles: service, X-Project-Id: <owner>;
  X-Roles: admin,service from any project (devstack's cinder service user).
Refused: X-Roles admin alone (403, above); member alone (403); service alone
from another project (404: it cannot see the image).
A URL the store cannot open (proven: no such rbd image) still gets 202; the
task then fails (type location_import, status failure, message "Task failed
due to Internal Error" in GET /v2/images/{id}/tasks) and the image stays
queued with no location. A second POST on an active image: 409.
`GET /v2/images/{id}/locations` is policy `fetch_image_location` =
`rule:service_api`; it answers [{"url": ..., "metadata": {"store": "ceph"}}].
glanceclient's add_image_location first checks GET /versions for v2.17.

The legacy path (Glance before 2024.2): `PATCH /v2/images/{id}`,
Content-Type application/openstack-images-v2.1-json-patch,
[{"op": "add", "path": "/locations/-", "value": {"url": URL, "metadata": {}}}].
Policy `set_image_location` = admin or project member; no service role
needed; synchronous (200, image active in the answer). It needs
show_multiple_locations = true: with false (this peer, and Glance's default)
it is 403 "It's not allowed to add locations if locations are invisible."
The `glance_peers.start(settings=("DEFAULT.show_multiple_locations=true",))`
peer serves it.
"""

import atexit
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools", "peers")
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(ROOT, ".peers"))
SETUP_TIMEOUT = 1800


class PeerError(Exception):
    """A peer could not be built, started or asked."""


def _last_line(text, default):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def setup_peers(*names):
    """Build the named peers (all when none) unless current; raises PeerError."""
    try:
        proc = subprocess.run([os.path.join(TOOLS, "setup-peers"), *names],
                              capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise PeerError(f"tools/peers/setup-peers {' '.join(names)} took over {SETUP_TIMEOUT}s")
    if proc.returncode != 0:
        raise PeerError(_last_line(proc.stderr, f"tools/peers/setup-peers exited {proc.returncode}"))


# Keystone's default role inference rules (keystone-manage bootstrap)
IMPLIED_ROLES = {"admin": ("member",), "member": ("reader",)}


def _with_implied(roles):
    out = []
    todo = list(roles)
    while todo:
        role = todo.pop(0)
        if role not in out:
            out.append(role)
            todo += IMPLIED_ROLES.get(role, ())
    return out


class PeerVenv:
    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(PEERS_DIR, name)
        self.python = self.bin("python")

    def bin(self, tool):
        return os.path.join(self.dir, "bin", tool)


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:200]!r}>"


class GlancePeer:
    """A running upstream Glance 33 started by tools/peers/glance-peer."""

    DEFAULT_PROJECT = "peer-admin"  # what peer_identity fills in

    def __init__(self, directory):
        self.dir = directory
        with open(os.path.join(directory, "peer.json")) as f:
            self.state = json.load(f)
        self.url = self.state["url"]
        self.config_file = self.state["config_file"]
        self.fsid = self.state["fsid"]
        self.pool = self.state["pool"]

    @classmethod
    def start(cls, directory, ceph_dir, port=None, default_roles="admin", settings=(), keystone_dir=None):
        cmd = [os.path.join(TOOLS, "glance-peer"), "start", directory, "--ceph-dir", ceph_dir,
               "--default-roles", default_roles]
        if keystone_dir:
            cmd += ["--auth", "keystone", "--keystone-dir", keystone_dir]
        if port:
            cmd += ["--port", str(port)]
        for item in settings:
            cmd += ["--set", item]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:  # glance-peer start leaves nothing running when it fails
            raise PeerError(_last_line(proc.stderr, f"glance-peer start exited {proc.returncode}"))
        return cls(directory)

    def stop(self):
        proc = subprocess.run([os.path.join(TOOLS, "glance-peer"), "stop", self.dir],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PeerError(_last_line(proc.stderr, "glance-peer stop failed"))

    @staticmethod
    def headers(roles=("admin",), project_id=DEFAULT_PROJECT, user_id="peer-user", service_roles=(),
                implied_roles=True):
        """The identity headers keystonemiddleware would pass to Glance.

        A Keystone token lists implied roles too (default rules: admin implies
        member implies reader), and Glance 33's policies rely on that: reading
        an image needs `reader`, which a bare `member` header would not have.
        """
        if implied_roles:
            roles = _with_implied(roles)
        h = {"X-Identity-Status": "Confirmed", "X-Roles": ",".join(roles),
             "X-Project-Id": project_id, "X-Tenant-Id": project_id, "X-User-Id": user_id}
        if service_roles:
            h["X-Service-Roles"] = ",".join(service_roles)
        return h

    def request(self, method, path, body=None, headers=None, timeout=60, **identity):
        """One HTTP call; `identity` goes to headers() (omit all for the defaults)."""
        h = self.headers(**identity) if identity else {}
        data = None
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
                h["Content-Type"] = "application/octet-stream"
            else:
                data = json.dumps(body).encode()
                h["Content-Type"] = "application/json"
        h.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())


class PeerClients:
    """The clients venv: python-glanceclient and openstacksdk."""

    def __init__(self):
        venv = PeerVenv("clients")
        self.glance = venv.bin("glance")
        self.python = venv.python

    def run_glance(self, *args, url, token="any", timeout=300, home=None):
        """The glance CLI as on a fresh machine: an empty HOME of its own for each call
        (glanceclient caches Glance's schemas in ~/.glanceclient), unless `home` is given."""
        with tempfile.TemporaryDirectory(prefix="glance-cli-home-") as fresh:
            return subprocess.run([self.glance, "--os-image-url", url, "--os-auth-token", token, *args],
                                  capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ, HOME=home or fresh), cwd=home or fresh)

    def run_python(self, code, *args, timeout=300, env=None):
        # cwd away from the checkout: `-c` puts the cwd first on sys.path
        return subprocess.run([self.python, "-c", code, *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd="/")


def upstream_stores_detail(config_file, release=None):
    """Upstream Glance's stores detail body for config_file, as a dict: Glance 33's, or the
    Glance of an older series (tools/peers/releases.py; its venv built on first use)."""
    series = ["--release", release] if release else []
    proc = subprocess.run([os.path.join(TOOLS, "upstream-stores-detail"), *series, config_file],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise PeerError(_last_line(proc.stderr, "upstream-stores-detail failed"))
    return json.loads(proc.stdout)


# -- fixtures --------------------------------------------------------------

def _ensure(what, *names):
    """Build the peers or fail the test (never skip), with setup-peers' own message."""
    try:
        setup_peers(*names)
        return
    except PeerError as e:
        err = e
    pytest.fail(f"{what} could not be built: {err}", pytrace=False)


@pytest.fixture(scope="session")
def peer_venv():
    _ensure("peer venvs")
    return PeerVenv


@pytest.fixture(scope="session")
def peer_clients():
    _ensure("clients venv", "clients")
    return PeerClients()


class _Peers:
    """Starts peers on one cluster; stop_all() stops every one, even half-started."""

    def __init__(self, ceph_cluster, base):
        self.ceph_cluster, self.base, self.started = ceph_cluster, base, []

    def start(self, default_roles="admin", settings=(), keystone_dir=None):
        directory = os.path.join(self.base, f"glance-peer-{len(self.started)}")
        self.started.append(directory)
        try:
            return GlancePeer.start(directory, self.ceph_cluster.dir, default_roles=default_roles,
                                    settings=settings, keystone_dir=keystone_dir)
        except (PeerError, subprocess.TimeoutExpired) as e:
            err = e
        pytest.fail(f"upstream Glance 33 peer did not start: {err} (logs in {directory})", pytrace=False)

    def stop_all(self):
        while self.started:
            directory = self.started.pop()
            subprocess.run([os.path.join(TOOLS, "glance-peer"), "stop", directory], capture_output=True)


@pytest.fixture(scope="session")
def glance_peers(ceph_cluster, tmp_path_factory):
    _ensure("glance33 venv", "glance33")
    peers = _Peers(ceph_cluster, str(tmp_path_factory.mktemp("peers")))
    atexit.register(peers.stop_all)  # a killed session still stops its servers
    try:
        yield peers
    finally:
        peers.stop_all()


@pytest.fixture(scope="session")
def glance_peer(glance_peers):
    return glance_peers.start()


# named like the module function it returns, which plain scripts import
@pytest.fixture(scope="session", name="upstream_stores_detail")
def _upstream_stores_detail_fixture():
    _ensure("glance33 venv", "glance33")
    return upstream_stores_detail
