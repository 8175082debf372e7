"""glance-info-api started with its console script on the dev Ceph cluster.

Config as an operator writes it: rbd (the default, not listed first), file, http.
"""

import concurrent.futures
import http.client
import json
import urllib.parse

import pytest

from glance_store_ext import contract
from tests.info_api import glance_conf_text

ROLES_ALLOWED = [("admin",), ("service",), ("member", "service")]
ROLES_DENIED = [("member",), ("reader",)]


@pytest.fixture(scope="module")
def service(ceph_cluster, info_api_factory, tmp_path_factory):
    base = tmp_path_factory.mktemp("glance-api-conf")
    conf = base / "glance-api.conf"
    conf.write_text(glance_conf_text(str(base), cluster=ceph_cluster))
    svc = info_api_factory(str(conf))
    yield svc
    svc.stop()


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)

    def request(self, method, path, roles=None, headers=None, body=None):
        h = dict(headers or {})
        if roles is not None:
            h["X-Roles"] = ",".join(roles)
        self.conn.request(method, path, body=body, headers=h)
        resp = self.conn.getresponse()
        data = resp.read()
        return resp, data

    def close(self):
        self.conn.close()


@pytest.fixture
def client(service):
    c = Client(service.url)
    yield c
    c.close()


@pytest.mark.parametrize("roles", ROLES_ALLOWED)
def test_detail_has_the_live_fsid_pool_and_user(client, ceph_cluster, roles):
    resp, data = client.request("GET", "/v2/info/stores/detail", roles=roles)
    assert resp.status == 200, data
    doc = contract.validate_stores_detail(json.loads(data))
    assert [s["id"] for s in doc["stores"]] == ["fast", "ceph", "web"]
    ceph = doc["stores"][1]
    assert ceph["default"] == "true" and ceph["type"] == "rbd"
    assert ceph["properties"] == {"chunk_size": 8 * 2 ** 20, "pool": ceph_cluster.glance_pool,
                                  "thin_provisioning": False, "fsid": ceph_cluster.fsid,
                                  "user": ceph_cluster.glance_user}
    assert doc["stores"][2]["read-only"] == "true" and doc["stores"][2]["type"] == "http"


@pytest.mark.parametrize("roles", ROLES_DENIED)
def test_member_and_reader_may_list_but_not_see_detail(client, roles):
    resp, data = client.request("GET", "/v2/info/stores/detail", roles=roles)
    assert resp.status == 403
    assert json.loads(data)["message"].startswith(
        "You are not authorized to complete stores_info_detail action.")
    resp, data = client.request("GET", "/v2/info/stores", roles=roles)
    assert resp.status == 200
    contract.validate_stores(json.loads(data))


@pytest.mark.parametrize("path", ["/v2/info", "/v2/info/stores/ceph", "/v2/images", "/v2/info/import"])
def test_unknown_paths_are_404(client, path):
    resp, data = client.request("GET", path, roles=("admin",))
    assert resp.status == 404 and resp.getheader("Content-Type") == "application/json"
    assert json.loads(data)["title"] == "Not Found"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD"])
@pytest.mark.parametrize("path", ["/v2/info/stores", "/v2/info/stores/detail"])
def test_wrong_methods_are_405(client, method, path):
    resp, data = client.request(method, path, roles=("admin",), body=b"" if method != "HEAD" else None)
    assert resp.status == 405 and resp.getheader("Allow") == "GET"
    if method == "HEAD":
        assert data == b""  # no body on HEAD, and the connection stays usable
    assert client.request("GET", "/v2/info/stores", roles=("admin",))[0].status == 200


def test_reserved_stores_never_appear(client):
    for roles in ROLES_ALLOWED + ROLES_DENIED:
        for path in ("/v2/info/stores", "/v2/info/stores/detail"):
            assert b"os_glance" not in client.request("GET", path, roles=roles)[1]


def test_every_answer_validates_against_the_contract(client):
    for roles in ROLES_ALLOWED + ROLES_DENIED:
        resp, data = client.request("GET", "/v2/info/stores", roles=roles)
        contract.validate_stores(json.loads(data))
        resp, data = client.request("GET", "/v2/info/stores/detail", roles=roles)
        if resp.status == 200:
            contract.validate_stores_detail(json.loads(data))


def test_versions_and_healthcheck(client, service):
    resp, data = client.request("GET", "/")
    assert resp.status == 300
    assert json.loads(data)["versions"][0]["links"][0]["href"] == service.url + "/v2/"
    assert client.request("GET", "/versions")[0].status == 200
    assert client.request("GET", "/healthcheck")[0].status == 200


def test_keep_alive_and_32_concurrent_clients(service, ceph_cluster):
    def worker(_):
        c = Client(service.url)
        try:
            fsids = set()
            for _ in range(20):
                resp, data = c.request("GET", "/v2/info/stores/detail", roles=("service",))
                assert resp.status == 200 and not resp.will_close  # HTTP/1.1 keep-alive
                fsids.add(json.loads(data)["stores"][1]["properties"]["fsid"])
            return fsids
        finally:
            c.close()

    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(worker, range(32)))
    assert set().union(*results) == {ceph_cluster.fsid}


def test_log_lines_carry_request_ids(client, service):
    resp, _ = client.request("GET", "/v2/info/stores/detail", roles=("reader",))
    request_id = resp.getheader("x-openstack-request-id")
    assert request_id.startswith("req-")
    lines = [line for line in service.log().splitlines() if request_id in line]
    assert any('"GET /v2/info/stores/detail" status: 403' in line for line in lines), lines
