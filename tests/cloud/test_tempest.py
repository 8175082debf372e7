"""OpenStack's own tests against the cloud: Tempest 47 and cinder-tempest-plugin 1.23 (issue 14).

The spec's acceptance ("Tempest ... checking if RBD image dependency blocks deletion of
source resource"): cinder-tempest-plugin's VolumeDependencyTests and
VolumeImageDependencyTests, every tempest/plugin API test that uploads a volume to an
image or creates a volume from an image without Nova, and tempest's volume smoke set.
0 failures; pass, skip (with reasons) and fail counts print at the end (run pytest with
-s, or read the captured stdout of this test); tests that need Nova or Neutron are
skipped by tempest itself and counted as skipped, never as passed. Tempest's own upload
test (test_volume_upload, run by our plugin without the Neutron its class asks for) uploads
a raw volume as raw and as qcow2: every raw-to-raw upload clones (the count of
`method=clone` lines equals the count of such uploads), and every `method=copy` line names
its reason (disk-format-not-raw).
"""

import cloud_tempest

MUST_PASS = ("cinder_tempest_plugin.api.volume.test_volume_dependency.VolumeDependencyTests.",
             "cinder_tempest_plugin.api.volume.test_volume_dependency.VolumeImageDependencyTests.",
             "tempest.api.volume.test_volumes_get.VolumesGetTest.test_volume_create_get_update_delete_from_image",
             "glance_rbd_clone_tempest.tests.test_volumes_actions.VolumesActionsWithoutNetworkTest.test_volume_upload")


def test_tempest_volume_and_dependency_tests(cloud):
    summary = cloud_tempest.run(cloud.dir, concurrency=2, log=print)
    results = summary["results"]
    failed = {t: r["reason"][-400:] for t, r in results.items() if r["status"] == "fail"}
    assert results, "tempest ran no test"
    assert not failed, f"{len(failed)} tempest tests failed: {failed}"
    for prefix in MUST_PASS:
        ran = {t: r["status"] for t, r in results.items() if t.startswith(prefix)}
        assert ran and all(s == "success" for s in ran.values()), (prefix, ran)
    up = summary["uploads"]
    assert up["raw_to_raw"] >= 1, "the run uploaded no raw volume to a raw image"
    assert up["clone"] == up["raw_to_raw"] and up["independent"] == 0, up
    not_raw = [r for r in up["copy_reasons"] if r.startswith("disk-format-not-raw")]
    assert up["copy"] >= 1 and len(not_raw) == up["copy"], f"copies and their reasons: {up['copy_reasons']}"
