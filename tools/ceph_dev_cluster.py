#!/usr/bin/python3
"""A throwaway single-node Ceph cluster on loopback, for the demo, tests and benchmarks.

    ceph-dev-cluster start DIR [--ceph 16|18|20] [--cephx-cipher aes|aes256k] [--mon-port N] [--osds 1|3] [--osd-backend memstore|bluestore] [--osd-size 4G]
    ceph-dev-cluster stop DIR
    ceph-dev-cluster status DIR
    ceph-dev-cluster env DIR

Everything (ceph.conf, keyrings, mon and osd data, logs, sockets, pid files)
lives under DIR, so several clusters run side by side when each has its own
DIR and monitor port. One monitor (msgr2 only) and one OSD (or three, with
every pool replicated three times, min_size 2, as production pools are),
cephx on, no mgr: RBD needs none. The pools and the two least-privilege users that this feature
needs in production are created, and a ceph.conf + keyring per user written
to DIR/clients/<user>/.

--ceph (or CEPH_RELEASE) picks the Ceph release, daemons and tools: the machine's own
(Debian 12: 16.2, from its packages) by default; another one (18: Debian 13's 18.2,
20: Debian unstable's 20.2) runs from a Debian root tree that tools/ceph-tree builds
once: every daemon and tool is started with chroot into it, DIR bind-mounted at the
same path inside it (stop unmounts it). Run inside such a tree, the tree's own release
is the machine's.

Standard library only (and tools/peers/peerlib.py, which is too): it runs before any
virtualenv exists.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.join(HERE, "peers") not in sys.path:
    sys.path.insert(0, os.path.join(HERE, "peers"))
from peerlib import free_port, port_free  # noqa: E402
import ceph_tree  # noqa: E402  tools/ceph_tree.py

PACKAGES = ("ceph-mon", "ceph-osd", "ceph-common", "python3-rados", "python3-rbd")
STATE_FILE = "cluster.json"
READY_TIMEOUT = 60
MGR_GRACE = 10 * 365 * 24 * 3600  # seconds: "never"


class ClusterError(Exception):
    """An error with a message fit for one line on stderr."""


# -- the Ceph release: the machine's own, or a debootstrap tree's -----------

def local_release():
    """The Ceph major this machine (or the tree we run inside) has: its ceph-common's, else
    what its Debian ships (12: 16, 13: 18)."""
    try:
        with open(os.path.join("/", ceph_tree.STAMP)) as f:
            return str(json.load(f)["release"])
    except (OSError, ValueError, KeyError):
        pass
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ceph-common"], capture_output=True,
                             text=True).stdout.strip()
    match = re.match(r"(?:\d+:)?(\d+)\.", version)
    if match:
        return match.group(1)
    try:
        debian = open("/etc/debian_version").read().split(".")[0]
    except OSError:
        debian = ""
    return {"12": "16", "13": "18"}.get(debian, "16")


def tree_for(release):
    """None when the machine runs this release itself, else the tree's path (built once)."""
    if str(release) == local_release():
        return None
    try:
        return ceph_tree.build(str(release), venv=False)
    except ceph_tree.TreeError as exc:
        raise ClusterError(f"--ceph {release}: {exc}")


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def tree_mounts(tree):
    """/proc inside the tree (kept: every cluster of that tree uses it). /dev stays the
    tree's own (debootstrap made its nodes): once its clusters stop, nothing of the
    machine's stays bound into a tree, for an `rm -r` of it to reach through."""
    if not mounted(tree + "/proc"):
        run(["mount", "-t", "proc", "proc", tree + "/proc"])


def bind_into(tree, directory):
    target = tree + directory
    os.makedirs(target, exist_ok=True)
    if not mounted(target):
        run(["mount", "--bind", directory, target])


def unbind(tree, directory):
    target = tree + directory
    if os.path.isdir(target) and mounted(target):
        run(["umount", "-l", target], check=False)
    try:
        os.rmdir(target)
    except OSError:
        pass


# -- caps: exactly what upload-by-clone needs, and nothing more ------------

def cinder_caps(volumes_pool, images_pool):
    # Cinder writes its own pool and the Glance pool (the clone is created there).
    pools = f"profile rbd pool={volumes_pool}, profile rbd pool={images_pool}"
    return {"mon": "profile rbd", "osd": pools, "mgr": f"profile rbd pool={volumes_pool}, profile rbd pool={images_pool}"}


def glance_caps(images_pool, volumes_pool):
    # Glance writes its pool; it only reads the Cinder pool, where a cloned image's parent lives.
    pools = f"profile rbd pool={images_pool}, profile rbd-read-only pool={volumes_pool}"
    return {"mon": "profile rbd", "osd": pools, "mgr": f"profile rbd pool={images_pool}"}


# -- helpers ---------------------------------------------------------------

def run(cmd, timeout=60, check=True, input_text=None):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input_text)
    except FileNotFoundError:
        raise ClusterError(f"command not found: {cmd[0]}")
    except subprocess.TimeoutExpired:
        raise ClusterError(f"timed out after {timeout}s: {' '.join(cmd)}")
    if check and proc.returncode != 0:
        raise ClusterError(f"{' '.join(cmd[:3])} failed: {last_line(proc)}")
    return proc


def last_line(proc):
    """The last line a failed daemon or tool printed, without colour codes or its timestamp prefix."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr or proc.stdout or "").strip().splitlines()
    if not lines:
        return f"exit {proc.returncode}"
    return re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+\+\d{4} [0-9a-f]+ +-?\d+ ", "", lines[-1])


def parse_size(text):
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("B").rstrip("I")
    num, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "")
    try:
        value = int(float(num) * units[unit])
    except ValueError:
        raise ClusterError(f"--osd-size: not a size: {text!r} (e.g. 2G, 512M)")
    if value < (256 << 20):
        raise ClusterError("--osd-size: at least 256M")
    return value


def ensure_packages():
    """Install Debian's Ceph packages when any is missing."""
    missing = [p for p in PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True,
                                 text=True).stdout.strip() != "install ok installed"]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ClusterError(f"missing packages {' '.join(missing)}; run as root to install them")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise ClusterError(f"apt-get could not install {' '.join(missing)} "
                               f"(is the Debian mirror reachable?): {last_line(proc)}")


class Cluster:
    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.admin_keyring = os.path.join(self.dir, "ceph.client.admin.keyring")
        self.run_dir = os.path.join(self.dir, "run")
        self.log_dir = os.path.join(self.dir, "log")
        self.tree = None  # a debootstrap tree whose Ceph runs this cluster (chroot)
        self.release = None
        try:
            with open(self.path(STATE_FILE)) as f:
                state = json.load(f)
            self.tree, self.release = state.get("tree"), state.get("ceph_release")
        except (OSError, ValueError):
            pass

    def x(self, cmd):
        """A Ceph command line as run on this cluster's release: chroot into its tree."""
        return ["chroot", self.tree, *cmd] if self.tree else list(cmd)

    # -- state --
    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def load_state(self):
        try:
            with open(self.path(STATE_FILE)) as f:
                return json.load(f)
        except FileNotFoundError:
            raise ClusterError(f"no dev cluster in {self.dir} ({STATE_FILE} missing)")

    def ceph(self, *args, timeout=30, check=True):
        return run(self.x(["ceph", "--conf", self.conf, "--keyring", self.admin_keyring,
                           "--connect-timeout", "10", *args]), timeout=timeout, check=check)

    # -- start --
    def start(self, mon_port, backend, osd_size, pools, users, watch_timeout=30, osds=1, release=None,
              cephx_cipher=None):
        if os.path.isdir(self.dir) and os.listdir(self.dir):
            raise ClusterError(f"directory not empty: {self.dir}")
        if mon_port and not port_free(mon_port):
            raise ClusterError(f"port {mon_port} on 127.0.0.1 is already in use")
        self.release = str(release or local_release())
        if cephx_cipher == "aes256k" and int(self.release) < 20:
            raise ClusterError(f"--cephx-cipher aes256k: Ceph {self.release} knows aes only")
        # Ceph 20 makes aes256k keys, which an older client cannot even parse (16.2: "error
        # setting modifier ... Malformed input"), and its monitor allows no other cipher. aes:
        # as a cluster upgraded from an older release has it, aes allowed, used for the
        # service tickets and every key (the admin's, the cinder and glance users')
        self.legacy_cephx = cephx_cipher == "aes" and int(self.release) >= 20
        self.tree = tree_for(self.release)
        if not self.tree:
            ensure_packages()
        existed = os.path.isdir(self.dir)
        port = mon_port or free_port()
        fsid = str(uuid.uuid4())
        for sub in ("", "run", "log", "mon", "osd", "clients"):
            os.makedirs(self.path(sub), exist_ok=True)
        state = {"dir": self.dir, "fsid": fsid, "mon_port": port, "mon_addr": f"127.0.0.1:{port}",
                 "osd_backend": backend, "osd_size": osd_size, "pools": pools, "users": users,
                 "conf": self.conf, "admin_keyring": self.admin_keyring, "clients": {},
                 "watch_timeout": watch_timeout, "osds": osds, "ceph_release": self.release,
                 "tree": self.tree, "cephx_cipher": cephx_cipher or ("aes256k" if int(self.release) >= 20 else "aes")}
        try:
            if self.tree:
                tree_mounts(self.tree)
                bind_into(self.tree, self.dir)
            self._write_conf(fsid, port, backend, osd_size, watch_timeout, osds)
            state["ceph_version"] = run(self.x(["ceph", "--version"])).stdout.split()[2]
            self._start_mon(fsid, port)
            for _ in range(osds):
                self._start_osd(backend)
            self._wait(lambda: f'"num_up_osds":{osds}' in self.ceph("osd", "stat", "-f", "json").stdout.replace(" ", ""),
                       f"{osds} OSD(s) to come up")
            self._create_pools(pools)
            self._create_users(pools, users, state)
            self._wait_writable(pools)
            self.ceph("tell", "mon.a", "config", "set", "paxos_propose_interval", "1")
        except BaseException:
            # all or nothing: no daemon and no half-made directory survive a failed start
            self.stop(quiet=True)
            self._remove_contents(existed)
            raise
        with open(self.path(STATE_FILE), "w") as f:
            json.dump(state, f, indent=2)
        return state

    def _remove_contents(self, keep_dir):
        if not keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            return
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)

    def _write_conf(self, fsid, port, backend, osd_size, watch_timeout=30, osds=1):
        osd_store = {
            "memstore": f"osd objectstore = memstore\nmemstore device bytes = {osd_size}\n",
            "bluestore": ("osd objectstore = bluestore\nbluestore block create = true\n"
                          f"bluestore block size = {osd_size}\n"
                          f"bluestore block path = {self.dir}/osd/$cluster-$id.block\n"
                          # a file-backed OSD on a small machine: modest cache, no fsync storm
                          "bluestore cache autotune = false\nbluestore cache size = 268435456\n"
                          "osd memory target = 1073741824\n"),
        }[backend]
        # Debian's Reef (and later) OSD finds its object classes (rbd, lock, ...) only when told
        class_dir = "" if self.release == "16" else "osd class dir = /usr/lib/x86_64-linux-gnu/rados-classes\n"
        with open(self.conf, "w") as f:
            f.write(f"""[global]
fsid = {fsid}
mon initial members = a
mon host = v2:127.0.0.1:{port}
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = {self.run_dir}
admin socket = {self.run_dir}/$cluster-$name.asok
pid file = {self.run_dir}/$name.pid
log file = {self.log_dir}/$cluster-$name.log
osd pool default size = {osds}
osd pool default min size = {min(osds, 2)}
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon osd full ratio = 0.97
mon osd backfillfull ratio = 0.95
mon osd nearfull ratio = 0.93
# how long the OSDs keep a silent client's watch (a lock holder's lease)
osd client watch timeout = {watch_timeout}

[client]
keyring = {self.admin_keyring}

[mon]
mon data = {self.dir}/mon/$cluster-$id
# the cluster and audit logs too (Ceph's default is /var/log/ceph/$cluster.$channel.log)
mon cluster log file = {self.log_dir}/$cluster.$channel.log
# no mgr on purpose (RBD needs none): never raise MGR_DOWN for it
mon mgr mkfs grace = {MGR_GRACE}
mon data avail warn = 1
mon data avail crit = 0

[osd]
osd data = {self.dir}/osd/$cluster-$id
{osd_store}{class_dir}""")

    def _start_mon(self, fsid, port):
        mon_keyring = self.path("mon", "keyring")
        key_type = ["--key-type", "aes"] if getattr(self, "legacy_cephx", False) else []
        ciphers = (["--auth-allowed-ciphers", "aes,aes256k", "--auth-service-cipher", "aes",
                    "--auth-preferred-cipher", "aes"] if key_type else [])
        run(self.x(["ceph-authtool", "--create-keyring", mon_keyring, "--gen-key", "-n", "mon.", *key_type,
                    "--cap", "mon", "allow *"]))
        run(self.x(["ceph-authtool", "--create-keyring", self.admin_keyring, "--gen-key", "-n", "client.admin",
                    *key_type, "--cap", "mon", "allow *", "--cap", "osd", "allow *", "--cap", "mgr", "allow *"]))
        run(self.x(["ceph-authtool", mon_keyring, "--import-keyring", self.admin_keyring]))
        monmap = self.path("mon", "monmap")
        run(self.x(["monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{port}]", "--fsid", fsid,
                    *ciphers, monmap]))
        run(self.x(["ceph-mon", "--conf", self.conf, "--mkfs", "-i", "a", "--monmap", monmap,
                    "--keyring", mon_keyring]))
        proc = run(self.x(["ceph-mon", "--conf", self.conf, "-i", "a"]), check=False)
        if proc.returncode != 0:
            raise ClusterError(f"ceph-mon did not start on 127.0.0.1:{port}: {last_line(proc)}")
        self._wait(lambda: self.ceph("mon", "stat", check=False, timeout=15).returncode == 0,
                   "the monitor to form a quorum")
        # Bootstrap is a dozen monitor commits; each waits paxos_propose_interval (1 s).
        # Shorten it while bootstrapping only: the cluster then runs with Ceph's default.
        self.ceph("tell", "mon.a", "config", "set", "paxos_propose_interval", "0.02")
        # clone v2: no snapshot protection, parents kept in the trash namespace
        self.ceph("osd", "set-require-min-compat-client", "mimic")

    def _start_osd(self, backend):
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).stdout.strip()
        osd_data = self.path("osd", f"ceph-{osd_id}")
        os.makedirs(osd_data)
        run(self.x(["ceph-osd", "--conf", self.conf, "-i", osd_id, "--mkfs", "--mkkey", "--osd-uuid", osd_uuid,
                    "--no-mon-config"]), timeout=120)
        self.ceph("auth", "add", f"osd.{osd_id}", "osd", "allow *", "mon", "allow profile osd",
                  "mgr", "allow profile osd", "-i", os.path.join(osd_data, "keyring"))
        run(self.x(["ceph-osd", "--conf", self.conf, "-i", osd_id]), timeout=60)

    def _create_pools(self, pools):
        for pool in (pools["images"], pools["volumes"]):
            self.ceph("osd", "pool", "create", pool, "8", "8")
            self.ceph("osd", "pool", "application", "enable", pool, "rbd")
            # as an operator would: validates the pool once (librbd's first image create would
            # otherwise do it, a snapshot create and remove on the monitor, about 2 s)
            run(self.x(["rbd", "--conf", self.conf, "--keyring", self.admin_keyring, "pool", "init", pool]))

    def _create_users(self, pools, users, state):
        plan = {
            users["cinder"]: cinder_caps(pools["volumes"], pools["images"]),
            users["glance"]: glance_caps(pools["images"], pools["volumes"]),
        }
        for user, caps in plan.items():
            client_dir = self.path("clients", user)
            os.makedirs(client_dir)
            keyring = os.path.join(client_dir, f"ceph.client.{user}.keyring")
            args = ["auth", "get-or-create", f"client.{user}"]
            for service, cap in caps.items():
                args += [service, cap]
            self.ceph(*args, "-o", keyring)
            os.chmod(keyring, 0o600)
            conf = os.path.join(client_dir, "ceph.conf")
            with open(conf, "w") as f:
                f.write(f"[global]\nfsid = {state['fsid']}\nmon host = v2:127.0.0.1:{state['mon_port']}\n"
                        f"auth client required = cephx\n\n[client.{user}]\nkeyring = {keyring}\n"
                        f"log file = {self.log_dir}/client.{user}.log\n")
            state["clients"][user] = {"conf": conf, "keyring": keyring, "caps": caps}

    def _wait_writable(self, pools):
        # PGs peer a moment after the OSD is up; a write returns once they are active.
        for pool in (pools["images"], pools["volumes"]):
            obj = self.path("run", "probe")
            with open(obj, "w") as f:
                f.write("probe")
            run(self.x(["rados", "--conf", self.conf, "--keyring", self.admin_keyring, "-p", pool,
                        "put", "dev-cluster-probe", obj]), timeout=READY_TIMEOUT)
            run(self.x(["rados", "--conf", self.conf, "--keyring", self.admin_keyring, "-p", pool,
                        "rm", "dev-cluster-probe"]), timeout=30)

    def _wait(self, predicate, what, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout}s waiting for {what} (logs: {self.log_dir})")

    # -- stop --
    def pids(self):
        found = {}
        if not os.path.isdir(self.run_dir):
            return found
        for name in os.listdir(self.run_dir):
            if name.endswith(".pid"):
                try:
                    with open(os.path.join(self.run_dir, name)) as f:
                        found[name[:-4]] = int(f.read().strip())
                except (OSError, ValueError):
                    continue
        return found

    @staticmethod
    def alive(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split()[2] != "Z"
        except OSError:
            return False

    def stop(self, quiet=False):
        if not os.path.isdir(self.dir):
            if quiet:
                return
            raise ClusterError(f"no dev cluster in {self.dir}")
        pids = self.pids()
        # daemons that died before writing a pid file are found by their conf path
        pids.update({f"pid{p}": p for p in self._pids_by_conf()})
        for pid in pids.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 15
        while any(self.alive(p) for p in pids.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids.values():
            if self.alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while any(self.alive(p) for p in pids.values()) and time.monotonic() < deadline + 5:
            time.sleep(0.1)
        for name in os.listdir(self.run_dir) if os.path.isdir(self.run_dir) else ():
            if name.endswith(".pid"):
                os.unlink(os.path.join(self.run_dir, name))
        if self.tree:
            unbind(self.tree, self.dir)

    def _pids_by_conf(self):
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0].decode(errors="replace")) in ("ceph-mon", "ceph-osd") \
                    and self.conf.encode() in argv:
                found.append(int(entry))
        return found

    # -- status --
    def status(self):
        state = self.load_state()
        daemons = {name: self.alive(pid) for name, pid in self.pids().items()}
        health = None
        if daemons.get("mon.a"):
            proc = self.ceph("health", "-f", "json", check=False, timeout=15)
            if proc.returncode == 0:
                health = json.loads(proc.stdout).get("status")
        return {"dir": self.dir, "fsid": state["fsid"], "mon_addr": state["mon_addr"],
                "ceph": state.get("ceph_version"), "tree": state.get("tree"),
                "daemons": daemons, "health": health, "pools": state["pools"],
                "users": {u: c["caps"] for u, c in state["clients"].items()}}

    def env(self):
        state = self.load_state()
        lines = {"CEPH_DEV_DIR": self.dir, "CEPH_CONF": self.conf, "CEPH_KEYRING": self.admin_keyring,
                 "CEPH_FSID": state["fsid"], "CEPH_MON_ADDR": state["mon_addr"],
                 "CEPH_GLANCE_POOL": state["pools"]["images"], "CEPH_CINDER_POOL": state["pools"]["volumes"],
                 "CEPH_GLANCE_USER": state["users"]["glance"], "CEPH_CINDER_USER": state["users"]["cinder"],
                 "CEPH_RELEASE": state.get("ceph_release") or "16", "CEPH_TREE": state.get("tree") or ""}
        for role in ("glance", "cinder"):
            client = state["clients"][state["users"][role]]
            lines[f"CEPH_{role.upper()}_CONF"] = client["conf"]
            lines[f"CEPH_{role.upper()}_KEYRING"] = client["keyring"]
        return lines


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ceph-dev-cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="{start,stop,status,env}")
    start = sub.add_parser("start", help="boot a new cluster in DIR (empty or absent)")
    start.add_argument("dir")
    start.add_argument("--ceph", metavar="16|18|20", default=os.environ.get("CEPH_RELEASE") or None,
                       help="Ceph release of the daemons and tools (default: $CEPH_RELEASE, else the "
                            "machine's own); another than the machine's runs from tools/ceph-tree's tree")
    start.add_argument("--cephx-cipher", choices=("aes", "aes256k"), default=os.environ.get("CEPH_CEPHX_CIPHER") or None,
                       help="cephx keys and tickets: aes256k is Ceph 20's default, which older "
                            "clients cannot use; aes lets a 16.2 or 18.2 client in (default: "
                            "$CEPH_CEPHX_CIPHER, else the release's)")
    start.add_argument("--mon-port", type=int, default=0, help="monitor port (default: any free port)")
    start.add_argument("--osds", type=int, choices=(1, 3), default=1,
                       help="OSDs; with 3, pools keep 3 replicas (min_size 2) (default 1)")
    start.add_argument("--osd-backend", choices=("memstore", "bluestore"), default="memstore",
                       help="memstore: RAM, fast, lost on stop; bluestore: a file under DIR")
    start.add_argument("--osd-size", default="2G", help="OSD capacity, e.g. 2G (default 2G)")
    start.add_argument("--glance-pool", default="images")
    start.add_argument("--cinder-pool", default="volumes")
    start.add_argument("--glance-user", default="glance")
    start.add_argument("--cinder-user", default="cinder")
    start.add_argument("--watch-timeout", type=int, default=30,
                       help="osd_client_watch_timeout: seconds the OSDs keep a silent client's "
                            "watch (Ceph's default 30)")
    for name, text in (("stop", "stop every daemon of the cluster in DIR"),
                       ("status", "print the cluster's health, daemons, pools and users as JSON"),
                       ("env", "print shell exports for the cluster in DIR")):
        sub.add_parser(name, help=text).add_argument("dir")

    def usage_error(message):
        # one message on every Python: 3.11 prints a rejected number bare (repr), 3.12+ quoted
        message = re.sub(r"invalid choice: '(\d+)'", r"invalid choice: \1", message)
        sys.stderr.write(f"ceph-dev-cluster: {message}\n")
        sys.exit(2)
    parser.error = usage_error
    for p in sub.choices.values():
        p.error = usage_error

    args = parser.parse_args(argv)
    if not args.command:
        usage_error("a subcommand is required: start, stop, status or env")
    cluster = Cluster(args.dir)
    try:
        if args.command == "start":
            if args.mon_port and not 0 < args.mon_port < 65536:
                raise ClusterError(f"--mon-port: out of range: {args.mon_port}")
            if args.glance_pool == args.cinder_pool:
                raise ClusterError("--glance-pool and --cinder-pool must differ")
            if args.ceph and args.ceph not in ("16", "18", "20"):
                raise ClusterError(f"--ceph: 16, 18 or 20, not {args.ceph}")
            if args.watch_timeout < 1:
                raise ClusterError(f"--watch-timeout: at least 1 second, not {args.watch_timeout}")
            if args.glance_user == args.cinder_user:
                raise ClusterError("--glance-user and --cinder-user must differ")
            t0 = time.monotonic()
            state = cluster.start(args.mon_port, args.osd_backend, parse_size(args.osd_size),
                                  {"images": args.glance_pool, "volumes": args.cinder_pool},
                                  {"glance": args.glance_user, "cinder": args.cinder_user},
                                  args.watch_timeout, args.osds, args.ceph, args.cephx_cipher)
            print(f"ceph {state['ceph_version']} dev cluster {state['fsid']} ready on {state['mon_addr']} "
                  f"in {time.monotonic() - t0:.1f}s ({cluster.dir})")
        elif args.command == "stop":
            cluster.stop()
            print(f"ceph dev cluster in {cluster.dir} stopped")
        elif args.command == "status":
            print(json.dumps(cluster.status(), indent=2))
        elif args.command == "env":
            for key, value in cluster.env().items():
                print(f"export {key}={value}")
    except ClusterError as exc:
        sys.stderr.write(f"ceph-dev-cluster: {exc}\n")
        return 1
    except KeyboardInterrupt:
        cluster.stop(quiet=True)
        sys.stderr.write("ceph-dev-cluster: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
