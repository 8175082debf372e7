"""tools/cloud's catalog: the image endpoint (the front door) and volumev3 (cinder-api).

Run in the Keystone venv by tools/cloud, as the bootstrap admin read from
$KEYSTONE_PEER_STATE (tools/peers/keystone_provision.py does the REST calls):

    cloud_provision.py IMAGE_URL VOLUME_URL
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers"))
import keystone_provision as kp  # noqa: E402


def endpoint(ks, kind, name, url):
    service = ks.find("services", None, type=kind)
    if not service:
        service = ks.call("POST", "/services", json={"service": {
            "type": kind, "name": name, "enabled": True}})["service"]
    for interface in ("public", "internal", "admin"):
        ks.call("POST", "/endpoints", json={"endpoint": {
            "service_id": service["id"], "interface": interface, "url": url,
            "region_id": ks.region, "enabled": True}})


def main():
    import json
    with open(os.environ["KEYSTONE_PEER_STATE"]) as f:
        state = json.load(f)
    ks = kp.Keystone(state)
    kp.image_endpoint(ks, sys.argv[1])
    # Cinder's [glance] user needs Glance to show it every project's images: upstream
    # Cinder 29 reads an image's locations (create a volume from an image) with its
    # [glance] credentials alone (get_image_locations, privileged_user), and a member's
    # private image is a 404 to anyone but its project and an admin. Devstack gives
    # Cinder's user admin for that reason; so does this cloud.
    roles = {r["name"]: r["id"] for r in ks.call("GET", "/roles")["roles"]}
    project = ks.find("projects", "service", domain_id="default")
    cinder = ks.find("users", "cinder", domain_id="default")
    ks.call("PUT", f"/projects/{project['id']}/users/{cinder['id']}/roles/{roles['admin']}")
    # Cinder's v3 API under both service types clients look for (devstack registers these)
    endpoint(ks, "volumev3", "cinderv3", sys.argv[2])
    endpoint(ks, "block-storage", "cinder", sys.argv[2])
    # a second project's member (`alt`): the soak's other user (tools/soak.py)
    import secrets
    alt = ks.ensure("projects", "alt", {"domain_id": "default", "enabled": True,
                                        "description": "tools/cloud: a second project"}, domain_id="default")
    password = secrets.token_urlsafe(16)
    user = ks.find("users", "alt", domain_id="default")
    if user:
        ks.call("PATCH", f"/users/{user['id']}", json={"user": {"password": password}})
    else:
        user = ks.call("POST", "/users", json={"user": {"name": "alt", "domain_id": "default", "password": password,
                                                        "enabled": True, "default_project_id": alt["id"]}})["user"]
    ks.call("PUT", f"/projects/{alt['id']}/users/{user['id']}/roles/{roles['member']}")
    print(json.dumps({"alt": {"password": password, "project": "alt", "domain": "Default", "roles": ["member"],
                              "id": user["id"], "project_id": alt["id"]}}))


if __name__ == "__main__":
    main()
