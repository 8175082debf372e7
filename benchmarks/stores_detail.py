"""Benchmark of GET /v2/info/stores/detail, ours beside upstream Glance 33, in one run.

    .venv/bin/python benchmarks/stores_detail.py [--config-file F] [--requests N] [--duration S]

Without --config-file it starts a dev Ceph cluster (tools/ceph-dev-cluster)
and writes an operator's config for it: rbd (default, not listed first),
file, http. Prints, side by side:

1. In-process cost of one detail request (median, p99, over N requests after
   a warm-up), admin context, same config:
   - ours, v2 router only: routes -> resource -> controller -> serializer
   - upstream Glance 33's v2 router (glance.api.v2.router.API), the same
     scope, run by the glance33 peer venv's python (.peers/glance33)
   - ours, whole WSGI pipeline (proxy headers, request id, version
     negotiation, noauth context, router): what a request really costs here
2. Requests per second of the glance-info-api console script (cheroot) and of
   upstream Glance 33 (the peer) on the same config, each under 32 concurrent
   keep-alive clients for S seconds, role service, with the count of errors
   (non-200 answers and socket errors): the same generator for both, wrk when
   installed (Debian package wrk), else a bounded Python load generator.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.devcluster import DevCluster  # noqa: E402
from tests.info_api import InfoAPI  # noqa: E402
from tests.peers import GlancePeer  # noqa: E402

UPSTREAM_PYTHON = os.path.join(ROOT, ".peers", "glance33", "bin", "python")
CLIENTS = 32
PATH = "/v2/info/stores/detail"

# Runs in the glance33 venv: loads the config as glance-api does (wsgi_app.init_app's
# store set-up), then times upstream's v2 router on one detail request.
UPSTREAM_CODE = r"""
import json, logging, sys, time, warnings
logging.basicConfig(level=logging.CRITICAL)
warnings.filterwarnings("ignore")
import glance_store, webob
from oslo_config import cfg
from glance.common import config, wsgi_app, wsgi
from glance.api.v2 import router
import glance.context
config_file, n = sys.argv[1], int(sys.argv[2])
config.set_config_defaults()
cfg.CONF(["--config-file", config_file], project="glance", prog="glance-api")
glance_store.register_store_opts(cfg.CONF, reserved_stores=wsgi_app.RESERVED_STORES)
glance_store.create_multi_stores(cfg.CONF, reserved_stores=wsgi_app.RESERVED_STORES)
glance_store.verify_store()
from glance.api import policy
app = router.API(wsgi.APIMapper())
# as upstream's ContextMiddleware: one enforcer, handed to every request's context
enforcer = policy.Enforcer()
def once():
    req = webob.Request.blank("/info/stores/detail")
    req.context = glance.context.RequestContext(roles=["admin"], project_id="p1", user_id="u1",
                                                policy_enforcer=enforcer)
    resp = req.get_response(app)
    assert resp.status_int == 200, resp.body
    return resp.body
body = once()
for _ in range(max(10, n // 10)):
    once()
times = []
for _ in range(n):
    t = time.perf_counter(); once(); times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "body": json.loads(body)}))
"""


def stats(times):
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return statistics.median(ordered), p99


def time_ours(config_file, n):
    import webob
    from glance.api.v2 import router
    from glance.common import config
    from glance.api import app as api_app
    from oslo_context import context as oslo_context

    # identity headers trusted (as InfoAPI runs it): the in-process cost, not Keystone's
    overrides = os.path.join(tempfile.mkdtemp(prefix="bench-ours-"), "noauth.conf")
    with open(overrides, "w") as f:
        f.write("[DEFAULT]\nauth_strategy = noauth\n")
    conf = config.load(["--config-file", config_file, "--config-file", overrides])
    application = api_app.Application(conf)
    v2 = router.API(conf, application.enforcer, application.store_details)

    def router_once():
        # the context is built per request on both sides, as their middleware does
        req = webob.Request.blank("/info/stores/detail")
        req.context = oslo_context.RequestContext(roles=["admin"], project_id="p1", user_id="u1")
        resp = req.get_response(v2)
        assert resp.status_int == 200, resp.body
        return resp.body

    def pipeline_once():
        resp = webob.Request.blank(PATH, headers={"X-Roles": "admin"}).get_response(application)
        assert resp.status_int == 200, resp.body
        return resp.body

    results = {}
    try:
        for name, once in (("router", router_once), ("pipeline", pipeline_once)):
            body = once()
            for _ in range(max(10, n // 10)):
                once()
            times = []
            for _ in range(n):
                t = time.perf_counter()
                once()
                times.append(time.perf_counter() - t)
            results[name] = (times, json.loads(body))
    finally:
        application.close()
    return results


def time_upstream(config_file, n):
    if not os.path.exists(UPSTREAM_PYTHON):
        return None, f"no upstream Glance 33 venv at {UPSTREAM_PYTHON} (tools/peers/setup-peers glance33)"
    # cwd "/": our package is also named glance and must not shadow upstream's
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([UPSTREAM_PYTHON, "-c", UPSTREAM_CODE, config_file, str(n)],
                          capture_output=True, text=True, timeout=900, cwd="/", env=env)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return None, f"upstream run failed: {lines[-1] if lines else proc.returncode}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return (out["times"], out["body"]), None


def load_wrk(url, duration):
    proc = subprocess.run([shutil.which("wrk"), "-t", "2", "-c", str(CLIENTS), "-d", f"{duration}s",
                           "--latency", "-H", "X-Roles: service", url + PATH],
                          capture_output=True, text=True, timeout=duration + 60)
    out = proc.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0)
    p50 = re.search(r"50%\s+(\S+)", out).group(1)
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    return {"tool": "wrk -t2 -c32", "rps": rps, "requests": total, "errors": errors,
            "latency": f"p50 {p50}, p99 {p99}"}


def load_python(url, duration):
    host, port = url.split("//")[1].split(":")
    deadline = time.monotonic() + duration
    counts, errors, lock = [0], [0], threading.Lock()

    def client():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        n = bad = 0
        while time.monotonic() < deadline:
            try:
                conn.request("GET", PATH, headers={"X-Roles": "service"})
                resp = conn.getresponse()
                resp.read()
                n += 1
                bad += resp.status != 200
            except (OSError, http.client.HTTPException):
                bad += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
        conn.close()
        with lock:
            counts[0] += n
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    return {"tool": "python http.client x32 threads", "rps": counts[0] / elapsed,
            "requests": counts[0], "errors": errors[0], "latency": "n/a"}


def ms(seconds):
    return f"{seconds * 1000:8.3f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", help="an operator's glance-api.conf (default: the Glance 33 "
                        "peer's, on a dev cluster, and that peer is loaded too)")
    parser.add_argument("--requests", type=int, default=2000, help="timed in-process requests per side")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load")
    args = parser.parse_args()

    cluster = peer = None
    stop = []
    workdir = tempfile.mkdtemp(prefix="bench-stores-detail-")
    try:
        config_file = args.config_file
        if config_file is None:
            print("starting a dev Ceph cluster and upstream Glance 33 on it ...", file=sys.stderr)
            cluster = DevCluster.start(os.path.join(workdir, "ceph"))
            # upstream serves the same glance-api.conf as ours: both measured on one config
            peer = GlancePeer.start(os.path.join(workdir, "glance"), cluster.dir,
                                    default_roles="service")
            stop.append(peer.stop)
            config_file = peer.config_file
        import logging
        logging.disable(logging.WARNING)

        ours = time_ours(config_file, args.requests)
        upstream, why_not = time_upstream(config_file, args.requests)

        print(f"GET {PATH}: in-process cost of one request, {args.requests} requests, admin, "
              f"config {config_file}")
        print(f"  {'':42s} {'median':>11s} {'p99':>11s}")
        rows = [("ours, v2 router (glance.api.v2.router)", ours["router"][0])]
        if upstream:
            rows.append(("upstream Glance 33, v2 router", upstream[0]))
        rows.append(("ours, whole WSGI pipeline", ours["pipeline"][0]))
        for name, times in rows:
            median, p99 = stats(times)
            print(f"  {name:42s} {ms(median)} {ms(p99)}")
        if upstream:
            def strip(doc):
                for s in doc["stores"]:
                    s.get("properties", {}).pop("user", None)
                return doc
            same = strip(json.loads(json.dumps(ours["router"][1]))) == upstream[1]
            print(f"  bodies equal except rbd 'user': {same}")
        else:
            print(f"  upstream Glance 33: not measured: {why_not}")

        svc_dir = os.path.join(workdir, "svc")
        os.makedirs(svc_dir)
        service = InfoAPI(config_file, workdir=svc_dir)
        stop.insert(0, service.stop)
        targets = [("glance-info-api (cheroot)", service.url)]
        if peer is not None:
            targets.append(("upstream Glance 33 (gunicorn, as tools/peers/glance-peer runs it)", peer.url))
        loads = {}
        for name, url in targets:
            loads[name] = load_wrk(url, args.duration) if shutil.which("wrk") else \
                load_python(url, args.duration)
        print(f"{CLIENTS} concurrent keep-alive clients, {args.duration}s each, role service, same "
              f"config, same load generator ({next(iter(loads.values()))['tool']}):")
        for name, load in loads.items():
            print(f"  {name:66s} {load['rps']:8.0f} requests/s, {load['requests']} requests, "
                  f"{load['errors']} errors, latency {load['latency']}")
        if len(loads) == 2:
            ours_rps, up_rps = (load["rps"] for load in loads.values())
            print(f"  ours / upstream: {ours_rps / max(up_rps, 1e-9):.1f}x requests per second")
        return 0 if all(load["errors"] == 0 for load in loads.values()) else 1
    finally:
        for halt in stop:
            halt()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
