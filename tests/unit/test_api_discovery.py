"""The stores-info API in process: answers, status codes, error shapes, versions, auth modes."""

import json

import pytest

from glance_store_ext import contract


@pytest.fixture
def api(glance_conf, info_api_app):
    return info_api_app(glance_conf())


def test_stores_lists_every_store_in_config_order_with_upstream_flags(api):
    resp = api.get("/v2/info/stores", roles=["member"])
    assert resp.status_int == 200
    assert resp.content_type == "application/json"
    assert resp.json == {"stores": [
        {"id": "fast", "description": "Local files"},
        {"id": "ceph", "description": "Ceph RBD", "default": "true"},
        {"id": "web", "description": "Read-only HTTP", "read-only": "true"},
    ]}
    contract.validate_stores(resp.json)


def test_body_is_serialized_as_glance_does(api):
    # oslo jsonutils.dump_as_bytes: ", " and ": " separators, insertion order
    resp = api.get("/v2/info/stores", roles=["reader"])
    assert resp.body.startswith(b'{"stores": [{"id": "fast", "description": "Local files"}, ')


@pytest.mark.parametrize("roles", [["admin"], ["service"], ["Admin"], ["member", "service"]])
def test_detail_for_admin_and_service(api, roles):
    resp = api.get("/v2/info/stores/detail", roles=roles)
    assert resp.status_int == 200, resp.body
    doc = contract.validate_stores_detail(resp.json)
    stores = {s["id"]: s for s in doc["stores"]}
    assert [s["id"] for s in doc["stores"]] == ["fast", "ceph", "web"]
    assert stores["ceph"]["type"] == "rbd" and stores["ceph"]["default"] == "true"
    assert stores["ceph"]["properties"]["pool"] == "images"
    assert stores["ceph"]["properties"]["user"] == "glance"
    assert stores["ceph"]["properties"]["chunk_size"] == 8 * 1024 * 1024
    assert stores["fast"]["type"] == "file" and stores["fast"]["properties"]["data_dir"].endswith("/images")
    assert stores["web"] == {"id": "web", "description": "Read-only HTTP", "read-only": "true",
                             "type": "http", "properties": {}, "weight": 0}
    assert all(isinstance(s["weight"], int) for s in doc["stores"])


@pytest.mark.parametrize("roles", [["member"], ["reader"], [], ["servicex"]])
def test_detail_forbidden_for_others_with_glance_message(api, roles):
    resp = api.get("/v2/info/stores/detail", roles=roles, headers={"Accept": "application/json"})
    assert resp.status_int == 403
    assert resp.json == {
        "message": "You are not authorized to complete stores_info_detail action.<br /><br />\n\n\n",
        "code": "403 Forbidden", "title": "Forbidden"}
    # and the plain list stays readable for them
    assert api.get("/v2/info/stores", roles=roles).status_int == 200


def test_reserved_stores_never_listed(api):
    for path in ("/v2/info/stores", "/v2/info/stores/detail"):
        body = api.get(path, roles=["admin"]).body
        assert b"os_glance" not in body


def test_weight_and_description_from_store_groups(glance_conf, info_api_app):
    api = info_api_app(glance_conf(fast={"weight": 50}, ceph={"weight": 100, "store_description": None}))
    stores = {s["id"]: s for s in api.get("/v2/info/stores/detail", roles=["admin"]).json["stores"]}
    assert stores["fast"]["weight"] == 50 and stores["ceph"]["weight"] == 100
    assert "description" not in stores["ceph"]


def test_no_multi_store_reports_the_single_store_where_upstream_answers_404(glance_conf,
                                                                          info_api_app):
    # Upstream Glance answers 404 "Multi backend is not supported at this site." without
    # enabled_backends. glance-info-api is the component that exists to report stores, so for
    # a single-store Glance it reports the one store Glance writes to ([glance_store]
    # default_store, here glance_store's default: file), as Glance would if it were
    # multi-store with that store, behind the same policy (tests/unit/test_api_single_store.py)
    api = info_api_app(glance_conf(DEFAULT={"enabled_backends": None}))
    assert api.get("/v2/info/stores", roles=["member"]).json == {
        "stores": [{"id": "file", "default": "true"}]}
    detail = api.get("/v2/info/stores/detail", roles=["admin"])
    assert detail.status_int == 200
    assert [(s["id"], s["type"]) for s in detail.json["stores"]] == [("file", "file")]
    resp = api.get("/v2/info/stores/detail", roles=["member"], headers={"Accept": "application/json"})
    assert resp.status_int == 403


def test_swift_store_with_exclusive_options_is_left_out_as_upstream(glance_conf, info_api_app):
    conf = glance_conf(DEFAULT={"enabled_backends": "fast:file, ceph:rbd, web:http, obj:swift"},
                       obj={"swift_store_multi_tenant": True,
                            "swift_store_config_file": "/etc/glance/swift.conf"})
    api = info_api_app(conf)
    ids = [s["id"] for s in api.get("/v2/info/stores", roles=["admin"]).json["stores"]]
    assert ids == ["fast", "ceph", "web"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
@pytest.mark.parametrize("path", ["/v2/info/stores", "/v2/info/stores/detail"])
def test_other_methods_are_405_allow_get(api, method, path):
    resp = api.request(method, path, roles=["admin"], headers={"Accept": "application/json"})
    assert resp.status_int == 405
    assert resp.headers["Allow"] == "GET"
    if method != "HEAD":
        assert resp.json["code"] == "405 Method Not Allowed"


@pytest.mark.parametrize("path", ["/v2/info", "/v2/info/stores/x", "/v2/info/import", "/v2/images",
                                  "/v2/info/usage", "/v2/", "/v2.15/nope"])
def test_unknown_paths_under_v2_are_404(api, path):
    resp = api.get(path, roles=["admin"])
    assert resp.status_int == 404
    assert resp.content_type == "application/json"
    assert resp.json == {"message": "The resource could not be found.<br /><br />\n\n\n",
                         "code": "404 Not Found", "title": "Not Found"}


def test_unknown_method_is_501(api):
    assert api.request("PROPFIND", "/v2/info/nope").status_int == 501


def test_body_on_get_is_400(api):
    resp = api.request("GET", "/v2/info/stores", body=b"{}", headers={"Content-Type": "application/json"})
    assert resp.status_int == 400
    assert resp.json["message"].startswith("A body is not expected with this request.")


@pytest.mark.parametrize("accept, ctype", [
    (None, "application/json"), ("*/*", "text/html"), ("application/json", "application/json"),
    ("text/html", "text/html"), ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html"),
    ("text/plain", "text/plain"), ("application/xml", "application/json"),
])
def test_errors_negotiate_as_glance_and_are_json_without_accept(api, accept, ctype):
    resp = api.get("/v2/info/nope", headers={"Accept": accept} if accept else {})
    assert resp.status_int == 404 and resp.content_type == ctype
    if ctype == "application/json":
        json.loads(resp.body)


def test_version_paths_and_media_type_reach_the_api(api):
    for path, headers in (("/v2.8/info/stores", {}), ("/v2.17/info/stores", {}),
                          ("/info/stores", {"Accept": "application/vnd.openstack.images-v2"})):
        assert api.get(path, roles=["admin"], headers=headers).status_int == 200, path


def test_versions_document_is_glance_33s(api):
    listing = api.get("/versions")
    choices = api.get("/")
    assert listing.status_int == 200 and choices.status_int == 300
    assert listing.body == choices.body
    versions = listing.json["versions"]
    assert [(v["id"], v["status"]) for v in versions] == [
        ("v2.15", "SUPPORTED"), ("v2.13", "SUPPORTED"), ("v2.12", "SUPPORTED"),
        ("v2.11", "SUPPORTED"), ("v2.10", "SUPPORTED"), ("v2.9", "SUPPORTED"),
        ("v2.8", "SUPPORTED"), ("v2.17", "CURRENT"), ("v2.7", "SUPPORTED"), ("v2.6", "SUPPORTED"),
        ("v2.5", "SUPPORTED"), ("v2.4", "SUPPORTED"), ("v2.3", "SUPPORTED"), ("v2.2", "SUPPORTED"),
        ("v2.1", "SUPPORTED"), ("v2.0", "SUPPORTED")]
    assert {json.dumps(v["links"]) for v in versions} == {
        '[{"rel": "self", "href": "http://localhost/v2/"}]'}


@pytest.mark.parametrize("path", ["/v3/info/stores", "/foo", "/v2.99"])
def test_unknown_versions_answer_the_choices(api, path):
    assert api.get(path).status_int == 300


def test_versions_follow_cache_dir_and_public_endpoint(glance_conf, info_api_app, tmp_path):
    api = info_api_app(glance_conf(DEFAULT={"image_cache_dir": str(tmp_path / "cache"),
                                            "public_endpoint": "https://images.example.com/image"}))
    versions = api.get("/versions").json["versions"]
    assert [v["id"] for v in versions[:5]] == ["v2.18", "v2.17", "v2.16", "v2.15", "v2.14"]
    assert versions[0]["status"] == "CURRENT"
    assert versions[0]["links"][0]["href"] == "https://images.example.com/image/v2/"
    assert api.get("/v2.18/info/stores").status_int == 200


def test_forwarded_proto_when_proxy_headers_parsing_is_on(glance_conf, info_api_app):
    api = info_api_app(glance_conf(oslo_middleware={"enable_proxy_headers_parsing": True}))
    href = api.get("/versions", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "lb:443"}
                   ).json["versions"][0]["links"][0]["href"]
    assert href == "https://lb/v2/"  # webob drops the default port


def test_every_answer_carries_a_request_id(api):
    for path in ("/v2/info/stores", "/v2/info/nope", "/versions", "/healthcheck"):
        assert api.get(path).headers["x-openstack-request-id"].startswith("req-")


def test_healthcheck_needs_no_identity(glance_conf, info_api_app):
    api = info_api_app(glance_conf(DEFAULT={"auth_strategy": "keystone"},
                                   keystone_authtoken={"auth_type": "password",
                                                       "auth_url": "http://127.0.0.1:9/identity"}))
    assert api.get("/healthcheck").status_int == 200


class TestNoauth:
    def test_without_x_roles_the_default_roles_apply(self, api):
        assert api.get("/v2/info/stores/detail").status_int == 200

    def test_sent_roles_win(self, api):
        assert api.get("/v2/info/stores/detail", roles=["reader"]).status_int == 403

    def test_default_roles_are_configurable(self, glance_conf, info_api_app):
        api = info_api_app(glance_conf(DEFAULT={"noauth_default_roles": "reader"}))
        assert api.get("/v2/info/stores/detail").status_int == 403
        assert api.get("/v2/info/stores").status_int == 200


class TestKeystone:
    @pytest.fixture
    def api(self, glance_conf, info_api_app):
        # a Keystone that is not there: only requests without a token are answered
        return info_api_app(glance_conf(
            DEFAULT={"auth_strategy": "keystone"},
            keystone_authtoken={"auth_type": "password", "auth_url": "http://127.0.0.1:9/identity",
                                "www_authenticate_uri": "http://127.0.0.1:9/identity",
                                "username": "glance", "password": "x", "project_name": "service"}))

    @pytest.mark.parametrize("path", ["/v2/info/stores", "/v2/info/stores/detail"])
    def test_no_token_is_401_with_www_authenticate(self, api, path):
        resp = api.get(path, headers={"Accept": "application/json"})
        assert resp.status_int == 401
        assert resp.headers["WWW-Authenticate"] == 'Keystone uri="http://127.0.0.1:9/identity"'
        assert resp.json["code"] == "401 Unauthorized"

    def test_identity_headers_from_the_client_are_not_trusted(self, api):
        spoofed = {"X-Identity-Status": "Confirmed", "X-Roles": "admin", "X-Project-Id": "p",
                   "X-User-Id": "u"}
        assert api.get("/v2/info/stores/detail", headers=spoofed).status_int == 401

    def test_versions_need_no_token(self, api):
        assert api.get("/").status_int == 300
        assert api.get("/versions").status_int == 200


def test_one_store_details_instance_serves_every_request(api, monkeypatch):
    details = api.app.store_details
    calls = []
    monkeypatch.setattr(details, "properties", lambda sid: calls.append(sid) or {})
    api.get("/v2/info/stores/detail", roles=["admin"])
    api.get("/v2/info/stores/detail", roles=["admin"])
    assert calls == ["fast", "ceph", "web"] * 2
    assert api.app.store_details is details
