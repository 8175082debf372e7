"""The wheels, installed as operators install them (issue 17).

tools/build-wheels builds the three distributions of packaging/. Each wheel must
carry its own package and nothing else; each installs into a clean virtualenv
with `pip check` clean; and the Cinder side installs next to upstream Glance 33
without touching it: Glance keeps importing its own modules, before and after
the Cinder side is uninstalled again.
"""

import os
import shutil
import subprocess
import zipfile

import pytest

from tests.peers import PeerVenv, _ensure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3.11"
PACKAGES = {"glance_store_ext": "glance-store-ext", "cinder_ext": "cinder-rbd-clone",
            "glance": "glance-info-api"}


def _run(argv, timeout=600, **kwargs):
    # cwd away from the checkout: `python -c` puts the cwd first on sys.path
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/", **kwargs)
    return proc


def _ok(proc):
    assert proc.returncode == 0, f"{proc.args}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheels(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    _ok(_run([os.path.join(ROOT, "tools", "build-wheels"), str(out)]))
    found = {}
    for name in os.listdir(out):
        dist = name.split("-")[0].replace("_", "-")
        found[dist] = str(out / name)
    assert set(found) == set(PACKAGES.values()), found
    return out, found


def _tops(wheel):
    with zipfile.ZipFile(wheel) as z:
        return {n.split("/")[0] for n in z.namelist() if not n.split("/")[0].endswith(".dist-info")}


def _py_files(wheel, package):
    with zipfile.ZipFile(wheel) as z:
        return {n for n in z.namelist() if n.startswith(package + "/") and n.endswith(".py")}


def test_each_wheel_carries_its_own_package_whole_and_nothing_else(wheels):
    _, found = wheels
    for package, dist in PACKAGES.items():
        assert _tops(found[dist]) == {package}, (dist, _tops(found[dist]))
        in_tree = {os.path.relpath(os.path.join(d, f), ROOT)
                   for d, _, files in os.walk(os.path.join(ROOT, package)) for f in files
                   if f.endswith(".py")}
        assert _py_files(found[dist], package) == in_tree, f"{dist} misses modules of {package}"
    assert not any("glance" == t for t in _tops(found["cinder-rbd-clone"]) | _tops(found["glance-store-ext"]))


def _venv(path):
    _ok(_run([PYTHON, "-m", "venv", str(path)]))
    return str(path / "bin" / "python")


def _pip(python, *args):
    return _run([python, "-m", "pip", "--disable-pip-version-check", *args])


# (distribution, its console script, what its usage must mention, what must not come with
# it, what must import in its venv)
CLEAN_INSTALLS = [
    ("cinder-rbd-clone", "cinder-rbd-clone", "purge", {"glance-info-api", "glance"},
     "import importlib.util as u; assert u.find_spec('glance') is None; "
     "import cinder_ext.cli, cinder_ext.decision, glance_store_ext.contract"),
    ("glance-info-api", "glance-info-api", "--config-file", {"cinder-rbd-clone", "glance"},
     "import importlib.util as u; assert u.find_spec('cinder_ext') is None; "
     "import glance.wsgi, glance.cmd.api, glance_store_ext.registry"),
]


@pytest.mark.parametrize("dist, script, usage_word, absent, imports", CLEAN_INSTALLS)
def test_each_side_in_a_clean_venv(wheels, tmp_path, dist, script, usage_word, absent, imports):
    out, _ = wheels
    python = _venv(tmp_path / "venv")
    _ok(_pip(python, "install", "-q", "--find-links", str(out), dist))
    _ok(_pip(python, "check"))
    # what it pulled in: the shared library, never the other side or upstream Glance
    names = {line.split("==")[0].lower() for line in _ok(_pip(python, "freeze")).split()}
    assert {dist, "glance-store-ext"} <= names
    assert not names & absent, names & absent
    _ok(_run([python, "-c", imports]))
    usage = _ok(_run([str(tmp_path / "venv" / "bin" / script), "--help"]))
    assert usage_word in usage


def test_cinder_side_next_to_upstream_glance_33(wheels, tmp_path):
    """An all-in-one host or devstack's one virtualenv: Glance 33 and the driver together."""
    out, _ = wheels
    _ensure("Glance 33", "glance33")
    # a copy of the Glance 33 peer's venv: the peer itself serves other tests
    venv = tmp_path / "glance33"
    shutil.copytree(PeerVenv("glance33").dir, venv, symlinks=True)
    python = str(venv / "bin" / "python")
    glance_module = ("import glance, glance.common.wsgi_app, glance.common.config as c; "
                     "import importlib.metadata as m; "
                     "assert m.version('glance') == '33.0.0'; "
                     "assert hasattr(c, 'load_paste_app'), 'not upstream glance.common.config'; "
                     "print(glance.__file__)")
    before = _ok(_run([python, "-c", glance_module])).strip()
    assert before.startswith(str(venv))
    _ok(_pip(python, "install", "-q", "--find-links", str(out), "cinder-rbd-clone"))
    _ok(_pip(python, "check"))
    assert _ok(_run([python, "-c", glance_module])).strip() == before
    _ok(_run([python, "-c", "import cinder_ext.decision, glance_store_ext.contract"]))
    # uninstalling the Cinder side takes only its own files
    _ok(_pip(python, "uninstall", "-q", "-y", "cinder-rbd-clone", "glance-store-ext"))
    assert _ok(_run([python, "-c", glance_module])).strip() == before
    _ok(_pip(python, "check"))
