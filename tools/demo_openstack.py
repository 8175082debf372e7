"""The user's flow on a real cloud (tools/cloud), as the `demo` project's non-admin member types it.

    tools/demo --openstack [--keep] [--data-mib N] [--dir DIR]

`openstack volume create --size 1`, data written into the volume, `openstack image
create --volume`, the image active, its bytes read back through Glance equal to the
volume's, `openstack volume create --image`, then the deletes; first with
`enable_clone_optimization = true` (cinder-volume logs `method=clone`), then with it
off on the same cloud (`method=copy`), with both timings. Also the library of the
tests in tests/cloud (Cloud: one cloud, its CLI as any of its users).
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import cloud as cloud_tool  # tools/cloud.py, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
CLOUD = os.path.join(HERE, "cloud")


class FlowError(Exception):
    pass


class Cloud:
    """A running tools/cloud: its `openstack` CLI as a user, its Ceph, its logs."""

    def __init__(self, directory):
        self.dir = os.path.abspath(directory)
        out = subprocess.run([CLOUD, "env", self.dir], capture_output=True, text=True, check=True)
        self.env = {}
        for line in out.stdout.splitlines():
            k, _, v = line[len("export "):].partition("=")
            self.env[k] = v.strip("'")
        with open(os.path.join(self.dir, "cloud.json")) as f:
            self.state = json.load(f)
        self.volume_log = os.path.join(self.dir, "cinder", "cinder-volume.log")
        self._tokens = {}

    @classmethod
    def start(cls, directory):
        proc = subprocess.run([CLOUD, "start", directory], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FlowError(proc.stderr.strip() or f"tools/cloud start exited {proc.returncode}")
        return cls(directory)

    def stop(self):
        proc = subprocess.run([CLOUD, "stop", self.dir], capture_output=True, text=True)
        if proc.returncode != 0:
            raise FlowError(proc.stderr.strip())

    def set_clone(self, enabled):
        proc = subprocess.run([CLOUD, "clone", "on" if enabled else "off", self.dir],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise FlowError(proc.stderr.strip())

    def os_env(self, user="member"):
        # nothing of the caller's Ceph or OpenStack settings (CEPH_KEYRING, OS_*) leaks in
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "CEPH_"))}
        env.update(self.env)
        env.update(HOME=os.path.join(self.dir, "home"), OS_CLOUD=user)
        return env

    def openstack(self, *args, user="member", check=True, timeout=300):
        """`openstack ARGS -f json` as `user` (clouds.yaml); the parsed answer."""
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
        token, project = cloud_tool.password_token(self.state["keystone"], user, timeout=60)
        self._tokens[user] = (token, project, time.monotonic() + 1800)
        return token, project

    def rest(self, service, path, user="member"):
        """GET a Cinder (`volume`) or Glance (`image`) path as `user`: (status, body)."""
        token, project = self.token(user)
        base = (f"{self.env['CLOUD_CINDER_URL']}/v3/{project}" if service == "volume"
                else self.state["image_url"])
        req = urllib.request.Request(base + path, headers={"X-Auth-Token": token,
                                                           "OpenStack-API-Version": "volume 3.0"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.load(resp)
        except urllib.error.HTTPError as e:
            return e.code, None

    def post(self, service, path, body, user="member", method="POST"):
        """POST (or DELETE) to Cinder (`volume`) or Glance (`image`) as `user`: (status, body)."""
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
        try:
            with open(self.volume_log, errors="replace") as f:
                return [ln.strip() for ln in f if f"to image {image_id}: method=" in ln]
        except OSError:
            return []

    def method_of(self, image_id):
        lines = self.upload_lines(image_id)
        if not lines:
            return None
        m = re.search(r"method=(\w+)", lines[-1])
        return m.group(1)


def upload(cloud, volume_id, name, timeout=300):
    """`openstack image create --volume` as the member; (image id, seconds until active)."""
    t0 = time.monotonic()
    out = cloud.openstack("image", "create", "--volume", volume_id, "--disk-format", "raw",
                          "--container-format", "bare", name)
    image_id = out["image_id"]
    cloud.wait("image", image_id, "active", timeout=timeout, bad=("killed", "deleted"))
    secs = time.monotonic() - t0
    cloud.wait("volume", volume_id, "available", timeout=timeout)
    return image_id, secs


def wait_hash(cloud, image_id, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        code, img = cloud.rest("image", f"/v2/images/{image_id}")
        if code == 200 and img.get("os_hash_value"):
            return img
        if time.monotonic() > deadline:
            raise FlowError(f"image {image_id} has no os_hash_value after {timeout}s")
        time.sleep(1)


def flow(cloud, data, tag, log=print):
    """The user's flow once; returns its measurements. Raises FlowError on any mismatch."""
    res = {}
    t0 = time.monotonic()
    vol = cloud.openstack("volume", "create", "--size", "1", f"{tag}-vol")["id"]
    cloud.wait("volume", vol, "available")
    res["volume_create_s"] = time.monotonic() - t0
    cloud.write_volume(vol, data)
    log(f"  volume {vol}: {len(data) >> 20} MiB written")
    image, res["upload_s"] = upload(cloud, vol, f"{tag}-img")
    res["method"] = cloud.method_of(image)
    res["log"] = (cloud.upload_lines(image) or ["(no line)"])[-1]
    log(f"  openstack image create --volume: image {image} active in {res['upload_s']:.2f} s, "
        f"method={res['method']}")
    got = cloud.image_bytes(image)
    want = data + b"\0" * (1024 ** 3 - len(data))
    if got != want:
        raise FlowError(f"image {image}: {len(got)} bytes that differ from the volume's {len(want)}")
    res["sha512"] = hashlib.sha512(want).hexdigest()
    log("  the image's bytes read back through Glance equal the volume's")
    img = wait_hash(cloud, image)
    if img["os_hash_value"] != res["sha512"]:
        raise FlowError(f"image {image}: os_hash_value {img['os_hash_value'][:16]}... is not the "
                        f"sha512 of the volume's bytes")
    log("  os_hash_value (Glance's background hash) = sha512 of the volume's bytes")
    t0 = time.monotonic()
    vol2 = cloud.openstack("volume", "create", "--size", "1", "--image", image, f"{tag}-from-img")["id"]
    cloud.wait("volume", vol2, "available")
    res["create_from_image_s"] = time.monotonic() - t0
    log(f"  openstack volume create --image: volume {vol2} in {res['create_from_image_s']:.2f} s")
    res["ids"] = {"volume": vol, "image": image, "volume_from_image": vol2}
    return res


def delete_all(cloud, ids, order):
    """Delete volume / image / volume_from_image in `order`; each must go."""
    for what in order:
        ident = ids[what]
        kind = "image" if what == "image" else "volume"
        proc = cloud.openstack(kind, "delete", ident, check=False)
        if proc.returncode != 0:
            raise FlowError(f"openstack {kind} delete {ident} ({what}, order {order}): "
                            f"{proc.stderr.strip()}")
        cloud.wait_gone(kind, ident)


def main(argv=None):
    p = argparse.ArgumentParser(prog="demo --openstack")
    p.add_argument("--keep", action="store_true", help="leave the cloud running")
    p.add_argument("--data-mib", type=int, default=64)
    p.add_argument("--dir", help="the cloud's directory (default: a new temporary one)")
    args = p.parse_args(argv)
    d = args.dir or tempfile.mkdtemp(prefix="cloud-")
    print(f"booting a cloud in {d} (tools/cloud start) ...", flush=True)
    t0 = time.monotonic()
    try:
        cloud = Cloud.start(d)
    except FlowError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    print(f"ready in {time.monotonic() - t0:.0f} s: Ceph, MariaDB, RabbitMQ, Keystone 30, Glance 33 + "
          f"glance-info-api, Cinder 29 (api, scheduler, volume) with cinder_ext.driver", flush=True)
    data = os.urandom(args.data_mib << 20)
    results = {}
    try:
        for enabled in (True, False):
            cloud.set_clone(enabled)
            label = "clone on" if enabled else "clone off"
            print(f"\n== as the demo project's member, {label} ==", flush=True)
            r = flow(cloud, data, "demo-on" if enabled else "demo-off",
                     log=lambda s: print(s, flush=True))
            print(f"  cinder-volume: {r['log'].split(': ', 1)[-1][:160]}")
            delete_all(cloud, r["ids"], ("volume", "image", "volume_from_image"))
            print("  deleted: volume, then image, then the volume created from it")
            results[label] = r
        on, off = results["clone on"], results["clone off"]
        print(f"\nopenstack image create --volume, 1 GiB volume with {args.data_mib} MiB of data, "
              f"until the image is active:\n  clone on:  {on['upload_s']:.2f} s (method={on['method']})\n"
              f"  clone off: {off['upload_s']:.2f} s (method={off['method']})")
        if on["method"] != "clone":
            print("demo: the upload with clone on did not clone", file=sys.stderr)
            return 1
    except FlowError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"\nthe cloud keeps running: eval \"$(tools/cloud env {d})\"; openstack volume list\n"
                  f"stop it with: tools/cloud stop {d}")
        else:
            cloud.stop()
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
