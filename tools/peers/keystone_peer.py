"""Run upstream Keystone 30 for real, for the keystone mode of the tests and the demo.

    keystone-peer start DIR [--port N] [--image-url URL] [--short-token-seconds S]
                            [--token-expiration S] [--timeout S]
    keystone-peer endpoint DIR --image-url URL     # create or move the image endpoints
    keystone-peer stop DIR
    keystone-peer status DIR

`start` writes DIR/keystone.conf (sqlite database, fernet tokens, key
repositories in DIR), runs `keystone-manage db_sync`, `fernet_setup`,
`credential_setup` and `bootstrap` (admin user and project, roles admin,
manager, member, reader and service with Keystone's implied roles admin >
manager > member > reader, region RegionOne, identity endpoints), serves
`keystone.wsgi.api:application` with gunicorn on 127.0.0.1:PORT, then
creates over Keystone's own REST API (tools/peers/keystone_provision.py, run
in the Keystone venv):

    project   user      roles                 why
    admin     admin     admin                 the cloud admin (bootstrap)
    demo      member    member                a plain user (implies reader)
    demo      reader    reader                a read-only user
    service   cinder    service, member       Cinder's service user, see below
    service   glance    service               keystonemiddleware's user: validating
                                              tokens needs the service role

Cinder's user: `service` is what Glance 33 asks for on the location API (the
add_image_location policy and its in-code check that `service` is among the
roles or service roles) and what the stores detail policy accepts
(`role:admin or role:service`, ours and upstream's); `member` (implying
reader) on project `service` lets it create, read, upload and delete the
images it works on, which cinder-rbd-clone creates with the same
credentials. No `admin`: nothing in this flow needs it.

Tokens: `[token] expiration` is --token-expiration (default 3600). With
--short-token-seconds S, a second gunicorn serves the same database and the
same fernet keys with `[token] expiration = S` at `short_url`: a token it
issues is a real Keystone token that any Keystone of the pair (and so
keystonemiddleware) rejects as expired S seconds later. The main instance
keeps long-lived tokens: keystoneauth re-authenticates any token with less
than 120 s left before every request, so a short expiration everywhere would
only add load.

The image service (type image, name glance) gets public, internal and admin
endpoints at --image-url, or later with `endpoint` (the Glance peer needs
Keystone's URL first). Passwords are random, written with everything else to
DIR/keystone.json (mode 0600): url, short_url, pids, config_file, region,
users {name: {password, project, domain, roles}}; DIR/clouds.yaml has one
cloud per user (openstacksdk, `--os-cloud`). Logs: DIR/keystone.log,
DIR/gunicorn*.log, DIR/keystone-manage.log, DIR/provision.log.

Development only: bcrypt at its lowest cost (4 rounds) so that password
authentication is cheap on a shared test machine.
Standard library only; the Keystone venv comes from setup_peers (built on first use).
tools/cloud runs its Keystone with these functions too (on MariaDB).
"""

import grp
import json
import os
import pwd
import re
import secrets
import subprocess
import sys
import time

import setup_peers
from peerlib import (EXCEPTION_LINE, HERE, PeerError, answers, check_port, free_port, group_members, ini,
                     last_hit, peer_main, peer_parser, print_status, read_json, spawn, stop_group, venv,
                     write_json, write_private)

VENV = venv("keystone30")
STATE = "keystone.json"
REGION = "RegionOne"


# -- config and state --------------------------------------------------------

def render_conf(d, expiration, connection=None):
    """keystone.conf: fernet, keys in d, the sqlite database in d unless `connection` names another."""
    return ini({
        "DEFAULT": {"log_file": os.path.join(d, "keystone.log"), "debug": "false"},
        "database": {"connection": connection or f"sqlite:///{os.path.join(d, 'keystone.sqlite')}"},
        "token": {"provider": "fernet", "expiration": str(expiration)},
        "fernet_tokens": {"key_repository": os.path.join(d, "fernet-keys")},
        "fernet_receipts": {"key_repository": os.path.join(d, "fernet-keys")},
        "credential": {"key_repository": os.path.join(d, "credential-keys")},
        # dev only: cheap password checks (bcrypt's minimum cost)
        "identity": {"password_hash_algorithm": "bcrypt", "password_hash_rounds": "4"},
        "oslo_concurrency": {"lock_path": os.path.join(d, "locks")},
    })


def new_state(d, port, conf, token_expiration=3600, short_token_seconds=None, venv=VENV):
    """keystone.json before bootstrap: the admin's password drawn here. venv: the Keystone
    release that serves it (tools/cloud --release); every command below runs that one."""
    return {"url": f"http://127.0.0.1:{port}", "port": port, "short_url": None, "pids": [], "dir": d,
            "config_file": conf, "venv": venv, "region": REGION, "token_expiration": token_expiration,
            "short_token_seconds": short_token_seconds or None,
            "users": {"admin": {"password": secrets.token_urlsafe(16), "project": "admin", "domain": "Default",
                                "roles": ["admin"]}},
            "image_url": None}


def read_state(d):
    return read_json(os.path.join(d, STATE))


def venv_of(d):
    """The Keystone venv of the peer in d (its state's), else the default release's."""
    return (read_state(d) or {}).get("venv") or VENV


def write_state(d, state):
    write_json(os.path.join(d, STATE), state)


def write_clouds(d, state):
    lines = ["# openstacksdk / openstackclient: OS_CLIENT_CONFIG_FILE=<this file> --os-cloud USER", "clouds:"]
    for name, user in state["users"].items():
        lines += [f"  {name}:", "    auth:", f"      auth_url: {state['url']}/v3",
                  f"      username: {name}", f"      password: {json.dumps(user['password'])}",
                  f"      project_name: {user['project']}", "      user_domain_name: Default",
                  "      project_domain_name: Default", f"    region_name: {state['region']}",
                  "    identity_api_version: 3", "    interface: public"]
    write_private(os.path.join(d, "clouds.yaml"), "\n".join(lines) + "\n")


# -- Keystone's own commands ---------------------------------------------------

def last_error(d, *names):
    """The most telling line of the logs, for a one-line failure message."""
    return last_hit(d, names or ("gunicorn.log", "keystone-manage.log", "provision.log", "keystone.log"),
                    lambda ln: bool(EXCEPTION_LINE.match(ln)) or " ERROR " in ln
                    or ln.startswith("provision: ") or ": error: " in ln) or f"no error logged (see {d})"


def manage(d, conf, *args, env=None):
    """keystone-manage ARGS, logged to d/keystone-manage.log; env: the whole environment."""
    with open(os.path.join(d, "keystone-manage.log"), "a") as log:
        log.write(f"$ keystone-manage {' '.join(args)}\n")
        log.flush()
        proc = subprocess.run([os.path.join(venv_of(d), "bin", "keystone-manage"), "--config-file", conf, *args],
                              stdout=log, stderr=subprocess.STDOUT, timeout=600, env=env or os.environ)
    if proc.returncode != 0:
        raise PeerError(f"keystone-manage {args[0]} failed: {last_error(d, 'keystone-manage.log', 'keystone.log')}")


def bootstrap(d, conf, state, env=None):
    """The database, the key repositories, then the admin, its roles, region and identity endpoints."""
    env = dict(env or os.environ)
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    url = state["url"] + "/v3"
    manage(d, conf, "db_sync", env=env)
    manage(d, conf, "fernet_setup", "--keystone-user", me, "--keystone-group", group, env=env)
    manage(d, conf, "credential_setup", "--keystone-user", me, "--keystone-group", group, env=env)
    # the password through the environment (OS_BOOTSTRAP_PASSWORD), not the process list
    manage(d, conf, "bootstrap", "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
           "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
           "--bootstrap-region-id", state["region"], "--bootstrap-admin-url", url,
           "--bootstrap-public-url", url, "--bootstrap-internal-url", url,
           env=dict(env, OS_BOOTSTRAP_PASSWORD=state["users"]["admin"]["password"]))


def _worker_deaths(d, tag):
    """gunicorn's master outlives a worker that cannot load the app: count the deaths."""
    try:
        with open(os.path.join(d, f"gunicorn{tag}.log"), errors="replace") as f:
            return sum(1 for line in f if "exited with code" in line or "Worker failed to boot" in line)
    except OSError:
        return 0


def serve(d, port, config_files, tag, timeout, env=None):
    """gunicorn for keystone.wsgi.api:application on 127.0.0.1:port; returns its pid once /v3 answers."""
    env = dict(env or os.environ, OS_KEYSTONE_CONFIG_DIR=d, OS_KEYSTONE_CONFIG_FILES=";".join(config_files))
    gunicorn_conf = os.path.join(d, "gunicorn.conf.py")
    with open(gunicorn_conf, "w") as f:
        # Keystone's oslo.config parses sys.argv in the worker: hide gunicorn's own arguments
        f.write("import sys\ndel sys.argv[1:]\n")
    cmd = [os.path.join(venv_of(d), "bin", "gunicorn"), "--config", gunicorn_conf, "--bind", f"127.0.0.1:{port}",
           "--workers", "1", "--worker-class", "gthread", "--threads", "8",
           "--timeout", "120", "--graceful-timeout", "10",
           "--no-control-socket",  # its default path is shared by every gunicorn of the user
           "--access-logfile", os.path.join(d, f"access{tag}.log"),
           "--error-logfile", os.path.join(d, f"gunicorn{tag}.log"),
           "keystone.wsgi.api:application"]
    proc = spawn(cmd, os.path.join(d, f"gunicorn{tag}.out"), d, env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while not answers(url + "/v3"):
        if proc.poll() is not None or _worker_deaths(d, tag) >= 2:
            stop_group(proc.pid)
            raise PeerError("keystone (gunicorn) could not serve: "
                            f"{last_error(d, f'gunicorn{tag}.out', 'keystone.log', f'gunicorn{tag}.log')}")
        if time.monotonic() > deadline:
            stop_group(proc.pid)
            raise PeerError(f"keystone did not answer GET /v3 within {timeout}s: "
                            f"{last_error(d, f'gunicorn{tag}.log', 'keystone.log')}")
        time.sleep(0.3)
    return proc.pid


def provision(d, *args, env=None, script=os.path.join(HERE, "keystone_provision.py")):
    """`script ARGS` in the Keystone venv (keystoneauth1 is there), as the admin of d/keystone.json;
    its JSON answer."""
    env = dict(env or os.environ, KEYSTONE_PEER_STATE=os.path.join(d, STATE))
    with open(os.path.join(d, "provision.log"), "a") as log:
        proc = subprocess.run([os.path.join(venv_of(d), "bin", "python"), script, *args], env=env, cwd=d,
                              stdout=subprocess.PIPE, stderr=log, text=True, timeout=600)
    if proc.returncode != 0:
        raise PeerError(f"provisioning Keystone failed: {last_error(d, 'provision.log')}")
    return json.loads(proc.stdout or "{}")


def set_image_endpoint(d, state, image_url):
    if not re.match(r"^https?://[^/\s]+", image_url):
        raise PeerError(f"--image-url wants http(s)://host:port, got '{image_url}'")
    provision(d, "image-endpoint", image_url.rstrip("/"))
    state["image_url"] = image_url.rstrip("/")
    write_state(d, state)


# -- commands ------------------------------------------------------------------

def start(args):
    d = os.path.abspath(args.dir)
    if os.path.exists(d) and (not os.path.isdir(d) or os.listdir(d)):
        state = read_state(d)
        if state and any(group_members(p) for p in state.get("pids", [])):
            raise PeerError(f"a Keystone already runs from {d} at {state['url']}")
        raise PeerError(f"{d} is not an empty directory")
    check_port("--port", args.port)
    check_port("--short-port", args.short_port)
    if args.token_expiration < 1 or args.short_token_seconds < 0:
        raise PeerError("token lifetimes must be positive numbers of seconds")
    setup_peers.setup(["keystone30"], log=None)
    port = args.port or free_port()

    for sub in ("", "fernet-keys", "credential-keys", "locks"):
        os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
    conf = os.path.join(d, "keystone.conf")
    with open(conf, "w") as f:
        f.write(render_conf(d, args.token_expiration))
    state = new_state(d, port, conf, args.token_expiration, args.short_token_seconds)
    write_state(d, state)
    bootstrap(d, conf, state)
    try:
        state["pids"].append(serve(d, port, ["keystone.conf"], "", args.timeout))
        write_state(d, state)
        if args.short_token_seconds:
            with open(os.path.join(d, "short-tokens.conf"), "w") as f:
                f.write(f"# the same Keystone, issuing tokens that expire after {args.short_token_seconds} s\n"
                        f"[token]\nexpiration = {args.short_token_seconds}\n"
                        f"[DEFAULT]\nlog_file = {os.path.join(d, 'keystone-short.log')}\n")
            short_port = args.short_port or free_port()
            state["pids"].append(serve(d, short_port, ["keystone.conf", "short-tokens.conf"], "-short",
                                       args.timeout))
            state["short_url"] = f"http://127.0.0.1:{short_port}"
            write_state(d, state)
        state["users"].update(provision(d, "users"))
        write_state(d, state)
        if args.image_url:
            set_image_endpoint(d, state, args.image_url)
        write_clouds(d, state)
    except BaseException:
        for pid in state["pids"]:
            stop_group(pid)
        raise
    print(state["url"])


def endpoint(args):
    d = os.path.abspath(args.dir)
    state = read_state(d)
    if state is None:
        raise PeerError(f"no Keystone peer in {d}")
    if not any(group_members(p) for p in state["pids"]):
        raise PeerError(f"the Keystone peer in {d} is not running")
    set_image_endpoint(d, state, args.image_url)
    print(state["image_url"])


def stop(args):
    d = os.path.abspath(args.dir)
    state = read_state(d)
    if state is None:
        if not os.path.isdir(d):
            raise PeerError(f"no peer directory {d}")
        print(f"keystone-peer: no peer state in {d}; nothing to stop", file=sys.stderr)
        return
    for pid in state.get("pids", []):
        stop_group(pid)
    print(f"stopped {state['url']}")


def status(args):
    d = os.path.abspath(args.dir)
    state = read_state(d)
    if state is None:
        raise PeerError(f"no Keystone peer in {d}")
    up = bool(state["pids"]) and all(group_members(p) for p in state["pids"])
    # status is for humans and scripts alike: no passwords on the terminal
    users = {n: {k: v for k, v in u.items() if k != "password"} for n, u in state["users"].items()}
    print_status(dict(state, users=users), up, lambda: answers(state["url"] + "/v3"))


def main(argv=None):
    p, sub, s = peer_parser("keystone-peer", "Run upstream Keystone 30 on loopback.",
                            "configure, bootstrap, serve and provision; prints the URL")
    s.add_argument("--image-url", help="register the image service's endpoints at this URL")
    s.add_argument("--token-expiration", type=int, default=3600, help="seconds (default 3600)")
    s.add_argument("--short-token-seconds", type=int, default=0,
                   help="also serve a Keystone issuing tokens that expire after this many seconds")
    s.add_argument("--short-port", type=int, help="its port (default: any free port)")
    s.add_argument("--timeout", type=float, default=180, help="seconds to wait for GET /v3")
    e = sub.add_parser("endpoint", help="create or move the image service's endpoints")
    e.add_argument("dir")
    e.add_argument("--image-url", required=True)
    peer_main(p, sub, {"start": start, "endpoint": endpoint, "stop": stop, "status": status}, argv)


if __name__ == "__main__":
    main()
