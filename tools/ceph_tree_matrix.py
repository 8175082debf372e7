"""tools/matrix --ceph: the Ceph dimension (16.2, 18.2, 20.2), one row per release.

For each release: builds its tree (tools/ceph-tree; 16 is the machine's own Debian 12
Ceph, no tree); boots a dev cluster of that release (tools/ceph-dev-cluster --ceph R),
timed ("start s"), and times on it, with the client of that release (inside the tree:
its Python and Debian's rados/rbd), what the driver's clone and the copy it falls back
to do in librbd to a volume holding DATA MiB: a snapshot + v2 clone into the Glance
pool ("rbd clone s") against reading every block and writing the non-zero ones into a
new image there ("rbd copy s"); stops it. Then runs the functional modules that need no
OpenStack peer (MODULES) with pytest inside the tree (its venv, the repository
bind-mounted at its own path, CEPH_RELEASE=R): their session boots its own cluster
("passed", "failed"). Last, the demo's upload path ("clone s", "copy s": `upload`
below): Glance 33 on this machine, the cinder-rbd-clone CLI inside the tree. Prints:

    ceph  version  set-up s  start s  passed  failed  clone s  copy s  rbd clone s  rbd copy s  python

Logs, JUnit files and each row as JSON go to .work/matrix/ceph-<R>.*. Full tier only:
building a tree takes minutes.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import ceph_dev_cluster  # noqa: E402
import ceph_tree  # noqa: E402

RELEASES = ("16", "18", "20")
LOGS = os.path.join(ROOT, ".work", "matrix")
HOST_PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
# the functional modules that need no Glance, Keystone or Cinder peer (those run in the
# machine's Python 3.11 venvs, which a tree does not have)
MODULES = ("tests/functional/test_ceph_matrix.py", "tests/functional/test_dev_cluster.py",
           "tests/functional/test_ceph_adapter.py", "tests/functional/test_copy_reader.py",
           "tests/functional/test_store_rbd_fsid.py")
DATA_MIB = 256

# clone vs copy of a volume with data, as the driver's two paths move it (client side)
TIMING = r"""
import json, os, sys, time
import rados, rbd
conf, keyring, vpool, ipool, data_mib = sys.argv[1:6]
data_mib = int(data_mib); MiB = 1 << 20; chunk = 4 * MiB
conn = rados.Rados(conffile=conf, conf={"keyring": keyring, "rbd_default_clone_format": "2"})
conn.connect(timeout=30)
try:
    v, i = conn.open_ioctx(vpool), conn.open_ioctx(ipool)
    rbd.RBD().create(v, "timing-vol", 1024 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    with rbd.Image(v, "timing-vol") as img:
        for off in range(0, data_mib * MiB, chunk):
            img.write(os.urandom(chunk), off)
    t = time.monotonic()
    with rbd.Image(v, "timing-vol") as img:
        img.create_snap("upload")
    rbd.RBD().clone(v, "timing-vol", "upload", i, "timing-clone", features=rbd.RBD_FEATURE_LAYERING)
    clone = time.monotonic() - t
    t = time.monotonic()
    rbd.RBD().create(i, "timing-copy", 1024 * MiB, old_format=False, features=rbd.RBD_FEATURE_LAYERING)
    with rbd.Image(v, "timing-vol", snapshot="upload", read_only=True) as src, rbd.Image(i, "timing-copy") as dst:
        for off in range(0, src.size(), chunk):
            block = src.read(off, chunk)
            if block.count(0) != len(block):
                dst.write(block, off)
    copy = time.monotonic() - t
    print(json.dumps({"clone": clone, "copy": copy, "client": str(rados.Rados().version()),
                      "python": sys.version.split()[0]}))
finally:
    conn.shutdown()
"""


def upload(release, client=None, data_mib=DATA_MIB):
    """The demo's upload path on a cluster of that release (run with the project's .venv:
    python tools/ceph_tree_matrix.py upload R): upstream Glance 33 and glance-info-api on
    this machine (Python 3.11, Ceph 16.2 client), the cinder-rbd-clone CLI of the client
    release, inside the tree; one volume of real data uploaded by clone, then by copy, each
    image's bytes read back through Glance. client: the CLI's release when it is not the
    cluster's (a mixed cell: CLI and its librbd of one release, daemons of another).
    Prints one JSON line."""
    import demo  # tools/demo.py: its Glance set-up, volume and read-back, as the demo runs them
    from tests.devcluster import DevCluster
    work = tempfile.mkdtemp(prefix=f"matrix-upload-{release}-")
    home = os.path.join(work, "home")
    os.makedirs(home)
    os.environ.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"))
    # Glance's librbd is 16.2: a Tentacle cluster lets it in with aes keys (--cephx-cipher aes)
    args = ["--osd-size", f"{max(2048, 3 * data_mib + 1024)}M", "--ceph", release]
    if int(release) >= 20:
        args += ["--cephx-cipher", "aes"]
    cluster = DevCluster.start(os.path.join(work, "ceph"), *args)
    client = client or release
    tree = None if client == ceph_dev_cluster.local_release() else ceph_tree.tree_path(client)
    stoppers = [cluster.stop]
    out = {"release": release, "version": cluster.state.get("ceph_version"), "client": client}
    try:
        if tree:
            ceph_dev_cluster.tree_mounts(tree)
            for path in (ROOT, work):
                if not ceph_dev_cluster.mounted(tree + path):
                    ceph_dev_cluster.bind_into(tree, path)
                    stoppers.insert(0, lambda path=path: ceph_dev_cluster.unbind(tree, path))
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            glance = demo.start_noauth_mode(work, cluster, stoppers)
        volume = "volume-5e2c0a8e-7d1b-4d39-9f0a-6c1d2f3a4b5c"
        digest = demo.fill_volume(cluster, volume, 1024, data_mib)
        cli = ([*(["chroot", tree] if tree else []), os.path.join(ceph_tree.VENV if tree else
                os.path.join(ROOT, ".venv"), "bin", "cinder-rbd-clone")])
        for method, enable in (("clone", True), ("copy", False)):
            conf = demo.cinder_conf(os.path.join(work, f"cinder-{method}.conf"), cluster,
                                    glance["cinder_glance_section"], enable)

            def call(*argv):
                proc = subprocess.run([*cli, "--config-file", conf, *argv], capture_output=True, text=True,
                                      env=dict(os.environ, PYTHONPATH=ROOT), timeout=900)
                if proc.returncode:
                    raise RuntimeError(f"cinder-rbd-clone {argv[0]}: {proc.stderr.strip()[-300:]}")
                return json.loads(proc.stdout)
            image = call("create-image", f"matrix-{method}")
            t = time.monotonic()
            result = call("upload", volume, image["id"])
            out[method] = round(time.monotonic() - t, 3)
            out[f"{method}_method"] = result.get("method")
            got = demo.image_digest(glance["image_url"], glance["headers"](), image["id"], data_mib)
            out[f"{method}_bytes_equal"] = got == digest
    finally:
        for stop in stoppers:
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                out.setdefault("stop_errors", []).append(str(exc))
        subprocess.run(["rm", "-rf", work])
    print(json.dumps(out))
    return out


def mixed_row(release, client):
    """A mixed cell: a cluster of `release`, the cinder-rbd-clone CLI and its librbd of
    `client` (its tree), Glance 33 on this machine: the demo's upload by clone and by copy."""
    r = {"ceph": f"{release}/{client}", "version": "-", "setup": 0.0, "start": 0.0, "passed": 0, "failed": 0,
         "skipped": 0, "clone": None, "copy": None, "up_clone": None, "up_copy": None, "python": "-", "note": ""}
    t0 = time.monotonic()
    try:
        for rel in {release, client} - {ceph_dev_cluster.local_release()}:
            ceph_tree.build(rel)
    except ceph_tree.TreeError as exc:
        r["note"] = f"no tree: {str(exc).splitlines()[0]}"
        return r
    r["setup"] = time.monotonic() - t0
    _upload_into(r, release, client)
    return r


def _upload_into(r, release, client=None):
    proc = subprocess.run([HOST_PYTHON, os.path.abspath(__file__), "upload", release, *([client] if client else [])],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    name = f"ceph-{release}" + (f"-client{client}" if client else "")
    os.makedirs(LOGS, exist_ok=True)
    with open(os.path.join(LOGS, f"{name}-upload.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    try:
        up = json.loads(proc.stdout.strip().splitlines()[-1])
        r.update(up_clone=up["clone"], up_copy=up["copy"], version=up["version"])
        ok = up["clone_method"] == "clone" and up["clone_bytes_equal"] and up["copy_bytes_equal"]
        r["passed" if ok else "failed"] += 1
        if not ok:
            r["note"] += f" upload: {up}"
    except (ValueError, IndexError, KeyError):
        r["failed"] += 1
        r["note"] += f" upload failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}"


def in_tree(tree, argv, env):
    """argv run inside the tree with env, from the repository's directory."""
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    return ["chroot", tree, "sh", "-c", f"cd {ROOT} && exec env {exports} " + " ".join(argv)]


def count(junit):
    passed = failed = skipped = 0
    for case in ET.parse(junit).getroot().iter("testcase"):
        tags = {child.tag for child in case}
        if tags & {"failure", "error"}:
            failed += 1
        elif "skipped" in tags:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def row(release, pytest_args=()):
    r = {"ceph": release, "version": "-", "setup": 0.0, "start": 0.0, "passed": 0, "failed": 0,
         "skipped": 0, "clone": None, "copy": None, "up_clone": None, "up_copy": None, "python": "-",
         "note": ""}
    os.makedirs(LOGS, exist_ok=True)
    local = ceph_dev_cluster.local_release() == release
    t0 = time.monotonic()
    tree = None
    if not local:
        try:
            tree = ceph_tree.build(release)
        except ceph_tree.TreeError as exc:
            r["note"] = f"no tree: {str(exc).splitlines()[0]}"
            return r
        ceph_dev_cluster.tree_mounts(tree)
        ceph_dev_cluster.bind_into(tree, ROOT)  # the project's code, the logs, the JUnit file
    r["setup"] = time.monotonic() - t0
    try:
        return _row(r, release, tree, pytest_args)
    finally:
        if tree:
            ceph_dev_cluster.unbind(tree, ROOT)


def _row(r, release, tree, pytest_args):
    python = os.path.join(ceph_tree.VENV, "bin", "python") if tree else HOST_PYTHON

    # 1. boot a cluster of that release and time clone against copy on it
    d = tempfile.mkdtemp(prefix=f"matrix-ceph{release}-")
    os.rmdir(d)
    cluster = ceph_dev_cluster.Cluster(d)
    t0 = time.monotonic()
    try:
        state = cluster.start(0, "memstore", (3 * DATA_MIB + 1024) << 20, {"images": "images", "volumes": "volumes"},
                              {"glance": "glance", "cinder": "cinder"}, release=release)
        r["start"] = time.monotonic() - t0
        r["version"] = state["ceph_version"]
        argv = [python, "-c", TIMING, state["conf"], state["admin_keyring"], "volumes", "images", str(DATA_MIB)]
        if tree:
            env = dict(os.environ, PYTHONPATH=ROOT)
            proc = subprocess.run(["chroot", tree, *argv], capture_output=True, text=True, env=env, timeout=600)
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0:
            timing = json.loads(proc.stdout.strip().splitlines()[-1])
            r.update(clone=timing["clone"], copy=timing["copy"], python=timing["python"])
        else:
            r["note"] = f"timing failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    except ceph_dev_cluster.ClusterError as exc:
        r["note"] = f"cluster did not start: {exc}"
        return r
    finally:
        cluster.stop(quiet=True)
        subprocess.run(["rm", "-rf", d])

    # 2. the functional modules, the client inside the tree; the project's three
    # distributions installed there editable (no deps: the tree's venv has them), for
    # their entry points (glance_store_ext's providers), as tools/setup-venv does in .venv
    if tree:
        pip = os.path.join(ceph_tree.VENV, "bin", "pip")
        if subprocess.run(["chroot", tree, pip, "show", "-q", "glance-store-ext"], capture_output=True).returncode:
            argv = [pip, "install", "-q", "--no-deps"]
            for dist in ("glance-store-ext", "cinder-rbd-clone", "glance-info-api"):
                argv += ["-e", os.path.join(ROOT, "packaging", dist)]
            proc = subprocess.run(in_tree(tree, argv, {"HOME": "/tmp"}), capture_output=True, text=True)
            if proc.returncode:
                r["note"] += f" pip install -e failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}"
    junit = os.path.join(LOGS, f"ceph-{release}.xml")
    log = os.path.join(LOGS, f"ceph-{release}.log")
    if os.path.exists(junit):
        os.unlink(junit)
    argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "junit_family=xunit2",
            f"--junitxml={junit}", *MODULES, *pytest_args]
    env = {"CEPH_RELEASE": release, "PYTHONPATH": ROOT, "HOME": "/tmp", "LC_ALL": "C.UTF-8",
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    cmd = in_tree(tree, argv, env) if tree else argv
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                          env=None if tree else dict(os.environ, CEPH_RELEASE=release), timeout=1800)
    with open(log, "w") as f:
        f.write(proc.stdout + proc.stderr)
    if os.path.exists(junit):
        r["passed"], r["failed"], r["skipped"] = count(junit)
    if r["passed"] + r["failed"] == 0:
        r["note"] += f" no test reported (pytest exit {proc.returncode}; {os.path.relpath(log, ROOT)})"
    elif r["failed"]:
        r["note"] += f" {os.path.relpath(log, ROOT)}"

    # 3. the demo's upload path: cinder-rbd-clone (inside the tree) with Glance 33
    _upload_into(r, release)
    with open(os.path.join(LOGS, f"ceph-{release}.json"), "w") as f:
        json.dump(r, f, indent=2)
    return r


FMT = "{:<5} {:<8} {:>8} {:>7} {:>6} {:>6} {:>7} {:>7} {:>10} {:>9}  {:<7} {}"


def main(wanted, pytest_args=()):
    unknown = [w for w in wanted if any(part not in RELEASES for part in w.split("/", 1))]
    if unknown:
        print(f"usage: tools/matrix --ceph [R|R/CLIENT ...] [-- PYTEST_ARGS]; R: {' '.join(RELEASES)} "
              "(R/CLIENT: a cluster of R, the CLI of CLIENT: the upload only)", file=sys.stderr)
        return 2
    print(FMT.format("ceph", "version", "set-up s", "start s", "passed", "failed", "clone s", "copy s",
                     "rbd clone s", "rbd copy s", "python", "").rstrip(), flush=True)
    rows = []
    for release in wanted or RELEASES:
        r = mixed_row(*release.split("/")) if "/" in release else row(release, pytest_args)
        rows.append(r)
        fmt_s = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(FMT.format(r["ceph"], r["version"], f"{r['setup']:.1f}", f"{r['start']:.1f}", r["passed"],
                         r["failed"], fmt_s(r["up_clone"]), fmt_s(r["up_copy"]), fmt_s(r["clone"]), fmt_s(r["copy"]),
                         r["python"], r["note"].strip()).rstrip(),
              flush=True)
    total = {k: sum(r[k] for r in rows) for k in ("passed", "failed")}
    print(f"ceph matrix: {total['passed']} passed, {total['failed']} failed")
    return 0 if all(r["passed"] and not r["failed"] and r["up_clone"] is not None for r in rows) else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["upload"]:
        sys.path.insert(0, ROOT)
        upload(sys.argv[2], *sys.argv[3:4])
