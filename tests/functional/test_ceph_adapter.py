"""cinder_ext.ceph against Debian's bindings themselves."""

import rbd

from cinder_ext import ceph


def test_ceph_adapter_constants_match_the_bindings():
    # cinder_ext.ceph imports without the bindings (unit tests, a host without them): its
    # copies of librbd's ABI constants must equal the bindings' own
    assert ceph.USER_NAMESPACE == rbd.RBD_SNAP_NAMESPACE_TYPE_USER
    assert ceph.TRASH_NAMESPACE == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH
