"""The cls_rbd replies cinder_ext.ceph.Cluster.children decodes itself, on bytes as the
OSD sends them (cls/rbd/cls_rbd_types.cc; tests/functional/test_ceph_adapter.py checks
the same against librbd's list_children2 on a real cluster)."""

import struct

from cinder_ext import ceph


def _string(text):
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def _child_spec(pool_id, image_id, namespace=None, extra=b""):
    body = struct.pack("<q", pool_id) + _string(image_id)
    version = 1
    if namespace is not None:
        body, version = body + _string(namespace), 2
    body += extra
    return struct.pack("<BBI", version, 1, len(body)) + body


def test_child_specs_of_both_versions_and_a_newer_one_with_a_field_appended():
    reply = struct.pack("<I", 3) + _child_spec(7, "abc123") + _child_spec(8, "def456", "ns1") \
        + _child_spec(9, "0a0b", "", extra=b"\x01\x02\x03\x04")
    assert ceph._decode_child_specs(reply) == [(7, "", "abc123"), (8, "ns1", "def456"),
                                               (9, "", "0a0b")]


def test_no_children():
    assert ceph._decode_child_specs(b"") == [] == ceph._decode_string_set(b"")
    assert ceph._decode_child_specs(struct.pack("<I", 0)) == []


def test_a_v1_child_set_and_a_directory_name():
    assert ceph._decode_string_set(struct.pack("<I", 2) + _string("id1") + _string("id22")) == [
        "id1", "id22"]
    assert ceph._decode_string(_string("volume-1")) == "volume-1"
