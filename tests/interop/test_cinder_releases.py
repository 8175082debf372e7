"""The driver inside each maintained Cinder release operators run, not only the newest.

The checks are here; each release has a module of its own, test_cinder_releases_<major>.py,
that names its RELEASE and imports them (xdist runs a module whole on one worker: one
module per release spreads the releases over the workers). This module collects nothing
itself. ``tools/matrix`` runs them and prints a release-by-release table.

Each check runs tests/cinder_peer_run.py or tests/cinder_peer_day2.py inside the release's
own venv (tools/peers/setup-cinder-peer): an upload by clone, the delete of its volume and
the periodic purge; a refused clone that falls back to upstream's copy; and "off means
upstream" (the same calls as upstream's driver, set-up, periodic task and one tick
included). Cinder 29 (2026.2) is also covered in depth by test_cinder_driver.py and _day2.py.

The driver detects features and never compares versions: a helper that only a newer
Cinder has (before, the driver called cinder.utils.concurrency_mode_threading, Cinder
29's, on every upload and delete) fails here, on the release that lacks it.
"""

import os
import subprocess

import pytest

from tests.cinder_peer import (  # noqa: F401  (fixtures)
    DAY2_RUNNER, cinder_glance, cinder_glance_without_service_role, cinder_peer, run_cinder)

__test__ = False  # collected in test_cinder_releases_<major>.py, once per release


@pytest.fixture(scope="module")
def release(request):
    """(version, python of its venv) for the module's RELEASE; built if need be."""
    version = request.module.RELEASE
    return version, cinder_peer(version)


def _clean(state):
    return state == {"images": {}, "trash": []}


def test_venv_runs_that_release_with_our_driver_and_no_glance_package(release):
    version, python = release
    code = ("import sys, importlib.metadata as md\n"
            "import cinder.volume.drivers.rbd as up, cinder_ext.driver as ours\n"
            "assert issubclass(ours.RBDCloneUploadDriver, up.RBDDriver)\n"
            "assert up.rados is not None and up.rbd is not None\n"
            "print(md.version('cinder'))\n"
            "print(sorted(m for m in sys.modules if m == 'glance' or m.startswith('glance.')))\n")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr
    # Cinder talks to Glance through glanceclient: our `glance` package is never imported
    assert proc.stdout.split("\n")[:2] == [version, "[]"]
    check = subprocess.run([os.path.join(os.path.dirname(python), "pip"), "check"],
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr


def test_clone_upload_delete_and_purge(release, run_cinder, cinder_glance, ceph_cluster):
    version, python = release
    run = run_cinder(cinder_glance.url, enable_clone_optimization=True, cinder=python,
                     extra_conf="deferred_deletion_purge_interval = 1\n")
    r = run.result
    assert r["eventlet"] is True  # cinder-volume on eventlet's hub, as each release starts it
    image_id, volume = r["image_id"], r["volume"]
    assert r["image_status"] == "active", (version, r)
    assert r["direct_url"] == f"rbd://{ceph_cluster.fsid}/{ceph_cluster.glance_pool}/{image_id}/snap"
    assert r["image_parent"] == f"{ceph_cluster.cinder_pool}/{volume}"
    assert r["image_sha256"] == r["volume_sha256"]
    assert len(run.log_lines("method=clone")) == 1 and image_id in run.log_lines("method=clone")[0]
    # delete_volume: to the trash (no flatten), the image still reads the same
    assert r["volumes_after_delete"] == {"images": {}, "trash": [volume]}
    assert r["image_sha256_after_volume_delete"] == r["volume_sha256"]
    assert len(run.log_lines("moved to the RBD trash")) == 1
    # the periodic task purges the volume once Glance deleted the image
    assert len(run.log_lines(f"Purged {ceph_cluster.cinder_pool}/{volume}: nothing depends")) == 1
    assert _clean(r["volumes_after_purge"]), r["volumes_after_purge"]
    assert _clean(r["images_after_purge"]), r["images_after_purge"]


def test_refused_clone_falls_back_to_upstreams_copy(release, run_cinder,
                                                    cinder_glance_without_service_role):
    # Cinder's [glance] user without the service role: Glance 33 refuses the rbd location
    # (403) after the clone was made; rolled back, then upstream's copy
    version, python = release
    run = run_cinder(cinder_glance_without_service_role.url, enable_clone_optimization=True,
                     cinder=python)
    r = run.result
    lines = run.log_lines("method=copy (upstream)")
    assert len(lines) == 1, (version, run.log_lines("method="))
    assert "reason=clone-failed" in lines[0] and "403" in lines[0], lines[0]
    assert r["image_status"] == "active"
    assert r["image_parent"] is None
    assert r["image_sha256"] == r["volume_sha256"]
    assert r["volumes_before_delete"] == {"images": {r["volume"]: []}, "trash": []}
    assert _clean(r["volumes_after_delete"])
    assert _clean(r["images_after_purge"])


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
    assert runs["upstream"]["upload"].get("rados_connect")  # it counts
    assert runs["ours"]["periodic_tasks"] == runs["upstream"]["periodic_tasks"] == ["_trash_purge"]
