"""The sdists and wheels, built as a release pipeline builds them and installed as
operators install them (issues 17 and 33).

tools/build-wheels builds the three distributions of packaging/ with `python -m build`
(an sdist, then the wheel from it) on a Python other than Debian's, with no Ceph. Each
sdist and wheel must carry its own package and nothing else, and the LICENSE; each wheel
installs into a clean virtualenv with `pip check` clean; the sdists install into a fresh
virtualenv of every Python 3 here (Debian's, and 3.12 and 3.13 where the machine has
them); and the Cinder side installs next to upstream Glance 33 without touching it:
Glance keeps importing its own modules, before and after the Cinder side is uninstalled
again.
"""

import email.parser
import glob
import os
import shutil
import subprocess
import tarfile
import zipfile

import pytest

from tests.peers import PeerVenv, _ensure

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PYTHON = "/usr/bin/python3"  # Debian's, as the project's venv and the peers
# the interpreters the sdists must install on; those the machine lacks are skipped
SDIST_PYTHONS = [PYTHON, "python3.12", "python3.13"]
PACKAGES = {"glance_store_ext": "glance-store-ext", "cinder_ext": "cinder-rbd-clone",
            "glance": "glance-info-api"}


def _run(argv, timeout=600, **kwargs):
    # cwd away from the checkout: `python -c` puts the cwd first on sys.path
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/", **kwargs)
    return proc


def _ok(proc):
    assert proc.returncode == 0, f"{proc.args}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    return proc.stdout


def _python(name):
    """A working interpreter named `name`: Debian's, or one on PATH, or one of pyenv's
    versions (its shim runs only the selected version); None when the machine has none."""
    if os.path.isabs(name):
        return name if os.access(name, os.X_OK) else None
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for exe in [shutil.which(name), *sorted(glob.glob(os.path.join(pyenv, "versions", "*", "bin", name)))]:
        if exe and subprocess.run([exe, "-c", "import venv, ensurepip"], capture_output=True).returncode == 0:
            return exe
    return None


def _builder():
    """The newest Python here that is not Debian's: the build must need neither Debian's
    interpreter nor its Ceph bindings."""
    return _python("python3.13") or _python("python3.12") or PYTHON


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """tools/build-wheels DIR: {dist: sdist}, {dist: wheel}, and DIR."""
    out = tmp_path_factory.mktemp("dists")
    env = dict(os.environ, PYTHON=_builder())
    proc = _run([os.path.join(ROOT, "tools", "build-wheels"), str(out)], env=env)
    _ok(proc)
    sdists, wheels = {}, {}
    for name in os.listdir(out):
        dist = name.split("-")[0].replace("_", "-")
        {"gz": sdists, "whl": wheels}[name.rsplit(".", 1)[-1]][dist] = str(out / name)
    assert set(sdists) == set(wheels) == set(PACKAGES.values()), os.listdir(out)
    assert "setup-venv" not in proc.stderr, proc.stderr
    return sdists, wheels, out


@pytest.fixture(scope="module")
def wheels(built):
    _, found, out = built
    return out, found


@pytest.fixture(scope="module")
def sdists(built, tmp_path_factory):
    """The sdists alone in a directory of their own, for --find-links."""
    found, _, _ = built
    out = tmp_path_factory.mktemp("sdists")
    for dist, path in found.items():
        shutil.copy(path, out)
    return out, {dist: str(out / os.path.basename(path)) for dist, path in found.items()}


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
        assert _py_files(found[dist], package) == _in_tree(package), f"{dist} misses modules of {package}"
    assert not any("glance" == t for t in _tops(found["cinder-rbd-clone"]) | _tops(found["glance-store-ext"]))


def _in_tree(package):
    return {os.path.relpath(os.path.join(d, f), ROOT)
            for d, _, files in os.walk(os.path.join(ROOT, package)) for f in files if f.endswith(".py")}


def _license():
    with open(os.path.join(ROOT, "LICENSE"), "rb") as f:
        return f.read()


def test_license_is_apache_2():
    text = _license().decode()
    assert text.lstrip().startswith("Apache License\n") and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def test_each_sdist_carries_its_package_whole_and_the_license(built):
    sdists, _, _ = built
    for package, dist in PACKAGES.items():
        with tarfile.open(sdists[dist]) as tar:
            members = {m.name: m for m in tar.getmembers()}
            top = os.path.commonpath(list(members))
            names = {os.path.relpath(n, top) for n in members}
            assert not [n for n in names if n.startswith("..")], f"{dist}: paths outside the sdist"
            assert {"pyproject.toml", "README.md", "LICENSE", "PKG-INFO"} <= names, (dist, sorted(names))
            # real files, not links to a checkout the sdist has not got
            assert not [n for n, m in members.items() if m.issym() or m.islnk()], dist
            assert tar.extractfile(f"{top}/LICENSE").read() == _license(), f"{dist}: LICENSE differs"
            info = email.parser.Parser().parsestr(tar.extractfile(f"{top}/PKG-INFO").read().decode())
        assert info["License-Expression"] == "Apache-2.0" and info["License-File"] == "LICENSE", dist
        py = {n for n in names if n.endswith(".py")}
        assert py == _in_tree(package), f"{dist}: {sorted(py ^ _in_tree(package))}"


def test_each_wheel_carries_the_license(wheels):
    _, found = wheels
    for dist, wheel in found.items():
        with zipfile.ZipFile(wheel) as z:
            licenses = [n for n in z.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
            assert len(licenses) == 1, (dist, z.namelist())
            assert z.read(licenses[0]) == _license(), dist


def _venv(path, python=PYTHON):
    _ok(_run([python, "-m", "venv", str(path)]))
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


@pytest.mark.parametrize("python", SDIST_PYTHONS)
def test_sdists_install_on_each_python(sdists, tmp_path, python):
    """pip install of the sdists alone (no wheel of ours anywhere): each is built here, on
    this Python, in a fresh venv; both console scripts run and pip check is clean."""
    exe = _python(python)
    if not exe:
        pytest.skip(f"no {python} on this machine")
    out, found = sdists
    venv = _venv(tmp_path / "venv", exe)
    ours = ",".join(PACKAGES.values())
    _ok(_pip(venv, "install", "-q", "--no-binary", ours, "--find-links", str(out),
             found["cinder-rbd-clone"], found["glance-info-api"]))
    _ok(_pip(venv, "check"))
    names = {line.split("==")[0].lower() for line in _ok(_pip(venv, "freeze")).split()}
    assert set(PACKAGES.values()) <= names, names
    version = _ok(_run([venv, "-c", "import sys; print(sys.version.split()[0])"])).strip()
    for dist in PACKAGES.values():
        files = _ok(_pip(venv, "show", "-f", dist))
        assert "licenses/LICENSE" in files, f"{dist} on Python {version}: no LICENSE installed"
    _ok(_run([venv, "-c", "import cinder_ext.cli, cinder_ext.decision, glance.wsgi, glance.cmd.api, "
                           "glance_store_ext.registry, glance_store_ext.contract"]))
    bin_dir = os.path.dirname(venv)
    assert "purge" in _ok(_run([os.path.join(bin_dir, "cinder-rbd-clone"), "--help"]))
    assert "--config-file" in _ok(_run([os.path.join(bin_dir, "glance-info-api"), "--help"]))
