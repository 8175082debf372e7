"""Run upstream Glance 33 for real, on the dev Ceph cluster, for interop tests and the demo.

    glance-peer start DIR --ceph-dir CLUSTERDIR [--port N] [--default-roles admin]
                          [--auth headers|keystone [--keystone-dir KSDIR | --keystone-url URL
                           --keystone-password PW [--keystone-user glance] [--keystone-project service]]]
                          [--set SECTION.OPTION=VALUE ...] [--timeout S] [--release SERIES]
    glance-peer stop DIR
    glance-peer status DIR

`start` writes DIR/glance-api.conf and DIR/glance-api-paste.ini, syncs a
sqlite database in DIR, serves `glance.wsgi.api:application` (config dir from
OS_GLANCE_CONFIG_DIR, as upstream's wsgi entry point reads it) with gunicorn
(gthread: it decodes chunked request bodies) on 127.0.0.1:PORT, waits until
GET /versions answers and prints the URL. DIR/peer.json records url, pid,
config file and cluster for whoever drives it. Logs: DIR/glance-api.log,
DIR/gunicorn.log. The sqlite database runs with BEGIN IMMEDIATE
transactions (tools/peers/peer_sqlite.py): Glance's task threads otherwise
hit "database is locked".

Stores: `enabled_backends = fast:file, ceph:rbd, web:http`, default `ceph`
(deliberately not listed first), rbd as the cluster's glance user.

Identity: upstream's `context` filter reads X-Identity-Status: Confirmed,
X-Roles, X-Project-Id, X-User-Id, X-Service-Roles; in front of it,
tools/peers/peer_identity.py fills in any of them the request does not send
(roles --default-roles, project/user `peer-admin`), so the glance CLI,
which sends only X-Auth-Token, works as admin. Never for production.

--auth keystone: real tokens instead. `[paste_deploy] flavor = keystone`
selects upstream's own `keystone` pipeline (authtoken context, the paste file
left as upstream ships it) and `[keystone_authtoken]` points
keystonemiddleware at a Keystone as the `glance` service user (from a
tools/peers/keystone-peer directory with --keystone-dir, or --keystone-url
and --keystone-password). Identity headers a client sends are then stripped
by auth_token; --default-roles does not apply.

--release SERIES: that series' Glance (tools/peers/releases.py; default the newest, 33).

Standard library only; the Glance venv comes from setup_peers (built on first use).
"""

import json
import os
import subprocess
import sys
import time

import releases
import setup_peers
from peerlib import (EXCEPTION_LINE, HERE, PeerError, alive, answers, check_port, free_port, group_members,
                     ini, last_hit, peer_main, peer_parser, print_status, read_json, spawn, stop_group, venv,
                     write_json)

VENV = venv("glance33")  # the newest release's; --release SERIES runs that series' Glance
STATE = "peer.json"
STORES = "fast:file, ceph:rbd, web:http"
HEALTHCHECK = "disable_by_file_path = /etc/glance/healthcheck_disable"
DEFAULT_PIPELINE = ("default = cors http_proxy_to_wsgi versionnegotiation osprofiler unauthenticated-context "
                    "rootapp")


# -- config ----------------------------------------------------------------

def cluster_info(ceph_dir):
    path = os.path.join(ceph_dir, "cluster.json")
    if not os.path.isfile(path):
        raise PeerError(f"no dev Ceph cluster at {ceph_dir} (missing cluster.json; start one with "
                        "tools/ceph-dev-cluster)")
    try:
        with open(path) as f:
            state = json.load(f)
        user = state["users"]["glance"]
        client = state["clients"][user]
        return {"fsid": state["fsid"], "pool": state["pools"]["images"], "user": user,
                "conf": client["conf"], "keyring": client["keyring"]}
    except (ValueError, KeyError) as e:
        raise PeerError(f"{path} is not a dev cluster state file (missing {e})")


def keystone_info(args):
    """URL and glance service user credentials for [keystone_authtoken], or None for --auth headers."""
    if args.auth != "keystone":
        if args.keystone_dir or args.keystone_url or args.keystone_password:
            raise PeerError("--keystone-* options need --auth keystone")
        return None
    if args.keystone_dir:
        path = os.path.join(os.path.abspath(args.keystone_dir), "keystone.json")
        try:
            with open(path) as f:
                state = json.load(f)
            user = state["users"][args.keystone_user]
            return {"url": state["url"], "username": args.keystone_user, "password": user["password"],
                    "project": user["project"]}
        except OSError:
            raise PeerError(f"no Keystone peer at {args.keystone_dir} (missing {path}; start one with "
                            "tools/peers/keystone-peer)")
        except (ValueError, KeyError) as e:
            raise PeerError(f"{path} has no user {args.keystone_user} (missing {e})")
    if not args.keystone_url or not args.keystone_password:
        raise PeerError("--auth keystone needs --keystone-dir, or --keystone-url and --keystone-password")
    return {"url": args.keystone_url.rstrip("/"), "username": args.keystone_user,
            "password": args.keystone_password, "project": args.keystone_project}


def render_conf(d, ceph, overrides, keystone=None):
    sections = {
        "DEFAULT": {
            "enabled_backends": STORES,
            "show_image_direct_url": "true",
            # Glance 33 has POST/GET /v2/images/{id}/locations (API v2.17,
            # policies add_image_location / fetch_image_location), which need
            # no exposed locations; the legacy PATCH /locations needs this true.
            "show_multiple_locations": "false",
            "log_file": os.path.join(d, "glance-api.log"),
            "debug": "true",
            # no [DEFAULT] auth_strategy in Glance 33's API: auth is the paste
            # pipeline (see glance-api-paste.ini), chosen by [paste_deploy] flavor
        },
        "database": {"connection": f"sqlite:///{os.path.join(d, 'glance.sqlite')}"},
        "paste_deploy": {"config_file": os.path.join(d, "glance-api-paste.ini")},
        "oslo_concurrency": {"lock_path": os.path.join(d, "locks")},
        "glance_store": {"default_backend": "ceph"},
        "fast": {"filesystem_store_datadir": os.path.join(d, "images"),
                 "store_description": "Local files"},
        "ceph": {"rbd_store_pool": ceph["pool"], "rbd_store_user": ceph["user"],
                 "rbd_store_ceph_conf": ceph["conf"], "rbd_store_chunk_size": "8",
                 "store_description": "Ceph RBD"},
        "web": {"store_description": "Read-only HTTP"},
        "os_glance_staging_store": {"filesystem_store_datadir": os.path.join(d, "staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": os.path.join(d, "tasks")},
    }
    if keystone:
        # upstream's keystone pipeline: authtoken context (see glance-api-paste.ini)
        sections["paste_deploy"]["flavor"] = "keystone"
        sections["keystone_authtoken"] = {
            "www_authenticate_uri": keystone["url"], "auth_url": keystone["url"],
            "auth_type": "password", "username": keystone["username"], "password": keystone["password"],
            "project_name": keystone["project"], "user_domain_name": "Default",
            "project_domain_name": "Default",
            # an X-Service-Token must carry the service role to count (Glance reads X-Service-Roles)
            "service_token_roles_required": "true",
        }
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, option = key.rpartition(".")
        if not sep or not dot or not option:
            raise PeerError(f"--set wants SECTION.OPTION=VALUE, got '{item}'")
        sections.setdefault(section, {})[option] = value
    return ini(sections)


def render_paste(d, default_roles, keystone=False, glance_venv=VENV):
    # upstream's own paste file, changed only where identity comes from (and the
    # healthcheck's disable file, which moves into d)
    src = os.path.join(glance_venv, "etc", "glance", "glance-api-paste.ini")
    with open(src) as f:
        text = f.read().replace(HEALTHCHECK, f"disable_by_file_path = {os.path.join(d, 'healthcheck_disable')}")
    if keystone:  # the keystone pipeline as shipped
        return text
    if DEFAULT_PIPELINE not in text:
        raise PeerError(f"{src}: the default pipeline is not upstream Glance 33's; cannot adapt it")
    text = text.replace(DEFAULT_PIPELINE, DEFAULT_PIPELINE.replace("unauthenticated-context",
                                                                   "peer-identity context"))
    return text + ("\n# tools/peers/peer_identity.py: fills in identity headers the request lacks\n"
                   "[filter:peer-identity]\npaste.filter_factory = peer_identity:filter_factory\n"
                   f"default_roles = {default_roles}\n")


# -- process ---------------------------------------------------------------

def last_error(d):
    """The most telling line of the logs, for a one-line failure message: a traceback's last
    line (gunicorn logs the app's failure to load so), else an ERROR line of Glance's log (the
    store loader's complaint that the cinder store lacks os-brick is expected and harmless)."""
    return (last_hit(d, ("gunicorn.log", "db_sync.log"), EXCEPTION_LINE.match, cut=slice(None, 300))
            or last_hit(d, ("glance-api.log",), lambda ln: " ERROR " in ln and "Could not load" not in ln)
            or f"no error logged (see {d})")


def versions_answer(url):
    return answers(url + "/versions", codes=(200, 300))


def start(args):
    d = os.path.abspath(args.dir)
    if os.path.exists(d) and (not os.path.isdir(d) or os.listdir(d)):
        state = read_json(os.path.join(d, STATE))
        if state and alive(state["pid"]):
            raise PeerError(f"a peer already runs from {d} at {state['url']} (pid {state['pid']})")
        raise PeerError(f"{d} is not an empty directory")
    ceph = cluster_info(os.path.abspath(args.ceph_dir))
    keystone = keystone_info(args)
    check_port("--port", args.port)
    port = args.port or free_port()
    name = releases.peer("glance", args.release)
    setup_peers.setup([name], log=None)
    glance_venv = venv(name)

    conf_text = render_conf(d, ceph, args.set or [], keystone)  # bad --set: nothing created
    for sub in ("", "images", "staging", "tasks", "locks"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    conf = os.path.join(d, "glance-api.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    with open(os.path.join(d, "glance-api-paste.ini"), "w") as f:
        f.write(render_paste(d, args.default_roles, keystone is not None, glance_venv))

    with open(os.path.join(d, "db_sync.log"), "w") as log:
        proc = subprocess.run([os.path.join(glance_venv, "bin", "glance-manage"), "--config-file", conf, "db_sync"],
                              stdout=log, stderr=subprocess.STDOUT, timeout=600)
    if proc.returncode != 0:
        raise PeerError(f"glance-manage db_sync failed: {last_error(d)}")

    gunicorn_conf = os.path.join(d, "gunicorn.conf.py")
    with open(gunicorn_conf, "w") as f:
        # runs in the master before the worker forks and loads Glance
        f.write(f"import sys\nsys.path.insert(0, {HERE!r})\nimport peer_sqlite\npeer_sqlite.install()\n")
    # one worker: the sqlite database and the location/import task pool live
    # in-process; threads serve concurrent requests
    cmd = [os.path.join(glance_venv, "bin", "gunicorn"), "--config", gunicorn_conf, "--bind", f"127.0.0.1:{port}",
           "--workers", "1", "--worker-class", "gthread", "--threads", "8",
           "--timeout", "600", "--graceful-timeout", "10", "--pythonpath", HERE,
           "--no-control-socket",  # its default path is shared by every gunicorn of the user
           "--access-logfile", os.path.join(d, "access.log"),
           # the request's framing too: tests prove chunked uploads arrive decoded
           "--access-logformat",
           '%(h)s "%(r)s" %(s)s %(b)s te=%({transfer-encoding}i)s cl=%({content-length}i)s %(L)ss',
           "--error-logfile", os.path.join(d, "gunicorn.log"),
           "--pid", os.path.join(d, "gunicorn.pid"),
           "glance.wsgi.api:application"]
    proc = spawn(cmd, os.path.join(d, "gunicorn.out"), d, dict(os.environ, OS_GLANCE_CONFIG_DIR=d))
    url = f"http://127.0.0.1:{port}"
    write_json(os.path.join(d, STATE), {
        "url": url, "port": port, "pid": proc.pid, "dir": d, "config_file": conf,
        "ceph_dir": os.path.abspath(args.ceph_dir), "venv": glance_venv, "fsid": ceph["fsid"],
        "pool": ceph["pool"], "default_roles": None if keystone else args.default_roles,
        "auth": "keystone" if keystone else "headers", "keystone_url": keystone["url"] if keystone else None},
        mode=0o644)

    deadline = time.monotonic() + args.timeout
    while not versions_answer(url):
        if proc.poll() is not None:
            stop_group(proc.pid)
            raise PeerError(f"glance-api exited with status {proc.returncode}: {last_error(d)}")
        if time.monotonic() > deadline:
            stop_group(proc.pid)
            raise PeerError(f"glance-api did not answer GET /versions within {args.timeout}s: {last_error(d)}")
        time.sleep(0.3)
    print(url)


def stop(args):
    d = os.path.abspath(args.dir)
    state = read_json(os.path.join(d, STATE))
    if state is None:
        if not os.path.isdir(d):
            raise PeerError(f"no peer directory {d}")
        print(f"glance-peer: no peer state in {d}; nothing to stop", file=sys.stderr)
        return
    stop_group(state["pid"])
    print(f"stopped {state['url']}")


def status(args):
    d = os.path.abspath(args.dir)
    state = read_json(os.path.join(d, STATE))
    if state is None:
        raise PeerError(f"no peer in {d}")
    print_status(state, bool(group_members(state["pid"])), lambda: versions_answer(state["url"]))


def main(argv=None):
    p, sub, s = peer_parser("glance-peer", "Run upstream Glance 33 on the dev Ceph cluster.",
                            "configure, db_sync and serve; prints the URL")
    s.add_argument("--ceph-dir", required=True, help="a dev cluster directory (tools/ceph-dev-cluster)")
    s.add_argument("--default-roles", default="admin",
                   help="roles of a request that sends no X-Roles (default: admin)")
    s.add_argument("--auth", choices=("headers", "keystone"), default="headers",
                   help="headers: identity headers trusted (default); keystone: real tokens")
    s.add_argument("--keystone-dir", help="a tools/peers/keystone-peer directory (URL and password from it)")
    s.add_argument("--keystone-url", help="Keystone's URL for [keystone_authtoken]")
    s.add_argument("--keystone-password", help="the service user's password")
    s.add_argument("--keystone-user", default="glance", help="service user (default: glance)")
    s.add_argument("--keystone-project", default="service", help="its project (default: service)")
    s.add_argument("--set", action="append", metavar="SECTION.OPTION=VALUE",
                   help="override or add a glance-api.conf option; repeatable")
    s.add_argument("--timeout", type=float, default=180, help="seconds to wait for GET /versions")
    s.add_argument("--release", choices=sorted(releases.SERIES), default=releases.NEWEST,
                   help=f"the series whose Glance runs (releases.py; default {releases.NEWEST})")
    peer_main(p, sub, {"start": start, "stop": stop, "status": status}, argv)


if __name__ == "__main__":
    main()
