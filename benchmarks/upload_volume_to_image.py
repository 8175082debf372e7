"""Fill the spec's performance table: upload volume to image, by clone and by copy, side by side.

    .venv/bin/python benchmarks/upload_volume_to_image.py [--sizes 1,2,4] [--runs 3] [--out DIR]

Boots its own dev Ceph cluster (file-backed BlueStore, room for each volume twice), the
upstream Glance 33 peer and, when present, the Cinder 29 peer venv; fills one volume per
size with incompressible data, then for each size runs every path --runs times,
interleaved (run 1 of every path, then run 2, ...) so that machine drift hits all alike:

  clone      our upload, end to end: stores detail (from glance-info-api), decision, clone,
             registration, active
  independent  our upload of an image that depends on nothing (rbd_flatten_volume_to_image):
             the same, with the clone flattened inside Ceph before its snapshot
             (cinder_ext.independent)
  copy       our copy fallback into Glance (PUT /v2/images/{id}/file)
  upstream   real Cinder 29 RBDDriver.copy_volume_to_image (os-brick handle -> glanceclient)
  floor-clone  the bare librbd sequence: snapshot, clone, snapshot + protect
  floor-copy   `rbd cp` of the volume into the Glance pool
  floor-deep-copy  `rbd deep cp` of the volume into the Glance pool (the independent path's floor)

Before each measurement it pauses 2 s so that every path starts with an idle monitor, and
between runs it waits for Glance's background hashing (do_secure_hash) of the previous
image to end, so no measurement pays for another's. Writes, under --out: results.json
(every run, with the clone path's per-step seconds), table.md (the spec's table), and
upload_volume_to_image.png (time against size for every path).
"""

import argparse
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

from cinder_ext import opts  # noqa: E402
from cinder_ext.glance import Glance  # noqa: E402
from cinder_ext.upload import upload_volume  # noqa: E402
from tests.cinder_peer import cinder_conf as cinder29_conf  # noqa: E402
from tests.devcluster import DevCluster, stop_all  # noqa: E402
from tests.info_api import InfoAPI  # noqa: E402
from tests.peers import GlancePeer  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
PATHS = ("clone", "independent", "copy", "upstream", "floor-clone", "floor-copy", "floor-deep-copy")
SETTLE = 2.0
CINDER29 = os.path.join(ROOT, ".peers", "cinder29", "bin", "python")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, work, sizes):
        self.work = work
        osd_gib = 2 * max(sizes) + 4
        log(f"booting a dev cluster with a {osd_gib} GiB BlueStore OSD under {work}")
        self.cluster = DevCluster.start(os.path.join(work, "ceph"), "--osd-backend", "bluestore",
                                        "--osd-size", f"{osd_gib}G")
        self.stop = [self.cluster.stop]
        # Cinder's service identity (admin + service roles), thin provisioning as a real RBD store
        self.peer = GlancePeer.start(os.path.join(work, "glance"), self.cluster.dir,
                                     default_roles="admin,service",
                                     settings=("ceph.rbd_thin_provisioning=true",))
        self.stop.insert(0, self.peer.stop)
        # the stores detail comes from glance-info-api, as behind an operator's load balancer
        os.makedirs(os.path.join(work, "info-api"))
        self.info = InfoAPI(self.peer.config_file, workdir=os.path.join(work, "info-api"))
        self.stop.insert(0, self.info.stop)
        self.admin = rados.Rados(conffile=self.cluster.conf, conf={"keyring": self.cluster.admin_keyring})
        self.admin.connect(timeout=30)
        self.vio = self.admin.open_ioctx(self.cluster.cinder_pool)
        self.iio = self.admin.open_ioctx(self.cluster.glance_pool)
        self.confs = {enable: self._our_conf(enable) for enable in (True, False)}
        self.confs["independent"] = self._our_conf(True, flatten=True)
        self.glance = Glance(opts.load([self.confs[True]])[0])

    def close(self):
        self.admin.shutdown()
        stop_all(self.stop, log)

    def _our_conf(self, enable, flatten=False):
        client = self.cluster.client("cinder")
        path = os.path.join(self.work, f"cinder-ours-{enable}{'-flatten' if flatten else ''}.conf")
        with open(path, "w") as f:
            f.write(f"""[DEFAULT]
enabled_backends = ceph
[ceph]
rbd_pool = {self.cluster.cinder_pool}
rbd_user = {self.cluster.cinder_user}
rbd_ceph_conf = {client['conf']}
enable_clone_optimization = {str(enable).lower()}
rbd_flatten_volume_to_image = {str(flatten).lower()}
clone_active_timeout = 120
[glance]
api_servers = {self.peer.url}
stores_info_url = {self.info.url}
auth_strategy = noauth
""")
        return path

    # -- volumes ---------------------------------------------------------------------
    def make_volume(self, size_gib):
        """volume-<uuid> of size_gib GiB, every byte random (incompressible); returns its id."""
        vid = str(uuid.uuid4())
        name = f"volume-{vid}"
        rbd.RBD().create(self.vio, name, size_gib * GiB, old_format=False,
                         features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
                         | rbd.RBD_FEATURE_OBJECT_MAP | rbd.RBD_FEATURE_FAST_DIFF
                         | rbd.RBD_FEATURE_DEEP_FLATTEN)
        t0 = time.monotonic()
        with rbd.Image(self.vio, name) as img:
            step = 4 * MiB
            pending = []
            for off in range(0, size_gib * GiB, step):
                pending.append(img.aio_write(os.urandom(step), off, lambda *a: None))
                if len(pending) >= 16:
                    pending.pop(0).wait_for_complete_and_cb()
            for c in pending:
                c.wait_for_complete_and_cb()
            img.flush()
        log(f"  filled {name}: {size_gib} GiB in {time.monotonic() - t0:.1f}s")
        return vid

    def remove_volume(self, vid):
        name = f"volume-{vid}"
        self.purge_volume_snaps(name)
        rbd.RBD().remove(self.vio, name)

    def purge_volume_snaps(self, name):
        # clone v2 leaves the volume's snapshot in the trash namespace until its clone is gone;
        # Glance (rightly) cannot write the Cinder pool to drop it: the admin does, between runs
        with rbd.Image(self.vio, name) as img:
            for snap in list(img.list_snaps()):
                img.remove_snap_by_id(snap["id"])

    # -- paths -----------------------------------------------------------------------
    def run(self, path, vid, size_gib):
        return getattr(self, "path_" + path.replace("-", "_"))(vid, size_gib)

    def _ours(self, vid, enable):
        image = self.glance.create_image(f"bench-{'clone' if enable else 'copy'}")
        conf, backend = opts.load([self.confs[enable]])
        t0 = time.monotonic()
        result = upload_volume(conf, backend, f"volume-{vid}", image["id"], encrypted=False)
        seconds = time.monotonic() - t0
        expected = "clone" if enable else "copy"
        if result["method"] != expected:
            raise RuntimeError(f"{expected} path took {result['method']}: {result.get('reason')} "
                               f"{result.get('detail')}")
        self._settle_and_delete(image["id"])
        return {"seconds": seconds, "steps": result["seconds"]}

    def path_clone(self, vid, size_gib):
        out = self._ours(vid, True)
        self.purge_volume_snaps(f"volume-{vid}")
        return out

    def path_copy(self, vid, size_gib):
        return self._ours(vid, False)

    def path_independent(self, vid, size_gib):
        image = self.glance.create_image("bench-independent")
        conf, backend = opts.load([self.confs["independent"]])
        t0 = time.monotonic()
        result = upload_volume(conf, backend, f"volume-{vid}", image["id"], encrypted=False)
        seconds = time.monotonic() - t0
        if result["method"] != "independent":
            raise RuntimeError(f"independent path took {result['method']}: {result.get('reason')} "
                               f"{result.get('detail')}")
        with rbd.Image(self.iio, image["id"], read_only=True) as img:
            try:
                img.parent_id()
                raise RuntimeError(f"independent path left image {image['id']} with a parent")
            except rbd.ImageNotFound:
                pass
        self._settle_and_delete(image["id"])
        return {"seconds": seconds, "steps": result["seconds"]}

    def path_upstream(self, vid, size_gib):
        state = os.path.join(self.work, f"cinder29-{uuid.uuid4().hex[:8]}")
        os.makedirs(os.path.join(state, "locks"))
        text = cinder29_conf(self.cluster, self.peer.url, state, False).replace(
            "volume_driver = cinder_ext.driver.RBDCloneUploadDriver",
            "volume_driver = cinder.volume.drivers.rbd.RBDDriver")
        with open(os.path.join(state, "cinder.conf"), "w") as f:
            f.write(text)
        spec = {"config_file": os.path.join(state, "cinder.conf"), "backend": "ceph",
                "keyring": self.cluster.client("cinder")["keyring"], "volume_id": vid,
                "size_gb": size_gib, "project_id": "bench"}
        with open(os.path.join(state, "spec.json"), "w") as f:
            json.dump(spec, f)
        proc = subprocess.run([CINDER29, os.path.join(ROOT, "benchmarks", "cinder29_upload.py"),
                               os.path.join(state, "spec.json")], capture_output=True, text=True,
                              cwd=state, timeout=3600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        if proc.returncode != 0:
            raise RuntimeError(f"upstream path: {proc.stderr.strip().splitlines()[-1:]} (state in {state})")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if out["status"] != "active":
            raise RuntimeError(f"upstream path left image {out['image_id']} {out['status']}")
        self._settle_and_delete(out["image_id"])
        shutil.rmtree(state, ignore_errors=True)
        return {"seconds": out["seconds"]}

    def path_floor_clone(self, vid, size_gib):
        client = self.cluster.client("cinder")
        conn = rados.Rados(conffile=client["conf"], rados_id=self.cluster.cinder_user)
        conn.connect(timeout=30)
        try:
            vio, iio = conn.open_ioctx(self.cluster.cinder_pool), conn.open_ioctx(self.cluster.glance_pool)
            name, child, snap = f"volume-{vid}", f"floor-{uuid.uuid4().hex[:8]}", "floor"
            t0 = time.monotonic()
            with rbd.Image(vio, name) as img:
                img.create_snap(snap)
            rbd.RBD().clone(vio, name, snap, iio, child, features=rbd.RBD_FEATURE_LAYERING)
            with rbd.Image(iio, child) as img:
                img.create_snap("snap")
                img.protect_snap("snap")
            seconds = time.monotonic() - t0
            with rbd.Image(iio, child) as img:
                img.unprotect_snap("snap")
                img.remove_snap("snap")
            rbd.RBD().remove(iio, child)
            with rbd.Image(vio, name) as img:
                img.remove_snap(snap)
        finally:
            conn.shutdown()
        return {"seconds": seconds}

    def path_floor_copy(self, vid, size_gib, command=("cp",)):
        client = self.cluster.client("cinder")
        dest = f"{self.cluster.glance_pool}/floor-{uuid.uuid4().hex[:8]}"
        t0 = time.monotonic()
        subprocess.run(["rbd", "--conf", client["conf"], "--id", self.cluster.cinder_user,
                        *command, "--no-progress", f"{self.cluster.cinder_pool}/volume-{vid}", dest],
                       check=True, capture_output=True)
        seconds = time.monotonic() - t0
        subprocess.run(["rbd", "--conf", client["conf"], "--id", self.cluster.cinder_user, "rm",
                        "--no-progress", dest], check=True, capture_output=True)
        return {"seconds": seconds}

    def path_floor_deep_copy(self, vid, size_gib):
        return self.path_floor_copy(vid, size_gib, command=("deep", "cp"))

    def _settle_and_delete(self, image_id, timeout=900):
        # Glance hashes a location-added image in the background (do_secure_hash): wait it out
        # so that the next measurement does not share the machine with it
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            image = self.glance.get_image(image_id)
            if image.get("os_hash_value"):
                break
            time.sleep(0.25)
        self.glance.delete_image(image_id)


def summarize(results, sizes):
    rows = []
    for size in sizes:
        row = {"size_gib": size}
        for path in PATHS:
            times = [r["seconds"] for r in results if r["size_gib"] == size and r["path"] == path]
            if times:
                row[path] = {"median": statistics.median(times), "min": min(times), "max": max(times),
                             "runs": len(times)}
        for path in ("clone", "independent"):
            steps = [r["steps"] for r in results if r["size_gib"] == size and r["path"] == path]
            if steps:
                row[f"{path}_steps"] = {k: statistics.median(s.get(k, 0) for s in steps)
                                        for k in steps[0]}
        rows.append(row)
    return rows


def fmt(cell):
    if not cell:
        return "n/a"
    return f"{cell['median']:.2f} s ({cell['min']:.2f}–{cell['max']:.2f})"


def ratio(a, b):
    return f"{a['median'] / b['median']:.1f}x" if a and b else "n/a"


def table(rows):
    lines = ["| Image size | Time without COW clone (upstream Cinder 29) | Time with COW clone (ours) "
             "| Speed-up | Independent image (ours: clone + flatten) | Independent vs upstream "
             "| Our copy fallback | Copy vs upstream | Clone floor (librbd) | Clone / floor "
             "| Copy floor (`rbd cp`) | Deep-copy floor (`rbd deep cp`) | Independent / deep copy |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        up, cl, cp, ind = r.get("upstream"), r.get("clone"), r.get("copy"), r.get("independent")
        fc, fp, fd = r.get("floor-clone"), r.get("floor-copy"), r.get("floor-deep-copy")
        lines.append(f"| {r['size_gib']} GiB | {fmt(up)} | {fmt(cl)} | {ratio(up, cl)} | {fmt(ind)} "
                     f"| {ratio(up, ind)} faster | {fmt(cp)} | {ratio(up, cp)} faster | {fmt(fc)} "
                     f"| {ratio(cl, fc)} | {fmt(fp)} | {fmt(fd)} | {ratio(ind, fd)} |")
    lines.append("")
    lines.append("Medians of the runs, (min–max).")
    for path, title in (("clone", "Clone path"), ("independent", "Independent path")):
        steps = [r[f"{path}_steps"] for r in rows if f"{path}_steps" in r]
        if not steps:
            continue
        lines += ["", f"{title}, median seconds per step:", ""]
        keys = [k for k in steps[0] if k != "total"]
        lines.append("| Image size | " + " | ".join(keys) + " | total |")
        lines.append("|---" * (len(keys) + 2) + "|")
        for r in rows:
            s = r.get(f"{path}_steps", {})
            lines.append(f"| {r['size_gib']} GiB | " + " | ".join(f"{s.get(k, 0):.3f}" for k in keys)
                         + f" | {s.get('total', 0):.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = {"clone": "clone (ours)", "independent": "independent image (ours: clone + flatten)",
              "copy": "copy fallback (ours)", "upstream": "upstream Cinder 29",
              "floor-clone": "clone floor (librbd)", "floor-copy": "copy floor (rbd cp)",
              "floor-deep-copy": "deep-copy floor (rbd deep cp)"}
    for p in PATHS:
        pts = [(r["size_gib"], r[p]) for r in rows if p in r]
        if not pts:
            continue
        xs = [x for x, _ in pts]
        ax.errorbar(xs, [c["median"] for _, c in pts],
                    yerr=[[c["median"] - c["min"] for _, c in pts], [c["max"] - c["median"] for _, c in pts]],
                    marker="o", capsize=3, label=labels[p],
                    linestyle="--" if p.startswith("floor") else "-")
    ax.set_xlabel("volume size (GiB, incompressible data)")
    ax.set_ylabel("seconds (median, min–max)")
    ax.set_title("Upload volume to image on Ceph RBD")
    ax.set_xticks(sorted({r["size_gib"] for r in rows}))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,2,4", help="volume sizes in GiB (default 1,2,4)")
    ap.add_argument("--runs", type=int, default=3, help="runs per path and size (default 3)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"subset of {','.join(PATHS)}")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = ap.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes: whole GiB, comma separated: {args.sizes!r}")
    paths = [p for p in args.paths.split(",") if p]
    unknown = set(paths) - set(PATHS)
    if unknown or args.runs < 1 or not sizes or min(sizes) < 1:
        ap.error(f"bad --paths/--runs/--sizes ({', '.join(sorted(unknown)) or 'values'})")
    if "upstream" in paths and not os.path.exists(CINDER29):
        subprocess.run([os.path.join(ROOT, "tools", "peers", "setup-cinder-peer")], check=True)

    work = tempfile.mkdtemp(prefix="bench-upload-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    bench = Bench(work, sizes)
    results = []
    try:
        for size in sizes:
            vid = bench.make_volume(size)
            for run in range(args.runs):
                for path in paths:
                    # every measurement starts with an idle monitor: a snapshot right after
                    # another monitor commit waits paxos_propose_interval (1 s), not 0.06 s
                    time.sleep(SETTLE)
                    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
                    out = bench.run(path, vid, size)
                    results.append(dict(out, path=path, size_gib=size, run=run, load1=load))
                    log(f"  {size} GiB run {run + 1}/{args.runs} {path:15} {out['seconds']:8.3f} s "
                        f"(load {load:.2f})")
            bench.remove_volume(vid)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)

    rows = summarize(results, sizes)
    os.makedirs(args.out, exist_ok=True)
    machine = (f"{platform.node()}: {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GiB:.0f} GiB RAM, "
               f"{platform.platform()}; Ceph 16.2 single OSD (BlueStore file), 1 monitor")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"machine": machine, "sizes": sizes, "runs": args.runs, "summary": rows,
                   "results": results}, f, indent=2)
    md = table(rows)
    loads = [r["load1"] for r in results]
    if loads:
        md += (f"\n1-minute load average before each measurement: median {statistics.median(loads):.2f}, "
               f"{min(loads):.2f}–{max(loads):.2f} ({os.cpu_count()} cores).\n")
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(f"Machine: {machine}\n\nCommand: `.venv/bin/python benchmarks/upload_volume_to_image.py "
                f"--sizes {args.sizes} --runs {args.runs}"
                + (f" --paths {args.paths}" if paths != list(PATHS) else "") + "`\n\n" + md)
    plot(rows, os.path.join(args.out, "upload_volume_to_image.png"))
    print(md)
    for r in rows:
        ind, fd, up = r.get("independent"), r.get("floor-deep-copy"), r.get("upstream")
        if ind and fd:
            print(f"independent {r['size_gib']} GiB / rbd deep cp: {ind['median'] / fd['median']:.2f}")
        if ind and up:
            print(f"upstream {r['size_gib']} GiB / independent: {up['median'] / ind['median']:.2f}")
    if rows and "clone" in rows[0] and "clone" in rows[-1] and len(sizes) > 1:
        print(f"clone {sizes[-1]} GiB / {sizes[0]} GiB: "
              f"{rows[-1]['clone']['median'] / rows[0]['clone']['median']:.2f}")


if __name__ == "__main__":
    main()
