"""Create the real upstream peers, each in a virtualenv of its own under $PEERS_DIR
(default <repo>/.peers), never in the project's venv: our `glance` package shares its
import name with upstream Glance.

    tools/peers/setup-peers [PEER...]     default: glance33 clients keystone30 tempest

Idempotent: a stamp file per peer, named after its recipe below (and its
NAME.constraints file, and the sources it installs), makes a second run take well
under a second; editing a recipe rebuilds that peer only. The peers one run builds
are built side by side (their Debian packages first), each in its own venv. Test
sessions run side by side: one builder at a time ($PEERS_DIR/.lock), the others
wait. To add a peer: add its recipe to RECIPES.

Each recipe: Debian packages (`apt`), install steps in a fresh venv on Debian's default
Python, the one its rados/rbd bindings are built for (`pip`: installed with uv, tools/uv,
which resolves as pip would, much faster; a NAME.constraints file pins the first step;
the venv keeps its own pip, for whoever installs into it as an operator would), a
directory of this checkout installed as a copy (`local`),
Debian's rados/rbd bindings linked in (`ceph`), and what must hold afterwards
(`imports` run in the venv, `commands` in its bin/).
"""

import argparse
import concurrent.futures
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib

import releases
from peerlib import HERE, PEERS_DIR, ROOT, PeerError, apt_install, apt_missing, run_main

# Debian's default interpreter (3.11 on Debian 12, 3.13 on Debian 13): python3-rados and
# python3-rbd are built for it, their files named after its EXT_SUFFIX
PYTHON = "/usr/bin/python3"
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
LOCK_TIMEOUT = 1800

GUNICORN = "gunicorn==27.0.1"  # as glance33.constraints and keystone30.constraints pin it

RECIPES = {
    # Upstream Glance 33 (2025.2) served by gunicorn (decodes chunked request bodies,
    # which glanceclient and Cinder send), with Debian's rados/rbd so that glance_store's
    # rbd driver works, and glance_store's swift and s3 extras (python-swiftclient, boto3)
    # so that upstream configures those stores too
    # (tests/interop/test_store_properties_upstream.py compares their properties).
    # glance33.constraints pins the set it was proven with (pip freeze of a working venv):
    # OpenStack's own upper-constraints are not on PyPI, and a newer library must not
    # break the reference we compare against. (botocore needs python-dateutil<3, hence
    # 2.9.0.post0 there.) Regenerate it with
    #   .peers/glance33/bin/pip freeze > tools/peers/glance33.constraints
    # after building once without it. PyMySQL: tools/cloud runs Glance on MariaDB (issue 14).
    "glance33": {
        "apt": ["python3-venv", "python3-rados", "python3-rbd", "ceph-common"],
        "pip": [["glance==33.0.0", "glance_store[swift,s3]", "gunicorn"], ["PyMySQL==1.2.4"]],
        "ceph": True,
        "imports": ["import rados, rbd, glance_store._drivers.rbd as d; assert d.rbd", "import swiftclient, boto3"],
        "commands": ["glance-manage", "gunicorn"],
    },
    # The clients the spec names: python-glanceclient and openstacksdk, latest; the
    # openstack and cinder CLIs for tools/cloud.
    "clients": {
        "apt": ["python3-venv"],
        "pip": [["python-glanceclient", "openstacksdk", "python-openstackclient==10.5.0",
                 "python-cinderclient==9.10.0"]],
        "imports": ["import glanceclient, openstack, cinderclient, openstackclient"],
        "commands": ["openstack", "glance"],
    },
    # Upstream Keystone 30 for the keystone mode (issue 11): sqlite, fernet tokens, served
    # by gunicorn (keystone_peer.py). keystone30.constraints pins the set it was proven
    # with, as glance33's does; regenerate with
    #   .peers/keystone30/bin/pip freeze > tools/peers/keystone30.constraints
    # PyMySQL: tools/cloud runs Keystone on MariaDB (issue 14).
    "keystone30": {
        "apt": ["python3-venv"],
        "pip": [["keystone==30.0.0", "gunicorn"], ["PyMySQL==1.2.4"]],
        "imports": ["import keystone.server.wsgi, keystoneauth1"],
        "commands": ["keystone-manage", "gunicorn"],
    },
    # The older maintained series' Glance and Keystone (releases.py), for `tools/cloud
    # start --release` (issue 23): recipes as glance33's and keystone30's. OpenStack's
    # upper-constraints are not on PyPI: each NAME.constraints is the set PyPI held on the
    # series' release day with the service at its newest stable release, written by
    # tools/peers/freeze-release-constraints SERIES. gunicorn is the harness's server, not
    # the release's (operators serve these with their own): the newest peers' one.
    **{releases.peer("glance", series): {
        "apt": ["python3-venv", "python3-rados", "python3-rbd", "ceph-common"],
        "pip": [[f"glance=={s.glance}", "glance_store[swift,s3]", "PyMySQL"], [GUNICORN]],
        "ceph": True,
        "imports": ["import rados, rbd, glance_store._drivers.rbd as d; assert d.rbd", "import swiftclient, boto3"],
        "commands": ["glance-manage", "gunicorn"],
    } for series, s in releases.SERIES.items() if series != releases.NEWEST},
    **{releases.peer("keystone", series): {
        "apt": ["python3-venv"],
        "pip": [[f"keystone=={s.keystone}", "PyMySQL"], [GUNICORN]],
        "imports": ["import keystone.server.wsgi, keystoneauth1"],
        "commands": ["keystone-manage", "gunicorn"],
    } for series, s in releases.SERIES.items() if series != releases.NEWEST},
    # Tempest 47 and cinder-tempest-plugin 1.23 for tools/cloud's Tempest run
    # (tests/cloud): a venv of their own, as Tempest is installed upstream; and our plugin
    # (tests/tempest_plugin: tempest's upload test without Neutron), a copy (not editable:
    # one venv may serve several checkouts), rebuilt when it changes.
    "tempest": {
        "apt": ["python3-venv"],
        "pip": [["tempest==47.0.0", "cinder-tempest-plugin==1.23.0"]],
        "local": "tests/tempest_plugin",
        "imports": ["import tempest, cinder_tempest_plugin, glance_rbd_clone_tempest.plugin"],
        "commands": ["tempest"],
    },
}

# what tools/test needs: the newest release's peers (the older ones: tools/cloud --release)
DEFAULT = ("glance33", "clients", "keystone30", "tempest")


def _say(log, msg):
    if log:
        log(f"setup-peers: {msg}")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _sources(local):
    """The text of a local directory's sources: what a change to them must rebuild."""
    base = os.path.join(ROOT, local)
    files = []
    for d, dirs, names in os.walk(base):
        dirs[:] = [x for x in dirs if x != "build" and not x.endswith("egg-info")]
        files += [os.path.join(d, n) for n in names if n.endswith((".py", ".toml", ".cfg"))]
    return b"".join(_read(f) for f in sorted(files, key=lambda f: os.path.relpath(f, base)))


def _name(src):
    """The distribution name of a local directory (its pyproject.toml's)."""
    with open(os.path.join(src, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["name"]


def constraints_file(name):
    path = os.path.join(HERE, f"{name}.constraints")
    return path if os.path.isfile(path) else None


def stamp(name):
    """The stamp file that says the peer's venv is its recipe's, as it is now (see current)."""
    recipe = RECIPES[name]
    h = hashlib.sha1(json.dumps(recipe, sort_keys=True).encode())
    if constraints_file(name):
        h.update(_read(constraints_file(name)))
    if recipe.get("local"):
        h.update(_sources(recipe["local"]))
    return os.path.join(PEERS_DIR, name, f".peer-ready-{h.hexdigest()[:12]}")


# The shell setup-peers (before issue 24) stamped these very recipes with these names:
# a venv it built is adopted, not rebuilt, while its recipe's stamp is the one here.
ADOPT = {".peer-ready-ba0efdb41fd2": ".peer-ready-ecfa03fb00ab",   # glance33
         ".peer-ready-9a28a8d848f9": ".peer-ready-5f0ed20d6739",   # clients
         ".peer-ready-8e695f97d3f7": ".peer-ready-486c07a5ae05",   # keystone30
         ".peer-ready-d950a46f37f6": ".peer-ready-39193e0f3632"}   # tempest


def current(name):
    ready = stamp(name)
    if os.path.exists(ready):
        return True
    old = ADOPT.get(os.path.basename(ready))
    if old and os.path.exists(os.path.join(os.path.dirname(ready), old)):
        open(ready, "w").close()
        return True
    return False


UV = os.path.join(ROOT, "tools", "uv")
def uv_why(output):
    """One line saying why uv failed: its error line and the innermost cause under it (uv's
    "error: No solution found when resolving dependencies" then "  cause: Because ...")."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.strip().startswith("hint:")]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error:")]
    if not errors:
        return lines[-1] if lines else "no output"
    error = lines[errors[-1]].removeprefix("error:").strip().rstrip(":")
    causes = []  # each with its continuation lines ("And because ...")
    for ln in lines[errors[-1] + 1:]:
        if ln.startswith("cause:"):
            causes.append(ln.removeprefix("cause:").strip())
        elif causes:
            causes[-1] += " " + ln
    return f"{error}: {causes[-1]}" if causes else error


def pip(venv, *args, log):
    """Install into the venv with uv (`uv pip install`), quiet; on failure one line: uv's
    error and its innermost cause say why."""
    proc = subprocess.run([UV, "pip", "install", "-q", "--python", os.path.join(venv, "bin", "python"), *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeerError(f"uv pip install {' '.join(args)} failed in {venv}: {uv_why(proc.stdout + proc.stderr)}")
    for line in (proc.stdout + proc.stderr).splitlines():
        if log and line.strip():
            log(line)


def debian_python():
    """(path, EXT_SUFFIX, version) of Debian's default interpreter, the real file behind
    /usr/bin/python3 (/usr/bin/python3.11 on Debian 12); PeerError if it does not run."""
    proc = subprocess.run([PYTHON, "-c", "import os, sys, sysconfig; print(os.path.realpath(sys.executable), "
                           "sysconfig.get_config_var('EXT_SUFFIX'), sys.version.split()[0])"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise PeerError(f"{PYTHON} does not run: {proc.stderr.strip()[-200:]}")
    return tuple(proc.stdout.split())


def ceph_bindings(suffix):
    """Debian's rados and rbd bindings for the interpreter whose EXT_SUFFIX is `suffix`."""
    found = [os.path.join(DIST_PACKAGES, mod + suffix) for mod in ("rados", "rbd")]
    absent = [so for so in found if not os.path.exists(so)]
    if absent:
        have = sorted(f for f in os.listdir(DIST_PACKAGES) if f.startswith(("rados.", "rbd.")))
        raise PeerError(f"no {' '.join(absent)} (python3-rados/python3-rbd have: {' '.join(have) or 'nothing'})")
    return found


def build(name, log):
    """Build the peer's venv (its Debian packages installed already: setup)."""
    recipe, venv = RECIPES[name], os.path.join(PEERS_DIR, name)
    python, suffix, version = debian_python()
    bindings = ceph_bindings(suffix) if recipe.get("ceph") else []
    _say(log, f"{name} on {python} (Python {version})"
         + (f" with Debian's {' and '.join(os.path.basename(so) for so in bindings)}" if bindings else ""))
    shutil.rmtree(venv, ignore_errors=True)
    if subprocess.run([python, "-m", "venv", venv], capture_output=True).returncode != 0:
        raise PeerError(f"cannot create a venv at {venv} with {python}")
    pip(venv, "--upgrade", "pip", log=log)
    for i, step in enumerate(recipe["pip"]):
        pins = constraints_file(name) if i == 0 else None
        pip(venv, *(["-c", pins] if pins else []), *step, log=log)
    if recipe.get("local"):
        src = os.path.join(ROOT, recipe["local"])
        shutil.rmtree(os.path.join(src, "build"), ignore_errors=True)
        try:  # rebuilt: uv's cache knows a local directory by its pyproject.toml's mtime only
            pip(venv, "--reinstall-package", _name(src), src, log=log)
        finally:
            shutil.rmtree(os.path.join(src, "build"), ignore_errors=True)
    if recipe.get("ceph"):  # Debian's rados/rbd bindings, and only those, from dist-packages
        links = os.path.join(venv, "ceph-bindings")
        os.makedirs(links, exist_ok=True)
        for so in bindings:
            os.symlink(so, os.path.join(links, os.path.basename(so)))
        site = subprocess.run([os.path.join(venv, "bin", "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(site, "debian-ceph-bindings.pth"), "w") as f:
            f.write(links + "\n")
    for code in recipe["imports"]:
        if subprocess.run([os.path.join(venv, "bin", "python"), "-c", code], capture_output=True).returncode:
            raise PeerError(f"`{code}` fails in {venv}")
    absent = [c for c in recipe["commands"] if not os.access(os.path.join(venv, "bin", c), os.X_OK)]
    if absent:
        raise PeerError(f"{'/'.join(absent)} missing in {venv}")


def setup(names=(), log=None):
    """Build the named peers (every one when none) unless their stamps are current; PeerError
    on failure. `log` gets one line per step (None: silent)."""
    names = list(names) or list(DEFAULT)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise PeerError(f"unknown peer '{unknown[0]}' (known: {' '.join(RECIPES)})")
    if all(current(n) for n in names):
        return
    try:
        os.makedirs(PEERS_DIR, exist_ok=True)
        lock = open(os.path.join(PEERS_DIR, ".lock"), "w")
    except OSError:
        raise PeerError(f"cannot create the peers directory {PEERS_DIR}") from None
    with lock:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PeerError(f"timed out waiting for another setup-peers ({PEERS_DIR}/.lock)") from None
                time.sleep(0.5)
        todo = [n for n in names if not current(n)]  # the others built meanwhile, by whoever held the lock
        # every peer's Debian packages first, at once (apt runs one at a time) ...
        missing = apt_missing(sorted({p for n in todo for p in RECIPES[n]["apt"]})
                              + ([] if os.access(PYTHON, os.X_OK) else ["python3"]))
        if missing:
            _say(log, f"installing {' '.join(missing)}")
            apt_install(missing)
        # ... then their venvs side by side: independent, and mostly uv's downloads
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            futures = [pool.submit(_build_and_stamp, name, log) for name in todo]
        for future in futures:
            if future.exception():
                raise future.exception()


def _build_and_stamp(name, log):
    ready = stamp(name)
    t0 = time.monotonic()
    _say(log, f"building {name} in {os.path.dirname(ready)}")
    build(name, log)
    open(ready, "w").close()
    _say(log, f"{name} ready in {time.monotonic() - t0:.0f}s")


def main(argv=None):
    p = argparse.ArgumentParser(prog="setup-peers", description=__doc__.split("\n\n")[0])
    p.add_argument("peers", nargs="*", metavar="PEER", help=f"default: {' '.join(DEFAULT)} (known: {' '.join(RECIPES)})")
    args = p.parse_args(argv)
    run_main("setup-peers", lambda a: setup(a.peers, log=lambda s: print(s, file=sys.stderr, flush=True)), args)


if __name__ == "__main__":
    main()
