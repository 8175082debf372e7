"""Our store properties, field by field, against upstream Glance 33 run on the same glance-api.conf.

Upstream runs in its own venv (tools/peers/upstream-stores-detail: glance-api's
store set-up, then InfoController.get_stores_detail), against the session Ceph
cluster. Upstream's `_get_<type>_properties` produce the `properties` compared
here; ours add `user` for rbd. swift and s3 are not compared here: the glance33
peer venv has neither python-swiftclient nor boto3, without which upstream's
drivers refuse to configure (see tests/unit/test_store_providers.py for them).
"""

import pytest
from oslo_config import cfg

from glance_store_ext import config, registry
from glance_store_ext.contract import validate_stores_detail

FRAGMENTS = {
    "defaults": """
        [fast]
        filesystem_store_datadir = {tmp}/images
        [ceph]
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        """,
    "set values": """
        [fast]
        filesystem_store_datadir = {tmp}/fast
        filesystem_store_chunk_size = 1048576
        filesystem_thin_provisioning = true
        [ceph]
        rbd_store_pool = {pool}
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        rbd_store_chunk_size = 16
        rbd_thin_provisioning = true
        rados_connect_timeout = 10
        """,
    "backend_defaults fallback": """
        [backend_defaults]
        rbd_store_chunk_size = 4
        rbd_thin_provisioning = true
        filesystem_store_chunk_size = 4096
        [fast]
        filesystem_store_datadir = {tmp}/fast
        [ceph]
        rbd_store_pool = {pool}
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        rbd_thin_provisioning = false
        [other]
        rbd_store_pool = {other_pool}
        rbd_store_user = {user}
        rbd_store_ceph_conf = {ceph_conf}
        """,
}
BACKENDS = {
    "defaults": "fast:file, ceph:rbd, web:http",
    "set values": "fast:file, ceph:rbd, web:http",
    "backend_defaults fallback": "fast:file, ceph:rbd, other:rbd",
}


def write_conf(tmp_path, cluster, name):
    client = cluster.client("glance")
    body = FRAGMENTS[name].format(tmp=tmp_path, user=cluster.glance_user, ceph_conf=client["conf"],
                                  pool=cluster.glance_pool, other_pool=cluster.cinder_pool)
    body = "\n".join(line.strip() for line in body.splitlines())
    path = tmp_path / "glance-api.conf"
    path.write_text(f"[DEFAULT]\nenabled_backends = {BACKENDS[name]}\n"
                    f"[glance_store]\ndefault_backend = ceph\n"
                    f"[os_glance_staging_store]\nfilesystem_store_datadir = {tmp_path}/staging\n"
                    f"[os_glance_tasks_store]\nfilesystem_store_datadir = {tmp_path}/tasks\n{body}\n")
    return str(path)


def ours(config_file, store_ids):
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], project="glance", default_config_files=[config_file])
    config.register_store_opts(conf)
    details = registry.StoreDetails(conf)
    try:
        return {sid: details.properties(sid) for sid in store_ids}
    finally:
        details.close()


@pytest.mark.parametrize("name", sorted(FRAGMENTS))
def test_properties_equal_upstream_glance_33(tmp_path, ceph_cluster, upstream_stores_detail, name):
    config_file = write_conf(tmp_path, ceph_cluster, name)
    upstream = validate_stores_detail(upstream_stores_detail(config_file))  # also: upstream meets our contract
    theirs = {s["id"]: s["properties"] for s in upstream["stores"]}
    types = {s["id"]: s["type"] for s in upstream["stores"]}
    mine = ours(config_file, list(theirs))
    assert set(theirs) == {b.split(":")[0].strip() for b in BACKENDS[name].split(",")}
    for store_id, props in theirs.items():
        got = dict(mine[store_id])
        if types[store_id] == "rbd":
            assert got.pop("user") == ceph_cluster.glance_user
            assert props["fsid"] == ceph_cluster.fsid  # upstream read it at start-up: a real comparison
        for key, value in props.items():
            assert key in got, f"{name}: store {store_id!r}: {key!r} missing from ours"
            assert (got[key], type(got[key])) == (value, type(value)), \
                f"{name}: store {store_id!r}: {key}: ours {got[key]!r}, upstream {value!r}"
        assert set(got) == set(props), f"{name}: store {store_id!r}: extra keys {set(got) - set(props)}"
