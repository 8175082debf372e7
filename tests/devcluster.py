"""Drive tools/ceph-dev-cluster from tests, benchmarks and the demo."""

import json
import os
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(ROOT, "tools", "ceph-dev-cluster")


class DevCluster:
    """A running dev cluster: its directory, fsid, pools, users and their files."""

    def __init__(self, directory):
        self.dir = directory
        self.refresh()

    def refresh(self):
        with open(os.path.join(self.dir, "cluster.json")) as f:
            self.state = json.load(f)
        env = subprocess.run([TOOL, "env", self.dir], check=True, capture_output=True, text=True).stdout
        self.env = dict(line[len("export "):].split("=", 1) for line in env.splitlines())

    @classmethod
    def start(cls, directory=None, *args):
        directory = directory or tempfile.mkdtemp(prefix="ceph-dev-")
        proc = subprocess.run([TOOL, "start", directory, *args], capture_output=True, text=True)
        if proc.returncode != 0:
            subprocess.run([TOOL, "stop", directory], capture_output=True)
            raise RuntimeError(f"dev cluster did not start: {proc.stderr.strip()}")
        return cls(directory)

    def stop(self, remove=True):
        subprocess.run([TOOL, "stop", self.dir], check=True, capture_output=True)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    # convenient names
    fsid = property(lambda self: self.state["fsid"])
    conf = property(lambda self: self.state["conf"])
    admin_keyring = property(lambda self: self.state["admin_keyring"])
    glance_pool = property(lambda self: self.state["pools"]["images"])
    cinder_pool = property(lambda self: self.state["pools"]["volumes"])
    glance_user = property(lambda self: self.state["users"]["glance"])
    cinder_user = property(lambda self: self.state["users"]["cinder"])
    # osd_client_watch_timeout: how long a killed lock holder keeps its lease
    watch_timeout = property(lambda self: self.state.get("watch_timeout", 30))
    # the daemons' Ceph: "16" (the machine's), or "18"/"20" from a tree (--ceph, CEPH_RELEASE)
    ceph_release = property(lambda self: self.state.get("ceph_release", "16"))

    @property
    def tool_prefix(self):
        """How to run ceph/rbd/rados on this cluster: this machine's own tools, paths as the
        test has them, unless the cluster is of another release (tools/ceph-tree) whose keys
        they cannot read (Ceph 20's aes256k): then the tree's, by chroot (paths outside the
        cluster's directory are not seen there)."""
        if self.state.get("tree") and self.state.get("cephx_cipher") == "aes256k":
            return ["chroot", self.state["tree"]]
        return []

    def client(self, role):
        """conf and keyring paths for 'glance' or 'cinder'."""
        return self.state["clients"][self.state["users"][role]]

    def admin(self, *args, timeout=60, check=True):
        """Run a ceph/rbd/rados command as client.admin; returns stdout."""
        tool, rest = args[0], args[1:]
        return subprocess.run([*self.tool_prefix, tool, "--conf", self.conf, "--keyring", self.admin_keyring, *rest],
                              check=check, capture_output=True, text=True, timeout=timeout).stdout

    def rbd_ls(self, pool):
        """Images, snapshots (every namespace) and trash entries of a pool."""
        images = json.loads(self.admin("rbd", "ls", "-l", "-p", pool, "--format", "json") or "[]")
        trash = json.loads(self.admin("rbd", "trash", "ls", "-a", "-p", pool, "--format", "json") or "[]")
        return {"images": images, "trash": trash}


def stop_all(stoppers, say):
    """Call each stopper in turn (a benchmark's peers, then its cluster); one that fails
    is reported through say() and the rest still run."""
    for stop in stoppers:
        try:
            stop()
        except Exception as exc:  # keep stopping the rest
            say(f"while stopping: {exc}")
