"""What upstream Cinder 29's delete_volume does to a volume with a clone-uploaded image,
against ours, both in real Cinder 29 (tests/cinder_peer_run.py in the cinder29 venv).

Upstream: remove fails (the image's parent snapshot is in the trash namespace), so it
flattens every child, the Glance image included: O(size), the image no longer shares a
byte with the volume. Ours (test_cinder_driver.py's first test): constant time, the image
keeps its parent in the trash, the periodic purge removes the volume after the image.
"""

from tests.cinder_peer import cinder29, cinder_glance, run_cinder  # noqa: F401  (fixtures)


def test_upstream_flattens_the_glance_image_ours_does_not(run_cinder, cinder_glance, ceph_cluster):
    up = run_cinder(cinder_glance.url, enable_clone_optimization=True, size_gb=2,
                    delete_with="upstream", purge_timeout=5).result
    ours = run_cinder(cinder_glance.url, enable_clone_optimization=True, size_gb=2,
                      extra_conf="deferred_deletion_purge_interval = 1\n").result
    print(f"delete_volume with a clone-uploaded image, 2 GiB: upstream {up['delete_seconds']:.3f} s, "
          f"ours {ours['delete_seconds']:.3f} s")
    volume_parent = f"{ceph_cluster.cinder_pool}/{up['volume']}"
    assert up["image_parent"] == volume_parent
    # upstream: the image was flattened (a full copy of its data inside Ceph)
    assert up["image_parent_after_volume_delete"] is None
    assert up["image_sha256_after_volume_delete"] == up["volume_sha256"]
    # ours: not flattened, same bytes, and both pools clean once the image is deleted
    assert ours["image_parent_after_volume_delete"] == f"{ceph_cluster.cinder_pool}/{ours['volume']}"
    assert ours["image_sha256_after_volume_delete"] == ours["volume_sha256"]
    for r in (up, ours):
        assert r["volumes_after_purge"] == {"images": {}, "trash": []}, r["volumes_after_purge"]
        assert r["images_after_purge"] == {"images": {}, "trash": []}, r["images_after_purge"]
