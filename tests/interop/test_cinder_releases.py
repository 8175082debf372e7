"""The driver inside each maintained Cinder release operators run, not only the newest.

Cinder 29 (2026.2) is covered in depth by test_cinder_driver.py and _day2.py; here the
same runners go through Cinder 28 (2026.1, the SLURP release operators upgrade to from
2025.1) in its own venv: an upload by clone, the delete of its volume and the periodic
purge, and "off means upstream". The driver detects features (eventlet or native threads)
and never compares versions: a helper that only Cinder 29 has (before, the driver called
cinder.utils.concurrency_mode_threading on every upload and delete) would fail here.
"""

import pytest

from tests.cinder_peer import (  # noqa: F401  (fixtures)
    DAY2_RUNNER, cinder29, cinder_glance, cinder_peer, run_cinder)

RELEASES = ["28.0.0"]


@pytest.fixture(scope="module", params=RELEASES)
def release(request):
    return request.param, cinder_peer(request.param)


def test_clone_upload_delete_and_purge(release, run_cinder, cinder_glance, ceph_cluster):
    version, python = release
    run = run_cinder(cinder_glance.url, enable_clone_optimization=True, cinder=python,
                     extra_conf="deferred_deletion_purge_interval = 1\n")
    r = run.result
    assert r["eventlet"] is True  # Cinder 26-28 always run on eventlet
    image_id, volume = r["image_id"], r["volume"]
    assert r["image_status"] == "active", (version, r)
    assert r["image_parent"] == f"{ceph_cluster.cinder_pool}/{volume}"
    assert r["image_sha256"] == r["volume_sha256"]
    assert len(run.log_lines("method=clone")) == 1 and image_id in run.log_lines("method=clone")[0]
    assert r["volumes_after_delete"] == {"images": {}, "trash": [volume]}
    assert r["image_sha256_after_volume_delete"] == r["volume_sha256"]
    assert r["volumes_after_purge"] == {"images": {}, "trash": []}, r["volumes_after_purge"]
    assert r["images_after_purge"] == {"images": {}, "trash": []}, r["images_after_purge"]


def test_option_off_makes_the_same_calls_as_upstreams_driver(release, run_cinder, cinder_glance):
    version, python = release
    runs = {label: run_cinder(cinder_glance.url, enable_clone_optimization=False, mode="calls",
                              runner=DAY2_RUNNER, cinder=python,
                              extra_conf="enable_deferred_deletion = true\n"
                                         "deferred_deletion_purge_interval = 3600\n",
                              spec_extra={"driver_class": cls}).result
            for label, cls in (("upstream", "cinder.volume.drivers.rbd.RBDDriver"),
                               ("ours", "cinder_ext.driver.RBDCloneUploadDriver"))}
    for phase in ("setup", "periodic", "create", "upload", "delete"):
        assert runs["ours"][phase] == runs["upstream"][phase], (version, phase)
    assert runs["ours"]["periodic_tasks"] == runs["upstream"]["periodic_tasks"]
