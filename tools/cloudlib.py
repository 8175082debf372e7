"""What tools/cloud's commands and their users share: the cloud's paths and constants, its
state file, ports, waiting, ini files, Keystone tokens; and Cloud, a running cloud as its
users see it (the `openstack` CLI as any of them, REST for polling, its Ceph, cinder-volume's
log), the library of tests/cloud, tools/cloud_tempest.py and tools/demo_openstack.py.

Who imports whom in tools/ (tests/unit/test_tools_imports.py keeps it free of cycles):

    peers/peerlib.py <- peers/setup_peers.py <- peers/glance_peer.py, peers/keystone_peer.py
    peers/peerlib.py <- cloudlib.py <- cloud_tempest.py, demo_openstack.py
    cloudlib.py, cloud_tempest.py, peers/keystone_peer.py <- cloud.py (tools/cloud, the CLI)

Cloud reaches the CLI as a command (`tools/cloud start|stop|clone`), never by import: the
services start from `/`, away from the checkout (our `glance` package shares upstream
Glance's import name). Standard library only: tools/cloud runs it with Debian's python3,
the tests in the project's venv.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.join(HERE, "peers") not in sys.path:
    sys.path.insert(0, os.path.join(HERE, "peers"))
import releases  # noqa: E402  tools/peers/releases.py
from peerlib import PEERS_DIR, ROOT, ini, write_private  # noqa: E402

CLOUD = os.path.join(HERE, "cloud")  # the CLI


def venvs(release=releases.NEWEST):
    """The virtualenvs a cloud of that series runs (tools/peers/releases.py): its Keystone,
    Glance and Cinder; the clients and the project's own are the same for every series."""
    return {**{svc: os.path.join(PEERS_DIR, releases.peer(svc, release)) for svc in ("keystone", "glance", "cinder")},
            "clients": os.path.join(PEERS_DIR, "clients"), "project": os.path.join(ROOT, ".venv")}


VENVS = venvs()  # the newest series'
STATE = "cloud.json"
PURGE_INTERVAL = 10  # seconds: deferred_deletion_purge_interval of the cloud's backend


class CloudError(Exception):
    """One line for stderr (tools/cloud)."""


class FlowError(Exception):
    """A step of a user's flow failed (Cloud)."""


# -- small helpers -------------------------------------------------------------------------

def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def last_line(text):
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "failed without a message"


def last_lines(path, n=1):
    try:
        with open(path, errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "no log"
    return " | ".join(lines[-n:]) if lines else "empty log"


def write_ini(path, sections, mode=0o600):
    write_private(path, ini(sections), mode)


def wait_for(what, check, timeout, dead=None, log=None):
    """Until check() is true (exceptions count as not yet); CloudError when dead() or after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if dead is not None and dead():
            raise CloudError(f"{what} exited: {last_lines(log) if log else ''}")
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise CloudError(f"{what} not ready within {timeout:.0f}s: {last_lines(log) if log else ''}")
        time.sleep(0.3)


def password_token(keystone, user, timeout=30):
    """(token, project id) of `user`, by password, project-scoped; keystone: the cloud
    state's keystone section (auth_url, users)."""
    u = keystone["users"][user]
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": u["password"]}}},
        "scope": {"project": {"name": u["project"], "domain": {"name": "Default"}}}}}
    req = urllib.request.Request(keystone["auth_url"] + "/auth/tokens", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return resp.headers["X-Subject-Token"], json.load(resp)["token"]["project"]["id"]


def read_state(directory):
    """DIR/cloud.json; CloudError when there is no cloud in DIR."""
    try:
        with open(os.path.join(directory, STATE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        raise CloudError(f"no cloud in {directory} ({STATE} missing)") from None


def env_vars(directory, state):
    """What `tools/cloud env DIR` exports: the clients' config, the endpoints, Ceph's CEPH_*."""
    ks = state["keystone"]
    out = {"OS_CLIENT_CONFIG_FILE": ks["clouds_yaml"], "OS_CLOUD": "member",
           "OS_VOLUME_API_VERSION": "3", "CLOUD_DIR": directory,
           "CLOUD_IMAGE_URL": state["image_url"], "CLOUD_GLANCE_URL": state["glance_url"],
           "CLOUD_CINDER_URL": f"http://127.0.0.1:{state['ports']['cinder']}",
           "CLOUD_CINDER_LOG": os.path.join(directory, "cinder", "cinder-volume.log"),
           "PATH": os.path.join(VENVS["clients"], "bin") + ":" + os.environ.get("PATH", "")}
    out.update(state["ceph"])
    return out


# -- a running cloud, as its users see it ------------------------------------------------------

class Cloud:
    """A running tools/cloud: its `openstack` CLI as a user, its Ceph, its logs."""

    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        self.state = read_state(self.dir)
        self.env = env_vars(self.dir, self.state)  # what `tools/cloud env DIR` exports
        self._tokens = {}
        self._ready = False  # wait_ready() before the first request that asks Cinder for work

    def volume_log_lines(self):
        """Every cinder-volume service's log lines (an active-active cloud has one log per
        service: cinder-volume.log, cinder-volume-2.log, ...)."""
        names = sorted(n for n in os.listdir(os.path.join(self.dir, "cinder"))
                       if re.fullmatch(r"cinder-volume(-\d+)?\.log", n))
        for name in names:
            try:
                with open(os.path.join(self.dir, "cinder", name), errors="replace") as f:
                    yield from f
            except OSError:
                continue

    @classmethod
    def start(cls, directory, *args):
        """tools/cloud start DIRECTORY ARGS (e.g. "--release", "2025.1")."""
        proc = subprocess.run([CLOUD, "start", directory, *args], capture_output=True, text=True, cwd="/")
        if proc.returncode != 0:
            raise FlowError(proc.stderr.strip() or f"tools/cloud start exited {proc.returncode}")
        return cls(directory)

    def stop(self):
        proc = subprocess.run([CLOUD, "stop", self.dir], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FlowError(proc.stderr.strip())

    def _restarting_volume(self, *args):
        """tools/cloud ARGS (with DIR), a command that restarts cinder-volume."""
        proc = subprocess.run([CLOUD, *args], capture_output=True, text=True)
        self._ready = False  # cinder-volume restarted
        if proc.returncode != 0:
            raise FlowError(proc.stderr.strip())

    def set_clone(self, enabled):
        self._restarting_volume("clone", "on" if enabled else "off", self.dir)

    def set_driver(self, driver):
        """`ours` or `upstream` (cinder.volume.drivers.rbd.RBDDriver); restarts cinder-volume."""
        self._restarting_volume("driver", driver, self.dir)

    def restart_volume(self, fault_point=None):
        """Restart cinder-volume. fault_point (tests only): it runs with tests/fault_injection.py's
        observer and SIGKILLs its process group at that cinder_ext.steps boundary; the next
        restart runs it as usual."""
        self._restarting_volume("restart-volume", self.dir, *(["--fault-point", fault_point] if fault_point else []))

    def os_env(self, user="member"):
        # nothing of the caller's Ceph or OpenStack settings (CEPH_KEYRING, OS_*) leaks in
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "CEPH_"))}
        env.update(self.env)
        env.update(HOME=os.path.join(self.dir, "home"), OS_CLOUD=user)
        return env

    def openstack(self, *args, user="member", check=True, timeout=300):
        """`openstack ARGS -f json` as `user` (clouds.yaml); the parsed answer."""
        if not self._ready:
            self.wait_ready()
        cmd = ["openstack", *args]
        wants_json = not any(a in ("delete", "save", "set") for a in args[1:2]) and "-f" not in args
        if wants_json:
            cmd += ["-f", "json"]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.os_env(user), cwd=self.dir,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise FlowError(f"openstack {' '.join(args)}: {proc.stderr.strip().splitlines()[-1:]}")
        if not check:
            return proc
        return json.loads(proc.stdout) if wants_json and proc.stdout.strip() else proc.stdout

    # REST, for polling: one `openstack` process per poll would itself load a 2-core machine
    def token(self, user="member"):
        cached = self._tokens.get(user)
        if cached and cached[2] > time.monotonic():
            return cached[0], cached[1]
        token, project = password_token(self.state["keystone"], user, timeout=60)
        self._tokens[user] = (token, project, time.monotonic() + 1800)
        return token, project

    def rest(self, service, path, user="member", version="3.0"):
        """GET a Cinder (`volume`) or Glance (`image`) path as `user`: (status, body)."""
        token, project = self.token(user)
        base = (f"{self.env['CLOUD_CINDER_URL']}/v3/{project}" if service == "volume"
                else self.state["image_url"])
        req = urllib.request.Request(base + path, headers={"X-Auth-Token": token,
                                                           "OpenStack-API-Version": f"volume {version}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, None

    def post(self, service, path, body, user="member", method="POST"):
        """POST (or DELETE) to Cinder (`volume`) or Glance (`image`) as `user`: (status, body)."""
        if not self._ready:
            self.wait_ready()
        token, project = self.token(user)
        base = (f"{self.env['CLOUD_CINDER_URL']}/v3/{project}" if service == "volume"
                else self.state["image_url"])
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(base + path, data=data, method=method, headers={
            "X-Auth-Token": token, "Content-Type": "application/json",
            "OpenStack-API-Version": "volume 3.0"})
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def status(self, kind, ident, user="member"):
        """The volume's or image's status, None once it is gone."""
        path = f"/volumes/{ident}" if kind == "volume" else f"/v2/images/{ident}"
        code, body = self.rest(kind, path, user)
        if code == 404:
            return None
        if code != 200:
            raise FlowError(f"GET {kind} {ident}: HTTP {code}")
        return body["volume"]["status"] if kind == "volume" else body["status"]

    def wait(self, kind, ident, want, timeout=180, user="member", bad=("error",)):
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(kind, ident, user)
            if status == want:
                return status
            if status is None or status in bad:
                raise FlowError(f"{kind} {ident} went {status or 'away'}")
            if time.monotonic() > deadline:
                raise FlowError(f"{kind} {ident} is {status}, not {want}, after {timeout}s")
            time.sleep(0.3)

    def wait_gone(self, kind, ident, timeout=180, user="member"):
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(kind, ident, user)
            if status is None or status == "deleted":
                return
            if status in ("error_deleting", "error"):
                raise FlowError(f"{kind} {ident} is {status}")
            if time.monotonic() > deadline:
                raise FlowError(f"{kind} {ident} still there ({status}) after {timeout}s")
            time.sleep(0.3)

    def wait_ready(self, timeout=180):
        """Until Cinder can place a volume: every cinder-volume service reported up
        (`openstack volume service list`) and the scheduler holding its backend's
        capabilities (its pool in `cinder get-pools --detail`). A cinder-volume is up from
        its first heartbeat, but the scheduler learns its capabilities from a separate
        message; a volume created before that goes `error` (No valid backend). The seconds
        it took. Done once per Cloud, before its first request, and again after a restart
        through it."""
        self._ready = True  # rest() below must not wait for itself
        t0, last = time.monotonic(), "no answer yet"
        while True:
            try:
                code, body = self.rest("volume", "/os-services?binary=cinder-volume", user="admin", version="3.7")
                up = [s for s in (body or {}).get("services", []) if s["state"] == "up"] if code == 200 else []
                code, body = self.rest("volume", "/scheduler-stats/get_pools?detail=true", user="admin")
                # a pool is named after its backend: the service's host, or its cluster's name
                # in an active-active cluster (host@backend#pool)
                have = {p["name"].split("#")[0] for p in (body or {}).get("pools", []) if code == 200
                        and (p.get("capabilities") or {}).get("free_capacity_gb") is not None}
                if up and (code in (403, 404) or all({s["host"], s.get("cluster")} & have for s in up)):
                    return time.monotonic() - t0  # (403, 404: a policy without the pools: the services)
                last = f"cinder-volume up: {sorted(s['host'] for s in up)}; pools the scheduler has: {sorted(have)}"
            except (OSError, ValueError, KeyError) as e:
                last = repr(e)
            if time.monotonic() - t0 > timeout:
                self._ready = False
                raise FlowError(f"Cinder not ready to place a volume after {timeout}s: {last}")
            time.sleep(1)

    def services(self):
        """Cinder's services as admin sees them (`openstack volume service list`)."""
        code, body = self.rest("volume", "/os-services", user="admin")
        if code != 200:
            raise FlowError(f"GET os-services: HTTP {code}")
        return body["services"]

    # data -------------------------------------------------------------------------------
    def write_volume(self, volume_id, data):
        """Write `data` at offset 0 of the volume's RBD image, as Ceph user cinder (no Nova here
        to attach it: this is what a guest writing its disk amounts to)."""
        code = ("import rados, rbd, sys\n"
                "c = rados.Rados(conffile=sys.argv[1], rados_id=sys.argv[2]); c.connect()\n"
                "io = c.open_ioctx('volumes')\n"
                "with rbd.Image(io, 'volume-' + sys.argv[3]) as im:\n"
                "    im.write(sys.stdin.buffer.read(), 0)\n"
                "io.close(); c.shutdown()\n")
        subprocess.run(["/usr/bin/python3", "-c", code, self.env["CEPH_CINDER_CONF"],
                        self.env["CEPH_CINDER_USER"], volume_id], input=data, check=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": os.path.join(self.dir, "home")}, cwd=self.dir)

    def rbd_names(self):
        """{pool: sorted names of its images and trash entries}, as Ceph's admin sees them."""
        out = {}
        for pool in ("volumes", "images"):
            names = []
            for args in (["ls"], ["trash", "ls", "--all"]):
                proc = subprocess.run(["rbd", "--conf", self.env["CEPH_CONF"], "-p", pool, *args,
                                       "--format", "json"], capture_output=True, text=True,
                                      check=True, cwd=self.dir)
                listed = json.loads(proc.stdout or "[]")
                names += [e["name"] if isinstance(e, dict) else e for e in listed]
            out[pool] = sorted(names)
        return out

    def image_bytes(self, image_id, user="member"):
        """The image's bytes as Glance serves them (`openstack image save`)."""
        with tempfile.NamedTemporaryFile(dir=self.dir) as f:
            self.openstack("image", "save", image_id, "--file", f.name, user=user)
            return open(f.name, "rb").read()

    def upload_lines(self, image_id):
        """cinder-volume's `Upload of volume ... to image ID: method=...` lines for this image."""
        return [ln.strip() for ln in self.volume_log_lines() if f"to image {image_id}: method=" in ln]

    def method_of(self, image_id):
        lines = self.upload_lines(image_id)
        if not lines:
            return None
        m = re.search(r"method=(\w+)", lines[-1])
        return m.group(1)
