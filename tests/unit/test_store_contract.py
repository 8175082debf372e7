"""The wire contract: stores/detail schemas and the rbd:// codec, checked against glance_store itself."""

import copy
import urllib.parse

import pytest
from glance_store import exceptions as gs_exceptions
from glance_store._drivers.rbd import StoreLocation
from hypothesis import given, settings, strategies as st

from glance_store_ext.contract import (
    ContractError, RBDLocation, STORES_DETAIL_SCHEMA, STORES_SCHEMA, validate_stores,
    validate_stores_detail)

FSID = "a0019f77-e968-4488-8b05-4df29830543d"

# shaped as upstream Glance 33's discovery.py builds it (the peer's stores)
DETAIL = {"stores": [
    {"id": "fast", "type": "file", "weight": 0,
     "properties": {"data_dir": "/var/lib/glance/images", "chunk_size": 65536, "thin_provisioning": False}},
    {"id": "ceph", "default": "true", "description": "Ceph", "type": "rbd", "weight": 100,
     "properties": {"chunk_size": 8388608, "pool": "images", "thin_provisioning": False, "fsid": FSID,
                    "user": "glance"}},
    {"id": "web", "read-only": "true", "type": "http", "weight": 0, "properties": {}},
    {"id": "sw", "type": "swift", "weight": 0,
     "properties": {"container": "glance", "large_object_size": 5242880000,
                    "large_object_chunk_size": 204800000}},
    {"id": "s", "type": "s3", "weight": 0,
     "properties": {"s3_store_large_object_size": 104857600, "s3_store_large_object_chunk_size": 10485760,
                    "s3_store_thread_pools": 10}},
    {"id": "c", "type": "cinder", "weight": 0, "properties": {"volume_type": None, "use_multipath": False}},
    {"id": "v", "type": "vmware", "weight": 0, "properties": {"anything": ["goes"]}},
]}


def _stores_only(detail):
    return {"stores": [{k: v for k, v in s.items() if k not in ("type", "properties", "weight")}
                       for s in detail["stores"]]}


def test_schemas_are_valid_json_schemas():
    import jsonschema
    for schema in (STORES_SCHEMA, STORES_DETAIL_SCHEMA):
        jsonschema.validators.validator_for(schema).check_schema(schema)


def test_upstream_shaped_documents_pass():
    assert validate_stores_detail(copy.deepcopy(DETAIL)) == DETAIL
    assert validate_stores(_stores_only(DETAIL))["stores"][1] == {"id": "ceph", "default": "true",
                                                                    "description": "Ceph"}


def test_upstream_glance_33_rbd_without_user_passes():
    doc = copy.deepcopy(DETAIL)
    del doc["stores"][1]["properties"]["user"]
    validate_stores_detail(doc)


def test_fsid_and_user_may_be_null():
    doc = copy.deepcopy(DETAIL)
    doc["stores"][1]["properties"].update(fsid=None, user=None)
    validate_stores_detail(doc)


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d["stores"][1]["properties"].pop("pool"), "$.stores[1].properties"),
    (lambda d: d["stores"][1]["properties"].update(pool=3), "$.stores[1].properties.pool"),
    (lambda d: d["stores"][1]["properties"].update(chunk_size="8"), "$.stores[1].properties.chunk_size"),
    (lambda d: d["stores"][1]["properties"].update(chunk_size=True), "$.stores[1].properties.chunk_size"),
    (lambda d: d["stores"][1]["properties"].update(thin_provisioning="false"),
     "$.stores[1].properties.thin_provisioning"),
    (lambda d: d["stores"][1]["properties"].update(keyring="/etc/ceph/k"), "$.stores[1].properties"),
    (lambda d: d["stores"][1].update(default=True), "$.stores[1].default"),
    (lambda d: d["stores"][2].update({"read-only": "yes"}), "$.stores[2]['read-only']"),
    (lambda d: d["stores"][0].pop("weight"), "$.stores[0]"),
    (lambda d: d["stores"][0].update(weight=1.5), "$.stores[0].weight"),
    (lambda d: d["stores"][0]["properties"].update(chunk_size=None), "$.stores[0].properties.chunk_size"),
    (lambda d: d["stores"][2]["properties"].update(x=1), "$.stores[2].properties"),
    (lambda d: d["stores"][6].update(properties=[]), "$.stores[6].properties"),
    (lambda d: d["stores"][3].update(id=7), "$.stores[3].id"),
    (lambda d: d.update(extra=1), "$"),
    (lambda d: d.pop("stores"), "$"),
])
def test_detail_violations_name_the_path(mutate, path):
    doc = copy.deepcopy(DETAIL)
    mutate(doc)
    with pytest.raises(ContractError) as err:
        validate_stores_detail(doc)
    assert f": {path}: " in str(err.value)


def test_duplicate_ids_and_two_defaults_are_refused():
    doc = copy.deepcopy(DETAIL)
    doc["stores"][2]["id"] = "fast"
    with pytest.raises(ContractError, match=r"\$\.stores\[2\]\.id: duplicate store id 'fast'"):
        validate_stores_detail(doc)
    doc = _stores_only(DETAIL)
    doc["stores"][0]["default"] = "true"
    with pytest.raises(ContractError, match=r"\$\.stores\[1\]\.default: more than one"):
        validate_stores(doc)


def test_stores_schema_refuses_detail_keys():
    with pytest.raises(ContractError, match=r"\$\.stores\[\d\]: Additional properties"):
        validate_stores(copy.deepcopy(DETAIL))


def test_contract_error_is_a_value_error():
    assert issubclass(ContractError, ValueError)


# -- rbd:// codec, against glance_store's own StoreLocation -------------------

def _gs_uri(fsid, pool, image, snapshot):
    specs = {"fsid": fsid, "pool": pool, "image": image, "snapshot": snapshot}
    return StoreLocation({k: v for k, v in specs.items() if v is not None}, None).get_uri()


def _gs_parse(url):
    loc = StoreLocation({}, None)
    loc.parse_uri(url)
    return loc.fsid, loc.pool, loc.image, loc.snapshot


def test_url_of_a_glance_image():
    loc = RBDLocation(FSID, "images", "6d0e5c1a-8a55-4f6e-9d7a-2b5b0c0f1d11", "snap")
    assert loc.url == f"rbd://{FSID}/images/6d0e5c1a-8a55-4f6e-9d7a-2b5b0c0f1d11/snap"
    assert RBDLocation.parse(loc.url) == loc


def test_parts_are_quoted_like_glance_store():
    loc = RBDLocation(FSID, "my/pool", "img with space", "sn@p%")
    assert loc.url == _gs_uri(FSID, "my/pool", "img with space", "sn@p%")
    assert loc.url == f"rbd://{FSID}/my%2Fpool/img%20with%20space/sn%40p%25"
    assert RBDLocation.parse(loc.url) == loc


def test_short_form_is_accepted_as_glance_store_does():
    assert RBDLocation.parse("rbd://just-an-image") == RBDLocation(None, None, "just-an-image", None)
    assert RBDLocation(None, None, "just-an-image", None).url == "rbd://just-an-image"
    # glance_store does not unquote the short form
    assert RBDLocation.parse("rbd://a%20b").image == "a%20b" == _gs_parse("rbd://a%20b")[2]


@pytest.mark.parametrize("url, reason", [
    ("http://x/y/z/w", "must start with 'rbd://'"),
    ("rbd://a/b", "exactly 1 or 4 components, has 2"),
    ("rbd://a/b/c/d/e", "exactly 1 or 4 components, has 5"),
    ("rbd://a//c/d", "empty components"),
    ("rbd://", "empty components"),
    ("rbd://a/b/c/", "empty components"),
])
def test_malformed_urls_are_refused_like_glance_store(url, reason):
    with pytest.raises(ContractError, match=reason):
        RBDLocation.parse(url)
    with pytest.raises(gs_exceptions.BadStoreUri):
        _gs_parse(url)


def test_non_string_is_refused():
    with pytest.raises(ContractError, match="expected a string, got bytes"):
        RBDLocation.parse(b"rbd://x")


@pytest.mark.parametrize("args, message", [
    ((FSID, None, "img", "snap"), "pool missing"),
    ((FSID, "images", "img", None), "snapshot missing"),
    ((None, None, None, None), "image is missing"),
    ((FSID, "", "img", "snap"), "pool is empty"),
    ((None, None, "a/b", None), "contains '/'"),
    ((FSID, "images", 5, "snap"), "image must be a string"),
])
def test_incomplete_locations_are_refused(args, message):
    with pytest.raises(ContractError, match=message):
        RBDLocation(*args)


def test_location_is_frozen():
    loc = RBDLocation(FSID, "images", "img", "snap")
    with pytest.raises(Exception):
        loc.pool = "volumes"


_part = st.text(min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(_part, _part, _part, _part)
def test_codec_matches_glance_store_for_any_parts(fsid, pool, image, snapshot):
    loc = RBDLocation(fsid, pool, image, snapshot)
    assert loc.url == _gs_uri(fsid, pool, image, snapshot)
    assert RBDLocation.parse(loc.url) == loc
    assert _gs_parse(loc.url) == (fsid, pool, image, snapshot)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_accepts_exactly_what_glance_store_accepts(tail):
    url = "rbd://" + tail
    try:
        expected = _gs_parse(url)
    except gs_exceptions.BadStoreUri:
        with pytest.raises(ContractError):
            RBDLocation.parse(url)
        return
    got = RBDLocation.parse(url)
    assert (got.fsid, got.pool, got.image, got.snapshot) == expected
    assert got.url == _gs_uri(*expected)
