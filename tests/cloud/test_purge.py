"""The driver's periodic purge as cinder-volume runs it on a real cloud (issue 22).

Cinder's default Glance settings (glance_api_servers unset: the catalog), its own
periodic task, no CLI and no admin keyring: what a delete order leaves in Ceph because
clones still needed it must be reclaimed once nothing does.
"""

import time

import cloudlib as cloud_tool
import demo_openstack as flow_mod


def _new(before, after):
    return {pool: sorted(set(after[pool]) - set(before[pool])) for pool in after}


def test_image_deleted_before_its_volumes_leaves_nothing_within_two_purge_intervals(cloud):
    """Upload V to I (clone), create V2 from I, delete I (Glance trashes it: V2 depends on
    it), then V2, then V (trashed: I, in the trash, still named it as parent): both pools
    and their trash back at the baseline within two purge intervals of the last delete."""
    before = cloud.rbd_names()
    res = flow_mod.flow(cloud, b"\x5a" * (1 << 20), "purge-catalog", log=lambda s: None)
    assert res["method"] == "clone", res["log"]
    flow_mod.delete_all(cloud, res["ids"], ("image", "volume_from_image", "volume"))
    t0 = time.monotonic()
    bound = 2 * cloud_tool.PURGE_INTERVAL + 10  # two intervals, and the purge's own time
    while _new(before, cloud.rbd_names()) != {"volumes": [], "images": []}:
        assert time.monotonic() - t0 < bound, (
            f"left after {bound} s: {_new(before, cloud.rbd_names())}")
        time.sleep(1)
    print(f"both pools at the baseline {time.monotonic() - t0:.1f} s after the last delete")
