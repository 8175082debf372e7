"""Interop with a real Keystone 30 (issue 11): real tokens, roles and service credentials.

Fixtures in tests/keystone.py: `keystone_peer` (users admin; member and reader
on project demo; cinder with service + member and glance with service on
project service), `keystone_glance_peer` (upstream Glance 33, keystone
pipeline), `keystone_info_api` (our glance-info-api, auth_strategy =
keystone), `keystone_lb` (the image endpoint in the catalog: /v2/info/ to
ours, the rest to Glance), `keystone_cinder_env`.
"""

import hashlib
import json
import os
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
import uuid

import pytest
import rbd

from cinder_ext import decision
from tests.cinder_fixtures import MiB

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DETAIL = "/v2/info/stores/detail"


def fetch(url, method="GET", token=None, headers=None, body=None):
    h = dict(headers or {})
    if token:
        h["X-Auth-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    req = urllib.request.Request(url, method=method, headers=h, data=data)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# -- who may read the stores detail ------------------------------------------------------

@pytest.mark.parametrize("user, detail, stores", [
    ("admin", 200, 200), ("cinder", 200, 200), ("member", 403, 200), ("reader", 403, 200)])
def test_roles_with_real_tokens(keystone_peer, keystone_info_api, ceph_cluster, user, detail, stores):
    token = keystone_peer.token(user)
    status, _, body = fetch(keystone_info_api.url + DETAIL, token=token)
    assert status == detail, body
    if detail == 200:
        ceph = next(s for s in json.loads(body)["stores"] if s["id"] == "ceph")
        assert ceph["properties"]["fsid"] == ceph_cluster.fsid
        assert ceph["properties"]["user"] == ceph_cluster.glance_user
    else:
        assert b"stores_info_detail" in body
    assert fetch(keystone_info_api.url + "/v2/info/stores", token=token)[0] == stores


@pytest.mark.parametrize("user, detail", [("admin", 200), ("cinder", 200), ("member", 403), ("reader", 403)])
def test_upstream_glance_in_keystone_mode_agrees(keystone_peer, keystone_glance_peer, user, detail):
    resp = keystone_glance_peer.request("GET", DETAIL, headers={"X-Auth-Token": keystone_peer.token(user)})
    assert resp.status == detail, resp
    assert keystone_glance_peer.request("GET", DETAIL).status == 401


def test_cinder_reads_the_detail_without_admin(keystone_peer, keystone_info_api):
    # least privilege: the service role is what the detail policy asks of Cinder
    roles = set(keystone_peer.access("cinder").role_names)
    assert roles == {"service", "member", "reader"}
    assert fetch(keystone_info_api.url + DETAIL, token=keystone_peer.token("cinder"))[0] == 200


def test_no_token_and_bad_token_are_401(keystone_peer, keystone_info_api):
    for token in (None, "not-a-token", "gAAAAAB" + "x" * 180):
        status, headers, body = fetch(keystone_info_api.url + DETAIL, token=token)
        assert status == 401, (token, body)
        # keystonemiddleware tells the client where to authenticate
        assert headers.get("WWW-Authenticate") == f'Keystone uri="{keystone_peer.url}"'
        assert json.loads(body)["code"] == "401 Unauthorized"


def test_expired_token_is_401(keystone_peer, keystone_info_api):
    asked = time.monotonic()
    token = keystone_peer.token("admin", short=True)
    # Keystone issued it between these two instants: it expires no earlier than
    # asked + N and no later than got + N (a loaded machine can take seconds to answer)
    got = time.monotonic()
    # valid at first: the rejection below is the expiry, not a bad token
    assert fetch(keystone_info_api.url + DETAIL, token=token)[0] == 200
    assert time.monotonic() - asked < keystone_peer.short_token_seconds, "machine too slow to test expiry"
    time.sleep(max(0.0, got + keystone_peer.short_token_seconds + 1.5 - time.monotonic()))
    # keystonemiddleware cached the validation above: the cache must not outlive the token
    status, _, body = fetch(keystone_info_api.url + DETAIL, token=token)
    assert status == 401, body
    # the same token at Keystone itself: expired, not found
    status, _, _ = fetch(keystone_peer.auth_url + "/auth/tokens", token=keystone_peer.token("admin"),
                         headers={"X-Subject-Token": token})
    assert status == 404


def test_revoked_token_is_401(keystone_peer, keystone_info_api):
    token = keystone_peer.token("admin")
    keystone_peer.revoke(token)
    # (a token validated before its revocation stays cached in keystonemiddleware for
    # [keystone_authtoken] token_cache_time, 300 s by default: upstream behaviour)
    status, _, body = fetch(keystone_info_api.url + DETAIL, token=token)
    assert status == 401, body


FORGED = {"X-Identity-Status": "Confirmed", "X-Roles": "admin,service", "X-Service-Roles": "service",
          "X-Project-Id": "admin", "X-Tenant-Id": "admin", "X-User-Id": "admin", "X-Is-Admin-Project": "True"}


def test_forged_identity_headers_change_nothing(keystone_peer, keystone_info_api):
    member = keystone_peer.token("member")
    status, _, body = fetch(keystone_info_api.url + DETAIL, token=member, headers=FORGED)
    assert status == 403, body
    for name, value in FORGED.items():
        assert fetch(keystone_info_api.url + DETAIL, token=member, headers={name: value})[0] == 403, name
    # without a token the same headers are no identity at all
    assert fetch(keystone_info_api.url + DETAIL, headers=FORGED)[0] == 401


# -- the clients, through the catalog ----------------------------------------------------------

def test_catalog_points_at_the_load_balancer(keystone_peer, keystone_lb):
    catalog = keystone_peer.access("cinder").service_catalog
    assert catalog.url_for(service_type="image", interface="public") == keystone_lb.url
    assert catalog.url_for(service_type="image", interface="internal") == keystone_lb.url


def test_glance_cli_with_password_through_the_catalog(keystone_peer, keystone_lb, peer_clients, ceph_cluster):
    proc = subprocess.run([peer_clients.glance, *keystone_peer.cli_auth("admin"), "stores-info", "--detail"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # `user` is only in our service's answer: the catalog led the CLI to it
    for word in (ceph_cluster.fsid, ceph_cluster.glance_pool, ceph_cluster.glance_user, "rbd"):
        assert word in proc.stdout, word

    proc = subprocess.run([peer_clients.glance, *keystone_peer.cli_auth("reader"), "stores-info"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ceph" in proc.stdout


def test_glance_cli_member_gets_a_clear_403(keystone_peer, keystone_lb, peer_clients):
    proc = subprocess.run([peer_clients.glance, *keystone_peer.cli_auth("member"), "stores-info", "--detail"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "403" in proc.stderr and "stores_info_detail" in proc.stderr, proc.stderr


SDK_PROBE = textwrap.dedent("""
    import json, sys
    import openstack
    auth_url, user, password, project, region = sys.argv[1:]
    conn = openstack.connect(auth_url=auth_url, username=user, password=password, project_name=project,
                             user_domain_name="Default", project_domain_name="Default",
                             region_name=region, identity_api_version="3")
    print(conn.image.get_endpoint())
    stores = [s.to_dict(computed=False) for s in conn.image.stores(details=True)]
    print(json.dumps({s["id"]: s.get("properties") for s in stores}))
""")


def test_openstacksdk_with_password_through_the_catalog(keystone_peer, keystone_lb, peer_clients, ceph_cluster):
    for user in ("admin", "cinder"):
        u = keystone_peer.users[user]
        proc = peer_clients.run_python(SDK_PROBE, keystone_peer.auth_url, user, u["password"], u["project"],
                                       keystone_peer.region)
        assert proc.returncode == 0, proc.stderr[-2000:]
        endpoint, stores = proc.stdout.strip().splitlines()[-2:]
        assert endpoint.rstrip("/").startswith(keystone_lb.url)
        stores = json.loads(stores)
        assert list(stores) == ["fast", "ceph", "web"]
        assert stores["ceph"]["fsid"] == ceph_cluster.fsid
        assert stores["ceph"]["user"] == ceph_cluster.glance_user


# -- upstream Glance 33 in keystone mode: the location API's service-role check ---------------

def _rbd_snapshot_image(env, image_id, data):
    """What a clone leaves for Glance: <pool>/<image id>@snap, protected (admin Ceph user)."""
    io = env.io[env.ipool]
    rbd.RBD().create(io, image_id, len(data), old_format=False)
    with rbd.Image(io, image_id) as img:
        img.write(data, 0)
        img.create_snap("snap")
        img.protect_snap("snap")
    return f"rbd://{env.cluster.fsid}/{env.ipool}/{image_id}/snap"


def _wait_status(glance, image_id, token, want, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        image = glance.request("GET", f"/v2/images/{image_id}", headers={"X-Auth-Token": token}).json()
        if image["status"] == want or time.monotonic() > deadline:
            return image
        time.sleep(0.2)


def test_location_api_needs_the_service_role(keystone_peer, keystone_glance_peer, keystone_cinder_env):
    env, glance = keystone_cinder_env, keystone_glance_peer
    member = keystone_peer.token("member")
    resp = glance.request("POST", "/v2/images", body={"name": "loc", "disk_format": "raw",
                                                       "container_format": "bare"},
                          headers={"X-Auth-Token": member})
    assert resp.status == 201, resp
    image_id = resp.json()["id"]
    assert resp.json()["owner"] == keystone_peer.users["member"]["project_id"]
    try:
        data = os.urandom(MiB)
        url = _rbd_snapshot_image(env, image_id, data)
        body = {"url": url, "validation_data": {}}
        path = f"/v2/images/{image_id}/locations"
        # the owner's member token: policy passes, Glance's in-code check wants `service`
        resp = glance.request("POST", path, body=body, headers={"X-Auth-Token": member})
        assert resp.status == 403 and b"http store must be enabled" in resp.body, resp
        # admin is not service either
        resp = glance.request("POST", path, body=body, headers={"X-Auth-Token": keystone_peer.token("admin")})
        assert resp.status == 403 and b"http store must be enabled" in resp.body, resp
        # forged headers beside the member token: stripped by auth_token
        resp = glance.request("POST", path, body=body, headers=dict(FORGED, **{"X-Auth-Token": member}))
        assert resp.status == 403, resp
        # a service token that is not one: no service roles (delay_auth_decision lets the
        # valid user token through, X-Service-Identity-Status Invalid), so no upgrade
        resp = glance.request("POST", path, body=body,
                              headers={"X-Auth-Token": member, "X-Service-Token": "forged"})
        assert resp.status == 403 and b"http store must be enabled" in resp.body, resp
        # a real token of a user without the service role, as service token: not enough either
        resp = glance.request("POST", path, body=body,
                              headers={"X-Auth-Token": member, "X-Service-Token": keystone_peer.token("admin")})
        assert resp.status == 403, resp
        # what real Cinder sends: the user's token plus its own service token
        resp = glance.request("POST", path, body=body,
                              headers={"X-Auth-Token": member, "X-Service-Token": keystone_peer.token("cinder")})
        assert resp.status == 202, resp
        image = _wait_status(glance, image_id, member, "active")
        assert image["status"] == "active" and image["size"] == MiB
        resp = glance.request("GET", f"/v2/images/{image_id}/file", headers={"X-Auth-Token": member})
        assert resp.status == 200 and resp.body == data
    finally:
        # Glance deletes the rbd image it now owns (unprotect, remove)
        glance.request("DELETE", f"/v2/images/{image_id}", headers={"X-Auth-Token": member})
        io = env.io[env.ipool]
        if image_id in rbd.RBD().list(io):
            env._force_remove(env.ipool, image_id)


# -- the Cinder side with real credentials ------------------------------------------------------

def _served_by_us(keystone_info_api, user_id, since):
    """Lines of our service's log for a 200 stores detail to that user, after `since` chars."""
    text = keystone_info_api.log()[since:]
    return [line for line in text.splitlines()
            if user_id in line and f'"GET {DETAIL}" status: 200' in line]


def test_clone_upload_with_real_tokens(keystone_cinder_env, keystone_peer, keystone_info_api, ceph_cluster):
    env = keystone_cinder_env
    vol = env.volume(32 * MiB)
    sha = env.volume_sha(vol)
    conf = env.conf()  # no api_servers: the image endpoint comes from the catalog
    made = env.cli("--config-file", conf, "create-image", "ks-clone")
    assert made.returncode == 0, made.stderr
    image_id = json.loads(made.stdout)["id"]
    env.images.append(image_id)
    log_mark = len(keystone_info_api.log())

    proc = env.cli("--config-file", conf, "upload", vol, image_id)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    url = f"rbd://{ceph_cluster.fsid}/{env.ipool}/{image_id}/snap"
    assert out["method"] == "clone" and out["reason"] is None, out
    assert out["location"] == url
    image = env.get_image(image_id)
    assert image["status"] == "active" and image["direct_url"] == url
    assert image["owner"] == keystone_peer.users["cinder"]["project_id"]
    assert env.image_sha(image_id) == sha
    # Cinder's stores-detail call went through the catalog to our service, as the cinder user
    assert _served_by_us(keystone_info_api, keystone_peer.users["cinder"]["id"], log_mark)


def test_clone_upload_with_an_application_credential(keystone_cinder_env, keystone_peer, ceph_cluster):
    env = keystone_cinder_env
    # restricted to the roles the upload needs: the credential carries no more than that
    cred = keystone_peer.application_credential("cinder", roles=("service", "member"))
    conf = env.conf(app_cred=cred)
    vol = env.volume(16 * MiB)
    sha = env.volume_sha(vol)
    image_id = env.glance(conf).create_image("ks-appcred")["id"]
    env.images.append(image_id)
    result = env.upload(conf, vol, image_id)
    assert result["method"] == "clone" and result["reason"] is None, result
    assert result["location"] == f"rbd://{ceph_cluster.fsid}/{env.ipool}/{image_id}/snap"
    assert env.image_sha(image_id) == sha


def test_copy_fallback_with_real_tokens(keystone_cinder_env, keystone_peer):
    env = keystone_cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id = env.volume_sha(vol), env.image()
    result = env.upload(env.conf(enable=False), vol, image_id)
    assert result["method"] == "copy" and result["reason"] == decision.OPTION_DISABLED
    assert result["bytes"] == 32 * MiB
    image = env.get_image(image_id)
    assert image["status"] == "active"
    assert env.image_sha(image_id) == sha
    assert image["os_hash_value"]  # Glance hashed the bytes it was sent


def test_member_credentials_copy_because_the_detail_is_forbidden(keystone_cinder_env, keystone_peer):
    env = keystone_cinder_env
    conf = env.conf(ks_user="member")
    glance = env.glance(conf)
    vol = env.volume(16 * MiB)
    sha = env.volume_sha(vol)
    image_id = glance.create_image(f"ks-{uuid.uuid4().hex[:6]}")["id"]
    try:
        result = env.upload(conf, vol, image_id)
        assert result["method"] == "copy" and result["reason"] == decision.STORES_UNAVAILABLE, result
        assert "403" in result["detail"]
        h = hashlib.sha256()
        for chunk in glance.download(image_id, 4 * MiB):
            h.update(chunk)
        assert h.hexdigest() == sha
    finally:
        glance.delete_image(image_id)


def test_admin_without_service_role_is_refused_the_location_and_copies(keystone_cinder_env, keystone_peer):
    # admin may read the detail, so the clone runs; Glance 33 then refuses the rbd
    # location to anyone without the service role: rollback, copy, nothing left behind
    env = keystone_cinder_env
    conf = env.conf(ks_user="admin")
    glance = env.glance(conf)
    vol = env.volume(16 * MiB)
    sha = env.volume_sha(vol)
    image_id = glance.create_image(f"ks-{uuid.uuid4().hex[:6]}")["id"]
    before = env.pool_state()
    try:
        result = env.upload(conf, vol, image_id)
        assert result["method"] == "copy" and result["reason"] == decision.CLONE_FAILED, result
        assert "403" in result["detail"] and "http store must be enabled" in result["detail"], result
        h = hashlib.sha256()
        for chunk in glance.download(image_id, 4 * MiB):
            h.update(chunk)
        assert h.hexdigest() == sha
        # the copy wrote <image id> through Glance; no clone, snapshot or trash entry of ours
        new = env.new_state(before)
        assert list(new[env.ipool]["images"]) == [image_id] and new[env.ipool]["trash"] == []
        assert new[env.vpool] == {"images": {}, "trash": []}
    finally:
        glance.delete_image(image_id)


def test_wrong_password_is_one_clear_line(keystone_cinder_env, keystone_peer):
    env = keystone_cinder_env
    conf = env.conf()
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace(f"password = {keystone_peer.users['cinder']['password']}", "password = wrong"))
    proc = env.cli("--config-file", conf, "create-image", "nope")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "401" in proc.stderr or "authenticat" in proc.stderr.lower(), proc.stderr


# -- the tools: bad input is one line ------------------------------------------------------------

def test_keystone_peer_bad_input_is_one_line(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    proc = subprocess.run([os.path.join(ROOT, "tools", "peers", "keystone-peer"), "start", str(busy)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"keystone-peer: {busy} is not an empty directory"
    proc = subprocess.run([os.path.join(ROOT, "tools", "peers", "keystone-peer"), "status", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.startswith("keystone-peer: no Keystone peer in ")


def test_glance_peer_keystone_mode_needs_a_keystone(tmp_path, ceph_cluster):
    proc = subprocess.run([os.path.join(ROOT, "tools", "peers", "glance-peer"), "start", str(tmp_path / "g"),
                           "--ceph-dir", ceph_cluster.dir, "--auth", "keystone"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("glance-peer: --auth keystone needs --keystone-dir, or --keystone-url "
                                   "and --keystone-password")
    proc = subprocess.run([os.path.join(ROOT, "tools", "peers", "glance-peer"), "start", str(tmp_path / "g"),
                           "--ceph-dir", ceph_cluster.dir, "--auth", "keystone", "--keystone-dir",
                           str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no Keystone peer at" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
