"""glance-info-api: serve the stores-info API with cheroot.

    glance-info-api --config-file /etc/glance/glance-api.conf [--config-file glance-info-api.conf]

It reads Glance's own glance-api.conf (stores, [keystone_authtoken], [oslo_policy]),
but listens and logs as its own [glance_info_api] section says: port 9293 and
standard error by default, never Glance's 9292 or Glance's log file.

cheroot: a thread pool, HTTP/1.1 keep-alive, idle connections parked in a
selector rather than holding a thread. SIGTERM and SIGINT stop it cleanly.
Any start-up problem is one line on stderr and exit status 1.
"""

import os
import signal
import sys
import threading

from cheroot import wsgi as cheroot_wsgi
from oslo_log import log as logging

from glance.common import config
from glance.common import service

LOG = logging.getLogger(__name__)
PROG = "glance-info-api"


def _fail(message):
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def make_server(conf, application):
    own = conf[config.SERVER_GROUP]
    server = cheroot_wsgi.Server((own.bind_host, own.bind_port), application,
                                 numthreads=own.server_threads,
                                 server_name=PROG,
                                 timeout=own.client_socket_timeout or None,
                                 reuse_port=own.workers > 1)
    server.stats["Enabled"] = False
    server.keep_alive_conn_limit = own.max_keepalive_connections
    return server


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        conf = service.load_config(argv)
        application = service.build_application(conf)
    except config.ConfigError as exc:
        return _fail(f"configuration error: {exc}")
    except Exception as exc:  # anything else at start-up: still one line; details at debug level
        LOG.debug("start-up failed", exc_info=True)
        return _fail(f"cannot start: {type(exc).__name__}: {exc}")
    own = conf[config.SERVER_GROUP]
    if own.workers > 1 and own.bind_port == 0:
        application.close()
        return _fail(f"configuration error: [{config.SERVER_GROUP}] workers > 1 needs a fixed bind_port")
    # every store's fsid read before the first request can arrive (bounded by each
    # store's connect timeout): no request waits for Ceph
    application.warm()
    if own.workers > 1:
        return _serve_workers(conf, application)
    return _serve(conf, application)


def _serve(conf, application):
    server = make_server(conf, application)
    try:
        server.prepare()  # binds: a busy port fails here, before we say we serve
    except OSError as exc:
        application.close()
        own = conf[config.SERVER_GROUP]
        return _fail(f"cannot listen on {own.bind_host}:{own.bind_port}: {exc.strerror or exc}")

    def stop(signum, frame):
        LOG.info("Signal %s received: stopping", signum)
        # stop() joins the worker threads: not from inside the serving thread's signal handler
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = server.bind_addr[:2]
    LOG.info("%s serving on http://%s:%s (auth_strategy = %s, %d threads)", PROG, host, port,
             conf.auth_strategy, conf[config.SERVER_GROUP].server_threads)
    try:
        server.serve()
    finally:
        server.stop()
        application.close()
    return 0


def _serve_workers(conf, application):
    """Fork [glance_info_api] workers processes, each a whole server on the same port (SO_REUSEPORT).

    The parent only supervises: it stops every worker on SIGTERM/SIGINT, and all of
    them when one dies, so that a half-serving set never hides behind a health check.
    Each child restarts the fsid refresher (threads do not survive a fork).
    """
    children = []
    own = conf[config.SERVER_GROUP]
    for _ in range(own.workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = _serve(conf, application)
            finally:
                os._exit(code)
        children.append(pid)
    LOG.info("%s: %d worker processes on %s:%s", PROG, len(children), own.bind_host, own.bind_port)

    def stop_all(signum=signal.SIGTERM, frame=None):
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        if pid in children:
            children.remove(pid)
            if code != 0 and status == 0:
                status = 1
                stop_all()
    application.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
