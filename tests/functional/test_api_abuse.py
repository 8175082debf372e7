"""glance-info-api (the console script, a real process) under load, hostile input and a Ceph outage.

Counts come from the environment, so that CI (2 cores) can run a reduced load
and an operator the full one:

    GRC_LOAD_REQUESTS=20000 GRC_FUZZ_EXAMPLES=2000 \
        .venv/bin/python -m pytest tests/functional/test_api_abuse.py -q -s

Each test prints one summary line (requests sent / errors, fuzz cases / 5xx).
"""

import concurrent.futures
import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.parse

from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from tests.devcluster import DevCluster
from tests.info_api import glance_conf_text

LOAD_REQUESTS = int(os.environ.get("GRC_LOAD_REQUESTS", "20000"))
LOAD_CONNECTIONS = int(os.environ.get("GRC_LOAD_CONNECTIONS", "64"))
LOAD_TIME_LIMIT = float(os.environ.get("GRC_LOAD_TIME_LIMIT", "300"))
FUZZ_EXAMPLES = int(os.environ.get("GRC_FUZZ_EXAMPLES", "600"))
DETAIL = "/v2/info/stores/detail"
STORES = "/v2/info/stores"


@pytest.fixture(scope="module")
def service(ceph_cluster, info_api_factory, tmp_path_factory):
    base = tmp_path_factory.mktemp("abuse-conf")
    conf = base / "glance-api.conf"
    conf.write_text(glance_conf_text(str(base), cluster=ceph_cluster))
    svc = info_api_factory(str(conf))
    yield svc
    svc.stop()


def _fsid_of(body):
    stores = {s["id"]: s for s in json.loads(body)["stores"]}
    return stores["ceph"]["properties"]["fsid"]


class LoadResult:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.errors = []  # (what, detail), the first few kept
        self.error_count = 0
        self.slowest = 0.0
        self.bodies = set()

    def error(self, what):
        with self.lock:
            self.error_count += 1
            if len(self.errors) < 10:
                self.errors.append(what)


def run_load(port, total, connections, fsid, deadline, roles="service", keep_bodies=False):
    """`total` GETs over `connections` keep-alive HTTP/1.1 connections, alternating detail and stores.

    Every answer must be 200 on a connection that stays open; every detail
    body must carry `fsid`. Stops at `deadline` (time.monotonic()); what was
    not sent by then counts as errors.
    """
    result = LoadResult()
    share = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]

    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        done = 0
        try:
            for i in range(n):
                if time.monotonic() > deadline:
                    result.error(f"deadline reached with {n - done} requests not sent")
                    with result.lock:
                        result.error_count += n - done - 1
                    return
                path = DETAIL if i % 2 == 0 else STORES
                t0 = time.monotonic()
                try:
                    conn.request("GET", path, headers={"X-Roles": roles})
                    resp = conn.getresponse()
                    body = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    result.error(f"{path}: {type(exc).__name__}: {exc}")
                    conn.close()  # reconnects on the next request
                    continue
                finally:
                    done += 1
                elapsed = time.monotonic() - t0
                with result.lock:
                    result.sent += 1
                    result.slowest = max(result.slowest, elapsed)
                    if keep_bodies:
                        result.bodies.add((path, body))
                if resp.status != 200:
                    result.error(f"{path}: {resp.status} {body[:200]!r}")
                elif resp.will_close:
                    result.error(f"{path}: the server closed a keep-alive connection")
                    conn.close()
                elif path == DETAIL and _fsid_of(body) != fsid:
                    result.error(f"{path}: fsid {_fsid_of(body)!r}, expected {fsid!r}")
        finally:
            conn.close()

    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        list(pool.map(worker, share))
    return result


def test_20000_requests_at_64_keep_alive_connections(service, ceph_cluster, reliability):
    t0 = time.monotonic()
    result = run_load(service.port, LOAD_REQUESTS, LOAD_CONNECTIONS, ceph_cluster.fsid,
                      deadline=t0 + LOAD_TIME_LIMIT)
    elapsed = time.monotonic() - t0
    print(f"\nload: requests sent {result.sent} / errors {result.error_count} "
          f"({LOAD_CONNECTIONS} keep-alive connections, {elapsed:.1f} s, "
          f"{result.sent / elapsed:.0f} req/s, slowest {result.slowest * 1000:.0f} ms)")
    reliability.requests(result.sent, result.error_count)
    assert result.error_count == 0, result.errors
    assert result.sent == LOAD_REQUESTS
    assert "Traceback" not in service.log()


# -- fuzzing through real HTTP --------------------------------------------------------------
# Requests are written on a raw socket: http.client would refuse most of them.

_PATHS = [b"/v2/info/stores", b"/v2/info/stores/detail", b"/v2/info/stores/", b"/v2/info/stores/detail/",
          b"/v2/info", b"/v2/", b"/v2", b"/", b"/versions", b"/healthcheck", b"/v1/info/stores",
          b"/v2/info/stores/ceph", b"/v2/info/stores/detail.json", b"//v2//info//stores",
          b"/v2/info/stores/%2e%2e/detail", b"/v2/info/stores/../stores/detail", b"*",
          b"/v2/info/stores%00", b"/v2/info/stores;x=1", b"http://127.0.0.1/v2/info/stores"]
_METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE", b"CONNECT",
            b"PROPFIND", b"get", b"FOO"]
_IMPLEMENTED = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH"}
_HEADER_NAMES = [b"X-Roles", b"X-Roles", b"Accept", b"Content-Type", b"Content-Length",
                 b"Transfer-Encoding", b"X-Identity-Status", b"X-Project-Id", b"X-User-Id",
                 b"X-Service-Roles", b"X-Auth-Token", b"X-Forwarded-Proto", b"Forwarded",
                 b"X-Openstack-Request-Id", b"Connection", b"Expect", b"Accept-Encoding",
                 b"Accept-Language", b"Range", b"Cookie", b"Host", b"User-Agent"]
_ROLE_VALUES = [b"admin", b"service", b"member", b"reader", b"", b",", b" , ,admin", b"ADMIN",
                b"admin\x00", b"\xff\xfe", "r\u00f4le,admin".encode(), b"admin;service",
                b",".join([b"role%d" % i for i in range(5000)]), b"a" * 100000, b"%61dmin"]


def _bytes_without_crlf(max_size):
    return st.binary(max_size=max_size).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


_header_value = st.one_of(
    st.sampled_from(_ROLE_VALUES),
    _bytes_without_crlf(200),
    st.text(max_size=50).map(lambda t: t.encode("utf-8").replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"application/json", b"text/html", b"text/plain", b"*/*", b"application/xml",
                     b"chunked", b"gzip, chunked", b"-1", b"abc", b"99999999999999999999",
                     b"100-continue", b"close", b"keep-alive", b"bytes=0-1", b"https",
                     b"for=1.2.3.4;proto=https;host=evil", b"Confirmed", b"Invalid"]),
    st.integers(min_value=1, max_value=4).map(lambda k: b"x" * (k * 64 * 1024)),  # huge
)
# mostly names the application reads; some arbitrary tokens, a few arbitrary bytes (-> 400)
_header_name = st.one_of(st.sampled_from(_HEADER_NAMES), st.sampled_from(_HEADER_NAMES),
                         st.from_regex(rb"\A[A-Za-z0-9!#$%&'*+.^_`|~-]{1,40}\Z"),
                         st.binary(min_size=1, max_size=30).filter(
                             lambda b: b":" not in b and b"\r" not in b and b"\n" not in b))
def _pct(safe):
    return lambda b: urllib.parse.quote_from_bytes(b, safe=safe).encode()


def _raw(b):
    # bytes as sent by a broken client: only the request line's framing is kept
    return b.replace(b" ", b"%20").replace(b"\r", b"").replace(b"\n", b"").replace(b"#", b"")


# most paths and queries percent-encoded (they reach the application), some raw (cheroot: 400)
_query = st.one_of(st.just(b""),
                   st.binary(max_size=200).map(_pct("&=%")).map(lambda b: b"?" + b),
                   st.text(max_size=60).map(lambda t: b"?" + urllib.parse.quote(t, safe="&=").encode()),
                   st.binary(max_size=100).map(lambda b: b"?" + _raw(b)),
                   st.sampled_from([b"?limit=1", b"?marker=x&limit=-1", b"?%ff%fe", b"?a=" + b"b" * 8000,
                                    b"?detail=true", b"?" + b"&".join([b"k=v"] * 2000)]))
_path = st.one_of(st.sampled_from(_PATHS), st.sampled_from(_PATHS),
                  st.tuples(st.sampled_from(_PATHS), st.binary(max_size=60).map(_pct("/%;"))).map(
                      lambda t: t[0] + t[1]),
                  st.text(max_size=40).map(lambda t: b"/v2/info/" + urllib.parse.quote(t).encode()),
                  st.tuples(st.sampled_from(_PATHS), st.binary(max_size=30).map(_raw)).map(
                      lambda t: t[0] + t[1]))

_request = st.fixed_dictionaries({
    "method": st.sampled_from(_METHODS),
    "path": _path,
    "query": _query,
    "version": st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]),
    "headers": st.lists(st.tuples(_header_name, _header_value), max_size=8),
    # malformed header lines in one case out of four
    "malformed": st.one_of(st.just([]), st.just([]), st.just([]), st.lists(st.sampled_from(
        [b"NoColonHere", b": empty-name", b" leading-space: x", b"X-Roles : admin",
         b"X-Roles:\tadmin", b"\x00\x01: x"]), min_size=1, max_size=2)),
    "body": st.one_of(st.just(b""), st.just(b""), st.binary(max_size=300)),
})


def _send_raw(port, raw, timeout=15):
    """Send bytes, close our side, read the whole answer; (status, headers, body) or None if no answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)  # the server sees EOF instead of waiting for more body
        except OSError:
            pass  # the server may answer (400/413) and close before reading everything
        resp = http.client.HTTPResponse(sock, method="HEAD" if raw.startswith(b"HEAD ") else None)
        try:
            resp.begin()
            return resp.status, resp.getheaders(), resp.read()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return None
        except http.client.IncompleteRead as exc:
            return resp.status, resp.getheaders(), exc.partial


def _raw_request(case):
    lines = [case["method"] + b" " + case["path"] + case["query"] + b" " + case["version"],
             b"Host: 127.0.0.1"]
    lines += [name + b": " + value for name, value in case["headers"]]
    lines += case["malformed"]
    if case["body"] and not any(n.lower() in (b"content-length", b"transfer-encoding")
                                for n, _ in case["headers"]):
        lines.append(b"Content-Length: %d" % len(case["body"]))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + case["body"]


def test_fuzz_both_endpoints_no_5xx_no_traceback(service, ceph_cluster, reliability):
    stats = {"cases": 0, "5xx": 0, "501_by_design": 0, "no_answer": 0, "statuses": {}}
    failures = []

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=_request)
    def one(case):
        raw = _raw_request(case)
        answer = _send_raw(service.port, raw)
        stats["cases"] += 1
        if answer is None:
            # a request the server cannot parse may be dropped; it must still serve the next one
            stats["no_answer"] += 1
            return
        status, headers, body = answer
        stats["statuses"][status] = stats["statuses"].get(status, 0) + 1
        if b"Traceback" in body or any("Traceback" in v for _, v in headers):
            failures.append(("traceback", raw[:300], body[:300]))
        if status >= 500:
            # two 501s by design: upstream Glance's router answers 501 for a method it
            # does not implement on a path it does not route; cheroot answers 501 for a
            # transfer coding it does not know, as RFC 9112 section 6.1 asks
            unknown_coding = any(n.lower() == b"transfer-encoding" and v.strip().lower() != b"chunked"
                                 for n, v in case["headers"])
            if status == 501 and (case["method"] not in _IMPLEMENTED or unknown_coding):
                stats["501_by_design"] += 1
            else:
                stats["5xx"] += 1
                failures.append((status, raw[:300], body[:300]))

    one()
    reliability.fuzz(stats["cases"], stats["5xx"])
    print(f"\nfuzz: cases {stats['cases']} / 5xx {stats['5xx']} "
          f"(501 for an unimplemented method or transfer coding: {stats['501_by_design']}, "
          f"dropped unparsable: {stats['no_answer']}, statuses {dict(sorted(stats['statuses'].items()))})")
    assert failures == [], failures[:5]
    assert stats["cases"] >= min(FUZZ_EXAMPLES, 100)
    # still serving, with the live fsid, and nothing unexpected in its log
    conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
    conn.request("GET", DETAIL, headers={"X-Roles": "admin"})
    resp = conn.getresponse()
    assert resp.status == 200 and _fsid_of(resp.read()) == ceph_cluster.fsid
    conn.close()
    assert "Traceback" not in service.log()
    assert "Unexpected error" not in service.log()


@pytest.mark.parametrize("raw", [
    b"GET /v2/info/stores/detail HTTP/1.1\r\nHost: x\r\nX-Roles: " + b"a," * 400000 + b"\r\n\r\n",
    b"GET /v2/info/stores/detail HTTP/1.1\r\nHost: x\r\n" + b"X-Roles: admin\r\n" * 5000 + b"\r\n",
    b"GET /v2/info/stores/detail HTTP/1.1\r\nHost: x\r\nX-Roles: \xc3\xa9\xff\r\n\r\n",
    b"GET /v2/info/stores/detail HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab",
    b"GET /v2/info/stores/detail HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /v2/info/stores/" + b"\xff" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    b"GARBAGE\r\n\r\n",
])
def test_hostile_requests_get_a_4xx_or_are_dropped(service, raw):
    answer = _send_raw(service.port, raw)
    if answer is not None:
        status, _, body = answer
        assert status < 500 and b"Traceback" not in body, (status, body[:300])
    assert _send_raw(service.port, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")[0] == 200


@pytest.mark.parametrize("path", [b"/v2/info/stores/%C1", b"/v2/info/stores/detail%ff", b"/%C1",
                                  b"/v2/info%E9t%E9", b"/healthcheck%C1"])
def test_a_path_that_is_not_utf8_is_a_400_not_a_500(service, path):
    # found by the fuzzer: webob decodes PATH_INFO as UTF-8 deep inside the pipeline and the
    # UnicodeDecodeError escaped to cheroot (500, traceback in the log)
    status, headers, body = _send_raw(
        service.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nX-Roles: admin\r\nConnection: close\r\n\r\n")
    assert status == 400, (status, body)
    assert json.loads(body)["message"].startswith("Error decoding your request.")
    assert dict(headers).get("x-openstack-request-id", "").startswith("req-")
    assert "Traceback" not in service.log()


# -- the Ceph cluster going away while under load ------------------------------------------

def _kill(pid_file):
    with open(pid_file) as f:
        pid = int(f.read().strip())
    os.kill(pid, signal.SIGKILL)  # an abrupt loss, as a crashed host
    return pid


def test_cluster_going_away_under_load_keeps_answering_with_the_cached_fsid(
        info_api_factory, tmp_path, monkeypatch, reliability):
    cluster = DevCluster.start(str(tmp_path / "doomed"))
    try:
        conf = tmp_path / "glance-api.conf"
        # reads bounded at 2 s; the service re-reads every second, so the outage is noticed
        conf.write_text(glance_conf_text(str(tmp_path), cluster=cluster,
                                         ceph={"rados_connect_timeout": 2}))
        monkeypatch.setenv("GLANCE_STORE_EXT_FSID_REFRESH", "1")
        monkeypatch.setenv("GLANCE_STORE_EXT_FSID_RETRY", "1")
        svc = info_api_factory(str(conf))
        try:
            before = run_load(svc.port, 400, 8, cluster.fsid, time.monotonic() + 60, keep_bodies=True)
            assert before.error_count == 0, before.errors
            healthy_bodies = before.bodies
            assert {p for p, _ in healthy_bodies} == {DETAIL, STORES} and len(healthy_bodies) == 2

            # load running while the monitor and the OSD die
            stop = threading.Event()
            during = []

            def background():
                while not stop.is_set():
                    during.append(run_load(svc.port, 200, 8, cluster.fsid, time.monotonic() + 60,
                                           keep_bodies=True))

            loader = threading.Thread(target=background)
            loader.start()
            time.sleep(1)
            run = os.path.join(cluster.dir, "run")
            _kill(os.path.join(run, "mon.a.pid"))
            osd_pids = [f for f in os.listdir(run) if f.startswith("osd.") and f.endswith(".pid")]
            assert osd_pids, os.listdir(run)
            for f in osd_pids:
                _kill(os.path.join(run, f))
            # several refresh periods, each read timing out after 2 s
            deadline = time.monotonic() + 30
            while "cannot read the Ceph cluster fsid" not in svc.log() and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(5)
            stop.set()
            loader.join(120)
            assert not loader.is_alive()
        finally:
            log = svc.log()
            svc.stop()
        sent = sum(r.sent for r in during)
        errors = sum(r.error_count for r in during)
        slowest = max(r.slowest for r in during)
        print(f"\nceph outage: requests sent {sent} / errors {errors}, slowest {slowest * 1000:.0f} ms")
        reliability.requests(sent, errors)
        reliability.fault("stores-info: monitor and OSD killed under load", errors == 0,
                          outcome=f"{errors} errors in {sent} requests")
        assert errors == 0, [e for r in during for e in r.errors][:5]
        assert sent >= 1000
        # the outage was real: the refresher saw it, and said so once, without secrets
        assert "cannot read the Ceph cluster fsid: the cluster did not answer" in log
        assert "reporting the last fsid read" in log
        # nothing visible changed: byte-identical bodies, and no request waited on Ceph
        assert set().union(*(r.bodies for r in during)) == healthy_bodies
        assert slowest < 2.0
    finally:
        cluster.stop()
