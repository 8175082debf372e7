"""The user's flow on a real cloud (tools/cloud), as the `demo` project's non-admin member types it.

    tools/demo --openstack [--keep] [--data-mib N] [--dir DIR]

`openstack volume create --size 1`, data written into the volume, `openstack image
create --volume`, the image active, its bytes read back through Glance equal to the
volume's, `openstack volume create --image`, then the deletes; first with
`enable_clone_optimization = true` (cinder-volume logs `method=clone`), then with it
off on the same cloud (upstream's own copy: off means upstream, no line of ours), with both
timings. flow() and delete_all() are the
tests' (tests/cloud) too; Cloud, a running cloud as its users see it, is tools/cloudlib.py's.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
import time

from cloudlib import Cloud, FlowError  # noqa: F401  (Cloud: the tests' and benchmarks' name for it too)


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


def shown(method):
    """cinder-volume's method for an upload; upstream's copy (clone off) logs no line of ours."""
    return f"method={method}" if method else "upstream's copy: no method= line"


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
        f"{shown(res['method'])}")
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
            if r["method"]:
                print(f"  cinder-volume: {r['log'].split(': ', 1)[-1][:160]}")
            delete_all(cloud, r["ids"], ("volume", "image", "volume_from_image"))
            print("  deleted: volume, then image, then the volume created from it")
            results[label] = r
        on, off = results["clone on"], results["clone off"]
        print(f"\nopenstack image create --volume, 1 GiB volume with {args.data_mib} MiB of data, "
              f"until the image is active:\n  clone on:  {on['upload_s']:.2f} s ({shown(on['method'])})\n"
              f"  clone off: {off['upload_s']:.2f} s ({shown(off['method'])})")
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
