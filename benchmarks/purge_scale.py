"""The purge's cost against the cloud's size (issue 32), measured side by side in one run.

    .venv/bin/python benchmarks/purge_scale.py [--images 10000] [--uploads 1000] [--runs 5]
                                               [--out DIR]

Boots its own dev Ceph cluster and the upstream Glance 33 peer (Cinder's identity: admin
and service roles), then measures, at two sizes of cloud:

  small  10 clone uploads in the pools, nothing else
  large  --uploads clone uploads and --images Glance-like images (UUID names, a protected
         `snap`, as glance_store writes them) that no upload of ours made

and, at each size:

  purge   one run as the driver makes it (cinder_ext.driver.RBDCloneUploadDriver.purge:
          finish, no volume scan, no lock sweep), --runs times, each after 3 uploads were
          killed at `clone.cloned` (their images left queued: open journal records, whose
          leases have ended): seconds, the Glance requests it sent (every HTTP request of
          cinder_ext.glance.Glance, counted), and it must remove exactly those 3 and the
          volume the delete run before it trashed (its image deleted since)
  upload  a clone upload of a 4 MiB volume, --runs times
  delete  cinder_ext.delete.delete_volume of a volume with a clone upload, --runs times;
          then the image is deleted in Glance (the next purge run reclaims the volume)

Prints a table (median seconds, ratio large/small, Glance requests per run) and writes
results.json and purge_scale.md under --out (default benchmarks/results).
"""

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import rados  # noqa: E402
import rbd  # noqa: E402

from cinder_ext import delete, opts  # noqa: E402
from cinder_ext import purge as purge_mod  # noqa: E402
from cinder_ext.exceptions import GlanceError  # noqa: E402
from cinder_ext.glance import Glance  # noqa: E402
from cinder_ext.upload import connect, upload_volume  # noqa: E402
from tests import fault_injection  # noqa: E402
from tests.devcluster import DevCluster, stop_all  # noqa: E402
from tests.peers import GlancePeer  # noqa: E402

MiB = 1 << 20
FAILED_UPLOADS = 3
WATCH_TIMEOUT = 5


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class CountingGlance(Glance):
    """cinder_ext's Glance client, counting every HTTP request it sends."""

    requests = 0

    def request(self, *args, **kwargs):
        CountingGlance.requests += 1
        return super().request(*args, **kwargs)


class Bench:
    def __init__(self, work):
        self.work = work
        self.reclaimable = set()  # volumes trashed by a delete run, their image since deleted
        self.steps = {"purge": [], "delete": []}  # each run's own step timings (measure)
        # a killed upload's lease ends WATCH_TIMEOUT s later (Ceph's default is 30)
        self.cluster = DevCluster.start(os.path.join(work, "ceph"), "--osd-size", "8G",
                                        "--watch-timeout", str(WATCH_TIMEOUT))
        self.stop = [self.cluster.stop]
        self.peer = GlancePeer.start(os.path.join(work, "glance"), self.cluster.dir,
                                     default_roles="admin,service")
        self.stop.insert(0, self.peer.stop)
        self.admin = rados.Rados(conffile=self.cluster.conf, conf={"keyring": self.cluster.admin_keyring})
        self.admin.connect(timeout=30)
        self.vio = self.admin.open_ioctx(self.cluster.cinder_pool)
        self.iio = self.admin.open_ioctx(self.cluster.glance_pool)
        self.conf_file = self._conf()
        self.conf, self.backend = opts.load([self.conf_file])
        self.glance = CountingGlance(self.conf)

    def close(self):
        self.admin.shutdown()
        stop_all(self.stop, log)

    def _conf(self):
        client = self.cluster.client("cinder")
        path = os.path.join(self.work, "cinder.conf")
        with open(path, "w") as f:
            f.write(f"""[DEFAULT]
enabled_backends = ceph
[ceph]
rbd_pool = {self.cluster.cinder_pool}
rbd_user = {self.cluster.cinder_user}
rbd_ceph_conf = {client['conf']}
enable_clone_optimization = true
clone_active_timeout = 120
[glance]
api_servers = {self.peer.url}
auth_strategy = noauth
""")
        return path

    # -- what fills the pools ----------------------------------------------------------
    def volume(self):
        name = f"volume-{uuid.uuid4()}"
        rbd.RBD().create(self.vio, name, 4 * MiB, old_format=False)
        with rbd.Image(self.vio, name) as img:
            img.write(os.urandom(MiB), 0)
        return name

    def new_image(self, name):
        """A queued image; asked again when the peer Glance, busy with the filling's
        uploads, dropped the connection (a stray extra image costs this benchmark nothing)."""
        for attempt in range(5):
            try:
                return self.glance.create_image(name)
            except GlanceError as e:
                if "cannot reach" not in str(e) or attempt == 4:
                    raise
                time.sleep(1 + attempt)

    def upload(self):
        """One clone upload; its seconds."""
        vol, image = self.volume(), self.new_image(f"bench-{uuid.uuid4().hex[:6]}")
        t0 = time.monotonic()
        out = upload_volume(self.conf, self.backend, vol, image["id"], glance=self.glance,
                            encrypted=False)
        seconds = time.monotonic() - t0
        if out["method"] != "clone":
            raise RuntimeError(f"upload took {out['method']}: {out.get('reason')} {out.get('detail')}")
        return seconds

    def fill_upload(self):
        """One clone upload of the filling; one that fell back to a copy (the peer Glance,
        busy, failed a request) is done again: a copied image is one more Glance-like one."""
        for attempt in range(3):
            try:
                return self.upload()
            except RuntimeError as e:
                if attempt == 2:
                    raise
                log(f"  again: {e}")

    def uploads(self, count, workers=4):
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for i, _ in enumerate(pool.map(lambda _: self.fill_upload(), range(count)), 1):
                if i % 100 == 0:
                    log(f"  {i} uploads")

    def failed_upload(self):
        """An upload killed once its clone exists; its image id."""
        vol, image = self.volume(), self.new_image("bench-failed")
        proc = subprocess.run([sys.executable, "-m", "tests.fault_injection", "cinder_ext.cli",
                               "--config-file", self.conf_file, "upload", vol, image["id"]],
                              cwd=ROOT, capture_output=True, text=True,
                              env=dict(os.environ, **{fault_injection.ENV_POINT: "clone.cloned"}))
        if proc.returncode != -9:
            raise RuntimeError(f"the failed upload was not killed: {proc.stderr}")
        return image["id"]

    def glance_like(self, count, workers=64):
        """Images as glance_store writes them (UUID name, protected `snap`), not ours."""
        def one(_):
            name = str(uuid.uuid4())
            rbd.RBD().create(self.iio, name, MiB, old_format=False)
            with rbd.Image(self.iio, name) as img:
                img.create_snap("snap")  # waits for a monitor commit: shared by the workers
                img.protect_snap("snap")
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for i, _ in enumerate(pool.map(one, range(count)), 1):
                if i % 1000 == 0:
                    log(f"  {i} Glance-like images")

    # -- what is measured ----------------------------------------------------------------
    def purge_run(self):
        """The driver's periodic purge, as RBDCloneUploadDriver.purge calls it, after
        FAILED_UPLOADS killed uploads: it must remove exactly their clones."""
        failed = {f"{self.cluster.glance_pool}/{self.failed_upload()}" for _ in range(FAILED_UPLOADS)}
        time.sleep(WATCH_TIMEOUT + 2)  # their leases end: nobody holds their locks any more
        before = CountingGlance.requests
        t0 = time.monotonic()
        with connect(self.backend) as cluster:
            stores = self.glance.stores_detail()
            pools = purge_mod.image_pools(stores, cluster.fsid())
            out = purge_mod.purge(cluster, self.backend.rbd_pool, pools, glance=self.glance,
                                  glance_sees_all=True, finish=True, scan_volumes=False,
                                  reap_locks=False)
        seconds = time.monotonic() - t0
        expected = failed | self.reclaimable
        if set(out["removed"]) != expected or out["finished"]:
            raise RuntimeError(f"the purge removed {out['removed']}, not {sorted(expected)}: {out}")
        self.reclaimable = set()
        self.steps["purge"].append(out["seconds"])
        return seconds, CountingGlance.requests - before

    def delete_run(self):
        """Delete a volume that a clone upload depends on (deferred: to the trash), then
        its image, as a user would: the next purge run reclaims the volume, so the trash
        holds as many volumes at either size and each purge run has the same work."""
        vol, image = self.volume(), self.new_image("bench-delete")
        upload_volume(self.conf, self.backend, vol, image["id"], glance=self.glance,
                      encrypted=False)
        with connect(self.backend) as cluster:
            t0 = time.monotonic()
            out = delete.delete_volume(cluster, self.backend.rbd_pool, vol)
            seconds = time.monotonic() - t0
        self.steps["delete"].append(out["seconds"])
        self.glance.delete_image(image["id"])
        self.reclaimable.add(f"{self.backend.rbd_pool}/{vol}")
        return seconds

    def measure(self, label, runs):
        log(f"measuring {label}")
        out = {"purge": [], "glance_requests": [], "upload": [], "delete": []}
        self.steps = {"purge": [], "delete": []}  # each run's own step timings
        for _ in range(runs):  # interleaved, so that drift hits each alike
            seconds, requests = self.purge_run()
            out["purge"].append(seconds)
            out["glance_requests"].append(requests)
            out["upload"].append(self.upload())
            out["delete"].append(self.delete_run())
        for what, runs_steps in self.steps.items():
            names = sorted({k for r in runs_steps for k in r if isinstance(r[k], (int, float))})
            out[f"{what}_steps"] = {k: _median([r.get(k, 0) for r in runs_steps]) for k in names}
            log(f"  {what} steps (median s): {out[f'{what}_steps']}")
        return out


def _median(xs):
    return statistics.median(xs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--uploads", type=int, default=1000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = p.parse_args(argv)
    work = tempfile.mkdtemp(prefix="purge-scale-")
    bench = Bench(work)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
               "failed_uploads": FAILED_UPLOADS, "images": args.images, "uploads": args.uploads}
    try:
        bench.uploads(10)
        bench.delete_run()  # so that every measured purge run reclaims one trashed volume
        results["small"] = bench.measure("small: 10 clone uploads", args.runs)
        log(f"filling: {args.uploads - 10} more clone uploads, {args.images} Glance-like images")
        t0 = time.monotonic()
        bench.uploads(args.uploads - 10)
        bench.glance_like(args.images)
        results["fill_seconds"] = round(time.monotonic() - t0, 1)
        results["large"] = bench.measure(f"large: {args.uploads} clone uploads, "
                                         f"{args.images} Glance-like images", args.runs)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for key, what in (("purge", "one purge run (the driver's)"), ("upload", "clone upload"),
                      ("delete", "delete of a volume with a clone upload")):
        small, large = _median(results["small"][key]), _median(results["large"][key])
        rows.append(f"| {what} | {small:.3f} s | {large:.3f} s | {large / small:.2f}x |")
    requests = (f"Glance requests per purge run: small {results['small']['glance_requests']}, "
                f"large {results['large']['glance_requests']} (the stores detail, and "
                f"{FAILED_UPLOADS} failed uploads removed)")
    table = "\n".join([f"| | 10 uploads | {args.uploads} uploads, {args.images} images | ratio |",
                       "|---|---|---|---|", *rows, "", requests])
    print(table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "purge_scale.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "purge_scale.md"), "w") as f:
        f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
