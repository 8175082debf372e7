"""No secret leaves glance-info-api: not in a response (body or header), not in a log line.

Secrets: keyring paths and the keys in them, ceph.conf paths, a secret UUID
(`rbd_secret_uuid`, as an operator may leave it in the rbd section), and the
other credentials a glance-api.conf holds (S3 secret key, Cinder store
password, database password, keystone_authtoken password). The service runs
with debug = true; every endpoint is hit, errors included, first with the
cluster healthy, then with a keyring holding the wrong key and with a
ceph.conf that does not exist.
"""

import base64
import http.client
import json
import os
import re
import subprocess
import uuid

import pytest

from tests.info_api import glance_conf_text

SECRET_UUID = str(uuid.uuid4())
OTHER_SECRETS = {"s3 secret key": "s3-SECRET-k3y-9f8e7d", "cinder store password": "c1nder-PASSW0RD-x",
                 "database password": "db-PASSW0RD-q", "keystone password": "ks-PASSW0RD-z"}

REQUESTS = [
    # (method, path, headers, body)
    ("GET", "/", {}, None),
    ("GET", "/versions", {}, None),
    ("GET", "/v2/", {}, None),
    ("GET", "/healthcheck", {}, None),
    ("GET", "/healthcheck", {"Accept": "application/json"}, None),
    ("HEAD", "/healthcheck", {}, None),
    ("GET", "/v2/info/stores", {"X-Roles": "member"}, None),
    ("GET", "/v2/info/stores/detail", {"X-Roles": "admin"}, None),
    ("GET", "/v2/info/stores/detail", {"X-Roles": "service", "Accept": "text/html"}, None),
    ("GET", "/v2/info/stores/detail", {"X-Roles": "reader"}, None),
    ("GET", "/v2/info/stores/detail", {"X-Roles": "reader", "Accept": "text/plain"}, None),
    ("GET", "/v2/info/stores/detail?verbose=1&debug=true", {}, None),
    ("GET", "/v2/info/stores/ceph", {}, None),
    ("GET", "/v2/info/stores/detail/../../../etc/ceph/ceph.conf", {}, None),
    ("POST", "/v2/info/stores/detail", {"Content-Type": "application/json"}, b"{}"),
    ("DELETE", "/v2/info/stores", {}, None),
    ("GET", "/v2/info/stores/detail", {"Content-Length": "4"}, b"oops"),
    ("BREW", "/nowhere", {}, None),
    ("GET", "/v2/images", {}, None),
]


def _keys_in(keyring_path):
    with open(keyring_path) as f:
        return re.findall(r"key\s*=\s*(\S+)", f.read())


def _unknown_key():
    """A valid cephx key that the cluster does not know."""
    return subprocess.run(["ceph-authtool", "--gen-print-key"], check=True, capture_output=True,
                          text=True, timeout=30).stdout.strip()


def _scan(text, secrets):
    """The secrets (by name) found in `text`."""
    return sorted(name for name, value in secrets.items() if value and value in text)


def _hit_every_endpoint(svc):
    """(all response text, the detail body as admin)."""
    seen, detail = [], None
    for method, path, headers, body in REQUESTS:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        assert resp.status < 500 or (method == "BREW" and resp.status == 501), (method, path, resp.status)
        seen.append(f"{resp.status} {resp.reason}\n" + "\n".join(f"{k}: {v}" for k, v in resp.getheaders())
                    + "\n" + data.decode("utf-8", "replace"))
        if (method, path, headers.get("X-Roles")) == ("GET", "/v2/info/stores/detail", "admin"):
            detail = json.loads(data)
    return "\n".join(seen), detail


@pytest.fixture
def make_conf(ceph_cluster, tmp_path):
    """glance-api.conf on the dev cluster with every kind of secret in it; (path, secrets)."""
    glance = ceph_cluster.client("glance")

    def make(ceph_conf=None, keyring=None, detailed_healthcheck=True):
        secrets = {"glance keyring path": glance["keyring"], "admin keyring path": ceph_cluster.admin_keyring,
                   "glance ceph.conf path": glance["conf"], "admin ceph.conf path": ceph_cluster.conf,
                   "secret uuid": SECRET_UUID, **OTHER_SECRETS}
        for i, key in enumerate(_keys_in(glance["keyring"]) + _keys_in(ceph_cluster.admin_keyring)):
            secrets[f"key {i}"] = key
        # the key's bytes, in case something decodes and re-encodes it
        secrets["glance key hex"] = base64.b64decode(_keys_in(glance["keyring"])[0]).hex()
        if ceph_conf:
            secrets["used ceph.conf path"] = ceph_conf
        if keyring:
            secrets["wrong keyring path"] = keyring
            secrets["wrong key"] = _keys_in(keyring)[0]
        sections = {
            "DEFAULT": {"enabled_backends": "fast:file, ceph:rbd, web:http, obj:s3, vol:cinder",
                        "debug": True},
            "ceph": {"rbd_secret_uuid": SECRET_UUID},
            "obj": {"s3_store_host": "http://127.0.0.1:9", "s3_store_access_key": "AKIAEXAMPLE",
                    "s3_store_secret_key": OTHER_SECRETS["s3 secret key"],
                    "s3_store_bucket": "glance"},
            "vol": {"cinder_store_user_name": "glance",
                    "cinder_store_password": OTHER_SECRETS["cinder store password"],
                    "cinder_store_auth_address": "http://127.0.0.1:9/identity"},
            "database": {"connection": f"mysql+pymysql://glance:{OTHER_SECRETS['database password']}"
                                       "@127.0.0.1/glance"},
            "keystone_authtoken": {"password": OTHER_SECRETS["keystone password"],
                                   "auth_type": "password"},
            # the detailed page shows threads' stacks, the platform, ...: none of our secrets
            "healthcheck": {"detailed": detailed_healthcheck},
        }
        text = glance_conf_text(str(tmp_path), cluster=ceph_cluster, **sections)
        if ceph_conf:
            text = text.replace(f"rbd_store_ceph_conf = {glance['conf']}", f"rbd_store_ceph_conf = {ceph_conf}")
        path = tmp_path / f"glance-api-{uuid.uuid4().hex[:6]}.conf"
        path.write_text(text)
        return str(path), secrets
    return make


def _check(svc, secrets, label):
    # the scan looks for real values: the keys, uuid and passwords are in the files the service reads
    sources = ""
    for path in (svc.config_file, *[v for k, v in secrets.items() if k.endswith("path")]):
        if os.path.exists(path):
            with open(path, errors="replace") as f:
                sources += f.read()
    for name, value in secrets.items():
        if not name.endswith("path") and name != "glance key hex":
            assert value in sources, name
    responses, detail = _hit_every_endpoint(svc)
    log = svc.log()
    leaks = {"responses": _scan(responses, secrets), "log": _scan(log, secrets)}
    print(f"\nsecrets ({label}): {len(secrets)} scanned, leaks found: "
          f"{len(leaks['responses']) + len(leaks['log'])} {leaks}")
    assert leaks == {"responses": [], "log": []}
    assert "DEBUG" in log  # debug logging was really on
    return detail, log


def test_healthy_cluster(make_conf, info_api_factory, ceph_cluster):
    conf, secrets = make_conf()
    svc = info_api_factory(conf)
    try:
        detail, log = _check(svc, secrets, "healthy cluster")
    finally:
        svc.stop()
    ceph = {s["id"]: s for s in detail["stores"]}["ceph"]
    assert ceph["properties"]["fsid"] == ceph_cluster.fsid  # it did read the cluster with the key
    # the whole log, after a clean stop, still holds nothing
    assert _scan(svc.log(), secrets) == []


def test_wrong_keyring(make_conf, info_api_factory, ceph_cluster, tmp_path):
    glance = ceph_cluster.client("glance")
    keyring = tmp_path / "ceph.client.glance.wrong.keyring"
    keyring.write_text(f"[client.{ceph_cluster.glance_user}]\n\tkey = {_unknown_key()}\n")
    ceph_conf = tmp_path / "ceph-wrong-key.conf"
    with open(glance["conf"]) as f:
        ceph_conf.write_text(f.read().replace(glance["keyring"], str(keyring)))
    conf, secrets = make_conf(ceph_conf=str(ceph_conf), keyring=str(keyring))
    svc = info_api_factory(conf)
    try:
        detail, log = _check(svc, secrets, "wrong keyring")
    finally:
        svc.stop()
    ceph = {s["id"]: s for s in detail["stores"]}["ceph"]
    assert ceph["properties"]["fsid"] is None
    # the failure was reached and explained, without naming the file
    assert f"authentication as client.{ceph_cluster.glance_user} was rejected" in log
    assert _scan(svc.log(), secrets) == []


def test_missing_ceph_conf(make_conf, info_api_factory, tmp_path):
    missing = str(tmp_path / "etc-ceph" / "ceph.conf")
    conf, secrets = make_conf(ceph_conf=missing, detailed_healthcheck=False)
    svc = info_api_factory(conf)
    try:
        detail, log = _check(svc, secrets, "missing ceph.conf")
    finally:
        svc.stop()
    assert {s["id"]: s for s in detail["stores"]}["ceph"]["properties"]["fsid"] is None
    assert "the file named by rbd_store_ceph_conf cannot be read" in log
