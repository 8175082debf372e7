#!/usr/bin/python3
"""Debian root trees holding another Ceph release, for the Ceph matrix (full tier).

    ceph-tree RELEASE          build the tree once (debootstrap + apt), print its path
    ceph-tree path RELEASE     print the tree's path (exit 1 when not built)
    ceph-tree info RELEASE     print the tree's stamp (suite, Ceph and Python versions) as JSON

RELEASE is 18 (Debian 13 "trixie": Ceph 18.2 Reef) or 20 (Debian unstable "sid":
Ceph 20.2 Tentacle). 16 is this machine's own Debian 12 packages: no tree.

A tree is made from Debian's own packages by debootstrap (minbase), then apt-get
inside it installs the Ceph daemons, the client tools, python3-rados/python3-rbd
and python3-venv; a venv inside the tree (/opt/venv, --system-site-packages so
Debian's rados and rbd import) gets the project's runtime dependencies (from
packaging/*/pyproject.toml) and test-requirements.txt; the project's own code runs
from the repository, bind-mounted at its path (PYTHONPATH). It is built in a
scratch directory next to its final place and renamed once complete, then
stamped: a second run finds the stamp and does nothing (the venv is refreshed
when the requirements change). Idempotent, from nothing, one command
(debootstrap itself is apt-installed when missing); a build stopped after
debootstrap resumes there; one builder per tree at a time (flock). apt runs
with the tree's /proc mounted (cryptsetup-bin's maintainer script needs it) and
Acquire::Check-Valid-Until off (the mirror here serves frozen snapshots whose
Release files are past their Valid-Until); the machine's own CAs
(/usr/local/share/ca-certificates) are added to the tree's, for pip. Trees live under the repository's ignored .work/ceph-trees/
(CEPH_TREE_ROOT overrides). The dev cluster (tools/ceph-dev-cluster --ceph 18)
runs its daemons and tools with chroot into the tree.

Standard library only; root only (debootstrap, chroot).
"""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MIRROR = os.environ.get("CEPH_TREE_MIRROR", "http://deb.debian.org/debian")
STAMP = ".ceph-tree.json"
# release -> Debian suite shipping it
SUITES = {"18": "trixie", "20": "sid"}
PACKAGES = ("ceph-mon", "ceph-osd", "ceph-common", "python3-rados", "python3-rbd",
            "python3-venv", "python3-pip", "qemu-utils", "ca-certificates", "procps")
# the archive mirror's Release files may be older than their Valid-Until (a frozen snapshot)
APT_OPTS = ("-o", "Acquire::Check-Valid-Until=false", "-o", "APT::Install-Recommends=false")
VENV = "/opt/venv"


class TreeError(Exception):
    pass


def tree_root():
    return os.environ.get("CEPH_TREE_ROOT") or os.path.join(ROOT, ".work", "ceph-trees")


def tree_path(release):
    return os.path.join(tree_root(), f"ceph{release}")


def stamp(release):
    """The stamp of a complete tree, or None."""
    try:
        with open(os.path.join(tree_path(release), STAMP)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def log(msg):
    sys.stderr.write(f"ceph-tree: {msg}\n")
    sys.stderr.flush()


def sh(cmd, log_file, timeout=3600, env=None):
    with open(log_file, "a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive", LC_ALL="C.UTF-8",
                                       **(env or {})))
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = f.read().strip().splitlines()[-5:]
        raise TreeError(f"{cmd[0]} {' '.join(cmd[1:3])} failed (exit {proc.returncode}); "
                        f"log {log_file}:\n  " + "\n  ".join(tail))


def chroot(tree, *cmd):
    return ["chroot", tree, *cmd]


def remove(path):
    """rm -r a tree, never through a mount (the dev cluster binds /dev, /proc, /sys into trees)."""
    with open("/proc/self/mountinfo") as f:
        inside = [line.split()[4] for line in f if line.split()[4].startswith(path + "/")]
    for target in sorted(inside, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True)
    shutil.rmtree(path)


def project_requirements():
    """The runtime dependencies of packaging/*, less the project's own distributions (its
    code goes on PYTHONPATH), then test-requirements.txt: what the tree's venv installs."""
    import tomllib  # Python 3.11+: this tool runs on the host's python3
    own, deps = set(), []
    for pyproject in sorted(os.listdir(os.path.join(ROOT, "packaging"))):
        path = os.path.join(ROOT, "packaging", pyproject, "pyproject.toml")
        if os.path.exists(path):
            with open(path, "rb") as f:
                project = tomllib.load(f)["project"]
            own.add(project["name"])
            deps += project.get("dependencies", [])
    deps = [d for d in deps if not any(d.startswith(name + "=") for name in own)]
    with open(os.path.join(ROOT, "test-requirements.txt")) as f:
        deps += [line.split("#")[0].strip() for line in f if line.split("#")[0].strip()]
    return sorted(set(deps))


def ensure_debootstrap(log_file):
    if shutil.which("debootstrap"):
        return
    sh(["apt-get", "update", "-qq"], log_file)
    sh(["apt-get", "install", "-y", "-qq", "debootstrap"], log_file)


def build(release, venv=True):
    """The tree's path, built first when needed; venv=False: the Ceph packages suffice (the
    dev cluster's daemons and tools), not the client venv. One builder at a time (flock)."""
    if release == "16":
        raise TreeError("16 is the machine's own Debian 12 Ceph: no tree")
    if release not in SUITES:
        raise TreeError(f"no tree for Ceph {release} (known: {', '.join(sorted(SUITES))})")
    final = tree_path(release)
    info = stamp(release)
    if info and (not venv or info.get("requirements") == requirements_hash()):
        return final
    if os.geteuid() != 0:
        raise TreeError("building a tree needs root (debootstrap, chroot)")
    os.makedirs(tree_root(), exist_ok=True)
    with open(final + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _build(release, final, venv)


def _build(release, final, venv):
    info = stamp(release)  # again: another builder may have finished meanwhile
    if info and (not venv or info.get("requirements") == requirements_hash()):
        return final
    log_file = final + ".log"
    t0 = time.monotonic()
    if not info:
        base(release, final, log_file)
    if not venv:
        return final
    # the client venv: (re)installed when the project's requirements changed
    reqs = project_requirements()
    with open(os.path.join(final, "tmp/requirements.txt"), "w") as f:
        f.write("\n".join(reqs) + "\n")
    log(f"installing {len(reqs)} requirements into {final}{VENV} (log {log_file})")
    if not os.path.exists(os.path.join(final, VENV.lstrip("/"), "bin/python")):
        sh(chroot(final, "python3", "-m", "venv", "--system-site-packages", VENV), log_file)
    # this machine's own CAs (its way to PyPI may go through a proxy only they vouch for)
    local_cas = "/usr/local/share/ca-certificates"
    if os.path.isdir(local_cas) and os.listdir(local_cas):
        shutil.copytree(local_cas, os.path.join(final, local_cas.lstrip("/")), dirs_exist_ok=True)
        sh(chroot(final, "update-ca-certificates"), log_file)
    env = {}
    sh(chroot(final, VENV + "/bin/pip", "install", "-q", "-r", "/tmp/requirements.txt"), log_file, env=env)
    info = stamp(release)
    info.update(describe(final), requirements=requirements_hash(),
                venv_seconds=round(time.monotonic() - t0))
    write_stamp(final, info)
    log(f"Ceph {info['ceph']} tree ready: {final}")
    return final


def requirements_hash():
    return hashlib.sha1("\n".join(project_requirements()).encode()).hexdigest()[:12]


def write_stamp(tree, info):
    tmp = os.path.join(tree, STAMP + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2)
    os.rename(tmp, os.path.join(tree, STAMP))


def base(release, final, log_file):
    """debootstrap + Debian's Ceph, in a scratch directory renamed once complete."""
    scratch = final + ".building"
    if os.path.isdir(final):  # an unstamped leftover: not trusted
        remove(final)
    apt_conf = os.path.join(scratch, "etc/apt/apt.conf.d/99ceph-tree")
    resume = os.path.exists(apt_conf)  # written once debootstrap succeeded: the rest is idempotent
    if os.path.isdir(scratch) and not resume:
        remove(scratch)
    t0 = time.monotonic()
    suite = SUITES[release]
    if not resume:
        open(log_file, "w").close()
        log(f"building Ceph {release} tree ({suite}) in {scratch} (log {log_file})")
        ensure_debootstrap(log_file)
        sh(["debootstrap", "--variant=minbase", suite, scratch, MIRROR], log_file)
        # no daemon starts at install time
        policy = os.path.join(scratch, "usr/sbin/policy-rc.d")
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        with open(apt_conf, "w") as f:
            f.write('Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n')
    else:
        log(f"resuming the Ceph {release} tree ({suite}) in {scratch} (log {log_file})")
    # maintainer scripts (cryptsetup-bin's systemd-tmpfiles) need /proc
    proc = os.path.join(scratch, "proc")
    subprocess.run(["mount", "-t", "proc", "proc", proc], check=True)
    try:
        sh(chroot(scratch, "dpkg", "--configure", "-a"), log_file)
        sh(chroot(scratch, "apt-get", *APT_OPTS, "update"), log_file)
        sh(chroot(scratch, "apt-get", *APT_OPTS, "install", "-y", *PACKAGES), log_file)
        sh(chroot(scratch, "apt-get", "clean"), log_file)
    finally:
        subprocess.run(["umount", "-l", proc])
    info = {"release": release, "suite": suite, "mirror": MIRROR,
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - t0)}
    write_stamp(scratch, info)
    os.rename(scratch, final)


def describe(tree):
    def out(*cmd):
        return subprocess.run(chroot(tree, *cmd), capture_output=True, text=True).stdout.strip()
    return {"ceph": out("dpkg-query", "-W", "-f=${Version}", "ceph-mon"),
            "python": out("python3", "-c", "import platform; print(platform.python_version())"),
            "rados": out(VENV + "/bin/python", "-c", "import rados, rbd; print(rados.__file__)")}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(argv) == 1:
            print(build(argv[0]))
        elif len(argv) == 2 and argv[0] == "path":
            if not stamp(argv[1]):
                raise TreeError(f"no Ceph {argv[1]} tree built (run: tools/ceph-tree {argv[1]})")
            print(tree_path(argv[1]))
        elif len(argv) == 2 and argv[0] == "info":
            info = stamp(argv[1])
            if not info:
                raise TreeError(f"no Ceph {argv[1]} tree built")
            print(json.dumps(info, indent=2))
        else:
            sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
            return 2
    except TreeError as exc:
        log(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
