"""Kolla (issue 34): deploy/kolla's template override and kolla-build.conf, rendered by kolla.

`kolla-build --template-only` renders the real cinder-volume and glance-api
Dockerfiles with deploy/kolla/template-override.j2 and the additions sections of
deploy/kolla/kolla-build.conf (the wheel directory's path changed to a
temporary one). The Dockerfiles must add the additions archive and install
the wheels: cinder-rbd-clone and glance-store-ext into Kolla's venv in
cinder-volume, glance-info-api into a venv of its own in glance-api, each
before the image drops to its service user.

Kolla comes from PyPI into a throwaway venv under /tmp, built by this module's
fixture (pinned: the rendering is Kolla's); where it cannot be installed (no
index) the module is skipped, as it needs nothing else.
"""

import configparser
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KOLLA_DIR = os.path.join(ROOT, "deploy", "kolla")
KOLLA = "kolla==23.0.0"
VENV = os.path.join("/tmp", "glance-rbd-clone-" + KOLLA.replace("==", "-"))


def _run(argv, timeout=900, **kwargs):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd="/", **kwargs)


@pytest.fixture(scope="module")
def kolla_build():
    stamp = os.path.join(VENV, ".ready")
    if not os.path.exists(stamp):
        proc = _run(["/usr/bin/python3", "-m", "venv", "--clear", VENV])
        assert proc.returncode == 0, proc.stderr
        # kolla-build's engine check imports the docker library even with --template-only
        proc = _run([os.path.join(VENV, "bin", "pip"), "install", "-q", "--disable-pip-version-check",
                     KOLLA, "docker"])
        if proc.returncode != 0:
            pytest.skip(f"{KOLLA} cannot be installed here: {proc.stderr.strip()[-300:]}")
        open(stamp, "w").close()
    return os.path.join(VENV, "bin", "kolla-build")


@pytest.fixture(scope="module")
def rendered(kolla_build, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kolla")
    wheels = tmp / "glance-rbd-clone"
    wheels.mkdir()
    conf = configparser.RawConfigParser()
    conf.read(os.path.join(KOLLA_DIR, "kolla-build.conf"))
    conf.set("DEFAULT", "template_override", os.path.join(KOLLA_DIR, "template-override.j2"))
    for section in conf.sections():
        conf.set(section, "location", str(wheels))
    with open(tmp / "kolla-build.conf", "w") as f:
        conf.write(f)
    work = tmp / "work"
    proc = _run([kolla_build, "--config-file", str(tmp / "kolla-build.conf"), "--template-only",
                 "--work-dir", str(work), "--base", "debian", "^cinder-volume$", "^glance-api$"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = {}
    for image, path in (("cinder-volume", "cinder/cinder-volume"), ("glance-api", "glance/glance-api")):
        with open(work / "docker" / path / "Dockerfile") as f:
            out[image] = f.read()
    return out


def _logical_lines(dockerfile):
    return [re.sub(r"\s+", " ", line).strip()
            for line in dockerfile.replace("\\\n", " ").splitlines() if line.strip()]


def test_cinder_volume_installs_the_cinder_side(rendered):
    lines = _logical_lines(rendered["cinder-volume"])
    assert lines[0].startswith("FROM ") and "cinder-base" in lines[0]
    add = lines.index("ADD additions-archive /")
    (pip,) = [i for i, line in enumerate(lines) if "--find-links /additions/glance-rbd-clone" in line]
    user = lines.index("USER cinder")
    assert add < pip < user  # installed as root, before the image drops to cinder
    words = lines[pip].split()
    assert words[:7] == ["RUN", "python3", "-m", "pip", "--no-cache-dir", "install", "--upgrade"]
    # Kolla's upper-constraints, as every other package of the image: Cinder's own stay
    assert "-c /requirements/upper-constraints.txt" in lines[pip]
    assert {"cinder-rbd-clone", "glance-store-ext"} <= set(words)
    # never the stores-info service (its package is named glance) in Cinder's venv
    assert "glance-info-api" not in rendered["cinder-volume"]


def test_glance_api_gets_glance_info_api_in_a_venv_of_its_own(rendered):
    lines = _logical_lines(rendered["glance-api"])
    add = lines.index("ADD additions-archive /")
    (run,) = [i for i, line in enumerate(lines) if "venv-glance-info-api" in line]
    assert add < run < lines.index("USER glance")
    cmd = lines[run]
    assert "python3 -m venv --system-site-packages /var/lib/kolla/venv-glance-info-api" in cmd
    assert re.search(r"/var/lib/kolla/venv-glance-info-api/bin/pip .*--find-links "
                     r"/additions/glance-rbd-clone glance-info-api glance-store-ext", cmd), cmd


def test_the_three_wheels_are_installed(rendered):
    both = rendered["cinder-volume"] + rendered["glance-api"]
    for dist in ("glance-store-ext", "cinder-rbd-clone", "glance-info-api"):
        assert re.search(rf"--find-links /additions/glance-rbd-clone [^\n]*\b{dist}\b", both), dist


def test_the_additions_sections_are_kollas(kolla_build):
    # kolla takes <image>-additions-<name> sections and puts each location's basename
    # under /additions/ in the image: the path template-override.j2 installs from
    conf = configparser.RawConfigParser()
    conf.read(os.path.join(KOLLA_DIR, "kolla-build.conf"))
    sections = conf.sections()
    assert sorted(sections) == ["cinder-volume-additions-glance-rbd-clone",
                                "glance-api-additions-glance-rbd-clone"]
    for s in sections:
        assert conf.get(s, "type") == "local"
        assert os.path.basename(conf.get(s, "location")) == "glance-rbd-clone"
    worker = _run([os.path.join(VENV, "bin", "python"), "-c",
                   "import kolla.image.kolla_worker as w; print(w.__file__)"])
    with open(worker.stdout.strip()) as f:
        assert "'^{}-additions-.+'" in f.read()
