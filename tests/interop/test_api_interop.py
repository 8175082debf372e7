"""Interop: real clients read our answers; upstream Glance 33 on the same config answers the same.

`peer_info_api` is our console script on the Glance peer's own glance-api.conf
(noauth); `glance_peer` is upstream Glance 33 serving that same file.
"""

import json
import textwrap
import urllib.error
import urllib.request

import pytest

from glance_store_ext import contract
from tools.front_door import FrontDoor
from tools.peers import releases


def fetch(url, method="GET", headers=None, body=None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=body)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def identity(*roles):
    # what keystonemiddleware passes on for a project-scoped token
    return {"X-Identity-Status": "Confirmed", "X-Roles": ",".join(roles), "X-Project-Id": "p1",
            "X-Tenant-Id": "p1", "X-User-Id": "u1"}


def without_user(doc):
    for store in doc["stores"]:
        store.get("properties", {}).pop("user", None)
    return doc


# every maintained Glance (30 to 33) reports pool and fsid itself: ours adds `user` only
@pytest.mark.parametrize("series", sorted(releases.SERIES))
def test_upstream_detail_on_the_same_config_equals_ours_but_user(peer_info_api, glance_peer,
                                                                 upstream_stores_detail, ceph_cluster, series):
    status, _, body = fetch(peer_info_api.url + "/v2/info/stores/detail", headers=identity("admin"))
    assert status == 200
    ours = contract.validate_stores_detail(json.loads(body))
    theirs = contract.validate_stores_detail(upstream_stores_detail(glance_peer.config_file, series))
    assert ours["stores"][1]["properties"]["user"] == ceph_cluster.glance_user
    assert ours["stores"][1]["properties"]["fsid"] == ceph_cluster.fsid
    assert without_user(ours) == theirs


# (method, path, roles, extra headers, body): requests whose answers must match upstream's
SAME_AS_UPSTREAM = [
    ("GET", "/", None, {}, None),
    ("GET", "/versions", None, {}, None),
    ("GET", "/v3/info/stores", None, {}, None),
    ("GET", "/v2/info/stores", ("member",), {}, None),
    ("GET", "/v2/info/stores", ("reader",), {}, None),
    ("GET", "/v2.8/info/stores", ("reader",), {}, None),
    ("GET", "/info/stores", ("reader",), {"Accept": "application/vnd.openstack.images-v2"}, None),
    ("GET", "/v2/info/stores/detail", ("admin",), {}, None),
    ("GET", "/v2/info/stores/detail", ("service",), {}, None),
    ("GET", "/v2/info/stores/detail", ("member",), {"Accept": "application/json"}, None),
    ("GET", "/v2/info/stores/detail", ("reader",), {"Accept": "text/html"}, None),
    # what curl, glanceclient and keystoneauth sessions send: HTML, as from Glance
    ("GET", "/v2/info/stores/detail", ("member",), {"Accept": "*/*"}, None),
    ("GET", "/v2/info/nope", ("admin",), {"Accept": "*/*"}, None),
    ("POST", "/v2/info/stores", ("admin",), {"Accept": "application/json"}, b"{}"),
    ("PUT", "/v2/info/stores/detail", ("admin",), {"Accept": "application/json"}, b"{}"),
    ("DELETE", "/v2/info/stores", ("admin",), {"Accept": "application/json"}, None),
    ("GET", "/v2/info/stores", ("admin",), {"Accept": "application/json",
                                           "Content-Type": "application/json"}, b"{}"),
    ("GET", "/v2/info/stores/nope", ("admin",), {"Accept": "application/json"}, None),
    ("GET", "/v2/info/nope", ("admin",), {"Accept": "application/json"}, None),
    ("GET", "/v2", ("admin",), {"Accept": "application/json"}, None),
    ("GET", "/v2/", ("admin",), {"Accept": "application/json"}, None),
    ("HEAD", "/v2/info/stores", ("admin",), {}, None),
    ("PROPFIND", "/v2/info/stores", ("admin",), {"Accept": "application/json"}, None),
]


@pytest.mark.parametrize("method, path, roles, headers, body", SAME_AS_UPSTREAM,
                         ids=[f"{m} {p} {r} {h.get('Accept', '')}" for m, p, r, h, _ in SAME_AS_UPSTREAM])
def test_answers_match_upstream_glance(peer_info_api, glance_peer, method, path, roles, headers, body):
    h = dict(headers, **(identity(*roles) if roles else {}))
    ours = fetch(peer_info_api.url + path, method, h, body)
    theirs = fetch(glance_peer.url + path, method, h, body)
    assert ours[0] == theirs[0]
    for header in ("Content-Type", "Allow"):
        assert ours[1].get(header) == theirs[1].get(header), header
    ours_body = ours[2].replace(peer_info_api.url.encode(), b"URL")
    theirs_body = theirs[2].replace(glance_peer.url.encode(), b"URL")
    if path.endswith("/detail") and ours[0] == 200:
        assert without_user(json.loads(ours_body)) == json.loads(theirs_body)
    else:
        assert ours_body == theirs_body


def test_error_without_accept_is_json_here_plain_text_upstream(peer_info_api, glance_peer):
    # the one deliberate difference: webob picks text for a client that states no preference
    ours = fetch(peer_info_api.url + "/v2/info/nope", headers=identity("admin"))
    theirs = fetch(glance_peer.url + "/v2/info/nope", headers=identity("admin"))
    assert ours[0] == theirs[0] == 404
    assert theirs[1]["Content-Type"].startswith("text/plain")
    assert ours[1]["Content-Type"] == "application/json"
    assert json.loads(ours[2])["code"] == "404 Not Found"


# glanceclient on a fresh machine (an empty HOME, no ~/.glanceclient schema cache), the
# two ways an operator points it at this service: Glance's one image endpoint with our
# paths routed beside it, or our service itself with the API version given, so that
# glanceclient does not probe Glance's /v2/schemas (which we do not serve) and fall
# back to API v1.
@pytest.fixture(scope="module")
def front_door(glance_peer, peer_info_api):
    door = FrontDoor.for_glance(glance_peer.url, peer_info_api.url)
    yield door
    door.stop()


def _cli_ways(front_door, peer_info_api):
    return {"front door": ((), front_door.url),
            "direct": (("--os-image-api-version", "2"), peer_info_api.url)}


@pytest.mark.parametrize("way", ["front door", "direct"])
def test_glance_cli_stores_info(front_door, peer_info_api, peer_clients, way):
    opts, url = _cli_ways(front_door, peer_info_api)[way]
    proc = peer_clients.run_glance(*opts, "stores-info", url=url)
    assert proc.returncode == 0, proc.stderr
    assert "falling back to v1" not in proc.stderr
    for word in ("fast", "ceph", "web", "Ceph RBD"):
        assert word in proc.stdout


@pytest.mark.parametrize("way", ["front door", "direct"])
def test_glance_cli_stores_info_detail(front_door, peer_info_api, peer_clients, ceph_cluster, way):
    opts, url = _cli_ways(front_door, peer_info_api)[way]
    proc = peer_clients.run_glance(*opts, "stores-info", "--detail", url=url)
    assert proc.returncode == 0, proc.stderr
    for word in (ceph_cluster.fsid, ceph_cluster.glance_pool, ceph_cluster.glance_user, "rbd", "http"):
        assert word in proc.stdout, word


def test_front_door_sends_only_the_stores_paths_to_us(front_door, glance_peer):
    """/v2/info/import and /v2/info/usage (import discovery, quotas) stay Glance's."""
    def via_door(path):
        return fetch(front_door.url + path, headers=identity("admin"))
    # only our service reports the rbd store's Ceph user
    status, _, body = via_door("/v2/info/stores/detail")
    assert status == 200
    assert any("user" in s.get("properties", {}) for s in json.loads(body)["stores"])
    status, _, body = via_door("/v2/info/stores?x=1")
    assert status == 200 and json.loads(body)["stores"]
    for path in ("/v2/info/import", "/v2/info/usage"):
        ours = fetch(peer_info_api_url(front_door) + path, headers=identity("admin"))
        theirs = via_door(path)
        direct = fetch(glance_peer.url + path, headers=identity("admin"))
        assert ours[0] == 404, (path, ours[0])  # we do not serve it...
        assert theirs[0] == direct[0] == 200, (path, theirs[0], direct[0])  # ...Glance does
        assert json.loads(theirs[2]).keys() == json.loads(direct[2]).keys()


def peer_info_api_url(front_door):
    return dict(front_door.routes)["/v2/info/stores"]


SDK_PROBE = textwrap.dedent("""
    import json, sys
    import openstack
    url = sys.argv[1]
    conn = openstack.connect(auth_type="none", auth={"endpoint": url}, image_endpoint_override=url)
    stores = [s.to_dict(computed=False) for s in conn.image.stores(details=True)]
    print(json.dumps([{k: s[k] for k in ("id", "is_default", "properties", "weight", "type")
                       if k in s} for s in stores]))
""")


def test_openstacksdk_reads_the_detail(peer_info_api, peer_clients, ceph_cluster):
    proc = peer_clients.run_python(SDK_PROBE, peer_info_api.url)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stores = {s["id"]: s for s in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert list(stores) == ["fast", "ceph", "web"]
    assert stores["ceph"]["is_default"] is True
    assert stores["ceph"]["properties"]["fsid"] == ceph_cluster.fsid
    assert stores["ceph"]["properties"]["user"] == ceph_cluster.glance_user
