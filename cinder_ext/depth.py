"""How deep a clone chain is, through every pool (volume -> image -> volume ...).

Its own module so that create.py and upload.py both import it without importing
each other.
"""

from cinder_ext import exceptions as exc

MAX_CHAIN = 1000  # a parent loop is impossible in Ceph; bound the walk anyway


def clone_depth(cluster, pool, name):
    """Parent hops above pool/name, across pools (0 for an image that is no clone)."""
    depth, info = 0, cluster.info(pool, name)
    while info["parent"] and depth < MAX_CHAIN:
        depth += 1
        parent = info["parent"]
        try:
            info = cluster.info(parent["pool"], parent["image"])
        except exc.CephNotFound:  # a parent in the trash has no name to open by
            info = cluster.info(parent["pool"], None, image_id=parent["image_id"])
    return depth
