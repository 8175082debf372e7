#!/usr/bin/env python3
"""The image endpoint of a Glance with glance-info-api beside it: what an operator's
load balancer does, as a small streaming reverse proxy (standard library only).

    front_door.py PORT GLANCE_URL INFO_API_URL

Exactly the paths in STORES_INFO_PATHS (query string aside) go to
glance-info-api; everything else, Glance's own /v2/info/import and
/v2/info/usage included, goes to Glance. The demo, the tests and tools/cloud
use this one implementation; the README gives the same rule for HAProxy.
"""

import http.client
import http.server
import socketserver
import sys
import threading
import time
import urllib.parse

# the only paths glance-info-api answers for Glance's endpoint
STORES_INFO_PATHS = ("/v2/info/stores", "/v2/info/stores/detail")


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        # a client that stops reading a download early is normal traffic, not an error
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


HOP = ("host", "transfer-encoding", "content-length", "connection", "keep-alive")


class FrontDoor:
    """A streaming HTTP/1.1 reverse proxy: an exact path picks its upstream, else the default.

    Request and response bodies stream in both directions (chunked stays
    chunked): Cinder uploads volumes through it.
    """

    def __init__(self, default, routes=(), port=0):
        self.default = default
        self.routes = [(path.rstrip("/"), url) for path, url in routes]
        router = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _chunks(self):
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return
                    yield self.rfile.read(size)
                    self.rfile.readline()

            def _sized(self, n):
                while n > 0:
                    block = self.rfile.read(min(n, 1 << 20))
                    if not block:
                        return
                    n -= len(block)
                    yield block

            def _any(self):
                upstream = router.pick(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                headers["Host"] = upstream.netloc
                chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
                length = int(self.headers.get("Content-Length") or 0)
                conn = http.client.HTTPConnection(upstream.netloc, timeout=300)
                try:
                    if chunked:
                        conn.request(self.command, self.path, body=self._chunks(), headers=headers,
                                     encode_chunked=True)
                    else:
                        if length:
                            headers["Content-Length"] = str(length)
                        conn.request(self.command, self.path,
                                     body=self._sized(length) if length else None, headers=headers)
                    resp = conn.getresponse()
                except OSError as e:
                    self.send_error(502, f"upstream {upstream.netloc}: {e}")
                    return
                try:
                    self.send_response_only(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in HOP:
                            self.send_header(k, v)
                    size = resp.getheader("Content-Length")
                    no_body = self.command == "HEAD" or resp.status in (204, 304)
                    if size is not None:
                        self.send_header("Content-Length", size)
                    elif not no_body:
                        self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if no_body:
                        return
                    while True:
                        block = resp.read1(1 << 20) if hasattr(resp, "read1") else resp.read(1 << 20)
                        if not block:
                            break
                        if size is None:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                        else:
                            self.wfile.write(block)
                    if size is None:
                        self.wfile.write(b"0\r\n\r\n")
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _any

        self.server = _Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @classmethod
    def for_glance(cls, glance_url, info_api_url, port=0):
        """The deployment the README tells operators to run: Glance, our two paths beside it."""
        return cls(glance_url, [(path, info_api_url) for path in STORES_INFO_PATHS], port=port)

    def pick(self, path):
        # exact paths only: /v2/info/import and /v2/info/usage must stay with Glance
        bare = urllib.parse.urlsplit(path).path.rstrip("/")
        for exact, url in self.routes:
            if bare == exact:
                return urllib.parse.urlsplit(url)
        return urllib.parse.urlsplit(self.default)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or not argv[0].isdigit():
        print("usage: front_door.py PORT GLANCE_URL INFO_API_URL", file=sys.stderr)
        return 2
    try:
        door = FrontDoor.for_glance(argv[1], argv[2], port=int(argv[0]))
    except OSError as e:
        print(f"front_door: cannot listen on 127.0.0.1:{argv[0]}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"front door on {door.url}: {', '.join(STORES_INFO_PATHS)} -> {argv[2]}, "
          f"the rest -> {argv[1]}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
