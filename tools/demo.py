"""The demo: a throwaway dev Ceph cluster, its health, pools and least-privilege users.

Run through tools/demo, which prepares the virtualenv first.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.devcluster import DevCluster  # noqa: E402


def section(title):
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the cluster running at the end")
    parser.add_argument("--dir", help="cluster directory (default: a new temporary one)")
    args = parser.parse_args()

    section("boot a dev Ceph cluster on 127.0.0.1")
    t0 = time.monotonic()
    try:
        cluster = DevCluster.start(args.dir or tempfile.mkdtemp(prefix="glance-rbd-clone-demo-"))
    except RuntimeError as exc:
        sys.exit(f"demo: {exc}")
    print(f"ready in {time.monotonic() - t0:.1f}s: fsid {cluster.fsid}, directory {cluster.dir}")
    try:
        section("health")
        print(cluster.admin("ceph", "health").strip())
        section("pools")
        print(cluster.admin("ceph", "osd", "pool", "ls", "detail").strip())
        section("users and their caps (least privilege)")
        for user in (cluster.glance_user, cluster.cinder_user):
            caps = json.loads(cluster.admin("ceph", "auth", "get", f"client.{user}", "-f", "json"))[0]["caps"]
            print(f"client.{user}: " + "; ".join(f"{k} '{v}'" for k, v in sorted(caps.items())))
    finally:
        if args.keep:
            print(f"\ncluster left running: tools/ceph-dev-cluster stop {cluster.dir}")
        else:
            cluster.stop()
            print("\ncluster stopped and removed")


if __name__ == "__main__":
    main()
