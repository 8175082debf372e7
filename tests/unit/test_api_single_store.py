"""A single-store Glance ([glance_store] stores/default_store, no [DEFAULT] enabled_backends):
glance-info-api reports its one store as Glance would if it were multi-store with that store.

Upstream Glance answers 404 for single-store; glance-info-api is the component that exists
to report stores, so it reports the store a single-store Glance writes to: id "rbd" (the
store's type: glance_store's driver name for it and the scheme of its locations), the
default, its type and properties from [glance_store], behind the same policy.
"""

import os

import pytest

from glance.common import config
from glance.common import service
from glance_store_ext import contract

RBD = {"rbd_store_pool": "images", "rbd_store_user": "glance", "rbd_store_chunk_size": "8"}


def ini(sections):
    return "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()) + "\n"
                   for name, opts in sections.items())


@pytest.fixture
def write(tmp_path):
    counter = iter(range(1000))

    def write(sections):
        path = tmp_path / f"glance-api-{next(counter)}.conf"
        path.write_text(ini(sections))
        return str(path)
    return write


def single_store(tmp_path, **glance_store):
    """An operator's single-store glance-api.conf, as devstack-plugin-ceph writes one."""
    gs = {"stores": "file, http, rbd", "default_store": "rbd",
          "rbd_store_ceph_conf": os.path.join(str(tmp_path), "no-ceph.conf"), **RBD}
    gs.update(glance_store)
    return {"DEFAULT": {"auth_strategy": "noauth", "show_image_direct_url": "true"},
            "glance_store": {k: v for k, v in gs.items() if v is not None}}


def multi_store_equivalent(tmp_path, store_id="rbd"):
    """The multi-store file Glance would need for the same one store."""
    return {"DEFAULT": {"auth_strategy": "noauth", "enabled_backends": f"{store_id}:rbd"},
            "glance_store": {"default_backend": store_id},
            store_id: {"rbd_store_ceph_conf": os.path.join(str(tmp_path), "no-ceph.conf"), **RBD}}


@pytest.fixture
def api(write, tmp_path, info_api_app):
    return info_api_app(write(single_store(tmp_path)))


EXPECTED_DETAIL = {"stores": [{
    "id": "rbd", "default": "true", "type": "rbd",
    # fsid null: no cluster behind no-ceph.conf (tests/interop/test_api_single_store.py
    # reads a real one)
    "properties": {"chunk_size": 8 * 1024 * 1024, "pool": "images", "thin_provisioning": False,
                   "fsid": None, "user": "glance"},
    "weight": 0}]}


def test_stores_lists_the_one_store_as_default(api):
    resp = api.get("/v2/info/stores", roles=["member"])
    assert resp.status_int == 200
    assert resp.body == b'{"stores": [{"id": "rbd", "default": "true"}]}'
    contract.validate_stores(resp.json)


def test_detail_reports_type_and_properties_from_glance_store(api):
    resp = api.get("/v2/info/stores/detail", roles=["admin"])
    assert resp.status_int == 200, resp.body
    assert resp.json == EXPECTED_DETAIL
    contract.validate_stores_detail(resp.json)
    assert contract.read_rbd_store(resp.json["stores"][0], 0)


def test_answers_are_byte_identical_to_the_multi_store_equivalent(write, tmp_path, info_api_app,
                                                                 api):
    multi = info_api_app(write(multi_store_equivalent(tmp_path)))
    for path, roles in (("/v2/info/stores", ["reader"]), ("/v2/info/stores/detail", ["admin"]),
                        ("/v2/info/stores/detail", ["service"]),
                        ("/v2/info/stores/detail", ["member"])):
        ours, theirs = api.get(path, roles=roles), multi.get(path, roles=roles)
        assert (ours.status_int, ours.body) == (theirs.status_int, theirs.body), path


@pytest.mark.parametrize("roles", [["member"], ["reader"], []])
def test_detail_behind_the_same_policy(api, roles):
    resp = api.get("/v2/info/stores/detail", roles=roles, headers={"Accept": "application/json"})
    assert resp.status_int == 403
    assert resp.json["message"].startswith("You are not authorized to complete stores_info_detail")
    assert api.get("/v2/info/stores", roles=roles).status_int == 200


def test_every_option_of_the_store_comes_from_glance_store(write, tmp_path, info_api_app):
    api = info_api_app(write(single_store(tmp_path, rbd_store_pool="glance-images",
                                          rbd_store_user="img", rbd_store_chunk_size="4",
                                          rbd_thin_provisioning="true")))
    props = api.get("/v2/info/stores/detail", roles=["admin"]).json["stores"][0]["properties"]
    assert props == {"chunk_size": 4 * 1024 * 1024, "pool": "glance-images",
                     "thin_provisioning": True, "fsid": None, "user": "img"}


def test_unset_options_take_glance_stores_defaults(write, tmp_path, info_api_app):
    # rbd_store_pool "images", rbd_store_chunk_size 8 MiB, rbd_store_user None (librados's)
    api = info_api_app(write(single_store(tmp_path, rbd_store_pool=None, rbd_store_user=None,
                                          rbd_store_chunk_size=None)))
    props = api.get("/v2/info/stores/detail", roles=["admin"]).json["stores"][0]["properties"]
    assert (props["pool"], props["chunk_size"], props["user"]) == ("images", 8 << 20, None)


def test_stores_entry_by_class_path_serves_the_default_store(write, tmp_path, info_api_app):
    api = info_api_app(write(single_store(tmp_path, stores="glance.store.rbd.Store, http")))
    assert api.get("/v2/info/stores").json == {"stores": [{"id": "rbd", "default": "true"}]}


def test_a_file_store_default_is_reported_as_file(write, tmp_path, info_api_app):
    # glance_store's defaults: stores file, http; default_store file
    api = info_api_app(write({"DEFAULT": {"auth_strategy": "noauth"}, "glance_store": {
        "filesystem_store_datadir": str(tmp_path / "images")}}))
    detail = api.get("/v2/info/stores/detail", roles=["admin"]).json
    assert detail == {"stores": [{"id": "file", "default": "true", "type": "file", "properties": {
        "data_dir": str(tmp_path / "images"), "chunk_size": 65536, "thin_provisioning": False},
        "weight": 0}]}


def test_default_store_not_among_stores_stops_start_up_as_glance_does(write, tmp_path):
    path = write(single_store(tmp_path, stores="file, http"))
    with pytest.raises(config.ConfigError) as err:
        service.load_config(["--config-file", path])
    assert str(err.value) == (
        f"invalid value for [glance_store] default_store in {path}: 'rbd' is not served by a "
        "store of [glance_store] stores (file, http): Glance does not start with this either")


def test_a_bad_value_in_glance_store_names_option_and_file(write, tmp_path):
    path = write(single_store(tmp_path, rbd_store_chunk_size="eight"))
    with pytest.raises(config.ConfigError) as err:
        service.load_config(["--config-file", path])
    assert str(err.value).startswith(f"invalid value for [glance_store] rbd_store_chunk_size in {path}")


def test_start_up_says_how_it_reads_the_file(write, tmp_path, info_api_app, capsys):
    api = info_api_app(write(single_store(tmp_path)))  # oslo.log writes to the standard streams
    out = "".join(capsys.readouterr())
    assert "Glance is single-store ([glance_store] default_store = rbd, no [DEFAULT] " \
           "enabled_backends): reporting its store as 'rbd'" in out
    assert api.app.store_details.warm() == ["rbd"]


def test_multi_store_files_are_left_alone(glance_conf, info_api_app):
    api = info_api_app(glance_conf())
    assert api.conf.enabled_backends["ceph"] == "rbd" and "rbd" not in api.conf.enabled_backends
    assert [s["id"] for s in api.get("/v2/info/stores").json["stores"]] == ["fast", "ceph", "web"]


def test_version_document_and_negotiation_stay_a_single_store_glances(api):
    # Glance 33 lists v2.8-v2.13 only when enabled_backends is set (glanceclient then
    # refuses calls of those versions); reporting the store must not change what the file
    # says about Glance
    ids = [v["id"] for v in api.get("/versions").json["versions"]]
    assert ids == ["v2.15", "v2.9", "v2.17", "v2.7", "v2.6", "v2.5", "v2.4", "v2.3", "v2.2",
                   "v2.1", "v2.0"]
    assert api.get("/v2.9/info/stores").status_int == 200
    for version in ("v2.8", "v2.12", "v2.13"):
        assert api.get(f"/{version}/info/stores").status_int == 300, version
