"""cinder_ext.driver.RBDCloneUploadDriver inside real Cinder 29, against upstream Glance 33.

Each upload test runs tests/cinder_peer_run.py in the cinder29 venv: a real cinder.conf,
Cinder's database, Configuration, VolumeType/Volume objects and GlanceImageService; the
driver class comes from the config's `volume_driver`. The volume is 1 GiB with data in
three places and holes elsewhere.
"""

import os
import subprocess
import sys

import pytest

from tests.cinder_peer import (  # noqa: F401  (fixtures)
    cinder29, cinder_glance, cinder_glance_without_service_role, run_cinder)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = "cinder_ext.driver.RBDCloneUploadDriver"
# generous for a trash move on a shared 2-core machine; a flatten is asserted
# against structurally (the image keeps its parent), not by the clock
CONSTANT_TIME_BOUND = 5.0


def _clean(state):
    return state == {"images": {}, "trash": []}


def _report(what, r):
    # shown with -rP / -s: the numbers the docs (doc/source/admin/deletion.rst) and the report quote
    print(f"{what}: upload {r['upload_seconds']:.2f} s, delete_volume {r['delete_seconds']:.3f} s")


def test_clone_when_eligible_and_delete_volume_keeps_the_image(run_cinder, cinder_glance, ceph_cluster):
    # purge every second: the test waits for the driver's own periodic task
    run = run_cinder(cinder_glance.url, enable_clone_optimization=True,
                     extra_conf="deferred_deletion_purge_interval = 1\n")
    r = run.result
    _report("clone", r)
    assert r["driver_class"] == DRIVER and r["eventlet"] is True
    image_id, volume = r["image_id"], r["volume"]

    # cloned and registered: active, at the rbd location, a child of the volume
    assert r["image_status"] == "active"
    assert r["direct_url"] == f"rbd://{ceph_cluster.fsid}/{ceph_cluster.glance_pool}/{image_id}/snap"
    assert r["image_parent"] == f"{ceph_cluster.cinder_pool}/{volume}"
    assert r["image_size"] == 1 << 30
    assert r["image_sha256"] == r["volume_sha256"]
    # the image is a snapshot: later writes to the volume do not reach it
    assert r["image_sha256_after_volume_write"] == r["volume_sha256"]
    # Glance computed the checksum afterwards (do_secure_hash), from the same bytes
    assert r["image_checksum"] == r["volume_md5"]

    # Cinder's log says which method ran
    lines = run.log_lines("method=clone")
    assert len(lines) == 1 and image_id in lines[0] and r["direct_url"] in lines[0]

    # nothing left of the transaction on the volume but the trashed snapshot the clone needs
    snaps = r["volumes_before_delete"]["images"][volume]
    assert snaps == [f"trash:image-{image_id}"]

    # delete_volume: constant time, no flatten, the image still reads the same
    assert r["delete_seconds"] < CONSTANT_TIME_BOUND
    assert r["volumes_after_delete"] == {"images": {}, "trash": [volume]}
    assert r["image_parent_after_volume_delete"] == f"{ceph_cluster.cinder_pool}/{volume}"
    assert r["image_sha256_after_volume_delete"] == r["volume_sha256"]
    assert len(run.log_lines("moved to the RBD trash")) == 1

    # once Glance deletes the image, the periodic purge removes the volume: both pools empty
    assert len(run.log_lines(f"Purged {ceph_cluster.cinder_pool}/{volume}: nothing depends")) == 1
    assert _clean(r["volumes_after_purge"]), r["volumes_after_purge"]
    assert _clean(r["images_after_purge"]), r["images_after_purge"]


def test_image_deleted_first_then_the_volume_deletes_as_upstreams(run_cinder, cinder_glance, ceph_cluster):
    run = run_cinder(cinder_glance.url, enable_clone_optimization=True, delete_order="image-first")
    r = run.result
    assert r["image_parent"] == f"{ceph_cluster.cinder_pool}/{r['volume']}"
    # Glance deleted the clone, but the trashed snapshot it depended on stays: dropping it
    # needs write access to the Cinder pool, which the Glance user does not have (read
    # only, by design). Harmless: removing the volume removes it (no child is left).
    assert r["volumes_before_delete"] == {"images": {r["volume"]: [f"trash:image-{r['image_id']}"]},
                                          "trash": []}
    assert _clean(r["volumes_after_delete"]) and _clean(r["images_after_delete"])
    assert not run.log_lines("moved to the RBD trash")


def test_option_off_runs_upstreams_copy(run_cinder, cinder_glance):
    run = run_cinder(cinder_glance.url, enable_clone_optimization=False)
    r = run.result
    _report("upstream copy", r)
    assert r["driver_class"] == DRIVER and r["enable_clone_optimization"] is False

    assert r["image_status"] == "active"
    assert r["image_parent"] is None  # written by Glance, not a clone
    assert r["image_sha256"] == r["volume_sha256"]
    assert r["image_sha256_after_volume_write"] == r["volume_sha256"]
    assert r["image_checksum"] == r["volume_md5"]  # computed by Glance on the way in
    # off means upstream: upstream's copy_volume_to_image alone, nothing of ours decides
    # or logs (tests/interop/test_cinder_driver_day2.py counts the calls)
    assert not run.log_lines("method=")

    # upstream's delete: the volume is gone, nothing in the trash
    assert r["volumes_before_delete"]["images"][r["volume"]] == []
    assert _clean(r["volumes_after_delete"])
    assert r["image_sha256_after_volume_delete"] == r["volume_sha256"]
    assert _clean(r["images_after_purge"])


def test_refused_location_rolls_back_and_falls_back_to_upstreams_copy(
        run_cinder, cinder_glance_without_service_role):
    # Cinder's [glance] user without the service role: Glance 33 answers 403 to an rbd
    # location, after the clone was made
    run = run_cinder(cinder_glance_without_service_role.url, enable_clone_optimization=True)
    r = run.result
    _report("fallback copy", r)
    lines = run.log_lines("method=copy (upstream)")
    assert len(lines) == 1
    assert "reason=clone-failed" in lines[0] and "403" in lines[0], lines[0]
    assert not run.log_lines("method=clone,")

    assert r["image_status"] == "active"
    assert r["image_parent"] is None
    assert r["image_sha256"] == r["volume_sha256"]
    assert r["image_checksum"] == r["volume_md5"]
    # rolled back: no snapshot (in any namespace) on the volume, nothing in the trash
    assert r["volumes_before_delete"] == {"images": {r["volume"]: []}, "trash": []}
    assert _clean(r["volumes_after_delete"])
    assert _clean(r["images_after_purge"])


@pytest.mark.parametrize("bound", [2, 3])
def test_volume_image_volume_image_chain_stops_at_rbd_max_clone_depth(run_cinder, cinder_glance,
                                                                      ceph_cluster, bound):
    # v1 -> i1 (clone, 1 deep) -> v2 (upstream's clone_image, 2 deep) -> i2: 3 deep, past
    # a bound of 2 (an independent image: flattened inside Ceph), within a bound of 3 (cloned)
    run = run_cinder(cinder_glance.url, enable_clone_optimization=True, mode="chain",
                     extra_conf=f"rbd_max_clone_depth = {bound}\n")
    r = run.result
    cinder, glance = ceph_cluster.cinder_pool, ceph_cluster.glance_pool
    assert r["image1_parent"] == f"{cinder}/{r['volume']}"
    assert r["volume2_cloned"] is True and r["volume2_parent"] == f"{glance}/{r['image_id']}"
    assert r["image2_status"] == "active" and r["image2_sha256"] == r["volume_sha256"]
    lines = run.log_lines(f"to image {r['image2_id']}: method=")
    assert len(lines) == 1, lines
    if bound == 2:
        assert r["image2_parent"] is None
        assert "method=independent, reason=clone-chain-too-deep" in lines[0], lines[0]
        assert f"clone 3 deep (rbd_max_clone_depth {bound})" in lines[0], lines[0]
    else:
        assert r["image2_parent"] == f"{cinder}/{r['volume2']}"
        assert "method=clone," in lines[0], lines[0]
    after = r["after_deletes"]
    assert _clean(after["volumes"]) and _clean(after["images"]), after


def test_options_register_in_the_backend_section_with_backend_defaults(run_cinder):
    # set in [backend_defaults] only: the backend sees it, as for upstream's rbd_* options
    run = run_cinder("http://127.0.0.1:9", enable_clone_optimization=None, mode="options",
                     extra_conf="\n[backend_defaults]\nenable_clone_optimization = true\n"
                                "clone_active_timeout = 17\n")
    r = run.result
    assert r["driver_class"] == DRIVER
    assert r["enable_clone_optimization"] is True and r["shared_default"] is True
    assert r["clone_active_timeout"] == 17
    assert {"enable_clone_optimization", "rbd_flatten_volume_to_image", "clone_active_timeout",
            "rbd_max_upload_snapshots",
            "rbd_pool"} <= set(r["driver_options"])

    # off by default
    r = run_cinder("http://127.0.0.1:9", enable_clone_optimization=None, mode="options").result
    assert r["enable_clone_optimization"] is False


def test_cinder_ext_imports_without_cinder():
    # the project's venv has no Cinder: everything but the driver module imports
    code = ("import sys, importlib\n"
            "for m in ('cinder_ext', 'cinder_ext.opts', 'cinder_ext.decision', 'cinder_ext.clone',\n"
            "          'cinder_ext.glance', 'cinder_ext.upload', 'cinder_ext.cli'):\n"
            "    importlib.import_module(m)\n"
            "assert 'cinder' not in sys.modules\n"
            "try:\n"
            "    import cinder_ext.driver\n"
            "except ImportError as e:\n"
            "    print(e.name)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "cinder"
