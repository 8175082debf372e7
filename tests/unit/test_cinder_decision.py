"""decide(): every reason, and the clone target it picks."""

import pytest

from cinder_ext import decision as d

FSID = "4fd59ca3-81e0-46a5-989b-70edb9804bc9"


def stores(*extra, default="ceph", fsid=FSID, pool="images"):
    doc = {"stores": [
        {"id": "fast", "type": "file", "weight": 0, "description": "",
         "properties": {"data_dir": "/var/lib/glance", "chunk_size": 65536, "thin_provisioning": False}},
        {"id": "ceph", "type": "rbd", "weight": 0,
         "properties": {"pool": pool, "chunk_size": 8 << 20, "thin_provisioning": False,
                        "fsid": fsid, "user": "glance"}},
        *extra,
    ]}
    for s in doc["stores"]:
        if s["id"] == default:
            s["default"] = "true"
    return doc


IMAGE = {"status": "queued", "disk_format": "raw", "container_format": "bare"}
VOL = d.Volume("volume-1")


def decide(enabled=True, detail=None, volume=VOL, image=IMAGE, fsid=FSID, store=None, error=None,
           **kw):
    return d.decide(enabled, stores(**kw) if detail is None and error is None else detail, volume,
                    image, fsid, store, error)


def test_clone_target_is_the_default_rbd_store():
    assert decide() == d.Clone(store_id="ceph", pool="images", fsid=FSID, chunk_size=8 << 20,
                               user="glance")


def test_named_store_wins_over_default():
    assert decide(store="ceph", default="fast") == decide()


@pytest.mark.parametrize("kwargs, reason", [
    (dict(enabled=False), d.OPTION_DISABLED),
    (dict(error="get stores detail: Glance answered 403: forbidden"), d.STORES_UNAVAILABLE),
    (dict(detail={"stores": [{"type": "rbd", "default": "true"}]}), d.STORES_INVALID),  # no id
    (dict(detail={"stores": [{"id": "x"}]}), d.STORE_NOT_FOUND),  # tolerated: not a default
    (dict(detail={"stores": "nope"}), d.STORES_INVALID),
    (dict(detail=[]), d.STORES_INVALID),
    (dict(store="nowhere"), d.STORE_NOT_FOUND),
    (dict(default="none"), d.STORE_NOT_FOUND),
    (dict(store="fast"), d.STORE_NOT_RBD),
    (dict(default="fast"), d.STORE_NOT_RBD),
    (dict(fsid=None), d.STORE_FSID_UNKNOWN),
    (dict(fsid="00000000-0000-4000-8000-000000000000"), d.OTHER_CLUSTER),
    (dict(image=dict(IMAGE, disk_format="qcow2")), d.DISK_FORMAT),
    (dict(image=dict(IMAGE, container_format="compressed")), d.CONTAINER_FORMAT),
    (dict(volume=d.Volume("volume-1", encrypted=True)), d.VOLUME_ENCRYPTED),
    (dict(image=dict(IMAGE, status="active")), d.IMAGE_NOT_QUEUED),
])
def test_each_reason(kwargs, reason):
    if "fsid" in kwargs and kwargs["fsid"] is None:
        result = d.decide(True, stores(fsid=None), VOL, IMAGE, FSID)
    elif "fsid" in kwargs:
        result = d.decide(True, stores(fsid=kwargs["fsid"]), VOL, IMAGE, FSID)
    else:
        result = decide(**kwargs)
    assert isinstance(result, d.Copy)
    assert result.reason == reason
    assert result.detail  # every copy says why, in words
    assert result.reason in d.REASONS


def test_single_store_glance_copies_saying_what_to_add():
    # cinder_ext.glance's words for upstream's 404 on a single-store Glance
    error = ("get stores detail: Glance answered 404: Multi backend is not supported at this "
             "site.")
    result = decide(error=error)
    assert result.reason == d.STORES_UNAVAILABLE  # the stable reason, as for any failed fetch
    assert result.detail.startswith(error)
    assert "single-store" in result.detail and "enabled_backends = ceph:rbd" in result.detail
    assert "default_backend" in result.detail
    # what to add: glance-info-api, which reports a single-store Glance's store
    assert "glance-info-api" in result.detail and "/v2/info/stores/detail" in result.detail


# glance-info-api's answer for a single-store Glance ([glance_store] default_store = rbd, no
# enabled_backends): one store, id "rbd", the default (tests/unit/test_api_single_store.py)
SINGLE_STORE_DETAIL = {"stores": [
    {"id": "rbd", "default": "true", "type": "rbd", "weight": 0,
     "properties": {"chunk_size": 8 << 20, "pool": "images", "thin_provisioning": False,
                    "fsid": FSID, "user": "glance"}}]}


def test_single_store_glance_through_glance_info_api_clones_into_its_store():
    result = d.decide(True, SINGLE_STORE_DETAIL, VOL, IMAGE, FSID)
    assert result == d.Clone(store_id="rbd", pool="images", fsid=FSID, chunk_size=8 << 20,
                             user="glance")
    # a volume type naming the store by that id targets it too; another id does not exist
    assert d.decide(True, SINGLE_STORE_DETAIL, VOL, IMAGE, FSID, "rbd") == result
    assert d.decide(True, SINGLE_STORE_DETAIL, VOL, IMAGE, FSID, "ceph").reason == d.STORE_NOT_FOUND
    other = {"stores": [dict(SINGLE_STORE_DETAIL["stores"][0],
                             properties=dict(SINGLE_STORE_DETAIL["stores"][0]["properties"],
                                             fsid="00000000-0000-4000-8000-000000000000"))]}
    assert d.decide(True, other, VOL, IMAGE, FSID).reason == d.OTHER_CLUSTER


@pytest.mark.parametrize("error", [
    "get stores detail: Glance answered 403: forbidden",
    "get stores detail: Glance answered 4040: odd",
    "get image x: Glance answered 404: no such image",
    "get stores detail: cannot reach Glance at http://glance (refused)",
])
def test_other_fetch_failures_get_no_single_store_hint(error):
    result = decide(error=error)
    assert result == d.Copy(d.STORES_UNAVAILABLE, error)


def test_checks_run_in_order_option_first():
    # disabled wins over everything else wrong
    result = d.decide(False, None, d.Volume("v", encrypted=True), dict(IMAGE, disk_format="qcow2"), "x")
    assert result.reason == d.OPTION_DISABLED


def test_invalid_detail_names_the_json_path():
    doc = stores()
    del doc["stores"][1]["properties"]["pool"]
    result = decide(detail=doc)
    assert result.reason == d.STORES_INVALID and "pool" in result.detail


def test_copy_str_is_reason_and_detail():
    assert str(d.Copy("r", "why")) == "r: why"
    assert str(d.Copy("r")) == "r"


def _at_depth(volume_depth, max_depth, image=IMAGE):
    return d.decide(True, stores(), VOL, image, FSID, volume_depth=volume_depth,
                    max_clone_depth=max_depth)


@pytest.mark.parametrize("volume_depth, max_depth", [(0, 1), (1, 2), (4, 5)])
def test_clone_up_to_rbd_max_clone_depth(volume_depth, max_depth):
    # the image clone sits one hop below the volume: exactly at the bound is allowed
    assert isinstance(_at_depth(volume_depth, max_depth), d.Clone)


@pytest.mark.parametrize("volume_depth, max_depth", [(2, 2), (3, 2), (0, 0), (5, 5)])
def test_independent_image_when_a_clone_would_pass_rbd_max_clone_depth(volume_depth, max_depth):
    result = _at_depth(volume_depth, max_depth)
    assert isinstance(result, d.Clone) and result.flatten and result.reason == d.CLONE_CHAIN_TOO_DEEP
    assert f"{volume_depth + 1} deep" in result.detail and f"rbd_max_clone_depth {max_depth}" in result.detail
    assert result.reason in d.REASONS


def test_independent_image_when_the_operator_asks():
    result = d.decide(True, stores(), VOL, IMAGE, FSID, flatten=True)
    assert isinstance(result, d.Clone) and result.flatten and result.reason == d.FLATTEN_REQUESTED
    assert not d.decide(True, stores(), VOL, IMAGE, FSID).flatten
    # the option does not turn the clone path on, nor any copy reason into a flatten
    assert isinstance(d.decide(False, stores(), VOL, IMAGE, FSID, flatten=True), d.Copy)
    assert isinstance(d.decide(True, stores(), d.Volume("v", encrypted=True), IMAGE, FSID,
                               flatten=True), d.Copy)


def test_depth_not_counted_means_no_bound():
    assert isinstance(_at_depth(None, 2), d.Clone) and isinstance(_at_depth(9, None), d.Clone)


def test_depth_is_checked_after_the_other_reasons():
    # a non-queued image keeps its reason (the upload's resume check relies on it)
    result = _at_depth(7, 2, image=dict(IMAGE, status="active"))
    assert result.reason == d.IMAGE_NOT_QUEUED


def _with_unknown_fields(doc):
    # what a newer Glance might add: a field at the top, on every store, in every properties
    doc["next_release_field"] = {"anything": [1, 2]}
    for i, store in enumerate(doc["stores"]):
        store["encryption"] = {"kms": "barbican"}
        store["weight"] = "heavy"   # even a known field of an unexpected type: not read
        store["properties"][f"new_property_{i}"] = None
        store["properties"]["rbd_store_ceph_conf_hint"] = ["x"]
    doc["stores"].append({"id": "future", "type": "quantum", "properties": {"qubits": 7},
                          "weight": 0, "tier": 1})
    doc["stores"].append({"id": "bare-minimum"})
    return doc


def test_unknown_fields_everywhere_still_clone():
    # finding 7: a tolerant reader, as Glance's own clients read the stores detail
    assert decide(detail=_with_unknown_fields(stores())) == decide()


def test_unknown_fields_do_not_hide_what_is_read():
    doc = _with_unknown_fields(stores())
    doc["stores"][1]["properties"]["pool"] = 7
    result = decide(detail=doc)
    assert result.reason == d.STORES_INVALID and "pool" in result.detail


def test_another_store_malformed_is_not_read():
    # the file store lacks what the strict contract requires: the rbd default still clones
    doc = stores()
    doc["stores"][0]["properties"] = {}
    assert decide(detail=doc) == decide()


@pytest.mark.parametrize("mutate", [
    lambda doc: doc["stores"][1].update(id=""),
    lambda doc: doc["stores"][0].update(id="ceph"),
    lambda doc: doc["stores"][0].update(default="true"),
    lambda doc: doc["stores"][1]["properties"].pop("chunk_size"),
    lambda doc: doc["stores"][1]["properties"].update(fsid=7),
    lambda doc: doc["stores"][1].pop("properties"),
])
def test_what_is_read_is_still_checked(mutate):
    doc = stores()
    mutate(doc)
    assert decide(detail=doc).reason == d.STORES_INVALID
