"""Warm-cache cost of one StoreDetails.properties() call, for an rbd and a file store.

    .venv/bin/python benchmarks/store_properties.py [--ceph-dir DIR] [--calls N]

Without --ceph-dir it boots a dev cluster of its own (tests.devcluster) and
stops it at the end. Prints the median and p99 per call in microseconds, and
how many rados reads happened during the timed calls (0: the cache served all).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from oslo_config import cfg  # noqa: E402

from glance_store_ext import config, registry  # noqa: E402
from tests.devcluster import DevCluster  # noqa: E402


def make_conf(cluster, directory):
    client = cluster.client("glance")
    path = os.path.join(directory, "glance-api.conf")
    with open(path, "w") as f:
        f.write(f"""[DEFAULT]
enabled_backends = ceph:rbd, fast:file
[glance_store]
default_backend = ceph
[ceph]
rbd_store_pool = {cluster.glance_pool}
rbd_store_user = {cluster.glance_user}
rbd_store_ceph_conf = {client['conf']}
rados_connect_timeout = 5
[fast]
filesystem_store_datadir = {os.path.join(directory, 'images')}
""")
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], default_config_files=[path])
    config.register_store_opts(conf)
    return conf


def measure(details, store_id, calls):
    details.properties(store_id)  # warm: provider created, first fsid read done
    samples = []
    clock = time.perf_counter_ns
    for _ in range(calls):
        started = clock()
        details.properties(store_id)
        samples.append(clock() - started)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99) - 1] / 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ceph-dir", help="a running dev cluster's directory (default: boot one)")
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args(argv)

    own = args.ceph_dir is None
    try:
        cluster = DevCluster.start() if own else DevCluster(args.ceph_dir)
    except (RuntimeError, OSError) as e:
        sys.exit(f"store_properties: no Ceph cluster: {e}")
    try:
        with tempfile.TemporaryDirectory() as directory:
            details = registry.StoreDetails(make_conf(cluster, directory),
                                            provider_args={"rbd": {"refresh_interval": 3600}})
            try:
                props = details.properties("ceph")
                if props.get("fsid") != cluster.fsid:
                    sys.exit(f"store_properties: rbd fsid {props.get('fsid')!r} is not the cluster's "
                             f"{cluster.fsid!r}")
                reader = details._providers["ceph"].fsid_reader()
                reads = reader.reads
                print(f"properties() warm cache, {args.calls} calls each")
                for store_id, kind in (("ceph", "rbd"), ("fast", "file")):
                    median, p99 = measure(details, store_id, args.calls)
                    print(f"  {kind:4s}  median {median:7.2f} us   p99 {p99:7.2f} us")
                print(f"  rados reads during the timed calls: {reader.reads - reads}")
            finally:
                details.close()
    finally:
        if own:
            cluster.stop()


if __name__ == "__main__":
    main()
