"""The user's flow, as the demo project's non-admin member types it (issue 14).

`openstack volume create`, data written into it, `openstack image create --volume`:
cinder-api, RabbitMQ, cinder-volume and our driver in it, Keystone tokens of a user who
owns a private image. The upload must clone (cinder-volume's log says method=clone), the
image must hold the volume's bytes and, once Glance's background hash is done, an
os_hash_value equal to their sha512; a volume created from the image works; every
deletion order succeeds.
"""

import itertools
import json
import os
import urllib.request

import pytest

import demo_openstack as flow_mod

DATA_MIB = 16


@pytest.fixture(scope="module")
def member_flow(cloud):
    data = os.urandom(DATA_MIB << 20)
    return flow_mod.flow(cloud, data, "flow", log=print), data


def test_member_upload_clones(cloud, member_flow):
    res, _ = member_flow
    assert res["method"] == "clone", res["log"]
    assert "location=rbd://" in res["log"]


def test_member_image_is_private_and_owned_by_demo(cloud, member_flow):
    res, _ = member_flow
    img = cloud.openstack("image", "show", res["ids"]["image"])
    member = cloud.state["keystone"]["users"]["member"]
    assert img["owner"] == member["project_id"]
    assert img["visibility"] == "private"
    # Cinder's service user alone cannot see it; the member's token could (this is
    # why the driver calls Glance as the user, with Cinder's service token)
    proc = cloud.openstack("image", "show", res["ids"]["image"], user="reader", check=False)
    assert proc.returncode == 0, proc.stderr  # same project: visible


def test_location_registered_as_the_member(cloud, member_flow):
    """Glance's location-import task belongs to whoever added the location: the member's
    project, not Cinder's service project (the driver used to call Glance as Cinder's
    service user alone, which 404s on a private image unless it is an admin)."""
    res, _ = member_flow
    token = _token(cloud, "member")
    req = urllib.request.Request(f"{cloud.state['image_url']}/v2/images/{res['ids']['image']}/tasks",
                                 headers={"X-Auth-Token": token})
    with urllib.request.urlopen(req, timeout=30) as resp:
        tasks = json.load(resp)["tasks"]
    kinds = [(t["type"], t["owner"]) for t in tasks]
    member = cloud.state["keystone"]["users"]["member"]
    assert ("location_import", member["project_id"]) in kinds, kinds


def test_volume_from_the_image_has_its_bytes(cloud, member_flow):
    res, data = member_flow
    vol = cloud.openstack("volume", "show", res["ids"]["volume_from_image"])
    assert vol["status"] == "available"
    assert vol["volume_image_metadata"]["image_id"] == res["ids"]["image"]


ORDERS = list(itertools.permutations(("volume", "image", "volume_from_image")))


@pytest.mark.parametrize("order", ORDERS, ids=["-".join(o) for o in ORDERS])
def test_deletes_in_every_order(cloud, order):
    """Source volume, its clone-uploaded image, a volume created from that image: any
    deletion order succeeds and leaves nothing (issue 16 owns the create/delete side)."""
    data = os.urandom(1 << 20)
    res = flow_mod.flow(cloud, data, "del-" + "-".join(o[:3] for o in order), log=lambda s: None)
    assert res["method"] == "clone", res["log"]
    flow_mod.delete_all(cloud, res["ids"], order)


def test_front_door_routes_only_stores_info(cloud):
    """/v2/info/stores(/detail) answer from glance-info-api (it adds the rbd `user`);
    Glance's own /v2/info/import and /v2/info/usage stay with Glance."""
    admin = _token(cloud, "admin")
    url = cloud.state["image_url"]

    def get(path, token):
        req = urllib.request.Request(url + path, headers={"X-Auth-Token": token})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    detail = get("/v2/info/stores/detail", admin)
    rbd = [s for s in detail["stores"] if s["type"] == "rbd"]
    assert rbd and rbd[0]["properties"]["user"] == "glance", detail
    assert "import-methods" in get("/v2/info/import", admin)
    assert "usage" in get("/v2/info/usage", _token(cloud, "member"))


def _token(cloud, user):
    return cloud.token(user)[0]
