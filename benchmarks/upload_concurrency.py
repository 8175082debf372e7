"""Many clone uploads at once (issue 18): the concurrency curve, and where a burst's time goes.

    .venv/bin/python benchmarks/upload_concurrency.py [--bursts 1,2,4,8,16] [--runs 3]
        [--mode threads|cli|driver] [--secure-hash on|off] [--cloud DIR] [--out DIR]

threads, cli: boots its own dev Ceph cluster (memstore), the upstream Glance 33 peer (the
one Cinder's service identity talks to) and glance-info-api beside it. For each burst size
N it makes N volumes (1 GiB, 8 MiB of data each) and N queued images, starts the N uploads
together (a barrier), and records when each started and ended and its per-step seconds.
Bursts of every size are interleaved run by run, each after an idle pause, so that drift
hits all sizes alike. --mode threads: the N uploads run as threads of one process;
--mode cli: N `cinder-rbd-clone upload` processes. --secure-hash off turns Glance's
do_secure_hash off, to show what Glance's read-back hashing of each new image costs a burst.

--mode driver: the same bursts as users send them (`os-volume_upload_image`, what
`openstack image create --volume` calls) to a real cloud (tools/cloud: Keystone,
cinder-api, RabbitMQ, cinder-volume with our driver, Glance 33 on MariaDB); each upload
ends when Glance shows the image active; the steps come from cinder-volume's log line.

Prints the curve (N, total seconds median (min-max), seconds per upload, total / one
upload alone) and the per-step timeline of the largest burst's median run; writes
results.json, concurrency.md and upload_concurrency.png under --out.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import rados  # noqa: E402
import rbd  # noqa: E402

from cinder_ext import opts  # noqa: E402
from cinder_ext.glance import Glance  # noqa: E402
from cinder_ext.upload import upload_volume  # noqa: E402
from tests.devcluster import DevCluster, stop_all  # noqa: E402
from tests.info_api import InfoAPI  # noqa: E402
from tests.peers import GlancePeer  # noqa: E402

MiB, GiB = 1 << 20, 1 << 30
SETTLE = 2.0
BIN = os.path.dirname(sys.executable)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_together(n, one):
    """one(0) .. one(n - 1) in n threads released together (a barrier): (start, seconds
    until the last ended)."""
    barrier = threading.Barrier(n + 1)

    def released(i):
        barrier.wait()
        one(i)
    threads = [threading.Thread(target=released, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    return t0, time.monotonic() - t0


class Bench:
    def __init__(self, work, secure_hash=True):
        self.work = work
        self.cluster = DevCluster.start(os.path.join(work, "ceph"), "--osd-size", "6G")
        self.stop = [self.cluster.stop]
        # do_secure_hash (Glance's default, on): after each image goes active, Glance reads
        # it all back and hashes it, in the process that activates the next ones
        self.peer = GlancePeer.start(os.path.join(work, "glance"), self.cluster.dir,
                                     default_roles="admin,service",
                                     settings=("ceph.rbd_thin_provisioning=true",
                                               f"DEFAULT.do_secure_hash={str(secure_hash).lower()}"))
        self.stop.insert(0, self.peer.stop)
        os.makedirs(os.path.join(work, "info-api"))
        self.info = InfoAPI(self.peer.config_file, workdir=os.path.join(work, "info-api"))
        self.stop.insert(0, self.info.stop)
        self.admin = rados.Rados(conffile=self.cluster.conf, conf={"keyring": self.cluster.admin_keyring})
        self.admin.connect(timeout=30)
        self.vio = self.admin.open_ioctx(self.cluster.cinder_pool)
        self.conf_path = os.path.join(work, "cinder.conf")
        client = self.cluster.client("cinder")
        with open(self.conf_path, "w") as f:
            f.write(f"""[DEFAULT]
enabled_backends = ceph
[ceph]
rbd_pool = {self.cluster.cinder_pool}
rbd_user = {self.cluster.cinder_user}
rbd_ceph_conf = {client['conf']}
enable_clone_optimization = true
clone_active_timeout = 300
[glance]
api_servers = {self.peer.url}
stores_info_url = {self.info.url}
auth_strategy = noauth
request_timeout = 300
""")
        self.conf, self.backend = opts.load([self.conf_path])
        self.glance = Glance(self.conf)

    def close(self):
        self.admin.shutdown()
        stop_all(self.stop, log)

    def make_volumes(self, n):
        names = []
        for _ in range(n):
            name = f"volume-{uuid.uuid4()}"
            rbd.RBD().create(self.vio, name, GiB, old_format=False,
                             features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                             | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                             | rbd.RBD_FEATURE_DEEP_FLATTEN)
            with rbd.Image(self.vio, name) as img:
                img.write(os.urandom(8 * MiB), 0)
            names.append(name)
        return names

    def burst(self, n, mode):
        """n uploads started together; returns {total, uploads: [{start, end, steps, method}]}."""
        volumes = self.make_volumes(n)
        images = [self.glance.create_image(f"burst-{n}-{i}")["id"] for i in range(n)]
        time.sleep(SETTLE)  # an idle monitor for every burst alike
        out = [None] * n

        def one(i):
            start = time.monotonic()
            if mode == "threads":
                result = upload_volume(self.conf, self.backend, volumes[i], images[i], encrypted=False)
            else:
                proc = subprocess.run([os.path.join(BIN, "cinder-rbd-clone"), "--config-file",
                                       self.conf_path, "upload", volumes[i], images[i]],
                                      capture_output=True, text=True, timeout=600)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.strip())
                result = json.loads(proc.stdout)
            out[i] = {"start": start, "end": time.monotonic(), "method": result["method"],
                      "reason": result.get("reason"), "steps": result["seconds"]}

        t0, total = run_together(n, one)
        for o in out:
            if o is None or o["method"] != "clone":
                raise RuntimeError(f"burst of {n}: an upload did not clone: {o}")
            o["start"] -= t0
            o["end"] -= t0
        self._clean(images, volumes)
        return {"n": n, "total": total, "uploads": out}

    def _clean(self, images, volumes):
        for image_id in images:
            self.glance.delete_image(image_id)
        # Glance deletes the clones; the volumes' trashed snapshots go with the volumes
        deadline = time.monotonic() + 120
        for name in volumes:
            while True:
                try:
                    with rbd.Image(self.vio, name) as img:
                        for snap in list(img.list_snaps()):
                            img.remove_snap_by_id(snap["id"])
                    rbd.RBD().remove(self.vio, name)
                    break
                except (rbd.ImageBusy, rbd.ImageHasSnapshots, rbd.InvalidArgument):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)


class CloudBench:
    """--mode driver: each upload as `openstack image create --volume` sends it, through
    cinder-api, RabbitMQ and cinder-volume to our driver, on a tools/cloud (Keystone,
    Glance 33 on MariaDB with do_secure_hash, the demo project's member)."""

    def __init__(self, work, directory=None):
        sys.path.insert(0, os.path.join(ROOT, "tools"))
        import demo_openstack
        self.own = directory is None
        if self.own:
            directory = os.path.join(work, "cloud")
            log(f"booting a cloud in {directory}")
        self.cloud = (demo_openstack.Cloud.start(directory) if self.own
                      else demo_openstack.Cloud(directory))

    def close(self):
        if self.own:
            self.cloud.stop()

    def _volumes(self, n, tag):
        vols = []
        for i in range(n):
            code, body = self.cloud.post("volume", "/volumes",
                                         {"volume": {"size": 1, "name": f"{tag}-{i}"}})
            if code != 202:
                raise RuntimeError(f"volume create: HTTP {code} {body}")
            vols.append(body["volume"]["id"])
        for v in vols:
            self.cloud.wait("volume", v, "available")
            self.cloud.write_volume(v, os.urandom(8 * MiB))
        return vols

    def burst(self, n, mode):
        vols = self._volumes(n, f"burst-{n}")
        time.sleep(SETTLE)
        out, images = [None] * n, [None] * n

        def one(i):
            start = time.monotonic()
            code, body = self.cloud.post("volume", f"/volumes/{vols[i]}/action", {
                "os-volume_upload_image": {"image_name": f"burst-{n}-{i}", "disk_format": "raw",
                                           "container_format": "bare", "force": False}})
            if code != 202:
                raise RuntimeError(f"upload: HTTP {code} {body}")
            images[i] = body["os-volume_upload_image"]["image_id"]
            self.cloud.wait("image", images[i], "active", timeout=600, bad=("killed", "deleted"))
            out[i] = {"start": start, "end": time.monotonic()}

        t0, total = run_together(n, one)
        try:
            for i, o in enumerate(out):
                if o is None:
                    raise RuntimeError(f"burst of {n}: upload {i} failed (see the error above)")
                # the driver logs its line after Glance shows the image active, and the
                # volume is available again once it has
                self.cloud.wait("volume", vols[i], "available", timeout=600)
                line = (self.cloud.upload_lines(images[i]) or [""])[-1]
                steps = driver_steps(line)
                o.update(method=self.cloud.method_of(images[i]), steps=steps,
                         start=o["start"] - t0, end=o["end"] - t0)
                # the driver's steps end about when the user sees the image active: before
                # them, cinder-api, RabbitMQ and the volume manager
                o["steps_from"] = max(o["start"], o["end"] - sum(steps.values()))
                if o["method"] != "clone":
                    raise RuntimeError(f"burst of {n}: an upload did not clone: {line}")
        finally:
            for img in images:
                if img:
                    self.cloud.post("image", f"/v2/images/{img}", None, method="DELETE")
            for v in vols:
                self.cloud.wait("volume", v, "available", timeout=600)
                self.cloud.post("volume", f"/volumes/{v}", None, method="DELETE")
            for v in vols:
                self.cloud.wait_gone("volume", v, timeout=600)
        return {"n": n, "total": total, "uploads": out}


def driver_steps(line):
    """The steps of cinder-volume's `method=clone, location=..., T s (fetch 0.1 s, ...)` line."""
    inner = line.rsplit("(", 1)[-1].rstrip(")")
    return {name: float(secs) for name, secs in re.findall(r"(\w+) ([0-9.]+) s", inner)}


# the clone path's steps in the order they run (the CLI's JSON sorts its keys)
STEP_ORDER = ("connect", "fetch", "recover", "gather", "volume_snapshot", "clone",
              "volume_snapshot_remove", "flatten", "image_snapshot", "register", "active")


def timeline(burst):
    """One line per upload: its steps laid end to end from its own start (seconds)."""
    lines = []
    for i, u in enumerate(sorted(burst["uploads"], key=lambda u: u["end"])):
        at, parts = u.get("steps_from", u["start"]), []
        steps = sorted((k for k in u["steps"] if k != "total"),
                       key=lambda k: STEP_ORDER.index(k) if k in STEP_ORDER else len(STEP_ORDER))
        for step in steps:
            secs = u["steps"][step]
            parts.append(f"{step} {at:.2f}+{secs:.2f}")
            at += secs
        lines.append(f"  #{i:<2} {u['start']:.2f}..{u['end']:.2f}  " + ", ".join(parts))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", default="1,2,4,8,16")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("threads", "cli", "driver"), default="threads")
    parser.add_argument("--secure-hash", choices=("on", "off"), default="on",
                        help="Glance's do_secure_hash (threads, cli; the cloud keeps it on)")
    parser.add_argument("--cloud", help="driver mode: a running tools/cloud DIR (default: "
                                        "boot one, stop it at the end)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = parser.parse_args()
    sizes = [int(x) for x in args.bursts.split(",")]
    work = tempfile.mkdtemp(prefix="bench-concurrency-")
    bench = (CloudBench(work, args.cloud) if args.mode == "driver"
             else Bench(work, secure_hash=args.secure_hash == "on"))
    tag = args.mode if args.mode == "driver" or args.secure_hash == "on" else f"{args.mode}-nohash"
    label = args.mode if args.mode == "driver" else f"{args.mode}, do_secure_hash {args.secure_hash}"
    runs = {n: [] for n in sizes}
    try:
        for r in range(args.runs):
            for n in sizes:
                b = bench.burst(n, args.mode)
                runs[n].append(b)
                log(f"run {r + 1}: {n} at once in {b['total']:.2f}s")
    finally:
        bench.close()

    one = statistics.median(b["total"] for b in runs[sizes[0]]) if sizes[0] == 1 else None
    rows = ["| uploads at once | total (median, min-max) | per upload | total / one alone |",
            "|---|---|---|---|"]
    for n in sizes:
        totals = [b["total"] for b in runs[n]]
        med = statistics.median(totals)
        ratio = f"{med / one:.2f}x" if one else "-"
        rows.append(f"| {n} | {med:.2f} s ({min(totals):.2f}-{max(totals):.2f}) | {med / n:.2f} s | {ratio} |")
    table = "\n".join(rows)
    print(f"mode: {label}, {args.runs} runs per burst size\n{table}")
    biggest = sorted(runs[sizes[-1]], key=lambda b: b["total"])[len(runs[sizes[-1]]) // 2]
    print(f"\ntimeline of a median burst of {sizes[-1]} (seconds from the start):")
    print("\n".join(timeline(biggest)))

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"concurrency-{tag}.json"), "w") as f:
        json.dump({"mode": args.mode, "secure_hash": args.secure_hash, "runs": runs}, f, indent=1)
    with open(os.path.join(args.out, f"concurrency-{tag}.md"), "w") as f:
        f.write(f"mode: {label}\n\n{table}\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        meds = [statistics.median(b["total"] for b in runs[n]) for n in sizes]
        ax.plot(sizes, meds, "o-", label="all uploads of the burst done")
        if one:
            ax.plot(sizes, [one * n for n in sizes], ":", label="one after another")
        ax.set_xlabel("clone uploads started together")
        ax.set_ylabel("seconds")
        ax.set_xscale("log", base=2)
        ax.legend()
        ax.set_title(f"Concurrent clone uploads ({label})")
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, f"upload_concurrency-{tag}.png"), dpi=100)
    except ImportError:
        log("matplotlib missing: no plot")


if __name__ == "__main__":
    main()
