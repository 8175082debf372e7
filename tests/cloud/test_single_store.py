"""A single-store Glance (issue 34): `tools/cloud start --single-store` runs Glance 33 as
devstack-plugin-ceph writes it (no enabled_backends; [glance_store] stores = file, http, rbd,
default_store = rbd), glance-info-api beside it on the same glance-api.conf, routed as the
install guide says. Upstream answers the stores paths 404; glance-info-api reports the one
store as `rbd`, and the member's `openstack image create --volume` clones into it: the
location registered as for a multi-store Glance (Glance finds its store from the rbd:// URL),
the image's bytes and os_hash_value the volume's.

A cloud of the module's own (about a minute to boot): the full tier.
"""

import configparser
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request

import pytest

import demo_openstack as flow_mod
from tests.cloud.conftest import processes_under, wait_baseline


@pytest.fixture(scope="module")
def single_store_cloud():
    d = tempfile.mkdtemp(prefix="cloud-single-store-")
    os.rmdir(d)  # tools/cloud wants an empty or absent directory
    try:
        cloud = flow_mod.Cloud.start(d, "--single-store")
    except flow_mod.FlowError as e:
        pytest.fail(f"tools/cloud start --single-store: {e}")
    print(f"\ncloud --single-store booted in {cloud.state['boot_seconds']} s in {d}")
    yield cloud
    cloud.stop()  # tools/cloud stop; raises if it fails
    assert not processes_under(d)
    shutil.rmtree(d, ignore_errors=True)


def _get(url, token):
    req = urllib.request.Request(url, headers={"X-Auth-Token": token, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_glance_is_single_store_and_glance_info_api_reports_its_store(single_store_cloud):
    cloud = single_store_cloud
    conf = configparser.ConfigParser(interpolation=None, strict=False)
    conf.read(os.path.join(cloud.dir, "glance", "glance-api.conf"))
    assert not conf.get("DEFAULT", "enabled_backends").strip()
    assert conf.get("glance_store", "default_store") == "rbd"
    token, _ = cloud.token("admin")
    # Glance itself: 404 for the stores, as upstream does single-store
    status, body = _get(cloud.state["glance_url"] + "/v2/info/stores", token)
    assert status == 404, body
    # the image endpoint (the front door): glance-info-api's answer, the one store
    status, detail = _get(cloud.state["image_url"] + "/v2/info/stores/detail", token)
    assert status == 200, detail
    with open(os.path.join(cloud.dir, "ceph", "cluster.json")) as f:
        ceph = json.load(f)
    [store] = detail["stores"]
    assert (store["id"], store["default"], store["type"]) == ("rbd", "true", "rbd")
    props = store["properties"]
    assert (props["pool"], props["user"], props["fsid"]) == (
        ceph["pools"]["images"], ceph["users"]["glance"], ceph["fsid"])


def test_member_upload_clones_into_the_single_store(single_store_cloud):
    cloud = single_store_cloud
    before = cloud.rbd_names()
    # flow() checks the image's bytes and its os_hash_value against the volume's
    res = flow_mod.flow(cloud, os.urandom(16 << 20), "single", log=print)
    assert res["method"] == "clone", res["log"]
    assert "location=rbd://" in res["log"]
    image = cloud.openstack("image", "show", res["ids"]["image"])
    assert "stores" not in image.get("properties", {}) and "stores" not in image  # single-store
    flow_mod.delete_all(cloud, res["ids"], ("volume", "image", "volume_from_image"))
    wait_baseline(cloud, before)
