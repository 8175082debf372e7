"""Who sees what: personas x both endpoints x default and overridden policy, on the real service.

Every cell is an exact status code. noauth mode: identity is the X-Roles header;
"anonymous" sends none and gets `noauth_default_roles` (admin by default, also
run with `reader`). keystone mode: no token is 401 whatever identity headers a
client forges (real tokens: tests/interop/test_keystone.py).
"""

import http.client
import json

import pytest

from glance_store_ext import contract

STORES = "/v2/info/stores"
DETAIL = "/v2/info/stores/detail"
PERSONAS = {"admin": "admin", "service": "service", "member": "member", "reader": "reader",
            "anonymous": None}

POLICIES = {
    "default": None,
    # the rule itself, redefined
    "detail-for-members": '"stores_info_detail": "role:member"\n',
    # Glance's base rules, redefined as an operator's Glance policy.yaml may do
    "own-admin-role": '"context_is_admin": "role:cloud_admin"\n"service_api": "role:service"\n',
    # the detail closed to everyone
    "closed": '"stores_info_detail": "!"\n',
}

# expected (stores, detail) per policy, per persona; anonymous depends on noauth_default_roles
EXPECTED = {
    "default": {"admin": (200, 200), "service": (200, 200), "member": (200, 403),
                "reader": (200, 403)},
    "detail-for-members": {"admin": (200, 403), "service": (200, 403), "member": (200, 200),
                           "reader": (200, 403)},
    "own-admin-role": {"admin": (200, 403), "service": (200, 200), "member": (200, 403),
                       "reader": (200, 403)},
    "closed": {"admin": (200, 403), "service": (200, 403), "member": (200, 403), "reader": (200, 403)},
}
DEFAULT_ROLES = ["admin", "reader"]  # noauth_default_roles values tried


def _get(url, path, headers):
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def services(info_api_factory, tmp_path_factory):
    """{(policy, noauth_default_roles): InfoAPI}, all started once."""
    from tests.info_api import glance_conf_text
    base = tmp_path_factory.mktemp("policy-matrix")
    conf = base / "glance-api.conf"
    conf.write_text(glance_conf_text(str(base)))  # no cluster: the statuses do not depend on Ceph
    started = {}
    for name, text in POLICIES.items():
        for default_roles in DEFAULT_ROLES:
            extra = {"DEFAULT": {"noauth_default_roles": default_roles}}
            if text is not None:
                policy_file = base / f"policy-{name}.yaml"
                policy_file.write_text(text)
                extra["oslo_policy"] = {"policy_file": str(policy_file)}
            started[(name, default_roles)] = info_api_factory(str(conf), extra_conf=extra)
    yield started
    for svc in started.values():
        svc.stop()


def _cells():
    for policy in POLICIES:
        for default_roles in DEFAULT_ROLES:
            for persona in PERSONAS:
                yield policy, default_roles, persona


@pytest.mark.parametrize("policy,default_roles,persona", list(_cells()))
def test_matrix(services, policy, default_roles, persona):
    svc = services[(policy, default_roles)]
    role = PERSONAS[persona]
    # anonymous: no X-Roles at all, so the service's noauth_default_roles apply
    expected = EXPECTED[policy][role or default_roles]
    headers = {"X-Roles": role} if role else {}
    got = []
    for path in (STORES, DETAIL):
        status, _, body = _get(svc.url, path, headers)
        got.append(status)
        doc = json.loads(body)
        if status == 200:
            (contract.validate_stores if path == STORES else contract.validate_stores_detail)(doc)
        else:
            assert doc["message"].startswith(
                "You are not authorized to complete stores_info_detail action."), doc
    assert tuple(got) == expected, (policy, default_roles, persona)


def test_matrix_summary(services):
    """One line per policy, as an operator reads it (also proves every cell ran)."""
    rows = []
    for policy in POLICIES:
        cells = []
        for persona, role in PERSONAS.items():
            svc = services[(policy, "admin")]
            status = _get(svc.url, DETAIL, {"X-Roles": role} if role else {})[0]
            cells.append(f"{persona}={status}")
        rows.append(f"{policy}: " + " ".join(cells))
    print("\npolicy matrix (detail, noauth_default_roles=admin):\n  " + "\n  ".join(rows))
    assert len(rows) == len(POLICIES)


# -- keystone mode: no token ------------------------------------------------------------------

@pytest.fixture(scope="module")
def keystone_service(info_api_factory, tmp_path_factory):
    from tests.info_api import glance_conf_text
    base = tmp_path_factory.mktemp("policy-keystone")
    conf = base / "glance-api.conf"
    conf.write_text(glance_conf_text(str(base)))
    # nothing listens on port 9: a request without a token never needs Keystone
    svc = info_api_factory(str(conf), auth_strategy="keystone", extra_conf={"keystone_authtoken": {
        "auth_type": "password", "auth_url": "http://127.0.0.1:9/identity",
        "www_authenticate_uri": "http://127.0.0.1:9/identity", "username": "glance",
        "password": "unused", "project_name": "service", "user_domain_name": "Default",
        "project_domain_name": "Default"}})
    yield svc
    svc.stop()


FORGED = [
    {},
    {"X-Roles": "admin"},
    # identity headers as auth_token would set them: a client must not be able to forge them
    {"X-Identity-Status": "Confirmed", "X-Roles": "admin,service", "X-Project-Id": "p",
     "X-User-Id": "u", "X-Service-Roles": "service"},
    {"X-Identity-Status": "Confirmed", "X-Service-Identity-Status": "Confirmed", "X-Roles": "admin"},
]


@pytest.mark.parametrize("headers", FORGED)
@pytest.mark.parametrize("path", [STORES, DETAIL])
def test_keystone_mode_without_a_token_is_401(keystone_service, path, headers):
    status, resp_headers, body = _get(keystone_service.url, path, headers)
    assert status == 401, body
    assert "stores" not in json.loads(body)
    assert resp_headers.get("WWW-Authenticate", "").startswith("Keystone uri=")


def test_keystone_mode_versions_and_healthcheck_need_no_token(keystone_service):
    assert _get(keystone_service.url, "/versions", {})[0] == 200
    assert _get(keystone_service.url, "/healthcheck", {})[0] == 200
