"""The demo: upload a volume to an image by copy-on-write clone, on a throwaway Ceph cluster.

Boots a dev Ceph cluster, upstream Glance 33 on it, our stores-info service
beside it (with --keystone: a real Keystone 30 and tokens everywhere), then uploads one volume of real data twice through the
cinder-rbd-clone CLI: once by clone, once by copy, and prints both timings.
Run through tools/demo, which prepares the virtualenvs first.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import rados
import rbd

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.devcluster import DevCluster, stop_all  # noqa: E402
from tests.info_api import InfoAPI  # noqa: E402
from tests.peers import GlancePeer, PeerClients  # noqa: E402
from tools.front_door import STORES_INFO_PATHS, FrontDoor  # noqa: E402

BIN = os.path.dirname(sys.executable)
MiB = 1 << 20


def section(title):
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)), flush=True)


def cinder_conf(path, cluster, glance_section, enable):
    client = cluster.client("cinder")
    with open(path, "w") as f:
        f.write(f"""[DEFAULT]
enabled_backends = ceph

[ceph]
volume_backend_name = ceph
rbd_pool = {cluster.cinder_pool}
rbd_user = {cluster.cinder_user}
rbd_ceph_conf = {client['conf']}
enable_clone_optimization = {str(enable).lower()}

{glance_section}""")
    return path


def cli(conf, *args):
    proc = subprocess.run([os.path.join(BIN, "cinder-rbd-clone"), "--config-file", conf, *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"demo: cinder-rbd-clone {args[0]} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave everything running at the end")
    parser.add_argument("--data-mib", type=int, default=256,
                        help="MiB of real data in the demo volume (default 256)")
    parser.add_argument("--size-mib", type=int, default=1024, help="volume size (default 1024)")
    parser.add_argument("--keystone", action="store_true",
                        help="real Keystone 30 tokens everywhere instead of trusted identity headers")
    args = parser.parse_args()
    if not 0 < args.data_mib <= args.size_mib:
        parser.error("--data-mib must be between 1 and --size-mib")

    work = tempfile.mkdtemp(prefix="glance-rbd-clone-demo-")
    # a fresh machine every time: the clients' caches (~/.glanceclient, ...) live and die
    # with the demo, never in the operator's HOME
    home = os.path.join(work, "home")
    os.makedirs(home)
    os.environ.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                      XDG_CACHE_HOME=os.path.join(home, ".cache"))
    section("1. a dev Ceph cluster on 127.0.0.1 (cephx, least-privilege users)")
    t0 = time.monotonic()
    osd_size = f"{max(2048, 3 * args.data_mib + 1024)}M"
    try:
        cluster = DevCluster.start(os.path.join(work, "ceph"), "--osd-size", osd_size)
    except RuntimeError as exc:
        sys.exit(f"demo: {exc}")
    print(f"ready in {time.monotonic() - t0:.1f}s: fsid {cluster.fsid}")
    stoppers = [cluster.stop]
    try:
        print(cluster.admin("ceph", "health").strip())
        print(cluster.admin("ceph", "osd", "pool", "ls").strip().replace("\n", ", "), "(pools)")
        for user in (cluster.glance_user, cluster.cinder_user):
            caps = json.loads(cluster.admin("ceph", "auth", "get", f"client.{user}", "-f", "json"))[0]["caps"]
            print(f"client.{user}: " + "; ".join(f"{k} '{v}'" for k, v in sorted(caps.items())))

        if args.keystone:
            glance = start_keystone_mode(work, cluster, stoppers)
        else:
            glance = start_noauth_mode(work, cluster, stoppers)

        section(f"3. a {args.size_mib} MiB volume holding {args.data_mib} MiB of random data")
        volume = "volume-5e2c0a8e-7d1b-4d39-9f0a-6c1d2f3a4b5c"
        digest = fill_volume(cluster, volume, args.size_mib, args.data_mib)
        print(f"{cluster.cinder_pool}/{volume}: sha256 of the data {digest[:16]}...")

        results = {}
        for method, enable in (("clone", True), ("copy", False)):
            section(f"4{'ab'[enable is False]}. upload by {method} "
                    f"(enable_clone_optimization = {str(enable).lower()})")
            conf = cinder_conf(os.path.join(work, f"cinder-{method}.conf"), cluster,
                               glance["cinder_glance_section"], enable)
            image = cli(conf, "create-image", f"demo-{method}")
            print(f"$ cinder-rbd-clone --config-file cinder.conf upload {volume} {image['id']}")
            t = time.monotonic()
            result = cli(conf, "upload", volume, image["id"])
            wall = time.monotonic() - t
            result["wall_seconds"] = round(wall, 3)
            results[method] = result
            print(json.dumps({k: result.get(k) for k in ("method", "reason", "location", "bytes", "seconds")},
                             indent=2))
            got = image_digest(glance["image_url"], glance["headers"](), image["id"], args.data_mib)
            print(f"image {image['id']} active; downloaded data sha256 {got[:16]}... "
                  f"{'equals' if got == digest else 'DIFFERS FROM'} the volume's")
            if got != digest:
                sys.exit("demo: the image's bytes differ from the volume's")

        section("5. timings")
        print(f"{'method':8} {'seconds':>8}  reason")
        for method, result in results.items():
            print(f"{method:8} {result['wall_seconds']:8.2f}  {result.get('reason') or '-'}")
        speedup = results["copy"]["wall_seconds"] / max(results["clone"]["wall_seconds"], 1e-9)
        print(f"clone is {speedup:.1f}x faster for {args.data_mib} MiB of data; the clone's time does "
              "not grow with the size (see benchmarks/upload_volume_to_image.py)")
    finally:
        if args.keep:
            print(f"\nleft running under {work}; stop with: tools/ceph-dev-cluster stop {work}/ceph "
                  f"&& tools/peers/glance-peer stop {work}/glance"
                  + (f" && tools/peers/keystone-peer stop {work}/keystone" if args.keystone else ""))
        else:
            stop_all(stoppers, lambda msg: print(f"demo: {msg}", file=sys.stderr))
            print("\neverything stopped and removed")


def fill_volume(cluster, name, size_mib, data_mib):
    """Create the volume and write data_mib MiB of random bytes at its start; returns their sha256."""
    digest = hashlib.sha256()
    conn = rados.Rados(conffile=cluster.conf, conf={"keyring": cluster.admin_keyring})
    conn.connect(timeout=30)
    try:
        with conn.open_ioctx(cluster.cinder_pool) as ioctx:
            rbd.RBD().create(ioctx, name, size_mib * MiB, old_format=False,
                             features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                             | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                             | rbd.RBD_FEATURE_DEEP_FLATTEN)
            with rbd.Image(ioctx, name) as image:
                for i in range(data_mib):
                    chunk = os.urandom(MiB)
                    digest.update(chunk)
                    image.write(chunk, i * MiB)
    finally:
        conn.shutdown()
    return digest.hexdigest()


def image_digest(image_url, headers, image_id, data_mib):
    """sha256 of the first data_mib MiB of the image, downloaded through Glance."""
    req = urllib.request.Request(f"{image_url}/v2/images/{image_id}/file", headers=headers)
    digest = hashlib.sha256()
    left = data_mib * MiB
    with urllib.request.urlopen(req, timeout=600) as resp:
        while left:
            chunk = resp.read(min(left, MiB))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def show_detail(url, headers):
    req = urllib.request.Request(url + "/v2/info/stores/detail", headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        print(json.dumps(json.load(resp), indent=2))


def start_noauth_mode(work, cluster, stoppers):
    """Glance 33 trusting identity headers, our service beside it (auth_strategy = noauth)."""
    section("2. upstream Glance 33 (rbd default store) and our stores-info service (noauth)")
    peer = GlancePeer.start(os.path.join(work, "glance"), cluster.dir, default_roles="admin,service")
    stoppers.insert(0, peer.stop)
    os.makedirs(os.path.join(work, "info-api"))
    info = InfoAPI(peer.config_file, workdir=os.path.join(work, "info-api"))
    stoppers.insert(0, info.stop)
    # the operator's load balancer: our two paths to our service, the rest to Glance
    door = FrontDoor.for_glance(peer.url, info.url)
    stoppers.insert(0, door.stop)
    print(f"Glance 33: {peer.url}    glance-info-api: {info.url} (same glance-api.conf)")
    print(f"image endpoint {door.url}: {', '.join(STORES_INFO_PATHS)} -> glance-info-api, "
          "the rest -> Glance")
    print(f"$ curl -H 'X-Roles: service' {door.url}/v2/info/stores/detail")
    show_detail(door.url, {"X-Roles": "service"})
    print(f"$ glance --os-image-url {door.url} --os-auth-token any stores-info --detail")
    proc = PeerClients().run_glance("stores-info", "--detail", url=door.url)
    print(proc.stdout.rstrip() or proc.stderr.strip())
    if proc.returncode != 0:
        sys.exit("demo: glance stores-info --detail failed")
    # Cinder reads the detail from our service, and talks to Glance for the rest
    section_text = (f"[glance]\napi_servers = {peer.url}\nstores_info_url = {info.url}\n"
                    "auth_strategy = noauth\n")
    return {"cinder_glance_section": section_text, "image_url": peer.url,
            "headers": lambda: peer.headers(roles=("admin",))}


def start_keystone_mode(work, cluster, stoppers):
    """Everything with real tokens: Keystone 30, Glance 33's keystone pipeline, our service's auth_token."""
    from tests.keystone import KeystonePeer

    section("2. Keystone 30, upstream Glance 33 and our stores-info service, with real tokens")
    keystone = KeystonePeer.start(os.path.join(work, "keystone"))
    stoppers.insert(0, keystone.stop)
    peer = GlancePeer.start(os.path.join(work, "glance"), cluster.dir, keystone_dir=keystone.dir)
    stoppers.insert(0, peer.stop)
    os.makedirs(os.path.join(work, "info-api"))
    info = InfoAPI(peer.config_file, auth_strategy="keystone", workdir=os.path.join(work, "info-api"),
                   extra_conf={"keystone_authtoken": keystone.authtoken_conf()})
    stoppers.insert(0, info.stop)
    # the operator's load balancer: our two paths to our service, the rest to Glance; one
    # catalog entry
    lb = FrontDoor.for_glance(peer.url, info.url)
    stoppers.insert(0, lb.stop)
    keystone.set_image_endpoint(lb.url)
    print(f"Keystone: {keystone.auth_url}    image endpoint in the catalog: {lb.url}")
    print(f"  ({', '.join(STORES_INFO_PATHS)} -> glance-info-api {info.url}, "
          f"the rest -> Glance 33 {peer.url})")
    clients = PeerClients()
    for user in ("admin", "member"):
        password = keystone.users[user]["password"]
        shown = " ".join(a.replace(password, "***") for a in keystone.cli_auth(user))
        print(f"$ glance {shown} stores-info --detail")
        proc = subprocess.run([clients.glance, *keystone.cli_auth(user), "stores-info", "--detail"],
                              capture_output=True, text=True, timeout=300)
        print(proc.stdout.rstrip() or proc.stderr.strip())
    return {"cinder_glance_section": keystone.glance_section("cinder") + "request_timeout = 60\n",
            "image_url": lb.url, "headers": lambda: {"X-Auth-Token": keystone.token("cinder")}}


if __name__ == "__main__":
    main()
