"""The user's flow on the SLURP series' clouds (issue 23): `tools/cloud start --release
2025.1` and `2026.1` boot that series' Keystone, Glance and Cinder (tools/peers/releases.py;
the cloud builds their virtualenvs itself), and the demo project's member uploads a volume
with data by clone: the image's bytes and os_hash_value equal the volume's, a volume is
created from the image, the deletes succeed and leave both pools as they were. cinder.conf
holds the [glance] options that release has, and only those.

2025.1 runs without glance-info-api (`--without-info-api`): the catalog's image endpoint is
Glance 30 itself, whose own stores detail has pool and fsid (no `user`), and Cinder 26 has
no [glance] credentials (the driver reads the detail as Cinder's [service_user]). 2026.1
runs as the install guide deploys it, glance-info-api beside Glance 32.

Each series boots a cloud of its own (a module scope of its own: tests/conftest.py), so
this runs beside the session cloud's chain. The Tempest set on every series is `tools/matrix
--clouds` (too long for each CI run).
"""

import configparser
import os
import subprocess
import tempfile

import pytest

import cloudlib as cloud_tool
import demo_openstack as flow_mod
import releases
from tests.cloud.conftest import CLOUD, processes_under, wait_baseline

# the SLURP series, each with the stores detail from: (tools/cloud start arguments)
SLURP = {"2025.1": ["--without-info-api"], "2026.1": []}


@pytest.fixture(scope="module", params=sorted(SLURP))
def release_cloud(request):
    d = tempfile.mkdtemp(prefix=f"cloud-{request.param}-")
    os.rmdir(d)  # tools/cloud wants an empty or absent directory
    args = ["--release", request.param, *SLURP[request.param]]
    proc = subprocess.run([CLOUD, "start", d, *args], capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        pytest.fail(f"tools/cloud start {' '.join(args)}: {proc.stderr.strip()}")
    cloud = flow_mod.Cloud(d)
    print(f"\ncloud {' '.join(args)} booted in {cloud.state['boot_seconds']} s in {d}")
    yield request.param, cloud
    stop = subprocess.run([CLOUD, "stop", d], capture_output=True, text=True, cwd="/")
    assert stop.returncode == 0, stop.stderr
    assert not processes_under(d)
    subprocess.run(["rm", "-rf", d])


def _venv_version(venv, dist):
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    return subprocess.run([os.path.join(venv, "bin", "python"), "-c", code], capture_output=True, text=True,
                          check=True, cwd="/").stdout.strip()


def test_the_cloud_runs_that_series_services(release_cloud):
    series, cloud = release_cloud
    want = releases.SERIES[series]
    venvs = cloud_tool.venvs(series)
    assert cloud.state["release"] == series
    assert {svc: _venv_version(venvs[svc], svc) for svc in ("keystone", "glance", "cinder")} == \
        {"keystone": want.keystone, "glance": want.glance, "cinder": want.cinder}
    # the running services are those venvs' (not the newest release's)
    for pgid_name, svc in (("keystone", "keystone"), ("cinder_volume", "cinder")):
        pid = cloud.state["pgids"][pgid_name]
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        assert venvs[svc] + "/" in cmdline, cmdline


def test_cinder_conf_has_the_glance_options_of_that_release(release_cloud):
    """Cinder 26 (2025.1) has no [glance] service credentials, Cinder 28 (2026.1) has them
    and [glance] region_name: tools/cloud writes what the release has, as its operator
    would, never an option the release does not register."""
    series, cloud = release_cloud
    conf = configparser.ConfigParser(interpolation=None, default_section="no [DEFAULT] in every section")
    conf.read(os.path.join(cloud.dir, "cinder", "cinder.conf"))
    glance = dict(conf["glance"]) if conf.has_section("glance") else {}
    if series == "2025.1":
        assert not glance, glance
    else:
        assert glance["auth_type"] == "password" and glance["region_name"], glance
    assert "valid_interfaces" not in glance  # not a Cinder option in any release


def test_member_upload_clones_and_reads_back_on_that_release(release_cloud):
    series, cloud = release_cloud
    # the stores detail Cinder reads: upstream Glance's own without glance-info-api
    assert ("info_api" in cloud.state["pgids"]) == ("--without-info-api" not in SLURP[series])
    if "--without-info-api" in SLURP[series]:
        assert cloud.state["image_url"] == cloud.state["glance_url"]
    before = cloud.rbd_names()
    res = flow_mod.flow(cloud, os.urandom(16 << 20), f"rel-{series}", log=print)
    assert res["method"] == "clone", res["log"]
    flow_mod.delete_all(cloud, res["ids"], ("volume", "image", "volume_from_image"))
    wait_baseline(cloud, before)
