"""Every reason not to clone, and every failed clone, ends in a copy with identical bytes.

On the dev cluster with upstream Glance 33; the pools are checked after each test.
"""

import hashlib
import json
import os
import subprocess
import tempfile

import pytest

from cinder_ext import decision
from cinder_ext import steps
from tests import fault_injection
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB


def _expect_copy_state(env, volume, image_id, before):
    """images: a plain Glance-written image; volumes: the volume without any snapshot."""
    new = env.new_state(before)
    assert new[env.ipool]["trash"] == [] and new[env.vpool]["trash"] == []
    assert set(new[env.ipool]["images"]) <= {image_id}
    for snaps in new[env.ipool]["images"].values():
        assert snaps == [("user", "snap", True)]
    assert env.pool_state()[env.vpool]["images"][volume] == []


def _copied(env, result, volume, sha, image_id, reason):
    print(f"{reason}: {result['detail']}")
    assert result["method"] == "copy", result
    assert result["reason"] == reason, result
    assert result["location"] is None
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha


def test_option_off_copies(cinder_env):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    result = env.upload(env.conf(enable=False), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.OPTION_DISABLED)
    assert result["bytes"] == 32 * MiB
    _expect_copy_state(env, vol, image_id, before)


def test_store_not_rbd_copies(cinder_env):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    # the request names the peer's file store, as a volume type's image_service:store_id
    result = env.upload(env.conf(), vol, image_id, store_id="fast")
    _copied(env, result, vol, sha, image_id, decision.STORE_NOT_RBD)
    new = env.new_state(before)
    assert new[env.ipool]["images"] == {}  # the bytes went to the file store
    assert new[env.vpool] == {"images": {}, "trash": []}


@pytest.mark.parametrize("container_format", ["compressed", "ova"])
def test_container_not_bare_copies(cinder_env, container_format):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(container_format=container_format), env.pool_state()
    result = env.upload(env.conf(), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.CONTAINER_FORMAT)
    _expect_copy_state(env, vol, image_id, before)


def test_qcow2_copies_converted(cinder_env):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(disk_format="qcow2"), env.pool_state()
    result = env.upload(env.conf(), vol, image_id)
    assert result["method"] == "copy" and result["reason"] == decision.DISK_FORMAT
    assert env.get_image(image_id)["status"] == "active"
    # same disk contents once converted back
    with tempfile.TemporaryDirectory() as d:
        q, raw = os.path.join(d, "i.qcow2"), os.path.join(d, "i.raw")
        with open(q, "wb") as f:
            for chunk in env.glance().download(image_id):
                f.write(chunk)
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", q, raw], check=True)
        with open(raw, "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha
    _expect_copy_state(env, vol, image_id, before)


def _luks_header(tmpdir):
    """A real LUKS1 header (Glance's format inspector checks it), made by cryptsetup."""
    path, key = os.path.join(tmpdir, "luks.img"), os.path.join(tmpdir, "key")
    with open(path, "wb") as f:
        f.truncate(4 * MiB)
    with open(key, "w") as f:
        f.write("not-a-secret")
    subprocess.run(["cryptsetup", "luksFormat", "-q", "--type", "luks1", "--key-file", key,
                    "--iter-time", "1", path], check=True, capture_output=True)
    with open(path, "rb") as f:
        return f.read(2 * MiB)


def test_encrypted_volume_copies(cinder_env, tmp_path):
    env = cinder_env
    vol = env.volume(32 * MiB, head=_luks_header(str(tmp_path)))
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    result = env.upload(env.conf(), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.VOLUME_ENCRYPTED)
    _expect_copy_state(env, vol, image_id, before)


def test_stores_detail_forbidden_copies(cinder_env):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    # a member (not admin/service) may not see the stores detail: 403 from Glance's policy
    result = env.upload(env.conf(roles=("member", "reader")), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.STORES_UNAVAILABLE)
    assert "403" in result["detail"]
    _expect_copy_state(env, vol, image_id, before)


def test_stores_detail_malformed_copies(cinder_env, glance_proxy):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()

    def drop_pool(status, body):
        doc = json.loads(body)
        for store in doc["stores"]:
            store.get("properties", {}).pop("pool", None)
        return status, json.dumps(doc).encode()
    glance_proxy.rewrite["/v2/info/stores/detail"] = drop_pool
    result = env.upload(env.conf(glance_url=glance_proxy.url), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.STORES_INVALID)
    assert "pool" in result["detail"]
    _expect_copy_state(env, vol, image_id, before)


def test_stores_detail_with_unknown_fields_still_clones(cinder_env, glance_proxy):
    """A newer Glance adds fields at the top, to every store and to every store's
    properties: the Cinder side reads what it needs and clones (a tolerant reader)."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id = env.volume_sha(vol), env.image()

    def add_fields(status, body):
        doc = json.loads(body)
        doc["pagination"] = {"next": None}
        for store in doc["stores"]:
            store["encryption"] = {"enabled": False}
            store["properties"]["a_new_property"] = [1, "two"]
        return status, json.dumps(doc).encode()
    glance_proxy.rewrite["/v2/info/stores/detail"] = add_fields
    proc = env.cli("--config-file", env.conf(glance_url=glance_proxy.url), "upload", vol, image_id)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["method"] == "clone", result
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha


def test_store_in_other_cluster_copies(cinder_env, glance_proxy):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()

    def other_fsid(status, body):
        doc = json.loads(body)
        for store in doc["stores"]:
            if store["type"] == "rbd":
                store["properties"]["fsid"] = "00000000-0000-4000-8000-000000000000"
        return status, json.dumps(doc).encode()
    glance_proxy.rewrite["/v2/info/stores/detail"] = other_fsid
    result = env.upload(env.conf(glance_url=glance_proxy.url), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.OTHER_CLUSTER)
    _expect_copy_state(env, vol, image_id, before)


def test_cinder_user_without_write_caps_on_glance_pool(cinder_env):
    env = cinder_env
    conf = env.ceph_user("cinder-ro-images",
                         f"profile rbd pool={env.vpool}, profile rbd-read-only pool={env.ipool}")
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    result = env.upload(env.conf(ceph_conf=conf, user="cinder-ro-images"), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.CLONE_FAILED)
    assert f"client.cinder-ro-images may not write pool {env.ipool}" in result["detail"]
    _expect_copy_state(env, vol, image_id, before)


def test_glance_refusing_the_location_rolls_back_and_copies(cinder_env, ceph_cluster):
    env = cinder_env
    vol = env.volume(32 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    glance = ceph_cluster.client("glance")
    user = f"client.{ceph_cluster.glance_user}"
    # the Glance user loses read access to the Cinder pool: it cannot open the clone
    ceph_cluster.admin("ceph", "auth", "caps", user, "mon", glance["caps"]["mon"],
                       "osd", f"profile rbd pool={env.ipool}")
    try:
        result = env.upload(env.conf(), vol, image_id)
    finally:
        args = [a for kv in sorted(glance["caps"].items()) for a in kv]
        ceph_cluster.admin("ceph", "auth", "caps", user, *args)
    _copied(env, result, vol, sha, image_id, decision.CLONE_FAILED)
    assert "refused location" in result["detail"]
    _expect_copy_state(env, vol, image_id, before)


@pytest.mark.parametrize("point", [p for p in steps.UPLOAD_CLONE
                                   if p not in ("clone.recovered", "clone.location_requested",
                                                "clone.active", "clone.volume_snapshot_protected")])
def test_failure_at_each_step_rolls_back_and_copies(cinder_env, monkeypatch, point):
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    monkeypatch.setenv(fault_injection.ENV_POINT, point)
    monkeypatch.setenv(fault_injection.ENV_ACTION, "raise")
    result = env.upload(env.conf(), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.CLONE_FAILED)
    assert point in result["detail"]
    _expect_copy_state(env, vol, image_id, before)


def test_glance_forbidding_the_location_call_rolls_back_and_copies(cinder_env):
    """admin without the service role: Glance 33 answers 403 to an rbd location."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    result = env.upload(env.conf(roles=("admin",)), vol, image_id)
    _copied(env, result, vol, sha, image_id, decision.CLONE_FAILED)
    assert "403" in result["detail"] and "add location" in result["detail"]
    _expect_copy_state(env, vol, image_id, before)
