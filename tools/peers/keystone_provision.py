"""Projects, users, roles and the image endpoints of the Keystone peer, over Keystone's REST API.

Run by tools/peers/keystone-peer in the Keystone venv (keystoneauth1), as the
bootstrap admin read from $KEYSTONE_PEER_STATE:

    keystone_provision.py users                  -> JSON {user: {password, project, domain, roles}}
    keystone_provision.py image-endpoint URL     -> service `glance` (type image), 3 interfaces

Idempotent: what exists is reused (a user's password is reset to the new one).
Errors: one line on stderr starting with "provision: ", exit 1.
"""

import json
import os
import secrets
import sys

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

# project -> user -> roles (see keystone-peer's docstring for why each)
USERS = {
    "demo": {"member": ["member"], "reader": ["reader"]},
    "service": {"cinder": ["service", "member"], "glance": ["service"]},
}


class Keystone:
    def __init__(self, state):
        admin = state["users"]["admin"]
        auth = v3.Password(auth_url=state["url"] + "/v3", username="admin", password=admin["password"],
                           project_name="admin", user_domain_id="default", project_domain_id="default")
        self.s = ks_session.Session(auth=auth)
        self.base = state["url"] + "/v3"
        self.region = state["region"]

    def call(self, method, path, **kw):
        resp = self.s.request(self.base + path, method, raise_exc=False, **kw)
        if resp.status_code >= 400:
            raise SystemExit(f"provision: {method} {path}: Keystone answered {resp.status_code}: {resp.text[:200]}")
        return resp.json() if resp.content else {}

    def find(self, kind, name, **filters):
        params = dict(filters, name=name) if name else filters
        items = self.call("GET", f"/{kind}", params=params)[kind]
        return items[0] if items else None

    def ensure(self, kind, name, body, **filters):
        found = self.find(kind, name, **filters)
        if found:
            return found
        return self.call("POST", f"/{kind}", json={kind[:-1]: dict(body, name=name)})[kind[:-1]]


def users(ks):
    roles = {r["name"]: r["id"] for r in ks.call("GET", "/roles")["roles"]}
    out = {}
    for project_name, members in USERS.items():
        project = ks.ensure("projects", project_name, {"domain_id": "default", "enabled": True,
                                                        "description": "keystone-peer"},
                            domain_id="default")
        for user_name, user_roles in members.items():
            password = secrets.token_urlsafe(16)
            user = ks.find("users", user_name, domain_id="default")
            if user:
                ks.call("PATCH", f"/users/{user['id']}", json={"user": {"password": password}})
            else:
                user = ks.call("POST", "/users", json={"user": {
                    "name": user_name, "domain_id": "default", "password": password, "enabled": True,
                    "default_project_id": project["id"]}})["user"]
            for role in user_roles:
                if role not in roles:
                    raise SystemExit(f"provision: role {role} does not exist (keystone-manage bootstrap makes it)")
                ks.call("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{roles[role]}")
            out[user_name] = {"password": password, "project": project_name, "domain": "Default",
                              "roles": user_roles, "id": user["id"], "project_id": project["id"]}
    return out


def image_endpoint(ks, url):
    service = ks.find("services", None, type="image")
    if not service:
        service = ks.call("POST", "/services", json={"service": {
            "type": "image", "name": "glance", "description": "Image service", "enabled": True}})["service"]
    endpoints = ks.call("GET", "/endpoints", params={"service_id": service["id"]})["endpoints"]
    existing = {e["interface"]: e for e in endpoints}
    for interface in ("public", "internal", "admin"):
        if interface in existing:
            ks.call("PATCH", f"/endpoints/{existing[interface]['id']}", json={"endpoint": {"url": url}})
        else:
            ks.call("POST", "/endpoints", json={"endpoint": {
                "service_id": service["id"], "interface": interface, "url": url,
                "region_id": ks.region, "enabled": True}})
    return {"service_id": service["id"], "url": url}


def main():
    with open(os.environ["KEYSTONE_PEER_STATE"]) as f:
        state = json.load(f)
    try:
        ks = Keystone(state)
        if sys.argv[1:] == ["users"]:
            out = users(ks)
        elif len(sys.argv) == 3 and sys.argv[1] == "image-endpoint":
            out = image_endpoint(ks, sys.argv[2])
        else:
            raise SystemExit("provision: usage: keystone_provision.py users | image-endpoint URL")
    except ks_exc.ClientException as e:
        raise SystemExit(f"provision: {type(e).__name__}: {e}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
