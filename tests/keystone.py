"""Pytest plugin: a real Keystone 30 in the loop (issue 11).

Everything authenticates with real Keystone tokens: our glance-info-api
(auth_strategy = keystone), upstream Glance 33 (its `keystone` paste
pipeline), the clients (password + catalog) and the Cinder side (keystoneauth
from its [glance] section).

Topology (what production runs behind a load balancer): one image endpoint
in the catalog, `keystone_lb.url`, the front door (tools/front_door.py) that
sends `/v2/info/stores` and `/v2/info/stores/detail` to our glance-info-api
and everything else to upstream Glance 33. So
`glance stores-info --detail`, openstacksdk and Cinder's stores-detail call,
found through the catalog, reach our service (the answer carries the rbd
`user` only we add), while images and locations reach Glance.

Fixtures
--------
keystone_peer (session)
    tools/peers/keystone-peer on loopback: `.url`, `.auth_url` (url + /v3),
    `.short_url` (same database and fernet keys, tokens expire after
    `.short_token_seconds`), `.dir`, `.region`, `.clouds_yaml`, `.users`
    {name: {password, project, roles, id, project_id}} for admin, member,
    reader (project demo), cinder (service, member on project service) and
    glance (service, keystonemiddleware's user);
    `.token(user, short=False)`, `.access(user)` (keystoneauth AccessInfo),
    `.revoke(token)`, `.set_image_endpoint(url)`,
    `.application_credential(user, roles=None)` -> (id, secret),
    `.authtoken_conf(user="glance")` -> {option: value} for
    [keystone_authtoken], `.glance_section(user="cinder")` -> cinder.conf
    [glance] text, `.cli_auth(user)` -> the glance CLI's --os-* arguments,
    `.stop()`.
keystone_glance_peer (session; needs ceph_cluster)
    upstream Glance 33 in keystone mode (tests.peers.GlancePeer:
    `.url`, `.config_file`, `.request(...)`; send `headers={"X-Auth-Token": t}`).
keystone_info_api (session)
    our glance-info-api on keystone_glance_peer's glance-api.conf with
    `auth_strategy = keystone` and `keystone_peer.authtoken_conf()`.
keystone_lb (session)
    the front door (`.url`, `.stop()`), registered as the image endpoint.
keystone_cinder_env (function; needs ceph_cluster)
    a tests.cinder_fixtures.CinderEnv whose `conf(..., ks_user="cinder",
    glance_url=None, app_cred=None)` writes a [glance] section with keystone
    auth, a password or an application credential (id, secret) (the
    endpoint from the catalog unless glance_url is given); both pools are
    checked back at their baseline after the test, as cinder_env does.
"""

import atexit
import json
import os
import re
import subprocess

import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from tests.peers import PeerError, _ensure
from tools.front_door import FrontDoor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYSTONE_PEER = os.path.join(ROOT, "tools", "peers", "keystone-peer")
SHORT_TOKEN_SECONDS = 10

__all__ = ["KeystonePeer", "KeystoneCinderEnv", "keystone_peer", "keystone_glance_peer",
           "keystone_info_api", "keystone_lb", "keystone_cinder_env"]


def _last_line(text, default):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


class KeystonePeer:
    """A running Keystone started by tools/peers/keystone-peer."""

    def __init__(self, directory):
        self.dir = directory
        self.reload()

    def reload(self):
        with open(os.path.join(self.dir, "keystone.json")) as f:
            self.state = json.load(f)
        self.url = self.state["url"]
        self.auth_url = self.url + "/v3"
        self.short_url = self.state["short_url"]
        self.short_token_seconds = self.state["short_token_seconds"]
        self.region = self.state["region"]
        self.users = self.state["users"]
        self.clouds_yaml = os.path.join(self.dir, "clouds.yaml")

    @classmethod
    def start(cls, directory, short_token_seconds=SHORT_TOKEN_SECONDS, image_url=None):
        cmd = [KEYSTONE_PEER, "start", directory, "--short-token-seconds", str(short_token_seconds)]
        if image_url:
            cmd += ["--image-url", image_url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:  # keystone-peer start leaves nothing running when it fails
            raise PeerError(_last_line(proc.stderr, f"keystone-peer start exited {proc.returncode}"))
        return cls(directory)

    def stop(self):
        proc = subprocess.run([KEYSTONE_PEER, "stop", self.dir], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PeerError(_last_line(proc.stderr, "keystone-peer stop failed"))

    def set_image_endpoint(self, url):
        proc = subprocess.run([KEYSTONE_PEER, "endpoint", self.dir, "--image-url", url],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise PeerError(_last_line(proc.stderr, "keystone-peer endpoint failed"))
        self.reload()

    def _auth(self, user, url=None):
        u = self.users[user]
        return v3.Password(auth_url=(url or self.url) + "/v3", username=user, password=u["password"],
                           project_name=u["project"], user_domain_name="Default",
                           project_domain_name="Default")

    def session(self, user):
        return ks_session.Session(auth=self._auth(user))

    def access(self, user):
        return self._auth(user).get_access(ks_session.Session())

    def token(self, user, short=False):
        """A fresh project-scoped token; short: one that expires after short_token_seconds."""
        return self._auth(user, self.short_url if short else None).get_token(ks_session.Session())

    def revoke(self, token):
        admin = self.session("admin")
        resp = admin.delete(self.auth_url + "/auth/tokens", headers={"X-Subject-Token": token},
                            raise_exc=False)
        assert resp.status_code == 204, resp.text

    def authtoken_conf(self, user="glance"):
        """[keystone_authtoken] as an operator writes it for a service validating tokens."""
        u = self.users[user]
        return {"www_authenticate_uri": self.url, "auth_url": self.url, "auth_type": "password",
                "username": user, "password": u["password"], "project_name": u["project"],
                "user_domain_name": "Default", "project_domain_name": "Default",
                "service_token_roles_required": True}

    def application_credential(self, user, roles=None):
        """(id, secret) of a new application credential of `user` on its project."""
        u = self.users[user]
        body = {"name": f"app-{os.urandom(4).hex()}"}
        if roles:
            body["roles"] = [{"name": r} for r in roles]
        resp = self.session(user).post(f"{self.auth_url}/users/{u['id']}/application_credentials",
                                       json={"application_credential": body}, raise_exc=False)
        assert resp.status_code == 201, resp.text
        cred = resp.json()["application_credential"]
        return cred["id"], cred["secret"]

    def glance_section(self, user="cinder", api_servers=None, app_cred=None):
        """cinder.conf [glance]: keystoneauth options of the service user (password or app credential)."""
        u = self.users[user]
        if app_cred:
            auth = ["auth_type = v3applicationcredential", f"auth_url = {self.auth_url}",
                    f"application_credential_id = {app_cred[0]}",
                    f"application_credential_secret = {app_cred[1]}"]
        else:
            auth = ["auth_type = password", f"auth_url = {self.auth_url}", f"username = {user}",
                    f"password = {u['password']}", f"project_name = {u['project']}",
                    "user_domain_name = Default", "project_domain_name = Default"]
        lines = ["[glance]", "auth_strategy = keystone", *auth, f"region_name = {self.region}",
                 "valid_interfaces = internal,public"]
        if api_servers:
            lines.append(f"api_servers = {api_servers}")
        return "\n".join(lines) + "\n"

    def cli_auth(self, user):
        u = self.users[user]
        # --option=value: a generated password may start with '-' (token_urlsafe), which
        # argparse would take for an option (seen in CI: "--os-password: expected one argument")
        return ["--os-auth-url", self.auth_url, "--os-username", user, f"--os-password={u['password']}",
                "--os-project-name", u["project"], "--os-user-domain-name", "Default",
                "--os-project-domain-name", "Default", "--os-region-name", self.region]


# -- the load balancer -----------------------------------------------------------------------

# -- the Cinder side ---------------------------------------------------------------------------

def KeystoneCinderEnv(cluster, keystone, tmpdir):
    """A CinderEnv whose cinder.conf authenticates to Glance with real Keystone credentials."""
    # imported here: tests.cinder_fixtures needs rados/rbd, which a plugin loaded by
    # every session (unit tests too) should not
    from tests.cinder_fixtures import CinderEnv

    class _KeystoneCinderEnv(CinderEnv):
        def __init__(self):
            super().__init__(cluster, None, tmpdir)
            self.keystone = keystone

        def conf(self, enable=True, ceph_conf=None, user=None, glance_url=None, roles=None, extra="",
                 ks_user="cinder", app_cred=None):
            # CinderEnv writes the backend section and a noauth [glance]; swap the latter
            path = super().conf(enable=enable, ceph_conf=ceph_conf, user=user, glance_url="unused",
                                extra=extra)
            with open(path) as f:
                text = f.read()
            text = re.sub(r"(?ms)^\[glance\].*\Z", "", text)
            text += (self.keystone.glance_section(ks_user, api_servers=glance_url, app_cred=app_cred)
                     + "request_timeout = 60\n")
            with open(path, "w") as f:
                f.write(text)
            return path

    return _KeystoneCinderEnv()


# -- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def keystone_peer(tmp_path_factory):
    _ensure("keystone30 venv", "keystone30")
    directory = str(tmp_path_factory.mktemp("keystone") / "keystone")
    atexit.register(lambda: subprocess.run([KEYSTONE_PEER, "stop", directory], capture_output=True))
    try:
        peer = KeystonePeer.start(directory)
    except (PeerError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"Keystone 30 peer did not start: {e} (logs in {directory})", pytrace=False)
    try:
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="session")
def keystone_glance_peer(glance_peers, keystone_peer):
    return glance_peers.start(keystone_dir=keystone_peer.dir)


@pytest.fixture(scope="session")
def keystone_info_api(info_api_factory, keystone_glance_peer, keystone_peer):
    return info_api_factory(keystone_glance_peer.config_file, auth_strategy="keystone",
                            extra_conf={"keystone_authtoken": keystone_peer.authtoken_conf()})


@pytest.fixture(scope="session")
def keystone_lb(keystone_peer, keystone_glance_peer, keystone_info_api):
    router = FrontDoor.for_glance(keystone_glance_peer.url, keystone_info_api.url)
    try:
        keystone_peer.set_image_endpoint(router.url)
    except PeerError as e:
        router.stop()
        pytest.fail(f"cannot register the image endpoint in Keystone: {e}", pytrace=False)
    try:
        yield router
    finally:
        router.stop()


@pytest.fixture
def keystone_cinder_env(ceph_cluster, keystone_peer, keystone_lb, tmp_path):
    env = KeystoneCinderEnv(ceph_cluster, keystone_peer, tmp_path)
    env.baseline = env.pool_state()
    try:
        yield env
    finally:
        env.cleanup()
    # whatever the test did, both pools are back to what they held before it
    assert env.pool_state() == env.baseline
