"""glance-info-api under a fixed number of requests at many keep-alive connections: rate, latency, errors.

    .venv/bin/python benchmarks/stores_detail_load.py [--config-file F] [--requests 20000] \
        [--connections 64] [--time-limit 300]

Without --config-file it starts a dev Ceph cluster (tools/ceph-dev-cluster) and
writes an operator's config for it. Every request is GET /v2/info/stores/detail
with role service; an error is anything but a 200 whose body carries the
cluster's fsid (socket errors and closed keep-alive connections included).
Prints one line: requests / errors / seconds / req/s / p50 / p99 / max.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.devcluster import DevCluster  # noqa: E402
from tests.info_api import InfoAPI, glance_conf_text  # noqa: E402

PATH = "/v2/info/stores/detail"


def load(port, total, connections, fsid, deadline):
    shares = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]

    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        times, errors = [], 0
        try:
            for _ in range(n):
                if time.monotonic() > deadline:
                    errors += n - len(times) - errors  # not sent in time: errors too
                    break
                t0 = time.monotonic()
                try:
                    conn.request("GET", PATH, headers={"X-Roles": "service"})
                    resp = conn.getresponse()
                    body = resp.read()
                    ok = resp.status == 200 and not resp.will_close and (
                        fsid is None or fsid in {s.get("properties", {}).get("fsid")
                                                 for s in json.loads(body)["stores"]})
                except (OSError, http.client.HTTPException, ValueError):
                    conn.close()
                    ok = False
                times.append(time.monotonic() - t0)
                errors += not ok
        finally:
            conn.close()
        return times, errors

    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        results = list(pool.map(worker, shares))
    return [t for ts, _ in results for t in ts], sum(e for _, e in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", help="an operator's glance-api.conf (default: a dev cluster's)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--time-limit", type=float, default=300, help="seconds before giving up")
    args = parser.parse_args()
    if args.requests < 1 or args.connections < 1:
        parser.error("--requests and --connections must be at least 1")

    workdir = tempfile.mkdtemp(prefix="stores-detail-load-")
    cluster = None
    try:
        config, fsid = args.config_file, None
        if config is None:
            cluster = DevCluster.start(os.path.join(workdir, "ceph"))
            config, fsid = os.path.join(workdir, "glance-api.conf"), cluster.fsid
            with open(config, "w") as f:
                f.write(glance_conf_text(workdir, cluster=cluster))
        with InfoAPI(config, workdir=workdir) as svc:
            load(svc.port, 200, min(8, args.connections), fsid, time.monotonic() + 60)  # warm-up
            t0 = time.monotonic()
            times, errors = load(svc.port, args.requests, args.connections, fsid, t0 + args.time_limit)
            elapsed = time.monotonic() - t0
        times.sort()
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))] if times else 0
        print(f"glance-info-api {PATH}: requests {len(times)} / errors {errors} at {args.connections} "
              f"keep-alive connections in {elapsed:.1f} s: {len(times) / elapsed:.0f} req/s, "
              f"p50 {statistics.median(times) * 1000 if times else 0:.1f} ms, p99 {p99 * 1000:.1f} ms, "
              f"max {times[-1] * 1000 if times else 0:.1f} ms")
        return 1 if errors or len(times) != args.requests else 0
    except Exception as exc:  # a benchmark that cannot run says why in one line
        print(f"stores_detail_load: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
              file=sys.stderr)
        return 2
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
